"""The bounded replay's rankings (transforms.replay_rankings): recent slices kept in any
order, and the Beam transform cutting 1h / 24h at the newest slice like the live graph."""
from __future__ import annotations

import random

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that

from transforms.engagement import compute_engagement
from transforms.records import BookingLine, Product, Transaction
from transforms.replay_rankings import RecentSlices, RecentSlicesFn, ReplayRankings
from transforms.scoring import DEFAULT_WEIGHTS
from transforms.session_rules import EnrichedEvent, SessionBatch
from transforms.slices import HORIZON_US, slice_end_us
from transforms.top_n import make_snapshot

S = 1_000_000
MIN = 60 * S
T0 = 1_600_000_020 * S


def _ev(i, name, t, pid, dwell=None, inferred=False):
    return EnrichedEvent("s", f"e{i}", name, t, "WEB", pid, None, None, None, None, None,
                         None, visit_id="v", product_id_inferred=inferred, dwell_seconds=dwell)


def test_recent_slices_keep_the_day_before_the_newest_slice_whatever_the_order():
    rng = random.Random(5)
    contribs = [(rng.randint(1, 5), T0 + rng.randint(0, 3 * 24 * 60) * MIN + rng.randint(0, 59) * S)
                for _ in range(2000)]
    contribs = [(pid, t, (1, 0, 0, 0, 0, 0, t)) for pid, t in contribs]
    latest = max(t for _, t, _ in contribs)
    first = (slice_end_us(latest, MIN) - HORIZON_US["24h"]) // MIN
    want = {}
    for pid, t, _ in contribs:
        if t // MIN >= first:
            per = want.setdefault(pid, {})
            per[t // MIN] = per.get(t // MIN, 0) + 1
    fn = RecentSlicesFn(MIN)
    for _ in range(3):
        rng.shuffle(contribs)
        accs = []
        for k in range(0, len(contribs), 300):
            acc = fn.create_accumulator()
            for c in contribs[k:k + 300]:
                acc = fn.add_input(acc, c)
            accs.append(acc)
        out = fn.extract_output(fn.merge_accumulators(accs))
        assert out.latest_us == latest
        assert {p: {s: a[0] for s, a in per.items()} for p, per in out.slices.items()} == want
    assert isinstance(out, RecentSlices)


def test_replay_rankings_cut_1h_and_24h_at_the_newest_slice():
    products = {pid: Product(pid, "Men", "Apparel", "Tees", "T", "Blue", "Summer", 2012,
                             "Casual", f"Brand{pid} Tee", f"Brand{pid}") for pid in (1, 2, 3)}
    e1 = [_ev(1, "CLICK", T0, 1, 2.0, inferred=True), _ev(2, "ADD_TO_CART", T0 + 2 * S, 1)]
    e2 = [_ev(3, "ITEM_DETAIL", T0 + 100 * MIN, 2, 5.0, inferred=True),
          _ev(4, "ADD_TO_CART", T0 + 100 * MIN + 5 * S, 2)]
    e3 = [_ev(5, "HOMEPAGE", T0 + 150 * MIN, 3, 1.0, inferred=True)]
    batches = [SessionBatch(tuple(e1), ((1, T0 + 2 * S),)), SessionBatch(tuple(e2), ()),
               SessionBatch((), ((2, T0 + 100 * MIN + 5 * S),)), SessionBatch(tuple(e3), ())]
    orders = [Transaction(T0 + 120 * MIN, 7, "b1", "s", (BookingLine(1, 2, 10),), "OVO",
                          "Success", 0, "", 0, None, None, None, 20)]
    end = slice_end_us(T0 + 150 * MIN, MIN)
    events = e1 + e2 + e3
    everything = compute_engagement(events, orders)
    hour = compute_engagement([e for e in events if e.event_time_us >= end - HORIZON_US["1h"]],
                              orders)
    want = {"all": make_snapshot("all", None, everything, products, DEFAULT_WEIGHTS, 10),
            "1h": make_snapshot("1h", end, hour, products, DEFAULT_WEIGHTS, 10),
            "24h": make_snapshot("24h", end, everything, products, DEFAULT_WEIGHTS, 10)}
    assert set(hour) == {2, 3, 1}  # product 1: only its purchase in the last hour

    def check(snaps):
        got = {s.horizon: s for s in snaps}
        assert sorted(got) == ["1h", "24h", "all"]
        for h, w in want.items():
            assert got[h].rankings == w.rankings, h
            assert (got[h].as_of_us, got[h].records, got[h].window_end_us) == (
                w.as_of_us, w.records, w.window_end_us), h

    opts = PipelineOptions(["--runner=DirectRunner"])
    with BeamTestPipeline(runner="DirectRunner", options=opts) as p:
        prods = beam.pvalue.AsDict(p | "P" >> beam.Create(sorted(products.items())))
        snaps = ((p | "B" >> beam.Create(batches), p | "T" >> beam.Create(orders))
                 | ReplayRankings(prods, DEFAULT_WEIGHTS, top_n=10))
        assert_that(snaps, check)
