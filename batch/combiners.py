"""CombineFns of the daily batch job (thin shells over ``batch.churn_features`` and
``batch.sales``)."""
from __future__ import annotations

import hashlib
from array import array
from typing import Dict, Iterable, List, NamedTuple, Sequence

import apache_beam as beam

from batch import churn_features as cf
from batch import sales
from batch.compact import txn_from


def _earlier(a, b):
    """Of two bookings (``compact.txn_tuple`` forms, or None) the one
    ``churn_features.transaction_rank`` puts first; ``b`` on a tie."""
    if a is None or b is None:
        return b if a is None else a
    return a if cf.transaction_rank(txn_from(a)) < cf.transaction_rank(txn_from(b)) else b


class PickBookingFn(beam.CombineFn):
    """The same booking_id seen twice is kept once (deterministic choice) + a count.
    Inputs and the kept booking are ``compact.txn_tuple`` forms: they cross a shuffle."""

    def create_accumulator(self):
        return (None, 0)

    def add_input(self, acc, txn):
        best, n = acc
        return (_earlier(txn, best), n + 1)

    def merge_accumulators(self, accs):
        best, n = None, 0
        for b, k in accs:
            n += k
            best = _earlier(b, best)
        return (best, n)

    def extract_output(self, acc):
        return acc


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
    return event_keys((event_id,))[0]


def event_keys(event_ids: Iterable[str]) -> List[int]:
    """:func:`event_key` of each id (one loop, no call per id)."""
    blake2b, from_bytes = hashlib.blake2b, int.from_bytes
    return [from_bytes(blake2b(e.encode(), digest_size=8).digest(), "big", signed=True)
            for e in event_ids]


class SessionTimes(NamedTuple):
    times: tuple     # sorted times of the session's distinct events
    kinds: bytes     # their churn_features.event_kind codes, in the same order
    duplicates: int  # events whose event_id the session already had


class SessionTimesFn(beam.CombineFn):
    """Per session: the times and kinds (``churn_features.event_kind``) of its distinct
    events, in time order (a redelivered event counts once, at its earliest time), and
    how many repeats there were (:class:`SessionTimes`). Fed straight from the parser as
    (time, key, kind), so the click stream is never materialised; the accumulator is
    three flat arrays (17 bytes per event)."""

    def create_accumulator(self):
        return (array("q"), array("q"), array("b"))

    def add_input(self, acc, value):
        acc[0].append(value[0])
        acc[1].append(value[1])
        acc[2].append(value[2])
        return acc

    @staticmethod
    def add_inputs(acc, times: Sequence[int], keys: Sequence[int], kinds: Sequence[int]):
        """add_input of each ``(times[i], keys[i], kinds[i])``, in one call."""
        acc[0].extend(times)
        acc[1].extend(keys)
        acc[2].extend(kinds)
        return acc

    @staticmethod
    def compact(acc) -> tuple:
        """The accumulator as three byte strings, the form that crosses a shuffle (the
        runner writes bytes as they are, but pickles arrays); merge_accumulators takes
        either form."""
        return (acc[0].tobytes(), acc[1].tobytes(), acc[2].tobytes())

    def merge_accumulators(self, accs):
        times, keys, kinds = array("q"), array("q"), array("b")
        for t, k, c in accs:
            if type(t) is bytes:
                times.frombytes(t)
                keys.frombytes(k)
                kinds.frombytes(c)
            else:
                times.extend(t)
                keys.extend(k)
                kinds.extend(c)
        return (times, keys, kinds)

    @staticmethod
    def duplicates(acc) -> int:
        """How many of the accumulated events repeat an event id (extract_output's count,
        without sorting the times)."""
        return len(acc[1]) - len(set(acc[1]))

    def extract_output(self, acc):
        first: Dict[int, tuple] = {}
        for t, k, c in zip(*acc):
            old = first.get(k)
            if old is None or (t, c) < old:
                first[k] = (t, c)
        events = sorted(first.values())
        return SessionTimes(tuple(t for t, _ in events), bytes(c for _, c in events),
                            len(acc[0]) - len(first))


class DailySalesFn(beam.CombineFn):
    def create_accumulator(self):
        return sales.daily_init()

    def add_input(self, acc, value):
        return sales.daily_add(acc, value)

    def merge_accumulators(self, accs):
        return sales.daily_merge(accs)

    def extract_output(self, acc):
        return acc
