"""NATS JetStream target: each event a message on ``<prefix>.<account>.<type>`` with header
``Nats-Msg-Id`` = the event id and the event's export-line JSON as body.

Publishes are pipelined: up to ``in_flight`` messages are written before the PubAcks are
awaited, and ``deliver`` returns once every message of the call is acknowledged (JetStream
stores a message, on a quorum of replicas, before it acks it); nothing is ever pending
between calls. A repeat within the stream's duplicate window is acknowledged as a duplicate
and not stored again, so a consumer of the stream sees each event once.

Order. Each message names the Msg-Id the stream's last message must have for it to be
stored (``Nats-Expected-Last-Msg-Id``: the event handed on before it; for the first after
connecting, the id of the stream's last message), and JetStream checks it after its
de-duplication. So the stream grows only in this sink's position order, even when a
failure in the middle of a pipelined run (a stream leader dying, a cluster electing the
next one while later messages arrive) loses one message and not the next: the next is
refused, the call fails, and the sink's retry publishes the whole call again, JetStream
acknowledging what it holds as duplicates and storing the rest in order. A message refused
for the chain itself (someone else published to the stream) makes the next call publish one
by one, each chained to what the stream is known to end with. The target connects without
automatic reconnection (nats-py would resend on the new connection what it buffered while
the old one was failing) and drops the connection after any failure; the retry opens a new
one, to the next server of the list.

A message JetStream refuses for itself (larger than the stream's ``max_msg_size``, a full
stream that discards new messages) stops the sink with that error until the stream is
changed: it is never skipped.

The stream is created when missing (file storage, ``replicas``, the duplicate window from
the spec, subjects ``<prefix>.<account>.>``); an existing stream must hold those subjects,
and every publish names the stream it expects (``Nats-Expected-Stream``), so a message
never lands in another stream that happens to cover the subject.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import nats
import nats.errors
import nats.js.errors
import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api

from leadtrail.server.convert import event_to_json
from leadtrail.storage import Event

from .model import NatsSpec
from .target import TargetError

IN_FLIGHT = 1000
"""Messages published before their PubAcks are awaited."""
ACK_TIMEOUT_S = 5.0
"""How long a pipelined run may go without a PubAck while some are missing: messages sent to
a stream leader that died are never answered; the call fails after this and is retried."""
MSG_ID = "Nats-Msg-Id"
EXPECTED_STREAM = "Nats-Expected-Stream"
EXPECTED_LAST_MSG_ID = "Nats-Expected-Last-Msg-Id"
NO_RESPONDERS = "503"
WRONG_LAST_MSG_ID = 10070
"""JetStream's err_code for a message whose ``Nats-Expected-Last-Msg-Id`` is not the stream's last."""
CONNECT_TIMEOUT_S = 3.0
API_TIMEOUT_S = 5.0
RECHECK_TIMEOUT_S = 1.0

_FAILURES = (nats.errors.Error, OSError, TimeoutError)
"""What the client raises when the server is down, slow or refuses (JetStream's errors are
``nats.errors.Error`` too)."""


class NatsTarget:
    """Publishes a sink's events to a JetStream stream (see the module docstring)."""

    def __init__(
        self,
        spec: NatsSpec,
        account_id: str,
        *,
        in_flight: int = IN_FLIGHT,
        ack_timeout_s: float = ACK_TIMEOUT_S,
    ) -> None:
        self._spec = spec
        self._subject_root = f"{spec.subject_prefix}.{account_id}"
        self._in_flight = in_flight
        self._ack_timeout_s = ack_timeout_s
        self._connection: Client | None = None
        self._js: JetStreamContext | None = None
        self._closed = asyncio.Event()
        self._next_server = 0
        """Where the next connection attempt starts in ``spec.servers`` (after a failure, the
        server after the one that failed)."""
        self._url = ""
        """The server of the current connection, named in errors."""
        self._inbox = ""
        """The connection's reply subjects: ``<inbox>.<run>_<index>``."""
        self._run = 0
        self._current: _Run | None = None
        self._previous = ""
        """The Msg-Id the stream's last message has: the last event handed on, or what the
        stream held when the target connected ('' for an empty stream)."""
        self._resync = False
        """The last call was refused for the chain: the next one publishes one by one."""
        self._stream_known = False
        self._stream_checks = 0
        """The stream was found or created and its last Msg-Id read. A reconnection after a
        failure does not ask again (JetStream's API may be electing a leader then, and the
        chain needs nothing new: the retry starts from the event before the failed call);
        an answer that no stream listens (the stream deleted?) makes it ask."""

    @property
    def stream_subjects(self) -> str:
        """The subjects of a stream the target creates: ``<prefix>.<account>.>``."""
        return f"{self._subject_root}.>"

    def subject(self, event: Event) -> str:
        return f"{self._subject_root}.{event.type}"

    # -- the Target protocol ---------------------------------------------------------------

    async def open(self) -> None:
        if self._connection is not None and self._connection.is_closed:
            await self._drop()  # the server went away while the sink had nothing to hand on
        if self._js is not None:
            return
        try:
            await self._connect()
            if not self._stream_known or self._resync:
                # the first time, JetStream's API has time to answer; again after a failure it
                # may be electing a leader: a short wait, and the sink's retry asks again
                await self._ensure_stream(API_TIMEOUT_S if self._stream_checks == 0 else RECHECK_TIMEOUT_S)
                self._stream_known = True
        except TargetError:
            await self._drop()
            raise
        except _FAILURES as error:
            await self._drop()
            raise TargetError(
                f"nats: stream {self._spec.stream} at {self._url}: {_describe(error)}"
            ) from error

    async def deliver(self, events: Sequence[Event]) -> None:
        await self.open()
        try:
            if self._resync:
                await self._publish_one_by_one(events)
                self._resync = False
            else:
                for start in range(0, len(events), self._in_flight):
                    chunk = events[start : start + self._in_flight]
                    await self._publish(chunk, self._previous)
                    self._previous = chunk[-1].id
        except TargetError:
            await self._drop()
            raise
        except _FAILURES as error:
            await self._drop()
            raise TargetError(
                f"nats: publish to stream {self._spec.stream} at {self._url}: {_describe(error)}"
            ) from error

    def pending_from(self) -> int | None:
        return None  # deliver returns only once JetStream acknowledged everything

    async def flush(self, now_ms: int) -> None:
        return None  # nothing waits between calls

    async def close(self) -> None:
        await self._drop()

    # -- connecting ------------------------------------------------------------------------

    async def _connect(self) -> None:
        """Connect to the first server that answers, starting at ``_next_server``."""
        servers = self._spec.servers
        errors: list[str] = []
        for attempt in range(len(servers)):
            index = (self._next_server + attempt) % len(servers)
            try:
                connection = await self._connect_to(servers[index])
            except TargetError as error:
                errors.append(str(error))
                continue
            self._next_server = index
            self._url = servers[index]
            self._connection = connection
            self._js = connection.jetstream(timeout=API_TIMEOUT_S)
            self._inbox = connection.new_inbox()
            await connection.subscribe(f"{self._inbox}.*", cb=self._on_ack)
            return
        raise TargetError(f"nats: no server answered ({'; '.join(errors)})")

    async def _connect_to(self, url: str) -> Client:
        self._closed = closed = asyncio.Event()
        seen: list[Exception] = []

        async def on_closed() -> None:
            closed.set()
            if self._current is not None:
                self._current.wake.set()

        async def on_error(error: Exception) -> None:
            seen.append(error)  # a failure surfaces as the TargetError of the call it breaks

        try:
            return await nats.connect(
                servers=[url],
                allow_reconnect=False,
                # nats-py tries a server up to max_reconnect_attempts times even without
                # reconnection: once here, and the sink's retry tries again later
                max_reconnect_attempts=1,
                reconnect_time_wait=0.1,
                connect_timeout=CONNECT_TIMEOUT_S,
                closed_cb=on_closed,
                error_cb=on_error,
                name="leadtrail-sink",
            )
        except _FAILURES as error:
            raise TargetError(f"{url}: {_describe(seen[-1] if seen else error)}") from error

    async def _drop(self) -> None:
        connection, self._connection, self._js = self._connection, None, None
        self._current = None
        if connection is None:
            return
        self._next_server = (self._next_server + 1) % len(self._spec.servers)
        try:
            await connection.close()
        except _FAILURES:
            pass  # already broken; nothing of it is used again

    async def _ensure_stream(self, timeout_s: float) -> None:
        assert self._connection is not None
        self._stream_checks += 1
        js = self._connection.jetstream(timeout=timeout_s)
        spec = self._spec
        try:
            info = await js.stream_info(spec.stream)
        except nats.js.errors.NotFoundError:
            config = api.StreamConfig(
                name=spec.stream,
                subjects=[self.stream_subjects],
                storage=api.StorageType.FILE,
                num_replicas=spec.replicas,
                duplicate_window=float(spec.duplicate_window_s),
            )
            try:
                await js.add_stream(config)
            except nats.js.errors.BadRequestError as error:
                if "already in use" not in str(error):  # another sink created it meanwhile
                    raise TargetError(
                        f"nats: cannot create stream {spec.stream}: {_describe(error)}"
                    ) from error
            self._previous = ""
            return
        held = info.config.subjects or []
        probe = f"{self._subject_root}.x.y"
        if not any(subject_matches(pattern, probe) for pattern in held):
            raise TargetError(
                f"nats: stream {spec.stream} at {self._url} holds subjects {held}, not {self.stream_subjects}"
            )
        self._previous = ""
        if info.state.last_seq:
            last = await js.get_msg(spec.stream, seq=info.state.last_seq)
            self._previous = str((last.headers or {}).get(MSG_ID, ""))

    # -- publishing ------------------------------------------------------------------------

    async def _publish(self, events: Sequence[Event], previous: str) -> _Run:
        """Publish ``events`` pipelined, each with a reply subject of its own under the
        connection's inbox and chained to the one before it (the first to ``previous``, the
        Msg-Id the stream's last message should have), then wait until every PubAck came back
        (``_on_ack`` counts them). Fails when one is an error, when the connection closes, or
        when no PubAck comes for ``ack_timeout_s`` while some are still missing."""
        connection = self._connection
        assert connection is not None
        stream = self._spec.stream
        self._run += 1
        run = _Run(len(events))
        self._current = run
        reply = f"{self._inbox}.{self._run}_"
        for i, event in enumerate(events):
            headers = {EXPECTED_STREAM: stream, MSG_ID: event.id}
            if previous:
                headers[EXPECTED_LAST_MSG_ID] = previous
            previous = event.id
            body = orjson.dumps(event_to_json(event))
            await connection.publish(self.subject(event), body, reply=f"{reply}{i}", headers=headers)
        while run.missing and run.error is None and not self._closed.is_set():
            before = run.missing
            run.wake.clear()
            try:
                await asyncio.wait_for(run.wake.wait(), self._ack_timeout_s)
            except TimeoutError:
                if run.missing == before:
                    raise TargetError(
                        f"nats: publish to stream {stream} at {self._url}: "
                        f"no PubAck for {self._ack_timeout_s:g} s ({run.missing} of {len(events)} missing)"
                    ) from None
        if run.error is not None:
            self._resync = run.out_of_chain
            self._stream_known = self._stream_known and not run.no_stream
            raise TargetError(f"nats: publish to stream {stream} at {self._url}: {run.error}")
        if run.missing:
            raise TargetError(f"nats: publish to stream {stream} at {self._url}: the connection closed")
        return run

    async def _publish_one_by_one(self, events: Sequence[Event]) -> None:
        """Publish each event alone, chained to what the stream's last message is known to be:
        after a message was refused for the chain (someone else published to the stream, or a
        hole), so that the stream still holds this sink's events in position order."""
        last = self._previous
        for event in events:
            run = await self._publish([event], last)
            if not run.duplicate[0]:
                last = event.id
        self._previous = last

    async def _on_ack(self, msg: Msg) -> None:
        """One PubAck (or a no-responders status) of the current run."""
        run_number, _, index = msg.subject.rpartition(".")[2].partition("_")
        run = self._current
        if run is None or run_number != str(self._run) or not index.isdigit():
            return  # an answer to a run that already failed
        position = int(index)
        if position >= len(run.acked) or run.acked[position]:
            return
        run.acked[position] = True
        run.missing -= 1
        error, code, duplicate = _ack_error(msg, self._spec.stream)
        run.duplicate[position] = duplicate
        if error is not None and run.error is None:
            run.error = error
            run.out_of_chain = code == WRONG_LAST_MSG_ID
            run.no_stream = not msg.data
        if run.missing == 0 or run.error is not None or run.missing % 64 == 0:
            run.wake.set()


class _Run:
    """The PubAcks awaited for one pipelined publish."""

    __slots__ = ("acked", "duplicate", "error", "missing", "no_stream", "out_of_chain", "wake")

    def __init__(self, size: int) -> None:
        self.acked = [False] * size
        self.duplicate = [False] * size
        """Acknowledged as already held (within the duplicate window), not stored again."""
        self.missing = size
        self.error: str | None = None
        self.no_stream = False
        """The error is a status (no responders): no stream listens on the subject."""
        self.out_of_chain = False
        """The error is JetStream's "wrong last msg ID": the stream's last message is not the
        one before it in this sink's sequence."""
        self.wake = asyncio.Event()


def _ack_error(msg: Msg, stream: str) -> tuple[str | None, int, bool]:
    """(what is wrong with a PubAck or None, JetStream's err_code or 0, a duplicate)."""
    if not msg.data:
        status = (msg.headers or {}).get("Status", "")
        if status == NO_RESPONDERS:
            return "no stream answered (503: no leader, or the stream is gone)", 0, False
        return f"an empty answer (status {status or 'none'})", 0, False
    try:
        answer = orjson.loads(msg.data)
    except orjson.JSONDecodeError:
        answer = None
    if not isinstance(answer, dict):
        return f"an answer that is not a PubAck: {msg.data[:100]!r}", 0, False
    if "error" in answer:
        error = answer["error"] if isinstance(answer["error"], dict) else {}
        code = error.get("err_code", 0)
        description = error.get("description", answer["error"])
        return f"JetStream error {code}: {description}", code if isinstance(code, int) else 0, False
    if answer.get("stream") != stream:
        return f"acknowledged by stream {answer.get('stream')!r}, not {stream}", 0, False
    return None, 0, answer.get("duplicate") is True


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: ``*`` is one token, a final ``>`` one or more."""
    wanted, tokens = pattern.split("."), subject.split(".")
    for i, token in enumerate(wanted):
        if token == ">":
            return len(tokens) > i
        if i >= len(tokens) or (token != "*" and token != tokens[i]):
            return False
    return len(wanted) == len(tokens)


def _describe(error: BaseException) -> str:
    """A readable one-line reason (some client errors have an empty message)."""
    text = str(error).strip()
    name = type(error).__name__
    if isinstance(error, TimeoutError) and not text:
        return "timed out"
    return f"{name}: {text}" if text and name not in text else (text or name)
