"""Choosing between a compiled module and its pure-Python twin.

Each compiled part of the engine (``_wireform``, ``_ingest``) has a plain-Python twin
that gives the same answers. The compiled one is used when it imports (``pip install``
builds it where a C compiler exists), unless the environment sets ``LEADTRAIL_PURE=1``.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType


def chosen(compiled: str, pure: str) -> ModuleType:
    """The module named ``compiled`` (absolute), or ``pure`` when it cannot or may not be used."""
    if os.environ.get("LEADTRAIL_PURE") != "1":
        try:
            return importlib.import_module(compiled)
        except ImportError:
            pass
    return importlib.import_module(pure)


__all__ = ["chosen"]
