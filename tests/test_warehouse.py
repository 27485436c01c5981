"""The warehouse (SPEC §4) on an embedded DuckDB file: schemas, write modes, rollback,
targets and the Parquet fast path."""
from __future__ import annotations

import datetime as dt
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from transforms import records as R
from transforms import warehouse as W
from transforms.warehouse import DuckDBWarehouse, open_warehouse, parse_target

UTC = dt.timezone.utc
T0 = dt.datetime(2019, 9, 6, 15, 54, 32, 821085, tzinfo=UTC)
BQ_TYPES = {"STRING", "INTEGER", "FLOAT", "BOOLEAN", "TIMESTAMP", "DATE"}

#: SPEC §4: the columns each table must have (more are welcome).
SPEC_COLUMNS = {
    "events_enriched": {"event_id", "session_id", "visit_id", "event_name", "event_time",
                        "traffic_source", "product_id", "product_id_inferred", "dwell_seconds"},
    "dead_letter": {"source", "raw", "reason", "seen_at"},
    "product_engagement": {"product_id", "click_count", "item_detail_count",
                           "add_to_cart_count", "homepage_count", "total_dwell_seconds",
                           "purchases", "popularity_score"},
    "top10_products": {"rank", "product_id", "popularity_score"},
    "top10_brands": {"rank", "brand", "popularity_score"},
    "top10_subcategories": {"rank", "subCategory", "popularity_score"},
    "top10_products_by_season_gender": {"rank", "product_id", "popularity_score", "season",
                                        "gender"},
    "daily_sales": {"date", "masterCategory", "subCategory", "brand", "payment_method",
                    "province", "orders", "units", "revenue", "promo_amount"},
    "sales_facts": {"booking_id", "created_at", "customer_id", "product_id", "quantity",
                    "item_price", "customer_age", "gender", "province", "latitude",
                    "longitude", "brand"},
    "churn_features": {"customer_id", "month", "recency_days", "frequency", "monetary",
                       "session_count", "avg_session_minutes", "churned"},
    "churn_predictions": {"customer_id", "month", "churn_probability", "model_version",
                          "scored_at"},
    "model_metrics": {"model", "model_version", "trained_at", "metric", "value"},
}

#: One representative row per table, as a pipeline would write it.
SAMPLE = {
    "events_enriched": dict(
        event_id="ev-1", session_id="s-1", visit_id="s-1:1567785272821085",
        event_name="ADD_TO_CART", event_time="2019-09-06T15:54:32.821085Z",
        traffic_source="MOBILE", product_id=15315, product_id_inferred=False,
        dwell_seconds=12.5, quantity=4, item_price=313529, payment_status=None),
    "dead_letter": dict(source="click_stream", raw="a,b,c", reason="wrong field count",
                        seen_at="2024-01-02T03:04:05.000006+00:00"),
    "product_engagement": dict(
        product_id=15315, click_count=3, item_detail_count=2, add_to_cart_count=1,
        homepage_count=0, total_dwell_seconds=81.25, purchases=1, popularity_score=0.75,
        brand="Puma", subCategory="Shoes", gender="Men", season="Fall",
        productDisplayName="Puma Men Blue Shoes"),
    "top10_products": dict(rank=1, product_id=15315, productDisplayName="Puma Men Blue Shoes",
                           brand="Puma", popularity_score=0.75),
    "top10_brands": dict(rank=1, brand="Peter England", popularity_score=2.5),
    "top10_subcategories": dict(rank=1, subCategory="Topwear", popularity_score=9.0),
    "top10_products_by_season_gender": dict(
        season="Fall", gender="Men", rank=1, product_id=15315,
        productDisplayName="Puma Men Blue Shoes", popularity_score=0.75),
    "daily_sales": dict(date="2019-09-06", masterCategory="Apparel", subCategory="Topwear",
                        brand="Puma", payment_method="OVO", province="Sumatera Utara",
                        orders=2, units=3, revenue=626000, promo_amount=5000),
    "sales_facts": dict(
        booking_id="b-1", line_number=0, created_at=T0, customer_id=5868, product_id=15315,
        quantity=2, item_price=313000, line_revenue=626000, payment_method="Gopay",
        promo_amount=0, shipment_fee=10000, customer_age=23, gender="F",
        province="Jawa Barat", latitude=-6.9, longitude=107.6, home_location_lat=-6.91,
        home_location_long=107.61, product_gender="Women", masterCategory="Apparel",
        subCategory="Topwear", articleType="Kurtas", baseColour="Blue", season="Summer",
        usage="Ethnic", productDisplayName="Biba Women Blue Kurta", brand="Biba"),
    "churn_features": dict(customer_id=5868, month="2019-09-01", recency_days=3.0,
                           frequency=2, monetary=700000, session_count=5,
                           avg_session_minutes=7.5, tenure_days=400, churned=None),
    "churn_predictions": dict(customer_id=5868, month=dt.date(2019, 9, 1),
                              churn_probability=0.31, model_version="churn-20191001",
                              scored_at="2019-10-01T00:00:00Z"),
    "model_metrics": dict(model="churn", model_version="churn-20191001",
                          trained_at=T0, metric="roc_auc", value=0.81),
}


_DEFAULTS = {"STRING": "x", "INTEGER": 0, "FLOAT": 0.0, "BOOLEAN": False,
             "TIMESTAMP": T0, "DATE": dt.date(2019, 9, 1)}


def _complete(table: str, row: dict) -> dict:
    """Fill REQUIRED columns added to a schema after these samples were written."""
    out = dict(row)
    for f in W.table_schema(table)["fields"]:
        if f["mode"] == "REQUIRED" and f["name"] not in out:
            out[f["name"]] = _DEFAULTS[f["type"]]
    return out


SAMPLE = {t: _complete(t, r) for t, r in SAMPLE.items()}


@pytest.fixture
def wh(tmp_path):
    w = DuckDBWarehouse(str(tmp_path / "wh" / "test.duckdb"))
    yield w
    w.close()


def rows_of(w, table, order=None):
    order = order or ", ".join(f'"{k}"' for k in W.table_schema(table)["key"] or ["source"])
    return w.query(f'SELECT * FROM "{table}" ORDER BY {order}')


def count(w, table) -> int:
    return w.query(f'SELECT count(*) AS n FROM "{table}"')[0]["n"]


def expected(table, row) -> dict:
    """The row as it should read back: schema columns, coerced types."""
    out = {}
    for f in W.table_schema(table)["fields"]:
        out[f["name"]] = W._coerce(row.get(f["name"]), f["type"])
    return out


# --------------------------------------------------------------------- schemas
def test_every_spec_table_has_a_schema():
    assert set(W.TABLES) >= set(SPEC_COLUMNS)
    assert set(SAMPLE) == set(W.TABLES)


@pytest.mark.parametrize("table", W.TABLES)
def test_schema_has_key_and_bigquery_types(table):
    schema = W.table_schema(table)
    assert isinstance(schema.get("key"), list), f"{table} has no key list"
    names = [f["name"] for f in schema["fields"]]
    assert len(names) == len(set(names))
    for f in schema["fields"]:
        assert f["type"] in BQ_TYPES, (table, f)
        assert f["mode"] in ("REQUIRED", "NULLABLE"), (table, f)
    assert set(schema["key"]) <= set(names)
    assert SPEC_COLUMNS[table] <= set(names), SPEC_COLUMNS[table] - set(names)
    part = schema.get("timePartitioning")
    if part:
        assert {f["name"]: f["type"] for f in schema["fields"]}[part["field"]] in ("DATE", "TIMESTAMP")
    assert set(schema.get("clustering", [])) <= set(names)
    assert W.arrow_schema(table).names == names
    assert W.column_names(table) == names


def test_spec_types_of_key_columns():
    types = {t: {f["name"]: (f["type"], f["mode"]) for f in W.table_schema(t)["fields"]}
             for t in W.TABLES}
    assert types["events_enriched"]["event_time"] == ("TIMESTAMP", "REQUIRED")
    assert types["events_enriched"]["product_id"] == ("INTEGER", "NULLABLE")
    assert types["events_enriched"]["product_id_inferred"][0] == "BOOLEAN"
    assert types["events_enriched"]["dwell_seconds"] == ("FLOAT", "NULLABLE")
    assert types["churn_features"]["month"][0] == "DATE"
    assert types["churn_features"]["churned"] == ("INTEGER", "NULLABLE")
    assert types["dead_letter"]["seen_at"][0] == "TIMESTAMP"
    assert W.table_schema("events_enriched")["key"] == ["event_id"]
    assert W.table_schema("dead_letter")["key"] == ["source", "raw"]  # reruns replace


def test_unknown_table_is_refused(wh):
    with pytest.raises(KeyError, match="unknown warehouse table 'nope'"):
        wh.write("nope", [{}])


# --------------------------------------------------------------------- write + read back
@pytest.mark.parametrize("table", W.TABLES)
def test_write_and_read_back_each_table(wh, table):
    row = SAMPLE[table]
    assert wh.write(table, [dict(row, extra_column_ignored="x")]) == 1
    got = rows_of(wh, table)
    assert got == [expected(table, row)]
    assert list(got[0]) == W.column_names(table)


def test_timestamps_are_utc_and_offsets_normalised(wh):
    rows = [dict(SAMPLE["events_enriched"], event_id="a", event_time="2019-09-06T22:54:32.821085+07:00"),
            dict(SAMPLE["events_enriched"], event_id="b", event_time=R.parse_time_us(
                "2019-09-06T15:54:32.821085Z", "t")),
            dict(SAMPLE["events_enriched"], event_id="c", event_time=dt.datetime(2019, 9, 6, 15, 54, 32, 821085)),
            dict(SAMPLE["events_enriched"], event_id="d", event_time=T0)]
    wh.write("events_enriched", rows)
    got = rows_of(wh, "events_enriched")
    assert [r["event_time"] for r in got] == [T0] * 4
    assert all(r["event_time"].utcoffset() == dt.timedelta(0) for r in got)
    assert wh.query("SELECT strftime(event_time, '%H:%M') AS hm FROM events_enriched LIMIT 1") == [
        {"hm": "15:54"}]


def test_write_arrow_table(wh):
    data = W.to_arrow("top10_brands", [SAMPLE["top10_brands"]])
    assert isinstance(data, pa.Table) and data.schema == W.arrow_schema("top10_brands")
    assert wh.write("top10_brands", data) == 1
    assert rows_of(wh, "top10_brands") == [expected("top10_brands", SAMPLE["top10_brands"])]


def test_dead_letter_rows_from_records(wh):
    dl = R.parse_or_dead("click_stream", "x,y")
    wh.write("dead_letter", W.dead_letter_rows([dl]), mode="append")
    got = rows_of(wh, "dead_letter")
    assert got[0]["reason"] == "wrong field count: expected 6 click_stream fields, got 2"
    assert got[0]["raw"] == "x,y" and got[0]["source"] == "click_stream"
    assert got[0]["seen_at"].tzinfo is not None


def test_unicode_survives(wh):
    row = dict(SAMPLE["top10_brands"], brand="Batik Keris 😀 Ñ")
    wh.write("top10_brands", [row])
    assert rows_of(wh, "top10_brands")[0]["brand"] == "Batik Keris 😀 Ñ"


def test_empty_write_creates_the_table(wh):
    assert wh.write("top10_products", []) == 0
    assert count(wh, "top10_products") == 0


# --------------------------------------------------------------------- modes
def test_upsert_twice_leaves_one_row_per_key(wh):
    rows = [dict(SAMPLE["events_enriched"], event_id=f"e{i}", dwell_seconds=float(i)) for i in range(5)]
    wh.write("events_enriched", rows)
    wh.write("events_enriched", rows)  # a rerun
    assert count(wh, "events_enriched") == 5
    changed = [dict(rows[1], dwell_seconds=99.0, product_id=None), dict(rows[0], event_id="e9")]
    wh.write("events_enriched", changed)
    got = {r["event_id"]: r for r in rows_of(wh, "events_enriched")}
    assert sorted(got) == ["e0", "e1", "e2", "e3", "e4", "e9"]
    assert (got["e1"]["dwell_seconds"], got["e1"]["product_id"]) == (99.0, None)
    assert got["e2"]["dwell_seconds"] == 2.0


def test_upsert_with_a_composite_key(wh):
    base = SAMPLE["churn_features"]
    wh.write("churn_features", [base, dict(base, month="2019-10-01"), dict(base, customer_id=7)])
    wh.write("churn_features", [dict(base, churned=1)])
    got = rows_of(wh, "churn_features")
    assert len(got) == 3
    assert [r["churned"] for r in got if r["customer_id"] == 5868] == [1, None]


def test_upsert_rerun_is_idempotent_for_every_table(wh):
    for table in W.TABLES:
        wh.write(table, [SAMPLE[table]])
        wh.write(table, [SAMPLE[table]])
        n = 2 if not W.table_schema(table)["key"] else 1  # no key: upsert appends
        assert count(wh, table) == n, table


def test_upsert_with_null_in_nullable_key_columns(wh):
    # daily_sales' dimensions may be unknown (a product or province that was not found)
    row = dict(SAMPLE["daily_sales"], brand=None, province=None)
    wh.write("daily_sales", [row, SAMPLE["daily_sales"]])
    wh.write("daily_sales", [dict(row, orders=7)])
    got = rows_of(wh, "daily_sales", order="brand NULLS FIRST")
    assert [(r["brand"], r["orders"]) for r in got] == [(None, 7), ("Puma", 2)]


def test_upsert_duplicate_keys_in_one_write_last_wins(wh):
    rows = [dict(SAMPLE["top10_brands"], brand=b) for b in ("Nike", "Puma", "Biba")]
    assert wh.write("top10_brands", rows) == 3
    assert [(r["rank"], r["brand"]) for r in rows_of(wh, "top10_brands")] == [(1, "Biba")]


def test_replace_drops_old_rows(wh):
    wh.write("top10_brands", [dict(rank=r, brand=f"B{r}", popularity_score=10.0 - r) for r in range(1, 11)])
    wh.write("top10_brands", [dict(rank=1, brand="Only", popularity_score=1.0)], mode="replace")
    assert rows_of(wh, "top10_brands") == [expected("top10_brands", dict(rank=1, brand="Only", popularity_score=1.0))]
    wh.write("top10_brands", [], mode="replace")
    assert count(wh, "top10_brands") == 0


def test_append_appends(wh):
    d = SAMPLE["dead_letter"]
    wh.write("dead_letter", [d], mode="append")
    wh.write("dead_letter", [d, dict(d, reason="other")], mode="append")
    assert count(wh, "dead_letter") == 3
    wh.write("model_metrics", [SAMPLE["model_metrics"]], mode="append")
    wh.write("model_metrics", [SAMPLE["model_metrics"]], mode="append")
    assert count(wh, "model_metrics") == 2  # append never replaces, even with a key


def test_unknown_mode_is_refused(wh):
    with pytest.raises(ValueError, match="unknown write mode 'merge'"):
        wh.write("top10_brands", [SAMPLE["top10_brands"]], mode="merge")


# --------------------------------------------------------------------- rollback
@pytest.mark.parametrize("mode", ["upsert", "replace", "append"])
def test_failing_write_rolls_back(wh, mode):
    good = [dict(SAMPLE["events_enriched"], event_id=f"e{i}") for i in range(3)]
    wh.write("events_enriched", good)
    before = rows_of(wh, "events_enriched")
    bad = [dict(good[0], dwell_seconds=1234.0), dict(good[1], event_id="new"),
           dict(good[2], event_id="e-null", session_id=None)]  # NULL in a REQUIRED column
    with pytest.raises(Exception, match="NOT NULL"):
        wh.write("events_enriched", bad, mode=mode)
    assert rows_of(wh, "events_enriched") == before
    # the connection is still usable afterwards
    wh.write("events_enriched", [dict(good[0], event_id="after")])
    assert count(wh, "events_enriched") == 4


def test_failing_first_write_leaves_no_table_and_survives_reopen(tmp_path):
    path = str(tmp_path / "w.duckdb")
    with DuckDBWarehouse(path) as w:
        w.write("top10_brands", [SAMPLE["top10_brands"]])
        with pytest.raises(Exception):
            w.write("top10_brands", [dict(rank=2, brand=None, popularity_score=1.0)], mode="replace")
        with pytest.raises(Exception):
            w.write("top10_subcategories", [dict(rank=1, subCategory=None, popularity_score=1.0)])
        assert w.query("SELECT count(*) AS n FROM duckdb_tables() WHERE table_name = 'top10_subcategories'") == [{"n": 0}]
    with open_warehouse(path) as w:  # committed data is on disk
        assert rows_of(w, "top10_brands") == [expected("top10_brands", SAMPLE["top10_brands"])]


def test_bad_value_type_fails_before_touching_the_table(wh):
    wh.write("top10_brands", [SAMPLE["top10_brands"]])
    with pytest.raises((pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError)):
        wh.write("top10_brands", [dict(rank="first", brand="X", popularity_score=1.0)])
    assert rows_of(wh, "top10_brands") == [expected("top10_brands", SAMPLE["top10_brands"])]


# --------------------------------------------------------------------- targets
@pytest.mark.parametrize("target,parsed", [
    ("bq://proj.dataset", ("bigquery", "proj", "dataset")),
    ("bq://my-proj-123.shop_stream", ("bigquery", "my-proj-123", "shop_stream")),
    ("warehouse/demo.duckdb", ("duckdb", "warehouse/demo.duckdb")),
    (":memory:", ("duckdb", ":memory:")),
])
def test_parse_target_accepts(target, parsed):
    assert parse_target(target) == parsed


@pytest.mark.parametrize("target,message", [
    ("bq://proj", "BigQuery target must look like bq://PROJECT.DATASET"),
    ("bq://", "BigQuery target must look like bq://PROJECT.DATASET"),
    ("bq://.dataset", "BigQuery target must look like bq://PROJECT.DATASET"),
    ("bq://proj.", "BigQuery target must look like bq://PROJECT.DATASET"),
    ("bq://a.b.c", "BigQuery target must look like bq://PROJECT.DATASET"),
    ("", "warehouse target is empty"),
])
def test_parse_target_rejects(target, message):
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        parse_target(target)


def test_open_warehouse_duckdb_creates_parent_dirs(tmp_path):
    path = tmp_path / "a" / "b" / "w.duckdb"
    with open_warehouse(str(path)) as w:
        assert isinstance(w, DuckDBWarehouse) and w.target == str(path)
        assert w.ref("events_enriched") == "events_enriched"
        w.write("top10_brands", [SAMPLE["top10_brands"]])
    assert path.exists()


# --------------------------------------------------------------------- parquet
def _write_parquet(path, table, rows):
    pq.write_table(W.to_arrow(table, rows), str(path))


def test_load_parquet(wh, tmp_path):
    d = tmp_path / "it's parquet"  # a quote in the path must not break the SQL
    d.mkdir()
    ev = SAMPLE["events_enriched"]
    _write_parquet(d / "part-0.parquet", "events_enriched",
                   [dict(ev, event_id=f"e{i}") for i in range(3)])
    _write_parquet(d / "part-1.parquet", "events_enriched",
                   [dict(ev, event_id=f"e{i}") for i in range(3, 5)])
    assert wh.load_parquet("events_enriched", str(d / "*.parquet")) == 5
    assert count(wh, "events_enriched") == 5
    assert wh.load_parquet("events_enriched", str(d / "*.parquet")) == 5  # rerun: upsert
    assert count(wh, "events_enriched") == 5
    got = rows_of(wh, "events_enriched")
    assert got[0] == expected("events_enriched", dict(ev, event_id="e0"))
    assert wh.load_parquet("events_enriched", str(d / "part-1.parquet"), mode="replace") == 2
    assert [r["event_id"] for r in rows_of(wh, "events_enriched")] == ["e3", "e4"]
    assert wh.load_parquet("events_enriched", str(d / "part-1.parquet"), mode="append") == 2
    assert count(wh, "events_enriched") == 4


def test_load_parquet_extra_columns_and_duplicates(wh, tmp_path):
    ev = SAMPLE["events_enriched"]
    t1 = W.to_arrow("events_enriched", [dict(ev, dwell_seconds=1.0)])
    t1 = t1.append_column("extra", pa.array(["x"]))
    pq.write_table(t1, str(tmp_path / "a.parquet"))
    _write_parquet(tmp_path / "b.parquet", "events_enriched", [dict(ev, dwell_seconds=2.0)])
    assert wh.load_parquet("events_enriched", str(tmp_path / "*.parquet")) == 2
    got = rows_of(wh, "events_enriched")
    assert len(got) == 1 and got[0]["dwell_seconds"] == 2.0  # the later file wins


def test_load_parquet_failure_rolls_back(wh, tmp_path):
    wh.write("events_enriched", [SAMPLE["events_enriched"]])
    before = rows_of(wh, "events_enriched")
    bad = W.to_arrow("events_enriched", [dict(SAMPLE["events_enriched"], event_id="x", session_id=None)])
    bad = bad.cast(pa.schema([f.with_nullable(True) for f in bad.schema]))
    pq.write_table(bad, str(tmp_path / "bad.parquet"))
    with pytest.raises(Exception, match="NOT NULL"):
        wh.load_parquet("events_enriched", str(tmp_path / "bad.parquet"), mode="replace")
    assert rows_of(wh, "events_enriched") == before


# --------------------------------------------------------------------- helpers
def test_coerce_and_to_arrow():
    assert W._coerce("2019-09-06T15:54:32.821085Z", "TIMESTAMP") == T0
    assert W._coerce(1567785272821085, "TIMESTAMP") == T0
    assert W._coerce("2019-09-01T00:00:00", "DATE") == dt.date(2019, 9, 1)
    assert W._coerce(dt.datetime(2019, 9, 1, 5), "DATE") == dt.date(2019, 9, 1)
    assert W._coerce(None, "TIMESTAMP") is None
    t = W.to_arrow("churn_features", [SAMPLE["churn_features"]])
    assert t.column("month").to_pylist() == [dt.date(2019, 9, 1)]
    assert t.column("churned").to_pylist() == [None]


def test_dedupe_last():
    t = pa.table({"k": ["a", None, "a", None, "b"], "v": [1, 2, 3, 4, 5]})
    assert W.dedupe_last(t, ["k"]).to_pylist() == [
        {"k": "a", "v": 3}, {"k": None, "v": 4}, {"k": "b", "v": 5}]
    assert W.dedupe_last(t, []).num_rows == 5


def test_schemas_are_valid_json_files():
    for table in W.TABLES:
        json.loads((W.SCHEMA_DIR / f"{table}.json").read_text())


# ------------------------------------------------------------- schema evolution
NEW_COLUMNS = ("abandoned_share", "recency_over_median_gap")  # nullable churn features


def _old_churn_table(w, drop=NEW_COLUMNS):
    """churn_features as an older shopstream made it: without ``drop``, one row in it."""
    fields = [f for f in W.table_schema("churn_features")["fields"] if f["name"] not in drop]
    cols = ", ".join(f'"{f["name"]}" {W._DUCK_TYPES[f["type"]]}' for f in fields)
    w.con.execute(f'CREATE TABLE churn_features ({cols})')
    w.con.execute("INSERT INTO churn_features (customer_id, month, recency_days) "
                  "VALUES (7, DATE '2019-01-01', 3.0)")


def test_an_older_table_gets_the_new_nullable_columns_and_keeps_its_rows(wh):
    _old_churn_table(wh)
    row = dict(customer_id=8, month=dt.date(2019, 1, 1), recency_days=1.0,
               abandoned_share=0.25, recency_over_median_gap=2.0)
    assert wh.write("churn_features", [row]) == 1
    got = {r["customer_id"]: r for r in rows_of(wh, "churn_features")}
    assert set(got) == {7, 8}
    assert got[8]["abandoned_share"] == 0.25 and got[8]["recency_over_median_gap"] == 2.0
    assert got[7]["abandoned_share"] is None and got[7]["recency_days"] == 3.0
    cols = [r["column_name"] for r in wh.query(
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_name = 'churn_features' ORDER BY ordinal_position")]
    assert set(cols) == set(W.column_names("churn_features"))


def test_an_older_table_without_a_required_column_is_refused_with_what_to_do(wh):
    required = next(f["name"] for f in W.table_schema("churn_features")["fields"]
                    if f["mode"] == "REQUIRED" and f["name"] != "customer_id")
    wh.con.execute('CREATE TABLE churn_features (customer_id BIGINT)')
    with pytest.raises(ValueError, match=f"lacks required column.*{required}.*drop it"):
        wh.write("churn_features", [dict(customer_id=1, month=dt.date(2019, 1, 1))])
    assert count(wh, "churn_features") == 0  # nothing half-written
