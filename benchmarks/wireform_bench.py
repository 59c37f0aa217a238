"""Cost per event of each ``leadtrail.storage.wireform`` function, for both twins.

    python benchmarks/wireform_bench.py [--tiny] [--runs N] [--leads N] [--no-callgrind] [--json FILE]

Inputs are realistic: the events of ``LeadFlowSimulator(seed=42)`` (snapshots of
about 1.2 KB), encoded, spliced, diffed against the lead's previous snapshot,
gathered into each lead's timeline and into pages of 100 events; each event's
protobuf bytes compressed against (and decompressed with) its lead's previous
ones, as format 1.3 stores a lead's later bodies (per event that has one).

Two figures per function and twin:

- instructions per event, counted by callgrind (``valgrind --tool=callgrind``)
  in one child process that collects only inside the measured calls: they run
  under ``itertools.starmap`` and collection is toggled on ``starmap_next``, so
  the count is the calls themselves (argument passing included), not the
  setup; a dump before each phase separates the functions and the twins.
  Instruction counts do not depend on what else the machine is doing, which
  wall-clock times on a shared machine do;
- wall-clock microseconds per event: the median of ``--runs`` runs, with min-max.

Where protobuf's own classes do the same work (an Event serialized, a step's
changes filled field by field, as reads did before format 1.2), their wall-clock time is measured in
the same run as the baseline the ratio is taken to.
"""

from __future__ import annotations

import argparse
import importlib
import itertools
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson
from leadtrail.client.wire import python_to_value
from leadtrail.server.simulation import LeadFlowSimulator
from leadtrail.v1 import event_pb2, query_pb2

SEED = 42
PAGE = 100
TWINS = {"pure": "leadtrail.storage._wireform_py", "compiled": "leadtrail.storage._wireform"}
FUNCTIONS = (
    "encode_event", "splice_event", "field_changes", "value_bytes", "struct_bytes",
    "timeline_bytes", "repeated_field", "prefix_compress", "prefix_decompress",
)  # fmt: skip
LEVEL = 3
"""The store's default zstd level (``Options.compression_level``)."""
ACCOUNT = b"default"
CALLGRIND_LEADS = 40
"""About 260 events: enough calls that the count per event is steady, few enough for valgrind."""


@dataclass(frozen=True)
class Workload:
    """Each function's argument tuples, and how many events those calls stand for."""

    calls: dict[str, list[tuple[Any, ...]]]
    events_per_call: dict[str, list[int]]
    events: int


def workload(leads: int, twin: ModuleType) -> Workload:
    """The simulated events, and from them every function's inputs (built with ``twin``)."""
    events = list(LeadFlowSimulator(seed=SEED).events(leads))
    encode_args = [
        (e["id"], e["type"], e["timestamp_ms"], e["lead_id"], e["flow_id"], e["entity_id"], int(e["outcome"]),
         e["reason"], e["duration_ms"], e["integration"], e["response_code"], e["price"],
         orjson.dumps(e["details"]), orjson.dumps(e["lead"]))
        for e in events
    ]  # fmt: skip
    stored = [twin.encode_event(*args) for args in encode_args]
    splice_args = [
        (event_pb, head_len, e["timestamp_ms"] + 3, position, ACCOUNT)
        for position, ((event_pb, head_len), e) in enumerate(zip(stored, events, strict=True), start=1)
    ]
    spliced = [twin.splice_event(*args) for args in splice_args]
    previous: dict[str, dict[str, Any]] = {}
    change_args = []
    for e in events:
        change_args.append((previous.get(e["lead_id"], {}), e["lead"]))
        previous[e["lead_id"]] = e["lead"]
    step_changes = [twin.field_changes(*args) for args in change_args]
    steps_of: dict[str, list[tuple[bytes, int, bytes]]] = {}
    last_ms: dict[str, int] = {}
    for e, event_bytes, diff in zip(events, spliced, step_changes, strict=True):
        since = e["timestamp_ms"] - last_ms.get(e["lead_id"], e["timestamp_ms"])
        last_ms[e["lead_id"]] = e["timestamp_ms"]
        steps_of.setdefault(e["lead_id"], []).append((event_bytes, since, diff))
    timeline_args: list[tuple[Any, ...]] = [
        (lead_id, steps, last_ms[lead_id] - events[0]["timestamp_ms"], "", [])
        for lead_id, steps in steps_of.items()
    ]
    page_args = [(1, spliced[i : i + PAGE]) for i in range(0, len(spliced), PAGE)]
    last_body: dict[str, bytes] = {}
    compress_args = []
    for e, (event_pb, _) in zip(events, stored, strict=True):
        base = last_body.get(e["lead_id"])
        if base is not None:
            compress_args.append((event_pb, base, LEVEL))
        last_body[e["lead_id"]] = event_pb
    decompress_args = [(twin.prefix_compress(*args), args[1], len(args[0])) for args in compress_args]
    calls: dict[str, list[tuple[Any, ...]]] = {
        "encode_event": encode_args,
        "splice_event": splice_args,
        "field_changes": change_args,
        "value_bytes": [(e["lead"],) for e in events],
        "struct_bytes": [(e["lead"],) for e in events],
        "timeline_bytes": timeline_args,
        "repeated_field": page_args,
        "prefix_compress": compress_args,
        "prefix_decompress": decompress_args,
    }
    events_per_call = {name: [1] * len(events) for name in calls}
    events_per_call["timeline_bytes"] = [len(steps) for steps in steps_of.values()]
    events_per_call["repeated_field"] = [len(page) for _, page in page_args]
    events_per_call["prefix_compress"] = [1] * len(compress_args)
    events_per_call["prefix_decompress"] = [1] * len(decompress_args)
    return Workload(calls, events_per_call, len(events))


def _protobuf_event(
    id: str, type: str, timestamp_ms: int, lead_id: str, flow_id: str, entity_id: str, outcome: int,
    reason: str, duration_ms: int, integration: str, response_code: int, price: str, details_json: bytes,
    lead_json: bytes,
) -> bytes:  # fmt: skip
    message = event_pb2.Event(
        id=id, type=type, lead_id=lead_id, flow_id=flow_id, entity_id=entity_id,
        outcome=outcome,  # type: ignore[arg-type]
        reason=reason, duration_ms=duration_ms, integration=integration, response_code=response_code,
        price=price, details_json=details_json, lead_json=lead_json,
    )  # fmt: skip
    message.timestamp.FromMilliseconds(timestamp_ms)
    return message.SerializeToString()


def _protobuf_changes(before: dict[str, Any], after: dict[str, Any]) -> bytes:
    """The changes as reads built them before format 1.2 stored them: protobuf objects."""

    def same(a: Any, b: Any) -> bool:
        if isinstance(a, bool) or isinstance(b, bool):
            return type(a) is type(b) and a == b
        return bool(a == b)

    step = query_pb2.TimelineStep()
    changed = sorted(
        [f for f in before if f not in after]
        + [f for f, v in after.items() if f not in before or not same(before[f], v)]
    )
    for field in changed:
        if field not in before:
            change = step.changes.add(field=field, kind=query_pb2.CHANGE_KIND_ADDED)
            python_to_value(after[field], change.after)
        elif field not in after:
            change = step.changes.add(field=field, kind=query_pb2.CHANGE_KIND_REMOVED)
            python_to_value(before[field], change.before)
        else:
            change = step.changes.add(field=field, kind=query_pb2.CHANGE_KIND_CHANGED)
            python_to_value(before[field], change.before)
            python_to_value(after[field], change.after)
    return step.SerializeToString()


BASELINES: dict[str, Callable[..., bytes]] = {
    "encode_event": _protobuf_event,
    "field_changes": _protobuf_changes,
}
"""The same work done by protobuf's classes, as the server did it before the wire form."""


def _consume(function: Callable[..., Any], calls: Iterable[tuple[Any, ...]]) -> None:
    # starmap's C loop is what callgrind's collection is toggled on: keep every measured
    # call under it, and nothing else.
    deque(itertools.starmap(function, calls), maxlen=0)


def wall_clock(
    function: Callable[..., Any], calls: list[tuple[Any, ...]], events: int, runs: int
) -> list[float]:
    """Microseconds per event, one figure per run."""
    _consume(function, calls)  # warm caches (and the UTF-8 forms of the snapshots' strings) first
    figures = []
    for _ in range(runs):
        start = time.perf_counter_ns()
        _consume(function, calls)
        figures.append((time.perf_counter_ns() - start) / 1000 / events)
    return figures


# -- callgrind --------------------------------------------------------------------------------

_TOTALS = re.compile(rb"^(?:summary|totals):\s+(\d+)", re.MULTILINE)
_PART = re.compile(rb"^part:\s+(\d+)", re.MULTILINE)


def _child_main(twin_names: list[str], leads: int) -> int:
    """Runs under callgrind: one phase per twin and function, then per protobuf baseline, each
    opened by ``os.getppid()`` (callgrind dumps the counts before it: ``--dump-before=os_getppid``).
    The inputs and a first call (first-call costs) run outside ``starmap``, not collected; then
    the other calls under it. Prints how many events each phase's calls stand for."""
    work = workload(leads, importlib.import_module(TWINS["pure"]))  # the same bytes from either twin
    phases = []
    for twin_name in twin_names:
        twin = importlib.import_module(TWINS[twin_name])
        for function_name in FUNCTIONS:
            function = getattr(twin, function_name)
            calls, events = work.calls[function_name], work.events_per_call[function_name]
            os.getppid()
            function(*calls[0])
            _consume(function, calls[1:])
            phases.append(sum(events[1:]))
    for function_name, baseline in BASELINES.items():
        calls, events = work.calls[function_name], work.events_per_call[function_name]
        os.getppid()
        baseline(*calls[0])
        _consume(baseline, calls[1:])
        phases.append(sum(events[1:]))
    os.getppid()
    print(json.dumps(phases))
    return 0


def instructions_per_event(twin_names: list[str], leads: int, scratch: Path) -> dict[tuple[str, str], float]:
    """(twin, function) -> instructions per event, from one callgrind run of ``_child_main``."""
    out = scratch / "callgrind.out"
    command = [
        "valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--collect-atstart=no",
        "--toggle-collect=starmap_next", "--dump-before=os_getppid",
        sys.executable, __file__, "--child", ",".join(twin_names), "--leads", str(leads),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, check=True, timeout=3600)
    events = json.loads(result.stdout.splitlines()[-1])
    counts: dict[int, int] = {}
    for dump in scratch.glob("callgrind.out*"):
        data = dump.read_bytes()
        part = _PART.search(data)
        counts[int(part.group(1)) if part else 0] = int(_TOTALS.findall(data)[-1])
    # Part 1 is the dump before the first phase (nothing collected yet); then one per phase.
    phases = [counts[part] for part in sorted(counts)[1 : 1 + len(events)]]
    names = [(twin, function) for twin in twin_names for function in FUNCTIONS]
    names += [("protobuf", function) for function in BASELINES]
    return {name: count / n for name, count, n in zip(names, phases, events, strict=True)}


# -- the table --------------------------------------------------------------------------------


def _summary(runs: list[float]) -> dict[str, Any]:
    return {"median": statistics.median(runs), "min": min(runs), "max": max(runs), "runs": runs}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--tiny", action="store_true", help="a few leads, 3 runs, no callgrind: checks it runs"
    )
    parser.add_argument("--runs", type=int, default=7, help="wall-clock runs per figure (default 7)")
    parser.add_argument("--leads", type=int, default=0, help="simulated leads timed (default 400)")
    parser.add_argument("--no-callgrind", action="store_true", help="wall-clock figures only")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--child", metavar="TWINS", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return _child_main(args.child.split(","), args.leads or CALLGRIND_LEADS)
    runs = 3 if args.tiny else max(args.runs, 3)
    leads = args.leads or (4 if args.tiny else 400)
    callgrind = not (args.tiny or args.no_callgrind)
    if callgrind and shutil.which("valgrind") is None:
        print("valgrind is not installed: wall-clock figures only (--no-callgrind)", file=sys.stderr)
        callgrind = False
    twins = {}
    for name, module in TWINS.items():
        try:
            twins[name] = importlib.import_module(module)
        except ImportError:
            print(f"the {name} twin is not built ({module}): left out", file=sys.stderr)
    figures: dict[str, dict[str, Any]] = {}
    for name, twin in twins.items():
        work = workload(leads, twin)
        for function_name in FUNCTIONS:
            calls = work.calls[function_name]
            events = sum(work.events_per_call[function_name])
            figures.setdefault(function_name, {})[name] = _summary(
                wall_clock(getattr(twin, function_name), calls, events, runs)
            )
    work = workload(leads, twins.get("pure") or next(iter(twins.values())))
    for function_name, baseline in BASELINES.items():
        calls = work.calls[function_name]
        figures[function_name]["protobuf"] = _summary(wall_clock(baseline, calls, work.events, runs))
    if callgrind:
        with tempfile.TemporaryDirectory(prefix="wireform-callgrind-") as scratch:
            counts = instructions_per_event(list(twins), CALLGRIND_LEADS, Path(scratch))
            for (name, function_name), count in counts.items():
                figures[function_name][name]["instructions_per_event"] = count
    _print_table(figures, twins, leads, work.events, runs, callgrind)
    if args.json:
        payload = {
            "mode": "tiny" if args.tiny else "full",
            "machine": f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}",
            "leads": leads,
            "events": work.events,
            "runs": runs,
            "figures": figures,
        }
        args.json.write_text(json.dumps(payload, indent=2))
    return 0


def _print_table(
    figures: dict[str, dict[str, Any]], twins: dict[str, ModuleType], leads: int, events: int, runs: int,
    callgrind: bool,
) -> None:  # fmt: skip
    print(f"wireform: {events} events of {leads} simulated leads (seed {SEED}), {runs} runs, per event")
    print(f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    header = f"{'function':<18}{'twin':<10}{'µs median':>11}{'min-max':>17}"
    if callgrind:
        header += f"{'instructions':>14}"
    header += f"{'vs pure':>9}{'vs protobuf':>13}"
    print(header)
    for function_name in FUNCTIONS:
        row = figures[function_name]
        for name in (*twins, "protobuf"):
            if name not in row:
                continue
            figure = row[name]
            line = f"{function_name:<18}{name:<10}{figure['median']:>11.2f}"
            line += f"{figure['min']:>8.2f} - {figure['max']:<6.2f}"
            if callgrind:
                count = figure.get("instructions_per_event")
                line += f"{count:>14,.0f}" if count is not None else f"{'':>14}"
            pure = row.get("pure")
            line += f"{pure['median'] / figure['median']:>8.2f}x" if pure else f"{'':>9}"
            baseline = row.get("protobuf")
            line += f"{baseline['median'] / figure['median']:>12.2f}x" if baseline else ""
            print(line)
    print("vs pure, vs protobuf: how many times faster than that row (wall clock, medians of one run)")


if __name__ == "__main__":
    sys.exit(main())
