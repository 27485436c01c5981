"""The daily batch job: wall time, CPU time and peak memory of `shopstream batch` (sales
facts, daily sales, churn features) next to the DuckDB SQL oracle of the replay
(tests/reference_sql.py: visits, dwell, inference and engagement over the same click
stream and transactions) on the same files in the same run — a yardstick for the
machine's speed at that moment. Each size is measured ``repeats`` times, oracle and job
back to back, with the load average at the start of each pair (2 shared cores: compare
the ratios, not the seconds across runs). With the bench extra (``make bench-deps``) a
``pyspark_local`` row runs the oracle's computation in PySpark local on the same files
(tests/bench/bench_spark.py), checked equal to DuckDB's result first."""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from tests.bench import bench_spark
from tests.bench.bench_replay import DUCKDB_SCRIPT
from tests.bench.common import count_lines, dataset, real_dataset, run_timed


def run(sizes=(1_000_000, 0), extra_args=(), repeats=2) -> list:
    """``sizes``: approximate click events; 0 = the real-size data set (~12 M events,
    measured once)."""
    rows = []
    for size in sizes:
        data = real_dataset() if size == 0 else dataset(size)
        events = count_lines(data / "click_stream.csv")
        bookings = count_lines(data / "transactions.csv")
        for attempt in range(1 if size == 0 else repeats):
            load = os.getloadavg()[0]
            with tempfile.TemporaryDirectory() as tmp:
                ref = run_timed([sys.executable, "-c", DUCKDB_SCRIPT,
                                 str(data / "click_stream.csv"), str(data / "transactions.csv"),
                                 str(Path(tmp) / "ref.duckdb")])
                job = run_timed([sys.executable, "-m", "pipelines.cli", "batch", "--input",
                                 str(data), "--warehouse", str(Path(tmp) / "batch.duckdb"),
                                 *extra_args])
                spark = bench_spark.timed_run(data, Path(tmp))
            for impl, r in (("duckdb_oracle", ref), ("shopstream_batch", job),
                            *((("pyspark_local", spark),) if spark else ())):
                rows.append({"bench": "batch", "impl": impl, "run": attempt + 1,
                             "load_avg": load, "events": events, "bookings": bookings,
                             "seconds": r["seconds"], "cpu_s": r["cpu_s"],
                             "events_per_s": events / r["seconds"],
                             "peak_tree_rss_mb": r["peak_tree_rss_mb"],
                             "ratio_vs_duckdb": r["seconds"] / ref["seconds"],
                             "cpu_ratio_vs_duckdb": r["cpu_s"] / ref["cpu_s"]})
    return rows
