"""The Redis layout of the live rankings (SPEC §4), and how to connect and read them.

The one place that defines how rankings live in Redis: the writer
(``transforms.redis_sink``), the ``shopstream rankings`` command and the HTTP API all use
it. It imports neither Beam nor anything heavy, so readers start fast.

Keys (``prefix`` defaults to ``shopstream``):

* ``{prefix}:top:{horizon}:{dimension}`` — sorted set, member = product id (as text) or
  brand / sub-category name, score = popularity; horizon ``1h``, ``24h`` or ``all``;
  dimension ``products``, ``brands``, ``subcategories``, ``products:gender:{g}``,
  ``products:season:{s}``, ``products:season:{s}:gender:{g}``.
* ``{prefix}:meta`` — hash: ``current_to`` / ``written_at`` (ISO-8601 UTC; also ``…_us``
  in µs since the epoch) for the rankings overall, and per horizon
  ``{h}:current_to``, ``{h}:current_to_us``, ``{h}:written_at``, ``{h}:written_at_us``,
  ``{h}:records`` (records counted), ``{h}:window_end_us`` (sliding horizons).
  ``current_to`` is the event time of the latest record a ranking counts; ``written_at``
  is wall-clock time of the write. A writer rewrites a horizon's fields in the same
  MULTI/EXEC as its rankings: readers (the HTTP API) take unchanged
  :func:`version_fields` as unchanged rankings.
* ``{prefix}:names:products`` — hash: product id → productDisplayName.
* ``{prefix}:dims:{horizon}`` — set of the dimensions currently written for a horizon
  (lets a writer delete rankings that became empty).
"""
from __future__ import annotations

import math
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple
from urllib.parse import quote, urlsplit, urlunsplit

KEY_PREFIX = "shopstream"
HORIZONS = ("1h", "24h", "all")
KINDS = ("products", "brands", "subcategories")
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


# --------------------------------------------------------------------------- key layout
def dimension_key(kind: str = "products", gender: Optional[str] = None,
                  season: Optional[str] = None) -> str:
    """``products`` / ``brands`` / ``subcategories`` (+ gender/season for products) →
    the dimension part of a key, e.g. ``products:season:Summer:gender:Men``."""
    if kind not in KINDS:
        raise ValueError(f"unknown ranking {kind!r}; expected one of {', '.join(KINDS)}")
    if kind != "products":
        if gender or season:
            raise ValueError("--gender and --season apply only to the products ranking")
        return kind
    if season and gender:
        return f"products:season:{season}:gender:{gender}"
    if season:
        return f"products:season:{season}"
    if gender:
        return f"products:gender:{gender}"
    return "products"


def top_key(horizon: str, dimension: str, prefix: str = KEY_PREFIX) -> str:
    return f"{prefix}:top:{horizon}:{dimension}"


def meta_key(prefix: str = KEY_PREFIX) -> str:
    return f"{prefix}:meta"


def names_key(prefix: str = KEY_PREFIX) -> str:
    return f"{prefix}:names:products"


def dims_key(horizon: str, prefix: str = KEY_PREFIX) -> str:
    return f"{prefix}:dims:{horizon}"


# --------------------------------------------------------------------------- connection
def redact_url(url: Optional[str]) -> str:
    """The URL with any password replaced by ``***`` (safe to log or print)."""
    if not url:
        return str(url)
    try:
        parts = urlsplit(url)
        if parts.password is None and "@" not in parts.netloc:
            return url
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        if parts.port:
            host = f"{host}:{parts.port}"
        user = quote(parts.username or "", safe="")
        auth = f"{user}:***" if parts.password is not None else user
        return urlunsplit(parts._replace(netloc=f"{auth}@{host}"))
    except ValueError:  # unparsable: say nothing about it
        return "<unparsable Redis URL>"


def default_redis_url() -> str:
    return os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL


def validate_redis_url(url: str) -> str:
    """Raise ValueError (without the password) unless ``url`` is redis://, rediss://
    (TLS) or unix://."""
    try:
        scheme = urlsplit(url or "").scheme.lower()
    except ValueError:
        scheme = ""
    if scheme not in ("redis", "rediss", "unix"):
        raise ValueError(f"Redis URL must start with redis:// or rediss://, got {redact_url(url)}")
    return url


def connect(url: str, *, socket_timeout: float = 5.0, socket_connect_timeout: float = 3.0,
            decode_responses: bool = True, asyncio: bool = False, **kwargs):
    """A Redis client for a ``redis://`` or ``rediss://`` (TLS) URL (``asyncio=True``:
    a ``redis.asyncio`` one, for servers answering on an event loop).

    The password comes from the URL, else from ``$REDIS_PASSWORD``. The client does no
    retries of its own (callers decide); it never logs the URL.
    """
    if asyncio:
        from redis import asyncio as redis
    else:
        import redis

    validate_redis_url(url)
    if urlsplit(url).password is None and os.environ.get("REDIS_PASSWORD"):
        kwargs.setdefault("password", os.environ["REDIS_PASSWORD"])
    return redis.Redis.from_url(url, decode_responses=decode_responses,
                                socket_timeout=socket_timeout,
                                socket_connect_timeout=socket_connect_timeout, **kwargs)


# --------------------------------------------------------------------------- reading
def _text(v: Any) -> str:
    return v.decode("utf-8") if isinstance(v, bytes) else str(v)


def _sort_key(kind: str, member: str, score: float):
    if kind == "products" and member.isdigit():
        return (-score, 0, int(member), "")
    return (-score, 1, 0, member)


class UnusableRanking(ValueError):
    """A ranking in Redis holds a score no reader may pass on (NaN or infinite)."""


def check_scores(key: str, pairs) -> None:
    """Raise :class:`UnusableRanking` naming the first non-finite score of ``key``."""
    for member, score in pairs:
        if not math.isfinite(score):
            raise UnusableRanking(f"ranking {key} holds a non-finite score ({score}) for "
                                  f"{member!r}; it is not served until a writer replaces it")


def read_ranking(client, dimension: str = "products", horizon: str = "all",
                 gender: Optional[str] = None, season: Optional[str] = None, limit: int = 10,
                 prefix: str = KEY_PREFIX) -> List[dict]:
    """The top ``limit`` of a ranking: ``[{rank, id, name, score}]`` best first.

    ``dimension`` is ``products``, ``brands`` or ``subcategories`` (gender/season filter
    products), or a full dimension such as ``products:gender:Men``. For products ``id``
    is the product id (int) and ``name`` its productDisplayName (None if unknown); for
    brands and sub-categories both are the name. Ties are ordered like the writer ranks
    them (product id, then name, ascending). Returns ``[]`` when the ranking does not
    exist (nothing written yet). Redis errors propagate (``redis.ConnectionError`` …).
    Names are looked up (HMGET) only for the members returned; the writer never removes
    a name, so a name read after the ranking still belongs to it.
    """
    key, kind = ranking_target(dimension, horizon, gender, season, prefix)
    # ≤ top_n members: ties are sorted here
    pairs = top_pairs(kind, key, client.zrevrange(key, 0, -1, withscores=True), limit)
    members = members_to_name(kind, pairs)
    names = dict(zip(members, client.hmget(names_key(prefix), members))) if members else {}
    return ranked_items(kind, pairs, names)


def ranking_target(dimension: str = "products", horizon: str = "all",
                   gender: Optional[str] = None, season: Optional[str] = None,
                   prefix: str = KEY_PREFIX) -> Tuple[str, str]:
    """``(key, kind)`` of a ranking: its sorted set and ``products`` / ``brands`` /
    ``subcategories`` (``dimension`` as in :func:`read_ranking`)."""
    if horizon not in HORIZONS:
        raise ValueError(f"unknown horizon {horizon!r}; expected one of {', '.join(HORIZONS)}")
    dim = dimension if ":" in dimension else dimension_key(dimension, gender, season)
    return top_key(horizon, dim, prefix), dim.split(":", 1)[0]


def version_fields(horizon: str) -> Tuple[str, str, str]:
    """The ``{prefix}:meta`` fields (HMGET them) that tell which version of a horizon's
    rankings Redis holds: the writer rewrites them in the same MULTI/EXEC as the
    rankings, so while they are unchanged so is every ranking of the horizon."""
    return f"{horizon}:current_to_us", f"{horizon}:written_at_us", "written_at_us"


def ranking_version(values: Sequence[Any]) -> tuple:
    """The version named by the :func:`version_fields` values (as HMGET returns them):
    the horizon's ``written_at_us`` when the writer recorded the horizon, else the
    overall one (the fields :func:`decode_meta` and freshness fall back to)."""
    current_to, horizon_written, written = (None if v is None else _text(v) for v in values)
    if current_to is not None:
        return ("horizon", _int_or_none(horizon_written))
    return ("overall", _int_or_none(written))


def meta_version(meta: Dict[str, Any], horizon: str) -> tuple:
    """:func:`ranking_version` of a decoded meta hash (:func:`read_meta`)."""
    own = (meta.get("horizons") or {}).get(horizon)
    if own is not None:
        return ("horizon", own.get("written_at_us"))
    return ("overall", meta.get("written_at_us"))


def top_pairs(kind: str, key: str, ranked, limit: int) -> List[Tuple[str, float]]:
    """ZREVRANGE … WITHSCORES of a whole ranking (≤ top_n members) → its first ``limit``
    ``(member, score)`` ordered like the writer ranks ties; :class:`UnusableRanking` if
    any score is not finite."""
    pairs = [(_text(m), float(s)) for m, s in ranked]
    check_scores(key, pairs)
    pairs.sort(key=lambda ms: _sort_key(kind, ms[0], ms[1]))
    return pairs[:max(0, int(limit))]


def members_to_name(kind: str, pairs) -> List[str]:
    """The members whose names :func:`ranked_items` needs (HMGET them from
    :func:`names_key`): product ids; brands and sub-categories are their own names."""
    return [m for m, _ in pairs] if kind == "products" else []


def ranked_items(kind: str, pairs, names: Optional[Dict[str, Any]] = None) -> List[dict]:
    """``[{rank, id, name, score}]`` (the shape of :func:`read_ranking`)."""
    if kind != "products":
        return [{"rank": i, "id": m, "name": m, "score": s}
                for i, (m, s) in enumerate(pairs, start=1)]
    names = names or {}
    return [{"rank": i, "id": int(m) if m.isdigit() else m,
             "name": None if names.get(m) is None else _text(names[m]), "score": s}
            for i, (m, s) in enumerate(pairs, start=1)]


def known_dimensions(client, horizon: str, prefix: str = KEY_PREFIX) -> List[str]:
    """The dimensions a writer has written for ``horizon``, sorted."""
    return sorted(_text(d) for d in client.smembers(dims_key(horizon, prefix)))


def _int_or_none(v: Any) -> Optional[int]:
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


def read_meta(client, prefix: str = KEY_PREFIX) -> Dict[str, Any]:
    """The ``{prefix}:meta`` hash, decoded.

    ``{}`` when nothing was written yet; else ``current_to``, ``current_to_us``,
    ``written_at``, ``written_at_us`` (latest over the horizons) and ``horizons``:
    ``{h: {current_to, current_to_us, written_at, written_at_us, records, window_end_us}}``.
    """
    return decode_meta(client.hgetall(meta_key(prefix)))


def decode_meta(hash_value) -> Dict[str, Any]:
    """The decoded form of the meta hash as HGETALL returns it (see :func:`read_meta`)."""
    raw = {_text(k): _text(v) for k, v in (hash_value or {}).items()}
    if not raw:
        return {}
    out: Dict[str, Any] = {}
    for field in ("current_to", "written_at"):
        if field in raw:
            out[field] = raw[field]
        if f"{field}_us" in raw:
            out[f"{field}_us"] = _int_or_none(raw[f"{field}_us"])
    horizons: Dict[str, Dict[str, Any]] = {}
    for h in HORIZONS:
        if f"{h}:current_to_us" not in raw:
            continue
        horizons[h] = {
            "current_to": raw.get(f"{h}:current_to"),
            "current_to_us": _int_or_none(raw.get(f"{h}:current_to_us")),
            "written_at": raw.get(f"{h}:written_at"),
            "written_at_us": _int_or_none(raw.get(f"{h}:written_at_us")),
            "records": _int_or_none(raw.get(f"{h}:records")),
            "window_end_us": _int_or_none(raw.get(f"{h}:window_end_us")),
        }
    out["horizons"] = horizons
    return out
