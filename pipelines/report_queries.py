"""The report's warehouse reads: every SELECT of ``shopstream report`` and the small
aggregations over their rows, with no plotting (the rendering is in pipelines/report.py).

Portable SQL (DuckDB and BigQuery); table names resolve through the warehouse's ``ref``."""
from __future__ import annotations

import logging
import math
import re
from collections import defaultdict
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

log = logging.getLogger(__name__)

AGE_BANDS = ((0, 25, "<25"), (25, 35, "25–34"), (35, 45, "35–44"), (45, 55, "45–54"),
             (55, 200, "55+"))


class Unavailable(Exception):
    """A section's inputs are not in the warehouse yet (the message says which)."""


class WarehouseUnavailable(RuntimeError):
    """The warehouse could not be opened (missing credentials, a locked DuckDB file...)."""


class Source:
    """Warehouse reads for the report: table presence and row counts, formatted SQL."""

    def __init__(self, wh):
        self.wh = wh
        self.counts: Dict[str, Optional[int]] = {}

    def count(self, table: str) -> Optional[int]:
        """Row count, or None when the table does not exist (or cannot be read)."""
        if table not in self.counts:
            try:
                rows = self.wh.query(f"SELECT COUNT(*) AS n FROM {self.wh.ref(table)}")
                self.counts[table] = int(rows[0]["n"])
            except Exception as exc:  # DuckDB CatalogException, BigQuery NotFound, ...
                log.debug("table %s unavailable: %s", table, exc)
                self.counts[table] = None
        return self.counts[table]

    def has(self, table: str) -> bool:
        return bool(self.count(table))

    def need(self, *tables: str) -> None:
        for t in tables:
            n = self.count(t)
            if n is None:
                raise Unavailable(f"table {t} does not exist yet")
            if n == 0:
                raise Unavailable(f"table {t} is empty")

    def q(self, sql: str, **tables: str) -> List[dict]:
        return self.wh.query(sql.format(**{k: self.wh.ref(v) for k, v in tables.items()}))


def num(v: Any, default: float = 0.0) -> float:
    if v is None:
        return default
    try:
        f = float(v)
    except (TypeError, ValueError):
        return default
    return default if math.isnan(f) else f



def age_band(age: Any) -> str:
    if age is None:
        return "unknown"
    a = num(age, -1)
    for lo, hi, label in AGE_BANDS:
        if lo <= a < hi:
            return label
    return "unknown"



CUSTOMERS_CTE = ("WITH c AS (SELECT customer_id, MAX(gender) AS gender, "
                  "MAX(customer_age) AS age, MAX(province) AS province "
                  "FROM {sf} GROUP BY customer_id) ")


def segments(rows: List[dict], value: Callable[[dict], Tuple[float, float]]
              ) -> Dict[str, Dict[str, Tuple[float, float]]]:
    """Rows grouped by (gender, age, province) → kind → segment → (sum, count)."""
    acc: Dict[str, Dict[str, List[float]]] = {k: defaultdict(lambda: [0.0, 0.0])
                                              for k in ("gender", "age band", "province")}
    for r in rows:
        s, n = value(r)
        for kind, seg in (("gender", r.get("gender") or "unknown"),
                          ("age band", age_band(r.get("age"))),
                          ("province", r.get("province") or "unknown")):
            acc[kind][seg][0] += s
            acc[kind][seg][1] += n
    return {k: {seg: (v[0], v[1]) for seg, v in d.items()} for k, d in acc.items()}



def daily_totals(src: Source) -> List[dict]:
    """Revenue, units, orders and promo per day (daily_sales)."""
    return src.q("SELECT date, SUM(revenue) AS revenue, SUM(units) AS units, "
                 "SUM(orders) AS orders, SUM(promo_amount) AS promo "
                 "FROM {ds} GROUP BY date ORDER BY date", ds="daily_sales")


def orders_by_day(src: Source) -> List[dict]:
    """Distinct bookings per day (sales_facts)."""
    return src.q("SELECT CAST(created_at AS DATE) AS date, "
                 "COUNT(DISTINCT booking_id) AS orders FROM {sf} "
                 "GROUP BY CAST(created_at AS DATE)", sf="sales_facts")


def revenue_by_category_day(src: Source) -> List[dict]:
    """Revenue per day and master category."""
    return src.q("SELECT date, masterCategory AS category, SUM(revenue) AS revenue "
                 "FROM {ds} GROUP BY date, masterCategory", ds="daily_sales")


def revenue_by_payment(src: Source) -> List[dict]:
    """Revenue and orders per payment method."""
    return src.q("SELECT payment_method, SUM(revenue) AS revenue, SUM(orders) AS orders "
                 "FROM {ds} GROUP BY payment_method ORDER BY revenue DESC", ds="daily_sales")


def top_products(src: Source) -> List[dict]:
    """The stored top-10 products."""
    return src.q("SELECT rank, product_id, productDisplayName, popularity_score "
                 "FROM {t} ORDER BY rank LIMIT 10", t="top10_products")


def top_products_by_engagement(src: Source) -> List[dict]:
    """The 10 best-scored products of product_engagement."""
    return src.q("SELECT product_id, productDisplayName, popularity_score FROM {t} "
                 "WHERE popularity_score IS NOT NULL "
                 "ORDER BY popularity_score DESC, product_id LIMIT 10", t="product_engagement")


def top_names(src: Source, table, col) -> List[dict]:
    """The stored top-10 of a brands / sub-categories table."""
    return src.q(f"SELECT rank, {col} AS name, popularity_score FROM {{t}} "
                 f"ORDER BY rank LIMIT 10", t=table)


def top_names_by_engagement(src: Source, col) -> List[dict]:
    """Brands / sub-categories scored by the sum of their products' scores."""
    return src.q(f"SELECT {col} AS name, SUM(popularity_score) AS popularity_score "
                 f"FROM {{t}} WHERE {col} IS NOT NULL GROUP BY {col} "
                 f"ORDER BY popularity_score DESC LIMIT 10", t="product_engagement")


def season_gender_leaders(src: Source) -> List[dict]:
    """The leader of every season × gender ranking."""
    return src.q("SELECT season, gender, productDisplayName, product_id FROM {t} "
                 "WHERE rank = 1", t="top10_products_by_season_gender")


def engagement_totals(src: Source) -> List[dict]:
    """Engagement and purchases summed over all products (one row)."""
    return src.q("SELECT SUM(homepage_count) AS homepage, SUM(click_count) AS click, "
                 "SUM(item_detail_count) AS item_detail, SUM(add_to_cart_count) AS add_to_cart, "
                 "SUM(purchases) AS purchases FROM {t}", t="product_engagement")


def province_facts(src: Source) -> List[dict]:
    """Per province: centre, customers, orders, revenue."""
    return src.q("SELECT province, AVG(latitude) AS lat, AVG(longitude) AS lon, "
                 "COUNT(DISTINCT customer_id) AS customers, COUNT(DISTINCT booking_id) AS orders, "
                 "SUM(COALESCE(line_revenue, quantity * item_price)) AS revenue "
                 "FROM {sf} WHERE province IS NOT NULL GROUP BY province", sf="sales_facts")


def customer_homes(src: Source) -> List[dict]:
    """A sample of customers' home locations."""
    return src.q("SELECT customer_id, MAX(home_location_lat) AS lat, "
                 "MAX(home_location_long) AS lon FROM {sf} GROUP BY customer_id "
                 "ORDER BY customer_id LIMIT 5000", sf="sales_facts")


def churn_trend(src: Source) -> List[dict]:
    """Labelled customer-months and churners per month."""
    return src.q("SELECT month, COUNT(*) AS n, SUM(churned) AS churned FROM {cf} "
                 "WHERE churned IS NOT NULL GROUP BY month ORDER BY month",
                 cf="churn_features")


def observed_churn_by_customer(src: Source) -> List[dict]:
    """Labelled months and churners per (gender, age, province)."""
    return src.q(CUSTOMERS_CTE + "SELECT c.gender, c.age, c.province, COUNT(*) AS n, "
                 "SUM(f.churned) AS churned FROM {cf} f JOIN c "
                 "ON f.customer_id = c.customer_id WHERE f.churned IS NOT NULL "
                 "GROUP BY c.gender, c.age, c.province",
                 sf="sales_facts", cf="churn_features")


def latest_prediction_month(src: Source) -> List[dict]:
    """The latest scored month (one row)."""
    return src.q("SELECT MAX(month) AS month FROM {cp}", cp="churn_predictions")


def latest_prediction_stats(src: Source) -> List[dict]:
    """Rows, mean risk and model version of the latest scored month (one row)."""
    return src.q("SELECT COUNT(*) AS n, AVG(churn_probability) AS mean_p, "
                 "MAX(model_version) AS version FROM {cp} "
                 "WHERE month = (SELECT MAX(month) FROM {cp})", cp="churn_predictions")


def risk_buckets(src: Source) -> List[dict]:
    """Customers of the latest scored month per 5-point risk bucket."""
    return src.q("SELECT FLOOR(churn_probability * 20) AS b, COUNT(*) AS n FROM {cp} "
                 "WHERE month = (SELECT MAX(month) FROM {cp}) "
                 "GROUP BY FLOOR(churn_probability * 20)", cp="churn_predictions")


def predicted_risk_by_customer(src: Source) -> List[dict]:
    """Summed risk and customers per (gender, age, province), latest month."""
    return src.q(CUSTOMERS_CTE + ", p AS (SELECT customer_id, churn_probability "
                 "FROM {cp} WHERE month = (SELECT MAX(month) FROM {cp})) "
                 "SELECT c.gender, c.age, c.province, COUNT(*) AS n, "
                 "SUM(p.churn_probability) AS p FROM p LEFT JOIN c "
                 "ON p.customer_id = c.customer_id GROUP BY c.gender, c.age, c.province",
                 sf="sales_facts", cp="churn_predictions")


def model_metrics(src: Source) -> List[dict]:
    """Every model_metrics row, oldest first."""
    return src.q("SELECT model, model_version, trained_at, metric, value FROM {mm} "
                 "ORDER BY model, trained_at, model_version, metric", mm="model_metrics")


# --------------------------------------------------------------------------- model metrics
class ModelMetrics(NamedTuple):
    """The metric rows of one model version."""

    model: str
    version: str
    trained_at: Any
    values: Dict[str, float]


#: scorers of the churn evaluation: metric-name prefix and the label the report shows
CHURN_SCORERS = (("", "model"), ("baseline_recency_", "recency baseline (floor)"),
                 ("oracle_", "oracle: true hazard (ceiling)"))
CHURN_EVAL_METRICS = (("roc_auc", "ROC-AUC"), ("pr_auc", "PR-AUC"), ("brier", "Brier"))
CHURN_PARTS = (("", "all customers"), ("_recent_buyers", "recent buyers"))
POPULARITY_SCORERS = (("ranking", "weighted popularity score"),
                      ("baseline_add_to_cart", "add-to-cart count alone"),
                      ("true_demand", "true demand (ceiling)"))
POPULARITY_METRICS = (("spearman", "Spearman"), ("ndcg_at_10", "NDCG@10"))


def latest_model_metrics(rows: List[dict], model: str) -> Optional[ModelMetrics]:
    """The newest version (by trained_at, then version) of ``model`` among model_metrics rows."""
    mine = [r for r in rows if str(r["model"]).lower() == model]
    if not mine:
        return None
    latest = max(mine, key=lambda r: (str(r["trained_at"] or ""), str(r["model_version"])))
    version = latest["model_version"]
    return ModelMetrics(latest["model"], version, latest["trained_at"],
                        {r["metric"]: num(r["value"]) for r in mine
                         if r["model_version"] == version})


def churn_side_by_side(values: Dict[str, float]) -> List[Tuple[str, str, str, Optional[float]]]:
    """(part, metric label, scorer label, value) for model / floor / ceiling, overall and
    for recent buyers; value None where that row is not stored."""
    out = []
    for suffix, part in CHURN_PARTS:
        for metric, mlabel in CHURN_EVAL_METRICS:
            for prefix, slabel in CHURN_SCORERS:
                out.append((part, mlabel, slabel, values.get(f"{prefix}{metric}{suffix}")))
    return out


def calibration_bins(values: Dict[str, float]) -> List[Tuple[float, float, float]]:
    """(mean predicted, observed churn rate, rows) per calibration bin, in bin order."""
    bins = sorted({int(m.group(1)) for k in values
                   for m in [re.fullmatch(r"calibration_bin_(\d+)_predicted", k)] if m})
    return [(values[f"calibration_bin_{b:02d}_predicted"],
             values.get(f"calibration_bin_{b:02d}_observed", math.nan),
             values.get(f"calibration_bin_{b:02d}_rows", 0.0)) for b in bins]


def gains(values: Dict[str, float]) -> Dict[str, List[Tuple[float, float]]]:
    """scorer → [(share of customers, share of churners captured)] from gains_* rows."""
    out: Dict[str, List[Tuple[float, float]]] = defaultdict(list)
    deciles = []
    for k, v in values.items():
        m = re.fullmatch(r"gains_(\w+)_decile_(\d+)", k)
        if m:
            deciles.append((m.group(1), int(m.group(2)), v))
    n = max((d for _, d, _ in deciles), default=0)
    for name, d, v in sorted(deciles):
        out[name].append((d / n, v))
    return dict(out)


def importances(values: Dict[str, float]) -> List[Tuple[str, float]]:
    """(feature, permutation importance) from importance_* rows, largest first."""
    return sorted(((k[len("importance_"):], v) for k, v in values.items()
                   if k.startswith("importance_")), key=lambda kv: (-kv[1], kv[0]))


def popularity_side_by_side(values: Dict[str, float]
                            ) -> List[Tuple[str, str, Optional[float]]]:
    """(metric label, scorer label, value) of the popularity ranking evaluation."""
    return [(mlabel, slabel, values.get(f"{prefix}_{metric}"))
            for metric, mlabel in POPULARITY_METRICS for prefix, slabel in POPULARITY_SCORERS]
