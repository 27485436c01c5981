"""The bounded replay's engagement and rankings: the live graph's rules in a batch shape.

* ``all``: one partial engagement table per bundle of session batches (the hot loop),
  one combine, ranked through the two stages (``top_n.make_snapshot``).
* ``1h`` / ``24h``: only contributions within 24 h of their batch's newest one go on,
  into one table of recent slices (``--slice-seconds``) pruned to the 24 h before the
  newest slice; it is cut and ranked by :func:`transforms.slices.final_snapshot` — the
  function the streaming graph ends a bounded input with, so both give the same
  rankings: the 60 minutes / 24 hours up to the newest complete slice.
"""
from __future__ import annotations

from typing import Dict, Mapping, Optional

import apache_beam as beam
from apache_beam.transforms import window
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

from transforms.engagement import (
    COUNT_INDEX,
    DWELL,
    LAST,
    EngagementCombineFn,
    add_into,
    dwell_us,
    new_acc,
    transaction_contribution,
)
from transforms.ranking_store import HORIZONS
from transforms.scoring import DEFAULT_WEIGHTS, FEATURES, validate_weights
from transforms.slices import (
    DEFAULT_SHARDS,
    DEFAULT_SLICE_SECONDS,
    HORIZON_US,
    final_snapshot,
    order_contributions,
    recent_slices,
    slice_end_us,
    split_final_slices,
)
from transforms.top_n import RankWindows

_ADD = FEATURES.index("add_to_cart_count")
_DAY_US = HORIZON_US["24h"]
RECENT = "recent"


class RecentSlices:
    """``{pid: {slice: accumulator}}`` of the last 24 h before the newest slice seen
    (pure; the accumulator of :class:`RecentSlicesFn`)."""

    __slots__ = ("slice_us", "latest_us", "slices")

    def __init__(self, slice_us: int, latest_us: Optional[int] = None,
                 slices: Optional[Dict[int, Dict[int, list]]] = None):
        self.slice_us, self.latest_us, self.slices = slice_us, latest_us, slices or {}

    def first(self) -> Optional[int]:
        """The oldest slice any horizon can still need."""
        if self.latest_us is None:
            return None
        return (slice_end_us(self.latest_us, self.slice_us) - _DAY_US) // self.slice_us

    def add(self, pid: int, t_us: int, acc) -> None:
        if self.latest_us is None or t_us > self.latest_us:
            self.latest_us = t_us
        s = t_us // self.slice_us
        if s < self.first():
            return
        per = self.slices.get(pid)
        if per is None:
            per = self.slices[pid] = {}
        cur = per.get(s)
        if cur is None:
            per[s] = list(acc)
        else:
            add_into(cur, acc)

    def merge(self, other: "RecentSlices") -> None:
        for pid, per in other.slices.items():
            for s, acc in per.items():
                self.add(pid, s * self.slice_us, acc)
        if other.latest_us is not None and (self.latest_us is None
                                            or other.latest_us > self.latest_us):
            self.latest_us = other.latest_us
        self.prune()

    def prune(self) -> None:
        first = self.first()
        if first is not None:
            self.slices = recent_slices(self.slices, first)


class RecentSlicesFn(beam.CombineFn):
    """Contributions ``(product_id, time_us, accumulator)`` or partial
    :class:`RecentSlices` → one :class:`RecentSlices` (the newest 24 h of slices)."""

    def __init__(self, slice_us: int):
        self.slice_us = slice_us

    def create_accumulator(self) -> RecentSlices:
        return RecentSlices(self.slice_us)

    def add_input(self, acc: RecentSlices, element) -> RecentSlices:
        if isinstance(element, RecentSlices):
            acc.merge(element)
        else:
            pid, t, part = element
            acc.add(int(pid), int(t), part)
        return acc

    def merge_accumulators(self, accumulators) -> RecentSlices:
        it = iter(accumulators)
        total = next(it, None) or self.create_accumulator()
        for acc in it:
            total.merge(acc)
        return total

    def extract_output(self, acc: RecentSlices) -> RecentSlices:
        acc.prune()
        return acc


class _BatchContributions(beam.DoFn):
    """Session batches → one ``{product_id: accumulator}`` table per bundle (main output)
    and, on ``recent``, one :class:`RecentSlices` per bundle with the contributions
    within 24 h of their batch's newest one (all a final 1h / 24h can need)."""

    def __init__(self, slice_us: int):
        self.slice_us = slice_us

    def start_bundle(self):
        self.table: Dict[int, list] = {}
        self.recent = RecentSlices(self.slice_us)

    def process(self, batch):
        # Each add counts once from ``adds``; settled events bring the rest (an add only
        # its dwell) — the rule of transforms.slices.batch_contributions, inlined (the
        # hot loop of the bounded replay).
        events = batch.enriched
        times = [e.event_time_us for e in events if e.product_id is not None]
        times += [t for _, t in batch.adds]
        if not times:
            return
        cut = max(times) - _DAY_US
        table, counts, recent = self.table, COUNT_INDEX, self.recent
        for e in events:
            pid = e.product_id
            if pid is None:
                continue
            idx = counts.get(e.event_name)
            if idx == _ADD and not e.product_id_inferred:
                idx = None  # counted from batch.adds
            self._add(table, recent, int(pid), idx, dwell_us(e.dwell_seconds),
                      e.event_time_us, cut)
        for pid, t in batch.adds:
            self._add(table, recent, int(pid), _ADD, 0, t, cut)

    @staticmethod
    def _add(table, recent, pid, idx, dwell, t, cut):
        cur = table.get(pid)
        if cur is None:
            cur = table[pid] = new_acc()
        if idx is not None:
            cur[idx] += 1
        cur[DWELL] += dwell
        if cur[LAST] is None or t > cur[LAST]:
            cur[LAST] = t
        if t >= cut:
            part = new_acc()
            if idx is not None:
                part[idx] = 1
            part[DWELL], part[LAST] = dwell, t
            recent.add(pid, t, part)

    def finish_bundle(self):
        gw = [window.GlobalWindow()]
        if self.table:
            table, self.table = self.table, {}
            yield WindowedValue(table, MIN_TIMESTAMP, gw)
        if self.recent.latest_us is not None:
            recent, self.recent = self.recent, RecentSlices(self.slice_us)
            recent.prune()
            yield beam.pvalue.TaggedOutput(RECENT, WindowedValue(recent, MIN_TIMESTAMP, gw))


class _RankRecent(beam.DoFn):
    """The newest slices → the final 1h / 24h snapshots (transforms.slices.final_snapshot)."""

    def __init__(self, weights, top_n, slice_us, shards):
        self.weights, self.top_n = dict(weights), int(top_n)
        self.slice_us, self.shards = slice_us, int(shards)

    def process(self, recent: RecentSlices, products):
        finals = split_final_slices(recent.slices, self.shards)
        for h in HORIZONS:
            if HORIZON_US[h] is not None:
                snap = final_snapshot(h, finals, products, self.weights, self.top_n,
                                      self.slice_us)
                if snap is not None:
                    yield snap


class ReplayRankings(beam.PTransform):
    """``(session_batches, transactions) | ReplayRankings(products_side, weights)`` →
    one :class:`~transforms.top_n.RankingSnapshot` per horizon (bounded input, batch).

    ``products`` is an ``AsDict`` side input of ``(id, Product)``. Labels: ``Events``,
    ``Transactions``, ``AllContributions``, ``all/Combine``, ``all/Label``, ``all/Rank``,
    ``OrderSlices``, ``RecentContributions``, ``Recent/Combine``, ``Recent/Rank``,
    ``Snapshots``."""

    def __init__(self, products, weights: Optional[Mapping[str, float]] = None, *,
                 top_n: int = 50, slice_seconds: int = DEFAULT_SLICE_SECONDS,
                 shards: int = DEFAULT_SHARDS, label: Optional[str] = None):
        super().__init__(label)
        self.products = products
        self.weights = validate_weights(dict(weights if weights is not None else DEFAULT_WEIGHTS))
        self.top_n, self.shards = int(top_n), int(shards)
        self.slice_us = int(slice_seconds) * 1_000_000

    def expand(self, inputs):
        batches, transactions = inputs
        ev = batches | "Events" >> beam.ParDo(_BatchContributions(self.slice_us)).with_outputs(
            RECENT, main="tables")
        orders = transactions | "Transactions" >> beam.FlatMap(transaction_contribution)
        all_time = ((ev.tables, orders) | "AllContributions" >> beam.Flatten()
                    | "all/Combine" >> beam.CombineGlobally(EngagementCombineFn()).without_defaults()
                    | "all/Label" >> beam.Map(lambda table: ("all", None, table))
                    | "all/Rank" >> RankWindows(self.products, self.weights, top_n=self.top_n))
        order_slices = transactions | "OrderSlices" >> beam.FlatMap(order_contributions)
        sliced = ((ev[RECENT], order_slices) | "RecentContributions" >> beam.Flatten()
                  | "Recent/Combine" >> beam.CombineGlobally(
                      RecentSlicesFn(self.slice_us)).without_defaults()
                  | "Recent/Rank" >> beam.ParDo(
                      _RankRecent(self.weights, self.top_n, self.slice_us, self.shards),
                      products=self.products))
        return (all_time, sliced) | "Snapshots" >> beam.Flatten()

