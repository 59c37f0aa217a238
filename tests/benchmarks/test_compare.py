"""``python -m benchmarks compare`` on a tiny workload: the results file is complete and honest.

Every system is asked for; those whose servers or Python clients are not
installed here (CI installs neither) must be reported missing, the others
measured with their checks passed. The figures themselves are worthless at
this size and are never asserted on (benchmarks are not timed tests).
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

RunBenchmarks = Callable[..., subprocess.CompletedProcess[str]]

PEERS = {
    "postgres": ["postgres"],
    "redis": ["redis-always", "redis-everysec"],
    "nats": ["nats"],
}
HEADLINE_FIGURES = [
    "ingest_single_1",
    "ingest_single_16",
    "ingest_batch_100",
    "timeline_1",
    "timeline_4",
    "scan_p50",
    "replay",
    "live_p50",
    "live_p99",
    "disk",
]
CEILING_FIGURES = ["ingest_single_1", "ingest_single_16", "ingest_batch_100", "timeline_1", "timeline_4"]


class Results:
    def __init__(self, out: Path, stdout: str, stderr: str) -> None:
        [self.md_path] = out.glob("*-tiny.md")
        [json_path] = out.glob("*-tiny.json")
        self.md = self.md_path.read_text(encoding="utf-8")
        self.data: dict[str, Any] = json.loads(json_path.read_text(encoding="utf-8"))
        self.pngs = list(out.glob("*-tiny.png"))
        self.stdout, self.stderr = stdout, stderr

    def rows(self, system_label: str) -> list[list[str]]:
        rows = []
        for line in self.md.splitlines():
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            if len(cells) == 7 and cells[1] == system_label:
                rows.append(cells)
        return rows

    def peer_status(self, name: str) -> str:
        status: str = self.data["systems"][name]["status"]
        return status


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory, benchmarks_command: RunBenchmarks) -> Results:
    out = tmp_path_factory.mktemp("results")
    done = benchmarks_command(["compare", "--tiny", "--runs", "3", "--out", str(out)])
    assert done.returncode == 0, done.stderr[-3000:]
    return Results(out, done.stdout, done.stderr)


def test_every_leadtrail_figure_is_measured_checked_and_valid(results: Results) -> None:
    figures = results.data["figures"]
    for key in HEADLINE_FIGURES:
        measured = figures[key]["systems"]["leadtrail"]
        assert measured["valid"], (key, measured["invalid"])
        assert len(measured["runs"]) == 3
        assert measured["min"] <= measured["median"] <= measured["max"]
    checks = results.data["systems"]["leadtrail"]["checks"]
    assert set(checks) >= {"ingest_batch_100", "timeline_1", "timeline_4", "scan", "replay", "live"}
    assert all(problems == [] for problems in checks.values()), checks
    assert re.search(r"^- LeadTrail \(.*\): all passed", results.md, re.MULTILINE)


def test_the_table_has_one_row_per_figure_and_system_with_its_ratio(results: Results) -> None:
    assert "| workload | system | setting | median | min\u2013max | runs | LeadTrail/peer |" in results.md
    leadtrail = results.rows("LeadTrail")
    assert len(leadtrail) == len(results.data["figures"])
    for workload, _, setting, median, spread, runs, ratio in leadtrail:
        assert setting.startswith("fsync")
        assert re.match(r"[\d,.]+ ", median), (workload, median)
        assert "\u2013" in spread and runs == "3" and ratio == "1 (reference)"
    ceiling = results.rows("gRPC ceiling")
    assert len(ceiling) >= len(CEILING_FIGURES)
    for row in ceiling:
        assert re.fullmatch(r"\d+\.\d\d", row[6]), row


def test_peers_are_measured_with_their_checks_passed_or_reported_missing(results: Results) -> None:
    for key, names in PEERS.items():
        for name in names:
            system = results.data["systems"][name]
            rows = results.rows(system["label"])
            assert rows, f"{name} is absent from the table"
            if system["status"] == "missing":
                assert system["missing"], name
                assert all(row[3] == "missing" for row in rows), rows
                assert f"{system['label']} ({system['setting']}): **missing**" in results.md
            else:
                assert system["status"] == "measured", (key, system)
                assert all(problems == [] for problems in system["checks"].values()), system["checks"]
                assert all(re.fullmatch(r"\d+\.\d\d", row[6]) for row in rows), rows


def test_the_results_state_what_a_reader_needs_to_weigh_them(results: Results) -> None:
    assert "NATS JetStream does not fsync per message by default" in results.md
    assert re.search(r"Machine: \d+ cores, [\d.]+ GiB memory", results.md)
    assert results.data["machine"]["cores"] >= 1
    assert "## Targets" in results.md
    assert len(results.data["targets"]) == 7  # the six, timelines from 1 and from 4 clients


def test_the_chart_is_drawn_or_its_absence_explained(results: Results) -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "Chart: skipped, matplotlib is not installed" in results.md
        assert results.pngs == []
        return
    measured_peers = [n for names in PEERS.values() for n in names if results.peer_status(n) == "measured"]
    assert results.pngs or not measured_peers
    if results.pngs:
        assert results.pngs[0].read_bytes().startswith(b"\x89PNG")


def test_fewer_than_three_runs_is_a_usage_error(benchmarks_command: RunBenchmarks) -> None:
    done = benchmarks_command(["compare", "--tiny", "--runs", "2"], timeout_s=60)
    assert done.returncode == 2
    assert "at least 3" in done.stderr


def test_an_unknown_system_is_a_usage_error(benchmarks_command: RunBenchmarks) -> None:
    done = benchmarks_command(["compare", "--only", "leadtrail,mongodb"], timeout_s=60)
    assert done.returncode == 2
    assert "mongodb" in done.stderr


def test_an_unknown_figure_is_a_usage_error(benchmarks_command: RunBenchmarks) -> None:
    done = benchmarks_command(["compare", "--figures", "replay,throughput"], timeout_s=60)
    assert done.returncode == 2
    assert "throughput" in done.stderr and "replay" not in done.stderr.split("known:")[0]


def test_figures_default_to_every_figure_and_take_a_list() -> None:
    from benchmarks.compare import parse_args
    from benchmarks.systems import EVERYTHING

    assert parse_args([]).figures == EVERYTHING
    assert parse_args(["--figures", "replay, scan"]).figures == frozenset({"replay", "scan"})
