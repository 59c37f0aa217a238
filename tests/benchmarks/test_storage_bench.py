"""``python benchmarks/storage_bench.py``, run as its users run it, at its tiny scale.

The figures of a tiny run mean nothing; what is checked is that every
measurement still runs against the engine of this checkout and reports each
figure as a median of its runs, with the issue's targets judged.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIGURES = (
    "append_1t", "append_4t", "append_relaxed", "timeline_rate", "timeline_p50", "timeline_p99",
    "disk_per_event", "log_per_event", "index_per_event", "dict_per_event", "raw_per_event",
    "raw_to_disk", "raw_to_log", "erase_s", "erase_copy_s", "erase_again_ms", "fdatasync",
    "floor", "floor_us", "zstd_plain_us", "zstd_dict_us", "zstd_dict_bytes",
)  # fmt: skip


def test_every_measurement_runs_and_reports_a_median_of_its_runs(tmp_path: Path) -> None:
    out = tmp_path / "storage.json"
    result = subprocess.run(
        [sys.executable, "benchmarks/storage_bench.py", "--tiny", "--data", str(tmp_path / "scratch"),
         "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    payload = json.loads(out.read_text())
    assert payload["mode"] == "tiny"
    assert payload["scale"]["append_events"] == 1_000
    figures = payload["figures"]
    for key in FIGURES:
        runs = figures[key]["runs"]
        assert len(runs) == 3, key
        # No dictionary is trained below 2,000 events: the one figure that may be zero.
        assert all(value > 0 or key == "dict_per_event" for value in runs), (key, runs)
        assert min(runs) <= figures[key]["median"] <= max(runs), key
    # The space figures add up: the whole is log + indexes + dictionaries.
    parts = sum(figures[k]["median"] for k in ("log_per_event", "index_per_event", "dict_per_event"))
    assert abs(parts - figures["disk_per_event"]["median"]) <= 0.02 * figures["disk_per_event"]["median"]
    targets = payload["targets"]
    assert [t["target"][:6] for t in targets] == [">= 50,", ">= 50,", "timeli", "<= 300"]
    assert all(isinstance(t["pass"], bool) for t in targets)
    assert "targets (from the issue)" in result.stdout
    assert "a small store: the target is for 200,000" in result.stdout
    assert not list((tmp_path / "scratch").glob("leadtrail-bench-*")), "scratch stores left behind"
