"""The soak, run for one minute as users run it: a real server under the mixed load, every answer
checked against what was acknowledged, and a verdict that says so.

The longer runs (10 minutes by hand, 30 before a release) are reported in benchmarks/results/.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
RunBenchmarks = Callable[..., subprocess.CompletedProcess[str]]

SOAK_TIMEOUT_S = 150.0
"""The run takes ~70 s (60 s of load, 2 s of warm-up, start and final checks); a hang fails the test."""


def test_a_one_minute_soak_is_clean(tmp_path: Path, benchmarks_command: RunBenchmarks) -> None:
    report = tmp_path / "soak.json"
    args = ["--minutes", "1", "--warmup", "2", "--seed", "19", "--json", str(report), "--data", str(tmp_path)]
    # At the deadline the soak gets SIGTERM and stops its server on the way out.
    done = benchmarks_command(args, SOAK_TIMEOUT_S, script="benchmarks/soak.py")
    stdout, stderr = done.stdout, done.stderr
    output = f"{stdout}\n{stderr}"
    assert report.exists(), output
    result = json.loads(report.read_text())
    verdict = result["verdict"]

    assert verdict["wrong_answers"] == 0, result["wrong"]
    assert verdict["unexpected_errors"] == 0, output
    assert verdict["checks"] == {
        "flat_memory": True,
        "no_fd_growth": True,
        "segment_fds_bounded": True,
        "no_deleted_files_held": True,
        "no_wrong_answers": True,
        "no_unexpected_errors": True,
        "server_stopped_cleanly": True,
        "retention_expired_events": True,
    }, output
    assert verdict["pass"] is True
    assert done.returncode == 0, output
    assert "verdict: PASS" in stdout

    # The load really ran, and every part of it was checked.
    [minute] = result["rows"]
    assert minute["appends_per_s"] > 0 and minute["reads_per_s"] > 0
    for kind in ("append_batch", "append_single", "get", "timeline", "query_page", "subscribe_session"):
        assert minute["calls"].get(kind, 0) > 0, (kind, minute["calls"])
    for kind in (
        "erase",
        "retention",
        "rotate_key",
        "revoke_key",
        "receipt",
        "export_job",
        "backup",
        "verify_chain",
    ):
        assert minute["calls"].get(kind, 0) > 0, (kind, minute["calls"])
    assert minute["rss_mib"] > 0 and minute["anon_mib"] > 0
    assert minute["fds_max"] > 0 and minute["segment_files_last"] > 0
    final = result["final"]
    assert final["acknowledged"] > 0
    assert final["erased_leads"] > 0
    assert final["chain_checked"] > 0
    assert final["sink_events_in_files"] > 0
    assert final["alerts"] >= 1
    # The shortlived account's age (20 s in a 1-minute run) passes during the run: events expire.
    assert final["retention_age_s"] == 20
    assert final["retention_removed"] > 0
    assert verdict["retention_removed"] == final["retention_removed"]
    assert minute["retention_removed"] > 0
    assert f"retention removed {final['retention_removed']:,} events older than 20 s" in stdout
