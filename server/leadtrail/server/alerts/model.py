"""What an alert rule is, inside the server: the validated form of ``AlertRule``.

The wire form (``leadtrail.v1.AlertRule``) is converted and checked once, when a
rule is set (``rules.py``); everything downstream (the evaluator, the webhook
deliveries, the listing) works on these values, never on protobuf messages.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from decimal import Decimal

from leadtrail.storage import EventFilter

ALERT_FLOW = "alerts"
"""The flow of every alert event."""
ALERT_FIRED = "alert.fired"
ALERT_RESOLVED = "alert.resolved"
ALERT_DELIVERED = "alert.delivered"
ALERT_DELIVERY_FAILED = "alert.delivery_failed"
RULE_LEAD_PREFIX = "rule:"
"""``lead_id`` of an alert that concerns no single lead: ``rule:<name>``."""


class Kind(enum.IntEnum):
    """The wire numbers of ``leadtrail.v1.AlertKind``."""

    MATCH = 1
    COUNT = 2
    RATE = 3
    ABSENCE = 4
    DROP = 5
    LEAD_MARGIN = 6

    @property
    def label(self) -> str:
        """The kind as events and the CLI name it: ``rate``, ``lead_margin``."""
        return self.name.lower()

    @property
    def resolves(self) -> bool:
        """COUNT, RATE, ABSENCE and DROP fire while a condition holds and resolve when it
        clears; MATCH and LEAD_MARGIN fire once per event and never resolve."""
        return self not in (Kind.MATCH, Kind.LEAD_MARGIN)


class GroupBy(enum.Enum):
    NONE = ""
    ENTITY = "entity"
    FLOW = "flow"


@dataclass(frozen=True, slots=True)
class Rule:
    account_id: str
    name: str
    kind: Kind
    filter: EventFilter
    """The events the rule counts (its ``account_id`` is the rule's)."""
    threshold: Decimal
    base: EventFilter | None = None
    """The denominator of RATE and DROP."""
    window_s: int = 0
    min_events: int = 0
    baseline_windows: int = 0
    group_by: GroupBy = GroupBy.NONE
    webhook_url: str = ""
    webhook_secret: str = field(default="", repr=False)
    """Write-only over the API: kept here for signing, never answered (nor printed with the rule)."""
    description: str = ""
    set_at_ms: int = 0
    set_after_position: int = 0
    """The rule counts events committed after this position (the log's last when set)."""
    revision: int = 0
    """Given by the rule book, one more on every set of any rule: no two sets share it."""

    @property
    def key(self) -> tuple[str, str]:
        return self.account_id, self.name

    @property
    def version(self) -> str:
        """Changes whenever the rule is set again (even twice in one millisecond with no
        commit between: the revision): state kept for an older version is dropped."""
        return f"{self.revision}:{self.set_after_position}:{self.set_at_ms}"

    def group_of(self, entity_id: str, flow_id: str) -> str:
        if self.group_by is GroupBy.ENTITY:
            return entity_id
        if self.group_by is GroupBy.FLOW:
            return flow_id
        return ""


@dataclass(frozen=True, slots=True)
class FiringAlert:
    """An alert firing now, as the evaluator knows it (ListAlerts, /metrics)."""

    account_id: str
    rule: str
    group: str
    kind: Kind
    fired_at_ms: int
    value: Decimal
    event_id: str
    """Its ``alert.fired`` event."""
    lead_id: str
    reason: str
