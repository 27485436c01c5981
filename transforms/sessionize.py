"""Beam: the stateful sessionisation step (SPEC §2 visits, dwell, product-id inference).

``Sessionize`` turns a PCollection of :class:`~transforms.records.ClickEvent` (elements
carry their event time as Beam timestamp) into

* ``"enriched"`` — :class:`~transforms.session_rules.SessionBatch` elements (the one
  element type of every mode): the ADD_TO_CART events accepted by a firing (``adds``,
  at the first firing after they arrive, i.e. at once) and the
  :class:`~transforms.session_rules.EnrichedEvent` of each distinct event as soon as it is
  *settled* (``enriched``; see ``transforms/session_rules.py`` for the rule: once the
  watermark is past the last event its dwell/inference look at, or past its visit end);
* ``"duplicates"`` — redelivered events (an event_id already known for the session);
* ``"late"`` — :class:`~transforms.records.DeadLetter` records (source ``"sessions"``,
  the event as a Fashion Campus JSON record, the reason) for events that arrive after
  output they would change was emitted. They are not merged, so emitted visits never
  contradict each other; the raw JSON can be replayed.

Two implementations, same results (``mode``):

* ``"stateful"`` (any input; the only choice for streams) — ``SessionizeFn``, keyed by
  session_id in the GLOBAL window (Dataflow has no stateful DoFns in merging windows),
  with two event-time timers. ``KeyBySession`` hands it each session's events of a
  bundle as one element. ``process()`` appends them to the session's bag and
  moves ``flush`` down to ``t + 1`` when needed (the earliest moment this arrival lets
  anything settle). That firing sees the arrival and re-arms ``close`` at the visit end,
  so ``process()`` never moves ``close``: one timer write per session and bundle, not
  per event. A firing hands the bag to the pure
  :func:`~transforms.session_rules.advance`: dedup and late check of the new arrivals,
  emit what is final, keep only the events from the first non-final one on, re-arm
  ``flush`` at the next settle point and ``close`` at the visit end — or, once nothing is
  pending, at the expiry of the remembered event ids (``dedup_ttl`` of event time after
  their visit closed), when all state is cleared. Visits are computed from the buffer,
  so a gap inside one bundle (the watermark only moves between bundles) needs no special
  case.
* ``"grouped"`` (bounded input only) — GroupByKey + :func:`enrich_session` per session.
  No state API, several times faster for batch replays; ``"auto"`` picks it for bounded
  input.

Cost model (measured, Beam 2.77): every state cell a bundle touches costs a cache load
or put, and the SDK harness sizes each put with objsize (~0.25 ms, scanning all loaded
modules). So a session's whole state is ONE bag, ``process()`` never writes anything but
a blind append, and a firing rewrites the bag once: a few state operations per session
per bundle, independent of its number of events.

Note for consumers: the firings of one bundle leave as ONE batch (``_BundleBatch``),
stamped at the latest of those firings (at or after every event it holds); settled
events leave up to ``max(1, lookback) * visit_gap`` of event time after they happened,
adds at once. Consumers aggregate by the event times inside the batch
(``transforms.slices``), not by element timestamps — no windowing downstream.

After ``dedup_ttl`` the session's state is gone: a redelivery or a very late event is
then indistinguishable from a new event and is emitted as (part of) a new visit — never
dropped silently.
"""
from __future__ import annotations

import json
from collections import OrderedDict
from typing import Any, Dict, Iterable, Optional, Sequence, Tuple

import apache_beam as beam
from apache_beam import coders
from apache_beam.metrics import Metrics
from apache_beam.transforms import window
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import BagStateSpec, TimerSpec, on_timer
from apache_beam.typehints import KV
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import WindowedValue

from transforms.records import ClickEvent, DeadLetter, dead_letter, format_time_us
from transforms.session_rules import (
    DEFAULT_DEDUP_TTL,
    DEFAULT_INFERABLE,
    DEFAULT_LOOKBACK,
    DEFAULT_VISIT_GAP,
    SESSION,
    TIME,
    EnrichedEvent,
    SessionBatch,
    SessionCtx,
    accepted_adds,
    advance,
    drop_duplicates,
    enrich_session,
    gap_us,
    sort_key,
)
from transforms.spill import read_payload

ENRICHED = "enriched"
DUPLICATES = "duplicates"
LATE = "late"
METRICS_NAMESPACE = "shopstream.sessions"
DEAD_LETTER_SOURCE = "sessions"

# The kinds of record in a session's bag: one arrival, the context, a bundle's arrivals.
_EVENT, _CTX, _ARRIVALS = 0, 1, 2

_METADATA_FIELDS = ("product_id", "quantity", "item_price", "payment_status",
                    "search_keywords", "promo_code", "promo_amount")


def event_to_json(event: Tuple) -> str:
    """A click event as the Fashion Campus JSON record it came from (re-parseable by
    ``records.parse_json('click_stream', ...)``)."""
    e = ClickEvent._make(event)
    meta = {k: getattr(e, k) for k in _METADATA_FIELDS if getattr(e, k) is not None}
    return json.dumps({
        "session_id": e.session_id, "event_name": e.event_name,
        "event_time": format_time_us(e.event_time_us), "event_id": e.event_id,
        "traffic_source": e.traffic_source, "event_metadata": repr(meta) if meta else "",
    })


def _timer_us(us: int) -> int:
    """Round a timer target up to a whole millisecond: portable runners carry timer
    timestamps in milliseconds and would otherwise fire it up to 999 µs early."""
    return -(-us // 1000) * 1000


def _key_by_session(event: ClickEvent) -> Tuple[str, tuple]:
    # A plain tuple: FastPrimitivesCoder encodes it without type headers.
    return event.session_id, tuple(event)


def group_by_session(events: Iterable[Sequence[Any]]) -> Dict[str, list]:
    """Event tuples → ``{session_id: [event tuples, in input order]}``."""
    groups: Dict[str, list] = {}
    for e in events:
        group = groups.get(e[SESSION])
        if group is None:
            groups[e[SESSION]] = [e]
        else:
            group.append(e)
    return groups


def arrival_events(value) -> list:
    """A ``SessionState`` input value → its events: a list (one session's arrivals in a
    bundle, :class:`KeySessionsInBundle`) or one event tuple (the element form before
    bundling, still in flight across a streaming ``--update``)."""
    return value if type(value) is list else [value]


class KeySessionsInBundle(beam.DoFn):
    """ClickEvent → ``(session_id, [event tuples])``, once per session and bundle.

    Every element entering the keyed step costs Beam far more (windowed-value coding,
    state and timer parameters, one bag append) than its event costs Sessionize; a
    bundle's events of one session leave as one element instead, in arrival order,
    stamped at their earliest event time (elements arrive stamped at their event time;
    the keyed step reads event times from the events and yields nothing per element).
    Needs the global window (``Sessionize`` puts its input there)."""

    def start_bundle(self):
        self._events: list = []

    def process(self, event):
        self._events.append(tuple(event))

    def finish_bundle(self):
        events, self._events = self._events, []
        gw = (window.GlobalWindow(),)
        for sid, group in group_by_session(events).items():
            yield WindowedValue((sid, group), Timestamp(micros=min(e[TIME] for e in group)),
                                gw)


class SessionBatchCoder(coders.Coder):
    """:class:`SessionBatch` as plain tuples (every field of every event kept, in field
    order) through the FastPrimitivesCoder, instead of its pickle fallback for named
    tuples; decoded back into :class:`EnrichedEvent` named tuples. Never a key."""

    def __init__(self):
        self._tuples = coders.FastPrimitivesCoder()

    def encode(self, batch: SessionBatch) -> bytes:
        return self._tuples.encode((tuple(map(tuple, batch.enriched)), tuple(batch.adds)))

    def decode(self, encoded: bytes) -> SessionBatch:
        enriched, adds = self._tuples.decode(encoded)
        return SessionBatch(tuple(map(EnrichedEvent._make, enriched)), adds)

    def is_deterministic(self) -> bool:
        return False

    def to_type_hint(self):
        return SessionBatch

    def __eq__(self, other):
        return type(self) is type(other)

    def __hash__(self):
        return hash(type(self))


coders.registry.register_coder(SessionBatch, SessionBatchCoder)


class _Counters:
    def __init__(self):
        self.valid = Metrics.counter(METRICS_NAMESPACE, "valid")
        self.duplicate = Metrics.counter(METRICS_NAMESPACE, "duplicate")
        self.inferred = Metrics.counter(METRICS_NAMESPACE, "inferred")
        self.visits_closed = Metrics.counter(METRICS_NAMESPACE, "visits_closed")
        self.late = Metrics.counter(METRICS_NAMESPACE, "late")

    def outputs(self, enriched, duplicates, late, visits_closed, adds=(), pending=None):
        """Count and yield the outputs of one step: one :class:`SessionBatch` (when it
        holds anything; with ``pending``, added to that bundle's batch instead),
        duplicates and late dead letters at their event time."""
        inferred = sum(e.product_id_inferred for e in enriched)
        if pending is not None:
            full = pending.add(enriched, adds)
            if full is not None:
                yield full
        elif enriched or adds:
            yield SessionBatch(tuple(enriched), tuple(adds))
        if enriched:
            self.valid.inc(len(enriched))
        if inferred:
            self.inferred.inc(inferred)
        if visits_closed:
            self.visits_closed.inc(visits_closed)
        for e in duplicates:
            self.duplicate.inc()
            yield beam.pvalue.TaggedOutput(DUPLICATES, window.TimestampedValue(
                ClickEvent._make(e), Timestamp(micros=e[TIME])))
        for e, reason in late:
            self.late.inc()
            yield beam.pvalue.TaggedOutput(LATE, window.TimestampedValue(
                dead_letter(DEAD_LETTER_SOURCE, event_to_json(e), reason),
                Timestamp(micros=e[TIME])))


class _BundleBatch:
    """The settled events and adds of every firing of one bundle, emitted as ONE
    :class:`SessionBatch` (at most :attr:`LIMIT` events) stamped at the latest of those
    firings: a session's firing holds a handful of events, and every element costs its
    consumers (contributions per shard, the warehouse writer's Arrow table) far more
    than its events do."""

    LIMIT = 20_000

    def __init__(self):
        self.enriched: list = []
        self.adds: list = []
        self.at_us: Optional[int] = None

    def stamp(self, ts_us: int) -> None:
        if self.at_us is None or ts_us > self.at_us:
            self.at_us = ts_us

    def add(self, enriched, adds):
        """Add one firing's output; a full batch comes back, timestamped, to be emitted."""
        self.enriched.extend(enriched)
        self.adds.extend(adds)
        return self.take() if len(self.enriched) + len(self.adds) >= self.LIMIT else None

    def take(self):
        """The batch so far as a timestamped value (None when empty); starts a new one."""
        if not (self.enriched or self.adds):
            return None
        out = window.TimestampedValue(SessionBatch(tuple(self.enriched), tuple(self.adds)),
                                      Timestamp(micros=self.at_us))
        self.enriched, self.adds = [], []
        return out


class SessionizeFn(beam.DoFn):
    """Keyed by session_id (global window); see the module docstring.

    All of a session's state is ONE bag: ``(2, [events])`` for each bundle's arrivals
    since the last timer firing (``(0, event)`` for a single one), and at most one
    ``(1, SessionCtx)`` record. Every state cell a bundle
    touches costs a cache load/put (and the SDK harness sizes each put with objsize), so
    one cell, blind appends in ``process()`` and a single rewrite per firing keep the
    cost per session, not per event.
    """

    STATE = BagStateSpec("session", coders.FastPrimitivesCoder())
    FLUSH = TimerSpec("flush", TimeDomain.WATERMARK)
    CLOSE = TimerSpec("close", TimeDomain.WATERMARK)
    MEMO_KEYS = 10_000  # keys whose armed timers are remembered within a bundle

    def __init__(self, visit_gap: float = DEFAULT_VISIT_GAP, lookback: int = DEFAULT_LOOKBACK,
                 inferable: Iterable[str] = DEFAULT_INFERABLE,
                 dedup_ttl: float = DEFAULT_DEDUP_TTL):
        self.visit_gap = visit_gap
        self.lookback = int(lookback)
        self.inferable = frozenset(inferable)
        self.dedup_ttl = dedup_ttl
        self._gap = gap_us(visit_gap)
        gap_us(dedup_ttl)  # validate
        self._counters = _Counters()
        self._armed: OrderedDict = OrderedDict()
        self._batch = _BundleBatch()

    def start_bundle(self):
        self._armed = OrderedDict()
        self._batch = _BundleBatch()

    def finish_bundle(self):
        out = self._batch.take()
        if out is not None:
            yield WindowedValue(out.value, out.timestamp, (window.GlobalWindow(),))

    def _remember(self, key, armed):
        self._armed[key] = armed
        if len(self._armed) > self.MEMO_KEYS:
            self._armed.popitem(last=False)

    def _split(self, records):
        """The bag → (ctx, arrivals, armed [flush, close]) — armed as set so far."""
        ctx, arrivals = None, []
        for kind, payload in records:
            if kind == _ARRIVALS:
                arrivals.extend(payload)
            elif kind == _CTX:
                ctx = SessionCtx._make(payload)
            else:
                arrivals.append(payload)
        f, c = (ctx.flush_at, ctx.close_at) if ctx is not None else (None, None)
        for e in arrivals:
            nf = _timer_us(e[TIME] + 1)
            if f is None or nf < f:
                f = nf
        return ctx, arrivals, [f, c]

    def process(self, element: Tuple[str, tuple],
                state=beam.DoFn.StateParam(STATE),
                flush=beam.DoFn.TimerParam(FLUSH)):
        key, value = element
        events = arrival_events(value)
        armed = self._armed.get(key)
        if armed is None:
            armed = self._split(state.read())[2]
        f, c = armed
        # the earliest these arrivals let anything settle
        nf = _timer_us(min(e[TIME] for e in events) + 1)
        if f is None or nf < f:
            f = nf
            flush.set(Timestamp(micros=f))
        self._remember(key, (f, c))
        # ``close`` is not moved here: the flush armed at or before this arrival's
        # ``t + 1`` fires first, sees it and re-arms ``close`` at the visit end.
        state.add((_ARRIVALS, events) if len(events) > 1 else (_EVENT, events[0]))

    @on_timer(FLUSH)
    def on_flush(self, key=beam.DoFn.KeyParam, ts=beam.DoFn.TimestampParam,
                 state=beam.DoFn.StateParam(STATE),
                 flush=beam.DoFn.TimerParam(FLUSH), close=beam.DoFn.TimerParam(CLOSE)):
        return self._fire(0, key, ts, state, flush, close)

    @on_timer(CLOSE)
    def on_close(self, key=beam.DoFn.KeyParam, ts=beam.DoFn.TimestampParam,
                 state=beam.DoFn.StateParam(STATE),
                 flush=beam.DoFn.TimerParam(FLUSH), close=beam.DoFn.TimerParam(CLOSE)):
        return self._fire(1, key, ts, state, flush, close)

    def _fire(self, which, key, ts, state, flush, close):
        now = ts.micros
        ctx, arrivals, armed = self._split(state.read())
        if armed[which] is not None and armed[which] <= now:
            armed[which] = None  # this one is spent
        res = advance(ctx, arrivals, now, visit_gap=self.visit_gap, lookback=self.lookback,
                      inferable=self.inferable, dedup_ttl=self.dedup_ttl)
        wanted = [None if x is None else _timer_us(x)
                  for x in (res.next_flush_us, res.next_close_us)]
        for i, timer in ((0, flush), (1, close)):
            if wanted[i] != armed[i]:
                if wanted[i] is None:
                    timer.clear()
                else:
                    timer.set(Timestamp(micros=wanted[i]))
        new_ctx = None if res.ctx is None else res.ctx._replace(flush_at=wanted[0],
                                                                 close_at=wanted[1])
        if arrivals or new_ctx != ctx:
            state.clear()
            if new_ctx is not None:
                state.add((_CTX, tuple(new_ctx)))
        self._remember(key, tuple(wanted))
        self._batch.stamp(now)
        return self._counters.outputs(res.enriched, res.duplicates, res.late,
                                      res.visits_closed, res.adds, pending=self._batch)


class EnrichSessionFn(beam.DoFn):
    """The bounded path: one grouped session → its enriched events (and duplicates)."""

    def __init__(self, visit_gap: float = DEFAULT_VISIT_GAP, lookback: int = DEFAULT_LOOKBACK,
                 inferable: Iterable[str] = DEFAULT_INFERABLE):
        self.visit_gap = visit_gap
        self.lookback = int(lookback)
        self.inferable = frozenset(inferable)
        self._g = gap_us(visit_gap)
        self._counters = _Counters()

    def process(self, element):
        _, events = element
        events = sorted(events, key=sort_key)
        unique, duplicates = drop_duplicates(events)
        enriched = enrich_session(unique, self.visit_gap, self.lookback, self.inferable)
        visits = 1 + sum(1 for a, b in zip(unique, unique[1:]) if b[TIME] - a[TIME] > self._g)
        return self._counters.outputs(enriched, duplicates, (), visits if unique else 0,
                                      accepted_adds(unique))


class EnrichBucketFn(beam.DoFn):
    """The bounded replay path: one bucket of whole sessions (pickled partial lists from
    :class:`~transforms.sources.ParseChunks`) → lists of enriched events (at most
    ``batch`` each), the same per-session rules and counters as
    :class:`EnrichSessionFn`."""

    def __init__(self, visit_gap: float = DEFAULT_VISIT_GAP, lookback: int = DEFAULT_LOOKBACK,
                 inferable: Iterable[str] = DEFAULT_INFERABLE, batch: int = 100_000):
        self.visit_gap = visit_gap
        self.lookback = int(lookback)
        self.inferable = frozenset(inferable)
        self.batch = batch
        self._g = gap_us(visit_gap)
        self._counters = _Counters()

    def process(self, element):
        import pickle
        import zlib

        _, payloads = element
        sessions: dict = {}

        for payload in payloads:
            for sid, events in pickle.loads(zlib.decompress(read_payload(payload))).items():
                have = sessions.get(sid)
                if have is None:
                    sessions[sid] = events
                else:
                    have.extend(events)
        c = self._counters
        g, out, adds = self._g, [], []
        valid = inferred = visits = duplicates = 0
        for sid in sorted(sessions):
            events = sorted([(sid,) + e for e in sessions.pop(sid)], key=sort_key)
            unique, dups = drop_duplicates(events)
            duplicates += len(dups)
            enriched = enrich_session(unique, self.visit_gap, self.lookback, self.inferable)
            valid += len(enriched)
            inferred += sum(e.product_id_inferred for e in enriched)
            if unique:
                visits += 1 + sum(1 for a, b in zip(unique, unique[1:]) if b[TIME] - a[TIME] > g)
            out.extend(enriched)
            adds.extend(accepted_adds(unique))
            if len(out) >= self.batch:
                yield SessionBatch(tuple(out), tuple(adds))
                out, adds = [], []
        if out:
            yield SessionBatch(tuple(out), tuple(adds))
        for counter, n in ((c.valid, valid), (c.inferred, inferred),
                           (c.visits_closed, visits), (c.duplicate, duplicates)):
            if n:
                counter.inc(n)


class SessionizeBuckets(beam.PTransform):
    """Bounded replay: ``(bucket, payload)`` partial session lists (see
    :class:`~transforms.sources.ReadTableChunks`) → PCollection of *lists* of
    :class:`~transforms.session_rules.EnrichedEvent` — the grouped Sessionize semantics
    with one shuffle of a few thousand compact elements instead of one per event.
    Labels: ``GroupBySession``, ``EnrichSessions``."""

    def __init__(self, visit_gap: float = DEFAULT_VISIT_GAP, lookback: int = DEFAULT_LOOKBACK,
                 inferable: Iterable[str] = DEFAULT_INFERABLE, label: Optional[str] = None):
        super().__init__(label)
        if int(lookback) < 0:
            raise ValueError(f"lookback must be >= 0, got {lookback!r}")
        gap_us(visit_gap)
        self.visit_gap, self.lookback, self.inferable = visit_gap, int(lookback), inferable

    def expand(self, partials):
        return (partials
                | "GroupBySession" >> beam.GroupByKey()
                | "EnrichSessions" >> beam.ParDo(EnrichBucketFn(
                    self.visit_gap, self.lookback, self.inferable)))


STATEFUL, GROUPED, AUTO = "stateful", "grouped", "auto"


class Sessionize(beam.PTransform):
    """PCollection[ClickEvent] (event-time timestamps) → dict of PCollections:

    ``{"enriched": EnrichedEvent, "duplicates": ClickEvent, "late": DeadLetter}``.

    ``mode``: ``"stateful"`` — the keyed, timer-driven :class:`SessionizeFn` (required
    for unbounded input); ``"grouped"`` — GroupByKey then :func:`enrich_session` per
    session (bounded input only; the same results, several times faster in batch, and
    never late data); ``"auto"`` (default) — grouped for bounded, stateful otherwise.

    Step labels are stable (streaming ``--update`` matches on them): ``GlobalWindow``
    (only when the input is not in the global window already), ``KeyBySession``, then
    ``SessionState`` (stateful) or ``GroupBySession`` + ``EnrichSessions`` (grouped).
    """

    def __init__(self, visit_gap: float = DEFAULT_VISIT_GAP, lookback: int = DEFAULT_LOOKBACK,
                 inferable: Iterable[str] = DEFAULT_INFERABLE,
                 dedup_ttl: float = DEFAULT_DEDUP_TTL, mode: str = AUTO,
                 label: Optional[str] = None):
        super().__init__(label)
        if int(lookback) < 0:
            raise ValueError(f"lookback must be >= 0, got {lookback!r}")
        if mode not in (AUTO, STATEFUL, GROUPED):
            raise ValueError(f"mode must be one of auto, stateful, grouped; got {mode!r}")
        gap_us(visit_gap), gap_us(dedup_ttl)  # validate early
        self.visit_gap = visit_gap
        self.lookback = int(lookback)
        self.inferable = frozenset(inferable)
        self.dedup_ttl = dedup_ttl
        self.mode = mode

    def expand(self, events):
        mode = self.mode
        if mode == AUTO:
            mode = GROUPED if events.is_bounded else STATEFUL
        if mode == GROUPED and not events.is_bounded:
            raise ValueError("Sessionize(mode='grouped') needs a bounded input; "
                             "use mode='stateful' for streams")
        if not isinstance(events.windowing.windowfn, window.GlobalWindows):
            events = events | "GlobalWindow" >> beam.WindowInto(window.GlobalWindows())
        if mode == STATEFUL:
            keyed = events | "KeyBySession" >> beam.ParDo(
                KeySessionsInBundle()).with_output_types(KV[str, Any])
        else:
            keyed = events | "KeyBySession" >> beam.Map(_key_by_session).with_output_types(
                KV[str, Any])
        if mode == STATEFUL:
            results = keyed | "SessionState" >> beam.ParDo(SessionizeFn(
                self.visit_gap, self.lookback, self.inferable, self.dedup_ttl)
            ).with_outputs(DUPLICATES, LATE, main=ENRICHED)
        else:
            results = (keyed
                       | "GroupBySession" >> beam.GroupByKey()
                       | "EnrichSessions" >> beam.ParDo(EnrichSessionFn(
                           self.visit_gap, self.lookback, self.inferable)
                       ).with_outputs(DUPLICATES, LATE, main=ENRICHED))
        results[ENRICHED].element_type = SessionBatch
        results[DUPLICATES].element_type = ClickEvent
        results[LATE].element_type = DeadLetter
        return {ENRICHED: results[ENRICHED], DUPLICATES: results[DUPLICATES],
                LATE: results[LATE]}
