"""Pure sessionisation rules (SPEC §2): ordering, visits, dwell, product-id inference, and
the incremental "settled" state machine behind the streaming step. No Beam here."""
from __future__ import annotations

import random

import pytest

from transforms import session_rules as sz
from transforms.records import ClickEvent
from transforms.session_rules import (
    EnrichedEvent,
    advance,
    drop_duplicates,
    enrich_session,
    infer_products,
    settle,
    split_visits,
)

T0 = 1_567_784_072_821_085          # 2019-09-06T15:34:32.821085Z
S = 1_000_000                       # one second in µs
GAP = 1800 * S


def ev(name, t, eid=None, pid=None, sid="s1"):
    return ClickEvent(sid, eid or f"e{t:020d}", name, t, "MOBILE", pid)


def seq(*names, step=60 * S, start=T0, pids=None, sid="s1"):
    """Events one `step` apart; ADD_TO_CART gets product 100+i unless pids says otherwise."""
    pids = pids or {}
    out = []
    for i, n in enumerate(names):
        pid = pids.get(i, 100 + i if n == "ADD_TO_CART" else None)
        out.append(ev(n, start + i * step, eid=f"{sid}-{i:03d}", pid=pid, sid=sid))
    return out


def by_id(outs):
    return {o.event_id: o for o in outs}


# --------------------------------------------------------------------------- record shape
def test_enriched_event_extends_click_event_fields_in_order():
    assert EnrichedEvent._fields[:len(ClickEvent._fields)] == ClickEvent._fields
    assert EnrichedEvent._fields[len(ClickEvent._fields):] == (
        "visit_id", "product_id_inferred", "dwell_seconds")


# --------------------------------------------------------------------------- ordering
def test_order_is_event_time_then_event_id_not_arrival():
    a = ev("CLICK", T0, eid="b")
    b = ev("ADD_TO_CART", T0, eid="a", pid=7)   # same time, smaller id → first
    c = ev("SCROLL", T0 + 5 * S, eid="c")
    for arrival in ([a, b, c], [c, a, b], [b, c, a]):
        out = enrich_session(arrival)
        assert [o.event_id for o in out] == ["a", "b", "c"]
        # the CLICK comes after the add in (time, id) order, so nothing is inferred for it
        assert by_id(out)["b"].product_id is None
        assert by_id(out)["a"].dwell_seconds == 0.0
        assert by_id(out)["b"].dwell_seconds == 5.0


def test_tie_broken_by_event_id_decides_inference():
    click = ev("CLICK", T0, eid="a")             # smaller id → before the add
    add = ev("ADD_TO_CART", T0, eid="b", pid=7)
    out = by_id(enrich_session([add, click]))
    assert out["a"].product_id == 7 and out["a"].product_id_inferred


def test_result_does_not_depend_on_input_order():
    rng = random.Random(3)
    events = _random_session(rng, "s9", 60)
    want = enrich_session(events)
    for _ in range(5):
        shuffled = events[:]
        rng.shuffle(shuffled)
        assert enrich_session(shuffled) == want


# --------------------------------------------------------------------------- visits
def test_gap_equal_to_visit_gap_stays_in_the_visit():
    a, b = ev("CLICK", T0), ev("CLICK", T0 + GAP)
    out = enrich_session([a, b])
    assert {o.visit_id for o in out} == {f"s1:{T0}"}
    assert out[0].dwell_seconds == 1800.0


def test_gap_one_microsecond_more_starts_a_new_visit():
    a, b = ev("CLICK", T0), ev("ADD_TO_CART", T0 + GAP + 1, pid=3)
    out = enrich_session([a, b])
    assert [o.visit_id for o in out] == [f"s1:{T0}", f"s1:{T0 + GAP + 1}"]
    assert out[0].dwell_seconds is None                     # last of its visit
    assert out[0].product_id is None                        # inference never crosses visits
    assert [len(v) for v in split_visits([a, b])] == [1, 1]


def test_visit_gap_parameter_and_visit_id_is_first_event_time():
    events = seq("HOMEPAGE", "CLICK", "CLICK", step=61 * S)
    assert len({o.visit_id for o in enrich_session(events, visit_gap=60)}) == 3
    one = enrich_session(events, visit_gap=61)
    assert {o.visit_id for o in one} == {f"s1:{T0}"}


def test_multi_day_session_visits_and_dwell():
    day = 86_400 * S
    # a visit that runs over midnight (events every 20 min for 30 h), then a pause of
    # two days, then a second visit
    first = [ev("SCROLL", T0 + i * 1200 * S, eid=f"a{i:03d}") for i in range(90)]
    second = [ev("CLICK", T0 + 4 * day + i * S, eid=f"b{i}") for i in range(3)]
    out = enrich_session(second + first)
    visits = {o.visit_id for o in out}
    assert visits == {f"s1:{T0}", f"s1:{T0 + 4 * day}"}
    assert all(o.dwell_seconds == 1200.0 for o in out[:89])
    assert out[89].dwell_seconds is None
    assert [o.dwell_seconds for o in out[90:]] == [1.0, 1.0, None]


def test_dwell_is_none_only_for_last_event_of_each_visit():
    events = seq("HOMEPAGE", "CLICK", step=10 * S) + seq(
        "SEARCH", "SCROLL", step=7 * S, start=T0 + 10 * GAP, sid="s1")
    events = [e._replace(event_id=f"x{i}") for i, e in enumerate(events)]
    out = enrich_session(events)
    assert [o.dwell_seconds for o in out] == [10.0, None, 7.0, None]


def test_several_sessions_are_kept_apart():
    a = seq("CLICK", "ADD_TO_CART", sid="A")
    b = seq("CLICK", "CLICK", sid="B", start=T0 + 30 * S)
    out = enrich_session(a + b)
    assert {o.visit_id for o in out if o.session_id == "A"} == {f"A:{T0}"}
    assert {o.visit_id for o in out if o.session_id == "B"} == {f"B:{T0 + 30 * S}"}
    assert by_id(out)["B-001"].dwell_seconds is None and by_id(out)["B-000"].product_id is None


# --------------------------------------------------------------------------- inference
def test_inference_walks_back_three_inferable_events():
    out = enrich_session(seq("HOMEPAGE", "CLICK", "ITEM_DETAIL", "ADD_TO_CART"))
    assert [(o.product_id, o.product_id_inferred) for o in out] == [
        (103, True), (103, True), (103, True), (103, False)]


def test_lookback_limit():
    events = seq("CLICK", "CLICK", "CLICK", "CLICK", "ADD_TO_CART")
    out = enrich_session(events)
    assert [o.product_id_inferred for o in out] == [False, True, True, True, False]
    assert out[0].product_id is None
    out4 = enrich_session(events, lookback=4)
    assert [o.product_id_inferred for o in out4] == [True, True, True, True, False]
    out0 = enrich_session(events, lookback=0)
    assert not any(o.product_id_inferred for o in out0)


@pytest.mark.parametrize("stopper", ["ADD_TO_CART", "BOOKING"])
def test_walk_stops_at_add_to_cart_or_booking(stopper):
    out = enrich_session(seq("CLICK", stopper, "CLICK", "ADD_TO_CART"))
    assert out[2].product_id == 103 and out[2].product_id_inferred
    assert out[0].product_id_inferred is (stopper == "ADD_TO_CART")  # only by its own add
    if stopper == "ADD_TO_CART":
        assert out[0].product_id == 101          # inferred from the first add, not 103
    assert not out[1].product_id_inferred


def test_non_inferable_types_are_walked_but_never_inferred():
    # SCROLL and SEARCH count toward lookback: the CLICK at distance 4 is out of reach
    out = enrich_session(seq("CLICK", "SCROLL", "SEARCH", "PROMO_PAGE", "ADD_TO_CART"))
    assert [o.product_id for o in out] == [None, None, None, None, 104]
    out = enrich_session(seq("CLICK", "SCROLL", "ADD_PROMO", "ADD_TO_CART"))
    assert [o.product_id for o in out] == [103, None, None, 103]
    assert [o.product_id_inferred for o in out] == [True, False, False, False]


def test_custom_inferable_set():
    out = enrich_session(seq("SCROLL", "CLICK", "ADD_TO_CART"), inferable={"SCROLL"})
    assert [o.product_id_inferred for o in out] == [True, False, False]


def test_own_product_id_is_never_overwritten():
    events = seq("ITEM_DETAIL", "CLICK", "ADD_TO_CART", pids={0: 55, 2: 9})
    out = enrich_session(events)
    assert (out[0].product_id, out[0].product_id_inferred) == (55, False)
    assert (out[1].product_id, out[1].product_id_inferred) == (9, True)
    assert out[0].quantity is None and out[2].product_id == 9


def test_add_with_another_add_among_predecessors_still_infers():
    # the original code skipped the second add entirely
    out = enrich_session(seq("CLICK", "ADD_TO_CART", "CLICK", "ADD_TO_CART"))
    assert [(o.product_id, o.product_id_inferred) for o in out] == [
        (101, True), (101, False), (103, True), (103, False)]
    out = enrich_session(seq("ADD_TO_CART", "HOMEPAGE", "ITEM_DETAIL", "ADD_TO_CART"))
    assert [o.product_id for o in out] == [100, 103, 103, 103]


def test_infer_products_on_a_visit():
    assert infer_products(seq("CLICK", "SCROLL", "ADD_TO_CART")) == [102, None, None]


def test_other_fields_are_kept():
    e = ClickEvent("s1", "x", "SEARCH", T0, "WEB", None, None, None, None, "batik", None, None)
    b = ClickEvent("s1", "y", "BOOKING", T0 + S, "WEB", payment_status="Success")
    out = enrich_session([e, b])
    assert out[0][:12] == tuple(e) and out[1][:12] == tuple(b)


# --------------------------------------------------------------------------- nothing dropped
def _random_session(rng, sid, n, gap=1800):
    names = ["HOMEPAGE", "CLICK", "SCROLL", "ITEM_DETAIL", "SEARCH", "ADD_TO_CART",
             "PROMO_PAGE", "ADD_PROMO", "BOOKING"]
    t, out = T0, []
    for k in range(n):
        r = rng.random()
        if r < 0.1:
            t += rng.randint(gap * S - 2, gap * S + 2)      # right at the visit gap
        elif r < 0.2:
            pass                                            # same microsecond
        elif r < 0.3:
            t += rng.randint(1, 5 * S)
        elif r < 0.35:
            t += rng.randint(2, 40) * 86_400 * S            # days later
        else:
            t += rng.randint(1, 900 * S)
        name = rng.choice(names)
        pid = rng.randint(1, 9) if name == "ADD_TO_CART" else (
            rng.randint(1, 9) if rng.random() < 0.1 else None)
        out.append(ClickEvent(sid, f"{sid}-{rng.randrange(10 ** 9):09d}-{k}", name, t,
                              "WEB", pid))
    return out


def test_nothing_is_dropped_and_outputs_match_inputs():
    rng = random.Random(1)
    events = [e for s in range(20) for e in _random_session(rng, f"s{s}", rng.randint(1, 50))]
    out = enrich_session(events)
    assert len(out) == len(events)
    assert sorted(o.event_id for o in out) == sorted(e.event_id for e in events)
    source = by_id(events)
    for o in out:
        assert o.visit_id.startswith(o.session_id + ":")
        assert o.dwell_seconds is None or o.dwell_seconds >= 0
        assert o[:12] == tuple(source[o.event_id]) or o.product_id_inferred
        assert o.product_id_inferred == (o.product_id is not None and
                                         source[o.event_id].product_id is None)


def test_drop_duplicates_keeps_first_arrival():
    a = ev("CLICK", T0, eid="x")
    a2 = a._replace(traffic_source="WEB")
    other_session = a._replace(session_id="s2")
    unique, dups = drop_duplicates([a, a2, other_session])
    assert unique == [a, other_session] and dups == [a2]


# --------------------------------------------------------------------------- settled rule
def test_settle_waits_for_the_next_event_to_be_behind_the_watermark():
    a, b = ev("SCROLL", T0, eid="a"), ev("SCROLL", T0 + 100, eid="b")
    # at W = b.t an event (b.t, id < "b") could still come between a and b
    assert settle([a, b], [False, False], T0 + 100).final == []
    final = settle([a, b], [False, False], T0 + 101).final
    assert [(i, o.dwell_seconds) for i, o, _ in final] == [(0, 100 / 1e6)]


def test_settle_visit_end_needs_watermark_past_last_plus_gap():
    a = ev("CLICK", T0)
    assert settle([a], [False], T0 + GAP).final == []
    (i, o, h), = settle([a], [False], T0 + GAP + 1).final
    assert (o.dwell_seconds, o.product_id, h) == (None, None, T0 + GAP)


def test_settle_inferable_event_waits_for_its_lookahead():
    events = seq("CLICK", "SCROLL", "SCROLL", "SCROLL", step=S)
    done = [False] * 4
    # the CLICK needs its 3 followers; the SCROLLs only their next event
    final = settle(events, done, T0 + 2 * S + 1).final
    assert [i for i, _, _ in final] == [1]
    final = settle(events, done, T0 + 3 * S + 1).final
    assert [i for i, _, _ in final] == [0, 1, 2]
    # an ADD_TO_CART or BOOKING ends the look-ahead early
    events = seq("CLICK", "ADD_TO_CART", step=S)
    assert [i for i, _, _ in settle(events, [False] * 2, T0 + S + 1).final] == [0]


def test_settle_uses_known_events_beyond_the_watermark():
    # an event already known after the gap closes the visit as soon as W passes t + gap
    a, far = ev("CLICK", T0, eid="a"), ev("CLICK", T0 + 5 * GAP, eid="z")
    final = settle([a, far], [False, False], T0 + GAP + 1).final
    assert [(i, o.dwell_seconds) for i, o, _ in final] == [(0, None)]


def test_settle_is_exactly_what_cannot_change_any_more():
    """Property: whatever settle() calls final at W equals the reference on the full
    session, for every set of later events (all at or after W)."""
    rng = random.Random(7)
    for trial in range(1500):
        gap = rng.choice([1800, 60])
        lookback = rng.choice([3, 3, 1, 0, 5])
        events = _random_session(rng, "s", rng.randint(1, 30), gap)
        ordered = sorted(events, key=sz.sort_key)
        w = rng.choice(ordered)[3] + rng.choice([0, 1, -1, gap * S, gap * S + 1, 3 * S])
        known = [e for e in ordered if e[3] < w or rng.random() < 0.3]
        s = settle(known, [False] * len(known), w, visit_gap=gap, lookback=lookback)
        want = by_id(enrich_session(events, gap, lookback))
        for i, out, h in s.final:
            assert out == want[out.event_id], (trial, i)
            assert h < w
        # and everything known before W whose horizon is known is final
        finals = {i for i, _, _ in s.final}
        for i, h in enumerate(s.pending_horizons):
            assert (h is None) == (i in finals)


# --------------------------------------------------------------------------- state machine
class Harness:
    """Drives advance() the way the Beam step does (arrivals bag + two timers)."""

    def __init__(self, **cfg):
        self.cfg = cfg
        self.g = sz.gap_us(cfg.get("visit_gap", sz.DEFAULT_VISIT_GAP))
        self.ctx, self.bag, self.flush, self.close = None, [], None, None
        self.out, self.dups, self.late, self.closed = [], [], [], 0
        self.emitted_at = {}

    def arrive(self, e):
        self.bag.append(tuple(e))
        t = e[3]
        self.flush = t + 1 if self.flush is None else min(self.flush, t + 1)
        self.close = t + self.g + 1 if self.close is None else max(self.close, t + self.g + 1)

    def watermark(self, w):
        while True:
            due = [x for x in (self.flush, self.close) if x is not None and x <= w]
            if not due:
                return
            t = min(due)
            self.flush = None if self.flush == t else self.flush
            self.close = None if self.close == t else self.close
            arrivals, self.bag = self.bag, []
            r = advance(self.ctx, arrivals, t, **self.cfg)
            self.ctx = r.ctx
            for o in r.enriched:
                self.emitted_at[o.event_id] = t
            self.out += r.enriched
            self.dups += r.duplicates
            self.late += r.late
            self.closed += r.visits_closed
            self.flush, self.close = r.next_flush_us, r.next_close_us


def _horizon_reference(events, gap, lookback, e):
    """When e becomes final, from the full (sorted) session: the settle rule restated."""
    ordered = sorted(events, key=sz.sort_key)
    i = ordered.index(e)
    steps = max(1, lookback) if (e.event_name in sz.DEFAULT_INFERABLE and e.product_id is None) else 1
    k = i
    for _ in range(steps):
        if k + 1 >= len(ordered) or ordered[k + 1][3] - ordered[k][3] > gap * S:
            return ordered[k][3] + gap * S
        k += 1
        if ordered[k].event_name in sz.STOP_EVENTS:
            return ordered[k][3]
    return ordered[k][3]


@pytest.mark.parametrize("seed", range(6))
def test_state_machine_matches_reference_in_any_arrival_order(seed):
    rng = random.Random(seed)
    for trial in range(150):
        cfg = dict(visit_gap=rng.choice([1800, 60]), lookback=rng.choice([3, 1, 0]),
                   dedup_ttl=3600)
        events = _random_session(rng, "s", rng.randint(1, 35), cfg["visit_gap"])
        order = events[:]
        mode = rng.choice(["sorted", "shuffled", "jittered"])
        if mode == "shuffled":
            rng.shuffle(order)
        elif mode == "jittered":
            order.sort(key=lambda e: e[3] + rng.randint(0, 600 * S))
        redelivered = rng.sample(events, min(len(events), rng.randint(0, 3)))
        for e in redelivered:
            order.insert(rng.randint(0, len(order)), e)
        h = Harness(**cfg)
        w = -(2 ** 62)
        for k, e in enumerate(order):
            h.arrive(e)
            rest = [x[3] for x in order[k + 1:]]
            if rest and rng.random() < 0.5:   # the watermark never passes an unarrived event
                w = max(w, rng.randint(min(w, min(rest)), min(rest)))
                h.watermark(w)
        h.watermark(2 ** 62)
        assert sorted(h.out, key=lambda o: (o.event_time_us, o.event_id)) == \
            enrich_session(events, cfg["visit_gap"], cfg["lookback"]), (seed, trial, mode)
        assert len(h.dups) == len(redelivered) and not h.late
        assert h.closed == len(split_visits(sorted(events, key=sz.sort_key), cfg["visit_gap"]))
        assert h.ctx is None and h.flush is None and h.close is None


def test_state_machine_emits_when_the_watermark_passes_the_horizon():
    """Each event is emitted by the first timer at/after horizon+1 — never held to the end."""
    rng = random.Random(11)
    events = _random_session(rng, "s", 40)
    h = Harness()
    for e in events:
        h.arrive(e)
    checkpoints = sorted({e[3] for e in events} | {e[3] + GAP + 1 for e in events})
    for w in checkpoints:
        h.watermark(w)
        for e in events:
            hz = _horizon_reference(events, 1800, 3, e)
            assert (e.event_id in h.emitted_at) == (hz < w), (w, e)
    assert len(h.out) == len(events)


def test_gap_inside_one_batch_of_arrivals_splits_visits():
    """LOCAL_STACK trap 1: two visits arriving together, watermark jumping once."""
    v1 = seq("CLICK", "ADD_TO_CART", sid="s1")
    v2 = seq("CLICK", "CLICK", start=T0 + 3 * GAP, sid="s1")
    v2 = [e._replace(event_id="b" + e.event_id) for e in v2]
    h = Harness()
    for e in v2 + v1:
        h.arrive(e)
    h.watermark(T0 + 60 * S + GAP + 1)          # first visit settles, second does not
    assert {o.visit_id for o in h.out} == {f"s1:{T0}"} and len(h.out) == 2
    assert len(h.ctx.pending) == 2              # only the open visit is kept
    h.watermark(2 ** 62)
    assert sorted(h.out) == sorted(enrich_session(v1 + v2)) and h.closed == 2


def test_state_is_bounded_and_ids_expire_after_dedup_ttl():
    v1 = seq("HOMEPAGE", "CLICK", "ADD_TO_CART")
    h = Harness(dedup_ttl=600)
    for e in v1:
        h.arrive(e)
    close = v1[-1][3] + GAP
    h.watermark(close + 1)
    assert len(h.out) == 3 and h.ctx.pending == ()            # events are gone …
    assert {eid for _, eid in h.ctx.seen} == {e.event_id for e in v1}  # … their ids are not
    h.arrive(v1[1])                                            # redelivered within the ttl
    h.watermark(close + 2)
    assert [d[1] for d in h.dups] == [v1[1].event_id] and not h.late
    h.watermark(close + 600 * S + 1)                           # ttl over: state cleared
    assert h.ctx is None and h.flush is None and h.close is None
    later = ev("CLICK", close + 7200 * S, eid="new")
    h.arrive(later)
    h.watermark(2 ** 62)
    assert h.out[-1].visit_id == f"s1:{later[3]}" and h.out[-1].dwell_seconds is None


def test_late_event_that_would_change_emitted_output_is_returned_as_late():
    a, b = ev("CLICK", T0, eid="a"), ev("ADD_TO_CART", T0 + 10 * S, eid="b", pid=4)
    h = Harness()
    h.arrive(a)
    h.arrive(b)
    h.watermark(T0 + GAP + 20 * S)         # both emitted: visit closed
    assert len(h.out) == 2
    between = ev("CLICK", T0 + 5 * S, eid="c")       # would change a's dwell
    after_gap = ev("CLICK", T0 + 10 * S + GAP + 1, eid="d")  # behind W, but changes nothing
    h.arrive(between)
    h.arrive(after_gap)
    h.arrive(between)                                 # its redelivery is a duplicate
    h.watermark(2 ** 62)
    assert [(e[1], reason.startswith("late event")) for e, reason in h.late] == [("c", True)]
    assert [d[1] for d in h.dups] == ["c"]
    assert by_id(h.out)["d"].visit_id == f"s1:{after_gap[3]}"
    assert sorted(h.out) == sorted(enrich_session([a, b, after_gap]))


def test_late_events_keep_outputs_consistent_with_accepted_events():
    rng = random.Random(5)
    for trial in range(400):
        cfg = dict(visit_gap=rng.choice([1800, 60]), lookback=rng.choice([3, 1]),
                   dedup_ttl=10 ** 7)
        events = _random_session(rng, "s", rng.randint(1, 30), cfg["visit_gap"])
        order = events[:]
        rng.shuffle(order)
        lo, hi = min(e[3] for e in events), max(e[3] for e in events)
        h = Harness(**cfg)
        w = -(2 ** 62)
        for e in order:
            h.arrive(e)
            if rng.random() < 0.4:             # the watermark runs ahead: late data
                w = max(w, rng.randint(lo, hi + 4000 * S))
                h.watermark(w)
        h.watermark(2 ** 62)
        late_ids = {e[1] for e, _ in h.late}
        accepted = [e for e in events if e.event_id not in late_ids]
        assert sorted(h.out, key=lambda o: (o.event_time_us, o.event_id)) == \
            enrich_session(accepted, cfg["visit_gap"], cfg["lookback"]), trial
        assert len(h.out) + len(h.late) == len(events)
