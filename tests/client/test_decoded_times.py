"""Times read from an answer equal ``from_timestamp``'s to the millisecond, on both sides of the
range where the SDK takes its faster path."""

from __future__ import annotations

import random

from google.protobuf import timestamp_pb2
from leadtrail.client._convert import EXACT_FLOAT_MS, event_from_proto
from leadtrail.client.wire import from_timestamp
from leadtrail.v1 import event_pb2


def test_event_times_equal_from_timestamp_everywhere() -> None:
    rng = random.Random(14)
    edges = [
        0,
        1,
        999,
        1_000,
        1_764_000_000_123,
        EXACT_FLOAT_MS - 1,
        EXACT_FLOAT_MS,
        -1,
        -62_135_596_800_000,
    ]
    cases = edges + [rng.randrange(0, EXACT_FLOAT_MS) for _ in range(20_000)]
    cases += [rng.randrange(-62_135_596_800_000, 253_402_300_799_999) for _ in range(2_000)]
    for ms in cases:
        seconds, rest = divmod(ms, 1000)
        stamp = timestamp_pb2.Timestamp(seconds=seconds, nanos=rest * 1_000_000 + 999)
        message = event_pb2.Event(type="t", lead_id="l", flow_id="f")
        message.timestamp.CopyFrom(stamp)
        message.recorded_at.CopyFrom(stamp)
        event = event_from_proto(message)
        assert event.timestamp == event.recorded_at == from_timestamp(stamp), ms
        assert event.timestamp is not None and event.timestamp.utcoffset() is not None


def test_an_unset_time_reads_as_none() -> None:
    message = event_pb2.Event(type="t", lead_id="l", flow_id="f")
    message.timestamp.seconds = 5
    event = event_from_proto(message)
    assert event.recorded_at is None
    assert event.timestamp is not None and event.timestamp.timestamp() == 5
