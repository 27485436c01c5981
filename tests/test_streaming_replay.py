"""`shopstream replay` end to end: generated files → DuckDB + a real Redis, checked against
an independent DuckDB SQL implementation of SPEC §2 (tests/reference_sql.py)."""
from __future__ import annotations

import json
import shutil

import duckdb
import pytest

from pipelines import cli
from tests.reference_sql import assert_engagement_matches_oracle, reference_enriched

FEATURES = ("click_count", "item_detail_count", "add_to_cart_count", "homepage_count",
            "total_dwell_seconds", "purchases")


@pytest.fixture(scope="module")
def replayed(small_dataset, tmp_path_factory, redis_session):
    """One replay of the shared small data set, plus a few hostile lines."""
    root = tmp_path_factory.mktemp("replay")
    data = root / "data"
    shutil.copytree(small_dataset, data)
    with open(data / "click_stream.csv", "a") as f:
        f.write("s-bad,NOT_AN_EVENT,2021-01-01T00:00:00Z,e-bad-1,WEB,\n")
        f.write("s-bad,CLICK,yesterday,e-bad-2,WEB,\n")
        f.write("s-bad,ADD_TO_CART,2021-01-01T00:00:00Z,e-bad-3,WEB,\"{'quantity': 1}\"\n")
        f.write("s-bad,CLICK,2021-01-01T00:00:00Z\n")
        f.write("s-bad,CLICK,2021-01-01T00:00:00Z,e-bad-5,WEB,\"{__import__('os')}\"\n")
    redis_session.client().flushall()
    warehouse = root / "w.duckdb"
    args = ["replay", "--input", str(data), "--warehouse", str(warehouse),
            "--redis", redis_session.url]
    assert cli.main(args) == 0
    return {"data": data, "warehouse": warehouse, "args": args, "redis": redis_session}


def _query(path, sql):
    con = duckdb.connect(str(path), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_engagement_equals_sql_oracle(replayed):
    data = replayed["data"]
    rows = _query(replayed["warehouse"],
                  f"SELECT product_id, {', '.join(FEATURES)} FROM product_engagement")
    assert_engagement_matches_oracle(rows, data)


def test_enriched_events_equal_sql_oracle(replayed):
    data = replayed["data"]
    expected = reference_enriched(str(data / "click_stream.csv"))
    rows = _query(replayed["warehouse"],
                  "SELECT event_id, product_id, product_id_inferred, dwell_seconds FROM events_enriched")
    got = {r[0]: r[1:] for r in rows}
    # the oracle keeps the bad lines it can read; the pipeline dead-letters them
    expected = {k: v for k, v in expected.items() if not k.startswith("e-bad")}
    assert set(got) == set(expected)
    for event_id, (_visit, pid, inferred, dwell) in expected.items():
        g_pid, g_inferred, g_dwell = got[event_id]
        assert (g_pid, g_inferred) == (pid, inferred), event_id
        assert (g_dwell is None) == (dwell is None), event_id
        if dwell is not None:
            assert g_dwell == pytest.approx(dwell, abs=1e-6)


def test_bad_lines_are_dead_lettered_with_reasons(replayed):
    rows = _query(replayed["warehouse"], "SELECT source, raw, reason FROM dead_letter")
    reasons = {raw.split(",")[3] if raw.count(",") >= 3 else raw: reason
               for _src, raw, reason in rows}
    assert "unknown event_name 'NOT_AN_EVENT'" in reasons["e-bad-1"]
    assert "not an ISO-8601 timestamp" in reasons["e-bad-2"]
    assert "ADD_TO_CART without product_id" in reasons["e-bad-3"] or \
        "product_id is missing" in reasons["e-bad-3"]
    assert any("wrong field count" in r for _s, _raw, r in rows)
    assert "not a Python literal dict" in reasons["e-bad-5"]
    assert {s for s, _r, _x in rows} >= {"click_stream"}


def test_rankings_in_redis_match_the_warehouse(replayed):
    client = replayed["redis"].client()
    top = client.zrevrange("shopstream:top:all:products", 0, 9, withscores=True)
    table = _query(replayed["warehouse"],
                   "SELECT product_id, popularity_score FROM top10_products ORDER BY rank")
    assert [int(m) for m, _ in top] == [r[0] for r in table]
    for dim in ("brands", "subcategories"):
        for horizon in ("1h", "24h", "all"):
            assert client.zcard(f"shopstream:top:{horizon}:{dim}") > 0, (horizon, dim)
    assert client.hgetall("shopstream:meta")


def test_rankings_cli_json_reads_the_replay(replayed, capsys):
    capsys.readouterr()
    assert cli.main(["rankings", "products", "--json", "--redis", replayed["redis"].url]) == 0
    items = json.loads(capsys.readouterr().out)
    assert len(items) == 10 and items[0]["rank"] == 1
    assert set(items[0]) == {"rank", "id", "name", "score"}


def test_rerun_leaves_no_duplicate_rows(replayed):
    before = _query(replayed["warehouse"], "SELECT count(*) FROM events_enriched")[0][0]
    dead_before = _query(replayed["warehouse"], "SELECT count(*) FROM dead_letter")[0][0]
    assert cli.main(replayed["args"]) == 0
    after = _query(replayed["warehouse"],
                   "SELECT count(*), count(DISTINCT event_id) FROM events_enriched")[0]
    assert after == (before, before)
    dead_after = _query(replayed["warehouse"],
                        "SELECT count(*), count(DISTINCT raw) FROM dead_letter")[0]
    assert dead_after == (dead_before, dead_before)
