"""Helpers shared by the benchmarks: cached generated data sets, timed child processes."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

BENCH_DIR = Path(os.environ.get("SHOPSTREAM_BENCH_DIR", "bench-results"))

def dataset_args(events: int) -> list:
    """Generator arguments giving roughly ``events`` click events (≈ 190 per customer-year)."""
    customers = max(200, int(events / 190))
    products = min(44_446, max(500, customers // 2))
    return ["--customers", str(customers), "--products", str(products), "--days", "365"]


def dataset(events: int, seed: int = 5) -> Path:
    """A generated data set of about ``events`` click events, made once and cached."""
    out = BENCH_DIR / "data" / f"events-{events}"
    if not (out / "transactions.csv").exists():
        run_timed([sys.executable, "-m", "pipelines.cli", "generate", "--out", str(out),
                   "--seed", str(seed), "--quiet", *dataset_args(events)])
    return out


def count_lines(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(buf.count(b"\n") for buf in iter(lambda: f.read(1 << 20), b"")) - 1


def run_timed(cmd, env=None) -> dict:
    """Run a child process; wall seconds and its peak RSS (MB, via wait4)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env={**os.environ, **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    secs = time.perf_counter() - t0
    out, err = proc.stdout.read(), proc.stderr.read()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({code}):\n{err[-3000:]}")
    return {"seconds": secs, "peak_rss_mb": usage.ru_maxrss / 1024, "stdout": out, "stderr": err}
