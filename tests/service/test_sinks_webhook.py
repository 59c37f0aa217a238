"""Webhook sinks end to end: a real ``leadtrail serve`` process and a real HTTP receiver on
loopback that fails, hangs, and checks signatures.

The server runs with a fast retry policy (``LEADTRAIL_SINK_POLICY``) so that retries and
timeouts take fractions of a second; every wait polls with a deadline.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import orjson
import pytest
from leadtrail.server.alerts.signing import verify
from leadtrail.server.sinks.sink import POLICY_ENV
from leadtrail.server.sinks.webhook import BATCH_ID_HEADER, SINK_HEADER
from leadtrail.v1 import (
    event_pb2,
    query_pb2,
    query_pb2_grpc,
    sinks_pb2,
    sinks_pb2_grpc,
    submission_pb2,
    submission_pb2_grpc,
)

from .conftest import ServerProcess, lead_event

webhook_receiver = sys.modules["webhook_receiver"]  # loaded by tests/conftest.py
HANG = webhook_receiver.HANG
Receiver = webhook_receiver.Receiver
Received = webhook_receiver.Received
FAST = "first=0.05,max=0.3,timeout=0.5"
SECRET = "sink-secret-for-tests"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(POLICY_ENV, FAST)
        process = ServerProcess(tmp_path_factory.mktemp("sinks") / "data", "--http", "off").start()
    yield process
    assert process.stop() == 0, "".join(process.stderr_lines)


class Calls:
    def __init__(self, address: str) -> None:
        self.channel = grpc.insecure_channel(address)
        self.sinks = sinks_pb2_grpc.SinkServiceStub(self.channel)
        self.submission = submission_pb2_grpc.SubmissionServiceStub(self.channel)

    def append(self, events: list[event_pb2.Event]) -> list[str]:
        answer = self.submission.Append(submission_pb2.AppendRequest(events=events))
        return [r.id for r in answer.results]

    def status(self, name: str) -> sinks_pb2.SinkStatus:
        return self.sinks.GetSinkStatus(sinks_pb2.GetSinkStatusRequest(name=name))

    def wait_status(
        self, name: str, until: Callable[[sinks_pb2.SinkStatus], bool], timeout: float = 30.0
    ) -> sinks_pb2.SinkStatus:
        deadline = time.monotonic() + timeout
        while True:
            status = self.status(name)
            if until(status):
                return status
            if time.monotonic() > deadline:
                raise AssertionError(f"sink {name!r} did not get there within {timeout} s: {status}")
            time.sleep(0.05)

    def close(self) -> None:
        self.channel.close()


@pytest.fixture(scope="module")
def calls(server: ServerProcess) -> Iterator[Calls]:
    c = Calls(server.address)
    yield c
    c.close()


def webhook_sink(name: str, url: str, **options: Any) -> sinks_pb2.Sink:
    target = sinks_pb2.WebhookTarget(
        url=url, secret=options.pop("secret", SECRET), batch_size=options.pop("batch_size", 10)
    )
    target.max_wait_ms = options.pop("max_wait_ms", 100)
    return sinks_pb2.Sink(name=name, webhook=target, **options)


def delivered(requests: list[Received]) -> list[dict[str, Any]]:
    """Every event the receiver was sent, in the order received, once per sink and batch id."""
    seen: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in requests:
        seen[r.headers[SINK_HEADER], r.headers[BATCH_ID_HEADER]] = orjson.loads(r.body)
    return [e for batch in seen.values() for e in batch]


def plan_by_status(answers: dict[int, int]) -> Callable[[int, Received], int]:
    return lambda index, request: answers.get(index, 200)


def test_a_webhook_sink_delivers_every_matching_event_in_order_signed(calls: Calls) -> None:
    with Receiver(lambda index, request: 200) as receiver:
        sink = webhook_sink("crm", receiver.url(), filter=event_pb2.EventFilter(types=["source.*"]))
        answer = calls.sinks.SetSink(sink)
        assert answer.webhook.secret_set and not answer.webhook.secret
        assert answer.webhook.batch_size == 10 and answer.HasField("set_at")
        ids = calls.append([lead_event(type="source.submitted") for _ in range(23)])
        calls.append([lead_event(type="buyer.accepted") for _ in range(3)])
        seen = receiver.wait_for(lambda r: len(delivered(r)) >= 23)
        time.sleep(0.3)  # nothing else arrives: the other type is not handed on
        seen = receiver.seen()
        events = delivered(seen)
        assert [e["id"] for e in events] == ids
        assert all(e["type"] == "source.submitted" for e in events)
        positions = [e["position"] for e in events]
        assert positions == sorted(positions)
        for r in seen:
            assert verify(SECRET, r.body, r.headers["X-LeadTrail-Signature"])
            assert r.headers[SINK_HEADER] == "crm"
            assert len(orjson.loads(r.body)) <= 10
        status = calls.wait_status("crm", lambda s: s.delivered_total == 23)
        assert status.state == "running" and status.last_error == ""
        calls.sinks.DeleteSink(sinks_pb2.DeleteSinkRequest(name="crm"))


def test_a_failing_receiver_is_retried_with_the_same_batch_until_it_takes_it(calls: Calls) -> None:
    failing = [True]
    with Receiver(lambda index, request: 503 if failing[0] else 200) as receiver:
        calls.sinks.SetSink(webhook_sink("failing", receiver.url(), batch_size=5))
        ids = calls.append([lead_event() for _ in range(5)])
        status = calls.wait_status("failing", lambda s: s.state == "retrying")
        assert "HTTP 503" in status.last_error and "127.0.0.1" in status.last_error
        assert status.HasField("last_error_at") and status.delivered_total == 0
        seen = receiver.wait_for(lambda r: len(r) >= 3)
        # Every retry is the same batch, byte for byte, numbered by its attempt.
        assert {r.headers[BATCH_ID_HEADER] for r in seen} == {seen[0].headers[BATCH_ID_HEADER]}
        assert {r.body for r in seen} == {seen[0].body}
        assert [int(r.headers["X-LeadTrail-Attempt"]) for r in seen[:3]] == [1, 2, 3]
        assert status.lag_events >= 5
        failing[0] = False
        status = calls.wait_status("failing", lambda s: s.delivered_total == 5)
        assert status.state == "running" and "HTTP 503" in status.last_error  # the last error stays
        assert [e["id"] for e in orjson.loads(receiver.seen()[-1].body)] == ids
        calls.sinks.DeleteSink(sinks_pb2.DeleteSinkRequest(name="failing"))


def test_a_hanging_receiver_is_cut_off_by_the_timeout_and_the_batch_posted_again(calls: Calls) -> None:
    with Receiver(lambda index, request: HANG if index == 0 else 200) as receiver:
        calls.sinks.SetSink(webhook_sink("hanging", receiver.url(), batch_size=4))
        ids = calls.append([lead_event() for _ in range(4)])
        status = calls.wait_status("hanging", lambda s: s.delivered_total == 4)
        assert "no answer within 0.5 s" in status.last_error
        first, second = receiver.seen()[:2]
        assert first.headers[BATCH_ID_HEADER] == second.headers[BATCH_ID_HEADER]
        assert [e["id"] for e in orjson.loads(second.body)] == ids
        calls.sinks.DeleteSink(sinks_pb2.DeleteSinkRequest(name="hanging"))


def test_a_partial_batch_goes_out_after_max_wait(calls: Calls) -> None:
    with Receiver(lambda index, request: 200) as receiver:
        calls.sinks.SetSink(webhook_sink("partial", receiver.url(), batch_size=1000, max_wait_ms=200))
        ids = calls.append([lead_event() for _ in range(3)])
        seen = receiver.wait_for(lambda r: len(r) >= 1)
        assert [e["id"] for e in orjson.loads(seen[0].body)] == ids
        calls.sinks.DeleteSink(sinks_pb2.DeleteSinkRequest(name="partial"))


def test_a_masked_sink_delivers_what_a_reader_sees(calls: Calls) -> None:
    lead = {"email": "dana@example.com", "phone": "+1 555 010 2030", "state": "CA"}
    with Receiver(lambda index, request: 200) as receiver:
        calls.sinks.SetSink(webhook_sink("masked", receiver.url("/masked"), masked=True))
        calls.sinks.SetSink(webhook_sink("plain", receiver.url("/plain")))
        ids = calls.append([lead_event(lead=lead) for _ in range(2)])
        seen = receiver.wait_for(lambda r: len(delivered(r)) >= 4)
        by_path = {
            path: [e for r in seen if r.path == path for e in orjson.loads(r.body)]
            for path in ("/masked", "/plain")
        }
        assert [e["id"] for e in by_path["/masked"]] == ids == [e["id"] for e in by_path["/plain"]]
        for e in by_path["/masked"]:
            assert e["lead"] == {"email": "d***@example.com", "phone": "***-***-2030", "state": "CA"}
        for e in by_path["/plain"]:
            assert e["lead"] == lead
        assert b"dana@example.com" not in b"".join(r.body for r in seen if r.path == "/masked")
        for name in ("masked", "plain"):
            calls.sinks.DeleteSink(sinks_pb2.DeleteSinkRequest(name=name))


def test_setting_a_sink_again_keeps_its_position_and_secret_unless_told_where_to_start(calls: Calls) -> None:
    with Receiver(lambda index, request: 200) as receiver:
        calls.sinks.SetSink(webhook_sink("again", receiver.url(), batch_size=3))
        first = calls.append([lead_event() for _ in range(3)])
        receiver.wait_for(lambda r: len(delivered(r)) >= 3)
        # Set again without a secret (write-only) and another batch size: same position, same secret.
        answer = calls.sinks.SetSink(webhook_sink("again", receiver.url(), batch_size=2, secret=""))
        assert answer.webhook.secret_set and answer.webhook.batch_size == 2
        second = calls.append([lead_event() for _ in range(2)])
        seen = receiver.wait_for(lambda r: len(delivered(r)) >= 5)
        assert [e["id"] for e in delivered(seen)] == first + second
        assert all(verify(SECRET, r.body, r.headers["X-LeadTrail-Signature"]) for r in seen)
        # Told to start after the first batch: the second is handed over again.
        restarted = webhook_sink("again", receiver.url(), batch_size=2)
        restarted.after_position = calls.status("again").delivered_position - 2
        calls.sinks.SetSink(restarted)
        seen = receiver.wait_for(lambda r: len(r) >= len(seen) + 1)
        assert [e["id"] for e in orjson.loads(seen[-1].body)] == second
        calls.sinks.DeleteSink(sinks_pb2.DeleteSinkRequest(name="again"))


def test_list_and_delete(calls: Calls) -> None:
    calls.sinks.SetSink(webhook_sink("listed-b", "http://127.0.0.1:9/b"))
    calls.sinks.SetSink(webhook_sink("listed-a", "https://user:pw@127.0.0.1:9/a?token=t"))
    listed = calls.sinks.ListSinks(sinks_pb2.ListSinksRequest()).sinks
    assert [s.name for s in listed] == ["listed-a", "listed-b"]
    assert all(s.webhook.secret == "" and s.webhook.secret_set for s in listed)
    calls.sinks.DeleteSink(sinks_pb2.DeleteSinkRequest(name="listed-a"))
    calls.sinks.DeleteSink(sinks_pb2.DeleteSinkRequest(name="listed-b"))
    assert list(calls.sinks.ListSinks(sinks_pb2.ListSinksRequest()).sinks) == []
    for call in (
        lambda: calls.sinks.DeleteSink(sinks_pb2.DeleteSinkRequest(name="listed-a")),
        lambda: calls.status("listed-a"),
    ):
        with pytest.raises(grpc.RpcError) as info:
            call()
        assert info.value.code() == grpc.StatusCode.NOT_FOUND and "listed-a" in (info.value.details() or "")


BAD = [
    (sinks_pb2.Sink(name="no-target"), "target: required"),
    (webhook_sink("Bad Name", "http://127.0.0.1:9/"), "name: "),
    (webhook_sink("bad-url", "ftp://127.0.0.1/x"), "webhook.url: "),
    (webhook_sink("bad-url2", "http:///nohost"), "webhook.url: "),
    (
        webhook_sink("big-batch", "http://127.0.0.1:9/", batch_size=1001),
        "webhook.batch_size: 1001 is over the limit of 1,000",
    ),
    (webhook_sink("long-wait", "http://127.0.0.1:9/", max_wait_ms=60_001), "webhook.max_wait_ms: "),
    (
        sinks_pb2.Sink(
            name="nats-url", nats=sinks_pb2.NatsTarget(servers=["http://127.0.0.1:4222"], stream="S")
        ),
        "nats.servers[0]: ",
    ),
    (sinks_pb2.Sink(name="nats-none", nats=sinks_pb2.NatsTarget(stream="S")), "nats.servers: required"),
    (
        sinks_pb2.Sink(
            name="nats-stream", nats=sinks_pb2.NatsTarget(servers=["nats://127.0.0.1:4222"], stream="a.b")
        ),
        "nats.stream: ",
    ),
    (
        sinks_pb2.Sink(
            name="nats-replicas",
            nats=sinks_pb2.NatsTarget(servers=["nats://127.0.0.1:4222"], stream="S", replicas=6),
        ),
        "nats.replicas: 6 is out of range 1..5",
    ),
    (
        sinks_pb2.Sink(name="files-up", files=sinks_pb2.FilesTarget(directory="out/../../x")),
        "files.directory: ",
    ),
    (
        sinks_pb2.Sink(name="files-abs", files=sinks_pb2.FilesTarget(directory="/tmp/x")),
        "files.directory: '/tmp/x' is absolute",
    ),
    (
        sinks_pb2.Sink(name="files-format", files=sinks_pb2.FilesTarget(directory="out", format=9)),
        "files.format: 9 is not",
    ),
    (
        sinks_pb2.Sink(
            name="files-fields", files=sinks_pb2.FilesTarget(directory="out", format=2, fields=["nope"])
        ),
        "files.fields[0]: ",
    ),
    (
        sinks_pb2.Sink(
            name="files-rotate", files=sinks_pb2.FilesTarget(directory="out", rotate_events=1_000_001)
        ),
        "files.rotate_events: ",
    ),
    (
        sinks_pb2.Sink(
            name="bad-filter",
            filter=event_pb2.EventFilter(outcomes=[99]),
            files=sinks_pb2.FilesTarget(directory="out"),
        ),
        "filter.outcomes[0]: ",
    ),
    (
        sinks_pb2.Sink(name="far-start", after_position=10**12, files=sinks_pb2.FilesTarget(directory="out")),
        "after_position: ",
    ),
]


@pytest.mark.parametrize(("sink", "problem"), BAD, ids=[s.name for s, _ in BAD])
def test_bad_configuration_is_refused_naming_the_field_and_nothing_is_stored(
    calls: Calls, sink: sinks_pb2.Sink, problem: str
) -> None:
    with pytest.raises(grpc.RpcError) as info:
        calls.sinks.SetSink(sink)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (info.value.details() or "").startswith(problem), info.value.details()
    assert sink.name not in [s.name for s in calls.sinks.ListSinks(sinks_pb2.ListSinksRequest()).sinks]


def first_occurrences(events: list[dict[str, Any]]) -> list[str]:
    """The ids in the order they first arrived (a redelivery after a crash repeats some)."""
    seen: dict[str, None] = {}
    for e in events:
        seen.setdefault(e["id"], None)
    return list(seen)


def expected_position(calls: Calls, event_id: str) -> int:
    query = query_pb2_grpc.QueryServiceStub(calls.channel)
    return int(query.GetEvent(query_pb2.GetEventRequest(id=event_id)).position)


def test_every_event_arrives_in_order_across_kill_9_mid_stream(
    spawn: Callable[..., ServerProcess], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(POLICY_ENV, FAST)
    data = tmp_path / "data"
    # The receiver holds its sixth POST without answering: the server is killed while it waits.
    with Receiver(lambda index, request: HANG if index == 5 else 200) as receiver:
        process = spawn(data, "--http", "off")
        calls = Calls(process.address)
        calls.sinks.SetSink(
            webhook_sink(
                "crash", receiver.url(), batch_size=7, filter=event_pb2.EventFilter(types=["source.*"])
            )
        )
        expected: list[str] = []
        for _ in range(6):
            expected += calls.append([lead_event() for _ in range(10)])
            calls.append([lead_event(type="buyer.accepted")])
        receiver.wait_for(lambda r: len(r) >= 6, timeout=20)
        before = calls.status("crash")
        # Five batches of seven were taken; a call handing more is counted once it returns.
        assert before.delivered_total <= 35 and before.delivered_position < expected_position(
            calls, expected[35]
        )
        calls.close()
        process.kill()
        process = spawn(data, "--http", "off")
        calls = Calls(process.address)
        for _ in range(3):
            expected += calls.append([lead_event() for _ in range(10)])
        receiver.wait_for(lambda r: set(expected) <= {e["id"] for e in delivered(r)}, timeout=20)
        after = calls.wait_status("crash", lambda s: s.delivered_total >= len(expected))
        assert after.lag_events == 0 and after.state == "running"
        assert first_occurrences(delivered(receiver.seen())) == expected
        # The batch the receiver held (never acknowledged) was handed over again after the restart.
        held = {e["id"] for e in orjson.loads(receiver.seen()[5].body)}
        assert held <= {e["id"] for e in delivered(receiver.seen()[6:])}
        calls.close()
        assert process.stop() == 0


def new_key(data: Path, account: str, role: str, *scope: str) -> tuple[tuple[str, str]]:
    command = [sys.executable, "-m", "leadtrail.server.cli", "keys", "create", "--data", str(data)]
    made = subprocess.run(
        [*command, "--account", account, "--role", role, *scope], capture_output=True, text=True, timeout=60
    )
    assert made.returncode == 0, made.stderr
    return (("authorization", f"Bearer {made.stdout.strip()}"),)


def test_another_accounts_sinks_do_not_exist(spawn: Callable[..., ServerProcess], tmp_path: Path) -> None:
    data = tmp_path / "data"
    process = spawn(data, "--http", "off")
    keys = {
        (account, role): new_key(data, account, role)
        for account in ("acme", "globex")
        for role in ("admin", "reader")
    }
    calls = Calls(process.address)
    with Receiver(lambda index, request: 200) as receiver:
        calls.sinks.SetSink(
            webhook_sink("shared-name", receiver.url("/acme")), metadata=keys["acme", "admin"]
        )
        listed = calls.sinks.ListSinks(sinks_pb2.ListSinksRequest(), metadata=keys["globex", "admin"]).sinks
        assert list(listed) == []
        for call in (
            lambda md: calls.sinks.GetSinkStatus(
                sinks_pb2.GetSinkStatusRequest(name="shared-name"), metadata=md
            ),
            lambda md: calls.sinks.DeleteSink(sinks_pb2.DeleteSinkRequest(name="shared-name"), metadata=md),
        ):
            with pytest.raises(grpc.RpcError) as info:
                call(keys["globex", "admin"])
            assert info.value.code() == grpc.StatusCode.NOT_FOUND
        # The same name in another account is another sink; each gets its own account's events only.
        calls.sinks.SetSink(
            webhook_sink("shared-name", receiver.url("/globex")), metadata=keys["globex", "admin"]
        )
        acme = [lead_event() for _ in range(3)]
        globex = [lead_event() for _ in range(2)]
        acme_ids = [
            r.id
            for r in calls.submission.Append(
                submission_pb2.AppendRequest(events=acme), metadata=keys["acme", "admin"]
            ).results
        ]
        globex_ids = [
            r.id
            for r in calls.submission.Append(
                submission_pb2.AppendRequest(events=globex), metadata=keys["globex", "admin"]
            ).results
        ]
        seen = receiver.wait_for(lambda r: len(delivered(r)) >= 5, timeout=20)
        by_path = {
            p: [e["id"] for r in seen if r.path == p for e in orjson.loads(r.body)]
            for p in ("/acme", "/globex")
        }
        assert by_path == {"/acme": acme_ids, "/globex": globex_ids}
        status = calls.sinks.GetSinkStatus(
            sinks_pb2.GetSinkStatusRequest(name="shared-name"), metadata=keys["acme", "reader"]
        )
        assert status.delivered_total == 3
        with pytest.raises(grpc.RpcError) as info:
            calls.sinks.ListSinks(sinks_pb2.ListSinksRequest(), metadata=keys["acme", "reader"])
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    calls.close()
    assert process.stop() == 0


def test_an_admin_limited_to_an_entity_hands_on_its_events_and_changes_its_own_sinks_only(
    spawn: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    process = spawn(data, "--http", "off")
    admin = new_key(data, "acme", "admin")
    scoped = new_key(data, "acme", "admin", "--entity", "buyer-7")
    calls = Calls(process.address)
    with Receiver(lambda index, request: 200) as receiver:
        calls.sinks.SetSink(webhook_sink("whole", "http://127.0.0.1:9/"), metadata=admin)
        calls.sinks.SetSink(webhook_sink("buyer-7", receiver.url()), metadata=scoped)
        for call in (
            lambda: calls.sinks.SetSink(webhook_sink("whole", receiver.url()), metadata=scoped),
            lambda: calls.sinks.DeleteSink(sinks_pb2.DeleteSinkRequest(name="whole"), metadata=scoped),
        ):
            with pytest.raises(grpc.RpcError) as info:
                call()
            assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert "limited to some entities or flows" in (info.value.details() or "")
        events = [lead_event(entity_id=entity) for entity in ("buyer-7", "buyer-9", "buyer-7")]
        ids = [
            r.id
            for r in calls.submission.Append(
                submission_pb2.AppendRequest(events=events), metadata=admin
            ).results
        ]
        receiver.wait_for(lambda r: len(delivered(r)) >= 2, timeout=20)
        time.sleep(0.3)  # the other entity's event does not follow
        assert [e["id"] for e in delivered(receiver.seen())] == [ids[0], ids[2]]
        # The account's unlimited admin changes either.
        calls.sinks.DeleteSink(sinks_pb2.DeleteSinkRequest(name="buyer-7"), metadata=admin)
    calls.close()
    assert process.stop() == 0
