"""Plain-tuple forms of the records that cross the batch job's shuffles.

The runner encodes ints, strings, floats, bytes and plain tuples natively, but pickles
NamedTuples (and arrays) one by one; a booking crosses two shuffles, so the job sends
these forms and the steps on either side rebuild the named record."""
from __future__ import annotations

from batch import churn_features as cf
from transforms.records import BookingLine, Transaction

#: Where created_at_us and the lines sit in a :func:`txn_tuple` (as in Transaction).
CREATED_AT = Transaction._fields.index("created_at_us")
LINES = Transaction._fields.index("lines")


def txn_tuple(t: Transaction) -> tuple:
    """A Transaction as plain tuples (its lines too)."""
    return (*t[:LINES], tuple(tuple(line) for line in t.lines), *t[LINES + 1:])


def txn_from(x: tuple) -> Transaction:
    """The Transaction of :func:`txn_tuple`."""
    return Transaction(*x[:LINES], tuple(BookingLine._make(line) for line in x[LINES]),
                       *x[LINES + 1:])


def txn_created_at_us(x: tuple) -> int:
    """created_at_us of a :func:`txn_tuple`, without rebuilding the Transaction."""
    return x[CREATED_AT]


def booking_from(x: tuple) -> cf.Booking:
    return cf.Booking._make(x)


def session_stat_from(x: tuple) -> cf.SessionStat:
    return cf.SessionStat._make(x)
