"""The built streaming graph (what `stream` and `replay --streaming` run): its shuffles,
their stable labels, and at most 3 elements crossing shuffles per input event (the
windowed graph it replaced copied each contribution into 37 windows)."""
from __future__ import annotations

import apache_beam as beam
import pytest

from pipelines import streaming, streaming_job
from pipelines.streaming_options import ShopstreamStreamingOptions
from transforms.shuffle_count import shuffle_inputs, shuffled_elements

SHUFFLES = {"Sessionize/SessionState/ParDo(SessionizeFn)", "DedupOrders/BookingState",
            "Rankings/ShardState", "Rankings/MergeShards"}


def _build(data, extra=()):
    parser = streaming.argparse.ArgumentParser()
    ShopstreamStreamingOptions._add_argparse_args(parser)
    args = parser.parse_args(["--input", str(data)])
    opts = streaming._pipeline_options(args, ["--streaming", *extra], streaming=False)
    p = beam.Pipeline(options=opts)
    built = streaming_job.build_pipeline(p, opts.view_as(ShopstreamStreamingOptions))
    return p, built


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from pipelines.generate import generate

    out = tmp_path_factory.mktemp("tiny")
    generate(out_dir=str(out), customers=60, products=40, days=20, seed=5)
    return out


def _lines(path):
    with open(path) as f:
        return sum(1 for _ in f) - 1


def test_the_live_graph_has_exactly_its_keyed_steps(tiny):
    p, built = _build(tiny)
    assert built["mode"] == "stateful"
    assert set(shuffle_inputs(p.to_runner_api())) == SHUFFLES


def test_at_most_three_elements_per_input_event_cross_a_shuffle(tiny):
    p, _ = _build(tiny)
    proto = p.to_runner_api()
    result = p.run()
    result.wait_until_finish()
    counts = shuffled_elements(result, proto)
    events = _lines(tiny / "click_stream.csv") + _lines(tiny / "transactions.csv")
    # at most one element per click: a bundle's events of one session cross as one
    assert 0 < counts["Sessionize/SessionState/ParDo(SessionizeFn)"] <= _lines(
        tiny / "click_stream.csv")
    assert counts["DedupOrders/BookingState"] == _lines(tiny / "transactions.csv")
    assert 0 < counts["Rankings/ShardState"] <= events
    per_event = sum(counts.values()) / events
    assert per_event <= 3, counts
