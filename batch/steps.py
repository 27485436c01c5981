"""DoFns and per-element functions of the daily batch job's graph
(``pipelines/batch_job.py``); the rules they apply live in ``batch.churn_features`` and
``batch.sales``."""
from __future__ import annotations

import datetime as dt
import logging
from typing import Any, Dict, Optional

import apache_beam as beam
from apache_beam.metrics import Metrics

from batch import churn_features as cf
from batch.geo import ProvinceLocator
from transforms import records
from transforms.warehouse import column_names

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


def as_of_date(us: Optional[int]) -> Optional[dt.date]:
    return None if us is None else cf.us_to_date(us)


def before(t_us: int, as_of: Optional[dt.date]) -> bool:
    return as_of is not None and t_us < cf.as_of_end_us(as_of)


def session_stat_as_of(kv, as_of, visit_gap_s: float):
    """(session, (times, kinds)) → (session, SessionStat of the events up to as_of, or
    None)."""
    sid, (times, kinds) = kv
    keep = [i for i, t in enumerate(times) if before(t, as_of)]
    return sid, cf.session_stat([times[i] for i in keep], visit_gap_s,
                                [kinds[i] for i in keep])


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


def first_by_repr(values):
    return min(values, key=repr)


def run_info(time_range, as_of) -> str:
    """The data window of the run: as_of and the first booking date (JSON)."""
    import json

    first = as_of_date(time_range[0]) if time_range else None
    return json.dumps({"as_of": as_of.isoformat() if as_of else None,
                       "first_date": first.isoformat() if first else None})
