"""``python benchmarks/ingest_bench.py``, run as its users run it, at its tiny scale.

The figures of a tiny run mean nothing; what is checked is that both twins run, each
in the child the environment chose for it, and each figure is a median of its runs.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_both_twins_run_and_each_figure_is_a_median_of_its_runs(tmp_path: Path) -> None:
    built = importlib.util.find_spec("leadtrail.storage._ingest") is not None
    if not built and os.environ.get("LEADTRAIL_PURE") != "1":
        pytest.fail("the compiled twin is not built: run `pip install -e .` with a C compiler")
    twins = ["compiled", "pure"] if built else ["pure"]
    out = tmp_path / "ingest.json"
    result = subprocess.run(
        [sys.executable, "benchmarks/ingest_bench.py", "--tiny", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    payload = json.loads(out.read_text())
    assert payload["mode"] == "tiny"
    assert payload["runs"] == 3
    assert sorted(payload["figures"]) == sorted(twins)
    for twin in twins:
        for phase in ("validate", "append"):
            figure = payload["figures"][twin][phase]
            assert len(figure["runs"]) == 3, (twin, phase)
            assert all(value > 0 for value in figure["runs"]), (twin, phase)
            assert figure["min"] <= figure["median"] <= figure["max"], (twin, phase)
    lines = result.stdout.splitlines()
    rows = [line.split()[:2] for line in lines if line.startswith(("validate", "append"))]
    assert rows == [[phase, twin] for phase in ("validate", "append") for twin in twins]
