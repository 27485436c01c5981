"""Byte ranges of a CSV file that start and end on record boundaries.

A file is read in splits of ``CHUNK_BYTES`` so that large inputs parse in parallel; a
split boundary must never fall inside a quoted field (a quoted newline is legal CSV), so
each split's start is moved to the next record start by the csv module's quoting rules.
Pure functions over bytes and file handles: no Beam here.
"""
from __future__ import annotations

import csv
import re
from typing import List, Optional, Tuple

from apache_beam.io.filesystems import FileSystems

from transforms import records

#: Bytes of a file one split (one read-and-parse call) covers (~60 k click lines).
CHUNK_BYTES = 8 << 20


def file_splits(path: str, chunk_bytes: int = CHUNK_BYTES) -> List[tuple]:
    """``(path, start, end)`` byte ranges covering ``path``; a split owns the lines that
    start inside it. Compressed files are one split (``end`` None)."""
    if path.endswith(".gz"):
        return [(path, 0, None)]
    size = FileSystems.match([path])[0].metadata_list[0].size_in_bytes
    return [(path, start, min(start + chunk_bytes, size))
            for start in range(0, max(size, 1), chunk_bytes)]


#: Bytes read at a split boundary to find where the next record starts.
BOUNDARY_WINDOW = 1 << 18
_SEP_BYTES = re.compile(rb'[,\n"]')


def _scan_record(buf: bytes, i: int, in_quotes: bool) -> Tuple[int, bool]:
    """``(end, clean)``: the offset just after the newline ending the CSV record that
    ``buf[i:]`` continues (``in_quotes``: ``i`` is inside a quoted field; -1 if it does
    not end in ``buf``), and whether its quoting is what a CSV writer produces (no
    stray quote inside an unquoted field, nothing after a closing quote but a
    separator). The csv module's rules: a quote opens a quoted field only at the start
    of a field, ``""`` inside one is a quote, a newline inside one is part of it."""
    at_start = not in_quotes
    clean = True
    n = len(buf)
    while i <= n:
        if in_quotes:
            q = buf.find(b'"', i)
            if q < 0:
                return -1, clean
            if buf[q + 1:q + 2] == b'"':
                i = q + 2
                continue
            in_quotes, at_start, i = False, False, q + 1
            if buf[i:i + 1] not in (b",", b"\n", b"\r", b""):
                clean = False
            continue
        if at_start and buf[i:i + 1] == b'"':
            in_quotes, i = True, i + 1
            continue
        m = _SEP_BYTES.search(buf, i)
        if m is None:
            return -1, clean
        c = m.group()
        if c == b"\n":
            return m.end(), clean
        if c == b'"':
            clean, at_start, i = False, False, m.end()
            continue
        i, at_start = m.end(), True
    return -1, clean


def _end_of_record(buf: bytes, i: int, in_quotes: bool) -> int:
    return _scan_record(buf, i, in_quotes)[0]


def _field_count_ok(buf: bytes, lo: int, hi: int, ncols: int) -> bool:
    try:
        fields = next(csv.reader([records.decode_text(buf[lo:hi]).rstrip("\r\n")]), [])
    except csv.Error:
        return False
    return len(fields) == ncols or (ncols == len(records.PRODUCT_COLUMNS) and len(fields) > ncols)


def _score(buf: bytes, i: int, in_quotes: bool, ncols: int, n: int = 16) -> int:
    """Of the next ``n`` records read from ``i``, how many more have ``ncols`` fields than
    not (the record continued from inside quotes is skipped)."""
    if in_quotes:
        i = _end_of_record(buf, i, True)
        if i < 0:
            return -1
    score = 0
    for _ in range(n):
        if i >= len(buf):
            break
        j, clean = _scan_record(buf, i, False)
        if j < 0:  # a record running past the window (or the file) is not a record
            score -= 1
            break
        score += 1 if clean and _field_count_ok(buf, i, j, ncols) else -1
        i = j
    return score


def _starts_inside_quotes(buf: bytes, p: int, ncols: int) -> bool:
    """Whether offset ``p`` (just after a newline) lies inside a quoted field that began on
    an earlier line. Both hypotheses are read on through the window and the one under
    which more of the next records have the table's field count wins; on a tie, the
    first quote after ``p`` decides (at the start of a field it opens one). A wrong
    guess cuts one record in two (both halves dead-lettered): never lost or read twice."""
    if buf.find(b'"', p) < 0:
        return False
    inside, outside = _score(buf, p, True, ncols), _score(buf, p, False, ncols)
    if inside != outside:
        return inside > outside
    q = buf.find(b'"', p)
    if q == p or buf[q - 1:q] in (b",", b"\n"):
        return False
    return buf[q + 1:q + 2] in (b",", b"\n", b"\r", b"", b'"')


def record_start(fh, pos: int, size: int, ncols: Optional[int] = None) -> int:
    """The first record start at or after byte ``pos`` of an open file (``pos`` itself if a
    line starts there). Two adjacent splits compute the same boundary, so every byte is
    read by exactly one split; with ``ncols`` (a CSV table's field count) a boundary
    never cuts a quoted field holding a newline (see :func:`_starts_inside_quotes`)."""
    if pos <= 0:
        return 0
    if pos >= size:
        return size
    base = pos - 1
    fh.seek(base)
    buf = fh.read(BOUNDARY_WINDOW)
    nl = buf.find(b"\n")
    while nl < 0:
        more = fh.read(BOUNDARY_WINDOW)
        if not more:
            return size
        buf += more
        nl = buf.find(b"\n")
    p = nl + 1
    if not ncols or not _starts_inside_quotes(buf, p, ncols):
        return base + p
    while True:
        end = _end_of_record(buf, p, in_quotes=True)
        if end >= 0:
            return base + end
        if len(buf) - p > records.MAX_RAW_CHARS:  # no such record: take the line start
            return base + p
        more = fh.read(BOUNDARY_WINDOW)
        if not more:
            return size
        buf += more


def _ends_in_quotes(text: str) -> bool:
    """Whether a record's text, read from its start, ends inside a quoted field."""
    i, n, at_start, in_quotes = 0, len(text), True, False
    while i <= n:
        if in_quotes:
            q = text.find('"', i)
            if q < 0:
                return True
            if text[q + 1:q + 2] == '"':
                i = q + 2
                continue
            in_quotes, at_start, i = False, False, q + 1
            continue
        if at_start and text[i:i + 1] == '"':
            in_quotes, i = True, i + 1
            continue
        c = text.find(",", i)
        if c < 0:
            return False
        i, at_start = c + 1, True
    return False


def _fields_fit(text: str, ncols: Optional[int]) -> bool:
    if not ncols:
        return True
    try:
        n = len(next(csv.reader([text]), []))
    except csv.Error:
        return False
    return n == ncols or (ncols == len(records.PRODUCT_COLUMNS) and n > ncols)


def split_records(text: str, csv_quotes: bool = True, ncols: Optional[int] = None) -> List[str]:
    """Text → records: one per line, except that with ``csv_quotes`` a quoted field holding
    newlines keeps its record whole (the csv module's rules). A quote that does not close
    within MAX_RAW_CHARS, or whose closing makes a record of other than ``ncols`` fields
    (a stray quote meeting the next record's quote), leaves its line a record of its own:
    one stray quote cannot swallow the records after it. A trailing ``\\r`` is removed."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if csv_quotes and '"' in text and any(ln.count('"') & 1 for ln in lines):
        out, i, n = [], 0, len(lines)
        while i < n:
            line = lines[i]
            if line.count('"') & 1 and _ends_in_quotes(line):
                rec, j = line, i + 1
                while j < n and len(rec) <= records.MAX_RAW_CHARS:
                    rec += "\n" + lines[j]
                    j += 1
                    if not _ends_in_quotes(rec):
                        break
                if not _ends_in_quotes(rec) and _fields_fit(rec, ncols):
                    out.append(rec)
                    i = j
                    continue
            out.append(line)
            i += 1
        lines = out
    if "\r" not in text:
        return lines
    return [ln[:-1] if ln.endswith("\r") else ln for ln in lines]
