"""``GET /metrics`` of a real ``leadtrail serve --http 127.0.0.1:0``, scraped with a real
HTTP client and parsed with ``prometheus_client``'s own parser: what was appended is what
the counters say, by type and outcome, and one account never sees another's."""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from leadtrail.server.alerts import Kind, Rule, RuleBook
from leadtrail.server.app import LeadTrailServer, ServerConfig
from leadtrail.server.web.meters import OTHER_TYPE, AppendCounts
from leadtrail.storage import Event, EventFilter, Outcome
from leadtrail.v1 import (
    event_pb2,
    sinks_pb2,
    sinks_pb2_grpc,
    stream_pb2,
    submission_pb2,
    submission_pb2_grpc,
)
from prometheus_client.parser import text_string_to_metric_families

Server = Any  # conftest.ServerProcess
Stubs = Any  # conftest.Stubs
Spawn = Callable[..., Any]
CLI = [sys.executable, "-m", "leadtrail.server.cli"]
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


# -- scraping --------------------------------------------------------------------------------------


class Scrape:
    """One answer of /metrics: its status, headers and (when 200) its samples by name and labels."""

    def __init__(self, status: int, headers: dict[str, str], text: str) -> None:
        self.status = status
        self.headers = headers
        self.text = text
        self.samples: Samples = {}
        self.types: dict[str, str] = {}
        if status == 200:
            for family in text_string_to_metric_families(text):
                self.types[family.name] = family.type
                for s in family.samples:
                    self.samples[(s.name, tuple(sorted(s.labels.items())))] = s.value

    def value(self, name: str, **labels: str) -> float:
        return self.samples.get((name, tuple(sorted(labels.items()))), 0.0)

    def labelled(self, name: str, label: str) -> set[str]:
        """The values of ``label`` among the samples of ``name``."""
        return {dict(labels)[label] for (n, labels) in self.samples if n == name and label in dict(labels)}


def scrape(address: str, key: str | None = None, *, context: ssl.SSLContext | None = None) -> Scrape:
    scheme = "https" if context is not None else "http"
    request = urllib.request.Request(f"{scheme}://{address}/metrics")
    if key is not None:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=30, context=context) as answer:
            return Scrape(answer.status, dict(answer.headers), answer.read().decode())
    except urllib.error.HTTPError as e:
        return Scrape(e.code, dict(e.headers), e.read().decode())


def eventually(check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


# -- appending -------------------------------------------------------------------------------------


def event(type_: str, outcome: int = event_pb2.OUTCOME_SUCCESS, n: int = 0) -> event_pb2.Event:
    e = event_pb2.Event(type=type_, lead_id=f"lead-{type_}-{n}", flow_id="flow-metrics", outcome=outcome)
    e.lead_json = b'{"state":"CA"}'
    return e


def auth(key: str | None) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),) if key else ()


def append(channel: grpc.Channel, *events: event_pb2.Event, key: str | None = None) -> None:
    stub = submission_pb2_grpc.SubmissionServiceStub(channel)
    stub.Append(submission_pb2.AppendRequest(events=events), metadata=auth(key), timeout=30)


def new_key(data: Path, account: str, role: str, *options: str) -> str:
    done = subprocess.run(
        [*CLI, "keys", "create", "--data", str(data), "--account", account, "--role", role, *options],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


# -- open mode -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(server: Server) -> Server:
    assert server.http_address, "the ready line names no HTTP address"
    return server


def test_the_ready_line_names_the_http_listener_and_metrics_answer_in_prometheus_text(served: Server) -> None:
    host, _, port = served.http_address.rpartition(":")
    assert host == "127.0.0.1" and int(port) not in (0, 8080)
    answer = scrape(served.http_address)
    assert answer.status == 200
    assert answer.headers["Content-Type"].startswith("text/plain; version=")
    assert answer.types["leadtrail_events_appended"] == "counter"
    assert answer.types["leadtrail_append_seconds"] == "histogram"
    assert answer.types["leadtrail_alert_groups_refused"] == "counter"
    for gauge in (
        "leadtrail_subscribers",
        "leadtrail_subscriber_lag_events",
        "leadtrail_alerts_firing",
        "leadtrail_sink_lag_events",
        "leadtrail_up",
    ):
        assert answer.types[gauge] == "gauge", gauge
    assert answer.value("leadtrail_up") == 1
    # Declared with no sample until sinks exist.
    assert "# TYPE leadtrail_sink_lag_events gauge" in answer.text
    assert not answer.labelled("leadtrail_sink_lag_events", "sink")


def test_appends_are_counted_by_type_and_outcome_and_timed_once_each(served: Server, stubs: Stubs) -> None:
    before = scrape(served.http_address)
    count_before = before.value("leadtrail_append_seconds_count")
    first = event("metric.counted")
    first.id = "evt_01J" + "0" * 22 + "1"
    append(stubs.channel, first, event("metric.counted", n=1))
    append(stubs.channel, event("metric.counted", event_pb2.OUTCOME_FAILURE, n=2))
    append(stubs.channel, event("metric.other", event_pb2.OUTCOME_ERROR), event("metric.other", n=3))
    # Two more requests on one AppendStream: each is timed on its own.
    requests = [
        submission_pb2.AppendRequest(events=[event("metric.streamed", event_pb2.OUTCOME_SKIP, n=4)]),
        submission_pb2.AppendRequest(events=[event("metric.streamed", event_pb2.OUTCOME_SKIP, n=5)]),
    ]
    answers = list(stubs.submission.AppendStream(iter(requests), timeout=30))
    assert len(answers) == 2
    # A duplicate is not a new event.
    append(stubs.channel, first)

    # Counted as each group commits, just after its appends are acknowledged: wait for the last.
    eventually(
        lambda: (
            scrape(served.http_address).value(
                "leadtrail_events_appended_total", type="metric.streamed", outcome="skip"
            )
            == 2
        ),
        "the last append counted",
    )
    after = scrape(served.http_address)
    counted = {
        (type_, outcome): after.value("leadtrail_events_appended_total", type=type_, outcome=outcome)
        for type_ in ("metric.counted", "metric.other", "metric.streamed")
        for outcome in ("success", "failure", "error", "skip")
    }
    assert {k: v for k, v in counted.items() if v} == {
        ("metric.counted", "success"): 2,
        ("metric.counted", "failure"): 1,
        ("metric.other", "error"): 1,
        ("metric.other", "success"): 1,
        ("metric.streamed", "skip"): 2,
    }
    # Four Append calls and two AppendStream requests.
    assert after.value("leadtrail_append_seconds_count") - count_before == 6
    assert after.value("leadtrail_append_seconds_bucket", le="+Inf") == after.value(
        "leadtrail_append_seconds_count"
    )
    assert after.value("leadtrail_append_seconds_sum") > before.value("leadtrail_append_seconds_sum")
    assert after.value("leadtrail_last_position") >= 7


def test_the_subscribers_gauge_follows_a_subscription_opening_and_closing(
    served: Server, stubs: Stubs
) -> None:
    address = served.http_address

    def subscribers() -> float:
        return scrape(address).value("leadtrail_subscribers")

    before = subscribers()
    call = stubs.stream.Subscribe(stream_pb2.SubscribeRequest(from_start=True), timeout=60)
    try:
        eventually(lambda: subscribers() == before + 1, "the subscription is counted")
        # Caught up with the log: nothing left to read.
        eventually(lambda: scrape(address).value("leadtrail_subscriber_lag_events") == 0, "the lag closes")
    finally:
        call.cancel()
    eventually(lambda: subscribers() == before, "the closed one is not counted")


def test_a_sinks_lag_is_a_gauge_labelled_by_sink_until_the_sink_is_deleted(
    served: Server, stubs: Stubs
) -> None:
    # A receiver that cannot be reached: the sink keeps retrying and its lag grows.
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    sinks = sinks_pb2_grpc.SinkServiceStub(stubs.channel)
    sink = sinks_pb2.Sink(
        name="lagging", webhook=sinks_pb2.WebhookTarget(url=f"http://127.0.0.1:{port}/hook", batch_size=1)
    )
    sinks.SetSink(sink)
    try:
        append(stubs.channel, *(event("metrics.lag", n=n) for n in range(3)))

        def agrees() -> bool:
            answer = scrape(served.http_address)
            if "lagging" not in answer.labelled("leadtrail_sink_lag_events", "sink"):
                return False
            lag = answer.value("leadtrail_sink_lag_events", sink="lagging")
            status = sinks.GetSinkStatus(sinks_pb2.GetSinkStatusRequest(name="lagging"))
            return lag >= 3 and lag == status.lag_events and status.state == "retrying"

        eventually(agrees, "the gauge shows the lag GetSinkStatus reports")
    finally:
        sinks.DeleteSink(sinks_pb2.DeleteSinkRequest(name="lagging"))
    eventually(
        lambda: "lagging" not in scrape(served.http_address).labelled("leadtrail_sink_lag_events", "sink"),
        "a deleted sink has no gauge",
    )


# -- keys: roles and accounts ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, dict[str, str]]]:
    server_process = sys.modules["server_process"]
    data = tmp_path_factory.mktemp("keyed") / "data"
    data.mkdir()
    keys = {
        "admin": new_key(data, "acme", "admin"),
        "analyst": new_key(data, "acme", "analyst"),
        "reader": new_key(data, "acme", "reader"),
        "writer": new_key(data, "acme", "writer"),
        "scoped": new_key(data, "acme", "analyst", "--entity", "buyer-1"),
        "limited": new_key(data, "acme", "analyst", "--rate-limit", "1"),
        "other": new_key(data, "globex", "admin"),
    }
    rules = RuleBook(str(data))  # set before start-up, as the rule book keeps them on disk
    for account in ("acme", "globex"):
        quiet = EventFilter(account_id=account, types=("never.happens",))
        rules.set(Rule(account, f"{account}-quiet", Kind.COUNT, quiet, Decimal(1000), window_s=60))
    server = server_process.ServerProcess(data).start()
    yield server, keys
    assert server.stop() == 0, server.output


def test_without_a_key_or_with_an_unknown_one_metrics_answer_401_asking_for_bearer(
    keyed: tuple[Server, dict[str, str]],
) -> None:
    server, _ = keyed
    for key in (None, "ltk_notakey"):
        answer = scrape(server.http_address, key)
        assert answer.status == 401, answer.text
        assert answer.headers["WWW-Authenticate"].startswith("Bearer")
        assert "leadtrail_" not in answer.text


def test_metrics_need_an_admin_or_analyst_key(keyed: tuple[Server, dict[str, str]]) -> None:
    server, keys = keyed
    for role in ("reader", "writer"):
        answer = scrape(server.http_address, keys[role])
        assert answer.status == 403, (role, answer.text)
        assert "/metrics" in answer.text and "analyst" in answer.text
    for role in ("admin", "analyst"):
        answer = scrape(server.http_address, keys[role])
        assert answer.status == 200, (role, answer.text)
        assert answer.value("leadtrail_up") == 1
    # A key limited to some entities would learn of the others from the account's counts.
    assert scrape(server.http_address, keys["scoped"]).status == 403


def test_a_keys_rate_limit_applies_to_scrapes(keyed: tuple[Server, dict[str, str]]) -> None:
    server, keys = keyed
    statuses = [scrape(server.http_address, keys["limited"]) for _ in range(4)]
    refused = [s for s in statuses if s.status == 429]
    assert statuses[0].status == 200 and refused, [s.status for s in statuses]
    assert int(refused[0].headers["Retry-After"]) >= 1


def test_a_scrape_shows_its_own_accounts_counts_only(keyed: tuple[Server, dict[str, str]]) -> None:
    server, keys = keyed
    channel = grpc.insecure_channel(server.address)
    try:
        append(channel, event("acme.only"), event("acme.only", n=1), key=keys["writer"])
        append(channel, event("globex.only", event_pb2.OUTCOME_FAILURE), key=keys["other"])
    finally:
        channel.close()
    acme = scrape(server.http_address, keys["analyst"])
    globex = scrape(server.http_address, keys["other"])
    assert acme.value("leadtrail_events_appended_total", type="acme.only", outcome="success") == 2
    assert globex.value("leadtrail_events_appended_total", type="globex.only", outcome="failure") == 1
    assert "globex.only" not in acme.labelled("leadtrail_events_appended_total", "type")
    assert "acme.only" not in globex.labelled("leadtrail_events_appended_total", "type")
    assert "globex.only" not in acme.text and "acme.only" not in globex.text
    # Every rule of the account, firing or not; another account's rule names never appear.
    assert acme.labelled("leadtrail_alerts_firing", "rule") == {"acme-quiet"}
    assert acme.value("leadtrail_alerts_firing", rule="acme-quiet") == 0
    assert globex.labelled("leadtrail_alerts_firing", "rule") == {"globex-quiet"}
    # Each account's appends are timed in its own histogram.
    assert acme.value("leadtrail_append_seconds_count") == 1
    assert globex.value("leadtrail_append_seconds_count") == 1
    # Positions count every account's events: only the default account (the operator's) sees them.
    assert "leadtrail_last_position" not in acme.text and "leadtrail_last_position" not in globex.text


# -- the listener's life ---------------------------------------------------------------------------


def _listening_ports(pid: int) -> set[int]:
    """The TCP ports process ``pid`` listens on (from /proc)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        with open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                    ports.add(int(fields[1].rpartition(":")[2], 16))
    return ports


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="reads listening sockets from /proc")
def test_http_off_opens_no_port(spawn: Spawn, tmp_path: Path) -> None:
    server = spawn(tmp_path / "data", "--http", "off")
    assert server.http_address == ""
    assert _listening_ports(server.pid) == {int(server.address.rpartition(":")[2])}


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="reads listening sockets from /proc")
def test_the_http_listener_is_the_servers_own_process(spawn: Spawn, tmp_path: Path) -> None:
    server = spawn(tmp_path / "data")
    grpc_port = int(server.address.rpartition(":")[2])
    http_port = int(server.http_address.rpartition(":")[2])
    assert _listening_ports(server.pid) == {grpc_port, http_port}


def test_a_busy_http_port_fails_start_up_with_one_line(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        busy_at = f"127.0.0.1:{port}"
        done = subprocess.run(
            [*CLI, "serve", "--data", str(tmp_path / "data"), "--listen", "127.0.0.1:0", "--http", busy_at],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 1, done
    lines = done.stderr.strip().splitlines()
    assert lines == [lines[0]] and lines[0].startswith(f"leadtrail: --http 127.0.0.1:{port}: cannot bind"), (
        done.stderr
    )
    assert "serving on" not in done.stdout


def test_a_non_loopback_http_address_needs_keys_and_tls(tmp_path: Path) -> None:
    done = subprocess.run(
        [*CLI, "serve", "--data", str(tmp_path / "data"), "--listen", "127.0.0.1:0", "--http", "0.0.0.0:0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done
    assert done.stderr.strip() == (
        "leadtrail: --http 0.0.0.0:0: refusing a non-loopback address without API keys "
        "(leadtrail keys create); pass --insecure to serve it anyway"
    )


def test_under_tls_metrics_are_served_over_https(spawn: Spawn, tmp_path: Path, certificates: Any) -> None:
    tls = ("--tls-cert", str(certificates.server_cert), "--tls-key", str(certificates.server_key))
    server = spawn(tmp_path / "data", *tls)
    context = ssl.create_default_context(cafile=str(certificates.ca))
    answer = scrape(server.http_address, context=context)
    assert answer.status == 200 and answer.value("leadtrail_up") == 1
    with pytest.raises(OSError):  # no plaintext beside it
        scrape(server.http_address)


# -- in process ------------------------------------------------------------------------------------


def test_an_in_process_server_serves_metrics_on_its_own_loop(tmp_path: Path) -> None:
    async def run() -> None:
        quiet = LeadTrailServer(ServerConfig(data=str(tmp_path / "quiet"), listen="127.0.0.1:0"))
        await quiet.start()
        try:
            assert quiet.http_address is None  # the library's default: no port opened unasked
        finally:
            await quiet.stop(0)

        config = ServerConfig(data=str(tmp_path / "data"), listen="127.0.0.1:0", http="127.0.0.1:0")
        server = LeadTrailServer(config)
        await server.start()
        try:
            assert server.http_address is not None
            async with grpc.aio.insecure_channel(server.address) as channel:
                stub = submission_pb2_grpc.SubmissionServiceStub(channel)
                for n in range(3):
                    request = submission_pb2.AppendRequest(events=[event("inproc.appended", n=n)])
                    await stub.Append(request, timeout=30)
            deadline = time.monotonic() + 20
            while True:
                # Counted as each group commits, just after its appends are acknowledged.
                async with (
                    aiohttp.ClientSession() as session,
                    session.get(f"http://{server.http_address}/metrics") as answer,
                ):
                    assert answer.status == 200
                    parsed = Scrape(answer.status, dict(answer.headers), await answer.text())
                appended = parsed.value(
                    "leadtrail_events_appended_total", type="inproc.appended", outcome="success"
                )
                if appended == 3 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.05)
            assert appended == 3
            assert parsed.value("leadtrail_append_seconds_count") == 3
            assert parsed.value("leadtrail_last_position") == 3
        finally:
            await server.stop(0)

    asyncio.run(run())


def test_an_accounts_types_past_the_bound_are_counted_as_other() -> None:
    counts = AppendCounts(max_types=3)
    events = [Event(type=f"kind.t{n}", lead_id="l", flow_id="f", outcome=Outcome.SUCCESS) for n in range(5)]
    counts.committed(events)
    counts.committed(events[:1])
    counts.committed([Event(type="kind.t0", lead_id="l", flow_id="f", account_id="other-account")])
    assert counts.of("default") == {
        ("kind.t0", "success"): 2,
        ("kind.t1", "success"): 1,
        ("kind.t2", "success"): 1,
        (OTHER_TYPE, "success"): 2,
    }
    assert counts.of("other-account") == {("kind.t0", "unspecified"): 1}
