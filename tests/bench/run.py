"""`make bench`: every benchmark, printed as one table. Ratios compare peers measured in
the same run (these machines are noisy); no benchmark asserts a time."""
from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path

#: module → what it measures. Each exposes run(sizes) -> list[dict] rows.
BENCHES = {
    "tests.bench.bench_replay": "replay throughput and peak memory vs DuckDB SQL",
    "tests.bench.bench_live": "Pub/Sub emulator → Redis latency",
    "tests.bench.bench_shuffles": "elements per event through shuffles (live graph)",
    "tests.bench.bench_batch": "batch job time and peak memory vs the DuckDB oracle (and PySpark local)",
    "tests.bench.bench_batch_load": "batch warehouse load step into BigQuery: peak memory before/after",
    "tests.bench.bench_api": "HTTP rankings API latency vs raw Redis",
}


def print_table(rows) -> None:
    if not rows:
        return
    cols = []
    for r in rows:
        cols.extend(k for k in r if k not in cols)
    widths = {c: max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in cols}
    print("  ".join(c.ljust(widths[c]) for c in cols))
    print("  ".join("-" * widths[c] for c in cols))
    for r in rows:
        print("  ".join(_fmt(r.get(c)).ljust(widths[c]) for c in cols))


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:,.2f}" if abs(v) < 1000 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--only", nargs="*", help="module names (e.g. bench_replay)")
    ap.add_argument("--sizes", default=None, help="comma-separated event counts, e.g. 1000000,5000000")
    ap.add_argument("--out", default="bench-results", help="folder for the JSON results")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    all_rows = []
    for module, what in BENCHES.items():
        if args.only and module.rsplit(".", 1)[-1] not in args.only:
            continue
        try:
            mod = importlib.import_module(module)
        except ImportError as exc:
            print(f"[skip] {module}: {exc}", file=sys.stderr)
            continue
        print(f"== {what} ({module})", file=sys.stderr)
        t0 = time.time()
        kwargs = {}
        if args.sizes and "sizes" in mod.run.__code__.co_varnames:
            kwargs["sizes"] = [int(s) for s in args.sizes.split(",")]
        rows = mod.run(**kwargs)
        print_table(rows)
        print(f"({time.time() - t0:.0f} s)\n")
        all_rows.extend(rows)
    (out / "results.json").write_text(json.dumps(all_rows, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
