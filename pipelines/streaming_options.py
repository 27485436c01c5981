"""Typed options for the streaming pipeline (replay and live), shared by the CLI, the
Flex Template metadata and the graph builder."""
from __future__ import annotations

from apache_beam.options.pipeline_options import PipelineOptions

from transforms.sessionize import DEFAULT_DEDUP_TTL, DEFAULT_LOOKBACK, DEFAULT_VISIT_GAP


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
        add_option(parser, "redis_retry_seconds", type=float, default=60.0,
              help="seconds to keep retrying an unreachable Redis before the run gives up "
                   "(a replay then exits non-zero; live, the newest rankings are kept for "
                   "the next write)")
        add_option(parser, "max_message_bytes", type=int, default=1_000_000,
              help="Pub/Sub messages larger than this are dead-lettered (and acked)")
        add_option(parser, "staging", default=None,
              help="folder for staging files of the DuckDB sink (default: beside the warehouse)")
