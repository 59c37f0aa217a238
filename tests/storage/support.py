"""Helpers the storage tests share: exact comparison of JSON values and events, and a
clock the test moves by hand. Loaded once by ``conftest.py`` (see there)."""

from __future__ import annotations

import dataclasses
from typing import Any

from leadtrail.storage import Event


def canon(value: Any) -> Any:
    """A form of a JSON value where 1, 1.0, True and 0.0, -0.0 are all different."""
    if isinstance(value, dict):
        return {key: canon(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [canon(item) for item in value]
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, float):
        return ("float", value.hex())
    return (type(value).__name__, value)


def canon_event(event: Event) -> dict[str, Any]:
    """Every field of an event, its JSON values in ``canon`` form."""
    fields = {f.name: getattr(event, f.name) for f in dataclasses.fields(Event) if f.compare}  # not the seal
    fields["lead"] = canon(dict(event.lead))
    fields["details"] = canon(dict(event.details))
    fields["outcome"] = (type(event.outcome).__name__, int(event.outcome))
    return fields


class Clock:
    """``Options.clock_ms`` that stands still until a test sets ``now``."""

    def __init__(self, now: int = 1_700_000_000_000) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now
