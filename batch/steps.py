"""DoFns and per-element functions of the daily batch job's graph
(``pipelines/batch_job.py``); the rules they apply live in ``batch.churn_features`` and
``batch.sales``."""
from __future__ import annotations

import datetime as dt
import logging
from typing import Any, Dict, Optional

import apache_beam as beam
import pyarrow as pa
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindows

from batch import churn_features as cf
from batch import compact, sales
from batch.combiners import SessionTimesFn
from batch.geo import ProvinceLocator
from transforms import records
from transforms.warehouse import arrow_schema

log = logging.getLogger(__name__)

#: Metrics namespace of the batch job's counters (read back for the run summary).
NAMESPACE = "shopstream_batch"


class CountFn(beam.DoFn):
    """Count elements into a named counter and pass them on."""

    def __init__(self, name: str):
        self.name = name
        self.counter = Metrics.counter(NAMESPACE, name)

    def process(self, element):
        self.counter.inc()
        yield element


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


#: Tagged outputs of :class:`SalesFactsFn`.
OWNERS, BOOKINGS = "owners", "bookings"


class SalesFactsFn(beam.DoFn):
    """A deduplicated booking (``compact.txn_tuple``) → nothing after as_of; else its
    ``sales_facts`` rows (:func:`batch.sales.fact_rows`), and tagged ``owners``
    (session_id, customer_id) and ``bookings`` (customer_id, Booking as a plain tuple).
    One step, not four: each booking is decoded and handled once."""

    def process(self, txn, as_of, customers, products, places):
        t = compact.txn_from(txn)
        if not before(t.created_at_us, as_of):
            return
        yield from sales.fact_rows(t, customers.get(t.customer_id), products, places)
        yield beam.pvalue.TaggedOutput(OWNERS, (t.session_id, t.customer_id))
        yield beam.pvalue.TaggedOutput(BOOKINGS, (t.customer_id, tuple(cf.booking_of(t))))


def as_of_date(us: Optional[int]) -> Optional[dt.date]:
    return None if us is None else cf.us_to_date(us)


def before(t_us: int, as_of: Optional[dt.date]) -> bool:
    return as_of is not None and t_us < cf.as_of_end_us(as_of)


def session_stat_as_of(kv, as_of, visit_gap_s: float):
    """(session, SessionTimes) → (session, SessionStat of the events up to as_of, or None)."""
    sid, st = kv
    if as_of is None:
        return sid, None
    end = cf.as_of_end_us(as_of)   # what before() tests, computed once per session
    keep = [i for i, t in enumerate(st.times) if t < end]
    return sid, cf.session_stat([st.times[i] for i in keep], visit_gap_s,
                                [st.kinds[i] for i in keep])


def owned_session_stat(kv, as_of, visit_gap_s: float, times_fn=SessionTimesFn()):
    """CoGroupByKey(times: partial SessionTimesFn accumulators, owner: customer ids) of
    one session → ((owner, SessionStat of its events up to as_of) or None, the number of
    repeated event ids). No row for a session without a booking (no customer is known)
    or without events; its repeats are counted all the same."""
    sid, grouped = kv
    partials = list(grouped["times"])
    if not partials:
        return None, 0
    acc = times_fn.merge_accumulators(partials)
    owner = cf.session_owner(grouped["owner"])
    if owner is None:
        return None, SessionTimesFn.duplicates(acc)
    st = times_fn.extract_output(acc)
    _sid, stat = session_stat_as_of((sid, st), as_of, visit_gap_s)
    return (None if stat is None else (owner, stat)), st.duplicates


class SessionActivityFn(beam.DoFn):
    """:func:`owned_session_stat` per session, counting repeated event ids as
    ``click_stream_duplicate`` (SPEC §2: a repeat is a duplicate in the run summary).
    Emits (owner, SessionStat as a plain tuple): it crosses the next shuffle."""

    def __init__(self, visit_gap_s: float):
        self.visit_gap_s = visit_gap_s
        self.duplicates = Metrics.counter(NAMESPACE, "click_stream_duplicate")

    def process(self, kv, as_of):
        row, repeats = owned_session_stat(kv, as_of, self.visit_gap_s)
        if repeats:
            self.duplicates.inc(repeats)
        if row is not None:
            yield row[0], tuple(row[1])


def customer_rows(kv, as_of):
    """CoGroupByKey(bookings, sessions, customer) of one customer → churn_features rows
    (bookings and sessions arrive as plain tuples)."""
    cid, grouped = kv
    if as_of is None:
        return
    customer = next(iter(grouped["customer"]), None)
    yield from cf.churn_rows(
        cid, [compact.booking_from(b) for b in grouped["bookings"]],
        [compact.session_stat_from(s) for s in grouped["sessions"]], as_of,
        customer.first_join_date if customer else None,
        customer.birthdate if customer else None)


class ArrowBatchesFn(beam.DoFn):
    """Row dicts → pyarrow Tables of ``table``'s schema, ``batch_rows`` rows each (the
    rest at the end of the bundle), for ``WriteToParquetBatched``: the columns are built
    by Arrow in C, not row by row in Python. Missing columns are NULL (Parquet needs
    every column), extra keys are left out."""

    def __init__(self, table: str, batch_rows: int = 20_000):
        self.table, self.batch_rows = table, batch_rows

    def setup(self):
        self.schema = arrow_schema(self.table)

    def start_bundle(self):
        self.rows = []

    def process(self, row):
        self.rows.append(row)
        if len(self.rows) >= self.batch_rows:
            yield self._table()

    def finish_bundle(self):
        if self.rows:
            yield GlobalWindows.windowed_value(self._table())

    def _table(self):
        rows, self.rows = self.rows, []
        return pa.Table.from_pylist(rows, schema=self.schema)


def dead_row(d: records.DeadLetter) -> Dict[str, Any]:
    return {"source": d.source, "raw": d.raw, "reason": d.reason,
            "seen_at": dt.datetime.fromisoformat(d.seen_at)}


def first_by_repr(values):
    return min(values, key=repr)


def run_info(time_range, as_of) -> str:
    """The data window of the run: as_of and the first booking date (JSON)."""
    import json

    first = as_of_date(time_range[0]) if time_range else None
    return json.dumps({"as_of": as_of.isoformat() if as_of else None,
                       "first_date": first.isoformat() if first else None})
