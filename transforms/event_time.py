"""Event-time sanity (SPEC §2): an event stamped more than ``max_future`` ahead of the
wall clock is dead-lettered with that reason, so it never moves a watermark, a ranking
horizon or ``shopstream:meta``. One rule (:func:`future_reason`), used by every source."""
from __future__ import annotations

import time
from typing import Optional

import apache_beam as beam
from apache_beam.metrics import Metrics

from transforms import records

#: Seconds an event may be ahead of the wall clock (clock skew between producers).
DEFAULT_MAX_FUTURE = 86_400
DEAD = "dead"


def now_us() -> int:
    return int(time.time() * 1_000_000)


def future_reason(t_us: int, wall_us: int, max_future: float = DEFAULT_MAX_FUTURE
                  ) -> Optional[str]:
    """The dead-letter reason if ``t_us`` is more than ``max_future`` s after ``wall_us``."""
    limit = wall_us + int(float(max_future) * 1_000_000)
    if t_us <= limit:
        return None
    return (f"event time {records.format_time_us(t_us) if t_us < 253402300800_000000 else t_us} "
            f"is more than {float(max_future):g} s ahead of the wall clock "
            f"({records.format_time_us(wall_us)}; --max-future)")


def record_time_us(rec) -> int:
    return rec.event_time_us if isinstance(rec, records.ClickEvent) else rec.created_at_us


class _RejectFutureFn(beam.DoFn):
    def __init__(self, kind: str, max_future: float, to_raw):
        self.kind, self.max_future, self.to_raw = kind, max_future, to_raw
        self.dead = Metrics.counter("shopstream", f"{kind}_dead_lettered")
        # The parser counted the record valid; it is a dead letter now (read = valid +
        # duplicate + dead_lettered in the run summary).
        self.valid = Metrics.counter("shopstream", f"{kind}_valid")
        self.future = Metrics.counter("shopstream", "future_dead_lettered")

    def process(self, rec):
        reason = future_reason(record_time_us(rec), now_us(), self.max_future)
        if reason is None:
            yield rec
            return
        self.dead.inc()
        self.valid.dec()
        self.future.inc()
        yield beam.pvalue.TaggedOutput(DEAD, records.dead_letter(
            self.kind, self.to_raw(rec), reason))


class RejectFuture(beam.PTransform):
    """Records (event-time timestamped) → ``{"records", "dead"}``: those more than
    ``max_future`` s ahead of the wall clock leave on ``dead`` with the reason."""

    def __init__(self, kind: str, max_future: float = DEFAULT_MAX_FUTURE, to_raw=repr,
                 label: Optional[str] = None):
        super().__init__(label)
        if float(max_future) < 0:
            raise ValueError(f"max_future must be >= 0 s, got {max_future!r}")
        self.kind, self.max_future, self.to_raw = kind, float(max_future), to_raw

    def expand(self, recs):
        out = recs | "Check" >> beam.ParDo(
            _RejectFutureFn(self.kind, self.max_future, self.to_raw)).with_outputs(
            DEAD, main="records")
        out.records.element_type = recs.element_type
        return {"records": out.records, "dead": out[DEAD]}
