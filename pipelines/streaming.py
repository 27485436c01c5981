"""The streaming pipeline: one graph for live Pub/Sub and for a rehearsal on files.

    clicks ─ Parse ─ max-future ─ Sessionize (dedup, visits, dwell, inference) ─┬─ events_enriched
    orders ─ Parse ─ max-future ─ booking_id dedup ─────────────────────────────┤
                                         sliced engagement per shard ─ merge ─ Redis, top-10s
Sources and sinks are chosen by options; the transforms in between never know which.
``shopstream stream`` and ``shopstream replay --streaming`` run this graph (README "The
streaming graph"). ``--sessionize`` picks the Sessionize implementation, printed in the
run summary: ``stateful`` (the graph above) or ``buckets`` (``auto`` for a bounded
``replay``): a batch shape of the same semantics — files read in byte ranges and parsed
straight into compact per-bucket session lists spilled to a temporary folder
(``sources.ReadTableChunks``), whole sessions enriched per bucket
(``sessions.SessionizeBuckets``), ``replay_rankings.ReplayRankings`` (the same slice rule
and two-stage ranking); a DuckDB warehouse is staged as Parquet and loaded once after the
run, on one worker process per core (up to 2). Both emit ``SessionBatch`` elements and
give identical tables (tests/test_streaming_rehearsal.py).
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from typing import Dict, List, Optional

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from pipelines import direct_runner_fix
from pipelines.streaming_options import ShopstreamStreamingOptions
from transforms import pubsub_source, run_summary, sinks, sources
from transforms.orders import DedupOrders
from transforms.redis_sink import RedisWriteError, WriteRankingsToRedis, redact_url, wait_for_redis
from transforms.replay_rankings import ReplayRankings
from transforms.scoring import resolve_weights
from transforms.sessionize import STATEFUL, Sessionize, SessionizeBuckets
from transforms.slices import SlicedRankings
from transforms.spill import delete_spill, new_spill_dir
from transforms.top_n import product_engagement_rows, top10_rows
from transforms.warehouse import parse_target

log = logging.getLogger(__name__)


def sessionize_mode(opts: ShopstreamStreamingOptions, streaming: bool) -> str:
    """The Sessionize implementation this run uses (``--sessionize``)."""
    mode = opts.sessionize or "auto"
    if mode == "auto":
        return "stateful" if streaming else "buckets"
    if mode == "buckets" and streaming:
        raise ValueError("--sessionize=buckets needs a bounded replay (not --streaming "
                         "or a subscription); use --sessionize=stateful")
    return mode


def _batch_table(batch):
    return sinks.enriched_table(batch.enriched)


def build_pipeline(p: beam.Pipeline, opts: ShopstreamStreamingOptions) -> Dict[str, beam.PCollection]:
    """Add the shopstream graph to ``p``; returns the main PCollections (for tests)."""
    live = bool(opts.subscription)
    streaming = p.options.view_as(StandardOptions).streaming or live
    if live == bool(opts.input):
        raise ValueError("give exactly one source: --input (replay) or --subscription (live)")
    mode = sessionize_mode(opts, streaming)
    stateful = mode == "stateful"

    # ---- sources (every reader dead-letters events beyond --max-future itself)
    dead: List[beam.PCollection] = []
    spill = progress = None
    if live:
        dataflow = "Dataflow" in str(p.options.view_as(StandardOptions).runner or "")
        id_label = "event_id" if dataflow else None  # the DirectRunner rejects id_label
        ps = {"max_message_bytes": opts.max_message_bytes,  # event time parsed in a DoFn;
              "timestamp_attribute": "event_time" if dataflow else None,  # Dataflow: watermark
              "max_future": opts.max_future}
        clicks = p | "ReadClicks" >> pubsub_source.ReadPubSubRecords(
            opts.subscription, "click_stream", id_label, **ps)
        orders = (p | "ReadOrders" >> pubsub_source.ReadPubSubRecords(
            opts.orders_subscription, "transactions", "booking_id" if dataflow else None, **ps)
            if opts.orders_subscription else None)
    elif stateful:
        # Files through the live graph: records in any order, event-time timestamps.
        clicks = p | "ReadClicks" >> sources.ReadTableFiles(
            _require(sources.find_table_files(opts.input, "click_stream"), "click_stream", opts.input),
            "click_stream", max_future=opts.max_future)
        order_files = sources.find_table_files(opts.input, "transactions")
        orders = (p | "ReadOrders" >> sources.ReadTableFiles(
            order_files, "transactions", max_future=opts.max_future) if order_files else None)
    else:
        # Bounded replay: files read in byte ranges, clicks parsed straight into compact
        # per-bucket session lists — one shuffle of a few thousand elements, and batches
        # of enriched events (not single events) from there on.
        spill = _spill_dir(p.options)
        click_files = _require(sources.find_table_files(opts.input, "click_stream"),
                               "click_stream", opts.input)
        order_files = sources.find_table_files(opts.input, "transactions")
        progress = (f"{spill}/progress", sources.input_bytes(click_files + order_files))
        clicks = p | "ReadClicks" >> sources.ReadTableChunks(
            click_files, "click_stream", buckets=sources.SESSION_BUCKETS, spill_dir=spill,
            max_future=opts.max_future, progress_dir=progress[0])
        orders = (p | "ReadOrders" >> sources.ReadTableChunks(
            order_files, "transactions", max_future=opts.max_future,
            progress_dir=progress[0]) if order_files else None)
    # every branch leaves {"records", "dead"} dicts (or None for no orders)
    dead += [part["dead"] for part in (clicks, orders) if part is not None]
    clicks = clicks["records"]
    orders = orders["records"] if orders is not None else None

    # ---- orders counted once (booking_id)
    transactions = (orders | "DedupOrders" >> DedupOrders(opts.dedup_ttl, stateful=stateful)
                    if orders is not None else p | "NoOrders" >> beam.Create([]))

    product_files = ([opts.products] if opts.products
                     else sources.find_table_files(opts.input, "product") if opts.input else [])
    if product_files:
        products_read = p | "ReadProducts" >> sources.ReadSmallTable(product_files, "product")
        dead.append(products_read["dead"])
        products = products_read["records"] | "KeyProducts" >> beam.Map(lambda r: (r.id, r))
    else:
        log.warning("no product table given: rankings by brand, gender and season will be empty")
        products = p | "NoProducts" >> beam.Create([])
    products_side = beam.pvalue.AsDict(products)

    # ---- sessions: every mode emits SessionBatch elements
    if stateful:
        sessions = clicks | "Sessionize" >> Sessionize(
            visit_gap=opts.visit_gap, lookback=opts.lookback, dedup_ttl=opts.dedup_ttl,
            mode=STATEFUL)
        enriched = sessions["enriched"]
        dead.append(sessions["late"])  # late data for closed visits, with the reason
    else:
        enriched = clicks | "Sessionize" >> SessionizeBuckets(
            visit_gap=opts.visit_gap, lookback=opts.lookback)

    # ---- engagement and rankings
    weights, weights_source = resolve_weights(opts.weights, opts.models)
    log.info("popularity weights from %s: %s", weights_source, weights)
    if stateful:
        # Sliced, sharded engagement; adds and purchases count the moment they arrive.
        snapshots = (enriched, transactions) | "Rankings" >> SlicedRankings(
            product_files, weights, top_n=opts.top_n, slice_seconds=opts.slice_seconds,
            shards=opts.shards, refresh=opts.refresh, decay=live,
            with_table=bool(opts.warehouse))
    else:
        # The same slice rule and two-stage ranking, computed once at the end.
        snapshots = (enriched, transactions) | "Rankings" >> ReplayRankings(
            products_side, weights, top_n=opts.top_n, slice_seconds=opts.slice_seconds,
            shards=opts.shards)
    if opts.redis:
        snapshots | "WriteRedis" >> WriteRankingsToRedis(
            opts.redis, top_n=max(10, opts.top_n), min_interval=opts.refresh if live else 0.0,
            password_secret=opts.redis_secret, retry_seconds=opts.redis_retry_seconds,
            fail_on_give_up=not live)

    # ---- warehouse
    dead_all = dead | "FlattenDead" >> beam.Flatten()
    staged = []  # [(table, mode)] staged as Parquet, loaded after the run
    if opts.warehouse:
        stage = (f"{spill}/warehouse" if not stateful and parse_target(opts.warehouse)[0] == "duckdb"
                 else None)

        def rows_sink(table, **kw):
            if stage:
                staged.append((table, sinks.staged_mode(table)))
                return sinks.StageRows(stage, table, **kw)
            return sinks.WriteRows(opts.warehouse, table, streaming, **kw)

        def snapshot_sink(table):
            if stage:
                staged.append((table, "replace"))
                return sinks.StageSnapshots(stage, table)
            return sinks.WriteSnapshots(opts.warehouse, table, opts.warehouse_refresh)

        failed = enriched | "WriteEnriched" >> rows_sink(
            "events_enriched", batched=_batch_table, flush_rows=250_000)
        ((dead_all | "DeadRows" >> beam.Map(sinks.dead_row), failed)
         | "AllDeadRows" >> beam.Flatten()
         | "WriteDeadLetter" >> rows_sink("dead_letter"))
        all_time = snapshots | "AllTime" >> beam.Filter(
            lambda s: s.horizon == "all" and s.engagements is not None)
        (all_time | "EngagementTable" >> beam.FlatMap(
            lambda s, prods, w: [product_engagement_rows(s, prods, w)], products_side, weights)
         | "WriteEngagement" >> snapshot_sink("product_engagement"))
        for table in ("top10_products", "top10_brands", "top10_subcategories",
                      "top10_products_by_season_gender"):
            (all_time | f"Rows_{table}" >> beam.Map(top10_rows, table)
             | f"Write_{table}" >> snapshot_sink(table))
    return {"enriched": enriched, "snapshots": snapshots, "dead": dead_all,
            "transactions": transactions, "spill_dir": spill, "mode": mode, "progress": progress,
            "staged": (f"{spill}/warehouse", staged) if staged else None}


def _spill_dir(options) -> str:
    """Where a replay spills its session payloads (deleted after the run): a fresh folder
    under --temp_location, else under the local temp folder; it carries the pid, so the
    next run removes it if this one is killed (transforms.spill.new_spill_dir)."""
    import tempfile

    from apache_beam.options.pipeline_options import GoogleCloudOptions

    base = options.view_as(GoogleCloudOptions).temp_location or tempfile.gettempdir()
    return new_spill_dir(base)


def _require(paths: List[str], kind: str, root: str) -> List[str]:
    if not paths:
        raise SystemExit(f"shopstream: no {kind} files under {root} "
                         f"(looked for {kind}.csv, {kind}.jsonl, {kind}-*.csv, {kind}/*.csv)")
    return paths


# --------------------------------------------------------------------------- commands
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
