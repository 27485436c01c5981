"""Sessionisation: visits, dwell time and product-id inference (SPEC §2), as pure functions.

No Beam here. Two layers:

* :func:`enrich_session` — the reference: a whole session (all its events known) →
  one :class:`EnrichedEvent` per event. Plain and obviously-SPEC-shaped; the tests and
  the streaming step are checked against it.
* :func:`advance` — the incremental state machine behind the streaming step
  (``transforms.sessionize``): given what a session's keyed state holds, the events that
  arrived since, and a lower bound on the watermark, it decides which events are now
  *final* (nothing that can still arrive on time may change them), emits those, and
  returns the smaller state to keep.

**Settled rule.** Let ``W`` be a lower bound on the input watermark: every on-time event
still to come has ``event_time >= W``. Within a session ordered by (event_time, event_id),
event ``e``'s output depends only on

* the events before it in its visit (visit_id) — all known once ``e.t < W``;
* the events after it that its rules look at: the next event (dwell), and, for an event
  that may be inferred (type in ``inferable``, no product id of its own), the next
  ``lookback`` events of the visit, stopping at the first ADD_TO_CART/BOOKING;
* whether its visit ends before that look-ahead completes: the visit ends after the
  last known event ``x`` once no event can land in ``(x.t, x.t + visit_gap]``.

So ``horizon(e)`` is the time of the last event that look-ahead needs, or ``x.t +
visit_gap`` when the look-ahead runs off the end of the visit (or of what is known), and
``e`` is final exactly when ``horizon(e) < W``: an event that could still change it would
have to come at or before the horizon, i.e. behind the watermark (late). Final events
are emitted one by one (not only as a prefix); state keeps the events from the first
non-final one on, plus the visit start and last time before them.

**Late events** — an arrival at or before the *frontier* (the largest horizon of anything
already emitted for the session) would change output already sent; it is not merged but
returned as late (the Beam step dead-letters it). A late arrival that changes nothing
emitted (after the frontier) is merged normally.

**Duplicates** — an event_id already known for the session (pending, emitted, or
dead-lettered as late) is returned as a duplicate; the first arrival wins. Known ids are
kept until ``dedup_ttl`` (event time) after their visit closed.
"""
from __future__ import annotations

import itertools
from typing import Any, Iterable, List, NamedTuple, Optional, Sequence, Tuple

DEFAULT_VISIT_GAP = 1800            # seconds
DEFAULT_LOOKBACK = 3                # events
DEFAULT_DEDUP_TTL = 3600            # seconds of event time after a visit closes
DEFAULT_INFERABLE = frozenset({"CLICK", "ITEM_DETAIL", "HOMEPAGE"})
ADD_TO_CART = "ADD_TO_CART"
STOP_EVENTS = frozenset({ADD_TO_CART, "BOOKING"})

# Positions inside a ClickEvent (or the plain tuple the Beam step stores in state).
SESSION, EVENT_ID, NAME, TIME, PRODUCT = 0, 1, 2, 3, 5


class EnrichedEvent(NamedTuple):
    session_id: str
    event_id: str
    event_name: str
    event_time_us: int            # microseconds since the epoch, UTC
    traffic_source: str
    product_id: Optional[int]     # own, or inferred (then product_id_inferred is True)
    quantity: Optional[int]
    item_price: Optional[int]
    payment_status: Optional[str]
    search_keywords: Optional[str]
    promo_code: Optional[str]
    promo_amount: Optional[int]
    visit_id: str                 # f"{session_id}:{event_time_us of the visit's first event}"
    product_id_inferred: bool
    dwell_seconds: Optional[float]


class SessionBatch(NamedTuple):
    """What every Sessionize mode emits (one element type for all of them):

    * ``enriched``: events whose visit, dwell and inference are settled (final), for
      ``events_enriched`` and their engagement beyond the add itself;
    * ``adds``: ``(product_id, event_time_us)`` of ADD_TO_CART events accepted (after
      dedup) — counted at once, before their dwell is known. An ADD_TO_CART in
      ``enriched`` therefore contributes only its dwell (see ``transforms.slices``).
    """
    enriched: tuple
    adds: tuple


def accepted_adds(events: Iterable[Sequence[Any]]) -> tuple:
    """``(product_id, event_time_us)`` of the ADD_TO_CART events among ``events``."""
    return tuple((e[PRODUCT], e[TIME]) for e in events
                 if e[NAME] == ADD_TO_CART and e[PRODUCT] is not None)


def gap_us(visit_gap: float) -> int:
    """A gap in seconds (int or float) → whole microseconds."""
    us = round(float(visit_gap) * 1_000_000)
    if us < 0:
        raise ValueError(f"visit_gap must be >= 0, got {visit_gap!r}")
    return us


def sort_key(event: Sequence[Any]) -> Tuple[int, str]:
    """SPEC §2 ordering: (event_time, event_id)."""
    return event[TIME], event[EVENT_ID]


def visit_id(session_id: str, first_time_us: int) -> str:
    return f"{session_id}:{first_time_us}"


def split_visits(sorted_events: Sequence[Sequence[Any]], visit_gap: float = DEFAULT_VISIT_GAP
                 ) -> List[list]:
    """Maximal runs whose consecutive gaps are <= visit_gap (equal stays in the visit)."""
    g = gap_us(visit_gap)
    visits: List[list] = []
    prev = None
    for e in sorted_events:
        if prev is None or e[TIME] - prev > g:
            visits.append([])
        visits[-1].append(e)
        prev = e[TIME]
    return visits


def infer_products(visit: Sequence[Sequence[Any]], lookback: int = DEFAULT_LOOKBACK,
                   inferable: Iterable[str] = DEFAULT_INFERABLE) -> List[Optional[int]]:
    """For each event of one ordered visit: the product id inferred for it, else None.

    For each ADD_TO_CART at position j with product P, positions j-1, j-2, …, j-lookback
    are walked (never before the visit start); the walk stops before the first
    ADD_TO_CART or BOOKING. A walked event of an ``inferable`` type without a product id
    of its own gets P. Other walked events (SCROLL, SEARCH, …) are not changed but still
    count toward ``lookback``.
    """
    return infer_in_buffer(visit, [False] + [True] * (len(visit) - 1), lookback,
                           frozenset(inferable))


def infer_in_buffer(buf, cont, lookback, inferable) -> List[Optional[int]]:
    """The one inference loop: :func:`infer_products` over an ordered buffer that may
    hold several visits (``cont[i]``: buf[i] continues buf[i-1]'s visit; walks stop at
    visit starts and at the buffer start)."""
    out: List[Optional[int]] = [None] * len(buf)
    for j, add in enumerate(buf):
        if add[NAME] != ADD_TO_CART or add[PRODUCT] is None:
            continue
        for i in range(j - 1, max(j - lookback, 0) - 1, -1):
            if not cont[i + 1]:
                break
            e = buf[i]
            if e[NAME] in STOP_EVENTS:
                break
            if e[NAME] in inferable and e[PRODUCT] is None:
                out[i] = add[PRODUCT]
    return out


def _enriched(e: Sequence[Any], vid: str, inferred_pid: Optional[int],
              dwell: Optional[float]) -> EnrichedEvent:
    if inferred_pid is None:
        return EnrichedEvent(*e, vid, False, dwell)
    return EnrichedEvent(*e[:PRODUCT], inferred_pid, *e[PRODUCT + 1:], vid, True, dwell)


def enrich_session(events: Iterable[Sequence[Any]], visit_gap: float = DEFAULT_VISIT_GAP,
                   lookback: int = DEFAULT_LOOKBACK,
                   inferable: Iterable[str] = DEFAULT_INFERABLE) -> List[EnrichedEvent]:
    """The reference: every event of a session (all known) → its EnrichedEvent.

    Output is ordered by (event_time, event_id); nothing is dropped. Events of several
    sessions may be passed: each session is handled on its own (ordered by session_id).
    Duplicates are not removed here (see :func:`drop_duplicates`).
    """
    inferable = frozenset(inferable)
    by_session: dict = {}
    for e in events:
        by_session.setdefault(e[SESSION], []).append(e)
    out: List[EnrichedEvent] = []
    for sid in sorted(by_session):
        for visit in split_visits(sorted(by_session[sid], key=sort_key), visit_gap):
            vid = visit_id(sid, visit[0][TIME])
            inferred = infer_products(visit, lookback, inferable)
            for i, e in enumerate(visit):
                dwell = ((visit[i + 1][TIME] - e[TIME]) / 1e6) if i + 1 < len(visit) else None
                out.append(_enriched(e, vid, inferred[i], dwell))
    return out


def drop_duplicates(events: Iterable[Sequence[Any]]) -> Tuple[list, list]:
    """(first arrival of each (session_id, event_id), the later copies) in input order."""
    seen, unique, dups = set(), [], []
    for e in events:
        k = (e[SESSION], e[EVENT_ID])
        (dups if k in seen else unique).append(e)
        seen.add(k)
    return unique, dups


# --------------------------------------------------------------------------- incremental
def horizons(buf: Sequence[Sequence[Any]], cont: Sequence[bool], gap: int, lookback: int,
             inferable: frozenset, want: Sequence[bool]) -> List[Optional[int]]:
    """horizon(e) (see module doc) for each buf[i] with want[i]; None elsewhere.

    ``buf`` is ordered; ``cont[i]`` says buf[i] is in the same visit as buf[i-1] (for i=0:
    as the event before the buffer). ``gap`` is in microseconds.
    """
    n = len(buf)
    out: List[Optional[int]] = [None] * n
    for i in range(n):
        if not want[i]:
            continue
        e = buf[i]
        steps = max(1, lookback) if (e[NAME] in inferable and e[PRODUCT] is None) else 1
        k = i
        h = None
        for _ in range(steps):
            nk = k + 1
            if nk >= n or not cont[nk]:
                h = buf[k][TIME] + gap  # the visit may end after buf[k]
                break
            k = nk
            if buf[k][NAME] in STOP_EVENTS:
                h = buf[k][TIME]
                break
        else:
            h = buf[k][TIME]
        out[i] = h
    return out


class Settled(NamedTuple):
    """What :func:`settle` found final in an ordered buffer at watermark W."""
    final: List[Tuple[int, EnrichedEvent, int]]  # (index, output, horizon) newly final
    pending_horizons: List[Optional[int]]         # horizon of each still-open event
    cont: List[bool]                              # buf[i] continues the previous visit
    visit_start: List[int]                        # visit start time per index


def settle(buf: Sequence[Sequence[Any]], done: Sequence[bool], watermark_us: int, *,
           prev_time_us: Optional[int] = None, prev_visit_start_us: Optional[int] = None,
           visit_gap: float = DEFAULT_VISIT_GAP, lookback: int = DEFAULT_LOOKBACK,
           inferable: Iterable[str] = DEFAULT_INFERABLE) -> Settled:
    """Which events of ``buf`` (ordered, one session) are final at watermark ``W``.

    ``done[i]`` marks events already emitted (they are context only). ``prev_time_us`` /
    ``prev_visit_start_us`` describe the last final event before the buffer, if any.
    An event is final when ``horizon < W`` (every on-time future event has time >= W).
    """
    g = gap_us(visit_gap)
    inferable = frozenset(inferable)
    n = len(buf)
    cont = [False] * n
    start = [0] * n
    prev_t, vs = prev_time_us, prev_visit_start_us
    for i, e in enumerate(buf):
        t = e[TIME]
        c = prev_t is not None and t - prev_t <= g
        if not c or vs is None:  # (an open visit always comes with its start)
            vs = t
        cont[i], start[i] = c, vs
        prev_t = t
    want = [not d for d in done]
    hz = horizons(buf, cont, g, lookback, inferable, want)
    final = []
    inferred: Optional[list] = None
    pending_h: List[Optional[int]] = [None] * n
    for i in range(n):
        h = hz[i]
        if h is None:
            continue
        if h >= watermark_us:
            pending_h[i] = h
            continue
        e = buf[i]
        nxt = i + 1 < n and cont[i + 1]
        dwell = (buf[i + 1][TIME] - e[TIME]) / 1e6 if nxt else None
        pid = None
        if e[NAME] in inferable and e[PRODUCT] is None:
            if inferred is None:
                inferred = infer_in_buffer(buf, cont, lookback, inferable)
            pid = inferred[i]
        final.append((i, _enriched(e, visit_id(e[SESSION], start[i]), pid, dwell), h))
    return Settled(final, pending_h, cont, start)


# --------------------------------------------------------------------------- state machine
class SessionCtx(NamedTuple):
    """The per-session state the streaming step keeps between timer firings.

    Stored as a plain tuple (``tuple(ctx)``) so that cheap coders apply.
    """
    watermark_us: int                   # largest timer time seen: a lower bound on W
    frontier_us: Optional[int]          # arrivals at/before this are late (None: nothing emitted)
    prev_time_us: Optional[int]         # time of the last final event dropped from pending
    open_visit_start_us: Optional[int]  # its visit's start, while that visit is still open
    pending: tuple                      # ((event_tuple, emitted: bool), ...) ordered
    seen: tuple                         # ((expire_us | OPEN, event_id), ...) known ids
    flush_at: Optional[int] = None      # timers armed at the last firing (Beam bookkeeping)
    close_at: Optional[int] = None


EMPTY_CTX = SessionCtx(-(2 ** 62), None, None, None, (), ())
OPEN = -1  # expiry of a seen id whose visit is still open (set when the visit closes)


class Advance(NamedTuple):
    ctx: Optional[SessionCtx]           # None: nothing left to keep for the session
    enriched: List[EnrichedEvent]       # newly final, ordered
    duplicates: list                    # event tuples already known
    late: list                          # (event tuple, reason)
    visits_closed: int
    next_flush_us: Optional[int]        # earliest watermark at which more can settle
    next_close_us: Optional[int]        # when all pending settles, else when ids expire
    adds: tuple = ()                    # accepted ADD_TO_CART arrivals (accepted_adds)


def advance(ctx: Optional[SessionCtx], arrivals: Sequence[Sequence[Any]], timer_us: int, *,
            visit_gap: float = DEFAULT_VISIT_GAP, lookback: int = DEFAULT_LOOKBACK,
            inferable: Iterable[str] = DEFAULT_INFERABLE,
            dedup_ttl: float = DEFAULT_DEDUP_TTL) -> Advance:
    """One timer firing of a session: merge ``arrivals``, emit what is final, shrink state.

    ``timer_us`` is the firing timer's time (the watermark has reached it). Arrivals are
    in arrival order (the first copy of an event_id wins).
    """
    ctx = EMPTY_CTX if ctx is None else ctx
    g, ttl = gap_us(visit_gap), gap_us(dedup_ttl)
    inferable = frozenset(inferable)
    w = max(ctx.watermark_us, timer_us)

    duplicates, late, accepted = [], [], []
    pending = list(ctx.pending)
    seen_add: List[Tuple[int, str]] = []
    if arrivals:
        known = {eid for _, eid in ctx.seen}
        known.update(e[EVENT_ID] for e, _ in pending)
        frontier = ctx.frontier_us
        for e in arrivals:
            eid = e[EVENT_ID]
            if eid in known:
                duplicates.append(e)
                continue
            known.add(eid)
            if frontier is not None and e[TIME] <= frontier:
                late.append((e, _late_reason(e, frontier)))
                seen_add.append((w + ttl, eid))
                continue
            pending.append((e, False))
            accepted.append(e)
        pending.sort(key=lambda p: (p[0][TIME], p[0][EVENT_ID]))

    buf = [p[0] for p in pending]
    done = [p[1] for p in pending]
    s = settle(buf, done, w, prev_time_us=ctx.prev_time_us,
               prev_visit_start_us=ctx.open_visit_start_us, visit_gap=visit_gap,
               lookback=lookback, inferable=inferable)
    frontier = ctx.frontier_us
    enriched = []
    for i, out, h in s.final:
        done[i] = True
        enriched.append(out)
        if frontier is None or h > frontier:
            frontier = h

    # Drop the final prefix. Its visits are closed, except the last one when the
    # remainder continues it (its ids stay OPEN until it closes).
    keep = 0
    n = len(buf)
    while keep < n and done[keep]:
        keep += 1
    visits_closed = 0
    closed_open: Optional[int] = None   # close time of the visit whose ids are OPEN in ctx
    prev_time, open_start = ctx.prev_time_us, ctx.open_visit_start_us
    if keep:
        tail_open = keep < n and s.cont[keep]
        a = 0
        while a < keep:
            b = a
            while b + 1 < keep and s.cont[b + 1]:
                b += 1
            if b + 1 == keep and tail_open:
                seen_add.extend((OPEN, buf[i][EVENT_ID]) for i in range(a, b + 1))
            else:
                close = buf[b][TIME] + g
                visits_closed += 1
                seen_add.extend((close + ttl, buf[i][EVENT_ID]) for i in range(a, b + 1))
                if a == 0 and s.cont[0]:
                    closed_open = close
            a = b + 1
        prev_time = buf[keep - 1][TIME]
        open_start = s.visit_start[keep - 1] if tail_open else None

    # Known ids: OPEN ones get their expiry when their visit closes; expired ones go.
    seen = []
    for exp, eid in itertools.chain(ctx.seen, seen_add):
        if exp == OPEN:
            if closed_open is not None:
                exp = closed_open + ttl
        elif exp < w:
            continue
        seen.append((exp, eid))

    remaining = tuple(zip(buf[keep:], done[keep:]))
    open_h = [h for h in s.pending_horizons[keep:] if h is not None]
    next_flush = (min(open_h) + 1) if open_h else None
    if remaining:
        next_close = max(buf[-1][TIME] + g + 1, next_flush or 0)
    elif seen:
        next_close = min(exp for exp, _ in seen) + 1  # no OPEN ids without pending events
    else:
        next_close = None

    if not remaining and not seen:
        new_ctx = None
    else:
        new_ctx = SessionCtx(w, frontier, prev_time, open_start, remaining, tuple(seen))
    return Advance(new_ctx, enriched, duplicates, late, visits_closed, next_flush, next_close,
                   accepted_adds(accepted))


def _late_reason(e: Sequence[Any], frontier: int) -> str:
    return (f"late event: event_time_us {e[TIME]} is at or before {frontier}, up to which "
            f"session {e[SESSION]} was already finalised (visit, dwell and inference "
            f"emitted); not merged so emitted events stay consistent")
