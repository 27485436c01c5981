"""``shopstream batch`` — the daily batch job (a Beam batch pipeline).

Reads the four Fashion Campus tables from a folder or ``gs://`` URL and writes, with the
semantics of SPEC §2/§4 (logic in ``batch/``, unit-tested without Beam):

* ``sales_facts``   one row per line of a successful booking (+ product, customer, map)
* ``daily_sales``   per date × category × sub-category × brand × payment method × province
* ``churn_features`` per customer and month, with the 3-month churn label
* ``churn_predictions`` for the unlabelled months, if a churn model exists (``--models``)
* ``dead_letter``   every record that failed validation, with the reason

The pipeline writes each table as Parquet files into a staging folder; when it has
finished, the driver loads them into the warehouse (DuckDB reads them directly, BigQuery
gets them through ``Warehouse.write``). ``--write-mode window`` (default) replaces the
rows of the run's data window — sales_facts/daily_sales dates from the first booking to
as_of, churn_features months from the first booking's month to the last complete one —
in one transaction on DuckDB, so a rerun for the same as-of replaces and never
duplicates, and groups that no longer exist disappear; churn_predictions are upserted
by key; dead_letter rows are appended. ``upsert`` and ``replace`` (whole tables) exist
too.

as_of is ``--as-of`` or the date of the latest valid transaction; records after the end
of that day are ignored, so a rerun with the same as-of gives the same rows.

The click stream (12.8 M rows at real size) is only reduced with a combine per session
(first/last event, active time), never held in memory.
"""
from __future__ import annotations

import argparse
from array import array
import datetime as dt
import hashlib
import logging
import os
import shutil
import sys
import tempfile
import time
import uuid
from typing import Any, Dict, List, Optional

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import (GoogleCloudOptions, PipelineOptions,
                                                  StandardOptions)

from batch import churn_features as cf
from batch import sales
from batch.geo import DEFAULT_CACHE, ProvinceLocator
from transforms import records
from transforms.sessionize import DEFAULT_VISIT_GAP
from transforms.warehouse import arrow_schema, column_names

log = logging.getLogger(__name__)

NAMESPACE = "shopstream_batch"
KINDS = ("transactions", "customer", "product", "click_stream")
OUTPUT_TABLES = ("sales_facts", "daily_sales", "churn_features", "churn_predictions",
                 "dead_letter")


# --------------------------------------------------------------------------- options
from pipelines.streaming_options import add_option  # noqa: E402

_both = add_option  # ``--as-of`` (CLI) and ``--as_of`` (Beam / Flex Template), declared once


def _date(text: str) -> str:
    try:
        return dt.date.fromisoformat(str(text)).isoformat()
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


class ShopstreamBatchOptions(PipelineOptions):
    """Every option of the daily batch job."""

    @classmethod
    def _add_argparse_args(cls, parser):
        _both(parser, "input", default=None,
              help="folder or gs:// URL holding transactions, customer, product and "
                   "click_stream (.csv or .jsonl, optionally .gz or sharded)")
        _both(parser, "warehouse", default=None,
              help="DuckDB file path or bq://PROJECT.DATASET")
        _both(parser, "as_of", default=None, type=_date,
              help="data date (YYYY-MM-DD); default: the date of the latest transaction. "
                   "Records after this day are ignored")
        _both(parser, "models", default=None,
              help="models folder (local or gs://); with a churn model in it "
                   "(churn/LATEST) the job also writes churn_predictions")
        _both(parser, "churn_model_version", default=None,
              help="score with this churn model version instead of LATEST")
        _both(parser, "geocode", action="store_true", default=False,
              help="look province centres up with geopy (rate limited, cached) when the "
                   "network allows; otherwise the offline gazetteer is used")
        _both(parser, "geocode_cache", default=DEFAULT_CACHE,
              help="JSON file caching geocoder answers")
        _both(parser, "staging", default=None,
              help="folder for the staged Parquet output (default: a temporary folder, or "
                   "TEMP_LOCATION/shopstream-batch on a remote runner)")
        _both(parser, "keep_staging", action="store_true", default=False,
              help="keep the staged Parquet files after loading them")
        _both(parser, "write_mode", default="window", choices=("window", "upsert", "replace"),
              help="window (default): replace the rows of the run's data window (dates "
                   "from the first booking to as-of); upsert: replace rows with the same "
                   "key; replace: replace whole tables. dead_letter is always appended")
        _both(parser, "visit_gap", type=float, default=float(DEFAULT_VISIT_GAP),
              help="seconds of inactivity that end a visit (session active time)")


# --------------------------------------------------------------------------- DoFns
class CountFn(beam.DoFn):
    """Count elements into a named counter and pass them on."""

    def __init__(self, name: str):
        self.name = name
        self.counter = Metrics.counter(NAMESPACE, name)

    def process(self, element):
        self.counter.inc()
        yield element


class PickBookingFn(beam.CombineFn):
    """The same booking_id seen twice is kept once (deterministic choice) + a count."""

    def create_accumulator(self):
        return (None, 0)

    def add_input(self, acc, txn):
        best, n = acc
        if best is None or cf.transaction_rank(txn) < cf.transaction_rank(best):
            best = txn
        return (best, n + 1)

    def merge_accumulators(self, accs):
        best, n = None, 0
        for b, k in accs:
            n += k
            if b is not None and (best is None or cf.transaction_rank(b) < cf.transaction_rank(best)):
                best = b
        return (best, n)

    def extract_output(self, acc):
        return acc


class UnwrapBookingFn(beam.DoFn):
    def __init__(self):
        self.duplicates = Metrics.counter(NAMESPACE, "transactions_duplicate")
        self.unique = Metrics.counter(NAMESPACE, "transactions_unique")

    def process(self, kv):
        txn, n = kv[1]
        if n > 1:
            self.duplicates.inc(n - 1)
        self.unique.inc()
        yield txn


class TimeRangeFn(beam.CombineFn):
    """(min, max) of created_at_us; None for no input."""

    def create_accumulator(self):
        return None

    def add_input(self, acc, t):
        return (t, t) if acc is None else (min(acc[0], t), max(acc[1], t))

    def merge_accumulators(self, accs):
        vals = [a for a in accs if a is not None]
        if not vals:
            return None
        return (min(v[0] for v in vals), max(v[1] for v in vals))

    def extract_output(self, acc):
        return acc


def event_key(event_id: str) -> int:
    """A signed 64-bit digest of an event id: duplicates are recognised with 8 bytes per
    event instead of the id string."""
    return int.from_bytes(hashlib.blake2b(event_id.encode(), digest_size=8).digest(), "big",
                          signed=True)


class SessionTimesFn(beam.CombineFn):
    """Per session: the sorted times of its distinct events (a redelivered event counts
    once, at its earliest time). Fed straight from the parser, so the click stream is
    never materialised; the accumulator is two flat int64 arrays (16 bytes per event)."""

    def create_accumulator(self):
        return (array("q"), array("q"))

    def add_input(self, acc, value):
        acc[0].append(value[0])
        acc[1].append(value[1])
        return acc

    def merge_accumulators(self, accs):
        times, keys = array("q"), array("q")
        for t, k in accs:
            times.extend(t)
            keys.extend(k)
        return (times, keys)

    def extract_output(self, acc):
        first: Dict[int, int] = {}
        for t, k in zip(*acc):
            old = first.get(k)
            if old is None or t < old:
                first[k] = t
        return tuple(sorted(first.values()))


def session_stat_as_of(kv, as_of, visit_gap_s: float):
    """(session, times) → (session, SessionStat of the events up to as_of, or None)."""
    sid, times = kv
    return sid, cf.session_stat([t for t in times if _before(t, as_of)], visit_gap_s)


class DailySalesFn(beam.CombineFn):
    def create_accumulator(self):
        return sales.daily_init()

    def add_input(self, acc, value):
        return sales.daily_add(acc, value)

    def merge_accumulators(self, accs):
        return sales.daily_merge(accs)

    def extract_output(self, acc):
        return acc


class LocateProvincesFn(beam.DoFn):
    """Raw home_location → ProvinceCentre (geopy when enabled and reachable)."""

    def __init__(self, geocode: bool, cache_path: Optional[str]):
        self.geocode, self.cache_path = geocode, cache_path

    def setup(self):
        self.locator = ProvinceLocator(geocode=self.geocode, cache_path=self.cache_path)
        self.unknown = Metrics.counter(NAMESPACE, "provinces_unknown")

    def process(self, name):
        place = self.locator.resolve(name)
        if place.source == "unknown":
            self.unknown.inc()
            log.warning("unknown province %r: no centre", name)
        yield name, place


class ScoreChurnFn(beam.DoFn):
    """Batches of unlabelled churn_features rows → churn_predictions rows."""

    def __init__(self, models_dir: str, version: str):
        self.models_dir, self.version = models_dir, version

    def setup(self):
        from models import churn

        self.churn = churn
        self.bundle, meta = churn.load(self.models_dir, self.version)
        self.scored_at = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)

    def process(self, rows):
        yield from self.churn.prediction_rows(self.bundle, self.version, rows, self.scored_at)


def session_rows(kv):
    """CoGroupByKey(stat, owner) of one session → (customer_id, SessionStat)."""
    _sid, grouped = kv
    stats = [s for s in grouped["stat"] if s is not None]
    owner = cf.session_owner(grouped["owner"])
    if stats and owner is not None:
        yield owner, stats[0]


def customer_rows(kv, as_of):
    """CoGroupByKey(bookings, sessions, customer) of one customer → churn_features rows."""
    cid, grouped = kv
    if as_of is None:
        return
    customer = next(iter(grouped["customer"]), None)
    yield from cf.churn_rows(
        cid, grouped["bookings"], grouped["sessions"], as_of,
        customer.first_join_date if customer else None,
        customer.birthdate if customer else None)


def to_table_row(row: Dict[str, Any], table: str) -> Dict[str, Any]:
    """Project a row on the table's columns (Parquet needs every column)."""
    return {c: row.get(c) for c in column_names(table)}


def dead_row(d: records.DeadLetter) -> Dict[str, Any]:
    return {"source": d.source, "raw": d.raw, "reason": d.reason,
            "seen_at": dt.datetime.fromisoformat(d.seen_at)}


def _first_by_repr(values):
    return min(values, key=repr)


def _as_of_date(us: Optional[int]) -> Optional[dt.date]:
    return None if us is None else cf.us_to_date(us)


def _before(t_us: int, as_of: Optional[dt.date]) -> bool:
    return as_of is not None and t_us < cf.as_of_end_us(as_of)


# --------------------------------------------------------------------------- inputs
def find_inputs(root: str) -> Dict[str, List[str]]:
    """The files of each table under ``root`` (see transforms.sources.find_table_files)."""
    from transforms.sources import find_table_files

    return {kind: find_table_files(root, kind) for kind in KINDS}


def check_header(path: str, kind: str) -> Optional[str]:
    """None if a CSV file can be read (the expected header, no header, or empty), else
    the reason (a header of other columns: see ``records.header_kind``)."""
    from transforms.sources import file_format, first_csv_record

    if file_format(path) != "csv":
        return None
    try:
        first = first_csv_record(path)
    except Exception as exc:  # noqa: BLE001
        return f"cannot read {path}: {exc}"
    if first is not None and records.header_kind(kind, first) == records.WRONG_HEADER:
        return records.wrong_header_reason(kind, path)
    return None


# --------------------------------------------------------------------------- graph
def build_pipeline(p: beam.Pipeline, opts: PipelineOptions, inputs: Optional[Dict] = None,
                   staging: Optional[str] = None, churn_version: Optional[str] = None
                   ) -> Dict[str, str]:
    """Build the batch graph on ``p``; returns table → staged Parquet glob.

    ``inputs`` maps each kind to its files (default: found under ``--input``);
    ``staging`` is the folder for the Parquet output; ``churn_version`` (a version under
    ``--models``) adds churn scoring."""
    from transforms.sources import ReadSmallTable, ReadTableFiles

    o = opts.view_as(ShopstreamBatchOptions)
    inputs = inputs if inputs is not None else find_inputs(o.input)
    staging = staging or o.staging
    if not staging:
        raise ValueError("build_pipeline needs a staging folder")
    if not inputs.get("transactions"):
        raise ValueError(f"no transactions files under {o.input}")

    parsed, dead = {}, []
    for kind in KINDS:
        label = "".join(w.capitalize() for w in kind.split("_"))
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
        lambda r, g: g if g is not None else (_as_of_date(r[1]) if r else None), given)
    as_of = beam.pvalue.AsSingleton(as_of_pc)
    txns = txns_all | "UpToAsOf" >> beam.Filter(lambda t, a: _before(t.created_at_us, a), as_of)

    # one record per id (a repeated id keeps the same record whatever the input order)
    customers = (parsed["customer"]
                 | "CustomerInfo" >> beam.Map(lambda c: (c.customer_id, sales.customer_info(c)))
                 | "DedupCustomers" >> beam.CombinePerKey(_first_by_repr))
    products = (parsed["product"]
                | "ProductInfo" >> beam.Map(lambda x: (x.id, sales.product_info(x)))
                | "DedupProducts" >> beam.CombinePerKey(_first_by_repr))
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
                 lambda e: (e.session_id, (e.event_time_us, event_key(e.event_id))))
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

    globs = {}
    for table, pc in outputs.items():
        label = "".join(w.capitalize() for w in table.split("_"))
        prefix = _join(staging, table, "part")
        (pc
         | f"Rows{label}" >> beam.Map(to_table_row, table)
         | f"Write{label}" >> beam.io.WriteToParquet(
             prefix, arrow_schema(table), file_name_suffix=".parquet"))
        globs[table] = prefix + "*.parquet"
    (window
     | "RunInfo" >> beam.Map(_run_info, as_of)
     | "WriteRunInfo" >> beam.io.WriteToText(_join(staging, "run"), shard_name_template="",
                                             file_name_suffix=".json"))
    return globs


def _run_info(time_range, as_of) -> str:
    """The data window of the run: as_of and the first booking date (JSON)."""
    import json

    first = _as_of_date(time_range[0]) if time_range else None
    return json.dumps({"as_of": as_of.isoformat() if as_of else None,
                       "first_date": first.isoformat() if first else None})


def _join(base: str, *parts: str) -> str:
    return FileSystems.join(base, *parts) if "://" in base else os.path.join(base, *parts)


# --------------------------------------------------------------------------- run
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


def _staging_for(opts: PipelineOptions) -> tuple:
    """(staging folder, created-here?)"""
    o = opts.view_as(ShopstreamBatchOptions)
    run_id = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
    if o.staging:
        return _join(o.staging, run_id), True
    runner = str(opts.view_as(StandardOptions).runner or "")
    temp = opts.view_as(GoogleCloudOptions).temp_location
    if "Direct" in runner or not runner or "FnApi" in runner:
        return tempfile.mkdtemp(prefix="shopstream-batch-"), True
    if not temp:
        raise ValueError("a remote runner needs --staging or --temp_location (gs://...)")
    return _join(temp, "shopstream-batch", run_id), True


def _cleanup(staging: str) -> None:
    try:
        if "://" in staging:
            FileSystems.delete([staging + "/"])
        else:
            shutil.rmtree(staging, ignore_errors=True)
    except Exception as exc:  # noqa: BLE001
        log.warning("could not delete staging folder %s: %s", staging, exc)


def _read_run_info(staging: str) -> Dict[str, Optional[str]]:
    import json

    try:
        with FileSystems.open(_join(staging, "run.json")) as fh:
            return json.loads(fh.read().decode().strip() or "{}")
    except Exception:  # noqa: BLE001
        return {}


#: --write-mode window: the column that places a row in the run's data window.
WINDOW_COLUMNS = {"sales_facts": "date", "daily_sales": "date", "churn_features": "month"}


def write_table(wh, table: str, pattern: str, mode: str, info: Dict[str, Optional[str]]) -> int:
    """Load one staged table. ``window`` replaces the rows of the run's data window
    (dates first booking..as_of; months first booking month..last complete month) — so
    groups that no longer exist (a fixed brand, a corrected booking) disappear too —
    and upserts tables without a window (churn_predictions)."""
    from transforms.table_io import load_parquet_glob, replace_window

    if table == "dead_letter":
        return load_parquet_glob(wh, table, pattern, "append")
    if mode != "window":
        return load_parquet_glob(wh, table, pattern, mode)
    column = WINDOW_COLUMNS.get(table)
    if column is None or not info.get("as_of") or not info.get("first_date"):
        return load_parquet_glob(wh, table, pattern, "upsert")
    as_of = dt.date.fromisoformat(info["as_of"])
    first = dt.date.fromisoformat(info["first_date"])
    if column == "month":
        lo, hi = cf.month_start(first), cf.last_complete_month(as_of)
    else:
        lo, hi = first, as_of
    if lo > hi:
        return load_parquet_glob(wh, table, pattern, "upsert")
    return replace_window(wh, table, pattern, column, lo, hi)


def run_pipeline(opts: PipelineOptions) -> Dict[str, Any]:
    """Run the job and load its output; returns the summary (also logged)."""
    from transforms.warehouse import open_warehouse

    began = time.perf_counter()
    o = opts.view_as(ShopstreamBatchOptions)
    if not o.input or not o.warehouse:
        raise ValueError("--input and --warehouse are required")
    std = opts.view_as(StandardOptions)
    if not std.runner:
        std.runner = "DirectRunner"   # never let Beam try Prism (it downloads, offline)

    inputs = find_inputs(o.input)
    header_dead = []
    for kind, paths in inputs.items():
        good = []
        for path in paths:
            reason = check_header(path, kind)
            if reason:
                log.error(reason)
                header_dead.append(records.dead_letter(f"batch:{kind}", path, reason))
            else:
                good.append(path)
        inputs[kind] = good
    if not inputs["transactions"]:
        raise ValueError(f"no readable transactions file under {o.input} "
                         f"(expected transactions.csv or transactions.jsonl)")
    for kind in KINDS[1:]:
        if not inputs[kind]:
            log.warning("no %s files under %s: the columns that need it stay NULL", kind, o.input)

    churn_version = None
    if o.models:
        from models import artifacts

        churn_version = o.churn_model_version or artifacts.latest_version(o.models, "churn")
        if not churn_version:
            log.warning("no churn model under %s (churn/LATEST): churn_predictions skipped; "
                        "run `shopstream train churn` first", o.models)

    staging, _ = _staging_for(opts)
    try:
        p = beam.Pipeline(options=opts)
        globs = build_pipeline(p, opts, inputs, staging, churn_version)
        result = p.run()
        result.wait_until_finish()
        counters = _counters(result)
        from transforms.run_summary import query_counters

        all_counters = query_counters(result)
        info = _read_run_info(staging)
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
            _cleanup(staging)
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
    is valid once (its repeats are duplicates); a file refused for its header counts as
    one record read and dead-lettered."""
    from transforms import run_summary as rs

    refused = {k: sum(1 for d in header_dead if d.source == f"batch:{k}") for k in KINDS}
    per_source = {}
    for kind in KINDS:
        get = lambda name, ns="shopstream": counters.get((ns, name), 0)  # noqa: E731
        valid = (get("transactions_unique", NAMESPACE) if kind == "transactions"
                 else get(f"{kind}_valid"))
        duplicate = (get("transactions_duplicate", NAMESPACE) if kind == "transactions"
                     else get(f"{kind}_duplicate"))
        per_source[kind] = rs.source_counts(
            get(f"{kind}_read") + refused[kind], valid, duplicate,
            get(f"{kind}_dead_lettered") + refused[kind])
    return rs.summary_dict(per_source)


def summary_line(s: Dict[str, Any]) -> str:
    from transforms.run_summary import summary_line as line

    w = s["written"]
    tables = " ".join(f"{t}={w[t]:,}" for t in OUTPUT_TABLES if t in w)
    skipped = "" if "churn_predictions" in w else " (churn_predictions skipped: no model)"
    return (line("batch", s, prefix=f"batch: as_of={s['as_of']}")
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


_OPTION_NAMES = ("input", "warehouse", "as_of", "models", "churn_model_version", "geocode",
                 "geocode_cache", "staging", "keep_staging", "write_mode", "visit_gap")


def options_from_args(args: argparse.Namespace) -> PipelineOptions:
    beam_args = list(getattr(args, "beam_args", None) or [])
    if not any(a == "--runner" or a.startswith("--runner=") for a in beam_args):
        beam_args.append("--runner=DirectRunner")
    values = {k: getattr(args, k) for k in _OPTION_NAMES if getattr(args, k, None) is not None}
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
