"""Shared helpers of the storage tests.

``faults.py`` (fault injection, oracles; also run as a script by the crash tests),
``support.py`` (canon, canon_event, Clock) and ``powerloss.py`` (the file layer that
cuts the power) are loaded here once, by path, as the modules
``leadtrail_storage_faults``, ``leadtrail_storage_support`` and
``leadtrail_storage_powerloss``: the
tests run with ``--import-mode=importlib``, where this directory is not on
``sys.path``, and pytest imports this file before any test module beside it.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path


def _load(name: str, filename: str) -> None:
    if name in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(filename))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)


_load("leadtrail_storage_faults", "faults.py")
_load("leadtrail_storage_support", "support.py")
_load("leadtrail_storage_powerloss", "powerloss.py")
