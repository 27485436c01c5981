"""The popularity model: XGBoost feature importances → the scorer's weights (SPEC §2).

Training (``shopstream train popularity``):

* engagement per product per period (``week``, ``2w`` = two weeks, default, or
  ``month``; periods start on a Monday / the 1st) from ``events_enriched`` — the six
  features click_count, item_detail_count, add_to_cart_count, homepage_count,
  total_dwell_seconds, purchases (units of successful booking lines, from
  ``sales_facts``); the last period is dropped when the data ends inside it;
* label: the product's purchases in the next period (0 when it sold nothing);
* scaling: ``models/scoring.py`` scores Σ w_f · x_f / max x_f (max over the products
  ranked together). Tree splits and gain importances do not change under a monotone
  rescaling of a feature (x / max of the whole set is one), so the regressor is fitted
  on the raw per-period values and its importances apply unchanged to the scaled
  features (scaling per *period* instead is not a global monotone map: one noisy
  product would set each period's max). The weighted-score metric below does use the
  scorer's per-set scaling;
* time split: the latest ``eval_fraction`` of the labelled periods are evaluated, the
  model is fitted on periods whose label period ends before them;
* an XGBRegressor; its importances (``gain`` by default) normalised to sum 1 are the
  weights — the weights file of SPEC §4 (a JSON object mapping the six names to
  non-negative weights);
* metrics on the evaluation periods: RMSE vs the naive "same as this period" baseline,
  MAE, Spearman of predictions and of the weighted score with next-period purchases;
  per evaluation period, how well the weighted score ranks products for the next
  period's purchases (Spearman, NDCG@10) beside add-to-cart counts alone and, on
  generated data, the true demand (:func:`ranking_metrics`);
* artifact ``{models}/popularity/{version}/weights.json`` + ``model.json`` +
  ``metadata.json``, ``LATEST`` last; metrics rows into ``model_metrics``.

:func:`engagement_from_events` applies SPEC §2 (``transforms.session_rules``, the same
functions the streaming pipeline uses) to plain click events, so the model can be trained
from the click stream itself when the streaming pipeline's table is not available
(``--input``, small data sets and tests).
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import math
from collections import defaultdict
from typing import Any, Dict, Iterable, List, Mapping, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from models import artifacts
from transforms import records
from transforms.records import EPOCH, EPOCH_DATE
from transforms.scoring import FEATURES
from transforms.session_rules import (
    DEFAULT_LOOKBACK,
    DEFAULT_VISIT_GAP,
    drop_duplicates,
    enrich_session,
    sort_key,
)
from transforms.sources import find_table_files
from transforms.table_io import dialect, query_arrow, table_exists
from transforms.warehouse import open_warehouse

log = logging.getLogger(__name__)

MODEL = "popularity"
COUNTED = {"CLICK": 0, "ITEM_DETAIL": 1, "ADD_TO_CART": 2, "HOMEPAGE": 3}
PERIODS = ("week", "2w", "month")
_MONDAY_OFFSET_S = 4 * 86_400          # 1970-01-05 was a Monday
US = 1_000_000


def engagement_from_events(events: Iterable, period: Optional[str] = None,
                           visit_gap_s: float = DEFAULT_VISIT_GAP, lookback: int = DEFAULT_LOOKBACK
                           ) -> Dict[Tuple[int, Optional[int]], List[float]]:
    """Click events → {(product_id, period index or None): [click, item_detail,
    add_to_cart, homepage, dwell, 0.0]} (purchases are added by :func:`add_purchases`)."""
    sessions: Dict[str, list] = defaultdict(list)
    for e in events:
        sessions[e.session_id].append(e)
    out: Dict[Tuple[int, Optional[int]], List[float]] = {}
    for evs in sessions.values():
        unique, _dups = drop_duplicates(sorted(evs, key=sort_key))
        for x in enrich_session(unique, visit_gap_s, lookback):
            if x.product_id is None:
                continue
            key = (x.product_id, period_index(x.event_time_us, period) if period else None)
            acc = out.get(key)
            if acc is None:
                acc = out[key] = [0.0] * len(FEATURES)
            k = COUNTED.get(x.event_name)
            if k is not None:
                acc[k] += 1
            if x.dwell_seconds is not None:
                acc[4] += x.dwell_seconds
    return out


def add_purchases(engagement: Dict[Tuple[int, Optional[int]], List[float]],
                  transactions: Iterable, period: Optional[str] = None) -> None:
    """Add units of successful booking lines (deduplicated by booking_id) in place."""
    seen = set()
    for t in transactions:
        if t.payment_status != "Success" or t.booking_id in seen:
            continue
        seen.add(t.booking_id)
        p = period_index(t.created_at_us, period) if period else None
        for line in t.lines:
            acc = engagement.get((line.product_id, p))
            if acc is None:
                acc = engagement[(line.product_id, p)] = [0.0] * len(FEATURES)
            acc[5] += line.quantity


# --------------------------------------------------------------------------- periods
def period_index(t_us: int, period: str) -> int:
    if period == "month":
        d = EPOCH + dt.timedelta(microseconds=t_us)
        return d.year * 12 + d.month - 1
    days = {"week": 7, "2w": 14}[period]
    return int((t_us // US - _MONDAY_OFFSET_S) // (days * 86_400))


def period_start(idx: int, period: str) -> dt.date:
    if period == "month":
        return dt.date(idx // 12, idx % 12 + 1, 1)
    days = {"week": 7, "2w": 14}[period]
    return dt.date(1970, 1, 5) + dt.timedelta(days=idx * days)


def period_end(idx: int, period: str) -> dt.date:
    """First day after the period."""
    return period_start(idx + 1, period)


def _period_sql(column: str, period: str, dialect: str) -> str:
    if dialect == "bigquery":
        if period == "month":
            return f"(EXTRACT(YEAR FROM {column}) * 12 + EXTRACT(MONTH FROM {column}) - 1)"
        secs = {"week": 7, "2w": 14}[period] * 86_400
        return f"DIV(UNIX_SECONDS({column}) - {_MONDAY_OFFSET_S}, {secs})"
    if period == "month":
        return f"(year({column}) * 12 + month({column}) - 1)"
    secs = {"week": 7, "2w": 14}[period] * 86_400
    return f"CAST(floor((epoch({column}) - {_MONDAY_OFFSET_S}) / {secs}) AS BIGINT)"


def engagement_from_warehouse(wh, period: str) -> Tuple[Dict[Tuple[int, int], List[float]],
                                                         Optional[int]]:
    """Per product per period engagement from ``events_enriched`` + ``sales_facts``.

    Returns (engagement, last complete period index or None)."""
    d = dialect(wh)
    if not table_exists(wh, "events_enriched"):
        raise ValueError("the warehouse has no events_enriched table: run `shopstream "
                         "replay` first, or train from files with --input DIR")
    p_ev = _period_sql("event_time", period, d)
    ev = query_arrow(wh, f"""
        SELECT product_id, {p_ev} AS period,
               SUM(CASE WHEN event_name = 'CLICK' THEN 1 ELSE 0 END) AS click_count,
               SUM(CASE WHEN event_name = 'ITEM_DETAIL' THEN 1 ELSE 0 END) AS item_detail_count,
               SUM(CASE WHEN event_name = 'ADD_TO_CART' THEN 1 ELSE 0 END) AS add_to_cart_count,
               SUM(CASE WHEN event_name = 'HOMEPAGE' THEN 1 ELSE 0 END) AS homepage_count,
               SUM(COALESCE(dwell_seconds, 0)) AS total_dwell_seconds
        FROM {wh.ref('events_enriched')}
        WHERE product_id IS NOT NULL
        GROUP BY 1, 2""").to_pydict()
    end = wh.query(f"SELECT MAX(event_time) AS t FROM {wh.ref('events_enriched')}")
    out: Dict[Tuple[int, int], List[float]] = {}
    for i, pid in enumerate(ev.get("product_id", [])):
        out[(int(pid), int(ev["period"][i]))] = [
            float(ev[f][i] or 0) for f in FEATURES[:5]] + [0.0]
    if table_exists(wh, "sales_facts"):
        p_sf = _period_sql("created_at", period, d)
        sf = query_arrow(wh, f"""
            SELECT product_id, {p_sf} AS period, SUM(quantity) AS purchases
            FROM {wh.ref('sales_facts')} GROUP BY 1, 2""").to_pydict()
        for i, pid in enumerate(sf.get("product_id", [])):
            key = (int(pid), int(sf["period"][i]))
            acc = out.get(key)
            if acc is None:
                acc = out[key] = [0.0] * len(FEATURES)
            acc[5] += float(sf["purchases"][i] or 0)
    last = None
    t = end[0]["t"] if end else None
    if t is not None:
        if isinstance(t, str):
            t = dt.datetime.fromisoformat(t)
        if t.tzinfo is None:
            t = t.replace(tzinfo=dt.timezone.utc)
        last = last_complete_period(int((t - EPOCH).total_seconds() * US), period)
    return out, last


def last_complete_period(data_end_us: int, period: str) -> int:
    """The last period that ends on or before the day of ``data_end_us`` ends."""
    day_end = (EPOCH + dt.timedelta(microseconds=data_end_us)).date() + dt.timedelta(days=1)
    p = period_index(data_end_us, period)
    return p if period_end(p, period) <= day_end else p - 1


# --------------------------------------------------------------------------- data set
class Dataset(NamedTuple):
    X: np.ndarray            # features scaled per period (x / max of the period), as scored
    raw: np.ndarray          # the raw features
    y: np.ndarray            # next-period purchases
    period: np.ndarray       # period index of each row
    product: np.ndarray


def build_dataset(engagement: Mapping[Tuple[int, int], Sequence[float]],
                  last_period: Optional[int] = None) -> Dataset:
    """Rows: (product, period t) with activity in t and t+1 ≤ last_period; label: the
    product's purchases in t+1."""
    if not engagement:
        raise ValueError("no product engagement to train on")
    periods = sorted({p for _, p in engagement})
    last = periods[-1] if last_period is None else min(last_period, periods[-1])
    rows = [(pid, p) for (pid, p) in engagement if p < last]
    rows.sort(key=lambda r: (r[1], r[0]))
    if not rows:
        raise ValueError("need at least two complete periods of engagement")
    raw = np.array([engagement[r] for r in rows], dtype=np.float64)
    y = np.array([engagement.get((pid, p + 1), (0,) * 6)[5] for pid, p in rows], dtype=np.float64)
    period = np.array([p for _, p in rows])
    product = np.array([pid for pid, _ in rows])
    X = scale_per_group(raw, period)
    return Dataset(X, raw, y, period, product)


def scale_per_group(raw: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """x / max(x over the rows of the same group), per column; 0 where the max is 0."""
    X = np.zeros_like(raw)
    for g in np.unique(groups):
        m = groups == g
        mx = raw[m].max(axis=0)
        safe = np.where(mx > 0, mx, 1.0)
        X[m] = np.where(mx > 0, raw[m] / safe, 0.0)
    return X


def score(engagement: Mapping[Any, Sequence[float]], weights: Mapping[str, float]
          ) -> Dict[Any, float]:
    """Σ w_f · x_f / max x_f over the given products (what models/scoring.py computes)."""
    keys = list(engagement)
    if not keys:
        return {}
    raw = np.array([list(engagement[k]) for k in keys], dtype=np.float64)
    X = scale_per_group(raw, np.zeros(len(keys)))
    w = np.array([float(weights[f]) for f in FEATURES])
    return dict(zip(keys, (X @ w).tolist()))


# --------------------------------------------------------------------------- train
class TrainResult(NamedTuple):
    weights: Dict[str, float]
    model_json: bytes
    metrics: Dict[str, float]
    metadata: Dict[str, Any]


def _spearman(a, b) -> Optional[float]:
    from scipy.stats import spearmanr

    if len(a) < 3 or np.all(a == a[0]) or np.all(b == b[0]):
        return None
    return float(spearmanr(a, b).statistic)


def weights_from_importance(importance: Mapping[str, float]) -> Dict[str, float]:
    """Importances by feature name → non-negative weights summing to 1 (uniform if none)."""
    vals = {f: max(float(importance.get(f, 0.0) or 0.0), 0.0) for f in FEATURES}
    total = math.fsum(vals.values())
    if total <= 0:
        return {f: 1.0 / len(FEATURES) for f in FEATURES}
    w = {f: vals[f] / total for f in FEATURES}
    # round to 6 digits, keep the sum exactly 1 by fixing the largest
    w = {f: round(v, 6) for f, v in w.items()}
    top = max(w, key=w.get)
    w[top] = round(1.0 - math.fsum(v for f, v in w.items() if f != top), 6)
    return w


def train(engagement: Mapping[Tuple[int, int], Sequence[float]], period: str = "2w",
          last_period: Optional[int] = None, eval_fraction: float = 0.25,
          importance_type: str = "gain", n_estimators: int = 200, max_depth: int = 3,
          learning_rate: float = 0.03, seed: int = 0, n_jobs: int = 2,
          demand: Optional[Mapping[Tuple[int, int], float]] = None) -> TrainResult:
    """Fit the regressor with a time split and turn its importances into weights.
    ``demand`` ((product, period) → true expected units, from generated data's ground
    truth) adds the ceiling to the ranking evaluation."""
    import xgboost as xgb

    ds = build_dataset(engagement, last_period)
    periods = np.unique(ds.period)
    if len(periods) < 3:
        raise ValueError(f"popularity training needs at least 3 labelled periods; the data "
                         f"has {len(periods)} ({period} periods): use a shorter --period or "
                         f"more data")
    n_eval = max(1, int(round(len(periods) * eval_fraction)))
    eval_start = periods[-n_eval]
    fit = ds.period <= eval_start - 2          # its label period ends before eval starts
    if not fit.any():
        fit = ds.period < eval_start
    ev = ds.period >= eval_start
    model = xgb.XGBRegressor(
        n_estimators=n_estimators, max_depth=max_depth, learning_rate=learning_rate,
        subsample=0.8, colsample_bytree=1.0, min_child_weight=1.0, reg_lambda=1.0,
        objective="reg:squarederror", tree_method="hist", n_jobs=n_jobs, random_state=seed)
    model.fit(ds.raw[fit], ds.y[fit])
    booster = model.get_booster()
    importances = {}
    for kind in ("gain", "total_gain", "weight", "cover"):
        raw = booster.get_score(importance_type=kind)
        importances[kind] = {FEATURES[int(k[1:])]: float(v) for k, v in raw.items()}
    weights = weights_from_importance(importances[importance_type])

    pred = model.predict(ds.raw[ev])
    y = ds.y[ev]
    naive = ds.raw[ev][:, FEATURES.index("purchases")]
    weighted = ds.X[ev] @ np.array([weights[f] for f in FEATURES])
    metrics: Dict[str, float] = {
        "rmse": float(np.sqrt(np.mean((pred - y) ** 2))),
        "baseline_rmse": float(np.sqrt(np.mean((naive - y) ** 2))),
        "mae": float(np.mean(np.abs(pred - y))),
        "baseline_mae": float(np.mean(np.abs(naive - y))),
        "train_rows": float(fit.sum()), "eval_rows": float(ev.sum()),
        "eval_periods": float(n_eval),
    }
    for name, s in (("spearman", pred), ("baseline_spearman", naive),
                    ("weights_spearman", weighted)):
        v = _spearman(s, y)
        if v is not None:
            metrics[name] = v
    metrics.update(ranking_metrics(ds, ev, weighted, demand))
    ps = ds.period[fit]
    metadata = {
        "model_type": "XGBRegressor",
        "period": period,
        "features": list(FEATURES),
        "scaling": "fitted on raw per-period values (tree importances are scale-free); "
                   "score with x / max over the ranked set (models/scoring.py)",
        "label": "next period's purchases (units of successful booking lines)",
        "importance_type": importance_type,
        "importances": importances,
        "weights": weights,
        "window_start": period_start(int(ps.min()), period).isoformat(),
        "window_end": (period_end(int(ps.max()) + 1, period) - dt.timedelta(days=1)).isoformat(),
        "eval_window": [period_start(int(eval_start), period).isoformat(),
                        (period_end(int(periods[-1]) + 1, period)
                         - dt.timedelta(days=1)).isoformat()],
        "params": {"n_estimators": n_estimators, "max_depth": max_depth,
                   "learning_rate": learning_rate, "seed": seed},
        "metrics": metrics,
        "xgboost": xgb.__version__,
    }
    return TrainResult(weights, bytes(booster.save_raw("json")), metrics, metadata)


def ranking_metrics(ds: Dataset, rows: np.ndarray, weighted: np.ndarray,
                    demand: Optional[Mapping[Tuple[int, int], float]] = None,
                    k: int = 10) -> Dict[str, float]:
    """How well each ranking of a period's products predicts the next period's
    purchases, averaged over the evaluation periods: Spearman and NDCG@k of the weighted
    score (``ranking_*``), of add-to-cart counts alone (``baseline_add_to_cart_*``) and,
    given the ground truth, of the true next-period demand (``true_demand_*``)."""
    from sklearn.metrics import ndcg_score

    y = ds.y[rows]
    periods = ds.period[rows]
    scorers = {"ranking": weighted,
               "baseline_add_to_cart": ds.raw[rows][:, FEATURES.index("add_to_cart_count")]}
    if demand is not None:
        scorers["true_demand"] = np.array(
            [demand.get((int(pid), int(p) + 1), 0.0)
             for pid, p in zip(ds.product[rows], periods)])
    sums: Dict[str, List[float]] = defaultdict(list)
    for p in np.unique(periods):
        m = periods == p
        if m.sum() < 2 or y[m].max() <= 0:
            continue
        for name, s in scorers.items():
            rho = _spearman(s[m], y[m])
            if rho is not None:
                sums[f"{name}_spearman"].append(rho)
            sums[f"{name}_ndcg_at_{k}"].append(float(ndcg_score([y[m]], [s[m]], k=k)))
    out = {name: float(np.mean(v)) for name, v in sums.items() if v}
    out["ranking_eval_periods"] = float(len(sums.get(f"ranking_ndcg_at_{k}", ())))
    return out


def read_demand(path: str, period: str) -> Dict[Tuple[int, int], float]:
    """(product_id, period index) → true expected units, from a generated data set's
    ``ground_truth/product_demand.csv`` (weekly; a week's demand is spread evenly over
    its days, so any period length works). Local or gs://."""
    import csv

    path, fh = artifacts.open_text(path, "product_demand.csv")
    out: Dict[Tuple[int, int], float] = defaultdict(float)
    days_of: Dict[str, List[int]] = {}      # week_start → the period of each of its days
    with fh:
        try:
            for r in csv.DictReader(fh):
                week = r["week_start"]
                if week not in days_of:
                    first = (dt.date.fromisoformat(week) - EPOCH_DATE).days
                    days_of[week] = [period_index((first + d) * 86_400 * US, period)
                                     for d in range(7)]
                share = float(r["expected_units"]) / 7.0
                pid = int(r["product_id"])
                for idx in days_of[week]:
                    out[(pid, idx)] += share
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path} is not a ground-truth product_demand.csv "
                             f"(product_id, week_start, expected_units): {exc}") from exc
    return dict(out)


# --------------------------------------------------------------------------- artifacts
def save(models_dir: str, result: TrainResult, trained_at: Optional[dt.datetime] = None
         ) -> Tuple[str, Dict[str, Any]]:
    trained_at = trained_at or artifacts.utcnow()
    files = {"weights.json": artifacts.dumps(result.weights), "model.json": result.model_json}
    meta = result.metadata
    version = artifacts.make_version(dt.date.fromisoformat(meta["window_start"]),
                                     dt.date.fromisoformat(meta["window_end"]), files)
    meta = dict(meta, trained_at=trained_at.isoformat())
    artifacts.save(models_dir, MODEL, version, files, meta)
    return version, dict(meta, version=version)


def load_weights(models_dir: str, version: Optional[str] = None) -> Tuple[Dict[str, float], str]:
    meta = artifacts.load_metadata(models_dir, MODEL, version)
    data = artifacts.load_file(models_dir, MODEL, "weights.json", meta["version"])
    return json.loads(data), meta["version"]


# --------------------------------------------------------------------------- command
def engagement_from_files(root: str, period: str, visit_gap_s: float = DEFAULT_VISIT_GAP,
                          lookback: int = DEFAULT_LOOKBACK) -> Tuple[Dict, Optional[int]]:
    """Per product per period engagement straight from click_stream + transactions files
    (in memory: for small data sets; the warehouse path scales)."""
    def read(kind):
        for path in find_table_files(root, kind):
            for r in records.read_csv_records(path, kind):
                if not isinstance(r, records.DeadLetter):
                    yield r

    clicks = list(read("click_stream"))
    if not clicks:
        raise ValueError(f"no click_stream files under {root}")
    eng = engagement_from_events(clicks, period, visit_gap_s, lookback)
    add_purchases(eng, read("transactions"), period)
    last = last_complete_period(max(e.event_time_us for e in clicks), period)
    return eng, last


def run_train(warehouse: str, models_dir: str, period: str = "2w",
              input_dir: Optional[str] = None, now: Optional[dt.datetime] = None,
              ground_truth: Optional[str] = None, **kwargs) -> Dict[str, Any]:
    with open_warehouse(warehouse) as wh:
        if input_dir:
            eng, last = engagement_from_files(input_dir, period)
            source = f"files under {input_dir}"
        else:
            eng, last = engagement_from_warehouse(wh, period)
            source = "events_enriched + sales_facts"
        demand = read_demand(ground_truth, period) if ground_truth else None
        result = train(eng, period, last, demand=demand, **kwargs)
        version, meta = save(models_dir, result, now)
        trained_at = dt.datetime.fromisoformat(meta["trained_at"])
        n = wh.write("model_metrics",
                     artifacts.metric_rows(MODEL, version, trained_at, result.metrics), "upsert")
    return {"status": "trained", "version": version, "weights": result.weights,
            "metrics": result.metrics, "source": source, "metrics_rows": n}
