"""What a new user met on the wire: outcome spelling in exports, a re-sent id with other
content, per-account counts in stats, and storage errors with the status they name."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import grpc
import pytest
from leadtrail.v1 import admin_pb2, event_pb2, query_pb2, submission_pb2

Stubs = Any  # conftest.Stubs


def append(stubs: Stubs, *events: event_pb2.Event) -> list[submission_pb2.AppendResult]:
    return list(stubs.submission.Append(submission_pb2.AppendRequest(events=events), timeout=30).results)


def export(stubs: Stubs, **kwargs: Any) -> str:
    chunks = stubs.query.Export(query_pb2.ExportRequest(**kwargs), timeout=60)
    return b"".join(c.data for c in chunks).decode()


def test_exports_spell_outcomes_by_their_short_names(stubs: Stubs, make_event: Any) -> None:
    append(
        stubs,
        make_event("lead-spelling", flow_id="flow-spelling", outcome=event_pb2.OUTCOME_SUCCESS),
        make_event("lead-spelling", flow_id="flow-spelling", outcome=event_pb2.OUTCOME_FAILURE),
        make_event("lead-spelling", flow_id="flow-spelling"),
    )
    f = event_pb2.EventFilter(flow_id="flow-spelling")
    lines = export(stubs, filter=f, format=query_pb2.EXPORT_FORMAT_JSONL).splitlines()
    assert sorted(json.loads(line)["outcome"] for line in lines) == ["FAILURE", "SUCCESS", "UNSPECIFIED"]
    rows = list(csv.DictReader(io.StringIO(export(stubs, filter=f, format=query_pb2.EXPORT_FORMAT_CSV))))
    assert sorted(row["outcome"] for row in rows) == ["FAILURE", "SUCCESS", "UNSPECIFIED"]
    # The wire's Aggregate keys stay the enum's names (API.md fixes them).
    grouped = stubs.query.Aggregate(
        query_pb2.AggregateRequest(filter=f, group_by=[query_pb2.GROUP_BY_OUTCOME]), timeout=30
    ).rows
    assert sorted(tuple(r.keys) for r in grouped)[0] == ("OUTCOME_FAILURE",)


def test_a_resent_id_with_other_content_is_a_conflicting_duplicate(stubs: Stubs, make_event: Any) -> None:
    first = make_event("lead-conflict", id="evt_01JD0000000000000000C0NF1C", timestamp_ms=1_735_000_000_000)
    [stored] = append(stubs, first)
    assert not stored.duplicate and not stored.conflict
    [same] = append(stubs, first)
    assert same.duplicate and not same.conflict
    other = event_pb2.Event()
    other.CopyFrom(first)
    other.type = "recipient.delivered"
    [changed] = append(stubs, other)
    assert changed.duplicate and changed.conflict and changed.position == stored.position
    kept = stubs.query.GetEvent(query_pb2.GetEventRequest(id="evt_01JD0000000000000000C0NF1C"), timeout=30)
    assert kept.type == "source.submitted"  # the first one is kept


def test_stats_count_events_per_account(stubs: Stubs, make_event: Any) -> None:
    append(stubs, make_event("lead-stats"))
    stats = stubs.admin.GetStats(admin_pb2.GetStatsRequest(), timeout=30)
    assert dict(stats.account_events) == {"default": stats.event_count}


def test_a_legal_hold_and_control_characters_are_answered_with_their_status(
    stubs: Stubs, make_event: Any
) -> None:
    append(stubs, make_event("lead-held", flow_id="flow-held"))
    stubs.admin.SetRetentionPolicy(admin_pb2.RetentionPolicy(legal_hold=True), timeout=30)
    try:
        with pytest.raises(grpc.RpcError) as held:
            stubs.admin.EraseLead(admin_pb2.EraseLeadRequest(lead_id="lead-held"), timeout=30)
        assert held.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "legal hold" in held.value.details()
    finally:
        stubs.admin.SetRetentionPolicy(admin_pb2.RetentionPolicy(legal_hold=False), timeout=30)
    with pytest.raises(grpc.RpcError) as bad:
        append(stubs, make_event("lead\x00with\ncontrols"))
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "lead_id" in bad.value.details() and "control characters" in bad.value.details()
