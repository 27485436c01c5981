"""One customer's life: who they are, when they shop, what a session looks like, when they churn.

A buyer lives month by month (calendar months, UTC). In each month it shops in sessions
arriving as a Poisson process whose rate decays over its life and moves with a latent
visit multiplier (a mean-reverting random walk). At each month end it churns with the
monthly hazard of :func:`monthly_hazard` (the documented mix below); a churned customer
never books again and only sometimes pays a goodbye visit.
"""
from __future__ import annotations

import math
import random
from bisect import bisect
from dataclasses import dataclass
from datetime import timedelta
from types import MappingProxyType

from transforms.simulator.reference import (
    ANDROID_VERSIONS,
    FIRST_NAMES_F,
    FIRST_NAMES_M,
    GENERIC_SEARCHES,
    IOS_VERSIONS,
    LAST_NAMES,
    PROMO_CODES,
    PROVINCES,
)
from transforms.simulator.world import (
    US_PER_DAY,
    US_PER_S,
    World,
    _date_str,
    _geometric,
    _poisson,
    _start_date,
    _uuid4,
    format_time,
    week_index,
)

#: The churn hazard mix: logit(monthly hazard) = logit(churn_rate) + OFFSET + Σ weight · driver.
#: Drivers at the month end: log1p(days since the last successful purchase / 30); failed
#: payments this month + half of last month's; the share of all bookings so far that used
#: a promo code (minus 0.4); the mean shipment fee of the last 3 months' bookings in
#: 10 000 IDR (minus 0.5); the fall of the latent visit multiplier over the last two months
#: (log scale, rises only); sessions this month that ended with a cart left behind;
#: the latent engagement (negative: engaged customers stay); and a per-customer frailty.
HAZARD_WEIGHTS = MappingProxyType({
    "recency": 0.2, "failed_payments": 1.2, "promo_share": 4.5, "shipment_fee": 2.0,
    "visit_drop": 0.8, "abandoned_sessions": 0.3, "engagement": -0.25, "frailty": 1.0,
})
HAZARD_OFFSET = -0.9
FRAILTY_SD = 0.3
VISIT_PHI = 0.8                 # month-to-month persistence of the log visit multiplier
VISIT_SD = 0.4                  # its monthly innovation
VISIT_VAR = VISIT_SD ** 2 / (1 - VISIT_PHI ** 2)   # its stationary variance
MEAN_QUANTITY = 1.49            # E[quantity] of QUANTITY_WEIGHTS
HORIZON_MONTHS = 3              # the churn label's horizon (SPEC section 2)


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


def monthly_hazard(churn_rate: float, recency_days: float, failed_now: float,
                   failed_prev: float, promo_share: float, fee_mean: float, visit_drop: float,
                   abandoned: float, engagement: float, frailty: float) -> float:
    """The probability that an active buyer churns at this month end (HAZARD_WEIGHTS)."""
    w = HAZARD_WEIGHTS
    z = (_logit(churn_rate) + HAZARD_OFFSET
         + w["recency"] * math.log1p(max(recency_days, 0.0) / 30.0)
         + w["failed_payments"] * (failed_now + 0.5 * failed_prev)
         + w["promo_share"] * (promo_share - 0.4)
         + w["shipment_fee"] * (fee_mean / 10_000.0 - 0.5)
         + w["visit_drop"] * max(visit_drop, 0.0)
         + w["abandoned_sessions"] * abandoned
         + w["engagement"] * engagement + w["frailty"] * frailty)
    return _sigmoid(z)


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
    promo_dep: float = 0.38   # chance that a booking round applies a promo code
    fail_p: float = 0.05      # chance that a booking's payment fails
    fee_high: float = 0.35    # chance of the 10 000 IDR shipment fee (0.35 more of 5 000)
    abandon_p: float = 0.12   # chance that a session leaves a cart behind


class _Booked:
    """What a session's bookings were: for the buyer's churn state."""

    __slots__ = ("last_us", "success", "failed", "promo", "fees", "n")

    def __init__(self):
        self.last_us, self.success, self.failed, self.promo, self.fees, self.n = 0, 0, 0, 0, 0, 0


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
                      clicks: list, transactions: list, counts: dict,
                      lines: dict) -> _Booked:
    """Append one session's click rows (and its transactions) to the output lists;
    count the successful booking lines per (gender, week) in ``lines`` (for the true
    demand) and return what was booked."""
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
    week = week_index(world, (t0 - world.start_us) / US_PER_DAY)
    cdf_buy = world.cdf[(shopper.gender, "buy")][week]
    cdf_ab = world.cdf[(shopper.gender, "abandon")][week]
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
        if rand() < shopper.promo_dep:
            promo_code = PROMO_CODES[int(rand() * len(PROMO_CODES))]
            promo_amount = rng.randint(1_000, max(1_000, min(25_000, subtotal // 5)))
            names += ("PROMO_PAGE", "ADD_PROMO")
            metas += ("", f"{{'promo_code': '{promo_code}', 'promo_amount': {promo_amount}}}")
        status = "Failed" if rand() < shopper.fail_p else "Success"
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
    booked = _Booked()
    for idx, cart, subtotal, code, amount, status in bookings:
        created = min(times[idx] + rng.randint(100_000, 3_000_000), world.end_us - 1)
        u = rand()
        fee = 10_000 if u < shopper.fee_high else (5_000 if u < shopper.fee_high + 0.35 else 0)
        booked.last_us = created
        booked.n += 1
        booked.promo += bool(code)
        booked.fees += fee
        if status == "Success":
            booked.success += 1
            key = (shopper.gender, week)
            lines[key] = lines.get(key, 0) + len(cart)
        else:
            booked.failed += 1
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
    return booked


def simulate_customer(cid: int, world: World, clicks: list, transactions: list,
                      counts: dict, lines: dict, months_out: list) -> tuple[tuple, tuple]:
    """Simulate one customer's whole life in the data window.

    Appends click rows and transaction rows to the given lists, this customer's
    ground-truth month rows to ``months_out`` and returns the customer.csv row and the
    ground-truth customer row."""
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
        promo_dep=_sigmoid(_logit(k.promo_share) + 1.3 * rng.gauss(0.0, 1.0)),
        fail_p=min(0.5, k.failure_rate * math.exp(rng.gauss(-0.5, 1.0))),
        fee_high=0.05 + 0.6 * _sigmoid(1.5 * rng.gauss(0.0, 1.0)),
        abandon_p=_sigmoid(-2.0 + 0.8 * rng.gauss(0.0, 1.0)),
    )
    is_buyer = rng.random() < k.buyer_share
    base = decay = 0.0
    hazards: list = []
    churn_date = ""
    if is_buyer:
        relative_rate = math.exp(0.5 * rng.gauss(0.0, 1.0) + 0.2 * engagement)
        base = k.sessions_per_month * relative_rate
        decay = rng.uniform(0.0, 0.6)
        frailty = rng.gauss(0.0, FRAILTY_SD)
        churn_day = _buyer_life(rng, world, shopper, act, base, decay, engagement, frailty,
                                clicks, transactions, counts, lines, months_out, hazards)
        if churn_day is not None:
            churn_date = _date_str(start, churn_day)
    else:
        t = act
        lam = k.browse_sessions_per_month / 30.0
        while lam > 0:
            t += rng.expovariate(lam)
            if t >= days:
                break
            _simulate_session(rng, world, shopper, _session_time(rng, world, t), 0, True, 1.0,
                              clicks, transactions, counts, lines)

    customer_row = (cid, first, last, username, email, gender, birthdate, device_type,
                    device_id, device_version, home_lat, home_lon, province, "Indonesia",
                    _date_str(start, join))
    mean_hazard = sum(hazards) / len(hazards) if hazards else 0.0
    truth_row = (cid, int(is_buyer), round(engagement, 4), round(base, 4), round(decay, 4),
                 round(mean_hazard, 6), _date_str(start, act), churn_date,
                 round(shopper.promo_dep, 4), round(shopper.fail_p, 4),
                 round(shopper.fee_high, 4), round(shopper.abandon_p, 4))
    return customer_row, truth_row


def _buyer_life(rng: random.Random, world: World, shopper: _Shopper, act: float,
                base: float, decay: float, engagement: float, frailty: float,
                clicks: list, transactions: list, counts: dict, lines: dict,
                months_out: list, hazards: list):
    """A buyer's months from ``act`` on; returns the churn day offset (the last day it
    may book) or None while it is still active at the end of the window."""
    k = world.knobs
    days = world.days
    log_v = rng.gauss(0.0, math.sqrt(VISIT_VAR))
    history: list = []                # log visit multiplier of past months
    n_book = n_promo = 0
    fees: list = []                   # (day offset, fee) of every booking
    last_success = None               # day offset
    last_booking = -math.inf
    failed_prev = 0
    cid = shopper.cid

    def rate(day: float, lv: float) -> float:
        """Sessions per day at ``day`` with log visit multiplier ``lv``."""
        return base / 30.0 * math.exp(-decay * max(day - act, 0.0) / 365.0 + lv - VISIT_VAR / 2)

    def hazard_at(end: float, lv: float, lv_2: float, failed_now: float, failed_before: float,
                  abandoned: float, fee_mean: float, promo_share: float) -> float:
        recency = end - (last_success if last_success is not None else act)
        return monthly_hazard(k.churn_rate, recency, failed_now, failed_before, promo_share,
                              fee_mean, lv_2 - lv, abandoned, engagement, frailty)

    for m_i, (lo, hi, month_iso) in enumerate(world.months):
        if hi <= act:
            continue
        t = max(lo, act)
        stop = min(hi, days)
        lam = rate(t, log_v)
        failed_now = abandoned = 0
        intensity = min(1.25, 0.55 + 0.45 * math.exp(log_v))
        while lam > 0:
            t += rng.expovariate(lam)
            if t >= stop:
                break
            t0 = _session_time(rng, world, t)
            if rng.random() < shopper.abandon_p:
                abandoned += 1
                _simulate_session(rng, world, shopper, t0, 0, True, intensity,
                                  clicks, transactions, counts, lines)
                continue
            u = rng.random()
            rounds = 1 if u < 0.86 else (2 if u < 0.97 else 3)
            tail = rng.random() < shopper.abandon_p
            abandoned += tail
            b = _simulate_session(rng, world, shopper, t0, rounds, tail, intensity,
                                  clicks, transactions, counts, lines)
            n_book += b.n
            n_promo += b.promo
            failed_now += b.failed
            if b.n:
                day = (b.last_us - world.start_us) / US_PER_DAY
                last_booking = max(last_booking, day)
                fees.append((day, b.fees / b.n))
                if b.success:
                    last_success = day
        if hi > days:            # the window ends inside this month: no month end
            break
        lv_2 = history[-2] if len(history) >= 2 else (history[0] if history else log_v)
        recent_fees = [f for d, f in fees if d >= hi - 92]
        fee_mean = sum(recent_fees) / len(recent_fees) if recent_fees else 5_000.0
        promo_share = (n_promo + 0.8) / (n_book + 2.0)
        h = hazard_at(hi, log_v, lv_2, failed_now, failed_prev, abandoned, fee_mean,
                      promo_share)
        p3 = _p_no_purchase(world, m_i, h, log_v, history, failed_now, rate, hazard_at,
                            fee_mean, promo_share, shopper)
        hazards.append(h)
        months_out.append((cid, month_iso, 1, round(h, 6), round(p3, 6)))
        history.append(log_v)
        failed_prev = failed_now
        if rng.random() < h:                       # churns at this month end
            for mi2 in range(m_i + 1, len(world.months)):
                if world.months[mi2][1] <= days:
                    months_out.append((cid, world.months[mi2][2], 0, 1.0, 1.0))
            goodbye = []
            if rng.random() < 0.3:
                goodbye = sorted(hi + rng.uniform(5.0, 120.0)
                                 for _ in range(1 + _poisson(rng, 0.7)))
            for day in goodbye:
                if day < days:
                    _simulate_session(rng, world, shopper, _session_time(rng, world, day), 0,
                                      True, 0.6, clicks, transactions, counts, lines)
            # a session begun before the month end may book a little after it
            return max(hi - 1.0, last_booking)
        log_v = VISIT_PHI * log_v + rng.gauss(0.0, VISIT_SD)
    return None


def _p_no_purchase(world: World, m_i: int, h0: float, log_v: float, history: list,
                   failed_now: int, rate, hazard_at, fee_mean: float, promo_share: float,
                   shopper: _Shopper) -> float:
    """P(no successful purchase in the HORIZON_MONTHS months after month ``m_i`` | the
    state at its end) — the oracle's score. Exact in the churn draws; the months ahead
    use the expected visit multiplier (its noise integrated in the mean rate) and the
    expected failed payments on the no-purchase path."""
    p_alive_no_buy = 1.0        # P(still active and no successful purchase so far)
    p_buy = 0.0
    h = h0
    failed_before, failed = failed_now, float(failed_now)
    end = world.months[m_i][1]
    ok_share = (1.0 - shopper.abandon_p) * (1.0 - shopper.fail_p)
    var = 0.0
    for j in range(1, HORIZON_MONTHS + 1):
        p_alive_no_buy *= (1.0 - h)
        if m_i + j < len(world.months):
            lo, hi, _ = world.months[m_i + j]
        else:                    # beyond the window's calendar: a 30-day month
            lo, hi = end, end + 30
        mean_lv = VISIT_PHI ** j * log_v
        var = VISIT_PHI ** 2 * var + VISIT_SD ** 2
        sessions = rate((lo + hi) / 2, mean_lv + var / 2) * (hi - lo)
        mu = sessions * ok_share
        p_buy += p_alive_no_buy * (1.0 - math.exp(-mu))
        p_alive_no_buy *= math.exp(-mu)
        if j < HORIZON_MONTHS:
            failed_before, failed = failed, sessions * (1.0 - shopper.abandon_p) * shopper.fail_p
            lv_2 = (history[-1] if history else log_v) if j == 1 else VISIT_PHI ** (j - 2) * log_v
            h = hazard_at(hi, mean_lv, lv_2, failed, failed_before,
                          sessions * shopper.abandon_p, fee_mean, promo_share)
        end = hi
    return 1.0 - p_buy
