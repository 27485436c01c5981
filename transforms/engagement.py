"""Engagement per product (SPEC §2 "Engagement per product").

Pure functions (no Beam needed) turn one enriched click event or one transaction into
``(product_id, Engagement)`` contributions and add them up; :class:`EngagementCombineFn`
does the same inside Beam. The ranking horizons (``1h``, ``24h``, ``all``) are cut from
1-minute slices of these contributions in ``transforms.slices`` (live graph) and
``transforms.replay_rankings`` (bounded replay).

Per product: click_count, item_detail_count, add_to_cart_count, homepage_count (events of
that type carrying, or inferred to carry, the product), total_dwell_seconds (dwell summed
over events of any type carrying or inferred to carry it; a null dwell counts 0) and
purchases (units in booking lines of ``payment_status == "Success"`` transactions).

Order independence: dwell is accumulated as integer microseconds, so a sum never depends on
arrival order or bundle boundaries (float addition is not associative).
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, List, Mapping, NamedTuple, Optional, Tuple

import apache_beam as beam

from transforms.scoring import FEATURES  # the six features, in SPEC order

#: event_name → the count feature it increments (other events only add dwell).
EVENT_COUNTS = {
    "CLICK": "click_count",
    "ITEM_DETAIL": "item_detail_count",
    "ADD_TO_CART": "add_to_cart_count",
    "HOMEPAGE": "homepage_count",
}

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
COUNT_INDEX = {name: FEATURES.index(f) for name, f in EVENT_COUNTS.items()}
#: slots of the engagement accumulator (new_acc), shared by every engagement path
DWELL, PURCHASES, LAST = 4, 5, 6


def new_acc() -> list:
    # [click, item_detail, add_to_cart, homepage, dwell_us, purchases, last_seen_us]
    return [0, 0, 0, 0, 0, 0, None]


def dwell_us(seconds: Optional[float]) -> int:
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
    acc = new_acc()
    idx = COUNT_INDEX.get(event.event_name)
    if idx is not None:
        acc[idx] = 1
    acc[DWELL] = dwell_us(getattr(event, "dwell_seconds", None))
    acc[LAST] = getattr(event, "event_time_us", None)
    return [(int(pid), acc)]


def transaction_contribution(txn: Any) -> List[Tuple[int, list]]:
    """One transaction → a purchases contribution per booking line (Success only)."""
    if getattr(txn, "payment_status", None) != "Success":
        return []
    out = []
    for line in txn.lines:
        acc = new_acc()
        acc[PURCHASES] = int(line.quantity)
        acc[LAST] = getattr(txn, "created_at_us", None)
        out.append((int(line.product_id), acc))
    return out


def engagement_to_acc(e: Engagement) -> list:
    return [e.click_count, e.item_detail_count, e.add_to_cart_count, e.homepage_count,
            dwell_us(e.total_dwell_seconds), e.purchases, e.last_seen_us]


def add_into(total: list, part: list) -> None:
    for i in range(6):
        total[i] += part[i]
    total[LAST] = _max_opt(total[LAST], part[LAST])


def acc_to_engagement(acc: list) -> Engagement:
    return Engagement(acc[0], acc[1], acc[2], acc[3], acc[DWELL] / 1_000_000,
                      acc[PURCHASES], acc[LAST])


def merge_engagements(*items: Engagement) -> Engagement:
    """Add up engagements of the same product (order-independent)."""
    total = new_acc()
    for e in items:
        add_into(total, engagement_to_acc(e))
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
                    add_into(acc, part)
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
        add_into(cur, part)


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
