"""The simulator's world: knobs, products and the read-only lookup tables every worker shares."""
from __future__ import annotations

import csv
import math
import random
from array import array
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from itertools import accumulate
from types import MappingProxyType
from typing import Sequence

from transforms.records import PRODUCT_COLUMNS
from transforms.simulator.reference import (
    APPROACH_PATHS,
    BRANDS,
    BROKEN_NAME_SUFFIXES,
    CATALOG,
    COLOUR_WEIGHTS,
    COLOURS,
    FILLER_WEIGHTS,
    GENDER_AFFINITY,
    GENDER_NAMES,
    LOCAL_HOUR_WEIGHTS,
    PAYMENT_METHODS,
    PAYMENT_WEIGHTS,
    PROVINCES,
    QUANTITY_WEIGHTS,
    SEASON_WEIGHTS,
    SEASONS,
)

#: spread (per year, log scale) of each product's popularity trend: demand drifts, so
#: last period's engagement predicts next period's purchases only approximately
TREND_SD_PER_YEAR = 0.6

US_PER_S = 1_000_000
US_PER_DAY = 86_400 * US_PER_S


@dataclass(frozen=True)
class Knobs:
    """Behaviour parameters (CLI flags); defaults give a realistic small shop."""

    sessions_per_month: float = 3.5   # median shopping sessions / 30 days, active buyer
    buyer_share: float = 0.55         # customers who are buyers (some never get to buy)
    churn_rate: float = 0.10          # scale of the monthly churn hazard (mean ~ this)
    failure_rate: float = 0.05        # mean chance that a booking's payment fails
    browse_sessions_per_month: float = 0.6  # visits / 30 days of a non-buyer
    atc_per_round: float = 0.95       # extra adds (Poisson mean) beyond the first per booking
    filler_per_add: float = 2.3       # mean browsing events before each add
    promo_share: float = 0.38         # typical chance that a booking round uses a promo
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
    cdf: MappingProxyType    # (customer gender, "buy"|"abandon") -> per week: cumulative weights
    week_shift: int          # weekday of the first day (Monday = 0): week = (day + shift) // 7
    months: tuple            # calendar months touching the window: (first, end, "YYYY-MM-01")
    filler_table: tuple
    approach_table: tuple
    quantity_table: tuple
    payment_table: tuple
    hour_table: tuple
    province_cdf: tuple


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

    rows: list          # tuples in PRODUCT_COLUMNS order
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
        writer.writerow(PRODUCT_COLUMNS)
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
    trend_rng = random.Random(f"shopstream:{seed}:trends")
    trends = [trend_rng.gauss(0.0, TREND_SD_PER_YEAR) for _ in product_rows]
    shift = start.weekday()
    n_weeks = (days - 1 + shift) // 7 + 1
    cdf: dict = {}
    for cust_gender, affinity in GENDER_AFFINITY.items():
        for kind in ("buy", "abandon"):
            cdf[(cust_gender, kind)] = tuple(
                array("d", accumulate(_weights(popularity, trends, product_rows, affinity,
                                               kind, (w * 7 - shift + 3.5 - days / 2) / 365.0)))
                for w in range(n_weeks))
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
        product_keywords=tuple(keywords), cdf=MappingProxyType(cdf), week_shift=shift,
        months=_calendar_months(start, days),
        filler_table=_table(FILLER_WEIGHTS), approach_table=_table(APPROACH_PATHS),
        quantity_table=_table(QUANTITY_WEIGHTS),
        payment_table=_table(list(zip(PAYMENT_METHODS, PAYMENT_WEIGHTS))),
        hour_table=hours,
        province_cdf=tuple(accumulate(p[3] for p in PROVINCES)),
    )
    return world, prices




def _weights(popularity, trends, rows, affinity, kind: str, years: float) -> list:
    """A customer gender's product weights in a week ``years`` from the window's middle.
    Abandoned carts follow a flatter popularity, so carts != purchases exactly."""
    if kind == "buy":
        return [p * math.exp(g * years) * affinity[r[1]]
                for p, g, r in zip(popularity, trends, rows)]
    return [math.sqrt(p * math.exp(g * years)) * affinity[r[1]]
            for p, g, r in zip(popularity, trends, rows)]


def _calendar_months(start: date, days: int) -> tuple:
    """(first day offset, next month's first day offset, "YYYY-MM-01") of every calendar
    month that overlaps the window; offsets are days from ``start``."""
    out = []
    m = date(start.year, start.month, 1)
    while (m - start).days < days:
        nxt = date(m.year + (m.month == 12), m.month % 12 + 1, 1)
        out.append(((m - start).days, (nxt - start).days, m.isoformat()))
        m = nxt
    return tuple(out)


def week_index(world: World, day: float) -> int:
    """The week (Monday to Sunday) of a day offset, clamped to the window's weeks."""
    w = int((day + world.week_shift) // 7)
    return min(max(w, 0), len(world.cdf[("F", "buy")]) - 1)


def week_start(world: World, week: int) -> date:
    """The Monday that starts ``week`` (may precede the window's first day)."""
    return _start_date(world) + timedelta(days=week * 7 - world.week_shift)
