"""A follower (``EventLog.open_follower``) reads a store that another process writes.

The writer runs in a child process (LMDB allows one environment per path and
process) and answers each command with the commit notice it would send a
follower worker; the follower in this process applies it and reads.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from leadtrail.storage import ERASED, Event, EventLog, Options, StorageError
from leadtrail.storage.follow import CommitNotice, tail_states

SEGMENT_BYTES = 8192


def _writer(path: str, commands: Any, notices: Any) -> None:
    log = EventLog.open(path, Options(segment_bytes=SEGMENT_BYTES))
    epoch = 1
    try:
        while (command := commands.get()) != "stop":
            if command == "erase":
                log.erase_lead("lead-1")
                epoch += 1
            elif command == "reindex":
                log.reindex()
                epoch += 1
            else:
                # Random padding: snapshots that do not compress, so segments roll.
                lead = {"email": "dana@example.com", "n": command, "pad": os.urandom(400).hex()}
                log.append([Event("lead.updated", "lead-1", "flow-f", lead=lead)])
            dictionary = log.dictionaries.current_id
            notice = CommitNotice(log.last_position, epoch, tail_states(log.segments), dictionary)
            notices.put(notice.to_bytes())
    finally:
        log.close()


class Writer:
    def __init__(self, path: Path) -> None:
        context = multiprocessing.get_context("spawn")
        self.commands: Any = context.Queue()
        self.notices: Any = context.Queue()
        self.process = context.Process(target=_writer, args=(str(path), self.commands, self.notices))
        self.process.start()

    def do(self, command: Any) -> CommitNotice:
        self.commands.put(command)
        return CommitNotice.from_bytes(self.notices.get(timeout=60))

    def stop(self) -> None:
        self.commands.put("stop")
        self.process.join(60)
        assert self.process.exitcode == 0


@pytest.fixture
def writer(tmp_path: Path) -> Iterator[Writer]:
    made = Writer(tmp_path / "data")
    yield made
    made.stop()


def test_a_follower_reads_what_the_writer_committed_across_segment_rolls(
    tmp_path: Path, writer: Writer
) -> None:
    follower = EventLog.open_follower(tmp_path / "data", writer.do(0))
    try:
        assert [e.lead["n"] for e in follower.timeline("lead-1")] == [0]
        for n in range(1, 40):
            follower.follow_commit(writer.do(n))
        assert len(follower.segments) > 2  # the writer rolled segments meanwhile
        assert follower.last_position == 40
        assert [e.lead["n"] for e in follower.timeline("lead-1")] == list(range(40))
        assert [e.position for e in follower.read_from(1)] == list(range(1, 41))
        with pytest.raises(StorageError):
            follower.append([Event("lead.updated", "lead-1", "flow-f")])
    finally:
        follower.close()


def test_a_follower_reads_nothing_past_the_last_notice(tmp_path: Path, writer: Writer) -> None:
    notice = writer.do(0)
    follower = EventLog.open_follower(tmp_path / "data", notice)
    try:
        writer.do(1)  # committed, but this follower has not been told yet
        assert [e.position for e in follower.read_from(1)] == [1]
        assert follower.last_position == 1
    finally:
        follower.close()


def test_after_an_erasure_and_a_reindex_the_follower_serves_the_new_files(
    tmp_path: Path, writer: Writer
) -> None:
    follower = EventLog.open_follower(tmp_path / "data", writer.do(0))
    try:
        for n in range(1, 10):
            follower.follow_commit(writer.do(n))
        assert all(e.lead["email"] == "dana@example.com" for e in follower.timeline("lead-1"))
        follower.follow_commit(writer.do("erase"))
        steps = [e for e in follower.timeline("lead-1") if e.type == "lead.updated"]
        assert len(steps) == 10 and all(e.lead["email"] == ERASED for e in steps)
        follower.follow_commit(writer.do("reindex"))
        follower.follow_commit(writer.do(10))
        assert [e.lead["n"] for e in follower.timeline("lead-1") if e.type == "lead.updated"][-1] == 10
    finally:
        follower.close()
