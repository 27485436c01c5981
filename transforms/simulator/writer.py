"""Writing a data set: customers in chunks (optionally in worker processes), in customer order."""
from __future__ import annotations

import csv
import io
import json
import multiprocessing
import os
import sys
import time
from dataclasses import dataclass
from datetime import date
from types import MappingProxyType
from typing import Iterator

from transforms.records import CLICK_COLUMNS, CUSTOMER_COLUMNS, TRANSACTION_COLUMNS
from transforms.simulator.customers import MEAN_QUANTITY, simulate_customer
from transforms.simulator.world import Knobs, World, build_products, build_world, week_start, write_products

CHUNK_CUSTOMERS = 200
GT_PRODUCTS_HEADER = ("product_id", "latent_popularity", "base_price", "brand")
GT_CUSTOMERS_HEADER = ("customer_id", "is_buyer", "engagement", "base_sessions_per_month",
                       "rate_decay_per_year", "latent_hazard", "activity_start",
                       "churn_date", "promo_dependence", "payment_failure_rate",
                       "high_fee_share", "abandon_rate")
#: one row per buyer and complete calendar month from its activity start: alive at the
#: month end (1/0), the monthly churn hazard drawn at that month end, and
#: P(no successful purchase in the 3 months after | the state at the month end); after
#: the churn month: alive 0, hazard and probability 1
GT_CUSTOMER_MONTHS_HEADER = ("customer_id", "month", "alive", "hazard", "p_churn_3m")
#: one row per product and week (Monday): expected units sold in successful bookings,
#: given how many booking lines customers of each gender placed that week
GT_DEMAND_HEADER = ("product_id", "week_start", "expected_units")

@dataclass
class ChunkResult:
    """CSV text for a contiguous block of customers, plus counts for the summary."""

    clicks: str
    transactions: str
    customers: str
    ground_truth: str
    customer_months: str
    n_events: int
    n_transactions: int
    event_counts: dict
    lines: dict          # (customer gender, week) -> successful booking lines


def generate_chunk(world: World, first_cid: int, last_cid: int) -> ChunkResult:
    """Simulate customers first_cid..last_cid (inclusive) into CSV text blocks."""
    clicks: list = []
    transactions: list = []
    counts: dict = {}
    lines: dict = {}
    months: list = []
    bufs = [io.StringIO() for _ in range(5)]
    writers = [csv.writer(b, lineterminator="\n") for b in bufs]
    for cid in range(first_cid, last_cid + 1):
        customer_row, truth_row = simulate_customer(cid, world, clicks, transactions, counts,
                                                    lines, months)
        writers[2].writerow(customer_row)
        writers[3].writerow(truth_row)
    writers[0].writerows(clicks)
    writers[1].writerows(transactions)
    writers[4].writerows(months)
    return ChunkResult(bufs[0].getvalue(), bufs[1].getvalue(), bufs[2].getvalue(),
                       bufs[3].getvalue(), bufs[4].getvalue(), len(clicks), len(transactions),
                       counts, lines)


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
             "customer": "customer.csv", "ground_truth": "ground_truth/customers.csv",
             "customer_months": "ground_truth/customer_months.csv"}
    headers = {"click_stream": CLICK_COLUMNS, "transactions": TRANSACTION_COLUMNS,
               "customer": CUSTOMER_COLUMNS, "ground_truth": GT_CUSTOMERS_HEADER,
               "customer_months": GT_CUSTOMER_MONTHS_HEADER}
    files = {k: open(os.path.join(out_dir, p), "w", newline="", encoding="utf-8")
             for k, p in paths.items()}
    n_events = n_tx = 0
    counts: dict = {}
    lines: dict = {}
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
            files["customer_months"].write(result.customer_months)
            for key, n in result.lines.items():
                lines[key] = lines.get(key, 0) + n
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
    write_demand(os.path.join(out_dir, "ground_truth", "product_demand.csv"), world, lines)
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


def write_demand(path: str, world: World, lines: dict) -> None:
    """Each product's true demand per week: the expected units of the booking lines
    customers placed, under that week's product weights (GT_DEMAND_HEADER)."""
    n_weeks = len(world.cdf[("F", "buy")])
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(GT_DEMAND_HEADER)
        for week in range(n_weeks):
            demand = [0.0] * len(world.product_ids)
            for gender in ("F", "M"):
                n = lines.get((gender, week), 0)
                if not n:
                    continue
                cdf = world.cdf[(gender, "buy")][week]
                scale = n * MEAN_QUANTITY / cdf[-1]
                prev = 0.0
                for i, c in enumerate(cdf):
                    demand[i] += (c - prev) * scale
                    prev = c
            monday = week_start(world, week).isoformat()
            w.writerows((pid, monday, round(d, 4)) for pid, d in zip(world.product_ids, demand))


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


