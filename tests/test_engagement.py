"""Engagement per product (SPEC §2): pure functions and the CombineFn (the horizons are
cut from slices: tests/test_slices.py, tests/test_replay_rankings.py)."""
from __future__ import annotations

import random

from transforms.engagement import (
    Engagement,
    EngagementCombineFn,
    compute_engagement,
    engagement_as_of_us,
    event_contribution,
    merge_engagements,
    transaction_contribution,
)
from transforms.records import BookingLine, ClickEvent, Transaction
from transforms.session_rules import EnrichedEvent

S = 1_000_000
T0 = 1_567_785_600 * S  # 2019-09-06T16:00:00Z, on a 1 h boundary


def ev(i, name, t_us, pid=None, dwell=None, inferred=False):
    return EnrichedEvent("s1", f"e{i}", name, t_us, "WEB", pid, None, None, None, None, None,
                         None, visit_id="v1", product_id_inferred=inferred, dwell_seconds=dwell)


def txn(i, t_us, lines, status="Success"):
    return Transaction(t_us, 7, f"b{i}", "s1", tuple(BookingLine(p, q, 1000) for p, q in lines),
                       "OVO", status, 0, "", 0, None, None, None, 1000)


EVENTS = [
    ev(1, "HOMEPAGE", T0 + 10 * S, 5, 4.5, inferred=True),
    ev(2, "CLICK", T0 + 20 * S, 5, 2.25, inferred=True),
    ev(3, "ITEM_DETAIL", T0 + 30 * S, 5, 10.0, inferred=True),
    ev(4, "ADD_TO_CART", T0 + 40 * S, 5, None),               # last of its visit
    ev(5, "SCROLL", T0 + 50 * S, None, 3.0),                  # no product: ignored
    ev(6, "CLICK", T0 + 4000 * S, 9, 1.1, inferred=True),      # second hour
    ev(7, "ADD_TO_CART", T0 + 4010 * S, 9, 0.7),
    ev(8, "SEARCH", T0 + 4020 * S, None, 5.0),
]
TXNS = [
    txn(1, T0 + 45 * S, [(5, 2), (9, 1), (5, 1)]),
    txn(2, T0 + 4030 * S, [(9, 4)], status="Failed"),          # failed: no purchases
]
EXPECTED = {
    5: Engagement(1, 1, 1, 1, 16.75, 3, T0 + 45 * S),
    9: Engagement(1, 0, 1, 0, 1.8, 1, T0 + 4010 * S),
}


# --------------------------------------------------------------------------- pure
def test_event_contribution_counts_by_type_and_dwell():
    assert event_contribution(ev(1, "SCROLL", T0, None, 9.0)) == []
    (pid, acc), = event_contribution(ev(1, "ITEM_DETAIL", T0, 42, 1.5, inferred=True))
    assert pid == 42 and acc == [0, 1, 0, 0, 1_500_000, 0, T0]
    # another event type carrying the product adds dwell only; null dwell counts 0
    (_, acc), = event_contribution(ev(2, "SCROLL", T0, 42, 2.0))
    assert acc[:6] == [0, 0, 0, 0, 2_000_000, 0]
    (_, acc), = event_contribution(ev(3, "ADD_TO_CART", T0, 42, None))
    assert acc[:6] == [0, 0, 1, 0, 0, 0]
    # a plain ClickEvent (no dwell field) works too
    (_, acc), = event_contribution(ClickEvent("s", "e", "CLICK", T0, "WEB", 3))
    assert acc[:6] == [1, 0, 0, 0, 0, 0]


def test_transaction_contribution_only_success_units():
    parts = transaction_contribution(txn(1, T0, [(5, 2), (9, 1)]))
    assert [(p, a[5]) for p, a in parts] == [(5, 2), (9, 1)]
    assert transaction_contribution(txn(2, T0, [(5, 2)], status="Failed")) == []


def test_compute_engagement_matches_spec_example():
    assert compute_engagement(EVENTS, TXNS) == EXPECTED
    assert engagement_as_of_us(EXPECTED) == T0 + 4010 * S


def test_engagement_is_order_independent_bit_for_bit():
    rng = random.Random(3)
    events = [ev(i, rng.choice(["CLICK", "HOMEPAGE", "ITEM_DETAIL"]), T0 + i * S,
                 rng.randint(1, 4), rng.random() * 100) for i in range(300)]
    first = compute_engagement(events)
    for _ in range(3):
        rng.shuffle(events)
        assert compute_engagement(events) == first  # floats equal exactly, not approximately


def test_combine_fn_merges_like_the_pure_function():
    fn = EngagementCombineFn()
    parts = [kv for e in EVENTS for kv in event_contribution(e)]
    parts += [kv for t in TXNS for kv in transaction_contribution(t)]
    accs = []
    for chunk in (parts[:3], parts[3:5], parts[5:]):
        acc = fn.create_accumulator()
        for kv in chunk:
            acc = fn.add_input(acc, kv)
        accs.append(acc)
    assert fn.extract_output(fn.merge_accumulators(accs)) == EXPECTED
    # Engagement values are accepted as inputs too (re-combining tables)
    acc = fn.create_accumulator()
    for pid, e in EXPECTED.items():
        acc = fn.add_input(acc, (pid, e))
        acc = fn.add_input(acc, (pid, e))
    assert fn.extract_output(acc) == {pid: merge_engagements(e, e) for pid, e in EXPECTED.items()}


def test_merge_engagements_adds_counts_and_keeps_latest_time():
    a = Engagement(1, 2, 3, 4, 1.25, 5, 10)
    b = Engagement(1, 0, 0, 0, 0.5, 1, None)
    assert merge_engagements(a, b) == Engagement(2, 2, 3, 4, 1.75, 6, 10)
    assert a.records == 15 and a.features() == (1, 2, 3, 4, 1.25, 5)
