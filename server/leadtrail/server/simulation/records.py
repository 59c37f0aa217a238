"""The simulated event as plain data, the simulation's constants and how its values are spelled."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from typing import Any, Final, TypedDict

DAY_MS: Final = 86_400_000
DEFAULT_START_MS: Final = 1_705_294_800_000
"""2024-01-15T05:00:00Z, midnight on the US east coast, where the day's traffic curve starts."""

SNAPSHOT_MIN_BYTES: Final = 1024
SNAPSHOT_MAX_BYTES: Final = 1400
"""Every snapshot's compact JSON lies in this range: 1.0 to 1.4 KB whichever KB is meant."""

DEFAULT_EVENTS_RANGE: Final = (5, 8)
MAX_EVENTS: Final = 12

# Outcome numbers as leadtrail.storage.Outcome (and leadtrail.v1.Outcome) number them;
# repeated here so that the simulation does not depend on the engine.
UNSPECIFIED, SUCCESS, FAILURE, ERROR = 0, 1, 2, 3


class SimulatedEvent(TypedDict):
    """One event as plain data; the keys are ``leadtrail.storage.Event``'s fields."""

    type: str
    lead_id: str
    flow_id: str
    id: str
    timestamp_ms: int
    entity_id: str
    outcome: int
    reason: str
    duration_ms: int
    integration: str
    response_code: int
    price: str
    details: dict[str, Any]
    lead: dict[str, Any]


def snapshot_bytes(snapshot: dict[str, Any]) -> int:
    """Size of a snapshot as compact JSON, the measure the size range refers to."""
    return len(json.dumps(snapshot, separators=(",", ":")).encode())


def money(cents: int) -> str:
    """A decimal string from whole cents: integer arithmetic, so never a float's rounding."""
    sign = "-" if cents < 0 else ""
    cents = abs(cents)
    return f"{sign}{cents // 100}.{cents % 100:02d}"


def iso_date(ms: int) -> str:
    return datetime.fromtimestamp(ms // 1000, tz=UTC).strftime("%Y-%m-%d")


def hex_digits(rng: random.Random, digits: int) -> str:
    return f"{rng.getrandbits(4 * digits):0{digits}x}"
