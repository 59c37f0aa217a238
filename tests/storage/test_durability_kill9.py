"""Acknowledged events survive kill -9 at any moment (DESIGN.md, "The log" 4, 7, 8).

A child process appends random batches from several threads and prints
every request before sending it and every acknowledgement after ``append``
returns. The parent kills it with SIGKILL at random moments (during start-up
and recovery as well as mid-append), reopens the same data directory and
checks the store against that acknowledgement oracle, then starts the next
incarnation, which first retries the requests that were in flight.
"""

from __future__ import annotations

import functools
import json
import os
import random
import signal
import subprocess
import threading
import time
from pathlib import Path

import leadtrail_storage_faults as faults  # loaded by conftest.py
import pytest
from leadtrail.storage import EventLog

KILLS = 24
SEED = int(os.environ.get("LEADTRAIL_FAULT_SEED", "20261128"))
TIME_BUDGET_S = 75.0


class Incarnation:
    """One child process, its stdout collected line by line until it dies."""

    def __init__(self, command: list[str], stderr_path: Path) -> None:
        self.lines: list[str] = []
        self.ready = threading.Event()
        self._stderr = open(stderr_path, "w")  # noqa: SIM115 - closed in finish()
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=self._stderr, text=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if not line.endswith("\n"):
                break  # cut off by the kill: never a whole acknowledgement
            self.lines.append(line.rstrip("\n"))
            if line == "READY\n":
                self.ready.set()

    def kill_and_wait(self) -> int:
        self.proc.send_signal(signal.SIGKILL)
        status = self.proc.wait()
        self._reader.join(10)
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        self._stderr.close()
        return status


class Oracle:
    """What the children reported: requests sent and acknowledgements received."""

    def __init__(self) -> None:
        self.acked: dict[str, tuple[int, int | None]] = {}  # id -> (position, recorded_at)
        self.sent: list[list[int]] = []
        self.in_flight: list[list[int]] = []
        self.ack_count = 0
        self.looked_up: set[str] = set()

    def absorb(self, lines: list[str]) -> int:
        pending: dict[tuple[str, ...], list[int]] = {}
        acks_here = 0
        for line in lines:
            kind, _, body = line.partition(" ")
            if kind == "SEND":
                numbers = json.loads(body)
                self.sent.append(numbers)
                pending[tuple(faults.event_id(n) for n in numbers)] = numbers
            elif kind == "ACK":
                acks = json.loads(body)
                ids = tuple(a[0] for a in acks)
                assert ids in pending, f"acknowledgement for a request never sent: {ids[:3]}"
                del pending[ids]
                acks_here += 1
                for eid, position, recorded_at, duplicate in acks:
                    known = self.acked.get(eid)
                    if duplicate:
                        assert known is None or known[0] == position, (
                            f"retry of {eid} reported position {position}, first acknowledged at {known}"
                        )
                        if known is None:
                            self.acked[eid] = (position, None)
                    else:
                        assert known is None, f"{eid} stored twice: acknowledged at {known[0]} and {position}"
                        self.acked[eid] = (position, recorded_at)
        self.in_flight = list(pending.values())
        self.ack_count += acks_here
        return acks_here


expected_event = functools.cache(faults.make_event)


def check_store_against_oracle(data_dir: Path, oracle: Oracle, incarnation: int, *, last: bool) -> None:
    rng = random.Random(incarnation)
    with EventLog.open(data_dir) as log:
        events = faults.check_log(log)
        assert log.stats().event_count == len(events)
        by_id = {e.id: e for e in events}
        diffs = []
        for e in events:
            expected = expected_event(faults.event_number(e.id))
            stored = faults.as_stored(expected, e.position, e.recorded_at_ms)
            if e != stored:
                diffs += faults.event_diff(e, stored)
        assert diffs == [], f"stored events differ from what was sent: {diffs[:5]}"
        for eid, (position, recorded_at) in oracle.acked.items():
            got = by_id.get(eid)
            assert got is not None, f"acknowledged {eid} at position {position} is lost"
            assert got.position == position, f"{eid} moved from {position} to {got.position}"
            assert recorded_at in (None, got.recorded_at_ms), f"{eid} recorded_at changed"
        # Lookups by id: everything acknowledged since the last check, and a sample.
        fresh = [eid for eid in oracle.acked if eid not in oracle.looked_up]
        sample = rng.sample(sorted(oracle.looked_up), min(200, len(oracle.looked_up)))
        for eid in [*fresh, *sample]:
            got = log.get(eid, account_id=by_id[eid].account_id)
            assert got == by_id[eid], f"get({eid}) disagrees with the log"
        oracle.looked_up.update(fresh)
        for numbers in oracle.sent:
            present = [faults.event_id(n) in by_id for n in numbers]
            assert all(present) or not any(present), (
                f"request {numbers[0]}..{numbers[-1]} is partly stored: {present}"
            )
        filters = faults.standard_filters(faults.ACCOUNTS)
        chosen = filters if last else rng.sample(filters, 3)
        mismatches = faults.query_mismatches(log, events, filters=chosen, limit=200)
        assert mismatches == [], mismatches[:5]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("fsync", "kills"),
    [("always", KILLS), ("interval:50", 10)],
    ids=["fsync_always", "fsync_interval"],
)
def test_acknowledged_events_survive_repeated_kill_9(tmp_path: Path, fsync: str, kills: int) -> None:
    """``interval:MS`` risks a power loss, never a process crash (FsyncPolicy docs)."""
    rng = random.Random(SEED)
    data_dir = tmp_path / "store"
    oracle = Oracle()
    started = time.monotonic()
    done = incarnations_with_acks = 0
    for incarnation in range(1, kills + 1):
        resend = tmp_path / f"resend-{incarnation}.json"
        resend.write_text(json.dumps(oracle.in_flight))
        command = faults.child_command(
            "append-loop",
            str(data_dir),
            f"--incarnation={incarnation}",
            f"--seed={SEED + incarnation}",
            "--threads=4",
            "--max-events=250",
            "--pause-ms=60",
            f"--fsync={fsync}",
            f"--resend={resend}",
        )
        child = Incarnation(command, tmp_path / f"child-{incarnation}.err")
        if rng.random() < 0.2:
            time.sleep(rng.uniform(0.0, 0.6))  # may land in start-up or recovery
        else:
            assert child.ready.wait(30), "child never opened the store"
            time.sleep(rng.uniform(0.01, 0.3))
        status = child.kill_and_wait()
        stderr = (tmp_path / f"child-{incarnation}.err").read_text()
        assert status == -signal.SIGKILL, f"child died on its own ({status}):\n{stderr}"
        done += 1
        if oracle.absorb(child.lines):
            incarnations_with_acks += 1
        check_store_against_oracle(data_dir, oracle, incarnation, last=incarnation == kills)
        assert faults.stray_files(data_dir) == [], f"leftovers after incarnation {incarnation}"
        if time.monotonic() - started > TIME_BUDGET_S:
            break
    assert done >= min(kills, 20), f"only {done} kills within {TIME_BUDGET_S}s"
    assert incarnations_with_acks >= done // 2, "too few incarnations got to append"
    assert len(oracle.acked) >= 500, "too few acknowledged events to mean anything"
