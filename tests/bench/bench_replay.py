"""Replay throughput and peak memory: `shopstream replay` (bounded, bucketed sessions),
`shopstream replay --streaming` (the live graph: stateful Sessionize, sliced sharded
engagement) and the same SPEC §2 semantics in DuckDB SQL (tests/reference_sql.py), on
the same generated files in the same run."""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from tests.bench.common import count_lines, dataset, real_dataset, run_timed

DUCKDB_SCRIPT = """
import sys, duckdb
from tests.reference_sql import reference_engagement
con = duckdb.connect(sys.argv[3])
r = reference_engagement(sys.argv[1], sys.argv[2], con=con)
con.execute("CREATE OR REPLACE TABLE events_enriched AS SELECT * FROM enriched")
print(len(r))
"""


def run(sizes=(1_000_000, 5_000_000), extra_args=(), streaming_sizes=(1_000_000,)) -> list:
    """``sizes``: event counts of generated data sets; ``0`` means the real-size data
    set (SPEC §1: 100 000 customers, 44 446 products, 180 days, ~12 M events). Sizes in
    ``streaming_sizes`` also run ``replay --streaming``; every row gives its time, CPU
    and peak memory against the bounded replay of the same run (``*_vs_bounded``)."""
    rows = []
    for size in sizes:
        data = real_dataset() if size == 0 else dataset(size)
        events = count_lines(data / "click_stream.csv")
        with tempfile.TemporaryDirectory() as tmp:
            ref = _timed([sys.executable, "-c", DUCKDB_SCRIPT, str(data / "click_stream.csv"),
                             str(data / "transactions.csv"), str(Path(tmp) / "ref.duckdb")])
            beam = _timed([sys.executable, "-m", "pipelines.cli", "replay", "--input", str(data),
                              "--warehouse", str(Path(tmp) / "replay.duckdb"), *extra_args])
            runs = [("duckdb_sql", ref), ("shopstream_replay", beam)]
            if size in streaming_sizes:
                runs.append(("shopstream_replay_streaming", _timed(
                    [sys.executable, "-m", "pipelines.cli", "replay", "--input", str(data),
                     "--warehouse", str(Path(tmp) / "streaming.duckdb"), "--streaming",
                     *extra_args])))
        for name, r in runs:
            rows.append({"bench": "replay", "impl": name, "events": events,
                         "seconds": r["seconds"], "cpu_s": r["cpu_s"],
                         "events_per_s": events / r["seconds"],
                         "peak_rss_mb": r["peak_rss_mb"],
                         "peak_tree_rss_mb": r["peak_tree_rss_mb"],
                         "slowdown_vs_duckdb": r["seconds"] / ref["seconds"],
                         # `replay --streaming` against the bounded replay of this run
                         "time_vs_bounded": r["seconds"] / beam["seconds"],
                         "cpu_vs_bounded": r["cpu_s"] / beam["cpu_s"],
                         "memory_vs_bounded": r["peak_tree_rss_mb"] / beam["peak_tree_rss_mb"],
                         "load_avg": "%.1f-%.1f" % (r["load_before"], r["load_after"])})
    return rows


def _timed(cmd) -> dict:
    """:func:`run_timed` plus the 1-minute load average before and after (the machine
    may be shared: compare ratios within one run)."""
    before = os.getloadavg()[0]
    r = run_timed(cmd)
    return dict(r, load_before=before, load_after=os.getloadavg()[0])
