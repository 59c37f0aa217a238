"""Fault injection and oracles shared by the durability and fault tests.

The ``test_durability_*`` and ``test_faults_*`` modules import this file by
path (tests run with ``--import-mode=importlib``), and the child processes
those tests kill or crash run it as a script::

    python faults.py append-loop DIR --incarnation K ...
    python faults.py retention DIR --crash-at N ...

Event content is a pure function of a number ``n`` that is encoded in the
event id, so after a crash every event found in the store can be checked
field by field, acknowledged or not.

On-disk helpers parse segments from ``storage/FORMAT.md`` independently of
the engine's own reader: a test must not trust the code it tests.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import random
import shutil
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from crc32c import crc32c
from leadtrail.storage import (
    Event,
    EventFilter,
    EventLog,
    Files,
    FsyncPolicy,
    Options,
    Outcome,
    RetentionPolicy,
)

BASE_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
DAY_MS = 86_400_000
CRASH_EXIT = 86
"""Exit status of a child that simulated a crash with ``os._exit``."""

# --------------------------------------------------------------------------
# Deterministic events
# --------------------------------------------------------------------------

ACCOUNTS = ("default", "acme", "hold")
TYPES = (
    "source.submitted",
    "source.validated",
    "filter.rejected",
    "enhancement.appended",
    "recipient.delivered",
    "recipient.rejected",
    "feedback.received",
)
LEAD_COUNT = 23
LEADS = tuple(f"lead-{i:03d}" for i in range(LEAD_COUNT))
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_FIRST = ("Ana", "Bo", "Chloé", "Dmitri", "Eve", "Farah", "Gus", "Hana")
_LAST = ("Ng", "Okafor", "Petrov", "Quinn", "Rossi", "Søren", "Tanaka")
_CITIES = ("Austin", "Boise", "Chicago", "Denver", "El Paso")
_STATES = ("CA", "TX", "NY", "FL", "WA", "ID")
_TAGS = ("auto", "home", "life", "health", "solar", "debt", "mortgage")
_REASONS = ("duplicate phone", "buyer cap reached", "timeout after 30s", "HTTP 503 from buyer")


def event_id(n: int) -> str:
    """A valid ULID-shaped id that encodes ``n`` (first character stays 0)."""
    if not 0 <= n < 32**25:
        raise ValueError(n)
    chars = []
    for _ in range(26):
        n, digit = divmod(n, 32)
        chars.append(_CROCKFORD[digit])
    return "evt_" + "".join(reversed(chars))


def event_number(eid: str) -> int:
    n = 0
    for char in eid.removeprefix("evt_"):
        n = n * 32 + _CROCKFORD.index(char)
    return n


def lead_snapshot(n: int) -> dict[str, Any]:
    """Mostly stable per lead, a few fields change per event: deltas are common."""
    lead_no = n % LEAD_COUNT
    rng = random.Random(f"lead-{lead_no}")
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    snapshot: dict[str, Any] = {
        "email": f"{first.lower()}.{last.lower()}{lead_no}@example.com",
        "first_name": first,
        "last_name": last,
        "phone": f"+1555{rng.randrange(10**7):07d}",
        "address": {
            "street": f"{rng.randrange(1, 9999)} Main St",
            "city": rng.choice(_CITIES),
            "state": rng.choice(_STATES),
            "zip": f"{rng.randrange(10000, 99999)}",
        },
        "income": rng.randrange(20_000, 250_000),
        "consent": {"tcpa": True, "text": "I agree to be contacted - Zoë, 東京 ✓"},
        "tags": rng.sample(_TAGS, 3),
        "seen": None,
        "stage": TYPES[n % len(TYPES)],
        "score": round((n % 997) / 7, 6),
    }
    if n % 2:
        snapshot["appended.phone_check.carrier"] = ("Verizon", "T-Mobile", "AT&T")[n % 3]
    return snapshot


def make_event(n: int, *, bulky: bool = True) -> Event:
    """Event number ``n``: the same fields every time, id ``event_id(n)``."""
    rng = random.Random(n)
    etype = TYPES[n % len(TYPES)]
    recipient = etype.startswith("recipient.")
    outcome = Outcome(n % len(Outcome))
    return Event(
        type=etype,
        lead_id=LEADS[n % LEAD_COUNT],
        flow_id=f"flow-{n % 5}",
        id=event_id(n),
        timestamp_ms=BASE_MS + (n * 7_919) % DAY_MS,
        entity_id=f"buyer-{n % 7}" if recipient else "",
        outcome=outcome,
        reason=rng.choice(_REASONS) if outcome in (Outcome.FAILURE, Outcome.ERROR) else "",
        duration_ms=rng.randrange(5_000),
        integration="http-post" if recipient else "",
        response_code=rng.choice((200, 202, 400, 503)) if recipient else 0,
        price=f"{rng.randrange(-5, 100)}.{rng.randrange(100):02d}" if recipient else "",
        details=(
            {"attempt": n % 3, "latency_ms": round(rng.random() * 900, 3), "trace": f"{n:08x}"}
            if bulky
            else {}
        ),
        lead=lead_snapshot(n) if bulky else {},
        account_id=ACCOUNTS[n % len(ACCOUNTS)],
    )


def numbers_of_account(account_id: str, start: int, count: int) -> list[int]:
    """``count`` event numbers >= ``start`` whose events belong to ``account_id``."""
    residue = ACCOUNTS.index(account_id)
    first = start + (residue - start) % len(ACCOUNTS)
    return [first + i * len(ACCOUNTS) for i in range(count)]


def as_stored(event: Event, position: int, recorded_at_ms: int) -> Event:
    return dataclasses.replace(event, position=position, recorded_at_ms=recorded_at_ms)


def event_diff(actual: Event | None, expected: Event) -> list[str]:
    """Field-by-field differences, empty when the events are identical."""
    if actual is None:
        return [f"{expected.id} (position {expected.position}) is missing"]
    return [
        f"{expected.id}.{f.name}: stored {getattr(actual, f.name)!r}, expected {getattr(expected, f.name)!r}"
        for f in dataclasses.fields(Event)
        if f.compare and getattr(actual, f.name) != getattr(expected, f.name)
    ]


def append_numbers(log: EventLog, numbers: Sequence[int], *, bulky: bool = True) -> dict[str, Event]:
    """Append events ``numbers`` in one request; the stored events by id."""
    events = [make_event(n, bulky=bulky) for n in numbers]
    results = log.append(events)
    assert [r.id for r in results] == [e.id for e in events], "results out of request order"
    return {e.id: as_stored(e, r.position, r.recorded_at_ms) for e, r in zip(events, results, strict=True)}


# --------------------------------------------------------------------------
# Oracles: what a healthy store must look like
# --------------------------------------------------------------------------


def check_log(log: EventLog, *, gapless: bool = True) -> list[Event]:
    """Every event in position order, after checking the log-wide invariants."""
    report = log.verify()
    assert report.problems == [], f"verify() found problems: {report.problems}"
    events = list(log.read_from(1))
    positions = [e.position for e in events]
    last = log.last_position
    if gapless:
        assert positions == list(range(1, last + 1)), (
            f"positions not gapless 1..{last}: {summarize_gaps(positions, last)}"
        )
    else:
        assert positions == sorted(set(positions)), "positions not strictly increasing"
        assert not positions or positions[-1] <= last, "event past last_position"
    recorded = [e.recorded_at_ms for e in events]
    backwards = [i for i in range(1, len(recorded)) if recorded[i] < recorded[i - 1]]
    assert not backwards, f"recorded_at_ms goes backwards at position {positions[backwards[0]]}"
    ids = [(e.account_id, e.id) for e in events]
    assert len(set(ids)) == len(ids), "an id is stored twice"
    return events


def summarize_gaps(positions: list[int], last: int) -> str:
    seen = set(positions)
    missing = [p for p in range(1, last + 1) if p not in seen]
    return f"{len(positions)} events, last_position {last}, missing {missing[:10]}"


def matches(event: Event, flt: EventFilter) -> bool:
    """The filter semantics of the spec, written out plainly: the model."""
    if event.account_id != flt.account_id:
        return False
    if flt.types and not any(
        event.type == t or (t.endswith(".*") and event.type.startswith(t[:-1])) for t in flt.types
    ):
        return False
    if flt.lead_id and event.lead_id != flt.lead_id:
        return False
    if flt.flow_id and event.flow_id != flt.flow_id:
        return False
    if flt.entity_id and event.entity_id != flt.entity_id:
        return False
    if flt.outcomes and event.outcome not in flt.outcomes:
        return False
    ts = event.timestamp_ms or 0
    if flt.start_ms is not None and ts < flt.start_ms:
        return False
    return flt.end_ms is None or ts < flt.end_ms


def model_scan(events: Iterable[Event], flt: EventFilter, *, descending: bool = False) -> list[Event]:
    found = [e for e in events if matches(e, flt)]
    found.sort(key=lambda e: (e.timestamp_ms, e.position), reverse=descending)
    return found


def model_timeline(events: Iterable[Event], lead_id: str, account_id: str) -> list[Event]:
    return model_scan(events, EventFilter(account_id=account_id, lead_id=lead_id))


def scan_all(
    log: EventLog,
    flt: EventFilter,
    *,
    descending: bool = False,
    include_lead: bool = True,
    limit: int = 17,
) -> list[Event]:
    """Every page of a query, following cursors to the end."""
    found: list[Event] = []
    after: str | None = None
    for _ in range(100_000):
        page = log.scan(flt, after=after, limit=limit, descending=descending, include_lead=include_lead)
        found.extend(page.events)
        if page.cursor is None:
            return found
        after = page.cursor
    raise AssertionError(f"scan {flt} never reached its end")


def standard_filters(accounts: Iterable[str] = ACCOUNTS) -> list[EventFilter]:
    filters = []
    for a in accounts:
        filters += [
            EventFilter(account_id=a),
            EventFilter(account_id=a, types=("recipient.*",)),
            EventFilter(account_id=a, types=("source.submitted", "feedback.received")),
            EventFilter(account_id=a, lead_id=LEADS[3]),
            EventFilter(account_id=a, flow_id="flow-2"),
            EventFilter(account_id=a, entity_id="buyer-4"),
            EventFilter(account_id=a, outcomes=(Outcome.SUCCESS, Outcome.SKIP)),
            EventFilter(account_id=a, start_ms=BASE_MS + DAY_MS // 4, end_ms=BASE_MS + DAY_MS * 3 // 5),
            EventFilter(
                account_id=a,
                types=("source.*", "recipient.rejected"),
                outcomes=(Outcome.FAILURE, Outcome.ERROR, Outcome.UNSPECIFIED),
                start_ms=BASE_MS + DAY_MS // 10,
            ),
        ]
    return filters


def query_mismatches(
    log: EventLog,
    events: Sequence[Event],
    *,
    scans: int | None = None,
    filters: Sequence[EventFilter] | None = None,
    limit: int = 17,
) -> list[str]:
    """Where timeline/scan disagree with the model built from ``events`` (the log).

    Runs ``filters`` (default: the first ``scans`` of ``standard_filters``).
    """
    problems = []
    accounts = sorted({e.account_id for e in events} | {"default"})
    if filters is None:
        filters = standard_filters(accounts)[:scans]
    for flt in filters:
        for descending in (False, True):
            got = scan_all(log, flt, descending=descending, limit=limit)
            if got != model_scan(events, flt, descending=descending):
                problems.append(f"scan({flt}, descending={descending}) disagrees with the log")
    for account in accounts:
        for lead in LEADS[:5]:
            if log.timeline(lead, account_id=account) != model_timeline(events, lead, account):
                problems.append(f"timeline({lead!r}, {account!r}) disagrees with the log")
    return problems


def query_results(log: EventLog, ids: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """Everything a reader can see, by label: compare two stores with ``==``.

    ``ids`` are (account, id) pairs to look up, including ones that may be absent.
    """
    results: dict[str, Any] = {"last_position": log.last_position}
    results["read_from"] = list(log.read_from(1))
    for account, eid in ids:
        results[f"get {account}/{eid}"] = log.get(eid, account_id=account)
    for account in ACCOUNTS:
        for lead in LEADS:
            results[f"timeline {account}/{lead}"] = log.timeline(lead, account_id=account)
    for flt in standard_filters():
        results[f"scan {flt}"] = scan_all(log, flt)
        results[f"scan desc {flt}"] = scan_all(log, flt, descending=True, limit=7)
        results[f"scan nolead {flt}"] = scan_all(log, flt, include_lead=False, limit=50)
    return results


def result_differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    return [k for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k)]


# --------------------------------------------------------------------------
# Files that fail or crash on demand
# --------------------------------------------------------------------------


class InjectedFiles(Files):
    """Counts the write-path operations made while ``armed``.

    At the ``fail_at``-th one it raises ``OSError(error)`` (``sticky``: and at
    every later one except ``close``), or with ``crash`` ends the process
    with ``os._exit`` as a power cut would. A failing ``write`` first writes
    half of its bytes, as a disk that fills up mid-write does.
    """

    def __init__(
        self,
        fail_at: int | None = None,
        *,
        error: int = 5,
        sticky: bool = False,
        crash: bool = False,
    ) -> None:
        self.fail_at = fail_at
        self.error = error
        self.sticky = sticky
        self.crash = crash
        self.armed = False
        self.ops: list[str] = []
        self.fired: list[str] = []
        self._lock = threading.Lock()

    def _should_fail(self, op: str, target: object) -> bool:
        with self._lock:
            if not self.armed:
                return False
            self.ops.append(f"{op} {target}")
            count = len(self.ops)
            if self.fail_at is None:
                return False
            hit = count == self.fail_at or (self.sticky and count > self.fail_at and op != "close")
            if hit:
                self.fired.append(f"#{count} {op} {target}")
            return hit

    def _fail(self) -> None:
        if self.crash:
            os._exit(CRASH_EXIT)
        raise OSError(self.error, os.strerror(self.error))

    def open_for_append(self, path: str) -> int:
        if self._should_fail("open_for_append", os.path.basename(path)):
            self._fail()
        return super().open_for_append(path)

    def write(self, fd: int, data: bytes | memoryview) -> None:
        if self._should_fail("write", len(data)):
            view = memoryview(data)
            super().write(fd, view[: len(view) // 2])
            self._fail()
        super().write(fd, data)

    def fsync(self, fd: int) -> None:
        if self._should_fail("fsync", fd):
            self._fail()
        super().fsync(fd)

    def truncate(self, fd: int, size: int) -> None:
        if self._should_fail("truncate", size):
            self._fail()
        super().truncate(fd, size)

    def chmod(self, fd: int, mode: int) -> None:
        if self._should_fail("chmod", oct(mode)):
            self._fail()
        super().chmod(fd, mode)

    def close(self, fd: int) -> None:
        if self._should_fail("close", fd):
            self._fail()
        super().close(fd)

    def rename(self, src: str, dst: str) -> None:
        if self._should_fail("rename", f"{os.path.basename(src)}->{os.path.basename(dst)}"):
            self._fail()
        super().rename(src, dst)

    def remove(self, path: str) -> None:
        if self._should_fail("remove", os.path.basename(path)):
            self._fail()
        super().remove(path)

    def fsync_dir(self, path: str) -> None:
        if self._should_fail("fsync_dir", os.path.basename(path)):
            self._fail()
        super().fsync_dir(path)

    def make_directory(self, path: str) -> None:
        # Counted itself (the mkdir) and by the fsync_dir it makes.
        if self._should_fail("make_directory", os.path.basename(path)):
            self._fail()
        super().make_directory(path)


# --------------------------------------------------------------------------
# Bytes on disk (storage/FORMAT.md, parsed independently of the engine)
# --------------------------------------------------------------------------

SEGMENT_HEADER_SIZE = 24
RECORD_HEADER = struct.Struct("<2sBBIQI")  # magic, version, kind|flags, length, position, crc
KIND_EVENT, KIND_SEAL, FLAG_COMMIT, FLAG_WRITE_END = 1, 2, 0x80, 0x40


@dataclasses.dataclass(frozen=True)
class RecordSpan:
    offset: int
    size: int
    kind: int
    commit: bool
    position: int

    @property
    def end(self) -> int:
        return self.offset + self.size


def segment_paths(data_dir: Path) -> list[Path]:
    return sorted((data_dir / "log").glob("*.log"))


def segment_base(path: Path) -> int:
    return int(path.name.removesuffix(".log"))


def record_spans(path: Path) -> list[RecordSpan]:
    """The records of a healthy segment; raises ValueError on anything else."""
    data = path.read_bytes()
    if data[:8] != b"LTSEGMNT":
        raise ValueError(f"{path.name}: no segment header")
    spans = []
    offset = SEGMENT_HEADER_SIZE
    while offset < len(data):
        magic, version, kind_flags, length, position, _ = RECORD_HEADER.unpack_from(data, offset)
        if magic != b"LT" or version != 1:
            raise ValueError(f"{path.name}: no record at offset {offset}")
        size = RECORD_HEADER.size + length
        spans.append(RecordSpan(offset, size, kind_flags & 0x0F, bool(kind_flags & FLAG_COMMIT), position))
        offset += size
    if offset != len(data):
        raise ValueError(f"{path.name}: last record runs past the end of the file")
    return spans


def event_spans(path: Path) -> list[RecordSpan]:
    return [s for s in record_spans(path) if s.kind == KIND_EVENT]


# recorded_at and timestamp (u48 each, low u32 + high u16), codec, dictionary,
# positions back to the delta base, account length
EVENT_PREFIX = struct.Struct("<IHIHBHHB")


def delta_base(path: Path, span: RecordSpan) -> int:
    """The position whose snapshot an event record is a delta against (0: a full snapshot)."""
    with open(path, "rb") as f:
        f.seek(span.offset + RECORD_HEADER.size)
        prefix = f.read(EVENT_PREFIX.size)
    back = int(EVENT_PREFIX.unpack(prefix)[6])
    return span.position - back if back else 0


def segment_header(base: int) -> bytes:
    head = struct.pack("<8sB3xQ", b"LTSEGMNT", 1, base)
    return head + struct.pack("<I", crc32c(head))


def record(kind_flags: int, position: int, payload: bytes) -> bytes:
    head = struct.pack("<2sBBIQ", b"LT", 1, kind_flags, len(payload), position)
    return head + struct.pack("<I", crc32c(payload, crc32c(head))) + payload


def seal_record(path: Path) -> bytes:
    """The seal the writer appends to ``path`` when it rolls the segment."""
    data = path.read_bytes()
    events = event_spans(path)
    last = events[-1].position if events else 0
    payload = struct.pack("<IQQ", crc32c(data), len(events), last)
    return record(KIND_SEAL | FLAG_COMMIT, last, payload)


def flip_bit(path: Path, bit: int) -> None:
    with open(path, "r+b") as f:
        f.seek(bit // 8)
        (byte,) = f.read(1)
        f.seek(bit // 8)
        f.write(bytes([byte ^ (1 << (bit % 8))]))


def copy_store(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def stray_files(data_dir: Path) -> list[str]:
    """Files of a data directory that FORMAT.md does not name (temp files, leftovers)."""
    stray = []
    for root, _dirs, names in os.walk(data_dir):
        rel_root = Path(root).relative_to(data_dir)
        top = rel_root.parts[0] if rel_root.parts else ""
        for name in names:
            rel = rel_root / name
            if top == "index":
                ok = name in ("data.mdb", "lock.mdb")
            elif top == "log":
                ok = (
                    len(rel.parts) == 2
                    and len(name) == 24
                    and name[:20].isdigit()
                    and (name.endswith(".log"))
                )
            elif top == "dictionaries":
                # A ".retired" marker lives while an erasure replaces a dictionary.
                ok = (name.endswith(".zdict") and name[:-6].isdigit()) or (
                    name.endswith(".retired") and name[:-8].isdigit()
                )
            elif top == "quarantine":
                ok = name.endswith(".bad") or name == "REPORT.jsonl"
            else:
                ok = str(rel) in (
                    "LOCK",
                    "STORE_ID",
                    "retention.json",
                    "recorded_at.json",
                    "retired.json",
                    "fields.json",
                    "search.key",
                    "signing.key",
                    "retirements.json",
                )
            if not ok:
                stray.append(str(rel))
    return sorted(stray)


# --------------------------------------------------------------------------
# Child processes
# --------------------------------------------------------------------------

FAULTS_SCRIPT = Path(__file__).resolve()


def child_command(*args: str) -> list[str]:
    return [sys.executable, str(FAULTS_SCRIPT), *args]


def _emit(lock: threading.Lock, line: str) -> None:
    with lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def append_loop(args: argparse.Namespace) -> int:
    """Append random batches from several threads until killed.

    Prints ``SEND [ids]`` before and ``ACK [[id, position, recorded_at, dup]...]``
    after every append request, so the parent knows exactly what was
    acknowledged. First re-sends the batches listed in ``--resend`` (the
    requests in flight when the previous incarnation was killed), as a
    client retrying after a timeout does.
    """
    out = threading.Lock()
    log = EventLog.open(args.data_dir, Options(fsync=FsyncPolicy.parse(args.fsync)))
    _emit(out, "READY")
    resend: list[list[int]] = json.loads(Path(args.resend).read_text()) if args.resend else []
    deadline = time.monotonic() + args.max_seconds

    def send(numbers: list[int]) -> None:
        events = [make_event(n) for n in numbers]
        _emit(out, "SEND " + json.dumps(numbers))
        results = log.append(events)
        acks = [[r.id, r.position, r.recorded_at_ms, r.duplicate] for r in results]
        _emit(out, "ACK " + json.dumps(acks))

    def worker(thread_no: int) -> None:
        rng = random.Random(args.seed * 1_000 + thread_no)
        next_n = args.incarnation * 1_000_000 + thread_no * 100_000 + 1
        sent = 0
        previous: list[int] = []
        while sent < args.max_events and time.monotonic() < deadline:
            if previous and rng.random() < 0.05:
                send(previous)  # an idempotent retry of an acknowledged request
                continue
            size = rng.randint(1, 50)
            numbers = list(range(next_n, next_n + size))
            next_n += size
            sent += size
            send(numbers)
            previous = numbers
            time.sleep(rng.uniform(0, args.pause_ms / 1000))

    for numbers in resend:
        send(numbers)
    threads = [threading.Thread(target=worker, args=(t,), daemon=True) for t in range(args.threads)]
    for t in threads:
        t.start()
    while time.monotonic() < deadline:
        time.sleep(0.05)
    log.close()
    return 0


def retention_run(args: argparse.Namespace) -> int:
    """Apply retention with a Files that crashes at operation ``--crash-at``.

    Prints the operations it counted and the report when retention finishes.
    """
    files = InjectedFiles(args.crash_at, crash=True)
    now_ms = args.now_ms
    options = Options(segment_bytes=args.segment_bytes, files=files, clock_ms=lambda: now_ms)
    with EventLog.open(args.data_dir, options) as log:
        for policy in json.loads(args.policies):
            log.set_retention_policy(RetentionPolicy(**policy))
        files.armed = True
        report = log.apply_retention(now_ms)
        files.armed = False
    print(json.dumps({"ops": files.ops, "report": dataclasses.asdict(report)}), flush=True)
    return 0


def erase_run(args: argparse.Namespace) -> int:
    """Erase ``--lead`` of ``--account`` with a Files that crashes at operation ``--crash-at``."""
    files = InjectedFiles(args.crash_at, crash=True)
    options = Options(segment_bytes=args.segment_bytes, files=files, dictionary_training_samples=50)
    with EventLog.open(args.data_dir, options) as log:
        files.armed = True
        report = log.erase_lead(args.lead, args.account, requested_by="faults")
        files.armed = False
    assert report is not None
    print(json.dumps({"ops": files.ops, "report": dataclasses.asdict(report)}), flush=True)
    return 0


def reindex_run(args: argparse.Namespace) -> int:
    """Rebuild the index (and compact it) with a Files that crashes at operation ``--crash-at``."""
    files = InjectedFiles(args.crash_at, crash=True)
    options = Options(segment_bytes=args.segment_bytes, files=files)
    with EventLog.open(args.data_dir, options) as log:
        files.armed = True
        count = log.reindex()
        files.armed = False
    print(json.dumps({"ops": files.ops, "count": count}), flush=True)
    return 0


def appends_run(args: argparse.Namespace) -> int:
    """Append ``--requests`` with a Files that crashes at operation ``--crash-at``.

    Prints ``ACK [[id, position, recorded_at], ...]`` after each request returns.
    """
    files = InjectedFiles(args.crash_at, crash=True)
    options = Options(segment_bytes=args.segment_bytes, files=files)
    with EventLog.open(args.data_dir, options) as log:
        files.armed = True
        for numbers in json.loads(args.requests):
            results = log.append([make_event(n) for n in numbers])
            acks = [[r.id, r.position, r.recorded_at_ms] for r in results]
            print("ACK " + json.dumps(acks), flush=True)
        files.armed = False
    print("OPS " + json.dumps(files.ops), flush=True)
    return 0


def open_run(args: argparse.Namespace) -> int:
    """Open (recover) a store with a Files that crashes at operation ``--crash-at``."""
    files = InjectedFiles(args.crash_at, crash=True)
    files.armed = True
    options = Options(segment_bytes=args.segment_bytes, files=files, quarantine=args.quarantine)
    with EventLog.open(args.data_dir, options):
        files.armed = False
    print("OPS " + json.dumps(files.ops), flush=True)
    return 0


def results_digest(log: EventLog, numbers: Iterable[int]) -> str:
    """A fingerprint of ``query_results`` for the events ``numbers``."""
    ids = [(make_event(n).account_id, event_id(n)) for n in numbers]
    results = query_results(log, ids)
    return hashlib.sha256(repr(sorted(results.items())).encode()).hexdigest()


def digest_run(args: argparse.Namespace) -> int:
    """Open a store and print ``results_digest``: in a child, as opening may crash."""
    first, _, stop = args.numbers.partition(":")
    with EventLog.open(args.data_dir) as log:
        print(results_digest(log, range(int(first), int(stop))), flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    loop = commands.add_parser("append-loop")
    loop.add_argument("data_dir")
    loop.add_argument("--incarnation", type=int, required=True)
    loop.add_argument("--seed", type=int, default=0)
    loop.add_argument("--threads", type=int, default=4)
    loop.add_argument("--max-events", type=int, default=1_000)
    loop.add_argument("--max-seconds", type=float, default=30.0)
    loop.add_argument("--pause-ms", type=float, default=0.0, help="random pause between requests")
    loop.add_argument("--resend", default="")
    loop.add_argument("--fsync", default="always", help="always or interval:MS")
    retention = commands.add_parser("retention")
    retention.add_argument("data_dir")
    retention.add_argument("--crash-at", type=int, default=None)
    retention.add_argument("--now-ms", type=int, required=True)
    retention.add_argument("--segment-bytes", type=int, required=True)
    retention.add_argument("--policies", required=True)
    erase = commands.add_parser("erase")
    erase.add_argument("data_dir")
    erase.add_argument("--crash-at", type=int, default=None)
    erase.add_argument("--segment-bytes", type=int, required=True)
    erase.add_argument("--lead", required=True)
    erase.add_argument("--account", required=True)
    reindex = commands.add_parser("reindex")
    reindex.add_argument("data_dir")
    reindex.add_argument("--crash-at", type=int, default=None)
    reindex.add_argument("--segment-bytes", type=int, required=True)
    appends = commands.add_parser("appends")
    appends.add_argument("data_dir")
    appends.add_argument("--crash-at", type=int, default=None)
    appends.add_argument("--segment-bytes", type=int, required=True)
    appends.add_argument("--requests", required=True, help="JSON list of lists of event numbers")
    reopen = commands.add_parser("open")
    reopen.add_argument("data_dir")
    reopen.add_argument("--crash-at", type=int, default=None)
    reopen.add_argument("--segment-bytes", type=int, required=True)
    reopen.add_argument("--quarantine", action="store_true")
    digest = commands.add_parser("digest")
    digest.add_argument("data_dir")
    digest.add_argument("--numbers", required=True, help="FIRST:STOP")
    args = parser.parse_args(argv)
    runs: dict[str, Callable[[argparse.Namespace], int]] = {
        "append-loop": append_loop,
        "retention": retention_run,
        "erase": erase_run,
        "appends": appends_run,
        "reindex": reindex_run,
        "digest": digest_run,
        "open": open_run,
    }
    return runs[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
