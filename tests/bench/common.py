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


def real_dataset() -> Path:
    """The real-size data set (~12 M click events, ~1.6 GB; the generator's default
    seed, as `shopstream generate` makes it), made once and cached."""
    out = BENCH_DIR / "data" / "real"
    if not (out / "transactions.csv").exists():
        run_timed([sys.executable, "-m", "pipelines.cli", "generate", "--out", str(out),
                   "--customers", "100000", "--products", "44446", "--days", "180",
                   "--quiet"])
    return out


def count_lines(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(buf.count(b"\n") for buf in iter(lambda: f.read(1 << 20), b"")) - 1


def _tree_rss_kb(root: int) -> int:
    """Resident memory (KB) of ``root`` and all its descendants, from /proc (0 elsewhere)."""
    parents = {}
    try:
        for name in os.listdir("/proc"):
            if name.isdigit():
                try:
                    with open(f"/proc/{name}/stat") as f:
                        parents[int(name)] = int(f.read().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    pass
    except OSError:
        return 0
    tree, frontier = {root}, [root]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parents.items() if pp == p and c not in tree]
        tree.update(kids)
        frontier.extend(kids)
    total = 0
    page_kb = os.sysconf("SC_PAGE_SIZE") // 1024
    for p in tree:
        try:
            with open(f"/proc/{p}/statm") as f:
                total += int(f.read().split()[1]) * page_kb
        except (OSError, IndexError, ValueError):
            pass
    return total


def run_timed(cmd, env=None) -> dict:
    """Run a child process; wall seconds, CPU seconds (user + system of the child and the
    children it waited for: steadier than wall time on a shared machine), its peak RSS
    (MB, via wait4: the largest single process) and the peak RSS summed over its process
    tree (sampled every 0.5 s — multi-process runners have worker processes)."""
    import tempfile
    import threading

    t0 = time.perf_counter()
    # Output to files, not pipes: a chatty child must never block on a full pipe.
    out_f, err_f = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
    proc = subprocess.Popen(cmd, env={**os.environ, **(env or {})}, stdout=out_f,
                            stderr=err_f, text=True)
    peak = [0]
    done = threading.Event()

    def sample():
        while not done.wait(0.5):
            peak[0] = max(peak[0], _tree_rss_kb(proc.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, status, usage = os.wait4(proc.pid, 0)
    done.set()
    sampler.join()
    secs = time.perf_counter() - t0
    out_f.seek(0), err_f.seek(0)
    out, err = out_f.read(), err_f.read()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({code}):\n{err[-3000:]}")
    return {"seconds": secs, "cpu_s": usage.ru_utime + usage.ru_stime,
            "peak_rss_mb": usage.ru_maxrss / 1024,
            "peak_tree_rss_mb": max(peak[0], usage.ru_maxrss) / 1024,
            "stdout": out, "stderr": err}
