"""A segment rewritten under readers (an erasure, retention) is swapped in behind the same
file descriptor: a scan racing the rewrite never reads a closed descriptor (EBADF, found by the
soak) nor, once the number is reused, another file."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from leadtrail.storage import Event, EventFilter, EventLog, Options


def _store(path: Path) -> tuple[EventLog, list[str]]:
    log = EventLog.open(path, Options(segment_bytes=256 * 1024))
    leads = []
    for b in range(12):
        batch = []
        for i in range(40):
            lead = f"lead-{b}-{i}"
            leads.append(lead)
            batch += [
                Event(
                    "soak.step", lead_id=lead, flow_id=f"flow-{b % 3}", lead={"email": f"{lead}@example.com"}
                )
                for _ in range(2)
            ]
        log.append(batch)
    return log, leads


def test_a_rewritten_segment_keeps_its_descriptor_number(tmp_path: Path) -> None:
    log, leads = _store(tmp_path / "d")
    with log:
        before = {s.base: s.fd for s in log.segments if s.fd >= 0}
        log.erase_lead(leads[0])
        after = {s.base: s.fd for s in log.segments if s.base in before}
        assert after == before
        for segment in log.segments:
            if segment.fd >= 0:
                assert os.fstat(segment.fd).st_ino == os.stat(segment.path).st_ino  # the new file


def test_scans_racing_erasures_never_fail(tmp_path: Path) -> None:
    log, leads = _store(tmp_path / "d")
    errors: list[str] = []
    stop = threading.Event()
    pages = [0]

    def scan() -> None:
        while not stop.is_set():
            after = None
            try:
                while True:
                    _page, after = log.scan_stored(EventFilter(flow_id="flow-1"), after=after, limit=25)
                    pages[0] += 1
                    if not after:
                        break
            except Exception as e:
                errors.append(repr(e))

    threads = [threading.Thread(target=scan) for _ in range(2)]
    with log:
        for t in threads:
            t.start()
        began = time.monotonic()
        for lead in leads[::5]:
            log.erase_lead(lead)
            if time.monotonic() - began > 3:
                break
        stop.set()
        for t in threads:
            t.join()
    assert errors == [] and pages[0] > 0
