"""LeadTrail side by side with PostgreSQL, Redis Streams and NATS JetStream, in one run.

    python -m benchmarks compare [--quick] [--runs N] [--only leadtrail,workers,ceiling,postgres,redis,nats]
                                 [--figures replay,scan,...] [--out DIR]

Every system is started here, on 127.0.0.1 with a free port and a fresh data
directory under a temporary folder, stopped by its process id at the end of
each run, and given the same simulated lead flows (``workload.py``). Each run
goes through every system in turn, so the systems share the machine's state
of the moment and ratios within a run are fair; the figures are the median
of N runs (at least 3) with min-max. What a run does with a system:

1. ingest the data set in batches of 100 from one client (durable ingest, batches);
2. bytes on disk per event: growth of the whole data directory since it was empty;
3. lead timelines from 1, 4 and 16 clients (16 in flight; reads/s, p50/p99), every answer's
   event count checked against the generator's;
4. type + 1-hour window scans with snapshots (latency), every count checked (at least 3, then as
   many as fit in twice the measurement time);
5. replay of everything in commit (``recorded_at``) order (events/s), count checked;
6. single events with an acknowledgement each, from 1 and from 16 clients, then
   a check that the store holds exactly what was acknowledged;
7. live: a follower subscribed, single-event appends every millisecond (1,000 appends/s)
   sent open-loop on a clock over 16 connections, publish->receive latency p50/p99 and the rate
   the appends were acknowledged at (sustained: ~1,000/s); every event must arrive once.

Beside the stores: the gRPC ceiling (an empty grpc.aio service called through the same SDK client
with the same requests), the same ceiling answering a canned timeline of realistic size, and
LeadTrail with ``--workers 2`` where the build offers it. The report ends with the issue's targets,
each a ratio from the same run.

A figure whose check fails in any run is reported invalid, with the reason: a
fast wrong answer never counts. A peer that cannot run here (not installed: see
``bash benchmarks/install_peers.sh``) is reported missing, never dropped.
Results: ``<out>/<date>[-quick].md``, ``.json`` and ``.png`` (ratios; skipped
with a note when matplotlib is absent). Benchmarks are never timed assertions
in tests (DESIGN.md).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import shutil
import signal
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from benchmarks import report, workload
from benchmarks.storage_bench import Figure, Scratch, percentile, progress
from benchmarks.systems import (
    DISK,
    EVERYTHING,
    INGEST_BATCH,
    INGEST_SINGLE_1,
    INGEST_SINGLE_16,
    LIVE,
    REPLAY,
    SCAN,
    TIMELINE_1,
    TIMELINE_4,
    TIMELINE_16,
    Session,
    System,
    Unavailable,
)

BATCH = 100
SINGLE_CLIENTS = 16
LIVE_RATE = 1000
"""Events/s published while a follower receives them."""
LIVE_EVENTS_PER_APPEND = 1
"""Single-event appends, one a millisecond: the issue's live target."""
LIVE_PUBLISHERS = 16
"""Connections the live appends are spread over, so one slow answer does not hold the next append
(each connection has one append in flight: up to 16 ms of latency still sustains the rate)."""
TIMELINE_CLIENTS = ((1, TIMELINE_1), (4, TIMELINE_4), (16, TIMELINE_16))
MIN_SCANS = 3
CLOCK = time.perf_counter_ns
RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
ALL_SYSTEMS = ("leadtrail", "workers", "ceiling", "postgres", "redis", "nats")


@dataclass(frozen=True)
class Scale:
    """How much each measurement does; ``--quick`` and ``--tiny`` trade precision for time."""

    dataset_events: int
    single_1_events: int
    single_16_events: int
    seconds: float
    """Time cap of each single-event ingest and timeline measurement."""
    timeline_sample: int
    scans: int
    live_warmup_s: float
    live_seconds: float


TINY = Scale(400, 150, 400, 0.3, 200, 3, 0.2, 0.5)
"""For the harness's own tests: seconds per system, figures of no value."""
QUICK = Scale(3_000, 1_500, 4_000, 0.5, 2_000, 6, 0.3, 1.0)
FULL = Scale(30_000, 12_000, 40_000, 4.0, 20_000, 30, 1.0, 8.0)


def systems_by_key() -> dict[str, list[System]]:
    # Imported here: each module imports only what the harness needs to start; the peers'
    # clients are imported by check() and start(), so a machine without them still runs LeadTrail.
    from benchmarks.systems.leadtrail_service import GrpcCeiling, LeadTrail, LeadTrailWorkers
    from benchmarks.systems.nats_jetstream import NatsJetStream
    from benchmarks.systems.postgres import PostgreSQL
    from benchmarks.systems.redis_streams import RedisStreams, RedisStreamsEverysec

    return {
        "leadtrail": [LeadTrail()],
        "workers": [LeadTrailWorkers(2)],
        "ceiling": [GrpcCeiling(), GrpcCeiling(canned_timeline=True)],
        "postgres": [PostgreSQL()],
        "redis": [RedisStreams(), RedisStreamsEverysec()],
        "nats": [NatsJetStream()],
    }


# --------------------------------------------------------------------------- results


@dataclass
class Outcome:
    """What happened to one system over all runs."""

    system: System
    missing: str = ""
    errors: list[str] = field(default_factory=list)
    checks: dict[str, list[str]] = field(default_factory=dict)
    """Figure -> the problems its checks found (empty list: checked and right)."""

    def check(self, figure: str, problem: str | None) -> None:
        self.record(figure, [problem] if problem else [])

    def record(self, figure: str, problems: Sequence[str]) -> None:
        """The problems one run's check of ``figure`` found; none means it was checked and right."""
        found = self.checks.setdefault(figure, [])
        found.extend(problems[:3])
        if len(problems) > 3:
            found.append(f"... and {len(problems) - 3} more")

    def invalid(self, figure: str) -> str:
        return "; ".join(self.checks.get(figure, []))


@dataclass
class Measurements:
    figures: dict[tuple[str, str], Figure] = field(default_factory=dict)
    """(figure key, system name) -> its value in each run."""
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    client_cores: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    """(figure key, system name) -> cores this process kept busy during the measurement, per run: the
    client's share of a machine it shares with the server."""

    def add(self, key: str, system: System, value: float) -> None:
        spec = report.SPEC_BY_KEY[key]
        self.figures.setdefault((key, system.name), Figure(spec.label, spec.unit)).runs.append(value)


# --------------------------------------------------------------------------- measurements


async def open_sessions(system: System, count: int) -> list[Session]:
    return list(await asyncio.gather(*(system.session() for _ in range(count))))


async def close_sessions(sessions: Sequence[Session]) -> None:
    await asyncio.gather(*(s.close() for s in sessions), return_exceptions=True)


async def ingest_batches(system: System, events: Sequence[Any]) -> float:
    """Events/s of one client appending the data set in batches of ``BATCH``, each acknowledged."""
    [session] = await open_sessions(system, 1)
    try:
        began = CLOCK()
        for k in range(0, len(events), BATCH):
            await session.append(events[k : k + BATCH])
        elapsed = (CLOCK() - began) / 1e9
    finally:
        await close_sessions([session])
    return len(events) / elapsed


async def ingest_singles(
    system: System, pool: Sequence[Any], clients: int, seconds: float
) -> tuple[float, int]:
    """Events/s of ``clients`` clients appending one event at a time until their share of the pool is
    done or ``seconds`` have passed; and how many events were acknowledged in all."""
    sessions = await open_sessions(system, clients)
    share = len(pool) // clients
    # Each client's first append connects and warms up; it is acknowledged but not timed.
    await asyncio.gather(*(s.append([pool[k * share]]) for k, s in enumerate(sessions)))
    deadline = CLOCK() + int(seconds * 1e9)

    async def client(k: int, session: Session) -> int:
        done = 0
        for event in pool[k * share + 1 : (k + 1) * share]:
            if CLOCK() >= deadline:
                break
            await session.append([event])
            done += 1
        return done

    try:
        began = CLOCK()
        counts = await asyncio.gather(*(client(k, s) for k, s in enumerate(sessions)))
        elapsed = (CLOCK() - began) / 1e9
    finally:
        await close_sessions(sessions)
    return sum(counts) / elapsed, sum(counts) + clients


@dataclass
class Reads:
    rate: float
    latencies_ms: list[float]
    problems: list[str]


async def read_timelines(
    system: System, sample: Sequence[str], expected: dict[str, int], clients: int, seconds: float
) -> Reads:
    """Timelines of the sample's leads from ``clients`` clients for ``seconds``; every length checked."""
    sessions = await open_sessions(system, clients)
    problems: list[str] = []
    latencies: list[float] = []

    def verify(lead_id: str, got: int | None) -> None:
        if got is not None and got != expected[lead_id]:
            problems.append(f"timeline of {lead_id}: {got} events, expected {expected[lead_id]}")

    for k, session in enumerate(sessions):  # warm-up: connect, and the first answer is checked too
        lead_id = sample[k % len(sample)]
        verify(lead_id, await session.timeline(lead_id))
    deadline = CLOCK() + int(seconds * 1e9)

    async def client(k: int, session: Session) -> int:
        done = 0
        index = k * len(sample) // clients
        while CLOCK() < deadline and done < len(sample):
            lead_id = sample[(index + done) % len(sample)]
            t0 = CLOCK()
            got = await session.timeline(lead_id)
            latencies.append((CLOCK() - t0) / 1e6)
            verify(lead_id, got)
            done += 1
        return done

    try:
        began = CLOCK()
        counts = await asyncio.gather(*(client(k, s) for k, s in enumerate(sessions)))
        elapsed = (CLOCK() - began) / 1e9
    finally:
        await close_sessions(sessions)
    latencies.sort()
    return Reads(sum(counts) / elapsed, latencies, problems)


async def run_scans(system: System, scans: Sequence[workload.Scan], seconds: float) -> Reads:
    """Scans one after another, each count checked; after ``MIN_SCANS``, only while ``seconds`` last
    (a schema without a type index reads everything for every scan)."""
    [session] = await open_sessions(system, 1)
    problems: list[str] = []
    latencies: list[float] = []
    try:
        first = scans[0]
        await session.scan(first.event_type, first.start_ms, first.end_ms)  # warm-up
        deadline = CLOCK() + int(seconds * 1e9)
        for k, scan in enumerate(scans):
            if k >= MIN_SCANS and CLOCK() >= deadline:
                break
            t0 = CLOCK()
            got = await session.scan(scan.event_type, scan.start_ms, scan.end_ms)
            latencies.append((CLOCK() - t0) / 1e6)
            if got is not None and got != scan.expected:
                problems.append(
                    f"scan {scan.event_type} from {scan.start_ms}: {got} events, expected {scan.expected}"
                )
    finally:
        await close_sessions([session])
    latencies.sort()
    return Reads(len(latencies) / (sum(latencies) / 1e3), latencies, problems)


async def live(system: System, events: Sequence[Any], ids: Sequence[str], skip: int) -> Reads:
    """Publish->receive latencies of the events after the first ``skip`` appends, sent open-loop; and
    the rate those appends were acknowledged at (events/s from the first measured send to the last
    acknowledgement: the offered rate when the system keeps up, less when appends queue)."""
    sent: dict[str, int] = {}
    received: Counter[str] = Counter()
    latencies: list[float] = []
    measured = set(ids[skip * LIVE_EVENTS_PER_APPEND :])
    everything = asyncio.Event()

    def on_event(event_id: str) -> None:
        now = CLOCK()
        received[event_id] += 1
        if event_id in measured and received[event_id] == 1:
            latencies.append((now - sent[event_id]) / 1e6)
            if len(latencies) == len(measured):
                everything.set()

    ready = asyncio.Event()
    follower = asyncio.create_task(system.follow(on_event, ready))
    publishers = await open_sessions(system, LIVE_PUBLISHERS)
    locks = [asyncio.Lock() for _ in publishers]
    problems: list[str] = []
    acknowledged_ns = [0]
    try:
        await asyncio.wait_for(_ready_or_failed(ready, follower), 30)
        interval_ns = 1_000_000_000 * LIVE_EVENTS_PER_APPEND // LIVE_RATE

        async def append(k: int) -> None:
            part = slice(k * LIVE_EVENTS_PER_APPEND, (k + 1) * LIVE_EVENTS_PER_APPEND)
            async with locks[k % len(publishers)]:
                began = CLOCK()
                for event_id in ids[part]:
                    sent[event_id] = began
                await publishers[k % len(publishers)].append(events[part])
                acknowledged_ns[0] = max(acknowledged_ns[0], CLOCK())

        tasks = []
        start = CLOCK()
        for k in range(len(events) // LIVE_EVENTS_PER_APPEND):
            delay = (start + k * interval_ns - CLOCK()) / 1e9
            if delay > 0:
                await asyncio.sleep(delay)
            else:  # behind the clock: still let the appends under way run
                await asyncio.sleep(0)
            tasks.append(asyncio.create_task(append(k)))
        await asyncio.gather(*tasks)
        measured_from = start + skip * interval_ns
        rate = len(measured) / max((acknowledged_ns[0] - measured_from) / 1e9, 1e-9)
        try:
            await asyncio.wait_for(everything.wait(), 30)
        except TimeoutError:
            problems.append(f"live: {len(measured) - len(latencies)} of {len(measured)} events never arrived")
        await asyncio.sleep(0.2)  # long enough for a duplicate to show
    finally:
        follower.cancel()
        await asyncio.gather(follower, return_exceptions=True)
        await close_sessions(publishers)
    duplicates = sum(1 for event_id in measured if received[event_id] > 1)
    if duplicates:
        problems.append(f"live: {duplicates} events arrived more than once")
    latencies.sort()
    return Reads(rate, latencies, problems)


async def _ready_or_failed(ready: asyncio.Event, follower: asyncio.Task[None]) -> None:
    waiter = asyncio.create_task(ready.wait())
    done, _ = await asyncio.wait({waiter, follower}, return_when=asyncio.FIRST_COMPLETED)
    if follower in done:
        waiter.cancel()
        follower.result()  # raises the follower's error
        raise RuntimeError("the live follower ended before it was ready")


# --------------------------------------------------------------------------- one run of one system


@dataclass
class Prepared:
    dataset: list[Any]
    singles: list[Any]
    live: list[Any]


class Harness:
    def __init__(
        self, work: workload.Workload, scale: Scale, scratch: Scratch, figures: frozenset[str] = EVERYTHING
    ) -> None:
        self.work = work
        self.scale = scale
        self.scratch = scratch
        self.figures = figures
        """The figures measured (``--figures``); the data set is loaded whatever they are."""
        self.measurements = Measurements()
        self.prepared: dict[str, Prepared] = {}

    def prepare(self, system: System) -> Prepared:
        if system.name not in self.prepared:
            work = self.work
            self.prepared[system.name] = Prepared(
                system.prepare(work.dataset), system.prepare(work.singles), system.prepare(work.live)
            )
        return self.prepared[system.name]

    async def phase(
        self,
        outcome: Outcome,
        name: str,
        step: Callable[[], Awaitable[None]],
        timeout_s: float,
        key: str | None = None,
    ) -> bool:
        try:
            began, cpu = CLOCK(), time.process_time()
            await asyncio.wait_for(step(), timeout_s)
            if key is not None:
                cores = (time.process_time() - cpu) / ((CLOCK() - began) / 1e9)
                self.measurements.client_cores.setdefault((key, outcome.system.name), []).append(cores)
            return True
        except Exception as e:  # recorded and reported; the other phases and systems go on
            outcome.errors.append(f"{name}: {type(e).__name__}: {e}"[:500])
            progress(f"    {outcome.system.name}: {name} failed: {e!r}"[:300])
            return False

    async def run(self, system: System, run: int) -> None:
        outcome = self.measurements.outcomes[system.name]
        directory = self.scratch.new(system.name)
        os.chmod(directory, 0o755)
        try:
            await system.start(directory)
        except Exception as e:
            if run == 0:
                outcome.missing = f"could not be started: {e}"[:500]
            else:
                outcome.errors.append(f"run {run + 1}: start: {e}"[:500])
            progress(f"    {system.name}: not started: {e!r}"[:300])
            await system.stop()
            shutil.rmtree(directory, ignore_errors=True)
            return
        try:
            await self.measure(system, outcome)
        finally:
            await system.stop()
            shutil.rmtree(directory, ignore_errors=True)

    async def measure(self, system: System, outcome: Outcome) -> None:
        m, work, scale, data = self.measurements, self.work, self.scale, self.prepare(system)
        measures, checked = system.measures & self.figures, system.checked
        cap = max(60.0, scale.seconds * 20)
        empty_bytes = system.disk_bytes()
        loaded = False

        async def load() -> None:
            nonlocal loaded
            progress(f"    {system.name}: ingest, batches of {BATCH}")
            rate = await ingest_batches(system, data.dataset)
            if checked:
                stored = await system.stored()
                if stored != len(data.dataset):
                    outcome.check(INGEST_BATCH, f"stored {stored} events, {len(data.dataset)} acknowledged")
                else:
                    outcome.check(INGEST_BATCH, None)
            loaded = True
            if INGEST_BATCH in measures:
                m.add(INGEST_BATCH, system, rate)

        await self.phase(outcome, "batched ingest", load, cap * 5, INGEST_BATCH)

        async def disk() -> None:
            await system.settle()
            m.add(DISK, system, (system.disk_bytes() - empty_bytes) / len(data.dataset))

        if loaded and DISK in measures:
            await self.phase(outcome, "disk", disk, cap)

        for clients, key in TIMELINE_CLIENTS:
            if not (loaded and key in measures):
                continue

            async def timelines(clients: int = clients, key: str = key) -> None:
                progress(f"    {system.name}: timelines, {clients} client(s)")
                reads = await read_timelines(
                    system, work.timeline_sample, work.timeline_lengths, clients, scale.seconds
                )
                outcome.record(key, reads.problems)
                m.add(key, system, reads.rate)
                m.add(f"{key}_p50", system, percentile(reads.latencies_ms, 0.5))
                m.add(f"{key}_p99", system, percentile(reads.latencies_ms, 0.99))

            await self.phase(outcome, f"timelines, {clients} client(s)", timelines, cap, key)

        async def scans() -> None:
            progress(f"    {system.name}: {len(work.scans)} scans")
            reads = await run_scans(system, work.scans, scale.seconds * 2)
            outcome.record(SCAN, reads.problems)
            m.add("scan_p50", system, percentile(reads.latencies_ms, 0.5))
            m.add("scan_p99", system, percentile(reads.latencies_ms, 0.99))

        if loaded and SCAN in measures:
            await self.phase(outcome, "scans", scans, cap * 5, SCAN)

        async def replay() -> None:
            progress(f"    {system.name}: replay")
            began = CLOCK()
            count = await system.replay()
            elapsed = (CLOCK() - began) / 1e9
            problem = None
            if count != len(data.dataset):
                problem = f"replay sent {count} events of {len(data.dataset)}"
            outcome.check(REPLAY, problem)
            m.add(REPLAY, system, count / elapsed)

        if loaded and REPLAY in measures:
            await self.phase(outcome, "replay", replay, cap * 5, REPLAY)

        acknowledged = 0
        pools = (
            (1, INGEST_SINGLE_1, data.singles[: scale.single_1_events]),
            (SINGLE_CLIENTS, INGEST_SINGLE_16, data.singles[scale.single_1_events :]),
        )
        for clients, key, pool in pools:
            if key not in measures:
                continue

            async def singles(clients: int = clients, key: str = key, pool: list[Any] = pool) -> None:
                nonlocal acknowledged
                progress(f"    {system.name}: single events, {clients} client(s)")
                rate, count = await ingest_singles(system, pool, clients, scale.seconds)
                acknowledged += count
                m.add(key, system, rate)
                if checked and loaded:
                    stored, expected = await system.stored(), len(data.dataset) + acknowledged
                    problem = None if stored == expected else f"stored {stored} events, expected {expected}"
                    outcome.check(key, problem)

            await self.phase(outcome, f"single events, {clients} client(s)", singles, cap, key)

        async def live_feed() -> None:
            progress(f"    {system.name}: live at {LIVE_RATE} single-event appends/s")
            per_second = LIVE_RATE // LIVE_EVENTS_PER_APPEND
            skip = int(per_second * scale.live_warmup_s)
            appends = skip + int(per_second * scale.live_seconds)
            count = appends * LIVE_EVENTS_PER_APPEND
            ids = [d["id"] for d in work.live[:count]]
            reads = await live(system, data.live[:count], ids, skip)
            outcome.record(LIVE, reads.problems)
            if reads.latencies_ms:
                m.add("live_p50", system, percentile(reads.latencies_ms, 0.5))
                m.add("live_p99", system, percentile(reads.latencies_ms, 0.99))
                m.add("live_rate", system, reads.rate)

        if LIVE in measures:
            await self.phase(outcome, "live", live_feed, cap * 2, LIVE)


# --------------------------------------------------------------------------- command line


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks compare", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="smaller runs (about 3 minutes in all)")
    parser.add_argument("--tiny", action="store_true", help="for the harness's own tests: no useful figures")
    parser.add_argument("--runs", type=int, default=3, help="runs per figure (at least 3)")
    parser.add_argument(
        "--only",
        default=",".join(ALL_SYSTEMS),
        help=f"comma-separated systems to run (default: all of {','.join(ALL_SYSTEMS)})",
    )
    parser.add_argument(
        "--figures",
        default=",".join(sorted(EVERYTHING)),
        help="comma-separated figures to measure (default: all); the data set is loaded in any case, "
        "so replay,scan is a short run of the reads alone",
    )
    parser.add_argument("--out", default=RESULTS_DIR, help="directory for the results (default: %(default)s)")
    parser.add_argument("--data", help="directory to create the scratch data directories in (default: temp)")
    args = parser.parse_args(argv)
    if args.runs < 3:
        parser.error(f"--runs {args.runs}: at least 3, since every figure is a median with its range")
    args.only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(args.only) - set(ALL_SYSTEMS))
    if unknown:
        parser.error(f"--only: unknown system(s) {', '.join(unknown)}; known: {', '.join(ALL_SYSTEMS)}")
    args.figures = frozenset(name.strip() for name in args.figures.split(",") if name.strip())
    unknown = sorted(args.figures - EVERYTHING)
    if unknown:
        known = ", ".join(sorted(EVERYTHING))
        parser.error(f"--figures: unknown figure(s) {', '.join(unknown)}; known: {known}")
    if "leadtrail" not in args.only:
        parser.error("--only: leadtrail is what every ratio is about; include it")
    return args


async def compare(args: argparse.Namespace, scale: Scale, scratch: Scratch) -> Harness:
    singles = scale.single_1_events + scale.single_16_events
    progress(f"simulating {scale.dataset_events:,} + {singles:,} events")
    live_events = int((scale.live_warmup_s + scale.live_seconds) * LIVE_RATE) + LIVE_EVENTS_PER_APPEND
    work = workload.build(
        dataset_events=scale.dataset_events,
        single_events=singles,
        live_events=live_events,
        timeline_reads=scale.timeline_sample,
        scans=scale.scans,
    )
    harness = Harness(work, scale, scratch, args.figures)
    catalogue = systems_by_key()
    systems = [system for key in args.only for system in catalogue[key]]
    running: list[System] = []
    for system in systems:
        outcome = harness.measurements.outcomes[system.name] = Outcome(system)
        try:
            system.check()
            running.append(system)
        except Unavailable as e:
            outcome.missing = str(e)
            progress(f"{system.name}: missing: {e}")
    for system in running:
        system.use(work)
        harness.prepare(system)  # before any clock, once for all runs
    for run in range(args.runs):
        for system in running:
            if harness.measurements.outcomes[system.name].missing:
                continue
            progress(f"run {run + 1}/{args.runs}: {system.name}")
            await harness.run(system, run)
    return harness


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, through the code that stops the servers this harness started.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    scale, mode = (TINY, "tiny") if args.tiny else (QUICK, "quick") if args.quick else (FULL, "full")
    scratch = Scratch(args.data)
    # PostgreSQL runs as its own user when the harness is root: it must be able to reach its folder.
    os.chmod(scratch.root, 0o711)
    began = time.perf_counter()
    try:
        harness = asyncio.run(compare(args, scale, scratch))
    finally:
        scratch.close()
    elapsed = time.perf_counter() - began
    stem = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d") + ("" if mode == "full" else f"-{mode}")
    paths = report.write(
        args.out,
        stem,
        report.Run(
            mode=mode,
            runs=args.runs,
            scale=scale.__dict__,
            elapsed_s=elapsed,
            work=harness.work,
            measurements=harness.measurements,
        ),
    )
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
