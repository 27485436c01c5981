"""``shopstream batch`` — run the daily batch job (graph: ``pipelines/batch_job.py``)
and load its staged output into the warehouse.

``--write-mode window`` (default) replaces the rows of the run's data window —
sales_facts/daily_sales dates from the first booking to as_of, churn_features months
from the first booking's month to the last complete one — atomically, so a rerun for the
same as-of replaces and never duplicates, and groups that no longer exist disappear;
churn_predictions are upserted by key; dead_letter rows are appended. ``upsert`` and
``replace`` (whole tables) exist too.

as_of is ``--as-of`` or the date of the latest valid transaction; records after the end
of that day are ignored, so a rerun with the same as-of gives the same rows.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from typing import Any, Dict

import apache_beam as beam
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from batch.inputs import KINDS, usable_inputs
from batch.steps import NAMESPACE, dead_row
from models import artifacts
from pipelines import direct_runner_fix
from pipelines.batch_job import OUTPUT_TABLES, build_pipeline
from pipelines.batch_options import ShopstreamBatchOptions
from pipelines.batch_staging import cleanup, read_run_info, staging_for, write_table
from transforms import run_summary
from transforms.warehouse import open_warehouse

log = logging.getLogger(__name__)


def _counters(result) -> Dict[str, int]:
    out: Dict[str, int] = {}
    try:
        res = result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))
    except Exception:  # noqa: BLE001 - runners without metrics
        return out
    for c in res.get("counters", []):
        try:
            value = c.committed
        except Exception:  # noqa: BLE001
            value = None
        if value is None:
            value = c.attempted
        out[c.key.metric.name] = out.get(c.key.metric.name, 0) + int(value or 0)
    return out


def churn_version_for(o: ShopstreamBatchOptions):
    """The churn model version to score with, or None (no ``--models`` / no model)."""
    if not o.models:
        return None

    version = o.churn_model_version or artifacts.latest_version(o.models, "churn")
    if not version:
        log.warning("no churn model under %s (churn/LATEST): churn_predictions skipped; "
                    "run `shopstream train churn` first", o.models)
    return version


def run_pipeline(opts: PipelineOptions) -> Dict[str, Any]:
    """Run the job and load its output; returns the summary (also logged)."""
    began = time.perf_counter()
    o = opts.view_as(ShopstreamBatchOptions)
    if not o.input or not o.warehouse:
        raise ValueError("--input and --warehouse are required")
    std = opts.view_as(StandardOptions)
    if not std.runner:
        std.runner = "DirectRunner"   # never let Beam try Prism (it downloads, offline)
    if "Direct" in str(std.runner):
        direct_runner_fix.apply()     # DoFn specs once per class, not per bundle

    inputs, header_dead = usable_inputs(o.input)
    for d in header_dead:
        log.error(d.reason)
    if not inputs["transactions"]:
        raise ValueError(f"no readable transactions file under {o.input} "
                         f"(expected transactions.csv or transactions.jsonl)")
    for kind in KINDS[1:]:
        if not inputs[kind]:
            log.warning("no %s files under %s: the columns that need it stay NULL", kind, o.input)
    churn_version = churn_version_for(o)

    staging = staging_for(opts)
    try:
        p = beam.Pipeline(options=opts)
        globs = build_pipeline(p, opts, inputs, staging, churn_version)
        result = p.run()
        result.wait_until_finish()
        counters = _counters(result)
        all_counters = run_summary.query_counters(result)
        info = read_run_info(staging)
        as_of = info.get("as_of") or o.as_of

        written: Dict[str, int] = {}
        with open_warehouse(o.warehouse) as wh:
            for table, pattern in globs.items():
                written[table] = write_table(wh, table, pattern, o.write_mode, info)
            if header_dead:
                written["dead_letter"] = written.get("dead_letter", 0) + wh.write(
                    "dead_letter", [dead_row(d) for d in header_dead], "append")
    finally:
        if not o.keep_staging:
            cleanup(staging)
        else:
            log.info("staged output kept in %s", staging)

    summary = {"as_of": as_of, **batch_counts(all_counters, header_dead)}
    summary.update({
        "written": written,
        "churn_model_version": churn_version,
        "unknown_provinces": counters.get("provinces_unknown", 0),
        "seconds": round(time.perf_counter() - began, 1),
    })
    return summary


def batch_counts(counters: Dict[tuple, int], header_dead=()) -> Dict[str, Any]:
    """The run summary shape of ``transforms.run_summary`` for the batch job: a booking
    and a click event are valid once (their repeats are duplicates); a file refused for
    its header counts as one record read and dead-lettered."""
    refused = {k: sum(1 for d in header_dead if d.source == f"batch:{k}") for k in KINDS}
    per_source = {}
    for kind in KINDS:
        def get(name, ns="shopstream"):
            return counters.get((ns, name), 0)
        valid, duplicate = get(f"{kind}_valid"), get(f"{kind}_duplicate")
        if kind == "transactions":
            valid, duplicate = (get("transactions_unique", NAMESPACE),
                                get("transactions_duplicate", NAMESPACE))
        elif kind == "click_stream":  # repeats are found per session, after parsing
            duplicate = get("click_stream_duplicate", NAMESPACE)
            valid -= duplicate
        per_source[kind] = run_summary.source_counts(
            get(f"{kind}_read") + refused[kind], valid, duplicate,
            get(f"{kind}_dead_lettered") + refused[kind])
    return run_summary.summary_dict(per_source)


def summary_line(s: Dict[str, Any]) -> str:
    w = s["written"]
    tables = " ".join(f"{t}={w[t]:,}" for t in OUTPUT_TABLES if t in w)
    skipped = "" if "churn_predictions" in w else " (churn_predictions skipped: no model)"
    return (run_summary.summary_line("batch", s, prefix=f"batch: as_of={s['as_of']}")
            + f" | rows written: {tables}{skipped} in {s['seconds']} s")


# --------------------------------------------------------------------------- CLI
def register(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "batch", help="the daily batch job: sales facts, daily sales, churn",
        description="The daily batch job (a Beam batch pipeline): sales_facts, daily_sales, "
                    "churn_features, churn_predictions and dead_letter.",
        epilog="Other --flags are passed to Beam (e.g. --runner, --direct_num_workers, "
               "--project, --temp_location).")
    ShopstreamBatchOptions._add_argparse_args(parser)
    parser.set_defaults(func=run, accepts_beam_args=True)
    return parser


def _option_names():
    parser = argparse.ArgumentParser()
    ShopstreamBatchOptions._add_argparse_args(parser)
    return [a.dest for a in parser._actions if a.dest != "help"]


def options_from_args(args: argparse.Namespace) -> PipelineOptions:
    beam_args = list(getattr(args, "beam_args", None) or [])
    if not any(a == "--runner" or a.startswith("--runner=") for a in beam_args):
        beam_args.append("--runner=DirectRunner")
    values = {k: getattr(args, k) for k in _option_names() if getattr(args, k, None) is not None}
    return PipelineOptions(beam_args, **values)


def run(args: argparse.Namespace) -> int:
    if not args.input or not args.warehouse:
        print("shopstream batch: --input and --warehouse are required", file=sys.stderr)
        return 2
    try:
        summary = run_pipeline(options_from_args(args))
    except (ValueError, FileNotFoundError) as exc:
        print(f"shopstream batch: {exc}", file=sys.stderr)
        return 2
    print(summary_line(summary))
    return 0
