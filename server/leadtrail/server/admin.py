"""AdminService: store figures, policies, verification, API keys and erasure.

Each call acts on the caller's whole account: an admin key limited to some entities
or flows may make none of them but GetFieldPolicy.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import asdict

import grpc

from leadtrail.client.wire import field_policy_to_proto, retention_policy_to_proto
from leadtrail.storage import FieldPolicy, InvalidArgumentError, RetentionPolicy
from leadtrail.v1 import admin_pb2, admin_pb2_grpc

from . import backup, checkpoint_service, integrity
from .caller import Caller
from .convert import ms_to_timestamp, timestamp_to_ms
from .keys import ApiKey, KeyStoreError
from .served_store import ServedStore
from .status import Context, ServiceError, invalid, not_found, streaming, unary

MAX_DAYS = 365 * 100
MAX_SECONDS = MAX_DAYS * 86_400
MAX_ID_CHARS = 128
MAX_REASON_CHARS = 1024


class AdminService(admin_pb2_grpc.AdminServiceServicer):
    def __init__(self, store: ServedStore) -> None:
        self.store = store

    @unary
    async def GetStats(self, request: admin_pb2.GetStatsRequest, context: Context) -> admin_pb2.Stats:
        # Figures of the whole store (its health is every account's concern), for an
        # admin of a whole account: a key limited to some entities sees no totals.
        caller = Caller.current()
        caller.whole_account("GetStats")
        figures = asdict(await self.store.run(self.store.log.stats))
        if caller.key is not None:  # the other accounts' sizes are theirs
            figures["account_events"] = {caller.account: figures["account_events"].get(caller.account, 0)}
        return admin_pb2.Stats(**figures)

    @unary
    async def SetRetentionPolicy(
        self, request: admin_pb2.RetentionPolicy, context: Context
    ) -> admin_pb2.SetRetentionPolicyResponse:
        caller = Caller.current()
        caller.whole_account("SetRetentionPolicy")
        account = request.account_id or caller.account
        if caller.key is not None and account != caller.account:
            raise ServiceError(
                grpc.StatusCode.PERMISSION_DENIED,
                f"account_id {account!r}: a key may set the policy of its own account only",
            )
        if len(account) > MAX_ID_CHARS:
            raise invalid("account_id", f"longer than {MAX_ID_CHARS} characters")
        for name in ("max_age_days", "pii_max_age_days", "secret_max_age_days"):
            if getattr(request, name) > MAX_DAYS:
                raise invalid(name, f"{getattr(request, name)} is over the limit of {MAX_DAYS} days")
        if request.max_age_seconds > MAX_SECONDS:
            raise invalid(
                "max_age_seconds", f"{request.max_age_seconds} is over the limit of {MAX_SECONDS} seconds"
            )
        if request.max_age_seconds and request.max_age_days:
            raise invalid(
                "max_age_days and max_age_seconds",
                f"{request.max_age_days} and {request.max_age_seconds}: set one of the two, the other 0",
            )
        policy = RetentionPolicy(
            account,
            request.max_age_days,
            request.legal_hold,
            request.pii_max_age_days,
            request.secret_max_age_days,
            request.max_age_seconds,
        )
        await self.store.run(self.store.log.set_retention_policy, policy)
        return admin_pb2.SetRetentionPolicyResponse(policy=retention_policy_to_proto(policy))

    @unary
    async def ApplyRetention(
        self, request: admin_pb2.ApplyRetentionRequest, context: Context
    ) -> admin_pb2.ApplyRetentionResponse:
        key = Caller.current().whole_account("ApplyRetention")
        if key is not None and request.HasField("now"):
            # Ages are measured on the server's clock: a client's `now` could expire anything.
            raise ServiceError(grpc.StatusCode.PERMISSION_DENIED, "now: only in open mode (no API keys)")
        now = timestamp_to_ms(request.now) if request.HasField("now") else None
        account = key.account if key is not None else None
        report = await self.store.run(self.store.log.apply_retention, now, account)
        if report.events_scrubbed:
            self.store.feed.clear()  # memory held the values just erased: subscribers read disk
        # The engine's reports and the messages share their field names.
        return admin_pb2.ApplyRetentionResponse(**asdict(report))

    @unary
    async def Verify(self, request: admin_pb2.VerifyRequest, context: Context) -> admin_pb2.VerifyReport:
        Caller.current().whole_account("Verify")
        return admin_pb2.VerifyReport(**asdict(await self.store.run(self.store.log.verify)))

    @unary
    async def CreateKey(
        self, request: admin_pb2.CreateKeyRequest, context: Context
    ) -> admin_pb2.CreateKeyResponse:
        caller = Caller.current()
        maker = caller.whole_account("CreateKey")
        if (
            maker is not None
            and maker.rate_per_second
            and not (0 < request.rate_per_second <= maker.rate_per_second)
        ):
            raise ServiceError(
                grpc.StatusCode.PERMISSION_DENIED,
                f"rate_per_second: {request.rate_per_second}; a key made by a key limited to "
                f"{maker.rate_per_second} calls a second must be limited to as many or fewer",
            )
        try:
            secret, key = await self.store.run(
                lambda: self.store.keys.create(
                    caller.account,
                    request.role,
                    _now_ms(),
                    list(request.entity_ids),
                    list(request.flow_ids),
                    request.rate_per_second,
                )
            )
        except KeyStoreError as e:
            raise ServiceError(grpc.StatusCode.INVALID_ARGUMENT, str(e)) from None
        return admin_pb2.CreateKeyResponse(key=secret, info=key_to_proto(key))

    @unary
    async def ListKeys(
        self, request: admin_pb2.ListKeysRequest, context: Context
    ) -> admin_pb2.ListKeysResponse:
        caller = Caller.current()
        caller.whole_account("ListKeys")
        keys = await self.store.run(self.store.keys.list_keys, caller.account)
        return admin_pb2.ListKeysResponse(keys=[key_to_proto(k) for k in keys])

    @unary
    async def RevokeKey(self, request: admin_pb2.RevokeKeyRequest, context: Context) -> admin_pb2.ApiKey:
        if not request.key_id:
            raise invalid("key_id", "required")
        caller = Caller.current()
        caller.whole_account("RevokeKey")
        try:
            key = await self.store.run(self.store.keys.revoke, request.key_id, _now_ms(), caller.account)
        except KeyStoreError:
            raise not_found(f"key {request.key_id!r} not found") from None
        return key_to_proto(key)

    @unary
    async def EraseLead(
        self, request: admin_pb2.EraseLeadRequest, context: Context
    ) -> admin_pb2.EraseLeadResponse:
        if not request.lead_id:
            raise invalid("lead_id", "required")
        if len(request.lead_id) > MAX_ID_CHARS:
            raise invalid("lead_id", f"{len(request.lead_id)} characters, over the limit of {MAX_ID_CHARS}")
        if len(request.reason) > MAX_REASON_CHARS:
            raise invalid("reason", f"{len(request.reason)} characters, over the limit of {MAX_REASON_CHARS}")
        caller = Caller.current()
        key = caller.whole_account("EraseLead")
        account, log = caller.account, self.store.log
        # A legal hold is the engine's rule: its LegalHoldError answers FAILED_PRECONDITION.
        requested_by = key.key_id if key is not None else "open-mode"
        report = await self.store.run(
            lambda: log.erase_lead(request.lead_id, account, requested_by=requested_by, reason=request.reason)
        )
        if report is None:
            raise not_found(f"lead {request.lead_id!r} has no events")
        erased = await self.store.run(log.timeline, request.lead_id, account)
        self.store.feed.replace(erased)  # the live feed's copies lose the values too
        return admin_pb2.EraseLeadResponse(**asdict(report))

    @unary
    async def SetFieldPolicy(self, request: admin_pb2.FieldPolicy, context: Context) -> admin_pb2.FieldPolicy:
        caller = Caller.current()
        caller.whole_account("SetFieldPolicy")
        account = caller.account
        if request.account_id and request.account_id != account:
            raise ServiceError(
                grpc.StatusCode.PERMISSION_DENIED,
                f"account_id {request.account_id!r}: a key may set the policy of its own account only",
            )
        policy = FieldPolicy(
            account, tuple(request.secret_fields), tuple(request.pii_fields), tuple(request.plain_fields)
        )
        try:
            stored = await self.store.run(self.store.log.set_field_policy, policy)
        except InvalidArgumentError as e:
            raise invalid("field policy", str(e)) from None
        return field_policy_to_proto(stored)

    @unary
    async def GetFieldPolicy(
        self, request: admin_pb2.GetFieldPolicyRequest, context: Context
    ) -> admin_pb2.FieldPolicy:
        return field_policy_to_proto(self.store.log.fields.get(Caller.current().account))

    # -- integrity and backup: each in a module of its own --------------------------------

    @unary
    async def GetCheckpoint(
        self, request: admin_pb2.GetCheckpointRequest, context: Context
    ) -> admin_pb2.SignedCheckpoint:
        return await checkpoint_service.get_checkpoint(self.store, request)

    @unary
    async def VerifyChain(
        self, request: admin_pb2.VerifyChainRequest, context: Context
    ) -> admin_pb2.VerifyReport:
        Caller.current().whole_account("VerifyChain")
        return await integrity.verify_chain(self.store, request)

    @streaming
    async def Backup(
        self, request: admin_pb2.BackupRequest, context: Context
    ) -> AsyncIterator[admin_pb2.BackupChunk]:
        key = Caller.current().whole_account("Backup")
        operator = self.store.operator_account
        if key is not None and key.account != operator:
            raise ServiceError(
                grpc.StatusCode.PERMISSION_DENIED,
                f"Backup: a backup holds every account's events and the store's keys: admin keys of "
                f"the operator account {operator!r} only (serve --operator-account), not of {key.account!r}",
            )
        async for chunk in backup.backup(self.store, request, context):
            yield chunk


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def key_to_proto(key: ApiKey) -> admin_pb2.ApiKey:
    message = admin_pb2.ApiKey(
        key_id=key.key_id,
        account_id=key.account,
        role=key.role,
        entity_ids=key.entities,
        flow_ids=key.flows,
        rate_per_second=key.rate_per_second,
    )
    ms_to_timestamp(key.created_at_ms, message.created_at)
    if key.revoked:
        ms_to_timestamp(key.revoked_at_ms, message.revoked_at)
    return message
