"""Alert rules applied to committed events: rules and events in, firings and resolutions out.

Pure logic: no I/O, no clock of its own, no asyncio. ``alerting`` feeds it the log's
events in position order (``handle``), the time about every second (``tick``: server
time, the wall clock once caught up with the log), and, for LEAD_MARGIN, the price sums
of leads it does not hold (``needed_leads`` then ``hold_lead``); it appends what comes out.

What each kind does (API.md § Alerts):

- COUNT: matching events in the window >= threshold fires; < threshold resolves.
- RATE: matching ÷ base events in the window >= threshold, with base >= min_events.
- DROP: the share (matching ÷ base) of the newest window fell by >= threshold below the
  share of the ``baseline_windows`` windows before it (both with base >= min_events).
- ABSENCE: a group that had a matching event and then none for ``window_s`` (the server's
  ``recorded_at`` of the last one against the clock, checked by ``tick``); a matching event
  resolves.
- MATCH: every matching event fires (never resolves).
- LEAD_MARGIN: a matching event whose lead's price sum over all the account's events at
  positions up to it is <= threshold fires (never resolves).

Windows slide on event ``timestamp`` (``windows.Buckets``), taken no further ahead than
``MAX_SKEW_MS`` past the event's ``recorded_at`` (one event stamped a year ahead would
otherwise move the window there and blind the rule). Event time and the clock never mix:
a window's head moves with events only. A firing COUNT, RATE or DROP group resolves by
time when its newest event (matching or base) was recorded a window or more before the
tick's ``now`` (everything in its window was then recorded longer than a window ago: the
window is cleared), so an alert resolves when traffic stops, whatever the clients' clocks.
A rule counts only its account's events committed after it was set
(``Rule.set_after_position``); the server's own events (types ``audit.``, ``alert.``,
``export.``: submission refuses them from clients) never count. Only the type tells them
apart: a client's event of an ordinary type counts whatever its flow (``audit`` and
``alerts`` included).

Memory is bounded: at most ``MAX_GROUPS`` (10,000) groups per rule, and at most
``MAX_RULE_BUCKETS`` window buckets per rule (16 MB of counts). A group holds 8 bytes a
bucket (up to 60 buckets a window: ~480 bytes for COUNT and RATE, ``1 + baseline_windows``
times that for DROP: ~12 KB for 24 hourly baseline windows, so such a rule holds at most
~1,300 groups) plus ~1.5 KB (the group's objects and value, its last ``SAMPLES`` event
ids, the firing record; measured: ~1.9 KB a COUNT group in all): at most ~20 MB per
COUNT or RATE rule, ~35 MB per DROP rule. A new group past the bound evicts
the group seen least recently that is not firing; when all of them fire, the new group
is not tracked (``Evaluator.refused`` counts it) rather than lose a firing alert's
resolution. ABSENCE never evicts (the longest-silent group is the one about to fire):
a new group past its bound is refused and counted. The saved state holds each group's
counts compressed (``Buckets.state``), encoded again only for groups changed since the
last save.
LEAD_MARGIN holds at most ``MAX_LEADS`` lead sums and as many tallies of leads seen
(~200 bytes each), least recently used evicted. A lead it does not hold is looked up:
when the log's index counts no more events of the lead than the evaluator saw, the
tally is the sum (a new lead: the common case, one index lookup); otherwise the lead's
events are read from the log.

Replays: after a crash the events after the saved position come again. ``expect`` takes
the alert events the log already holds after that position; an emission equal to the
next one expected for its rule and group (same type and rule version) is returned with
``done`` set and that event's id, so the caller does not append it twice. The alert
events of its rules met in the stream are applied (``_apply_alert``): one it did not
produce (a resolution by time, a firing by time, written by the run before the crash at
a clock the replay cannot see) resolves or fires the group as the log says, so the
replay ends in the state the log records; its own events coming back are no-ops.

A rule set again (a new version) or deleted closes its firing groups: an
``alert.resolved`` (details ``cause``: ``rule_changed``) each, written on the next tick
and saved with the state until then, so no alert stays open in the log.
"""

from __future__ import annotations

import logging
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from leadtrail.storage import SERVER_TYPE_PREFIXES, Event, EventFilter, Outcome, new_event_id

from .model import ALERT_FIRED, ALERT_FLOW, ALERT_RESOLVED, RULE_LEAD_PREFIX, FiringAlert, Kind, Rule
from .windows import Buckets

MAX_GROUPS = 10_000
"""Groups held per rule (see the module's docstring for what one holds)."""
MAX_RULE_BUCKETS = 2_000_000
"""Window buckets held per rule (8 bytes each: 16 MB): a rule whose groups hold many
buckets (DROP with a long baseline) holds fewer groups than ``MAX_GROUPS``."""
MIN_GROUPS = 100
MAX_LEADS = 100_000
"""Lead price sums held for LEAD_MARGIN rules, all accounts together."""
SAMPLES = 5
"""Event ids an alert event names in ``details.sample_event_ids``."""
MAX_SKEW_MS = 300_000
"""How far past its ``recorded_at`` an event's ``timestamp`` may place it in a window."""
STATE_FORMAT = 2
SHARE_PLACES = Decimal("0.0001")
MAX_CACHED_TYPES = 4096
RULE_CHANGED = "rule_changed"
"""``details.cause`` of the resolution of an alert whose rule was set again or deleted."""

log = logging.getLogger("leadtrail.server")
_WINDOWED = (Kind.COUNT, Kind.RATE, Kind.DROP)
_BASED = (Kind.RATE, Kind.DROP)


@dataclass(slots=True)
class Emission:
    """An ``alert.fired`` or ``alert.resolved`` to append (unless ``done``)."""

    rule: Rule
    type: str
    group: str
    lead_id: str
    value: Decimal
    reason: str
    samples: list[str]
    position: int
    timestamp_ms: int
    event_id: str
    fired_event_id: str = ""
    done: bool = False
    """The log already holds it (a replay after a crash): not to be appended again."""
    version: str = ""
    """The rule version it belongs to (an older one for a rule set again since)."""
    cause: str = ""

    def event(self) -> Event:
        rule = self.rule
        details: dict[str, Any] = {
            "rule": rule.name,
            "kind": rule.kind.label,
            "group": self.group,
            "value": str(self.value),
            "threshold": str(rule.threshold),
            "window_s": rule.window_s,
            "sample_event_ids": self.samples[-SAMPLES:],
            "position": self.position,
            "rule_version": self.version or rule.version,
        }
        if self.type == ALERT_RESOLVED:
            details["fired_event_id"] = self.fired_event_id
        if self.cause:
            details["cause"] = self.cause
        return Event(
            type=self.type,
            lead_id=self.lead_id,
            flow_id=ALERT_FLOW,
            id=self.event_id,
            timestamp_ms=self.timestamp_ms,
            entity_id=self.group,
            outcome=Outcome.FAILURE if self.type == ALERT_FIRED else Outcome.SUCCESS,
            reason=self.reason,
            details=details,
            account_id=rule.account_id,
        )


@dataclass(frozen=True, slots=True)
class LeadQuestion:
    """A lead whose price sum before a batch a LEAD_MARGIN rule needs."""

    account_id: str
    lead_id: str
    known_events: int
    """Events of the lead this evaluator saw, up to the end of the batch."""
    known_sum: Decimal
    """Their price sum before the batch: the sum, if the log holds no other event of the lead."""


class Tally:
    """What the evaluator saw of a lead whose sum it does not hold."""

    __slots__ = ("events", "total")

    def __init__(self) -> None:
        self.events = 0
        self.total = Decimal(0)


@dataclass(slots=True)
class Closing:
    """The resolution owed to a firing group of a rule set again or deleted."""

    rule: Rule
    """The rule as it was (its name, kind, threshold and window go in the event)."""
    version: str
    group: str
    fired_event_id: str
    value: Decimal
    reason: str
    samples: list[str]

    def json(self) -> list[Any]:
        r = self.rule
        return [
            r.account_id,
            r.name,
            self.version,
            int(r.kind),
            str(r.threshold),
            r.window_s,
            self.group,
            self.fired_event_id,
            str(self.value),
            self.reason,
        ]

    @classmethod
    def from_json(cls, raw: list[Any]) -> Closing:
        account, name, version, kind, threshold, window_s, group, fired_id, value, reason = raw
        return cls(
            _former_rule(account, name, kind, threshold, window_s),
            version,
            group,
            fired_id,
            Decimal(value),
            reason,
            [],
        )


def _former_rule(account: str, name: str, kind: int, threshold: str, window_s: int) -> Rule:
    """What an alert event says of a rule no longer in force."""
    return Rule(
        account_id=account,
        name=name,
        kind=Kind(kind),
        filter=EventFilter(account_id=account),
        threshold=Decimal(threshold),
        window_s=int(window_s),
    )


class Group:
    """One rule's state for one group value."""

    __slots__ = ("buckets", "fired", "last_seen_ms", "name", "recorded_ms", "samples", "saved")

    def __init__(self, name: str, buckets: Buckets | None) -> None:
        self.name = name
        self.buckets = buckets
        self.last_seen_ms = -1
        """ABSENCE: the ``recorded_at`` of the last matching event."""
        self.recorded_ms = -1
        """COUNT, RATE, DROP: the ``recorded_at`` of the newest event counted."""
        self.samples: deque[str] = deque(maxlen=SAMPLES)
        self.fired: FiringAlert | None = None
        self.saved: list[Any] | None = None
        """Its saved form as of the last ``state``; None once it changed since."""


class RuleState:
    """A rule and its groups: ``idle`` in least-recently-seen order, ``firing`` apart."""

    def __init__(self, rule: Rule) -> None:
        self.idle: OrderedDict[str, Group] = OrderedDict()
        self.firing: dict[str, Group] = {}
        self.refused = 0
        """Events of a new group not tracked (the rule holds as many groups as it may)."""
        self.take(rule)

    def take(self, rule: Rule) -> None:
        """``rule`` (a new one, or the same version again) and what is derived from it once
        rather than per event: whether the filters need more than the type index checked, the
        threshold as an integer ratio (exact comparisons in integers)."""
        self.rule = rule
        self.windows = 1 + rule.baseline_windows if rule.kind is Kind.DROP else 1
        span = Buckets(rule.window_s, self.windows).span if rule.kind in _WINDOWED else 1
        self.max_groups = max(MIN_GROUPS, min(MAX_GROUPS, MAX_RULE_BUCKETS // span))
        self.by_type_only = _by_type_only(rule.filter)
        self.base_by_type_only = rule.base is not None and _by_type_only(rule.base)
        self.num, self.den = rule.threshold.as_integer_ratio()
        self.least = max(1, rule.min_events)

    def group(self, name: str, max_groups: int) -> Group | None:
        """The group, made when new (evicting the least recently seen idle group when the
        rule holds ``max_groups``); None when every held group is firing, and for ABSENCE
        whenever the rule holds ``max_groups`` (its least recently seen group is the one
        whose absence is due: evicting it would lose that alert)."""
        g = self.idle.get(name)
        if g is not None:
            self.idle.move_to_end(name)
            return g
        g = self.firing.get(name)
        if g is not None:
            return g
        if len(self.idle) + len(self.firing) >= min(max_groups, self.max_groups):
            if not self.idle or self.rule.kind is Kind.ABSENCE:
                return None
            self.idle.popitem(last=False)
        rule = self.rule
        buckets = Buckets(rule.window_s, self.windows) if rule.kind in _WINDOWED else None
        g = self.idle[name] = Group(name, buckets)
        return g

    def fire(self, g: Group, alert: FiringAlert) -> None:
        g.fired = alert
        g.saved = None
        self.idle.pop(g.name, None)
        self.firing[g.name] = g

    def resolve(self, g: Group) -> None:
        g.fired = None
        g.saved = None
        self.firing.pop(g.name, None)
        self.idle[g.name] = g


Candidates = tuple[tuple[RuleState, bool, bool], ...]
"""The rules an event type may concern: (state, the filter may match, the base may match)."""


def _type_fits(f: EventFilter | None, event_type: str) -> bool:
    if f is None:
        return False
    if not f.types:
        return True
    for pattern in f.types:
        if pattern.endswith(".*"):
            if event_type.startswith(pattern[:-1]):
                return True
        elif event_type == pattern:
            return True
    return False


def _by_type_only(f: EventFilter) -> bool:
    """Whether ``f`` asks nothing but the account and the type (which the type index checks).
    Hidden server types (every rule hides ``alert.*``) ask nothing more: ``handle`` never
    evaluates the server's own events."""
    return not (
        f.lead_id
        or f.flow_id
        or f.entity_id
        or f.outcomes
        or f.start_ms is not None
        or f.end_ms is not None
        or f.entity_scope
        or f.flow_scope
        or f.where
        or any(not pattern.startswith(SERVER_TYPE_PREFIXES) for pattern in f.hidden_types)
    )


def _group_phrase(group: str) -> str:
    return f" for {group}" if group else ""


def _share(m: int, b: int) -> Decimal:
    return (Decimal(m) / Decimal(b)).quantize(SHARE_PLACES) if b else Decimal(0)


class Evaluator:
    def __init__(
        self,
        rules: Iterable[Rule] = (),
        *,
        max_groups: int = MAX_GROUPS,
        max_leads: int = MAX_LEADS,
        new_id: Callable[[], str] = new_event_id,
    ) -> None:
        self.max_groups = max_groups
        self.max_leads = max_leads
        self._new_id = new_id
        self._states: dict[tuple[str, str], RuleState] = {}
        self._by_type: dict[str, Candidates] = {}
        self._margin_types: dict[str, bool] = {}
        self._margin_accounts: frozenset[str] = frozenset()
        self._sums: OrderedDict[tuple[str, str], Decimal] = OrderedDict()
        self._seen: OrderedDict[tuple[str, str], Tally] = OrderedDict()
        self._expected: dict[tuple[str, str, str], deque[Event]] = {}
        self._expected_ids: dict[str, tuple[str, str, str]] = {}
        self._own: set[str] = set()
        """Ids of the alert events emitted and not yet met in the stream."""
        self._closing: list[Closing] = []
        self.position = 0
        """Every event up to here is evaluated."""
        self.set_rules(rules)

    # -- rules -------------------------------------------------------------------------------------

    def set_rules(self, rules: Iterable[Rule]) -> None:
        """Take up the rules now in force: a rule set again (a new version) starts afresh,
        a deleted rule's state is dropped; the firing groups of both are closed by the next
        ``tick`` (an ``alert.resolved`` each)."""
        states: dict[tuple[str, str], RuleState] = {}
        for rule in rules:
            kept = self._states.get(rule.key)
            if kept is not None and kept.rule.version == rule.version:
                kept.take(rule)
                states[rule.key] = kept
            else:
                states[rule.key] = RuleState(rule)
        for key, old in self._states.items():
            if states.get(key) is not old:
                how = "replaced" if key in states else "deleted"
                for g in old.firing.values():
                    self._close(old.rule, old.rule.version, g, how)
        self._states = states
        self._by_type = {}
        self._margin_types = {}
        self._margin_accounts = frozenset(
            s.rule.account_id for s in states.values() if s.rule.kind is Kind.LEAD_MARGIN
        )
        if not self._margin_accounts:
            self._sums.clear()
            self._seen.clear()

    @property
    def rules(self) -> list[Rule]:
        return [s.rule for s in self._states.values()]

    def _candidates(self, event_type: str) -> Candidates:
        """The rules whose filter or base may match this type: worked out once per type (exact
        types and ``x.*`` prefixes alike) and kept, so an event costs one dict lookup here."""
        found = self._by_type.get(event_type)
        if found is None:
            chosen = []
            for s in self._states.values():
                f = _type_fits(s.rule.filter, event_type)
                b = s.rule.kind in _BASED and _type_fits(s.rule.base, event_type)
                if f or b:
                    chosen.append((s, f, b))
            if len(self._by_type) >= MAX_CACHED_TYPES:
                self._by_type.clear()
            found = self._by_type[event_type] = tuple(chosen)
        return found

    # -- events ------------------------------------------------------------------------------------

    def needed_leads(self, events: Sequence[Event]) -> list[LeadQuestion]:
        """The LEAD_MARGIN matches in ``events`` whose lead's sum is not held: the caller
        finds each one's sum over the events before ``events[0]`` (``hold_lead``). What this
        evaluator saw of the lead comes with the question: when the log holds no more events
        of the lead than that (``known_events``), ``known_sum`` is the answer."""
        margin = self._margin_accounts
        if not margin:
            return []
        margin_type = self._margin_types.get
        sums = self._sums
        needed: dict[tuple[str, str], None] = {}
        for e in events:
            # Most events are of a type no LEAD_MARGIN rule looks at: one dict lookup each.
            fits = margin_type(e.type)
            if fits is None:
                fits = self._margin_type(e.type)
            if not fits or e.account_id not in margin or (e.account_id, e.lead_id) in sums:
                continue
            for s, f, _ in self._candidates(e.type):
                rule = s.rule
                if (
                    f
                    and rule.kind is Kind.LEAD_MARGIN
                    and e.account_id == rule.account_id
                    and e.position > rule.set_after_position
                    and (s.by_type_only or rule.filter.matches(e))
                ):
                    needed[(e.account_id, e.lead_id)] = None
                    break
        if not needed:
            return []
        in_batch = dict.fromkeys(needed, 0)
        for e in events:
            key = (e.account_id, e.lead_id)
            if key in in_batch:
                in_batch[key] += 1
        questions = []
        for key in needed:
            tally = self._seen.get(key)
            seen, total = (tally.events, tally.total) if tally is not None else (0, Decimal(0))
            questions.append(LeadQuestion(key[0], key[1], seen + in_batch[key], total))
        return questions

    def _margin_type(self, event_type: str) -> bool:
        """Whether a LEAD_MARGIN rule's filter may match this type (kept, like ``_candidates``)."""
        fits = any(f and s.rule.kind is Kind.LEAD_MARGIN for s, f, _ in self._candidates(event_type))
        if len(self._margin_types) >= MAX_CACHED_TYPES:
            self._margin_types.clear()
        self._margin_types[event_type] = fits
        return fits

    def hold_lead(self, account_id: str, lead_id: str, total: Decimal) -> None:
        """The price sum of the lead's events up to the position evaluated so far."""
        key = (account_id, lead_id)
        self._sums[key] = total
        self._sums.move_to_end(key)
        self._seen.pop(key, None)
        while len(self._sums) > self.max_leads:
            self._sums.popitem(last=False)

    def handle(self, events: Sequence[Event], now_ms: int) -> list[Emission]:
        out: list[Emission] = []
        margin = self._margin_accounts
        by_type = self._by_type.get
        on_event = self._on_event
        for e in events:
            self.position = e.position
            event_type = e.type
            if event_type.startswith(SERVER_TYPE_PREFIXES):
                if e.flow_id == ALERT_FLOW and event_type in (ALERT_FIRED, ALERT_RESOLVED):
                    self._apply_alert(e)
                if margin and e.account_id in margin:  # the index counts these among a lead's events
                    self._add_price((e.account_id, e.lead_id), "")
                continue
            if margin and e.account_id in margin:
                self._add_price((e.account_id, e.lead_id), e.price)
            candidates = by_type(event_type)
            if candidates is None:
                candidates = self._candidates(event_type)
            for s, f, b in candidates:
                rule = s.rule
                if e.account_id != rule.account_id or e.position <= rule.set_after_position:
                    continue
                m = f and (s.by_type_only or rule.filter.matches(e))
                n = b and (s.base_by_type_only or (rule.base is not None and rule.base.matches(e)))
                if m or n:
                    on_event(s, e, m, n, now_ms, out)
        return out

    def _add_price(self, key: tuple[str, str], price: str) -> None:
        """Every event of an account with LEAD_MARGIN rules: a held sum grows by its price;
        a lead not held is tallied (events and prices seen since this evaluator started)."""
        try:
            amount = Decimal(price) if price else None
        except InvalidOperation:
            amount = None
        total = self._sums.get(key)
        if total is not None:
            if amount is not None:
                self._sums[key] = total + amount
            return
        tally = self._seen.get(key)
        if tally is None:
            tally = self._seen[key] = Tally()
            if len(self._seen) > self.max_leads:
                self._seen.popitem(last=False)
        else:
            self._seen.move_to_end(key)
        tally.events += 1
        if amount is not None:
            tally.total += amount

    def _on_event(self, s: RuleState, e: Event, m: bool, n: bool, now_ms: int, out: list[Emission]) -> None:
        rule = s.rule
        kind = rule.kind
        group = rule.group_of(e.entity_id, e.flow_id)
        if kind is Kind.MATCH:
            reason = f"Event {e.type} of lead {e.lead_id} matched rule {rule.name}{_group_phrase(group)}."
            self._emit(
                out, rule, ALERT_FIRED, group, e.lead_id, Decimal(1), reason, [e.id], e.position, now_ms
            )
            return
        if kind is Kind.LEAD_MARGIN:
            total = self._sums.get((e.account_id, e.lead_id))
            if total is not None and total <= rule.threshold:
                reason = (
                    f"Lead {e.lead_id} has a price sum of {total} at {e.type}, "
                    f"at or below {rule.threshold} (rule {rule.name})."
                )
                self._emit(
                    out, rule, ALERT_FIRED, group, e.lead_id, total, reason, [e.id], e.position, now_ms
                )
            return
        g = s.idle.get(group)
        if g is not None:  # the usual case, inlined from RuleState.group
            s.idle.move_to_end(group)
        else:
            g = s.group(group, self.max_groups)
        if g is None:
            if not s.refused:
                log.warning(
                    "alerts: rule %s of account %s holds %d groups: new groups are not tracked",
                    rule.name,
                    rule.account_id,
                    len(s.idle) + len(s.firing),
                )
            s.refused += 1
            return
        g.saved = None
        if m:
            g.samples.append(e.id)
        ts = e.timestamp_ms or 0
        recorded = e.recorded_at_ms or ts
        if kind is Kind.ABSENCE:
            if not m:
                return
            if recorded > g.last_seen_ms:
                g.last_seen_ms = recorded
            if g.fired is not None:
                reason = f"Events matching rule {rule.name}{_group_phrase(group)} arrive again ({e.type})."
                self._resolve(out, s, g, Decimal(0), reason, e.position, now_ms)
            return
        if recorded > g.recorded_ms:
            g.recorded_ms = recorded
        if ts > recorded + MAX_SKEW_MS:
            ts = recorded + MAX_SKEW_MS
        assert g.buckets is not None
        g.buckets.add(ts, 1 if m else 0, 1 if n else 0)
        holds = self._holds(s, g)
        if holds is (g.fired is None):  # a change of state: fire or resolve (else nothing to do)
            self._check(out, s, g, e.position, now_ms)

    def _check(self, out: list[Emission], s: RuleState, g: Group, position: int, now_ms: int) -> None:
        """Fire or resolve a windowed group as its newest window now stands."""
        holds = self._holds(s, g)
        if holds and g.fired is None:
            value = self._value(s.rule, g)
            self._fire(out, s, g, value, self._reason(s.rule, g, value, True), position, now_ms)
        elif not holds and g.fired is not None:
            value = self._value(s.rule, g)
            self._resolve(out, s, g, value, self._reason(s.rule, g, value, False), position, now_ms)

    @staticmethod
    def _holds(s: RuleState, g: Group) -> bool:
        """The condition, exactly, in integers (threshold = num / den, den > 0)."""
        assert g.buckets is not None
        m, b = g.buckets.win
        kind = s.rule.kind
        if kind is Kind.COUNT:
            return m * s.den >= s.num
        if b < s.least:
            return False
        if kind is Kind.RATE:
            return m * s.den >= s.num * b
        em, eb = g.buckets.earlier  # DROP: earlier share - current share >= threshold
        if eb < s.least:
            return False
        return (em * b - m * eb) * s.den >= s.num * eb * b

    @staticmethod
    def _value(rule: Rule, g: Group) -> Decimal:
        """What the alert event reports: the count, the share, or the fall of the share."""
        assert g.buckets is not None
        m, b = g.buckets.win
        if rule.kind is Kind.COUNT:
            return Decimal(m)
        if rule.kind is Kind.RATE:
            return _share(m, b)
        em, eb = g.buckets.earlier
        return _share(em, eb) - _share(m, b) if b and eb else Decimal(0)

    @staticmethod
    def _reason(rule: Rule, g: Group, value: Decimal, firing: bool) -> str:
        where = _group_phrase(g.name)
        kind = rule.kind
        if kind is Kind.COUNT:
            what = f"{value} events matching rule {rule.name}{where} in {rule.window_s} s"
        elif kind is Kind.RATE:
            what = f"The share of events matching rule {rule.name}{where} in {rule.window_s} s is {value}"
        else:
            what = (
                f"The share of events matching rule {rule.name}{where} fell by {value} "
                f"below its share over the {rule.baseline_windows} windows of {rule.window_s} s before"
            )
        if firing:
            return f"{what}, at or above the threshold {rule.threshold}."
        return f"{what}, back below the threshold {rule.threshold}."

    # -- time --------------------------------------------------------------------------------------

    def tick(self, now_ms: int) -> list[Emission]:
        """What time decides at ``now_ms`` (server time, like ``recorded_at``): the closing
        resolutions of changed rules, firing windowed groups whose newest event was
        recorded a window ago or more, absences that are due."""
        out: list[Emission] = []
        if self._closing:
            closing, self._closing = self._closing, []
            for c in closing:
                emission = self._emit(
                    out,
                    c.rule,
                    ALERT_RESOLVED,
                    c.group,
                    RULE_LEAD_PREFIX + c.rule.name,
                    c.value,
                    c.reason,
                    c.samples,
                    self.position,
                    now_ms,
                    c.version,
                )
                emission.fired_event_id = c.fired_event_id
                emission.cause = RULE_CHANGED
        for s in self._states.values():
            rule = s.rule
            if rule.kind in _WINDOWED:
                if not s.firing:
                    continue
                stale = now_ms - rule.window_s * 1000
                for g in list(s.firing.values()):
                    if g.recorded_ms <= stale:
                        assert g.buckets is not None
                        g.buckets.clear()
                        g.saved = None
                        self._check(out, s, g, self.position, now_ms)
            elif rule.kind is Kind.ABSENCE:
                due = now_ms - rule.window_s * 1000
                for g in list(s.idle.values()):
                    if 0 <= g.last_seen_ms <= due:
                        silent = Decimal((now_ms - g.last_seen_ms) // 1000)
                        reason = (
                            f"No event matching rule {rule.name}{_group_phrase(g.name)} "
                            f"for {silent} s (window {rule.window_s} s)."
                        )
                        self._fire(out, s, g, silent, reason, self.position, now_ms)
        return out

    def _close(self, rule: Rule, version: str, g: Group, how: str) -> None:
        """Owe a resolution to a firing group of a rule set again or deleted."""
        assert g.fired is not None
        value = self._value(rule, g) if g.buckets is not None else Decimal(0)
        reason = f"Rule {rule.name} was {how}: its alert{_group_phrase(g.name)} is closed."
        self._closing.append(Closing(rule, version, g.name, g.fired.event_id, value, reason, list(g.samples)))

    def _apply_alert(self, e: Event) -> None:
        """An alert event met in the stream: its own (no-op), or one the run before a crash
        wrote at a moment this replay does not reproduce: the group as the log says."""
        if e.id in self._own:
            self._own.discard(e.id)
            return
        key = self._expected_ids.pop(e.id, None)
        if key is not None:
            queue = self._expected.get(key)
            if queue is not None:
                for i, expected in enumerate(queue):
                    if expected.id == e.id:
                        del queue[i]
                        break
                if not queue:
                    del self._expected[key]
        details = e.details
        s = self._states.get((e.account_id, str(details.get("rule", ""))))
        if s is None or details.get("rule_version") != s.rule.version or not s.rule.kind.resolves:
            return
        rule = s.rule
        if e.type == ALERT_RESOLVED:
            g = s.firing.get(e.entity_id)
            if g is not None and g.fired is not None and g.fired.event_id == details.get("fired_event_id"):
                if g.buckets is not None:
                    g.buckets.clear()
                s.resolve(g)
            return
        g = s.firing.get(e.entity_id) or s.group(e.entity_id, self.max_groups)
        if g is None or g.fired is not None:
            return
        if e.recorded_at_ms > g.recorded_ms:  # counts were recorded up to its firing, at least
            g.recorded_ms = e.recorded_at_ms
        try:
            value = Decimal(str(details.get("value", "0")))
        except InvalidOperation:
            value = Decimal(0)
        s.fire(
            g,
            FiringAlert(
                account_id=rule.account_id,
                rule=rule.name,
                group=g.name,
                kind=rule.kind,
                fired_at_ms=e.timestamp_ms or 0,
                value=value,
                event_id=e.id,
                lead_id=e.lead_id,
                reason=e.reason,
            ),
        )

    # -- emissions ---------------------------------------------------------------------------------

    def _fire(
        self,
        out: list[Emission],
        s: RuleState,
        g: Group,
        value: Decimal,
        reason: str,
        position: int,
        now_ms: int,
    ) -> None:
        rule = s.rule
        lead = RULE_LEAD_PREFIX + rule.name
        emission = self._emit(
            out, rule, ALERT_FIRED, g.name, lead, value, reason, list(g.samples), position, now_ms
        )
        s.fire(
            g,
            FiringAlert(
                account_id=rule.account_id,
                rule=rule.name,
                group=g.name,
                kind=rule.kind,
                fired_at_ms=emission.timestamp_ms,
                value=value,
                event_id=emission.event_id,
                lead_id=lead,
                reason=reason,
            ),
        )

    def _resolve(
        self,
        out: list[Emission],
        s: RuleState,
        g: Group,
        value: Decimal,
        reason: str,
        position: int,
        now_ms: int,
    ) -> None:
        rule = s.rule
        assert g.fired is not None
        fired_id = g.fired.event_id
        lead = RULE_LEAD_PREFIX + rule.name
        emission = self._emit(
            out, rule, ALERT_RESOLVED, g.name, lead, value, reason, list(g.samples), position, now_ms
        )
        emission.fired_event_id = fired_id
        s.resolve(g)

    def _emit(
        self,
        out: list[Emission],
        rule: Rule,
        type: str,
        group: str,
        lead_id: str,
        value: Decimal,
        reason: str,
        samples: list[str],
        position: int,
        now_ms: int,
        version: str = "",
    ) -> Emission:
        version = version or rule.version
        emission = Emission(
            rule, type, group, lead_id, value, reason, samples, position, now_ms, "", version=version
        )
        key = (rule.account_id, rule.name, group)
        queue = self._expected.get(key)
        if queue:
            head = queue[0]
            if head.type == type and head.details.get("rule_version") == version:
                queue.popleft()
                if not queue:
                    del self._expected[key]
                self._expected_ids.pop(head.id, None)
                emission.done = True
                emission.event_id = head.id
                emission.timestamp_ms = head.timestamp_ms or now_ms
        if not emission.event_id:
            emission.event_id = self._new_id()
        self._own.add(emission.event_id)
        out.append(emission)
        return emission

    def expect(self, alert_events: Iterable[Event]) -> None:
        """Alert events the log holds after the saved position (in position order). A
        closing resolution owed (saved before it was written) that the log holds is not
        owed any more."""
        self._expected.clear()
        self._expected_ids.clear()
        written: set[tuple[str, str, str, str, str]] = set()
        for e in alert_events:
            if e.type not in (ALERT_FIRED, ALERT_RESOLVED) or e.flow_id != ALERT_FLOW:
                continue
            if e.id in self._own:  # emitted before the save: the state already holds it
                continue
            key = (e.account_id, str(e.details.get("rule", "")), e.entity_id)
            self._expected.setdefault(key, deque()).append(e)
            self._expected_ids[e.id] = key
            if e.type == ALERT_RESOLVED:
                version, fired = e.details.get("rule_version", ""), e.details.get("fired_event_id", "")
                written.add((*key, str(version), str(fired)))
        if written and self._closing:
            self._closing = [
                c
                for c in self._closing
                if (c.rule.account_id, c.rule.name, c.group, c.version, c.fired_event_id) not in written
            ]

    # -- reading -----------------------------------------------------------------------------------

    def firing(self, account_id: str | None = None) -> list[FiringAlert]:
        """The alerts firing now (COUNT, RATE, ABSENCE, DROP: MATCH and LEAD_MARGIN firings
        are moments, not states), by account, rule and group."""
        found = [
            g.fired
            for s in self._states.values()
            if account_id is None or s.rule.account_id == account_id
            for g in s.firing.values()
            if g.fired is not None
        ]
        return sorted(found, key=lambda a: (a.account_id, a.rule, a.group))

    def groups(self, account_id: str, name: str) -> int:
        s = self._states.get((account_id, name))
        return 0 if s is None else len(s.idle) + len(s.firing)

    @property
    def refused(self) -> dict[tuple[str, str], int]:
        """Per (account, rule): events of new groups not tracked since the rule was set."""
        return {key: s.refused for key, s in self._states.items() if s.refused}

    # -- saving ------------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """Compact JSON: per rule its version (and what its events say of it) and its
        groups' buckets, recorded and last seen times and firing record, and the closing
        resolutions owed (sample ids and lead sums are not saved: hints, re-learned).

        Cheap enough for the event loop: a group's saved form is made again only when the
        group changed since the last call (its counts copied and compressed in C); the
        lists returned are never changed afterwards, so they may be encoded elsewhere."""
        rules = []
        for s in self._states.values():
            groups = []
            for g in (*s.idle.values(), *s.firing.values()):
                saved = g.saved
                if saved is None:
                    saved = g.saved = _group_json(g)
                groups.append(saved)
            r = s.rule
            rules.append([r.account_id, r.name, r.version, int(r.kind), str(r.threshold), r.window_s, groups])
        # The alert events emitted and not yet met in the stream go with the state that already
        # reflects them: after a restore they are read back as this evaluator's own, not applied
        # again as another run's (which would fire again, or forget a window's counts).
        return {
            "format": STATE_FORMAT,
            "rules": rules,
            "closing": [c.json() for c in self._closing],
            "own": sorted(self._own),
        }

    def restore(self, state: Any, rules: Iterable[Rule], position: int) -> None:
        """Start again from a saved state (None: nothing saved) with the rules in force. The
        firing groups of a saved rule since set again or deleted are closed on the next tick."""
        self._states = {}
        self._sums.clear()
        self._seen.clear()
        self._own.clear()
        self._closing = []
        self.set_rules(rules)
        self.position = position
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            return
        for account_id, name, version, kind, threshold, window_s, groups in state.get("rules", ()):
            s = self._states.get((account_id, name))
            if s is None or s.rule.version != version:
                former = RuleState(_former_rule(account_id, name, kind, threshold, window_s))
                how = "deleted" if s is None else "replaced"
                for raw in groups:
                    g = _group_from(former, raw)
                    if g.fired is not None:
                        self._close(former.rule, version, g, how)
                continue
            for raw in groups:
                g = _group_from(s, raw)
                if g.fired is not None:
                    s.firing[g.name] = g
                else:
                    s.idle[g.name] = g
        self._closing.extend(Closing.from_json(raw) for raw in state.get("closing", ()))
        self._own.update(str(i) for i in state.get("own", ()))


def _group_json(g: Group) -> list[Any]:
    fired = g.fired
    record = None
    if fired is not None:
        record = [fired.event_id, fired.fired_at_ms, str(fired.value), fired.reason]
    buckets = g.buckets.state() if g.buckets is not None else None
    return [g.name, buckets, g.last_seen_ms, g.recorded_ms, record]


def _group_from(s: RuleState, raw: list[Any]) -> Group:
    name, buckets, last_seen, recorded, record = raw
    rule = s.rule
    g = Group(name, Buckets.restored(rule.window_s, s.windows, buckets) if buckets is not None else None)
    if g.buckets is None and rule.kind in _WINDOWED:
        g.buckets = Buckets(rule.window_s, s.windows)
    g.last_seen_ms = int(last_seen)
    g.recorded_ms = int(recorded)
    if record is not None:
        event_id, fired_at, value, reason = record
        g.fired = FiringAlert(
            account_id=rule.account_id,
            rule=rule.name,
            group=name,
            kind=rule.kind,
            fired_at_ms=int(fired_at),
            value=Decimal(value),
            event_id=event_id,
            lead_id=RULE_LEAD_PREFIX + rule.name,
            reason=reason,
        )
    g.saved = raw
    return g
