"""The daily batch job: wall time and peak memory of `shopstream batch` (sales facts,
daily sales, churn features) next to the DuckDB SQL oracle reading the same click stream
in the same run (a yardstick for the machine's speed at that moment)."""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from tests.bench.bench_replay import DUCKDB_SCRIPT
from tests.bench.common import count_lines, dataset, real_dataset, run_timed


def run(sizes=(1_000_000, 0), extra_args=()) -> list:
    """``sizes``: approximate click events; 0 = the real-size data set (~12 M events)."""
    rows = []
    for size in sizes:
        data = real_dataset() if size == 0 else dataset(size)
        events = count_lines(data / "click_stream.csv")
        bookings = count_lines(data / "transactions.csv")
        with tempfile.TemporaryDirectory() as tmp:
            ref = run_timed([sys.executable, "-c", DUCKDB_SCRIPT, str(data / "click_stream.csv"),
                             str(data / "transactions.csv"), str(Path(tmp) / "ref.duckdb")])
            job = run_timed([sys.executable, "-m", "pipelines.cli", "batch", "--input", str(data),
                             "--warehouse", str(Path(tmp) / "batch.duckdb"), *extra_args])
        rows.append({"bench": "batch", "events": events, "bookings": bookings,
                     "seconds": job["seconds"], "records_per_s": (events + bookings) / job["seconds"],
                     "peak_rss_mb": job["peak_rss_mb"],
                     "duckdb_oracle_s": ref["seconds"],
                     "ratio_vs_duckdb_oracle": job["seconds"] / ref["seconds"]})
    return rows
