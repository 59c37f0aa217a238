"""``leadtrail serve --workers 2``: two processes on one port, as clients see them.

Each test pins channels to a worker: a channel of its own (``use_local_subchannel_pool``)
is one TCP connection, and the kernel's ``SO_REUSEPORT`` hash hands it to one worker,
found by the connection's socket in that worker's descriptors (Linux ``/proc``).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import orjson
import pytest
from google.rpc import status_pb2  # type: ignore[import-untyped]
from grpc_health.v1 import health_pb2, health_pb2_grpc
from leadtrail.server import forwarding, frames
from leadtrail.v1 import admin_pb2, event_pb2, query_pb2, stream_pb2, stream_pb2_grpc, submission_pb2

server_process = sys.modules["server_process"]  # loaded by tests/conftest.py

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="finds workers through /proc")

WRITER, FOLLOWER = 0, 1


class Workers:
    """``leadtrail serve --workers 2`` and channels to the worker a test names."""

    def __init__(self, data: Path) -> None:
        self.server = server_process.ServerProcess(data, "--workers", "2").start()
        self._channels: list[grpc.Channel] = []

    @property
    def address(self) -> str:
        return str(self.server.address)

    def pid(self, worker: int) -> int:
        """The worker's current process (the latest one the supervisor started)."""
        assert self.server.child is not None
        deadline = time.monotonic() + 10  # stderr is read by its own thread
        while not (found := re.findall(rf"worker {worker} \(\w+\) pid (\d+)", self.server.child.stderr.text)):
            assert time.monotonic() < deadline, self.server.output
            time.sleep(0.01)
        return int(found[-1])

    def wait_restarted(self, worker: int, timeout: float = 60.0) -> None:
        assert self.server.child is not None
        self.server.child.stderr.wait_for(rf"worker {worker} \(\w+\) serving again", timeout)

    def channel(self, worker: int) -> grpc.Channel:
        """A channel whose connection the kernel gave to ``worker``."""
        port = self.server.port
        for _ in range(64):
            before = _client_ports(port)
            channel = grpc.insecure_channel(self.address, options=[("grpc.use_local_subchannel_pool", 1)])
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
            new = _client_ports(port) - before
            owners = {_owner(port, p, [self.pid(WRITER), self.pid(FOLLOWER)]) for p in new}
            if owners == {self.pid(worker)}:
                self._channels.append(channel)
                return channel
            channel.close()
        raise AssertionError(f"64 connections and none reached worker {worker}")

    def close(self) -> None:
        for channel in self._channels:
            channel.close()
        status = self.server.stop()
        assert status == 0, self.server.output


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def _tcp_connections() -> dict[int, tuple[int, int]]:
    """Established TCP sockets: inode -> (local port, remote port)."""
    table = {}
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(name):
            continue
        with open(name) as f:
            for line in f.readlines()[1:]:
                parts = line.split()
                if parts[3] == "01":
                    local, remote = int(parts[1].rsplit(":", 1)[1], 16), int(parts[2].rsplit(":", 1)[1], 16)
                    table[int(parts[9])] = (local, remote)
    return table


def _client_ports(server_port: int) -> set[int]:
    """The local ports of this process's connections to ``server_port``."""
    table = _tcp_connections()
    return {table[i][0] for i in _socket_inodes(os.getpid()) if i in table and table[i][1] == server_port}


def _owner(server_port: int, client_port: int, pids: list[int]) -> int:
    """The worker holding the server end of the connection from ``client_port``."""
    table = _tcp_connections()
    for pid in pids:
        for inode in _socket_inodes(pid):
            if table.get(inode) == (server_port, client_port):
                return pid
    return -1


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    made = Workers(tmp_path / "data")
    yield made
    made.close()


def _event(lead_id: str, email: str = "dana@example.com") -> event_pb2.Event:
    e = event_pb2.Event(type="recipient.delivered", lead_id=lead_id, flow_id="flow-w", entity_id="buyer-7")
    e.lead_json = orjson.dumps({"email": email, "score": 7})
    return e


def _stubs(channel: grpc.Channel) -> Any:
    from leadtrail.v1 import admin_pb2_grpc, query_pb2_grpc, submission_pb2_grpc

    class Stubs:
        submission = submission_pb2_grpc.SubmissionServiceStub(channel)
        query = query_pb2_grpc.QueryServiceStub(channel)
        stream = stream_pb2_grpc.StreamServiceStub(channel)
        admin = admin_pb2_grpc.AdminServiceStub(channel)

    return Stubs


def _auth(key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),) if key else ()


def _append(stubs: Any, *events: event_pb2.Event, key: str = "") -> list[str]:
    request = submission_pb2.AppendRequest(events=events)
    answer = stubs.submission.Append(request, metadata=_auth(key), timeout=30)
    return [result.id for result in answer.results]


def _eventually(read: Callable[[], Any], timeout: float = 10.0) -> Any:
    """``read()`` once it stops raising NOT_FOUND (a follower sees a commit on its notice)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return read()
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.NOT_FOUND or time.monotonic() > deadline:
                raise
        time.sleep(0.01)


def test_appends_through_either_worker_are_read_through_both(workers: Workers) -> None:
    writer, follower = _stubs(workers.channel(WRITER)), _stubs(workers.channel(FOLLOWER))
    ids = _append(writer, _event("lead-w")) + _append(follower, _event("lead-f"))
    for stubs in (writer, follower):
        for event_id, lead in zip(ids, ("lead-w", "lead-f"), strict=True):
            got = _eventually(lambda s=stubs, i=event_id: s.query.GetEvent(query_pb2.GetEventRequest(id=i)))
            assert got.lead_id == lead
            timeline = _eventually(
                lambda s=stubs, lead=lead: s.query.GetTimeline(query_pb2.GetTimelineRequest(lead_id=lead))
            )
            assert [step.event.id for step in timeline.steps] == [event_id]


def test_an_acknowledged_append_is_read_at_once_through_either_worker(workers: Workers) -> None:
    stubs = {worker: _stubs(workers.channel(worker)) for worker in (WRITER, FOLLOWER)}
    for round in range(10):
        for through in (WRITER, FOLLOWER):
            [event_id] = _append(stubs[through], _event(f"lead-now-{round}-{through}"))
            for s in stubs.values():  # no retry: what was acknowledged is served everywhere
                assert s.query.GetEvent(query_pb2.GetEventRequest(id=event_id), timeout=10).id == event_id


def test_a_read_a_follower_takes_before_the_notice_waits_for_what_was_acknowledged(
    workers: Workers,
) -> None:
    writer, follower = _stubs(workers.channel(WRITER)), _stubs(workers.channel(FOLLOWER))
    _append(writer, _event("lead-first"))
    pid = workers.pid(FOLLOWER)
    missed = []
    for round in range(10):
        os.kill(pid, signal.SIGSTOP)  # the notice and the read arrive while it is stopped
        try:
            [event_id] = _append(writer, _event(f"lead-held-{round}"))
            read = follower.query.GetEvent.future(query_pb2.GetEventRequest(id=event_id), timeout=30)
            time.sleep(0.05)  # the read on its way to the follower's socket (a bound, not a handshake)
        finally:
            os.kill(pid, signal.SIGCONT)
        try:
            assert read.result().id == event_id
        except grpc.RpcError as e:
            missed.append((round, e.code()))
    assert not missed


def test_a_follower_that_stops_answering_does_not_hold_appends_back(workers: Workers) -> None:
    writer = _stubs(workers.channel(WRITER))
    follower = _stubs(workers.channel(FOLLOWER))
    _append(writer, _event("lead-before"))
    pid = workers.pid(FOLLOWER)
    os.kill(pid, signal.SIGSTOP)
    try:
        # Appends never wait for a follower: a hung one holds none of them back.
        ids = [_append(writer, _event(f"lead-stopped-{n}"))[0] for n in range(3)]
    finally:
        os.kill(pid, signal.SIGCONT)
    for event_id in ids:
        got = _eventually(lambda i=event_id: follower.query.GetEvent(query_pb2.GetEventRequest(id=i)))
        assert got.id == event_id

    # Running again, it serves at once what is acknowledged from then on.
    def appended_and_read() -> Any:
        [new] = _append(writer, _event("lead-probe"))
        return follower.query.GetEvent(query_pb2.GetEventRequest(id=new))

    _eventually(appended_and_read)
    for n in range(5):
        [event_id] = _append(writer, _event(f"lead-after-{n}"))
        assert follower.query.GetEvent(query_pb2.GetEventRequest(id=event_id), timeout=10).id == event_id


def test_a_subscriber_on_each_worker_receives_a_new_commit(workers: Workers) -> None:
    channels = {worker: workers.channel(worker) for worker in (WRITER, FOLLOWER)}
    received: dict[int, list[str]] = {WRITER: [], FOLLOWER: []}
    calls = {
        worker: stream_pb2_grpc.StreamServiceStub(channel).Subscribe(
            stream_pb2.SubscribeRequest(from_end=True), timeout=30
        )
        for worker, channel in channels.items()
    }

    def read(worker: int) -> None:
        for response in calls[worker]:
            if response.HasField("event"):
                received[worker].append(response.event.id)
                return

    readers = [threading.Thread(target=read, args=(worker,)) for worker in calls]
    for reader in readers:
        reader.start()
    time.sleep(0.5)  # both subscriptions live before the append (a bound, not a handshake)
    [event_id] = _append(_stubs(channels[FOLLOWER]), _event("lead-live"))
    for reader in readers:
        reader.join(20)
    for call in calls.values():
        call.cancel()
    assert received == {WRITER: [event_id], FOLLOWER: [event_id]}


def test_a_subscription_on_a_follower_replays_what_was_just_acknowledged(workers: Workers) -> None:
    writer = _stubs(workers.channel(WRITER))
    follower = stream_pb2_grpc.StreamServiceStub(workers.channel(FOLLOWER))
    for round in range(5):
        ids = _append(writer, *(_event(f"lead-s{round}-{n}") for n in range(3)))
        replayed = []
        call = follower.Subscribe(stream_pb2.SubscribeRequest(from_start=True), timeout=30)
        for response in call:
            if response.HasField("caught_up"):
                break
            if response.HasField("event"):
                replayed.append(response.event.id)
        call.cancel()
        assert replayed[-3:] == ids


def test_reads_on_a_follower_keep_each_roles_scope_and_masking(tmp_path: Path) -> None:
    data = tmp_path / "data"
    roles = ("writer", "reader", "analyst", "admin")
    keys = {role: server_process.create_key(data, "acme", role) for role in roles}
    keys["other"] = server_process.create_key(data, "globex", "admin")
    made = Workers(data)
    try:
        writer, follower = _stubs(made.channel(WRITER)), _stubs(made.channel(FOLLOWER))
        [event_id] = _append(follower, _event("lead-r"), key=keys["writer"])
        for role in ("reader", "analyst", "admin"):
            request = query_pb2.GetEventRequest(id=event_id, json_snapshots=True)
            answers = [
                _eventually(lambda s=s, q=request, r=role: s.query.GetEvent(q, metadata=_auth(keys[r])))
                for s in (writer, follower)
            ]
            assert answers[0].SerializeToString() == answers[1].SerializeToString()
            email = orjson.loads(answers[1].lead_json)["email"]
            assert (email == "dana@example.com") == (role == "admin"), (role, email)
        for stubs in (writer, follower):
            with pytest.raises(grpc.RpcError) as info:
                stubs.query.GetEvent(query_pb2.GetEventRequest(id=event_id), metadata=_auth(keys["other"]))
            assert info.value.code() == grpc.StatusCode.NOT_FOUND
            with pytest.raises(grpc.RpcError) as info:
                _append(stubs, _event("lead-x"), key=keys["reader"])
            assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    finally:
        made.close()


def test_forwarded_bad_input_is_refused_with_the_writers_own_words(workers: Workers) -> None:
    writer, follower = _stubs(workers.channel(WRITER)), _stubs(workers.channel(FOLLOWER))
    bad = event_pb2.Event(type="Not A Type", lead_id="", flow_id="flow-w")
    refusals = []
    for stubs in (writer, follower):
        with pytest.raises(grpc.RpcError) as info:
            _append(stubs, bad)
        refusals.append((info.value.code(), info.value.details()))
    assert refusals[0][0] == grpc.StatusCode.INVALID_ARGUMENT
    assert refusals[0] == refusals[1]


@pytest.mark.parametrize("erase_through", [WRITER, FOLLOWER])
def test_an_erased_value_is_served_by_no_worker_once_the_erasure_returned(
    workers: Workers, erase_through: int
) -> None:
    stubs = {worker: _stubs(workers.channel(worker)) for worker in (WRITER, FOLLOWER)}
    [event_id] = _append(stubs[WRITER], _event("lead-e", "erin@example.com"))
    for s in stubs.values():  # both have read it (and may hold it in a cache)
        request = query_pb2.GetEventRequest(id=event_id, json_snapshots=True)
        got = _eventually(lambda s=s, q=request: s.query.GetEvent(q))
        assert b"erin@example.com" in got.lead_json
    stubs[erase_through].admin.EraseLead(admin_pb2.EraseLeadRequest(lead_id="lead-e"), timeout=60)
    for s in stubs.values():
        got = s.query.GetEvent(query_pb2.GetEventRequest(id=event_id, json_snapshots=True))
        assert b"erin@example.com" not in got.lead_json
        timeline = s.query.GetTimeline(query_pb2.GetTimelineRequest(lead_id="lead-e", json_snapshots=True))
        assert b"erin@example.com" not in timeline.SerializeToString()


# -- forwarded appends travel in frames ---------------------------------------------------------

APPEND = "/leadtrail.v1.SubmissionService/Append"


def _limited_key(data: Path, rate: int) -> str:
    options = ["--data", str(data), "--account", "acme", "--role", "writer", "--rate-limit", str(rate)]
    done = subprocess.run(
        [*server_process.LEADTRAIL, "keys", "create", *options],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def _private_socket(writer_pid: int) -> str:
    """The writer's private socket, from the role its supervisor started it with."""
    with open(f"/proc/{writer_pid}/cmdline", "rb") as f:
        argv = f.read().split(b"\0")
    role = orjson.loads(argv[argv.index(b"leadtrail.server.workers") + 1])["role"]
    return str(role["private_socket"])


def _frame_answers(socket_path: str, frame: bytes, count: int) -> dict[int, frames.Answer]:
    """The writer's answers to the items of one frame, sent as a follower sends it."""
    with grpc.insecure_channel(f"unix:{socket_path}") as channel:
        call = channel.stream_stream(forwarding.FRAMES)(iter([frame]), timeout=30)
        got: dict[int, frames.Answer] = {}
        for raw in call:
            got.update((answer.tag, answer) for answer in frames.answers(raw))
            if len(got) == count:
                break
        call.cancel()
    return got


def _direct(channel: grpc.Channel, raw: bytes, key: str) -> tuple[grpc.StatusCode, str, dict[str, Any]]:
    """A raw Append straight to a worker: its status, details and trailing metadata."""
    try:
        channel.unary_unary(APPEND)(raw, metadata=_auth(key), timeout=30)
    except grpc.RpcError as e:
        trailing = dict(e.trailing_metadata() or ())  # type: ignore[attr-defined]
        return e.code(), e.details(), trailing  # type: ignore[attr-defined]
    return grpc.StatusCode.OK, "", {}


def test_the_items_of_one_frame_are_admitted_each_as_its_callers_direct_call(tmp_path: Path) -> None:
    data = tmp_path / "data"
    keys = {role: server_process.create_key(data, "acme", role) for role in ("writer", "reader")}
    keys["limited"] = _limited_key(data, 1)
    made = Workers(data)
    try:
        good = submission_pb2.AppendRequest(events=[_event("lead-frame")]).SerializeToString()
        bad = submission_pb2.AppendRequest(
            events=[event_pb2.Event(type="Not A Type", lead_id="", flow_id="flow-w")]
        ).SerializeToString()
        cases = {
            1: (keys["writer"], good),
            2: (keys["reader"], good),
            3: (keys["writer"], bad),
            4: ("", good),
            5: (keys["writer"], b"\xff\xff not a message"),
            6: (keys["limited"], good),
            7: (keys["limited"], good),
        }
        frame = b"".join(
            frames.item_bytes(tag, APPEND, _auth(key), raw, 30.0) for tag, (key, raw) in cases.items()
        )
        answers = _frame_answers(_private_socket(made.pid(WRITER)), frame, len(cases))
        assert sorted(answers) == sorted(cases)

        assert answers[1].code == 0
        [result] = submission_pb2.AppendResponse.FromString(answers[1].body).results
        assert result.position > 0
        assert answers[6].code == 0  # the limited key's first call of the second

        writer = made.channel(WRITER)
        for tag in (2, 3, 4, 5):
            key, raw = cases[tag]
            code, details, _ = _direct(writer, raw, key)
            assert code != grpc.StatusCode.OK, tag
            assert (answers[tag].code, answers[tag].details) == (code.value[0], details), tag
        assert answers[2].code == grpc.StatusCode.PERMISSION_DENIED.value[0]
        assert answers[4].code == grpc.StatusCode.UNAUTHENTICATED.value[0]

        # A rate limit's refusal keeps its rich status through the frame, as a direct call has it.
        assert answers[7].code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
        trailing = dict(answers[7].metadata)
        code, _, direct_trailing = _direct(writer, good, keys["limited"])
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert {"retry-after-ms", "grpc-status-details-bin"} <= set(trailing) & set(direct_trailing)
        status = status_pb2.Status.FromString(trailing["grpc-status-details-bin"])
        assert status.code == code.value[0] and status.details
    finally:
        made.close()


def test_concurrent_appends_through_a_follower_keep_their_own_callers(tmp_path: Path) -> None:
    data = tmp_path / "data"
    keys = {role: server_process.create_key(data, "acme", role) for role in ("writer", "reader")}
    made = Workers(data)
    try:
        follower = _stubs(made.channel(FOLLOWER))
        roles = ["writer" if n % 3 else "reader" for n in range(48)]
        calls = [
            follower.submission.Append.future(
                submission_pb2.AppendRequest(events=[_event(f"lead-c{n}")]),
                metadata=_auth(keys[role]),
                timeout=30,
            )
            for n, role in enumerate(roles)
        ]
        accepted = []
        for call, role in zip(calls, roles, strict=True):
            if role == "reader":
                assert call.code() == grpc.StatusCode.PERMISSION_DENIED, call.details()
                assert "not allowed for role reader" in call.details()
            else:
                [result] = call.result().results
                accepted.append(result.id)
        assert len(set(accepted)) == roles.count("writer")
        reader = _stubs(made.channel(FOLLOWER))
        for event_id in accepted:
            got = _eventually(
                lambda i=event_id: reader.query.GetEvent(
                    query_pb2.GetEventRequest(id=i), metadata=_auth(keys["reader"])
                )
            )
            assert got.id == event_id
    finally:
        made.close()


def test_frames_round_trip_and_a_cut_frame_is_refused() -> None:
    metadata = (("authorization", "Bearer k"), ("trace-bin", b"\x00\x01"))
    frame = frames.item_bytes(7, APPEND, metadata, b"\x0a\x00", None) + frames.item_bytes(
        8, APPEND, (), b"", 2.5
    )
    assert list(frames.items(frame)) == [
        frames.Item(7, APPEND, metadata, b"\x0a\x00", None),
        frames.Item(8, APPEND, (), b"", 2.5),
    ]
    answer = frames.Answer(9, 8, "über".encode(), (("retry-after-ms", "5"),))
    assert list(frames.answers(frames.answer_bytes(answer))) == [answer]
    assert answer.details == "über"
    with pytest.raises(frames.FrameError):
        list(frames.items(frame[:-1]))


# -- kill -9 with an acknowledgement oracle ------------------------------------------------------


class Load:
    """Threads appending one event at a time through channels pinned to each worker,
    retrying through outages; ``acknowledged`` is every id the service confirmed."""

    def __init__(self, workers: Workers, threads: int = 4) -> None:
        self.acknowledged: list[str] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        channels = [workers.channel(WRITER if i % 2 else FOLLOWER) for i in range(threads)]
        self._threads = [threading.Thread(target=self._run, args=(c, i)) for i, c in enumerate(channels)]
        for thread in self._threads:
            thread.start()

    def _run(self, channel: grpc.Channel, number: int) -> None:
        stubs = _stubs(channel)
        count = 0
        while not self._stop.is_set():
            count += 1
            try:
                ids = _append(stubs, _event(f"lead-{number}-{count}"))
            except grpc.RpcError as e:
                if e.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
                    with self._lock:
                        self.failures.append(f"{e.code()}: {e.details()}")
                time.sleep(0.02)
                continue
            with self._lock:
                self.acknowledged.extend(ids)

    def count(self) -> int:
        with self._lock:
            return len(self.acknowledged)

    def wait_for_more(self, than: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while self.count() <= than:
            failures = self.failures[-3:]
            assert time.monotonic() < deadline, f"no acknowledgement past {than} in {timeout} s: {failures}"
            time.sleep(0.01)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)


@pytest.mark.parametrize("victim", [FOLLOWER, WRITER])
def test_nothing_acknowledged_is_lost_when_a_worker_is_killed(workers: Workers, victim: int) -> None:
    port = workers.server.port
    load = Load(workers)
    try:
        for _ in range(2):
            load.wait_for_more(load.count() + 20)
            os.kill(workers.pid(victim), signal.SIGKILL)
            workers.wait_restarted(victim)
        load.wait_for_more(load.count() + 20)  # appends flow again through both workers
    finally:
        load.stop()
    assert not load.failures, load.failures[:5]
    assert workers.server.port == port
    for worker in (WRITER, FOLLOWER):
        stubs = _stubs(workers.channel(worker))
        for event_id in load.acknowledged:
            got = _eventually(lambda s=stubs, i=event_id: s.query.GetEvent(query_pb2.GetEventRequest(id=i)))
            assert got.id == event_id


def test_one_worker_is_the_single_process_server(tmp_path: Path) -> None:
    server = server_process.ServerProcess(tmp_path / "data", "--workers", "1").start()
    try:
        assert server.child is not None
        pid = server.child.proc.pid
        children = set()
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                children.update(f.read().split())
        assert not children
        assert "workers" not in server.output
    finally:
        assert server.stop() == 0
