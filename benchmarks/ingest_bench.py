"""Cost per event of the write path, for both twins of ``leadtrail.storage.ingest``.

    python benchmarks/ingest_bench.py [--tiny] [--runs N] [--events N] [--no-callgrind] [--json FILE]

Inputs are the events of ``LeadFlowSimulator`` (snapshots of about 1.2 KB), as
``storage_bench.py`` appends them, in batches of 100.

Per twin (``compiled``: the C extensions; ``pure``: ``LEADTRAIL_PURE=1``):

- ``validate``: ``validate_batch`` (the contract's checks, the snapshot as JSON);
- ``append``: a whole durable append through ``EventLog.append`` (validation, the writer's
  group commit, encoding, compression, the log write and fdatasync, the LMDB indexes),
  after a first part of the events has trained the store's dictionary.

Two figures for each:

- instructions per event, counted by callgrind (``valgrind --tool=callgrind``) in one
  child process per twin: every thread's instructions between two dumps (taken at
  ``os.getppid()`` calls around the measured part), divided by its events. The
  kernel's work (the write and the fdatasync themselves) is not counted. Instruction
  counts do not depend on what else the machine is doing, which wall-clock times on a
  shared machine do;
- wall-clock microseconds per event: the median of ``--runs`` runs, with min-max, each
  twin in its own child process, the runs of the two interleaved.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: the repository root holds the ``benchmarks`` package
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.callgrind import phase_totals, valgrind_prefix

SEED = 20240115
BATCH = 100
WARM_EVENTS = 2_500
"""Appended before an append is timed: enough for the store to train its dictionary."""
CALLGRIND_EVENTS = 1_000
CALLGRIND_MAP_SIZE = 1 << 30
PHASES = ("validate", "append")
TWINS = ("compiled", "pure")
COMPILED_MODULE = "leadtrail.storage._ingest"


def _events(n: int) -> list[Any]:
    from leadtrail.server.simulation import LeadFlowSimulator
    from leadtrail.storage import Event, Outcome

    simulator = LeadFlowSimulator(SEED)
    events: list[Any] = []
    while len(events) < n:  # each call is one more simulated day
        events.extend(
            Event(
                type=d["type"], lead_id=d["lead_id"], flow_id=d["flow_id"], id=d["id"],
                timestamp_ms=d["timestamp_ms"], entity_id=d["entity_id"], outcome=Outcome(d["outcome"]),
                reason=d["reason"], duration_ms=d["duration_ms"], integration=d["integration"],
                response_code=d["response_code"], price=d["price"], details=d["details"], lead=d["lead"],
            )
            for d in simulator.events(max(1, (n - len(events)) // 7 + 1))
        )  # fmt: skip
    return events[:n]


def _batches(events: Sequence[Any]) -> list[Sequence[Any]]:
    return [events[i : i + BATCH] for i in range(0, len(events), BATCH)]


def _child_main(events: int, scratch: str, marks: bool) -> int:
    """One twin (the environment chooses it): times (or, under callgrind, marks with
    ``os.getppid()``) validation, then appends. Prints the twins in use and the figures."""
    from leadtrail.storage import EventLog, Options, ingest, wireform
    from leadtrail.storage.validation import validate_batch

    warm = _events(WARM_EVENTS)
    measured = _batches(_events(WARM_EVENTS + events)[WARM_EVENTS:])
    options = Options()
    for batch in measured[:3]:  # first-call costs (caches, the UTF-8 forms of the strings)
        validate_batch(batch, options)
    figures: dict[str, float] = {}
    if marks:
        os.getppid()
    start = time.perf_counter_ns()
    for batch in measured:
        validate_batch(batch, options)
    figures["validate"] = (time.perf_counter_ns() - start) / 1000 / events
    if marks:
        os.getppid()
    # valgrind cannot map the default 1 TiB of address space for LMDB: a smaller map, there only.
    store_options = Options(map_size=CALLGRIND_MAP_SIZE) if marks else options
    with EventLog.open(os.path.join(scratch, "store"), store_options) as log:
        for batch in _batches(warm):
            log.append(batch)
        # The dictionary trains on a thread of its own: done before anything is counted.
        trainer = log.trainer
        if trainer is not None and not trainer.wait_idle(timeout=600):
            raise RuntimeError("the dictionary did not finish training")
        if marks:
            os.getppid()
        start = time.perf_counter_ns()
        for batch in measured:
            log.append(batch)
        figures["append"] = (time.perf_counter_ns() - start) / 1000 / events
        if marks:
            os.getppid()
    shutil.rmtree(os.path.join(scratch, "store"))
    print(json.dumps({"ingest": ingest.IMPLEMENTATION, "wireform": wireform.IMPLEMENTATION, **figures}))
    return 0


def _environment(twin: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("LEADTRAIL_PURE", None)
    if twin == "pure":
        env["LEADTRAIL_PURE"] = "1"
    return env


def _run_child(twin: str, events: int, scratch: Path, prefix: Sequence[str] = ()) -> dict[str, Any]:
    command = [
        *prefix,
        sys.executable,
        __file__,
        "--child",
        "--events",
        str(events),
        "--scratch",
        str(scratch),
    ]
    if prefix:
        command.append("--marks")
    result = subprocess.run(
        command, capture_output=True, text=True, check=True, timeout=3600, env=_environment(twin)
    )
    answer: dict[str, Any] = json.loads(result.stdout.splitlines()[-1])
    if answer["ingest"] != twin:
        raise RuntimeError(f"asked for the {twin} twin, the child used {answer['ingest']}")
    return answer


def instructions_per_event(twin: str, events: int, scratch: Path) -> dict[str, float]:
    """phase -> instructions per event of one twin, from one callgrind run of ``_child_main``."""
    out = scratch / f"callgrind-{twin}.out"
    _run_child(twin, events, scratch, valgrind_prefix(out))
    phases = phase_totals(out)  # [setup] [validate] [opening, warm appends] [appends] [the rest, at exit]
    return {"validate": phases[1] / events, "append": phases[3] / events}


def _summary(runs: list[float]) -> dict[str, Any]:
    return {"median": statistics.median(runs), "min": min(runs), "max": max(runs), "runs": runs}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--tiny", action="store_true", help="few events, 3 runs, no callgrind: checks it runs"
    )
    parser.add_argument("--runs", type=int, default=5, help="wall-clock runs per twin (at least 3)")
    parser.add_argument("--events", type=int, default=0, help="events timed per run (default 5,000)")
    parser.add_argument("--no-callgrind", action="store_true", help="wall-clock figures only")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--scratch", help=argparse.SUPPRESS)
    parser.add_argument("--marks", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return _child_main(args.events, args.scratch, args.marks)
    runs = 3 if args.tiny else max(args.runs, 3)
    events = args.events or (300 if args.tiny else 5_000)
    callgrind = not (args.tiny or args.no_callgrind)
    if callgrind and shutil.which("valgrind") is None:
        print("valgrind is not installed: wall-clock figures only (--no-callgrind)", file=sys.stderr)
        callgrind = False
    twins = [twin for twin in TWINS if twin == "pure" or importlib.util.find_spec(COMPILED_MODULE)]
    if len(twins) < len(TWINS):
        print(f"the compiled twin is not built ({COMPILED_MODULE}): left out", file=sys.stderr)
    walls: dict[str, dict[str, list[float]]] = {twin: {phase: [] for phase in PHASES} for twin in twins}
    figures: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="ingest-bench-") as scratch:
        for _ in range(runs):
            for twin in twins:
                answer = _run_child(twin, events, Path(scratch))
                for phase in PHASES:
                    walls[twin][phase].append(answer[phase])
        for twin in twins:
            figures[twin] = {phase: _summary(walls[twin][phase]) for phase in PHASES}
        if callgrind:
            for twin in twins:
                counted = instructions_per_event(twin, min(events, CALLGRIND_EVENTS), Path(scratch))
                for phase, count in counted.items():
                    figures[twin][phase]["instructions_per_event"] = count
    _print_table(figures, events, runs, callgrind)
    if args.json:
        payload = {
            "mode": "tiny" if args.tiny else "full",
            "machine": f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}",
            "events": events,
            "runs": runs,
            "figures": figures,
        }
        args.json.write_text(json.dumps(payload, indent=2))
    return 0


def _print_table(figures: dict[str, dict[str, Any]], events: int, runs: int, callgrind: bool) -> None:
    print(f"ingest: {events} simulated events (seed {SEED}) in batches of {BATCH}, {runs} runs, per event")
    print(f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    header = f"{'phase':<10}{'twin':<10}{'µs median':>11}{'min-max':>17}{'events/s':>10}"
    if callgrind:
        header += f"{'instructions':>14}"
    print(header + f"{'vs pure':>9}")
    for phase in PHASES:
        for twin in figures:
            figure = figures[twin][phase]
            line = f"{phase:<10}{twin:<10}{figure['median']:>11.2f}"
            line += f"{figure['min']:>8.2f} - {figure['max']:<6.2f}{1e6 / figure['median']:>10,.0f}"
            if callgrind:
                line += f"{figure['instructions_per_event']:>14,.0f}"
            line += f"{figures['pure'][phase]['median'] / figure['median']:>8.2f}x"
            print(line)
    print("vs pure: how many times faster than the pure twin (wall clock, medians of one run)")
    print("the append phase is durable (fdatasync per batch) and follows a trained dictionary;")
    print("callgrind counts no kernel work (the write and fdatasync themselves)")


if __name__ == "__main__":
    sys.exit(main())
