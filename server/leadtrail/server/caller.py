"""The caller's scope: its account, which events exist for it, how it sees them.

Open single-account mode (no API keys) has no key: every caller is the
``default`` account and sees everything. With keys, a key sees its own account
only, within its entities and flows if it is limited to some, audit records
only if it is an admin, and personal fields masked unless its role may see them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol

import grpc

from leadtrail.storage import AUDIT_TYPE_PREFIX, DEFAULT_ACCOUNT, Event, EventFields, EventFilter
from leadtrail.storage.field_rules import personal_rule
from leadtrail.storage.fields import Classify, default_classify
from leadtrail.v1 import event_pb2

from .auth import CALLER
from .convert import filter_from_proto
from .keys import ApiKey
from .privacy import masked_event
from .status import ServiceError

MASKED_ROLES = frozenset({"reader", "analyst"})
"""Roles that see personal fields masked (API.md); admins see them, writers read nothing."""


class FieldClasses(Protocol):
    """The accounts' field policies, as masking needs them."""

    def classifier(self, account_id: str) -> Classify: ...


@dataclass(frozen=True)
class Caller:
    key: ApiKey | None
    """None in open mode."""

    @classmethod
    def current(cls) -> Caller:
        """The caller of the RPC being served (on the loop: the key is per task)."""
        return cls(CALLER.get())

    @property
    def account(self) -> str:
        return self.key.account if self.key is not None else DEFAULT_ACCOUNT

    @property
    def limited(self) -> bool:
        """Whether the key is limited to some entities or flows."""
        return self.key is not None and bool(self.key.entities or self.key.flows)

    def may_change(self, what: str, scope: EventFilter | None, plural: str) -> None:
        """A key limited to some entities or flows changes only what was set within its own
        scope (``scope``: the filter of the rule, sink or job held, None when there is none):
        it may not replace or delete what watches or hands on the whole account or another
        scope. PERMISSION_DENIED names ``what``."""
        key = self.key
        if scope is None or key is None or not self.limited:
            return
        if (scope.entity_scope, scope.flow_scope) != (key.entities, key.flows):
            raise ServiceError(
                grpc.StatusCode.PERMISSION_DENIED,
                f"{what}: set for another scope; this admin key is limited to some entities or "
                f"flows and changes the {plural} set within them only",
            )

    def sees(self, event: EventFields) -> bool:
        """Whether the caller may see this event at all: its scope, and audit records for
        admins only."""
        key = self.key
        if key is None:
            return True
        if key.role != "admin" and event.type.startswith(AUDIT_TYPE_PREFIX):
            return False
        return key.sees(event.entity_id, event.flow_id)

    def shown(self, fields: FieldClasses) -> Callable[[Event], Event]:
        """How the caller sees an event: personal fields masked unless its role may see them."""
        key = self.key
        if key is None or key.role not in MASKED_ROLES:
            return _as_is
        account = key.account
        # Looked up per event: a stream open for hours follows a field policy changed meanwhile.
        return lambda event: masked_event(event, fields.classifier(account))

    def masking(self, fields: FieldClasses) -> Callable[[Event], Event] | None:
        """``shown`` when it masks anything, else None: the caller sees events as stored,
        and their answers are spliced from the stored bytes."""
        key = self.key
        if key is None or key.role not in MASKED_ROLES:
            return None
        return self.shown(fields)

    def filter(self, message: event_pb2.EventFilter, fields: FieldClasses | None = None) -> EventFilter:
        """The request's filter within the caller's account and the key's entities and flows:
        events outside them do not exist for this caller. A role that sees personal fields
        masked may not put rules on them (``fields``: the accounts' policies; without them
        only the built-in classes count): matching runs on the stored values, so such a rule
        would tell it what the mask hides. FindLeads is the search by a personal value."""
        f = filter_from_proto(message, self.account)
        key = self.key
        if f.where and key is not None and key.role in MASKED_ROLES:
            classify = fields.classifier(self.account) if fields is not None else default_classify
            i = personal_rule(f.where, classify)
            if i is not None:
                raise ServiceError(
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"filter.where[{i}]: {f.where[i].field} is a personal field, which {key.role} keys "
                    "see masked and may not filter on (FindLeads finds leads by a personal value)",
                )
        if key is not None and (key.entities or key.flows):
            f = replace(f, entity_scope=key.entities, flow_scope=key.flows)
        if key is not None and key.role != "admin":
            f = replace(f, hidden_types=(AUDIT_TYPE_PREFIX + "*",))
        return f

    def whole_account(self, rpc: str) -> ApiKey | None:
        """The caller's key for a call that acts on its whole account (None in open mode):
        an admin key limited to some entities or flows may not make it."""
        if self.limited:
            raise ServiceError(
                grpc.StatusCode.PERMISSION_DENIED,
                f"{rpc}: acts on the whole account; this admin key is limited to some entities or flows",
            )
        return self.key


def _as_is(event: Event) -> Event:
    return event
