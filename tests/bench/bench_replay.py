"""Replay throughput and peak memory: `shopstream replay` (bounded, bucketed sessions),
`shopstream replay --streaming` (the live graph: stateful Sessionize, sliced sharded
engagement) and the same SPEC §2 semantics in DuckDB SQL (tests/reference_sql.py), on
the same generated files in the same run."""
from __future__ import annotations

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
    set (SPEC §1: 100 000 customers, 44 446 products, 180 days, ~12 M events)."""
    rows = []
    for size in sizes:
        data = real_dataset() if size == 0 else dataset(size)
        events = count_lines(data / "click_stream.csv")
        with tempfile.TemporaryDirectory() as tmp:
            ref = run_timed([sys.executable, "-c", DUCKDB_SCRIPT, str(data / "click_stream.csv"),
                             str(data / "transactions.csv"), str(Path(tmp) / "ref.duckdb")])
            beam = run_timed([sys.executable, "-m", "pipelines.cli", "replay", "--input", str(data),
                              "--warehouse", str(Path(tmp) / "replay.duckdb"), *extra_args])
            runs = [("duckdb_sql", ref), ("shopstream_replay", beam)]
            if size in streaming_sizes:
                runs.append(("shopstream_replay_streaming", run_timed(
                    [sys.executable, "-m", "pipelines.cli", "replay", "--input", str(data),
                     "--warehouse", str(Path(tmp) / "streaming.duckdb"), "--streaming",
                     *extra_args])))
        for name, r in runs:
            rows.append({"bench": "replay", "impl": name, "events": events,
                         "seconds": r["seconds"], "events_per_s": events / r["seconds"],
                         "peak_rss_mb": r["peak_rss_mb"],
                         "peak_tree_rss_mb": r["peak_tree_rss_mb"],
                         "slowdown_vs_duckdb": r["seconds"] / ref["seconds"]})
    return rows
