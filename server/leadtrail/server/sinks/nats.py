"""NATS JetStream target: each event a message on ``<prefix>.<account>.<type>`` with header
``Nats-Msg-Id`` = the event id and the event's export-line JSON as body.

Publishes are pipelined: up to ``in_flight`` messages are written before the PubAcks are
awaited, and ``deliver`` returns once every message of the call is acknowledged (JetStream
stores a message, on a quorum of replicas, before it acks it); nothing is ever pending
between calls. A repeat within the stream's duplicate window is acknowledged as a duplicate
and not stored again, so a consumer of the stream sees each event once.

Order. The stream holds the events in position order because a stream stores what one
connection publishes in the order it was sent, and a connection that fails loses a suffix
of what was sent, never a message in the middle. So the client must not resend on a new
connection what it buffered while the old one was failing (nats-py's reconnect does): the
target connects without automatic reconnection, and after any failure it drops the
connection; the sink's retry opens a new one (to the next server in the list) and publishes
the whole call again, JetStream dropping the prefix it already holds.

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
CONNECT_TIMEOUT_S = 3.0
API_TIMEOUT_S = 5.0

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
        self._url = ""
        """The server of the current connection, named in errors."""
        self._inbox = ""
        """The connection's reply subjects: ``<inbox>.<run>_<index>``."""
        self._run = 0
        self._current: _Run | None = None
        """Where the next connection attempt starts in ``spec.servers`` (after a failure, the
        server after the one that failed)."""

    @property
    def stream_subjects(self) -> str:
        """The subjects of a stream the target creates: ``<prefix>.<account>.>``."""
        return f"{self._subject_root}.>"

    def subject(self, event: Event) -> str:
        return f"{self._subject_root}.{event.type}"

    # -- the Target protocol ---------------------------------------------------------------

    async def open(self) -> None:
        if self._js is not None:
            return
        try:
            await self._connect()
            await self._ensure_stream()
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
            for start in range(0, len(events), self._in_flight):
                await self._publish(events[start : start + self._in_flight])
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

    async def _ensure_stream(self) -> None:
        assert self._js is not None
        spec = self._spec
        try:
            info = await self._js.stream_info(spec.stream)
        except nats.js.errors.NotFoundError:
            config = api.StreamConfig(
                name=spec.stream,
                subjects=[self.stream_subjects],
                storage=api.StorageType.FILE,
                num_replicas=spec.replicas,
                duplicate_window=float(spec.duplicate_window_s),
            )
            try:
                await self._js.add_stream(config)
            except nats.js.errors.BadRequestError as error:
                if "already in use" not in str(error):  # another sink created it meanwhile
                    raise TargetError(
                        f"nats: cannot create stream {spec.stream}: {_describe(error)}"
                    ) from error
            return
        held = info.config.subjects or []
        probe = f"{self._subject_root}.x.y"
        if not any(subject_matches(pattern, probe) for pattern in held):
            raise TargetError(
                f"nats: stream {spec.stream} at {self._url} holds subjects {held}, not {self.stream_subjects}"
            )

    # -- publishing ------------------------------------------------------------------------

    async def _publish(self, events: Sequence[Event]) -> None:
        """Publish ``events`` pipelined, each with a reply subject of its own under the
        connection's inbox, then wait until every PubAck came back (``_on_ack`` counts them).
        Fails when one is an error, when the connection closes, or when no PubAck comes for
        ``ack_timeout_s`` while some are still missing (a stream leader that died)."""
        connection = self._connection
        assert connection is not None
        stream = self._spec.stream
        self._run += 1
        run = _Run(len(events))
        self._current = run
        reply = f"{self._inbox}.{self._run}_"
        headers_of = {"Nats-Expected-Stream": stream}
        for i, event in enumerate(events):
            body = orjson.dumps(event_to_json(event))
            headers = {**headers_of, "Nats-Msg-Id": event.id}
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
            raise TargetError(f"nats: publish to stream {stream} at {self._url}: {run.error}")
        if run.missing:
            raise TargetError(f"nats: publish to stream {stream} at {self._url}: the connection closed")

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
        error = _ack_error(msg, self._spec.stream)
        if error is not None and run.error is None:
            run.error = error
        if run.missing == 0 or run.error is not None or run.missing % 64 == 0:
            run.wake.set()


class _Run:
    """The PubAcks awaited for one pipelined publish."""

    __slots__ = ("acked", "error", "missing", "wake")

    def __init__(self, size: int) -> None:
        self.acked = [False] * size
        self.missing = size
        self.error: str | None = None
        self.wake = asyncio.Event()


def _ack_error(msg: Msg, stream: str) -> str | None:
    """What is wrong with a PubAck, or None for an acknowledgement by ``stream``."""
    if not msg.data:
        status = (msg.headers or {}).get("Status", "")
        if status == "503":
            return "no stream answered (503: no leader, or the stream is gone)"
        return f"an empty answer (status {status or 'none'})"
    try:
        answer = orjson.loads(msg.data)
    except orjson.JSONDecodeError:
        return f"an answer that is not a PubAck: {msg.data[:100]!r}"
    if not isinstance(answer, dict):
        return f"an answer that is not a PubAck: {msg.data[:100]!r}"
    if "error" in answer:
        error = answer["error"] if isinstance(answer["error"], dict) else {}
        return f"JetStream error {error.get('err_code', '')}: {error.get('description', answer['error'])}"
    if answer.get("stream") != stream:
        return f"acknowledged by stream {answer.get('stream')!r}, not {stream}"
    return None


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
