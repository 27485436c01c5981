"""The data contract (SPEC §1, §2 "Bad input"): every rule is checked by the exact
dead-letter reason, or a stable part of it, so that a broken rule fails a test."""
from __future__ import annotations

import csv
import io
import json
import random
import re

import pytest

from transforms import records as R
from transforms.records import (
    ClickEvent,
    Customer,
    DeadLetter,
    InvalidRecord,
    Product,
    Transaction,
    brand_of,
    fields_to_row,
    iter_csv_text,
    parse_click,
    parse_csv_line,
    parse_customer,
    parse_json,
    parse_or_dead,
    parse_product,
    read_csv_records,
)

# --------------------------------------------------------------------- real-format rows
SID = "e2f4c0b6-3d2a-4b1e-9c1a-6f4f0e1d2a3b"
EID = "8b1f3a2c-7d4e-4f5a-9b6c-0d1e2f3a4b5c"
TS = "2019-09-06T15:54:32.821085Z"
TS_US = 1567785272821085  # 2019-09-06T15:54:32.821085Z in microseconds since the epoch

CLICK_HEADER = "session_id,event_name,event_time,event_id,traffic_source,event_metadata"
CART_LINE = (f"{SID},ADD_TO_CART,{TS},{EID},MOBILE,"
             "\"{'product_id': 15315, 'quantity': 4, 'item_price': 313529}\"")
TXN_HEADER = ("created_at,customer_id,booking_id,session_id,product_metadata,payment_method,"
              "payment_status,promo_amount,promo_code,shipment_fee,shipment_date_limit,"
              "shipment_location_lat,shipment_location_long,total_amount")
TXN_LINE = (
    "2018-07-29T15:22:01.458193Z,5868,186e2bee-0637-4710-8981-50c2d737bc42,"
    "3abaa6ce-e320-4e51-9469-d9f3fa328e86,"
    "\"[{'product_id': 54728, 'quantity': 1, 'item_price': 191247}, "
    "{'product_id': 16193, 'quantity': 2, 'item_price': 145526}]\","
    "Debit Card,Success,1415,WEEKENDMANTAP,10000,2018-08-02T02:51:57.458193Z,"
    "-7.806936,110.374521,492299")
CUSTOMER_HEADER = ("customer_id,first_name,last_name,username,email,gender,birthdate,"
                   "device_type,device_id,device_version,home_location_lat,"
                   "home_location_long,home_location,home_country,first_join_date")
CUSTOMER_LINE = ("2870,Lala,Maheswara,671a0865-ac4e-4dc4-9c4f-c286a1176f7e,"
                 "671a0865_ac4e_4dc4_9c4f_c286a1176f7e@startupcampus.id,F,1996-06-14,iOS,"
                 "c9c0de76-0a6c-4ac2-843f-65264ab9fe63,iPhone; iOS 12.3.1,-1.043345,"
                 "101.360523,Sumatera Barat,Indonesia,2019-07-21")
PRODUCT_HEADER = ("id,gender,masterCategory,subCategory,articleType,baseColour,season,year,"
                  "usage,productDisplayName")
PRODUCT_LINE = "15970,Men,Apparel,Topwear,Shirts,Navy Blue,Fall,2011,Casual,Turtle Check Men Navy Blue Shirt"


def click_line(name="CLICK", meta="", *, session=SID, event=EID, ts=TS, source="WEB") -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="").writerow([session, name, ts, event, source, meta])
    return buf.getvalue()


def click_row(**kw) -> dict:
    row = dict(session_id=SID, event_name="CLICK", event_time=TS, event_id=EID,
               traffic_source="WEB", event_metadata="")
    row.update(kw)
    return row


def reason_of(fn, *args) -> str:
    with pytest.raises(InvalidRecord) as info:
        fn(*args)
    return str(info.value)


def dead(kind: str, raw, fmt: str = "csv") -> DeadLetter:
    out = parse_or_dead(kind, raw, fmt)
    assert isinstance(out, DeadLetter), out
    assert out.source == kind
    return out


# --------------------------------------------------------------------- valid CSV rows
def test_add_to_cart_csv_row_real_format():
    ev = parse_csv_line("click_stream", CART_LINE)
    assert ev == ClickEvent(SID, EID, "ADD_TO_CART", TS_US, "MOBILE", 15315, 4, 313529)
    assert R.format_time_us(ev.event_time_us) == TS


@pytest.mark.parametrize("name,meta,expect", [
    ("HOMEPAGE", "", {}),
    ("CLICK", "", {}),
    ("SCROLL", "", {}),
    ("ITEM_DETAIL", "", {}),
    ("PROMO_PAGE", "", {}),
    ("BOOKING", "{'payment_status': 'Success'}", {"payment_status": "Success"}),
    ("SEARCH", "{'search_keywords': 'Kaos Pria'}", {"search_keywords": "Kaos Pria"}),
    ("ADD_PROMO", "{'promo_code': 'BUYMORE', 'promo_amount': 5000}",
     {"promo_code": "BUYMORE", "promo_amount": 5000}),
])
def test_every_event_kind_with_its_metadata(name, meta, expect):
    ev = parse_csv_line("click_stream", click_line(name, meta))
    assert ev.event_name == name and ev.event_time_us == TS_US and ev.product_id is None
    for field, value in expect.items():
        assert getattr(ev, field) == value
    assert isinstance(parse_or_dead("click_stream", click_line(name, meta)), ClickEvent)


def test_transaction_csv_row_real_format():
    t = parse_csv_line("transactions", TXN_LINE)
    assert isinstance(t, Transaction)
    assert t.customer_id == 5868 and t.booking_id == "186e2bee-0637-4710-8981-50c2d737bc42"
    assert t.lines == (R.BookingLine(54728, 1, 191247), R.BookingLine(16193, 2, 145526))
    assert (t.payment_method, t.payment_status) == ("Debit Card", "Success")
    assert (t.promo_amount, t.promo_code, t.shipment_fee) == (1415, "WEEKENDMANTAP", 10000)
    assert R.format_time_us(t.created_at_us) == "2018-07-29T15:22:01.458193Z"
    assert R.format_time_us(t.shipment_date_limit_us) == "2018-08-02T02:51:57.458193Z"
    assert (t.shipment_location_lat, t.shipment_location_long) == (-7.806936, 110.374521)
    assert t.total_amount == 492299


def test_transaction_without_promo_and_failed_payment():
    fields = next(csv.reader([TXN_LINE]))
    fields[6], fields[7], fields[8] = "Failed", "0", ""
    t = R.parse_fields("transactions", fields)
    assert (t.payment_status, t.promo_amount, t.promo_code) == ("Failed", 0, "")


def test_customer_csv_row_real_format():
    c = parse_csv_line("customer", CUSTOMER_LINE)
    assert isinstance(c, Customer)
    assert (c.customer_id, c.first_name, c.gender) == (2870, "Lala", "F")
    assert c.birthdate.isoformat() == "1996-06-14"
    assert c.first_join_date.isoformat() == "2019-07-21"
    assert c.device_version == "iPhone; iOS 12.3.1"
    assert (c.home_location_lat, c.home_location_long) == (-1.043345, 101.360523)
    assert (c.home_location, c.home_country) == ("Sumatera Barat", "Indonesia")


def test_product_csv_row_real_format():
    p = parse_csv_line("product", PRODUCT_LINE)
    assert p == Product(15970, "Men", "Apparel", "Topwear", "Shirts", "Navy Blue", "Fall", 2011,
                        "Casual", "Turtle Check Men Navy Blue Shirt", "Turtle Check")


def test_indonesian_and_emoji_text_survive():
    line = CUSTOMER_LINE.replace("Lala,Maheswara", "Siti Nurhaliza 🌸,Ṣaputra-Ñúñez")
    c = parse_or_dead("customer", line.encode("utf-8"))
    assert (c.first_name, c.last_name) == ("Siti Nurhaliza 🌸", "Ṣaputra-Ñúñez")
    ev = parse_or_dead("click_stream", click_line("SEARCH", "{'search_keywords': 'baju 👗 lebaran'}"))
    assert ev.search_keywords == "baju 👗 lebaran"
    p = parse_csv_line("product", PRODUCT_LINE.replace("Turtle Check Men", "Batik Keris 😀 Men"))
    assert p.brand == "Batik Keris 😀"


# --------------------------------------------------------------------- JSON
def click_json(**kw) -> str:
    return json.dumps(click_row(**kw))


def test_json_click_with_metadata_as_string_and_as_object_agree():
    as_string = parse_json("click_stream", click_json(
        event_name="ADD_TO_CART",
        event_metadata="{'product_id': 15315, 'quantity': 4, 'item_price': 313529}"))
    as_object = parse_json("click_stream", click_json(
        event_name="ADD_TO_CART",
        event_metadata={"product_id": 15315, "quantity": 4, "item_price": 313529}))
    csv_ev = parse_csv_line("click_stream", CART_LINE.replace("MOBILE", "WEB"))
    assert as_string == as_object == csv_ev
    assert as_object.product_id == 15315


def test_json_bytes_and_optional_fields():
    payload = json.dumps({"session_id": SID, "event_name": "HOMEPAGE", "event_time": TS,
                          "event_id": EID}).encode()
    ev = parse_or_dead("click_stream", payload, "json")
    assert ev == ClickEvent(SID, EID, "HOMEPAGE", TS_US, "")


def test_json_transaction_with_metadata_list_object():
    row = dict(zip(R.TRANSACTION_COLUMNS, next(csv.reader([TXN_LINE]))))
    row["product_metadata"] = [{"product_id": 54728, "quantity": 1, "item_price": 191247}]
    t = parse_json("transactions", json.dumps(row))
    assert t.lines == (R.BookingLine(54728, 1, 191247),)


def test_json_customer_and_product():
    cust = dict(zip(R.CUSTOMER_COLUMNS, next(csv.reader([CUSTOMER_LINE]))))
    assert parse_json("customer", json.dumps(cust)) == parse_csv_line("customer", CUSTOMER_LINE)
    prod = dict(zip(R.PRODUCT_COLUMNS, PRODUCT_LINE.split(",")))
    assert parse_json("product", json.dumps(prod)) == parse_csv_line("product", PRODUCT_LINE)


@pytest.mark.parametrize("payload,reason", [
    ("[1, 2]", "JSON record must be an object, got list"),
    ('"CLICK"', "JSON record must be an object, got str"),
    ("42", "JSON record must be an object, got int"),
    ("null", "JSON record must be an object, got NoneType"),
    ("{not json", "not valid JSON: JSONDecodeError"),
    ("", "not valid JSON: JSONDecodeError"),
    ("[" * 50_000, "not valid JSON: nested too deeply"),
    (b"\xff\xfe{", "not valid UTF-8: byte 0xff at character 0"),
])
def test_json_that_is_not_an_object(payload, reason):
    assert dead("click_stream", payload, "json").reason.startswith(reason)


@pytest.mark.parametrize("drop,reason", [
    (["session_id"], "missing field(s): session_id"),
    (["event_name", "event_time"], "missing field(s): event_name, event_time"),
    (["event_id"], "missing field(s): event_id"),
])
def test_json_missing_fields(drop, reason):
    obj = click_row()
    for k in drop:
        del obj[k]
    assert dead("click_stream", json.dumps(obj), "json").reason == reason


def test_json_missing_required_transaction_field():
    row = dict(zip(R.TRANSACTION_COLUMNS, next(csv.reader([TXN_LINE]))))
    del row["booking_id"]
    assert dead("transactions", json.dumps(row), "json").reason == "missing field(s): booking_id"


def test_json_event_time_not_a_string():
    d = dead("click_stream", click_json(event_time=1567785272), "json")
    assert d.reason == "event_time is not an ISO-8601 timestamp string: '1567785272'"


# --------------------------------------------------------------------- timestamps
@pytest.mark.parametrize("ts,reason", [
    ("", "event_time is missing"),
    ("   ", "event_time is missing"),
    ("yesterday", "event_time is not an ISO-8601 timestamp: 'yesterday'"),
    ("2019-13-45T15:54:32.821085Z", "event_time is not an ISO-8601 timestamp: '2019-13-45T15:54:32.821085Z'"),
    ("2019-02-30T00:00:00Z", "event_time is not an ISO-8601 timestamp"),
    ("2019-09-06T25:00:00Z", "event_time is not an ISO-8601 timestamp"),
    ("2019-09-06T15:54:32.821085+25:00", "event_time is not an ISO-8601 timestamp"),
    ("\x00", "control character U+0000 at character"),
])
def test_bad_event_time(ts, reason):
    assert dead("click_stream", click_line(ts=ts)).reason.startswith(reason)


def test_missing_event_time_in_dict_row():
    assert reason_of(parse_click, click_row(event_time=None)) == "event_time is missing"


@pytest.mark.parametrize("ts", [
    "2019-09-06T22:54:32.821085+07:00",   # WIB (Jakarta)
    "2019-09-06T15:54:32.821085+00:00",
    "2019-09-06T10:54:32.821085-05:00",
    "2019-09-06T15:54:32.821085",          # naive: taken as UTC
    "2019-09-06 15:54:32.821085Z",
    "  2019-09-06T15:54:32.821085Z  ",
])
def test_timezones_normalised_to_utc(ts):
    assert parse_csv_line("click_stream", click_line(ts=ts)).event_time_us == TS_US


def test_timestamp_helpers_round_trip():
    assert R.parse_time_us("1970-01-01T00:00:00Z", "t") == 0
    assert R.parse_time_us("1969-12-31T23:59:59.999999Z", "t") == -1
    assert R.format_time_us(TS_US) == TS
    assert R.time_us_to_datetime(TS_US).isoformat() == "2019-09-06T15:54:32.821085+00:00"


# --------------------------------------------------------------------- click validation
@pytest.mark.parametrize("name,reason", [
    ("PURCHASE", "unknown event_name 'PURCHASE'"),
    ("click", "unknown event_name 'click'"),
    ("Add_To_Cart", "unknown event_name 'Add_To_Cart'"),
    ("", "unknown event_name ''"),
    ("X" * 500, "unknown event_name 'XXXXXXXX"),
])
def test_unknown_event_name(name, reason):
    d = dead("click_stream", click_line(name))
    assert d.reason.startswith(reason)
    assert len(d.reason) < 200  # clipped, never the whole hostile field


@pytest.mark.parametrize("session,event,reason", [
    ("", EID, "session_id is empty"),
    ("   ", EID, "session_id is empty"),
    (SID, "", "event_id is empty"),
    (SID, " ", "event_id is empty"),
])
def test_empty_ids(session, event, reason):
    assert dead("click_stream", click_line(session=session, event=event)).reason == reason
    assert reason_of(parse_click, click_row(session_id=session, event_id=event)) == reason


def test_missing_ids_in_dict_row():
    assert reason_of(parse_click, {"event_id": EID}) == "session_id is empty"
    assert reason_of(parse_click, {"session_id": SID}) == "event_id is empty"


@pytest.mark.parametrize("source", ["TABLET", "mobile", "", "SMART_TV 📺"])
def test_traffic_source_kept_as_given(source):
    assert parse_csv_line("click_stream", click_line(source=source)).traffic_source == source


# --------------------------------------------------------------------- metadata (never executed)
@pytest.mark.parametrize("meta,reason", [
    ("{'a': ", "event_metadata is not a Python literal dict: SyntaxError"),
    ("{'product_id': 1", "event_metadata is not a Python literal dict: SyntaxError"),
    ("not a dict", "event_metadata is not a Python literal dict: SyntaxError"),
    ("__import__('os').system('x')", "event_metadata is not a Python literal dict: ValueError"),
    ("(lambda: 1)()", "event_metadata is not a Python literal dict: ValueError"),
    ("{'product_id': __import__('os').getpid()}", "event_metadata is not a Python literal dict: ValueError"),
    ("f'{__import__(\"os\").system(\"x\")}'", "event_metadata is not a Python literal dict: ValueError"),
    ("{'a': f'{1+1}'}", "event_metadata is not a Python literal dict: ValueError"),
    ("{'a': ().__class__.__bases__}", "event_metadata is not a Python literal dict: ValueError"),
    ("{'a': open}", "event_metadata is not a Python literal dict: ValueError"),
    ("{'a': [x for x in range(9)]}", "event_metadata is not a Python literal dict: ValueError"),
    ("{[]: 1}", "event_metadata is not a Python literal dict: TypeError"),
    ("[{'product_id': 1}]", "event_metadata is a list, not a dict"),
    ("['product_id', 15315]", "event_metadata is a list, not a dict"),
    ("{'product_id', 15315}", "event_metadata is a set, not a dict"),
    ("('product_id', 15315)", "event_metadata is a tuple, not a dict"),
    ("15315", "event_metadata is a int, not a dict"),
    ("None", "event_metadata is a NoneType, not a dict"),
    ("'{}'", "event_metadata is a str, not a dict"),
    ("(" * 500 + ")" * 500, "event_metadata is not a Python literal dict"),
    ("-" * 10_000 + "1", "event_metadata is not a Python literal dict"),
])
def test_hostile_or_broken_metadata_is_refused_and_never_run(meta, reason, monkeypatch):
    called = []
    monkeypatch.setattr("os.system", lambda *a: called.append(a) or 0)
    for name in ("CLICK", "ADD_TO_CART"):
        assert dead("click_stream", click_line(name, meta)).reason.startswith(reason)
    assert not called


def test_metadata_as_json_list_is_refused():
    d = dead("click_stream", click_json(event_metadata=[{"product_id": 1}]), "json")
    assert d.reason == "event_metadata must be a dict literal, got list"
    d = dead("click_stream", click_json(event_metadata=7), "json")
    assert d.reason == "event_metadata must be a dict literal, got int"


def test_json_add_to_cart_with_empty_metadata_object():
    for meta in ({}, None, ""):
        d = dead("click_stream", click_json(event_name="ADD_TO_CART", event_metadata=meta), "json")
        assert d.reason == "ADD_TO_CART without product_id"


def test_empty_metadata_forms():
    for meta in ("", "{}"):
        assert parse_csv_line("click_stream", click_line("CLICK", meta)).product_id is None
    assert parse_json("click_stream", click_json(event_metadata={})).product_id is None
    assert parse_json("click_stream", click_json(event_metadata=None)).product_id is None


# --------------------------------------------------------------------- ADD_TO_CART product_id
@pytest.mark.parametrize("meta,reason", [
    ("", "ADD_TO_CART without product_id"),
    ("{}", "product_id is missing"),
    ("{'quantity': 1, 'item_price': 10}", "product_id is missing"),
    ("{'product_id': None, 'quantity': 1}", "product_id is missing"),
    ("{'product_id': '', 'quantity': 1}", "product_id is missing"),
    ("{'product_id': 0, 'quantity': 1, 'item_price': 10}", "product_id must be a positive integer, got 0"),
    ("{'product_id': -5, 'quantity': 1, 'item_price': 10}", "product_id must be a positive integer, got -5"),
    ("{'product_id': 'abc', 'quantity': 1, 'item_price': 10}", "product_id is not an integer: 'abc'"),
    ("{'product_id': 1.5, 'quantity': 1, 'item_price': 10}", "product_id is not an integer: '1.5'"),
    ("{'product_id': True, 'quantity': 1, 'item_price': 10}", "product_id is not an integer: True"),
    ("{'product_id': False, 'quantity': 1, 'item_price': 10}", "product_id is not an integer: False"),
    ("{'product_id': [1], 'quantity': 1, 'item_price': 10}", "product_id is not an integer: '[1]'"),
    ("{'product_id': 1j, 'quantity': 1, 'item_price': 10}", "product_id is not an integer: '1j'"),
    ("{'product_id': 1e999, 'quantity': 1, 'item_price': 10}", "product_id is not an integer: 'inf'"),
    ("{'product_id': 99999999999999999999, 'quantity': 1, 'item_price': 10}",
     "product_id is out of the 64-bit integer range: 99999999999999999999"),
    ("{'product_id': 015315, 'quantity': 4, 'item_price': 313529}",
     "event_metadata is not a Python literal dict: SyntaxError"),
    ("{'product_id': 15315, 'quantity': 'x', 'item_price': 313529}", "quantity is not an integer: 'x'"),
    ("{'product_id': 15315, 'quantity': 1, 'item_price': 3.5}", "item_price is not an integer: '3.5'"),
])
def test_add_to_cart_needs_positive_integer_product_id(meta, reason):
    assert dead("click_stream", click_line("ADD_TO_CART", meta)).reason == reason


@pytest.mark.parametrize("value,reason", [
    (0, "product_id must be a positive integer, got 0"),
    (-5, "product_id must be a positive integer, got -5"),
    ("abc", "product_id is not an integer: 'abc'"),
    (1.5, "product_id is not an integer: '1.5'"),
    (True, "product_id is not an integer: True"),
    (None, "product_id is missing"),
    (1e300, "product_id is out of the 64-bit integer range"),
    (2**63, "product_id is out of the 64-bit integer range: 9223372036854775808"),
])
def test_add_to_cart_product_id_in_json_object(value, reason):
    d = dead("click_stream", click_json(event_name="ADD_TO_CART",
                                        event_metadata={"product_id": value, "quantity": 1}), "json")
    assert d.reason.startswith(reason)


def test_json_nan_product_id_refused():
    raw = click_json(event_name="ADD_TO_CART").replace('"event_metadata": ""',
                                                        '"event_metadata": {"product_id": NaN}')
    assert dead("click_stream", raw, "json").reason == "product_id is not an integer: 'nan'"


def test_add_to_cart_with_integral_forms_is_accepted():
    for meta in ("{'product_id': 15315}", "{'product_id': '15315', 'quantity': 1}",
                 "{'quantity': 4, 'product_id': 15315, 'item_price': 313529}",
                 "{'product_id': 15315 , 'quantity': 4, 'item_price': 313529}",
                 f"{{'product_id': {2**63 - 1}, 'quantity': 1, 'item_price': 1}}"):
        ev = parse_csv_line("click_stream", click_line("ADD_TO_CART", meta))
        assert ev.product_id in (15315, 2**63 - 1)


def test_product_id_is_carried_only_when_given():
    ev = parse_csv_line("click_stream", click_line("ITEM_DETAIL", "{'product_id': 7}"))
    assert ev.product_id == 7


# --------------------------------------------------------------------- fast path == literal path
FAST_PATH_CASES = [
    "{'product_id': 15315, 'quantity': 4, 'item_price': 313529}",
    "{'product_id': 1, 'quantity': 0, 'item_price': 0}",
    "{'product_id': 0, 'quantity': 1, 'item_price': 1}",
    "{'product_id': 015315, 'quantity': 4, 'item_price': 313529}",
    "{'product_id': 15315, 'quantity': 04, 'item_price': 313529}",
    "{'product_id': 999999999999999999, 'quantity': 1, 'item_price': 1}",
    "{'product_id': 9999999999999999999, 'quantity': 1, 'item_price': 1}",
    "{'product_id': 99999999999999999999999, 'quantity': 1, 'item_price': 1}",
    "{'product_id': " + "1" * 5000 + ", 'quantity': 1, 'item_price': 1}",
    "{'product_id': 15315, 'quantity': 4, 'item_price': " + "9" * 30 + "}",
    "{'product_id': 15315, 'quantity': 4, 'item_price': 313529}\n",
]


def _outcome(fn):
    try:
        return fn()
    except InvalidRecord as exc:
        return ("invalid", str(exc))


@pytest.mark.parametrize("meta", FAST_PATH_CASES, ids=range(len(FAST_PATH_CASES)))
@pytest.mark.parametrize("name", ["ADD_TO_CART", "CLICK"])
def test_fast_regex_path_agrees_with_literal_eval_path(meta, name, monkeypatch):
    row = click_row(event_name=name, event_metadata=meta)
    fast = _outcome(lambda: parse_click(row))
    monkeypatch.setattr(R, "_CART_META", re.compile(r"(?!)"))  # force ast.literal_eval
    slow = _outcome(lambda: parse_click(row))
    assert fast == slow


def test_fast_path_is_taken_for_the_common_shape(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("literal_eval must not run for the common cart shape")
    monkeypatch.setattr(R.ast, "literal_eval", boom)
    assert parse_csv_line("click_stream", CART_LINE).product_id == 15315


# --------------------------------------------------------------------- size limits
def test_one_megabyte_metadata_is_refused_before_it_is_evaluated(monkeypatch):
    real = R.ast.literal_eval

    def bounded(text, *a, **k):  # the cost that must stay bounded: never a huge literal
        assert len(text) <= R.MAX_LITERAL_CHARS, f"literal_eval of {len(text)} chars"
        return real(text, *a, **k)
    monkeypatch.setattr(R.ast, "literal_eval", bounded)
    big = "{'search_keywords': '" + "a" * 1_000_000 + "'}"
    line = click_line("SEARCH", big)
    d = dead("click_stream", line)
    assert d.reason == f"line too long ({len(line)} chars > {R.MAX_RAW_CHARS})"
    assert len(d.raw) <= R.MAX_RAW_CHARS
    d = dead("click_stream", json.dumps(click_row(event_name="SEARCH", event_metadata=big)), "json")
    assert d.reason.startswith("message too large (")
    assert reason_of(parse_click, click_row(event_metadata=big)) == (
        f"event_metadata is too large ({len(big)} chars > {R.MAX_LITERAL_CHARS})")
    digits = "{'product_id': " + "1" * 1_000_000 + "}"
    assert reason_of(parse_click, click_row(event_name="ADD_TO_CART", event_metadata=digits)
                     ).startswith("event_metadata is too large")


def test_literal_just_over_the_limit_in_a_short_line():
    meta = "{'search_keywords': '" + "a" * R.MAX_LITERAL_CHARS + "'}"
    d = dead("click_stream", click_line("SEARCH", meta))
    assert d.reason == f"event_metadata is too large ({len(meta)} chars > {R.MAX_LITERAL_CHARS})"


def test_huge_transaction_metadata_refused():
    fields = next(csv.reader([TXN_LINE]))
    fields[4] = "[" + ", ".join(["{'product_id': 1, 'quantity': 1, 'item_price': 1}"] * 1000) + "]"
    assert reason_of(R.parse_fields, "transactions", fields).startswith(
        "product_metadata is too large (")


# --------------------------------------------------------------------- field counts
def test_click_field_counts():
    fields = next(csv.reader([CART_LINE]))
    assert dead("click_stream", ",".join(fields[:5])).reason == (
        "wrong field count: expected 6 click_stream fields, got 5")
    assert dead("click_stream", CART_LINE + ",extra").reason == (
        "wrong field count: expected 6 click_stream fields, got 7")
    assert dead("click_stream", SID).reason == (
        "wrong field count: expected 6 click_stream fields, got 1")
    # unquoted commas in the metadata split it into several fields: refused, not repaired
    unquoted = f"{SID},ADD_TO_CART,{TS},{EID},MOBILE,{{'product_id': 1, 'quantity': 1, 'item_price': 1}}"
    assert dead("click_stream", unquoted).reason == (
        "wrong field count: expected 6 click_stream fields, got 8")


def test_transaction_field_counts():
    fields = next(csv.reader([TXN_LINE]))
    assert reason_of(R.parse_fields, "transactions", fields[:-1]) == (
        "wrong field count: expected 14 transactions fields, got 13")
    assert reason_of(R.parse_fields, "transactions", fields + ["x"]) == (
        "wrong field count: expected 14 transactions fields, got 15")
    assert dead("transactions", TXN_LINE + ",1,2").reason == (
        "wrong field count: expected 14 transactions fields, got 16")


def test_customer_and_short_product_field_counts():
    assert dead("customer", CUSTOMER_LINE + ",x").reason == (
        "wrong field count: expected 15 customer fields, got 16")
    assert dead("product", "1,Men,Apparel").reason == (
        "wrong field count: expected 10 product fields, got 3")


@pytest.mark.parametrize("line,name,brand", [
    ("1163,Men,Apparel,Topwear,Tshirts,Blue,Summer,2011,Sports,Nike Sahara Team India Fanwear Round Neck Jersey, Blue",
     "Nike Sahara Team India Fanwear Round Neck Jersey, Blue", "Nike"),
    ("39403,Men,Apparel,Topwear,Shirts,Blue,Summer,2012,Casual,Locomotive Men Washed Blue Shirt, Check, Slim",
     "Locomotive Men Washed Blue Shirt, Check, Slim", "Locomotive"),
    ("12347,Women,Footwear,Shoes,Heels,Black,Winter,2015,Casual,Puma, Women Black Heels",
     "Puma, Women Black Heels", "Puma"),
    ("5,Men,Apparel,Topwear,Shirts,Blue,Summer,2012,Casual,Peter England,Men Party Shirt",
     "Peter England,Men Party Shirt", "Peter England"),
])
def test_product_rows_with_unquoted_commas_are_repaired(line, name, brand):
    assert len(next(csv.reader([line]))) in (11, 12)
    p = parse_or_dead("product", line)
    assert isinstance(p, Product)
    assert (p.productDisplayName, p.brand, p.usage, p.year) == (name, brand, line.split(",")[8], int(line.split(",")[7]))
    assert fields_to_row("product", next(csv.reader([line])))["productDisplayName"] == name


def test_product_validation():
    assert dead("product", PRODUCT_LINE.replace("15970,", "abc,", 1)).reason == "id is not an integer: 'abc'"
    assert dead("product", PRODUCT_LINE.replace("15970,", ",", 1)).reason == "id is missing"
    assert dead("product", PRODUCT_LINE.replace("15970,", "0,", 1)).reason == (
        "id must be a positive integer, got 0")
    assert dead("product", PRODUCT_LINE.replace(",2011,", ",twenty,")).reason == (
        "year is not an integer: 'twenty'")
    assert parse_csv_line("product", PRODUCT_LINE.replace(",2011,", ",,")).year is None
    assert parse_product({"id": "7"}).productDisplayName == ""


# --------------------------------------------------------------------- transactions
def _txn(**changes) -> str:
    row = dict(zip(R.TRANSACTION_COLUMNS, next(csv.reader([TXN_LINE]))))
    row.update(changes)
    buf = io.StringIO()
    csv.writer(buf, lineterminator="").writerow(row.values())
    return buf.getvalue()


@pytest.mark.parametrize("changes,reason", [
    ({"booking_id": ""}, "booking_id is empty"),
    ({"session_id": " "}, "session_id is empty"),
    ({"product_metadata": "{'product_id': 1}"}, "product_metadata is a dict, not a list"),
    ({"product_metadata": "[{'product_id': 1, "}, "product_metadata is not a Python literal list: SyntaxError"),
    ({"product_metadata": "[__import__('os').system('x')]"}, "product_metadata is not a Python literal list: ValueError"),
    ({"product_metadata": "[1, 2]"}, "product_metadata[0] is not a dict"),
    ({"product_metadata": "[{'product_id': 1, 'quantity': 1, 'item_price': 5}, {'quantity': 1}]"},
     "product_metadata[1].product_id is missing"),
    ({"product_metadata": "[{'product_id': 1, 'quantity': 0, 'item_price': 5}]"},
     "product_metadata[0].quantity must be a positive integer, got 0"),
    ({"product_metadata": "[{'product_id': -3, 'quantity': 1, 'item_price': 5}]"},
     "product_metadata[0].product_id must be a positive integer, got -3"),
    ({"payment_status": "success"}, "payment_status must be Success or Failed, got 'success'"),
    ({"payment_status": ""}, "payment_status must be Success or Failed, got ''"),
    ({"created_at": "2018-02-31T00:00:00Z"}, "created_at is not an ISO-8601 timestamp"),
    ({"created_at": ""}, "created_at is missing"),
    ({"shipment_date_limit": "soon"}, "shipment_date_limit is not an ISO-8601 timestamp: 'soon'"),
    ({"customer_id": "x"}, "customer_id is not an integer: 'x'"),
    ({"customer_id": ""}, "customer_id is missing"),
    ({"total_amount": "lots"}, "total_amount is not an integer: 'lots'"),
    ({"shipment_location_lat": "nan"}, "shipment_location_lat is not a finite number: 'nan'"),
    ({"shipment_location_long": "inf"}, "shipment_location_long is not a finite number: 'inf'"),
    ({"shipment_location_lat": "-Infinity"}, "shipment_location_lat is not a finite number: '-Infinity'"),
    ({"shipment_location_lat": "north"}, "shipment_location_lat is not a number: 'north'"),
])
def test_bad_transactions(changes, reason):
    assert dead("transactions", _txn(**changes)).reason.startswith(reason)


def test_transaction_optional_fields_empty():
    t = parse_csv_line("transactions", _txn(shipment_date_limit="", shipment_location_lat="",
                                            shipment_location_long="", promo_amount="",
                                            shipment_fee=""))
    assert (t.shipment_date_limit_us, t.shipment_location_lat, t.promo_amount, t.shipment_fee) == (
        None, None, 0, 0)


@pytest.mark.parametrize("col,value,reason", [
    ("home_location_lat", "NaN", "home_location_lat is not a finite number: 'NaN'"),
    ("home_location_long", "inf", "home_location_long is not a finite number: 'inf'"),
    ("birthdate", "1996-02-30", "birthdate is not a date: '1996-02-30'"),
    ("first_join_date", "someday", "first_join_date is not a date: 'someday'"),
    ("customer_id", "", "customer_id is missing"),
])
def test_bad_customers(col, value, reason):
    row = dict(zip(R.CUSTOMER_COLUMNS, next(csv.reader([CUSTOMER_LINE]))))
    row[col] = value
    assert reason_of(parse_customer, row) == reason


def test_customer_json_nan_coordinates_refused():
    row = dict(zip(R.CUSTOMER_COLUMNS, next(csv.reader([CUSTOMER_LINE]))))
    raw = json.dumps(dict(row, home_location_lat=float("nan")))  # json emits NaN
    assert dead("customer", raw, "json").reason == "home_location_lat is not a finite number: 'nan'"


# --------------------------------------------------------------------- brand_of
@pytest.mark.parametrize("name,brand", [
    ("Puma Men Blue Shoes", "Puma"),
    ("Peter England Men Party Jeans", "Peter England"),
    ("A B C D E F Men Shirt", "A"),                       # gender word too far: first word
    ("Jealous 21 Women Jeans", "Jealous 21"),
    ("Nike Unisex Cap", "Nike"),
    ("Gini and Jony Boys Shirt", "Gini and Jony"),
    ("Doodle Kids Girls Frock", "Doodle"),
    ("ADIDAS MEN'S Track Pant", "ADIDAS"),
    ("Titan Analog Watch", "Titan"),                       # no gender word
    ("Lakme Absolute Lipstick", "Lakme"),
    ("Fossil", "Fossil"),
    ("Men Blue Shirt", ""),                                # nothing before the gender word
    ("", ""),
    ("   ", ""),
    ("Puma, Men Blue Shoes", "Puma"),                     # repaired comma row
    ("Batik 😀 Women Kebaya", "Batik 😀"),
])
def test_brand_of(name, brand):
    assert brand_of(name) == brand


def test_brand_of_max_words():
    name = "United Colors Of Benetton Women Top"
    assert brand_of(name, max_words=4) == "United Colors Of Benetton"
    assert brand_of(name, max_words=3) == "United"
    assert brand_of("Peter England Men Jeans", max_words=1) == "Peter"


# --------------------------------------------------------------------- iter_csv_text
def test_iter_csv_text_mixed_file():
    text = "\ufeff" + "\n".join([
        CLICK_HEADER,
        CART_LINE,
        "",
        click_line("click"),
        click_line("HOMEPAGE", ts="2019-09-06T22:54:32.821085+07:00"),
        f"{SID},CLICK,{TS}",
        "",
    ]) + "\n"
    out = list(iter_csv_text("click_stream", io.StringIO(text, newline="")))
    assert [type(o).__name__ for o in out] == ["ClickEvent", "DeadLetter", "ClickEvent", "DeadLetter"]
    assert out[1].reason == "unknown event_name 'click'" and out[1].raw == click_line("click")
    assert out[2].event_time_us == TS_US
    assert out[3].reason == "wrong field count: expected 6 click_stream fields, got 3"
    assert out[3].raw == f"{SID},CLICK,{TS}"
    assert all(o.source == "click_stream" for o in out if isinstance(o, DeadLetter))


def test_iter_csv_text_source_name_and_crlf():
    text = PRODUCT_HEADER + "\r\n" + PRODUCT_LINE + "\r\n" + "x,Men\r\n"
    out = list(iter_csv_text("product", io.StringIO(text, newline=""), source="gs://b/product.csv"))
    assert out[0].brand == "Turtle Check"
    assert out[1].source == "gs://b/product.csv"


@pytest.mark.parametrize("header", [
    "session_id,event_name,event_time,event_id,traffic_source",
    "event_name,session_id,event_time,event_id,traffic_source,event_metadata",
    "SESSION_ID,event_name,event_time,event_id,traffic_source,event_metadata",
    TXN_HEADER,
])
def test_iter_csv_text_header_mismatch(header):
    out = list(iter_csv_text("click_stream", [header + "\n", CART_LINE + "\n"]))
    assert len(out) == 1 and isinstance(out[0], DeadLetter)
    assert out[0].reason == ("unexpected click_stream header; expected "
                             "session_id,event_name,event_time,event_id,traffic_source,event_metadata"
                             " (the file was not read)")
    assert out[0].raw == header


def test_iter_csv_text_empty_input_and_header_only():
    assert list(iter_csv_text("click_stream", [])) == []
    assert list(iter_csv_text("click_stream", [CLICK_HEADER + "\n", "\n", "\n"])) == []


def test_iter_csv_text_oversized_field_is_dead_lettered_and_reading_continues():
    big = click_line("SEARCH", "{'search_keywords': '" + "a" * 1_000_000 + "'}")
    out = list(iter_csv_text("click_stream", [CLICK_HEADER + "\n", big + "\n", CART_LINE + "\n"]))
    assert isinstance(out[0], DeadLetter) and "field larger than field limit" in out[0].reason
    assert out[-1] == parse_csv_line("click_stream", CART_LINE)


def test_iter_csv_text_every_kind():
    for kind, header, line, typ in [
        ("transactions", TXN_HEADER, TXN_LINE, Transaction),
        ("customer", CUSTOMER_HEADER, CUSTOMER_LINE, Customer),
        ("product", PRODUCT_HEADER, PRODUCT_LINE, Product),
    ]:
        out = list(iter_csv_text(kind, io.StringIO(f"{header}\n{line}\n", newline="")))
        assert len(out) == 1 and isinstance(out[0], typ)


def test_read_csv_records_local_file(tmp_path):
    path = tmp_path / "click_stream.csv"
    path.write_bytes((CLICK_HEADER + "\n" + CART_LINE + "\n" + click_line("CLIK") + "\n").encode())
    out = list(read_csv_records(str(path), "click_stream"))
    assert out[0].product_id == 15315
    assert out[1].reason == "unknown event_name 'CLIK'"


# --------------------------------------------------------------------- parse_or_dead
def test_parse_or_dead_non_utf8_bytes():
    raw = CART_LINE.encode() + b"\xff\xfe"
    d = dead("click_stream", raw)
    assert d.reason == "not valid UTF-8: byte 0xff at character 181"
    assert d.raw.endswith("\\xff\\xfe") and d.raw.startswith(SID)


def test_parse_or_dead_empty_and_whitespace_lines():
    assert dead("click_stream", "").reason == "wrong field count: expected 6 click_stream fields, got 0"
    assert dead("click_stream", b"").reason == "wrong field count: expected 6 click_stream fields, got 0"
    assert dead("click_stream", "   ").reason == "wrong field count: expected 6 click_stream fields, got 1"


def test_parse_or_dead_unreadable_csv():
    d = dead("click_stream", 'a,b\nc,d')
    assert d.reason.startswith("unreadable CSV line: new-line character seen in unquoted field")


def test_dead_letter_shape():
    d = dead("transactions", "x")
    assert d.raw == "x" and d.reason.startswith("wrong field count")
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", d.seen_at) and d.seen_at.endswith("+00:00")
    assert R.dead_letter("s", ["a", 1], "r").raw == "a,1"
    assert R.dead_letter("s", b"\xff", "r").raw == "\\xff"  # the byte stays visible


def _check_never_raises(kind, raw, fmt):
    out = parse_or_dead(kind, raw, fmt)
    assert isinstance(out, (ClickEvent, Transaction, Customer, Product, DeadLetter)), out
    if isinstance(out, DeadLetter):
        assert out.source == kind and out.reason
        # the safety net must stay unused: every refusal has a real reason
        assert not out.reason.startswith("unexpected parser error"), (raw, out.reason)
    return out


def _mutate(rng: random.Random, text: str) -> str:
    chars = list(text)
    alphabet = "',{}[]()\"\\:0123456789-.eE+ZT \n\r\x00é😀_abcxyz"
    for _ in range(rng.randint(1, 6)):
        op = rng.random()
        pos = rng.randrange(len(chars) + 1)
        if op < 0.4 and chars:
            del chars[min(pos, len(chars) - 1)]
        elif op < 0.8:
            chars.insert(pos, rng.choice(alphabet))
        elif chars:
            chars[min(pos, len(chars) - 1)] = rng.choice(alphabet)
    return "".join(chars)


def test_fuzz_parse_or_dead_never_raises():
    rng = random.Random(20190906)
    seeds = {
        "click_stream": [CART_LINE, click_line("BOOKING", "{'payment_status': 'Success'}"),
                         click_line("ADD_PROMO", "{'promo_code': 'X', 'promo_amount': 5}")],
        "transactions": [TXN_LINE],
        "customer": [CUSTOMER_LINE],
        "product": [PRODUCT_LINE],
    }
    counts = {"record": 0, "dead": 0}
    for kind, lines in seeds.items():
        for line in lines:
            as_json = json.dumps(dict(zip(R.COLUMNS[kind], next(csv.reader([line])))))
            for _ in range(1500):
                for raw, fmt in ((_mutate(rng, line), "csv"), (_mutate(rng, as_json), "json")):
                    out = _check_never_raises(kind, raw, fmt)
                    counts["record" if not isinstance(out, DeadLetter) else "dead"] += 1
                    _check_never_raises(kind, raw.encode("utf-8", "surrogatepass"), fmt)
        for _ in range(200):
            blob = bytes(rng.randrange(256) for _ in range(rng.randrange(200)))
            _check_never_raises(kind, blob, "csv")
            _check_never_raises(kind, blob, "json")
    assert counts["record"] > 100 and counts["dead"] > 100  # the fuzz hits both outcomes


def test_hostile_inputs_never_raise_via_parse_or_dead():
    hostile = [
        click_line("ADD_TO_CART", "{'product_id': " + "1" * 5000 + ", 'quantity': 1, 'item_price': 1}"),
        click_line("ADD_TO_CART", "{'product_id': 1, 'quantity': 1, 'item_price': " + "9" * 4400 + "}"),
        click_line("CLICK", "{'a': " * 3000),
        click_line("CLICK", "[" * 5000 + "]" * 5000),
        click_line("CLICK", "\x00"),
        click_line(ts="9999-12-31T23:59:59-23:59"),
        click_line(ts="0001-01-01T00:00:00+23:59"),
        "\ufeff" + CART_LINE,
        '"' * 1001,
        "\x00" * 50,
    ]
    for raw in hostile:
        _check_never_raises("click_stream", raw, "csv")
        _check_never_raises("click_stream", json.dumps(click_row(event_metadata=raw)), "json")
    for payload in ['{"event_metadata": ' + "[" * 90_000 + "}", "1" * 5000, "-" * 99_000 + "1"]:
        _check_never_raises("click_stream", payload, "json")


def test_parse_or_dead_safety_net_dead_letters_unexpected_errors(monkeypatch):
    def broken(row):
        raise KeyError("boom")
    monkeypatch.setitem(R.PARSERS, "product", broken)
    d = parse_or_dead("product", PRODUCT_LINE)
    assert isinstance(d, DeadLetter) and d.reason == "unexpected parser error: KeyError: 'boom'"
    out = list(iter_csv_text("product", [PRODUCT_HEADER + "\n", PRODUCT_LINE + "\n"]))
    assert out[0].reason == "unexpected parser error: KeyError: 'boom'"
