"""The live source: Pub/Sub messages (with attributes) parsed into event-time records.

Every message leaves the parser, so the source acks it: an oversized message, a bad
payload, an unusable ``event_time`` attribute or an event more than ``--max-future``
ahead of the wall clock becomes a dead letter, never a poison message that stalls the
others (nor one that moves a watermark or ``shopstream:meta``).
"""
from __future__ import annotations

import logging
from typing import Optional

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import TimestampedValue

from transforms import records
from transforms.event_time import DEFAULT_MAX_FUTURE, future_reason, now_us, record_time_us
from transforms.sources import DEAD, event_time_us

log = logging.getLogger(__name__)


#: The Pub/Sub attribute carrying a message's event time (RFC 3339), set by `publish`.
EVENT_TIME_ATTRIBUTE = "event_time"
#: Bytes of an oversized message kept in its dead letter (the rest is only counted).
OVERSIZE_RAW_BYTES = 2000


def message_event_time_us(attributes, rec) -> int:
    """A message's event time: its ``event_time`` attribute (RFC 3339 or epoch millis),
    else the record's own time. Raises InvalidRecord for an unusable attribute."""
    value = (attributes or {}).get(EVENT_TIME_ATTRIBUTE)
    if value is None:
        return event_time_us(rec)
    text = str(value).strip()
    if text.isdigit():
        return int(text) * 1000
    return records.parse_time_us(text, f"{EVENT_TIME_ATTRIBUTE} attribute")


def parse_message(kind: str, data: bytes, attributes, max_bytes: int,
                  max_future: float = DEFAULT_MAX_FUTURE, wall_us: Optional[int] = None):
    """One Pub/Sub message → ``(record, event_time_us)`` or a DeadLetter (oversized
    payload, bad payload, unusable event_time attribute, event time — the attribute's or
    the record's — more than ``max_future`` s after ``wall_us``, default now)."""
    source = f"{kind}:pubsub"
    data = data or b""
    if len(data) > max_bytes:
        return records.dead_letter(
            source, data[:OVERSIZE_RAW_BYTES] + b"...",
            f"message of {len(data):,} bytes is larger than --max-message-bytes "
            f"{max_bytes:,} (first {OVERSIZE_RAW_BYTES} bytes kept)")
    rec = records.parse_or_dead(kind, data, "json")
    if isinstance(rec, records.DeadLetter):
        return rec._replace(source=source)
    try:
        t_us = message_event_time_us(attributes, rec)
    except records.InvalidRecord as exc:
        return records.dead_letter(source, data, str(exc))
    reason = future_reason(max(t_us, record_time_us(rec)),
                           now_us() if wall_us is None else wall_us, max_future)
    if reason is not None:
        return records.dead_letter(source, data, reason)
    return rec, t_us


class ParseMessages(beam.DoFn):
    """Pub/Sub messages (with attributes) → records timestamped at their event time;
    oversized, unparseable, badly stamped and far-future messages → ``dead``. Every
    message leaves this DoFn (and so is acked by the source): a poison message never
    stalls others."""

    def __init__(self, kind: str, max_bytes: int = 1_000_000,
                 max_future: float = DEFAULT_MAX_FUTURE):
        if float(max_future) < 0:
            raise ValueError(f"max_future must be >= 0 s, got {max_future!r}")
        self.kind, self.max_bytes, self.max_future = kind, int(max_bytes), float(max_future)
        self.read = Metrics.counter("shopstream", f"{kind}_read")
        self.valid = Metrics.counter("shopstream", f"{kind}_valid")
        self.dead = Metrics.counter("shopstream", f"{kind}_dead_lettered")
        self.future = Metrics.counter("shopstream", "future_dead_lettered")

    def process(self, message):
        self.read.inc()
        data = getattr(message, "data", message)
        attributes = getattr(message, "attributes", None)
        out = parse_message(self.kind, data, attributes, self.max_bytes, self.max_future)
        if isinstance(out, records.DeadLetter):
            self.dead.inc()
            if "--max-future" in out.reason:
                self.future.inc()
            yield beam.pvalue.TaggedOutput(DEAD, out)
            return
        rec, t_us = out
        self.valid.inc()
        yield TimestampedValue(rec, t_us / 1e6)


class ReadPubSubRecords(beam.PTransform):
    """Read JSON records from a Pub/Sub subscription, with attributes; the event time is
    parsed by :class:`ParseMessages`, not by the source, so a bad ``event_time``
    attribute, an event beyond ``max_future`` or an oversized message is one dead
    letter, never a stalled read.

    ``timestamp_attribute`` (Dataflow: ``"event_time"``) also lets the service set the
    watermark from the attribute; the DoFn stamps every record the same way anyway."""

    def __init__(self, subscription: str, kind: str, id_label: Optional[str] = None,
                 max_message_bytes: int = 1_000_000,
                 timestamp_attribute: Optional[str] = None,
                 max_future: float = DEFAULT_MAX_FUTURE):
        super().__init__()
        self.subscription, self.kind, self.id_label = subscription, kind, id_label
        self.max_message_bytes = max_message_bytes
        self.timestamp_attribute = timestamp_attribute
        self.max_future = max_future

    def expand(self, pbegin):
        kwargs = {"id_label": self.id_label} if self.id_label else {}
        if self.timestamp_attribute:
            kwargs["timestamp_attribute"] = self.timestamp_attribute
        allow_large_emulator_messages()
        out = (pbegin
               | "ReadPubSub" >> beam.io.ReadFromPubSub(
                   subscription=self.subscription, with_attributes=True, **kwargs)
               | "ParseMessages" >> beam.ParDo(ParseMessages(
                   self.kind, self.max_message_bytes, self.max_future)).with_outputs(
                       DEAD, main="records"))
        return {"records": out.records, "dead": out[DEAD]}


def allow_large_emulator_messages() -> None:
    """Against the Pub/Sub emulator (``PUBSUB_EMULATOR_HOST``) the client library opens
    its channel without the unlimited message-size options it uses for the real service,
    so a pull holding a message over 4 MB fails — every pull, until the message expires —
    and the DirectRunner's read stalls. Give the emulator clients the same limits as the
    real service (Pub/Sub itself caps messages at 10 MB). No effect without the emulator."""
    import os

    host = os.environ.get("PUBSUB_EMULATOR_HOST")
    if not host:
        return
    from google.cloud import pubsub, pubsub_v1

    base = pubsub_v1.SubscriberClient
    if getattr(pubsub.SubscriberClient, "_shopstream_large_messages", False):
        return

    class _EmulatorSubscriberClient(base):
        _shopstream_large_messages = True

        def __init__(self, **kwargs):
            emulator = os.environ.get("PUBSUB_EMULATOR_HOST")
            if emulator and "transport" not in kwargs:
                import grpc
                from google.pubsub_v1.services.subscriber.transports.grpc import SubscriberGrpcTransport

                channel = grpc.insecure_channel(emulator, options=[
                    ("grpc.max_send_message_length", -1),
                    ("grpc.max_receive_message_length", -1)])
                kwargs["transport"] = SubscriberGrpcTransport(channel=channel)
            super().__init__(**kwargs)

    pubsub.SubscriberClient = _EmulatorSubscriberClient
