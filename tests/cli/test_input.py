"""What the operator types, turned into values: times in every accepted form."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from leadtrail.server.cli_input import parse_time

NOW = datetime(2024, 1, 15, 14, 30, 45, 123000, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-01-15T14:30:45.123Z", NOW),
        ("2024-01-15T15:30:45.123+01:00", NOW),
        ("2024-01-15", datetime(2024, 1, 15, tzinfo=UTC)),
        ("1705329045123", NOW),
        ("now", NOW),
        ("today", datetime(2024, 1, 15, tzinfo=UTC)),
        ("yesterday", datetime(2024, 1, 14, tzinfo=UTC)),
        ("90s", NOW - timedelta(seconds=90)),
        ("15m", NOW - timedelta(minutes=15)),
        ("15min ago", NOW - timedelta(minutes=15)),
        ("2h", NOW - timedelta(hours=2)),
        ("3d", NOW - timedelta(days=3)),
        ("1w", NOW - timedelta(days=7)),
    ],
)
def test_a_time_is_absolute_or_relative_to_now(text: str, expected: datetime) -> None:
    assert parse_time(text, now=NOW) == expected


@pytest.mark.parametrize("text", ["yesterday-ish", "2h later", "-3d", "soon", "99999999999999w"])
def test_a_time_in_no_known_form_names_itself(text: str) -> None:
    with pytest.raises(ValueError, match=r"expected|too long ago"):
        parse_time(text, now=NOW)
