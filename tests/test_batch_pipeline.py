"""The Beam batch job end to end on a small hand-made data set (DirectRunner, DuckDB).

The pipeline's tables must equal what the pure functions of ``batch/`` compute from the
same records; a rerun for the same as-of must replace, never duplicate."""
from __future__ import annotations

import csv
import datetime as dt
import io
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from batch import churn_features as cf
from batch import sales
from batch.geo import gazetteer_centre
from transforms import records

PRODUCTS = [
    ["id", "gender", "masterCategory", "subCategory", "articleType", "baseColour", "season",
     "year", "usage", "productDisplayName"],
    ["10", "Men", "Apparel", "Topwear", "Tshirts", "Blue", "Summer", "2015", "Casual",
     "Puma Men Blue Tshirt"],
    ["11", "Women", "Footwear", "Shoes", "Heels", "Red", "Fall", "2016", "Casual",
     "Catwalk Women Red Heels"],
    # unquoted commas in the name: repaired, not dead-lettered
    ["12", "Unisex", "Accessories", "Bags", "Backpacks", "Black", "Winter", "2017", "Casual",
     "Wildcraft Unisex Black Backpack", " Pack of 2", " Assorted"],
    ["abc", "Men", "Apparel", "Topwear", "Shirts", "White", "Summer", "2015", "Formal", "Bad Id"],
]
CUSTOMERS = [
    list(records.CUSTOMER_COLUMNS),
    ["1", "Siti", "A", "u1", "u1@x", "F", "1990-03-05", "iOS", "d1", "iOS 15", "-6.25", "106.9",
     "Jakarta Raya", "Indonesia", "2020-06-01"],
    ["2", "Budi", "B", "u2", "u2@x", "M", "1985-01-01", "Android", "d2", "Android 9", "-7.8",
     "110.4", "Yogyakarta", "Indonesia", "2020-12-01"],
    ["3", "Dewi", "C", "u3", "u3@x", "F", "2001-07-07", "Android", "d3", "Android 11", "5.5",
     "95.3", "Nanggroe Aceh Darussalam", "Indonesia", "2021-01-01"],
    ["", "No", "Id", "u4", "u4@x", "F", "2001-07-07", "Android", "d4", "Android 11", "1", "1",
     "Bali", "Indonesia", "2021-01-01"],
]


def _txn(created, customer, booking, session, lines, status="Success", method="OVO",
         promo=0, fee=5000):
    total = sum(q * p for _, q, p in lines) + fee - promo
    meta = "[" + ", ".join(f"{{'product_id': {a}, 'quantity': {q}, 'item_price': {p}}}"
                           for a, q, p in lines) + "]"
    return [created, str(customer), booking, session, meta, method, status, str(promo),
            "P" if promo else "", str(fee), "", "-6.2", "106.8", str(total)]


TRANSACTIONS = [
    list(records.TRANSACTION_COLUMNS),
    _txn("2021-01-10T10:05:00.000000Z", 1, "b1", "s1", [(10, 2, 100000), (11, 1, 250000)], promo=5000),
    _txn("2021-01-10T10:05:00.000000Z", 1, "b1", "s1", [(10, 2, 100000), (11, 1, 250000)], promo=5000),
    _txn("2021-02-05T08:00:00.000000Z", 1, "b2", "s2", [(12, 1, 80000)], method="Gopay"),
    _txn("2021-03-03T09:00:00.000000Z", 1, "b3", "s3", [(10, 1, 100000)], status="Failed"),
    _txn("2021-01-15T12:00:00.000000Z", 2, "b4", "s4", [(11, 3, 250000)]),
    _txn("2021-06-20T20:00:00.000000Z", 1, "b5", "s5", [(999, 1, 5000)]),    # unknown product
    _txn("2021-07-10T01:00:00.000000Z", 3, "b6", "s6", [(10, 1, 100000)]),
    _txn("2021-07-11T01:00:00.000000Z", 2, "b7", "s7", [(10, 1, 100000)], status="Maybe"),
]


def _clicks():
    rows = [list(records.CLICK_COLUMNS)]

    def ev(session, name, when, eid, meta=""):
        rows.append([session, name, when, eid, "MOBILE", meta])

    ev("s1", "HOMEPAGE", "2021-01-10T10:00:00.000000Z", "e1")
    ev("s1", "CLICK", "2021-01-10T10:01:00.000000Z", "e2")
    ev("s1", "ADD_TO_CART", "2021-01-10T10:02:00.000000Z", "e3",
       "{'product_id': 10, 'quantity': 2, 'item_price': 100000}")
    ev("s1", "ADD_TO_CART", "2021-01-10T10:02:00.000000Z", "e3",           # redelivered
       "{'product_id': 10, 'quantity': 2, 'item_price': 100000}")
    ev("s1", "BOOKING", "2021-01-10T10:04:00.000000Z", "e4", "{'payment_status': 'Success'}")
    ev("s2", "HOMEPAGE", "2021-02-05T07:00:00.000000Z", "e5")
    ev("s2", "SCROLL", "2021-02-05T07:10:00.000000Z", "e6")
    ev("s2", "BOOKING", "2021-02-05T07:59:00.000000Z", "e7", "{'payment_status': 'Success'}")  # 49 min gap
    ev("s2", "ADD_TO_CART", "2021-02-05T07:59:30.000000Z", "e12",          # a cart left behind
       "{'product_id': 11, 'quantity': 1, 'item_price': 250000}")
    ev("s4", "SEARCH", "2021-01-15T11:50:00.000000Z", "e8", "{'search_keywords': 'heels'}")
    ev("s4", "BOOKING", "2021-01-15T11:59:00.000000Z", "e9", "{'payment_status': 'Success'}")
    ev("s9", "HOMEPAGE", "2021-03-01T00:00:00.000000Z", "e10")             # no booking
    ev("s1", "DANCE", "2021-01-10T10:03:00.000000Z", "e11")                 # invalid name
    rows.append(["s1", "CLICK", "2021-01-10T10:03:00.000000Z"])             # too few fields
    return rows


def write_dataset(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in (("product", PRODUCTS), ("customer", CUSTOMERS),
                       ("transactions", TRANSACTIONS), ("click_stream", _clicks())):
        with open(folder / f"{name}.csv", "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh, lineterminator="\n")
            for r in rows:
                if name == "product" and len(r) > 10:      # write the commas unquoted
                    fh.write(",".join(r) + "\n")
                else:
                    w.writerow(r)
    return folder


def valid(path, kind):
    return [r for r in records.read_csv_records(str(path), kind)
            if not isinstance(r, records.DeadLetter)]


def run_cli(*argv) -> tuple:
    from pipelines.cli import main

    out = io.StringIO()
    with redirect_stdout(out):
        rc = main(["batch", *argv])
    return rc, out.getvalue()


def fetch(wh_path, sql):
    import duckdb

    con = duckdb.connect(str(wh_path), read_only=True)
    try:
        cur = con.execute(sql)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r)) for r in cur.fetchall()]
    finally:
        con.close()


def fake_churn_model(models_dir: Path) -> str:
    """A tiny churn artifact in the real layout (a logistic regression on 2 features)."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    from models import churn

    X = np.array([[1.0, 0], [2, 1], [90, 0], [120, 0], [5, 2], [200, 0]])
    y = np.array([0, 0, 1, 1, 0, 1])
    bundle = {"model": LogisticRegression().fit(X, y), "features": ["recency_days", "frequency"],
              "missing": -1.0}
    result = churn.TrainResult(bundle, {"roc_auc": 1.0}, {
        "window_start": "2021-01-01", "window_end": "2021-03-01", "data_end": "2021-03-01"})
    version, _ = churn.save(str(models_dir), result)
    return version


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("batch") / "data")


def test_batch_job_matches_the_pure_functions_and_reruns_idempotently(dataset, tmp_path):
    wh = tmp_path / "wh.duckdb"
    rc, out = run_cli("--input", str(dataset), "--warehouse", str(wh), "--runner=DirectRunner")
    assert rc == 0, out
    line = out.strip().splitlines()[-1]
    assert line.startswith("batch: as_of=2021-07-10 ")
    # 4 + 4 + 8 + 13 data rows; dead: 1 product, 1 customer, 1 transaction, 2 clicks;
    # the repeated booking and the redelivered click (e3) are duplicates, not valid
    # (read = valid + duplicate + dead)
    assert "read=30 valid=23 duplicate=2 dead_lettered=5" in line
    assert "sales_facts=6 " in line and "churn_features=" in line
    assert "churn_predictions skipped" in line

    # ---- the reference, computed from the same records without Beam
    txns = valid(dataset / "transactions.csv", "transactions")
    custs = valid(dataset / "customer.csv", "customer")
    prods = valid(dataset / "product.csv", "product")
    clicks = valid(dataset / "click_stream.csv", "click_stream")
    assert any(p.id == 12 and p.productDisplayName.endswith("Pack of 2, Assorted") for p in prods)
    cinfo = {c.customer_id: sales.customer_info(c) for c in custs}
    pinfo = {p.id: sales.product_info(p) for p in prods}
    places = {c.home_location: gazetteer_centre(c.home_location) for c in cinfo.values()}
    seen, facts = set(), []
    for t in sorted(txns, key=cf.transaction_rank):
        if t.booking_id not in seen:
            seen.add(t.booking_id)
            facts += sales.fact_rows(t, cinfo.get(t.customer_id), pinfo, places)
    ref_churn = cf.churn_features_in_memory(txns, clicks, custs)

    got_facts = fetch(wh, "SELECT * FROM sales_facts ORDER BY booking_id, line_number")
    assert [(f["booking_id"], f["line_number"]) for f in got_facts] == sorted(
        (f["booking_id"], f["line_number"]) for f in facts)
    b1 = got_facts[0]
    assert b1["province"] == "DKI Jakarta" and b1["latitude"] == pytest.approx(-6.2088)
    assert b1["customer_age"] == 30 and b1["brand"] == "Puma" and b1["promo_amount"] + \
        got_facts[1]["promo_amount"] == 5000
    unknown = [f for f in got_facts if f["product_id"] == 999][0]
    assert unknown["brand"] is None and unknown["quantity"] == 1

    got_daily = fetch(wh, "SELECT * FROM daily_sales ORDER BY date, brand")
    ref_daily = sales.daily_sales_rows(facts)
    key = lambda r: (r["date"], r["brand"] or "", r["payment_method"])  # noqa: E731
    assert sorted(({k: r[k] for k in ref_daily[0]} for r in got_daily), key=key) == \
        sorted(ref_daily, key=key)

    got_churn = fetch(wh, "SELECT * FROM churn_features ORDER BY customer_id, month")
    assert len(got_churn) == len(ref_churn) > 0
    for g, r in zip(got_churn, sorted(ref_churn, key=lambda r: (r["customer_id"], r["month"]))):
        for k, v in r.items():
            assert g[k] == (pytest.approx(v) if isinstance(v, float) else v), (k, r)
    jan = [r for r in got_churn if r["customer_id"] == 1 and r["month"] == dt.date(2021, 1, 1)][0]
    assert jan["session_count"] == 1 and jan["avg_session_minutes"] == pytest.approx(4.0)
    assert jan["churned"] == 0 and jan["frequency"] == 1
    assert jan["abandoned_sessions"] == 0                     # the redelivered cart was booked
    feb = [r for r in got_churn if r["customer_id"] == 1 and r["month"] == dt.date(2021, 2, 1)][0]
    assert feb["abandoned_sessions"] == 1 and feb["abandoned_share"] == pytest.approx(0.5)

    dead = fetch(wh, "SELECT source, reason FROM dead_letter ORDER BY source")
    assert len(dead) == 5
    assert any("unknown event_name" in d["reason"] for d in dead)
    assert any("wrong field count" in d["reason"] for d in dead)
    assert any("payment_status" in d["reason"] for d in dead)

    # ---- rerun for the same as-of, now with a churn model: replaces, never duplicates
    models = tmp_path / "models"
    version = fake_churn_model(models)
    rc, out = run_cli("--input", str(dataset), "--warehouse", str(wh), "--models", str(models),
                      "--as-of", "2021-07-10")
    assert rc == 0, out
    counts = {t: fetch(wh, f"SELECT count(*) AS n FROM {t}")[0]["n"]
              for t in ("sales_facts", "daily_sales", "churn_features", "churn_predictions")}
    assert counts["sales_facts"] == len(got_facts)
    assert counts["daily_sales"] == len(got_daily)
    assert counts["churn_features"] == len(got_churn)
    preds = fetch(wh, "SELECT * FROM churn_predictions ORDER BY customer_id, month")
    unlabelled = [(r["customer_id"], r["month"]) for r in got_churn if r["churned"] is None]
    assert [(p["customer_id"], p["month"]) for p in preds] == unlabelled
    assert all(p["model_version"] == version and 0 <= p["churn_probability"] <= 1 for p in preds)
    assert f"churn_predictions={len(preds)}" in out


def test_earlier_as_of_ignores_later_records(dataset, tmp_path):
    wh = tmp_path / "wh.duckdb"
    rc, out = run_cli("--input", str(dataset), "--warehouse", str(wh), "--as_of", "2021-02-28",
                      "--write-mode", "replace")
    assert rc == 0, out
    assert "as_of=2021-02-28" in out
    assert {r["booking_id"] for r in fetch(wh, "SELECT booking_id FROM sales_facts")} == {
        "b1", "b2", "b4"}
    months = fetch(wh, "SELECT DISTINCT month, churned FROM churn_features ORDER BY month")
    assert [m["month"] for m in months] == [dt.date(2021, 1, 1), dt.date(2021, 2, 1)]
    assert all(m["churned"] is None for m in months)


def test_graph_has_stable_labels(dataset, tmp_path):
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from batch.inputs import find_inputs
    from pipelines.batch_job import build_pipeline

    opts = PipelineOptions(["--runner=DirectRunner", "--input", str(dataset),
                            "--warehouse", str(tmp_path / "w.duckdb")])
    p = beam.Pipeline(options=opts)
    globs = build_pipeline(p, opts, find_inputs(str(dataset)), str(tmp_path / "stage"),
                           churn_version="v1")
    assert set(globs) == {"sales_facts", "daily_sales", "churn_features", "churn_predictions",
                          "dead_letter"}
    names = {t.unique_name for t in p.to_runner_api().components.transforms.values()}
    for label in ("ReadTransactions", "ReadClickStream", "DedupBookings", "SalesFacts",
                  "DailySales", "SessionActivity", "JoinSessionOwners", "GroupByCustomer",
                  "ChurnRows", "ScoreChurn", "WriteSalesFacts", "WriteChurnFeatures",
                  "WriteDeadLetter"):
        assert label in names, label


def test_options_accept_cli_and_beam_spellings():
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipelines.batch_options import ShopstreamBatchOptions

    for flags in (["--as-of", "2021-05-01", "--visit-gap", "60"],
                  ["--as_of=2021-05-01", "--visit_gap=60"]):
        o = PipelineOptions(flags).view_as(ShopstreamBatchOptions)
        assert o.as_of == "2021-05-01" and o.visit_gap == 60.0 and o.write_mode == "window"


def test_missing_input_is_a_clear_error(tmp_path, capsys):
    from pipelines.cli import main

    rc = main(["batch", "--input", str(tmp_path / "nothing"), "--warehouse",
               str(tmp_path / "w.duckdb")])
    assert rc == 2
    assert "no readable transactions file" in capsys.readouterr().err
