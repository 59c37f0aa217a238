"""Signed checkpoints stored in the log: a writable store appends an ``audit.checkpoint``
record of ``leadtrail.system`` every interval while events arrive, none when nothing came
(its own records are not news, across a reopen too), and keeps going after an append fails.
Signatures are checked with ``cryptography`` directly over the bytes FORMAT.md gives.
"""

from __future__ import annotations

import base64
import logging
import struct
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from leadtrail.storage import AppendResult, Event, EventLog, NotFoundError, Options, Outcome
from leadtrail.storage.chain import SYSTEM_ACCOUNT
from leadtrail.storage.checkpoints import (
    CHECKPOINT_LEAD,
    CHECKPOINT_TYPE,
    Checkpointer,
    checkpoint_event,
    checkpoint_of,
)
from leadtrail.storage.signing import SignedCheckpoint, load_signer

INTERVAL = 0.05
FAST = Options(checkpoints=True, checkpoint_interval_s=INTERVAL)
QUIET = Options(checkpoints=False)
WAIT = 20.0
IDLE_TICKS = 10
"""Intervals an idle store is watched for a record it must not append."""


def _events(n: int, lead: str = "lead-1") -> list[Event]:
    return [Event("source.submitted", lead, "flow-1", lead={"n": i}) for i in range(n)]


def _records(log: EventLog) -> list[Event]:
    return log.timeline(CHECKPOINT_LEAD, SYSTEM_ACCOUNT)


def _until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"no {what} within {WAIT} s"
        time.sleep(INTERVAL / 2)


def _covered(log: EventLog) -> bool:
    """Whether the last record signs the event just before it (the store is idle)."""
    records = _records(log)
    if not records or records[-1].position != log.last_position:
        return False
    last = checkpoint_of(records[-1])
    return last is not None and last.position == records[-1].position - 1


def _check_signature(checkpoint: SignedCheckpoint) -> None:
    message = b"leadtrail checkpoint v1\n" + struct.pack(
        ">Q32sQ", checkpoint.position, checkpoint.chain_hash, checkpoint.recorded_at_ms
    )
    Ed25519PublicKey.from_public_bytes(checkpoint.public_key).verify(checkpoint.signature, message)


def test_records_appear_while_events_arrive_and_sign_the_chain_before_them(tmp_path: Path) -> None:
    with EventLog.open(tmp_path / "store", FAST) as log:
        public_key = log.public_key
        stop = threading.Event()

        def keep_appending() -> None:
            while not stop.is_set():
                log.append(_events(2))
                time.sleep(INTERVAL / 5)

        writer = threading.Thread(target=keep_appending)
        writer.start()
        try:
            _until(lambda: len(_records(log)) >= 3, "three checkpoint records")
        finally:
            stop.set()
            writer.join()
        _until(lambda: _covered(log), "a checkpoint of the last events")
        records = _records(log)
        signed_before = 0
        for record in records:
            assert (record.type, record.flow_id, record.entity_id) == (CHECKPOINT_TYPE, "audit", "leadtrail")
            assert record.outcome == Outcome.SUCCESS and record.account_id == SYSTEM_ACCOUNT
            assert set(record.details) == {
                "position",
                "chain_hash",
                "recorded_at_ms",
                "signature",
                "public_key",
            }
            checkpoint = checkpoint_of(record)
            assert checkpoint is not None
            assert base64.b64decode(record.details["public_key"]) == public_key == checkpoint.public_key
            _check_signature(checkpoint)
            # It signs the chain as it stood before the record: what the store signs on request.
            assert signed_before < checkpoint.position < record.position
            assert log.checkpoint(checkpoint.position).chain_hash == checkpoint.chain_hash
            stored = next(iter(log.read_from(checkpoint.position, limit=1)))
            assert stored.recorded_at_ms == checkpoint.recorded_at_ms
            signed_before = checkpoint.position
        # The records are chained like any other event: the head's checkpoint verifies too.
        head = log.checkpoint()
        assert head.position == log.last_position == records[-1].position
        _check_signature(head)


def test_an_idle_store_appends_no_record_before_or_after_a_reopen(tmp_path: Path) -> None:
    data = tmp_path / "store"
    with EventLog.open(data, FAST) as log:
        time.sleep(INTERVAL * IDLE_TICKS)
        assert log.last_position == 0 and _records(log) == []  # nothing to sign
        log.append(_events(3))
        _until(lambda: _covered(log), "a checkpoint of the three events")
        last = log.last_position
        time.sleep(INTERVAL * IDLE_TICKS)
        assert log.last_position == last, "a record was appended with nothing new to sign"
    with EventLog.open(data, FAST) as log:
        time.sleep(INTERVAL * IDLE_TICKS)
        assert log.last_position == last, "a reopened idle store signed its own record"
        log.append(_events(1))
        _until(lambda: _covered(log), "a checkpoint after the reopen")
        assert len(_records(log)) == 2


def test_checkpoints_are_off_unless_asked_for(tmp_path: Path) -> None:
    assert not Options().checkpoints and Options().checkpoint_interval_s == 10.0
    with EventLog.open(tmp_path / "store", Options(checkpoint_interval_s=INTERVAL)) as log:
        log.append(_events(3))
        time.sleep(INTERVAL * IDLE_TICKS)
        assert log.last_position == 3 and _records(log) == []
        _check_signature(log.checkpoint())  # signing on request still works


def test_a_failed_append_is_tried_again_at_the_next_tick_and_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="leadtrail.storage.checkpoints")
    with EventLog.open(tmp_path / "store", QUIET) as log:
        log.append(_events(2))
        signer = load_signer(str(tmp_path / "store"), FAST.files, create=False)
        assert signer is not None
        failures = []

        def append_failing_once(events: Sequence[Event]) -> list[AppendResult]:
            if len(failures) < 2:
                failures.append(events)
                raise OSError(28, "No space left on device")
            return log.append(events)

        checkpointer = Checkpointer(signer, log.chain_head, append_failing_once, INTERVAL, None)
        checkpointer.start()
        try:
            _until(lambda: len(_records(log)) == 1, "a record after the failed append")
        finally:
            checkpointer.close()
        assert len(failures) == 2
        warnings = [r.getMessage() for r in caplog.records if r.name == "leadtrail.storage.checkpoints"]
        assert len(warnings) == 1 and "No space left on device" in warnings[0], warnings
        checkpoint = checkpoint_of(_records(log)[0])
        assert checkpoint is not None and checkpoint.position == 2
        _check_signature(checkpoint)


def test_a_store_signs_any_chained_position_on_request(tmp_path: Path) -> None:
    with EventLog.open(tmp_path / "store", QUIET) as log:
        empty = log.checkpoint()
        assert (empty.position, empty.chain_hash) == (0, bytes(32))
        results = log.append(_events(5))
        for result in results:
            checkpoint = log.checkpoint(result.position)
            assert checkpoint.chain_hash == result.chain_hash
            assert checkpoint.recorded_at_ms == result.recorded_at_ms
            _check_signature(checkpoint)
        assert log.checkpoint().position == 5
        with pytest.raises(NotFoundError, match="position 6"):
            log.checkpoint(6)


def test_a_record_parses_back_into_its_checkpoint_and_nothing_else_does() -> None:
    checkpoint = SignedCheckpoint(9, b"\x07" * 32, 1_795_924_800_000, b"\x01" * 64, b"\x02" * 32)
    event = checkpoint_event(checkpoint)
    assert event.details["chain_hash"] == "07" * 32
    assert checkpoint_of(event) == checkpoint
    event.account_id = "default"
    assert checkpoint_of(event) is None  # only the system account's records
    broken = checkpoint_event(checkpoint)
    broken.details = {**broken.details, "position": "9"}
    assert checkpoint_of(broken) is None
    broken.details = {**broken.details, "position": 9, "signature": "not base64!"}
    assert checkpoint_of(broken) is None
