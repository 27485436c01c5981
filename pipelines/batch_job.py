"""The daily batch job's Beam graph (SPEC §2/§4; the rules live in ``batch/``).

Reads the four Fashion Campus tables and writes each output table as Parquet files into
a staging folder:

* ``sales_facts``   one row per line of a successful booking (+ product, customer, map)
* ``daily_sales``   per date × category × sub-category × brand × payment method × province
* ``churn_features`` per customer and month, with the 3-month churn label
* ``churn_predictions`` for the unlabelled months, if a churn model exists (``--models``)
* ``dead_letter``   every record that failed validation, with the reason

The CLI driver (``pipelines/batch.py``) loads the staged tables after the job; a Flex
Template launch cannot wait, so there :class:`LoadStagedTables` loads them inside the
job once every staged file is final. The click stream (12.8 M rows at real size) is only
reduced with a combine per session, never held in memory.
"""
from __future__ import annotations

import datetime as dt
import logging
from typing import Dict, NamedTuple, Optional, Sequence

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from batch import compact, sales
from batch.click_sessions import ReadClickTimes
from batch.combiners import DailySalesFn, PickBookingFn, TimeRangeFn
from batch.inputs import KINDS, find_inputs
from batch.steps import (
    BOOKINGS,
    OWNERS,
    ArrowBatchesFn,
    CountFn,
    LocateProvincesFn,
    SalesFactsFn,
    SessionActivityFn,
    UnwrapBookingFn,
    as_of_date,
    customer_rows,
    dead_row,
    first_by_repr,
    run_info,
)
from models import churn
from pipelines.batch_options import ShopstreamBatchOptions
from pipelines.batch_staging import cleanup, join, read_run_info, write_table
from transforms import records
from transforms.sources import ReadSmallTable, ReadTableChunks
from transforms.warehouse import arrow_schema, open_warehouse

log = logging.getLogger(__name__)

OUTPUT_TABLES = ("sales_facts", "daily_sales", "churn_features", "churn_predictions",
                 "dead_letter")


class ScoreChurnFn(beam.DoFn):
    """Batches of unlabelled churn_features rows → churn_predictions rows."""

    def __init__(self, models_dir: str, version: str):
        self.models_dir, self.version = models_dir, version

    def setup(self):
        self.churn = churn
        self.bundle, meta = churn.load(self.models_dir, self.version)
        self.scored_at = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)

    def process(self, rows):
        yield from self.churn.prediction_rows(self.bundle, self.version, rows, self.scored_at)


class InJobLoad(NamedTuple):
    """Load the staged tables inside the job (Flex Template launches)."""
    warehouse: str
    write_mode: str
    keep_staging: bool
    header_dead: Sequence[dict] = ()


def _camel(name: str) -> str:
    return "".join(w.capitalize() for w in name.split("_"))


def build_pipeline(p: beam.Pipeline, opts: PipelineOptions, inputs: Optional[Dict] = None,
                   staging: Optional[str] = None, churn_version: Optional[str] = None,
                   load: Optional[InJobLoad] = None) -> Dict[str, str]:
    """Build the batch graph on ``p``; returns table → staged Parquet glob.

    ``inputs`` maps each kind to its files (default: found under ``--input``);
    ``staging`` is the folder for the Parquet output; ``churn_version`` (a version under
    ``--models``) adds churn scoring; ``load`` adds the in-job warehouse load."""
    o = opts.view_as(ShopstreamBatchOptions)
    inputs = inputs if inputs is not None else find_inputs(o.input)
    staging = staging or o.staging
    if not staging:
        raise ValueError("build_pipeline needs a staging folder")
    if not inputs.get("transactions"):
        raise ValueError(f"no transactions files under {o.input}")

    # Files are read in byte ranges, one DoFn call per range (the bounded replay's
    # reader); the click stream leaves its reader already reduced to one partial
    # session accumulator per session and range (batch/click_sessions.py).
    parsed, dead = {}, []
    for kind in KINDS:
        label = _camel(kind)
        paths = inputs.get(kind) or []
        if paths:
            if kind in ("product", "customer"):
                reader = ReadSmallTable(paths, kind)
            elif kind == "click_stream":
                reader = ReadClickTimes(paths)
            else:
                reader = ReadTableChunks(paths, kind, timestamped=False)
            out = p | f"Read{label}" >> reader
            parsed[kind] = (out["records"] if kind == "click_stream" else
                            out["records"] | f"CountValid{label}" >> beam.ParDo(
                                CountFn(f"{kind}_valid")))
            dead.append(out["dead"] | f"CountDead{label}" >> beam.ParDo(
                CountFn(f"{kind}_dead_lettered")))
        else:
            parsed[kind] = p | f"No{label}" >> beam.Create([])

    # bookings: duplicates once, then as_of. Bookings travel as plain tuples
    # (batch/compact.py): the runner pickles NamedTuples one by one.
    txns_all = (parsed["transactions"]
                | "KeyBookings" >> beam.Map(lambda t: (t.booking_id, compact.txn_tuple(t)))
                | "DedupBookings" >> beam.CombinePerKey(PickBookingFn())
                | "UnwrapBookings" >> beam.ParDo(UnwrapBookingFn()))
    given = dt.date.fromisoformat(o.as_of) if o.as_of else None
    window = (txns_all
              | "BookingTimes" >> beam.Map(compact.txn_created_at_us)
              | "BookingRange" >> beam.CombineGlobally(TimeRangeFn()))
    as_of_pc = window | "AsOf" >> beam.Map(
        lambda r, g: g if g is not None else (as_of_date(r[1]) if r else None), given)
    as_of = beam.pvalue.AsSingleton(as_of_pc)

    # one record per id (a repeated id keeps the same record whatever the input order)
    customers = (parsed["customer"]
                 | "CustomerInfo" >> beam.Map(lambda c: (c.customer_id, sales.customer_info(c)))
                 | "DedupCustomers" >> beam.CombinePerKey(first_by_repr))
    products = (parsed["product"]
                | "ProductInfo" >> beam.Map(lambda x: (x.id, sales.product_info(x)))
                | "DedupProducts" >> beam.CombinePerKey(first_by_repr))
    places = (customers
              | "HomeLocations" >> beam.Map(lambda kv: kv[1].home_location or "")
              | "DistinctLocations" >> beam.Distinct()
              | "LocateProvinces" >> beam.ParDo(LocateProvincesFn(o.geocode, o.geocode_cache)))

    # sales facts (bookings up to as_of) and, from the same step, each booking's session
    # owner and churn booking; then daily sales
    booked = txns_all | "SalesFacts" >> beam.ParDo(
        SalesFactsFn(), as_of, beam.pvalue.AsDict(customers), beam.pvalue.AsDict(products),
        beam.pvalue.AsDict(places)).with_outputs(OWNERS, BOOKINGS, main="facts")
    facts = booked.facts
    daily = (facts
             | "DailyKey" >> beam.Map(lambda f: (sales.daily_key(f), sales.daily_value(f)))
             | "DailySales" >> beam.CombinePerKey(DailySalesFn())
             | "DailyRows" >> beam.MapTuple(sales.daily_row))

    # churn: sessions, bookings, customer. The click stream arrives as partial
    # SessionTimesFn accumulators (ClickTimes, in the reader); one shuffle per session
    # joins them with the session's owners and merges them into a SessionStat.
    sessions = ({"times": parsed["click_stream"], "owner": booked[OWNERS]}
                | "JoinSessionOwners" >> beam.CoGroupByKey()
                | "SessionActivity" >> beam.ParDo(SessionActivityFn(o.visit_gap), as_of))
    churn = ({"bookings": booked[BOOKINGS], "sessions": sessions, "customer": customers}
             | "GroupByCustomer" >> beam.CoGroupByKey()
             | "ChurnRows" >> beam.FlatMap(customer_rows, as_of))

    outputs = {"sales_facts": facts, "daily_sales": daily, "churn_features": churn}
    if churn_version:
        outputs["churn_predictions"] = (
            churn
            | "Unlabelled" >> beam.Filter(lambda r: r["churned"] is None)
            | "BatchForScoring" >> beam.BatchElements(min_batch_size=500, max_batch_size=5000)
            | "ScoreChurn" >> beam.ParDo(ScoreChurnFn(o.models, churn_version)))
    outputs["dead_letter"] = (dead | "FlattenDead" >> beam.Flatten()
                              | "DeadRows" >> beam.Map(dead_row))

    globs, written = {}, {}
    for table, pc in outputs.items():
        label = _camel(table)
        prefix = join(staging, table, "part")
        written[f"Write{label}"] = (
            pc
            | f"Rows{label}" >> beam.ParDo(ArrowBatchesFn(table))
            | f"Write{label}" >> beam.io.WriteToParquetBatched(
                prefix, arrow_schema(table), file_name_suffix=".parquet"))
        globs[table] = prefix + "*.parquet"
    written["WriteRunInfo"] = (
        window
        | "RunInfo" >> beam.Map(run_info, as_of)
        | "WriteRunInfo" >> beam.io.WriteToText(join(staging, "run"), shard_name_template="",
                                                file_name_suffix=".json"))
    if load is not None:
        written | "LoadStaged" >> LoadStagedTables(globs, staging, load)
    return globs


def load_staged_tables(_, warehouse: str, globs: Dict[str, str], write_mode: str,
                       staging: str, keep_staging: bool, header_dead: Sequence[dict],
                       *written_files) -> Dict[str, int]:
    """Load every staged table into the warehouse, as the CLI driver does after its job,
    then remove the staging folder. Runs once, on a worker, after all staged files are
    final (``written_files`` are side inputs that make it wait)."""
    info = read_run_info(staging)
    written: Dict[str, int] = {}
    with open_warehouse(warehouse) as wh:
        for table, pattern in globs.items():
            written[table] = write_table(wh, table, pattern, write_mode, info)
        if header_dead:
            written["dead_letter"] = written.get("dead_letter", 0) + wh.write(
                "dead_letter", list(header_dead), "append")
    if not keep_staging:
        cleanup(staging)
    log.info("batch: as_of=%s rows written: %s", info.get("as_of"),
             " ".join(f"{t}={n}" for t, n in written.items()))
    return written


class LoadStagedTables(beam.PTransform):
    """One step that waits for every staged file write (a dict label → the write's
    output), loads the tables into the warehouse and removes the staging folder."""

    def __init__(self, globs: Dict[str, str], staging: str, load: InJobLoad):
        super().__init__()
        self.globs, self.staging, self.load = dict(globs), staging, load

    def expand(self, written):
        p = next(iter(written.values())).pipeline
        waits = [beam.pvalue.AsSingleton(pc | f"Done{label}" >> beam.combiners.Count.Globally())
                 for label, pc in written.items()]
        header_dead = [dead_row(d) if isinstance(d, records.DeadLetter) else d
                       for d in self.load.header_dead]
        return (p | "StartLoad" >> beam.Create([None])
                | "LoadWarehouse" >> beam.Map(
                    load_staged_tables, self.load.warehouse, self.globs, self.load.write_mode,
                    self.staging, self.load.keep_staging, header_dead, *waits))
