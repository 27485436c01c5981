"""Typed options for the streaming pipeline (replay and live), shared by the CLI, the
Flex Template metadata and the graph builder."""
from __future__ import annotations

from apache_beam.options.pipeline_options import PipelineOptions

from transforms.event_time import DEFAULT_MAX_FUTURE
from transforms.session_rules import DEFAULT_DEDUP_TTL, DEFAULT_LOOKBACK, DEFAULT_VISIT_GAP
from transforms.sinks import DEFAULT_WAREHOUSE_REFRESH
from transforms.slices import DEFAULT_REFRESH, DEFAULT_SHARDS, DEFAULT_SLICE_SECONDS

#: Sessionize implementations (``--sessionize``); ``auto`` = stateful when streaming.
SESSIONIZE_MODES = ("auto", "stateful", "buckets")


def add_option(parser, name: str, **kw) -> None:
    """Accept ``--visit-gap`` (CLI style) and ``--visit_gap`` (Beam / Flex Template style).

    Beam builds one parser from every imported PipelineOptions class, so an option that
    another shopstream options class already declared (same dest and meaning, e.g.
    ``--warehouse``) is not declared twice.
    """
    flags = [f"--{name}"]
    if "_" in name:
        flags.append(f"--{name.replace('_', '-')}")
    if any(f in parser._option_string_actions for f in flags):
        return
    parser.add_argument(*flags, dest=name, **kw)


class ShopstreamStreamingOptions(PipelineOptions):
    """Every option of the streaming pipeline; sources and sinks are chosen by these."""

    @classmethod
    def _add_argparse_args(cls, parser):
        add_option(parser, "input", default=None,
              help="replay source: a local folder or gs:// URL holding click_stream "
                   "and transactions files (.csv or .jsonl), product.csv, customer.csv")
        add_option(parser, "subscription", default=None,
              help="live source: projects/P/subscriptions/S carrying click events (JSON)")
        add_option(parser, "orders_subscription", default=None,
              help="live source: projects/P/subscriptions/S carrying transactions (JSON)")
        add_option(parser, "products", default=None,
              help="product table (CSV, local or gs://); default INPUT/product.csv")
        add_option(parser, "warehouse", default=None,
              help="DuckDB file path or bq://PROJECT.DATASET")
        add_option(parser, "redis", default=None,
              help="Redis URL (redis:// or rediss://); password may come from REDIS_PASSWORD")
        add_option(parser, "weights", default=None, help="popularity weights JSON file")
        add_option(parser, "models", default=None,
              help="models folder (local or gs://) holding popularity/LATEST")
        add_option(parser, "visit_gap", type=float, default=float(DEFAULT_VISIT_GAP),
              help="seconds of inactivity that end a visit")
        add_option(parser, "lookback", type=int, default=DEFAULT_LOOKBACK,
              help="events walked back from an ADD_TO_CART for product-id inference")
        add_option(parser, "dedup_ttl", type=float, default=float(DEFAULT_DEDUP_TTL),
              help="event-time seconds an event id is remembered after its visit closes")
        add_option(parser, "top_n", type=int, default=50,
              help="members kept per Redis ranking (at least 10)")
        add_option(parser, "redis_secret", default=None,
              help="Secret Manager secret (projects/P/secrets/S[/versions/V]) holding the "
                   "Redis password, read on the workers; else $REDIS_PASSWORD there. Never "
                   "put the password in --redis")
        add_option(parser, "warehouse_refresh", type=float, default=DEFAULT_WAREHOUSE_REFRESH,
              help="seconds between rewrites of the all-time BigQuery snapshot tables by "
                   f"the live job (default {DEFAULT_WAREHOUSE_REFRESH:.0f}; BigQuery allows "
                   "1,500 load jobs per table per day)")
        add_option(parser, "max_future", type=float, default=float(DEFAULT_MAX_FUTURE),
              help="seconds an event may be ahead of the wall clock; later ones are "
                   "dead-lettered (default %(default)s)")
        add_option(parser, "refresh", type=float, default=float(DEFAULT_REFRESH),
              help="rankings are rewritten in Redis at most every this many seconds, "
                   "when they changed (default %(default)s)")
        add_option(parser, "slice_seconds", type=int, default=DEFAULT_SLICE_SECONDS,
              help="event-time slice of the 1h/24h rankings; must divide 3600 "
                   "(default %(default)s)")
        add_option(parser, "shards", type=int, default=DEFAULT_SHARDS,
              help="keys the per-product engagement state is spread over (default %(default)s)")
        add_option(parser, "sessionize", choices=SESSIONIZE_MODES, default="auto",
              help="sessionize implementation: stateful (keyed state and event-time "
                   "timers: the live graph), buckets (bounded replay: whole sessions "
                   "grouped in buckets), auto = stateful with --streaming or a "
                   "subscription, else buckets (default %(default)s)")
        add_option(parser, "redis_retry_seconds", type=float, default=60.0,
              help="seconds to keep retrying an unreachable Redis before the run gives up "
                   "(a replay then exits non-zero; live, the newest rankings are kept for "
                   "the next write)")
        add_option(parser, "max_message_bytes", type=int, default=1_000_000,
              help="Pub/Sub messages larger than this are dead-lettered (and acked)")
