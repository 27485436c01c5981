"""Engagement per product (SPEC §2 "Engagement per product").

Pure functions (no Beam needed) turn one enriched click event or one transaction into
``(product_id, Engagement)`` contributions and add them up; :class:`EngagementCombineFn`
does the same inside Beam, and :class:`ProductEngagement` windows the contributions per
ranking horizon (``1h``, ``24h`` sliding in event time, ``all`` in the global window).

Per product: click_count, item_detail_count, add_to_cart_count, homepage_count (events of
that type carrying, or inferred to carry, the product), total_dwell_seconds (dwell summed
over events of any type carrying or inferred to carry it; a null dwell counts 0) and
purchases (units in booking lines of ``payment_status == "Success"`` transactions).

Order independence: dwell is accumulated as integer microseconds, so a sum never depends on
arrival order or bundle boundaries (float addition is not associative).
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, List, Mapping, NamedTuple, Optional, Sequence, Tuple

import apache_beam as beam
from apache_beam.options.pipeline_options import StandardOptions
from apache_beam.transforms import trigger, window
from apache_beam.utils.timestamp import MAX_TIMESTAMP, MIN_TIMESTAMP, Timestamp
from apache_beam.utils.windowed_value import WindowedValue

from transforms.ranking_store import HORIZONS
from transforms.scoring import FEATURES  # the six features, in SPEC order

#: event_name → the count feature it increments (other events only add dwell).
EVENT_COUNTS = {
    "CLICK": "click_count",
    "ITEM_DETAIL": "item_detail_count",
    "ADD_TO_CART": "add_to_cart_count",
    "HOMEPAGE": "homepage_count",
}

#: The ranking horizons and their sliding-window sizes in seconds (None = all time).
HORIZON_SIZES = {"1h": 3600, "24h": 86400, "all": None}
DEFAULT_PERIODS = {"1h": 300, "24h": 3600}


class Engagement(NamedTuple):
    """One product's engagement over some span of event time.

    ``last_seen_us`` is the event time (µs since the epoch) of the latest record that
    contributed; it tells the ranker how far the all-time rankings are current.
    """
    click_count: int = 0
    item_detail_count: int = 0
    add_to_cart_count: int = 0
    homepage_count: int = 0
    total_dwell_seconds: float = 0.0
    purchases: int = 0
    last_seen_us: Optional[int] = None

    def features(self) -> Tuple[float, ...]:
        """The six SPEC features, in :data:`FEATURES` order."""
        return tuple(self[:6])

    @property
    def records(self) -> int:
        """Counted events (click, item detail, add to cart, homepage) plus units bought:
        grows with every accumulating pane of a window (orders snapshots of it)."""
        return (self.click_count + self.item_detail_count + self.add_to_cart_count
                + self.homepage_count + self.purchases)


if Engagement._fields[:6] != FEATURES:  # pragma: no cover - guards a future edit
    raise ImportError("Engagement fields must follow transforms.scoring.FEATURES")


# --------------------------------------------------------------------------- pure
_COUNT_INDEX = {name: FEATURES.index(f) for name, f in EVENT_COUNTS.items()}
_DWELL, _PURCHASES, _LAST = 4, 5, 6  # accumulator slots (see _new_acc)


def _new_acc() -> list:
    # [click, item_detail, add_to_cart, homepage, dwell_us, purchases, last_seen_us]
    return [0, 0, 0, 0, 0, 0, None]


def _dwell_us(seconds: Optional[float]) -> int:
    if seconds is None or seconds != seconds or seconds <= 0:
        return 0
    return int(round(seconds * 1_000_000))


def _max_opt(a: Optional[int], b: Optional[int]) -> Optional[int]:
    if a is None:
        return b
    if b is None:
        return a
    return a if a >= b else b


def event_contribution(event: Any) -> List[Tuple[int, list]]:
    """One enriched event → ``[(product_id, accumulator)]`` (empty without a product).

    Works on anything with ``product_id``, ``event_name``, ``event_time_us`` and
    (optionally) ``dwell_seconds`` — an ``EnrichedEvent`` or a plain ``ClickEvent``.
    """
    pid = getattr(event, "product_id", None)
    if pid is None:
        return []
    acc = _new_acc()
    idx = _COUNT_INDEX.get(event.event_name)
    if idx is not None:
        acc[idx] = 1
    acc[_DWELL] = _dwell_us(getattr(event, "dwell_seconds", None))
    acc[_LAST] = getattr(event, "event_time_us", None)
    return [(int(pid), acc)]


def transaction_contribution(txn: Any) -> List[Tuple[int, list]]:
    """One transaction → a purchases contribution per booking line (Success only)."""
    if getattr(txn, "payment_status", None) != "Success":
        return []
    out = []
    for line in txn.lines:
        acc = _new_acc()
        acc[_PURCHASES] = int(line.quantity)
        acc[_LAST] = getattr(txn, "created_at_us", None)
        out.append((int(line.product_id), acc))
    return out


def engagement_to_acc(e: Engagement) -> list:
    return [e.click_count, e.item_detail_count, e.add_to_cart_count, e.homepage_count,
            _dwell_us(e.total_dwell_seconds), e.purchases, e.last_seen_us]


def _add_into(total: list, part: list) -> None:
    for i in range(6):
        total[i] += part[i]
    total[_LAST] = _max_opt(total[_LAST], part[_LAST])


def acc_to_engagement(acc: list) -> Engagement:
    return Engagement(acc[0], acc[1], acc[2], acc[3], acc[_DWELL] / 1_000_000,
                      acc[_PURCHASES], acc[_LAST])


def merge_engagements(*items: Engagement) -> Engagement:
    """Add up engagements of the same product (order-independent)."""
    total = _new_acc()
    for e in items:
        _add_into(total, engagement_to_acc(e))
    return acc_to_engagement(total)


def compute_engagement(events: Iterable[Any] = (), transactions: Iterable[Any] = ()
                       ) -> Dict[int, Engagement]:
    """All events and transactions → ``{product_id: Engagement}`` (no Beam needed)."""
    table: Dict[int, list] = {}
    for source, fn in ((events, event_contribution), (transactions, transaction_contribution)):
        for record in source:
            for pid, part in fn(record):
                acc = table.get(pid)
                if acc is None:
                    table[pid] = part
                else:
                    _add_into(acc, part)
    return {pid: acc_to_engagement(acc) for pid, acc in sorted(table.items())}


def engagement_records(engagements: Mapping[int, Engagement]) -> int:
    """Records counted in a window: grows with every accumulating pane of the window."""
    return sum(e.records for e in engagements.values())


def engagement_as_of_us(engagements: Mapping[int, Engagement]) -> Optional[int]:
    """The event time of the latest record counted (None for an empty table)."""
    last = None
    for e in engagements.values():
        last = _max_opt(last, e.last_seen_us)
    return last


# --------------------------------------------------------------------------- Beam
def _accumulate(table: Dict[int, list], pid: int, part) -> None:
    """Add one product's accumulator ``part`` into ``table`` (a copy when it is new)."""
    cur = table.get(pid)
    if cur is None:
        table[pid] = list(part)
    else:
        _add_into(cur, part)


class EngagementCombineFn(beam.CombineFn):
    """``(product_id, contribution)`` elements → ``{product_id: Engagement}``.

    A contribution is an accumulator list from :func:`event_contribution` /
    :func:`transaction_contribution`, or an :class:`Engagement`. The accumulator is one
    dict per window (all the window's products), so the ranker gets the whole window in
    one element; combiner lifting keeps the shuffle to one partial table per bundle.
    """

    def create_accumulator(self) -> Dict[int, list]:
        return {}

    def add_input(self, acc: Dict[int, list], element) -> Dict[int, list]:
        if isinstance(element, dict):  # a partial table {pid: accumulator} (batched replay)
            return self.merge_accumulators([acc, element]) if acc else {
                pid: list(part) for pid, part in element.items()}
        pid, part = element
        if isinstance(part, Engagement):
            part = engagement_to_acc(part)
        _accumulate(acc, pid, part)
        return acc

    def merge_accumulators(self, accumulators) -> Dict[int, list]:
        it = iter(accumulators)
        total = next(it, None)
        if total is None:
            return {}
        for acc in it:
            for pid, part in acc.items():
                _accumulate(total, pid, part)
        return total

    def compact(self, acc):
        return acc

    def extract_output(self, acc: Dict[int, list]) -> Dict[int, Engagement]:
        return {pid: acc_to_engagement(part) for pid, part in sorted(acc.items())}


def horizon_windowing(horizon: str, *, streaming: bool = True, period: Optional[int] = None,
                      allowed_lateness: int = 3600, early_seconds: int = 10,
                      late_seconds: int = 10) -> beam.WindowInto:
    """The ``WindowInto`` of a horizon (accumulating panes everywhere).

    * ``1h`` / ``24h``: SlidingWindows(size, period) in event time. Streaming: fires when
      the watermark passes the window end, then again for late data at most every
      ``late_seconds`` of processing time, for ``allowed_lateness`` seconds (the
      sessionizer emits an event only once its dwell is known, i.e. after the fact).
    * ``all``: the global window. Streaming: fires early every ``early_seconds`` of
      processing time after new records arrive, so all-time rankings move while events
      stream; and a final pane when the watermark reaches the end of a bounded input.
    * Batch (``streaming=False``): a single pane per window at the end of the input.
      Processing-time triggers are not supported by the batch DirectRunner (FnApiRunner
      has no clock for them), and early panes of a bounded input are only extra work.
    """
    if horizon not in HORIZON_SIZES:
        raise ValueError(f"unknown horizon {horizon!r}; expected one of {', '.join(HORIZONS)}")
    size = HORIZON_SIZES[horizon]
    accumulating = trigger.AccumulationMode.ACCUMULATING
    if size is None:
        if not streaming:
            return beam.WindowInto(window.GlobalWindows(), trigger=trigger.AfterWatermark(),
                                   accumulation_mode=accumulating)
        # Not AfterAny(AfterCount, AfterProcessingTime): on the DirectRunner that
        # composite fires only once (measured with Beam 2.77), a plain processing-time
        # early trigger re-arms after every pane.
        early = trigger.AfterProcessingTime(max(1, int(early_seconds)))
        return beam.WindowInto(window.GlobalWindows(),
                               trigger=trigger.AfterWatermark(early=early),
                               accumulation_mode=accumulating)
    period = int(period or DEFAULT_PERIODS[horizon])
    if period <= 0 or size % period:
        raise ValueError(f"period for {horizon} must divide {size} s, got {period}")
    if not streaming:
        return beam.WindowInto(window.SlidingWindows(size, period),
                               trigger=trigger.AfterWatermark(), accumulation_mode=accumulating)
    return beam.WindowInto(
        window.SlidingWindows(size, period),
        trigger=trigger.AfterWatermark(
            late=trigger.AfterProcessingTime(max(1, int(late_seconds)))),
        accumulation_mode=accumulating, allowed_lateness=allowed_lateness)


class _LabelWindow(beam.DoFn):
    """{pid: Engagement} in a window → (horizon, window_end_us or None, {pid: Engagement})."""

    def __init__(self, horizon: str):
        self.horizon = horizon

    def process(self, table, w=beam.DoFn.WindowParam):
        if not table:
            return
        yield (self.horizon, window_end_us(w), table)


class ProductEngagement(beam.PTransform):
    """``(events, transactions) | ProductEngagement(horizons)`` → windowed engagement.

    Inputs carry event-time timestamps (an event's ``event_time``, a transaction's
    ``created_at``). Output: one element per horizon window (and pane),
    ``(horizon, window_end_us or None, {product_id: Engagement})`` — ``None`` for ``all``.
    With ``flatten=True`` (default) all horizons come in one PCollection re-windowed into
    the global window (plain ParDos such as :class:`~transforms.top_n.RankWindows`
    follow); with ``flatten=False`` a dict ``{horizon: PCollection}`` keeps each
    horizon's windowing.

    Triggers follow the pipeline's ``--streaming`` option (override with ``streaming=``):
    see :func:`horizon_windowing`.

    ``replay_tail=True`` (bounded input, batch only) computes just the last window of each
    sliding horizon — the one that covers the final hour / day of the data, i.e. what a
    live pipeline would show at the end — instead of every window of the replay (a
    replay of months would rank ~290 windows a day only for Redis to keep the newest).

    ``batched=True`` (with ``replay_tail``): the events PCollection holds *lists* of
    enriched events (``sessions.SessionizeBuckets``); each bundle's lists are reduced to
    one partial table for ``all`` and only the events near a list's end (within the
    largest sliding size of its last event — a superset of the global tail) go on as
    single contributions for the sliding horizons. Same results, far fewer elements.

    The input is ``(events, transactions)``, a dict with keys ``events`` and/or
    ``transactions``, or a single events PCollection (no orders). Labels are stable:
    ``Events``, ``Transactions``, ``Contributions``, ``{horizon}/Window``,
    ``{horizon}/Combine``, ``{horizon}/Label``, ``{horizon}/Rewindow``, ``Flatten`` (and
    ``Tail/*``, ``{horizon}/Tail``, ``{horizon}/TailWindow`` with ``replay_tail``).
    """

    def __init__(self, horizons: Sequence[str] = HORIZONS, *,
                 periods: Optional[Mapping[str, int]] = None, allowed_lateness: int = 3600,
                 early_seconds: int = 10, late_seconds: int = 10, flatten: bool = True,
                 streaming: Optional[bool] = None, replay_tail: bool = False,
                 batched: bool = False, label: Optional[str] = None):
        super().__init__(label)
        if isinstance(horizons, str):
            horizons = [h.strip() for h in horizons.split(",") if h.strip()]
        unknown = [h for h in horizons if h not in HORIZON_SIZES]
        if unknown or not horizons:
            raise ValueError(f"unknown horizon(s) {unknown or horizons!r}; "
                             f"expected some of {', '.join(HORIZONS)}")
        self.horizons = tuple(dict.fromkeys(horizons))
        self.periods = dict(DEFAULT_PERIODS, **(periods or {}))
        self.allowed_lateness = allowed_lateness
        self.early_seconds = early_seconds
        self.late_seconds = late_seconds
        self.flatten = flatten
        self.streaming = streaming
        self.replay_tail = replay_tail
        self.batched = batched
        if batched and not replay_tail:
            raise ValueError("batched=True is the bounded replay path: it needs replay_tail=True")
        for h in self.horizons:  # validate periods now, not at expansion
            self._windowing(h, True)

    def _windowing(self, horizon: str, streaming: bool) -> beam.WindowInto:
        return horizon_windowing(
            horizon, streaming=streaming, period=self.periods.get(horizon),
            allowed_lateness=self.allowed_lateness,
            early_seconds=self.early_seconds,
            late_seconds=self.late_seconds)

    def expand(self, inputs):
        events, transactions = _split_inputs(inputs)
        streaming = self.streaming
        if streaming is None:
            pipeline = (events if events is not None else transactions).pipeline
            streaming = bool(pipeline.options.view_as(StandardOptions).streaming)
        if self.replay_tail and streaming:
            raise ValueError("replay_tail needs bounded input in batch mode (not --streaming)")
        parts, all_parts = [], None
        if self.batched and events is not None:
            # events are lists of enriched events: one partial table per list for the
            # all-time horizon; single contributions only near the end of the list's
            # event time (the global tail starts after the list's last time - size).
            max_size = max((HORIZON_SIZES[h] or 0) for h in self.horizons) * 1_000_000
            ev = events | "Events" >> beam.ParDo(_BatchContributions(max_size)).with_outputs(
                _TAIL, main="tables")
            parts.append(ev[_TAIL] | "Events/Rewindow" >> beam.WindowInto(window.GlobalWindows()))
            all_parts = [ev.tables]
            events = None
        if events is not None:
            parts.append(events | "Events" >> beam.FlatMap(event_contribution)
                         | "Events/Rewindow" >> beam.WindowInto(window.GlobalWindows()))
        if transactions is not None:
            parts.append(transactions | "Transactions" >> beam.FlatMap(transaction_contribution)
                         | "Transactions/Rewindow" >> beam.WindowInto(window.GlobalWindows()))
        if not parts:
            raise ValueError("ProductEngagement needs events and/or transactions")
        contributions = tuple(parts) | "Contributions" >> beam.Flatten()
        all_source = contributions
        if all_parts is not None:
            all_source = tuple(all_parts + parts[1:]) | "AllContributions" >> beam.Flatten()
        last = None
        if self.replay_tail and any(HORIZON_SIZES[h] for h in self.horizons):
            last = beam.pvalue.AsSingleton(
                contributions | "Tail/LastTime" >> beam.Map(lambda kv: kv[1][_LAST])
                | "Tail/Max" >> beam.CombineGlobally(_max_or_none))
        out = {}
        for h in self.horizons:
            size = HORIZON_SIZES[h]
            tail = None
            if last is not None and size:
                tail = (size * 1_000_000, int(self.periods[h]) * 1_000_000)
                source = contributions | f"{h}/Tail" >> beam.Filter(_in_tail, tail, last)
            else:
                source = all_source if size is None else contributions
            out[h] = (source
                      | f"{h}/Window" >> self._windowing(h, streaming)
                      | f"{h}/Combine" >> beam.CombineGlobally(EngagementCombineFn()).without_defaults()
                      | f"{h}/Label" >> beam.ParDo(_LabelWindow(h)))
            if tail is not None:
                out[h] = out[h] | f"{h}/TailWindow" >> beam.Filter(_is_tail_window, tail, last)
        if not self.flatten:
            return out
        rewindowed = [out[h] | f"{h}/Rewindow" >> beam.WindowInto(window.GlobalWindows())
                      for h in self.horizons]
        return tuple(rewindowed) | "Flatten" >> beam.Flatten()


_TAIL = "tail"


class _BatchContributions(beam.DoFn):
    """A list of enriched events → one ``{product_id: accumulator}`` table (main output)
    and, on ``tail``, the single timestamped contributions of the events within
    ``max_size_us`` of the list's last contribution (all a tail window can need)."""

    def __init__(self, max_size_us: int):
        self.max_size_us = max_size_us

    def start_bundle(self):
        self.table: Dict[int, list] = {}  # one partial table per bundle, not per list
        self._tail: list = []

    def process(self, batch):
        # A SessionBatch: each add counts once from ``adds``; settled events bring the
        # rest (an add only its dwell) — the rule of transforms.slices.batch_contributions,
        # inlined here (the hot loop of the bounded replay).
        events = batch.enriched
        last = max((e.event_time_us for e in events if e.product_id is not None), default=None)
        if last is None:
            return
        cut = last - self.max_size_us if self.max_size_us else None
        table, counts = self.table, _COUNT_INDEX
        add_idx = _COUNT_INDEX["ADD_TO_CART"]
        for e in events:
            pid = e.product_id
            if pid is None:
                continue
            pid = int(pid)
            idx = counts.get(e.event_name)
            if idx == add_idx and not e.product_id_inferred:
                idx = None  # counted from batch.adds
            dwell = _dwell_us(e.dwell_seconds)
            t = e.event_time_us
            self._add(table, pid, idx, dwell, t, cut)
        for pid, t in batch.adds:
            self._add(table, int(pid), add_idx, 0, t, cut)
        tail, self._tail = self._tail, []
        for v in tail:
            yield beam.pvalue.TaggedOutput(_TAIL, v)

    def _add(self, table, pid, idx, dwell, t, cut):
        cur = table.get(pid)
        if cur is None:
            cur = table[pid] = _new_acc()
        if idx is not None:
            cur[idx] += 1
        cur[_DWELL] += dwell
        if cur[_LAST] is None or t > cur[_LAST]:
            cur[_LAST] = t
        if cut is not None and t >= cut:
            part = _new_acc()
            if idx is not None:
                part[idx] = 1
            part[_DWELL], part[_LAST] = dwell, t
            self._tail.append(window.TimestampedValue((pid, part), Timestamp(micros=t)))

    def finish_bundle(self):
        if self.table:
            table, self.table = self.table, {}
            yield WindowedValue(table, MIN_TIMESTAMP, [window.GlobalWindow()])


def _max_or_none(values):
    return max((v for v in values if v is not None), default=None)


def tail_window_end_us(last_us: int, period_us: int) -> int:
    """End of the earliest sliding window that holds the event at ``last_us`` — the one
    covering the final ``size`` of the data (later windows hold less of it)."""
    return (last_us // period_us + 1) * period_us


def _in_tail(kv, tail, last_us) -> bool:
    size_us, period_us = tail
    t = kv[1][_LAST]
    if t is None or last_us is None:
        return False
    return t >= tail_window_end_us(last_us, period_us) - size_us


def _is_tail_window(element, tail, last_us) -> bool:
    _, period_us = tail
    return last_us is not None and element[1] == tail_window_end_us(last_us, period_us)


def _split_inputs(inputs):
    if isinstance(inputs, beam.pvalue.PCollection):
        return inputs, None
    if isinstance(inputs, dict):
        unknown = set(inputs) - {"events", "transactions"}
        if unknown:
            raise ValueError(f"ProductEngagement inputs: unknown key(s) {sorted(unknown)}")
        return inputs.get("events"), inputs.get("transactions")
    items = tuple(inputs)
    if len(items) == 1:
        return items[0], None
    if len(items) != 2:
        raise ValueError("ProductEngagement takes (events, transactions)")
    return items


def window_end_us(w) -> Optional[int]:
    """A window's end in µs, None for the global window."""
    if isinstance(w, window.GlobalWindow) or w.end >= MAX_TIMESTAMP:
        return None
    return w.end.micros
