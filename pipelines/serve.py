"""`shopstream serve`: a read-only HTTP API over the live Redis rankings, and a live page.

Endpoints (OpenAPI document at ``/openapi.json``, interactive docs at ``/docs``):

* ``GET /api/rankings/{dimension}?horizon=&gender=&season=&limit=`` — the top-N of a
  ranking (``products``, ``brands`` or ``subcategories``; horizon ``1h``, ``24h``, ``all``;
  gender/season filters for products only), items shaped like ``shopstream rankings --json``
  plus freshness from the ``shopstream:meta`` hash.
* ``GET /healthz`` — Redis reachable and how old the rankings are; 503 when Redis is down.
* ``GET /`` — the live page (plain HTML + JS from ``pipelines/web/``, no CDN): top-10
  products, brands and sub-categories, refreshed every few seconds.
* ``GET /report`` — the analytics report (``shopstream report``) built from ``--warehouse``.

Items and freshness follow the key layout and reading rules of ``transforms.ranking_store``
(as ``shopstream rankings --json``), read with ``redis.asyncio``: a rankings request costs
one small HMGET of its horizon's version fields while the ranking is unchanged
(:class:`RankingsReader`), and a well-formed one is answered before FastAPI's routing
(:class:`PlainRankings`). Only Redis reads (HMGET, ZREVRANGE and HGETALL in MULTI/EXEC,
PING) and warehouse SELECTs: nothing writes.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import logging
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, Literal, NamedTuple, Optional, Tuple
from urllib.parse import parse_qsl

from pipelines import report as report_mod
from transforms import ranking_store as rankings

log = logging.getLogger(__name__)

WEB_DIR = Path(__file__).with_name("web")
DIMENSIONS = rankings.KINDS  # products, brands, subcategories
HORIZONS = rankings.HORIZONS  # 1h, 24h, all
GENDERS = ("Men", "Women", "Unisex", "Boys", "Girls")
SEASONS = ("Summer", "Winter", "Fall", "Spring")
MAX_LIMIT = 50
REPORT_CACHE_SECONDS = 60.0


class InvalidQuery(ValueError):
    """A parameter combination the API rejects (→ HTTP 422 with this message)."""


def _canonical(value: Optional[str], allowed: tuple, what: str) -> Optional[str]:
    """Case-insensitive match against the known values; None/''/any → None; else an error."""
    if value is None or value.strip() == "" or value.strip().lower() in ("any", "all"):
        return None
    for a in allowed:
        if a.lower() == value.strip().lower():
            return a
    raise InvalidQuery(f"unknown {what} {value!r}; expected one of: {', '.join(allowed)}")


def check_query(dimension: str, gender: Optional[str], season: Optional[str]) -> tuple:
    """Validated (gender, season) in the product table's spelling, or InvalidQuery."""
    g = _canonical(gender, GENDERS, "gender")
    s = _canonical(season, SEASONS, "season")
    try:
        rankings.dimension_key(dimension, g, s)
    except ValueError as exc:
        raise InvalidQuery(str(exc).replace("--gender and --season",
                                           "gender and season filters")) from None
    return g, s


def parse_time(value: Any) -> Optional[dt.datetime]:
    """ISO-8601 text or epoch seconds/ms/µs → an aware UTC datetime (None if not a time)."""
    if value is None or value == "":
        return None
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
    try:
        num = float(value)
    except (TypeError, ValueError):
        num = None
    if num is not None:
        if num > 1e14:  # microseconds
            num /= 1e6
        elif num > 1e11:  # milliseconds
            num /= 1e3
        return dt.datetime.fromtimestamp(num, tz=dt.timezone.utc)
    text = str(value).strip().replace("Z", "+00:00")
    try:
        t = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)


def _iso(t: Optional[dt.datetime], raw: Any) -> Any:
    return t.isoformat().replace("+00:00", "Z") if t else raw


def freshness(meta: Dict[str, Any], horizon: Optional[str] = None,
              now: Optional[float] = None) -> Dict[str, Any]:
    """From ``read_meta()``: ``current_to`` and ``written_at`` (ISO-8601 UTC) and
    ``age_seconds`` (now − written_at) of the horizon's ranking when the writer recorded
    it, else of the rankings overall; ``records`` counted when known."""
    now = time.time() if now is None else now
    src = (meta.get("horizons") or {}).get(horizon) if horizon else None
    src = src or meta
    ct = parse_time(src.get("current_to_us")) or parse_time(src.get("current_to"))
    wa = parse_time(src.get("written_at_us")) or parse_time(src.get("written_at"))
    out = {"horizon": horizon if src is not meta else None,
           "current_to": _iso(ct, src.get("current_to")),
           "written_at": _iso(wa, src.get("written_at")),
           "age_seconds": round(max(0.0, now - wa.timestamp()), 3) if wa else None}
    if src.get("records") is not None:
        out["records"] = src["records"]
    return out


def make_client(url: str):
    """A pooled, decoding ``redis.asyncio`` client (the API answers on the event loop and
    never blocks it on Redis) that fails fast (one immediate retry) when the server is
    down, so /healthz answers 503 at once."""
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    return rankings.connect(url, socket_timeout=2.0, socket_connect_timeout=1.0,
                            retry=Retry(NoBackoff(), 1), health_check_interval=0,
                            asyncio=True)


class Snapshot(NamedTuple):
    """One ranking as read at one version of its horizon (``ranking_store.meta_version``)."""
    version: tuple
    items: list
    meta: Dict[str, Any]           # freshness() of the version, age_seconds aside
    written_at: Optional[float]    # epoch seconds, for age_seconds


class RankingsReader:
    """``/api/rankings`` answers from Redis. A request reads only its horizon's version
    fields (one small HMGET); the ranking itself is read again only when they changed —
    the writer rewrites them in the same MULTI/EXEC as every ranking of the horizon, so
    an unchanged version means unchanged rankings. One snapshot is kept per (ranking,
    limit), a set bounded by the routes' validation."""

    def __init__(self, client, where: str):
        self.client, self.where = client, where
        self.snapshots: Dict[tuple, Snapshot] = {}
        self.unsent: Dict[str, asyncio.Future] = {}  # horizon → version read not yet sent
        self.reads: set = set()  # running version reads (the loop keeps only weak refs)

    async def version(self, horizon: str) -> tuple:
        """The horizon's version, read after this call: requests arriving together share
        one HMGET, but never one that was sent before they arrived."""
        read = self.unsent.get(horizon)
        if read is None:
            loop = asyncio.get_running_loop()
            read = self.unsent[horizon] = loop.create_future()
            loop.call_soon(self._start_read, horizon, read)
        return await asyncio.shield(read)

    def _start_read(self, horizon: str, read: asyncio.Future) -> None:
        task = asyncio.get_running_loop().create_task(self._read_version(horizon, read))
        self.reads.add(task)
        task.add_done_callback(self.reads.discard)

    async def _read_version(self, horizon: str, read: asyncio.Future) -> None:
        del self.unsent[horizon]  # later arrivals start their own read
        try:
            read.set_result(rankings.ranking_version(await self.client.hmget(
                rankings.meta_key(), list(rankings.version_fields(horizon)))))
        except Exception as exc:  # noqa: BLE001 - handed to every waiting request
            read.set_exception(exc)

    async def snapshot(self, dimension: str, horizon: str, gender: Optional[str],
                       season: Optional[str], limit: int) -> Snapshot:
        key, kind = rankings.ranking_target(dimension, horizon, gender, season)
        version = await self.version(horizon)
        snap = self.snapshots.get((key, limit))
        if snap is not None and snap.version == version:
            return snap
        # the ranking and the meta of one moment (MULTI/EXEC), then the names
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.zrevrange(key, 0, -1, withscores=True)  # ≤ top_n members
            pipe.hgetall(rankings.meta_key())
            ranked, raw_meta = await pipe.execute()
        pairs = rankings.top_pairs(kind, key, ranked, limit)
        members = rankings.members_to_name(kind, pairs)
        names = (dict(zip(members, await self.client.hmget(rankings.names_key(), members)))
                 if members else {})
        meta = rankings.decode_meta(raw_meta)
        fresh = freshness(meta, horizon)
        wa = parse_time(fresh["written_at"])
        snap = self.snapshots[(key, limit)] = Snapshot(
            rankings.meta_version(meta, horizon), rankings.ranked_items(kind, pairs, names),
            fresh, wa.timestamp() if wa else None)
        return snap

    async def answer(self, dimension: str, horizon: str, gender: Optional[str],
                     season: Optional[str], limit: int) -> Tuple[int, bytes]:
        """(HTTP status, JSON body): 200 with the ranking, or 503 with the reason when
        Redis fails or the ranking holds a non-finite score (never served)."""
        import orjson
        import redis

        try:
            snap = await self.snapshot(dimension, horizon, gender, season, limit)
        except redis.RedisError as exc:  # down, timed out, refused the password...
            return 503, orjson.dumps({"detail": redis_down(exc, self.where)})
        except rankings.UnusableRanking as exc:
            return 503, orjson.dumps({"detail": str(exc)})
        meta = dict(snap.meta)
        if snap.written_at is not None:
            meta["age_seconds"] = round(max(0.0, time.time() - snap.written_at), 3)
        return 200, orjson.dumps({"dimension": dimension, "horizon": horizon,
                                  "gender": gender, "season": season,
                                  "items": snap.items, "meta": meta})


def redis_state(exc: Exception) -> str:
    import redis

    return ("unreachable" if isinstance(exc, (redis.ConnectionError, redis.TimeoutError))
            else "failing")


def redis_down(exc: Exception, where: str) -> str:
    return f"Redis is {redis_state(exc)} at {where}: {exc}"


RANKINGS_PATH = "/api/rankings/"
RANKINGS_PARAMS = frozenset(("horizon", "gender", "season", "limit"))
JSON_HEADERS = [(b"content-type", b"application/json"), (b"cache-control", b"no-store")]


def plain_ranking_query(path: str, query_string: bytes) -> Optional[tuple]:
    """``(dimension, horizon, gender, season, limit)`` of a well-formed rankings request
    (each known parameter at most once, each valid), else None: FastAPI's route then
    answers it, with its validation messages."""
    dimension = path[len(RANKINGS_PATH):] if path.startswith(RANKINGS_PATH) else None
    if dimension not in DIMENSIONS:
        return None
    pairs = parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)
    params = dict(pairs)
    if len(params) != len(pairs) or not params.keys() <= RANKINGS_PARAMS:
        return None
    horizon, limit = params.get("horizon", "all"), params.get("limit", "10")
    if horizon not in HORIZONS or not (limit.isascii() and limit.isdigit()):
        return None
    if not 1 <= int(limit) <= MAX_LIMIT:
        return None
    try:
        g, s = check_query(dimension, params.get("gender"), params.get("season"))
    except InvalidQuery:
        return None
    return dimension, horizon, g, s, int(limit)


class PlainRankings:
    """ASGI middleware: a well-formed GET/HEAD ``/api/rankings/{dimension}`` is answered
    here by :meth:`RankingsReader.answer` — the same answer as the FastAPI route, without
    its per-request parameter machinery (most of a cached answer's CPU). Anything else
    goes on to the FastAPI routes."""

    def __init__(self, app, reader: RankingsReader):
        self.app, self.reader = app, reader

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] in ("GET", "HEAD"):
            query = plain_ranking_query(scope["path"], scope["query_string"])
            if query is not None:
                status, body = await self.reader.answer(*query)
                await send({"type": "http.response.start", "status": status,
                            "headers": JSON_HEADERS + [
                                (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body",
                            "body": b"" if scope["method"] == "HEAD" else body})
                return
        await self.app(scope, receive, send)


def create_app(redis_url: Optional[str] = None, warehouse: Optional[str] = None, client=None):
    """The FastAPI application (a test passes its own ``redis_url``)."""
    import orjson
    import redis
    from fastapi import FastAPI, HTTPException, Query
    from fastapi import Path as PathParam
    from fastapi.responses import FileResponse, HTMLResponse, Response

    class JSONResponse(Response):
        """JSON encoded by orjson (several times faster than the json module)."""
        media_type = "application/json"

        def render(self, content: Any) -> bytes:
            return orjson.dumps(content)

    if not (WEB_DIR / "index.html").exists():
        raise RuntimeError(f"the live page is missing: {WEB_DIR / 'index.html'}")
    redis_url = redis_url or rankings.default_redis_url()
    client = client if client is not None else make_client(redis_url)
    where = rankings.redact_url(redis_url)
    app = FastAPI(
        title="shopstream rankings API",
        description="Read-only access to the live top-10 rankings kept in Redis "
                    "(`shopstream:top:{horizon}:{dimension}`), and a live page at `/`.",
        version="1.0")
    app.state.redis = client
    app.state.warehouse = warehouse
    report_cache: Dict[str, Any] = {"at": 0.0, "html": None}
    reader = RankingsReader(client, where)
    app.add_middleware(PlainRankings, reader=reader)

    def get(path: str, **kw):
        """A GET route that answers HEAD too (load balancers and uptime checks use it);
        the OpenAPI document lists the GET only."""
        def register(fn):
            app.get(path, **kw)(fn)
            app.add_api_route(path, fn, methods=["HEAD"], include_in_schema=False,
                              response_class=kw.get("response_class", JSONResponse))
            return fn
        return register
    report_lock = threading.Lock()
    no_store = {"Cache-Control": "no-store"}

    @get("/api/rankings/{dimension}", tags=["rankings"],
             summary="Top-N of a live ranking",
             responses={422: {"description": "unknown dimension, horizon, gender or season, "
                                             "or limit outside 1..50"},
                        503: {"description": "Redis is unreachable, or the ranking holds a "
                                             "non-finite score"}})
    # well-formed requests are answered by PlainRankings before they get here (the same
    # answer); this route documents the API and answers the rest, errors included
    async def get_ranking(
        dimension: Literal["products", "brands", "subcategories"] = PathParam(
            ..., description="what is ranked"),
        horizon: Literal["1h", "24h", "all"] = Query(
            "all", description="sliding event-time window, or all data"),
        gender: Optional[str] = Query(
            None, description=f"products only: one of {', '.join(GENDERS)}"),
        season: Optional[str] = Query(
            None, description=f"products only: one of {', '.join(SEASONS)}"),
        limit: int = Query(10, ge=1, le=MAX_LIMIT, description=f"1..{MAX_LIMIT}"),
    ):
        try:
            g, s = check_query(dimension, gender, season)
        except InvalidQuery as exc:
            raise HTTPException(422, detail=str(exc)) from None
        status, body = await reader.answer(dimension, horizon, g, s, limit)
        return Response(body, status_code=status, media_type="application/json",
                        headers=no_store)

    @get("/healthz", tags=["health"], summary="Redis reachable, rankings age",
             responses={503: {"description": "Redis is unreachable"}})
    async def healthz():
        try:
            await client.ping()
            raw = rankings.decode_meta(await client.hgetall(rankings.meta_key()))
        except redis.RedisError as exc:
            return JSONResponse(
                {"status": "unavailable", "redis": redis_state(exc), "redis_url": where,
                 "error": str(exc)}, status_code=503, headers=no_store)
        meta = freshness(raw)
        has = meta["written_at"] is not None or meta["current_to"] is not None
        return JSONResponse(
            {"status": "ok", "redis": "ok", "redis_url": where,
             "rankings": "present" if has else "none written yet",
             "rankings_age_seconds": meta["age_seconds"],
             "current_to": meta["current_to"], "written_at": meta["written_at"],
             "horizons": {h: freshness(raw, h) for h in (raw.get("horizons") or {})},
             "warehouse": warehouse}, headers=no_store)

    @get("/", include_in_schema=False)
    def index():
        return FileResponse(WEB_DIR / "index.html", media_type="text/html",
                            headers=no_store)

    @get("/static/{name}", include_in_schema=False)
    def static(name: str):
        path = WEB_DIR / name
        if "/" in name or name.startswith(".") or not path.is_file():
            raise HTTPException(404, detail="not found")
        return FileResponse(path)

    @get("/report", tags=["report"], response_class=HTMLResponse,
             summary="The analytics report built from the warehouse",
             responses={404: {"description": "no --warehouse given, or it does not exist"},
                        503: {"description": "the warehouse could not be read"}})
    def report():
        if not warehouse:
            raise HTTPException(404, detail="no warehouse configured: start with --warehouse TARGET")
        with report_lock:
            if report_cache["html"] and time.time() - report_cache["at"] < REPORT_CACHE_SECONDS:
                return HTMLResponse(report_cache["html"])
            try:
                html = report_mod.build_report(warehouse)
            except FileNotFoundError as exc:
                raise HTTPException(404, detail=str(exc)) from exc
            except Exception as exc:  # e.g. a DuckDB file locked by a running job
                log.warning("report failed: %s", exc)
                raise HTTPException(503, detail=f"the warehouse could not be read: {exc}") from exc
            report_cache.update(at=time.time(), html=html)
        return HTMLResponse(html)

    return app


# --------------------------------------------------------------------------- CLI
def register(subparsers, name: str = "serve"):
    p = subparsers.add_parser(
        name, help="serve the rankings HTTP API and live page",
        description="Serve the read-only rankings API (/api/rankings/{dimension}, /healthz, "
                    "OpenAPI at /docs) and the live page (/) with uvicorn.")
    p.add_argument("--redis", default=None,
                   help=f"Redis URL (default: $REDIS_URL, else {rankings.DEFAULT_REDIS_URL}); "
                        "the password may also come from $REDIS_PASSWORD")
    p.add_argument("--warehouse", default=None,
                   help="DuckDB path or bq://PROJECT.DATASET: enables /report")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default %(default)s)")
    p.add_argument("--port", type=int, default=8080, help="port (default %(default)s)")
    p.add_argument("--access-log", action="store_true", help="log every request")
    p.add_argument("--workers", type=int, default=1,
                   help="server processes (default 1; more use more cores under load)")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    import uvicorn

    url = args.redis or rankings.default_redis_url()
    try:
        app = create_app(url, warehouse=args.warehouse)
    except ValueError as exc:  # e.g. not a redis:// URL
        print(f"shopstream serve: {exc}", file=sys.stderr)
        return 2
    print(f"shopstream serve: http://{args.host}:{args.port}/ (API docs at /docs, "
          f"Redis {rankings.redact_url(url)})", flush=True)
    log_level = "info" if args.access_log else "warning"  # uvicorn logs requests at info
    if args.workers > 1:  # worker processes build the app from the environment
        import os

        os.environ["SHOPSTREAM_SERVE_REDIS"] = url
        os.environ["SHOPSTREAM_SERVE_WAREHOUSE"] = args.warehouse or ""
        uvicorn.run("pipelines.serve:app_from_env", factory=True, workers=args.workers,
                    host=args.host, port=args.port, access_log=args.access_log,
                    log_level=log_level)
        return 0
    uvicorn.run(app, host=args.host, port=args.port, access_log=args.access_log,
                log_level=log_level)
    return 0


def app_from_env():
    """The app of one ``--workers`` process (settings passed by :func:`run`)."""
    import os

    return create_app(os.environ["SHOPSTREAM_SERVE_REDIS"],
                      warehouse=os.environ.get("SHOPSTREAM_SERVE_WAREHOUSE") or None)
