"""Byte-range reading of CSV files (transforms/sources.py): quoted newlines stay inside
their record whatever the split size, and the fast parser (split reader + batched
csv.reader + regex fast paths) agrees with the csv module on a fuzzed corpus of
real-format rows."""
from __future__ import annotations

import csv
import io
import random

import pytest

from transforms import records
from transforms.csv_splits import file_splits, split_records
from transforms.sources import parse_lines, read_split_records

WORDS = ["Puma", "Men", "Blue", "Shoes", "Levi's", '5" heel', "a,b", "x\ny", "kaos\r\nputih",
         "日本", "ëlan", "🙂", '"quoted"', "", ",", '""', "\n", "tab\there", "Sumatera Utara"]
EVENTS = ["HOMEPAGE", "CLICK", "SCROLL", "ITEM_DETAIL", "SEARCH", "ADD_TO_CART", "BOOKING",
          "PROMO_PAGE", "ADD_PROMO"]


def _click(rng: random.Random, i: int) -> list:
    name = rng.choice(EVENTS)
    meta = ""
    if name == "ADD_TO_CART":
        meta = "{'product_id': %d, 'quantity': %d, 'item_price': %d}" % (
            rng.randint(1, 99999), rng.randint(1, 5), rng.randint(1000, 900000))
    elif name == "SEARCH":
        meta = "{'search_keywords': %r}" % " ".join(rng.choice(WORDS) for _ in range(3))
    elif name == "BOOKING":
        meta = "{'payment_status': '%s'}" % rng.choice(["Success", "Failed"])
    elif name == "ADD_PROMO":
        meta = "{'promo_code': %r, 'promo_amount': %d}" % (rng.choice(WORDS), rng.randint(0, 9000))
    sid = rng.choice(["s-%d" % rng.randint(0, 30), "s,%d" % i, "s\n%d" % i])
    return [sid, name, "2021-0%d-1%dT10:00:0%d.000001Z" % (rng.randint(1, 9), rng.randint(0, 9),
                                                          rng.randint(0, 9)),
            "e-%d%s" % (i, rng.choice(["", "\n", '"', ","])), rng.choice(["WEB", "MOBILE", "a\nb"]),
            meta]


def _product(rng: random.Random, i: int) -> list:
    name = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 5)))
    return [str(i), rng.choice(["Men", "Women"]), "Apparel", rng.choice(["Topwear", "Shoes"]),
            "Tshirts", rng.choice(WORDS), "Summer", "2012", "Casual", name]


def _write(path, kind, rows, terminator):
    buf = io.StringIO(newline="")
    w = csv.writer(buf, lineterminator=terminator)
    w.writerow(records.COLUMNS[kind])
    w.writerows(rows)
    path.write_bytes(buf.getvalue().encode("utf-8"))


def _via_csv_module(path, kind):
    """The reference: the csv module over the whole file, one record per row."""
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))[1:]
    return [_outcome(records.parse_or_dead(kind, _line(r))) for r in rows]


def _line(fields):
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(fields)
    return buf.getvalue()[:-1]


def _outcome(rec):
    return ("dead", rec.reason) if isinstance(rec, records.DeadLetter) else rec


def _via_splits(path, kind, chunk):
    out = []
    for p, start, end in file_splits(str(path), chunk):
        recs, dead = read_split_records(p, start, end, kind, "csv")
        assert not dead
        out.extend(_outcome(r) for r in parse_lines(kind, "csv", recs, meta_cache={}))
    return out


@pytest.mark.parametrize("kind,make", [("click_stream", _click), ("product", _product)])
@pytest.mark.parametrize("terminator", ["\n", "\r\n"])
def test_split_reader_and_fast_parser_agree_with_the_csv_module(tmp_path, kind, make, terminator):
    rng = random.Random(f"{kind}{terminator!r}")
    rows = [make(rng, i) for i in range(400)]
    path = tmp_path / f"{kind}.csv"
    _write(path, kind, rows, terminator)
    expected = _via_csv_module(path, kind)
    assert sum(1 for e in expected if e[0] != "dead") > 100  # the corpus is mostly valid
    for chunk in (37, 101, 256, 1000, 1 << 20):
        got = _via_splits(path, kind, chunk)
        assert len(got) == len(expected), chunk
        assert got == expected, chunk


def test_quoted_newline_stays_in_its_record_at_every_split_point(tmp_path):
    good = ["s-1", "SEARCH", "2021-01-01T00:00:00Z", "e-1", "WEB",
            "{'search_keywords':\n 'kaos, \"putih\"'}"]  # a pretty-printed literal
    rows = [["s-%d" % i, "HOMEPAGE", "2021-01-01T00:00:0%dZ" % (i % 10), "e-h%d" % i, "WEB", ""]
            for i in range(5)] + [good] + [
        ["s-9", "CLICK", "2021-01-01T00:00:01Z", "e-c%d" % i, "WEB", ""] for i in range(5)]
    path = tmp_path / "click_stream.csv"
    _write(path, "click_stream", rows, "\n")
    size = path.stat().st_size
    for chunk in range(20, size + 1, 7):
        recs = []
        for p, start, end in file_splits(str(path), chunk):
            recs.extend(read_split_records(p, start, end, "click_stream", "csv")[0])
        parsed = list(parse_lines("click_stream", "csv", recs))
        assert not [r for r in parsed if isinstance(r, records.DeadLetter)], chunk
        assert [r.event_id for r in parsed] == [r[3] for r in rows], chunk
        assert parsed[5].search_keywords == 'kaos, "putih"'


def test_a_stray_quote_does_not_swallow_the_records_after_it():
    text = 's-1,CLICK,2021-01-01T00:00:00Z,e-1,WEB,"{\n' + "\n".join(
        "s-2,CLICK,2021-01-01T00:00:00Z,e-%d,WEB," % i for i in range(3)) + "\n"
    recs = split_records(text)
    # the unclosed quote glues the rest of the chunk; that record is one dead letter and
    # is bounded: MAX_RAW_CHARS keeps a stray quote from eating a whole file
    assert len(recs) >= 1
    big = 's-1,CLICK,2021-01-01T00:00:00Z,e-1,WEB,"{\n' + "\n".join(
        "s-2,CLICK,2021-01-01T00:00:00Z,e-%d,WEB," % i for i in range(4000)) + "\n"
    recs = split_records(big)
    assert len(recs) == 4001  # the stray line alone; every good line kept
