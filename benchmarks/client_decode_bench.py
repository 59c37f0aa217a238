"""What the SDK spends per event turning a read's answer into model objects.

    python benchmarks/client_decode_bench.py [--runs 7] [--seconds 0.3]
    valgrind --tool=callgrind python benchmarks/client_decode_bench.py --case N --repeat R

The answers are those a server sends for the workload (``timeline_answer``): a
typical lead's timeline (7 steps, JSON snapshots, field changes) and a
``QueryEvents`` page of 100 events with and without snapshots. For each, per
event, the median of ``--runs`` runs with min-max:

- ``parse``: the protobuf parse gRPC does before the SDK sees the answer;
- ``decode``: the SDK's conversion into ``Timeline`` / ``Event`` objects, what
  a caller that reads a few attributes (a count, the types) pays;
- ``decode + read all``: the conversion, then every attribute of every event,
  step and change read once (snapshots and changes included).

Figures are CPU time of this process on a shared machine: compare the lines of
one run with each other, not with another run's. For instruction counts, run
one case (``--case``, numbered as printed) ``--repeat`` times under callgrind,
once with ``--repeat 0``: the difference over the events decoded is per event.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import fields

if __package__ in (None, ""):  # run as a script: the repository root holds the ``benchmarks`` package
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from leadtrail.client import Event, Timeline
from leadtrail.client._convert import event_from_proto, timeline_from_proto
from leadtrail.v1 import query_pb2

from benchmarks import timeline_answer, workload


def read_event(event: Event) -> None:
    for item in fields(event):
        getattr(event, item.name)


def read_timeline(timeline: Timeline) -> None:
    read: list[object] = []
    for step in timeline.steps:
        read_event(step.event)
        for change in step.changes:
            read.extend((change.field, change.before, change.after, change.kind))


def per_event_us(work: Callable[[], object], events: int, seconds: float, runs: int) -> list[float]:
    """Microseconds of CPU per event of ``work()``, one figure per run."""
    results = []
    for _ in range(runs):
        calls, began = 0, time.process_time()
        while True:
            work()
            calls += 1
            elapsed = time.process_time() - began
            if elapsed >= seconds:
                break
        results.append(elapsed / calls / events * 1e6)
    return results


def cases() -> Sequence[tuple[str, int, Callable[[], object]]]:
    work = workload.build(dataset_events=3_000, single_events=0, live_events=0, timeline_reads=0, scans=0)
    timeline_bytes = timeline_answer.canned_timeline(work.dataset)
    steps = len(query_pb2.Timeline.FromString(timeline_bytes).steps)
    page = query_pb2.QueryEventsResponse()
    page_lean = query_pb2.QueryEventsResponse()
    for position, d in enumerate(work.dataset[:100], start=1):
        timeline_answer.event_message(d, position, page.events.add())
        lean = page_lean.events.add()
        timeline_answer.event_message(d, position, lean)
        lean.ClearField("lead_json")
    page_bytes, lean_bytes = page.SerializeToString(), page_lean.SerializeToString()
    timeline_message = query_pb2.Timeline.FromString(timeline_bytes)
    page_message = query_pb2.QueryEventsResponse.FromString(page_bytes)
    lean_message = query_pb2.QueryEventsResponse.FromString(lean_bytes)

    def page_read_all(message: query_pb2.QueryEventsResponse) -> None:
        for event in [event_from_proto(m) for m in message.events]:
            read_event(event)

    cases: Sequence[tuple[str, int, Callable[[], object]]] = (
        (f"timeline of {steps} steps: parse", steps, lambda: query_pb2.Timeline.FromString(timeline_bytes)),
        (f"timeline of {steps} steps: decode", steps, lambda: timeline_from_proto(timeline_message)),
        (
            f"timeline of {steps} steps: decode + read all",
            steps,
            lambda: read_timeline(timeline_from_proto(timeline_message)),
        ),
        ("query page of 100 with snapshots: parse", 100,
         lambda: query_pb2.QueryEventsResponse.FromString(page_bytes)),
        ("query page of 100 with snapshots: decode", 100,
         lambda: [event_from_proto(m) for m in page_message.events]),
        ("query page of 100 with snapshots: decode + read all", 100, lambda: page_read_all(page_message)),
        ("query page of 100 without snapshots: decode", 100,
         lambda: [event_from_proto(m) for m in lean_message.events]),
        ("query page of 100 without snapshots: decode + read all", 100, lambda: page_read_all(lean_message)),
    )  # fmt: skip
    return cases


def measurements(seconds: float, runs: int) -> list[tuple[str, list[float]]]:
    return [(label, per_event_us(work, events, seconds, runs)) for label, events, work in cases()]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=0.3, help="CPU seconds per run and case")
    parser.add_argument("--case", type=int, help="run only this case (1-based, as printed), untimed")
    parser.add_argument("--repeat", type=int, default=1000, help="with --case: how many times")
    args = parser.parse_args(argv)
    if args.case is not None:
        label, events, work = cases()[args.case - 1]
        for _ in range(args.repeat):
            work()
        print(f"{label}: {args.repeat} x {events} events")
        return 0
    print(f"client decoding, CPU us per event, median of {args.runs} runs (min-max)")
    for number, (label, runs) in enumerate(measurements(args.seconds, args.runs), start=1):
        print(f"  {number}. {label:<53} {statistics.median(runs):7.2f} us  ({min(runs):.2f}-{max(runs):.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
