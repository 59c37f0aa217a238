"""What a NATS JetStream sink delivers under the batch-ingest workload, and how far behind it is.

    python -m benchmarks.sink_bench [--runs N] [--events N] [--json FILE]

Real processes on loopback ports: ``leadtrail serve`` (``--fsync always``, ``--http off``)
and ``nats-server -js`` (file storage), and a 3-node JetStream cluster. The workload is the
alert benchmark's batch ingest (``benchmarks/alert_bench.py``: batches of 100 simulated
events of ~1.5 KB, 4 concurrent gRPC clients, each waiting for its durable answer).

Each run, on fresh stores:

- ingest without a sink and ingest with a NATS sink of every event (set before the first
  append, replicas 1), alternating which goes first; with the sink, ``GetSinkStatus`` is
  polled every 50 ms: the most events it was behind (``lag_events``), how long after the
  last acknowledged append it had published everything (drain), and the sink's throughput
  (events over the time from the first append to the last PubAck);
- catch-up: another sink set ``from_start`` on that store once ingest is over: events/s
  of delivery alone, to the single server (replicas 1) and to the 3-node cluster
  (replicas 3);
- failover: during the cluster catch-up, the stream's leader is killed (SIGKILL) once a
  third is delivered; the figure is how long the sink was stalled (``retrying``, or no
  progress), and the stream is read back: every event exactly once, in position order.

Each figure is the median of the runs with min-max.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import grpc
import nats
import nats.errors
import nats.js.errors
from leadtrail.v1 import sinks_pb2, sinks_pb2_grpc, submission_pb2
from nats.js.api import AckPolicy, ConsumerConfig

from benchmarks.alert_bench import CLIENTS, Server, batches, ingest, spread

T = TypeVar("T")
NATS_SERVER = "nats-server"
POLL_S = 0.05
FAST_RETRY = "first=0.05,max=0.5,timeout=2"
"""The sinks' retry policy in this benchmark: a failover is measured, not the default backoff."""


# -- nats-server processes -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Nats:
    """One ``nats-server`` with JetStream; in a cluster when given route ports."""

    def __init__(self, directory: str, name: str, cluster_port: int = 0, routes: Sequence[int] = ()) -> None:
        os.makedirs(directory, exist_ok=True)
        self.name = name
        self.port = free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        config = [
            f"server_name: {name}",
            f"listen: 127.0.0.1:{self.port}",
            f'jetstream {{ store_dir: "{os.path.join(directory, "store")}" }}',
        ]
        if cluster_port:
            listed = ", ".join(f"nats-route://127.0.0.1:{p}" for p in routes)
            config.append(f"cluster {{ name: bench, listen: 127.0.0.1:{cluster_port}, routes: [{listed}] }}")
        self.directory = directory
        self.config = os.path.join(directory, "nats.conf")
        with open(self.config, "w") as f:
            f.write("\n".join(config) + "\n")
        self.start()

    def start(self) -> None:
        """Start (or start again, on the same ports and store) and wait until it answers."""
        with open(os.path.join(self.directory, "nats.log"), "ab") as log:
            self.process = subprocess.Popen(
                [NATS_SERVER, "-c", self.config], stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 30
        while not self._answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop(signal.SIGKILL)
                raise RuntimeError(f"nats-server {self.name} did not start (log in {self.directory})")
            time.sleep(0.05)

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as c:
                return c.recv(5) == b"INFO "
        except OSError:
            return False

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def cluster(directory: str) -> list[Nats]:
    ports = [free_port() for _ in range(3)]
    return [
        Nats(os.path.join(directory, f"n{i + 1}"), f"n{i + 1}", ports[i], [p for p in ports if p != ports[i]])
        for i in range(3)
    ]


async def _quiet(error: Exception) -> None:
    return None


async def connect(urls: Sequence[str]) -> Any:
    return await nats.connect(
        servers=list(urls),
        allow_reconnect=False,
        max_reconnect_attempts=1,
        reconnect_time_wait=0.1,
        connect_timeout=2,
        error_cb=_quiet,
    )


async def jetstream_ready(urls: Sequence[str], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            connection = await connect(urls)
            try:
                await connection.jetstream(timeout=2).account_info()
                return
            finally:
                await connection.close()
        except (nats.errors.Error, OSError, TimeoutError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def retried(call: Callable[[], Awaitable[T]], timeout_s: float = 60) -> T:
    """``call()`` again while the cluster does not answer (electing a leader after a kill)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return await call()
        except (nats.errors.Error, OSError, TimeoutError, AssertionError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.3)


async def stream_leader(urls: Sequence[str], stream: str) -> str:
    return await retried(lambda: _stream_leader(urls, stream))


async def _stream_leader(urls: Sequence[str], stream: str) -> str:
    connection = await connect(urls)
    try:
        info = await connection.jetstream(timeout=5).stream_info(stream)
        assert info.cluster is not None and info.cluster.leader
        return str(info.cluster.leader)
    finally:
        await connection.close()


async def stream_ids(urls: Sequence[str], stream: str) -> list[tuple[int, str]]:
    """(position, id) of every message of ``stream`` in stream order, as a pull consumer reads them."""
    return await retried(lambda: _stream_ids(urls, stream))


async def _stream_ids(urls: Sequence[str], stream: str) -> list[tuple[int, str]]:
    connection = await connect(urls)
    try:
        js = connection.jetstream(timeout=10)
        last = (await js.stream_info(stream)).state.last_seq
        config = ConsumerConfig(ack_policy=AckPolicy.NONE)  # read only: nothing to acknowledge
        subscription = await js.pull_subscribe("", stream=stream, config=config)
        seen: list[tuple[int, str]] = []
        while len(seen) < last:
            for message in await subscription.fetch(min(1000, last - len(seen)), timeout=10):
                body = json.loads(message.data)
                seen.append((int(body["position"]), (message.headers or {}).get("Nats-Msg-Id", "")))
        await subscription.unsubscribe()
        return seen
    finally:
        await connection.close()


# -- the sink -----------------------------------------------------------------------------------------


class Sinks:
    def __init__(self, address: str) -> None:
        self.channel = grpc.aio.insecure_channel(address)
        self.stub = sinks_pb2_grpc.SinkServiceStub(self.channel)

    async def set(self, name: str, urls: Sequence[str], stream: str, replicas: int) -> None:
        target = sinks_pb2.NatsTarget(
            servers=list(urls), stream=stream, subject_prefix=name, replicas=replicas
        )
        await self.stub.SetSink(sinks_pb2.Sink(name=name, nats=target, from_start=True))

    async def status(self, name: str) -> sinks_pb2.SinkStatus:
        return await self.stub.GetSinkStatus(sinks_pb2.GetSinkStatusRequest(name=name))

    async def close(self) -> None:
        await self.channel.close()


class Watch:
    """Polls a sink's status: the most it was behind, when it had delivered ``total`` events,
    and how long it made no progress (retrying or stalled) after ``stall_from``."""

    def __init__(self, sinks: Sinks, name: str, total: int) -> None:
        self.sinks, self.name, self.total = sinks, name, total
        self.max_lag = 0
        self.delivered = 0
        self.done_at = 0.0
        self.retrying_seen = False
        self.last_error = ""
        self._progress_at = time.perf_counter()
        self.longest_stall_s = 0.0

    async def run(self, timeout_s: float = 600) -> None:
        deadline = time.perf_counter() + timeout_s
        while time.perf_counter() < deadline:
            status = await self.sinks.status(self.name)
            now = time.perf_counter()
            self.max_lag = max(self.max_lag, status.lag_events)
            if status.state == "retrying":
                self.retrying_seen = True
                self.last_error = status.last_error
            if status.delivered_total > self.delivered:
                self.longest_stall_s = max(self.longest_stall_s, now - self._progress_at)
                self.delivered = status.delivered_total
                self._progress_at = now
            if status.delivered_total >= self.total and status.lag_events == 0:
                self.done_at = now
                return
            await asyncio.sleep(POLL_S)
        raise RuntimeError(f"sink {self.name} did not deliver {self.total} events: {status}")


# -- one run -------------------------------------------------------------------------------------------


async def run_once(
    run: int, n_events: int, scratch: str, single: Nats, nodes: list[Nats]
) -> dict[str, float]:
    requests = batches(n_events, seed=run)
    sizes = [len(submission_pb2.AppendRequest.FromString(r).events) for r in requests]
    total = sum(sizes) + (CLIENTS - 1) * sizes[0]  # ingest sends the first batch once per client
    figures: dict[str, float] = {}
    for with_sink in [False, True] if run % 2 == 0 else [True, False]:
        label = "sink" if with_sink else "plain"
        server = Server(
            os.path.join(scratch, f"run{run}-{label}"), os.path.join(scratch, f"run{run}-{label}.log")
        )
        try:
            if not with_sink:
                figures["ingest_plain"] = await ingest(server.address, requests)
                continue
            sinks = Sinks(server.address)
            try:
                name = f"bench{run}"
                await sinks.set(name, [single.url], f"BENCH{run}", 1)
                watch = Watch(sinks, name, total)
                watching = asyncio.create_task(watch.run())
                began = time.perf_counter()
                figures["ingest_sink"] = await ingest(server.address, requests)
                last_ack = time.perf_counter()
                await watching
                figures["sink_under_ingest"] = total / (watch.done_at - began)
                figures["drain_after_last_ack"] = watch.done_at - last_ack
                figures["max_lag"] = watch.max_lag
                held = await stream_ids([single.url], f"BENCH{run}")
                assert len(held) == total and len({i for _, i in held}) == total, "the stream is not exact"

                # catch-up alone, to the single server and to the cluster with a failover
                name = f"catchup{run}"
                await sinks.set(name, [single.url], f"CATCHUP{run}", 1)
                watch = Watch(sinks, name, total)
                began = time.perf_counter()
                await watch.run()
                figures["catchup_r1"] = total / (watch.done_at - began)

                urls = [n.url for n in nodes]
                name = f"replicated{run}"
                await sinks.set(name, urls, f"REPLICATED{run}", 3)
                watch = Watch(sinks, name, total)
                began = time.perf_counter()
                await watch.run()
                figures["catchup_r3"] = total / (watch.done_at - began)

                name, stream = f"cluster{run}", f"CLUSTER{run}"
                await sinks.set(name, urls, stream, 3)
                watch = Watch(sinks, name, total)
                watching = asyncio.create_task(watch.run())
                began = time.perf_counter()
                while watch.delivered < total // 3:
                    await asyncio.sleep(POLL_S)
                leader = await stream_leader(urls, stream)
                victim = next(n for n in nodes if n.name == leader)
                victim.stop(signal.SIGKILL)
                await watching
                figures["catchup_r3_with_failover"] = total / (watch.done_at - began)
                figures["failover_stall"] = watch.longest_stall_s
                alive = [n.url for n in nodes if n is not victim]
                held = await stream_ids(alive, stream)
                positions = [p for p, _ in held]
                figures["r3_exact"] = float(
                    len(held) == total
                    and len({i for _, i in held}) == total
                    and positions == sorted(positions)
                    and await stream_leader(alive, stream) != leader
                )
                victim.start()  # back for the next run (its replicas catch up)
            finally:
                await sinks.close()
        finally:
            server.stop()
    return figures


async def bench(runs: int, n_events: int) -> dict[str, Any]:
    os.environ["LEADTRAIL_SINK_POLICY"] = FAST_RETRY
    with tempfile.TemporaryDirectory(prefix="sink-bench-") as scratch:
        single = Nats(os.path.join(scratch, "single"), "single")
        nodes = cluster(os.path.join(scratch, "cluster"))
        try:
            await jetstream_ready([single.url])
            per_run = []
            for run in range(runs):
                await jetstream_ready([n.url for n in nodes])
                per_run.append(await run_once(run, n_events, scratch, single, nodes))
                print(f"run {run}: " + ", ".join(f"{k} {v:,.2f}" for k, v in per_run[-1].items()), flush=True)
        finally:
            for node in [single, *nodes]:
                node.stop()
    keys = per_run[0].keys()
    results: dict[str, Any] = {"runs": runs, "events": n_events}
    results.update({key: spread([figures[key] for figures in per_run]) for key in keys})
    results["ingest_ratio"] = spread([f["ingest_sink"] / f["ingest_plain"] for f in per_run])
    return results


def report(results: dict[str, Any]) -> str:
    def line(name: str, key: str, unit: str, fmt: str = "{:,.0f}") -> str:
        s = results[key]
        return f"{name:<50} {fmt.format(s['median'])} {unit}  ({fmt.format(s['min'])}-{fmt.format(s['max'])})"

    return "\n".join(
        [
            f"sink bench: {results['runs']} runs, {results['events']:,} events a run, "
            "batches of 100, 4 clients",
            line("batch ingest, no sink", "ingest_plain", "events/s"),
            line("batch ingest, a NATS sink of every event", "ingest_sink", "events/s"),
            line("ratio with/without", "ingest_ratio", "x", "{:.3f}"),
            line("sink throughput under ingest (to last PubAck)", "sink_under_ingest", "events/s"),
            line("most events behind during ingest", "max_lag", "events"),
            line("all published after the last ack", "drain_after_last_ack", "s", "{:.2f}"),
            line("catch-up alone, 1 server, replicas 1", "catchup_r1", "events/s"),
            line(
                "catch-up, 3-node cluster, replicas 3, leader killed", "catchup_r3_with_failover", "events/s"
            ),
            line("longest stall around the leader's kill", "failover_stall", "s", "{:.2f}"),
            line("stream exact after failover (1 = every event once, in order)", "r3_exact", "", "{:.0f}"),
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--events", type=int, default=20_000)
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
