"""The streaming pipeline's graph: one graph for live Pub/Sub and a rehearsal on files.

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
give identical tables (tests/test_streaming_rehearsal.py). The commands that run it are
``pipelines/streaming.py``.
"""
from __future__ import annotations

import logging
from typing import Dict, List

import apache_beam as beam
from apache_beam.options.pipeline_options import StandardOptions

from pipelines.replay_source import ReadFilesInEventTime
from pipelines.streaming_options import ShopstreamStreamingOptions
from transforms import pubsub_source, sinks, sources
from transforms.orders import DedupOrders
from transforms.redis_sink import WriteRankingsToRedis
from transforms.replay_rankings import ReplayRankings
from transforms.scoring import resolve_weights
from transforms.sessionize import STATEFUL, Sessionize, SessionizeBuckets
from transforms.slices import SlicedRankings
from transforms.spill import new_spill_dir
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
        # Files through the live graph: records in any order, event-time timestamps, and
        # for clicks a watermark that advances range by range (pipelines/replay_source.py).
        spill = _spill_dir(p.options)
        clicks = p | "ReadClicks" >> ReadFilesInEventTime(
            _require(sources.find_table_files(opts.input, "click_stream"), "click_stream", opts.input),
            "click_stream", spill, max_future=opts.max_future)
        # Orders too: in event time, their chunks about as long in event time as the
        # clicks' (the source runs the lower watermark first), so DedupOrders' TTL timers
        # fire and purchases reach the rankings as the clicks of their time do.
        order_files = sources.find_table_files(opts.input, "transactions")
        orders = (p | "ReadOrders" >> ReadFilesInEventTime(
            order_files, "transactions", spill, max_future=opts.max_future)
            if order_files else None)
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
