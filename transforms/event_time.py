"""Event-time sanity (SPEC §2): an event stamped more than ``max_future`` ahead of the
wall clock is dead-lettered with that reason, so it never moves a watermark, a ranking
horizon or ``shopstream:meta``. One rule (:func:`future_reason`), used by every source."""
from __future__ import annotations

import time
from typing import Optional

from transforms import records

#: Seconds an event may be ahead of the wall clock (clock skew between producers).
DEFAULT_MAX_FUTURE = 86_400


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
