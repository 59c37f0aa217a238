"""The wire form of an alert rule (``leadtrail.v1.AlertRule``) checked and converted, and back;
the preset rules an operator starts with.

``rule_from_message`` is the one place a rule is validated: every refusal is an
INVALID_ARGUMENT naming the field, the problem and the limit, raised before
anything is stored. What a kind does not use is ignored and stored empty, so a
rule reads back as what it does:

| field | used by | limit |
| --- | --- | --- |
| threshold | COUNT | a whole number of events, 1..1,000,000 |
| threshold | RATE, DROP | a share in (0, 1] |
| threshold | LEAD_MARGIN | any decimal money value (the lead's price sum <= it fires) |
| threshold | MATCH, ABSENCE | must be left empty |
| window_s | COUNT, RATE, ABSENCE, DROP | 1 s..30 days; over 10 s, a divisor from 10 to 60 is needed |
| base | RATE, DROP | required; ignored by the others |
| min_events | RATE, DROP | 0..1,000,000; ignored by the others |
| baseline_windows | DROP | 1..168; ignored by the others |

The caller key's entities and flows are copied into both filters (a key limited to
some entities sets rules that see those entities only), and both filters hide the
``alert.*`` events: a rule never counts the firings of rules, which would feed on
themselves.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from decimal import Decimal, InvalidOperation
from urllib.parse import urlsplit

from leadtrail.server.config_filters import filter_message
from leadtrail.server.config_names import NAME, check_name, is_name
from leadtrail.server.convert import filter_from_proto, ms_to_timestamp, plain_decimal
from leadtrail.server.status import invalid
from leadtrail.storage import EventFilter, Outcome, ValidationError
from leadtrail.v1 import alerts_pb2, event_pb2, query_pb2

from .model import ALERT_FLOW, GroupBy, Kind, Rule

NAME_PATTERN = NAME
MIN_BUCKETS = 10
"""A window over this many seconds must divide into at least this many whole-second buckets."""
MAX_WINDOW_S = 30 * 24 * 3600
"""30 days: the longest window a rule may slide."""
MAX_COUNT = 1_000_000
MAX_MIN_EVENTS = 1_000_000
MAX_BASELINE_WINDOWS = 168
"""A week of hourly windows."""
MAX_URL_CHARS = 2048
MAX_SECRET_CHARS = 256
MAX_DESCRIPTION_CHARS = 1024
MAX_THRESHOLD_CHARS = 40
MIN_TIME_MS = -62_135_596_800_000
"""0001-01-01T00:00:00Z, the first instant a ``Timestamp`` may hold."""
MAX_TIME_MS = 253_402_300_799_999
"""9999-12-31T23:59:59.999Z, the last."""
ALERT_TYPES = "alert.*"
"""What every rule's filters hide: the rules' own output."""

_KIND_NAMES = {int(k): f"ALERT_KIND_{k.name}" for k in Kind}
_WINDOWED = (Kind.COUNT, Kind.RATE, Kind.ABSENCE, Kind.DROP)
_WITH_BASE = (Kind.RATE, Kind.DROP)
_GROUPS = {
    query_pb2.GROUP_BY_UNSPECIFIED: GroupBy.NONE,
    query_pb2.GROUP_BY_ENTITY: GroupBy.ENTITY,
    query_pb2.GROUP_BY_FLOW: GroupBy.FLOW,
}
_GROUP_WIRE = {group: wire for wire, group in _GROUPS.items()}


@dataclass(frozen=True, slots=True)
class Scope:
    """The entities and flows a caller's key is limited to (empty: the whole account)."""

    entities: tuple[str, ...] = ()
    flows: tuple[str, ...] = ()


def kind_name(kind: Kind | int) -> str:
    return _KIND_NAMES.get(int(kind), str(int(kind)))


# --------------------------------------------------------------------------- wire -> rule


def rule_from_message(
    msg: alerts_pb2.AlertRule, account: str, scope: Scope, now_ms: int, last_position: int
) -> Rule:
    """The rule ``msg`` describes, of ``account``, set now (``now_ms``) on a log whose last
    position is ``last_position``; raises ``invalid(field, problem)`` on the first bad field."""
    name = check_name(msg.name)
    kind = _kind(msg.kind)
    threshold = _threshold(kind, msg.threshold)
    window_s = _window(kind, msg.window_s)
    rule_filter = _filter(msg.filter, "filter", account, scope)
    base: EventFilter | None = None
    if kind in _WITH_BASE:
        if not msg.HasField("base"):
            raise invalid("base", f"required for {kind_name(kind)}: the events the share is taken of")
        base = _filter(msg.base, "base", account, scope)
    min_events = baseline = 0
    if kind in _WITH_BASE:
        if msg.min_events > MAX_MIN_EVENTS:
            raise invalid("min_events", f"{msg.min_events} is over the limit of {MAX_MIN_EVENTS:,}")
        min_events = msg.min_events
    if kind is Kind.DROP:
        if not 1 <= msg.baseline_windows <= MAX_BASELINE_WINDOWS:
            raise invalid(
                "baseline_windows",
                f"{msg.baseline_windows} is out of range 1..{MAX_BASELINE_WINDOWS} for ALERT_KIND_DROP",
            )
        baseline = msg.baseline_windows
    group_by = _GROUPS.get(msg.group_by)
    if group_by is None:
        known = msg.group_by in query_pb2.GroupBy.values()
        shown = query_pb2.GroupBy.Name(msg.group_by) if known else str(msg.group_by)
        raise invalid(
            "group_by", f"{shown} is not a grouping of alerts: GROUP_BY_ENTITY, GROUP_BY_FLOW or unset"
        )
    url = _webhook_url(msg.webhook_url)
    if len(msg.webhook_secret) > MAX_SECRET_CHARS:
        raise invalid(
            "webhook_secret", f"{len(msg.webhook_secret)} characters, over the limit of {MAX_SECRET_CHARS}"
        )
    if msg.webhook_secret and not url:
        raise invalid("webhook_secret", "given without a webhook_url to sign for")
    if len(msg.description) > MAX_DESCRIPTION_CHARS:
        raise invalid(
            "description", f"{len(msg.description)} characters, over the limit of {MAX_DESCRIPTION_CHARS}"
        )
    return Rule(
        account_id=account,
        name=name,
        kind=kind,
        filter=rule_filter,
        threshold=threshold,
        base=base,
        window_s=window_s,
        min_events=min_events,
        baseline_windows=baseline,
        group_by=group_by,
        webhook_url=url,
        webhook_secret=msg.webhook_secret,
        description=msg.description,
        set_at_ms=now_ms,
        set_after_position=last_position,
    )


def keeping_secret(rule: Rule, previous: Rule | None) -> Rule:
    """``rule`` replacing ``previous``: sent without a secret for the same webhook URL, it keeps
    the stored one (the secret is write-only, so a client re-setting a threshold cannot send
    it back; dropping it would leave the webhook unsigned)."""
    if (
        previous is not None
        and not rule.webhook_secret
        and rule.webhook_url
        and rule.webhook_url == previous.webhook_url
    ):
        return replace(rule, webhook_secret=previous.webhook_secret)
    return rule


def _kind(value: int) -> Kind:
    if value == alerts_pb2.ALERT_KIND_UNSPECIFIED:
        raise invalid("kind", f"required: one of {', '.join(_KIND_NAMES.values())}")
    try:
        return Kind(value)
    except ValueError:
        raise invalid("kind", f"{value} is not a known AlertKind (1..{max(Kind)})") from None


def _threshold(kind: Kind, text: str) -> Decimal:
    if kind in (Kind.MATCH, Kind.ABSENCE):
        if text:
            raise invalid("threshold", f"not used by {kind_name(kind)}: leave it empty")
        return Decimal(0)
    if not text:
        raise invalid("threshold", f"required for {kind_name(kind)}")
    if len(text) > MAX_THRESHOLD_CHARS:
        raise invalid("threshold", f"{len(text)} characters, over the limit of {MAX_THRESHOLD_CHARS}")
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise invalid("threshold", f"{text!r} is not a decimal number") from None
    if not value.is_finite():
        raise invalid("threshold", f"{text!r} is not a finite decimal number")
    if kind is Kind.COUNT:
        if value != value.to_integral_value() or not 1 <= value <= MAX_COUNT:
            raise invalid(
                "threshold", f"{text!r}: ALERT_KIND_COUNT takes a whole number of events, 1..{MAX_COUNT:,}"
            )
        return Decimal(int(value))
    if kind in (Kind.RATE, Kind.DROP) and not 0 < value <= 1:
        raise invalid("threshold", f"{text!r}: {kind_name(kind)} takes a share in (0, 1], e.g. 0.2")
    return value


def _window(kind: Kind, window_s: int) -> int:
    if kind not in _WINDOWED:
        return 0
    if window_s == 0:
        raise invalid("window_s", f"required for {kind_name(kind)}: 1..{MAX_WINDOW_S} seconds (30 days)")
    if window_s > MAX_WINDOW_S:
        raise invalid("window_s", f"{window_s} is over the limit of {MAX_WINDOW_S} seconds (30 days)")
    if window_s > MIN_BUCKETS and not any(window_s % n == 0 for n in range(MIN_BUCKETS, 61)):
        # Windows are cut into whole-second buckets that divide them (windows.py): a window
        # with no divisor from 10 to 60 would be a few coarse buckets and count imprecisely.
        nearest = min((w for w in (window_s - window_s % 60, window_s + 60 - window_s % 60) if w), default=60)
        raise invalid(
            "window_s",
            f"{window_s} seconds cannot be cut into {MIN_BUCKETS} to 60 whole-second buckets "
            f"(it has no divisor from {MIN_BUCKETS} to 60); use e.g. {nearest}",
        )
    return window_s


def _filter(message: event_pb2.EventFilter, field: str, account: str, scope: Scope) -> EventFilter:
    """The server's own EventFilter conversion (its errors read as QueryEvents' do, under this
    field's name), within the caller's scope, the alert events hidden."""
    try:
        converted = filter_from_proto(message, account)
    except ValidationError as e:
        name = e.field.replace("filter.", f"{field}.", 1) if e.field.startswith("filter.") else e.field
        raise invalid(name, e.rule) from None
    for i, pattern in enumerate(converted.types):
        if pattern == ALERT_TYPES or pattern.startswith("alert."):
            raise invalid(
                f"{field}.types[{i}]", f"{pattern!r}: alert events are the rules' own output, not counted"
            )
    for name, ms in (("start", converted.start_ms), ("end", converted.end_ms)):
        if ms is not None and not MIN_TIME_MS <= ms <= MAX_TIME_MS:
            raise invalid(f"{field}.{name}", "outside the years 0001..9999 a Timestamp may hold")
    if converted.flow_id == ALERT_FLOW:
        raise invalid(f"{field}.flow_id", f"{ALERT_FLOW!r} is the flow of the rules' own output")
    return replace(
        converted, entity_scope=scope.entities, flow_scope=scope.flows, hidden_types=(ALERT_TYPES,)
    )


def _webhook_url(url: str) -> str:
    if not url:
        return ""
    if len(url) > MAX_URL_CHARS:
        raise invalid("webhook_url", f"{len(url)} characters, over the limit of {MAX_URL_CHARS}")
    problem = f"{url[:80]!r} is not an http:// or https:// URL with a host"
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        raise invalid("webhook_url", f"{url[:80]!r} holds spaces or control characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - a bad port raises here
    except ValueError:
        raise invalid("webhook_url", problem) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise invalid("webhook_url", problem)
    return url


# --------------------------------------------------------------------------- rule -> wire


def message_from_rule(rule: Rule) -> alerts_pb2.AlertRule:
    """The rule as answers show it: never its webhook secret, only whether one is held."""
    message = alerts_pb2.AlertRule(
        name=rule.name,
        kind=int(rule.kind),  # type: ignore[arg-type]
        filter=filter_message(rule.filter),
        threshold="" if rule.kind in (Kind.MATCH, Kind.ABSENCE) else plain_decimal(rule.threshold),
        window_s=rule.window_s,
        min_events=rule.min_events,
        baseline_windows=rule.baseline_windows,
        group_by=_GROUP_WIRE[rule.group_by],
        webhook_url=rule.webhook_url,
        webhook_secret_set=bool(rule.webhook_secret),
        set_after_position=rule.set_after_position,
        description=rule.description,
    )
    if rule.base is not None:
        message.base.CopyFrom(filter_message(rule.base))
    ms_to_timestamp(rule.set_at_ms, message.set_at)
    return message


# --------------------------------------------------------------------------- presets


@dataclass(frozen=True, slots=True)
class Preset:
    """A rule of the product description with thresholds that serve on day one."""

    name: str
    kind: Kind
    types: tuple[str, ...]
    threshold: str = ""
    base_types: tuple[str, ...] = ()
    window_s: int = 0
    min_events: int = 0
    baseline_windows: int = 0
    group_by: GroupBy = GroupBy.NONE
    description: str = ""
    outcomes: tuple[Outcome, ...] = ()
    """Of the counted events (``filter.outcomes``); any when empty."""


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            "delivery-failures",
            Kind.RATE,
            ("recipient.error",),
            "0.35",
            base_types=("recipient.*",),
            window_s=300,
            min_events=30,
            group_by=GroupBy.ENTITY,
            description="A buyer's deliveries end in errors (timeouts, 5xx, refused connections) 35% "
            "of the time or more over 5 minutes (at least 30 deliveries)",
        ),
        Preset(
            "service-down",
            Kind.ABSENCE,
            ("enhancement.success",),
            window_s=300,
            group_by=GroupBy.ENTITY,
            description="An enhancement service has not answered successfully for 5 minutes",
        ),
        Preset(
            "negative-margin",
            Kind.LEAD_MARGIN,
            ("flow.completed",),
            "-0.01",
            outcomes=(Outcome.SUCCESS,),
            description="A lead was sold for less than it cost (its flow completed sold, its "
            "prices summing to a loss)",
        ),
        Preset(
            "source-quality",
            Kind.DROP,
            ("source.accepted",),
            "0.2",
            base_types=("source.submitted",),
            window_s=3600,
            min_events=20,
            baseline_windows=24,
            group_by=GroupBy.ENTITY,
            description="A source's accepted share fell by 0.2 or more below its last 24 hours "
            "(at least 20 leads in the hour)",
        ),
    )
}
"""The four rules of the product description, matched to the simulation's catalog
(``simulation/journey.py``):

| preset | kind, threshold | counts / over | window | one alert per |
| --- | --- | --- | --- | --- |
| delivery-failures | RATE >= 0.35, min 30 | recipient.error / recipient.* | 300 s | buyer |
| service-down | ABSENCE | enhancement.success | 300 s | service |
| negative-margin | LEAD_MARGIN <= -0.01 | flow.completed SUCCESS (sold): the lead's price sum | - | lead |
| source-quality | DROP >= 0.2, min 20 | source.accepted / source.submitted, 24 windows | 3600 s | source |

``recipient.*`` is recipient.delivered, recipient.failed (caps, declines) and
recipient.error (timeouts, 5xx) in the catalog; a buyer is an entity ``rcp_*``, an
enhancement service ``svc_*`` (trustedform, phone_check, email_verify), a source
``src_*``; a flow's last event is ``flow.completed``.
A lead's prices are negative for what it cost (``source.accepted``: the source's
payout) and positive for what it sold for (``recipient.delivered``,
``retry.attempted``), so a sum at ``flow.completed`` below zero is a loss.

Why these thresholds: in the simulated platform's normal traffic a buyer's deliveries
end in ``recipient.failed`` (caps, declines: business as usual) 9-41% of the time and
in ``recipient.error`` 3-11%; an outage turns them into errors. Counting errors only,
at 35% of at least 30 deliveries, a healthy buyer almost never fires and a dead one
does within its first 30 deliveries. A lead that completes unsold is a loss too (about
one in four: the source was paid, no buyer took it), but that is the platform's normal
cost, not an incident: the preset fires on leads sold at a loss (about 6% of sold
leads in the simulation), which is a pricing mistake someone should look at.
"""


def preset_message(
    preset_name: str, name: str = "", webhook_url: str = "", webhook_secret: str = ""
) -> alerts_pb2.AlertRule:
    """The wire form of a preset, named ``name`` (the preset's name when empty); KeyError for an
    unknown preset."""
    p = PRESETS[preset_name]
    message = alerts_pb2.AlertRule(
        name=name or p.name,
        kind=int(p.kind),  # type: ignore[arg-type]
        filter=event_pb2.EventFilter(types=p.types, outcomes=[int(o) for o in p.outcomes]),  # type: ignore[misc]
        threshold=p.threshold,
        window_s=p.window_s,
        min_events=p.min_events,
        baseline_windows=p.baseline_windows,
        group_by=_GROUP_WIRE[p.group_by],
        webhook_url=webhook_url,
        webhook_secret=webhook_secret,
        description=p.description,
    )
    if p.base_types:
        message.base.CopyFrom(event_pb2.EventFilter(types=p.base_types))
    return message


def preset(
    preset_name: str,
    account: str,
    *,
    name: str = "",
    webhook_url: str = "",
    webhook_secret: str = "",
    now_ms: int = 0,
    last_position: int = 0,
    scope: Scope = Scope(),
) -> Rule:
    """A preset as the account's rule, checked as any rule set over the API is."""
    message = preset_message(preset_name, name, webhook_url, webhook_secret)
    return rule_from_message(message, account, scope, now_ms, last_position)


def check_names(names: Sequence[str]) -> None:
    """Raise ``invalid`` unless every one is a rule name (for requests naming rules)."""
    for name in names:
        if not is_name(name):
            raise invalid("name", f"{name[:80]!r} must match ^[a-z0-9][a-z0-9_-]{{0,63}}$")
