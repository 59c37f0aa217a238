"""What the hash chain costs the write path: the same appends with the chain and without.

    git worktree add /tmp/unchained <a commit before the chain>   # once, with its own venv:
    python -m venv /tmp/unchained-venv && /tmp/unchained-venv/bin/pip install -e /tmp/unchained
    python benchmarks/chain_bench.py --baseline /tmp/unchained-venv/bin/python [--runs 5] [--events 10000]

Both sides run this file's child part with their own interpreter (each imports its own
``leadtrail``): the simulator's events (snapshots of about 1.2 KB) appended durably in
batches of 100 through ``EventLog.append``, after a first part has trained the store's
dictionary, with the compiled twins. Figures, per side:

- events/s, wall clock: the median of ``--runs`` runs with min-max, the two sides'
  runs interleaved so that both see the same machine;
- instructions per event (callgrind, every thread, between two marks around the timed
  appends; the kernel's write and fdatasync are not counted): they do not depend on
  what else the machine does;
- log bytes per event (the segments' size over the events) and the index's.

The ratio chained/unchained is the figure the target (>= 0.95 x) is about.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: the repository root holds the ``benchmarks`` package
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.callgrind import phase_totals, valgrind_prefix

SEED = 20240115
BATCH = 100
WARM = 2_500
CALLGRIND_EVENTS = 1_000
CALLGRIND_MAP_SIZE = 1 << 30


def _events(n: int) -> list[Any]:
    from leadtrail.server.simulation import LeadFlowSimulator
    from leadtrail.storage import Event, Outcome

    simulator = LeadFlowSimulator(SEED)
    out: list[Any] = []
    while len(out) < n:
        for d in simulator.events(max(1, (n - len(out)) // 7 + 1)):
            out.append(
                Event(
                    type=d["type"], lead_id=d["lead_id"], flow_id=d["flow_id"], id=d["id"],
                    timestamp_ms=d["timestamp_ms"], entity_id=d["entity_id"], outcome=Outcome(d["outcome"]),
                    reason=d["reason"], duration_ms=d["duration_ms"], integration=d["integration"],
                    response_code=d["response_code"], price=d["price"], details=d["details"], lead=d["lead"],
                )
            )  # fmt: skip
    return out[:n]


def _child(events: int, scratch: str, marks: bool) -> int:
    from leadtrail.storage import EventLog, Options, ingest

    everything = _events(WARM + events)
    warm, measured = everything[:WARM], everything[WARM:]
    options = Options(map_size=CALLGRIND_MAP_SIZE) if marks else Options()
    path = Path(scratch) / f"store-{os.getpid()}"
    with EventLog.open(path, options) as log:
        for i in range(0, len(warm), BATCH):
            log.append(warm[i : i + BATCH])
        trainer = log.trainer
        if trainer is not None and not trainer.wait_idle(timeout=600):
            raise RuntimeError("the dictionary did not finish training")
        before = sum(p.stat().st_size for p in (path / "log").glob("*.log"))
        if marks:
            os.getppid()
        start = time.perf_counter_ns()
        for i in range(0, len(measured), BATCH):
            log.append(measured[i : i + BATCH])
        elapsed = time.perf_counter_ns() - start
        if marks:
            os.getppid()
        after = sum(p.stat().st_size for p in (path / "log").glob("*.log"))
        index = sum(p.stat().st_size for p in (path / "index").glob("*"))
        total = log.stats().event_count
    figures = {
        "ingest": ingest.IMPLEMENTATION,
        "events_per_s": events / (elapsed / 1e9),
        "log_bytes_per_event": (after - before) / events,
        "index_bytes_per_event": index / total,
    }
    print(json.dumps(figures))
    return 0


def _run(python: str, events: int, scratch: Path, prefix: list[str] | None = None) -> dict[str, Any]:
    command = [
        *(prefix or []),
        python,
        __file__,
        "--child",
        "--events",
        str(events),
        "--scratch",
        str(scratch),
    ]
    if prefix:
        command.append("--marks")
    env = {k: v for k, v in os.environ.items() if k != "LEADTRAIL_PURE"}
    done = subprocess.run(command, capture_output=True, text=True, check=True, timeout=3600, env=env)
    answer: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return answer


def _instructions(python: str, name: str, scratch: Path) -> float:
    out = scratch / f"callgrind-{name}.out"
    _run(python, CALLGRIND_EVENTS, scratch, valgrind_prefix(out))
    phases = phase_totals(out)  # [setup, warm appends] [timed appends] [the rest, at exit]
    return phases[1] / CALLGRIND_EVENTS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", metavar="PYTHON", help="interpreter of a checkout without the chain")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--no-callgrind", action="store_true")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--scratch", help=argparse.SUPPRESS)
    parser.add_argument("--marks", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return _child(args.events, args.scratch, args.marks)
    if not args.baseline:
        parser.error("--baseline PYTHON is required")
    sides = {"chained": sys.executable, "unchained": args.baseline}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in sides}
    with tempfile.TemporaryDirectory(prefix="chain-bench-") as scratch:
        for _ in range(max(args.runs, 3)):
            for name, python in sides.items():
                runs[name].append(_run(python, args.events, Path(scratch)))
        instructions = {}
        if not args.no_callgrind:
            instructions = {
                name: _instructions(python, name, Path(scratch)) for name, python in sides.items()
            }
    figures: dict[str, Any] = {}
    for name, answers in runs.items():
        rates = [a["events_per_s"] for a in answers]
        figures[name] = {
            "twin": answers[0]["ingest"],
            "events_per_s": {
                "median": statistics.median(rates),
                "min": min(rates),
                "max": max(rates),
                "runs": rates,
            },
            "log_bytes_per_event": statistics.median(a["log_bytes_per_event"] for a in answers),
            "index_bytes_per_event": statistics.median(a["index_bytes_per_event"] for a in answers),
            "instructions_per_event": instructions.get(name),
        }
    ratio = figures["chained"]["events_per_s"]["median"] / figures["unchained"]["events_per_s"]["median"]
    print(
        f"appends of {args.events} simulated events in batches of {BATCH}, {max(args.runs, 3)} runs each side"
    )
    head = f"{'side':<11}{'twin':<10}{'events/s':>10}{'min-max':>20}{'log B/ev':>10}{'index B/ev':>11}"
    print(head + f"{'instr/ev':>11}")
    for name, f in figures.items():
        rate = f["events_per_s"]
        count = f"{f['instructions_per_event']:,.0f}" if f["instructions_per_event"] else "-"
        print(
            f"{name:<11}{f['twin']:<10}{rate['median']:>10,.0f}{rate['min']:>10,.0f} - {rate['max']:<8,.0f}"
            f"{f['log_bytes_per_event']:>10.1f}{f['index_bytes_per_event']:>11.1f}{count:>11}"
        )
    print(f"chained / unchained events/s: {ratio:.3f}x (target >= 0.95x)")
    if instructions:
        print(f"instructions: {instructions['chained'] / instructions['unchained']:.3f}x")
    if args.json:
        args.json.write_text(json.dumps({"ratio": ratio, "figures": figures}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
