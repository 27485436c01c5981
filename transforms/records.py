"""The Fashion Campus data contract: typed records, safe parsers, validation.

Every reader (CSV replay, JSONL, Pub/Sub, the batch job, the generator's tests) goes
through these functions, so a record is valid or invalid in the same way everywhere.
Parsers raise :class:`InvalidRecord` with a human-readable reason; the ``*_or_dead``
helpers turn that into a :class:`DeadLetter` so callers never see a traceback.
"""
from __future__ import annotations

import ast
import csv
import datetime as dt
import io
import json
import logging
import re
from typing import Any, Iterable, Iterator, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

EVENT_NAMES = frozenset({
    "HOMEPAGE", "CLICK", "SCROLL", "ITEM_DETAIL", "SEARCH", "ADD_TO_CART",
    "PROMO_PAGE", "ADD_PROMO", "BOOKING",
})

CLICK_COLUMNS = ("session_id", "event_name", "event_time", "event_id",
                 "traffic_source", "event_metadata")
TRANSACTION_COLUMNS = (
    "created_at", "customer_id", "booking_id", "session_id", "product_metadata",
    "payment_method", "payment_status", "promo_amount", "promo_code", "shipment_fee",
    "shipment_date_limit", "shipment_location_lat", "shipment_location_long",
    "total_amount")
CUSTOMER_COLUMNS = (
    "customer_id", "first_name", "last_name", "username", "email", "gender",
    "birthdate", "device_type", "device_id", "device_version", "home_location_lat",
    "home_location_long", "home_location", "home_country", "first_join_date")
PRODUCT_COLUMNS = ("id", "gender", "masterCategory", "subCategory", "articleType",
                   "baseColour", "season", "year", "usage", "productDisplayName")

COLUMNS = {
    "click_stream": CLICK_COLUMNS,
    "transactions": TRANSACTION_COLUMNS,
    "customer": CUSTOMER_COLUMNS,
    "product": PRODUCT_COLUMNS,
}

#: Literal strings longer than this are refused before parsing (a hostile or corrupt
#: field must not cost unbounded CPU or memory in ``ast.literal_eval``).
MAX_LITERAL_CHARS = 20_000
MAX_RAW_CHARS = 100_000

#: The Unix epoch in UTC; event times travel as integer microseconds since it.
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
EPOCH_DATE = EPOCH.date()
#: Fast path for the commonest metadata. Numbers are plain decimals without leading zeros
#: and at most 18 digits (so within INT64) — anything else takes the literal_eval path.
_NUM = r"(0|[1-9]\d{0,17})"
_CART_META = re.compile(
    rf"\{{'product_id': {_NUM}, 'quantity': {_NUM}, 'item_price': {_NUM}\}}\Z")
_INT64_MAX = 2**63 - 1
log = logging.getLogger(__name__)

#: Characters no field may hold: C0 controls except tab, LF and CR (a quoted CSV field may
#: span lines), DEL, and the lone surrogates that ``surrogateescape`` decoding makes of
#: bytes that are not UTF-8. One rule for every reader (replay, batch, stream, publish).
_BAD_CHAR = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")
#: Birthdates before this are refused as implausible (and after today as impossible).
MIN_BIRTHDATE = dt.date(1900, 1, 1)
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}\Z")


class InvalidRecord(ValueError):
    """A record that breaks the data contract; the message is the dead-letter reason."""


class DeadLetter(NamedTuple):
    source: str   # which input or stage, e.g. "click_stream" or "sessions"
    raw: str      # the record as received
    reason: str   # human-readable
    seen_at: str  # ISO-8601 UTC wall-clock time


class ClickEvent(NamedTuple):
    session_id: str
    event_id: str
    event_name: str
    event_time_us: int            # microseconds since the epoch, UTC
    traffic_source: str
    product_id: Optional[int] = None
    quantity: Optional[int] = None
    item_price: Optional[int] = None
    payment_status: Optional[str] = None
    search_keywords: Optional[str] = None
    promo_code: Optional[str] = None
    promo_amount: Optional[int] = None


class BookingLine(NamedTuple):
    product_id: int
    quantity: int
    item_price: int


class Transaction(NamedTuple):
    created_at_us: int
    customer_id: int
    booking_id: str
    session_id: str
    lines: tuple  # tuple[BookingLine, ...]
    payment_method: str
    payment_status: str
    promo_amount: int
    promo_code: str
    shipment_fee: int
    shipment_date_limit_us: Optional[int]
    shipment_location_lat: Optional[float]
    shipment_location_long: Optional[float]
    total_amount: int


class Customer(NamedTuple):
    customer_id: int
    first_name: str
    last_name: str
    username: str
    email: str
    gender: str
    birthdate: Optional[dt.date]
    device_type: str
    device_id: str
    device_version: str
    home_location_lat: Optional[float]
    home_location_long: Optional[float]
    home_location: str
    home_country: str
    first_join_date: Optional[dt.date]


class Product(NamedTuple):
    id: int
    gender: str
    masterCategory: str
    subCategory: str
    articleType: str
    baseColour: str
    season: str
    year: Optional[int]
    usage: str
    productDisplayName: str
    brand: str


Record = Union[ClickEvent, Transaction, Customer, Product]


# --------------------------------------------------------------------------- text
def decode_text(data: bytes) -> str:
    """Bytes of a file or message → text. Bytes that are not UTF-8 become lone surrogates
    (``surrogateescape``), so the record holding them — and only that record — is
    dead-lettered by :func:`check_text` instead of the whole file failing."""
    return data.decode("utf-8", "surrogateescape")


def text_problem(text: str) -> Optional[str]:
    """None if ``text`` may appear in a record, else the dead-letter reason."""
    m = _BAD_CHAR.search(text)
    if m is None:
        return None
    c = m.group()
    if "\udc80" <= c <= "\udcff":
        return f"not valid UTF-8: byte 0x{ord(c) - 0xdc00:02x} at character {m.start()}"
    if "\ud800" <= c <= "\udfff":
        return f"not valid UTF-8: a surrogate code point at character {m.start()}"
    return f"control character U+{ord(c):04X} at character {m.start()}"


def check_text(text: str) -> str:
    """Raise InvalidRecord (the reason of :func:`text_problem`) unless ``text`` is clean."""
    reason = text_problem(text)
    if reason:
        raise InvalidRecord(reason)
    return text


def printable(text: str) -> str:
    """``text`` with undecodable bytes and control characters shown as ``\\xNN`` escapes:
    what a dead letter stores as the raw record (every sink accepts it, the bytes stay
    visible)."""
    if _BAD_CHAR.search(text) is None:
        return text

    def esc(m):
        c = ord(m.group())
        return f"\\x{c - 0xdc00:02x}" if 0xdc80 <= c <= 0xdcff else (
            f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}")

    return _BAD_CHAR.sub(esc, text)


def _check_values(obj: Any, depth: int = 0) -> None:
    """The text rule on every string of a decoded JSON object (``\\u0000`` escapes)."""
    if depth > 20:
        raise InvalidRecord("JSON record nested too deeply")
    if isinstance(obj, str):
        check_text(obj)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            check_text(str(k))
            _check_values(v, depth + 1)
    elif isinstance(obj, list):
        for v in obj:
            _check_values(v, depth + 1)


# --------------------------------------------------------------------------- scalars
def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat()


def parse_time_us(value: Any, field: str) -> int:
    """ISO-8601 → microseconds since the epoch, UTC. Naive times are taken as UTC."""
    if value is None or (isinstance(value, str) and not value.strip()):
        raise InvalidRecord(f"{field} is missing")
    if not isinstance(value, str):
        raise InvalidRecord(f"{field} is not an ISO-8601 timestamp string: {_clip(value)!r}")
    try:
        t = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        raise InvalidRecord(f"{field} is not an ISO-8601 timestamp: {_clip(value)!r}") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.timezone.utc)
    delta = t - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def format_time_us(us: int) -> str:
    """Microseconds since the epoch → the Fashion Campus form ``...T15:54:32.821085Z``
    (RFC 3339: the year has 4 digits even before 1000, where strftime drops them)."""
    t = EPOCH + dt.timedelta(microseconds=us)
    return t.isoformat(timespec="microseconds").replace("+00:00", "Z")


def time_us_to_datetime(us: int) -> dt.datetime:
    return EPOCH + dt.timedelta(microseconds=us)


def _parse_date(value: Any, field: str) -> Optional[dt.date]:
    if value in (None, ""):
        return None
    try:
        return dt.date.fromisoformat(str(value).strip()[:10])
    except ValueError:
        raise InvalidRecord(f"{field} is not a date: {_clip(value)!r}") from None


def parse_birthdate(value: Any, today: Optional[dt.date] = None) -> dt.date:
    """A customer's birthdate: required, ``YYYY-MM-DD``, from 1900-01-01 up to today."""
    text = _str(value).strip()
    if not text:
        raise InvalidRecord("birthdate is missing")
    if not _ISO_DATE.match(text):
        raise InvalidRecord(f"birthdate is not a YYYY-MM-DD date: {_clip(value)!r}")
    try:
        day = dt.date.fromisoformat(text)
    except ValueError:
        raise InvalidRecord(f"birthdate is not a date: {_clip(value)!r}") from None
    today = today or dt.datetime.now(dt.timezone.utc).date()
    if day > today:
        raise InvalidRecord(f"birthdate {text} is in the future")
    if day < MIN_BIRTHDATE:
        raise InvalidRecord(f"birthdate {text} is before {MIN_BIRTHDATE.isoformat()}")
    return day


def _int(value: Any, field: str, *, required: bool = True, positive: bool = False) -> Optional[int]:
    if value is None or value == "":
        if required:
            raise InvalidRecord(f"{field} is missing")
        return None
    if isinstance(value, bool):
        raise InvalidRecord(f"{field} is not an integer: {value!r}")
    if isinstance(value, int):
        n = value
    elif isinstance(value, float) and value.is_integer():
        n = int(value)
    else:
        s = str(value).strip()
        try:
            n = int(s)
        except ValueError:
            try:
                f = float(s)
            except ValueError:
                raise InvalidRecord(f"{field} is not an integer: {_clip(value)!r}") from None
            if not f.is_integer():
                raise InvalidRecord(f"{field} is not an integer: {_clip(value)!r}") from None
            n = int(f)
    if positive and n <= 0:
        raise InvalidRecord(f"{field} must be a positive integer, got {_clip(n)}")
    if not -_INT64_MAX <= n <= _INT64_MAX:
        raise InvalidRecord(f"{field} is out of the 64-bit integer range: {_clip(n)}")
    return n


def _float(value: Any, field: str) -> Optional[float]:
    if value is None or value == "":
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise InvalidRecord(f"{field} is not a number: {_clip(value)!r}") from None
    if f != f or f in (float("inf"), float("-inf")):
        raise InvalidRecord(f"{field} is not a finite number: {_clip(value)!r}")
    return f


def _str(value: Any) -> str:
    return "" if value is None else str(value)


def _clip(value: Any, n: int = 80) -> str:
    s = str(value)
    return s if len(s) <= n else s[:n] + f"…(+{len(s) - n} chars)"


def parse_literal(text: Any, field: str, kind: type) -> Any:
    """Parse a Python-literal dict/list string safely (never ``eval``).

    Accepts an already-decoded object (JSON messages may carry the dict itself).
    """
    if isinstance(text, kind):
        return text
    if not isinstance(text, str):
        raise InvalidRecord(f"{field} must be a {kind.__name__} literal, got {type(text).__name__}")
    if len(text) > MAX_LITERAL_CHARS:
        raise InvalidRecord(f"{field} is too large ({len(text)} chars > {MAX_LITERAL_CHARS})")
    if text == "[]" or text == "{}":  # what literal_eval gives, without compiling
        value = [] if text == "[]" else {}
        if not isinstance(value, kind):
            raise InvalidRecord(f"{field} is a {type(value).__name__}, not a {kind.__name__}")
        return value
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as exc:
        raise InvalidRecord(
            f"{field} is not a Python literal {kind.__name__}: {type(exc).__name__}") from None
    if not isinstance(value, kind):
        raise InvalidRecord(f"{field} is a {type(value).__name__}, not a {kind.__name__}")
    return value


# --------------------------------------------------------------------------- records
def parse_click(row: Mapping[str, Any]) -> ClickEvent:
    """Validate one click event (SPEC §2 'Bad input')."""
    g = row.get
    return click_event(g("session_id"), g("event_name"), g("event_time"), g("event_id"),
                       g("traffic_source"), g("event_metadata"))


def click_event(session_id: Any, event_name: Any, event_time: Any, event_id: Any,
                traffic_source: Any, raw_meta: Any) -> ClickEvent:
    """The rule of :func:`parse_click`, from the field values in CSV column order
    (``CLICK_COLUMNS``): CSV rows are validated without building a dict."""
    session_id = _str(session_id).strip()
    event_id = _str(event_id).strip()
    if not session_id:
        raise InvalidRecord("session_id is empty")
    if not event_id:
        raise InvalidRecord("event_id is empty")
    name = _str(event_name).strip()
    if name not in EVENT_NAMES:
        raise InvalidRecord(f"unknown event_name {_clip(name)!r}")
    t_us = parse_time_us(event_time, "event_time")
    source = _str(traffic_source).strip()
    if raw_meta is None or raw_meta == "" or raw_meta == {}:
        if name == "ADD_TO_CART":
            raise InvalidRecord("ADD_TO_CART without product_id")
        return ClickEvent(session_id, event_id, name, t_us, source)
    if isinstance(raw_meta, str):
        m = _CART_META.match(raw_meta)
        if m:  # fast path for the commonest metadata shape; same result as literal_eval
            pid = int(m.group(1))
            if pid <= 0:
                raise InvalidRecord(f"product_id must be a positive integer, got {pid}")
            return ClickEvent(session_id, event_id, name, t_us, source,
                              pid, int(m.group(2)), int(m.group(3)))
    meta = parse_literal(raw_meta, "event_metadata", dict)
    product_id = _int(meta.get("product_id"), "product_id", required=name == "ADD_TO_CART",
                      positive=True)
    promo_amount = _int(meta.get("promo_amount"), "promo_amount", required=False)
    return ClickEvent(
        session_id, event_id, name, t_us, source, product_id,
        _int(meta.get("quantity"), "quantity", required=False),
        _int(meta.get("item_price"), "item_price", required=False),
        _opt_str(meta.get("payment_status")),
        _opt_str(meta.get("search_keywords")),
        _opt_str(meta.get("promo_code")),
        promo_amount,
    )


def _opt_str(v: Any) -> Optional[str]:
    return None if v is None else str(v)


def parse_transaction(row: Mapping[str, Any]) -> Transaction:
    booking_id = _str(row.get("booking_id")).strip()
    session_id = _str(row.get("session_id")).strip()
    if not booking_id:
        raise InvalidRecord("booking_id is empty")
    if not session_id:
        raise InvalidRecord("session_id is empty")
    items = parse_literal(row.get("product_metadata"), "product_metadata", list)
    lines = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise InvalidRecord(f"product_metadata[{i}] is not a dict")
        lines.append(BookingLine(
            _int(item.get("product_id"), f"product_metadata[{i}].product_id", positive=True),
            _int(item.get("quantity"), f"product_metadata[{i}].quantity", positive=True),
            _int(item.get("item_price"), f"product_metadata[{i}].item_price"),
        ))
    status = _str(row.get("payment_status")).strip()
    if status not in ("Success", "Failed"):
        raise InvalidRecord(f"payment_status must be Success or Failed, got {_clip(status)!r}")
    limit = row.get("shipment_date_limit")
    return Transaction(
        parse_time_us(row.get("created_at"), "created_at"),
        _int(row.get("customer_id"), "customer_id"),
        booking_id, session_id, tuple(lines),
        _str(row.get("payment_method")).strip(), status,
        _int(row.get("promo_amount"), "promo_amount", required=False) or 0,
        _str(row.get("promo_code")).strip(),
        _int(row.get("shipment_fee"), "shipment_fee", required=False) or 0,
        parse_time_us(limit, "shipment_date_limit") if limit else None,
        _float(row.get("shipment_location_lat"), "shipment_location_lat"),
        _float(row.get("shipment_location_long"), "shipment_location_long"),
        _int(row.get("total_amount"), "total_amount"),
    )


def parse_customer(row: Mapping[str, Any]) -> Customer:
    return Customer(
        _int(row.get("customer_id"), "customer_id"),
        *(_str(row.get(c)) for c in ("first_name", "last_name", "username", "email")),
        _str(row.get("gender")).strip(),
        parse_birthdate(row.get("birthdate")),
        *(_str(row.get(c)) for c in ("device_type", "device_id", "device_version")),
        _float(row.get("home_location_lat"), "home_location_lat"),
        _float(row.get("home_location_long"), "home_location_long"),
        _str(row.get("home_location")).strip(),
        _str(row.get("home_country")).strip(),
        _parse_date(row.get("first_join_date"), "first_join_date"),
    )


#: Words that end the brand part of a productDisplayName ("Puma Men Blue Shoes").
_GENDER_WORDS = frozenset({"men", "women", "boys", "girls", "unisex", "kids", "men's",
                           "women's", "mens", "womens", "boy", "girl", "baby", "infant"})


def brand_of(display_name: str, max_words: int = 4) -> str:
    """The brand is the leading word(s) of productDisplayName, up to the gender word.

    "Puma Men Blue Shoes" → "Puma"; "Peter England Men Party Jeans" → "Peter England".
    Without a gender word within ``max_words`` words, the first word is the brand.
    """
    words = display_name.replace(",", " ").split()  # "Puma, Men ..." (repaired rows)
    for i, w in enumerate(words[: max_words + 1]):
        if w.lower() in _GENDER_WORDS:
            return " ".join(words[:i]) if i else ""
    return words[0] if words else ""


def parse_product(row: Mapping[str, Any]) -> Product:
    name = _str(row.get("productDisplayName")).strip()
    year = row.get("year")
    return Product(
        _int(row.get("id"), "id", positive=True),
        *(_str(row.get(c)).strip() for c in PRODUCT_COLUMNS[1:7]),
        _int(year, "year", required=False),
        _str(row.get("usage")).strip(),
        name,
        brand_of(name),
    )


PARSERS = {
    "click_stream": parse_click,
    "transactions": parse_transaction,
    "customer": parse_customer,
    "product": parse_product,
}


# --------------------------------------------------------------------------- fields
def fields_to_row(kind: str, fields: Sequence[str]) -> dict:
    """Map CSV fields to column names, repairing product names with unquoted commas."""
    cols = COLUMNS[kind]
    if len(fields) != len(cols):
        if kind == "product" and len(fields) > len(cols):
            fields = list(fields[: len(cols) - 1]) + [",".join(fields[len(cols) - 1:])]
        else:
            raise InvalidRecord(
                f"wrong field count: expected {len(cols)} {kind} fields, got {len(fields)}")
    return dict(zip(cols, fields))


def parse_fields(kind: str, fields: Sequence[str]) -> Record:
    if kind == "click_stream" and len(fields) == len(CLICK_COLUMNS):
        return click_event(*fields)  # what parse_click(fields_to_row(...)) gives
    return PARSERS[kind](fields_to_row(kind, fields))


def parse_csv_line(kind: str, line: str) -> Record:
    if len(line) > MAX_RAW_CHARS:
        raise InvalidRecord(f"line too long ({len(line)} chars > {MAX_RAW_CHARS})")
    check_text(line)
    try:
        fields = next(csv.reader([line]))
    except (csv.Error, StopIteration) as exc:
        raise InvalidRecord(f"unreadable CSV line: {exc}") from None
    return parse_fields(kind, fields)


def parse_json(kind: str, payload: Union[str, bytes]) -> Record:
    """One JSON object (a Pub/Sub message or a JSONL line) with the CSV field names."""
    if len(payload) > MAX_RAW_CHARS:
        raise InvalidRecord(f"message too large ({len(payload)} bytes > {MAX_RAW_CHARS})")
    if isinstance(payload, bytes):
        payload = decode_text(payload)
    check_text(payload)
    try:
        obj = json.loads(payload)
    except RecursionError:
        raise InvalidRecord("not valid JSON: nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRecord(f"not valid JSON: {exc.__class__.__name__}: {_clip(exc, 60)}") from None
    if not isinstance(obj, dict):
        raise InvalidRecord(f"JSON record must be an object, got {type(obj).__name__}")
    _check_values(obj)
    missing = [c for c in COLUMNS[kind] if c not in obj and c not in _OPTIONAL_JSON[kind]]
    if missing:
        raise InvalidRecord(f"missing field(s): {', '.join(missing)}")
    return PARSERS[kind](obj)


_OPTIONAL_JSON = {
    "click_stream": {"event_metadata", "traffic_source"},
    "transactions": {"promo_code", "promo_amount", "shipment_fee", "shipment_date_limit",
                     "shipment_location_lat", "shipment_location_long"},
    "customer": set(CUSTOMER_COLUMNS) - {"customer_id"},
    "product": set(PRODUCT_COLUMNS) - {"id"},
}


def dead_letter(source: str, raw: Any, reason: str) -> DeadLetter:
    """A DeadLetter; ``raw`` is clipped and made printable (see :func:`printable`)."""
    if isinstance(raw, bytes):
        raw = decode_text(raw[:MAX_RAW_CHARS])
    elif not isinstance(raw, str):
        raw = ",".join(map(str, raw)) if isinstance(raw, (list, tuple)) else str(raw)
    return DeadLetter(source, printable(raw[:MAX_RAW_CHARS]), printable(reason), now_iso())


def parse_or_dead(kind: str, raw: Union[str, bytes], fmt: str = "csv") -> Union[Record, DeadLetter]:
    """Parse one CSV line or JSON payload; never raises for bad input."""
    try:
        if fmt == "json":
            return parse_json(kind, raw)
        text = decode_text(raw) if isinstance(raw, bytes) else raw
        return parse_csv_line(kind, text)
    except InvalidRecord as exc:
        return dead_letter(kind, raw, str(exc))
    except UnicodeDecodeError:
        return dead_letter(kind, raw, "not valid UTF-8")
    except Exception as exc:  # a parser bug must not stop the pipeline: dead-letter it
        return dead_letter(kind, raw, f"unexpected parser error: {type(exc).__name__}: {_clip(exc)}")


HEADER, NO_HEADER, WRONG_HEADER = "header", "no header", "wrong header"


def header_kind(kind: str, fields: Sequence[str]) -> str:
    """What the first row of a ``kind`` CSV file is: the expected header (skipped), a
    header of other columns (the file is refused: reading it by position would put
    values in the wrong columns), or no header at all (the row is data, and is read)."""
    names = [f.strip().lstrip("\ufeff") for f in fields]
    if tuple(names) == COLUMNS[kind]:
        return HEADER
    known = {c.lower() for c in COLUMNS[kind]}
    if any(n.lower() in known for n in names):
        return WRONG_HEADER
    return NO_HEADER


def wrong_header_reason(kind: str, where: str = "") -> str:
    return (f"unexpected {kind} header{' in ' + where if where else ''}; expected "
            f"{','.join(COLUMNS[kind])} (the file was not read)")


def iter_csv_rows(kind: str, lines: Iterable[str], source: Optional[str] = None,
                  where: str = "", warn: bool = True
                  ) -> Iterator[Union[Tuple[dict, Sequence[str]], DeadLetter]]:
    """CSV text (header first, or no header) → ``(row, fields)`` per record, the row keyed
    by column name (product names with unquoted commas repaired); unreadable records and
    records breaking the text rule (:func:`text_problem`) become DeadLetters."""
    source = source or kind
    reader = csv.reader(lines)
    first = True
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield dead_letter(source, "", f"unreadable CSV line {reader.line_num}: {exc}")
            first = False
            continue
        if not fields:
            continue
        if first:
            first = False
            hk = header_kind(kind, fields)
            if hk == HEADER:
                continue
            if hk == WRONG_HEADER:
                yield dead_letter(source, _fields_raw(fields), wrong_header_reason(kind, where))
                return
            if warn:
                log.warning("%s has no header row: its first line is read as data",
                            where or f"a {kind} file")
        raw = _fields_raw(fields)
        reason = text_problem(raw)
        if reason:
            yield dead_letter(source, raw, reason)
            continue
        try:
            yield fields_to_row(kind, fields), fields
        except InvalidRecord as exc:
            yield dead_letter(source, raw, str(exc))


def iter_csv_text(kind: str, lines: Iterable[str], source: Optional[str] = None,
                  where: str = "") -> Iterator[Union[Record, DeadLetter]]:
    """Parse CSV text (header first) record by record; bad rows become DeadLetters."""
    source = source or kind
    parse = PARSERS[kind]
    for item in iter_csv_rows(kind, lines, source, where):
        if isinstance(item, DeadLetter):
            yield item
            continue
        row, fields = item
        try:
            rec = parse(row)
        except InvalidRecord as exc:
            rec = dead_letter(source, _fields_raw(fields), str(exc))
        except Exception as exc:  # a parser bug must not stop the file: dead-letter it
            rec = dead_letter(source, _fields_raw(fields),
                              f"unexpected parser error: {type(exc).__name__}: {_clip(exc)}")
        yield rec


def _fields_raw(fields: Sequence[str]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(fields)  # quotes fields holding newlines
    return buf.getvalue()[:-1]


def read_csv_records(path: str, kind: str) -> Iterator[Union[Record, DeadLetter]]:
    """Read a local or ``gs://`` CSV file of ``kind`` (header row optional)."""
    from apache_beam.io.filesystems import FileSystems  # local import: keeps pure users light

    with FileSystems.open(path) as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8", errors="surrogateescape", newline="")
        yield from iter_csv_text(kind, text, source=kind, where=path)


class Duplicate(NamedTuple):
    """A row repeating an earlier one exactly (counted as a duplicate, not kept)."""
    source: str
    key: Any


def record_key(rec: Record) -> Any:
    """The id a dimension table is unique by (product id, customer id)."""
    return rec.id if isinstance(rec, Product) else rec.customer_id


def first_by_id(items: Iterable[Union[Tuple[Record, str], DeadLetter]], source: str
                ) -> Iterator[Union[Record, Duplicate, DeadLetter]]:
    """One row per id in a dimension table, the same rule in replay and batch: the first
    row of an id (in file order) is kept; an identical later row is a :class:`Duplicate`;
    a later row with the same id and other values is dead-lettered, naming the id.
    ``items`` are ``(record, raw)`` pairs (DeadLetters pass through)."""
    seen: dict = {}
    for item in items:
        if isinstance(item, DeadLetter):
            yield item
            continue
        rec, raw = item
        key = record_key(rec)
        kept = seen.get(key)
        if kept is None:
            seen[key] = rec
            yield rec
        elif kept == rec:
            yield Duplicate(source, key)
        else:
            name = "product id" if isinstance(rec, Product) else "customer_id"
            yield dead_letter(source, raw, f"duplicate {name} {key} with different values: "
                                           f"the first row of this id is kept")


def read_table_records(paths: Iterable[str], kind: str
                       ) -> Iterator[Union[Record, Duplicate, DeadLetter]]:
    """A whole dimension table (product, customer) from its files, in order, one row per
    id (:func:`first_by_id`)."""
    from apache_beam.io.filesystems import FileSystems

    def rows():
        parse = PARSERS[kind]
        for path in paths:
            with FileSystems.open(path) as raw:
                text = io.TextIOWrapper(raw, encoding="utf-8", errors="surrogateescape",
                                        newline="")
                for item in iter_csv_rows(kind, text, kind, where=path, warn=False):
                    if isinstance(item, DeadLetter):
                        yield item
                        continue
                    row, fields = item
                    raw_text = _fields_raw(fields)
                    try:
                        yield parse(row), raw_text
                    except InvalidRecord as exc:
                        yield dead_letter(kind, raw_text, str(exc))
                    except Exception as exc:  # a parser bug must not stop the table
                        yield dead_letter(kind, raw_text, f"unexpected parser error: "
                                                          f"{type(exc).__name__}: {_clip(exc)}")

    yield from first_by_id(rows(), kind)
