"""Benchmark of the storage engine against the issue's targets, with the machine's own limits beside it.

    python benchmarks/storage_bench.py [--quick | --tiny] [--runs N] [--data DIR] [--json FILE]

What it measures, each figure the median of N runs (at least 3) with min-max:

- durable appends/s: batches of 100 simulated events (~1.2 KB snapshots each)
  under the default fsync policy, from 1 appender thread and from 4 concurrent
  ones (whose batches share fsyncs through group commit);
- lead timeline reads/s and p50/p99 latency, on a store where every lead has
  exactly 10 events, reading leads at random;
- bytes on disk per event from ``EventLog.stats()``, beside the raw JSON bytes
  per event and the ratio.

And the baselines that say what is possible on this machine, measured in the
same run: the rate of 20 KB write + fdatasync on a file in the data directory
(one durable batch of 100 events can never be faster than one of these), and
zstd's speed on the same snapshots with and without a trained dictionary.

Numbers from a shared CI machine or a laptop on battery are not the numbers of
a server: the baselines are printed so a reader can tell a slow disk from a
slow engine. Benchmarks are never timed assertions in tests (DESIGN.md).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import shutil
import statistics
import struct
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import lmdb
import orjson
import zstandard
from crc32c import crc32c
from leadtrail.server.simulation import LeadFlowSimulator, SimulatedEvent
from leadtrail.storage import (
    Event,
    EventLog,
    FsyncPolicy,
    Options,
    Outcome,
    Stats,
    ingest,
    new_event_id,
    wireform,
)

BATCH = 100
SEED = 20240115
TIMELINE_LENGTH = 10
RELAXED_FSYNC_MS = 50
FSYNC_WRITE_BYTES = 20 * 1024
"""About one batch of 100 compressed events: what one durable append has to write."""
ZSTD_LEVEL = 3
DICTIONARY_BYTES = 32 * 1024
DICTIONARY_SAMPLES = 2000
"""As the engine's defaults (Options.compression_level, dictionary_bytes, training samples)."""

TARGET_APPENDS_PER_S = 50_000
TARGET_TIMELINE_P99_MS = 1.0
TARGET_BYTES_PER_EVENT = 300


@dataclass(frozen=True)
class Scale:
    """How much work each measurement does; ``--quick`` trades precision for time."""

    append_events: int
    timeline_leads: int
    timeline_reads: int
    fsync_seconds: float
    zstd_snapshots: int
    floor_events: int
    erase_events: int


QUICK = Scale(
    append_events=20_000,
    timeline_leads=2_000,
    timeline_reads=2_000,
    fsync_seconds=1.0,
    zstd_snapshots=4_000,
    floor_events=10_000,
    erase_events=20_000,
)
TINY = Scale(  # --tiny, for the test suite: every measurement runs, its figures mean nothing
    append_events=1_000,
    timeline_leads=50,
    timeline_reads=100,
    fsync_seconds=0.1,
    zstd_snapshots=600,
    floor_events=500,
    erase_events=1_000,
)
FULL = Scale(
    append_events=200_000,
    timeline_leads=20_000,
    timeline_reads=20_000,
    fsync_seconds=3.0,
    zstd_snapshots=20_000,
    floor_events=50_000,
    erase_events=150_000,
)


@dataclass
class Figure:
    """One measured quantity over several runs."""

    name: str
    unit: str
    runs: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.runs)

    def as_json(self) -> dict[str, Any]:
        return {
            "unit": self.unit,
            "median": self.median,
            "min": min(self.runs),
            "max": max(self.runs),
            "runs": self.runs,
        }


@dataclass
class Results:
    figures: dict[str, Figure] = field(default_factory=dict)

    def add(self, key: str, name: str, unit: str, value: float) -> None:
        figure = self.figures.setdefault(key, Figure(name, unit))
        figure.runs.append(value)

    def median(self, key: str) -> float:
        return self.figures[key].median


# --------------------------------------------------------------------------- helpers


def to_event(d: SimulatedEvent) -> Event:
    return Event(
        type=d["type"],
        lead_id=d["lead_id"],
        flow_id=d["flow_id"],
        id=d["id"],
        timestamp_ms=d["timestamp_ms"],
        entity_id=d["entity_id"],
        outcome=Outcome(d["outcome"]),
        reason=d["reason"],
        duration_ms=d["duration_ms"],
        integration=d["integration"],
        response_code=d["response_code"],
        price=d["price"],
        details=d["details"],
        lead=d["lead"],
    )


def batches(events: Sequence[Event], size: int = BATCH) -> list[Sequence[Event]]:
    return [events[i : i + size] for i in range(0, len(events), size)]


def simulated_events(seed: int, n_events: int, *, events_per_lead: int | None = None) -> list[Event]:
    """At least ``n_events`` events of whole leads, interleaved in time as a flow engine sends them."""
    simulator = LeadFlowSimulator(seed)
    events: list[Event] = []
    while len(events) < n_events:  # each call is one more simulated day
        n_leads = max(1, (n_events - len(events)) // (events_per_lead or 7) + 1)
        for d in simulator.events(n_leads, events_per_lead=events_per_lead):
            events.append(to_event(d))
    return events if events_per_lead else events[:n_events]


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile: a value that was actually observed."""
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


class Scratch:
    """Temporary directories under the chosen data directory, all removed at the end."""

    def __init__(self, parent: str | None) -> None:
        if parent is not None:
            os.makedirs(parent, exist_ok=True)
        self.root = tempfile.mkdtemp(prefix="leadtrail-bench-", dir=parent)

    def new(self, name: str) -> str:
        return tempfile.mkdtemp(prefix=f"{name}-", dir=self.root)

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def progress(message: str) -> None:
    print(f"  .. {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- measurements


def append_run(
    events: Sequence[Event], threads: int, directory: str, options: Options | None = None
) -> tuple[float, Stats]:
    """Appends/s of ``threads`` appenders sharing the batches; the store's stats after."""
    work = batches(events)
    errors: list[BaseException] = []
    with EventLog.open(directory, options) as log:
        start = threading.Barrier(threads + 1)

        def appender(mine: Sequence[Sequence[Event]]) -> None:
            start.wait()
            try:
                for batch in mine:
                    log.append(batch)
            except BaseException as e:  # reported after the join, with the figures discarded
                errors.append(e)

        workers = [
            threading.Thread(target=appender, args=(work[k::threads],), name=f"appender-{k}")
            for k in range(threads)
        ]
        for worker in workers:
            worker.start()
        start.wait()
        began = time.perf_counter()
        for worker in workers:
            worker.join()
        elapsed = time.perf_counter() - began
        if errors:
            raise errors[0]
        stats = log.stats()
    if stats.event_count != len(events):
        raise RuntimeError(f"stored {stats.event_count} events, appended {len(events)}")
    return len(events) / elapsed, stats


def measure_appends(results: Results, scratch: Scratch, scale: Scale, runs: int) -> None:
    progress(f"simulating {scale.append_events} events")
    events = simulated_events(SEED, scale.append_events)
    for threads in (1, 4):
        for run in range(runs):
            progress(f"appends, {threads} thread(s), run {run + 1}/{runs}")
            directory = scratch.new(f"append{threads}")
            rate, stats = append_run(events, threads, directory)
            shutil.rmtree(directory)
            results.add(
                f"append_{threads}t",
                f"durable appends, batch {BATCH}, {threads} thread{'s' if threads > 1 else ''}",
                "events/s",
                rate,
            )
            if threads == 1:
                record_disk_usage(results, stats)
    # Not durable, so no target applies: it tells an fsync-bound engine from a CPU-bound one.
    relaxed = Options(fsync=FsyncPolicy(interval_ms=RELAXED_FSYNC_MS))
    for run in range(runs):
        progress(f"appends, fsync interval:{RELAXED_FSYNC_MS}, run {run + 1}/{runs}")
        directory = scratch.new("append-relaxed")
        rate, _ = append_run(events, 1, directory, relaxed)
        shutil.rmtree(directory)
        results.add(
            "append_relaxed",
            f"appends, fsync interval:{RELAXED_FSYNC_MS} (not durable), 1 thread",
            "events/s",
            rate,
        )


def record_disk_usage(results: Results, stats: Stats) -> None:
    n = stats.event_count
    results.add("disk_per_event", "bytes on disk per event (all)", "B", stats.disk_bytes / n)
    results.add("log_per_event", "  of which log segments", "B", stats.log_bytes / n)
    results.add("index_per_event", "  of which LMDB indexes", "B", stats.index_bytes / n)
    results.add("dict_per_event", "  of which dictionaries", "B", stats.dictionary_bytes / n)
    results.add("engine_per_event", "engine's bytes_per_event (used pages)", "B", stats.bytes_per_event)
    results.add("raw_per_event", "raw JSON bytes per event", "B", stats.raw_bytes / n)
    results.add("raw_to_disk", "raw JSON / bytes on disk", "x", stats.raw_bytes / stats.disk_bytes)
    results.add("raw_to_log", "raw JSON / log bytes (compression)", "x", stats.compression_ratio)


def measure_timelines(results: Results, scratch: Scratch, scale: Scale, runs: int) -> None:
    progress(f"building a store of {scale.timeline_leads} leads x {TIMELINE_LENGTH} events")
    events = simulated_events(
        SEED + 1, scale.timeline_leads * TIMELINE_LENGTH, events_per_lead=TIMELINE_LENGTH
    )
    lead_ids = sorted({e.lead_id for e in events})
    directory = scratch.new("timeline")
    # The build is not measured; a relaxed fsync only makes it quicker to set up.
    with EventLog.open(directory, Options(fsync=FsyncPolicy(interval_ms=RELAXED_FSYNC_MS))) as log:
        for batch in batches(events):
            log.append(batch)
    with EventLog.open(directory) as log:
        chooser = random.Random(SEED)
        for lead_id in chooser.sample(lead_ids, min(200, len(lead_ids))):  # warm-up
            if len(log.timeline(lead_id)) != TIMELINE_LENGTH:
                raise RuntimeError(f"timeline of {lead_id} does not have {TIMELINE_LENGTH} events")
        for run in range(runs):
            progress(f"timeline reads, run {run + 1}/{runs}")
            sample = [chooser.choice(lead_ids) for _ in range(scale.timeline_reads)]
            latencies: list[float] = []
            clock = time.perf_counter_ns
            began = clock()
            for lead_id in sample:
                t0 = clock()
                log.timeline(lead_id)
                latencies.append((clock() - t0) / 1e6)
            elapsed_s = (clock() - began) / 1e9
            latencies.sort()
            results.add(
                "timeline_rate", "lead timeline reads (10 events)", "reads/s", len(sample) / elapsed_s
            )
            results.add("timeline_p50", "  latency p50", "ms", percentile(latencies, 0.50))
            results.add("timeline_p99", "  latency p99", "ms", percentile(latencies, 0.99))
    shutil.rmtree(directory)


def measure_erasure(results: Results, scratch: Scratch, scale: Scale, runs: int) -> None:
    """Erasing one lead's personal data, against copying the segment it lives in durably
    (the floor of any rewrite of it), in the same run."""
    progress(f"building a store of {scale.erase_events:,} events in one segment")
    events = simulated_events(SEED + 2, scale.erase_events)
    directory = scratch.new("erase")
    with EventLog.open(directory, Options(fsync=FsyncPolicy(interval_ms=RELAXED_FSYNC_MS))) as log:
        for batch in batches(events):
            log.append(batch)
    lead_ids = sorted({e.lead_id for e in events})
    chooser = random.Random(SEED + 2)
    with EventLog.open(directory) as log:
        [segment] = [s for s in log.segments if s.size > 4096]
        for run in range(runs):
            progress(f"erasure, run {run + 1}/{runs}")
            copy = os.path.join(directory, "copy.tmp")
            t0 = time.perf_counter()
            data = segment.read_all()
            fd = os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            copied = time.perf_counter() - t0
            os.remove(copy)
            lead_id = chooser.choice(lead_ids)
            t0 = time.perf_counter()
            report = log.erase_lead(lead_id)
            erased = time.perf_counter() - t0
            if report is None or report.segments_rewritten != 1:
                raise RuntimeError(f"erasing {lead_id} did not rewrite its segment: {report}")
            t0 = time.perf_counter()
            log.erase_lead(lead_id)
            again = time.perf_counter() - t0
            results.add("erase_s", f"erase one lead ({segment.size / 2**20:.0f} MiB segment)", "s", erased)
            results.add("erase_copy_s", "  baseline: copy the segment + fsync", "s", copied)
            results.add("erase_ratio", "  erase / copy", "x", erased / copied)
            results.add("erase_again_ms", "  erase it again (nothing left)", "ms", again * 1000)
    shutil.rmtree(directory)


def measure_fdatasync(results: Results, scratch: Scratch, scale: Scale, runs: int) -> None:
    """Appends of 20 KB, each made durable: the floor under one durable batch."""
    directory = scratch.new("fsync")
    block = os.urandom(FSYNC_WRITE_BYTES)
    for run in range(runs):
        progress(f"fdatasync baseline, run {run + 1}/{runs}")
        path = os.path.join(directory, f"probe-{run}.log")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            count = 0
            began = time.perf_counter()
            deadline = began + scale.fsync_seconds
            while True:
                os.write(fd, block)
                os.fdatasync(fd)
                count += 1
                now = time.perf_counter()
                if now >= deadline:
                    break
        finally:
            os.close(fd)
        os.remove(path)
        rate = count / (now - began)
        results.add("fdatasync", "20 KB write + fdatasync", "ops/s", rate)
        results.add(
            "fdatasync_ceiling",
            f"  = serial durable batches of {BATCH}",
            "events/s",
            rate * BATCH,
        )
    shutil.rmtree(directory)


def measure_zstd(results: Results, scale: Scale, runs: int) -> None:
    """zstd on the snapshots alone, as the engine would compress them one by one."""
    progress(f"zstd baseline on {scale.zstd_snapshots} snapshots")
    simulator = LeadFlowSimulator(SEED + 2)
    snapshots: list[bytes] = []
    for d in simulator.events(scale.zstd_snapshots // 7 + 1):
        snapshots.append(json.dumps(d["lead"], separators=(",", ":")).encode())
    snapshots = snapshots[: scale.zstd_snapshots]
    raw_bytes = sum(map(len, snapshots))
    training: list[bytes | bytearray | memoryview[int]] = list(snapshots[:DICTIONARY_SAMPLES])
    dictionary = zstandard.train_dictionary(DICTIONARY_BYTES, training, level=ZSTD_LEVEL)
    coders: list[tuple[str, str, Callable[[], zstandard.ZstdCompressor], Callable[[], Any]]] = [
        (
            "zstd_plain",
            "zstd level 3, no dictionary",
            lambda: zstandard.ZstdCompressor(level=ZSTD_LEVEL),
            lambda: zstandard.ZstdDecompressor(),
        ),
        (
            "zstd_dict",
            f"zstd level 3, trained {DICTIONARY_BYTES // 1024} KB dictionary",
            lambda: zstandard.ZstdCompressor(level=ZSTD_LEVEL, dict_data=dictionary),
            lambda: zstandard.ZstdDecompressor(dict_data=dictionary),
        ),
    ]
    for key, name, compressor_factory, decompressor_factory in coders:
        for _run in range(runs):
            compressor = compressor_factory()
            began = time.perf_counter()
            packed = [compressor.compress(s) for s in snapshots]
            elapsed = time.perf_counter() - began
            decompressor = decompressor_factory()
            began = time.perf_counter()
            for p in packed:
                decompressor.decompress(p)
            unpacked = time.perf_counter() - began
            n = len(snapshots)
            results.add(f"{key}_mbs", f"{name}: compress", "MB/s", raw_bytes / elapsed / 1e6)
            results.add(f"{key}_us", "  per snapshot", "us", elapsed / n * 1e6)
            results.add(f"{key}_dus", "  decompress per snapshot", "us", unpacked / n * 1e6)
            results.add(
                f"{key}_bytes", "  compressed bytes per snapshot", "B", sum(map(len, packed)) / n
            )  # fmt: skip
    results.add("snapshot_raw", "snapshot JSON size (mean)", "B", raw_bytes / len(snapshots))


FLOOR_INDEXES = ("ids", "lead", "type", "time", "flow", "entity")
RECORD_FRAME = struct.Struct("<4sBBIQ")


def measure_floor(results: Results, scratch: Scratch, scale: Scale, runs: int) -> None:
    """The least CPython does to keep one event durable and indexed, whatever the engine.

    Per event: its JSON (orjson), zstd with a trained dictionary, a record framed
    with a CRC32C, one LMDB put per index (id, lead, type, time, flow, entity);
    per batch of 100: one write + fdatasync and one LMDB transaction (not
    synced, as the engine's). Nothing else: no validation, no snapshot deltas,
    no duplicate check, no id or position bookkeeping, no result objects. The
    engine's appends are set against this, so a target above it is a target
    for compiled code, not for Python.
    """
    events = simulated_events(SEED + 4, scale.floor_events)
    for event in events:
        event.id = event.id or new_event_id()
    samples = [orjson.dumps(e) for e in events[:DICTIONARY_SAMPLES]]
    dictionary = zstandard.train_dictionary(DICTIONARY_BYTES, list(samples), level=ZSTD_LEVEL)
    for run in range(runs):
        progress(f"CPython floor, run {run + 1}/{runs}")
        directory = scratch.new("floor")
        compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL, dict_data=dictionary)
        env = lmdb.open(
            os.path.join(directory, "index"), map_size=1 << 30, max_dbs=8, sync=False, metasync=False
        )
        dbs = [env.open_db(name.encode(), dupsort=name != "ids") for name in FLOOR_INDEXES]
        fd = os.open(os.path.join(directory, "log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            position = 0
            began = time.perf_counter()
            for batch in batches(events):
                records = []
                with env.begin(write=True) as txn:
                    for event in batch:
                        position += 1
                        packed = compressor.compress(orjson.dumps(event))
                        head = RECORD_FRAME.pack(b"LTR1", 1, 0, len(packed), position)
                        records.append(head + crc32c(packed, crc32c(head)).to_bytes(4, "little") + packed)
                        at = position.to_bytes(6, "big")
                        stamp = (event.timestamp_ms or 0).to_bytes(8, "big") + at
                        txn.put(event.id.encode(), at, db=dbs[0])
                        txn.put(event.lead_id.encode(), stamp, db=dbs[1])
                        txn.put(event.type.encode(), stamp, db=dbs[2])
                        txn.put(b"t", stamp, db=dbs[3])
                        txn.put(event.flow_id.encode(), stamp, db=dbs[4])
                        txn.put(event.entity_id.encode() or b"-", stamp, db=dbs[5])
                os.write(fd, b"".join(records))
                os.fdatasync(fd)
            elapsed = time.perf_counter() - began
        finally:
            os.close(fd)
            env.close()
        shutil.rmtree(directory)
        results.add("floor", f"CPython floor: JSON + zstd + framing + 6 LMDB puts, fdatasync per {BATCH}",
                    "events/s", len(events) / elapsed)  # fmt: skip
        results.add("floor_us", "  per event", "us", elapsed / len(events) * 1e6)


# --------------------------------------------------------------------------- report

SECTIONS = (
    (
        "storage engine",
        ("append_1t", "append_4t", "append_relaxed", "timeline_rate", "timeline_p50", "timeline_p99"),
    ),
    (
        "space",
        (
            "disk_per_event", "log_per_event", "index_per_event", "dict_per_event",
            "engine_per_event", "raw_per_event", "raw_to_disk", "raw_to_log",
        ),
    ),
    ("erasure", ("erase_s", "erase_copy_s", "erase_ratio", "erase_again_ms")),
    (
        "baselines (this machine, this run)",
        (
            "fdatasync", "fdatasync_ceiling", "floor", "floor_us", "snapshot_raw",
            "zstd_plain_mbs", "zstd_plain_us", "zstd_plain_dus", "zstd_plain_bytes",
            "zstd_dict_mbs", "zstd_dict_us", "zstd_dict_dus", "zstd_dict_bytes",
        ),
    ),
)  # fmt: skip


def fmt(value: float) -> str:
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.3f}" if value < 1 else f"{value:.2f}"


def targets(results: Results, scale: Scale) -> list[tuple[str, str, bool]]:
    def check(key: str, goal: float, at_least: bool) -> bool:
        value = results.median(key)
        return value >= goal if at_least else value <= goal

    rows = []
    for threads in (1, 4):
        key = f"append_{threads}t"
        rows.append(
            (
                f">= {TARGET_APPENDS_PER_S:,} durable appends/s at batch {BATCH}, {threads} thread(s)",
                f"{fmt(results.median(key))} events/s",
                check(key, TARGET_APPENDS_PER_S, True),
            )
        )
    rows.append(
        (
            f"timeline p99 <= {TARGET_TIMELINE_P99_MS:g} ms (10-event leads)",
            f"{fmt(results.median('timeline_p99'))} ms",
            check("timeline_p99", TARGET_TIMELINE_P99_MS, False),
        )
    )
    rows.append(
        (
            f"<= {TARGET_BYTES_PER_EVENT} bytes on disk per event at {scale.append_events:,} events",
            f"{fmt(results.median('disk_per_event'))} B"
            # A small store carries LMDB's fixed overhead (branch and free pages) over
            # few events; the target is about a store at the full run's scale.
            + (f"  (a small store: the target is for {FULL.append_events:,})" if scale is not FULL else ""),
            check("disk_per_event", TARGET_BYTES_PER_EVENT, False),
        )
    )
    return rows


def report(results: Results, header: list[str], scale: Scale) -> str:
    lines = header[:]
    width = max(len(f.name) for f in results.figures.values()) + 2
    for title, keys in SECTIONS:
        lines.append("")
        lines.append(f"{title}")
        lines.append(f"  {'':<{width}}{'median':>12}  {'min - max':>23}  unit")
        for key in keys:
            figure = results.figures.get(key)
            if figure is None:
                continue
            spread = f"{fmt(min(figure.runs))} - {fmt(max(figure.runs))}"
            lines.append(f"  {figure.name:<{width}}{fmt(figure.median):>12}  {spread:>23}  {figure.unit}")
    lines.append("")
    lines.append("targets (from the issue)")
    for goal, measured, passed in targets(results, scale):
        lines.append(f"  {'PASS' if passed else 'MISS'}  {goal:<72} {measured}")
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "zstandard": zstandard.__version__,
        # Which twin of each compiled part ran (LEADTRAIL_PURE=1 forces the pure ones).
        "wireform": wireform.IMPLEMENTATION,
        "ingest": ingest.IMPLEMENTATION,
    }


def parse_args(
    argv: Sequence[str] | None,
    doc: str | None = __doc__,
    quick: str = "smaller runs (under a minute)",
    tiny: bool = False,
) -> argparse.Namespace:
    """The options every benchmark here shares."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0] if doc else None)
    sizes = parser.add_mutually_exclusive_group()
    sizes.add_argument("--quick", action="store_true", help=quick)
    if tiny:
        sizes.add_argument(
            "--tiny", action="store_true", help="a few seconds, for the test suite: figures mean nothing"
        )
    parser.add_argument("--runs", type=int, default=3, help="runs per figure (at least 3)")
    parser.add_argument("--data", help="directory to create the scratch stores in (default: temp)")
    parser.add_argument("--json", dest="json_path", help="also write the results as JSON here")
    args = parser.parse_args(argv)
    if args.runs < 3:
        parser.error(f"--runs {args.runs}: at least 3, since every figure is a median with its range")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv, tiny=True)
    scale = TINY if args.tiny else QUICK if args.quick else FULL
    mode = "tiny" if args.tiny else "quick" if args.quick else "full"
    results = Results()
    scratch = Scratch(args.data)
    began = time.perf_counter()
    try:
        measure_fdatasync(results, scratch, scale, args.runs)
        measure_zstd(results, scale, args.runs)
        measure_floor(results, scratch, scale, args.runs)
        measure_appends(results, scratch, scale, args.runs)
        measure_timelines(results, scratch, scale, args.runs)
        measure_erasure(results, scratch, scale, args.runs)
    finally:
        data_dir = os.path.dirname(scratch.root)
        scratch.close()
    elapsed = time.perf_counter() - began
    info = machine()
    header = [
        f"LeadTrail storage benchmark ({mode}): median of {args.runs} runs, min - max",
        f"  {info['cpus']} CPUs, Python {info['python']}, {info['platform']}",
        f"  wireform {info['wireform']}, ingest {info['ingest']} (LEADTRAIL_PURE=1 runs the pure twins)",
        f"  data dir {data_dir}, fsync policy always (default), batches of {BATCH}, "
        f"{scale.append_events:,} events per append run, {elapsed:.0f} s in all",
    ]
    print(report(results, header, scale))
    if args.json_path:
        payload = {
            "mode": mode,
            "runs": args.runs,
            "scale": scale.__dict__,
            "machine": info,
            "data_dir": data_dir,
            "elapsed_s": elapsed,
            "figures": {key: f.as_json() for key, f in results.figures.items()},
            "targets": [
                {"target": goal, "measured": measured, "pass": passed}
                for goal, measured, passed in targets(results, scale)
            ],
        }
        with open(args.json_path, "w", encoding="utf-8") as out:
            json.dump(payload, out, indent=2)
            out.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
