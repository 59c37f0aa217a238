"""Where the time of the comparison's reads goes: the replay and the type + window scans of
``compare``, made by the same client calls against a ``leadtrail serve`` child process, with the
client profiled in-process (cProfile) and the server sampled by py-spy (when installed).

    python -m benchmarks.compare_profile [--events 20000] [--rounds 3] [--out DIR] [--cpu]

Prints events/s of each replay and the scans' p50, then the client's top functions by own time;
the server's samples go to ``<out>/server-<read>.txt`` (py-spy's raw, collapsed stacks) with a
summary by function printed. Not a benchmark of record: one system, no peer in the same run.

With ``--cpu``: no profile, but the CPU time the client (this process) and the server (its
processes) spend per replayed event, LeadTrail and PostgreSQL in turn, median of ``--rounds``.
On a machine shared with other work, CPU time per event moves far less than events/s does.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import os
import pstats
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence

from benchmarks import workload
from benchmarks.systems import System
from benchmarks.systems.leadtrail_service import LeadTrail
from benchmarks.systems.postgres import PostgreSQL

BATCH = 100


def py_spy() -> str | None:
    found = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
    return found if os.access(found, os.X_OK) else None


class ServerSamples:
    """py-spy sampling the server's pid while a read runs; its collapsed stacks when stopped."""

    def __init__(self, pid: int, path: str) -> None:
        self.path = path
        binary = py_spy()
        self.process = (
            subprocess.Popen(
                [binary, "record", "--pid", str(pid), "--rate", "250", "--format", "raw", "--output", path,
                 "--nonblocking"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            if binary
            else None
        )  # fmt: skip
        time.sleep(0.5)  # py-spy attaches before the read begins

    def stop(self) -> Counter[str]:
        own: Counter[str] = Counter()
        if self.process is None:
            return own
        os.kill(self.process.pid, signal.SIGINT)
        self.process.wait(30)
        try:
            with open(self.path, encoding="utf-8") as stacks:
                for line in stacks:
                    stack, _, count = line.rstrip("\n").rpartition(" ")
                    if stack:
                        own[stack.split(";")[-1]] += int(count)
        except FileNotFoundError:
            pass
        return own


def client_profile(profile: cProfile.Profile, limit: int) -> str:
    out = io.StringIO()
    pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(limit)
    return out.getvalue()


async def measure(
    name: str,
    server_pid: int,
    out: str,
    rounds: int,
    read: Callable[[], Awaitable[float]],
    limit: int,
) -> None:
    await read()  # warm-up
    figures = []
    for _ in range(rounds):
        figures.append(await read())
    samples = ServerSamples(server_pid, os.path.join(out, f"server-{name}.txt"))
    profile = cProfile.Profile()
    profile.enable()
    try:
        await read()
    finally:
        profile.disable()
        own = samples.stop()
    figures.sort()
    print(
        f"== {name}: median {figures[len(figures) // 2]:,.2f} (min {figures[0]:,.2f}, max {figures[-1]:,.2f})"
    )
    print(client_profile(profile, limit))
    total = sum(own.values())
    if total:
        print(f"-- server samples ({total}), by own time:")
        for frame, count in own.most_common(limit):
            print(f"{100 * count / total:5.1f}%  {frame}")


async def run(events: int, rounds: int, scans: int, out: str, limit: int) -> None:
    work = workload.build(events, 0, 0, 1, scans)
    system = LeadTrail()
    system.use(work)
    data = system.prepare(work.dataset)
    directory = tempfile.mkdtemp(prefix="profile-")
    try:
        await system.start(directory)
        assert system.server is not None
        session = await system.session()
        for k in range(0, len(data), BATCH):
            await session.append(data[k : k + BATCH])

        async def replay() -> float:
            began = time.perf_counter()
            count = await system.replay()
            assert count == len(data), f"replay: {count} of {len(data)}"
            return count / (time.perf_counter() - began)

        biggest: Sequence[workload.Scan] = sorted(work.scans, key=lambda s: -s.expected)[:5]

        async def scan() -> float:
            took = []
            for s in biggest:
                began = time.perf_counter()
                got = await session.scan(s.event_type, s.start_ms, s.end_ms)
                took.append(time.perf_counter() - began)
                assert got == s.expected, f"scan: {got} of {s.expected}"
            took.sort()
            return 1e3 * took[len(took) // 2]

        print(f"{len(data):,} events; scans of {[s.expected for s in biggest]} events")
        print("replay: events/s; scan: p50 ms of the 5 largest scans")
        await measure("replay", system.server.pid, out, rounds, replay, limit)
        await measure("scan", system.server.pid, out, rounds, scan, limit)
        await session.close()
    finally:
        await system.stop()
        shutil.rmtree(directory, ignore_errors=True)


TICKS = os.sysconf("SC_CLK_TCK")


def tree_cpu_s(root: int) -> float:
    """CPU seconds (user + system) of ``root`` and every process below it, from /proc, with the
    processes they have reaped (a PostgreSQL backend ends with its connection)."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", encoding="ascii", errors="replace") as stat:
                fields = stat.read().rpartition(")")[2].split()
        except OSError:  # ended meanwhile
            continue
        parents[int(name)] = int(fields[1])
        times[int(name)] = sum(int(f) for f in fields[11:15]) / TICKS
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        total += times.get(pid, 0.0)
        todo.extend(child for child, parent in parents.items() if parent == pid)
    return total


async def cpu_per_event(
    system: System, data: Sequence[object], rounds: int
) -> tuple[list[float], list[float]]:
    """(client, server) CPU microseconds per event of ``rounds`` replays of ``data``."""
    directory = tempfile.mkdtemp(prefix="cpu-")
    os.chmod(directory, 0o755)
    client: list[float] = []
    server: list[float] = []
    try:
        await system.start(directory)
        process = getattr(system, "server", None)
        assert process is not None
        session = await system.session()
        for k in range(0, len(data), BATCH):
            await session.append(data[k : k + BATCH])
        await session.close()
        await system.replay()  # warm-up
        for _ in range(rounds):
            own, theirs = time.process_time(), tree_cpu_s(process.pid)
            count = await system.replay()
            assert count == len(data), f"replay: {count} of {len(data)}"
            client.append((time.process_time() - own) / count * 1e6)
            server.append((tree_cpu_s(process.pid) - theirs) / count * 1e6)
    finally:
        await system.stop()
        shutil.rmtree(directory, ignore_errors=True)
    return sorted(client), sorted(server)


async def cpu(events: int, rounds: int) -> None:
    work = workload.build(events, 0, 0, 1, 1)
    print(f"replay of {events:,} events: CPU us per event, median of {rounds} (min-max)")
    for system in (LeadTrail(), PostgreSQL()):
        system.check()
        client, server = await cpu_per_event(system, system.prepare(work.dataset), rounds)
        for side, runs in (("client", client), ("server", server)):
            print(f"  {system.label:<12} {side}: {runs[len(runs) // 2]:7.1f}  ({runs[0]:.1f}-{runs[-1]:.1f})")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.compare_profile", description=__doc__)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--scans", type=int, default=40, help="scans drawn; the 5 largest are read")
    parser.add_argument("--limit", type=int, default=25, help="functions listed per profile")
    parser.add_argument("--out", default=tempfile.gettempdir())
    parser.add_argument("--cpu", action="store_true", help="CPU per replayed event, LeadTrail and PostgreSQL")
    args = parser.parse_args(argv)
    if args.cpu:
        asyncio.run(cpu(args.events, max(3, args.rounds)))
        return 0
    os.makedirs(args.out, exist_ok=True)
    asyncio.run(run(args.events, args.rounds, args.scans, args.out, args.limit))
    return 0


if __name__ == "__main__":
    sys.exit(main())
