"""The names of an account's alert rules, sinks and export jobs: one pattern, one check.

Names are path-safe (an export job's files live in a directory of its name) and short
enough to show in a table.
"""

from __future__ import annotations

import re

from leadtrail.server.status import invalid

NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
NAME = re.compile(NAME_PATTERN)


def is_name(name: str) -> bool:
    return NAME.fullmatch(name) is not None


def check_name(name: str, field: str = "name", *, noun: str = "") -> str:
    """``name``, or ``invalid(field, ...)`` when it is empty or not a name; the refusal says
    "is not a <noun> name" when ``noun`` is given, else "must match"."""
    if not name:
        raise invalid(field, "required")
    if not is_name(name):
        shown = repr(name[:80])
        if noun:
            raise invalid(field, f"{shown} is not a {noun} name ({NAME_PATTERN}: at most 64 characters)")
        raise invalid(field, f"{shown} must match {NAME_PATTERN} (at most 64 characters)")
    return name
