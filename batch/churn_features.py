"""Monthly churn features and labels per customer (SPEC §2 "Churn", §4 ``churn_features``).

Pure functions. Rows: each customer, every calendar month from the month of their first
successful purchase through the last complete month on or before ``as_of``. Every
feature of month M uses only data up to the end of M; the label looks at the 3 calendar
months after M and is NULL unless those lie wholly on or before ``as_of``.

Definitions (all times UTC; "end of M" = the first instant of month M+1, exclusive):

* recency_days — days (float) from the last successful purchase before the end of M to
  the end of M.
* frequency / monetary — successful bookings in M / the sum of their total_amount
  (once per booking, duplicates by booking_id counted once).
* session_count / avg_session_minutes — sessions ending in M (so no session contributes
  data from after M) / their mean active duration. A session is attributed to a customer
  through the transactions that name it (the click stream carries no customer id), so
  only sessions with a booking (successful or not) are known. A session's active
  duration is the sum of its gaps between consecutive events that are at most
  ``visit_gap`` seconds (the sum of the dwell of its events, SPEC §2) — a session that
  spans days does not count the days in between.
* tenure_days — days from first_join_date (or the first purchase, if the join date is
  unknown or later) to the end of M.
* extras: cumulative and 3-month frequency/monetary/sessions, failed bookings, active
  months, months since the first purchase, mean days between purchases, days since the
  last session, average order value, customer age.
* drivers beyond recency (the simulator's hazard mix, and what a retention team looks
  at): the share of bookings that used a promo (ever / last 3 months), failed payments
  over 3 months and their share of bookings, the mean shipment fee of the last 3
  months' bookings, month-over-month changes (this month minus the previous one) of
  sessions, spend and failed payments, 3-month vs the 3 months before for bookings and
  sessions, the purchase rate per month since the first purchase and the purchases that
  rate would have made during the current gap (recency × rate); carts left behind:
  sessions ending in M whose last add-to-cart came after their last booking
  (``abandoned_sessions``) and their share of the sessions of the last 3 months / of all
  sessions so far.
* the customer's own rhythm (a churned customer and a quiet living one differ mostly in
  how long the current gap is for *them*): the longest and the median gap between
  successful purchases so far and the current gap over each, sessions and purchases per
  month of the last 3 months over the customer's own rate since the first purchase, the
  days since the first purchase (T of buy-till-you-die models); failed payments of the
  month plus half of the month before's, and the promo share shrunk toward its prior
  (``PROMO_PRIOR``) so one booking does not read as 0 % or 100 %.
* churned — 1 if no successful purchase in months M+1..M+3, else 0; NULL where the last
  day of M+3 is after ``as_of``.
"""
from __future__ import annotations

import bisect
import datetime as dt
import statistics
from typing import Any, Dict, Iterable, List, NamedTuple, Optional, Tuple

from transforms.records import EPOCH_DATE
from transforms.session_rules import DEFAULT_VISIT_GAP

US_PER_DAY = 86_400 * 1_000_000
HORIZON_MONTHS = 3
#: Beta prior (promo, no promo) that shrinks the promo share of a short history toward 0.4.
PROMO_PRIOR = (0.8, 1.2)

#: Columns of a churn_features row that are not model features.
NON_FEATURES = ("customer_id", "month", "churned", "as_of")


class Booking(NamedTuple):
    created_at_us: int
    booking_id: str
    success: bool
    total_amount: int
    promo: bool = False          # a promo code or amount was applied
    shipment_fee: int = 0


class SessionStat(NamedTuple):
    start_us: int
    end_us: int
    active_seconds: float
    n_events: int
    n_add_to_cart: int = 0
    #: ADD_TO_CART events after the session's last BOOKING (all of them without one):
    #: carts left behind
    n_carts_after_last_booking: int = 0

    @property
    def abandoned_cart(self) -> bool:
        return self.n_carts_after_last_booking > 0


#: Event kinds a session statistic needs (``event_kind``); every other event is OTHER.
OTHER, ADD_TO_CART, BOOKING = 0, 1, 2
_KINDS = {"ADD_TO_CART": ADD_TO_CART, "BOOKING": BOOKING}


def event_kind(event_name: str) -> int:
    """The kind code of an event name (OTHER, ADD_TO_CART or BOOKING)."""
    return _KINDS.get(event_name, OTHER)


# --------------------------------------------------------------------------- months
def month_start(d: dt.date) -> dt.date:
    return dt.date(d.year, d.month, 1)


def add_months(d: dt.date, n: int) -> dt.date:
    """First day of the month ``n`` months after the month of ``d``."""
    m = d.year * 12 + d.month - 1 + n
    return dt.date(m // 12, m % 12 + 1, 1)


def month_last_day(d: dt.date) -> dt.date:
    return add_months(d, 1) - dt.timedelta(days=1)


def date_to_us(d: dt.date) -> int:
    return (d - EPOCH_DATE).days * US_PER_DAY


def us_to_date(us: int) -> dt.date:
    return EPOCH_DATE + dt.timedelta(days=us // US_PER_DAY)


def last_complete_month(as_of: dt.date) -> dt.date:
    """The latest month whose last day is on or before ``as_of`` (first day)."""
    m = month_start(as_of)
    return m if month_last_day(m) <= as_of else add_months(m, -1)


def label_observed(month: dt.date, as_of: dt.date, horizon: int = HORIZON_MONTHS) -> bool:
    """True when the ``horizon`` months after ``month`` lie wholly on or before as_of."""
    return month_last_day(add_months(month, horizon)) <= as_of


def as_of_end_us(as_of: dt.date) -> int:
    """Data up to the end of the as_of day counts (exclusive upper bound, µs)."""
    return date_to_us(as_of + dt.timedelta(days=1))


# --------------------------------------------------------------------------- sessions
def session_stat(times_us: Iterable[int], visit_gap_s: float = DEFAULT_VISIT_GAP,
                 kinds: Optional[Iterable[int]] = None) -> Optional[SessionStat]:
    """Start, end, active seconds and event count of one session's event times; with
    ``kinds`` (each event's :func:`event_kind`, in the order of ``times_us``) also its
    add-to-carts and those after its last booking. A cart at the same instant as the
    last booking counts as booked, so the result never depends on the order of ties."""
    if kinds is None:
        ts = sorted(times_us)
        carts: List[int] = []
        last_booking = None
    else:
        pairs = list(zip(times_us, kinds))
        ts = sorted(t for t, _ in pairs)
        carts = [t for t, k in pairs if k == ADD_TO_CART]
        last_booking = max((t for t, k in pairs if k == BOOKING), default=None)
    if not ts:
        return None
    gap_us = visit_gap_s * 1_000_000
    active = sum(b - a for a, b in zip(ts, ts[1:]) if b - a <= gap_us) / 1_000_000
    left = sum(1 for t in carts if last_booking is None or t > last_booking)
    return SessionStat(ts[0], ts[-1], float(active), len(ts), len(carts), left)


# --------------------------------------------------------------------------- rows
def _months_between(a: dt.date, b: dt.date) -> int:
    return (b.year - a.year) * 12 + b.month - a.month


def _age(birthdate: Optional[dt.date], day: dt.date) -> Optional[int]:
    if birthdate is None:
        return None
    y = day.year - birthdate.year - ((day.month, day.day) < (birthdate.month, birthdate.day))
    return y if 0 <= y <= 120 else None


def churn_rows(customer_id: int, bookings: Iterable[Booking], sessions: Iterable[SessionStat],
               as_of: dt.date, first_join_date: Optional[dt.date] = None,
               birthdate: Optional[dt.date] = None,
               horizon: int = HORIZON_MONTHS) -> List[Dict[str, Any]]:
    """The churn_features rows of one customer (see the module docstring)."""
    end_all = as_of_end_us(as_of)
    seen = set()
    succ: List[Tuple[int, int]] = []     # (time, total) of successful bookings, deduped
    failed: List[int] = []
    every: List[Booking] = []            # all deduped bookings, in time order
    for b in sorted(bookings):
        if b.created_at_us >= end_all or b.booking_id in seen:
            continue
        seen.add(b.booking_id)
        every.append(b)
        if b.success:
            succ.append((b.created_at_us, int(b.total_amount or 0)))
        else:
            failed.append(b.created_at_us)
    if not succ:
        return []
    first_month = month_start(us_to_date(succ[0][0]))
    last_month = last_complete_month(as_of)
    if first_month > last_month:
        return []
    succ_t = [t for t, _ in succ]
    # prefix sums of monetary for cumulative windows
    prefix = [0]
    for _, amount in succ:
        prefix.append(prefix[-1] + amount)
    sess = sorted((s for s in sessions if s.end_us < end_all), key=lambda s: s.end_us)
    sess_end = [s.end_us for s in sess]
    sess_prefix = [0.0]
    events_prefix = [0]
    abandon_prefix = [0]
    for s in sess:
        sess_prefix.append(sess_prefix[-1] + s.active_seconds)
        events_prefix.append(events_prefix[-1] + s.n_events)
        abandon_prefix.append(abandon_prefix[-1] + int(s.abandoned_cart))
    failed.sort()
    every_t = [b.created_at_us for b in every]
    promo_prefix, fee_prefix = [0], [0]
    for b in every:
        promo_prefix.append(promo_prefix[-1] + int(b.promo))
        fee_prefix.append(fee_prefix[-1] + b.shipment_fee)
    purchase_months = sorted({month_start(us_to_date(t)) for t in succ_t})
    # days between consecutive successful purchases; the running max of the first k
    gaps_d = [(b - a) / US_PER_DAY for a, b in zip(succ_t, succ_t[1:])]
    join = first_join_date
    first_purchase_date = us_to_date(succ_t[0])
    tenure_from = join if join is not None and join <= first_purchase_date else first_purchase_date

    def count_before(sorted_list, t):
        return bisect.bisect_left(sorted_list, t)

    rows = []
    m = first_month
    while m <= last_month:
        start_us = date_to_us(m)
        end_us = date_to_us(add_months(m, 1))
        start3_us = date_to_us(add_months(m, -2))
        i_end = count_before(succ_t, end_us)          # purchases before end of M
        i_start = count_before(succ_t, start_us)
        i_start3 = count_before(succ_t, start3_us)
        prev_us = date_to_us(add_months(m, -1))
        start6_us = date_to_us(add_months(m, -5))
        i_prev = count_before(succ_t, prev_us)
        i_start6 = count_before(succ_t, start6_us)
        k_end = count_before(every_t, end_us)
        k_start3 = count_before(every_t, start3_us)
        n_book_3m = k_end - k_start3
        last_t = succ_t[i_end - 1]                    # exists: m >= first purchase month
        j_end = count_before(sess_end, end_us)
        j_start = count_before(sess_end, start_us)
        j_start3 = count_before(sess_end, start3_us)
        j_prev = count_before(sess_end, prev_us)
        j_start6 = count_before(sess_end, start6_us)
        n_sess = j_end - j_start
        freq_total = i_end
        gaps = (succ_t[i_end - 1] - succ_t[0]) / US_PER_DAY / (i_end - 1) if i_end > 1 else None
        active_months = bisect.bisect_right(purchase_months, m)
        month_end_date = add_months(m, 1)
        recency = (end_us - last_t) / US_PER_DAY
        months_since_first = _months_between(first_month, m)
        rate = freq_total / (months_since_first + 1)
        failed_m = count_before(failed, end_us) - count_before(failed, start_us)
        failed_prev = count_before(failed, start_us) - count_before(failed, prev_us)
        len_failed_end = count_before(failed, end_us)
        failed_3m = len_failed_end - count_before(failed, start3_us)
        monetary_m = prefix[i_end] - prefix[i_start]
        own_gaps = gaps_d[:i_end - 1]
        max_gap = max(own_gaps) if own_gaps else None
        median_gap = statistics.median(own_gaps) if own_gaps else None
        n_months = months_since_first + 1
        row = {
            "customer_id": customer_id,
            "month": m,
            "recency_days": recency,
            "frequency": i_end - i_start,
            "monetary": monetary_m,
            "session_count": n_sess,
            "avg_session_minutes": ((sess_prefix[j_end] - sess_prefix[j_start]) / n_sess / 60.0
                                    if n_sess else None),
            "avg_session_events": ((events_prefix[j_end] - events_prefix[j_start]) / n_sess
                                   if n_sess else None),
            "avg_session_minutes_3m": ((sess_prefix[j_end] - sess_prefix[j_start3])
                                       / (j_end - j_start3) / 60.0 if j_end > j_start3 else None),
            "tenure_days": (month_end_date - tenure_from).days,
            "frequency_total": freq_total,
            "monetary_total": prefix[i_end],
            "frequency_3m": i_end - i_start3,
            "monetary_3m": prefix[i_end] - prefix[i_start3],
            "session_count_3m": j_end - j_start3,
            "failed_bookings": failed_m,
            "active_months": active_months,
            "months_since_first_purchase": months_since_first,
            "avg_interpurchase_days": gaps,
            "recency_ratio": ((end_us - last_t) / US_PER_DAY / gaps if gaps else None),
            "days_since_last_session": ((end_us - sess_end[j_end - 1]) / US_PER_DAY
                                        if j_end else None),
            "avg_order_value": prefix[i_end] / freq_total,
            "customer_age": _age(birthdate, month_last_day(m)),
            "promo_share": promo_prefix[k_end] / k_end if k_end else None,
            "promo_share_3m": ((promo_prefix[k_end] - promo_prefix[k_start3]) / n_book_3m
                               if n_book_3m else None),
            "failed_bookings_3m": failed_3m,
            "failed_share_3m": failed_3m / n_book_3m if n_book_3m else None,
            "avg_shipment_fee_3m": ((fee_prefix[k_end] - fee_prefix[k_start3]) / n_book_3m
                                    if n_book_3m else None),
            "session_count_mom": n_sess - (j_start - j_prev),
            "monetary_mom": monetary_m - (prefix[i_start] - prefix[i_prev]),
            "failed_bookings_mom": failed_m - failed_prev,
            "frequency_trend_3m": (i_end - i_start3) - (i_start3 - i_start6),
            "session_trend_3m": (j_end - j_start3) - (j_start3 - j_start6),
            "frequency_6m": i_end - i_start6,
            "frequency_12m": i_end - count_before(succ_t, date_to_us(add_months(m, -11))),
            "failed_share": len_failed_end / k_end if k_end else None,
            "avg_shipment_fee": fee_prefix[k_end] / k_end if k_end else None,
            "avg_session_events_all": events_prefix[j_end] / j_end if j_end else None,
            "avg_session_minutes_all": sess_prefix[j_end] / j_end / 60.0 if j_end else None,
            "abandoned_sessions": abandon_prefix[j_end] - abandon_prefix[j_start],
            "abandoned_share_3m": ((abandon_prefix[j_end] - abandon_prefix[j_start3])
                                   / (j_end - j_start3) if j_end > j_start3 else None),
            "abandoned_share": abandon_prefix[j_end] / j_end if j_end else None,
            "first_purchase_days": (end_us - succ_t[0]) / US_PER_DAY,
            "failed_bookings_recent": failed_m + 0.5 * failed_prev,
            "promo_share_shrunk": (promo_prefix[k_end] + PROMO_PRIOR[0]) / (k_end + sum(PROMO_PRIOR)),
            "max_interpurchase_days": max_gap,
            "median_interpurchase_days": median_gap,
            "recency_over_max_gap": recency / max_gap if max_gap else None,
            "recency_over_median_gap": recency / median_gap if median_gap else None,
            "session_rate": j_end / n_months,
            "session_rate_ratio_3m": ((j_end - j_start3) / min(3, n_months) / (j_end / n_months)
                                      if j_end else None),
            "purchase_rate_ratio_3m": (i_end - i_start3) / min(3, n_months) / rate,
            "purchase_rate": rate,
            "expected_missed_purchases": recency / 30.0 * rate,
            "churned": None,
            "as_of": as_of,
        }
        if label_observed(m, as_of, horizon):
            h_end = date_to_us(add_months(m, 1 + horizon))
            bought = count_before(succ_t, h_end) > i_end
            row["churned"] = 0 if bought else 1
        rows.append(row)
        m = add_months(m, 1)
    return rows


def feature_names(row_or_columns: Any) -> List[str]:
    """The model feature columns of a churn_features row (or column list)."""
    cols = list(row_or_columns.keys()) if isinstance(row_or_columns, dict) else list(row_or_columns)
    return [c for c in cols if c not in NON_FEATURES]


# --------------------------------------------------------------------------- helpers
def transaction_rank(txn) -> tuple:
    """Deterministic choice among records with the same booking_id: the earliest, then
    the smallest repr (the Beam job and :func:`churn_features_in_memory` agree)."""
    return (txn.created_at_us, repr(txn))


def booking_of(txn) -> Booking:
    return Booking(txn.created_at_us, txn.booking_id, txn.payment_status == "Success",
                   txn.total_amount, bool(txn.promo_code or (txn.promo_amount or 0) > 0),
                   int(txn.shipment_fee or 0))


def session_owner(customer_ids: Iterable[int]) -> Optional[int]:
    """A session named by bookings of several customers goes to the smallest id."""
    ids = list(customer_ids)
    return min(ids) if ids else None


def churn_features_in_memory(transactions: Iterable, click_events: Iterable = (),
                             customers: Iterable = (), as_of: Optional[dt.date] = None,
                             visit_gap_s: float = DEFAULT_VISIT_GAP) -> List[Dict[str, Any]]:
    """The whole churn_features table from in-memory records (tests, small data sets).

    Same semantics as the Beam job: bookings deduplicated by booking_id, as_of = date of
    the latest transaction unless given, records after as_of ignored."""
    chosen: Dict[str, Any] = {}
    for t in transactions:
        old = chosen.get(t.booking_id)
        if old is None or transaction_rank(t) < transaction_rank(old):
            chosen[t.booking_id] = t
    txns = list(chosen.values())
    if not txns:
        return []
    if as_of is None:
        as_of = us_to_date(max(t.created_at_us for t in txns))
    end = as_of_end_us(as_of)
    txns = [t for t in txns if t.created_at_us < end]
    owners: Dict[str, List[int]] = {}
    by_customer: Dict[int, List[Booking]] = {}
    for t in txns:
        owners.setdefault(t.session_id, []).append(t.customer_id)
        by_customer.setdefault(t.customer_id, []).append(booking_of(t))
    times: Dict[str, Dict[str, Tuple[int, int]]] = {}
    for e in click_events:
        if e.session_id in owners and e.event_time_us < end:
            evs = times.setdefault(e.session_id, {})
            seen = (e.event_time_us, event_kind(e.event_name))
            old = evs.get(e.event_id)
            if old is None or seen < old:          # a repeated id counts once, earliest
                evs[e.event_id] = seen
    sessions: Dict[int, List[SessionStat]] = {}
    for sid, evs in times.items():
        stat = session_stat([t for t, _ in evs.values()], visit_gap_s,
                            [k for _, k in evs.values()])
        sessions.setdefault(session_owner(owners[sid]), []).append(stat)
    info = {c.customer_id: c for c in customers}
    rows: List[Dict[str, Any]] = []
    for cid in sorted(by_customer):
        c = info.get(cid)
        rows.extend(churn_rows(cid, by_customer[cid], sessions.get(cid, ()), as_of,
                               getattr(c, "first_join_date", None), getattr(c, "birthdate", None)))
    return rows
