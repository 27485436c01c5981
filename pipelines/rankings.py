"""`shopstream rankings`: print the live rankings read from Redis (layout in
``transforms.ranking_store``)."""
from __future__ import annotations

import datetime as dt
import json
import sys
import time
from typing import Any, Dict, List, Optional

from transforms.ranking_store import (
    DEFAULT_REDIS_URL,
    HORIZONS,
    KINDS,
    connect,
    default_redis_url,
    dimension_key,
    known_dimensions,
    read_meta,
    read_ranking,
    redact_url,
    top_key,
)
from transforms.records import EPOCH


def format_us(us: Optional[int]) -> str:
    """µs since the epoch → ``2019-09-06 15:54:32 UTC``."""
    if us is None:
        return "?"
    t = EPOCH + dt.timedelta(microseconds=int(us))
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
            known = known_dimensions(client, args.horizon)
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
