"""``read_from`` is what subscriptions replay: from any position, every later event
exactly as stored, whatever the segment boundaries and snapshot deltas."""

from __future__ import annotations

from pathlib import Path

from leadtrail.server.simulation import LeadFlowSimulator
from leadtrail.storage import Event, EventLog, Options, Outcome


def test_read_from_any_position_returns_every_later_event_with_its_snapshot(tmp_path: Path) -> None:
    # Few leads and many steps: most snapshots are stored as deltas against an
    # earlier event of the same segment, so a mid-segment start must find bases
    # before it.
    sim = LeadFlowSimulator(seed=3, start_ms=1_700_000_000_000)
    events = [Event(**{**e, "outcome": Outcome(e["outcome"])}) for e in sim.events(200)]  # type: ignore[arg-type]
    with EventLog.open(tmp_path / "store", Options(segment_bytes=64 * 1024)) as log:
        for i in range(0, len(events), 25):
            log.append(events[i : i + 25])
        stored = list(log.read_from(1))
        assert [e.position for e in stored] == list(range(1, len(events) + 1))
        assert len(log.segments) > 2
        for position in range(1, len(stored) + 2, 13):
            assert list(log.read_from(position)) == stored[position - 1 :], position
            assert list(log.read_from(position, limit=3)) == stored[position - 1 : position + 2]
        assert [e.lead for e in stored] == [dict(e.lead) for e in events]
