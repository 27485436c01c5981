"""Sliced engagement and two-stage rankings: the live graph's aggregation (SPEC §2, §4).

Each contribution (an add at once, a settled event's remaining counts and dwell, a
purchase) lands in exactly ONE fixed event-time slice (``--slice-seconds``, default 60)
of its product. A keyed stateful step (:class:`_ShardFn`, products spread over
``--shards`` keys, never one key holding every product) keeps per product the all-time
total and the slices of the last 24 h, and emits per horizon a :class:`Part`:

* ``1h`` / ``24h``: the sums over the slices in ``[E - h, E)`` where ``E`` is the end of
  the newest complete slice (the watermark has passed it);
* ``all``: every contribution so far (an add counts the moment it arrives).

A part carries the shard's feature maxima, its per-brand / per-sub-category feature
sums (popularity is linear in the features, so a brand's score follows from its sums)
and, per ranking dimension, only the products that can still reach the top ``n`` for
*some* scaling: fewer than ``n`` products of the shard dominate them (the n-skyband).
Scores divide by the maximum over all shards, unknown to a shard; dominance holds for
every positive scaling, so the merge (:class:`_MergeFn`, one key per horizon) ranks the
union of the candidates exactly as a single step over all products would.

Elements through shuffles per input event: one (by session) into Sessionize, at most
one (a session batch's contributions per shard, usually fewer) into the shard step;
parts are per shard and refresh, not per event (see ``tests/test_streaming_graph.py``).

Emission: an event-time timer at the next point of a ``--refresh`` grid after new data
(never before the element that armed it; live, the watermark follows the wall clock: at
most one emission per shard every ``refresh`` seconds; on a file, once per watermark
step), and at slice boundaries while 1h/24h data ages out (``decay``, live only). When
a bounded input ends (the watermark reaches the end of the global window; on Dataflow
also a drain), every shard sends its last 24 h of slices — and, for the warehouse, its
whole table — and the merge cuts 1h / 24h at the newest slice of *all* shards
(:func:`final_snapshot`, the function the bounded replay ends with too).
"""
from __future__ import annotations

import functools
import math
from typing import Any, Dict, Iterable, List, Mapping, NamedTuple, Optional, Tuple

import apache_beam as beam
from apache_beam import coders
from apache_beam.metrics import Metrics
from apache_beam.transforms import window
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import BagStateSpec, ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.typehints import KV
from apache_beam.utils.timestamp import Timestamp

from transforms.engagement import (
    DWELL,
    LAST,
    PURCHASES,
    Engagement,
    acc_to_engagement,
    add_into,
    engagement_to_acc,
    event_contribution,
    new_acc,
    transaction_contribution,
)
from transforms.ranking_store import HORIZONS, dimension_key
from transforms.records import DeadLetter, read_csv_records
from transforms.scoring import DEFAULT_WEIGHTS, FEATURES, validate_weights
from transforms.top_n import RankingSnapshot

DEFAULT_SLICE_SECONDS = 60
DEFAULT_SHARDS = 16
DEFAULT_REFRESH = 2.0
HORIZON_US = {"1h": 3_600_000_000, "24h": 86_400_000_000, "all": None}
ADD_COUNT = FEATURES.index("add_to_cart_count")
NS = "shopstream.slices"


# --------------------------------------------------------------------------- contributions
class Contribution(NamedTuple):
    product_id: int
    time_us: int
    acc: tuple      # [click, detail, add, home, dwell_us, purchases, last_seen_us]


def batch_contributions(batch) -> List[Contribution]:
    """A :class:`~transforms.session_rules.SessionBatch` → its contributions: each accepted
    add counts 1 at once; a settled event contributes everything else (an add: only its
    dwell, its count came with ``adds``)."""
    out = []
    for pid, t in batch.adds:
        acc = [0] * 7
        acc[ADD_COUNT], acc[LAST] = 1, t
        out.append(Contribution(int(pid), t, tuple(acc)))
    for e in batch.enriched:
        for pid, acc in event_contribution(e):
            if e.event_name == "ADD_TO_CART" and not e.product_id_inferred:
                acc[ADD_COUNT] = 0
            if any(acc[:LAST]) or e.event_name != "ADD_TO_CART":
                out.append(Contribution(pid, e.event_time_us, tuple(acc)))
    return out


def order_contributions(txn) -> List[Contribution]:
    return [Contribution(pid, txn.created_at_us, tuple(acc))
            for pid, acc in transaction_contribution(txn)]


def shard_of(product_id: int, shards: int) -> int:
    return int(product_id) % shards


def by_shard(contribs: Iterable[Contribution], shards: int) -> List[Tuple[int, list]]:
    """Group contributions by shard: one shuffled element per (batch, shard)."""
    groups: Dict[int, list] = {}
    for c in contribs:
        groups.setdefault(shard_of(c.product_id, shards), []).append(tuple(c))
    return sorted(groups.items())


# --------------------------------------------------------------------------- the slice rule
def slice_end_us(t_us: int, slice_us: int) -> int:
    """End of the slice holding ``t_us``: a horizon ending there covers ``t_us``."""
    return (int(t_us) // slice_us + 1) * slice_us


def window_sums(slices: Mapping[int, Mapping[int, Any]], horizon: str, end_us: Optional[int],
                slice_us: int, total: Optional[Mapping[int, Any]] = None) -> Dict[int, list]:
    """THE horizon rule, shared by every path: ``all`` is ``total``; ``1h`` / ``24h`` sum
    each product's slices (``{pid: {slice: acc}}``) in ``[end - h, end)`` — ``end`` being
    the end of the newest complete slice — leaving out products that sum to nothing."""
    if HORIZON_US[horizon] is None:
        return dict(total or {})
    lo, hi = (end_us - HORIZON_US[horizon]) // slice_us, end_us // slice_us
    out: Dict[int, list] = {}
    for pid, per in slices.items():
        acc = None
        for s, part in per.items():
            if lo <= s < hi:
                if acc is None:
                    acc = new_acc()
                add_into(acc, part)
        if acc is not None and any(acc[:LAST]):
            out[pid] = acc
    return out


def recent_slices(slices: Mapping[int, Mapping[int, Any]], first: int) -> Dict[int, Dict[int, Any]]:
    """The slices numbered ``first`` or later (per product; products without any left out)."""
    out = {}
    for pid, per in slices.items():
        keep = {s: a for s, a in per.items() if s >= first}
        if keep:
            out[pid] = keep
    return out


# --------------------------------------------------------------------------- shard table
class ShardTable:
    """Per product: the all-time accumulator and per-slice accumulators (plain dicts, so
    the Beam step can keep it as one state value)."""

    def __init__(self, slice_us: int, data: Optional[dict] = None):
        self.slice_us = slice_us
        d = data or {}
        self.total: Dict[int, list] = d.get("total", {})
        self.slices: Dict[int, Dict[int, list]] = d.get("slices", {})  # pid → slice → acc
        self.latest_us: Optional[int] = d.get("latest_us")

    def data(self) -> dict:
        return {"total": self.total, "slices": self.slices, "latest_us": self.latest_us}

    def add(self, c) -> None:
        pid, t, acc = c
        cur = self.total.get(pid)
        if cur is None:
            cur = self.total[pid] = new_acc()
        add_into(cur, acc)
        s = t // self.slice_us
        per = self.slices.setdefault(pid, {})
        cur = per.get(s)
        if cur is None:
            cur = per[s] = new_acc()
        add_into(cur, acc)
        if self.latest_us is None or t > self.latest_us:
            self.latest_us = t

    def prune(self, end_us: int) -> None:
        """Forget slices that no horizon ending at or after ``end_us`` needs."""
        self.slices = recent_slices(self.slices, (end_us - HORIZON_US["24h"]) // self.slice_us)

    def view(self, horizon: str, end_us: Optional[int]) -> Dict[int, list]:
        """Accumulators of ``horizon``: all-time, or the slices in ``[end - h, end)``."""
        if HORIZON_US[horizon] is None:
            return self.total
        return window_sums(self.slices, horizon, end_us, self.slice_us)

    def final_slices(self, shard: int) -> "FinalSlices":
        """What a bounded input's end needs from this shard: its slices of the 24 h up to
        its newest slice (a horizon ending at the global newest slice needs no older)."""
        first = (slice_end_us(self.latest_us, self.slice_us) - HORIZON_US["24h"]) // self.slice_us
        return FinalSlices(shard, self.latest_us, recent_slices(self.slices, first))


# --------------------------------------------------------------------------- parts
class Part(NamedTuple):
    """One shard's contribution to one horizon's rankings (see the module doc)."""
    shard: int
    horizon: str
    end_us: Optional[int]            # E for 1h/24h, None for all
    as_of_us: Optional[int]          # newest record counted
    records: int                     # counted events + units (orders snapshots)
    maxima: tuple                    # per feature, over the shard's products
    groups: Dict[str, tuple]         # "brand:X" / "sub:Y" → feature sums (dwell in µs)
    candidates: Dict[int, tuple]     # pid → accumulator, the shard's n-skyband union
    table: Optional[Dict[int, tuple]] = None  # every product (only for the warehouse)


class FinalSlices(NamedTuple):
    """One shard's recent slices at the end of a bounded input (see :func:`final_snapshots`)."""
    shard: int
    latest_us: Optional[int]         # newest contribution of the shard
    slices: Dict[int, Dict[int, tuple]]  # pid → slice → accumulator (its last 24 h)


def _features(acc) -> tuple:
    return (acc[0], acc[1], acc[2], acc[3], acc[DWELL] / 1_000_000, acc[PURCHASES])


def product_dimensions(pid: int, products: Mapping[int, Any]) -> List[str]:
    """The product ranking dimensions a product belongs to (SPEC §4)."""
    dims = ["products"]
    p = products.get(pid)
    if p is None:
        return dims
    gender, season = (p.gender or "").strip(), (p.season or "").strip()
    if gender:
        dims.append(dimension_key("products", gender=gender))
    if season:
        dims.append(dimension_key("products", season=season))
    if gender and season:
        dims.append(dimension_key("products", gender, season))
    return dims


def group_names(pid: int, products: Mapping[int, Any]) -> List[str]:
    p = products.get(pid)
    if p is None:
        return []
    out = []
    if (p.brand or "").strip():
        out.append("brand:" + p.brand.strip())
    if (p.subCategory or "").strip():
        out.append("sub:" + p.subCategory.strip())
    return out


def skyband(items: List[Tuple[int, tuple]], n: int, active: Tuple[int, ...]) -> List[int]:
    """Product ids of ``items`` (pid, features) that fewer than ``n`` others beat under
    every positive scaling of the ``active`` (positively weighted) features. ``q`` beats
    ``p`` for sure when it is >= in every active feature and either has the smaller id
    (ties rank by id) or is strictly greater in an integer count (a gap no rounding of
    the score can close). Conservative: keeping more is always exact."""
    import numpy as np

    if len(items) <= n:
        return [pid for pid, _ in items]
    vecs = np.array([[f[i] for i in active] for _, f in items], dtype=float)
    ids = np.array([pid for pid, _ in items])
    counts = [k for k, i in enumerate(active) if i < 4 or i == PURCHASES]
    order = sorted(range(len(items)), key=lambda k: (-float(vecs[k].sum()), ids[k]))
    band: List[int] = []
    for k in order:
        if len(band) >= n:
            b = vecs[band]
            ge = np.all(b >= vecs[k], axis=1)
            if ge.any():
                strict = (ids[band] < ids[k])
                if counts:
                    strict = strict | np.any(b[:, counts] > vecs[k][counts], axis=1)
                if int(np.count_nonzero(ge & strict)) >= n:
                    continue
        band.append(k)
    return [int(ids[k]) for k in band]


def make_part(shard: int, horizon: str, end_us: Optional[int], table: Mapping[int, list],
              products: Mapping[int, Any], weights: Mapping[str, float], top_n: int,
              with_table: bool = False) -> Part:
    """One shard's :class:`Part` of a horizon from its accumulators."""
    active = tuple(i for i, f in enumerate(FEATURES) if weights[f] > 0)
    feats = {pid: _features(acc) for pid, acc in table.items()}
    maxima = tuple(max((f[i] for f in feats.values()), default=0.0) for i in range(6))
    groups: Dict[str, list] = {}
    dims: Dict[str, list] = {}
    as_of, records = None, 0
    for pid in sorted(table):
        acc = table[pid]
        if acc[LAST] is not None and (as_of is None or acc[LAST] > as_of):
            as_of = acc[LAST]
        records += acc[0] + acc[1] + acc[2] + acc[3] + acc[PURCHASES]
        for g in group_names(pid, products):
            cur = groups.get(g)
            if cur is None:
                cur = groups[g] = [0] * 6
            for i in range(6):
                cur[i] += acc[i]
        for d in product_dimensions(pid, products):
            dims.setdefault(d, []).append((pid, feats[pid]))
    keep = set()
    for items in dims.values():
        keep.update(skyband(items, top_n, active))
    return Part(shard, horizon, end_us, as_of, records, maxima,
                {g: tuple(v) for g, v in groups.items()},
                {pid: tuple(table[pid]) for pid in sorted(keep)},
                {pid: tuple(a) for pid, a in table.items()} if with_table else None)


def score(features: tuple, weights_: tuple, maxima: tuple) -> float:
    """``Σ_f w_f · x_f / max_f`` exactly as :func:`transforms.scoring.score_products`."""
    return math.fsum(wf * (x / m) for x, wf, m in zip(features, weights_, maxima) if m > 0)


def _ranked(items, top_n) -> List[Tuple[str, float]]:
    ordered = sorted(items, key=lambda kv: (-kv[1], kv[0]))[:top_n]
    return [(str(k), float(v)) for k, v in ordered]


def rank_parts(parts: Iterable[Part], products: Mapping[int, Any],
               weights: Mapping[str, float], top_n: int) -> Tuple[Dict[str, list], dict]:
    """The second stage: one horizon's parts (one per shard) → ``({dimension: ranking},
    info)``; info holds ``as_of_us``, ``records``, ``maxima``, ``scores`` (candidates)."""
    parts = list(parts)
    w = validate_weights(dict(weights))
    wv = tuple(w[f] for f in FEATURES)
    maxima = tuple(max((p.maxima[i] for p in parts), default=0.0) for i in range(6))
    cands: Dict[int, tuple] = {}
    groups: Dict[str, list] = {}
    as_of, records = None, 0
    for p in parts:
        cands.update(p.candidates)
        records += p.records
        if p.as_of_us is not None and (as_of is None or p.as_of_us > as_of):
            as_of = p.as_of_us
        for g, sums in p.groups.items():
            cur = groups.get(g)
            if cur is None:
                groups[g] = list(sums)
            else:
                for i in range(6):
                    cur[i] += sums[i]
    scores = {pid: score(_features(acc), wv, maxima) for pid, acc in cands.items()}
    by_dim: Dict[str, list] = {"products": []}
    for pid in sorted(scores):
        for d in product_dimensions(pid, products):
            by_dim.setdefault(d, []).append((pid, scores[pid]))
    rankings = {d: _ranked(items, top_n) for d, items in sorted(by_dim.items())}
    brands, subs = [], []
    for g, sums in sorted(groups.items()):
        kind, name = g.split(":", 1)
        (brands if kind == "brand" else subs).append((name, score(_features(sums), wv, maxima)))
    rankings["brands"] = _ranked(brands, top_n)
    rankings["subcategories"] = _ranked(subs, top_n)
    return rankings, {"as_of_us": as_of, "records": records, "maxima": maxima,
                      "scores": scores}


def snapshot_of_parts(horizon: str, parts: Iterable[Part], products: Mapping[int, Any],
                      weights: Mapping[str, float], top_n: int):
    """A :class:`~transforms.top_n.RankingSnapshot` from one horizon's parts (None when
    nothing is counted). With the parts' full tables, it also holds every product's
    engagement and score (for the warehouse)."""
    parts = list(parts)
    rankings, info = rank_parts(parts, products, weights, top_n)
    if info["as_of_us"] is None:
        return None
    end = max((p.end_us for p in parts if p.end_us is not None), default=None)
    as_of = info["as_of_us"] if end is None else min(end, info["as_of_us"])
    names, brands = {}, {}
    for dim, ranking in rankings.items():
        if dim.startswith("products"):
            for member, _ in ranking:
                p = products.get(int(member))
                if p is not None:
                    names[member], brands[member] = p.productDisplayName, p.brand
    engagements = scores = None
    if parts and all(p.table is not None for p in parts):
        w = validate_weights(dict(weights))
        wv = tuple(w[f] for f in FEATURES)
        full = {pid: acc for p in parts for pid, acc in p.table.items()}
        engagements = {pid: acc_to_engagement(list(full[pid])) for pid in sorted(full)}
        scores = {pid: score(_features(full[pid]), wv, info["maxima"]) for pid in sorted(full)}
    return RankingSnapshot(horizon, int(as_of), rankings, names, brands, info["records"],
                           end, engagements, scores)


def final_snapshot(horizon: str, finals: Iterable[FinalSlices], products: Mapping[int, Any],
                   weights: Mapping[str, float], top_n: int, slice_us: int):
    """The 1h / 24h snapshot at the end of a bounded input: every shard's slices summed
    over the horizon ending at the end of the newest slice holding any contribution
    (all shards), ranked through the same two stages. The bounded replay and the
    streaming graph both end here, so their rankings are identical."""
    finals = [f for f in finals if f.latest_us is not None]
    if not finals:
        return None
    end = max(slice_end_us(f.latest_us, slice_us) for f in finals)
    parts = []
    for f in sorted(finals, key=lambda f: f.shard):
        view = window_sums(f.slices, horizon, end, slice_us)
        if view:
            parts.append(make_part(f.shard, horizon, end, view, products, weights, top_n))
    if not parts:
        return None
    return snapshot_of_parts(horizon, parts, products, weights, top_n)


def split_final_slices(slices: Mapping[int, Mapping[int, Any]],
                       shards: int = DEFAULT_SHARDS) -> List[FinalSlices]:
    """A whole table of recent slices → the :class:`FinalSlices` the shard step would
    send (the bounded replay ranks its 1h / 24h through :func:`final_snapshot` too)."""
    by: Dict[int, dict] = {}
    for pid, per in slices.items():
        by.setdefault(shard_of(pid, shards), {})[int(pid)] = per
    out = []
    for s in sorted(by):
        latest = max(max(a[LAST] for a in per.values() if a[LAST] is not None)
                     for per in by[s].values())
        out.append(FinalSlices(s, latest, by[s]))
    return out


def parts_of_table(engagements: Mapping[int, Engagement], horizon: str, end_us, products,
                   weights, top_n: int, shards: int = DEFAULT_SHARDS) -> List[Part]:
    """A whole engagement table → its parts, as the shard step would cut it (the bounded
    replay ranks through the same two stages, so both agree bit for bit)."""
    by: Dict[int, Dict[int, list]] = {}
    for pid, e in engagements.items():
        by.setdefault(shard_of(pid, shards), {})[int(pid)] = engagement_to_acc(e)
    return [make_part(s, horizon, end_us, by[s], products, weights, top_n, with_table=True)
            for s in sorted(by)]


# --------------------------------------------------------------------------- Beam
def load_products(source) -> Dict[int, Any]:
    """``{id: Product}`` from a dict (tests) or product table paths (read by the worker
    in ``setup``: timer callbacks have no side inputs; bad rows are dead-lettered by the
    pipeline's own ReadProducts step). Read once per process and paths (the local
    runner sets a DoFn up for every bundle)."""
    if source is None:
        return {}
    if isinstance(source, Mapping):
        return dict(source)
    return _read_products(tuple(source))


@functools.lru_cache(maxsize=8)
def _read_products(paths: Tuple[str, ...]) -> Dict[int, Any]:
    out = {}
    for path in paths:
        for rec in read_csv_records(path, "product"):
            if not isinstance(rec, DeadLetter):
                out[rec.id] = rec
    return out


def _ms_up(us: int) -> int:
    return -(-us // 1000) * 1000


_END_OF_INPUT = window.GlobalWindow().max_timestamp()


class _ShardFn(beam.DoFn):
    """Keyed by shard (global window): the shard's :class:`ShardTable` and its parts.

    Live (``decay``) it emits every horizon as the watermark (the wall clock) passes
    slice ends. On a bounded input the watermark only reaches the end of the input, so
    it emits ``all`` and, when the input ends (``FINAL``), its recent slices
    (:class:`FinalSlices`): the merge cuts 1h / 24h at the newest slice of all shards."""

    IN = BagStateSpec("in", coders.FastPrimitivesCoder())
    TABLE = ReadModifyWriteStateSpec("table", coders.PickleCoder())
    # the timers armed, apart from the table: every element reads these, not the table
    ARMED = ReadModifyWriteStateSpec("armed", coders.PickleCoder())
    EMIT = TimerSpec("emit", TimeDomain.WATERMARK)
    FINAL = TimerSpec("shard_final", TimeDomain.WATERMARK)

    def __init__(self, weights, top_n, slice_us, refresh_us, decay, with_table, products):
        self.weights, self.top_n = dict(weights), int(top_n)
        self.slice_us, self.refresh_us = slice_us, refresh_us
        self.decay, self.with_table = decay, with_table
        self.products_source = products
        self.elements = Metrics.counter(NS, "shard_elements")
        self.parts = Metrics.counter(NS, "parts")

    def setup(self):
        self.products = load_products(self.products_source)

    def process(self, element, ts=beam.DoFn.TimestampParam, state=beam.DoFn.StateParam(IN),
                flags=beam.DoFn.StateParam(ARMED), emit=beam.DoFn.TimerParam(EMIT),
                final=beam.DoFn.TimerParam(FINAL)):
        _, contribs = element
        self.elements.inc()
        state.add(contribs)
        data = flags.read() or {}
        armed = data.get("armed")
        # the next point of the refresh grid (common to all shards: the merge ranks
        # all their parts of one step at once) after the newest contribution and the
        # element itself: a timer never holds before its input (settled events reach
        # the shard after their own time), so nothing it emits is behind the watermark
        newest = max(max(c[1] for c in contribs), ts.micros)
        t = min((newest // self.refresh_us + 1) * self.refresh_us, _END_OF_INPUT.micros)
        changed = False
        if armed is None or t < armed:
            data["armed"] = _ms_up(t)
            emit.set(Timestamp(micros=data["armed"]))
            changed = True
        if not data.get("final"):
            data["final"] = True
            final.set(_END_OF_INPUT)
            changed = True
        if changed:
            flags.write(data)

    def _fold(self, data, state) -> ShardTable:
        t = ShardTable(self.slice_us, data.get("tables"))
        for contribs in state.read():
            for c in contribs:
                t.add(c)
        state.clear()
        return t

    @on_timer(EMIT)
    def on_emit(self, key=beam.DoFn.KeyParam, ts=beam.DoFn.TimestampParam,
                state=beam.DoFn.StateParam(IN), table=beam.DoFn.StateParam(TABLE),
                flags=beam.DoFn.StateParam(ARMED), emit=beam.DoFn.TimerParam(EMIT)):
        data = table.read() or {}
        t = self._fold(data, state)
        end = ts.micros // self.slice_us * self.slice_us
        prods = self.products
        if self.decay:
            t.prune(end)
        elif t.latest_us is not None:  # the end of the input needs its last 24 h only
            t.prune(slice_end_us(t.latest_us, self.slice_us))
        for h in HORIZONS:
            if HORIZON_US[h] is not None and not self.decay:
                continue  # bounded input: 1h / 24h are cut once, at its end (on_final)
            yield h, make_part(key, h, None if HORIZON_US[h] is None else end, t.view(h, end),
                               prods, self.weights, self.top_n,
                               with_table=self.with_table and self.decay and HORIZON_US[h] is None)
            self.parts.inc()
        # live: older slices age out, minute by minute
        nxt = end + self.slice_us if self.decay and t.slices else None
        armed = dict(flags.read() or {}, armed=None if nxt is None else _ms_up(nxt))
        if nxt is not None:
            emit.set(Timestamp(micros=armed["armed"]))
        flags.write(armed)
        table.write({"tables": t.data()})

    @on_timer(FINAL)
    def on_final(self, key=beam.DoFn.KeyParam, state=beam.DoFn.StateParam(IN),
                 table=beam.DoFn.StateParam(TABLE)):
        data = table.read() or {}
        t = self._fold(data, state)
        table.write(dict(data, tables=t.data()))
        if t.latest_us is None:
            return
        if self.with_table and not self.decay:
            # a bounded input's warehouse tables: every product, once, at its end
            yield "all", make_part(key, "all", None, t.view("all", None), self.products,
                                   self.weights, self.top_n, with_table=True)
            self.parts.inc()
        final = t.final_slices(key)
        for h in HORIZONS:
            if HORIZON_US[h] is not None:
                yield h, final


class _MergeFn(beam.DoFn):
    """Keyed by horizon: the newest part of every shard → a ranking snapshot, once per
    watermark step (shards emit on a common ``refresh`` grid, so one snapshot ranks all
    their parts of that step, not one per part); at the end of a bounded input, the
    shards' :class:`FinalSlices` → the final 1h / 24h snapshot."""

    PARTS = ReadModifyWriteStateSpec("parts", coders.PickleCoder())   # {shard: Part}
    INCOMING = BagStateSpec("incoming", coders.PickleCoder())          # parts to rank
    ARMED = ReadModifyWriteStateSpec("armed", coders.VarIntCoder())    # rank timer, µs
    FINALS = BagStateSpec("finals", coders.PickleCoder())
    FINAL = TimerSpec("ranked_final", TimeDomain.WATERMARK)
    RANK = TimerSpec("rank", TimeDomain.WATERMARK)

    def __init__(self, weights, top_n, products, slice_us=DEFAULT_SLICE_SECONDS * 1_000_000):
        self.weights, self.top_n = dict(weights), int(top_n)
        self.products_source = products
        self.slice_us = slice_us
        self.snapshots = Metrics.counter("shopstream", "ranking_snapshots")

    def setup(self):
        self.products = load_products(self.products_source)

    def process(self, element, ts=beam.DoFn.TimestampParam,
                incoming=beam.DoFn.StateParam(INCOMING), armed=beam.DoFn.StateParam(ARMED),
                finals=beam.DoFn.StateParam(FINALS), final=beam.DoFn.TimerParam(FINAL),
                rank=beam.DoFn.TimerParam(RANK)):
        horizon, part = element
        if isinstance(part, FinalSlices):
            finals.add(part)
            final.set(_END_OF_INPUT)
            return
        incoming.add((ts.micros, part))  # only this part is encoded, not every shard's
        at = armed.read()
        if at is None or ts.micros < at:
            armed.write(ts.micros)
            rank.set(ts)

    @on_timer(RANK)
    def on_rank(self, key=beam.DoFn.KeyParam, parts=beam.DoFn.StateParam(PARTS),
                incoming=beam.DoFn.StateParam(INCOMING), armed=beam.DoFn.StateParam(ARMED)):
        have = parts.read() or {}
        newest: Dict[int, tuple] = {}
        for at, part in incoming.read():  # a bag has no order: the latest emission wins
            if part.shard not in newest or at >= newest[part.shard][0]:
                newest[part.shard] = (at, part)
        changed = False
        for shard, (_, part) in newest.items():
            if have.get(shard) != part:
                have[shard] = part
                changed = True
        incoming.clear()
        armed.clear()
        if not changed:
            return
        parts.write(have)
        snap = snapshot_of_parts(key, have.values(), self.products, self.weights, self.top_n)
        if snap is not None:
            self.snapshots.inc()
            yield snap

    @on_timer(FINAL)
    def on_final(self, key=beam.DoFn.KeyParam, finals=beam.DoFn.StateParam(FINALS)):
        snap = final_snapshot(key, finals.read(), self.products, self.weights, self.top_n,
                              self.slice_us)
        finals.clear()
        if snap is not None:
            self.snapshots.inc()
            yield snap


class SlicedRankings(beam.PTransform):
    """``(session_batches, transactions) | SlicedRankings(products, weights)`` →
    :class:`~transforms.top_n.RankingSnapshot` per horizon, as they change.

    Labels: ``Contributions``, ``OrderContributions``, ``AllContributions``,
    ``ShardState``, ``MergeShards`` (and ``GlobalWindow`` for windowed input)."""

    def __init__(self, products, weights=None, *, top_n: int = 50,
                 slice_seconds: int = DEFAULT_SLICE_SECONDS, shards: int = DEFAULT_SHARDS,
                 refresh: float = DEFAULT_REFRESH, decay: bool = False,
                 with_table: bool = False, label: Optional[str] = None):
        super().__init__(label)
        if int(slice_seconds) <= 0 or 3600 % int(slice_seconds):
            raise ValueError(f"slice_seconds must divide 3600, got {slice_seconds}")
        if int(shards) < 1:
            raise ValueError(f"shards must be at least 1, got {shards}")
        if float(refresh) < 0:
            raise ValueError(f"refresh must be >= 0 s, got {refresh}")
        self.products = products
        self.weights = validate_weights(dict(weights if weights is not None else DEFAULT_WEIGHTS))
        self.top_n, self.shards = int(top_n), int(shards)
        self.slice_us = int(slice_seconds) * 1_000_000
        self.refresh_us = max(1000, int(float(refresh) * 1_000_000))
        self.decay, self.with_table = decay, with_table

    def expand(self, inputs):
        batches, orders = inputs
        n = self.shards
        parts = [batches | "Contributions" >> beam.FlatMap(
            lambda b: by_shard(batch_contributions(b), n)).with_output_types(KV[int, Any])]
        if orders is not None:
            parts.append(orders | "OrderContributions" >> beam.FlatMap(
                lambda t: by_shard(order_contributions(t), n)).with_output_types(KV[int, Any]))
        keyed = tuple(parts) | "AllContributions" >> beam.Flatten()
        if not isinstance(keyed.windowing.windowfn, window.GlobalWindows):
            keyed = keyed | "GlobalWindow" >> beam.WindowInto(window.GlobalWindows())
        # Parts leave the shard step keyed by horizon (one step fewer per bundle).
        shard_parts = keyed | "ShardState" >> beam.ParDo(_ShardFn(
            self.weights, self.top_n, self.slice_us, self.refresh_us, self.decay,
            self.with_table, self.products)).with_output_types(KV[str, Any])
        return shard_parts | "MergeShards" >> beam.ParDo(
            _MergeFn(self.weights, self.top_n, self.products, self.slice_us))
