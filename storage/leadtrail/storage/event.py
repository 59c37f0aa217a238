"""The values the storage engine accepts and returns.

Times are UTC milliseconds since the epoch (``int``); money is a decimal
string exactly as the producer sent it (never a float). Snapshots (``lead``)
and ``details`` are JSON-compatible mappings.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import TYPE_CHECKING, Any, Protocol, cast

from .field_rules import FieldRule, checked_rules, reads_lead, rules_hold

if TYPE_CHECKING:
    from .seal import Seal

DEFAULT_ACCOUNT = "default"

Progress = Callable[[int, int], None]
"""``progress(done, total)`` of a long maintenance call (segments, or events), for a progress bar."""


class Outcome(IntEnum):
    """Numbered as the ``leadtrail.v1.Outcome`` enum."""

    UNSPECIFIED = 0
    SUCCESS = 1
    FAILURE = 2
    ERROR = 3
    SKIP = 4


# Event and AppendResult are built for every event appended and read, and a
# frozen dataclass's __init__ costs ten times a plain one (one
# object.__setattr__ call per field). They are values all the same: the engine
# never changes one it has handed out, and callers must not either.
@dataclass(slots=True)
class Event:
    """One immutable moment of a lead's journey (treat it as read-only).

    On ``append`` leave ``position`` and ``recorded_at_ms`` at 0 (they are
    output only); ``id`` may be empty (one is assigned) and ``timestamp_ms``
    may be ``None`` (the receive time is used).
    """

    type: str
    lead_id: str
    flow_id: str
    id: str = ""
    timestamp_ms: int | None = None
    entity_id: str = ""
    outcome: Outcome = Outcome.UNSPECIFIED
    reason: str = ""
    duration_ms: int = 0
    integration: str = ""
    response_code: int = 0
    price: str = ""
    details: Mapping[str, Any] = field(default_factory=dict)
    lead: Mapping[str, Any] = field(default_factory=dict)
    account_id: str = DEFAULT_ACCOUNT
    position: int = 0
    recorded_at_ms: int = 0
    seal: Seal | None = field(default=None, compare=False, repr=False)
    """The chain block of a stored event (FORMAT.md, "Hash chain"): set when it is read, so
    that a rewrite keeps it; None on an event to append (the writer makes one)."""

    def copy(self) -> Event:
        """A shallow copy, to change before it is handed out (``dataclasses.replace`` is slow)."""
        return Event(
            self.type,
            self.lead_id,
            self.flow_id,
            self.id,
            self.timestamp_ms,
            self.entity_id,
            self.outcome,
            self.reason,
            self.duration_ms,
            self.integration,
            self.response_code,
            self.price,
            self.details,
            self.lead,
            self.account_id,
            self.position,
            self.recorded_at_ms,
            self.seal,
        )


@dataclass(slots=True)
class AppendResult:
    id: str
    position: int
    recorded_at_ms: int
    duplicate: bool
    conflict: bool = False
    """A duplicate whose stored event differs from the one sent (type, lead, flow or
    timestamp): the first one is kept, and the sender should hear of it."""
    chain_hash: bytes = b""
    """The receipt: the chain hash up to and including the event (FORMAT.md, "Hash
    chain"); b"" for an event written without a chain (format 1.1 records)."""


AUDIT_TYPE_PREFIX = "audit."
"""Events of these types are the record of who read what: retention never removes them."""

AUDIT_FLOW = "audit"
"""The flow of the events the store records about itself (an erasure, a read)."""

SERVER_TYPE_PREFIXES = (AUDIT_TYPE_PREFIX, "alert.", "export.")
"""Types only the server writes (the read audit, alerts and their deliveries, exports):
clients may not append them."""


class EventFields(Protocol):
    """What a filter or a caller's scope looks at: an ``Event``, or a ``StoredEvent``
    whose values stay undecoded."""

    @property
    def account_id(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def lead_id(self) -> str: ...
    @property
    def flow_id(self) -> str: ...
    @property
    def entity_id(self) -> str: ...
    @property
    def outcome(self) -> int: ...
    @property
    def timestamp_ms(self) -> int | None: ...
    @property
    def position(self) -> int: ...


@dataclass(frozen=True, slots=True)
class EventFilter:
    """All set parts must match; the empty filter matches every event of the account.

    ``types`` holds exact types or prefix patterns ending in ``.*``
    (``recipient.*``). ``start_ms`` is inclusive, ``end_ms`` exclusive, both on
    the event ``timestamp``. ``where`` holds field rules that must all hold
    (``field_rules`` says how they compare); they are checked last, on the events
    every other part lets through, since they may need the snapshot decoded.
    """

    account_id: str = DEFAULT_ACCOUNT
    types: tuple[str, ...] = ()
    lead_id: str = ""
    flow_id: str = ""
    entity_id: str = ""
    outcomes: tuple[Outcome, ...] = ()
    start_ms: int | None = None
    end_ms: int | None = None
    entity_scope: tuple[str, ...] = ()
    """When set, only events of these entities exist for this filter (a key's scope)."""
    flow_scope: tuple[str, ...] = ()
    """When set, only events of these flows exist for this filter (a key's scope)."""
    hidden_types: tuple[str, ...] = ()
    """Types (or ``x.*`` prefixes) that do not exist for this filter (what a role may not see)."""
    where: tuple[FieldRule, ...] = ()

    def __post_init__(self) -> None:
        if self.where:
            object.__setattr__(self, "where", checked_rules(self.where))

    @property
    def reads_lead(self) -> bool:
        """Whether matching an event needs its snapshot (a rule on ``lead.<name>``)."""
        return bool(self.where) and reads_lead(self.where)

    def matches(self, event: EventFields) -> bool:
        if event.account_id != self.account_id:
            return False
        if self.entity_scope and event.entity_id not in self.entity_scope:
            return False
        if self.flow_scope and event.flow_id not in self.flow_scope:
            return False
        for pattern in self.hidden_types:
            if event.type.startswith(pattern[:-1]) if pattern.endswith(".*") else event.type == pattern:
                return False
        if self.lead_id and event.lead_id != self.lead_id:
            return False
        if self.flow_id and event.flow_id != self.flow_id:
            return False
        if self.entity_id and event.entity_id != self.entity_id:
            return False
        if self.outcomes and event.outcome not in self.outcomes:
            return False
        ts = event.timestamp_ms or 0
        if self.start_ms is not None and ts < self.start_ms:
            return False
        if self.end_ms is not None and ts >= self.end_ms:
            return False
        if self.types:
            for pattern in self.types:
                if pattern.endswith(".*"):
                    if event.type.startswith(pattern[:-1]):
                        break
                elif event.type == pattern:
                    break
            else:
                return False
        if self.where:
            # An event read in its stored form is decoded for the rules, the snapshot only if
            # a rule reads it.
            subject = event if isinstance(event, Event) else cast(Decodable, event).event(self.reads_lead)
            return rules_hold(self.where, subject)
        return True


class Decodable(Protocol):
    """An event in a stored form (``StoredEvent``) that decodes to an ``Event``."""

    def event(self, include_lead: bool = True) -> Event: ...


@dataclass(frozen=True, slots=True)
class Page:
    events: list[Event]
    cursor: str | None
    """Pass back as ``after=`` for the next page; ``None`` at the end."""


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    account_id: str
    max_age_days: int = 0
    """0 keeps events forever."""
    legal_hold: bool = False
    """While set nothing of the account is removed, whatever its age."""
    pii_max_age_days: int = 0
    """Personal (``pii``) values are erased from events older than this; 0 keeps them
    as long as the event."""
    secret_max_age_days: int = 0
    """Fingerprints of ``secret`` values are erased from events older than this."""
    max_age_seconds: int = 0
    """Events older than this many seconds are removed, for ages below a day; at most one
    of ``max_age_days`` and this is set (0 leaves the age to ``max_age_days``)."""


@dataclass(frozen=True, slots=True)
class RetentionReport:
    events_removed: int
    segments_deleted: int
    segments_rewritten: int
    bytes_freed: int
    events_scrubbed: int = 0
    """Events whose personal values the field-class ages erased."""


@dataclass(frozen=True, slots=True)
class VerifyReport:
    records_checked: int
    problems: list[str]
    """Empty for a healthy store; each names segment, offset and positions."""
    quarantined: list[str] = field(default_factory=list)
    """Ranges moved aside by an earlier ``quarantine`` open (data lost to damage)."""


@dataclass(frozen=True, slots=True)
class Stats:
    event_count: int
    last_position: int
    segment_count: int
    disk_bytes: int
    """Everything under the data directory: log, dictionaries, indexes."""
    log_bytes: int
    index_bytes: int
    dictionary_bytes: int
    raw_bytes: int
    """Size of the events as uncompressed JSON (what a naive store would keep)."""
    bytes_per_event: float
    compression_ratio: float
    """raw_bytes / log_bytes."""
    dictionaries: int
    fsync_policy: str
    writable: bool
    account_events: dict[str, int] = field(default_factory=dict)
    """Stored events per account."""
