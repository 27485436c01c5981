"""Typed options for the streaming pipeline (replay and live), shared by the CLI, the
Flex Template metadata and the graph builder."""
from __future__ import annotations

from apache_beam.options.pipeline_options import PipelineOptions


def _both(parser, name: str, **kw):
    """Accept ``--visit-gap`` (CLI style) and ``--visit_gap`` (Beam / Flex Template style)."""
    flags = [f"--{name}"]
    if "_" in name:
        flags.append(f"--{name.replace('_', '-')}")
    parser.add_argument(*flags, dest=name, **kw)


class ShopstreamStreamingOptions(PipelineOptions):
    """Every option of the streaming pipeline; sources and sinks are chosen by these."""

    @classmethod
    def _add_argparse_args(cls, parser):
        _both(parser, "input", default=None,
              help="replay source: a local folder or gs:// URL holding click_stream "
                   "and transactions files (.csv or .jsonl), product.csv, customer.csv")
        _both(parser, "subscription", default=None,
              help="live source: projects/P/subscriptions/S carrying click events (JSON)")
        _both(parser, "orders_subscription", default=None,
              help="live source: projects/P/subscriptions/S carrying transactions (JSON)")
        _both(parser, "products", default=None,
              help="product table (CSV, local or gs://); default INPUT/product.csv")
        _both(parser, "warehouse", default=None,
              help="DuckDB file path or bq://PROJECT.DATASET")
        _both(parser, "redis", default=None,
              help="Redis URL (redis:// or rediss://); password may come from REDIS_PASSWORD")
        _both(parser, "weights", default=None, help="popularity weights JSON file")
        _both(parser, "models", default=None,
              help="models folder (local or gs://) holding popularity/LATEST")
        _both(parser, "visit_gap", type=float, default=1800.0,
              help="seconds of inactivity that end a visit")
        _both(parser, "lookback", type=int, default=3,
              help="events walked back from an ADD_TO_CART for product-id inference")
        _both(parser, "dedup_ttl", type=float, default=3600.0,
              help="event-time seconds an event id is remembered after its visit closes")
        _both(parser, "top_n", type=int, default=50,
              help="members kept per Redis ranking (at least 10)")
        _both(parser, "staging", default=None,
              help="folder for staging files of the DuckDB sink (default: beside the warehouse)")
