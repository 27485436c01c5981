"""``shopstream generate`` - deterministic, realistic synthetic Fashion Campus data.

Writes the four input tables of SPEC section 1 (``click_stream.csv``,
``transactions.csv``, ``customer.csv``, ``product.csv``) byte-for-byte in the real
files' CSV dialect, plus the hidden truth the data was drawn from under
``OUT/ground_truth/`` (never inside the four tables, so models cannot cheat).

How the world works (the signal the models are meant to find):

* Every product has a latent popularity (lognormal). It drives which products are
  viewed and put in carts; products in carts that are *not* booked are drawn from a
  flatter version of it, so engagement predicts purchases but not perfectly.
* Half of the customers are buyers. A buyer shops in sessions that arrive as a
  Poisson process whose rate decays over the customer's life. Its churn hazard grows as
  its purchase rate falls and shrinks with its engagement (longer, richer sessions);
  in the ~45 days before churning it visits less and browses less. After the churn
  date it never buys again and mostly stops visiting. Recency, frequency and session
  behaviour therefore predict "no successful purchase in the next 3 months".
* The others browse now and then and abandon their carts.

Sessions are built from shopping rounds: browse events, then a short approach path
that usually ends in CLICK/ITEM_DETAIL/HOMEPAGE, then ADD_TO_CART, repeated; maybe a
promo; then BOOKING, which produces exactly one transaction whose lines are the
round's carts. Gaps are mostly seconds to minutes, sometimes over 30 minutes (new
visit) and sometimes days (sessions span several days).

Ground truth (``OUT/ground_truth/``): ``products.csv`` (product_id, latent_popularity,
base_price, brand), ``customers.csv`` (customer_id, is_buyer, engagement,
base_sessions_per_month, rate_decay_per_year, latent_hazard = monthly churn hazard at
activity_start, activity_start, churn_date - the day after which the customer never
books again, empty when still active at the end of the window) and ``params.json`` (the arguments, knobs and the ids of the
products written with a broken name).

Determinism and scale: each customer has its own ``random.Random`` seeded from
(seed, customer_id), so output is byte-identical for the same arguments whatever
``--workers`` is, and customers are generated and written in chunks (memory stays
bounded at any size).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import multiprocessing
import os
import random
import sys
import time
from bisect import bisect
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from itertools import accumulate
from types import MappingProxyType
from typing import Iterator, Sequence

# --------------------------------------------------------------------------- formats

CLICK_STREAM_HEADER = ("session_id", "event_name", "event_time", "event_id",
                       "traffic_source", "event_metadata")
TRANSACTIONS_HEADER = ("created_at", "customer_id", "booking_id", "session_id",
                       "product_metadata", "payment_method", "payment_status",
                       "promo_amount", "promo_code", "shipment_fee", "shipment_date_limit",
                       "shipment_location_lat", "shipment_location_long", "total_amount")
CUSTOMER_HEADER = ("customer_id", "first_name", "last_name", "username", "email", "gender",
                   "birthdate", "device_type", "device_id", "device_version",
                   "home_location_lat", "home_location_long", "home_location",
                   "home_country", "first_join_date")
PRODUCT_HEADER = ("id", "gender", "masterCategory", "subCategory", "articleType",
                  "baseColour", "season", "year", "usage", "productDisplayName")
GT_PRODUCTS_HEADER = ("product_id", "latent_popularity", "base_price", "brand")
GT_CUSTOMERS_HEADER = ("customer_id", "is_buyer", "engagement", "base_sessions_per_month",
                       "rate_decay_per_year", "latent_hazard", "activity_start",
                       "churn_date")

#: The real data's event mix (SPEC section 1), in percent; the generator is tuned to it.
EVENT_MIX_TARGET = MappingProxyType({
    "CLICK": 19.5, "HOMEPAGE": 19.4, "ADD_TO_CART": 15.1, "SCROLL": 13.0,
    "ITEM_DETAIL": 10.1, "SEARCH": 9.1, "BOOKING": 6.6, "PROMO_PAGE": 4.7,
    "ADD_PROMO": 2.5,
})

# ------------------------------------------------------------------ reference tables

#: (province, centre latitude, centre longitude, population in millions) - the 34
#: provinces as named in the real data; population weights where customers live.
PROVINCES = (
    ("Aceh", 4.6951, 96.7494, 5.3), ("Sumatera Utara", 2.1154, 99.5451, 14.8),
    ("Sumatera Barat", -0.7399, 100.8000, 5.5), ("Riau", 0.2933, 101.7068, 6.4),
    ("Kepulauan Riau", 3.9457, 108.1429, 2.1), ("Jambi", -1.4852, 102.4381, 3.5),
    ("Sumatera Selatan", -3.3194, 103.9144, 8.5), ("Bangka Belitung", -2.7411, 106.4406, 1.5),
    ("Bengkulu", -3.5778, 102.3464, 2.0), ("Lampung", -4.5586, 105.4068, 9.0),
    ("Jakarta Raya", -6.2088, 106.8456, 10.6), ("Banten", -6.4058, 106.0640, 11.9),
    ("Jawa Barat", -7.0909, 107.6689, 48.3), ("Jawa Tengah", -7.1510, 110.1403, 36.5),
    ("Daerah Istimewa Yogyakarta", -7.8754, 110.4262, 3.7),
    ("Jawa Timur", -7.5361, 112.2384, 40.7), ("Bali", -8.3405, 115.0920, 4.3),
    ("Nusa Tenggara Barat", -8.6529, 117.3616, 5.3),
    ("Nusa Tenggara Timur", -8.6574, 121.0794, 5.3),
    ("Kalimantan Barat", -0.2788, 111.4753, 5.4), ("Kalimantan Tengah", -1.6815, 113.3824, 2.7),
    ("Kalimantan Selatan", -3.0926, 115.2838, 4.1), ("Kalimantan Timur", 0.5387, 116.4194, 3.8),
    ("Kalimantan Utara", 3.0731, 116.0414, 0.7), ("Sulawesi Utara", 0.6247, 123.9750, 2.6),
    ("Gorontalo", 0.6999, 122.4467, 1.2), ("Sulawesi Tengah", -1.4300, 121.4456, 3.0),
    ("Sulawesi Barat", -2.8441, 119.2321, 1.4), ("Sulawesi Selatan", -3.6688, 119.9741, 9.1),
    ("Sulawesi Tenggara", -4.1449, 122.1746, 2.6), ("Maluku", -3.2385, 130.1453, 1.8),
    ("Maluku Utara", 1.5710, 127.8088, 1.3), ("Papua", -4.2699, 138.0804, 4.3),
    ("Papua Barat", -1.3361, 133.1747, 1.1),
)

FIRST_NAMES_F = ("Siti", "Dewi", "Putri", "Ayu", "Rina", "Lala", "Indah", "Sri", "Wulan",
                 "Nur", "Fitri", "Maya", "Ratna", "Intan", "Kartika", "Citra", "Mega",
                 "Nadia", "Anisa", "Lestari", "Yuliana", "Rahmawati", "Dian", "Novi",
                 "Eka", "Amalia", "Shinta", "Clara", "Gita", "Salsabila")
FIRST_NAMES_M = ("Budi", "Agus", "Andi", "Dimas", "Rizky", "Fajar", "Hendra", "Joko",
                 "Bayu", "Eko", "Ahmad", "Muhammad", "Adi", "Yoga", "Galih", "Reza",
                 "Arif", "Taufik", "Wahyu", "Irfan", "Kevin", "Dodi", "Hadi", "Rudi",
                 "Bambang", "Gilang", "Aditya", "Teguh", "Ilham", "Rangga")
LAST_NAMES = ("Santoso", "Wijaya", "Saputra", "Pratama", "Hidayat", "Kurniawan", "Setiawan",
              "Nugroho", "Lestari", "Maryati", "Susanti", "Siregar", "Nasution", "Simanjuntak",
              "Harahap", "Gunawan", "Halim", "Wibowo", "Purnomo", "Suryadi", "Hakim",
              "Utami", "Rahayu", "Putra", "Sihombing", "Tanjung", "Firmansyah", "Permana",
              "Kusuma", "Salim", "Hutapea", "Wahyudi", "Ramadhan", "Pangestu", "Sinaga")
ANDROID_VERSIONS = ("Android 5.1.1", "Android 6.0", "Android 7.0", "Android 7.1.2",
                    "Android 8.0.0", "Android 8.1.0", "Android 9", "Android 10",
                    "Android 11", "Android 12")
IOS_VERSIONS = tuple(f"iPhone; CPU iPhone OS {v} like Mac OS X"
                     for v in ("12_4", "13_3", "14_2", "14_8", "15_1", "15_5"))

#: (masterCategory, subCategory, articleType, noun in names, genders, usages, median price IDR)
CATALOG = (
    ("Apparel", "Topwear", "Tshirts", "T-shirt", "MWUBG", ("Casual", "Sports"), 150_000),
    ("Apparel", "Topwear", "Shirts", "Shirt", "MWB", ("Casual", "Formal", "Party"), 250_000),
    ("Apparel", "Topwear", "Tops", "Top", "WG", ("Casual", "Party"), 180_000),
    ("Apparel", "Topwear", "Kurtas", "Kurta", "MW", ("Ethnic",), 280_000),
    ("Apparel", "Topwear", "Sweatshirts", "Sweatshirt", "MWU", ("Casual", "Sports"), 320_000),
    ("Apparel", "Topwear", "Jackets", "Jacket", "MWU", ("Casual", "Sports"), 450_000),
    ("Apparel", "Bottomwear", "Jeans", "Jeans", "MWB", ("Casual", "Party"), 350_000),
    ("Apparel", "Bottomwear", "Trousers", "Trousers", "MW", ("Formal", "Casual"), 300_000),
    ("Apparel", "Bottomwear", "Shorts", "Shorts", "MWBG", ("Casual", "Sports"), 160_000),
    ("Apparel", "Bottomwear", "Track Pants", "Track Pants", "MWU", ("Sports",), 220_000),
    ("Apparel", "Bottomwear", "Skirts", "Skirt", "WG", ("Casual",), 200_000),
    ("Apparel", "Dress", "Dresses", "Dress", "WG", ("Casual", "Party"), 380_000),
    ("Apparel", "Innerwear", "Briefs", "Briefs", "M", ("Casual",), 80_000),
    ("Apparel", "Innerwear", "Bra", "Bra", "W", ("Casual",), 120_000),
    ("Apparel", "Loungewear and Nightwear", "Night suits", "Night Suit", "WG", ("Casual",),
     210_000),
    ("Apparel", "Saree", "Sarees", "Saree", "W", ("Ethnic", "Party"), 420_000),
    ("Footwear", "Shoes", "Casual Shoes", "Casual Shoes", "MWU", ("Casual",), 450_000),
    ("Footwear", "Shoes", "Sports Shoes", "Sports Shoes", "MWUB", ("Sports",), 600_000),
    ("Footwear", "Shoes", "Formal Shoes", "Formal Shoes", "M", ("Formal",), 550_000),
    ("Footwear", "Shoes", "Heels", "Heels", "W", ("Casual", "Party"), 400_000),
    ("Footwear", "Shoes", "Flats", "Flats", "WG", ("Casual",), 250_000),
    ("Footwear", "Sandal", "Sandals", "Sandals", "MWBG", ("Casual",), 200_000),
    ("Footwear", "Flip Flops", "Flip Flops", "Flip Flops", "MWU", ("Casual",), 90_000),
    ("Accessories", "Watches", "Watches", "Watch", "MWU", ("Casual", "Formal"), 900_000),
    ("Accessories", "Bags", "Handbags", "Handbag", "W", ("Casual", "Party"), 550_000),
    ("Accessories", "Bags", "Backpacks", "Backpack", "MU", ("Casual", "Travel"), 400_000),
    ("Accessories", "Bags", "Clutches", "Clutch", "W", ("Party",), 300_000),
    ("Accessories", "Belts", "Belts", "Belt", "MW", ("Casual", "Formal"), 150_000),
    ("Accessories", "Eyewear", "Sunglasses", "Sunglasses", "MWU", ("Casual",), 700_000),
    ("Accessories", "Wallets", "Wallets", "Wallet", "MW", ("Casual",), 180_000),
    ("Accessories", "Jewellery", "Earrings", "Earrings", "W", ("Casual", "Party"), 120_000),
    ("Accessories", "Jewellery", "Necklace and Chains", "Necklace", "W", ("Party", "Ethnic"),
     250_000),
    ("Accessories", "Socks", "Socks", "Socks", "MWU", ("Casual", "Sports"), 50_000),
    ("Accessories", "Headwear", "Caps", "Cap", "MU", ("Casual", "Sports"), 110_000),
    ("Personal Care", "Fragrance", "Perfume and Body Mist", "Perfume", "MW", ("Casual",), 350_000),
    ("Personal Care", "Fragrance", "Deodorant", "Deodorant", "MW", ("Casual",), 60_000),
    ("Personal Care", "Lips", "Lipstick", "Lipstick", "W", ("Casual",), 110_000),
    ("Personal Care", "Nails", "Nail Polish", "Nail Polish", "W", ("Casual",), 70_000),
)

#: (brand, master categories it sells) - multi-word brands on purpose, since brand
#: extraction from productDisplayName is part of the pipeline.
BRANDS = (
    ("Puma", "AF"), ("Nike", "AF"), ("Adidas", "AF"), ("Reebok", "AF"), ("Fila", "AF"),
    ("Lotto", "F"), ("Peter England", "AF"), ("Louis Philippe", "AF"), ("Van Heusen", "AF"),
    ("Allen Solly", "AF"), ("United Colors of Benetton", "AFX"), ("Wrangler", "AX"),
    ("Levis", "AX"), ("Lee", "AF"), ("Jealous 21", "A"), ("Fabindia", "A"), ("Arrow", "A"),
    ("Flying Machine", "A"), ("Spykar", "A"), ("Proline", "A"), ("Inkfruit", "A"),
    ("Do u speak green", "A"), ("Gini and Jony", "A"), ("Scullers", "A"), ("John Miller", "A"),
    ("Titan", "X"), ("Fastrack", "XF"), ("Baggit", "X"), ("Lavie", "X"), ("Kiara", "X"),
    ("Carlton London", "FX"), ("Red Tape", "F"), ("Woodland", "F"), ("Catwalk", "F"),
    ("Bata", "F"), ("Crocs", "F"), ("Lakme", "P"), ("Maybelline", "P"), ("Davidoff", "P"),
    ("Axe", "P"), ("Park Avenue", "AP"), ("Wildcraft", "XF"),
)

COLOURS = ("Black", "White", "Blue", "Navy Blue", "Grey", "Red", "Brown", "Green", "Pink",
           "Purple", "Silver", "Beige", "Yellow", "Maroon", "Olive", "Charcoal", "Gold",
           "Orange", "Teal", "Cream")
COLOUR_WEIGHTS = (18, 12, 14, 8, 8, 6, 6, 5, 5, 3, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1)
SEASONS = ("Summer", "Fall", "Winter", "Spring")
SEASON_WEIGHTS = (48, 26, 19, 7)
GENDER_NAMES = MappingProxyType({"M": "Men", "W": "Women", "U": "Unisex", "B": "Boys",
                                 "G": "Girls"})
#: what follows the unquoted comma in the few broken product names (one or two commas)
BROKEN_NAME_SUFFIXES = ("Pack of 2", "Set of 3", "Regular Fit", "Pack of 3, Assorted",
                        "Combo of 2, Multicolour")

#: how strongly a female / male customer is drawn to products of each gender
GENDER_AFFINITY = MappingProxyType({
    "F": MappingProxyType({"Women": 1.0, "Unisex": 0.35, "Girls": 0.15, "Men": 0.05, "Boys": 0.05}),
    "M": MappingProxyType({"Men": 1.0, "Unisex": 0.35, "Boys": 0.12, "Women": 0.05, "Girls": 0.04}),
})

PAYMENT_METHODS = ("Credit Card", "Debit Card", "OVO", "Gopay", "LinkAja")
PAYMENT_WEIGHTS = (30, 17, 20, 23, 10)
PROMO_CODES = ("WEEKENDSERU", "AZ2022", "BUYMORE", "LIBURDONG", "SC2022", "STARTUPTEN",
               "XX2022", "WEEKENDMANTAP")
GENERIC_SEARCHES = ("baju wanita", "kaos polos", "sepatu pria", "tas wanita", "jam tangan",
                    "celana jeans", "dress pesta", "kemeja pria", "sandal", "jaket",
                    "diskon", "promo", "sepatu olahraga", "kacamata", "dompet", "parfum",
                    "hijab", "batik", "sneakers", "tas ransel")
#: local (WIB, UTC+7) hour-of-day activity weights: quiet nights, evening peak
LOCAL_HOUR_WEIGHTS = (1.0, 0.6, 0.4, 0.3, 0.3, 0.5, 1.0, 2.0, 3.0, 3.5, 4.0, 4.5,
                      5.0, 5.0, 4.5, 4.5, 4.5, 5.0, 6.0, 7.0, 7.5, 7.0, 5.0, 2.5)

# Session grammar. Filler events are plain browsing before an add; an approach path is
# what the shopper does right before adding (mostly ends in an inferable event). The
# weights (and Knobs.filler_per_add / atc_per_round) are tuned so that the whole mix
# lands within ~1 point of EVENT_MIX_TARGET (checked by the tests).
FILLER_WEIGHTS = (("SCROLL", 27), ("HOMEPAGE", 22), ("CLICK", 20), ("SEARCH", 17),
                  ("ITEM_DETAIL", 9), ("PROMO_PAGE", 5))
APPROACH_PATHS = ((("CLICK",), 22), (("ITEM_DETAIL",), 10), (("CLICK", "ITEM_DETAIL"), 18),
                  (("HOMEPAGE", "CLICK"), 12), (("SEARCH", "CLICK", "ITEM_DETAIL"), 12),
                  (("HOMEPAGE",), 10), (("SCROLL", "CLICK"), 8), ((), 8))
QUANTITY_WEIGHTS = ((1, 70), (2, 18), (3, 7), (4, 3), (5, 2))
SHIPMENT_FEE_WEIGHTS = ((0, 30), (5000, 35), (10000, 35))

US_PER_S = 1_000_000
US_PER_DAY = 86_400 * US_PER_S
CHUNK_CUSTOMERS = 200


@dataclass(frozen=True)
class Knobs:
    """Behaviour parameters (CLI flags); defaults give a realistic small shop."""

    sessions_per_month: float = 3.5   # median shopping sessions / 30 days, active buyer
    buyer_share: float = 0.55         # customers who are buyers (some never get to buy)
    churn_rate: float = 0.10          # monthly churn hazard of a median buyer
    failure_rate: float = 0.05        # share of bookings whose payment fails
    browse_sessions_per_month: float = 0.6  # visits / 30 days of a non-buyer
    atc_per_round: float = 0.95       # extra adds (Poisson mean) beyond the first per booking
    filler_per_add: float = 2.3       # mean browsing events before each add
    promo_share: float = 0.38         # booking rounds that apply a promo code
    break_prob: float = 0.02          # per-gap chance of a 31 min - 10 h pause (new visit)
    multiday_prob: float = 0.004      # per-gap chance of a 1-4 day pause


@dataclass(frozen=True)
class World:
    """Everything a worker needs to simulate any customer; built once, read-only."""

    seed: int
    start_us: int
    end_us: int
    days: int
    knobs: Knobs
    day_prefixes: tuple      # "YYYY-MM-DDT" for every day index from -1 to days + 10
    product_ids: tuple
    product_prices: tuple
    product_keywords: tuple  # SEARCH metadata strings, one per product
    cdf: MappingProxyType    # (customer gender, "buy"|"abandon") -> cumulative weights
    filler_table: tuple
    approach_table: tuple
    quantity_table: tuple
    fee_table: tuple
    payment_table: tuple
    hour_table: tuple
    province_cdf: tuple


@dataclass
class ChunkResult:
    """CSV text for a contiguous block of customers, plus counts for the summary."""

    clicks: str
    transactions: str
    customers: str
    ground_truth: str
    n_events: int
    n_transactions: int
    event_counts: dict


# ------------------------------------------------------------------ small helpers


def _table(weighted: Sequence[tuple], size: int = 1000) -> tuple:
    """Expand (value, weight) pairs into a lookup table so that one ``random()`` and an
    index pick a weighted value - much faster than ``random.choices`` in the hot loop."""
    total = sum(w for _, w in weighted)
    out: list = []
    acc = 0.0
    for value, weight in weighted:
        acc += weight
        out.extend([value] * (round(acc / total * size) - len(out)))
    return tuple(out)


def _uuid4(rng: random.Random) -> str:
    """A version-4 UUID string drawn from ``rng`` (``uuid.uuid4`` uses os.urandom and
    would break determinism)."""
    h = "%032x" % rng.getrandbits(128)
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"


def _poisson(rng: random.Random, mean: float) -> int:
    """Knuth's Poisson sampler; fine for the small means used here."""
    limit = math.exp(-mean)
    k, p = 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


def _geometric(rng: random.Random, mean: float) -> int:
    """Number of failures before a success, with the given mean (0, 1, 2, ...)."""
    if mean <= 0:
        return 0
    return int(math.log(1.0 - rng.random()) / math.log(mean / (mean + 1.0)))


def format_time(t_us: int, world: World) -> str:
    """Epoch microseconds -> ``2019-09-06T15:54:32.821085Z`` (the real format) without
    datetime objects, which would dominate the run time."""
    day, rem = divmod(t_us - world.start_us, US_PER_DAY)
    sec, us = divmod(rem, US_PER_S)
    hour, sec = divmod(sec, 3600)
    minute, sec = divmod(sec, 60)
    return f"{world.day_prefixes[day + 1]}{hour:02d}:{minute:02d}:{sec:02d}.{us:06d}Z"


def _date_str(start: date, day_offset: float) -> str:
    return (start + timedelta(days=math.floor(day_offset))).isoformat()


def _start_date(world: World) -> date:
    return datetime.fromtimestamp(world.start_us / US_PER_S, tz=timezone.utc).date()


# ------------------------------------------------------------------ products


@dataclass(frozen=True)
class ProductSet:
    """The product table plus the hidden facts about it."""

    rows: list          # tuples in PRODUCT_HEADER order
    popularity: list    # latent popularity per row (lognormal, mean ~2.3)
    brands: list        # the brand each name starts with (ground truth for extraction)
    broken: frozenset   # row indices written with an unquoted comma in the name


def build_products(n: int, seed: int) -> ProductSet:
    """Draw ``n`` products with realistic attribute combinations; about 0.05 % of them
    (at least one from 500 products) get a comma in the name, like ~22 real rows."""
    rng = random.Random(f"shopstream:{seed}:products")
    ids = sorted(rng.sample(range(1_000, 1_000 + int(n * 1.4) + 100), n))
    colour_table = _table(list(zip(COLOURS, COLOUR_WEIGHTS)))
    season_table = _table(list(zip(SEASONS, SEASON_WEIGHTS)))
    year_table = _table([(2011, 20), (2012, 25), (2013, 8), (2014, 6), (2015, 8),
                         (2016, 12), (2017, 12), (2018, 5), (2019, 4)])
    n_broken = max(1 if n >= 500 else 0, round(n * 0.0005))
    broken = set(rng.sample(range(n), n_broken)) if n_broken else set()
    rows, popularity, brands = [], [], []
    for i, pid in enumerate(ids):
        master, sub, article, noun, genders, usages, median_price = rng.choice(CATALOG)
        letter = {"Apparel": "A", "Footwear": "F", "Accessories": "X",
                  "Personal Care": "P"}[master]
        brand = rng.choice([b for b, cats in BRANDS if letter in cats])
        gender = GENDER_NAMES[rng.choice(genders)]
        colour = colour_table[int(rng.random() * len(colour_table))]
        usage = rng.choice(usages)
        words = [brand, gender]
        if (rng.random() < 0.3 and usage in ("Party", "Sports", "Formal")
                and master in ("Apparel", "Footwear") and usage not in noun):
            words.append(usage)
        words += [colour, noun]
        name = " ".join(words)
        if i in broken:
            name += ", " + rng.choice(BROKEN_NAME_SUFFIXES)
        season = season_table[int(rng.random() * len(season_table))]
        year = year_table[int(rng.random() * len(year_table))]
        rows.append((pid, gender, master, sub, article, colour, season, year, usage, name))
        popularity.append(rng.lognormvariate(0.0, 1.3))
        brands.append(brand)
    return ProductSet(rows, popularity, brands, frozenset(broken))


def _product_price(rng: random.Random, median: int) -> int:
    return int(median * rng.lognormvariate(0.0, 0.35)) + rng.randint(0, 999)


def write_products(path: str, rows: list, broken: frozenset) -> None:
    """Write product.csv; broken rows are joined by hand so their comma stays unquoted."""
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(PRODUCT_HEADER)
        for i, row in enumerate(rows):
            if i in broken:
                fh.write(",".join(str(v) for v in row) + "\n")
            else:
                writer.writerow(row)


def build_world(seed: int, start: date, days: int, catalog: ProductSet,
                knobs: Knobs) -> tuple[World, list[int]]:
    """Precompute the read-only lookup structures shared by all customers; also
    returns each product's price (fixed per product, like the real item_price)."""
    rng = random.Random(f"shopstream:{seed}:prices")
    product_rows, popularity = catalog.rows, catalog.popularity
    by_master = {c[0:3]: c for c in CATALOG}
    prices = [_product_price(rng, by_master[(r[2], r[3], r[4])][6]) for r in product_rows]
    cdf = {}
    for cust_gender, affinity in GENDER_AFFINITY.items():
        buy = [p * affinity[r[1]] for p, r in zip(popularity, product_rows)]
        cdf[(cust_gender, "buy")] = tuple(accumulate(buy))
        # abandoned carts follow a flatter popularity, so carts != purchases exactly
        flat = [math.sqrt(p) * affinity[r[1]] for p, r in zip(popularity, product_rows)]
        cdf[(cust_gender, "abandon")] = tuple(accumulate(flat))
    keywords = []
    for r, brand in zip(product_rows, catalog.brands):
        kw = rng.choice((f"{brand} {r[4]}", r[4], f"{r[4]} {r[1]}", brand)).lower()
        keywords.append(repr({"search_keywords": kw}))
    start_us = int(datetime(start.year, start.month, start.day, tzinfo=timezone.utc)
                   .timestamp()) * US_PER_S
    day_prefixes = tuple((start + timedelta(days=d)).isoformat() + "T"
                         for d in range(-1, days + 11))
    hours = _table([(h, w) for h, w in enumerate(LOCAL_HOUR_WEIGHTS)], 2400)
    world = World(
        seed=seed, start_us=start_us, end_us=start_us + days * US_PER_DAY, days=days,
        knobs=knobs, day_prefixes=day_prefixes,
        product_ids=tuple(r[0] for r in product_rows), product_prices=tuple(prices),
        product_keywords=tuple(keywords), cdf=MappingProxyType(cdf),
        filler_table=_table(FILLER_WEIGHTS), approach_table=_table(APPROACH_PATHS),
        quantity_table=_table(QUANTITY_WEIGHTS), fee_table=_table(SHIPMENT_FEE_WEIGHTS),
        payment_table=_table(list(zip(PAYMENT_METHODS, PAYMENT_WEIGHTS))),
        hour_table=hours,
        province_cdf=tuple(accumulate(p[3] for p in PROVINCES)),
    )
    return world, prices


# ------------------------------------------------------------------ customers


@dataclass
class _Shopper:
    """Per-customer behaviour state used while building that customer's sessions."""

    cid: int
    gender: str
    home_lat: float
    home_lon: float
    payment: str
    mobile_share: float
    filler_scale: float   # engagement: how much they browse before adding
    gap_mu: float         # log-median seconds between events


def _session_starts(rng: random.Random, world: World, act: float, stop: float,
                    base_per_month: float, decay: float, churn: float) -> list[tuple]:
    """Session start days (float offsets) of an active buyer, by thinning a Poisson
    process whose rate decays with age and ramps down in the 45 days before churn.
    Returns (day, activity multiplier) pairs; the multiplier also shortens sessions."""
    lam_max = base_per_month / 30.0
    out: list = []
    if lam_max <= 0:
        return out
    t = act
    while True:
        t += rng.expovariate(lam_max)
        if t >= stop:
            return out
        mult = math.exp(-decay * (t - act) / 365.0)
        left = churn - t
        ramp = 0.3 + 0.7 * left / 45.0 if left < 45.0 else 1.0
        if rng.random() < mult * ramp:
            out.append((t, ramp))


def _session_time(rng: random.Random, world: World, day: float) -> int:
    """Start of a session on ``day`` (offset from start) at a realistic local hour."""
    hour = world.hour_table[int(rng.random() * len(world.hour_table))]
    within = (hour - 7) * 3600 + rng.random() * 3600   # WIB is UTC+7
    t = world.start_us + math.floor(day) * US_PER_DAY + int(within * US_PER_S)
    if t < world.start_us:          # early morning WIB of the first day is still UTC day -1
        t += US_PER_DAY
    return min(t, world.end_us - 3 * 3600 * US_PER_S - int(rng.random() * 3600 * US_PER_S))


def _simulate_session(rng: random.Random, world: World, shopper: _Shopper, t0: int,
                      n_rounds: int, tail_abandon: bool, intensity: float,
                      clicks: list, transactions: list, counts: dict) -> int:
    """Append one session's click rows (and its transactions) to the output lists;
    return the time of its last booking (0 if none)."""
    k = world.knobs
    names: list[str] = []
    metas: list[str] = []
    bookings = []
    rand, gauss = rng.random, rng.gauss
    filler_table, approach_table = world.filler_table, world.approach_table
    n_fill, n_appr = len(filler_table), len(approach_table)
    qty_table = world.quantity_table
    n_qty = len(qty_table)
    ids, prices, keywords = world.product_ids, world.product_prices, world.product_keywords
    cdf_buy = world.cdf[(shopper.gender, "buy")]
    cdf_ab = world.cdf[(shopper.gender, "abandon")]
    filler_mean = k.filler_per_add * shopper.filler_scale * intensity

    def browse(n: int) -> None:
        """``n`` plain browsing events; searches get a generic keyword."""
        for _ in range(n):
            name = filler_table[int(rand() * n_fill)]
            names.append(name)
            metas.append(repr({"search_keywords": GENERIC_SEARCHES[int(rand() * 20)]})
                         if name == "SEARCH" else "")

    def browse_then_add(cdf: tuple) -> tuple[str, int]:
        """Browsing, an approach path (searching for the product, clicking it, viewing
        its details), then ADD_TO_CART of that product."""
        idx = bisect(cdf, rand() * cdf[-1])
        browse(_geometric(rng, filler_mean))
        for name in approach_table[int(rand() * n_appr)]:
            names.append(name)
            metas.append(keywords[idx] if name == "SEARCH" else "")
        qty = qty_table[int(rand() * n_qty)]
        price = prices[idx]
        meta = f"{{'product_id': {ids[idx]}, 'quantity': {qty}, 'item_price': {price}}}"
        names.append("ADD_TO_CART")
        metas.append(meta)
        return meta, qty * price

    if rand() < 0.8:
        names.append("HOMEPAGE")
        metas.append("")
    for _ in range(n_rounds):
        cart, subtotal = [], 0
        for _ in range(1 + _poisson(rng, k.atc_per_round)):
            meta, amount = browse_then_add(cdf_buy)
            cart.append(meta)
            subtotal += amount
        promo_code, promo_amount = "", 0
        if rand() < k.promo_share:
            promo_code = PROMO_CODES[int(rand() * len(PROMO_CODES))]
            promo_amount = rng.randint(1_000, max(1_000, min(25_000, subtotal // 5)))
            names += ("PROMO_PAGE", "ADD_PROMO")
            metas += ("", f"{{'promo_code': '{promo_code}', 'promo_amount': {promo_amount}}}")
        status = "Failed" if rand() < k.failure_rate else "Success"
        bookings.append((len(names), cart, subtotal, promo_code, promo_amount, status))
        names.append("BOOKING")
        metas.append(f"{{'payment_status': '{status}'}}")
    if tail_abandon:
        for _ in range(_poisson(rng, 0.8)):
            browse_then_add(cdf_ab)
        browse(_geometric(rng, 1.5))

    # event times: mostly seconds-to-minutes, sometimes a new visit, sometimes days
    times = [t0]
    t = t0
    mu = shopper.gap_mu
    p_day, p_break = k.multiday_prob, k.multiday_prob + k.break_prob
    for _ in range(len(names) - 1):
        u = rand()
        if u < p_day:
            gap = 86_400.0 * (1.0 + 3.0 * rand())
        elif u < p_break:
            gap = 1860.0 * math.exp(rand() * 2.96)          # 31 min .. 10 h
        else:
            gap = min(math.exp(gauss(mu, 1.0)), 1700.0)
        t += int(gap * US_PER_S) + 1
        times.append(t)
    last_allowed = world.end_us - 5 * US_PER_S
    if t > last_allowed:   # squeeze a session that would run past the data window
        scale = (last_allowed - t0) / (t - t0)
        times = [t0 + int((x - t0) * scale) for x in times]

    sid = _uuid4(rng)
    source = "MOBILE" if rand() < shopper.mobile_share else "WEB"
    for name, meta, tt in zip(names, metas, times):
        clicks.append((sid, name, format_time(tt, world), _uuid4(rng), source, meta))
        counts[name] = counts.get(name, 0) + 1
    created = 0
    for idx, cart, subtotal, code, amount, status in bookings:
        created = min(times[idx] + rng.randint(100_000, 3_000_000), world.end_us - 1)
        fee = world.fee_table[int(rand() * len(world.fee_table))]
        method = (shopper.payment if rand() < 0.75
                  else world.payment_table[int(rand() * len(world.payment_table))])
        limit = created + rng.randint(2 * US_PER_DAY, 7 * US_PER_DAY)
        transactions.append((
            format_time(created, world), shopper.cid, _uuid4(rng), sid,
            "[" + ", ".join(cart) + "]", method, status, amount, code, fee,
            format_time(limit, world),
            round(shopper.home_lat + rng.gauss(0.0, 0.02), 7),
            round(shopper.home_lon + rng.gauss(0.0, 0.02), 7),
            subtotal + fee - amount,
        ))
    return created


def simulate_customer(cid: int, world: World, clicks: list, transactions: list,
                      counts: dict) -> tuple[tuple, tuple]:
    """Simulate one customer's whole life in the data window.

    Appends click rows and transaction rows to the given lists and returns the
    customer.csv row and the ground-truth row."""
    rng = random.Random(f"shopstream:{world.seed}:customer:{cid}")
    k = world.knobs
    start = _start_date(world)
    days = world.days

    # --- who they are
    gender = "F" if rng.random() < 0.6 else "M"
    first = rng.choice(FIRST_NAMES_F if gender == "F" else FIRST_NAMES_M)
    last = rng.choice(LAST_NAMES)
    username = _uuid4(rng)
    email = username.replace("-", "_") + "@zakyfound.com"
    age_days = int(365.25 * min(max(rng.gauss(27.0, 7.0), 16.0), 65.0))
    birthdate = (start - timedelta(days=age_days + rng.randint(0, 364))).isoformat()
    ios = rng.random() < 0.35
    device_type = "iOS" if ios else "Android"
    device_version = rng.choice(IOS_VERSIONS if ios else ANDROID_VERSIONS)
    device_id = _uuid4(rng)
    prov_i = bisect(world.province_cdf, rng.random() * world.province_cdf[-1])
    province, plat, plon, _ = PROVINCES[prov_i]
    home_lat = round(plat + rng.gauss(0.0, 0.3), 4)
    home_lon = round(plon + rng.gauss(0.0, 0.3), 4)
    join = rng.uniform(-730.0, 0.0) if rng.random() < 0.45 else rng.uniform(0.0, days - 1.0)
    act = max(join, 0.0) + rng.expovariate(1 / 7.0) * (join > 0)

    engagement = rng.gauss(0.0, 1.0)
    shopper = _Shopper(
        cid=cid, gender=gender, home_lat=home_lat, home_lon=home_lon,
        payment=world.payment_table[int(rng.random() * len(world.payment_table))],
        mobile_share=min(max(rng.gauss(0.7, 0.2), 0.0), 1.0) if not ios else 0.85,
        filler_scale=math.exp(0.35 * engagement - 0.06125),
        gap_mu=math.log(25.0) + 0.25 * engagement,
    )
    is_buyer = rng.random() < k.buyer_share
    sessions: list[tuple] = []   # (day offset, kind, intensity)
    base = decay = hazard = 0.0
    churn = math.inf
    if is_buyer:
        relative_rate = math.exp(0.7 * rng.gauss(0.0, 1.0) + 0.3 * engagement)
        base = k.sessions_per_month * relative_rate
        decay = rng.uniform(0.0, 1.2)
        # hazard/day = a * exp(b * t): inversely proportional to the (decaying) shopping
        # rate, and lower for engaged customers
        a = k.churn_rate / 30.0 / relative_rate * math.exp(-0.4 * engagement)
        b = decay / 365.0
        e = rng.expovariate(1.0)
        if a > 0:
            churn = act + (math.log1p(e * b / a) / b if b > 1e-12 else e / a)
        hazard = a * 30.0
        for day, ramp in _session_starts(rng, world, act, min(churn, days), base, decay, churn):
            kind = "book" if rng.random() < 0.88 else "abandon"
            sessions.append((day, kind, ramp))
        if churn < days and rng.random() < 0.3:          # a few goodbye visits
            for _ in range(1 + _poisson(rng, 0.7)):
                day = churn + rng.uniform(5.0, 120.0)
                if day < days:
                    sessions.append((day, "abandon", 0.6))
    else:
        t = act
        lam = k.browse_sessions_per_month / 30.0
        while lam > 0:
            t += rng.expovariate(lam)
            if t >= days:
                break
            sessions.append((t, "abandon", 1.0))
    sessions.sort()

    last_booking = 0
    for day, kind, intensity in sessions:
        t0 = _session_time(rng, world, day)
        if kind == "book":
            u = rng.random()
            rounds = 1 if u < 0.86 else (2 if u < 0.97 else 3)
            booked = _simulate_session(rng, world, shopper, t0, rounds, rng.random() < 0.12,
                                       intensity, clicks, transactions, counts)
            last_booking = max(last_booking, booked)
        else:
            _simulate_session(rng, world, shopper, t0, 0, True, intensity,
                              clicks, transactions, counts)
    churn_date = ""
    if churn < days:   # the day after which they never book again (a session begun
        # before the drawn churn time may end with a booking a little after it)
        booked = (last_booking - world.start_us) / US_PER_DAY if last_booking else -math.inf
        churn_date = _date_str(start, max(churn, booked))

    customer_row = (cid, first, last, username, email, gender, birthdate, device_type,
                    device_id, device_version, home_lat, home_lon, province, "Indonesia",
                    _date_str(start, join))
    truth_row = (cid, int(is_buyer), round(engagement, 4), round(base, 4), round(decay, 4),
                 round(hazard, 6), _date_str(start, act), churn_date)
    return customer_row, truth_row


def generate_chunk(world: World, first_cid: int, last_cid: int) -> ChunkResult:
    """Simulate customers first_cid..last_cid (inclusive) into CSV text blocks."""
    clicks: list = []
    transactions: list = []
    counts: dict = {}
    bufs = [io.StringIO() for _ in range(4)]
    writers = [csv.writer(b, lineterminator="\n") for b in bufs]
    for cid in range(first_cid, last_cid + 1):
        customer_row, truth_row = simulate_customer(cid, world, clicks, transactions, counts)
        writers[2].writerow(customer_row)
        writers[3].writerow(truth_row)
    writers[0].writerows(clicks)
    writers[1].writerows(transactions)
    return ChunkResult(bufs[0].getvalue(), bufs[1].getvalue(), bufs[2].getvalue(),
                       bufs[3].getvalue(), len(clicks), len(transactions), counts)


def _worker_loop(world: World, chunks: list, conn) -> None:
    """Worker process body: simulate every ``workers``-th chunk and send the results
    back in order. ``send`` blocks while the parent is behind, which bounds memory."""
    try:
        for lo, hi in chunks:
            conn.send(generate_chunk(world, lo, hi))
    except BaseException:  # report, so the parent can fail loudly instead of hanging
        import traceback
        conn.send(traceback.format_exc())
    finally:
        conn.close()


def _chunks(n_customers: int) -> list[tuple[int, int]]:
    return [(lo, min(lo + CHUNK_CUSTOMERS - 1, n_customers))
            for lo in range(1, n_customers + 1, CHUNK_CUSTOMERS)]


# ------------------------------------------------------------------ driver


@dataclass(frozen=True)
class Summary:
    """What a run wrote, for the one-line report and for tests."""

    out: str
    rows: MappingProxyType
    event_counts: MappingProxyType
    seconds: float

    def line(self) -> str:
        r = self.rows
        rate = r["click_stream"] / self.seconds if self.seconds > 0 else 0.0
        return (f"generate: wrote {self.out}: click_stream={r['click_stream']:,} "
                f"transactions={r['transactions']:,} customer={r['customer']:,} "
                f"product={r['product']:,} rows in {self.seconds:.1f} s "
                f"({rate:,.0f} events/s)")


def generate(out_dir: str, customers: int = 2000, products: int = 500, days: int = 120,
             seed: int = 42, start: date = date(2021, 1, 1), knobs: Knobs = Knobs(),
             workers: int = 1, progress: bool = False) -> Summary:
    """Generate the four tables and the ground truth under ``out_dir``; return a Summary."""
    if customers < 1 or products < 1 or days < 1:
        raise ValueError("customers, products and days must be >= 1")
    began = time.perf_counter()
    os.makedirs(os.path.join(out_dir, "ground_truth"), exist_ok=True)
    catalog = build_products(products, seed)
    write_products(os.path.join(out_dir, "product.csv"), catalog.rows, catalog.broken)
    world, prices = build_world(seed, start, days, catalog, knobs)
    with open(os.path.join(out_dir, "ground_truth", "products.csv"), "w", newline="",
              encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(GT_PRODUCTS_HEADER)
        w.writerows((r[0], round(p, 6), price, brand) for r, p, price, brand
                    in zip(catalog.rows, catalog.popularity, prices, catalog.brands))

    paths = {"click_stream": "click_stream.csv", "transactions": "transactions.csv",
             "customer": "customer.csv", "ground_truth": "ground_truth/customers.csv"}
    headers = {"click_stream": CLICK_STREAM_HEADER, "transactions": TRANSACTIONS_HEADER,
               "customer": CUSTOMER_HEADER, "ground_truth": GT_CUSTOMERS_HEADER}
    files = {k: open(os.path.join(out_dir, p), "w", newline="", encoding="utf-8")
             for k, p in paths.items()}
    n_events = n_tx = 0
    counts: dict = {}
    try:
        for key, fh in files.items():
            csv.writer(fh, lineterminator="\n").writerow(headers[key])
        chunks = _chunks(customers)
        bar = _progress_bar(customers, progress)
        for result, (lo, hi) in zip(_run_chunks(world, chunks, workers), chunks):
            files["click_stream"].write(result.clicks)
            files["transactions"].write(result.transactions)
            files["customer"].write(result.customers)
            files["ground_truth"].write(result.ground_truth)
            n_events += result.n_events
            n_tx += result.n_transactions
            for name, c in result.event_counts.items():
                counts[name] = counts.get(name, 0) + c
            if bar is not None:
                bar.update(hi - lo + 1)
                bar.set_postfix(events=f"{n_events:,}", refresh=False)
        if bar is not None:
            bar.close()
    finally:
        for fh in files.values():
            fh.close()
    with open(os.path.join(out_dir, "ground_truth", "params.json"), "w", encoding="utf-8") as fh:
        json.dump({"customers": customers, "products": products, "days": days, "seed": seed,
                   "start": start.isoformat(), "knobs": knobs.__dict__,
                   "broken_product_ids": sorted(catalog.rows[i][0] for i in catalog.broken)},
                  fh, indent=2, sort_keys=True)
        fh.write("\n")
    return Summary(out=out_dir,
                   rows=MappingProxyType({"click_stream": n_events, "transactions": n_tx,
                                          "customer": customers, "product": products}),
                   event_counts=MappingProxyType(dict(sorted(counts.items()))),
                   seconds=time.perf_counter() - began)


def _run_chunks(world: World, chunks: list, workers: int) -> Iterator[ChunkResult]:
    """Yield chunk results in customer order, in-process or from worker processes.

    Worker i owns chunks i, i + workers, ...; reading the pipes round-robin restores
    customer order, so the output does not depend on the number of workers."""
    workers = min(workers, len(chunks))
    if workers <= 1:
        for lo, hi in chunks:
            yield generate_chunk(world, lo, hi)
        return
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    pipes, procs = [], []
    try:
        for i in range(workers):
            recv, send = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_worker_loop, args=(world, chunks[i::workers], send),
                               daemon=True)
            proc.start()
            send.close()
            pipes.append(recv)
            procs.append(proc)
        for k in range(len(chunks)):
            result = pipes[k % workers].recv()
            if isinstance(result, str):
                raise RuntimeError(f"generate worker failed:\n{result}")
            yield result
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
            proc.join()
        for recv in pipes:
            recv.close()


def _progress_bar(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm
    return tqdm(total=total, unit="customer", file=sys.stderr, desc="generate",
                dynamic_ncols=True)


# ------------------------------------------------------------------ CLI


def _iso_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a YYYY-MM-DD date: {text!r}") from exc


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError("must be between 0 and 1")
    return value


def _non_negative(text: str) -> float:
    value = float(text)
    if value < 0.0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``generate`` flags (shared by ``register`` and ``python -m``)."""
    d = Knobs()
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="output directory (created if missing)")
    parser.add_argument("--customers", type=_positive_int, default=2000, metavar="N",
                        help="number of customers (real data: 100000)")
    parser.add_argument("--products", type=_positive_int, default=500, metavar="N",
                        help="number of products (real data: 44446)")
    parser.add_argument("--days", type=_positive_int, default=120, metavar="N",
                        help="length of the data window in days (use >= 365 to train churn)")
    parser.add_argument("--start", type=_iso_date, default=date(2021, 1, 1), metavar="DATE",
                        help="first day of the data window (YYYY-MM-DD, UTC)")
    parser.add_argument("--seed", type=int, default=42, metavar="N",
                        help="random seed; same arguments + seed give byte-identical files")
    parser.add_argument("--sessions-per-month", type=_non_negative, metavar="F",
                        default=d.sessions_per_month,
                        help="median shopping sessions per 30 days of an active buyer "
                             "(scales the event volume)")
    parser.add_argument("--browse-sessions-per-month", type=_non_negative, metavar="F",
                        default=d.browse_sessions_per_month,
                        help="visits per 30 days of a customer who never buys")
    parser.add_argument("--buyer-share", type=_fraction, default=d.buyer_share, metavar="F",
                        help="share of customers who are buyers (late joiners may still "
                             "never buy, so ~half the customers have no transaction)")
    parser.add_argument("--churn-rate", type=_non_negative, default=d.churn_rate, metavar="F",
                        help="monthly churn hazard of a median buyer")
    parser.add_argument("--failure-rate", type=_fraction, default=d.failure_rate, metavar="F",
                        help="share of bookings whose payment fails")
    parser.add_argument("--workers", type=_positive_int, default=min(4, os.cpu_count() or 1),
                        metavar="N", help="worker processes (output is identical for any value)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar on stderr")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter,
                     argparse.RawDescriptionHelpFormatter):
    """Show defaults and keep the examples' line breaks."""


_EXAMPLES = """examples:
  shopstream generate --out data/demo                 # ~170 k events in ~1 s
  shopstream generate --out data/churn --days 540     # long enough to train churn
  shopstream generate --out data/full --customers 100000 --products 44446 --days 180
                                                      # ~12 M events, ~40 s on 2 cores
"""


def register(subparsers) -> argparse.ArgumentParser:
    """Add the ``generate`` subcommand to the ``shopstream`` CLI; it dispatches to run."""
    parser = subparsers.add_parser(
        "generate",
        help="write synthetic Fashion Campus data (click_stream, transactions, customer, "
             "product CSVs)",
        description="Write the four Fashion Campus tables in the real CSV format, with a "
                    "realistic event mix, session flows, product popularity and customer "
                    "churn, deterministic per --seed. Hidden parameters are written to "
                    "DIR/ground_truth/.",
        epilog=_EXAMPLES, formatter_class=_HelpFormatter)
    add_arguments(parser)
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run ``shopstream generate`` from parsed arguments; prints a one-line summary."""
    knobs = Knobs(sessions_per_month=args.sessions_per_month,
                  browse_sessions_per_month=args.browse_sessions_per_month,
                  buyer_share=args.buyer_share, churn_rate=args.churn_rate,
                  failure_rate=args.failure_rate)
    summary = generate(args.out, customers=args.customers, products=args.products,
                       days=args.days, seed=args.seed, start=args.start, knobs=knobs,
                       workers=args.workers, progress=not args.quiet)
    print(summary.line())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="shopstream generate", epilog=_EXAMPLES,
                                     formatter_class=_HelpFormatter)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
