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

from batch import churn_features as cf
from batch import sales
from batch.combiners import DailySalesFn, PickBookingFn, SessionTimesFn, TimeRangeFn, event_key
from batch.inputs import KINDS, find_inputs
from batch.steps import (
    CountFn,
    LocateProvincesFn,
    UnwrapBookingFn,
    as_of_date,
    before,
    customer_rows,
    dead_row,
    first_by_repr,
    run_info,
    session_rows,
    session_stat_as_of,
    to_table_row,
)
from models import churn
from pipelines.batch_options import ShopstreamBatchOptions
from pipelines.batch_staging import cleanup, join, read_run_info, write_table
from transforms import records
from transforms.sources import ReadSmallTable, ReadTableFiles
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

    parsed, dead = {}, []
    for kind in KINDS:
        label = _camel(kind)
        paths = inputs.get(kind) or []
        if paths:
            out = p | f"Read{label}" >> (
                ReadSmallTable(paths, kind) if kind in ("product", "customer")
                else ReadTableFiles(paths, kind, timestamped=False))
            parsed[kind] = out["records"] | f"CountValid{label}" >> beam.ParDo(
                CountFn(f"{kind}_valid"))
            dead.append(out["dead"] | f"CountDead{label}" >> beam.ParDo(
                CountFn(f"{kind}_dead_lettered")))
        else:
            parsed[kind] = p | f"No{label}" >> beam.Create([])

    # bookings: duplicates once, then as_of
    txns_all = (parsed["transactions"]
                | "KeyBookings" >> beam.Map(lambda t: (t.booking_id, t))
                | "DedupBookings" >> beam.CombinePerKey(PickBookingFn())
                | "UnwrapBookings" >> beam.ParDo(UnwrapBookingFn()))
    given = dt.date.fromisoformat(o.as_of) if o.as_of else None
    window = (txns_all
              | "BookingTimes" >> beam.Map(lambda t: t.created_at_us)
              | "BookingRange" >> beam.CombineGlobally(TimeRangeFn()))
    as_of_pc = window | "AsOf" >> beam.Map(
        lambda r, g: g if g is not None else (as_of_date(r[1]) if r else None), given)
    as_of = beam.pvalue.AsSingleton(as_of_pc)
    txns = txns_all | "UpToAsOf" >> beam.Filter(lambda t, a: before(t.created_at_us, a), as_of)

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

    # sales facts and daily sales
    facts = (txns
             | "SalesFacts" >> beam.FlatMap(
                 lambda t, cs, ps, pl: sales.fact_rows(t, cs.get(t.customer_id), ps, pl),
                 beam.pvalue.AsDict(customers), beam.pvalue.AsDict(products),
                 beam.pvalue.AsDict(places)))
    daily = (facts
             | "DailyKey" >> beam.Map(lambda f: (sales.daily_key(f), sales.daily_value(f)))
             | "DailySales" >> beam.CombinePerKey(DailySalesFn())
             | "DailyRows" >> beam.MapTuple(sales.daily_row))

    # churn: sessions (a combine per session over the click stream), bookings, customer
    stats = (parsed["click_stream"]
             | "ClickTimes" >> beam.Map(
                 lambda e: (e.session_id, (e.event_time_us, event_key(e.event_id),
                                           cf.event_kind(e.event_name))))
             | "SessionActivity" >> beam.CombinePerKey(SessionTimesFn())
             | "SessionStats" >> beam.Map(session_stat_as_of, as_of, o.visit_gap))
    owners = txns | "SessionOwners" >> beam.Map(lambda t: (t.session_id, t.customer_id))
    sessions = ({"stat": stats, "owner": owners}
                | "JoinSessionOwners" >> beam.CoGroupByKey()
                | "SessionsByCustomer" >> beam.FlatMap(session_rows))
    bookings = txns | "BookingsByCustomer" >> beam.Map(
        lambda t: (t.customer_id, cf.booking_of(t)))
    churn = ({"bookings": bookings, "sessions": sessions, "customer": customers}
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
            | f"Rows{label}" >> beam.Map(to_table_row, table)
            | f"Write{label}" >> beam.io.WriteToParquet(
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
