"""Writes the hostile corpus beside this file (run it after changing a case; the files
are committed). Every hostile record carries a marker in its id (``h-…``) and a row in
``expected.csv``: source, marker, outcome (valid | dead | duplicate), reason substring.

    python tests/data/hostile/build_corpus.py
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

HERE = Path(__file__).parent
CLICK_HEADER = b"session_id,event_name,event_time,event_id,traffic_source,event_metadata\n"
TXN_HEADER = (b"created_at,customer_id,booking_id,session_id,product_metadata,payment_method,"
              b"payment_status,promo_amount,promo_code,shipment_fee,shipment_date_limit,"
              b"shipment_location_lat,shipment_location_long,total_amount\n")
PRODUCT_HEADER = (b"id,gender,masterCategory,subCategory,articleType,baseColour,season,year,"
                  b"usage,productDisplayName\n")
CUSTOMER_HEADER = (b"customer_id,first_name,last_name,username,email,gender,birthdate,"
                   b"device_type,device_id,device_version,home_location_lat,"
                   b"home_location_long,home_location,home_country,first_join_date\n")


def row(*fields: str) -> bytes:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(fields)
    return buf.getvalue().encode("utf-8")


def t(minute: int, second: int = 0) -> str:
    return f"2021-03-01T10:{minute:02d}:{second:02d}.000000Z"


def cart(pid: int) -> str:
    return "{'product_id': %d, 'quantity': 1, 'item_price': 150000}" % pid


def clicks():
    good, expected = [], []
    for n, pid in ((1, 101), (2, 202), (3, 303), (4, 101)):
        sid = f"s-good-{n}"
        for i, (name, meta) in enumerate([("HOMEPAGE", ""), ("CLICK", ""), ("ITEM_DETAIL", ""),
                                          ("ADD_TO_CART", cart(pid)),
                                          ("BOOKING", "{'payment_status': 'Success'}")]):
            good.append(row(sid, name, t(n * 5, i * 10), f"e-good-{n}-{i}", "MOBILE", meta))
    hostile = [
        # (raw line, marker, outcome, reason)
        (row("s-q", "ADD_TO_CART", t(30), "h-quoted-newline", "WEB",
             "{'product_id': 303,\n 'quantity': 2, 'item_price': 99000}"),
         "h-quoted-newline", "valid", ""),
        (row("s-q", "SEARCH", t(30, 5), "h-search-comma-quote", "WEB",
             "{'search_keywords': 'kaos, \"polos\"'}"), "h-search-comma-quote", "valid", ""),
        (b"s-\xff\xfe,CLICK," + t(31).encode() + b",h-utf8-session,WEB,\n",
         "h-utf8-session", "dead", "not valid UTF-8: byte 0xff"),
        (b"s-u,CLICK," + t(31).encode() + b",h-utf8eid-\xc3(,WEB,\n",
         "h-utf8eid-", "dead", "not valid UTF-8: byte 0xc3"),
        (b"s-n,CLICK," + t(31).encode() + b",h-nul-\x00,WEB,\n",
         "h-nul-", "dead", "control character U+0000"),
        (row("s-e", "SEARCH", t(31), "h-escape", "WEB", "{'search_keywords': 'a\x1b[2J'}"),
         "h-escape", "dead", "control character U+001B"),
        (row("s-f", "CLICK", t(31), "h-few-fields"), "h-few-fields", "dead",
         "wrong field count: expected 6 click_stream fields, got 4"),
        (row("s-x", "TELEPORT", t(31), "h-event-name", "WEB", ""), "h-event-name", "dead",
         "unknown event_name 'TELEPORT'"),
        (row("s-x", "CLICK", "yesterday", "h-event-time", "WEB", ""), "h-event-time", "dead",
         "event_time is not an ISO-8601 timestamp: 'yesterday'"),
        (row("s-x", "CLICK", t(31), "h-eval", "WEB", "{__import__('os').system('id')}"),
         "h-eval", "dead", "event_metadata is not a Python literal dict"),
        (row("s-x", "ADD_TO_CART", t(31), "h-cart-no-product", "WEB", "{'quantity': 1}"),
         "h-cart-no-product", "dead", "product_id is missing"),
        (row("s-x", "ADD_TO_CART", t(31), "h-negative-product", "WEB",
             "{'product_id': -5, 'quantity': 1, 'item_price': 1}"),
         "h-negative-product", "dead", "product_id must be a positive integer"),
        (row("s-x", "SEARCH", t(31), "h-huge-literal", "WEB",
             "{'search_keywords': '" + "z" * 30_000 + "'}"),
         "h-huge-literal", "dead", "event_metadata is too large"),
        (row("s-good-1", "CLICK", t(5, 10), "e-good-1-1", "MOBILE", ""),
         "e-good-1-1", "duplicate", ""),
        # a quote that never closes: its line is dead-lettered alone, the next lines read
        (b's-x,CLICK,' + t(32).encode() + b',h-stray-quote,WEB,"{\n',
         "h-stray-quote", "dead", "event_metadata is not a Python literal dict"),
        (row("s-after", "CLICK", t(33), "h-after-stray-quote", "WEB", ""),
         "h-after-stray-quote", "valid", ""),
    ]
    return good, hostile


def transactions():
    good = []
    for n, pid in ((1, 101), (2, 202), (3, 303), (4, 101)):
        meta = "[{'product_id': %d, 'quantity': 1, 'item_price': 150000}]" % pid
        good.append(row(t(n * 5, 40), str(n), f"b-good-{n}", f"s-good-{n}", meta, "OVO",
                        "Success", "0", "", "10000", "2021-03-05T10:00:00.000000Z",
                        "-6.2", "106.8", "160000"))
    meta = "[{'product_id': 101, 'quantity': 1, 'item_price': 150000}]"
    hostile = [
        (b"2021-03-01T10:40:00.000000Z,1,h-b-utf8,s-good-1,\"" + meta.encode()
         + b"\",Gopay\xff,Success,0,,0,,,,150000\n", "h-b-utf8", "dead",
         "not valid UTF-8: byte 0xff"),
        (row(t(41), "1", "h-b-status", "s-good-1", meta, "OVO", "Maybe", "0", "", "0", "", "",
             "", "150000"), "h-b-status", "dead", "payment_status must be Success or Failed"),
        (row(t(41), "1", "h-b-metadata", "s-good-1", "[{'product_id': 'x'}]", "OVO", "Success",
             "0", "", "0", "", "", "", "1"), "h-b-metadata", "dead",
         "product_metadata[0].product_id is not an integer"),
        (row(t(41), "1", "h-b-nul", "s-good-1", meta, "OVO", "Success", "0", "PROMO\x00",
             "0", "", "", "", "1"), "h-b-nul", "dead", "control character U+0000"),
    ]
    return good, hostile


def products():
    good = [row("101", "Men", "Footwear", "Shoes", "Casual Shoes", "Blue", "Summer", "2012",
                "Casual", "Puma Men Blue Shoes"),
            row("202", "Women", "Apparel", "Topwear", "Tops", "Red", "Winter", "2015", "Casual",
                "Vero Moda Women Red Top"),
            row("303", "Men", "Accessories", "Watches", "Watches", "Black", "Fall", "2016",
                "Casual", "Titan Men Black Watch")]
    hostile = [
        (b"404,Unisex,Apparel,Topwear,Tshirts,White,Summer,2017,Casual,Hanes Unisex Pack of 2, "
         b"Assorted\n", "Hanes Unisex", "valid", ""),  # an unquoted comma in the name: repaired
        (good[0], "Puma Men Blue Shoes", "duplicate", ""),  # the same row again
        (row("101", "Men", "Footwear", "Shoes", "Casual Shoes", "Blue", "Summer", "2012",
             "Casual", "Nike Men Blue Shoes"), "Nike Men", "dead",
         "duplicate product id 101 with different values"),
        (b"606,Men,Apparel,Topwear,Tshirts,Blue,Summer,2012,Casual,Roadster \xffMen Tee\n",
         "606", "dead", "not valid UTF-8: byte 0xff"),
        (row("h-707", "Men", "Apparel", "Topwear", "Tshirts", "Blue", "Summer", "2012",
             "Casual", "Bad Id Tee"), "h-707", "dead", "id is not an integer"),
    ]
    return good, hostile


def customers():
    def cust(cid, birth, first="Budi"):
        return row(str(cid), first, "Santoso", f"user{cid}", f"u{cid}@example.com", "M", birth,
                   "Android", f"dev-{cid}", "Android 10", "-6.2", "106.8", "Jakarta Raya",
                   "Indonesia", "2019-01-01")
    good = [cust(n, "1990-05-0%d" % n) for n in range(1, 5)]
    hostile = [
        (cust(5, "", "h-birth-empty"), "h-birth-empty", "dead", "birthdate is missing"),
        (cust(6, "2990-01-01", "h-birth-future"), "h-birth-future", "dead",
         "birthdate 2990-01-01 is in the future"),
        (cust(7, "19900101", "h-birth-basic"), "h-birth-basic", "dead",
         "birthdate is not a YYYY-MM-DD date: '19900101'"),
        (cust(1, "1990-05-01", "h-cust-conflict"), "h-cust-conflict", "dead",
         "duplicate customer_id 1 with different values"),
    ]
    return good, hostile


def main() -> None:
    expected = [("source", "marker", "outcome", "reason")]
    for name, header, (good, hostile) in (
            ("click_stream", CLICK_HEADER, clicks()),
            ("transactions", TXN_HEADER, transactions()),
            ("product", PRODUCT_HEADER, products()),
            ("customer", CUSTOMER_HEADER, customers())):
        body = header + b"".join(good[: len(good) // 2]) + b"".join(h[0] for h in hostile) \
            + b"".join(good[len(good) // 2:])
        (HERE / f"{name}.csv").write_bytes(body)
        expected += [(name, marker, outcome, reason) for _, marker, outcome, reason in hostile]
    with open(HERE / "expected.csv", "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh, lineterminator="\n").writerows(expected)
    # file-level cases: no header row; a 0-byte table beside a header-only one
    noheader = HERE / "noheader"
    noheader.mkdir(exist_ok=True)
    good_clicks, _ = clicks()
    (noheader / "click_stream.csv").write_bytes(b"".join(good_clicks))
    (noheader / "transactions.csv").write_bytes(b"".join(transactions()[0]))
    (noheader / "product.csv").write_bytes(b"".join(products()[0]))
    (noheader / "customer.csv").write_bytes(b"".join(customers()[0]))
    empty = HERE / "empty"
    empty.mkdir(exist_ok=True)
    (empty / "click_stream.csv").write_bytes(CLICK_HEADER + b"".join(good_clicks))
    (empty / "transactions.csv").write_bytes(b"")
    (empty / "product.csv").write_bytes(PRODUCT_HEADER)
    (empty / "customer.csv").write_bytes(b"")


if __name__ == "__main__":
    main()
