"""`shopstream report` on a small DuckDB warehouse: sections, charts, offline, degradation."""
from __future__ import annotations

import datetime as dt
import json
import random
import re
from pathlib import Path

import pytest

from transforms.warehouse import open_warehouse

PROVINCES = {  # province → (lat, long)
    "DKI Jakarta": (-6.2, 106.8), "Jawa Barat": (-6.9, 107.6), "Bali": (-8.4, 115.2),
    "Sumatera Utara": (2.1, 99.5), "Sulawesi Selatan": (-3.7, 119.9), "Papua": (-4.3, 138.1),
}
BRANDS = ["Puma", "Nike", "Adidas", "Fabindia", "Roadster"]
SUBCATS = ["Topwear", "Shoes", "Bottomwear", "Watches"]
TOP_PRODUCT_ID = 15315


def fill_warehouse(path: Path, tables=None, seed: int = 3) -> Path:
    """A small, representative warehouse written through open_warehouse().write()."""
    rng = random.Random(seed)
    start = dt.date(2022, 1, 1)
    products = [{"product_id": TOP_PRODUCT_ID if i == 0 else 20000 + i,
                 "brand": BRANDS[i % len(BRANDS)], "subCategory": SUBCATS[i % len(SUBCATS)],
                 "gender": ["Men", "Women", "Unisex"][i % 3],
                 "season": ["Summer", "Winter", "Fall", "Spring"][i % 4]} for i in range(20)]
    for i, p in enumerate(products):
        p["productDisplayName"] = f"{p['brand']} {p['gender']} Item {i}"
        p["popularity_score"] = round(100.0 - 4.5 * i, 3)
    customers = [{"customer_id": 100 + c, "gender": "MF"[c % 2], "age": 19 + (c * 7) % 45,
                  "province": list(PROVINCES)[c % len(PROVINCES)]} for c in range(40)]

    sales, daily = [], {}
    for b in range(220):
        cust = customers[rng.randrange(len(customers))]
        day = start + dt.timedelta(days=rng.randrange(90))
        lat, lon = PROVINCES[cust["province"]]
        for line in range(1 + rng.randrange(2)):
            p = products[rng.randrange(len(products))]
            qty, price = 1 + rng.randrange(3), 50000 + 1000 * rng.randrange(200)
            sales.append({
                "booking_id": f"b{b:04d}", "line_number": line,
                "created_at": dt.datetime.combine(day, dt.time(10, 0), dt.timezone.utc),
                "customer_id": cust["customer_id"], "product_id": p["product_id"],
                "quantity": qty, "item_price": price, "line_revenue": qty * price,
                "payment_method": ["OVO", "Gopay", "Credit Card"][b % 3], "promo_amount": 0,
                "shipment_fee": 10000, "customer_age": cust["age"], "gender": cust["gender"],
                "province": cust["province"], "latitude": lat, "longitude": lon,
                "home_location_lat": lat + rng.uniform(-1, 1),
                "home_location_long": lon + rng.uniform(-1, 1),
                "product_gender": p["gender"], "masterCategory": "Apparel" if line == 0 else "Footwear",
                "subCategory": p["subCategory"], "articleType": "Tshirts", "baseColour": "Blue",
                "season": p["season"], "usage": "Casual",
                "productDisplayName": p["productDisplayName"], "brand": p["brand"]})
            k = (day, sales[-1]["masterCategory"], p["subCategory"], p["brand"],
                 sales[-1]["payment_method"], cust["province"])
            d = daily.setdefault(k, {"orders": 0, "units": 0, "revenue": 0, "promo_amount": 0})
            d["orders"] += 1
            d["units"] += qty
            d["revenue"] += qty * price
    daily_rows = [dict(zip(("date", "masterCategory", "subCategory", "brand", "payment_method",
                            "province"), k), **v) for k, v in daily.items()]

    months = [dt.date(2021, m, 1) for m in range(7, 13)] + [dt.date(2022, m, 1) for m in range(1, 4)]
    features, preds = [], []
    for c in customers:
        for i, m in enumerate(months):
            features.append({"customer_id": c["customer_id"], "month": m, "recency_days": 10.0 * i,
                             "frequency": rng.randrange(3), "monetary": 100000 * rng.randrange(5),
                             "session_count": rng.randrange(6), "avg_session_minutes": 4.5,
                             "tenure_days": 30 * i,
                             "churned": None if i >= 6 else int(rng.random() < 0.3 + 0.01 * (c["age"] - 19))})
        preds.append({"customer_id": c["customer_id"], "month": months[-1],
                      "churn_probability": min(0.99, 0.15 + 0.015 * (c["age"] - 19) + rng.uniform(0, 0.2)),
                      "model_version": "churn-2022Q1", "scored_at": dt.datetime(2022, 4, 1, tzinfo=dt.timezone.utc)})

    trained = dt.datetime(2022, 4, 1, tzinfo=dt.timezone.utc)
    # metric names as models/churn.py writes them (+ ROC points, which it does not store)
    metrics = [("roc_auc", 0.81), ("pr_auc", 0.67), ("brier", 0.16), ("log_loss", 0.48),
               ("baseline_recency_roc_auc", 0.62), ("roc_auc_recent_buyers", 0.74),
               ("baseline_recency_roc_auc_recent_buyers", 0.58), ("roc_auc_uncalibrated", 0.8),
               ("brier_uncalibrated", 0.19), ("train_rows", 180.0), ("eval_rows", 40.0),
               ("eval_positive_rate", 0.45), ("mean_predicted", 0.5)]
    metrics += [("baseline_recency_pr_auc", 0.5), ("oracle_roc_auc", 0.9), ("oracle_pr_auc", 0.8),
                ("oracle_brier", 0.11), ("oracle_roc_auc_recent_buyers", 0.85),
                ("pr_auc_recent_buyers", 0.6), ("oracle_pr_auc_recent_buyers", 0.7),
                ("brier_recent_buyers", 0.17)]
    for b in range(1, 11):
        metrics += [(f"calibration_bin_{b:02d}_predicted", 0.05 + 0.09 * (b - 1)),
                    (f"calibration_bin_{b:02d}_observed", 0.03 + 0.095 * (b - 1)),
                    (f"calibration_bin_{b:02d}_rows", 4.0)]
        for name, power in (("model", 0.6), ("baseline_recency", 0.8), ("oracle", 0.45)):
            metrics.append((f"gains_{name}_decile_{b:02d}", round((b / 10) ** power, 4)))
    metrics += [("importance_recency_days", 0.08), ("importance_promo_share", 0.03),
                ("importance_failed_bookings_3m", 0.01)]
    metrics += [(f"roc_fpr_{i}", f) for i, f in enumerate((0.05, 0.2, 0.5))]
    metrics += [(f"roc_tpr_{i}", t) for i, t in enumerate((0.35, 0.7, 0.9))]
    metric_rows = [{"model": "churn", "model_version": "churn-2022Q1", "trained_at": trained,
                    "metric": m, "value": v} for m, v in metrics]
    metric_rows += [{"model": "churn", "model_version": "churn-2021Q4",
                     "trained_at": trained - dt.timedelta(days=90), "metric": m, "value": v}
                    for m, v in (("roc_auc", 0.78), ("pr_auc", 0.6), ("brier", 0.18))]
    metric_rows += [{"model": "popularity", "model_version": "pop-1", "trained_at": trained,
                     "metric": m, "value": v}
                    for m, v in (("spearman", 0.4), ("ranking_spearman", 0.62),
                                 ("ranking_ndcg_at_10", 0.89), ("baseline_add_to_cart_spearman", 0.63),
                                 ("baseline_add_to_cart_ndcg_at_10", 0.88),
                                 ("true_demand_spearman", 0.77), ("true_demand_ndcg_at_10", 0.93),
                                 ("ranking_eval_periods", 7.0))]

    by_table = {
        "daily_sales": daily_rows, "sales_facts": sales,
        "product_engagement": [dict(p, click_count=50 - i, item_detail_count=30 - i,
                                    add_to_cart_count=20 - i // 2, homepage_count=60 - i,
                                    total_dwell_seconds=900.0 - 10 * i, purchases=10 - i // 3)
                               for i, p in enumerate(products)],
        "top10_products": [dict(p, rank=i + 1) for i, p in enumerate(products[:10])],
        "top10_brands": [{"rank": i + 1, "brand": b, "popularity_score": 300.0 - 40 * i}
                         for i, b in enumerate(BRANDS)],
        "top10_subcategories": [{"rank": i + 1, "subCategory": s, "popularity_score": 400.0 - 60 * i}
                                for i, s in enumerate(SUBCATS)],
        "top10_products_by_season_gender": [
            dict(p, rank=1) for p in products[:12]],
        "churn_features": features, "churn_predictions": preds, "model_metrics": metric_rows,
    }
    with open_warehouse(str(path)) as wh:
        for table, rows in by_table.items():
            if tables is None or table in tables:
                wh.write(table, rows, mode="replace")
    return path


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory) -> Path:
    return fill_warehouse(tmp_path_factory.mktemp("wh") / "wh.duckdb")


@pytest.fixture(scope="module")
def report_html(warehouse, tmp_path_factory) -> str:
    from pipelines.report import write_report

    out = write_report(str(warehouse), str(tmp_path_factory.mktemp("rep") / "report.html"))
    return out.read_text(encoding="utf-8")


def _section(html: str, sid: str) -> str:
    m = re.search(rf'<section id="{sid}" data-status="(\w+)">(.*?)</section>', html, re.S)
    assert m, f"section {sid} missing"
    return m.group(1) + "|" + m.group(2)


def _figure(html: str, div_id: str) -> dict:
    """The data of a plotly figure embedded in the report, decoded from Plotly.newPlot(...)."""
    m = re.search(r'Plotly\.newPlot\(\s*"' + re.escape(div_id) + r'",\s*(\[.*?\]),\s*\{', html, re.S)
    assert m, f"chart {div_id} missing"
    return json.loads(m.group(1))


def test_report_has_every_section_and_chart(report_html):
    for sid in ("sales", "top", "map", "churn", "model", "popularity"):
        assert _section(report_html, sid).startswith("ok|"), sid
    for chart in ("chart-churn-eval", "chart-churn-calibration", "chart-churn-gains",
                  "chart-churn-importance", "chart-popularity-eval", "chart-sales-daily", "chart-sales-category", "chart-sales-payment",
                  "chart-top-products", "chart-top-brands", "chart-top-subcategories",
                  "chart-engagement", "chart-map", "chart-province-revenue",
                  "chart-churn-trend", "chart-churn-risk-distribution", "chart-churn-segments",
                  "chart-churn-province", "chart-model-metrics", "chart-model-versions",
                  "chart-model-roc"):
        assert f'id="{chart}"' in report_html, chart
    assert "Not available" not in report_html


def test_report_values_come_from_the_warehouse(report_html, warehouse):
    with open_warehouse(str(warehouse)) as wh:
        revenue = wh.query("SELECT SUM(revenue) AS r FROM daily_sales")[0]["r"]
        orders = wh.query("SELECT COUNT(DISTINCT booking_id) AS n FROM sales_facts")[0]["n"]
    assert f"{revenue:,}" in _section(report_html, "sales")
    daily = _figure(report_html, "chart-sales-daily")
    assert sum(daily[1]["y"]) == orders  # orders counted once per booking
    top = _figure(report_html, "chart-top-products")[0]
    assert str(TOP_PRODUCT_ID) in top["y"][-1]  # best product drawn on top
    metrics = _figure(report_html, "chart-model-metrics")
    x = metrics[0]["x"]
    assert x[:4] == ["roc_auc", "pr_auc", "brier", "log_loss"]
    assert "train_rows" not in x and "eval_positive_rate" not in x
    assert metrics[0]["y"][:3] == [0.81, 0.67, 0.16]
    assert metrics[1]["name"] == "baseline (recency)"
    base = dict(zip(x, metrics[1]["y"]))
    assert base["roc_auc"] == 0.62 and base["roc_auc_recent_buyers"] == 0.58
    assert base["pr_auc"] == 0.5 and base["brier"] is None
    versions = _figure(report_html, "chart-model-versions")
    assert versions[0]["x"] == ["churn-2021Q4", "churn-2022Q1"] and versions[0]["y"] == [0.78, 0.81]
    prov = _figure(report_html, "chart-map")[-1]
    assert set(prov["text"]) == set(PROVINCES)
    assert all(94 <= x <= 142 for x in prov["x"]) and all(-11.5 <= y <= 6.5 for y in prov["y"])
    seg = _figure(report_html, "chart-churn-segments")
    assert {"observed churn rate", "mean predicted risk"} == {t["name"] for t in seg}
    assert set(seg[0]["x"]) == {"F", "M"}


def _latest(wh, model: str) -> dict:
    """metric → value of the newest version of ``model``, straight from SQL."""
    rows = wh.query("SELECT metric, value FROM model_metrics WHERE model = '%s' AND "
                    "model_version = (SELECT model_version FROM model_metrics WHERE model = '%s' "
                    "ORDER BY trained_at DESC, model_version DESC LIMIT 1)" % (model, model))
    return {r["metric"]: r["value"] for r in rows}


def test_churn_evaluation_charts_equal_sql(report_html, warehouse):
    with open_warehouse(str(warehouse)) as wh:
        m = _latest(wh, "churn")
    ev = {t["name"]: dict(zip(t["x"], t["y"])) for t in _figure(report_html, "chart-churn-eval")}
    assert set(ev) == {"model", "recency baseline (floor)", "oracle: true hazard (ceiling)"}
    for label, prefix in (("model", ""), ("recency baseline (floor)", "baseline_recency_"),
                          ("oracle: true hazard (ceiling)", "oracle_")):
        assert ev[label]["ROC-AUC · all customers"] == m[f"{prefix}roc_auc"]
        assert ev[label]["ROC-AUC · recent buyers"] == m[f"{prefix}roc_auc_recent_buyers"]
        assert ev[label]["PR-AUC · all customers"] == m[f"{prefix}pr_auc"]
    assert ev["recency baseline (floor)"]["PR-AUC · recent buyers"] is None   # not stored
    table = re.search(r'<table class="data churn-eval">(.*?)</table>', report_html, re.S).group(1)
    assert f"{m['oracle_brier']:.4f}" in table and f"{m['brier']:.4f}" in table
    cal = _figure(report_html, "chart-churn-calibration")[1]
    assert cal["x"] == [m[f"calibration_bin_{b:02d}_predicted"] for b in range(1, 11)]
    assert cal["y"] == [m[f"calibration_bin_{b:02d}_observed"] for b in range(1, 11)]
    gains = {t["name"]: t for t in _figure(report_html, "chart-churn-gains")
             if t["type"] == "scatter" and t["name"] != "random"}
    assert gains["oracle: true hazard (ceiling)"]["y"][1:] == [
        m[f"gains_oracle_decile_{b:02d}"] for b in range(1, 11)]
    lift = [t for t in _figure(report_html, "chart-churn-gains") if t["type"] == "bar"]
    assert lift[0]["y"][0] == pytest.approx(m["gains_model_decile_01"] / 0.1)
    imp = _figure(report_html, "chart-churn-importance")[0]
    assert dict(zip(imp["y"], imp["x"])) == {k[len("importance_"):]: v for k, v in m.items()
                                             if k.startswith("importance_")}
    assert imp["y"][-1] == "recency_days"                  # the largest on top
    generic = _figure(report_html, "chart-model-metrics")[0]["x"]
    assert not [x for x in generic if x.startswith(("oracle_", "gains_", "calibration_"))]


def test_popularity_evaluation_equals_sql(report_html, warehouse):
    with open_warehouse(str(warehouse)) as wh:
        m = _latest(wh, "popularity")
    fig = {t["name"]: dict(zip(t["x"], t["y"]))
           for t in _figure(report_html, "chart-popularity-eval")}
    for label, prefix in (("weighted popularity score", "ranking"),
                          ("add-to-cart count alone", "baseline_add_to_cart"),
                          ("true demand (ceiling)", "true_demand")):
        assert fig[label] == {"Spearman": m[f"{prefix}_spearman"],
                              "NDCG@10": m[f"{prefix}_ndcg_at_10"]}
    assert f"{m['ranking_eval_periods']:.0f}" in _section(report_html, "popularity")


def test_report_is_self_contained(report_html):
    assert "<script type=\"text/javascript\">" in report_html and "Plotly.newPlot" in report_html
    assert len(report_html) > 1_000_000  # plotly.js is embedded
    assert not re.search(r'<script[^>]+src\s*=', report_html, re.I)
    assert not re.search(r'<link[^>]+href\s*=\s*["\']?https?:', report_html, re.I)
    assert not re.search(r'<(img|iframe)[^>]+src\s*=\s*["\']?https?:', report_html, re.I)
    body = report_html.rsplit("</head>", 1)[1]  # everything but the embedded plotly.js
    assert not re.search(r"https?://", body)
    ids = re.findall(r'Plotly\.newPlot\(\s*"([\w-]+)"', body)
    assert len(ids) >= 15
    types = {t.get("type") for i in ids for t in _figure(body, i)}
    assert types and not types & {"scattergeo", "choropleth", "scattermap", "scattermapbox"}


def test_missing_tables_say_not_available(tmp_path):
    from pipelines.report import build_report

    path = fill_warehouse(tmp_path / "partial.duckdb", tables={"daily_sales", "top10_brands"})
    html = build_report(str(path))
    assert _section(html, "sales").startswith("ok|")
    assert _section(html, "top").startswith("ok|")
    for sid, table in (("map", "sales_facts"), ("model", "model_metrics")):
        sec = _section(html, sid)
        assert sec.startswith("unavailable|") and "Not available yet" in sec and table in sec
    assert "churn_features and churn_predictions do not exist yet" in _section(html, "churn")
    assert "orders are summed" in _section(html, "sales").lower()
    empty = build_report(str(fill_warehouse(tmp_path / "empty.duckdb", tables=set())))
    assert empty.count('data-status="unavailable"') == 6


def test_cli_writes_report_and_prints_path(warehouse, tmp_path, capsys):
    from pipelines.cli import main

    out = tmp_path / "sub" / "r.html"
    assert main(["report", "--warehouse", str(warehouse), "--out", str(out)]) == 0
    assert out.exists() and capsys.readouterr().out.strip().endswith(str(out.resolve()))
    assert main(["report", "--warehouse", str(tmp_path / "nope.duckdb"), "--out", str(out)]) == 2
    assert not (tmp_path / "nope.duckdb").exists()  # a missing warehouse is not created
