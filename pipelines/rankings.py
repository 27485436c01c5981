"""`shopstream rankings`: read the live rankings from Redis — and the Redis key layout.

This module is the one place that defines how rankings live in Redis (SPEC §4); the
writer (``transforms.redis_sink``), this command and the HTTP API all use it. It imports
neither Beam nor anything heavy, so the command starts fast.

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
  is wall-clock time of the write.
* ``{prefix}:names:products`` — hash: product id → productDisplayName.
* ``{prefix}:dims:{horizon}`` — set of the dimensions currently written for a horizon
  (lets a writer delete rankings that became empty).
"""
from __future__ import annotations

import datetime as dt
import json
import os
import sys
import time
from typing import Any, Dict, List, Optional
from urllib.parse import quote, urlsplit, urlunsplit

KEY_PREFIX = "shopstream"
HORIZONS = ("1h", "24h", "all")
KINDS = ("products", "brands", "subcategories")
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


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
            decode_responses: bool = True, **kwargs):
    """A Redis client for a ``redis://`` or ``rediss://`` (TLS) URL.

    The password comes from the URL, else from ``$REDIS_PASSWORD``. The client does no
    retries of its own (callers decide); it never logs the URL.
    """
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
    if horizon not in HORIZONS:
        raise ValueError(f"unknown horizon {horizon!r}; expected one of {', '.join(HORIZONS)}")
    dim = dimension if ":" in dimension else dimension_key(dimension, gender, season)
    kind = dim.split(":", 1)[0]
    key = top_key(horizon, dim, prefix)
    limit = max(0, int(limit))
    ranked = client.zrevrange(key, 0, -1, withscores=True)  # ≤ top_n members: sort ties here
    pairs = [(_text(m), float(s)) for m, s in ranked]
    pairs.sort(key=lambda ms: _sort_key(kind, ms[0], ms[1]))
    pairs = pairs[:limit]
    if kind == "products":
        members = [m for m, _ in pairs]
        found = client.hmget(names_key(prefix), members) if members else []
        names = {m: (_text(v) if v is not None else None) for m, v in zip(members, found)}
        return [{"rank": i, "id": int(m) if m.isdigit() else m, "name": names.get(m),
                 "score": s} for i, (m, s) in enumerate(pairs, start=1)]
    return [{"rank": i, "id": m, "name": m, "score": s}
            for i, (m, s) in enumerate(pairs, start=1)]


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
    raw = {_text(k): _text(v) for k, v in (client.hgetall(meta_key(prefix)) or {}).items()}
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


def format_us(us: Optional[int]) -> str:
    """µs since the epoch → ``2019-09-06 15:54:32 UTC``."""
    if us is None:
        return "?"
    t = _EPOCH + dt.timedelta(microseconds=int(us))
    return t.strftime("%Y-%m-%d %H:%M:%S UTC")


def format_age(seconds: float) -> str:
    """Seconds → ``42s``, ``3m 05s``, ``2h 10m``, ``4d 3h``."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"


# --------------------------------------------------------------------------- command
_HORIZON_TEXT = {"1h": "the last hour", "24h": "the last 24 hours", "all": "all time"}


def _canonical(value: Optional[str]) -> Optional[str]:
    """``men`` → ``Men`` (the product table's spelling of genders and seasons)."""
    if value is None or not value.strip():
        return None
    v = value.strip()
    return v[:1].upper() + v[1:].lower()


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "rankings", help="read the live top-10 rankings from Redis",
        description="Print a live ranking kept in Redis by `shopstream replay` / "
                    "`shopstream stream` (keys shopstream:top:{horizon}:{dimension}).",
        epilog="examples: shopstream rankings products --horizon 1h --gender Men | "
               "shopstream rankings brands --json")
    p.add_argument("what", nargs="?", default="products", choices=KINDS,
                   help="what is ranked (default: products)")
    p.add_argument("--gender", default=None,
                   help="products only: Men, Women, Unisex, Boys or Girls")
    p.add_argument("--season", default=None,
                   help="products only: Summer, Winter, Fall or Spring")
    p.add_argument("--horizon", default="all", choices=HORIZONS,
                   help="1h or 24h (sliding event-time windows) or all (default: all)")
    p.add_argument("--limit", type=int, default=10, help="how many to show (default 10)")
    p.add_argument("--json", action="store_true",
                   help="print a JSON list of {rank, id, name, score}")
    p.add_argument("--redis", default=None,
                   help=f"Redis URL (default: $REDIS_URL, else {DEFAULT_REDIS_URL}); "
                        "the password may also come from $REDIS_PASSWORD")
    p.set_defaults(func=run)


def _fail(message: str, code: int = 1) -> int:
    print(f"shopstream rankings: {message}", file=sys.stderr)
    return code


def run(args) -> int:
    import redis

    url = getattr(args, "redis", None) or default_redis_url()
    where = redact_url(url)
    gender, season = _canonical(args.gender), _canonical(args.season)
    if args.limit < 1:
        return _fail("--limit must be at least 1", 2)
    try:
        dim = dimension_key(args.what, gender, season)
    except ValueError as exc:
        return _fail(str(exc), 2)
    try:
        client = connect(url)
    except ValueError as exc:
        return _fail(str(exc), 2)
    key = top_key(args.horizon, dim)
    try:
        items = read_ranking(client, dim, args.horizon, limit=args.limit)
        if not items:
            known = sorted(_text(d) for d in client.smembers(dims_key(args.horizon)))
            hint = (f"; rankings that exist for {args.horizon}: {', '.join(known)}" if known
                    else "; run `shopstream replay` or `shopstream stream` to write rankings")
            return _fail(f"no ranking {key} in Redis at {where} yet{hint}")
        meta = read_meta(client)
    except redis.AuthenticationError:
        return _fail(f"Redis at {where} refused the password (set it in the URL or $REDIS_PASSWORD)")
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        return _fail(f"cannot reach Redis at {where}: {exc}")
    except redis.RedisError as exc:
        return _fail(f"Redis error at {where}: {exc}")
    finally:
        try:
            client.close()
        except Exception:  # pragma: no cover - closing a broken client
            pass
    if args.json:
        print(json.dumps(items, ensure_ascii=False))
        return 0
    print(_table(items, args.what, args.horizon, gender, season))
    print(_freshness(meta.get("horizons", {}).get(args.horizon, {})))
    return 0


def _table(items: List[dict], kind: str, horizon: str, gender: Optional[str] = None,
           season: Optional[str] = None) -> str:
    filters = ", ".join(v for v in (gender, season) if v)
    title = f"{kind} ({filters})" if filters else kind
    lines = [f"Top {len(items)} {title} — {_HORIZON_TEXT[horizon]}"]
    if kind == "products":
        header, rows = ("rank", "id", "name", "score"), [
            (str(i["rank"]), str(i["id"]), i["name"] or "", f"{i['score']:.4f}") for i in items]
    else:
        header, rows = ("rank", kind[:-1] if kind != "subcategories" else "subcategory",
                        "score"), [(str(i["rank"]), i["name"], f"{i['score']:.4f}") for i in items]
    widths = [max(len(r[c]) for r in [header, *rows]) for c in range(len(header))]
    right = {0, len(header) - 1} | ({1} if kind == "products" else set())
    for r in [header, *rows]:
        cells = [c.rjust(w) if j in right else c.ljust(w) for j, (c, w) in enumerate(zip(r, widths))]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _freshness(h: Dict[str, Any]) -> str:
    current = format_us(h.get("current_to_us"))
    written = h.get("written_at_us")
    age = format_age(time.time() - written / 1e6) if written else "?"
    return f"current to {current}, written {age} ago"
