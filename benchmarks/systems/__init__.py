"""The systems the comparison drives: one module each, all behind ``System`` and ``Session``.

A system starts its own server (a child process on 127.0.0.1, a free port, a
data directory of its own), stores the workload's events in its own schema and
answers the same questions: a lead's timeline, a type in a one-hour window, a
replay in commit order, a live feed. The harness times the calls and checks the
answers; a system only says how it does each thing, the way its users would.

A system that cannot be started here (binary or Python client not installed,
no user to run it as) raises ``Unavailable`` from ``check()`` or ``start()``,
and the report lists it as missing with that reason.
"""

from __future__ import annotations

import abc
import asyncio
import importlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from leadtrail.server.simulation import SimulatedEvent

from benchmarks.workload import Workload

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

INGEST_SINGLE_1 = "ingest_single_1"
INGEST_SINGLE_16 = "ingest_single_16"
INGEST_BATCH = "ingest_batch_100"
TIMELINE_1 = "timeline_1"
TIMELINE_4 = "timeline_4"
TIMELINE_16 = "timeline_16"
SCAN = "scan"
REPLAY = "replay"
LIVE = "live"
DISK = "disk"
EVERYTHING = frozenset(
    {INGEST_SINGLE_1, INGEST_SINGLE_16, INGEST_BATCH, TIMELINE_1, TIMELINE_4, TIMELINE_16, SCAN, REPLAY,
     LIVE, DISK}
)  # fmt: skip
WRITES = frozenset({INGEST_SINGLE_1, INGEST_SINGLE_16, INGEST_BATCH, LIVE})

Received = Callable[[str], None]
"""Called by a live follower with the id of each event it receives, as it receives it."""


class Unavailable(Exception):
    """The system cannot run on this machine; the message says why (and what to install)."""


class Session(abc.ABC):
    """One client connection, as one process of the user's application would hold it."""

    @abc.abstractmethod
    async def append(self, events: Sequence[Any]) -> None:
        """Store prepared events in one request, all or none; return once they are acknowledged
        (durable under the system's setting)."""

    async def timeline(self, lead_id: str) -> int | None:
        """A lead's events with their snapshots, in timestamp order; how many there were."""
        raise NotImplementedError

    async def scan(self, event_type: str, start_ms: int, end_ms: int) -> int | None:
        """Events of one type with ``start_ms <= timestamp < end_ms``, with their snapshots; how many."""
        raise NotImplementedError

    @abc.abstractmethod
    async def close(self) -> None: ...


class System(abc.ABC):
    """A store under test: how to start it, prepare events for it and read from it."""

    key: ClassVar[str]
    """Stable name, used by ``--only`` (``postgres``, ``redis``...)."""
    label: str
    measures: frozenset[str] = EVERYTHING
    checked: ClassVar[bool] = True
    """Whether its answers can be checked; only the empty gRPC ceiling has none."""
    peer: ClassVar[bool] = True
    """Another store LeadTrail is compared with; not the ceilings, nor LeadTrail in another setting."""

    def __init__(self) -> None:
        self.directory = ""
        self.version = ""

    @property
    @abc.abstractmethod
    def setting(self) -> str:
        """The durability setting, as the table shows it."""

    @property
    def name(self) -> str:
        """``key`` plus the setting where one system runs under several."""
        return self.key

    def check(self) -> None:
        """Raise ``Unavailable`` when the binaries or the Python client are missing (no side effects)."""
        return None

    def use(self, work: Workload) -> None:
        """Take what the system needs of the workload before its first start (a store needs nothing)."""
        return None

    @abc.abstractmethod
    async def start(self, directory: str) -> None:
        """Start a fresh server with its data in ``directory`` and create the schema."""

    @abc.abstractmethod
    async def stop(self) -> None: ...

    @abc.abstractmethod
    def prepare(self, events: Sequence[SimulatedEvent]) -> list[Any]:
        """The events in the form the system's client sends, made before any clock starts."""

    @abc.abstractmethod
    async def session(self) -> Session: ...

    async def replay(self) -> int:
        """Read every stored event, snapshot included, in commit (``recorded_at``) order; how many."""
        raise NotImplementedError

    async def follow(self, received: Received, ready: asyncio.Event) -> None:
        """Follow new events live, calling ``received(event_id)`` for each, until cancelled;
        set ``ready`` once nothing published from then on can be missed."""
        raise NotImplementedError

    async def stored(self) -> int:
        """How many events the store holds now (to check that acknowledged means stored)."""
        raise NotImplementedError

    async def settle(self) -> None:
        """Bring the data directory to what the system keeps on disk (e.g. a checkpoint)."""
        return None

    def disk_bytes(self) -> int:
        """Bytes the data directory takes on disk (allocated blocks, as ``du``)."""
        return directory_bytes(self.directory)

    def notes(self) -> list[str]:
        """What a reader must know to read this system's figures."""
        return []


# --------------------------------------------------------------------------- helpers


def directory_bytes(path: str) -> int:
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_blocks * 512
            except FileNotFoundError:  # a file removed while walking (a rotated WAL segment)
                pass
    return total


def free_port() -> int:
    """A port free on 127.0.0.1 now; the server binding it next is the only race, and a rare one."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def find_binary(name: str, *extra_dirs: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    for folder in extra_dirs:
        candidate = os.path.join(folder, name)
        if os.access(candidate, os.X_OK):
            return candidate
    raise Unavailable(f"{name} not found (bash benchmarks/install_peers.sh installs it)")


def require_client(module: str, package: str) -> None:
    """A peer's Python client must be importable (``pip install '.[bench]'``)."""
    try:
        importlib.import_module(module)
    except ImportError:
        raise Unavailable(f"Python client {package} not installed (pip install '.[bench]')") from None


def command_output(argv: Sequence[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


@dataclass
class RunAs:
    """The user a server runs as: PostgreSQL refuses to run as root."""

    uid: int
    gid: int
    name: str


class ChildProcess:
    """A server started by the harness, known by its pid, stopped by signalling that pid."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: str,
        *,
        stop_signal: int = signal.SIGTERM,
        run_as: RunAs | None = None,
        stop_group: bool = False,
    ) -> None:
        self.name = name
        self.log_path = log_path
        self.stop_signal = stop_signal
        self.stop_group = stop_group
        """Whether stop() also ends what is left of the child's process group (its own workers)."""
        with open(log_path, "wb") as log:  # the child keeps its own descriptor
            self.process = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                user=run_as.uid if run_as else None,
                group=run_as.gid if run_as else None,
                extra_groups=[] if run_as else None,
                # Its own session, so a Ctrl-C meant for the harness reaches the
                # server only through stop(), after the harness is done with it.
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, size: int = 2000) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as log:
                return log.read()[-size:]
        except OSError:
            return ""

    def running(self) -> bool:
        return self.process.poll() is None

    async def ready_line(self, pattern: str, timeout_s: float = 60.0) -> re.Match[str]:
        """Wait for ``pattern`` in the server's output (its ready line) and return the match."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = re.search(pattern, self.log_tail(1 << 20))
            if found:
                return found
            if not self.running():
                break
            await asyncio.sleep(0.05)
        raise Unavailable(f"{self.name} did not start: {self.log_tail()}")

    async def wait_until(self, probe: Callable[[], Any], timeout_s: float = 60.0) -> None:
        """Wait until the async ``probe()`` succeeds (the server answers), or fail with its log."""
        deadline = time.monotonic() + timeout_s
        error: BaseException | None = None
        while time.monotonic() < deadline:
            if not self.running():
                break
            try:
                await probe()
                return
            except Exception as e:  # not answering yet: the last reason is reported at the deadline
                error = e
            await asyncio.sleep(0.1)
        raise Unavailable(f"{self.name} did not start ({error!r}): {self.log_tail()}")

    def stop(self, timeout_s: float = 60.0) -> None:
        if self.process.poll() is None:
            os.kill(self.pid, self.stop_signal)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.process.wait()
        if self.stop_group:
            # The child leads its own session and group (start_new_session): whatever is left in
            # that group is its own children, which must not outlive it.
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
