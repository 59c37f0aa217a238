"""Events and requests survive the trip to protobuf and back with their Python types."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from google.protobuf import struct_pb2
from leadtrail.client import Event, GroupBy, Outcome
from leadtrail.client._convert import (
    event_from_proto,
    event_to_proto,
    from_struct,
    from_timestamp,
    from_value,
    to_struct,
    to_timestamp,
)
from leadtrail.client._requests import (
    aggregate_request,
    call_metadata,
    event_filter,
    export_request,
    query_request,
    resume_request,
    subscribe_request,
)
from leadtrail.v1 import event_pb2, query_pb2

WHEN = datetime(2025, 3, 4, 5, 6, 7, 123000, tzinfo=UTC)


def full_event() -> Event:
    return Event(
        type="recipient.delivered",
        lead_id="lead-1",
        flow_id="flow-9",
        id="evt_01JNMXW2YQ0000000000000000",
        timestamp=WHEN,
        entity_id="buyer-7",
        outcome=Outcome.FAILURE,
        reason="duplicate_lead",
        duration_ms=1234,
        integration="ping_post",
        response_code=409,
        price=Decimal("-3.50"),
        details={
            "rule_set": "default",
            "rules_evaluated": 12,
            "ratio": 0.25,
            "tags": ["a", None, True],
            "nested": {"deeper": {"x": None, "empty": {}, "none": []}},
        },
        lead={"email": "a@example.com", "email.valid": True, "appended.phone_check.carrier": None},
    )


def test_event_round_trips_through_protobuf_with_python_types() -> None:
    event = full_event()
    back = event_from_proto(event_to_proto(event))
    assert back == event
    assert isinstance(back.price, Decimal) and str(back.price) == "-3.50"
    assert back.timestamp == WHEN and back.timestamp.tzinfo is not None
    assert back.outcome is Outcome.FAILURE
    assert isinstance(back.details["rules_evaluated"], int)
    assert back.details["nested"]["deeper"] == {"x": None, "empty": {}, "none": []}
    assert back.lead["appended.phone_check.carrier"] is None


def test_wire_form_carries_money_as_a_plain_decimal_string() -> None:
    assert event_to_proto(Event("a.b", "l", "f", price=Decimal("25.00"))).price == "25.00"
    assert event_to_proto(Event("a.b", "l", "f", price=Decimal("1E+2"))).price == "100"
    assert event_to_proto(Event("a.b", "l", "f", price=Decimal("0.000001"))).price == "0.000001"
    assert event_to_proto(Event("a.b", "l", "f")).price == ""
    assert event_from_proto(event_pb2.Event(type="a.b", price="")).price is None


def test_price_accepts_decimal_strings_and_ints_but_never_floats() -> None:
    assert Event("a.b", "l", "f", price="19.99").price == Decimal("19.99")  # type: ignore[arg-type]
    assert Event("a.b", "l", "f", price=5).price == Decimal(5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="price"):
        Event("a.b", "l", "f", price=19.99)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="finite"):
        event_to_proto(Event("a.b", "l", "f", price=Decimal("NaN")))


def test_outcome_given_as_int_becomes_the_enum() -> None:
    assert Event("a.b", "l", "f", outcome=2).outcome is Outcome.FAILURE  # type: ignore[arg-type]


def test_unset_times_stay_none_and_output_fields_are_not_sent() -> None:
    event = Event("a.b", "l", "f", account_id="acme", position=7, recorded_at=WHEN)
    message = event_to_proto(event)
    assert not message.HasField("timestamp")
    assert not message.HasField("recorded_at") and message.position == 0 and message.account_id == ""
    back = event_from_proto(message)
    assert back.timestamp is None and back.recorded_at is None


def test_timestamps_keep_milliseconds_and_drop_finer_digits() -> None:
    precise = datetime(2025, 1, 1, 0, 0, 0, 999999, tzinfo=UTC)
    stamp = to_timestamp(precise)
    assert (stamp.seconds, stamp.nanos) == (1735689600, 999_000_000)
    assert from_timestamp(stamp) == datetime(2025, 1, 1, 0, 0, 0, 999000, tzinfo=UTC)


def test_timestamps_before_the_epoch_round_down_not_toward_zero() -> None:
    before = datetime(1969, 12, 31, 23, 59, 59, 999500, tzinfo=UTC)
    assert from_timestamp(to_timestamp(before)) == datetime(1969, 12, 31, 23, 59, 59, 999000, tzinfo=UTC)


def test_other_time_zones_are_converted_to_utc() -> None:
    local = datetime(2025, 6, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    back = from_timestamp(to_timestamp(local))
    assert back == local and back.utcoffset() == timedelta(0)


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        to_timestamp(datetime(2025, 1, 1))


def test_json_nulls_numbers_and_containers_survive_struct() -> None:
    value = {
        "null": None,
        "int": 3,
        "big": 2**60,
        "float": 2.5,
        "neg": -0.5,
        "bool": False,
        "s": "",
        "list": [1, [2, {"k": None}]],
        "tuple": (1, 2),
    }
    back = from_struct(to_struct(value))
    assert back["null"] is None and back["bool"] is False and back["s"] == ""
    assert back["int"] == 3 and isinstance(back["int"], int)
    assert isinstance(back["big"], float)  # beyond 2**53 a double is not an exact integer
    assert back["float"] == 2.5 and back["neg"] == -0.5
    assert back["list"] == [1, [2, {"k": None}]] and back["tuple"] == [1, 2]


def test_unset_value_reads_as_none() -> None:
    assert from_value(struct_pb2.Value()) is None


def test_values_that_are_not_json_are_refused_with_their_path() -> None:
    with pytest.raises(TypeError, match=r"details\.a\[1\]"):
        event_to_proto(Event("a.b", "l", "f", details={"a": [1, Decimal("2")]}))
    with pytest.raises(TypeError, match="key 1"):
        to_struct({1: "x"})  # type: ignore[dict-item]


def test_filter_takes_one_type_as_a_string_and_many_as_a_sequence() -> None:
    assert list(event_filter(types="recipient.*").types) == ["recipient.*"]
    assert list(event_filter(types=("a.b", "c.*")).types) == ["a.b", "c.*"]


def test_filter_carries_every_part() -> None:
    message = event_filter(
        lead_id="l",
        flow_id="f",
        entity_id="e",
        outcomes=(Outcome.SUCCESS, 3),
        start=WHEN,
        end=WHEN + timedelta(hours=1),
    )
    assert (message.lead_id, message.flow_id, message.entity_id) == ("l", "f", "e")
    assert list(message.outcomes) == [event_pb2.OUTCOME_SUCCESS, event_pb2.OUTCOME_ERROR]
    assert from_timestamp(message.start) == WHEN
    assert from_timestamp(message.end) == WHEN + timedelta(hours=1)
    assert not event_filter().HasField("start")
    assert list(event_filter(outcomes=Outcome.SKIP).outcomes) == [event_pb2.OUTCOME_SKIP]


def test_query_request_checks_page_size() -> None:
    request = query_request({"flow_id": "f"}, descending=True, include_lead=True, page_size=7, page_token="t")
    assert (request.filter.flow_id, request.page_size, request.page_token) == ("f", 7, "t")
    assert request.descending and request.include_lead
    for bad in (0, 1001):
        with pytest.raises(ValueError, match="page_size"):
            query_request({}, page_size=bad)


def test_export_request_names_format_and_fields() -> None:
    request = export_request({"types": "a.*"}, format="csv", fields=("id", "lead.email"))
    assert request.format == query_pb2.EXPORT_FORMAT_CSV and list(request.fields) == ["id", "lead.email"]
    assert export_request({}).format == query_pb2.EXPORT_FORMAT_JSONL
    with pytest.raises(ValueError, match="format"):
        export_request({}, format="xml")  # type: ignore[arg-type]


def test_group_by_accepts_names_and_enum_members() -> None:
    request = aggregate_request({}, ("type", "Outcome", GroupBy.FLOW, "entity", "hour", "day"))
    assert list(request.group_by) == [
        query_pb2.GROUP_BY_TYPE,
        query_pb2.GROUP_BY_OUTCOME,
        query_pb2.GROUP_BY_FLOW,
        query_pb2.GROUP_BY_ENTITY,
        query_pb2.GROUP_BY_HOUR,
        query_pb2.GROUP_BY_DAY,
    ]
    assert list(aggregate_request({}, "day").group_by) == [query_pb2.GROUP_BY_DAY]
    with pytest.raises(ValueError, match="week"):
        aggregate_request({}, ("week",))


def test_subscription_without_a_start_point_follows_new_events_only() -> None:
    assert subscribe_request({}).WhichOneof("start") == "from_end"
    assert subscribe_request({}, from_start=True).WhichOneof("start") == "from_start"
    after = subscribe_request({}, after_position=0)
    assert after.WhichOneof("start") == "after_position" and after.after_position == 0
    assert subscribe_request({}, from_recorded_at=WHEN).WhichOneof("start") == "from_recorded_at"


def test_subscription_refuses_two_start_points() -> None:
    with pytest.raises(ValueError, match="at most one"):
        subscribe_request({}, from_start=True, after_position=3)


def test_resume_request_keeps_the_filter_and_continues_after_the_position() -> None:
    first = subscribe_request({"types": "a.*", "lead_id": "l"}, from_recorded_at=WHEN)
    resumed = resume_request(first, 41)
    assert resumed.filter == first.filter
    assert resumed.WhichOneof("start") == "after_position" and resumed.after_position == 41


def test_api_key_travels_as_a_bearer_token() -> None:
    assert call_metadata("k-123") == (("authorization", "Bearer k-123"),)
    assert call_metadata(None) == ()


def test_snapshots_travel_as_json_and_keep_integers_exact() -> None:
    event = Event("source.submitted", "l", "f", lead={"score": 2**60, "ok": True, "tags": ["a"]})
    message = event_to_proto(event)
    assert not message.HasField("lead") and message.lead_json
    back = event_from_proto(message)
    assert back.lead == {"score": 2**60, "ok": True, "tags": ["a"]}
    assert isinstance(back.lead["score"], int)  # JSON keeps what a Struct's double would round


def test_a_read_answer_in_either_form_gives_the_same_event() -> None:
    as_struct = event_pb2.Event(type="a.b", lead_id="l", flow_id="f")
    as_struct.lead.update({"email": "a@example.com", "n": 3})
    as_json = event_pb2.Event(type="a.b", lead_id="l", flow_id="f")
    as_json.lead_json = b'{"email":"a@example.com","n":3}'
    assert event_from_proto(as_struct) == event_from_proto(as_json)


@pytest.mark.parametrize("number", [float("nan"), float("inf"), float("-inf")])
def test_numbers_json_cannot_carry_are_refused_with_their_path(number: float) -> None:
    with pytest.raises(ValueError, match=r"lead\.scores\[0\].*not a finite number"):
        event_to_proto(Event("a.b", "l", "f", lead={"scores": [number]}))
    with pytest.raises(ValueError, match=r"details\.ratio"):
        event_to_proto(Event("a.b", "l", "f", details={"ratio": number}))


def test_requests_that_read_events_ask_for_json_snapshots() -> None:
    assert query_request({}).json_snapshots
    assert subscribe_request({}, from_start=True).json_snapshots
    assert resume_request(subscribe_request({}, from_start=True), 5).json_snapshots
