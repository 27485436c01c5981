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

Items and freshness come from ``transforms.ranking_store`` (``read_ranking``/``read_meta``), the
reader behind ``shopstream rankings --json``. Only Redis reads (ZREVRANGE, HGETALL, PING)
and warehouse SELECTs: nothing writes.
"""
from __future__ import annotations

import datetime as dt
import logging
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, Literal, Optional

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
    """A pooled, decoding Redis client that fails fast (one immediate retry) when the
    server is down, so /healthz answers 503 at once."""
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return rankings.connect(url, socket_timeout=2.0, socket_connect_timeout=1.0,
                            retry=Retry(NoBackoff(), 1), health_check_interval=0)


# --------------------------------------------------------------------------- the app
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
    names_caches: Dict[str, dict] = {h: {} for h in HORIZONS}  # per ranking version

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

    def redis_state(exc: Exception) -> str:
        return ("unreachable" if isinstance(exc, (redis.ConnectionError, redis.TimeoutError))
                else "failing")

    def redis_down(exc: Exception) -> HTTPException:
        return HTTPException(503, detail=f"Redis is {redis_state(exc)} at {where}: {exc}")

    @get("/api/rankings/{dimension}", tags=["rankings"],
             summary="Top-N of a live ranking",
             responses={422: {"description": "unknown dimension, horizon, gender or season, "
                                             "or limit outside 1..50"},
                        503: {"description": "Redis is unreachable, or the ranking holds a "
                                             "non-finite score"}})
    # async: answered on the event loop, without a thread hop per request (the thread pool
    # dominated p99 under load); the Redis calls are one local round trip with short
    # timeouts (make_client), so they hold the loop for well under a millisecond
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
        try:
            items, raw_meta = rankings.read_ranking_with_meta(
                client, dimension, horizon, gender=g, season=s, limit=limit,
                names_cache=names_caches[horizon])
            meta = freshness(raw_meta, horizon)
        except redis.RedisError as exc:  # down, timed out, refused the password...
            raise redis_down(exc) from exc
        except rankings.UnusableRanking as exc:  # never a NaN/inf in a response
            raise HTTPException(503, detail=str(exc)) from exc
        body = {"dimension": dimension, "horizon": horizon, "gender": g, "season": s,
                "items": items, "meta": meta}
        return JSONResponse(body, headers=no_store)

    @get("/healthz", tags=["health"], summary="Redis reachable, rankings age",
             responses={503: {"description": "Redis is unreachable"}})
    async def healthz():
        try:
            client.ping()
            raw = rankings.read_meta(client)
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
    if args.workers > 1:  # worker processes build the app from the environment
        import os

        os.environ["SHOPSTREAM_SERVE_REDIS"] = url
        os.environ["SHOPSTREAM_SERVE_WAREHOUSE"] = args.warehouse or ""
        uvicorn.run("pipelines.serve:app_from_env", factory=True, workers=args.workers,
                    host=args.host, port=args.port, access_log=args.access_log,
                    log_level="warning")
        return 0
    uvicorn.run(app, host=args.host, port=args.port, access_log=args.access_log,
                log_level="warning")
    return 0


def app_from_env():
    """The app of one ``--workers`` process (settings passed by :func:`run`)."""
    import os

    return create_app(os.environ["SHOPSTREAM_SERVE_REDIS"],
                      warehouse=os.environ.get("SHOPSTREAM_SERVE_WAREHOUSE") or None)
