"""Orders counted once: DedupOrders on bounded input (grouped) and on a stream (keyed
state with a TTL), with redeliveries."""
from __future__ import annotations

import apache_beam as beam
from apache_beam.metrics import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from transforms.orders import METRICS_NAMESPACE, DedupOrders, first_copy
from transforms.records import BookingLine, Transaction

S = 1_000_000
T0 = 1_567_784_072_000_000


def _txn(booking, t, qty=1):
    return Transaction(t, 7, booking, "s", (BookingLine(5, qty, 100),), "OVO", "Success",
                       0, "", 0, None, None, None, 100)


def test_first_copy_does_not_depend_on_arrival_order():
    a, b = _txn("b", T0), _txn("b", T0 + S)
    assert first_copy([b, a]) == first_copy([a, b]) == a


def test_bounded_orders_are_counted_once():
    orders = [_txn("b1", T0)] * 3 + [_txn("b2", T0 + S)]
    p = TestPipeline(options=PipelineOptions(["--runner=DirectRunner"]))
    out = p | beam.Create(orders) | DedupOrders()
    assert_that(out, equal_to([_txn("b1", T0), _txn("b2", T0 + S)]))
    result = p.run()
    result.wait_until_finish()
    counters = {c.key.metric.name: c.committed for c in result.metrics().query(
        MetricsFilter().with_namespace(METRICS_NAMESPACE))["counters"]}
    assert counters["duplicate_orders"] == 2


def test_streamed_redeliveries_are_dropped_until_the_ttl():
    a = _txn("b1", T0)
    tv = TimestampedValue(a, Timestamp(micros=T0))
    ts = (TestStream().add_elements([tv, tv])
          .advance_watermark_to(Timestamp(micros=T0 + 10 * S)).add_elements([tv])
          .advance_watermark_to(Timestamp(micros=T0 + 200 * S))   # past the ttl: forgotten
          .add_elements([tv])
          .advance_watermark_to(Timestamp(micros=T0 + 400 * S))
          .advance_watermark_to_infinity())
    options = PipelineOptions(["--runner=DirectRunner"])
    options.view_as(StandardOptions).streaming = True
    with TestPipeline(options=options) as p:
        out = p | ts | DedupOrders(dedup_ttl=100, stateful=True)
        assert_that(out, equal_to([a, a]))
