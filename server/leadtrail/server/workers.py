"""``leadtrail serve --workers N``: N processes on one port, one of them the writer.

The supervisor (this process) serves nothing itself. It checks the options as a
single server would, reserves the port (a socket bound with ``SO_REUSEPORT`` and
never listening: the port stays this server's while workers come and go, and
port 0 becomes one port for all), then starts worker 0, the writer
(worker_role.py), waits until it serves, and starts the followers. The ready
line is printed once, when all N serve. A worker that dies is started again: a
follower at once, the writer with recovery, as a restarted single server would
be (followers reconnect to it on their own). SIGTERM/SIGINT stops the followers
first, so that the appends they forwarded finish, then the writer.

Each worker is ``python -m leadtrail.server.workers`` with its role as JSON; it
reports its ready line on a pipe and dies with the supervisor.
"""

from __future__ import annotations

import ctypes
import dataclasses
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

from . import app
from .keys import KeyStore, KeyStoreError
from .worker_role import WorkerRole

READY_SECONDS = 120.0
"""A writer recovering a large log may take a while before it serves."""
STOP_SECONDS = 30.0
RESTART_BACKOFF_SECONDS = (0.1, 5.0)
SOCKET_NAME = "writer.sock"
PORT_WAIT_SECONDS = 2.0


@dataclass
class _Worker:
    role: WorkerRole
    proc: subprocess.Popen[bytes]
    ready: int
    """Read end of the pipe the worker writes its ready line to."""
    started: float = field(default_factory=time.monotonic)


def _bind(host: str, port: int, shared: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    bound = socket.socket(family, socket.SOCK_STREAM)
    bound.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as grpc's own listeners
    if shared:
        bound.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        bound.bind((host.strip("[]"), port))
    except OSError as e:
        bound.close()
        raise app.StartupError(f"--listen {host}:{port}: cannot bind ({e.strerror or e})") from None
    return bound


def _reserve(host: str, port: int) -> socket.socket:
    """The port, for this server's workers only. ``SO_REUSEPORT`` would also let another
    server of the same user share a port in use: a plain bind first proves it free."""
    deadline = time.monotonic() + PORT_WAIT_SECONDS
    while True:
        try:
            probe = _bind(host, port, shared=False)
            break
        except app.StartupError:
            # The workers of a supervisor just killed may hold it a moment longer.
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    port = probe.getsockname()[1]
    probe.close()
    return _bind(host, port, shared=True)


def _check(config: app.ServerConfig) -> tuple[str, int]:
    """The options a worker would refuse, refused once, here."""
    credentials = app.server_credentials(config)
    try:
        configured = KeyStore(config.data).configured()
    except KeyStoreError as e:
        raise app.StartupError(f"API keys: {e}") from None
    return app.check_listen(config.listen, config.insecure, credentials is not None, configured)


class Supervisor:
    def __init__(self, config: app.ServerConfig, count: int) -> None:
        self.config = config
        self.count = count
        self._workers: dict[int, _Worker] = {}
        self._stopping = False
        self._serving = False
        """Set once all N serve: before, a failed start says only what the worker said."""
        self._failures: dict[int, int] = {}

    def run(self) -> int:
        try:
            host, port = _check(self.config)
        except app.StartupError as e:
            print(f"leadtrail: {e}", file=sys.stderr)
            return 1
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._stop)
        reserved: socket.socket | None = None
        private = tempfile.mkdtemp(prefix="leadtrail-")  # mode 0700: this user's only
        try:
            reserved = _reserve(host, port)
            port = reserved.getsockname()[1]
            listen = f"{host}:{port}"
            config = dataclasses.replace(self.config, listen=listen)
            socket_path = os.path.join(private, SOCKET_NAME)
            roles = [WorkerRole(i, self.count, socket_path) for i in range(self.count)]
            # All at once: each spends its first second importing, and the followers
            # wait for the writer's first notice on their own.
            started = [self._spawn(config, role) for role in roles]
            line = self._wait_ready(started[0])
            if line is None:
                return self._failed_start(0)
            for worker in started[1:]:
                if self._wait_ready(worker) is None:
                    return self._failed_start(worker.role.index)
            self._serving = True
            for worker in self._workers.values():
                self._tell(worker)
            head, sep, http = line.rstrip().partition("; http on ")
            print(f"{head.rstrip(')')}, {self.count} workers){sep}{http}", flush=True)
            self._supervise(config)
            return self._stop_all()
        except app.StartupError as e:
            print(f"leadtrail: {e}", file=sys.stderr)
            self._stop_all()
            return 1
        finally:
            if reserved is not None:
                reserved.close()
            shutil.rmtree(private, ignore_errors=True)

    def _stop(self, signum: int, frame: object) -> None:
        self._stopping = True

    def _start(self, config: app.ServerConfig, role: WorkerRole) -> str | None:
        """Start the worker of ``role`` and wait until it serves: its ready line, or None."""
        return self._wait_ready(self._spawn(config, role))

    def _spawn(self, config: app.ServerConfig, role: WorkerRole) -> _Worker:
        ready, announce = os.pipe()
        argument = json.dumps({"config": dataclasses.asdict(config), "role": dataclasses.asdict(role)})
        proc = subprocess.Popen(
            [sys.executable, "-m", "leadtrail.server.workers", argument, str(announce)],
            pass_fds=(announce,),
        )
        os.close(announce)
        worker = self._workers[role.index] = _Worker(role, proc, ready)
        if self._serving:
            self._tell(worker)
        return worker

    def _tell(self, worker: _Worker) -> None:
        role = worker.role
        line = f"leadtrail: worker {role.index} ({role.name}) pid {worker.proc.pid}"
        print(line, file=sys.stderr, flush=True)

    def _wait_ready(self, worker: _Worker) -> str | None:
        received = b""
        deadline = time.monotonic() + READY_SECONDS
        try:
            while time.monotonic() < deadline and not self._stopping:
                readable, _, _ = select.select([worker.ready], [], [], 0.2)
                if not readable:
                    continue
                chunk = os.read(worker.ready, 4096)
                if not chunk:  # written and closed, or the worker died first
                    break
                received += chunk
        finally:
            os.close(worker.ready)
            worker.ready = -1
        line = received.decode(errors="replace").strip()
        return line or None

    def _failed_start(self, index: int) -> int:
        """A worker did not come up: the others, serving nothing yet, are killed."""
        worker = self._workers[index]
        status = worker.proc.poll()
        for other in self._workers.values():
            if other.proc.poll() is None:
                other.proc.kill()
            other.proc.wait()
            if other.ready >= 0:
                os.close(other.ready)
                other.ready = -1
        return status if status else 1

    def _supervise(self, config: app.ServerConfig) -> None:
        while not self._stopping:
            time.sleep(0.05)
            for index, worker in sorted(self._workers.items()):
                status = worker.proc.poll()
                if status is None or self._stopping:
                    continue
                print(
                    f"leadtrail: worker {index} ({worker.role.name}) exited with status {status}; restarting",
                    file=sys.stderr,
                    flush=True,
                )
                self._pause_before_restart(index, worker)
                if self._stopping:
                    break
                if self._start(config, worker.role) is not None:
                    again = f"leadtrail: worker {index} ({worker.role.name}) serving again"
                    print(again, file=sys.stderr, flush=True)

    def _pause_before_restart(self, index: int, worker: _Worker) -> None:
        # A worker that dies at once again and again (a damaged store, a full disk) is
        # restarted ever more slowly rather than in a busy loop.
        quick = time.monotonic() - worker.started < 2.0
        failures = self._failures[index] = self._failures.get(index, 0) + 1 if quick else 0
        first, longest = RESTART_BACKOFF_SECONDS
        delay = min(first * (2**failures), longest) if failures else 0.0
        deadline = time.monotonic() + delay
        while time.monotonic() < deadline and not self._stopping:
            time.sleep(0.05)

    def _stop_all(self) -> int:
        """Followers first (their forwarded calls finish at the writer), then the writer;
        returns the writer's exit status."""
        if self._serving:
            print("leadtrail: shutting down", file=sys.stderr, flush=True)
        followers = [w for i, w in self._workers.items() if i]
        writer = self._workers.get(0)
        for group in (followers, [writer] if writer else []):
            for worker in group:
                if worker.proc.poll() is None:
                    worker.proc.send_signal(signal.SIGTERM)
            for worker in group:
                try:
                    worker.proc.wait(STOP_SECONDS)
                except subprocess.TimeoutExpired:
                    worker.proc.kill()
                    worker.proc.wait()
        return writer.proc.returncode if writer is not None and writer.proc.returncode > 0 else 0


def supervise(config: app.ServerConfig, workers: int) -> int:
    """Serve ``config`` with ``workers`` processes until SIGTERM/SIGINT."""
    return Supervisor(config, workers).run()


def _die_with_parent() -> None:
    """A worker never outlives its supervisor (Linux): a supervisor killed is a server
    killed, so its workers are killed too and free the port and the data directory at
    once for the next start (what they acknowledged is on disk already)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def main(argv: list[str]) -> int:
    """One worker: ``python -m leadtrail.server.workers ROLE_JSON READY_FD``."""
    _die_with_parent()
    plan = json.loads(argv[0])
    ready_fd = int(argv[1])
    config = app.ServerConfig(**plan["config"])
    role = WorkerRole(**plan["role"])

    def announce(line: str) -> None:
        os.write(ready_fd, line.encode())
        os.close(ready_fd)

    return app.run(config, role, announce)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
