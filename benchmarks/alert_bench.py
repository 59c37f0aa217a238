"""What alert evaluation costs ingest, and how soon a firing follows its commit.

    python benchmarks/alert_bench.py [--runs N] [--events N] [--json FILE]

Real servers (``leadtrail serve`` child processes, loopback ports chosen by the kernel,
``--fsync always``, ``--http off``) and real gRPC clients:

- batch ingest: events/s of ``Append`` with batches of 100 simulated events
  (``leadtrail.server.simulation``, ~1.5 KB each), 4 concurrent clients, on a fresh store
  without rules and on a fresh store with the four presets (delivery-failures,
  service-down, negative-margin, source-quality: ``PRESETS`` of ``alerts/rules.py``); both
  in the same run, alternating which goes first, so the ratio is fair on a shared machine.
  The figure with the presets also says how long after the last acknowledged append the
  evaluator had evaluated everything (a sentinel MATCH rule).
- firing latency: a MATCH rule on ``bench.probe``; probes are appended one at a time,
  ``PROBE_RATE`` a second, beside a background load of simulated batches, while a
  subscription to ``alert.fired`` receives the firings; latency = the moment the firing
  arrives minus the moment the probe's append was acknowledged (durable: the commit),
  both on this process's monotonic clock. p50 and p99 per run.

Each figure is the median of the runs with min-max.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import select
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from decimal import Decimal
from typing import Any

import grpc
import orjson
from leadtrail.client import AsyncClient, Event
from leadtrail.server.alerts import Kind, Rule, RuleBook
from leadtrail.server.alerts.rules import PRESETS, preset
from leadtrail.server.simulation import LeadFlowSimulator, SimulatedEvent
from leadtrail.storage import EventFilter
from leadtrail.v1 import event_pb2, submission_pb2

BATCH = 100
CLIENTS = 4
PROBE_RATE = 20
PROBES = 100
BACKGROUND_BATCHES_PER_S = 20
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APPEND = "/leadtrail.v1.SubmissionService/Append"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def presets(account: str = "default") -> list[Rule]:
    """The four presets of the product description, as ``leadtrail alerts set --preset`` sets them."""
    return [replace(preset(name, account), set_at_ms=1) for name in PRESETS]


def sentinel(account: str = "default") -> Rule:
    return Rule(
        account_id=account,
        name="bench-sentinel",
        kind=Kind.MATCH,
        filter=EventFilter(account_id=account, types=("bench.probe",)),
        threshold=Decimal(1),
        set_at_ms=1,
    )


# -- processes -------------------------------------------------------------------------------------


class Server:
    def __init__(self, data: str, log_path: str) -> None:
        argv = [sys.executable, "-m", "leadtrail.server.cli", "serve", "--data", data]
        argv += ["--listen", "127.0.0.1:0", "--fsync", "always", "--http", "off"]
        with open(log_path, "wb") as log:
            self.process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log, cwd=ROOT)
        self.log_path = log_path
        self.address = self._ready(120.0)

    def _ready(self, timeout_s: float) -> str:
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        seen = b""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            readable, _, _ = select.select([fd], [], [], 0.5)
            if not readable:
                continue
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            seen += chunk
            found = re.search(rb"serving on (\S+:\d+)", seen)
            if found:
                return found.group(1).decode()
        self.stop()
        with open(self.log_path, encoding="utf-8", errors="replace") as log:
            raise RuntimeError(f"server did not start: {log.read()[-2000:]}")

    def cpu_seconds(self) -> float:
        """User + system time of every thread of the server so far."""
        with open(f"/proc/{self.process.pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS

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


# -- requests --------------------------------------------------------------------------------------


def to_proto(d: SimulatedEvent) -> event_pb2.Event:
    message = event_pb2.Event(
        type=d["type"],
        lead_id=d["lead_id"],
        flow_id=d["flow_id"],
        entity_id=d["entity_id"],
        outcome=d["outcome"],  # type: ignore[arg-type]
        reason=d["reason"],
        duration_ms=d["duration_ms"],
        integration=d["integration"],
        response_code=d["response_code"],
        price=d["price"],
    )
    message.timestamp.FromMilliseconds(d["timestamp_ms"])
    if d["details"]:
        message.details_json = orjson.dumps(d["details"])
    message.lead_json = orjson.dumps(d["lead"])
    return message


def batches(n_events: int, seed: int) -> list[bytes]:
    """Serialized Append requests of ``BATCH`` simulated events, their times in the last
    minute (as live traffic: windows see them as recent, no service looks silent)."""
    now = int(time.time() * 1000)
    simulator = LeadFlowSimulator(seed, start_ms=now - 60_000, span_ms=60_000)
    events = [to_proto(d) for d in simulator.events(n_events // 7 + 1)][:n_events]
    return [
        submission_pb2.AppendRequest(events=events[k : k + BATCH]).SerializeToString()
        for k in range(0, len(events), BATCH)
    ]


def identity(raw: bytes) -> bytes:
    return raw


# -- measurements ----------------------------------------------------------------------------------


async def ingest(address: str, requests: Sequence[bytes]) -> float:
    """Events/s of ``CLIENTS`` clients appending ``requests`` (each waits for its durable answer)."""
    channels = [grpc.aio.insecure_channel(address) for _ in range(CLIENTS)]
    try:
        calls = [
            c.unary_unary(APPEND, request_serializer=identity, response_deserializer=identity)
            for c in channels
        ]
        for call in calls:  # connected before the clock starts
            await call(requests[0])
        queue = list(reversed(requests[1:]))
        began = time.perf_counter()

        async def work(call: Any) -> int:
            sent = 0
            while queue:
                await call(queue.pop())
                sent += BATCH
            return sent

        sent = sum(await asyncio.gather(*(work(call) for call in calls)))
        return sent / (time.perf_counter() - began)
    finally:
        for c in channels:
            await c.close()


async def caught_up(address: str, timeout_s: float = 120.0) -> float:
    """Seconds until the evaluator has evaluated everything appended before a probe."""
    async with AsyncClient(address) as client:
        began = time.perf_counter()
        probe = await client.append(Event("bench.probe", lead_id="sentinel", flow_id="bench"))
        while time.perf_counter() - began < timeout_s:
            found = [e async for e in client.query(types=["alert.fired"], lead_id="sentinel")]
            if any(e.details.get("sample_event_ids") == [probe.id] for e in found):
                return time.perf_counter() - began
            await asyncio.sleep(0.01)
    raise RuntimeError("the evaluator did not catch up")


async def latency(address: str, background: Sequence[bytes]) -> tuple[float, float]:
    """p50 and p99 in ms from a probe's acknowledged append to its alert.fired arriving."""
    acked: dict[str, float] = {}
    arrived: dict[str, float] = {}
    async with AsyncClient(address) as client:
        subscription = client.subscribe(types=["alert.fired"], from_end=True)
        done = asyncio.Event()

        async def receive() -> None:
            async for item in subscription:
                if isinstance(item, Event) and item.details.get("rule") == "bench-sentinel":
                    for event_id in item.details.get("sample_event_ids", ()):
                        arrived[event_id] = time.monotonic()
                    if len(arrived) >= PROBES:
                        done.set()
                        return

        receiver = asyncio.create_task(receive())
        await asyncio.sleep(0.5)  # the subscription is live before the first probe
        channel = grpc.aio.insecure_channel(address)
        append = channel.unary_unary(APPEND, request_serializer=identity, response_deserializer=identity)

        async def load() -> None:
            for request in background:
                await append(request)
                await asyncio.sleep(1 / BACKGROUND_BATCHES_PER_S)

        loader = asyncio.create_task(load())
        for k in range(PROBES):
            result = await client.append(Event("bench.probe", lead_id=f"probe-{k}", flow_id="bench"))
            acked[result.id] = time.monotonic()
            await asyncio.sleep(1 / PROBE_RATE)
        await asyncio.wait_for(done.wait(), 30)
        receiver.cancel()
        loader.cancel()
        await channel.close()
    waits = sorted((arrived[i] - acked[i]) * 1000 for i in acked if i in arrived)
    return waits[len(waits) // 2], waits[min(len(waits) - 1, int(len(waits) * 0.99))]


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


async def bench(runs: int, n_events: int) -> dict[str, Any]:
    plain: list[float] = []
    ruled: list[float] = []
    cpu_plain: list[float] = []
    cpu_ruled: list[float] = []
    behind: list[float] = []
    p50s: list[float] = []
    p99s: list[float] = []
    with tempfile.TemporaryDirectory(prefix="alert-bench-") as scratch:
        for run in range(runs):
            requests = batches(n_events, seed=run)
            order = [False, True] if run % 2 == 0 else [True, False]
            for with_rules in order:
                data = os.path.join(scratch, f"run{run}-{'rules' if with_rules else 'plain'}")
                if with_rules:
                    book = RuleBook(data)
                    for rule in (*presets(), sentinel()):
                        book.set(rule)
                server = Server(data, os.path.join(scratch, f"run{run}-{with_rules}.log"))
                try:
                    cpu = server.cpu_seconds()
                    rate = await ingest(server.address, requests)
                    if with_rules:
                        ruled.append(rate)
                        behind.append(await caught_up(server.address))
                    else:
                        plain.append(rate)
                    # the server's CPU per event, the evaluation included (it may end after the acks)
                    per_event = (server.cpu_seconds() - cpu) / ((len(requests) - CLIENTS) * BATCH) * 1e6
                    (cpu_ruled if with_rules else cpu_plain).append(per_event)
                finally:
                    server.stop()
            data = os.path.join(scratch, f"run{run}-latency")
            book = RuleBook(data)
            for rule in (*presets(), sentinel()):
                book.set(rule)
            server = Server(data, os.path.join(scratch, f"run{run}-latency.log"))
            try:
                p50, p99 = await latency(
                    server.address, batches(BACKGROUND_BATCHES_PER_S * 10 * BATCH, 100 + run)
                )
                p50s.append(p50)
                p99s.append(p99)
            finally:
                server.stop()
    ratios = [r / p for r, p in zip(ruled, plain, strict=True)]
    return {
        "runs": runs,
        "events": n_events,
        "ingest_plain_events_s": spread(plain),
        "ingest_presets_events_s": spread(ruled),
        "ingest_ratio": spread(ratios),
        "evaluated_after_last_ack_s": spread(behind),
        "server_cpu_us_per_event_plain": spread(cpu_plain),
        "server_cpu_us_per_event_presets": spread(cpu_ruled),
        "firing_latency_p50_ms": spread(p50s),
        "firing_latency_p99_ms": spread(p99s),
    }


def report(results: dict[str, Any]) -> str:
    def line(name: str, key: str, unit: str, fmt: str = "{:,.0f}") -> str:
        s = results[key]
        return f"{name:<44} {fmt.format(s['median'])} {unit}  ({fmt.format(s['min'])}-{fmt.format(s['max'])})"

    return "\n".join(
        [
            f"alert bench: {results['runs']} runs, {results['events']:,} events a run, batches of {BATCH}, "
            f"{CLIENTS} clients",
            line("batch ingest, no rules", "ingest_plain_events_s", "events/s"),
            line("batch ingest, the four presets", "ingest_presets_events_s", "events/s"),
            line("ratio with/without (target >= 0.9)", "ingest_ratio", "x", "{:.3f}"),
            line("all evaluated after the last ack", "evaluated_after_last_ack_s", "s", "{:.3f}"),
            line("server CPU per event, no rules", "server_cpu_us_per_event_plain", "us", "{:.1f}"),
            line("server CPU per event, the four presets", "server_cpu_us_per_event_presets", "us", "{:.1f}"),
            line("commit -> alert.fired p50", "firing_latency_p50_ms", "ms", "{:.1f}"),
            line("commit -> alert.fired p99 (target < 1000)", "firing_latency_p99_ms", "ms", "{:.1f}"),
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--events", type=int, default=30_000)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    results = asyncio.run(bench(args.runs, args.events))
    print(report(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
