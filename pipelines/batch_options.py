"""Options of the daily batch job: one class, from which the CLI parser, the Flex
Template metadata test and the graph read every setting."""
from __future__ import annotations

import argparse
import datetime as dt

from apache_beam.options.pipeline_options import PipelineOptions

from batch.geo import DEFAULT_CACHE
from pipelines.streaming_options import add_option
from transforms.session_rules import DEFAULT_VISIT_GAP

#: ``--write_mode`` values; the first is the default.
WRITE_MODES = ("window", "upsert", "replace")


def as_date(text: str) -> str:
    try:
        return dt.date.fromisoformat(str(text)).isoformat()
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


class ShopstreamBatchOptions(PipelineOptions):
    """Every option of the daily batch job (``--as-of`` and ``--as_of`` both work)."""

    @classmethod
    def _add_argparse_args(cls, parser):
        add_option(parser, "input", default=None,
                   help="folder or gs:// URL holding transactions, customer, product and "
                        "click_stream (.csv or .jsonl, optionally .gz or sharded)")
        add_option(parser, "warehouse", default=None,
                   help="DuckDB file path or bq://PROJECT.DATASET")
        add_option(parser, "as_of", default=None, type=as_date,
                   help="data date (YYYY-MM-DD); default: the date of the latest transaction. "
                        "Records after this day are ignored")
        add_option(parser, "models", default=None,
                   help="models folder (local or gs://); with a churn model in it "
                        "(churn/LATEST) the job also writes churn_predictions")
        add_option(parser, "churn_model_version", default=None,
                   help="score with this churn model version instead of LATEST")
        add_option(parser, "geocode", action="store_true", default=False,
                   help="look province centres up with geopy (rate limited, cached) when the "
                        "network allows; otherwise the offline gazetteer is used")
        add_option(parser, "geocode_cache", default=DEFAULT_CACHE,
                   help="JSON file caching geocoder answers")
        add_option(parser, "staging", default=None,
                   help="folder for the staged Parquet output (default: a temporary folder, or "
                        "TEMP_LOCATION/shopstream-batch on a remote runner)")
        add_option(parser, "keep_staging", action="store_true", default=False,
                   help="keep the staged Parquet files after loading them")
        add_option(parser, "write_mode", default=WRITE_MODES[0], choices=WRITE_MODES,
                   help="window (default): replace the rows of the run's data window (dates "
                        "from the first booking to as-of); upsert: replace rows with the same "
                        "key; replace: replace whole tables. dead_letter is always appended")
        add_option(parser, "visit_gap", type=float, default=float(DEFAULT_VISIT_GAP),
                   help="seconds of inactivity that end a visit (session active time)")
