"""``leadtrail serve``: the gRPC server in the foreground.

Start-up opens (and recovers) the store before listening, so a client never
talks to a half-recovered store; the ready line is printed only once the port
is bound and health says SERVING. SIGTERM/SIGINT drain: health turns
NOT_SERVING, subscriptions end with UNAVAILABLE (clients resume elsewhere or
later), new calls are refused, in-flight appends finish, the log is closed
(every queued group fsynced) and the process exits 0.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import ipaddress
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import DecodeError
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from leadtrail.storage import (
    CorruptionError,
    DataDirectoryError,
    Event,
    EventLog,
    FsyncPolicy,
    Options,
    StorageError,
)
from leadtrail.storage.follow import CommitNotice
from leadtrail.storage.options import DEFAULT_MAX_OPEN_SEGMENTS
from leadtrail.v1 import admin_pb2, alerts_pb2, exports_pb2, query_pb2, sinks_pb2, stream_pb2, submission_pb2

from .acknowledged import AcknowledgedPosition
from .alerts import Alerting, RuleBook, RuleBookError, WebhookPolicy, WebhookPolicyError, Webhooks
from .auth import CALLER, Gate
from .consumers import PositionFileError
from .exports import ExportScheduler, JobBook, JobBookError
from .feed import Feed
from .follower import CaughtUpQuery, Followed, SyncedStream, follow_writer
from .forwarding import FRAMES_METHOD, FRAMES_SERVICE, FrameLink, forwarded
from .frame_admission import FrameService
from .keys import KeyStore, KeyStoreError
from .notices import NoticeHub, WriterLink
from .privacy import Fingerprints
from .read_audit import ReadAudit
from .service import AlertService, QueryService, ServedStore, StreamService, servicers
from .sinks.book import SinkBook, SinkBookError
from .sinks.registry import Sinks
from .sinks.sink import SinkPolicy, SinkPolicyError
from .status import Context, ServiceError, abort, invalid
from .web import HttpListener, HttpListenerError
from .web.console import ConsoleServices
from .worker_role import WorkerRole

log = logging.getLogger("leadtrail.server")

DEFAULT_MAX_MESSAGE_BYTES = 32 * 1024 * 1024
SHUTDOWN_GRACE_SECONDS = 10.0
SERVICE_NAMES = (
    submission_pb2.DESCRIPTOR.services_by_name["SubmissionService"].full_name,
    query_pb2.DESCRIPTOR.services_by_name["QueryService"].full_name,
    stream_pb2.DESCRIPTOR.services_by_name["StreamService"].full_name,
    admin_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name,
    alerts_pb2.DESCRIPTOR.services_by_name["AlertService"].full_name,
    sinks_pb2.DESCRIPTOR.services_by_name["SinkService"].full_name,
    exports_pb2.DESCRIPTOR.services_by_name["ExportService"].full_name,
)
FORWARDED = SERVICE_NAMES[0], SERVICE_NAMES[3], SERVICE_NAMES[4], SERVICE_NAMES[5], SERVICE_NAMES[6]
"""What a follower worker sends on to the writer: appends, administration, alerts, sinks and
export jobs (the rules, the evaluator, the sinks and the jobs live with the writer)."""
BATCHED = frozenset({"Append"})
"""The forwarded methods that travel in frames (forwarding.py): many small calls, each
cheaper at the writer than a gRPC call of its own between the workers."""
FIRST_NOTICE_SECONDS = 60.0
LOCK_WAIT_SECONDS = 10.0


class StartupError(Exception):
    """The server cannot start; the message is the one line the operator sees."""


@dataclass(frozen=True)
class ServerConfig:
    data: str = "./leadtrail-data"
    listen: str = "127.0.0.1:50051"
    fsync: str = "always"
    quarantine: bool = False
    insecure: bool = False
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_client_ca: str | None = None
    max_events_per_request: int = 1000
    max_snapshot_bytes: int = 64 * 1024
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    http: str = "off"
    """HOST:PORT of the HTTP listener (/metrics, console), or "off"; the CLI's default is
    127.0.0.1:8080, the library's none (an embedded server opens no port unasked)."""
    sink_files_roots: tuple[str, ...] = ()
    """Directories under which files sinks may be given absolute paths (besides each account's
    ``<data>/sink-files/<account>/``)."""
    operator_account: str = "default"
    """The account whose admin keys may take a backup (it holds every account's events and
    the store's keys)."""
    checkpoint_interval_s: float = 10.0
    """Seconds between signed checkpoint records while events arrive."""
    max_open_segments: int = DEFAULT_MAX_OPEN_SEGMENTS
    """Segment read descriptors kept open per process (``Options.max_open_segments``)."""


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_listen(
    listen: str, insecure: bool, tls: bool = False, keys: bool = False, option: str = "--listen"
) -> tuple[str, int]:
    """A non-loopback address needs API keys and TLS (keys must not cross the network in
    clear), or ``--insecure``; the same for the gRPC ``--listen`` and the ``--http`` listener."""
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        example = "127.0.0.1:8080" if option == "--http" else "127.0.0.1:50051"
        raise StartupError(f"{option} {listen!r}: expected HOST:PORT, e.g. {example}")
    if not _is_loopback(host) and not insecure and not (tls and keys):
        missing = "API keys (leadtrail keys create)" if not keys else "TLS (--tls-cert and --tls-key)"
        raise StartupError(
            f"{option} {listen}: refusing a non-loopback address without {missing}; "
            "pass --insecure to serve it anyway"
        )
    return host, int(port)


def _read_pem(option: str, path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise StartupError(f"{option} {path}: {e.strerror or e}") from None
    if b"-----BEGIN " not in data:
        raise StartupError(f"{option} {path}: not a PEM file")
    return data


def server_credentials(config: ServerConfig) -> grpc.ServerCredentials | None:
    """TLS (and client certificates when a client CA is given), or None for plaintext."""
    if not config.tls_cert and not config.tls_key:
        if config.tls_client_ca:
            raise StartupError("--tls-client-ca needs --tls-cert and --tls-key")
        return None
    if not (config.tls_cert and config.tls_key):
        raise StartupError("--tls-cert and --tls-key go together")
    cert = _read_pem("--tls-cert", config.tls_cert)
    key = _read_pem("--tls-key", config.tls_key)
    ca = _read_pem("--tls-client-ca", config.tls_client_ca) if config.tls_client_ca else None
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=ca, require_client_auth=ca is not None
    )


def _serializer(message_class: Any) -> Callable[[Any], bytes]:
    """A response's bytes: handlers may answer with a message, or with its bytes spliced
    together from stored ones (nothing to serialize then)."""
    to_bytes = message_class.SerializeToString

    def serialize(response: Any) -> bytes:
        return response if type(response) is bytes else bytes(to_bytes(response))

    return serialize


def _handlers(servicer: object, service: ServiceDescriptor, gate: Gate) -> grpc.GenericRpcHandler[Any, Any]:
    """The service's methods, taking raw bytes so that a malformed message is
    answered INVALID_ARGUMENT naming the expected type (grpc's own parsing would
    answer INTERNAL). Each call is admitted by ``gate`` first (API keys, roles)."""
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
    for method in service.methods:
        request_class = message_factory.GetMessageClass(method.input_type)
        serialize = _serializer(message_factory.GetMessageClass(method.output_type))
        impl = getattr(servicer, method.name)

        async def admit(context: Context, name: str = method.name) -> None:
            try:
                CALLER.set(gate.admit(context.invocation_metadata(), name))
            except ServiceError as e:
                await abort(context, e)

        def parse(raw: bytes, request_class: Any = request_class) -> Any:
            try:
                return request_class.FromString(raw)
            except DecodeError as e:
                name = request_class.DESCRIPTOR.full_name
                raise invalid("request", f"not a valid {name} message ({e})") from e

        if method.client_streaming:

            async def bidi(
                requests: AsyncIterator[bytes],
                context: Context,
                impl: Any = impl,
                parse: Any = parse,
                admit: Any = admit,
            ) -> Any:
                await admit(context)

                async def parsed() -> AsyncIterator[Any]:
                    async for raw in requests:
                        yield parse(raw)

                async for response in impl(parsed(), context):
                    yield response

            handlers[method.name] = grpc.stream_stream_rpc_method_handler(bidi, response_serializer=serialize)
        elif method.server_streaming:

            async def unary_stream(
                raw: bytes, context: Context, impl: Any = impl, parse: Any = parse, admit: Any = admit
            ) -> Any:
                await admit(context)
                try:
                    request = parse(raw)
                except ServiceError as e:
                    await abort(context, e)
                async for response in impl(request, context):
                    yield response

            handlers[method.name] = grpc.unary_stream_rpc_method_handler(
                unary_stream, response_serializer=serialize
            )
        else:

            async def unary_unary(
                raw: bytes, context: Context, impl: Any = impl, parse: Any = parse, admit: Any = admit
            ) -> Any:
                await admit(context)
                try:
                    request = parse(raw)
                except ServiceError as e:
                    await abort(context, e)
                return await impl(request, context)

            handlers[method.name] = grpc.unary_unary_rpc_method_handler(
                unary_unary, response_serializer=serialize
            )
    return grpc.method_handlers_generic_handler(service.full_name, handlers)


class ReflectionGate(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]  # generic in the stubs only
    """Reflection is served by grpcio's own handler: once keys exist it needs one too (any
    role), as every RPC but health does."""

    def __init__(self, gate: Gate) -> None:
        self.gate = gate

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        if details.method.startswith("/grpc.reflection."):
            try:
                self.gate.admit(details.invocation_metadata, "ServerReflectionInfo")
            except ServiceError as e:
                refusal = e

                async def refuse(requests: AsyncIterator[Any], context: Context) -> AsyncIterator[Any]:
                    await abort(context, refusal)
                    yield None  # pragma: no cover - abort raises

                return grpc.stream_stream_rpc_method_handler(refuse)
        return await continuation(details)


class SettledAdmin:
    """The writer's AdminService: a call that may have changed the store on disk returns
    once every follower worker reloaded (notices.py), so no worker serves what it removed."""

    READ_ONLY = frozenset(
        {"GetStats", "Verify", "ListKeys", "GetFieldPolicy", "GetCheckpoint", "VerifyChain", "Backup"}
    )

    def __init__(self, servicer: object, hub: NoticeHub) -> None:
        self._servicer = servicer
        self._hub = hub

    def __getattr__(self, name: str) -> Any:
        impl = getattr(self._servicer, name)
        if name in self.READ_ONLY:
            return impl

        async def settled(request: Any, context: Context) -> Any:
            try:
                return await impl(request, context)
            finally:
                await self._hub.settle()

        return settled


class Acknowledging:
    """The writer's SubmissionService: before an append is answered, the position it
    reached is shared with the followers (acknowledged.py), whose reads then wait for it."""

    def __init__(self, servicer: object, acknowledged: AcknowledgedPosition) -> None:
        self._servicer = servicer
        self._acknowledged = acknowledged

    def __getattr__(self, name: str) -> Any:
        impl = getattr(self._servicer, name)
        acknowledged = self._acknowledged
        if name == "Append":

            async def append(request: Any, context: Context) -> Any:
                response = await impl(request, context)
                acknowledged.raise_to(_newest(response))
                return response

            return append
        if name != "AppendStream":
            return impl

        async def stream(requests: Any, context: Context) -> AsyncIterator[Any]:
            async for response in impl(requests, context):
                acknowledged.raise_to(_newest(response))
                yield response

        return stream


def _newest(response: submission_pb2.AppendResponse) -> int:
    return max((result.position for result in response.results), default=0)


class LeadTrailServer:
    """One store served over gRPC; ``start`` then ``stop`` (or ``serve_until``).

    With a ``role`` it is one worker of ``leadtrail serve --workers N`` (worker_role.py):
    the writer also serves its followers on a private socket; a follower reads the
    store from disk and forwards appends and administration to the writer."""

    def __init__(self, config: ServerConfig, role: WorkerRole | None = None) -> None:
        self.config = config
        self.role = role
        self.port = 0
        self._server: grpc.aio.Server | None = None
        self._private: grpc.aio.Server | None = None
        self._store: ServedStore | None = None
        self._health = HealthServicer()
        self._hub: NoticeHub | None = None
        self._link: WriterLink | None = None
        self._frames: FrameLink | None = None
        self._acknowledged: AcknowledgedPosition | None = None
        self._following: asyncio.Task[None] | None = None
        self._alerting: Alerting | None = None
        self._webhooks: Webhooks | None = None
        self._http: HttpListener | None = None
        self._sinks: Sinks | None = None
        self._exports: ExportScheduler | None = None

    async def start(self) -> None:
        config = self.config
        credentials = server_credentials(config)
        try:
            webhook_policy = WebhookPolicy.from_environment()
        except WebhookPolicyError as e:
            raise StartupError(str(e)) from None
        try:
            sink_policy = SinkPolicy.from_environment()
        except SinkPolicyError as e:
            raise StartupError(str(e)) from None
        for root in config.sink_files_roots:
            if not os.path.isabs(root) or not os.path.isdir(root):
                raise StartupError(f"--sink-files-root {root!r}: not an absolute path of a directory")
        keys = KeyStore(config.data)
        try:
            configured = keys.configured()
        except KeyStoreError as e:
            raise StartupError(f"API keys: {e}") from None
        host, port = check_listen(config.listen, config.insecure, credentials is not None, configured)
        if config.http != "off":  # before anything is opened or bound
            check_listen(config.http, config.insecure, credentials is not None, configured, option="--http")
        options = Options(
            fsync=FsyncPolicy.parse(config.fsync),
            quarantine=config.quarantine,
            max_events_per_append=config.max_events_per_request,
            max_snapshot_bytes=config.max_snapshot_bytes,
            checkpoints=True,
            checkpoint_interval_s=config.checkpoint_interval_s,
            max_open_segments=config.max_open_segments,
        )
        reads = ThreadPoolExecutor(max_workers=4, thread_name_prefix="leadtrail-read")
        loop = asyncio.get_running_loop()
        role = self.role
        following = role is not None and not role.writer
        if following:
            assert role is not None
            event_log, notices, opened = await self._open_following(role, options, reads)
        else:
            # Opening recovers the log and indexes its tail: disk work, off the loop.
            event_log = await self._open_writing(options, reads)
        ingest = ThreadPoolExecutor(max_workers=2, thread_name_prefix="leadtrail-ingest")
        try:
            fingerprints = await loop.run_in_executor(reads, Fingerprints, config.data, options.files)
        except (OSError, StorageError) as e:
            raise StartupError(f"fingerprint key: {e}") from None
        feed = Feed(event_log.last_position)
        store = ServedStore(event_log, reads, feed, ingest, keys, fingerprints)
        store.operator_account = config.operator_account
        self._store = store
        if following:
            assert self._link is not None
            store.audit = ReadAudit(self._link)  # records of reads here are written by the writer
            followed = Followed(event_log.last_position)
            self._following = asyncio.create_task(
                follow_writer(self._link, notices, event_log, feed, reads, followed, opened)
            )
        else:
            try:
                store.rules = await loop.run_in_executor(reads, RuleBook, config.data)
            except RuleBookError as e:
                raise StartupError(f"alert rules: {e}") from None
            try:
                book = await loop.run_in_executor(reads, SinkBook, config.data)
            except SinkBookError as e:
                raise StartupError(f"sinks: {e}") from None
            store.sinks = Sinks(store, book, config.data, sink_policy, config.sink_files_roots)
            try:
                jobs = await loop.run_in_executor(reads, JobBook, config.data)
            except JobBookError as e:
                raise StartupError(f"export jobs: {e}") from None
            self._exports = store.exports = ExportScheduler(store, jobs)
            hub = self._hub = NoticeHub(event_log) if role is not None else None
            if role is not None:  # made before the followers can look for it
                self._acknowledged = AcknowledgedPosition(role.acknowledged_file, writable=True)

            def published(events: list[Event], notice: Any) -> None:  # on the loop
                store.feed.publish(events)
                if hub is not None:
                    hub.publish(notice)

            def committed(events: list[Event]) -> None:  # on the writer thread
                # One wake of the loop a group: each wake lets go of the GIL the writer needs.
                # The notice is made here, where the segments agree with the position.
                notice = hub.notice() if hub is not None else None
                loop.call_soon_threadsafe(published, events, notice)

            event_log.add_commit_listener(committed)
        gate = store.gate = Gate(store.keys)  # one gate: one rate budget per key across every service
        server = grpc.aio.server(
            interceptors=[ReflectionGate(gate)],
            options=[
                ("grpc.max_receive_message_length", config.max_message_bytes),
                ("grpc.max_send_message_length", config.max_message_bytes),
                # Workers share the port; the kernel spreads connections over them.
                ("grpc.so_reuseport", 1 if role is not None else 0),
            ],
        )
        private: list[grpc.GenericRpcHandler[Any, Any]] = []
        made = servicers(store)
        for servicer, module in made:
            (service,) = module.DESCRIPTOR.services_by_name.values()
            if following and service.full_name in FORWARDED:
                assert self._link is not None
                if self._frames is None:
                    self._frames = FrameLink(self._link.channel)
                handler = forwarded(self._link.channel, service, self._frames, BATCHED)
                server.add_generic_rpc_handlers((handler,))
                continue
            if self._hub is not None and module is admin_pb2:
                servicer = SettledAdmin(servicer, self._hub)
            if self._acknowledged is not None and module is submission_pb2:
                servicer = Acknowledging(servicer, self._acknowledged)
            if following and module is query_pb2:
                assert self._acknowledged is not None
                servicer = CaughtUpQuery(servicer, self._acknowledged, followed)
            if following and module is stream_pb2:
                assert self._link is not None
                servicer = SyncedStream(servicer, self._link, followed)
            handler = _handlers(servicer, service, gate)
            server.add_generic_rpc_handlers((handler,))
            if service.full_name in FORWARDED:
                private.append(handler)
        if self._hub is not None and role is not None:
            frames = FrameService(private).handler(FRAMES_SERVICE, FRAMES_METHOD)
            await self._serve_followers(role, [*private, self._hub.handler(event_log.submit), frames])
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        health_name = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
        reflection.enable_server_reflection((*SERVICE_NAMES, health_name, reflection.SERVICE_NAME), server)
        try:
            if credentials is None:
                self.port = server.add_insecure_port(f"{host}:{port}")
            else:
                self.port = server.add_secure_port(f"{host}:{port}", credentials)
        except RuntimeError as e:
            raise StartupError(f"--listen {config.listen}: cannot bind ({e})") from e
        self._server = server
        await server.start()
        if store.rules is not None:  # the writer: the durable consumers run here
            alerting = self._alerting = store.alerting = Alerting(store, store.rules)
            webhooks = self._webhooks = Webhooks(store, store.rules, webhook_policy)
            try:
                await alerting.start()
                await webhooks.start()
                if store.sinks is not None:
                    self._sinks = store.sinks
                    await store.sinks.start()
            except PositionFileError as e:
                raise StartupError(f"durable consumer: {e}") from None
        if self._exports is not None:  # the writer: runs missed or cut short are made now
            await self._exports.start()
        if config.http != "off" and not following:
            # The console calls the gRPC port's own servicers (the writer's: a follower serves no HTTP).
            console = ConsoleServices(
                queries=next(s for s, _ in made if isinstance(s, QueryService)),
                streams=next(s for s, _ in made if isinstance(s, StreamService)),
                alerts=next(s for s, _ in made if isinstance(s, AlertService)),
            )
            self._http = HttpListener(
                config.http,
                store,
                self._alerting,
                tls_cert=config.tls_cert,
                tls_key=config.tls_key,
                services=console,
            )
            try:
                await self._http.start()
            except HttpListenerError as e:
                raise StartupError(str(e)) from None
        for name in ("", *SERVICE_NAMES):
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)

    async def _open_writing(self, options: Options, reads: ThreadPoolExecutor) -> EventLog:
        loop = asyncio.get_running_loop()
        if self.role is None:
            return await loop.run_in_executor(reads, EventLog.open, self.config.data, options)
        # A writer started again after its supervisor was killed may find the killed
        # writer's lock still held for a moment, while the kernel ends that process.
        deadline = loop.time() + LOCK_WAIT_SECONDS
        while True:
            try:
                return await loop.run_in_executor(reads, EventLog.open, self.config.data, options)
            except DataDirectoryError as e:
                if "in use" not in str(e) or loop.time() > deadline:
                    raise
            await asyncio.sleep(0.1)

    async def _open_following(
        self, role: WorkerRole, options: Options, reads: ThreadPoolExecutor
    ) -> tuple[EventLog, AsyncIterator[Any], CommitNotice]:
        """A follower's store, opened from the writer's first notice."""
        link = self._link = WriterLink(role.private_socket, self.config.max_message_bytes)
        notices = link.notices()
        try:
            notice, _ = await asyncio.wait_for(anext(notices), FIRST_NOTICE_SECONDS)
        except (TimeoutError, StopAsyncIteration):
            raise StartupError(
                f"worker {role.index}: the writer did not answer on its private socket"
            ) from None
        self._acknowledged = AcknowledgedPosition(role.acknowledged_file, writable=False)
        read_only = dataclasses.replace(options, read_only=True)
        loop = asyncio.get_running_loop()
        event_log = await loop.run_in_executor(
            reads, EventLog.open_follower, self.config.data, notice, read_only
        )
        return event_log, notices, notice

    async def _serve_followers(
        self, role: WorkerRole, handlers: list[grpc.GenericRpcHandler[Any, Any]]
    ) -> None:
        """The writer's private server: the forwarded services and the notices."""
        private = self._private = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", self.config.max_message_bytes),
                ("grpc.max_send_message_length", self.config.max_message_bytes),
            ]
        )
        private.add_generic_rpc_handlers(handlers)
        if os.path.exists(role.private_socket):
            os.remove(role.private_socket)  # a killed writer's socket
        private.add_insecure_port(f"unix:{role.private_socket}")
        await private.start()

    @property
    def address(self) -> str:
        host = self.config.listen.rpartition(":")[0]
        return f"{host}:{self.port}"

    @property
    def http_address(self) -> str | None:
        """HOST:PORT of the HTTP listener, None when there is none (off, or a follower)."""
        if self._http is None:
            return None
        return f"{self._http.address.rpartition(':')[0]}:{self._http.port}"

    @property
    def log(self) -> EventLog:
        assert self._store is not None
        return self._store.log

    async def stop(self, grace: float = SHUTDOWN_GRACE_SECONDS) -> None:
        await self._health.enter_graceful_shutdown()  # NOT_SERVING for every service
        store = self._store
        if store is not None:
            store.closing = True
            store.feed.close()
        if self._hub is not None:
            self._hub.close()
        if self._http is not None:
            await self._http.stop()
        if self._server is not None:
            await self._server.stop(grace)
        if self._sinks is not None:
            await self._sinks.stop()
        if self._webhooks is not None:
            await self._webhooks.stop()
        if self._alerting is not None:  # after the last append it may have to evaluate
            await self._alerting.stop()
        if self._exports is not None:  # a run cut short here is redone at the next start
            await self._exports.stop()
        if self._private is not None:
            await self._private.stop(grace)
        if self._following is not None:
            self._following.cancel()
        if self._frames is not None:
            await self._frames.close()
        if self._acknowledged is not None:
            self._acknowledged.close()
        if self._link is not None:
            await self._link.close()
        if store is not None:
            # Every queued group is written and fsynced before the log closes.
            store.ingest.shutdown(wait=True)
            await asyncio.get_running_loop().run_in_executor(None, store.log.close)
            store.reads.shutdown(wait=True)


Announce = Callable[[str], None]


def _print_ready(line: str) -> None:
    print(line, flush=True)


GC_THRESHOLDS = (20_000, 50, 100)
"""The cyclic collector's thresholds while serving. Python's defaults (700, 10, 10) suit short
scripts; a server allocates a few container objects per event (requests, events, futures,
feed entries) and holds many long-lived ones (indexes of names, the alert evaluator's windows
and lead sums, the live feed), so with the defaults it walked its whole heap often enough to
cost 13% of its CPU under batch ingest (server CPU per event without rules: 148 -> 128 us).
Cycles are still collected, in larger, rarer passes; memory held by garbage in cycles waits
a little longer to be freed."""


def _collect_garbage_less_often() -> None:
    """Once the server is up. Not ``gc.freeze()`` as well: with nothing left counted as long
    lived, Python 3.11 then makes every third-generation chance a full collection (measured:
    slower than the thresholds alone)."""
    gc.set_threshold(*GC_THRESHOLDS)


async def _serve(config: ServerConfig, role: WorkerRole | None, announce: Announce) -> int:
    server = LeadTrailServer(config, role)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await server.start()
    except BaseException:
        await server.stop(0)
        raise
    _collect_garbage_less_often()
    if role is None or role.writer:
        for line in server.log.quarantined():
            print(f"leadtrail: quarantined: {line}", file=sys.stderr, flush=True)
    announce(
        f"leadtrail: serving on {server.address} (data {config.data}, "
        f"last position {server.log.last_position}, fsync {server.log.options.fsync}, "
        f"{'mutual TLS' if config.tls_client_ca else 'TLS' if config.tls_cert else 'plaintext'})"
        + (f"; http on {server.http_address}" if server.http_address else "")
    )
    await stop.wait()
    if role is None:
        print("leadtrail: shutting down", file=sys.stderr, flush=True)
    await server.stop()
    return 0


def serve(
    *,
    data: str = "./leadtrail-data",
    listen: str = "127.0.0.1:50051",
    fsync: str = "always",
    quarantine: bool = False,
    insecure: bool = False,
    tls_cert: str | None = None,
    tls_key: str | None = None,
    tls_client_ca: str | None = None,
    http: str = "off",
    sink_files_roots: tuple[str, ...] = (),
    operator_account: str = "default",
    checkpoint_interval_s: float = 10.0,
    max_open_segments: int = DEFAULT_MAX_OPEN_SEGMENTS,
) -> int:
    """Run the server until SIGTERM/SIGINT; returns the process exit status."""
    config = ServerConfig(
        data=data,
        listen=listen,
        fsync=fsync,
        quarantine=quarantine,
        insecure=insecure,
        tls_cert=tls_cert,
        tls_key=tls_key,
        tls_client_ca=tls_client_ca,
        http=http,
        sink_files_roots=tuple(sink_files_roots),
        operator_account=operator_account,
        checkpoint_interval_s=checkpoint_interval_s,
        max_open_segments=max_open_segments,
    )
    return run(config)


def run(config: ServerConfig, role: WorkerRole | None = None, announce: Announce = _print_ready) -> int:
    """Serve ``config`` until SIGTERM/SIGINT, as one process or as worker ``role``;
    ``announce`` gets the ready line. Returns the process exit status."""
    logging.basicConfig(level=logging.WARNING, format="leadtrail: %(levelname)s %(message)s")
    try:
        return asyncio.run(_serve(config, role, announce))
    except CorruptionError as e:
        print(
            f"leadtrail: refusing to start: the log is damaged: {'; '.join(e.problems)} "
            "(start with --quarantine to move the damaged range aside)",
            file=sys.stderr,
        )
        return 1
    except (StartupError, StorageError) as e:
        print(f"leadtrail: {e}", file=sys.stderr)
        return 1
