"""The PySpark local bench row (tests/bench/bench_spark.py): its engagement and enriched
events equal the DuckDB oracle's on a tiny generated data set, through the timed child
process the bench runs. Needs the bench extra (``make bench-deps``: pyspark + Java);
skipped without it — CI and ``make install`` do not install it."""
from __future__ import annotations

import re
from pathlib import Path

import duckdb
import pytest

from tests.bench import bench_spark
from tests.reference_sql import reference_enriched

ROOT = Path(__file__).resolve().parent.parent


def test_bench_requirements_are_pinned_in_constraints():
    pins = dict(ln.split("==", 1) for ln in (ROOT / "constraints.txt").read_text().splitlines()
                if "==" in ln and not ln.startswith("#"))
    pins = {re.sub(r"[-_.]+", "-", k).lower(): v for k, v in pins.items()}
    reqs = [ln for ln in (ROOT / "requirements-bench.txt").read_text().splitlines()
            if ln.strip() and not ln.startswith("#")]
    assert {r.split("==")[0] for r in reqs} == {"pyspark", "py4j"}
    for r in reqs:
        name, version = r.split("==")
        assert pins.get(name) == version, r


def test_check_equal_names_the_first_difference():
    want = {1: (2, 0, 1, 0, 10.5, 3), 2: (0, 0, 0, 0, 0.0, 1)}
    bench_spark.check_equal({1: (2, 0, 1, 0, 10.5 + 1e-12, 3), 2: (0, 0, 0, 0, 0.0, 1)}, want)
    with pytest.raises(AssertionError, match="product 1"):
        bench_spark.check_equal({1: (2, 0, 1, 0, 10.6, 3), 2: want[2]}, want)
    with pytest.raises(AssertionError, match="product 2"):
        bench_spark.check_equal({1: want[1], 2: (0, 0, 0, 0, 0.0, 2)}, want)
    with pytest.raises(AssertionError, match="1 missing"):
        bench_spark.check_equal({1: want[1]}, want)


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory) -> Path:
    from pipelines.generate import generate

    out = tmp_path_factory.mktemp("spark-data")
    generate(out_dir=str(out), customers=60, products=40, days=60, seed=4)
    return out


@pytest.mark.slow
@pytest.mark.skipif(not bench_spark.available(),
                    reason="pyspark or java not installed (bench extra: make bench-deps)")
def test_pyspark_local_equals_the_duckdb_oracle(tiny_dataset, tmp_path):
    # the bench's own path: the timed child process, then its check against DuckDB
    r = bench_spark.timed_run(tiny_dataset, tmp_path)
    assert r["cpu_s"] > 0 and r["stderr"].count("\n") <= 1, r["stderr"]  # quiet: the JVM's one note
    con = duckdb.connect()
    got = {row[0]: row[1:] for row in con.execute(
        "SELECT event_id, visit_no, coalesce(own_pid, inferred_pid), inferred_pid IS NOT NULL,"
        f" dwell_seconds FROM read_parquet('{tmp_path}/spark/events_enriched/*.parquet')"
    ).fetchall()}
    want = reference_enriched(str(tiny_dataset / "click_stream.csv"))
    assert got.keys() == want.keys()
    assert sum(w[2] for w in want.values()) > 0  # the data set has inferred products
    assert max(w[0] for w in want.values()) > 1  # and sessions of several visits
    for eid, w in want.items():
        g = got[eid]
        assert g[:3] == w[:3], eid
        assert (g[3] is None) if w[3] is None else g[3] == pytest.approx(w[3]), eid
