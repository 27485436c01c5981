"""The ``shopstream replay`` and ``shopstream stream`` commands: options, runner
choice, the run, its summary line and exit status. The graph they run is
``pipelines/streaming_job.py``."""
from __future__ import annotations

import argparse
import logging
import sys
import time
from typing import Dict, List, Optional

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from pipelines import direct_runner_fix
from pipelines.streaming_job import build_pipeline
from pipelines.streaming_options import ShopstreamStreamingOptions
from transforms import run_summary, sinks, sources
from transforms.redis_sink import RedisWriteError, redact_url, wait_for_redis
from transforms.spill import delete_spill

log = logging.getLogger(__name__)


def summarize(result) -> Dict[str, object]:
    """The run summary (``transforms.run_summary`` shape) from Beam counters: per source
    read = valid + duplicate + dead_lettered, where click events are valid once
    sessionized and dead-lettered when unparseable, too far in the future or late, and
    orders are valid once per booking_id."""
    c = run_summary.query_counters(result)

    def get(name, ns="shopstream"):
        return c.get((ns, name), 0)

    sess = "shopstream.sessions"
    per_source = {"click_stream": run_summary.source_counts(
        get("click_stream_read"), get("valid", sess), get("duplicate", sess),
        get("click_stream_dead_lettered") + get("late", sess))}
    duplicate_orders = get("duplicate_orders", "shopstream.orders")
    per_source["transactions"] = run_summary.source_counts(
        get("transactions_read"), get("transactions_valid") - duplicate_orders,
        duplicate_orders, get("transactions_dead_lettered"))
    for kind in ("product", "customer"):
        if get(f"{kind}_read"):
            per_source[kind] = run_summary.source_counts(
                get(f"{kind}_read"), get(f"{kind}_valid"), get(f"{kind}_duplicate"),
                get(f"{kind}_dead_lettered"))
    return run_summary.summary_dict(
        per_source, inferred=get("inferred", sess), visits_closed=get("visits_closed", sess),
        future_dead_lettered=get("future_dead_lettered"),
        redis_writes=get("redis_writes"), redis_retries=get("redis_retries"),
        redis_write_failures=get("redis_write_failures"))


SUMMARY_EXTRAS = ("inferred", "visits_closed", "future_dead_lettered", "redis_writes",
                  "redis_retries", "redis_write_failures")


def option_names() -> List[str]:
    """Every option ShopstreamStreamingOptions declares (its argparse dests): the CLI
    passes them all to the pipeline, so an option added to the class needs nothing here."""
    probe = argparse.ArgumentParser(add_help=False)
    ShopstreamStreamingOptions._add_argparse_args(probe)
    return sorted({a.dest for a in probe._actions if a.dest != "help"})


def _pipeline_options(args, beam_args: List[str], streaming: bool) -> PipelineOptions:
    flags = list(beam_args)
    if not any(a.startswith("--runner") for a in flags):
        # Never let Beam try Prism (it downloads a binary: offline it fails, then falls
        # back). Live, the DirectRunner ends up on the BundleBasedDirectRunner anyway.
        flags.append("--runner=BundleBasedDirectRunner" if getattr(args, "subscription", None)
                     else "--runner=DirectRunner")
    if streaming and "--streaming" not in flags:
        flags.append("--streaming")
    streaming = streaming or "--streaming" in flags
    local = not any(a.startswith("--runner=") and not a.startswith("--runner=DirectRunner")
                    for a in flags)
    chosen = any(a.startswith(("--direct_num_workers", "--direct_running_mode")) for a in flags)
    if local and not chosen:
        import os

        workers = min(2, os.cpu_count() or 1)
        if streaming or "://" in str(getattr(args, "input", "") or "") or workers < 2:
            # The streaming graph runs in this process: its DuckDB and Redis writers
            # must share one process (DuckDB allows one), and worker processes would not
            # inherit in-process client setup (e.g. a GCS endpoint set by the caller).
            flags += ["--direct_num_workers=1", "--direct_running_mode=in_memory"]
        else:
            # A bounded replay: one worker process per core (up to 2); the warehouse is
            # staged as Parquet and loaded once after the run, so workers never share the
            # DuckDB file.
            flags += [f"--direct_num_workers={workers}", "--direct_running_mode=multi_processing"]
    values = {k: getattr(args, k) for k in option_names() if getattr(args, k, None) is not None}
    opts = PipelineOptions(flags, **values)
    opts.view_as(beam.options.pipeline_options.SetupOptions).save_main_session = False
    return opts


#: Thresholds of the cyclic GC for a local replay (Python's default: 700, 10, 10).
REPLAY_GC_THRESHOLDS = (100_000, 50, 100)


def _fewer_gc_passes(opts: PipelineOptions) -> None:
    """A local replay allocates millions of short-lived tuples (decoded elements,
    records, timers) in this process, and Python runs a gen-0 collection every 700:
    raising the threshold cut ~14 % of `replay --streaming`'s CPU on 125 k events
    (36.7-37.8 → 31.1-32.8 cpu s, same peak RSS). Cycles are still collected."""
    if "Direct" in str(opts.view_as(StandardOptions).runner or "DirectRunner"):
        import gc

        gc.set_threshold(*REPLAY_GC_THRESHOLDS)


def run_pipeline(opts: PipelineOptions, wait: bool = True):
    if "Direct" in str(opts.view_as(StandardOptions).runner or "DirectRunner"):
        direct_runner_fix.apply()
    p = beam.Pipeline(options=opts)
    built = build_pipeline(p, opts.view_as(ShopstreamStreamingOptions))
    spill = built.get("spill_dir")
    bar = _ProgressBar(*built["progress"]) if built.get("progress") and wait else None
    try:
        result = p.run()
        result.sessionize_mode = built["mode"]
        if wait:
            result.wait_until_finish()
            if built.get("staged"):
                folder, tables = built["staged"]
                t0 = time.time()
                loaded = sinks.load_staged(opts.view_as(ShopstreamStreamingOptions).warehouse,
                                           folder, tables)
                log.info("loaded staged tables in %.1fs: %s", time.time() - t0, loaded)
    finally:
        if bar is not None:
            bar.close()
        if spill and wait:
            delete_spill(spill)
    return result


class _ProgressBar:
    """One tqdm bar for the parse stage of a bounded replay (bytes of input parsed, as
    marked by the workers), on a terminal only."""

    def __init__(self, folder: str, total: int):
        import threading

        from tqdm import tqdm

        self.folder = folder
        self.bar = tqdm(total=total, unit="B", unit_scale=True, desc="replay: parse",
                        file=sys.stderr, disable=not sys.stderr.isatty())
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()

    def _poll(self):
        while not self.stop.wait(0.5):
            self.bar.n = min(self.bar.total, sources.progress_bytes(self.folder))
            self.bar.refresh()

    def close(self):
        self.stop.set()
        self.thread.join()
        self.bar.n = min(self.bar.total, sources.progress_bytes(self.folder))
        self.bar.close()


class _DropWorkerArgWarnings(logging.Filter):
    """Local worker processes do not import shopstream's options classes, so each logs
    that it discards ``--warehouse=…`` and friends; that is expected, not a warning.
    Nor is the missing semi-persistent directory of a local worker."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return ("Discarding unparseable args" not in msg
                and "No semi_persistent_directory found" not in msg)


def _quiet_local_workers() -> None:
    for name in ("apache_beam.runners.portability.local_job_service",
                 "apache_beam.runners.worker.sdk_worker_main", "apache_beam.options.pipeline_options"):
        logging.getLogger(name).addFilter(_DropWorkerArgWarnings())


def _replay(args) -> int:
    import os

    if not args.input:
        print("shopstream replay: error: --input is required", file=sys.stderr)
        return 2
    _quiet_local_workers()
    if args.redis is None:
        args.redis = os.environ.get("REDIS_URL")
    opts = _pipeline_options(args, args.beam_args, streaming=False)
    _fewer_gc_passes(opts)
    t0 = time.time()
    print(f"replaying {args.input} → warehouse={args.warehouse or '-'} "
          f"redis={_redact(args.redis) if args.redis else '-'}", file=sys.stderr)
    problem = args.redis and redis_problem(args.redis, args.redis_retry_seconds)
    if problem:
        return _fail("replay", problem)
    try:
        result = run_pipeline(opts)
    except Exception as exc:  # noqa: BLE001 - a Redis failure is one line, exit 1
        reason = redis_failure(exc)
        if reason is None:
            raise
        return _fail("replay", f"the Redis rankings were not written: {reason}")
    totals = summarize(result)
    secs = time.time() - t0
    rate = totals["by_source"]["click_stream"]["read"] / secs if secs else 0
    print(run_summary.summary_line(
        "replay", totals, SUMMARY_EXTRAS, prefix="replay done in %.1fs (%.0f events/s): "
        "sessionize=%s" % (secs, rate, result.sessionize_mode)))
    return 0


def _stream(args) -> int:
    if not args.subscription:
        print("shopstream stream: error: --subscription is required", file=sys.stderr)
        return 2
    problem = args.redis and redis_problem(args.redis, args.redis_retry_seconds)
    if problem:
        return _fail("stream", problem)
    opts = _pipeline_options(args, args.beam_args, streaming=True)
    result = run_pipeline(opts, wait=False)
    runner = opts.view_as(StandardOptions).runner or ""
    if "Dataflow" in runner:
        print(f"launched Dataflow job {getattr(result, 'job_id', lambda: '?')()} "
              f"(sessionize={result.sessionize_mode})")
        return 0
    print(f"streaming from Pub/Sub (sessionize={result.sessionize_mode}); Ctrl-C to stop",
          file=sys.stderr)
    try:
        result.wait_until_finish()
    except KeyboardInterrupt:
        result.cancel()
    print(run_summary.summary_line(  # same shape as replay
        "stream", summarize(result), SUMMARY_EXTRAS,
        prefix="stream stopped: sessionize=%s" % result.sessionize_mode))
    return 0


def redis_problem(url: str, retry_seconds: float) -> Optional[str]:
    """Before a run: None if Redis answers (within the retry budget) and accepts the
    credentials, else why not."""
    try:
        wait_for_redis(url, retry_seconds)
    except RedisWriteError as exc:
        return f"cannot write the Redis rankings: {exc}"
    return None


def _fail(command: str, message: str) -> int:
    print(f"shopstream {command}: error: {message}", file=sys.stderr)
    return 1


def redis_failure(exc: BaseException) -> Optional[str]:
    """The RedisWriteError message inside a failed run's exception (the runner wraps
    worker errors in its own), or None."""
    text = f"{type(exc).__name__}: {exc}"
    if "RedisWriteError" not in text:
        return None
    return text.split("RedisWriteError:", 1)[-1].strip().splitlines()[0]


def _redact(url: str) -> str:
    return redact_url(url)


def register(subparsers, name: str) -> None:
    """The ``replay`` / ``stream`` parsers, built from ShopstreamStreamingOptions (every
    option declared there appears here, with its help text)."""
    if name == "replay":
        p = subparsers.add_parser(
            "replay", help="run the streaming pipeline over historical files",
            description="Replay click_stream and transactions files (local or gs://, CSV or "
                        "JSONL) through the streaming pipeline's transforms: --input is "
                        "required. With --streaming it runs the live graph itself (stateful "
                        "Sessionize, sliced engagement) on the files. Extra arguments are "
                        "Beam pipeline options (--runner, --project, ...).")
        p.set_defaults(func=_replay)
    else:
        p = subparsers.add_parser(
            "stream", help="run the streaming pipeline live from Pub/Sub",
            description="Read click events (and orders) from Pub/Sub subscriptions, JSON "
                        "messages with an event_time attribute: --subscription is required. "
                        "Extra arguments are Beam pipeline options "
                        "(--runner=DataflowRunner, --project, ...).")
        p.set_defaults(func=_stream)
    ShopstreamStreamingOptions._add_argparse_args(p)
    p.set_defaults(accepts_beam_args=True)
