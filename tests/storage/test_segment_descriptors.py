"""Segment read descriptors come from a bounded cache (``Options.max_open_segments``): a store
with more segment files than the limit reads every event while at most the limit (and the
writer's own descriptor) stay open between reads; readers racing rewrites and evictions never
see a closed or reused descriptor; a scan left unfinished gives its descriptor back."""

from __future__ import annotations

import gc
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from leadtrail.storage import Event, EventFilter, EventLog, InvalidArgumentError, Options, RetentionPolicy
from leadtrail.storage.follow import CommitNotice, tail_states
from leadtrail.storage.format import parse_segment_name

DAY_MS = 86_400_000
WRITER_FDS = 1
"""The writer's descriptor of the active segment: its own, not the cache's."""


def _segment_fds(path: Path) -> list[str]:
    """The targets of this process's descriptors that are segment files of the store at ``path``."""
    log_dir = os.path.realpath(path / "log")
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # closed meanwhile (the listing's own descriptor)
        name = os.path.basename(target.removesuffix(" (deleted)"))
        if os.path.dirname(target) == log_dir and parse_segment_name(name) is not None:
            found.append(target)
    return found


def _events(batch: int, leads: int = 6, account_id: str = "default", old: bool = False) -> list[Event]:
    now = int(time.time() * 1000)
    return [
        Event(
            "lead.step",
            lead_id=f"lead-{i % leads}",
            flow_id=f"flow-{i % 2}",
            timestamp_ms=now - 10 * DAY_MS if old else None,
            # Random padding does not compress: a few events fill a 4 KiB segment.
            lead={"email": f"lead-{i % leads}@example.com", "n": batch, "pad": os.urandom(120).hex()},
            account_id=account_id,
        )
        for i in range(6)
    ]


def _key(event: Any) -> tuple[Any, ...]:
    return (event.id, event.position, event.type, event.lead_id, event.flow_id, dict(event.lead))


def _store(path: Path, limit: int, batches: int, with_old: bool = False) -> EventLog:
    log = EventLog.open(path, Options(segment_bytes=4096, max_open_segments=limit))
    for b in range(batches):
        log.append(_events(b))
        if with_old and b % 3 == 0:
            log.append(_events(b, account_id="old", old=True))
    return log


def test_a_store_with_more_segments_than_the_limit_reads_everything(tmp_path: Path) -> None:
    limit = 4
    path = tmp_path / "d"
    log = _store(path, limit, 40)
    try:
        assert len(log.segments) > 3 * limit
        everything = [_key(e) for e in log.read_from(1)]
        assert len(everything) == 240 and [k[1] for k in everything] == list(range(1, 241))
        assert len(_segment_fds(path)) <= limit + WRITER_FDS

        # A subscription from position 1, suspended half way, holds one descriptor at most.
        reading = log.read_from(1)
        half = [_key(next(reading)) for _ in range(120)]
        assert len(_segment_fds(path)) <= limit + WRITER_FDS + 1
        rest = [_key(e) for e in reading]
        assert half + rest == everything

        for lead in range(6):
            expected = [k for k in everything if k[3] == f"lead-{lead}"]
            assert [_key(e) for e in log.timeline(f"lead-{lead}")] == expected
        scanned: list[tuple[Any, ...]] = []
        after = None
        while True:
            page = log.scan(EventFilter(), after=after, limit=50)
            scanned += [_key(e) for e in page.events]
            after = page.cursor
            if not after:
                break
        assert sorted(scanned, key=lambda k: k[1]) == everything
        assert [_key(log.get(k[0])) for k in everything[::17]] == everything[::17]
        assert log.verify().problems == []
        assert len(_segment_fds(path)) <= limit + WRITER_FDS

        notice = CommitNotice(log.last_position, 1, tail_states(log.segments), log.dictionaries.current_id)
    finally:
        log.close()
    assert _segment_fds(path) == []

    # A follower opens every segment file anew (reload): through its cache too.
    follower = EventLog.open_follower(path, notice, Options(read_only=True, max_open_segments=limit))
    try:
        assert [_key(e) for e in follower.read_from(1)] == everything
        assert len(_segment_fds(path)) <= limit
    finally:
        follower.close()
    assert _segment_fds(path) == []


def _racing(log: EventLog, expected: dict[str, tuple[Any, ...]], timelines: dict[str, Any], work: Any) -> int:
    """Run ``work`` while 3 threads read everything from position 1 (and the ``timelines``)
    again and again; returns the number of whole reads, each equal to ``expected``."""
    errors: list[str] = []
    reads = [0]
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            try:
                seen = {}
                for event in log.read_from(1):
                    if event.id in expected:
                        seen[event.id] = _key(event)
                if seen != expected:
                    errors.append(f"read_from: {len(seen)} of {len(expected)} events equal")
                for lead, timeline in timelines.items():
                    if [_key(e) for e in log.timeline(lead)] != timeline:
                        errors.append(f"timeline of {lead} changed")
                reads[0] += 1
            except Exception as e:
                errors.append(repr(e))

    threads = [threading.Thread(target=read) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        work()
        deadline = time.monotonic() + 5
        while reads[0] < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert errors == []
    return reads[0]


def test_readers_racing_erasures_retention_and_evictions_read_the_same_events(tmp_path: Path) -> None:
    limit = 3
    path = tmp_path / "d"
    log = _store(path, limit, 30, with_old=True)
    erased = ["lead-3", "lead-4", "lead-5"]
    before = [e for e in log.read_from(1) if e.account_id == "default"]
    expected = {e.id: _key(e) for e in before if e.lead_id not in erased}
    timelines = {lead: [_key(e) for e in log.timeline(lead)] for lead in ("lead-0", "lead-1")}
    removed = [0]

    def erase() -> None:
        for lead in erased[1:]:
            log.erase_lead(lead)
        log.append([e for e in _events(99) if e.lead_id == "lead-3"])
        log.erase_lead("lead-3")  # mid-log and in the active segment, sealed for it

    def retain() -> None:
        # Ten days on: every event of "old" is past its age (retention goes by recorded_at).
        removed[0] = log.apply_retention(int(time.time() * 1000) + 10 * DAY_MS).events_removed

    with log:
        log.set_retention_policy(RetentionPolicy("old", max_age_days=1))
        rewrites = log.rewrites
        assert _racing(log, expected, timelines, erase) > 0
        assert log.rewrites > rewrites
        # A rewritten segment's entries go out of the index and the survivors' come in in
        # one transaction (Index.replace_segment): a timeline read meanwhile misses none.
        assert _racing(log, expected, timelines, retain) > 0
        assert removed[0] > 0 and not [e for e in log.read_from(1) if e.account_id == "old"]
        assert {lead: [_key(e) for e in log.timeline(lead)] for lead in timelines} == timelines
        assert log.verify().problems == []
        open_now = _segment_fds(path)
        assert len(open_now) <= limit + WRITER_FDS
        assert not [t for t in open_now if t.endswith(" (deleted)")], "a replaced file is still read"


def test_an_abandoned_scan_gives_its_descriptor_back(tmp_path: Path) -> None:
    limit = 2
    path = tmp_path / "d"
    with _store(path, limit, 20) as log:
        first, *others = log.segments[:-1]

        def read_others() -> None:
            for segment in others:
                list(segment.records())

        records = first.records()
        next(records)
        leased = first.fd
        read_others()  # evicts everything it can: not the leased descriptor
        assert first.fd == leased and os.fstat(leased).st_ino == os.stat(first.path).st_ino
        assert len(_segment_fds(path)) <= limit + WRITER_FDS + 1
        del records
        gc.collect()
        read_others()
        assert first.fd == -1
        assert len(_segment_fds(path)) <= limit + WRITER_FDS

        # The same through the store's reads: a subscription dropped half way.
        subscription: Iterator[Event] = log.read_from(1)
        assert next(subscription).position == 1
        del subscription
        gc.collect()
        read_others()
        assert first.fd == -1
        assert len(_segment_fds(path)) <= limit + WRITER_FDS


@pytest.mark.parametrize("limit", [0, 1, 1_000_001])
def test_the_limit_is_checked(limit: int) -> None:
    with pytest.raises(InvalidArgumentError, match=r"max_open_segments .*2\.\.1000000"):
        Options(max_open_segments=limit)


def test_serve_takes_the_limit(capsys: pytest.CaptureFixture[str]) -> None:
    from leadtrail.server.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["serve"]).max_open_segments == Options().max_open_segments == 128
    assert parser.parse_args(["serve", "--max-open-segments", "8"]).max_open_segments == 8
    with pytest.raises(SystemExit):
        parser.parse_args(["serve", "--max-open-segments", "1"])
    assert "--max-open-segments: 1 is out of range (2..1000000)" in capsys.readouterr().err
