"""Orders counted once (SPEC §2 "Duplicates"): the same booking_id seen twice is one order.

:class:`DedupOrders` keeps the first copy of each booking_id and counts the others as
``duplicate_orders``. Streams: keyed state per booking_id in the global window, cleared
by an event-time timer ``dedup_ttl`` after the order's ``created_at`` (a redelivery later
than that is indistinguishable from a new order). Bounded input: GroupByKey and the
first copy by (created_at, content), so the result never depends on arrival order.
"""
from __future__ import annotations

from typing import Any, Optional

import apache_beam as beam
from apache_beam import coders
from apache_beam.metrics import Metrics
from apache_beam.transforms import window
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.typehints import KV
from apache_beam.utils.timestamp import Timestamp

from transforms.records import Transaction
from transforms.session_rules import DEFAULT_DEDUP_TTL, gap_us

METRICS_NAMESPACE = "shopstream.orders"


def first_copy(copies) -> Transaction:
    """The copy of one booking that wins on bounded input (order-independent)."""
    return min(copies, key=lambda t: (t.created_at_us, repr(tuple(t))))


def _key(txn) -> tuple:
    return txn.booking_id, txn


class _DedupStatefulFn(beam.DoFn):
    SEEN = ReadModifyWriteStateSpec("seen", coders.BooleanCoder())
    EXPIRE = TimerSpec("expire", TimeDomain.WATERMARK)

    def __init__(self, ttl_s: float):
        self.ttl_us = gap_us(ttl_s)
        self.duplicates = Metrics.counter(METRICS_NAMESPACE, "duplicate_orders")

    def process(self, element, seen=beam.DoFn.StateParam(SEEN),
                expire=beam.DoFn.TimerParam(EXPIRE)):
        _, txn = element
        if seen.read():
            self.duplicates.inc()
            return
        seen.write(True)
        expire.set(Timestamp(micros=-(-(txn.created_at_us + self.ttl_us + 1) // 1000) * 1000))
        yield window.TimestampedValue(txn, Timestamp(micros=txn.created_at_us))

    @on_timer(EXPIRE)
    def on_expire(self, seen=beam.DoFn.StateParam(SEEN)):
        seen.clear()


class _DedupGroupedFn(beam.DoFn):
    def __init__(self):
        self.duplicates = Metrics.counter(METRICS_NAMESPACE, "duplicate_orders")

    def process(self, element):
        _, copies = element
        copies = list(copies)
        if len(copies) > 1:
            self.duplicates.inc(len(copies) - 1)
        txn = first_copy(copies)
        yield window.TimestampedValue(txn, Timestamp(micros=txn.created_at_us))


class DedupOrders(beam.PTransform):
    """PCollection[Transaction] → PCollection[Transaction], one per booking_id.

    ``stateful``: True for streams (keyed state with a TTL), False for bounded input
    (grouped); None picks by ``is_bounded``. Labels: ``KeyByBooking``, then
    ``BookingState`` or ``GroupByBooking`` + ``FirstCopy``."""

    def __init__(self, dedup_ttl: float = DEFAULT_DEDUP_TTL, stateful: Optional[bool] = None,
                 label: Optional[str] = None):
        super().__init__(label)
        gap_us(dedup_ttl)
        self.dedup_ttl, self.stateful = dedup_ttl, stateful

    def expand(self, orders):
        stateful = (not orders.is_bounded) if self.stateful is None else self.stateful
        if not isinstance(orders.windowing.windowfn, window.GlobalWindows):
            orders = orders | "GlobalWindow" >> beam.WindowInto(window.GlobalWindows())
        keyed = orders | "KeyByBooking" >> beam.Map(_key).with_output_types(KV[str, Any])
        if stateful:
            out = keyed | "BookingState" >> beam.ParDo(_DedupStatefulFn(self.dedup_ttl))
        else:
            out = (keyed | "GroupByBooking" >> beam.GroupByKey()
                   | "FirstCopy" >> beam.ParDo(_DedupGroupedFn()))
        out.element_type = Transaction
        return out
