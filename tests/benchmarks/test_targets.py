"""The issue's targets table says met or missed from the ratios of one run; the ceilings answer the
SDK's own calls; LeadTrail with workers is measured only where ``serve`` offers ``--workers``."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from leadtrail.client import AsyncClient, Event
from leadtrail.client._convert import timeline_from_proto
from leadtrail.v1 import query_pb2


@pytest.fixture(scope="module")
def modules(benchmarks_package: ModuleType) -> dict[str, Any]:
    import benchmarks.compare as compare
    import benchmarks.report as report
    import benchmarks.systems as systems
    import benchmarks.systems.leadtrail_service as leadtrail_service
    import benchmarks.systems.postgres as postgres
    import benchmarks.timeline_answer as timeline_answer
    import benchmarks.workload as workload

    return {
        "compare": compare,
        "report": report,
        "systems": systems,
        "leadtrail": leadtrail_service,
        "postgres": postgres,
        "timeline_answer": timeline_answer,
        "workload": workload,
    }


def measured(modules: dict[str, Any], figures: dict[str, dict[str, float]]) -> tuple[Any, Any]:
    """A run whose every figure was measured three times at the value given, per system name."""
    compare, report, service = modules["compare"], modules["report"], modules["leadtrail"]
    systems = {
        "leadtrail": service.LeadTrail(),
        "ceiling": service.GrpcCeiling(),
        "ceiling-timeline": service.GrpcCeiling(canned_timeline=True),
        "postgres": modules["postgres"].PostgreSQL(),
    }
    measurements = compare.Measurements()
    for name, system in systems.items():
        assert system.name == name
        measurements.outcomes[name] = compare.Outcome(system)
    for key, values in figures.items():
        for name, value in values.items():
            for _ in range(3):
                measurements.add(key, systems[name], value)
    run = report.Run("tiny", 3, {}, 1.0, None, measurements)
    return run, measurements


def verdicts(report: Any, run: Any) -> dict[str, tuple[str, str]]:
    return {target: (shown, verdict) for target, shown, verdict in report.speed_targets(run)}


FIGURES = {
    "ingest_batch_100": {"leadtrail": 12_000.0, "postgres": 10_000.0},
    "ingest_single_16": {"leadtrail": 1_000.0, "ceiling": 2_000.0, "postgres": 4_000.0},
    "timeline_1": {"leadtrail": 900.0, "ceiling": 1_000.0, "ceiling-timeline": 950.0, "postgres": 4_000.0},
    "timeline_1_p99": {"leadtrail": 3.0, "ceiling": 1.0, "ceiling-timeline": 2.0, "postgres": 0.5},
    "timeline_16": {"leadtrail": 700.0, "ceiling": 1_000.0, "ceiling-timeline": 800.0},
    "timeline_16_p99": {"leadtrail": 10.0, "ceiling": 6.0},
    "scan_p50": {"leadtrail": 10.0, "postgres": 20.0},
    "replay": {"leadtrail": 9_000.0, "postgres": 10_000.0},
    "live_rate": {"leadtrail": 995.0},
    "live_p99": {"leadtrail": 4.0, "postgres": 1.0},
    "disk": {"leadtrail": 300.0, "postgres": 2_000.0},
}


def test_each_target_is_met_or_missed_by_its_ratio_in_the_run(modules: dict[str, Any]) -> None:
    report = modules["report"]
    run, _ = measured(modules, FIGURES)
    rows = verdicts(report, run)
    assert rows["durable ingest, batches of 100: >= 1.0x PostgreSQL"][1] == "met"
    assert "LeadTrail/PostgreSQL = 1.20" in rows["durable ingest, batches of 100: >= 1.0x PostgreSQL"][0]
    assert rows["single-event Append + ack, 16 clients: >= 0.8x the empty-handler ceiling"] == (
        "LeadTrail/ceiling = 0.50",
        "missed",
    )
    assert rows["lead timelines, 1 client: >= 0.8x the empty-handler ceiling"][1] == "met"
    assert "canned timeline = 0.95" in rows["lead timelines, 1 client: >= 0.8x the empty-handler ceiling"][0]
    assert rows["lead timelines, 1 client: p99 <= 2x the ceiling's p99"][1] == "missed"  # 3.0
    assert rows["lead timelines, 16 in flight: >= 0.8x the empty-handler ceiling"][1] == "missed"  # 0.7
    assert rows["lead timelines, 16 in flight: p99 <= 2x the ceiling's p99"][1] == "met"  # 1.67
    assert rows["type + 1-hour window scan with snapshots: <= 1.0x PostgreSQL's time (p50)"][1] == "met"
    assert rows["replay in position order: >= 1.0x PostgreSQL"][1] == "missed"
    assert rows["live: 1,000 single-event appends/s sustained (>= 980/s acknowledged)"][1] == "met"
    assert rows["live: publish->receive p99 <= 5 ms at that rate"][1] == "met"
    assert rows["bytes on disk per event: <= 0.25x the best peer"] == ("LeadTrail/postgres = 0.15", "met")
    assert rows["--workers 2 against 1 worker (2 workers / 1; reported, no goal)"][1] == "report"
    assert len(rows) == 13


def test_a_target_whose_figure_failed_its_check_is_not_counted(modules: dict[str, Any]) -> None:
    report = modules["report"]
    run, measurements = measured(modules, FIGURES)
    measurements.outcomes["leadtrail"].check("timeline_16", "timeline of lead-1: 3 events, expected 7")
    measurements.outcomes["leadtrail"].check("live", "live: 4 of 1000 events never arrived")
    rows = verdicts(report, run)
    assert rows["lead timelines, 16 in flight: >= 0.8x the empty-handler ceiling"][1] == "n/a"
    assert rows["lead timelines, 16 in flight: p99 <= 2x the ceiling's p99"][1] == "n/a"
    assert rows["live: 1,000 single-event appends/s sustained, p99 <= 5 ms"][1] == "n/a"
    assert rows["lead timelines, 1 client: >= 0.8x the empty-handler ceiling"][1] == "met"


def test_a_live_rate_below_the_offered_one_misses_both_live_targets(modules: dict[str, Any]) -> None:
    report = modules["report"]
    run, _ = measured(modules, {**FIGURES, "live_rate": {"leadtrail": 540.0}, "live_p99": {"leadtrail": 1.0}})
    rows = verdicts(report, run)
    assert rows["live: 1,000 single-event appends/s sustained (>= 980/s acknowledged)"] == (
        "540 appends/s",
        "missed",
    )
    assert rows["live: publish->receive p99 <= 5 ms at that rate"][1] == "missed"


def test_the_ceilings_answer_the_sdk_client_itself(modules: dict[str, Any], tmp_path: Path) -> None:
    service, workload, answer = modules["leadtrail"], modules["workload"], modules["timeline_answer"]
    work = workload.build(dataset_events=300, single_events=0, live_events=0, timeline_reads=0, scans=0)
    canned = answer.canned_timeline(work.dataset)
    expected = timeline_from_proto(query_pb2.Timeline.FromString(canned))
    assert len(expected.steps) == answer.STEPS
    assert all(step.event.lead for step in expected.steps)
    assert expected.steps[0].changes and all(c.kind.name == "ADDED" for c in expected.steps[0].changes)

    async def scenario() -> None:
        empty, realistic = service.GrpcCeiling(), service.GrpcCeiling(canned_timeline=True)
        for system, folder in ((empty, "empty"), (realistic, "canned")):
            system.use(work)
            (tmp_path / folder).mkdir()
            await system.start(str(tmp_path / folder))
        try:
            async with AsyncClient(empty.address) as client:
                assert (await client.timeline("lead-1")).steps == []
                assert await client.append([Event("t", "lead-1", "flow-1")]) == []
            async with AsyncClient(realistic.address) as client:
                assert await client.timeline("any lead") == expected
                assert await client.timeline("another") == expected
        finally:
            await empty.stop()
            await realistic.stop()

    asyncio.run(scenario())


def test_workers_are_measured_only_where_serve_offers_the_option(modules: dict[str, Any]) -> None:
    service, systems = modules["leadtrail"], modules["systems"]
    usage = subprocess.run(
        [sys.executable, "-m", "leadtrail.server.cli", "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    workers = service.LeadTrailWorkers(2)
    assert workers.name == "leadtrail-2w" and workers.label == "LeadTrail, 2 workers"
    assert not workers.peer
    if "--workers" in usage:
        workers.check()
        workers.directory = "/data"
        argv = workers.serve_argv()
        assert argv[argv.index("--workers") + 1] == "2"
    else:
        with pytest.raises(systems.Unavailable, match="--workers"):
            workers.check()
