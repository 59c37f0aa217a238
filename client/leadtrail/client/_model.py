"""The client's value types: plain frozen dataclasses in place of protobuf messages.

Money is ``Decimal``, times are timezone-aware UTC ``datetime`` (millisecond
precision, like the store), snapshots and details are plain dicts of JSON
values.

Events and timeline steps that come from a read are built by ``from_wire``:
each field is decoded from the wire message the first time it is read, then
kept. A caller that counts a timeline's steps or reads a few fields of each
event pays for those only, not for every snapshot, change and datetime of the
answer (decoding was most of the client's work per event). Such an object is
the same class, compares, prints, copies and pickles as one built by its
constructor, and holds on to its message until then. An answer that cannot be
decoded raises when the field is read.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

from ._rules import FieldRule, field_rules

CHECKPOINT_PREFIX = b"leadtrail checkpoint v1\n"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND = timedelta(milliseconds=1)

Model = TypeVar("Model")
_WIRE = "_wire"
"""The instance attribute holding (message, decoders) until every field is decoded."""


class FieldGroup:
    """Fields decoded together on the first read of any of them: plain values, which cost less
    read all at once (``attrgetter`` of several names is one call) than one call each."""

    __slots__ = ("names", "values")

    def __init__(self, names: tuple[str, ...], values: Callable[[Any], tuple[Any, ...]]) -> None:
        self.names = names
        self.values = values
        """The message -> the fields' values, in the order of ``names``."""


Decoders = Mapping[str, "Callable[[Any], Any] | FieldGroup"]
"""Field name -> what makes its value from the wire message: a function of it, or the group it is
decoded with. Picklable (module-level functions, ``operator.attrgetter``), since a decoded object
pickles its message and these."""


class _FromWire:
    """A dataclass field decoded on first read. A non-data descriptor: once the value is in the
    instance's ``__dict__`` (at once for objects built by the constructor), Python reads it from
    there without calling this."""

    __slots__ = ("default", "name")

    def __init__(self, name: str, default: object) -> None:
        self.name = name
        self.default = default

    def __get__(self, instance: object, owner: type | None = None) -> Any:
        if instance is None:  # the class attribute: the field's default, as the dataclass had it
            if self.default is MISSING:
                raise AttributeError(self.name)
            return self.default
        state = instance.__dict__
        try:
            message, decoders = state[_WIRE]
        except KeyError:
            if self.name in state:  # decoded by another thread since the lookup
                return state[self.name]
            raise AttributeError(self.name) from None
        decoder = decoders[self.name]
        if type(decoder) is FieldGroup:
            names = decoder.names
            if state.keys().isdisjoint(names):  # the usual case: one update, in C
                state.update(zip(names, decoder.values(message), strict=True))
            else:
                for name, item in zip(names, decoder.values(message), strict=True):
                    if name not in state:  # a value set since (a copy given another id) stays
                        state[name] = item
            value = state[self.name]
        else:
            value = decoder(message)
            state[self.name] = value
        if len(state) > len(decoders):  # every field decoded: the message is no longer needed
            state.pop(_WIRE, None)  # pop: another thread may have just removed it
        return value


def _decoded_on_read(cls: type[Model]) -> type[Model]:
    """Make every field of the dataclass ``cls`` decodable on first read (see ``from_wire``).
    Its constructor, comparison and representation are unchanged: they were generated already."""
    for item in fields(cls):  # type: ignore[arg-type]
        setattr(cls, item.name, _FromWire(item.name, item.default))
    return cls


def from_wire(cls: type[Model], message: object, decoders: Decoders) -> Model:
    """An instance of ``cls`` whose fields are ``decoders[name](message)``, each made when first read.
    ``decoders`` must name every field of ``cls``."""
    instance: Model = object.__new__(cls)
    instance.__dict__[_WIRE] = (message, decoders)
    return instance


def built(cls: type[Model], values: Mapping[str, Any]) -> Model:
    """An instance of the frozen dataclass ``cls`` with these (already right) field values, without
    its constructor's checks: for the decoder's own results, many per answer."""
    instance: Model = object.__new__(cls)
    instance.__dict__.update(values)
    return instance


class Outcome(enum.IntEnum):
    """What came of the step an event records (values as in ``leadtrail.v1.Outcome``)."""

    UNSPECIFIED = 0
    SUCCESS = 1
    FAILURE = 2
    ERROR = 3
    SKIP = 4


class ChangeKind(enum.IntEnum):
    """How a lead snapshot field differs from the previous timeline step."""

    ADDED = 1
    CHANGED = 2
    REMOVED = 3


class GroupBy(enum.IntEnum):
    """Aggregation keys (values as in ``leadtrail.v1.GroupBy``)."""

    TYPE = 1
    OUTCOME = 2
    FLOW = 3
    ENTITY = 4
    HOUR = 5
    DAY = 6


@_decoded_on_read
@dataclass(frozen=True)
class Event:
    """One thing that happened to a lead.

    ``id``, ``timestamp`` may be left empty for the server (or the background
    appender) to fill in; ``account_id``, ``position`` and ``recorded_at`` are
    set by the server and ignored on append.
    """

    type: str
    lead_id: str
    flow_id: str
    id: str = ""
    timestamp: datetime | None = None
    entity_id: str = ""
    outcome: Outcome = Outcome.UNSPECIFIED
    reason: str = ""
    duration_ms: int = 0
    integration: str = ""
    response_code: int = 0
    price: Decimal | None = None
    details: dict[str, Any] = field(default_factory=dict)
    lead: dict[str, Any] = field(default_factory=dict)
    account_id: str = ""
    position: int = 0
    recorded_at: datetime | None = None

    def __post_init__(self) -> None:
        # Accept the spellings callers reach for first, but never a float for money:
        # binary floating point cannot hold most cent amounts exactly.
        if not isinstance(self.outcome, Outcome):
            object.__setattr__(self, "outcome", Outcome(self.outcome))
        price: object = self.price
        if price is not None and not isinstance(price, Decimal):
            if isinstance(price, bool) or not isinstance(price, int | str):
                raise TypeError(f"Event.price must be a Decimal, int or decimal string, not {price!r}")
            object.__setattr__(self, "price", Decimal(price))


@dataclass(frozen=True)
class AppendResult:
    """Where an appended event is stored; ``duplicate`` when its id was already stored, and
    ``conflict`` when that stored event differs from the one sent (type, lead, flow or
    timestamp): the first one is kept, the one sent is not stored."""

    id: str
    position: int
    recorded_at: datetime
    duplicate: bool
    conflict: bool = False
    chain_hash: bytes = b""
    """The receipt: SHA-256 chain hash of the log up to and including the event (for a
    duplicate, the original's); check it later with ``Client.verify_receipt``. Empty from a
    server that does not chain its log."""


@dataclass(frozen=True)
class SignedCheckpoint:
    """The chain hash of the log up to and including ``position``, and the commit time of
    the event there, signed with the store's Ed25519 key (``public_key``, raw 32 bytes).
    The signature covers ``checkpoint_bytes()``: keep a checkpoint outside the store, and
    it proves later that nothing up to it was changed."""

    position: int
    chain_hash: bytes
    recorded_at: datetime
    signature: bytes
    public_key: bytes

    @property
    def recorded_at_ms(self) -> int:
        """``recorded_at`` in UTC milliseconds, as the signature covers it."""
        return (self.recorded_at - _EPOCH) // _MILLISECOND

    def checkpoint_bytes(self) -> bytes:
        """The bytes the signature covers (storage/FORMAT.md, "Signed records")."""
        return (
            CHECKPOINT_PREFIX
            + self.position.to_bytes(8, "big")
            + self.chain_hash
            + self.recorded_at_ms.to_bytes(8, "big")
        )


@dataclass(frozen=True)
class FieldChange:
    """One lead snapshot field that differs from the previous step (``None`` when absent)."""

    field: str
    before: Any
    after: Any
    kind: ChangeKind


@_decoded_on_read
@dataclass(frozen=True)
class TimelineStep:
    event: Event
    since_previous_ms: int
    changes: list[FieldChange]


@dataclass(frozen=True)
class Timeline:
    """One lead's events in timestamp order (a page of them), with the snapshot changes step
    by step. ``total_ms`` is the whole journey's, whichever page this is; ``audit`` holds the
    store's own records about the lead (such as its erasure), shown apart from the journey
    and on the first page only; ``next_page_token`` is empty on the last page."""

    lead_id: str
    steps: list[TimelineStep]
    total_ms: int
    audit: list[Event] = field(default_factory=list)
    next_page_token: str = ""


@dataclass(frozen=True)
class AggregateRow:
    """One group: its keys (in ``group_by`` order), event count and exact price sum; the sum
    of its positive prices (``revenue_sum``), of its negative ones (``cost_sum``, negative)
    and ``profit``, their sum."""

    keys: tuple[str, ...]
    count: int
    price_sum: Decimal
    revenue_sum: Decimal = Decimal(0)
    cost_sum: Decimal = Decimal(0)
    profit: Decimal = Decimal(0)


@dataclass(frozen=True)
class LeadMatch:
    """A lead found by a personal value: its first and last event times and its number of
    events, over the events the caller may see."""

    lead_id: str
    first_timestamp: datetime | None
    last_timestamp: datetime | None
    events: int


@dataclass(frozen=True)
class Stats:
    event_count: int
    last_position: int
    segment_count: int
    disk_bytes: int
    raw_bytes: int
    log_bytes: int
    index_bytes: int
    dictionary_bytes: int
    bytes_per_event: float
    compression_ratio: float
    dictionaries: int
    fsync_policy: str
    writable: bool
    account_events: dict[str, int] = field(default_factory=dict)
    """Stored events per account (with API keys: the caller's account only)."""


@dataclass(frozen=True)
class VerifyReport:
    """``problems`` is empty for a healthy store; ``quarantined`` lists ranges moved aside earlier.

    The fields after them are set by ``verify_chain`` only: the events whose digest was
    recomputed and chained, the last position verified and the chain hash there, the first
    position where anything was edited, inserted, reordered or removed (0: none), the
    ranges retention retired, the events an erasure or a scrub changed (their content's
    commitment kept), and the signed records whose signature was checked."""

    records_checked: int
    problems: list[str]
    quarantined: list[str]
    chain_checked: int = 0
    last_position: int = 0
    chain_hash: bytes = b""
    first_bad_position: int = 0
    retired: list[str] = field(default_factory=list)
    content_erased: int = 0
    signatures_checked: int = 0


@dataclass(frozen=True)
class RetentionPolicy:
    """Per account: events older than ``max_age_days`` (or ``max_age_seconds``, for ages
    below a day; at most one of the two is set) are removed (0 keeps them) unless on
    hold; the values of fields classed pii (secret) are erased from events older than
    ``pii_max_age_days`` (``secret_max_age_days``), the events kept."""

    account_id: str
    max_age_days: int = 0
    legal_hold: bool = False
    pii_max_age_days: int = 0
    secret_max_age_days: int = 0
    max_age_seconds: int = 0


@dataclass(frozen=True)
class RetentionReport:
    events_removed: int
    segments_deleted: int
    segments_rewritten: int
    bytes_freed: int
    events_scrubbed: int = 0
    """Events whose pii or secret values passed their age and were erased."""


@dataclass(frozen=True)
class ErasureReport:
    """What ``erase_lead`` did; the ``audit.erased`` event records it in the store."""

    events_erased: int
    segments_rewritten: int
    dictionaries_replaced: int
    audit_event_id: str
    audit_position: int


@dataclass(frozen=True)
class FieldPolicy:
    """An account's additions to the built-in field classes: names or patterns (``*``,
    ``?``) classed secret or pii, and names the built-in rules class pii that are plain."""

    account_id: str = ""
    secret: tuple[str, ...] = ()
    pii: tuple[str, ...] = ()
    plain: tuple[str, ...] = ()


@dataclass(frozen=True)
class Checkpoint:
    """A subscription scanned every event up to and including ``position``."""

    position: int


@dataclass(frozen=True)
class CaughtUp:
    """A subscription replayed history up to ``position``; live events follow."""

    position: int


# -- alerts ----------------------------------------------------------------------------------------


class AlertKind(enum.IntEnum):
    """What an alert rule watches for (values as in ``leadtrail.v1.AlertKind``)."""

    MATCH = 1
    """Each matching event fires once."""
    COUNT = 2
    """Matching events in the window >= threshold."""
    RATE = 3
    """Matching events / ``base`` events in the window >= threshold (at least ``min_events``)."""
    ABSENCE = 4
    """No matching event for ``window_s`` after one was seen: a service down."""
    DROP = 5
    """The RATE share fell by >= threshold below its share over ``baseline_windows`` windows."""
    LEAD_MARGIN = 6
    """When a matching event arrives, the lead's price sum so far <= threshold."""


def _enum_member(enum_type: type[enum.IntEnum], value: object, what: str) -> Any:
    """An enum member from itself, its number or its name in any case (``"rate"``)."""
    if isinstance(value, enum_type):
        return value
    try:
        if isinstance(value, str):
            return enum_type[value.upper()]
        if isinstance(value, int) and not isinstance(value, bool):
            return enum_type(value)
    except (KeyError, ValueError):
        pass
    names = ", ".join(member.name.lower() for member in enum_type)
    raise ValueError(f"{what} {value!r}: expected one of {names}")


@dataclass(frozen=True)
class EventFilter:
    """The events an alert rule, sink or export job takes: all given parts must match (as the
    query keywords).

    ``types`` are exact types or prefix patterns (``recipient.*``); a lone string is one type.
    ``where`` holds field rules, each a ``FieldRule`` or its text (``"lead.state==TX"``)."""

    types: tuple[str, ...] = ()
    lead_id: str = ""
    flow_id: str = ""
    entity_id: str = ""
    outcomes: tuple[Outcome, ...] = ()
    start: datetime | None = None
    end: datetime | None = None
    where: tuple[FieldRule, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "where", field_rules(self.where))
        types: object = self.types
        object.__setattr__(self, "types", (types,) if isinstance(types, str) else tuple(self.types))
        outcomes: object = self.outcomes
        listed = (outcomes,) if isinstance(outcomes, int) else tuple(self.outcomes)
        object.__setattr__(self, "outcomes", tuple(Outcome(o) for o in listed))


def _decimal_or_none(value: object, what: str) -> Decimal | None:
    if value is None or isinstance(value, Decimal):
        return value
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise TypeError(f"{what} must be a Decimal, int or decimal string, not {value!r}")
    return Decimal(value) if value != "" else None


@dataclass(frozen=True)
class AlertRule:
    """An alert rule of the caller's account (API.md § Alerts).

    ``threshold`` is a count (COUNT), a share in (0, 1] (RATE, DROP) or money (LEAD_MARGIN),
    None for MATCH and ABSENCE. ``group_by`` is ``GroupBy.ENTITY``, ``GroupBy.FLOW`` or None
    (one alert for the whole rule). ``webhook_secret`` is write-only: rules read back have it
    empty and ``webhook_secret_set`` tells whether the server holds one; setting a rule again
    with the same ``webhook_url`` and no secret keeps the stored one. ``set_at`` and
    ``set_after_position`` are set by the server."""

    name: str
    kind: AlertKind
    filter: EventFilter = field(default_factory=EventFilter)
    base: EventFilter | None = None
    threshold: Decimal | None = None
    window_s: int = 0
    min_events: int = 0
    baseline_windows: int = 0
    group_by: GroupBy | None = None
    webhook_url: str = ""
    webhook_secret: str = field(default="", repr=False)
    description: str = ""
    webhook_secret_set: bool = False
    set_at: datetime | None = None
    set_after_position: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", _enum_member(AlertKind, self.kind, "kind"))
        object.__setattr__(self, "threshold", _decimal_or_none(self.threshold, "AlertRule.threshold"))
        if self.group_by is not None:
            object.__setattr__(self, "group_by", _enum_member(GroupBy, self.group_by, "group_by"))


@dataclass(frozen=True)
class Alert:
    """An alert of the caller's account: firing now, resolved, or (MATCH, LEAD_MARGIN) one that
    fired once. ``event_id`` is its ``alert.fired`` event, ``resolved_event_id`` its
    ``alert.resolved`` one; ``value`` the measured count, share or money that fired it."""

    rule: str
    group: str
    firing: bool
    fired_at: datetime | None
    resolved_at: datetime | None
    value: Decimal | None
    event_id: str
    kind: AlertKind | None = None
    resolved_event_id: str = ""
    reason: str = ""
    lead_id: str = ""


# -- sinks -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NatsTarget:
    """A JetStream stream (created when missing, file storage) holding subjects
    ``<subject_prefix>.<account>.<type>``; 0 and "" are the server's defaults (prefix
    ``leadtrail``, 1 replica, a 2-hour duplicate window)."""

    servers: tuple[str, ...]
    stream: str
    subject_prefix: str = ""
    replicas: int = 0
    duplicate_window_s: int = 0

    def __post_init__(self) -> None:
        servers: object = self.servers
        object.__setattr__(self, "servers", (servers,) if isinstance(servers, str) else tuple(self.servers))


@dataclass(frozen=True)
class WebhookTarget:
    """POSTs of a JSON array of events, signed with ``secret`` like alert webhooks. ``secret``
    is write-only: sinks read back have it empty and ``secret_set`` tells whether the server
    holds one; setting a sink again with the same ``url`` and no secret keeps it."""

    url: str
    secret: str = field(default="", repr=False)
    batch_size: int = 0
    max_wait_ms: int = 0
    secret_set: bool = False


@dataclass(frozen=True)
class FilesTarget:
    """Rolling files in ``directory`` (relative to the account's sink file root on the
    server): ``format`` "jsonl", "csv" or "parquet"; ``fields`` the CSV columns or the
    Parquet ``lead.<name>`` columns."""

    directory: str
    format: str = "jsonl"
    rotate_events: int = 0
    rotate_seconds: int = 0
    fields: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "fields", tuple(self.fields))


@dataclass(frozen=True)
class Sink:
    """A sink of the caller's account (API.md § Sinks): the events ``filter`` matches, handed
    to ``target`` in position order, at least once. ``start`` applies when the sink is new or
    given again: "start" (the whole log), "end" (what is committed from now on; the default)
    or a position (the events after it). ``masked`` delivers what a reader key sees.
    ``set_at`` is set by the server."""

    name: str
    target: NatsTarget | WebhookTarget | FilesTarget
    filter: EventFilter = field(default_factory=EventFilter)
    start: str | int | None = None
    masked: bool = False
    set_at: datetime | None = None

    def __post_init__(self) -> None:
        start = self.start
        if (
            start is not None
            and start not in ("start", "end")
            and (isinstance(start, bool) or not isinstance(start, int) or start < 0)
        ):
            raise ValueError(f"Sink.start {start!r}: expected 'start', 'end' or a position (int >= 0)")


@dataclass(frozen=True)
class SinkStatus:
    """Where a sink is: every event up to ``delivered_position`` is handed on (or did not
    match); ``lag_events`` committed events after it; ``state`` "running", "retrying" (see
    ``last_error``) or "stopped"."""

    name: str
    delivered_position: int
    lag_events: int
    delivered_total: int
    state: str
    last_error: str = ""
    last_error_at: datetime | None = None


EXPORT_JOB_FORMATS = ("jsonl", "csv", "parquet")


@dataclass(frozen=True)
class ExportJob:
    """A scheduled export of the caller's account (API.md § Scheduled exports): every
    ``every_s`` seconds (at least 60) the server writes the matching events whose ``timestamp``
    is in the last ``lookback_s`` seconds (0: ``every_s``) into a file kept ``keep_days`` days.
    ``format`` is "jsonl", "csv" or "parquet"; ``fields`` the CSV columns or the Parquet
    ``lead.<name>`` columns; ``masked`` delivers what an analyst key sees. ``set_at``,
    ``last_run_at`` and ``next_run_at`` are set by the server."""

    name: str
    format: str = "jsonl"
    every_s: int = 86_400
    keep_days: int = 7
    filter: EventFilter = field(default_factory=EventFilter)
    fields: tuple[str, ...] = ()
    lookback_s: int = 0
    masked: bool = False
    set_at: datetime | None = None
    last_run_at: datetime | None = None
    next_run_at: datetime | None = None

    def __post_init__(self) -> None:
        if self.format not in EXPORT_JOB_FORMATS:
            raise ValueError(
                f"ExportJob.format must be one of {', '.join(EXPORT_JOB_FORMATS)}, not {self.format!r}"
            )
        object.__setattr__(self, "fields", tuple(self.fields))


@dataclass(frozen=True)
class ExportFile:
    """A complete file of an export job; ``sha256`` is the hex SHA-256 of its bytes."""

    name: str
    size: int
    rows: int
    sha256: str
    created_at: datetime | None
    expires_at: datetime | None
