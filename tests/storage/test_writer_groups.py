"""Group commit: what one group holds, and callers that give up while their batch waits."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from leadtrail.storage import Event, EventLog, Options, Outcome, new_event_id

T0 = 1_700_000_000_000
WAIT_S = 20.0
"""Bound on every wait below: a writer that died makes the test fail, not hang."""


def make(n: int, lead_id: str = "lead-1", account_id: str = "default", **changes: Any) -> Event:
    values: dict[str, Any] = {
        "type": "recipient.delivered",
        "lead_id": lead_id,
        "flow_id": "flow-1",
        "id": new_event_id(),
        "timestamp_ms": T0 + n,
        "entity_id": "buyer-1",
        "outcome": Outcome.SUCCESS,
        "lead": {"email": "someone@example.com", "step": n},
        "account_id": account_id,
    }
    values.update(changes)
    return Event(**values)


@pytest.fixture
def log(tmp_path: Path) -> Iterator[EventLog]:
    with EventLog.open(tmp_path / "data", Options(clock_ms=lambda: T0 + 10_000)) as store:
        yield store


def _hold_writer(log: EventLog) -> tuple[threading.Event, threading.Event]:
    """Make the writer thread wait in its commit listener after the next commit."""
    entered, release = threading.Event(), threading.Event()

    def listener(events: list[Event]) -> None:
        if not release.is_set():
            entered.set()
            assert release.wait(WAIT_S)

    log.add_commit_listener(listener)
    return entered, release


def test_a_batch_cancelled_while_queued_is_not_written_and_the_writer_goes_on(log: EventLog) -> None:
    entered, release = _hold_writer(log)
    first = log.submit([make(1)])
    assert entered.wait(WAIT_S)
    given_up = [make(2), make(3)]
    waiting = log.submit(given_up)
    assert waiting.cancel()  # still queued: the writer is busy in the listener
    release.set()
    assert first.result(WAIT_S)[0].position == 1
    later = log.submit([make(4)]).result(WAIT_S)
    assert waiting.cancelled()
    assert [r.position for r in later] == [2]
    assert all(log.get(e.id) is None for e in given_up)
    assert [e.position for e in log.read_from(1)] == [1, 2]


def test_a_batch_taken_by_the_writer_can_no_longer_be_cancelled(log: EventLog) -> None:
    entered, release = _hold_writer(log)
    first = log.submit([make(1)])
    assert entered.wait(WAIT_S)
    # The group of ``first`` is committed and its listener runs: its future is the
    # writer's, and a late cancel neither succeeds nor takes the answer away.
    assert not first.cancel()
    release.set()
    assert first.result(WAIT_S)[0].position == 1


def test_one_group_indexes_every_account_lead_type_and_flow_apart(log: EventLog) -> None:
    events = []
    for n in range(60):
        account = ("acme", "other")[n % 2]
        events.append(
            make(
                n,
                lead_id=f"lead-{n % 3}",
                account_id=account,
                type=("recipient.delivered", "lead.received")[n % 4 // 2],
                flow_id=f"flow-{n % 5}",
                entity_id="" if n % 7 == 0 else f"buyer-{n % 2}",
            )
        )
    results = log.append(events)
    assert [r.position for r in results] == list(range(1, 61))
    for account in ("acme", "other"):
        mine = [e for e in events if e.account_id == account]
        for lead in ("lead-0", "lead-1", "lead-2"):
            expected = [e.id for e in mine if e.lead_id == lead]
            assert [e.id for e in log.timeline(lead, account)] == expected
        for e in mine:
            stored = log.get(e.id, account)
            assert stored is not None and stored.flow_id == e.flow_id and stored.entity_id == e.entity_id
            other = "other" if account == "acme" else "acme"
            assert log.get(e.id, other) is None


def test_a_group_resent_in_part_answers_duplicates_from_the_index(log: EventLog) -> None:
    first = [make(n, account_id=("acme", "other")[n % 2]) for n in range(10)]
    log.append(first)
    again = [*first[3:7], make(20, account_id="acme"), make(21, account_id="new-account")]
    results = log.append(again)
    assert [r.duplicate for r in results] == [True] * 4 + [False, False]
    assert [r.position for r in results[:4]] == [4, 5, 6, 7]
    assert [r.position for r in results[4:]] == [11, 12]
    assert log.get(again[-1].id, "new-account") is not None
