"""Sliced engagement and the two-stage ranking (transforms.slices), without Beam runs."""
from __future__ import annotations

import random

import pytest

from transforms.engagement import acc_to_engagement, compute_engagement
from transforms.records import BookingLine, ClickEvent, Product, Transaction
from transforms.scoring import DEFAULT_WEIGHTS, score_products
from transforms.session_rules import SessionBatch, accepted_adds, enrich_session
from transforms.slices import (
    HORIZON_US,
    Contribution,
    ShardTable,
    batch_contributions,
    by_shard,
    order_contributions,
    parts_of_table,
    skyband,
    snapshot_of_parts,
)

S = 1_000_000
T0 = 1_600_000_020 * S  # a whole minute
MIN = 60 * S


def _product(pid, gender, season, brand, sub):
    return Product(pid, gender, "Apparel", sub, "T", "Blue", season, 2012, "Casual",
                   f"{brand} Tee {pid}", brand)


def test_an_add_counts_once_whether_early_or_settled():
    events = [ClickEvent("s", "a", "CLICK", T0, "WEB"),
              ClickEvent("s", "b", "ADD_TO_CART", T0 + 5 * S, "WEB", 7, 1, 10),
              ClickEvent("s", "c", "SCROLL", T0 + 9 * S, "WEB")]
    enriched = enrich_session(events)
    early = SessionBatch((), accepted_adds(events))          # the add, at once
    late = SessionBatch(tuple(enriched), ())                 # everything settled, later
    total = {}
    for c in batch_contributions(early) + batch_contributions(late):
        total[c.product_id] = [a + b for a, b in zip(total.get(c.product_id, [0] * 6), c.acc[:6])]
    want = compute_engagement(enriched)[7]
    assert total[7][:4] == list(want[:4]) and total[7][4] / S == want.total_dwell_seconds


def test_orders_contribute_units_of_successful_bookings():
    ok = Transaction(T0, 1, "b1", "s", (BookingLine(3, 2, 5), BookingLine(4, 1, 5)), "OVO",
                     "Success", 0, "", 0, None, None, None, 10)
    assert {(c.product_id, c.acc[5]) for c in order_contributions(ok)} == {(3, 2), (4, 1)}
    assert order_contributions(ok._replace(payment_status="Failed")) == []


def test_each_contribution_lands_in_one_slice_and_horizons_end_at_the_newest_slice():
    t = ShardTable(MIN)
    acc = (1, 0, 0, 0, 0, 0, None)
    for k in range(90):                       # one click a minute for 90 minutes
        t.add((5, T0 + k * MIN + 30 * S, acc[:6] + (T0 + k * MIN,)))
    end = T0 + 90 * MIN
    assert t.view("all", None)[5][0] == 90
    assert t.view("1h", end)[5][0] == 60      # the 60 slices before the newest complete one
    assert t.view("24h", end)[5][0] == 90
    assert sum(len(v) for v in t.slices.values()) == 90
    t.prune(end + HORIZON_US["24h"])
    assert t.slices == {} and t.view("all", None)[5][0] == 90


def _brute_top(items, weights, maxima, n):
    from transforms.slices import score
    w = tuple(weights[f] for f in weights)
    return sorted(((pid, score(f, w, maxima)) for pid, f in items), key=lambda kv: (-kv[1], kv[0]))[:n]


@pytest.mark.parametrize("seed", range(5))
def test_skyband_keeps_every_product_that_can_reach_the_top_n_under_any_scaling(seed):
    rng = random.Random(seed)
    items = [(pid, tuple(float(rng.randint(0, 6)) for _ in range(6))) for pid in range(1, 80)]
    band = set(skyband(items, 5, tuple(range(6))))
    assert len(band) < len(items)
    for _ in range(200):       # any positive maxima (the other shards' are unknown)
        maxima = tuple(rng.choice([6.0, 7.0, 12.0, 40.0, 1000.0]) for _ in range(6))
        top = _brute_top(items, DEFAULT_WEIGHTS, maxima, 5)
        assert {pid for pid, _ in top} <= band


def test_two_stage_ranking_equals_ranking_every_product_at_once():
    rng = random.Random(7)
    genders, seasons = ["Men", "Women"], ["Summer", "Winter", "Fall"]
    products = {pid: _product(pid, rng.choice(genders), rng.choice(seasons),
                              f"B{pid % 9}", f"Sub{pid % 4}") for pid in range(1, 300)}
    events = []
    for i in range(3000):
        pid = rng.randint(1, 299)
        name = rng.choice(["CLICK", "ITEM_DETAIL", "ADD_TO_CART", "HOMEPAGE"])
        events.append(ClickEvent(f"s{i % 50}", f"e{i}", name, T0 + i * S, "WEB", pid))
    table = compute_engagement(enrich_session(events))
    one = snapshot_of_parts("all", parts_of_table(table, "all", None, products, DEFAULT_WEIGHTS,
                                                   10, shards=1), products, DEFAULT_WEIGHTS, 10)
    many = snapshot_of_parts("all", parts_of_table(table, "all", None, products, DEFAULT_WEIGHTS,
                                                    10, shards=16), products, DEFAULT_WEIGHTS, 10)
    assert many.rankings == one.rankings
    assert one.scores == score_products(table, DEFAULT_WEIGHTS)
    parts = parts_of_table(table, "all", None, products, DEFAULT_WEIGHTS, 10, shards=2)
    assert sum(len(p.candidates) for p in parts) < len(table)   # pruning does something
    two = snapshot_of_parts("all", parts, products, DEFAULT_WEIGHTS, 10)
    assert two.rankings == one.rankings
    full = sorted(one.scores.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
    assert [m for m, _ in many.rankings["products"]] == [str(pid) for pid, _ in full]


def test_contributions_are_grouped_one_element_per_shard():
    contribs = [Contribution(pid, T0, (1, 0, 0, 0, 0, 0, T0)) for pid in (1, 2, 17, 33)]
    assert [(s, len(c)) for s, c in by_shard(contribs, 16)] == [(1, 3), (2, 1)]


def test_final_snapshot_cuts_every_shard_at_the_newest_slice_of_all():
    """A shard whose data ended 50 minutes before the newest slice still counts in 1h:
    the horizon ends at the newest slice of ALL shards, not of each shard."""
    from transforms.slices import FinalSlices, final_snapshot, slice_end_us, split_final_slices
    from transforms.top_n import make_snapshot

    products = {pid: _product(pid, "Men", "Summer", f"B{pid}", "Tees") for pid in (1, 2, 3)}
    contribs = [(1, T0 + k * MIN, (1, 0, 0, 0, 0, 0, T0 + k * MIN)) for k in range(90)]
    contribs += [(2, T0 + 40 * MIN, (0, 0, 1, 0, 0, 0, T0 + 40 * MIN)),      # shard 2
                 (3, T0 + 10 * MIN, (0, 0, 0, 0, 0, 4, T0 + 10 * MIN))]      # > 1h old
    tables = {}
    for c in contribs:
        tables.setdefault(c[0] % 2, ShardTable(MIN)).add(c)
    finals = [t.final_slices(s) for s, t in sorted(tables.items())]
    assert [f.latest_us for f in finals] == [T0 + 40 * MIN, T0 + 89 * MIN]  # shards 0, 1
    end = slice_end_us(T0 + 89 * MIN, MIN)
    for h in ("1h", "24h"):
        window = {}
        for pid, t, acc in contribs:
            if end - HORIZON_US[h] <= t < end:
                cur = window.setdefault(pid, [0] * 6 + [None])
                for i in range(6):
                    cur[i] += acc[i]
                cur[6] = max(cur[6] or 0, acc[6])
        want = make_snapshot(h, end, {p: acc_to_engagement(a) for p, a in window.items()},
                             products, DEFAULT_WEIGHTS, 10)
        got = final_snapshot(h, finals, products, DEFAULT_WEIGHTS, 10, MIN)
        assert got.rankings == want.rankings and got.window_end_us == end == want.window_end_us
        assert (got.as_of_us, got.records) == (want.as_of_us, want.records)
        # one table split by shard (the bounded replay) gives the same snapshot
        whole = {}
        for f in finals:
            whole.update(f.slices)
        again = final_snapshot(h, split_final_slices(whole, shards=16), products,
                               DEFAULT_WEIGHTS, 10, MIN)
        assert again.rankings == got.rankings and again.records == got.records
    one_h = final_snapshot("1h", finals, products, DEFAULT_WEIGHTS, 10, MIN)
    assert {m for m, _ in one_h.rankings["products"]} == {"1", "2"}
    assert final_snapshot("1h", [FinalSlices(0, None, {})], products, DEFAULT_WEIGHTS, 10,
                          MIN) is None
