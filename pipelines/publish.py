"""``shopstream publish`` — replay Fashion Campus files into Pub/Sub in event-time order.

Each valid click event becomes one message on ``--topic`` (and each valid transaction
one message on ``--orders-topic``): a JSON object with the CSV field names (the values
as the file has them, so the pipeline parses a message exactly like a CSV row) and the
attributes the streaming pipeline reads:

* ``event_time`` — RFC 3339 UTC with a trailing ``Z`` (the ``timestamp_attribute``);
* ``event_id`` — the click's event_id, or an order's booking_id (Dataflow ``id_label``);
  order messages also carry ``booking_id``.

Rows that break the data contract are counted and reported, never published. The click
file is not sorted by time, so the records are sorted in bounded memory first (an
external merge sort: sorted runs of ``--sort-chunk`` records in temporary files, then a
k-way merge), and clicks and orders are published interleaved in one event-time order.

``--speedup X`` paces publishing by event-time gaps divided by X (0 = as fast as
possible). ``--rebase-time`` shifts every event time (and an order's
shipment_date_limit) by the same amount so that the first event is "now": the
DirectRunner's Pub/Sub watermark follows the wall clock and drops old timestamps.

Honours ``PUBSUB_EMULATOR_HOST`` (the Pub/Sub client library does).
"""
from __future__ import annotations

import argparse
import heapq
import io
import json
import logging
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Tuple

from transforms import records
from transforms.event_time import future_reason
from transforms.run_summary import source_counts, summary_dict, summary_line
from transforms.sources import file_format, find_table_files

log = logging.getLogger(__name__)

TOPIC_RE = re.compile(r"^projects/[^/]+/topics/[^/]+$")
#: Records per sorted run written to a temporary file (memory bound of the sort).
DEFAULT_SORT_CHUNK = 200_000
DEFAULT_BATCH_SIZE = 500
#: How many dead-letter reasons are printed to stderr before going quiet.
MAX_REASONS_SHOWN = 10

CLICKS, ORDERS = "click_stream", "transactions"
#: The field holding the event time of each kind, and the other timestamp fields that a
#: --rebase-time shifts along with it.
TIME_FIELD = {CLICKS: "event_time", ORDERS: "created_at"}
SHIFTED_FIELDS = {CLICKS: ("event_time",), ORDERS: ("created_at", "shipment_date_limit")}


# --------------------------------------------------------------------------- reading
@dataclass
class ReadStats:
    read: int = 0
    valid: int = 0
    bad: int = 0
    reasons: Dict[str, int] = field(default_factory=dict)
    #: per source: {"read", "valid", "duplicate", "dead_lettered"} (transforms.run_summary)
    by_source: Dict[str, Dict[str, int]] = field(default_factory=dict)

    def count(self, kind: str, what: str) -> None:
        c = self.by_source.setdefault(kind, source_counts())
        c[what] += 1
        if what == "read":
            self.read += 1
        elif what == "valid":
            self.valid += 1

    def reject(self, kind: str, reason: str, raw: str) -> None:
        self.bad += 1
        self.count(kind, "dead_lettered")
        self.reasons[reason] = self.reasons.get(reason, 0) + 1
        if self.bad <= MAX_REASONS_SHOWN:
            print(f"publish: skipped bad {kind} row ({reason}): "
                  f"{records.printable(raw[:120])}", file=sys.stderr)


def _open_text(path: str):
    from apache_beam.io.filesystems import FileSystems  # local and gs://

    raw = FileSystems.open(path)  # decompresses .gz by extension
    # bytes that are not UTF-8 reach the parser as lone surrogates: their row is refused
    # by the text rule of transforms.records, like in replay, batch and stream
    return io.TextIOWrapper(raw, encoding="utf-8", errors="surrogateescape", newline="")


def iter_rows(path: str, kind: str, stats: ReadStats) -> Iterator[Tuple[int, str, dict]]:
    """Valid rows of one CSV or JSONL file as ``(event_time_us, id, row)``, where ``row``
    holds the fields as given (CSV field names); invalid rows are counted in ``stats``."""
    parse = records.PARSERS[kind]
    with _open_text(path) as text:
        if file_format(path) == "json":
            for line in text:
                if not line.strip():
                    continue
                stats.count(kind, "read")
                try:
                    rec = records.parse_json(kind, line)
                except records.InvalidRecord as exc:
                    stats.reject(kind, str(exc), line.strip())
                    continue
                row = json.loads(line)
                stats.count(kind, "valid")
                yield _key(kind, rec) + (row,)
            return
        for item in records.iter_csv_rows(kind, text, source=kind, where=path):
            stats.count(kind, "read")
            if isinstance(item, records.DeadLetter):
                stats.reject(kind, f"{item.reason} ({path})" if "header" in item.reason
                             else item.reason, item.raw)
                continue
            row, fields = item
            try:
                rec = parse(row)
            except records.InvalidRecord as exc:
                stats.reject(kind, str(exc), ",".join(fields))
                continue
            stats.count(kind, "valid")
            yield _key(kind, rec) + (row,)


def _key(kind: str, rec) -> Tuple[int, str]:
    if kind == CLICKS:
        return rec.event_time_us, rec.event_id
    return rec.created_at_us, rec.booking_id


# --------------------------------------------------------------------------- sorting
def _encode(t_us: int, ident: str, kind: str, row: dict) -> str:
    # json.dumps escapes tabs and newlines, so one record is one line.
    return f"{t_us}\t{json.dumps(ident)}\t{kind}\t{json.dumps(row, ensure_ascii=False)}\n"


def _decode(line: str) -> Tuple[int, str, str, dict]:
    t, ident, kind, row = line.rstrip("\n").split("\t", 3)
    return int(t), json.loads(ident), kind, json.loads(row)


def _sort_key(item: Tuple[int, str, str, dict]) -> Tuple[int, str, str]:
    return item[0], item[1], item[2]


def external_sort(items: Iterator[Tuple[int, str, str, dict]], tmpdir: str,
                  chunk: int = DEFAULT_SORT_CHUNK) -> Tuple[Iterator[Tuple[int, str, str, dict]], int]:
    """Sort ``(t_us, id, kind, row)`` items by (time, id, kind) holding at most ``chunk``
    items in memory; returns (an iterator over the sorted items, their count)."""
    runs: List[str] = []
    buf: List[Tuple[int, str, str, dict]] = []
    total = 0

    def spill():
        buf.sort(key=_sort_key)
        path = os.path.join(tmpdir, f"run-{len(runs):05d}.tsv")
        with open(path, "w", encoding="utf-8") as fh:
            fh.writelines(_encode(*it) for it in buf)
        runs.append(path)
        buf.clear()

    for item in items:
        buf.append(item)
        total += 1
        if len(buf) >= chunk:
            spill()
    if not runs:  # everything fitted in memory
        buf.sort(key=_sort_key)
        return iter(list(buf)), total
    if buf:
        spill()

    def merged():
        files = [open(p, encoding="utf-8") for p in runs]
        try:
            yield from heapq.merge(*((_decode(ln) for ln in f) for f in files), key=_sort_key)
        finally:
            for f in files:
                f.close()

    return merged(), total


# --------------------------------------------------------------------------- messages
def shifted_row(kind: str, row: dict, shift_us: int) -> dict:
    """The row with its time fields moved by ``shift_us`` (in the Fashion Campus form)."""
    if not shift_us:
        return row
    out = dict(row)
    for name in SHIFTED_FIELDS[kind]:
        value = out.get(name)
        if value:
            out[name] = records.format_time_us(records.parse_time_us(value, name) + shift_us)
    return out


def message(kind: str, t_us: int, ident: str, row: dict) -> Tuple[bytes, Dict[str, str]]:
    """(payload, attributes) of one record whose event time is ``t_us``."""
    attrs = {"event_time": records.format_time_us(t_us), "event_id": ident}
    if kind == ORDERS:
        attrs["booking_id"] = ident
    return json.dumps(row, ensure_ascii=False).encode("utf-8"), attrs


# --------------------------------------------------------------------------- publishing
@dataclass
class PublishSummary:
    published: int = 0
    clicks: int = 0
    orders: int = 0
    skipped_bad: int = 0
    failed: int = 0
    read: int = 0
    first_event_time: Optional[str] = None
    last_event_time: Optional[str] = None
    shift_seconds: float = 0.0
    seconds: float = 0.0
    by_source: Dict[str, Dict[str, int]] = field(default_factory=dict)

    def line(self) -> str:
        head = summary_line("publish", summary_dict(self.by_source),
                            prefix=f"publish done in {self.seconds:.1f}s:")
        return (f"{head} | published={self.published} "
                f"(clicks={self.clicks} orders={self.orders}) skipped_bad={self.skipped_bad} "
                f"failed={self.failed} first_event_time={self.first_event_time or '-'} "
                f"last_event_time={self.last_event_time or '-'} shift_seconds={self.shift_seconds:.0f}")


def _files(root: str, kind: str) -> List[str]:
    if not root.startswith("gs://") and os.path.isfile(root):
        return [root] if kind == CLICKS else []
    return find_table_files(root, kind)


def _make_publisher(batch_size: int):
    from google.cloud import pubsub_v1

    # A batch is committed when a message would make it reach max_messages, so room for
    # batch_size + 1 gives requests of exactly batch_size messages (see publish()).
    settings = pubsub_v1.types.BatchSettings(
        max_messages=batch_size + 1, max_bytes=9_000_000, max_latency=0.05)
    return pubsub_v1.PublisherClient(batch_settings=settings)


def publish(input_path: str, topic: str, orders_topic: Optional[str] = None,
            speedup: float = 0.0, rebase_time: bool = False, limit: Optional[int] = None,
            batch_size: int = DEFAULT_BATCH_SIZE, sort_chunk: int = DEFAULT_SORT_CHUNK,
            publisher=None, progress: Optional[bool] = None,
            now_us: Optional[int] = None) -> PublishSummary:
    """Publish the click events (and orders) under ``input_path``; returns the summary."""
    from tqdm import tqdm

    began = time.perf_counter()
    if speedup < 0:
        raise ValueError("--speedup must be >= 0")
    if batch_size < 1:
        raise ValueError("--batch-size must be >= 1")
    click_files = _files(input_path, CLICKS)
    if not click_files:
        raise FileNotFoundError(f"no click_stream files under {input_path}")
    order_files = _files(input_path, ORDERS) if orders_topic else []
    if orders_topic and not order_files:
        log.warning("no transactions files under %s: nothing goes to %s", input_path, orders_topic)

    stats = ReadStats()
    wall_us = int(time.time() * 1e6)

    def all_items():
        for kind, paths in ((CLICKS, click_files), (ORDERS, order_files)):
            for path in paths:
                for t_us, ident, row in iter_rows(path, kind, stats):
                    if future_reason(t_us, wall_us):  # SPEC §2: dead-lettered, not published
                        stats.reject(kind, future_reason(t_us, wall_us), json.dumps(row))
                        continue
                    yield t_us, ident, kind, row

    summary = PublishSummary()
    publisher = publisher or _make_publisher(batch_size)
    topics = {CLICKS: topic, ORDERS: orders_topic}
    with tempfile.TemporaryDirectory(prefix="shopstream-publish-") as tmp:
        ordered, total = external_sort(all_items(), tmp, sort_chunk)
        summary.read, summary.skipped_bad = stats.read, stats.bad
        summary.by_source = stats.by_source
        if limit is not None:
            total = min(total, limit)
        bar = tqdm(total=total, unit="msg", desc="publish", file=sys.stderr,
                   disable=(not sys.stderr.isatty()) if progress is None else not progress)
        pending: list = []
        shift = 0
        t0 = wall0 = None
        try:
            for n, (t_us, ident, kind, row) in enumerate(ordered):
                if limit is not None and n >= limit:
                    break
                if t0 is None:
                    t0, wall0 = t_us, time.monotonic()
                    if rebase_time:
                        current = now_us if now_us is not None else int(time.time() * 1e6)
                        shift = current - t0
                        summary.shift_seconds = shift / 1e6
                if speedup > 0:
                    delay = wall0 + (t_us - t0) / 1e6 / speedup - time.monotonic()
                    if delay > 0.002:
                        _flush(pending, summary, bar)  # publish what is due before sleeping
                        time.sleep(delay)
                data, attrs = message(kind, t_us + shift, ident, shifted_row(kind, row, shift))
                pending.append(publisher.publish(topics[kind], data, **attrs))
                if kind == CLICKS:
                    summary.clicks += 1
                else:
                    summary.orders += 1
                if summary.first_event_time is None:
                    summary.first_event_time = attrs["event_time"]
                summary.last_event_time = attrs["event_time"]
                if len(pending) > batch_size:
                    # The client commits a full batch (batch_size messages) when the next
                    # message arrives, which opens the next batch: wait for the committed
                    # one before filling the next. One batch in flight at a time keeps the
                    # publish order and bounds memory.
                    last = pending.pop()
                    _flush(pending, summary, bar)
                    pending.append(last)
            _flush(pending, summary, bar)
        finally:
            bar.close()
    summary.seconds = time.perf_counter() - began
    return summary


def _flush(pending: list, summary: PublishSummary, bar) -> None:
    for fut in pending:
        try:
            fut.result(timeout=120)
            summary.published += 1
        except Exception as exc:  # noqa: BLE001 - reported and counted, not fatal per message
            summary.failed += 1
            if summary.failed <= MAX_REASONS_SHOWN:
                print(f"publish: a message failed: {exc}", file=sys.stderr)
    bar.update(len(pending))
    pending.clear()


# --------------------------------------------------------------------------- CLI
def _topic(value: str) -> str:
    if not TOPIC_RE.match(value):
        raise argparse.ArgumentTypeError(f"a topic looks like projects/P/topics/T, got {value!r}")
    return value


def _nonneg_float(value: str) -> float:
    try:
        f = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if f < 0 or f != f:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value!r}")
    return f


def _pos_int(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {value!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value!r}")
    return n


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "publish", help="replay files into Pub/Sub in event-time order",
        description="Replay Fashion Campus files (click_stream, and transactions with "
                    "--orders-topic) into Pub/Sub in event-time order. Messages are JSON "
                    "objects with the CSV field names and the attributes event_time "
                    "(RFC 3339) and event_id; bad rows are counted, not published. Honours "
                    "PUBSUB_EMULATOR_HOST.")
    p.add_argument("--input", required=True,
                   help="folder (local or gs://) holding click_stream (and transactions) "
                        "files, .csv or .jsonl, or one click_stream file")
    p.add_argument("--topic", required=True, type=_topic,
                   help="projects/P/topics/T receiving the click events")
    p.add_argument("--orders-topic", dest="orders_topic", type=_topic, default=None,
                   help="projects/P/topics/T receiving the transactions (default: not published)")
    p.add_argument("--speedup", type=_nonneg_float, default=0.0,
                   help="pace by event-time gaps divided by X (1 = real time); 0 or absent = "
                        "as fast as possible")
    p.add_argument("--rebase-time", dest="rebase_time", action="store_true",
                   help="shift all event times so that the first event is now (needed for the "
                        "DirectRunner, whose Pub/Sub watermark is the wall clock)")
    p.add_argument("--limit", type=_pos_int, default=None,
                   help="publish at most N messages (the first N in event-time order)")
    p.add_argument("--batch-size", dest="batch_size", type=_pos_int, default=DEFAULT_BATCH_SIZE,
                   help=f"messages per publish request (default {DEFAULT_BATCH_SIZE})")
    p.add_argument("--sort-chunk", dest="sort_chunk", type=_pos_int, default=DEFAULT_SORT_CHUNK,
                   help=f"records held in memory while sorting (default {DEFAULT_SORT_CHUNK})")
    p.add_argument("--no-progress", dest="progress", action="store_false", default=None,
                   help="no progress bar (default: shown on a terminal)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    host = os.environ.get("PUBSUB_EMULATOR_HOST")
    target = f" (emulator {host})" if host else ""
    print(f"publishing {args.input} → {args.topic}"
          + (f" + {args.orders_topic}" if args.orders_topic else "") + target, file=sys.stderr)
    try:
        summary = publish(args.input, args.topic, args.orders_topic, speedup=args.speedup,
                          rebase_time=args.rebase_time, limit=args.limit,
                          batch_size=args.batch_size, sort_chunk=args.sort_chunk,
                          progress=args.progress)
    except (FileNotFoundError, ValueError) as exc:
        print(f"shopstream publish: {exc}", file=sys.stderr)
        return 2
    print(summary.line())
    return 1 if summary.failed else 0
