"""Instruction counts from callgrind runs that dump at marks.

A benchmark child calls ``os.getppid()`` between the phases it wants counted apart;
``valgrind --dump-before=os_getppid`` writes one dump per phase (``OUT.1``, ``OUT.2``,
...; the last, at exit, is ``OUT`` itself), each numbered by its ``part:`` line.
Callgrind counts no kernel work (the write and fdatasync themselves).
"""

from __future__ import annotations

import re
from pathlib import Path

_TOTALS = re.compile(rb"^(?:summary|totals):\s+(\d+)", re.MULTILINE)
_PART = re.compile(rb"^part:\s+(\d+)", re.MULTILINE)


def valgrind_prefix(out: Path) -> list[str]:
    """The command prefix that runs a child under callgrind, dumping to ``out`` at each mark."""
    return ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--dump-before=os_getppid"]


def phase_totals(out: Path) -> list[int]:
    """Instructions of each phase, in order, from the dumps of one run to ``out``."""
    counts: dict[int, int] = {}
    for dump in out.parent.glob(out.name + "*"):
        data = dump.read_bytes()
        part = _PART.search(data)
        counts[int(part.group(1)) if part else 0] = int(_TOTALS.findall(data)[-1])
    return [counts[part] for part in sorted(counts)]
