"""The comparison's workload is the same everywhere and as realistic as the issue asks."""

from __future__ import annotations

import json
from types import ModuleType


def test_the_workload_is_deterministic(benchmarks_package: ModuleType) -> None:
    from benchmarks import workload

    first = workload.build(600, 100, 100, 50, 5)
    second = workload.build(600, 100, 100, 50, 5)
    assert first == second
    assert len({event["id"] for event in first.dataset + first.singles + first.live}) == (
        len(first.dataset) + len(first.singles) + len(first.live)
    )


def test_leads_have_5_to_8_events_with_snapshots_of_1_to_1_4_kb(benchmarks_package: ModuleType) -> None:
    from benchmarks import workload

    work = workload.build(2000, 10, 10, 10, 5)
    assert all(5 <= length <= 8 for length in work.timeline_lengths.values())
    assert sum(work.timeline_lengths.values()) == len(work.dataset)
    sizes = [len(json.dumps(event["lead"], separators=(",", ":"))) for event in work.dataset]
    assert min(sizes) >= 1000 and max(sizes) <= 1400
    assert len({event["flow_id"] for event in work.dataset}) == 20
    spread_ms = max(e["timestamp_ms"] for e in work.dataset) - min(e["timestamp_ms"] for e in work.dataset)
    assert spread_ms >= 20 * 3_600_000


def test_scan_answers_come_from_the_generator(benchmarks_package: ModuleType) -> None:
    from benchmarks import workload

    work = workload.build(1500, 10, 10, 10, 8)
    for scan in work.scans:
        assert scan.end_ms - scan.start_ms == workload.HOUR_MS
        found = [
            e
            for e in work.dataset
            if e["type"] == scan.event_type and scan.start_ms <= e["timestamp_ms"] < scan.end_ms
        ]
        assert len(found) == scan.expected
    # Single-event and live events never fall into a scan's window or a dataset lead.
    later = work.singles + work.live
    assert not {e["lead_id"] for e in later} & set(work.timeline_lengths)
    assert min(e["timestamp_ms"] for e in later) >= max(s.end_ms for s in work.scans)
