"""The asyncio client (grpc.aio) and its subscription.

Same methods, arguments and results as ``Client``; the requests and results are
built by the same functions.
"""

from __future__ import annotations

import asyncio
import io
import os
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Generator, Iterable, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Self, Unpack, overload

import grpc
import grpc.aio

from leadtrail.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    alerts_pb2,
    alerts_pb2_grpc,
    exports_pb2,
    exports_pb2_grpc,
    query_pb2,
    query_pb2_grpc,
    sinks_pb2,
    sinks_pb2_grpc,
    stream_pb2,
    stream_pb2_grpc,
    submission_pb2_grpc,
)

from ._client import BinaryWriter
from ._convert import (
    aggregate_row_from_proto,
    alert_from_proto,
    alert_rule_from_proto,
    alert_rule_to_proto,
    append_request,
    append_result_from_proto,
    erasure_report_from_proto,
    event_from_proto,
    export_file_from_proto,
    export_job_from_proto,
    export_job_to_proto,
    field_policy_from_proto,
    field_policy_to_proto,
    lead_match_from_proto,
    retention_policy_from_proto,
    retention_policy_to_proto,
    retention_report_from_proto,
    signed_checkpoint_from_proto,
    sink_from_proto,
    sink_status_from_proto,
    sink_to_proto,
    stats_from_proto,
    timeline_from_proto,
    to_timestamp,
    verify_report_from_proto,
)
from ._errors import handle_rpc_error, translated_rpc_errors
from ._model import (
    AggregateRow,
    Alert,
    AlertRule,
    AppendResult,
    ErasureReport,
    Event,
    ExportFile,
    ExportJob,
    FieldPolicy,
    GroupBy,
    LeadMatch,
    RetentionPolicy,
    RetentionReport,
    SignedCheckpoint,
    Sink,
    SinkStatus,
    Stats,
    Timeline,
    VerifyReport,
)
from ._pages import joined_timeline
from ._receipts import receipt_holds
from ._requests import (
    DEFAULT_OPTIONS,
    DEFAULT_TARGET,
    EventFilterArgs,
    ExportFormat,
    aggregate_request,
    call_metadata,
    export_request,
    find_leads_request,
    query_request,
    subscribe_request,
    timeline_request,
)
from ._resume import Backoff, SubscriptionCursor, SubscriptionItem, is_reconnectable
from ._warnings import warn_of_conflicts


class AsyncClient:
    """The asyncio twin of ``Client``: the same methods as coroutines.

    ``query``, ``export`` and ``subscribe`` return async iterators. Create it
    inside the event loop that uses it.
    """

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        api_key: str | None = None,
        timeout: float | None = 30.0,
        options: Sequence[tuple[str, Any]] = DEFAULT_OPTIONS,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        self.target = target
        self.timeout = timeout
        self.secure = credentials is not None
        """Whether the channel uses TLS."""
        self._metadata = call_metadata(api_key)
        if credentials is None:
            self._channel = grpc.aio.insecure_channel(target, options=list(options))
        else:
            self._channel = grpc.aio.secure_channel(target, credentials, options=list(options))
        self._submission = submission_pb2_grpc.SubmissionServiceStub(self._channel)
        self._query = query_pb2_grpc.QueryServiceStub(self._channel)
        self._stream = stream_pb2_grpc.StreamServiceStub(self._channel)
        self._admin = admin_pb2_grpc.AdminServiceStub(self._channel)
        self._alerts = alerts_pb2_grpc.AlertServiceStub(self._channel)
        self._sinks = sinks_pb2_grpc.SinkServiceStub(self._channel)
        self._exports = exports_pb2_grpc.ExportServiceStub(self._channel)
        self._subscriptions: set[AsyncSubscription] = set()
        self._closed = False

    async def close(self) -> None:
        """Stop the open subscriptions and close the channel; a second call does nothing."""
        if self._closed:
            return
        self._closed = True
        for subscription in list(self._subscriptions):
            subscription.stop()
        await self._channel.close(None)

    @property
    def channel(self) -> grpc.aio.Channel:
        """The gRPC channel, for stubs of services this client does not wrap."""
        return self._channel

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        """What every call sends: the API key as ``authorization: Bearer <key>``, if any."""
        return self._metadata

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # -- writing -----------------------------------------------------------------------------------

    @overload
    async def append(self, event_or_events: Event) -> AppendResult: ...

    @overload
    async def append(self, event_or_events: Iterable[Event]) -> list[AppendResult]: ...

    async def append(self, event_or_events: Event | Iterable[Event]) -> AppendResult | list[AppendResult]:
        """Append one event, or several in one request (all stored or none)."""
        single = isinstance(event_or_events, Event)
        events = [event_or_events] if isinstance(event_or_events, Event) else list(event_or_events)
        if not events:
            return []
        request = append_request(events)
        with translated_rpc_errors(secure=self.secure):
            response = await self._submission.Append(request, timeout=self.timeout, metadata=self._metadata)
        results = [append_result_from_proto(result) for result in response.results]
        warn_of_conflicts(results, stacklevel=2)
        return results[0] if single else results

    # -- reading -----------------------------------------------------------------------------------

    async def get(self, event_id: str) -> Event:
        request = query_pb2.GetEventRequest(id=event_id, json_snapshots=True)
        with translated_rpc_errors(secure=self.secure):
            message = await self._query.GetEvent(request, timeout=self.timeout, metadata=self._metadata)
        return event_from_proto(message)

    async def timeline(self, lead_id: str, *, page_size: int = 0, as_of: datetime | None = None) -> Timeline:
        """See ``Client.timeline``: all pages fetched and joined."""
        pages = self.timeline_pages(lead_id, page_size=page_size, as_of=as_of)
        return joined_timeline([page async for page in pages])

    def timeline_pages(
        self, lead_id: str, *, page_size: int = 0, as_of: datetime | None = None
    ) -> AsyncIterator[Timeline]:
        """See ``Client.timeline_pages``; iterate with ``async for``."""
        return self._timeline_pages(timeline_request(lead_id, page_size=page_size, as_of=as_of))

    async def find_leads(
        self,
        *,
        email: str | None = None,
        phone: str | None = None,
        field: str | None = None,
        value: str | None = None,
    ) -> list[LeadMatch]:
        """See ``Client.find_leads``."""
        request = find_leads_request(email=email, phone=phone, field=field, value=value)
        with translated_rpc_errors(secure=self.secure):
            response = await self._query.FindLeads(request, timeout=self.timeout, metadata=self._metadata)
        return [lead_match_from_proto(match) for match in response.leads]

    async def _timeline_pages(self, request: query_pb2.GetTimelineRequest) -> AsyncIterator[Timeline]:
        while True:
            with translated_rpc_errors(secure=self.secure):
                message = await self._query.GetTimeline(
                    request, timeout=self.timeout, metadata=self._metadata
                )
            yield timeline_from_proto(message)
            if not message.next_page_token:
                return
            request.page_token = message.next_page_token

    def query(
        self,
        *,
        descending: bool = False,
        include_lead: bool = False,
        page_size: int = 100,
        **filter: Unpack[EventFilterArgs],
    ) -> AsyncIterator[Event]:
        """Every matching event ordered by (timestamp, position), fetched a page at a time."""
        request = query_request(filter, descending=descending, include_lead=include_lead, page_size=page_size)
        return self._pages(request)

    async def _pages(self, request: query_pb2.QueryEventsRequest) -> AsyncIterator[Event]:
        while True:
            with translated_rpc_errors(secure=self.secure):
                response = await self._query.QueryEvents(
                    request, timeout=self.timeout, metadata=self._metadata
                )
            for message in response.events:
                yield event_from_proto(message)
            if not response.next_page_token:
                return
            request.page_token = response.next_page_token

    async def query_page(
        self,
        *,
        descending: bool = False,
        include_lead: bool = False,
        page_size: int = 100,
        page_token: str = "",
        **filter: Unpack[EventFilterArgs],
    ) -> tuple[list[Event], str]:
        request = query_request(
            filter,
            descending=descending,
            include_lead=include_lead,
            page_size=page_size,
            page_token=page_token,
        )
        with translated_rpc_errors(secure=self.secure):
            response = await self._query.QueryEvents(request, timeout=self.timeout, metadata=self._metadata)
        return [event_from_proto(message) for message in response.events], response.next_page_token

    def export(
        self, *, format: ExportFormat = "jsonl", fields: Iterable[str] = (), **filter: Unpack[EventFilterArgs]
    ) -> AsyncIterator[bytes]:
        request = export_request(filter, format=format, fields=fields)
        return self._export(request)

    async def _export(self, request: query_pb2.ExportRequest) -> AsyncIterator[bytes]:
        call = self._query.Export(request, metadata=self._metadata)
        try:
            with translated_rpc_errors(secure=self.secure):
                async for chunk in call:
                    yield chunk.data
        finally:
            call.cancel()

    async def export_to(
        self,
        destination: str | os.PathLike[str] | BinaryWriter,
        *,
        format: ExportFormat = "jsonl",
        fields: Iterable[str] = (),
        **filter: Unpack[EventFilterArgs],
    ) -> int:
        chunks = self.export(format=format, fields=fields, **filter)
        if isinstance(destination, str | os.PathLike):
            with open(destination, "wb") as file:
                return await _write_all(chunks, file)
        return await _write_all(chunks, destination)

    async def aggregate(
        self,
        group_by: str | GroupBy | Iterable[str | GroupBy] = ("type",),
        **filter: Unpack[EventFilterArgs],
    ) -> list[AggregateRow]:
        request = aggregate_request(filter, group_by)
        with translated_rpc_errors(secure=self.secure):
            response = await self._query.Aggregate(request, timeout=self.timeout, metadata=self._metadata)
        return [aggregate_row_from_proto(row, request.group_by) for row in response.rows]

    def subscribe(
        self,
        *,
        after_position: int | None = None,
        from_start: bool = False,
        from_end: bool = False,
        from_recorded_at: datetime | None = None,
        include_checkpoints: bool = False,
        reconnect: bool = True,
        **filter: Unpack[EventFilterArgs],
    ) -> AsyncSubscription:
        """See ``Client.subscribe``; iterate with ``async for``."""
        request = subscribe_request(
            filter,
            after_position=after_position,
            from_start=from_start,
            from_end=from_end,
            from_recorded_at=from_recorded_at,
        )
        subscription = AsyncSubscription(
            self._stream,
            SubscriptionCursor(request, include_checkpoints),
            metadata=self._metadata,
            reconnect=reconnect,
            secure=self.secure,
            on_close=self._subscriptions.discard,
        )
        self._subscriptions.add(subscription)
        return subscription

    # -- administration ----------------------------------------------------------------------------

    async def stats(self) -> Stats:
        with translated_rpc_errors(secure=self.secure):
            message = await self._admin.GetStats(
                admin_pb2.GetStatsRequest(), timeout=self.timeout, metadata=self._metadata
            )
        return stats_from_proto(message)

    async def verify(self) -> VerifyReport:
        with translated_rpc_errors(secure=self.secure):
            message = await self._admin.Verify(admin_pb2.VerifyRequest(), metadata=self._metadata)
        return verify_report_from_proto(message)

    async def set_retention_policy(
        self,
        account_id: str,
        max_age_days: int = 0,
        legal_hold: bool = False,
        *,
        pii_max_age_days: int = 0,
        secret_max_age_days: int = 0,
        max_age_seconds: int = 0,
    ) -> RetentionPolicy:
        request = retention_policy_to_proto(
            RetentionPolicy(
                account_id, max_age_days, legal_hold, pii_max_age_days, secret_max_age_days, max_age_seconds
            )
        )
        with translated_rpc_errors(secure=self.secure):
            response = await self._admin.SetRetentionPolicy(
                request, timeout=self.timeout, metadata=self._metadata
            )
        return retention_policy_from_proto(response.policy)

    async def apply_retention(self, now: datetime | None = None) -> RetentionReport:
        request = admin_pb2.ApplyRetentionRequest()
        if now is not None:
            request.now.CopyFrom(to_timestamp(now))
        with translated_rpc_errors(secure=self.secure):
            response = await self._admin.ApplyRetention(request, metadata=self._metadata)
        return retention_report_from_proto(response)

    async def erase_lead(self, lead_id: str, reason: str = "") -> ErasureReport:
        """Erase a lead's personal data from every event recorded so far (admin keys)."""
        request = admin_pb2.EraseLeadRequest(lead_id=lead_id, reason=reason)
        with translated_rpc_errors(secure=self.secure):
            response = await self._admin.EraseLead(request, timeout=None, metadata=self._metadata)
        return erasure_report_from_proto(response)

    async def set_field_policy(
        self, *, secret: Sequence[str] = (), pii: Sequence[str] = (), plain: Sequence[str] = ()
    ) -> FieldPolicy:
        """Replace the caller's account field policy; returns it as stored."""
        request = field_policy_to_proto(FieldPolicy("", tuple(secret), tuple(pii), tuple(plain)))
        with translated_rpc_errors(secure=self.secure):
            response = await self._admin.SetFieldPolicy(
                request, timeout=self.timeout, metadata=self._metadata
            )
        return field_policy_from_proto(response)

    async def field_policy(self) -> FieldPolicy:
        """The caller's account field policy (empty: the built-in classes only)."""
        with translated_rpc_errors(secure=self.secure):
            response = await self._admin.GetFieldPolicy(
                admin_pb2.GetFieldPolicyRequest(), timeout=self.timeout, metadata=self._metadata
            )
        return field_policy_from_proto(response)

    # -- integrity -------------------------------------------------------------------------------

    async def checkpoint(self, position: int = 0) -> SignedCheckpoint:
        """The chain hash at ``position`` (0: the latest event), signed by the server's store
        (any role). ``NotFoundError`` when the store holds no event there."""
        request = admin_pb2.GetCheckpointRequest(position=position)
        with translated_rpc_errors(secure=self.secure):
            message = await self._admin.GetCheckpoint(request, timeout=self.timeout, metadata=self._metadata)
        return signed_checkpoint_from_proto(message)

    async def verify_chain(self, from_position: int = 0, from_chain_hash: bytes = b"") -> VerifyReport:
        """Walk the hash chain from the log's first event, or from ``from_position`` trusting
        ``from_chain_hash`` there (a checkpoint kept earlier), checking every digest and signed
        record; ``first_bad_position`` names where anything was changed (0: nothing). Admin
        keys of the whole account."""
        request = admin_pb2.VerifyChainRequest(from_position=from_position, from_chain_hash=from_chain_hash)
        with translated_rpc_errors(secure=self.secure):
            message = await self._admin.VerifyChain(request, timeout=None, metadata=self._metadata)
        return verify_report_from_proto(message)

    async def verify_receipt(self, position: int, chain_hash: bytes, public_key: bytes | None = None) -> bool:
        """Whether an append's receipt (``AppendResult.position`` and ``.chain_hash``) matches
        the chain the server signs at that position today: False when the hashes differ (the
        log up to there is not the one the receipt was given for). The checkpoint's signature
        is checked first, under ``public_key`` when given (the store's key, kept from before:
        ``leadtrail keys public``), else under the key the server names; one that does not
        hold raises ``SignatureError`` (the server or its key is not who it should be).
        ``NotFoundError`` when the store holds no event at ``position`` any more."""
        checkpoint = await self.checkpoint(position)
        return receipt_holds(checkpoint, position, chain_hash, public_key)

    # -- alerts ------------------------------------------------------------------------------------

    async def set_alert_rule(self, rule: AlertRule | str, /, **fields: Any) -> AlertRule:
        """Create or replace an alert rule of the caller's account (admin keys); returns it as
        stored, without its webhook secret. Pass an ``AlertRule``, or its name and fields:
        ``set_alert_rule("fails", kind="rate", filter=EventFilter("recipient.failed"), ...)``."""
        if isinstance(rule, str):
            rule = AlertRule(rule, **fields)
        elif fields:
            raise TypeError("set_alert_rule: pass an AlertRule or a name with fields, not both")
        with translated_rpc_errors(secure=self.secure):
            response = await self._alerts.SetAlertRule(
                alert_rule_to_proto(rule), timeout=self.timeout, metadata=self._metadata
            )
        return alert_rule_from_proto(response)

    async def list_alert_rules(self) -> list[AlertRule]:
        """The caller's account's alert rules, by name (admin keys)."""
        with translated_rpc_errors(secure=self.secure):
            response = await self._alerts.ListAlertRules(
                alerts_pb2.ListAlertRulesRequest(), timeout=self.timeout, metadata=self._metadata
            )
        return [alert_rule_from_proto(r) for r in response.rules]

    async def delete_alert_rule(self, name: str) -> None:
        """Delete a rule (admin keys); ``NotFoundError`` when the account has none of that name."""
        with translated_rpc_errors(secure=self.secure):
            await self._alerts.DeleteAlertRule(
                alerts_pb2.DeleteAlertRuleRequest(name=name), timeout=self.timeout, metadata=self._metadata
            )

    async def list_alerts(self, firing_only: bool = False, rule: str = "", limit: int = 0) -> list[Alert]:
        """The account's alerts, newest first: firing now and recently resolved (reader keys and
        up); ``limit`` 0 is the server's default and maximum, 1,000."""
        request = alerts_pb2.ListAlertsRequest(firing_only=firing_only, rule=rule, limit=limit)
        with translated_rpc_errors(secure=self.secure):
            response = await self._alerts.ListAlerts(request, timeout=self.timeout, metadata=self._metadata)
        return [alert_from_proto(a) for a in response.alerts]

    # -- sinks -------------------------------------------------------------------------------------

    async def set_sink(self, sink: Sink | str, /, **fields: Any) -> Sink:
        """Create or replace a sink of the caller's account (admin keys); returns it as stored,
        without its webhook secret. Pass a ``Sink``, or its name and fields:
        ``set_sink("crm", target=WebhookTarget("https://crm.example/hook", secret="..."))``."""
        if isinstance(sink, str):
            sink = Sink(sink, **fields)
        elif fields:
            raise TypeError("set_sink: pass a Sink or a name with fields, not both")
        with translated_rpc_errors(secure=self.secure):
            response = await self._sinks.SetSink(
                sink_to_proto(sink), timeout=self.timeout, metadata=self._metadata
            )
        return sink_from_proto(response)

    async def list_sinks(self) -> list[Sink]:
        """The caller's account's sinks, by name (admin keys)."""
        with translated_rpc_errors(secure=self.secure):
            response = await self._sinks.ListSinks(
                sinks_pb2.ListSinksRequest(), timeout=self.timeout, metadata=self._metadata
            )
        return [sink_from_proto(s) for s in response.sinks]

    async def delete_sink(self, name: str) -> None:
        """Delete a sink and its position (admin keys); ``NotFoundError`` when there is none."""
        with translated_rpc_errors(secure=self.secure):
            await self._sinks.DeleteSink(
                sinks_pb2.DeleteSinkRequest(name=name), timeout=self.timeout, metadata=self._metadata
            )

    async def get_sink_status(self, name: str) -> SinkStatus:
        """Where a sink is: delivered position, lag, totals, state, last error (reader keys and up)."""
        with translated_rpc_errors(secure=self.secure):
            response = await self._sinks.GetSinkStatus(
                sinks_pb2.GetSinkStatusRequest(name=name), timeout=self.timeout, metadata=self._metadata
            )
        return sink_status_from_proto(response)

    # -- scheduled exports -------------------------------------------------------------------------

    async def set_export_job(self, job: ExportJob | str, /, **fields: Any) -> ExportJob:
        """Create or replace an export job of the caller's account (admin keys); returns it as
        stored. Pass an ``ExportJob``, or its name and fields:
        ``set_export_job("daily", format="csv", every_s=86400, keep_days=30)``."""
        if isinstance(job, str):
            job = ExportJob(job, **fields)
        elif fields:
            raise TypeError("set_export_job: pass an ExportJob or a name with fields, not both")
        with translated_rpc_errors(secure=self.secure):
            response = await self._exports.SetExportJob(
                export_job_to_proto(job), timeout=self.timeout, metadata=self._metadata
            )
        return export_job_from_proto(response)

    async def list_export_jobs(self) -> list[ExportJob]:
        """The caller's account's export jobs, by name (admin keys)."""
        with translated_rpc_errors(secure=self.secure):
            response = await self._exports.ListExportJobs(
                exports_pb2.ListExportJobsRequest(), timeout=self.timeout, metadata=self._metadata
            )
        return [export_job_from_proto(j) for j in response.jobs]

    async def delete_export_job(self, name: str) -> None:
        """Delete a job and its files (admin keys); ``NotFoundError`` when there is none."""
        with translated_rpc_errors(secure=self.secure):
            await self._exports.DeleteExportJob(
                exports_pb2.DeleteExportJobRequest(name=name), timeout=self.timeout, metadata=self._metadata
            )

    async def run_export_job(self, name: str) -> ExportFile:
        """Run a job now, besides its schedule (admin keys); returns the file it made. A big window
        may take longer than ``timeout``: the run then goes on in the server and its file is
        listed by ``list_export_files`` once complete."""
        with translated_rpc_errors(secure=self.secure):
            response = await self._exports.RunExportJob(
                exports_pb2.RunExportJobRequest(name=name), timeout=self.timeout, metadata=self._metadata
            )
        return export_file_from_proto(response.file)

    async def list_export_files(self, job: str) -> list[ExportFile]:
        """The job's complete files, newest first (analyst keys and up)."""
        with translated_rpc_errors(secure=self.secure):
            response = await self._exports.ListExportFiles(
                exports_pb2.ListExportFilesRequest(job=job), timeout=self.timeout, metadata=self._metadata
            )
        return [export_file_from_proto(f) for f in response.files]

    async def download_export_file(self, job: str, file: str) -> bytes:
        """A file's bytes (analyst keys and up; a job that is not masked: admin keys). The server
        records the download. ``download_export_file_to`` streams a big file to disk instead."""
        out = io.BytesIO()
        await self.download_export_file_to(job, file, out)
        return out.getvalue()

    async def _download(self, request: exports_pb2.DownloadExportFileRequest) -> AsyncIterator[bytes]:
        call = self._exports.DownloadExportFile(request, metadata=self._metadata)
        try:
            with translated_rpc_errors(secure=self.secure):
                async for chunk in call:
                    yield chunk.data
        finally:
            call.cancel()

    async def download_export_file_to(
        self, job: str, file: str, destination: str | os.PathLike[str] | BinaryWriter
    ) -> int:
        """Write a file of a job to a path or a binary file; returns the number of bytes written."""
        chunks = self._download(exports_pb2.DownloadExportFileRequest(job=job, file=file))
        if isinstance(destination, str | os.PathLike):
            with open(destination, "wb") as out:
                return await _write_all(chunks, out)
        return await _write_all(chunks, destination)


async def _write_all(chunks: AsyncIterator[bytes], file: BinaryWriter) -> int:
    written = 0
    async for data in chunks:
        file.write(data)
        written += len(data)
    return written


class _Done:
    """An already-finished awaitable: ``stop()`` works with and without ``await``."""

    def __await__(self) -> Generator[Any, None, None]:
        return
        yield


class AsyncSubscription:
    """The asyncio twin of ``Subscription``: an async iterator and async context manager."""

    def __init__(
        self,
        stub: stream_pb2_grpc.StreamServiceAsyncStub,
        cursor: SubscriptionCursor,
        *,
        metadata: tuple[tuple[str, str], ...],
        reconnect: bool,
        secure: bool = False,
        on_close: Callable[[AsyncSubscription], None] | None = None,
    ) -> None:
        self._stub = stub
        self._cursor = cursor
        self._metadata = metadata
        self._reconnect = reconnect
        self._secure = secure
        self._on_close = on_close
        self._stopped = asyncio.Event()
        self._call: grpc.aio.UnaryStreamCall[stream_pb2.SubscribeRequest, stream_pb2.SubscribeResponse] | None
        # Started now, like the sync subscription: nothing appended after subscribe() is missed.
        self._call = self._open()
        self._items = self._run()

    @property
    def position(self) -> int:
        return self._cursor.position

    @property
    def caught_up(self) -> bool:
        return self._cursor.caught_up

    def __aiter__(self) -> AsyncIterator[SubscriptionItem]:
        # ``async for`` steps the generator itself: no coroutine of ours per item in between.
        return self._items

    async def __anext__(self) -> SubscriptionItem:
        return await anext(self._items)

    def stop(self) -> Awaitable[None]:
        """End the subscription; the iteration stops. May be awaited, need not be."""
        self._stopped.set()
        if self._call is not None:
            self._call.cancel()
        if self._on_close is not None:
            self._on_close(self)
        return _Done()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
        await self._items.aclose()

    def _open(self) -> grpc.aio.UnaryStreamCall[stream_pb2.SubscribeRequest, stream_pb2.SubscribeResponse]:
        return self._stub.Subscribe(self._cursor.request(), metadata=self._metadata)

    async def _run(self) -> AsyncGenerator[SubscriptionItem, None]:
        backoff = Backoff()
        call = self._call
        while not self._stopped.is_set():
            if call is None:
                call = self._call = self._open()
            try:
                async for message in call:
                    backoff.reset()
                    for item in self._cursor.accept(message):
                        if self._stopped.is_set():  # stop() ends delivery mid-batch too
                            return
                        yield item
                if not self._reconnect or self._stopped.is_set():
                    return
            except grpc.RpcError as error:
                if self._stopped.is_set():
                    return
                if not (self._reconnect and is_reconnectable(error)):
                    raise handle_rpc_error(error, secure=self._secure) from error
            except asyncio.CancelledError:
                # grpc.aio reports our own call.cancel() this way; anything else is
                # the task being cancelled and must propagate.
                if self._stopped.is_set():
                    return
                raise
            finally:
                call.cancel()
            call = None
            try:
                await asyncio.wait_for(self._stopped.wait(), backoff.next_delay())
                return
            except TimeoutError:
                pass
