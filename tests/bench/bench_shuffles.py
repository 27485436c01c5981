"""Elements per input event that cross a shuffle (GroupByKey or keyed state) in the live
graph, counted by the runner on a run of the built graph (transforms.shuffle_count).

"before" is the graph this replaced, counted from its structure: one element per event
into Sessionize, then each product contribution copied into 12 (1h/5 min) + 24 (24h/1 h)
sliding windows + 1 all-time window, each a CombineGlobally (a shuffle)."""
from __future__ import annotations

from tests.bench.common import count_lines, dataset


def run(sizes=(30_000,)) -> list:
    import apache_beam as beam

    from pipelines import streaming, streaming_job
    from pipelines.streaming_options import ShopstreamStreamingOptions
    from transforms.shuffle_count import shuffled_elements

    rows = []
    for size in sizes:
        data = dataset(size)
        parser = streaming.argparse.ArgumentParser()
        ShopstreamStreamingOptions._add_argparse_args(parser)
        args = parser.parse_args(["--input", str(data)])
        opts = streaming._pipeline_options(args, ["--streaming"], streaming=False)
        p = beam.Pipeline(options=opts)
        streaming_job.build_pipeline(p, opts.view_as(ShopstreamStreamingOptions))
        proto = p.to_runner_api()
        result = p.run()
        result.wait_until_finish()
        counts = shuffled_elements(result, proto)
        clicks = count_lines(data / "click_stream.csv")
        orders = count_lines(data / "transactions.csv")
        events = clicks + orders
        with_product = counts["Rankings/ShardState"]  # upper bound of contributions' batches
        before = (clicks + 37 * _product_contributions(data)) / events
        rows.append({"bench": "shuffle_elements", "events": events,
                     **{f"in:{k.split('/')[0]}/{k.split('/')[1]}": v for k, v in counts.items()},
                     "per_event_after": sum(counts.values()) / events,
                     "per_event_before": before, "shard_elements": with_product})
    return rows


def _product_contributions(data) -> int:
    """Contributions of the old graph: enriched events with a product + booking lines."""
    import duckdb

    from tests.reference_sql import ENRICH_SQL

    con = duckdb.connect()
    con.execute("SET TimeZone='UTC'")
    n = con.execute("SELECT count(*) FROM (" + ENRICH_SQL.format(
        clicks=str(data / "click_stream.csv"), gap_us=1800 * 1_000_000, lookback=3)
        + ") WHERE coalesce(own_pid, inferred_pid) IS NOT NULL").fetchone()[0]
    lines = con.execute(
        "SELECT count(*) FROM (SELECT unnest(regexp_extract_all(product_metadata, '\\{[^}]*\\}')) "
        f"FROM read_csv('{data / 'transactions.csv'}', header=true, all_varchar=true) "
        "WHERE payment_status = 'Success')").fetchone()[0]
    return n + lines
