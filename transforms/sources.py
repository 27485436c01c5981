"""Sources: historical files (local or gs://, CSV or JSONL) and Pub/Sub, parsed into
typed records with event-time timestamps. Bad input leaves on the ``dead`` output."""
from __future__ import annotations

import csv
import logging
import pickle
import re
import zlib
from typing import Iterable, List, Optional, Tuple

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindow, TimestampedValue
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import WindowedValue

from transforms import records
from transforms.csv_splits import BOUNDARY_WINDOW, CHUNK_BYTES, file_splits, record_start, split_records
from transforms.event_time import DEFAULT_MAX_FUTURE, future_reason, now_us

log = logging.getLogger(__name__)

DEAD = "dead"
#: How many lines one parse call handles; csv.reader over a batch is ~2× faster per line.
PARSE_BATCH = 2000
_GLOBAL = (GlobalWindow(),)


def event_time_us(rec) -> int:
    return rec.event_time_us if isinstance(rec, records.ClickEvent) else rec.created_at_us


def find_table_files(root: str, kind: str) -> List[str]:
    """The files holding table ``kind`` under folder ``root`` (local or gs://):
    ``kind.csv``, ``kind.jsonl``, ``kind-*.csv``, ``kind/*.csv`` (optionally gzipped)."""
    base = root.rstrip("/")
    found: List[str] = []
    for ext in ("csv", "jsonl", "json", "csv.gz", "jsonl.gz"):
        for pattern in (f"{base}/{kind}.{ext}", f"{base}/{kind}-*.{ext}", f"{base}/{kind}/*.{ext}"):
            result = FileSystems.match([pattern])[0]
            found.extend(m.path for m in result.metadata_list)
    return sorted(set(found))


def file_format(path: str) -> str:
    name = path[:-3] if path.endswith(".gz") else path
    return "json" if name.endswith((".jsonl", ".json")) else "csv"


#: A valid click row the metadata of another row is parsed with (see _click_parser).
_META_PROBE = ["s", "", "2020-01-01T00:00:00Z", "e", "", ""]
_META_CACHE_MAX = 50_000


def _click_parser(cache: dict):
    """``records.parse_fields('click_stream', ·)`` with the metadata of non-ADD_TO_CART
    events parsed once per distinct (event_name, event_metadata) text: BOOKING/SEARCH/
    ADD_PROMO metadata repeats, and its ``literal_eval`` dominated the parse. Same results
    and reasons: the row is validated with empty metadata first (the parser checks ids,
    name and time before the metadata), then the cached metadata part is added."""
    parse_fields = records.parse_fields
    make = records.ClickEvent._make

    def parse(kind, fields):
        if len(fields) != 6 or not fields[5]:
            return parse_fields(kind, fields)
        name = fields[1].strip()
        if name == "ADD_TO_CART":
            return parse_fields(kind, fields)  # its own regex fast path in records
        base = parse_fields(kind, [*fields[:5], ""])
        key = (name, fields[5])
        meta = cache.get(key)
        if meta is None:
            if len(cache) >= _META_CACHE_MAX:
                cache.clear()
            probe = list(_META_PROBE)
            probe[1], probe[5] = name, fields[5]
            try:
                meta = tuple(parse_fields(kind, probe)[5:])
            except records.InvalidRecord as exc:
                meta = exc
            cache[key] = meta
        if isinstance(meta, Exception):
            raise records.InvalidRecord(str(meta))
        return make(base[:5] + meta)

    return parse


_N = r"(?:0|[1-9]\d{0,17})"  # as records._NUM: plain decimals within INT64
_ITEM = r"\{'product_id': (%s), 'quantity': (%s), 'item_price': (%s)\}" % (_N, _N, _N)
_ITEM_RE = re.compile(_ITEM)
_ITEM_NC = r"\{'product_id': %s, 'quantity': %s, 'item_price': %s\}" % (_N, _N, _N)
_ITEMS_RE = re.compile(r"\[%s(?:, %s)*\]\Z" % (_ITEM_NC, _ITEM_NC))


def _parse_transaction_fields(kind, fields):
    """``records.parse_fields('transactions', ·)`` with a regex fast path for the common
    product_metadata shape (a list of {product_id, quantity, item_price} dicts of plain
    positive decimals) instead of ``literal_eval``; anything else takes the full parser.
    The row is validated with an empty list first (metadata is checked after the ids
    and before everything else, and a matching list is valid), so results and reasons
    are the same."""
    parse_fields = records.parse_fields
    if len(fields) != len(records.TRANSACTION_COLUMNS):
        return parse_fields(kind, fields)
    text = fields[4]
    if len(text) > records.MAX_LITERAL_CHARS or not _ITEMS_RE.match(text):
        return parse_fields(kind, fields)
    items = [(int(a), int(b), int(c)) for a, b, c in _ITEM_RE.findall(text)]
    if any(pid <= 0 or qty <= 0 for pid, qty, _ in items):
        return parse_fields(kind, fields)
    base = parse_fields(kind, [*fields[:4], "[]", *fields[5:]])
    return base._replace(lines=tuple(records.BookingLine(*i) for i in items))


def parse_lines(kind: str, fmt: str, lines: List[str], meta_cache: Optional[dict] = None,
                max_future: Optional[float] = None):
    """Lines of one table → records, or DeadLetters (raw line and reason) for bad lines
    and, with ``max_future`` (click events and orders), for records stamped more than
    that many seconds ahead of the wall clock (see :mod:`transforms.event_time`)."""
    if max_future is not None and kind in ("click_stream", "transactions"):
        wall = now_us()
        limit = wall + int(float(max_future) * 1_000_000)
        for line, rec in parse_pairs(kind, fmt, lines, meta_cache):
            if not isinstance(rec, records.DeadLetter) and event_time_us(rec) > limit:
                rec = records.dead_letter(kind, line, future_reason(
                    event_time_us(rec), wall, max_future))
            yield rec
        return
    for _, rec in parse_pairs(kind, fmt, lines, meta_cache):
        yield rec


def parse_pairs(kind: str, fmt: str, lines: List[str], meta_cache: Optional[dict] = None):
    """(line, record or DeadLetter) for every line: the pairing is kept even when a line
    breaking the text rule is dead-lettered ahead of the others."""
    parse_fields = records.parse_fields
    if meta_cache is not None and kind == "click_stream":
        parse_fields = _click_parser(meta_cache)
    elif meta_cache is not None and kind == "transactions":
        parse_fields = _parse_transaction_fields
    if fmt == "csv":
        bad = records.text_problem("\n".join(lines))
        if bad is not None:  # rare: find the records breaking the text rule, one by one
            good = []
            for line in lines:
                reason = records.text_problem(line)
                if reason:
                    yield line, records.dead_letter(kind, line, reason)
                else:
                    good.append(line)
            lines = good
        try:
            rows = list(csv.reader(lines))
        except csv.Error:  # fall back to one line at a time to isolate the bad one
            rows = None
        pairs = zip(lines, rows) if rows is not None and len(rows) == len(lines) else (
            (ln, None) for ln in lines)
        for line, fields in pairs:
            try:
                yield line, (parse_fields(kind, fields) if fields is not None
                             else records.parse_csv_line(kind, line))
            except records.InvalidRecord as exc:
                yield line, records.dead_letter(kind, line, str(exc))
    else:
        for line in lines:
            yield line, records.parse_or_dead(kind, line, "json")


class ParseLines(beam.DoFn):
    """Lines (batched, in the global window as every file source reads them) → records
    with event-time timestamps; bad lines → ``dead``."""

    def __init__(self, kind: str, fmt: str, timestamped: bool = True,
                 max_future: float = DEFAULT_MAX_FUTURE):
        self.kind, self.fmt, self.timestamped = kind, fmt, timestamped
        self.max_future = max_future
        self.meta_cache: dict = {}  # the metadata fast paths, as in ParseChunks
        self.read = Metrics.counter("shopstream", f"{kind}_read")
        self.valid = Metrics.counter("shopstream", f"{kind}_valid")
        self.dead = Metrics.counter("shopstream", f"{kind}_dead_lettered")

    def process(self, lines: List[str]):
        self.read.inc(len(lines))
        good = bad = 0
        for rec in parse_lines(self.kind, self.fmt, lines, self.meta_cache,
                               max_future=self.max_future):
            if isinstance(rec, records.DeadLetter):
                bad += 1
                yield beam.pvalue.TaggedOutput(DEAD, rec)
            else:
                good += 1
                yield self._out(rec)
        self.valid.inc(good)
        self.dead.inc(bad)

    def _out(self, rec):
        # A windowed value, not a TimestampedValue: Beam would re-assign the window per
        # element (a new GlobalWindow each time); the file sources' lines are in the
        # global window already. The timestamp is the one TimestampedValue gave.
        if self.timestamped and self.kind in ("click_stream", "transactions"):
            return WindowedValue(rec, Timestamp(event_time_us(rec) / 1e6), _GLOBAL)
        return rec


def first_csv_record(path: str) -> Optional[List[str]]:
    """The fields of a CSV file's first record (None for an empty file)."""
    with FileSystems.open(path) as fh:
        head = fh.read(BOUNDARY_WINDOW)
    recs = split_records(records.decode_text(head))
    if not recs:
        return None
    return next(csv.reader([recs[0]]), [])


class _ReadSplits(beam.DoFn):
    """A file split → batches of its records' text (quoted newlines kept whole, header
    handled: :func:`read_split_records`); a wrong header → ``dead``."""

    def __init__(self, kind: str):
        self.kind = kind
        self.read = Metrics.counter("shopstream", f"{kind}_read")
        self.dead = Metrics.counter("shopstream", f"{kind}_dead_lettered")

    def process(self, split):
        path, start, end = split
        recs, dead = read_split_records(path, start, end, self.kind, file_format(path))
        if records.text_problem("\n".join(recs)) is not None:
            # undecodable bytes must not cross a Beam boundary (the coder refuses lone
            # surrogates): their records are dead-lettered here, with the same reason
            good = []
            for rec in recs:
                reason = records.text_problem(rec)
                if reason:
                    dead.append(records.dead_letter(self.kind, rec, reason))
                else:
                    good.append(rec)
            recs = good
        for d in dead:
            self.read.inc()
            self.dead.inc()
            yield beam.pvalue.TaggedOutput(DEAD, d)
        for i in range(0, len(recs), PARSE_BATCH):
            yield recs[i:i + PARSE_BATCH]


class ReadTableFiles(beam.PTransform):
    """Read one Fashion Campus table from files; returns {"records", "dead"}.

    Files are read in byte ranges (:func:`file_splits`) by the same reader as the bounded
    replay, so invalid UTF-8, quoted newlines and header-less files get the same
    treatment everywhere."""

    def __init__(self, paths: Iterable[str], kind: str, timestamped: bool = True,
                 max_future: float = DEFAULT_MAX_FUTURE, chunk_bytes: int = CHUNK_BYTES):
        super().__init__()
        self.paths, self.kind, self.timestamped = list(paths), kind, timestamped
        self.max_future = max_future
        self.chunk_bytes = chunk_bytes

    def expand(self, pbegin):
        parsed_records, dead = [], []
        if not self.paths:
            raise ValueError(f"no {self.kind} files found")
        warn_headerless(self.paths, self.kind)
        for i, path in enumerate(self.paths):
            fmt = file_format(path)
            read = (pbegin
                    | f"Splits{i}" >> beam.Create(file_splits(path, self.chunk_bytes))
                    | f"Read{i}" >> beam.ParDo(_ReadSplits(self.kind)).with_outputs(
                        DEAD, main="lines"))
            out = read.lines | f"Parse{i}" >> beam.ParDo(ParseLines(
                self.kind, fmt, self.timestamped, self.max_future)).with_outputs(
                    DEAD, main="records")
            parsed_records.append(out.records)
            dead.extend([read[DEAD], out[DEAD]])
        return {
            "records": parsed_records | "FlattenRecords" >> beam.Flatten(),
            "dead": dead | "FlattenDead" >> beam.Flatten(),
        }


class _ReadWholeTable(beam.DoFn):
    """A small table's files → its records, one per id (:func:`records.first_by_id`);
    bad rows and conflicting repeats → ``dead``. Counts read = valid + duplicate +
    dead_lettered like every source."""

    def __init__(self, kind: str):
        self.kind = kind
        self.read = Metrics.counter("shopstream", f"{kind}_read")
        self.valid = Metrics.counter("shopstream", f"{kind}_valid")
        self.duplicate = Metrics.counter("shopstream", f"{kind}_duplicate")
        self.dead = Metrics.counter("shopstream", f"{kind}_dead_lettered")

    def process(self, paths):
        for rec in records.read_table_records(list(paths), self.kind):
            self.read.inc()
            if isinstance(rec, records.DeadLetter):
                self.dead.inc()
                yield beam.pvalue.TaggedOutput(DEAD, rec)
            elif isinstance(rec, records.Duplicate):
                self.duplicate.inc()
            else:
                self.valid.inc()
                yield rec


class ReadSmallTable(beam.PTransform):
    """A small dimension table (products, customers) read whole by one DoFn call, in
    file order, so repeated ids are resolved by :func:`records.first_by_id` the same way
    in replay and batch.

    Unlike ReadFromText this also runs inside a streaming job on the DirectRunner, and
    the table is read by the workers, not by the launcher."""

    def __init__(self, paths: Iterable[str], kind: str):
        super().__init__()
        self.paths, self.kind = list(paths), kind

    def expand(self, pbegin):
        warn_headerless(self.paths, self.kind)
        out = (pbegin
               | "Paths" >> beam.Create([tuple(self.paths)])
               | "ReadFiles" >> beam.ParDo(_ReadWholeTable(self.kind)).with_outputs(
                   DEAD, main="records"))
        return {"records": out.records, "dead": out[DEAD]}


# --------------------------------------------------------------------------- bounded replay
#: Session buckets of the replay's one shuffle: each holds whole sessions.
SESSION_BUCKETS = 64


def read_split_records(path: str, start: int, end: Optional[int], kind: str, fmt: str
                       ) -> Tuple[List[str], List[records.DeadLetter]]:
    """``(records, dead)``: the records (text) that start in ``[start, end)`` of ``path``
    (``end`` None: the whole file) and dead letters for a wrong header. The first
    split skips the header row if the file has one (:func:`records.header_kind`): a
    file without one has its first line read as data, a file with another header is
    refused. Bytes that are not UTF-8 reach the parser as lone surrogates and only
    their record is dead-lettered."""
    csv_quotes = fmt == "csv"
    with FileSystems.open(path) as fh:
        if end is None:
            data = fh.read()
        else:
            size = FileSystems.match([path])[0].metadata_list[0].size_in_bytes
            ncols = len(records.COLUMNS[kind]) if csv_quotes else None
            lo = record_start(fh, start, size, ncols)
            hi = record_start(fh, end, size, ncols) if end < size else size
            if lo >= hi:
                return [], []
            fh.seek(lo)
            data = fh.read(hi - lo)
    recs = split_records(records.decode_text(data), csv_quotes,
                         len(records.COLUMNS[kind]) if csv_quotes else None)
    dead: List[records.DeadLetter] = []
    if csv_quotes and start == 0 and recs:
        try:
            first = next(csv.reader([recs[0]]), [])
        except csv.Error:
            first = []
        hk = records.header_kind(kind, first)
        if hk == records.HEADER:
            recs = recs[1:]
        elif hk == records.WRONG_HEADER:
            return [], [records.dead_letter(kind, recs[0], records.wrong_header_reason(kind, path))]
    return recs, dead


def warn_headerless(paths: Iterable[str], kind: str) -> None:
    """On the launcher (workers' logs may go elsewhere): say which CSV files of ``kind``
    have no header row, so their first line is read as data."""
    for path in paths:
        if file_format(path) != "csv" or path.endswith(".gz"):
            continue
        try:
            first = first_csv_record(path)
        except Exception:  # noqa: BLE001 - unreadable: the readers report it
            continue
        if first and records.header_kind(kind, first) == records.NO_HEADER:
            log.warning("%s has no header row: its first line is read as data", path)


def session_bucket(session_id: str, buckets: int) -> int:
    return zlib.crc32(session_id.encode("utf-8", "surrogatepass")) % buckets


class ParseChunks(beam.DoFn):
    """One file split → parsed records (``buckets`` = 0) or, for click events, per-bucket
    partial session lists ``(bucket, zlib(pickled {session_id: [event tuple without the
    session_id], ...}))`` — a compact shuffle payload (~40 bytes an event) (names and sources are shared
    objects, so pickle writes them once). Bad lines → ``dead``; same counters as
    :class:`ParseLines`."""

    def __init__(self, kind: str, buckets: int = 0, timestamped: bool = True,
                 spill_dir: Optional[str] = None, sizes: Optional[dict] = None,
                 progress_dir: Optional[str] = None,
                 max_future: float = DEFAULT_MAX_FUTURE):
        self.kind, self.buckets, self.timestamped = kind, buckets, timestamped
        self.max_future = max_future
        self.spill_dir = spill_dir
        self.sizes = sizes or {}  # path → bytes
        self.progress_dir = progress_dir
        self.meta_cache: dict = {}
        self.read = Metrics.counter("shopstream", f"{kind}_read")
        self.valid = Metrics.counter("shopstream", f"{kind}_valid")
        self.dead = Metrics.counter("shopstream", f"{kind}_dead_lettered")

    def process(self, split):
        path, start, end = split
        fmt = file_format(path)
        lines, header_dead = read_split_records(path, start, end, self.kind, fmt)
        self.read.inc(len(lines) + len(header_dead))
        good, bad = 0, len(header_dead)
        for d in header_dead:
            yield beam.pvalue.TaggedOutput(DEAD, d)
        n = self.buckets
        parts = [dict() for _ in range(n)] if n else None
        shared: dict = {}
        bucket_of: dict = {}
        for i in range(0, len(lines), PARSE_BATCH):
            for rec in parse_lines(self.kind, fmt, lines[i:i + PARSE_BATCH], self.meta_cache,
                                   self.max_future):
                if isinstance(rec, records.DeadLetter):
                    bad += 1
                    yield beam.pvalue.TaggedOutput(DEAD, rec)
                    continue
                good += 1
                if not n:
                    yield (TimestampedValue(rec, event_time_us(rec) / 1e6)
                           if self.timestamped else rec)
                    continue
                sid = rec[0]
                b = bucket_of.get(sid)
                if b is None:
                    b = bucket_of[sid] = session_bucket(sid, n)
                sessions = parts[b]
                lst = sessions.get(sid)
                if lst is None:
                    lst = sessions[sid] = []
                name, source = rec[2], rec[4]
                lst.append((rec[1], shared.setdefault(name, name), rec[3],
                            shared.setdefault(source, source)) + tuple(rec[5:]))
        self.valid.inc(good)
        self.dead.inc(bad)
        _progress(self.progress_dir, path, start, end, self.sizes.get(path))
        if not n:
            return
        payloads = [(b, zlib.compress(pickle.dumps(sessions, protocol=pickle.HIGHEST_PROTOCOL), 1))
                    for b, sessions in enumerate(parts) if sessions]
        if not self.spill_dir:
            yield from payloads
            return
        # Spill: one file per split, the shuffle carries only (file, offset, length) —
        # the runner's GroupByKey keeps its whole input in memory. The name depends on
        # the split only, so a retried bundle rewrites the same file.
        name = "%08x-%d-%s.bin" % (zlib.crc32(path.encode()), start, end)
        target = self.spill_dir.rstrip("/") + "/" + name
        offset, refs = 0, []
        with FileSystems.create(target) as fh:
            for b, blob in payloads:
                fh.write(blob)
                refs.append((b, (target, offset, len(blob))))
                offset += len(blob)
        yield from refs


def _progress(folder: Optional[str], path: str, start: int, end: Optional[int],
              size: Optional[int]) -> None:
    """Mark a parsed split done: a file named after it holding the bytes it covered
    (the launcher sums them into one progress bar, see :func:`progress_bytes`)."""
    if not folder:
        return
    done = (end if end is not None else (size or 0)) - start
    name = "%08x-%d" % (zlib.crc32(path.encode()), start)
    with FileSystems.create(f"{folder.rstrip('/')}/{name}") as fh:
        fh.write(str(done).encode())


def progress_bytes(folder: str) -> int:
    """Bytes of input parsed so far (splits marked by :class:`ParseChunks`)."""
    import os

    try:
        names = os.listdir(folder)
    except OSError:
        return 0
    total = 0
    for name in names:
        try:
            with open(os.path.join(folder, name)) as fh:
                total += int(fh.read() or 0)
        except (OSError, ValueError):
            pass
    return total


def input_bytes(paths: Iterable[str]) -> int:
    return sum(m.size_in_bytes for p in paths for m in FileSystems.match([p])[0].metadata_list)


class ReadTableChunks(beam.PTransform):
    """Bounded replay reader: files split into byte ranges, each read and parsed by one
    DoFn call (no per-line Beam elements). Returns {"records", "dead"}; with
    ``buckets`` > 0 ``records`` holds ``(bucket, payload)`` session partials (see
    :class:`ParseChunks`); with ``spill_dir`` the payloads are written to files there and
    ``(bucket, (file, offset, length))`` references are shuffled instead (the caller
    deletes the folder after the run: :func:`delete_spill`)."""

    def __init__(self, paths: Iterable[str], kind: str, buckets: int = 0,
                 chunk_bytes: int = CHUNK_BYTES, spill_dir: Optional[str] = None,
                 max_future: float = DEFAULT_MAX_FUTURE, progress_dir: Optional[str] = None,
                 timestamped: bool = True):
        super().__init__()
        self.paths, self.kind, self.buckets = list(paths), kind, buckets
        self.timestamped = timestamped
        self.chunk_bytes, self.spill_dir = chunk_bytes, spill_dir
        self.max_future = max_future
        self.progress_dir = progress_dir

    def expand(self, pbegin):
        if not self.paths:
            raise ValueError(f"no {self.kind} files found")
        warn_headerless(self.paths, self.kind)
        splits = [s for path in self.paths for s in file_splits(path, self.chunk_bytes)]
        sizes = {}
        for path, _start, end in splits:
            if end is not None:  # a compressed file is one split of unknown length
                sizes[path] = max(sizes.get(path, 0), end)
        out = (pbegin
               | "Splits" >> beam.Create(splits)  # reshuffled: spread over workers
               | "Parse" >> beam.ParDo(ParseChunks(
                   self.kind, self.buckets, self.timestamped, spill_dir=self.spill_dir, sizes=sizes,
                   max_future=self.max_future, progress_dir=self.progress_dir)).with_outputs(
                   DEAD, main="records"))
        return {"records": out.records, "dead": out[DEAD]}


def click_raw(rec) -> str:
    """A parsed click event as the Fashion Campus JSON record (dead-letter ``raw``)."""
    from transforms.sessionize import event_to_json  # sessionize imports this module

    return event_to_json(rec)
