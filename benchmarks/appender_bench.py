"""Benchmark of ``BackgroundAppender.submit()``: what the flow engine pays per event.

    python benchmarks/appender_bench.py [--quick] [--runs N] [--events N] [--json FILE]

Starts ``leadtrail serve`` on a loopback port in a temporary directory, then per
run submits N events (default 50,000; each a new Event without id, so the
ULID assignment is included) from one thread and times every call. Reported:
p50, p99 and max of one submit in microseconds, the median of the runs with
min-max beside it, and the same figures for ``queue.Queue.put_nowait`` of the
same object in the same process: the floor any queue-backed submit stands on.

The queue is sized to hold a whole run, so the figures are the overhead of
``submit()`` itself and not back-pressure from the server (that is the
``full_policy``'s job). The run ends with a flush and checks that every event
was acknowledged. Target: p99 below 100 us.
"""

from __future__ import annotations

import argparse
import json
import queue
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

from leadtrail.client import BackgroundAppender, Event, Outcome

TARGET_P99_US = 100.0
READY = re.compile(r"(127\.0\.0\.1:\d+)")


def sample_event(n: int) -> Event:
    return Event(
        type="recipient.delivered",
        lead_id=f"lead-{n}",
        flow_id="flow-bench",
        entity_id="buyer-17",
        outcome=Outcome.SUCCESS,
        reason="accepted",
        duration_ms=120,
        integration="ping_post",
        response_code=200,
        price=Decimal("12.50"),
        details={"rule_set": "default", "rules_evaluated": 14},
        lead={"email": f"{n}@example.com", "email.valid": True, "state": "TX", "zip": "73301"},
    )


def percentiles(samples_ns: list[int]) -> dict[str, float]:
    ordered = sorted(samples_ns)
    last = len(ordered) - 1
    return {
        "p50_us": ordered[last // 2] / 1000,
        "p99_us": ordered[round(last * 0.99)] / 1000,
        "max_us": ordered[last] / 1000,
    }


def time_calls(call: Callable[[Event], object], events: Sequence[Event]) -> list[int]:
    clock = time.perf_counter_ns
    samples = [0] * len(events)
    for index, event in enumerate(events):
        started = clock()
        call(event)
        samples[index] = clock() - started
    return samples


def run_submit(address: str, count: int) -> dict[str, float]:
    events = [sample_event(n) for n in range(count)]
    appender = BackgroundAppender(address, max_queue=count + 1)
    try:
        figures = percentiles(time_calls(appender.submit, events))
        if not appender.flush(120) or appender.acknowledged != count:
            raise SystemExit(f"only {appender.acknowledged} of {count} events were acknowledged")
    finally:
        appender.close(30)
    return figures


def run_baseline(count: int) -> dict[str, float]:
    events = [sample_event(n) for n in range(count)]
    target: queue.Queue[Event] = queue.Queue(count + 1)
    return percentiles(time_calls(target.put_nowait, events))


class Server:
    """``leadtrail serve`` on a free loopback port, for the duration of a ``with`` block."""

    def __init__(self, data: str) -> None:
        command = [sys.executable, "-m", "leadtrail.server.cli", "serve", "--data", data]
        self.proc = subprocess.Popen(
            [*command, "--listen", "127.0.0.1:0", "--http", "off"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.address = ""

    def __enter__(self) -> Server:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            match = READY.search(line)
            if match:
                self.address = match.group(1)
                threading.Thread(target=self.proc.stdout.read, daemon=True).start()
                return self
        raise SystemExit("the server did not start")

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        self.proc.wait(30)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def summarize(runs: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    return {
        key: {
            "median": statistics.median(run[key] for run in runs),
            "min": min(run[key] for run in runs),
            "max": max(run[key] for run in runs),
        }
        for key in runs[0]
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="3 runs of 10,000 events")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args(argv)
    runs, count = (3, 10_000) if args.quick else (max(3, args.runs), args.events)

    submit_runs: list[dict[str, float]] = []
    baseline_runs: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="leadtrail-bench-") as data, Server(data) as server:
        run_submit(server.address, min(count, 2000))  # warm-up: connection, imports, caches
        for _ in range(runs):
            baseline_runs.append(run_baseline(count))
            submit_runs.append(run_submit(server.address, count))

    submit, baseline = summarize(submit_runs), summarize(baseline_runs)
    print(f"BackgroundAppender.submit(): {runs} runs x {count:,} events, median (min-max), microseconds")
    print(f"{'':<28}{'p50':>24}{'p99':>24}{'max':>30}")
    for name, figures in (("submit()", submit), ("baseline Queue.put_nowait", baseline)):
        cells = [
            f"{figures[key]['median']:.2f} ({figures[key]['min']:.2f}-{figures[key]['max']:.2f})"
            for key in ("p50_us", "p99_us", "max_us")
        ]
        print(f"{name:<28}{cells[0]:>24}{cells[1]:>24}{cells[2]:>30}")
    met = submit["p99_us"]["median"] < TARGET_P99_US
    print(f"target p99 < {TARGET_P99_US:.0f} us: {'met' if met else 'NOT met'}")

    if args.json:
        result: dict[str, Any] = {
            "runs": runs,
            "events_per_run": count,
            "submit_us": submit,
            "baseline_queue_put_nowait_us": baseline,
            "target_p99_us": TARGET_P99_US,
            "target_met": met,
        }
        with open(args.json, "w") as file:
            json.dump(result, file, indent=2)
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
