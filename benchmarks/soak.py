"""A soak: a real server under a mixed load for N minutes, every answer checked against an oracle.

    python benchmarks/soak.py --minutes N [--seed S] [--json FILE] [--warmup S] [--data DIR]

``leadtrail serve`` runs in a child process on a loopback port the OS picks, with API keys
(an admin, a writer and a reader key of the operator account ``default``; an admin and a
writer key of a second account, ``shortlived``, whose events expire after
``RetentionPolicy.max_age_seconds``: min(60, 20 x N) s, retention applied every minute, every
20 s in runs under 3 minutes, so that a 1-minute run expires events too). Client threads of
this process, each with the SDK, then for N minutes:

- append batches of events and single events with ids chosen here (a retry after a
  failure sends the same ids, so nothing is stored twice), to both accounts;
- read events back by id (admin key: every field compared) and leads' timelines (reader
  key: personal values masked, the rest compared), and scan flows with QueryEvents pages;
- follow the account with subscriptions that stop after a few seconds and resume after
  the last position they saw;
- erase leads whose journey is over, apply retention, rotate the writer key
  (a new key, the writers switch, the old one is revoked and must then be refused),
  verify receipts of appends with ``Client.verify_receipt``, run an export job and
  download its file, keep a files sink and an alert rule running, take a backup now and
  then (``leadtrail backup``) and walk the chain (``leadtrail verify --chain``).

The oracle is what the server acknowledged. An acknowledged event must be readable by id,
in its lead's timeline, in its flow's scan, in the subscriptions and in the sink's files,
equal to what was sent, unless retention (its age passed the account's cutoff) or an
erasure (its personal values read ``[erased]``) explains the difference. Subscriptions
must deliver in position order with no acknowledged position missing. Receipts must hold,
and the chain walk must be clean.

Each minute records appends/s, reads/s, the p99 latency of every kind of call, the server's
resident memory (``/proc/PID/status``: VmRSS, and RssAnon, its private part) and open file
descriptors (``/proc/PID/fd``: all, those of the log's segment files, those of files since
deleted) and the errors by kind, the expected ones (NOT_FOUND of an expired event,
UNAUTHENTICATED of a key revoked while a call was on its way) apart from the unexpected ones.
The verdict: memory flat (the last minute's RssAnon within 20% of the half-way minute's,
minute 2 in runs of 3 or 4 minutes: the server's bounded caches take several minutes to fill,
and mapped LMDB pages, in VmRSS, grow with the data; growth against minute 2 is reported
too), no file descriptor growth (besides segment files, the last minute's highest count at
most ``FD_SLACK`` above minute 2's; segment descriptors within the server's bound,
``--max-open-segments`` ``MAX_OPEN_SEGMENTS``, small so that the segment files outgrow it,
plus the writer's and the reads under way; none of a deleted file), 0 wrong answers and 0
unexpected errors, the server stopped cleanly; the exit status is 1 otherwise. The table shows
the total RSS and fds too, and the segment descriptors (segfd) beside the segment files.

Retention: the server measures ages on its own clock at the call (a client's ``now`` is
refused once keys exist), somewhere between the call's start and its answer here. So an
event recorded before (answer - max age) may be gone (within ``EXPIRY_MARGIN_MS``, and any
time while a call runs), and one recorded before (start - max age) of a call that had
answered before a read began must be gone from that read: either is a wrong answer the
other way. The verdict requires that retention expired events.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any

from leadtrail.client import (
    AlertKind,
    Client,
    Event,
    EventFilter,
    FilesTarget,
    LeadTrailError,
    NotFoundError,
    Outcome,
    UnauthenticatedError,
    new_event_id,
)
from leadtrail.server.keys import KeyStore
from leadtrail.v1 import admin_pb2, admin_pb2_grpc

ROOT = Path(__file__).resolve().parents[1]
LEADTRAIL = [sys.executable, "-m", "leadtrail.server.cli"]
MAIN = "default"
SHORT = "shortlived"
EXPIRY_MARGIN_MS = 1_000
"""Around the server's retention cutoff an event may be either present or expired: the clocks
are the same machine's, the margin covers millisecond rounding and the moment of the call."""
ERASED = "[erased]"
RSS_TOLERANCE = 0.20
"""The last minute's private resident memory (RssAnon) may exceed the half-way minute's by at most this."""
FD_SLACK = 8
MAX_OPEN_SEGMENTS = 16
"""The server's bound on segment read descriptors in the soak (default 128): small, so that
the soak's segment files (one more with each erasure and retention call, which seal the
active segment) outgrow it within minutes and the cache's eviction is under load."""
READS_IN_FLIGHT = 16
"""Segment descriptors a bounded cache may hold beyond its bound: one per read under way
(the soak's reader threads, subscriptions, the sink, an export) and the writer's own."""
"""Connections come and go (subscriptions resume, backups connect): a few descriptors of play."""
SAMPLE_EVERY_S = 5.0
TYPES = ("soak.submitted", "soak.validated", "soak.enriched", "soak.delivered", "soak.feedback")
SINK = "soak-lake"
EXPORT_JOB = "soak-minutely"
ALERT_RULE = "soak-errors"
ALERT_BURST = 6


# --------------------------------------------------------------------------- the oracle


def millis(moment: datetime | None) -> int:
    return 0 if moment is None else int(moment.timestamp() * 1000)


@dataclass
class Sent:
    """An event as this process sent it, and what the server acknowledged of it."""

    event: Event
    account: str
    position: int = 0
    recorded_at_ms: int = 0
    chain_hash: bytes = b""


@dataclass
class Erasure:
    done: bool = False


class Oracle:
    """Everything acknowledged, and what retention and erasure may have changed since."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.attempted: set[str] = set()
        self.acked: dict[str, Sent] = {}
        self.order: list[Sent] = []
        """``acked`` in a list, to draw from without copying (the soak must not slow itself down)."""
        self.by_position: dict[int, Sent] = {}
        self.by_lead: dict[str, list[str]] = defaultdict(list)
        self.by_flow: dict[str, list[str]] = defaultdict(list)
        self.closed_leads: dict[str, list[str]] = {MAIN: [], SHORT: []}
        self.erasures: dict[str, Erasure] = {}
        self.max_age_ms: dict[str, int] = {MAIN: 0, SHORT: 0}
        """Each account's retention age (0: kept forever)."""
        self.expiry_cutoff_ms: dict[str, int] = {MAIN: 0, SHORT: 0}
        """The latest cutoff a retention call that has answered may have used: its answer - max age."""
        self.expired_below_ms: dict[str, int] = {MAIN: 0, SHORT: 0}
        """The earliest cutoff the last call that answered may have used: its start - max age."""
        self.retention_running: dict[str, bool] = {MAIN: False, SHORT: False}
        self.wrong: list[str] = []
        self.wrong_count = 0

    def attempt(self, events: Sequence[Event]) -> None:
        with self.lock:
            self.attempted.update(e.id for e in events)

    def acknowledge(self, sent: Sent) -> None:
        with self.lock:
            known = self.acked.get(sent.event.id)
            if known is not None:
                if known.position != sent.position:
                    self._wrong(f"{sent.event.id}: acknowledged at {known.position}, then at {sent.position}")
                return
            self.acked[sent.event.id] = sent
            self.order.append(sent)
            self.by_position[sent.position] = sent
            self.by_lead[sent.event.lead_id].append(sent.event.id)
            self.by_flow[sent.event.flow_id].append(sent.event.id)

    def wrong_answer(self, text: str) -> None:
        with self.lock:
            self._wrong(text)

    def _wrong(self, text: str) -> None:
        self.wrong_count += 1
        if len(self.wrong) < 50:
            self.wrong.append(text)

    def may_be_gone(self, sent: Sent) -> bool:
        """Whether retention may have removed it: recorded before (or about when) the last cutoff,
        or before the cutoff a call running now may use."""
        age = self.max_age_ms[sent.account]
        if not age:
            return False
        cutoff = self.expiry_cutoff_ms[sent.account]
        if self.retention_running[sent.account]:
            cutoff = max(cutoff, int(time.time() * 1000) - age)
        return sent.recorded_at_ms < cutoff + EXPIRY_MARGIN_MS

    def retention_started(self, account: str) -> None:
        with self.lock:
            self.retention_running[account] = True

    def retention_answered(self, account: str, began_ms: int, answered_ms: int, done: bool) -> None:
        """A retention call is over; ``done`` when it answered (a failed one may have removed
        some events, but need not have removed any)."""
        age = self.max_age_ms[account]
        with self.lock:
            self.retention_running[account] = False
            self.expiry_cutoff_ms[account] = max(self.expiry_cutoff_ms[account], answered_ms - age)
            if done:
                self.expired_below_ms[account] = max(self.expired_below_ms[account], began_ms - age)

    def expired_floors(self) -> dict[str, int]:
        """Taken before a read: what the read must no longer show, recorded before these."""
        with self.lock:
            return {
                account: below - EXPIRY_MARGIN_MS if self.max_age_ms[account] else 0
                for account, below in self.expired_below_ms.items()
            }

    def check_expired(self, sent: Sent, floors: dict[str, int], where: str) -> None:
        """``sent`` was in an answer: wrong when a retention call that had answered before the
        read began must have removed it."""
        if sent.recorded_at_ms < floors[sent.account]:
            self.wrong_answer(
                f"{where} {sent.event.id}: recorded at {sent.recorded_at_ms}, still there after "
                f"retention removed what was recorded before {floors[sent.account] + EXPIRY_MARGIN_MS}"
            )

    def erasure_state(self, lead_id: str) -> Erasure | None:
        with self.lock:
            return self.erasures.get(lead_id)

    def erased(self) -> frozenset[str]:
        """The leads whose erasure had returned: taken before a read, every answer must show them erased."""
        with self.lock:
            return frozenset(lead for lead, erasure in self.erasures.items() if erasure.done)

    def pick(self, rng: random.Random) -> Sent | None:
        with self.lock:
            return rng.choice(self.order) if self.order else None

    def snapshot(self) -> list[Sent]:
        with self.lock:
            return list(self.acked.values())

    def compare(self, sent: Sent, got: Event, *, masked: bool, where: str, erased: frozenset[str]) -> None:
        """Every field of ``got`` as sent; personal values as an erasure or a mask leaves them.
        ``erased``: the leads whose erasure had returned before the read began (an erasure that
        ran during the read may show either way)."""
        want = sent.event
        problems = []
        pairs: list[tuple[str, Any, Any]] = [
            ("type", want.type, got.type),
            ("lead_id", want.lead_id, got.lead_id),
            ("flow_id", want.flow_id, got.flow_id),
            ("entity_id", want.entity_id, got.entity_id),
            ("outcome", int(want.outcome), int(got.outcome)),
            ("reason", want.reason, got.reason),
            ("price", want.price, got.price),
            ("timestamp", millis(want.timestamp), millis(got.timestamp)),
            ("details", want.details, got.details),
            ("position", sent.position, got.position),
            ("lead.state", want.lead.get("state"), got.lead.get("state")),
            ("lead.score", want.lead.get("score"), got.lead.get("score")),
        ]
        for name, expected, actual in pairs:
            if expected != actual:
                problems.append(f"{name} {actual!r} != {expected!r}")
        email = got.lead.get("email")
        erasure = self.erasure_state(want.lead_id)
        if masked:
            if email == want.lead["email"]:
                problems.append(f"lead.email {email!r} unmasked for a reader")
        elif erasure is None:
            if email != want.lead["email"]:
                problems.append(f"lead.email {email!r} != {want.lead['email']!r}")
        elif want.lead_id in erased:
            if email != ERASED:
                problems.append(f"lead.email {email!r} after the lead's erasure")
        elif email not in (ERASED, want.lead["email"]):
            problems.append(f"lead.email {email!r} during the lead's erasure")
        if problems:
            self.wrong_answer(f"{where} {want.id}: {'; '.join(problems)}")


# --------------------------------------------------------------------------- measurements


@dataclass
class Minute:
    """What one minute of the soak did."""

    index: int
    appended: int = 0
    reads: int = 0
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    expected_errors: Counter[str] = field(default_factory=Counter)
    unexpected_errors: Counter[str] = field(default_factory=Counter)
    rss_kib: list[int] = field(default_factory=list)
    anon_kib: list[int] = field(default_factory=list)
    """RssAnon: the heap and other private memory, where a leak shows. The rest (RssFile) is
    libraries and the LMDB index's pages, mapped and growing with the data."""
    fds: list[int] = field(default_factory=list)
    segment_fds: list[int] = field(default_factory=list)
    segment_files: list[int] = field(default_factory=list)
    deleted_fds: list[int] = field(default_factory=list)
    subscribed: int = 0
    retention_removed: int = 0

    def row(self) -> dict[str, Any]:
        return {
            "minute": self.index,
            "appends_per_s": round(self.appended / 60, 1),
            "reads_per_s": round(self.reads / 60, 1),
            "subscribed_per_s": round(self.subscribed / 60, 1),
            "p99_ms": {kind: round(p99(values), 2) for kind, values in sorted(self.latencies.items())},
            "calls": {kind: len(values) for kind, values in sorted(self.latencies.items())},
            "rss_mib": round(max(self.rss_kib, default=0) / 1024, 1),
            "rss_last_mib": round((self.rss_kib[-1] if self.rss_kib else 0) / 1024, 1),
            "anon_mib": round(max(self.anon_kib, default=0) / 1024, 1),
            "anon_last_mib": round((self.anon_kib[-1] if self.anon_kib else 0) / 1024, 1),
            "fds_max": max(self.fds, default=0),
            "fds_last": self.fds[-1] if self.fds else 0,
            "other_fds_max": max((a - b for a, b in zip(self.fds, self.segment_fds, strict=True)), default=0),
            "segment_fds_last": self.segment_fds[-1] if self.segment_fds else 0,
            "segment_fds_max": max(self.segment_fds, default=0),
            "segment_files_last": self.segment_files[-1] if self.segment_files else 0,
            "deleted_fds_max": max(self.deleted_fds, default=0),
            "retention_removed": self.retention_removed,
            "expected_errors": dict(self.expected_errors),
            "unexpected_errors": dict(self.unexpected_errors),
        }


def p99(values: list[float]) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


class Clock:
    """Which minute it is, and the record of each."""

    def __init__(self, warmup_s: float, minutes: int) -> None:
        self.lock = threading.Lock()
        self.started = time.monotonic()
        self.measured_from = self.started + warmup_s
        self.ends = self.measured_from + minutes * 60
        self.warmup = Minute(0)
        self.minutes = [Minute(i + 1) for i in range(minutes)]
        self.stopping = threading.Event()

    def current(self) -> Minute:
        now = time.monotonic()
        if now < self.measured_from:
            return self.warmup
        return self.minutes[min(len(self.minutes) - 1, int((now - self.measured_from) // 60))]

    def running(self) -> bool:
        return not self.stopping.is_set() and time.monotonic() < self.ends

    def sleep(self, seconds: float) -> bool:
        """Sleep unless the soak ends first; whether it still runs."""
        remaining = self.ends - time.monotonic()
        self.stopping.wait(max(0.0, min(seconds, remaining)))
        return self.running()

    def timed(self, kind: str, began: float) -> None:
        elapsed_ms = (time.perf_counter() - began) * 1000
        with self.lock:
            self.current().latencies[kind].append(elapsed_ms)

    def count(self, *, appended: int = 0, reads: int = 0, subscribed: int = 0) -> None:
        with self.lock:
            minute = self.current()
            minute.appended += appended
            minute.reads += reads
            minute.subscribed += subscribed

    def error(self, kind: str, error: BaseException, expected: bool) -> None:
        name = f"{kind}: {type(error).__name__}"
        with self.lock:
            minute = self.current()
            (minute.expected_errors if expected else minute.unexpected_errors)[name] += 1
        if not expected:
            print(f"soak: unexpected {name}: {error}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- the server


@dataclass
class FdCount:
    total: int = 0
    segments: int = 0
    """Descriptors of the log's segment files: the engine's bounded cache, the writer's, reads under way."""
    deleted: int = 0
    """Descriptors of files no longer in any directory: what a leak looks like."""
    segment_files: int = 0


class Server:
    """``leadtrail serve`` in a child process, from its ready line to SIGTERM."""

    def __init__(self, data: Path) -> None:
        self.data = data
        self.log_path = data.parent / "server.log"
        argv = [*LEADTRAIL, "serve", "--data", str(data), "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0"]
        argv += ["--max-open-segments", str(MAX_OPEN_SEGMENTS)]
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            text = self.log_path.read_text(errors="replace")
            if "serving on " in text:
                self.address = text.split("serving on ", 1)[1].split()[0].rstrip(";,")
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"leadtrail serve did not start:\n{self.log_path.read_text(errors='replace')}")

    @property
    def pid(self) -> int:
        return self.process.pid

    def memory_kib(self) -> tuple[int, int]:
        """(VmRSS, RssAnon) of the server process."""
        found = {}
        with open(f"/proc/{self.pid}/status", encoding="ascii") as status:
            for line in status:
                name, _, value = line.partition(":")
                if name in ("VmRSS", "RssAnon"):
                    found[name] = int(value.split()[0])
        return found.get("VmRSS", 0), found.get("RssAnon", 0)

    def open_fds(self) -> FdCount:
        """The server's descriptors: all, those of segment files, those of files since deleted."""
        count = FdCount(segment_files=len(list((self.data / "log").glob("*.log"))))
        directory = f"/proc/{self.pid}/fd"
        for name in os.listdir(directory):
            try:
                target = os.readlink(os.path.join(directory, name))
            except FileNotFoundError:  # closed meanwhile
                continue
            count.total += 1
            if target.endswith(" (deleted)"):
                count.deleted += 1
            elif target.startswith(str(self.data / "log")) and target.endswith(".log"):
                count.segments += 1
        return count

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def create_keys(data: Path, wanted: dict[str, tuple[str, str]]) -> dict[str, tuple[str, str]]:
    """Keys made before the server starts, as ``leadtrail keys create`` makes them (in this process:
    five CLI runs would cost seconds of the 1-minute run in the test suite): name -> (secret, id)."""
    store = KeyStore(str(data))
    made = {}
    for name, (account, role) in wanted.items():
        secret, key = store.create(account, role, int(time.time() * 1000))
        made[name] = (secret, key.key_id)
    return made


class WriterKeys:
    """The writer key in use, rotated: a new key, the writers switch, then the old one is revoked.

    Clients of retired keys are closed two rotations later, when no call can still hold them."""

    def __init__(self, address: str, key: str, key_id: str) -> None:
        self.address = address
        self.lock = threading.Lock()
        self.key = key
        self.client = Client(address, api_key=key)
        self.key_id = key_id
        self.revoked: set[str] = set()
        self.retired: list[Client] = []

    def current(self) -> tuple[str, Client]:
        with self.lock:
            return self.key, self.client

    def switch(self, key: str, key_id: str) -> tuple[str, str]:
        with self.lock:
            old_key, old_id = self.key, self.key_id
            self.retired.append(self.client)
            self.key, self.key_id, self.client = key, key_id, Client(self.address, api_key=key)
        while len(self.retired) > 2:
            self.retired.pop(0).close()
        return old_key, old_id

    def was_revoked(self, key: str) -> bool:
        with self.lock:
            return key in self.revoked

    def close(self) -> None:
        for client in [*self.retired, self.client]:
            client.close()


# --------------------------------------------------------------------------- the load


class Soak:
    def __init__(self, args: argparse.Namespace, root: Path) -> None:
        self.args = args
        self.root = root
        self.data = root / "data"
        self.data.mkdir()
        self.rng = random.Random(args.seed)
        self.oracle = Oracle()
        made = create_keys(
            self.data,
            {
                "admin": (MAIN, "admin"),
                "writer": (MAIN, "writer"),
                "reader": (MAIN, "reader"),
                "short_admin": (SHORT, "admin"),
                "short_writer": (SHORT, "writer"),
            },
        )
        self.keys = {name: secret for name, (secret, _) in made.items()}
        self.server = Server(self.data)
        address = self.server.address
        self.admin = Client(address, api_key=self.keys["admin"])
        self.reader = Client(address, api_key=self.keys["reader"])
        self.short_admin = Client(address, api_key=self.keys["short_admin"])
        self.short_writer = Client(address, api_key=self.keys["short_writer"])
        self.writers = WriterKeys(address, *made["writer"])
        self.clock = Clock(args.warmup, args.minutes)
        self.final: dict[str, Any] = {}
        self.alert_burst_sent = False
        self.retention_age_s = min(60, args.minutes * 20)
        """The ``shortlived`` account's max age: short enough that even a 1-minute run expires events."""
        self.retention_every_s = 60 if args.minutes >= 3 else 20

    # -- plumbing

    def call(
        self, kind: str, work: Callable[[], Any], *, expect: Callable[[LeadTrailError], bool] | None = None
    ) -> Any:
        """Run one call, timed; a failure is counted (expected when ``expect`` says so) and None returned."""
        began = time.perf_counter()
        try:
            result = work()
        except LeadTrailError as error:
            self.clock.error(kind, error, expected=expect is not None and expect(error))
            return None
        except Exception as error:  # a bug of the soak itself or of the SDK: never hidden
            self.clock.error(kind, error, expected=False)
            traceback.print_exc()
            return None
        self.clock.timed(kind, began)
        return result

    def worker(self, name: str, body: Callable[[random.Random], None]) -> threading.Thread:
        seed = self.rng.randrange(1 << 30)

        def run() -> None:
            rng = random.Random(seed)
            try:
                while self.clock.running():
                    body(rng)
            except Exception as error:
                self.clock.error(f"worker {name}", error, expected=False)
                traceback.print_exc()

        thread = threading.Thread(target=run, name=name, daemon=True)
        thread.start()
        return thread

    # -- appends

    def journey(self, rng: random.Random, account: str, prefix: str, count: int) -> list[Event]:
        """A lead's events: ids chosen here, a personal email, plain state and score, a price."""
        lead = f"{prefix}-{new_event_id()[-10:].lower()}"
        flow = f"flow-{account}-{int((time.monotonic() - self.clock.started) // 20)}-{rng.randrange(3)}"
        email = f"{lead}@example.com"
        start_ms = int(time.time() * 1000) - count * 1000
        events = []
        for step in range(count):
            events.append(
                Event(
                    TYPES[min(step, len(TYPES) - 1)],
                    lead_id=lead,
                    flow_id=flow,
                    id=new_event_id(),
                    timestamp=datetime.fromtimestamp((start_ms + step * 1000) / 1000, UTC),
                    entity_id=f"buyer-{rng.randrange(5)}",
                    outcome=Outcome.SUCCESS if rng.random() < 0.8 else Outcome.FAILURE,
                    reason=f"step {step}",
                    duration_ms=rng.randrange(1, 500),
                    price=Decimal(rng.randrange(-500, 5000)) / 100,
                    details={"step": step, "attempt": rng.randrange(3)},
                    lead={"email": email, "state": rng.choice(("CA", "TX", "NY")), "score": step * 7},
                )
            )
        return events

    def append(self, kind: str, account: str, events: list[Event]) -> None:
        """Append until acknowledged: a retry sends the same ids, so nothing is stored twice."""
        self.oracle.attempt(events)
        for _ in range(5):
            if account == MAIN:
                key, client = self.writers.current()
            else:
                key, client = self.keys["short_writer"], self.short_writer

            def revoked(error: LeadTrailError, key: str = key) -> bool:
                return isinstance(error, UnauthenticatedError) and self.writers.was_revoked(key)

            payload: Event | list[Event] = events[0] if len(events) == 1 else events
            results = self.call(kind, partial(client.append, payload), expect=revoked)
            if results is None:
                time.sleep(0.05)
                continue
            results = [results] if len(events) == 1 else results
            for event, result in zip(events, results, strict=True):
                if result.id != event.id or result.position <= 0:
                    self.oracle.wrong_answer(f"append {event.id}: answered {result}")
                    continue
                self.oracle.acknowledge(
                    Sent(event, account, result.position, millis(result.recorded_at), result.chain_hash)
                )
            self.clock.count(appended=len(events))
            return
        self.oracle.wrong_answer(f"append of {len(events)} events ({events[0].id}...): never acknowledged")

    def batch_appender(self, rng: random.Random) -> None:
        events: list[Event] = []
        leads = []
        while len(events) < 20:
            journey = self.journey(rng, MAIN, "lead", rng.randint(3, 6))
            leads.append(journey[0].lead_id)
            events += journey
        self.append("append_batch", MAIN, events)
        with self.oracle.lock:
            self.oracle.closed_leads[MAIN].extend(leads)
        # Paced: a soak is about lasting under a steady load, not about the most a shared machine takes.
        self.clock.sleep(rng.uniform(0.1, 0.3))

    def single_appender(self, rng: random.Random) -> None:
        """One lead's journey, an event at a time; now and then a burst the alert rule counts."""
        account = MAIN if rng.random() < 0.7 else SHORT
        journey = self.journey(rng, account, "single" if account == MAIN else "short", rng.randint(2, 4))
        for event in journey:
            self.append("append_single", account, [event])
        with self.oracle.lock:
            self.oracle.closed_leads[account].append(journey[0].lead_id)
        if account == MAIN and not self.alert_burst_sent and time.monotonic() > self.clock.measured_from:
            self.alert_burst_sent = True
            burst = [replace(e, type="soak.error") for e in self.journey(rng, MAIN, "alert", ALERT_BURST)]
            self.append("append_batch", MAIN, burst)
        self.clock.sleep(rng.uniform(0.02, 0.1))

    # -- reads

    def expected_missing(self, sent: Sent) -> Callable[[LeadTrailError], bool]:
        def expected(error: LeadTrailError) -> bool:
            if not isinstance(error, NotFoundError):
                return False
            if self.oracle.may_be_gone(sent):
                return True
            oracle = self.oracle
            with oracle.lock:  # what the oracle knew: to tell a retention race from a loss
                known = (oracle.expiry_cutoff_ms[sent.account], oracle.expired_below_ms[sent.account])
                running = oracle.retention_running[sent.account]
            print(
                f"soak: {sent.event.id} of {sent.account} (lead {sent.event.lead_id}, position "
                f"{sent.position}) recorded at {sent.recorded_at_ms} not found at {int(time.time() * 1000)}; "
                f"retention cutoffs {known}{', a call running' if running else ''}",
                file=sys.stderr,
                flush=True,
            )
            return False

        return expected

    def client_of(self, account: str) -> Client:
        return self.admin if account == MAIN else self.short_admin

    def reader_loop(self, rng: random.Random) -> None:
        sent = self.oracle.pick(rng)
        if sent is None:
            self.clock.sleep(0.2)
            return
        client = self.client_of(sent.account)
        erased = self.oracle.erased()
        floors = self.oracle.expired_floors()
        got = self.call("get", partial(client.get, sent.event.id), expect=self.expected_missing(sent))
        self.clock.count(reads=1)
        if got is not None:
            self.oracle.compare(sent, got, masked=False, where="get", erased=erased)
            self.oracle.check_expired(sent, floors, "get")
        # A lead's timeline, through the reader key (masked) for the operator account.
        sent = self.oracle.pick(rng) or sent
        lead = sent.event.lead_id
        with self.oracle.lock:
            ids = list(self.oracle.by_lead[lead])
        masked = sent.account == MAIN
        client = self.reader if masked else self.short_admin
        erased = self.oracle.erased()
        floors = self.oracle.expired_floors()
        timeline = self.call("timeline", lambda: client.timeline(lead), expect=self.expected_missing(sent))
        self.clock.count(reads=1)
        if timeline is not None:
            steps = {step.event.id: step.event for step in timeline.steps}
            for event_id in ids:
                known = self.oracle.acked[event_id]
                if event_id in steps:
                    self.oracle.compare(
                        known, steps[event_id], masked=masked, where=f"timeline {lead}", erased=erased
                    )
                    self.oracle.check_expired(known, floors, f"timeline {lead}")
                elif not self.oracle.may_be_gone(known):
                    self.oracle.wrong_answer(f"timeline {lead}: acknowledged {event_id} missing")
            positions = [step.event.position for step in timeline.steps]
            if positions != sorted(positions):
                self.oracle.wrong_answer(f"timeline {lead}: steps out of position order")
        self.clock.sleep(rng.uniform(0.0, 0.01))

    def scanner(self, rng: random.Random) -> None:
        """A flow's events page by page (QueryEvents), set against what was acknowledged before."""
        with self.oracle.lock:
            flows = [f for f in self.oracle.by_flow if f.startswith(f"flow-{MAIN}-")]
        if not flows:
            self.clock.sleep(0.2)
            return
        flow = rng.choice(flows)
        with self.oracle.lock:
            before = list(self.oracle.by_flow[flow])
        seen: dict[str, Event] = {}
        erased = self.oracle.erased()
        token = ""
        while True:
            page = self.call(
                "query_page",
                partial(
                    self.admin.query_page, flow_id=flow, include_lead=True, page_size=200, page_token=token
                ),
            )
            self.clock.count(reads=1)
            if page is None:
                return
            events, token = page
            for event in events:
                if event.id in seen:
                    self.oracle.wrong_answer(f"scan {flow}: {event.id} twice")
                seen[event.id] = event
            if not token:
                break
        for event_id in before:
            known = self.oracle.acked[event_id]
            if event_id in seen:
                self.oracle.compare(known, seen[event_id], masked=False, where=f"scan {flow}", erased=erased)
            elif not self.oracle.may_be_gone(known):
                self.oracle.wrong_answer(f"scan {flow}: acknowledged {event_id} missing")
        with self.oracle.lock:
            unknown = [i for i in seen if i not in self.oracle.attempted]
        if unknown:
            self.oracle.wrong_answer(f"scan {flow}: events never sent: {unknown[:3]}")
        stamps = [(millis(e.timestamp), e.position) for e in seen.values()]
        if stamps != sorted(stamps):
            self.oracle.wrong_answer(f"scan {flow}: pages out of (timestamp, position) order")
        self.clock.sleep(rng.uniform(0.05, 0.2))

    def subscriber(self, rng: random.Random, state: dict[str, int]) -> None:
        """A session of a few seconds, resumed after the last position of the one before."""
        after = state.get("position", 0)
        session_s = min(rng.uniform(2.0, 8.0), max(0.1, self.clock.ends - time.monotonic()))
        seen: list[int] = []
        began = time.perf_counter()
        try:
            with self.reader.subscribe(after_position=after, types="soak.*", reconnect=False) as subscription:
                ends = time.monotonic() + session_s
                stopper = threading.Timer(session_s, subscription.stop)
                stopper.start()
                try:
                    for item in subscription:
                        if not isinstance(item, Event):
                            continue
                        seen.append(item.position)
                        with self.oracle.lock:
                            known = self.oracle.acked.get(item.id)
                            sent_here = item.id in self.oracle.attempted
                        if not sent_here:
                            self.oracle.wrong_answer(f"subscription: {item.id} was never sent")
                        elif known is not None and known.position != item.position:
                            self.oracle.wrong_answer(
                                f"subscription: {item.id} at {item.position}, "
                                f"acknowledged at {known.position}"
                            )
                        if time.monotonic() >= ends or not self.clock.running():
                            break
                finally:
                    stopper.cancel()
        except LeadTrailError as error:
            self.clock.error("subscribe", error, expected=False)
            self.clock.sleep(0.5)
            return
        self.clock.timed("subscribe_session", began)
        self.clock.count(subscribed=len(seen))
        if seen != sorted(set(seen)) or (seen and seen[0] <= after):
            self.oracle.wrong_answer(f"subscription after {after}: positions out of order or repeated")
        if not seen:
            return
        last = seen[-1]
        delivered = set(seen)
        with self.oracle.lock:
            expected = [self.oracle.by_position.get(p) for p in range(after + 1, last + 1)]
        missing = [
            s.event.id
            for s in expected
            if s is not None
            and s.account == MAIN
            and s.position not in delivered
            and not self.oracle.may_be_gone(s)
        ]
        if missing:
            self.oracle.wrong_answer(f"subscription ({after}, {last}]: {len(missing)} acknowledged missing")
        state["position"] = last

    # -- administration

    def erase_one(self, rng: random.Random) -> None:
        with self.oracle.lock:
            candidates = [lead for lead in self.oracle.closed_leads[MAIN] if lead not in self.oracle.erasures]
            if not candidates:
                return
            lead = rng.choice(candidates[-200:])
            self.oracle.erasures[lead] = Erasure()
        report = self.call("erase", lambda: self.admin.erase_lead(lead, reason="soak request"))
        if report is None:
            return
        with self.oracle.lock:
            self.oracle.erasures[lead].done = True
            count = len(self.oracle.by_lead[lead])
        if report.events_erased != count:
            self.oracle.wrong_answer(
                f"erase {lead}: {report.events_erased} events erased, {count} acknowledged"
            )

    def apply_retention(self) -> None:
        # The server's cutoff is its clock at the call, minus the age: between these two, here.
        self.oracle.retention_started(SHORT)
        began_ms = int(time.time() * 1000)
        report = None
        try:
            report = self.call("retention", self.short_admin.apply_retention)
        finally:
            self.oracle.retention_answered(SHORT, began_ms, int(time.time() * 1000), report is not None)
        if report is None:
            return
        with self.clock.lock:
            self.clock.current().retention_removed += report.events_removed

    def rotate_key(self) -> None:
        stub = admin_pb2_grpc.AdminServiceStub(self.admin.channel)

        def create() -> admin_pb2.CreateKeyResponse:
            return stub.CreateKey(
                admin_pb2.CreateKeyRequest(role="writer"), metadata=self.admin.metadata, timeout=30
            )

        created = self.call("rotate_key", create)
        if created is None:
            return
        old_key, old_id = self.writers.switch(created.key, created.info.key_id)
        with self.writers.lock:
            self.writers.revoked.add(old_key)
        self.call(
            "revoke_key",
            lambda: stub.RevokeKey(
                admin_pb2.RevokeKeyRequest(key_id=old_id), metadata=self.admin.metadata, timeout=30
            ),
        )
        with Client(self.server.address, api_key=old_key) as old:
            probe = self.journey(random.Random(0), MAIN, "revoked", 1)
            try:
                old.append(probe[0])
            except UnauthenticatedError:
                pass
            except LeadTrailError as error:
                self.clock.error("revoked key", error, expected=False)
            else:
                self.oracle.wrong_answer("rotate: a revoked writer key could still append")

    def check_receipts(self, rng: random.Random) -> None:
        drawn = (self.oracle.pick(rng) for _ in range(10))
        for sent in [s for s in drawn if s is not None and s.account == MAIN and s.chain_hash]:
            holds = self.call(
                "receipt",
                partial(self.admin.verify_receipt, sent.position, sent.chain_hash),
                expect=self.expected_missing(sent),
            )
            if holds is False:
                self.oracle.wrong_answer(f"receipt of {sent.event.id} at {sent.position} does not hold")

    def cli(self, kind: str, *args: str) -> None:
        began = time.perf_counter()
        done = subprocess.run(
            [*LEADTRAIL, *args, "--server", self.server.address, "--api-key", self.keys["admin"]],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if done.returncode != 0:
            self.oracle.wrong_answer(
                f"leadtrail {args[0]} exited {done.returncode}: {done.stdout}{done.stderr}"
            )
            return
        self.clock.timed(kind, began)

    def backup(self) -> None:
        target = self.root / "backup"
        self.cli("backup", "backup", "--to", str(target))
        shutil.rmtree(target, ignore_errors=True)

    def export_run(self) -> None:
        exported = self.call("export_job", lambda: self.admin.run_export_job(EXPORT_JOB))
        if exported is None:
            return
        body = self.call(
            "export_download", lambda: self.admin.download_export_file(EXPORT_JOB, exported.name)
        )
        if body is None:
            return
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        if len(lines) != exported.rows:
            self.oracle.wrong_answer(
                f"export {exported.name}: {len(lines)} lines, {exported.rows} rows announced"
            )
        with self.oracle.lock:
            unknown = [line["id"] for line in lines if line["id"] not in self.oracle.attempted]
        if unknown:
            self.oracle.wrong_answer(f"export {exported.name}: events never sent: {unknown[:3]}")

    def administrator(self) -> None:
        """The operator's periodic work, one task at a time, on a fixed schedule."""
        rng = random.Random(self.args.seed + 1)
        schedule: list[tuple[float, float, Callable[[], None]]] = [
            # (first at s, then every s, task)
            (5, 8, lambda: self.erase_one(rng)),
            (3, self.retention_every_s, self.apply_retention),
            (10, 30, self.rotate_key),
            (7, 15, lambda: self.check_receipts(rng)),
            (20, 40, self.export_run),
            (25, 180, self.backup),
            (40, 150, lambda: self.cli("verify_chain", "verify", "--chain")),
        ]
        due = [first for first, _, _ in schedule]
        while self.clock.running():
            now = time.monotonic() - self.clock.started
            for i, (_, every, task) in enumerate(schedule):
                if now >= due[i] and self.clock.running():
                    try:
                        task()
                    except Exception as error:  # counted, and the schedule goes on
                        self.clock.error("administrator", error, expected=False)
                        traceback.print_exc()
                    due[i] = time.monotonic() - self.clock.started + every
            self.clock.sleep(0.2)

    def sampler(self) -> None:
        while not self.clock.stopping.is_set() and time.monotonic() < self.clock.ends + 1:
            try:
                (rss, anon), fds = self.server.memory_kib(), self.server.open_fds()
            except OSError as error:
                self.clock.error("server process", error, expected=False)
                return
            with self.clock.lock:
                minute = self.clock.current()
                minute.rss_kib.append(rss)
                minute.anon_kib.append(anon)
                minute.fds.append(fds.total)
                minute.segment_fds.append(fds.segments)
                minute.segment_files.append(fds.segment_files)
                minute.deleted_fds.append(fds.deleted)
            self.clock.stopping.wait(SAMPLE_EVERY_S)

    # -- the run

    def configure(self) -> None:
        policy = self.short_admin.set_retention_policy(SHORT, max_age_seconds=self.retention_age_s)
        self.oracle.max_age_ms[SHORT] = policy.max_age_seconds * 1000
        self.admin.set_alert_rule(
            ALERT_RULE,
            kind=AlertKind.COUNT,
            filter=EventFilter(types=("soak.error",)),
            threshold=Decimal(ALERT_BURST - 1),
            window_s=60,
        )
        self.admin.set_sink(
            SINK,
            target=FilesTarget("lake", format="jsonl", rotate_events=2000, rotate_seconds=5),
            filter=EventFilter(types=("soak.*",)),
            start="start",
        )
        self.admin.set_export_job(
            EXPORT_JOB,
            format="jsonl",
            every_s=60,
            lookback_s=120,
            keep_days=1,
            filter=EventFilter(types=("soak.*",)),
        )

    def run(self) -> None:
        self.configure()
        threads = [
            self.worker("batch-1", self.batch_appender),
            self.worker("batch-2", self.batch_appender),
            self.worker("single-1", self.single_appender),
            self.worker("single-2", self.single_appender),
            self.worker("reader", self.reader_loop),
            self.worker("scanner", self.scanner),
        ]
        for n in range(2):
            state: dict[str, int] = {}
            threads.append(self.worker(f"subscriber-{n}", partial(self.subscriber, state=state)))
        for target in (self.administrator, self.sampler):
            threads.append(threading.Thread(target=target, daemon=True))
            threads[-1].start()
        self.progress(threads)
        for thread in threads:
            thread.join(120)
            if thread.is_alive():
                self.oracle.wrong_answer(f"{thread.name} did not finish within 120 s of the end")
        self.final_checks()

    def progress(self, threads: list[threading.Thread]) -> None:
        shown = 0
        while self.clock.running():
            self.clock.sleep(1.0)
            finished = int((time.monotonic() - self.clock.measured_from) // 60)
            if finished > shown and finished <= len(self.clock.minutes):
                print(format_row(self.clock.minutes[finished - 1].row()), file=sys.stderr, flush=True)
                shown = finished
        self.clock.stopping.set()

    def final_checks(self) -> None:
        """Everything acknowledged, read back in one scan; the sink's files; the alert; the chain."""
        began = time.perf_counter()
        acked = self.oracle.snapshot()
        erased = self.oracle.erased()
        floors = self.oracle.expired_floors()
        for account, client in ((MAIN, self.admin), (SHORT, self.short_admin)):
            stored = {e.id: e for e in client.query(types="soak.*", include_lead=True, page_size=1000)}
            for sent in acked:
                if sent.account != account:
                    continue
                if sent.event.id in stored:
                    self.oracle.compare(
                        sent, stored[sent.event.id], masked=False, where="final scan", erased=erased
                    )
                    self.oracle.check_expired(sent, floors, "final scan")
                elif not self.oracle.may_be_gone(sent):
                    self.oracle.wrong_answer(f"final scan: acknowledged {sent.event.id} missing")
            self.final[f"{account}_events_stored"] = len(stored)
        self.check_sink_files(acked)
        self.check_alert()
        report = self.admin.verify_chain()
        self.final["chain_checked"] = report.chain_checked
        if report.problems or report.first_bad_position:
            self.oracle.wrong_answer(
                f"verify_chain: {report.problems[:3]} first bad {report.first_bad_position}"
            )
        if not self.clock.minutes[-1].latencies.get("verify_chain"):
            self.cli("verify_chain", "verify", "--chain")  # unless the CLI walked it in the last minute
        self.final["final_checks_s"] = round(time.perf_counter() - began, 1)
        self.final["acknowledged"] = len(acked)
        minutes = [self.clock.warmup, *self.clock.minutes]
        self.final["retention_removed"] = sum(m.retention_removed for m in minutes)
        self.final["retention_age_s"] = self.retention_age_s
        with self.oracle.lock:
            self.final["erased_leads"] = sum(1 for e in self.oracle.erasures.values() if e.done)

    def check_sink_files(self, acked: list[Sent]) -> None:
        """The files sink: every acknowledged event up to the last one in its complete files, in
        order, once (the files still open are not waited for: ``rotate_seconds`` closes them)."""
        status = self.admin.get_sink_status(SINK)
        directory = self.data / "sink-files" / MAIN / "lake"
        positions: list[int] = []
        for path in sorted(directory.glob("events-*.jsonl"), key=lambda p: int(p.name.split("-")[1])):
            for line in path.read_text().splitlines():
                if line.strip():
                    positions.append(int(json.loads(line)["position"]))
        self.final["sink_delivered_position"] = status.delivered_position
        self.final["sink_events_in_files"] = len(positions)
        if positions != sorted(set(positions)):
            self.oracle.wrong_answer("sink files: positions out of order or repeated")
        delivered = set(positions)
        upto = max(positions, default=0)
        missing = [
            s.event.id
            for s in acked
            if s.account == MAIN
            and s.position <= upto
            and s.position not in delivered
            and not self.oracle.may_be_gone(s)
        ]
        if missing:
            self.oracle.wrong_answer(
                f"sink files: {len(missing)} acknowledged events missing, e.g. {missing[:3]}"
            )

    def check_alert(self) -> None:
        deadline = time.monotonic() + 10
        alerts = self.admin.list_alerts(rule=ALERT_RULE)
        while not alerts and time.monotonic() < deadline:
            time.sleep(0.5)
            alerts = self.admin.list_alerts(rule=ALERT_RULE)
        self.final["alerts"] = len(alerts)
        if self.alert_burst_sent and not alerts:
            self.oracle.wrong_answer(f"alert {ALERT_RULE}: {ALERT_BURST} soak.error events, no alert")

    def close(self) -> int:
        for client in (self.admin, self.reader, self.short_admin, self.short_writer):
            client.close()
        self.writers.close()
        return self.server.stop()


# --------------------------------------------------------------------------- the verdict


def verdict(minutes: list[dict[str, Any]], wrong: int, status: int, retention_removed: int) -> dict[str, Any]:
    reference = minutes[1] if len(minutes) >= 3 else minutes[0]
    # Memory against the run's half-way minute (minute 2 in a 3- or 4-minute run): the server's
    # bounded caches (the feed's 32 MiB of encodings, the writer's 16 MiB of last snapshots, ...)
    # fill over the first minutes at a soak's rate; a leak keeps growing after they are full.
    settled = minutes[max(2, len(minutes) // 2) - 1] if len(minutes) >= 3 else minutes[0]
    last = minutes[-1]

    def growth(key: str, base: dict[str, Any]) -> float:
        return float(last[key] / base[key] - 1) if base[key] else 0.0

    rss_growth = growth("rss_last_mib", settled)
    anon_growth = growth("anon_last_mib", settled)
    fd_growth = last["fds_max"] - reference["fds_max"]
    other_fd_growth = last["other_fds_max"] - reference["other_fds_max"]
    unexpected = sum(sum(m["unexpected_errors"].values()) for m in minutes)
    expected = sum(sum(m["expected_errors"].values()) for m in minutes)
    checks = {
        # On the private memory: mapped index pages grow with the data and are given back on demand.
        "flat_memory": anon_growth <= RSS_TOLERANCE,
        # Segment files come with the data (and with every erasure and retention call, which seal
        # the active segment); their descriptors are bounded by the server's cache, the rest flat.
        "no_fd_growth": other_fd_growth <= FD_SLACK,
        "segment_fds_bounded": all(
            m["segment_fds_max"] <= MAX_OPEN_SEGMENTS + READS_IN_FLIGHT for m in minutes
        ),
        "no_deleted_files_held": all(m["deleted_fds_max"] == 0 for m in minutes),
        "no_wrong_answers": wrong == 0,
        "no_unexpected_errors": unexpected == 0,
        "server_stopped_cleanly": status == 0,
        # The shortlived account's age is seconds: every run outlives it, so retention must expire some.
        "retention_expired_events": retention_removed > 0,
    }
    return {
        "pass": all(checks.values()),
        "checks": checks,
        "reference_minute": reference["minute"],
        "memory_reference_minute": settled["minute"],
        "anon_growth_from_minute_2": round(growth("anon_last_mib", reference), 3),
        "rss_growth": round(rss_growth, 3),
        "anon_growth": round(anon_growth, 3),
        "fd_growth": fd_growth,
        "other_fd_growth": other_fd_growth,
        "segment_growth": last["segment_files_last"] - reference["segment_files_last"],
        "wrong_answers": wrong,
        "unexpected_errors": unexpected,
        "expected_errors": expected,
        "server_exit_status": status,
        "retention_removed": retention_removed,
    }


def format_row(row: dict[str, Any]) -> str:
    p99s = row["p99_ms"]
    kinds = ("append_batch", "append_single", "get", "timeline", "query_page")
    latencies = " ".join(f"{p99s.get(k, 0):7.1f}" for k in kinds)
    return (
        f"{row['minute']:>4} {row['appends_per_s']:>9.1f} {row['reads_per_s']:>8.1f} {latencies} "
        f"{row['rss_last_mib']:>8.1f} {row['anon_last_mib']:>6.1f} "
        f"{row['fds_max']:>5} {row['other_fds_max']:>5} {row['segment_fds_max']:>5} "
        f"{row['segment_files_last']:>5} {sum(row['expected_errors'].values()):>5} "
        f"{sum(row['unexpected_errors'].values()):>5}"
    )


HEADER = (
    " min  appends/s  reads/s   p99 ms: batch  single     get timeline    scan"
    "  RSS MiB  anon   fds other segfd  segs  exp. unexp."
)


def table(rows: list[dict[str, Any]]) -> Iterator[str]:
    yield HEADER
    for row in rows:
        yield format_row(row)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--minutes", type=int, default=10, help="minutes of measured load (default 10)")
    parser.add_argument("--seed", type=int, default=19, help="seed of the load's choices (default 19)")
    parser.add_argument("--json", dest="json_path", help="write the per-minute rows and the verdict here")
    parser.add_argument(
        "--warmup", type=float, default=15.0, help="seconds of load before minute 1 (default 15)"
    )
    parser.add_argument("--data", help="directory for the server's data (default: a temporary one, removed)")
    args = parser.parse_args(argv)
    if args.minutes < 1:
        parser.error("--minutes: at least 1")
    if args.warmup < 0:
        parser.error("--warmup: 0 or more seconds")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="leadtrail-soak-", dir=args.data))
    began = time.perf_counter()
    soak = Soak(args, root)
    print(
        f"soak: server pid {soak.server.pid} on {soak.server.address}, {args.minutes} min "
        f"after {args.warmup:g} s of warm-up, seed {args.seed}, data {soak.data}",
        file=sys.stderr,
        flush=True,
    )
    print(HEADER, file=sys.stderr, flush=True)
    status = 1
    try:
        soak.run()
    finally:
        status = soak.close()
    rows = [minute.row() for minute in soak.clock.minutes]
    result = verdict(rows, soak.oracle.wrong_count, status, soak.final.get("retention_removed", 0))
    print("\n".join(table(rows)))
    final = soak.final
    print(
        f"acknowledged {final.get('acknowledged', 0):,} events, erased {final.get('erased_leads', 0)} leads, "
        f"chain checked {final.get('chain_checked', 0):,}, sink files "
        f"{final.get('sink_events_in_files', 0):,} events, alerts {final.get('alerts', 0)}, "
        f"retention removed {final.get('retention_removed', 0):,} events older than "
        f"{final.get('retention_age_s', 0)} s, final checks {final.get('final_checks_s', 0)} s"
    )
    for text in soak.oracle.wrong[:20]:
        print(f"WRONG: {text}")
    checks = " ".join(f"{name}={'ok' if ok else 'FAIL'}" for name, ok in result["checks"].items())
    print(
        f"verdict: {'PASS' if result['pass'] else 'FAIL'} ({checks}; RSS {result['rss_growth']:+.1%}, "
        f"anon {result['anon_growth']:+.1%} against minute {result['memory_reference_minute']} "
        f"(anon {result['anon_growth_from_minute_2']:+.1%} against minute {result['reference_minute']}), "
        f"fds {result['fd_growth']:+d} "
        f"(other {result['other_fd_growth']:+d}, segments {result['segment_growth']:+d}), "
        f"{result['expected_errors']} expected errors)"
    )
    if args.json_path:
        payload = {
            "minutes": args.minutes,
            "seed": args.seed,
            "warmup_s": args.warmup,
            "elapsed_s": round(time.perf_counter() - began, 1),
            "cpus": os.cpu_count(),
            "rows": rows,
            "warmup": soak.clock.warmup.row(),
            "final": soak.final,
            "wrong": soak.oracle.wrong,
            "verdict": result,
        }
        Path(args.json_path).write_text(json.dumps(payload, indent=2) + "\n")
    if args.data is None:
        shutil.rmtree(root, ignore_errors=True)
    return 0 if result["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
