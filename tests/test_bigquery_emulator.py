"""The BigQuery warehouse and Beam's BigQuery sink against a real BigQuery REST API
(``bqemulator``, DuckDB-backed) on loopback.

(a) every SPEC §4 table goes through ``open_warehouse("bq://local-proj.DATASET")`` — the
    product's BigQueryWarehouse with load jobs, MERGE upserts, partitioning and
    clustering — and reads back; upserting twice leaves no duplicates;
(b) the streaming pipeline's BigQuery sink (``transforms.sinks.WriteRows``, i.e. Beam's
    ``WriteToBigQuery`` with the table's JSON schema) writes rows in-process.

The emulator needs three test-side bends, all here: the client's endpoint and anonymous
credentials; the ``*/*`` content type of multipart loads (bqemulator refuses it, the
service accepts it); and for Beam, ``BIGQUERY_EMULATOR_HOST`` plus apitools' ``BASE_URL``.
"""
from __future__ import annotations

import datetime as dt
import uuid

import pytest

from tests.emulators import PROJECT, beam_bigquery_on_emulator
from transforms.warehouse import TABLES, open_warehouse, table_schema

pytestmark = pytest.mark.emulator

SPEC_TABLES = ("events_enriched", "dead_letter", "product_engagement", "top10_products",
               "top10_brands", "top10_subcategories", "top10_products_by_season_gender",
               "daily_sales", "sales_facts", "churn_features", "churn_predictions",
               "model_metrics")




# --------------------------------------------------------------------------- sample rows
_BASE = dt.datetime(2022, 3, 14, 9, 26, 53, 589793, tzinfo=dt.timezone.utc)


def _value(field: dict, i: int, version: int):
    name, typ = field["name"], field["type"]
    if typ == "STRING":
        return f"{name}-{i}" if version == 0 or i % 2 else f"{name}-{i}-v{version}"
    if typ == "INTEGER":
        return i + 1
    if typ == "FLOAT":
        return (i + 1) * 1.5 + version
    if typ == "BOOLEAN":
        return bool((i + version) % 2)
    if typ == "TIMESTAMP":
        return _BASE + dt.timedelta(days=i, seconds=version)
    if typ == "DATE":
        return (_BASE + dt.timedelta(days=31 * i)).date().replace(day=1)
    raise AssertionError(f"no sample value for {typ}")


def sample_rows(table: str, n: int = 3, version: int = 0) -> list:
    """n rows with distinct keys; ``version`` changes the non-key columns only."""
    schema = table_schema(table)
    key = set(schema.get("key") or [])
    rows = []
    for i in range(n):
        row = {}
        for f in schema["fields"]:
            row[f["name"]] = _value(f, i, 0 if f["name"] in key else version)
        rows.append(row)
    return rows


def _norm(v):
    if isinstance(v, dt.datetime):
        return v.astimezone(dt.timezone.utc).isoformat()
    if isinstance(v, float):
        return round(v, 6)
    return v


def _read(wh, table: str) -> list:
    cols = [f["name"] for f in table_schema(table)["fields"]]
    order = ", ".join(f"`{c}`" for c in cols)
    got = wh.query(f"SELECT {order} FROM {wh.ref(table)} ORDER BY {order}")
    return [{c: _norm(r[c]) for c in cols} for r in got]


def _sorted(rows: list) -> list:
    return sorted(({k: _norm(v) for k, v in r.items()} for r in rows),
                  key=lambda r: [str(r[k]) for k in r])


# --------------------------------------------------------------------------- (a) warehouse
def test_spec_tables_have_schemas():
    assert set(SPEC_TABLES) <= set(TABLES)


def test_every_table_written_and_read_back_upsert_twice_no_duplicates(bq_target):
    with open_warehouse(bq_target) as wh:
        assert type(wh).__name__ == "BigQueryWarehouse"
        for table in SPEC_TABLES:
            schema = table_schema(table)
            first, second = sample_rows(table, 3, 0), sample_rows(table, 3, 1)
            mode = "upsert" if schema.get("key") else "append"
            assert wh.write(table, first, mode) == 3
            if mode == "upsert":
                assert wh.write(table, second, "upsert") == 3
                assert _read(wh, table) == _sorted(second), table  # replaced, not duplicated
            else:
                assert _read(wh, table) == _sorted(first), table

            t = wh.client.get_table(f"{PROJECT}.{wh.dataset}.{table}")
            assert [f.name for f in t.schema] == [f["name"] for f in schema["fields"]]
            part = schema.get("timePartitioning")
            if part:
                assert t.time_partitioning is not None, table
                assert t.time_partitioning.field == part["field"]
                assert t.time_partitioning.type_ == part["type"]
            if schema.get("clustering"):
                assert t.clustering_fields == schema["clustering"][:4], table
        # no staging table left behind by the MERGE upserts
        names = {t.table_id for t in wh.client.list_tables(f"{PROJECT}.{wh.dataset}")}
        assert names == set(SPEC_TABLES)


def test_upsert_mixes_updates_and_inserts_and_replace_truncates(bq_target):
    with open_warehouse(bq_target) as wh:
        rows = sample_rows("product_engagement", 4)
        wh.write("product_engagement", rows[:3])
        update = dict(rows[1], click_count=99, popularity_score=0.5)
        wh.write("product_engagement", [update, rows[3]])
        got = {r["product_id"]: r for r in wh.query(
            f"SELECT * FROM {wh.ref('product_engagement')}")}
        assert sorted(got) == [1, 2, 3, 4]
        assert got[2]["click_count"] == 99 and got[2]["popularity_score"] == 0.5
        assert got[1]["click_count"] == 1

        wh.write("top10_brands", [{"rank": 1, "brand": "Puma", "popularity_score": 2.0},
                                  {"rank": 2, "brand": "Nike", "popularity_score": 1.0}], "replace")
        wh.write("top10_brands", [{"rank": 1, "brand": "Adidas", "popularity_score": 3.0}],
                 "replace")
        assert wh.query(f"SELECT brand FROM {wh.ref('top10_brands')}") == [{"brand": "Adidas"}]

        wh.write("dead_letter", [{"source": "click_stream", "raw": "x,y", "reason": "bad",
                                  "seen_at": "2022-01-01T00:00:00+00:00"}], "append")
        wh.write("dead_letter", [{"source": "click_stream", "raw": "x,y", "reason": "bad",
                                  "seen_at": "2022-01-01T00:00:00+00:00"}], "append")
        assert wh.query(f"SELECT count(*) AS n FROM {wh.ref('dead_letter')}") == [{"n": 2}]


def test_timestamps_given_as_microseconds_round_trip(bq_target):
    from transforms.records import parse_time_us

    us = parse_time_us("2019-09-06T15:54:32.821085Z", "t")
    row = dict(sample_rows("events_enriched", 1)[0], event_time=us, product_id=None,
               dwell_seconds=None)
    with open_warehouse(bq_target) as wh:
        wh.write("events_enriched", [row])
        got = wh.query(f"SELECT event_time, product_id, dwell_seconds FROM "
                       f"{wh.ref('events_enriched')}")
    assert got == [{"event_time": dt.datetime(2019, 9, 6, 15, 54, 32, 821085,
                                              tzinfo=dt.timezone.utc),
                    "product_id": None, "dwell_seconds": None}]


# --------------------------------------------------------------------------- (b) Beam sink
@pytest.fixture
def beam_on_emulator(bq_emulator, monkeypatch):
    """Beam's BigQuery IO (apitools and google-cloud-bigquery) pointed at the emulator."""
    beam_bigquery_on_emulator(monkeypatch, bq_emulator)
    return bq_emulator


def test_beam_write_to_bigquery_streaming_inserts_with_table_schema(beam_on_emulator):
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from transforms import sinks

    dataset = f"beam_{uuid.uuid4().hex[:8]}"
    client = beam_on_emulator.client()
    client.create_dataset(f"{PROJECT}.{dataset}")
    base = 1_567_785_272_821_085
    rows = [{"event_id": f"e{i}", "session_id": "s1", "visit_id": f"s1:{base}",
             "event_name": "ADD_TO_CART" if i == 2 else "CLICK", "event_time": base + i * 10**6,
             "traffic_source": "WEB", "product_id": 15315 if i else None,
             "product_id_inferred": i == 1, "dwell_seconds": None if i == 2 else 1.0,
             "quantity": 4 if i == 2 else None, "item_price": 313529 if i == 2 else None,
             "payment_status": None} for i in range(3)]

    opts = PipelineOptions(["--runner=DirectRunner", f"--project={PROJECT}",
                            "--temp_location=/tmp"])
    with beam.Pipeline(options=opts) as p:
        failed = (p | beam.Create(rows)
                  | sinks.WriteRows(f"bq://{PROJECT}.{dataset}", "events_enriched",
                                    streaming=True))
        _ = failed | "NoFailures" >> beam.Map(lambda f: pytest.fail(f"row rejected: {f}"))

    table = client.get_table(f"{PROJECT}.{dataset}.events_enriched")
    assert [f.name for f in table.schema] == [f["name"] for f in
                                              table_schema("events_enriched")["fields"]]
    got = sorted((dict(r.items()) for r in client.query(
        f"SELECT event_id, event_time, product_id, product_id_inferred, dwell_seconds "
        f"FROM `{PROJECT}.{dataset}.events_enriched`").result()), key=lambda r: r["event_id"])
    assert [r["event_id"] for r in got] == ["e0", "e1", "e2"]
    assert got[0]["event_time"] == dt.datetime(2019, 9, 6, 15, 54, 32, 821085,
                                               tzinfo=dt.timezone.utc)
    assert [r["product_id"] for r in got] == [None, 15315, 15315]
    assert [r["product_id_inferred"] for r in got] == [False, True, False]
    assert got[2]["dwell_seconds"] is None


def _enriched(i: int, **over) -> dict:
    base = 1_567_785_272_821_085
    row = {"event_id": f"e{i}", "session_id": "s1", "visit_id": f"s1:{base}",
           "event_name": "CLICK", "event_time": base + i * 10**6, "traffic_source": "WEB",
           "product_id": 15315, "product_id_inferred": False, "dwell_seconds": 1.0,
           "quantity": None, "item_price": None, "payment_status": None}
    row.update(over)
    return row


def test_rows_bigquery_rejects_become_dead_letters_with_its_error(beam_on_emulator):
    """A row that violates the schema (a non-integer product_id) comes back at once as a
    dead_letter row whose reason is BigQuery's error (no retries for hours) and lands in
    the dead_letter table; the good rows are written; event_id is the insert id."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from transforms import sinks

    dataset = f"dl_{uuid.uuid4().hex[:8]}"
    client = beam_on_emulator.client()
    client.create_dataset(f"{PROJECT}.{dataset}")
    rows = [_enriched(0), _enriched(1), _enriched(2, product_id="not-a-number"), _enriched(0)]
    opts = PipelineOptions(["--runner=DirectRunner", f"--project={PROJECT}",
                            "--temp_location=/tmp"])
    target = f"bq://{PROJECT}.{dataset}"
    with beam.Pipeline(options=opts) as p:
        failed = (p | beam.Create(rows)
                  | "WriteEnriched" >> sinks.WriteRows(target, "events_enriched", streaming=True))
        failed | "WriteDeadLetter" >> sinks.WriteRows(target, "dead_letter", streaming=True)

    dead = [dict(r.items()) for r in client.query(
        f"SELECT source, raw, reason FROM `{PROJECT}.{dataset}.dead_letter`").result()]
    assert len(dead) == 1, dead
    d = dead[0]
    assert d["source"] == "bigquery:events_enriched"
    assert d["reason"].startswith("BigQuery rejected the row: invalid"), d["reason"]
    assert '"event_id": "e2"' in d["raw"]
    got = [r["event_id"] for r in client.query(
        f"SELECT event_id FROM `{PROJECT}.{dataset}.events_enriched` ORDER BY event_id").result()]
    # BigQuery dedups insert ids best-effort; bqemulator does not (e0 twice here), so
    # the insert id sent is checked instead.
    assert sorted(set(got)) == ["e0", "e1"]
    assert sinks._with_insert_id(_enriched(0), "t", "event_id")[1][1] == "e0"


def test_an_older_table_gets_the_new_columns_and_keeps_its_rows(bq_target):
    """A dataset made by an older shopstream: churn_features without two newer nullable
    columns. The next write adds them (old rows NULL there) and MERGEs as usual."""
    from google.cloud import bigquery

    new = {"abandoned_share", "recency_over_median_gap"}
    with open_warehouse(bq_target) as wh:
        old_fields = [bigquery.SchemaField.from_api_repr(f)
                      for f in table_schema("churn_features")["fields"] if f["name"] not in new]
        wh.client.create_table(bigquery.Table(f"{PROJECT}.{wh.dataset}.churn_features",
                                              schema=old_fields))
        old = {k: v for k, v in sample_rows("churn_features", 1, 0)[0].items() if k not in new}
        wh.client.load_table_from_json(
            [{k: (v.isoformat() if isinstance(v, (dt.date, dt.datetime)) else v)
              for k, v in old.items()}],
            f"{PROJECT}.{wh.dataset}.churn_features",
            job_config=bigquery.LoadJobConfig(schema=old_fields)).result()
        fresh = sample_rows("churn_features", 2, 1)[1]
        assert wh.write("churn_features", [fresh], "upsert") == 1
        # (the emulator's table metadata does not follow DDL, so the columns are checked
        # by reading them; the service updates both)
        got = wh.query("SELECT customer_id, abandoned_share, recency_over_median_gap "
                       f"FROM {wh.ref('churn_features')} ORDER BY customer_id")
        assert got == [{"customer_id": old["customer_id"], "abandoned_share": None,
                        "recency_over_median_gap": None},
                       {"customer_id": fresh["customer_id"],
                        "abandoned_share": fresh["abandoned_share"],
                        "recency_over_median_gap": fresh["recency_over_median_gap"]}]
        assert wh.write("churn_features", [fresh], "upsert") == 1  # idempotent second time
