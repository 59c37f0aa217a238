"""The counts behind `leadtrail top`: bounded per-second buckets, nearest-rank p95, Decimal money."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from decimal import Decimal

import pytest
from leadtrail.server.top_window import (
    MAX_ENTITIES,
    MONEY_WINDOW_S,
    OTHER,
    TopWindow,
    duration_key,
    percentile,
)

NOW_MS = 1_800_000_000_000


@dataclass(frozen=True)
class Seen:
    type: str
    entity_id: str = ""
    duration_ms: int = 0
    price: Decimal | None = None


def test_durations_below_a_second_are_exact_and_longer_ones_keep_three_digits() -> None:
    assert [duration_key(ms) for ms in (0, 1, 999)] == [0, 1, 999]
    assert [duration_key(ms) for ms in (1000, 12_345, 12_351, 10_000, 987_654)] == [
        1000, 12_300, 12_400, 10_000, 988_000,
    ]  # fmt: skip


def test_p95_is_the_nearest_rank() -> None:
    assert percentile(Counter(range(1, 21))) == 19
    assert percentile(Counter({400: 1, 10_000: 1})) == 10_000
    assert percentile(Counter({5: 100})) == 5
    assert percentile(Counter()) == 0


def test_buckets_older_than_the_window_are_dropped_so_memory_stays_bounded() -> None:
    window = TopWindow(window_s=10)
    # An hour of traffic, one event a 100 ms, each seen as it is recorded.
    for tenth in range(36_000):
        now = NOW_MS + tenth * 100
        window.add(Seen("recipient.delivered", "rcp_a", 5), recorded_ms=now, outcome="SUCCESS",
                   position=tenth + 1, now_ms=now)  # fmt: skip
        # Money always looks back a minute: that many buckets, never more.
        assert window.buckets <= MONEY_WINDOW_S + 1
    snap = window.snapshot(NOW_MS + 35_999 * 100)
    assert snap["events"]["total"] == 100  # the last 10 seconds
    assert snap["position"] == 36_000


def test_many_entities_are_capped_per_second() -> None:
    window = TopWindow(window_s=60)
    for i in range(MAX_ENTITIES + 100):
        window.add(Seen("recipient.failed", f"rcp_{i}", 1), recorded_ms=NOW_MS, outcome="FAILURE",
                   position=i + 1, now_ms=NOW_MS)  # fmt: skip
    snap = window.snapshot(NOW_MS)
    assert len(snap["recipients"]) == MAX_ENTITIES + 1
    other = next(r for r in snap["recipients"] if r["entity_id"] == OTHER)
    assert other["total"] == 100 and other["failure_share"] == 1.0
    assert sum(r["total"] for r in snap["recipients"]) == MAX_ENTITIES + 100


def test_events_replayed_from_before_the_kept_seconds_are_not_counted() -> None:
    window = TopWindow(window_s=5)
    old = NOW_MS - (MONEY_WINDOW_S + 5) * 1000
    window.add(Seen("source.accepted", "src", 1, Decimal("-2")), recorded_ms=old, outcome="SUCCESS",
               position=1, now_ms=NOW_MS)  # fmt: skip
    window.add(Seen("recipient.delivered", "rcp", 1, Decimal("7.25")), recorded_ms=NOW_MS - 30_000,
               outcome="SUCCESS", position=2, now_ms=NOW_MS)  # fmt: skip
    snap = window.snapshot(NOW_MS)
    # Outside the 5 s window, inside the minute: money only.
    assert snap["events"]["total"] == 0
    assert snap["money"]["revenue_per_minute"] == "7.25" and snap["money"]["cost_per_minute"] == "0"
    assert snap["position"] == 2


def test_a_window_must_be_positive() -> None:
    with pytest.raises(ValueError, match="window_s 0"):
        TopWindow(0)
