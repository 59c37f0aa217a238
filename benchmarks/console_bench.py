"""What a console lead page costs: ``GET /leads/{id}`` of a ten-step lead, server time and wall time.

    python -m benchmarks.console_bench [--runs N] [--requests N] [--leads N] [--steps N] [--out FILE]

A real ``leadtrail serve`` (loopback ports chosen by the kernel, ``--fsync always``, keys on,
so every request is admitted as in production) holding ``leadtrail demo --leads N``
(simulated flows, about seven events a lead) and one lead of ten steps built from a
simulated journey (its snapshot of about thirty fields grows and changes along the way);
``--steps 1000`` measures a page of a thousand steps instead (the most a page shows).

Each run asks for that lead's page ``--requests`` times over one keep-alive HTTP
connection with an admin key (``Authorization: Bearer``) and reads two figures per
request: the server's own time from the ``Server-Timing: app;dur=<ms>`` header the console
sends, and the wall time from sending the request to the last byte of the page. In the
same run, interleaved, the baseline: ``GetTimeline`` of the same lead over gRPC with the
SDK (``leadtrail.client.Client.timeline``), wall time per call. A run's figure is the
median of its requests; the report gives the median of the runs with min-max, and p90 of
all requests. Target: a ten-step lead page in <= 50 ms server time.

The machine's load average is read before and after, since the figures are only as quiet
as the machine.
"""

from __future__ import annotations

import argparse
import http.client
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from leadtrail.client import Client, Event
from leadtrail.server.demo import to_event
from leadtrail.server.simulation import LeadFlowSimulator, SimulatedEvent

LEADTRAIL = [sys.executable, "-m", "leadtrail.server.cli"]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LEAD = "lead-bench"
STEPS = 10
"""The lead measured by default; ``--steps`` measures a longer one (the target is for ten)."""
TARGET_MS = 50.0
WARMUP = 20
PAGE_STEPS = 1000
"""Steps a lead page shows at most (the rest are behind its next link)."""
SERVER_TIMING = re.compile(r"\bapp;dur=([0-9.]+)")
READY = re.compile(r"serving on (127\.0\.0\.1:\d+).*http on (127\.0\.0\.1:\d+)")


# -- the server ------------------------------------------------------------------------------------


class Server:
    """``leadtrail serve`` on loopback ports the kernel picks, with one admin key."""

    def __init__(self, data: str, log_path: str) -> None:
        os.makedirs(data, exist_ok=True)
        made = subprocess.run(
            [*LEADTRAIL, "keys", "create", "--data", data, "--account", "bench", "--role", "admin"],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        self.key = made.stdout.strip()
        argv = [*LEADTRAIL, "serve", "--data", data, "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0"]
        with open(log_path, "wb") as log:
            self.process = subprocess.Popen(
                [*argv, "--fsync", "always"], stdout=subprocess.PIPE, stderr=log, text=True, cwd=ROOT
            )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()  # the ready line, or nothing when it failed
        found = READY.search(line)
        if found is None:
            self.stop()
            with open(log_path, encoding="utf-8", errors="replace") as log:
                raise RuntimeError(f"server did not start: {line}{log.read()[-2000:]}")
        self.address, self.http_address = found.group(1), found.group(2)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


def long_lead(seed: int, steps: int) -> list[Event]:
    """A simulated journey with the most steps, made ``steps`` long (later feedback when it had fewer),
    as lead ``LEAD``, its times moved to the last days."""
    by_lead: dict[str, list[SimulatedEvent]] = defaultdict(list)
    for simulated in LeadFlowSimulator(seed=seed + 1).events(200):
        by_lead[simulated["lead_id"]].append(simulated)
    journey = max(by_lead.values(), key=len)[:steps]
    shift = (datetime.now(UTC) - timedelta(days=2)).timestamp() * 1000 - journey[0]["timestamp_ms"]
    events = []
    for i in range(steps):
        simulated = dict(journey[min(i, len(journey) - 1)])
        if i >= len(journey):  # the buyer's later word on the lead: a field added, then changed
            simulated.update(type="feedback.received", reason="Contacted", price="")
            simulated["lead"] = {**simulated["lead"], "feedback.contacts": i - len(journey) + 1}
            simulated["timestamp_ms"] = journey[-1]["timestamp_ms"] + (i - len(journey) + 1) * 3_600_000
        simulated.update(lead_id=LEAD, timestamp_ms=int(simulated["timestamp_ms"] + shift))
        events.append(to_event(simulated, ""))  # type: ignore[arg-type]
    return events


def fill(server: Server, leads: int, seed: int, steps: int) -> int:
    """The demo's flows and the lead measured; the events stored."""
    demo = ["demo", "--leads", str(leads), "--seed", str(seed), "--server", server.address]
    subprocess.run(
        [*LEADTRAIL, *demo, "--api-key", server.key],
        capture_output=True,
        check=True,
        timeout=600,
    )
    with Client(server.address, api_key=server.key) as client:
        lead = long_lead(seed, steps)
        for k in range(0, steps, 500):
            client.append(lead[k : k + 500])
        assert sum(len(page.steps) for page in client.timeline_pages(LEAD)) == steps
        return client.stats().event_count


# -- measurements ----------------------------------------------------------------------------------


@dataclass
class Run:
    server_ms: list[float] = field(default_factory=list)
    page_ms: list[float] = field(default_factory=list)
    grpc_ms: list[float] = field(default_factory=list)
    page_bytes: int = 0


def page(connection: http.client.HTTPConnection, key: str, steps: int) -> tuple[float, float, int]:
    """One GET of the lead page: server ms (Server-Timing), wall ms, bytes."""
    began = time.perf_counter()
    connection.request("GET", f"/leads/{LEAD}", headers={"Authorization": f"Bearer {key}"})
    answer = connection.getresponse()
    body = answer.read()
    wall = (time.perf_counter() - began) * 1000
    if answer.status != 200:
        raise RuntimeError(f"GET /leads/{LEAD}: {answer.status} {body[:500]!r}")
    timing = SERVER_TIMING.search(answer.getheader("Server-Timing") or "")
    if timing is None:
        raise RuntimeError(f"no Server-Timing app;dur= header: {answer.getheaders()}")
    shown = min(steps, PAGE_STEPS)
    if body.count(b'data-testid="timeline-step"') != shown:
        raise RuntimeError(f"the page does not show {shown} steps")
    return float(timing.group(1)), wall, len(body)


def measure(server: Server, requests: int, steps: int) -> Run:
    host, _, port = server.http_address.rpartition(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    run = Run()
    with Client(server.address, api_key=server.key) as client:
        for _ in range(WARMUP):
            page(connection, server.key, steps)
            client.timeline(LEAD)
        for _ in range(requests):
            server_ms, wall_ms, size = page(connection, server.key, steps)
            run.server_ms.append(server_ms)
            run.page_ms.append(wall_ms)
            run.page_bytes = size
            began = time.perf_counter()
            client.timeline(LEAD)
            run.grpc_ms.append((time.perf_counter() - began) * 1000)
    connection.close()
    return run


def spread(values: Sequence[float]) -> str:
    return f"{statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f})"


def p90(values: Sequence[float]) -> float:
    return statistics.quantiles(values, n=10)[-1]


def report(runs: list[Run], argv: Sequence[str], events: int, steps: int, loads: tuple[str, str]) -> str:
    server = [statistics.median(r.server_ms) for r in runs]
    wall = [statistics.median(r.page_ms) for r in runs]
    grpc = [statistics.median(r.grpc_ms) for r in runs]
    every = [ms for r in runs for ms in r.server_ms]
    verdict = "met" if statistics.median(server) <= TARGET_MS else "NOT met"
    if steps != STEPS:
        verdict += f" (the target is for {STEPS} steps)"
    lines = [
        f"# Console lead page ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)",
        "",
        f"`python -m benchmarks.console_bench {' '.join(argv)}` at commit {commit()} on {platform.node()} "
        f"({os.cpu_count()} cores); {events:,} events stored, the page of a {steps}-step lead "
        f"({runs[0].page_bytes:,} bytes), {len(runs)} runs x {len(runs[0].server_ms)} requests after "
        f"{WARMUP} warm-up ones, one keep-alive connection, admin key. Load average (1, 5, 15 min) "
        f"before: {loads[0]}; after: {loads[1]}.",
        "",
        "| figure (ms) | median of run medians (min-max) | p90 of all requests |",
        "|---|---|---|",
        f"| GET /leads/{{id}} server time (Server-Timing app;dur) | {spread(server)} | {p90(every):.1f} |",
        f"| GET /leads/{{id}} wall time | {spread(wall)} | {p90([m for r in runs for m in r.page_ms]):.1f} |",
        f"| baseline: GetTimeline over gRPC (SDK), wall time | {spread(grpc)} | "
        f"{p90([m for r in runs for m in r.grpc_ms]):.1f} |",
        "",
        f"Target: a {STEPS}-step lead page in <= {TARGET_MS:.0f} ms server time: {verdict}.",
    ]
    return "\n".join(lines) + "\n"


def commit() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    return done.stdout.strip() or "unknown"


def load_average() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--requests", type=int, default=200, help="page requests per run")
    parser.add_argument("--leads", type=int, default=700, help="demo leads beside the measured one")
    parser.add_argument("--steps", type=int, default=STEPS, help="steps of the lead measured")
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--out", help="also write the report (Markdown) to this file")
    args = parser.parse_args(argv)
    shown = list(sys.argv[1:] if argv is None else argv)
    before = load_average()
    with tempfile.TemporaryDirectory(prefix="console-bench-") as scratch:
        server = Server(os.path.join(scratch, "data"), os.path.join(scratch, "server.log"))
        try:
            events = fill(server, args.leads, args.seed, args.steps)
            runs = [measure(server, args.requests, args.steps) for _ in range(args.runs)]
        finally:
            server.stop()
    text = report(runs, shown, events, args.steps, (before, load_average()))
    print(text, end="")
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
