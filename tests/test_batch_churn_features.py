"""Monthly churn features and labels: pure functions (no Beam)."""
from __future__ import annotations

import datetime as dt

import pytest

from batch import churn_features as cf
from transforms.records import BookingLine, ClickEvent, Transaction, parse_time_us

D = dt.date


def us(text: str) -> int:
    return parse_time_us(text, "t")


def bk(when: str, booking: str, success=True, total=100) -> cf.Booking:
    return cf.Booking(us(when), booking, success, total)


def sess(start: str, end: str, active=60.0, n=3) -> cf.SessionStat:
    return cf.SessionStat(us(start), us(end), active, n)


@pytest.mark.parametrize("as_of, expect", [
    (D(2021, 7, 10), D(2021, 6, 1)), (D(2021, 6, 30), D(2021, 6, 1)),
    (D(2021, 7, 1), D(2021, 6, 1)), (D(2021, 1, 31), D(2021, 1, 1)),
    (D(2021, 1, 15), D(2020, 12, 1)),
])
def test_last_complete_month(as_of, expect):
    assert cf.last_complete_month(as_of) == expect


def test_label_observed_needs_three_whole_months_on_or_before_as_of():
    assert cf.label_observed(D(2021, 3, 1), D(2021, 6, 30))
    assert not cf.label_observed(D(2021, 3, 1), D(2021, 6, 29))
    assert cf.add_months(D(2021, 11, 1), 3) == D(2022, 2, 1)
    assert cf.month_last_day(D(2024, 2, 1)) == D(2024, 2, 29)


def test_session_stat_counts_active_time_within_visits_only():
    t0 = us("2021-01-01T00:00:00Z")
    times = [t0, t0 + 60_000_000, t0 + 120_000_000,            # 2 min active
             t0 + 120_000_000 + 3 * 3600_000_000,              # a 3 h pause: new visit
             t0 + 120_000_000 + 3 * 3600_000_000 + 30_000_000]  # +30 s
    s = cf.session_stat(reversed(times), visit_gap_s=1800)
    assert s == cf.SessionStat(times[0], times[-1], 150.0, 5)
    assert cf.session_stat([]) is None


def test_session_stat_counts_carts_left_after_the_last_booking():
    t0 = us("2021-01-01T00:00:00Z")
    A, B, N = cf.ADD_TO_CART, cf.BOOKING, cf.OTHER
    assert [cf.event_kind(n) for n in ("ADD_TO_CART", "BOOKING", "CLICK")] == [A, B, N]
    s = 1_000_000
    # cart, booking, cart, cart: two carts left behind (whatever order the events come in)
    times, kinds = [t0, t0 + s, t0 + 2 * s, t0 + 3 * s, t0 + 4 * s], [N, A, B, A, A]
    stat = cf.session_stat(reversed(times), 1800, reversed(kinds))
    assert (stat.n_events, stat.n_add_to_cart, stat.n_carts_after_last_booking) == (5, 3, 2)
    assert stat.abandoned_cart
    booked = cf.session_stat(times[:3], 1800, kinds[:3])
    assert booked.n_carts_after_last_booking == 0 and not booked.abandoned_cart
    # no booking at all: every cart is left; a cart at the booking's instant counts as booked
    assert cf.session_stat([t0, t0 + s], 1800, [A, A]).n_carts_after_last_booking == 2
    assert cf.session_stat([t0, t0], 1800, [B, A]).n_carts_after_last_booking == 0
    # without kinds (older callers): no cart counts
    assert cf.session_stat(times).n_add_to_cart == 0


def test_abandoned_cart_features_of_a_month():
    b = [bk("2021-01-05T00:00:00Z", "a"), bk("2021-02-10T00:00:00Z", "b")]
    s = [sess("2021-01-05T00:00:00Z", "2021-01-05T00:10:00Z")._replace(n_carts_after_last_booking=1),
         sess("2021-01-20T00:00:00Z", "2021-01-20T00:10:00Z"),
         sess("2021-02-10T00:00:00Z", "2021-02-10T00:10:00Z")._replace(n_carts_after_last_booking=2),
         sess("2021-02-11T00:00:00Z", "2021-02-11T00:10:00Z")]
    jan, feb, mar, apr, may = cf.churn_rows(1, b, s, D(2021, 12, 31))[:5]
    assert jan["abandoned_sessions"] == 1 and jan["abandoned_share_3m"] == 0.5
    assert feb["abandoned_sessions"] == 1 and feb["abandoned_share"] == 0.5
    assert mar["abandoned_sessions"] == 0 and mar["abandoned_share_3m"] == 0.5
    assert apr["abandoned_share_3m"] == 0.5 and may["abandoned_share_3m"] is None
    assert may["abandoned_share"] == 0.5


def test_rows_run_from_the_first_purchase_month_to_the_last_complete_month():
    rows = cf.churn_rows(1, [bk("2021-02-10T00:00:00Z", "a"), bk("2021-01-20T00:00:00Z", "x", False)],
                         [], D(2021, 7, 10))
    assert [r["month"] for r in rows] == [D(2021, m, 1) for m in range(2, 7)]
    assert cf.churn_rows(2, [bk("2021-07-02T00:00:00Z", "b")], [], D(2021, 7, 10)) == []
    assert cf.churn_rows(3, [bk("2021-01-02T00:00:00Z", "c", False)], [], D(2021, 7, 10)) == []


def test_features_of_a_month():
    bookings = [bk("2021-01-05T00:00:00Z", "a", total=100),
                bk("2021-01-25T12:00:00Z", "b", total=50),
                bk("2021-01-25T12:00:00Z", "b", total=50),          # same booking twice
                bk("2021-01-28T00:00:00Z", "f", success=False, total=999),
                bk("2021-03-10T00:00:00Z", "c", total=70)]
    sessions = [sess("2021-01-05T00:00:00Z", "2021-01-05T00:10:00Z", active=600),
                sess("2021-01-25T11:00:00Z", "2021-01-25T12:00:00Z", active=1200),
                sess("2021-01-31T23:50:00Z", "2021-02-01T00:10:00Z", active=1200)]  # ends in Feb
    rows = {r["month"]: r for r in cf.churn_rows(7, bookings, sessions, D(2021, 12, 31),
                                                  first_join_date=D(2020, 12, 1),
                                                  birthdate=D(2000, 1, 31))}
    jan, feb, mar = rows[D(2021, 1, 1)], rows[D(2021, 2, 1)], rows[D(2021, 3, 1)]
    assert jan["frequency"] == 2 and jan["monetary"] == 150      # once per booking, no failed
    assert jan["failed_bookings"] == 1
    assert jan["recency_days"] == pytest.approx(6.5)             # Jan 25 12:00 → Feb 1
    assert jan["session_count"] == 2 and jan["avg_session_minutes"] == pytest.approx(15.0)
    assert jan["tenure_days"] == 62 and jan["customer_age"] == 21
    assert jan["avg_interpurchase_days"] == pytest.approx(20.5)
    assert feb["frequency"] == 0 and feb["monetary"] == 0 and feb["session_count"] == 1
    assert feb["recency_days"] == pytest.approx(34.5) and feb["frequency_total"] == 2
    assert feb["frequency_3m"] == 2 and feb["monetary_total"] == 150
    assert mar["frequency_3m"] == 3 and mar["monetary_3m"] == 220 and mar["active_months"] == 2
    assert mar["frequency"] == 1 and mar["monetary"] == 70
    assert mar["session_count"] == 0 and mar["avg_session_minutes"] is None
    assert mar["months_since_first_purchase"] == 2


def test_labels_and_null_where_the_horizon_is_not_observed():
    bookings = [bk("2021-01-10T00:00:00Z", "a"), bk("2021-04-30T23:59:59Z", "b"),
                bk("2021-09-01T00:00:00Z", "c")]
    rows = {r["month"]: r["churned"] for r in cf.churn_rows(1, bookings, [], D(2021, 10, 15))}
    assert rows[D(2021, 1, 1)] == 0          # bought in April (within Feb..Apr)
    assert rows[D(2021, 2, 1)] == 0
    assert rows[D(2021, 4, 1)] == 1          # nothing in May..Jul
    assert rows[D(2021, 5, 1)] == 1          # Jun..Aug: September is outside
    assert rows[D(2021, 6, 1)] == 0          # Jul..Sep: bought Sep 1
    assert rows[D(2021, 7, 1)] is None       # Aug..Oct: October not complete on Oct 15
    assert max(rows) == D(2021, 9, 1)


def test_label_horizon_boundaries():
    # month M = 2021-01: the horizon is Feb, Mar, Apr
    base = [bk("2021-01-10T00:00:00Z", "a")]
    as_of = D(2021, 12, 31)
    first = lambda extra: cf.churn_rows(1, base + extra, [], as_of)[0]["churned"]  # noqa: E731
    assert first([]) == 1
    assert first([bk("2021-04-30T23:59:59Z", "b")]) == 0
    assert first([bk("2021-05-01T00:00:00Z", "b")]) == 1
    assert first([bk("2021-03-01T00:00:00Z", "b", success=False)]) == 1


def test_no_leakage_features_ignore_everything_after_the_month():
    past = [bk("2021-01-10T00:00:00Z", "a"), bk("2021-02-03T00:00:00Z", "b")]
    future = [bk("2021-03-05T00:00:00Z", "c")._replace(promo=True, shipment_fee=10_000),
              bk("2021-03-06T00:00:00Z", "d", success=False)._replace(shipment_fee=5_000)]
    s_past = [sess("2021-02-02T00:00:00Z", "2021-02-02T00:20:00Z", active=600)]
    s_future = [sess("2021-02-28T23:55:00Z", "2021-03-01T00:05:00Z", active=300)
                ._replace(n_add_to_cart=2, n_carts_after_last_booking=2),
                sess("2021-03-05T00:00:00Z", "2021-03-05T00:05:00Z")
                ._replace(n_add_to_cart=1, n_carts_after_last_booking=1)]
    a = cf.churn_rows(1, past, s_past, D(2021, 12, 31))
    b = cf.churn_rows(1, past + future, s_past + s_future, D(2021, 12, 31))
    strip = lambda r: {k: v for k, v in r.items() if k != "churned"}  # noqa: E731
    assert [strip(r) for r in a[:2]] == [strip(r) for r in b[:2]]
    # the later data does reach March (so the comparison above could fail)
    assert b[2]["abandoned_sessions"] == 2 and a[2]["abandoned_sessions"] == 0
    assert b[2]["promo_share"] != a[2]["promo_share"]
    for col in ("promo_share_shrunk", "failed_bookings_recent", "max_interpurchase_days",
                "recency_over_max_gap", "recency_over_median_gap", "session_rate"):
        assert b[2][col] != a[2][col], col


def test_own_rhythm_features_compare_the_gap_with_the_customers_own_history():
    b = [bk("2021-01-05T00:00:00Z", "a")._replace(promo=True),
         bk("2021-01-10T00:00:00Z", "x", success=False),
         bk("2021-01-15T00:00:00Z", "b"),
         bk("2021-01-20T00:00:00Z", "y", success=False),
         bk("2021-02-14T00:00:00Z", "c"),
         bk("2021-02-20T00:00:00Z", "z", success=False)]
    s = [sess("2021-01-05T00:00:00Z", "2021-01-05T00:10:00Z"),
         sess("2021-01-15T00:00:00Z", "2021-01-15T00:10:00Z"),
         sess("2021-02-14T00:00:00Z", "2021-02-14T00:10:00Z")]
    jan, feb, mar, apr = cf.churn_rows(1, b, s, D(2021, 12, 31))[:4]
    assert jan["max_interpurchase_days"] == 10 and jan["median_interpurchase_days"] == 10
    assert jan["first_purchase_days"] == 27                        # Jan 5 → Feb 1
    assert feb["max_interpurchase_days"] == 30 and feb["median_interpurchase_days"] == 20
    assert feb["recency_over_max_gap"] == pytest.approx(15 / 30)   # Feb 14 → Mar 1
    assert feb["recency_over_median_gap"] == pytest.approx(15 / 20)
    assert feb["first_purchase_days"] == 55
    assert feb["failed_bookings_recent"] == 1 + 0.5 * 2
    assert mar["failed_bookings_recent"] == 0.5 and apr["failed_bookings_recent"] == 0
    assert feb["promo_share_shrunk"] == pytest.approx((1 + 0.8) / (6 + 2))
    assert feb["session_rate"] == 1.5 and feb["session_rate_ratio_3m"] == 1.0
    assert apr["session_rate"] == pytest.approx(3 / 4)
    assert apr["session_rate_ratio_3m"] == pytest.approx((1 / 3) / (3 / 4))
    assert apr["purchase_rate_ratio_3m"] == pytest.approx((1 / 3) / (3 / 4))
    one = cf.churn_rows(2, b[:1], [], D(2021, 12, 31))[0]
    assert one["max_interpurchase_days"] is None and one["recency_over_max_gap"] is None
    assert one["session_rate"] == 0 and one["session_rate_ratio_3m"] is None


def test_drivers_beyond_recency_promo_fees_failures_and_trends():
    b = [bk("2021-01-05T00:00:00Z", "a")._replace(promo=True, shipment_fee=10_000),
         bk("2021-01-20T00:00:00Z", "b", success=False)._replace(shipment_fee=5_000),
         bk("2021-02-10T00:00:00Z", "c", total=300),
         bk("2021-03-15T00:00:00Z", "d")._replace(promo=True),
         bk("2021-03-16T00:00:00Z", "e", success=False),
         bk("2021-03-17T00:00:00Z", "f", success=False)]
    s = [sess("2021-01-05T00:00:00Z", "2021-01-05T00:10:00Z"),
         sess("2021-01-20T00:00:00Z", "2021-01-20T00:10:00Z"),
         sess("2021-03-15T00:00:00Z", "2021-03-15T00:10:00Z")]
    jan, feb, mar = cf.churn_rows(1, b, s, D(2021, 12, 31))[:3]
    assert jan["promo_share"] == 0.5 and jan["avg_shipment_fee_3m"] == 7_500
    assert jan["failed_bookings"] == 1 and jan["failed_share_3m"] == 0.5
    assert jan["purchase_rate"] == 1.0
    assert jan["expected_missed_purchases"] == pytest.approx(27 / 30)   # Jan 5 → Feb 1
    assert feb["session_count_mom"] == -2 and feb["monetary_mom"] == 300 - 100
    assert feb["failed_bookings_mom"] == -1 and feb["promo_share_3m"] == pytest.approx(1 / 3)
    assert mar["promo_share"] == pytest.approx(2 / 6) and mar["promo_share_3m"] == pytest.approx(2 / 6)
    assert mar["failed_bookings_3m"] == 3 and mar["failed_share_3m"] == 0.5
    assert mar["avg_shipment_fee_3m"] == pytest.approx(15_000 / 6)
    assert mar["failed_bookings_mom"] == 2 and mar["session_count_mom"] == 1
    assert mar["frequency_trend_3m"] == 3 and mar["session_trend_3m"] == 3   # nothing before Jan
    assert mar["purchase_rate"] == 1.0                      # 3 purchases in 3 months


def test_data_after_as_of_is_ignored():
    rows = cf.churn_rows(1, [bk("2021-01-10T00:00:00Z", "a"), bk("2021-05-01T00:00:00Z", "b")],
                         [], D(2021, 4, 30))
    assert {r["month"]: r["churned"] for r in rows} == {
        D(2021, 1, 1): 1, D(2021, 2, 1): None, D(2021, 3, 1): None, D(2021, 4, 1): None}


def _txn(customer, booking, when, session, status="Success", total=100):
    return Transaction(us(when), customer, booking, session, (BookingLine(1, 1, total),),
                       "OVO", status, 0, "", 0, None, None, None, total)


def _click(session, event_id, when):
    return ClickEvent(session, event_id, "CLICK", us(when), "WEB")


def test_in_memory_table_joins_sessions_through_bookings():
    txns = [_txn(1, "a", "2021-01-10T00:10:00Z", "s1"),
            _txn(1, "a", "2021-01-10T00:10:00Z", "s1"),            # duplicate booking
            _txn(1, "b", "2021-02-10T00:00:00Z", "s2", status="Failed"),
            _txn(2, "c", "2021-06-30T00:00:00Z", "s3")]
    clicks = [_click("s1", "e1", "2021-01-10T00:00:00Z"), _click("s1", "e2", "2021-01-10T00:06:00Z"),
              _click("s1", "e2", "2021-01-10T00:06:00Z"),          # duplicate event
              _click("s2", "e3", "2021-02-09T23:58:00Z"), _click("s2", "e4", "2021-02-10T00:00:00Z"),
              _click("sX", "e5", "2021-01-10T00:00:00Z")]          # no booking: unattributed
    rows = cf.churn_features_in_memory(txns, clicks)
    by = {(r["customer_id"], r["month"]): r for r in rows}
    # as_of = 2021-06-30, the last day of June: June is complete
    assert set(by) == {(1, D(2021, m, 1)) for m in range(1, 7)} | {(2, D(2021, 6, 1))}
    jan, feb = by[(1, D(2021, 1, 1))], by[(1, D(2021, 2, 1))]
    assert jan["frequency"] == 1 and jan["monetary"] == 100
    assert jan["session_count"] == 1 and jan["avg_session_minutes"] == pytest.approx(6.0)
    assert feb["session_count"] == 1 and feb["failed_bookings"] == 1
    assert jan["churned"] == 1 and jan["as_of"] == D(2021, 6, 30)


def test_feature_names_exclude_ids_and_label_helpers():
    rows = cf.churn_rows(1, [bk("2021-01-10T00:00:00Z", "a")], [], D(2021, 12, 31))
    names = cf.feature_names(rows[0])
    assert not {"customer_id", "month", "churned", "as_of"} & set(names)
    assert {"recency_days", "frequency", "monetary", "session_count",
            "avg_session_minutes", "tenure_days"} <= set(names)


def test_rows_fit_the_table_schema():
    from transforms.warehouse import column_names, to_arrow

    rows = cf.churn_rows(1, [bk("2021-01-10T00:00:00Z", "a")], [sess(
        "2021-01-10T00:00:00Z", "2021-01-10T00:05:00Z")], D(2021, 12, 31))
    assert set(column_names("churn_features")) == set(rows[0])
    assert to_arrow("churn_features", rows).num_rows == len(rows)
