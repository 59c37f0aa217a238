"""The README's SDK example runs as written against a real server."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def test_the_readme_sdk_example_runs(server: Any) -> None:
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
    [example] = [b for b in blocks if "from leadtrail.client import" in b]
    code = example.replace("127.0.0.1:50051", server.address)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("recipient.delivered 0 ")
    assert "'email'" in lines[0] and "'state'" in lines[0]
    assert lines[-1].endswith(" recipient.delivered")
