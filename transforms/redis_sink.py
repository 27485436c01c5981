"""Write ranking snapshots to Redis (SPEC §4 "Redis keys"), atomically and idempotently.

:class:`RedisRankingWriter` (plain Python) does the work; :class:`WriteRankingsToRedis`
wraps it in a DoFn. The key layout is defined in :mod:`transforms.ranking_store`.

One write of a horizon's snapshot is one WATCH/MULTI/EXEC transaction, sent pipelined:

1. ``WATCH {prefix}:meta`` and read it: if Redis already holds a newer snapshot of the
   horizon — ``(current_to_us, records)`` greater than ours — the write is skipped, so an
   old snapshot (a retried bundle, a late pane, a slow worker) never overwrites a newer
   one; another writer committing meanwhile aborts EXEC and we start over;
2. ``MULTI``; per dimension ZADD the members (absolute scores) into a temporary key and
   RENAME it over ``{prefix}:top:{horizon}:{dimension}``; DEL rankings of dimensions that
   became empty; product names into ``{prefix}:names:products``; the horizon's fields of
   ``{prefix}:meta``; ``EXEC``. A reader sees the old ranking or the new one, never a mix.

Writing the same snapshot twice leaves the same state (idempotent). If Redis is
unreachable (restart, failover, network), the writer retries with exponential backoff for
``retry_seconds`` (default 60 s, one budget per outage however many flushes it spans);
live, the newest snapshot per horizon is kept until it is written, so nothing is lost if
retries run out — the next write or flush tries again; a bounded run
(``fail_on_give_up``) raises :class:`RedisWriteError` instead, so it ends non-zero.
A restarted Redis without persistence comes back empty: every write first checks that
Redis still holds what this writer wrote, and writes its newest snapshots again if not.

The password comes from the URL or ``$REDIS_PASSWORD`` and is never logged
(:func:`redact_url`). Counters (namespace ``shopstream``): ``redis_writes`` (snapshots
written), ``redis_retries``, ``redis_stale_skipped``, ``redis_write_failures``.
"""
from __future__ import annotations

import datetime as dt
import logging
import math
import os
import time
import uuid
from typing import Any, Callable, Dict, Optional, Tuple

import apache_beam as beam
from apache_beam.metrics import Metrics

from transforms import secrets
from transforms.ranking_store import (
    KEY_PREFIX,
    connect,
    dims_key,
    meta_key,
    names_key,
    redact_url,
    top_key,
    validate_redis_url,
)
from transforms.records import EPOCH

__all__ = ["RedisRankingWriter", "RedisWriteError", "WriteRankingsToRedis", "redact_url",
           "snapshot_version", "wait_for_redis"]

log = logging.getLogger(__name__)

DEFAULT_TOP_N = 50
MAX_WATCH_ATTEMPTS = 50
#: Seconds a run keeps retrying an unreachable Redis before it gives up (--redis-retry-seconds).
DEFAULT_RETRY_SECONDS = 60.0


class RedisWriteError(RuntimeError):
    """The rankings could not be written (unreachable past the retry budget, refused
    credentials, a rejected write); the message says which, without the password."""


def wait_for_redis(redis_url: str, retry_seconds: float = DEFAULT_RETRY_SECONDS, *,
                   sleep: Callable[[float], None] = time.sleep,
                   clock: Callable[[], float] = time.monotonic) -> None:
    """Return once Redis answers PING; raise :class:`RedisWriteError` at once for refused
    credentials, or when it stays unreachable for ``retry_seconds``. Run before a
    pipeline, so a run that cannot write its rankings fails in seconds, not at the end."""
    import redis

    where = redact_url(redis_url)
    deadline = clock() + float(retry_seconds)
    delay = 0.1
    while True:
        client = None
        try:
            client = connect(redis_url, socket_timeout=3.0, socket_connect_timeout=3.0)
            client.ping()
            return
        except redis.AuthenticationError as exc:
            raise RedisWriteError(f"Redis at {where} refused the credentials: {exc}") from None
        except redis.ResponseError as exc:  # NOAUTH / WRONGPASS before AUTH succeeded
            if any(w in str(exc) for w in ("NOAUTH", "WRONGPASS", "invalid password")):
                raise RedisWriteError(f"Redis at {where} refused the credentials: {exc}") from None
            raise RedisWriteError(f"Redis at {where} rejected PING: {exc}") from None
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            if clock() + delay > deadline:
                raise RedisWriteError(
                    f"Redis at {where} unreachable for {float(retry_seconds):.0f}s "
                    f"(--redis-retry-seconds): {type(exc).__name__}: {exc}") from None
            sleep(delay)
            delay = min(delay * 2, 5.0)
        finally:
            if client is not None:
                try:
                    client.close()
                except Exception:  # noqa: BLE001 - closing a broken client
                    pass


def _iso(us: int) -> str:
    return (EPOCH + dt.timedelta(microseconds=int(us))).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _text(v: Any) -> str:
    return v.decode("utf-8") if isinstance(v, bytes) else str(v)


def snapshot_version(snapshot: Any) -> Tuple[int, int]:
    """``(as_of_us, records)``: a newer snapshot of a horizon compares greater."""
    return (int(snapshot.as_of_us), int(getattr(snapshot, "records", 0) or 0))


def _stored_version(meta: Dict[str, str], horizon: str) -> Optional[Tuple[int, int]]:
    try:
        return (int(meta[f"{horizon}:current_to_us"]), int(meta.get(f"{horizon}:records") or 0))
    except (KeyError, ValueError):
        return None


class RedisRankingWriter:
    """Writes :class:`~transforms.top_n.RankingSnapshot` objects to Redis.

    ``offer(snapshot)`` remembers it if it is the newest of its horizon; ``flush()``
    writes every pending newest snapshot (retrying while Redis is unreachable);
    ``write(snapshot)`` does both. ``flush``/``write`` return True when nothing is left
    pending. Not thread-safe: one writer per thread (one per DoFn instance).
    """

    RETRYABLE: Tuple[type, ...] = ()

    def __init__(self, redis_url: str, key_prefix: str = KEY_PREFIX, *,
                 top_n: int = DEFAULT_TOP_N, retry_seconds: float = DEFAULT_RETRY_SECONDS,
                 backoff_initial: float = 0.05, backoff_max: float = 5.0,
                 socket_timeout: float = 5.0, client=None,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic,
                 fail_on_give_up: bool = False):
        import redis

        self.RETRYABLE = (redis.ConnectionError, redis.TimeoutError,
                          redis.exceptions.BusyLoadingError, redis.exceptions.ReadOnlyError,
                          redis.exceptions.TryAgainError, redis.exceptions.ClusterDownError,
                          ConnectionError, OSError)
        self._redis = redis
        self.redis_url = redis_url
        self.where = redact_url(redis_url)
        self.prefix = key_prefix
        self.top_n = int(top_n)
        self.retry_seconds = float(retry_seconds)
        self.backoff_initial = float(backoff_initial)
        self.backoff_max = float(backoff_max)
        self.socket_timeout = socket_timeout
        self._sleep, self._clock = sleep, clock
        self._client = client
        #: raise RedisWriteError instead of keeping snapshots pending (a bounded run
        #: must not end "successfully" without its rankings)
        self.fail_on_give_up = fail_on_give_up
        self._outage_since: Optional[float] = None  # the budget spans flushes
        self.latest: Dict[str, Any] = {}              # horizon → newest snapshot offered
        self.pending: set = set()                     # horizons whose newest is unwritten
        self.written: Dict[str, Tuple[int, int]] = {}  # horizon → version we wrote
        self.stats = {"writes": 0, "retries": 0, "stale_skipped": 0, "failures": 0}
        self._writes = Metrics.counter("shopstream", "redis_writes")
        self._retries = Metrics.counter("shopstream", "redis_retries")
        self._stale = Metrics.counter("shopstream", "redis_stale_skipped")
        self._failures = Metrics.counter("shopstream", "redis_write_failures")

    # ------------------------------------------------------------------ public
    @property
    def client(self):
        if self._client is None:
            self._client = connect(self.redis_url, socket_timeout=self.socket_timeout,
                                   socket_connect_timeout=min(self.socket_timeout, 3.0))
        return self._client

    def offer(self, snapshot: Any) -> bool:
        """Remember ``snapshot`` if it is the newest of its horizon seen so far."""
        cur = self.latest.get(snapshot.horizon)
        if cur is not None and snapshot_version(snapshot) < snapshot_version(cur):
            self._count_stale()
            return False
        if (cur is not None and snapshot.horizon not in self.pending
                and snapshot_version(snapshot) == snapshot_version(cur)
                and snapshot.rankings == cur.rankings):
            return False  # unchanged: Redis already holds it
        self.latest[snapshot.horizon] = snapshot
        self.pending.add(snapshot.horizon)
        return True

    def write(self, snapshot: Any) -> bool:
        self.offer(snapshot)
        return self.flush()

    def flush(self) -> bool:
        """Write pending snapshots; retry with backoff while Redis is unreachable.

        Returns True when everything offered so far is in Redis (or superseded there),
        False when retries ran out or Redis refused (the snapshots stay pending)."""
        if not self.latest:
            return True
        start = self._clock() if self._outage_since is None else self._outage_since
        deadline = start + self.retry_seconds  # one budget per outage, not per flush
        delay = self.backoff_initial
        attempt = 0
        while True:
            try:
                self._write_once()
                self._outage_since = None
                if attempt:
                    log.info("Redis at %s is back; rankings written after %d retries",
                             self.where, attempt)
                return not self.pending
            except self.RETRYABLE as exc:
                if isinstance(exc, self._redis.AuthenticationError):
                    return self._give_up(f"Redis at {self.where} refused the credentials: {exc}")
                if self._outage_since is None:
                    self._outage_since = self._clock()
                attempt += 1
                self.stats["retries"] += 1
                self._retries.inc()
                self._reset_connections()
                if self._clock() + delay > deadline:
                    return self._give_up(
                        f"Redis at {self.where} unreachable for {self.retry_seconds:.0f}s "
                        f"({type(exc).__name__}: {exc}); keeping the newest snapshots of "
                        f"{', '.join(sorted(self.pending)) or '-'} for the next write")
                if attempt == 1:
                    log.warning("Redis at %s unreachable (%s: %s); retrying for up to %.0fs",
                                self.where, type(exc).__name__, exc, self.retry_seconds)
                self._sleep(delay)
                delay = min(delay * 2, self.backoff_max)
            except self._redis.RedisError as exc:  # e.g. WRONGTYPE: not worth retrying now
                return self._give_up(f"Redis at {self.where} rejected the rankings write: {exc}")

    def close(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
            except Exception:  # pragma: no cover - closing a broken client
                pass
            self._client = None

    # ------------------------------------------------------------------ internals
    def _give_up(self, message: str) -> bool:
        self.stats["failures"] += 1
        self._failures.inc()
        if self.fail_on_give_up:
            raise RedisWriteError(message)
        log.error("%s", message)
        return False

    def _count_stale(self, n: int = 1) -> None:
        self.stats["stale_skipped"] += n
        self._stale.inc(n)

    def _reset_connections(self) -> None:
        try:
            if self._client is not None:
                self._client.connection_pool.disconnect()
        except Exception:  # pragma: no cover - a pool that cannot even disconnect
            self._client = None

    def _write_once(self) -> None:
        """One WATCH/MULTI/EXEC round, repeated while other writers commit in between
        (bounded: under endless contention the snapshots stay pending for later)."""
        meta = meta_key(self.prefix)
        with self.client.pipeline(transaction=True) as pipe:
            for _ in range(MAX_WATCH_ATTEMPTS):
                try:
                    pipe.watch(meta)
                    stored = {_text(k): _text(v) for k, v in (pipe.hgetall(meta) or {}).items()}
                    todo = self._todo(stored)
                    if not todo:
                        pipe.unwatch()
                        return
                    old_dims = {h: {_text(d) for d in pipe.smembers(dims_key(h, self.prefix))}
                                for h in todo}
                    pipe.multi()
                    self._queue_writes(pipe, stored, todo, old_dims)
                    pipe.execute()
                except self._redis.WatchError:
                    continue
                for h in todo:
                    self.written[h] = snapshot_version(self.latest[h])
                    self.pending.discard(h)
                self.stats["writes"] += len(todo)
                self._writes.inc(len(todo))
                return
        raise self._redis.RedisError(
            f"{MAX_WATCH_ATTEMPTS} concurrent writes in a row changed {meta}; will retry later")

    def _todo(self, stored: Dict[str, str]) -> list:
        """Horizons to write now: pending ones not superseded in Redis, and ones whose
        snapshot Redis lost (restart without persistence, FLUSHALL)."""
        todo = []
        for h in sorted(self.latest):
            mine = snapshot_version(self.latest[h])
            theirs = _stored_version(stored, h)
            if theirs is not None and theirs > mine:
                if h in self.pending:  # someone wrote a newer one: ours is obsolete
                    self.pending.discard(h)
                    self._count_stale()
                continue
            if h in self.pending:
                todo.append(h)
            elif h in self.written and (theirs is None or theirs < self.written[h]):
                log.warning("Redis at %s lost the %s rankings (restart?); writing them again",
                            self.where, h)
                todo.append(h)
        return todo

    def _queue_writes(self, pipe, stored: Dict[str, str], todo: list, old_dims: dict) -> None:
        now_us = int(time.time() * 1_000_000)
        token = uuid.uuid4().hex[:12]
        names: Dict[str, str] = {}
        meta_fields: Dict[str, Any] = {}
        for h in todo:
            snap = self.latest[h]
            new_dims = set()
            for i, (dim, ranking) in enumerate(sorted((snap.rankings or {}).items())):
                members = finite_members(ranking[: self.top_n], f"{h}:{dim}")
                target = top_key(h, dim, self.prefix)
                if members:
                    tmp = f"{self.prefix}:tmp:{token}:{h}:{i}"
                    pipe.delete(tmp)
                    pipe.zadd(tmp, members)
                    pipe.rename(tmp, target)
                    new_dims.add(dim)
                else:
                    pipe.delete(target)
            for dim in sorted(old_dims[h] - new_dims):
                pipe.delete(top_key(h, dim, self.prefix))
            pipe.delete(dims_key(h, self.prefix))
            if new_dims:
                pipe.sadd(dims_key(h, self.prefix), *sorted(new_dims))
            names.update({str(k): str(v) for k, v in (getattr(snap, "names", None) or {}).items()
                          if v is not None})
            as_of = int(snap.as_of_us)
            meta_fields.update({
                f"{h}:current_to_us": as_of, f"{h}:current_to": _iso(as_of),
                f"{h}:written_at_us": now_us, f"{h}:written_at": _iso(now_us),
                f"{h}:records": int(getattr(snap, "records", 0) or 0),
                f"{h}:window_end_us": ("" if getattr(snap, "window_end_us", None) is None
                                       else int(snap.window_end_us)),
            })
        # The rankings overall: current to the newest horizon's event time.
        current = max([int(v) for k, v in stored.items() if k.endswith(":current_to_us")
                       and str(v).lstrip("-").isdigit()]
                      + [int(v) for k, v in meta_fields.items() if k.endswith(":current_to_us")])
        meta_fields.update({"current_to_us": current, "current_to": _iso(current),
                            "written_at_us": now_us, "written_at": _iso(now_us)})
        if names:
            pipe.hset(names_key(self.prefix), mapping=names)
        pipe.hset(meta_key(self.prefix), mapping=meta_fields)


def finite_members(ranking, where: str) -> Dict[str, float]:
    """``{member: score}`` of a ranking, refusing non-finite scores (NaN, ±inf): Redis
    would store an infinite score and every reader would have to cope; the member is
    left out of the ranking and the refusal logged."""
    members: Dict[str, float] = {}
    for m, s in ranking:
        score = float(s)
        if math.isfinite(score):
            members[str(m)] = score
        else:
            log.error("refused a non-finite score (%s) for %s in ranking %s", score, m, where)
    return members


# --------------------------------------------------------------------------- Beam
class _WriteRankingsFn(beam.DoFn):
    """Keep the newest snapshot of each horizon and write it at the end of the bundle
    (older ones would be refused by Redis anyway) — at most every ``min_interval``
    seconds: a write that is not due yet is made by a timer thread when it is (live,
    the last change before a quiet spell must not wait for the next bundle)."""

    def __init__(self, redis_url: str, key_prefix: str, top_n: int, retry_seconds: float,
                 backoff_max: float, min_interval: float = 0.0,
                 password_secret: Optional[str] = None, fail_on_give_up: bool = False):
        self.password_secret = password_secret
        self.fail_on_give_up = fail_on_give_up
        self.redis_url = redis_url
        self.key_prefix = key_prefix
        self.top_n = top_n
        self.retry_seconds = retry_seconds
        self.backoff_max = backoff_max
        self.min_interval = float(min_interval)
        self.writer: Optional[RedisRankingWriter] = None

    def display_data(self):
        return {"redis": redact_url(self.redis_url), "key_prefix": self.key_prefix}

    def setup(self):
        import threading

        if self.password_secret and not os.environ.get("REDIS_PASSWORD"):
            # Read here, on the worker: the password never travels in the job's options.

            os.environ["REDIS_PASSWORD"] = secrets.read_secret(self.password_secret)
        self.writer = RedisRankingWriter(
            self.redis_url, self.key_prefix, top_n=self.top_n,
            retry_seconds=self.retry_seconds, backoff_max=self.backoff_max,
            fail_on_give_up=self.fail_on_give_up)
        self._lock = threading.Lock()
        self._last = 0.0
        self._timer = None
        log.info("writing rankings to Redis at %s", self.writer.where)

    def process(self, snapshot):
        with self._lock:
            self.writer.offer(snapshot)

    def _flush(self):
        import threading

        with self._lock:
            self._timer = None
            if not self.writer.pending:
                return
            wait = self._last + self.min_interval - time.monotonic()
            if wait > 0:
                if self._timer is None:
                    self._timer = threading.Timer(wait, self._flush)
                    self._timer.daemon = True
                    self._timer.start()
                return
            self._last = time.monotonic()
            self.writer.flush()

    def finish_bundle(self):
        self._flush()

    def teardown(self):
        if self.writer is not None:
            try:
                with self._lock:
                    if self._timer is not None:
                        self._timer.cancel()
                    if self.writer.pending:
                        self.writer.flush()  # a last chance for snapshots kept after an outage
            except RedisWriteError as exc:
                log.error("%s", exc)
            finally:
                self.writer.close()


class WriteRankingsToRedis(beam.PTransform):
    """``snapshots | WriteRankingsToRedis(url)``: keep Redis rankings current.

    ``redis_url``: ``redis://`` or ``rediss://`` (TLS) URL; password in the URL or in
    ``$REDIS_PASSWORD`` on the workers (preferred: the URL is part of the pipeline
    graph). ``top_n`` members per ranking (default 50, at least 10 per SPEC);
    ``retry_seconds`` how long a write retries an unreachable Redis (backoff up to
    ``backoff_max`` s between attempts). Returns the (empty) output PCollection.
    """

    def __init__(self, redis_url: str, key_prefix: str = KEY_PREFIX, *,
                 top_n: int = DEFAULT_TOP_N, retry_seconds: float = DEFAULT_RETRY_SECONDS,
                 backoff_max: float = 5.0, min_interval: float = 0.0,
                 fail_on_give_up: bool = False, label: Optional[str] = None,
                 password_secret: Optional[str] = None):
        super().__init__(label)
        self.min_interval = float(min_interval)
        self.fail_on_give_up = fail_on_give_up
        self.password_secret = password_secret  # Secret Manager name, read on the workers
        if not redis_url:
            raise ValueError("WriteRankingsToRedis needs a Redis URL")
        validate_redis_url(redis_url)
        if int(top_n) < 10:
            raise ValueError(f"top_n must be at least 10 (SPEC: each ranking holds the top 10), "
                             f"got {top_n}")
        self.redis_url = redis_url
        self.key_prefix = key_prefix
        self.top_n = int(top_n)
        self.retry_seconds = retry_seconds
        self.backoff_max = backoff_max

    def expand(self, snapshots):
        return snapshots | "Write" >> beam.ParDo(_WriteRankingsFn(
            self.redis_url, self.key_prefix, self.top_n, self.retry_seconds, self.backoff_max,
            self.min_interval, self.password_secret, self.fail_on_give_up))

    def display_data(self):
        return {"redis": redact_url(self.redis_url)}
