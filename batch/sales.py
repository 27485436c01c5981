"""Sales and map facts (SPEC §2 "Sales and map facts", §4 ``sales_facts``/``daily_sales``).

Pure functions; the Beam graph in ``pipelines/batch.py`` only wires them together.

* ``sales_facts``: one row per booking line of a *successful* booking, joined with the
  product (attributes, brand) and the customer (age at purchase, gender, province,
  province centre, own home coordinates).
* ``daily_sales``: per UTC date × masterCategory × subCategory × brand ×
  payment_method × province: orders (distinct bookings with a line in the group),
  units, revenue (Σ quantity × item_price) and promo_amount.

Booking-level money (promo, shipment fee) is spread over the booking's lines in
proportion to line revenue (largest remainder, integers), so summing any column of the
facts or of ``daily_sales`` over any grouping gives the bookings' totals exactly once.
"""
from __future__ import annotations

import datetime as dt
from typing import Any, Dict, Iterable, List, Mapping, NamedTuple, Optional, Sequence, Tuple

from transforms.records import Customer, Product, Transaction, time_us_to_datetime

DAILY_DIMENSIONS = ("masterCategory", "subCategory", "brand", "payment_method", "province")


class CustomerInfo(NamedTuple):
    """What the batch job needs of a customer (a slim side-input value)."""
    customer_id: int
    gender: Optional[str]
    birthdate: Optional[dt.date]
    home_location: Optional[str]
    home_location_lat: Optional[float]
    home_location_long: Optional[float]
    first_join_date: Optional[dt.date]


class ProductInfo(NamedTuple):
    product_id: int
    gender: Optional[str]
    masterCategory: Optional[str]
    subCategory: Optional[str]
    articleType: Optional[str]
    baseColour: Optional[str]
    season: Optional[str]
    year: Optional[int]
    usage: Optional[str]
    productDisplayName: Optional[str]
    brand: Optional[str]


def customer_info(c: Customer) -> CustomerInfo:
    return CustomerInfo(c.customer_id, c.gender or None, c.birthdate, c.home_location or None,
                        c.home_location_lat, c.home_location_long, c.first_join_date)


def product_info(p: Product) -> ProductInfo:
    return ProductInfo(p.id, p.gender or None, p.masterCategory or None, p.subCategory or None,
                       p.articleType or None, p.baseColour or None, p.season or None, p.year,
                       p.usage or None, p.productDisplayName or None, p.brand or None)


def age_on(birthdate: Optional[dt.date], day: dt.date) -> Optional[int]:
    """Completed years of age on ``day``; None if unknown or implausible (<0, >120)."""
    if birthdate is None:
        return None
    years = day.year - birthdate.year - ((day.month, day.day) < (birthdate.month, birthdate.day))
    return years if 0 <= years <= 120 else None


def allocate(total: int, weights: Sequence[int]) -> List[int]:
    """Split integer ``total`` over ``weights`` proportionally; parts sum to ``total``
    exactly (largest remainder; ties to the earlier part; equal split if all weights 0)."""
    n = len(weights)
    if n == 0:
        return []
    total = int(total or 0)
    if n == 1:  # what the rule below gives for one part
        return [total]
    w = [max(int(x), 0) for x in weights]
    wsum = sum(w)
    if wsum == 0:
        w, wsum = [1] * n, n
    sign = -1 if total < 0 else 1
    t = abs(total)
    base = [t * x // wsum for x in w]
    rest = t - sum(base)
    order = sorted(range(n), key=lambda i: (-(t * w[i] % wsum), i))
    for i in order[:rest]:
        base[i] += 1
    return [sign * b for b in base]


def fact_rows(txn: Transaction, customer: Optional[CustomerInfo],
              products: Mapping[int, ProductInfo],
              places: Mapping[Any, Any]) -> List[Dict[str, Any]]:
    """The ``sales_facts`` rows of one booking (none unless payment_status is Success).

    ``places`` maps a customer's raw home_location to a :class:`batch.geo.ProvinceCentre`.
    Unknown products or customers keep the line with NULL attributes (the sale happened).
    """
    if txn.payment_status != "Success" or not txn.lines:
        return []
    created = time_us_to_datetime(txn.created_at_us)
    revenues = [ln.quantity * ln.item_price for ln in txn.lines]
    promos = allocate(txn.promo_amount, revenues)
    fees = allocate(txn.shipment_fee, revenues)
    place = places.get(customer.home_location) if customer and customer.home_location else None
    common = {
        "booking_id": txn.booking_id,
        "created_at": created,
        "date": created.date(),
        "customer_id": txn.customer_id,
        "session_id": txn.session_id,
        "payment_method": txn.payment_method or None,
        "promo_code": txn.promo_code or None,
        "booking_promo_amount": txn.promo_amount,
        "booking_shipment_fee": txn.shipment_fee,
        "booking_total_amount": txn.total_amount,
        "shipment_location_lat": txn.shipment_location_lat,
        "shipment_location_long": txn.shipment_location_long,
        "customer_age": age_on(customer.birthdate, created.date()) if customer else None,
        "gender": customer.gender if customer else None,
        "home_location": customer.home_location if customer else None,
        "province": (place.province if place is not None
                     else (customer.home_location if customer else None)),
        "latitude": place.latitude if place is not None else None,
        "longitude": place.longitude if place is not None else None,
        "home_location_lat": customer.home_location_lat if customer else None,
        "home_location_long": customer.home_location_long if customer else None,
    }
    out = []
    for i, (line, revenue, promo, fee) in enumerate(zip(txn.lines, revenues, promos, fees), 1):
        p = products.get(line.product_id)
        out.append({
            **common,
            "line_number": i,
            "product_id": line.product_id,
            "quantity": line.quantity,
            "item_price": line.item_price,
            "line_revenue": revenue,
            "promo_amount": promo,
            "shipment_fee": fee,
            "product_gender": p.gender if p else None,
            "masterCategory": p.masterCategory if p else None,
            "subCategory": p.subCategory if p else None,
            "articleType": p.articleType if p else None,
            "baseColour": p.baseColour if p else None,
            "season": p.season if p else None,
            "year": p.year if p else None,
            "usage": p.usage if p else None,
            "productDisplayName": p.productDisplayName if p else None,
            "brand": p.brand if p else None,
        })
    return out


# --------------------------------------------------------------------------- daily
#: (ISO date, masterCategory, subCategory, brand, payment_method, province) — only
#: strings/None, so Beam can encode the key deterministically.
DailyKey = Tuple[str, Optional[str], Optional[str], Optional[str], Optional[str], Optional[str]]


def daily_key(fact: Mapping[str, Any]) -> DailyKey:
    day = fact["date"]
    return (day.isoformat() if hasattr(day, "isoformat") else str(day),
            *map(fact.get, DAILY_DIMENSIONS))


def daily_value(fact: Mapping[str, Any]) -> Tuple[str, int, int, int]:
    """What one fact adds to its day group: (booking_id, units, revenue, promo)."""
    return (fact["booking_id"], int(fact["quantity"]), int(fact["line_revenue"]),
            int(fact.get("promo_amount") or 0))


# A day group's accumulator: (set of booking ids, units, revenue, promo). The sets stay
# small (the bookings of one day in one category × brand × method × province).
def daily_init():
    return (set(), 0, 0, 0)


def daily_add(acc, value):
    bookings, units, revenue, promo = acc
    bookings.add(value[0])
    return (bookings, units + value[1], revenue + value[2], promo + value[3])


def daily_merge(accs: Iterable):
    bookings, units, revenue, promo = set(), 0, 0, 0
    for b, u, r, p in accs:
        bookings |= b
        units += u
        revenue += r
        promo += p
    return (bookings, units, revenue, promo)


def daily_row(key: DailyKey, acc) -> Dict[str, Any]:
    bookings, units, revenue, promo = acc
    row = {"date": dt.date.fromisoformat(key[0]), "orders": len(bookings), "units": units, "revenue": revenue,
           "promo_amount": promo}
    row.update(zip(DAILY_DIMENSIONS, key[1:]))
    return row


def daily_sales_rows(facts: Iterable[Mapping[str, Any]]) -> List[Dict[str, Any]]:
    """``daily_sales`` from facts in one go (the reference the Beam combine must match)."""
    groups: Dict[DailyKey, Any] = {}
    for f in facts:
        k = daily_key(f)
        groups[k] = daily_add(groups.get(k) or daily_init(), daily_value(f))
    return [daily_row(k, a) for k, a in sorted(groups.items(), key=lambda kv: _sortable(kv[0]))]


def _sortable(key: DailyKey):
    return (key[0],) + tuple("" if v is None else str(v) for v in key[1:])
