"""The blocking client and its subscription."""

from __future__ import annotations

import io
import os
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Protocol, Self, Unpack, overload

import grpc

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
from ._resume import Backoff, SubscriptionCursor, SubscriptionItem, cancel_call, is_reconnectable
from ._warnings import warn_of_conflicts


class BinaryWriter(Protocol):
    def write(self, data: bytes, /) -> Any: ...


class Client:
    """A blocking LeadTrail client over one gRPC channel; safe to share between threads.

    ``timeout`` (seconds, None for none) bounds every unary call; the streaming
    calls (export, subscribe) run as long as they are read. ``api_key`` is sent
    as ``authorization: Bearer <key>``. Failed calls raise a ``LeadTrailError``
    subclass named after the status code.
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
            self._channel = grpc.insecure_channel(target, options=list(options))
        else:
            self._channel = grpc.secure_channel(target, credentials, options=list(options))
        self._submission = submission_pb2_grpc.SubmissionServiceStub(self._channel)
        self._query = query_pb2_grpc.QueryServiceStub(self._channel)
        self._stream = stream_pb2_grpc.StreamServiceStub(self._channel)
        self._admin = admin_pb2_grpc.AdminServiceStub(self._channel)
        self._alerts = alerts_pb2_grpc.AlertServiceStub(self._channel)
        self._sinks = sinks_pb2_grpc.SinkServiceStub(self._channel)
        self._exports = exports_pb2_grpc.ExportServiceStub(self._channel)
        # Open subscriptions end with the client instead of failing on a closed channel.
        self._subscriptions: weakref.WeakSet[Subscription] = weakref.WeakSet()
        self._closed = False

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for subscription in list(self._subscriptions):
            subscription.stop()
        self._channel.close()

    @property
    def channel(self) -> grpc.Channel:
        """The gRPC channel, for stubs of services this client does not wrap."""
        return self._channel

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        """What every call sends: the API key as ``authorization: Bearer <key>``, if any."""
        return self._metadata

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- writing -----------------------------------------------------------------------------------

    @overload
    def append(self, event_or_events: Event) -> AppendResult: ...

    @overload
    def append(self, event_or_events: Iterable[Event]) -> list[AppendResult]: ...

    def append(self, event_or_events: Event | Iterable[Event]) -> AppendResult | list[AppendResult]:
        """Append one event, or several in one request (all stored or none).

        Durable when this returns. An event whose id is already stored comes back
        with its original position and ``duplicate=True``.
        """
        single = isinstance(event_or_events, Event)
        events = [event_or_events] if isinstance(event_or_events, Event) else list(event_or_events)
        if not events:
            return []
        request = append_request(events)
        with translated_rpc_errors(secure=self.secure):
            response = self._submission.Append(request, timeout=self.timeout, metadata=self._metadata)
        results = [append_result_from_proto(result) for result in response.results]
        warn_of_conflicts(results, stacklevel=2)
        return results[0] if single else results

    # -- reading -----------------------------------------------------------------------------------

    def get(self, event_id: str) -> Event:
        """The event with this id; ``NotFoundError`` when there is none."""
        request = query_pb2.GetEventRequest(id=event_id, json_snapshots=True)
        with translated_rpc_errors(secure=self.secure):
            message = self._query.GetEvent(request, timeout=self.timeout, metadata=self._metadata)
        return event_from_proto(message)

    def timeline(self, lead_id: str, *, page_size: int = 0, as_of: datetime | None = None) -> Timeline:
        """Every event of a lead with its snapshot changes, all pages fetched and joined;
        ``NotFoundError`` for an unknown lead. The store's own records about the lead (such
        as its erasure) are in ``audit``, apart from the steps. With ``as_of``, only the steps
        with ``timestamp <= as_of``: the last step's snapshot is the lead as it was then."""
        return joined_timeline(list(self.timeline_pages(lead_id, page_size=page_size, as_of=as_of)))

    def timeline_pages(
        self, lead_id: str, *, page_size: int = 0, as_of: datetime | None = None
    ) -> Iterator[Timeline]:
        """The lead's timeline a page at a time (``page_size`` steps, 0: the server's 1,000),
        each fetched when the previous one has been taken. ``total_ms`` and
        ``since_previous_ms`` are the whole journey's on every page."""
        return self._timeline_pages(timeline_request(lead_id, page_size=page_size, as_of=as_of))

    def find_leads(
        self,
        *,
        email: str | None = None,
        phone: str | None = None,
        field: str | None = None,
        value: str | None = None,
    ) -> list[LeadMatch]:
        """The leads whose snapshot ever held this personal value, most recently active first:
        ``email`` (case-blind), ``phone`` (digits only), or a ``field`` the account's policy
        classes personal with its ``value``. Give exactly one of the three."""
        request = find_leads_request(email=email, phone=phone, field=field, value=value)
        with translated_rpc_errors(secure=self.secure):
            response = self._query.FindLeads(request, timeout=self.timeout, metadata=self._metadata)
        return [lead_match_from_proto(match) for match in response.leads]

    def _timeline_pages(self, request: query_pb2.GetTimelineRequest) -> Iterator[Timeline]:
        while True:
            with translated_rpc_errors(secure=self.secure):
                message = self._query.GetTimeline(request, timeout=self.timeout, metadata=self._metadata)
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
    ) -> Iterator[Event]:
        """Every matching event ordered by (timestamp, position), fetched a page at a time."""
        request = query_request(filter, descending=descending, include_lead=include_lead, page_size=page_size)
        return self._pages(request)

    def _pages(self, request: query_pb2.QueryEventsRequest) -> Iterator[Event]:
        while True:
            with translated_rpc_errors(secure=self.secure):
                response = self._query.QueryEvents(request, timeout=self.timeout, metadata=self._metadata)
            for message in response.events:
                yield event_from_proto(message)
            if not response.next_page_token:
                return
            request.page_token = response.next_page_token

    def query_page(
        self,
        *,
        descending: bool = False,
        include_lead: bool = False,
        page_size: int = 100,
        page_token: str = "",
        **filter: Unpack[EventFilterArgs],
    ) -> tuple[list[Event], str]:
        """One page of matching events and the token of the next page ("" after the last)."""
        request = query_request(
            filter,
            descending=descending,
            include_lead=include_lead,
            page_size=page_size,
            page_token=page_token,
        )
        with translated_rpc_errors(secure=self.secure):
            response = self._query.QueryEvents(request, timeout=self.timeout, metadata=self._metadata)
        return [event_from_proto(message) for message in response.events], response.next_page_token

    def export(
        self, *, format: ExportFormat = "jsonl", fields: Iterable[str] = (), **filter: Unpack[EventFilterArgs]
    ) -> Iterator[bytes]:
        """The matching events as JSON lines or CSV (``fields`` chooses columns), in chunks."""
        request = export_request(filter, format=format, fields=fields)
        return self._export(request)

    def _export(self, request: query_pb2.ExportRequest) -> Iterator[bytes]:
        call = self._query.Export(request, metadata=self._metadata)
        try:
            with translated_rpc_errors(secure=self.secure):
                for chunk in call:
                    yield chunk.data
        finally:
            # Stops the server's work when the caller abandons the iterator.
            cancel_call(call)

    def export_to(
        self,
        destination: str | os.PathLike[str] | BinaryWriter,
        *,
        format: ExportFormat = "jsonl",
        fields: Iterable[str] = (),
        **filter: Unpack[EventFilterArgs],
    ) -> int:
        """Write an export to a path or a binary file; returns the number of bytes written."""
        chunks = self.export(format=format, fields=fields, **filter)
        if isinstance(destination, str | os.PathLike):
            with open(destination, "wb") as file:
                return _write_all(chunks, file)
        return _write_all(chunks, destination)

    def aggregate(
        self,
        group_by: str | GroupBy | Iterable[str | GroupBy] = ("type",),
        **filter: Unpack[EventFilterArgs],
    ) -> list[AggregateRow]:
        """Count and price sum of the matching events per group.

        ``group_by`` names: "type", "outcome", "flow", "entity", "hour", "day".
        """
        request = aggregate_request(filter, group_by)
        with translated_rpc_errors(secure=self.secure):
            response = self._query.Aggregate(request, timeout=self.timeout, metadata=self._metadata)
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
    ) -> Subscription:
        """Follow the matching events in position order: history from the start point, then live.

        Start at most one of: after ``after_position``, ``from_start``, ``from_end``,
        ``from_recorded_at``; with none, only events appended from now on.
        """
        request = subscribe_request(
            filter,
            after_position=after_position,
            from_start=from_start,
            from_end=from_end,
            from_recorded_at=from_recorded_at,
        )
        subscription = Subscription(
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

    def stats(self) -> Stats:
        with translated_rpc_errors(secure=self.secure):
            message = self._admin.GetStats(
                admin_pb2.GetStatsRequest(), timeout=self.timeout, metadata=self._metadata
            )
        return stats_from_proto(message)

    def verify(self) -> VerifyReport:
        """Check every record of the log; an empty ``problems`` list means a healthy store."""
        with translated_rpc_errors(secure=self.secure):
            message = self._admin.Verify(admin_pb2.VerifyRequest(), timeout=None, metadata=self._metadata)
        return verify_report_from_proto(message)

    def set_retention_policy(
        self,
        account_id: str,
        max_age_days: int = 0,
        legal_hold: bool = False,
        *,
        pii_max_age_days: int = 0,
        secret_max_age_days: int = 0,
        max_age_seconds: int = 0,
    ) -> RetentionPolicy:
        """Store an account's retention policy; returns it as stored. ``max_age_seconds``
        expires events younger than a day (e.g. test traffic); at most one of it and
        ``max_age_days`` is non-zero."""
        request = retention_policy_to_proto(
            RetentionPolicy(
                account_id, max_age_days, legal_hold, pii_max_age_days, secret_max_age_days, max_age_seconds
            )
        )
        with translated_rpc_errors(secure=self.secure):
            response = self._admin.SetRetentionPolicy(request, timeout=self.timeout, metadata=self._metadata)
        return retention_policy_from_proto(response.policy)

    def apply_retention(self, now: datetime | None = None) -> RetentionReport:
        """Remove expired events now; ages are measured against ``now`` (the server's clock if None)."""
        request = admin_pb2.ApplyRetentionRequest()
        if now is not None:
            request.now.CopyFrom(to_timestamp(now))
        with translated_rpc_errors(secure=self.secure):
            response = self._admin.ApplyRetention(request, timeout=None, metadata=self._metadata)
        return retention_report_from_proto(response)

    def erase_lead(self, lead_id: str, reason: str = "") -> ErasureReport:
        """Erase a lead's personal data from every event recorded so far (admin keys)."""
        request = admin_pb2.EraseLeadRequest(lead_id=lead_id, reason=reason)
        with translated_rpc_errors(secure=self.secure):
            response = self._admin.EraseLead(request, timeout=None, metadata=self._metadata)
        return erasure_report_from_proto(response)

    def set_field_policy(
        self, *, secret: Sequence[str] = (), pii: Sequence[str] = (), plain: Sequence[str] = ()
    ) -> FieldPolicy:
        """Replace the caller's account field policy; returns it as stored."""
        request = field_policy_to_proto(FieldPolicy("", tuple(secret), tuple(pii), tuple(plain)))
        with translated_rpc_errors(secure=self.secure):
            response = self._admin.SetFieldPolicy(request, timeout=self.timeout, metadata=self._metadata)
        return field_policy_from_proto(response)

    def field_policy(self) -> FieldPolicy:
        """The caller's account field policy (empty: the built-in classes only)."""
        with translated_rpc_errors(secure=self.secure):
            response = self._admin.GetFieldPolicy(
                admin_pb2.GetFieldPolicyRequest(), timeout=self.timeout, metadata=self._metadata
            )
        return field_policy_from_proto(response)

    # -- integrity -------------------------------------------------------------------------------

    def checkpoint(self, position: int = 0) -> SignedCheckpoint:
        """The chain hash at ``position`` (0: the latest event), signed by the server's store
        (any role). ``NotFoundError`` when the store holds no event there."""
        request = admin_pb2.GetCheckpointRequest(position=position)
        with translated_rpc_errors(secure=self.secure):
            message = self._admin.GetCheckpoint(request, timeout=self.timeout, metadata=self._metadata)
        return signed_checkpoint_from_proto(message)

    def verify_chain(self, from_position: int = 0, from_chain_hash: bytes = b"") -> VerifyReport:
        """Walk the hash chain from the log's first event, or from ``from_position`` trusting
        ``from_chain_hash`` there (a checkpoint kept earlier), checking every digest and signed
        record; ``first_bad_position`` names where anything was changed (0: nothing). Admin
        keys of the whole account."""
        request = admin_pb2.VerifyChainRequest(from_position=from_position, from_chain_hash=from_chain_hash)
        with translated_rpc_errors(secure=self.secure):
            message = self._admin.VerifyChain(request, timeout=None, metadata=self._metadata)
        return verify_report_from_proto(message)

    def verify_receipt(self, position: int, chain_hash: bytes, public_key: bytes | None = None) -> bool:
        """Whether an append's receipt (``AppendResult.position`` and ``.chain_hash``) matches
        the chain the server signs at that position today: False when the hashes differ (the
        log up to there is not the one the receipt was given for). The checkpoint's signature
        is checked first, under ``public_key`` when given (the store's key, kept from before:
        ``leadtrail keys public``), else under the key the server names; one that does not
        hold raises ``SignatureError`` (the server or its key is not who it should be).
        ``NotFoundError`` when the store holds no event at ``position`` any more."""
        checkpoint = self.checkpoint(position)
        return receipt_holds(checkpoint, position, chain_hash, public_key)

    # -- alerts ------------------------------------------------------------------------------------

    def set_alert_rule(self, rule: AlertRule | str, /, **fields: Any) -> AlertRule:
        """Create or replace an alert rule of the caller's account (admin keys); returns it as
        stored, without its webhook secret. Pass an ``AlertRule``, or its name and fields:
        ``set_alert_rule("fails", kind="rate", filter=EventFilter("recipient.failed"), ...)``."""
        if isinstance(rule, str):
            rule = AlertRule(rule, **fields)
        elif fields:
            raise TypeError("set_alert_rule: pass an AlertRule or a name with fields, not both")
        with translated_rpc_errors(secure=self.secure):
            response = self._alerts.SetAlertRule(
                alert_rule_to_proto(rule), timeout=self.timeout, metadata=self._metadata
            )
        return alert_rule_from_proto(response)

    def list_alert_rules(self) -> list[AlertRule]:
        """The caller's account's alert rules, by name (admin keys)."""
        with translated_rpc_errors(secure=self.secure):
            response = self._alerts.ListAlertRules(
                alerts_pb2.ListAlertRulesRequest(), timeout=self.timeout, metadata=self._metadata
            )
        return [alert_rule_from_proto(r) for r in response.rules]

    def delete_alert_rule(self, name: str) -> None:
        """Delete a rule (admin keys); ``NotFoundError`` when the account has none of that name."""
        with translated_rpc_errors(secure=self.secure):
            self._alerts.DeleteAlertRule(
                alerts_pb2.DeleteAlertRuleRequest(name=name), timeout=self.timeout, metadata=self._metadata
            )

    def list_alerts(self, firing_only: bool = False, rule: str = "", limit: int = 0) -> list[Alert]:
        """The account's alerts, newest first: firing now and recently resolved (reader keys and
        up); ``limit`` 0 is the server's default and maximum, 1,000."""
        request = alerts_pb2.ListAlertsRequest(firing_only=firing_only, rule=rule, limit=limit)
        with translated_rpc_errors(secure=self.secure):
            response = self._alerts.ListAlerts(request, timeout=self.timeout, metadata=self._metadata)
        return [alert_from_proto(a) for a in response.alerts]

    # -- sinks -------------------------------------------------------------------------------------

    def set_sink(self, sink: Sink | str, /, **fields: Any) -> Sink:
        """Create or replace a sink of the caller's account (admin keys); returns it as stored,
        without its webhook secret. Pass a ``Sink``, or its name and fields:
        ``set_sink("crm", target=WebhookTarget("https://crm.example/hook", secret="..."))``."""
        if isinstance(sink, str):
            sink = Sink(sink, **fields)
        elif fields:
            raise TypeError("set_sink: pass a Sink or a name with fields, not both")
        with translated_rpc_errors(secure=self.secure):
            response = self._sinks.SetSink(sink_to_proto(sink), timeout=self.timeout, metadata=self._metadata)
        return sink_from_proto(response)

    def list_sinks(self) -> list[Sink]:
        """The caller's account's sinks, by name (admin keys)."""
        with translated_rpc_errors(secure=self.secure):
            response = self._sinks.ListSinks(
                sinks_pb2.ListSinksRequest(), timeout=self.timeout, metadata=self._metadata
            )
        return [sink_from_proto(s) for s in response.sinks]

    def delete_sink(self, name: str) -> None:
        """Delete a sink and its position (admin keys); ``NotFoundError`` when there is none."""
        with translated_rpc_errors(secure=self.secure):
            self._sinks.DeleteSink(
                sinks_pb2.DeleteSinkRequest(name=name), timeout=self.timeout, metadata=self._metadata
            )

    def get_sink_status(self, name: str) -> SinkStatus:
        """Where a sink is: delivered position, lag, totals, state, last error (reader keys and up)."""
        with translated_rpc_errors(secure=self.secure):
            response = self._sinks.GetSinkStatus(
                sinks_pb2.GetSinkStatusRequest(name=name), timeout=self.timeout, metadata=self._metadata
            )
        return sink_status_from_proto(response)

    # -- scheduled exports -------------------------------------------------------------------------

    def set_export_job(self, job: ExportJob | str, /, **fields: Any) -> ExportJob:
        """Create or replace an export job of the caller's account (admin keys); returns it as
        stored. Pass an ``ExportJob``, or its name and fields:
        ``set_export_job("daily", format="csv", every_s=86400, keep_days=30)``."""
        if isinstance(job, str):
            job = ExportJob(job, **fields)
        elif fields:
            raise TypeError("set_export_job: pass an ExportJob or a name with fields, not both")
        with translated_rpc_errors(secure=self.secure):
            response = self._exports.SetExportJob(
                export_job_to_proto(job), timeout=self.timeout, metadata=self._metadata
            )
        return export_job_from_proto(response)

    def list_export_jobs(self) -> list[ExportJob]:
        """The caller's account's export jobs, by name (admin keys)."""
        with translated_rpc_errors(secure=self.secure):
            response = self._exports.ListExportJobs(
                exports_pb2.ListExportJobsRequest(), timeout=self.timeout, metadata=self._metadata
            )
        return [export_job_from_proto(j) for j in response.jobs]

    def delete_export_job(self, name: str) -> None:
        """Delete a job and its files (admin keys); ``NotFoundError`` when there is none."""
        with translated_rpc_errors(secure=self.secure):
            self._exports.DeleteExportJob(
                exports_pb2.DeleteExportJobRequest(name=name), timeout=self.timeout, metadata=self._metadata
            )

    def run_export_job(self, name: str) -> ExportFile:
        """Run a job now, besides its schedule (admin keys); returns the file it made. A big window
        may take longer than ``timeout``: the run then goes on in the server and its file is
        listed by ``list_export_files`` once complete."""
        with translated_rpc_errors(secure=self.secure):
            response = self._exports.RunExportJob(
                exports_pb2.RunExportJobRequest(name=name), timeout=self.timeout, metadata=self._metadata
            )
        return export_file_from_proto(response.file)

    def list_export_files(self, job: str) -> list[ExportFile]:
        """The job's complete files, newest first (analyst keys and up)."""
        with translated_rpc_errors(secure=self.secure):
            response = self._exports.ListExportFiles(
                exports_pb2.ListExportFilesRequest(job=job), timeout=self.timeout, metadata=self._metadata
            )
        return [export_file_from_proto(f) for f in response.files]

    def download_export_file(self, job: str, file: str) -> bytes:
        """A file's bytes (analyst keys and up; a job that is not masked: admin keys). The server
        records the download. ``download_export_file_to`` streams a big file to disk instead."""
        out = io.BytesIO()
        self.download_export_file_to(job, file, out)
        return out.getvalue()

    def _download(self, request: exports_pb2.DownloadExportFileRequest) -> Iterator[bytes]:
        call = self._exports.DownloadExportFile(request, metadata=self._metadata)
        try:
            with translated_rpc_errors(secure=self.secure):
                for chunk in call:
                    yield chunk.data
        finally:
            cancel_call(call)

    def download_export_file_to(
        self, job: str, file: str, destination: str | os.PathLike[str] | BinaryWriter
    ) -> int:
        """Write a file of a job to a path or a binary file; returns the number of bytes written."""
        chunks = self._download(exports_pb2.DownloadExportFileRequest(job=job, file=file))
        if isinstance(destination, str | os.PathLike):
            with open(destination, "wb") as out:
                return _write_all(chunks, out)
        return _write_all(chunks, destination)


def _write_all(chunks: Iterator[bytes], file: BinaryWriter) -> int:
    written = 0
    for data in chunks:
        file.write(data)
        written += len(data)
    return written


class Subscription:
    """An endless iterator over the events of a subscription (and, if asked, its progress).

    Yields ``Event`` objects; with ``include_checkpoints`` also ``Checkpoint`` and
    (once) ``CaughtUp``. ``position`` is the last position delivered or
    checkpointed: pass it as ``after_position`` to resume later. When the server
    becomes unavailable the subscription reconnects with backoff (0.05 s doubling
    to 2 s) and resumes after ``position``, so no event is missed or repeated.
    ``stop()`` may be called from any thread and ends the iteration promptly.
    """

    def __init__(
        self,
        stub: stream_pb2_grpc.StreamServiceStub,
        cursor: SubscriptionCursor,
        *,
        metadata: tuple[tuple[str, str], ...],
        reconnect: bool,
        secure: bool = False,
        on_close: Callable[[Subscription], None] | None = None,
    ) -> None:
        self._stub = stub
        self._cursor = cursor
        self._metadata = metadata
        self._reconnect = reconnect
        self._secure = secure
        self._on_close = on_close
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        # The first call starts now, not at the first next(): a subscription to new
        # events must see what is appended between subscribe() and iterating.
        self._call: grpc.CallIterator[stream_pb2.SubscribeResponse] | None = self._open()
        self._items = self._run()

    @property
    def position(self) -> int:
        return self._cursor.position

    @property
    def caught_up(self) -> bool:
        return self._cursor.caught_up

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> SubscriptionItem:
        return next(self._items)

    def stop(self) -> None:
        self._stopped.set()
        with self._lock:
            call = self._call
        if call is not None:
            cancel_call(call)
        if self._on_close is not None:
            self._on_close(self)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _open(self) -> grpc.CallIterator[stream_pb2.SubscribeResponse]:
        return self._stub.Subscribe(self._cursor.request(), metadata=self._metadata)

    def _run(self) -> Iterator[SubscriptionItem]:
        backoff = Backoff()
        call = self._call
        while not self._stopped.is_set():
            if call is None:
                call = self._open()
                with self._lock:
                    self._call = call
                if self._stopped.is_set():  # stop() ran before the call was visible to it
                    cancel_call(call)
            try:
                for message in call:
                    backoff.reset()
                    for item in self._cursor.accept(message):
                        if self._stopped.is_set():  # stop() ends delivery mid-batch too
                            return
                        yield item
                # The server ended a stream that is meant to last forever: it is going away.
                if not self._reconnect:
                    return
            except grpc.RpcError as error:
                if self._stopped.is_set():
                    return
                if not (self._reconnect and is_reconnectable(error)):
                    raise handle_rpc_error(error, secure=self._secure) from error
            finally:
                cancel_call(call)
            call = None
            if self._stopped.wait(backoff.next_delay()):
                return
