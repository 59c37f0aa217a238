"""The alert evaluator against a naive reference written from its stated semantics.

``Evaluator`` is incremental: bucket rings with running totals per rule and group, firing
and idle groups apart, lead sums held or asked for. ``Reference`` below keeps nothing but
the list of events each rule looked at and, at every event and tick, counts each window
again from that list, as README.md ("Watching and warning") and the docstrings of
``evaluator.py`` and ``windows.py`` state it:

- a window of ``window_s`` is cut into the largest count of at most 60 whole-second buckets
  that divides it; the window is the newest ``per_window`` buckets ending at the bucket of
  the group's newest event; a DROP rule's baseline is the ``baseline_windows`` windows
  before it; an event older than all of them is not counted;
- an event's ``timestamp`` counts no further ahead than ``MAX_SKEW_MS`` past its
  ``recorded_at``;
- COUNT: matching events >= threshold; RATE: matching / base >= threshold with base >=
  ``min_events`` (and >= 1); DROP: the baseline's share minus the newest window's share
  >= threshold, both windows with base >= ``min_events``; a firing group resolves by time
  (its counts forgotten) once its newest event was recorded a window or more before the
  tick's ``now``;
- ABSENCE: a group whose last matching event was recorded a window or more before the
  tick fires, a matching event resolves it;
- MATCH: every matching event fires; LEAD_MARGIN: a matching event whose lead's price sum
  over the account's events up to it is <= threshold fires;
- a rule looks only at its account's events after ``set_after_position``, never at the
  server's own types (``audit.``, ``alert.``, ``export.``), whatever their flow.

Hypothesis draws rules and streams (accounts, entities, flows, matching and non-matching
types, outcomes, prices, time moving on with jumps and arriving late or early around the
skew, ticks in between) and feeds both; the alert events the evaluator emits go back into
the stream as the log would hand them over. The emissions compared are (position of the
cause, rule, group, fired/resolved, value) per call, in a canonical order: within one call
the evaluator's order follows its internal dicts, which the semantics leave open.
A second property saves ``state()`` mid-stream (before or after the evaluator read back the alert
events it emitted), restores a fresh evaluator from it (``expect`` given the alert events
after the saved position, as ``alerting.restore`` does) and requires the same emissions as
the run without the restart. A few streams spelled out (``EDGES``) sit on the boundaries
random streams rarely hit exactly: a span or a window back, the skew's limit, a tick
exactly a window after the last event; they are also run restarted before every step.
The clock of a tick goes by only once the evaluator has read the log to its end, as
``alerting.tick`` has it.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction

import hypothesis.strategies as st
from hypothesis import HealthCheck, given, settings
from leadtrail.server.alerts.evaluator import Emission, Evaluator
from leadtrail.server.alerts.model import ALERT_FIRED, GroupBy, Kind, Rule
from leadtrail.storage import Event, EventFilter, Outcome

T0 = 1_800_000_000_000
ACCOUNTS = ("acme", "acme", "acme", "beta")
"""Events' accounts (rules are mostly of ``acme``; ``beta``'s events are another account's)."""
CLIENT_TYPES = (
    "recipient.error",
    "recipient.error",
    "recipient.failed",
    "recipient.delivered",
    "recipientx",
    "source.submitted",
    "source.submitted",
    "source.accepted",
    "flow.completed",
)
SERVER_TYPES = ("audit.erased", "export.finished", "alert.delivered", "alert.fired")
SERVER_PREFIXES = ("audit.", "alert.", "export.")
ENTITIES = ("e1", "e2", "e3", "")
FLOWS = ("f1", "f2", "alerts", "audit")
LEADS = ("l1", "l2", "l3")
PRICES = ("", "", "10", "-12.50", "0.01", "-0.01", "7.3")
WINDOWS = (1, 5, 7, 10, 60, 120)
SHARE_PLACES = Decimal("0.0001")
MAX_SKEW_MS = 5 * 60 * 1000
"""How far past its ``recorded_at`` an event's ``timestamp`` may place it in a window."""
PROPERTY = settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck))

Emitted = tuple[int, str, str, str, Decimal]
"""(position of the cause, rule, group, "fired" or "resolved", value)."""


# -- the reference ------------------------------------------------------------------------------------


def _type_fits(patterns: Sequence[str], event_type: str) -> bool:
    if not patterns:
        return True
    return any(event_type.startswith(p[:-1]) if p.endswith(".*") else event_type == p for p in patterns)


def _passes(f: EventFilter | None, e: Event) -> bool:
    """What a rule's filter asks of an event, spelled out again (no lead, time or scope
    conditions are drawn)."""
    if f is None or e.account_id != f.account_id or not _type_fits(f.types, e.type):
        return False
    if any(_type_fits((p,), e.type) for p in f.hidden_types):
        return False
    if f.outcomes and e.outcome not in f.outcomes:
        return False
    if f.flow_id and e.flow_id != f.flow_id:
        return False
    return not (f.entity_id and e.entity_id != f.entity_id)


def _per_window(window_s: int) -> int:
    return max(n for n in range(1, min(60, window_s) + 1) if window_s % n == 0)


def _share(m: int, b: int) -> Decimal:
    return (Decimal(m) / Decimal(b)).quantize(SHARE_PLACES) if b else Decimal(0)


def _price(e: Event) -> Decimal:
    return Decimal(e.price) if e.price else Decimal(0)


@dataclass(frozen=True)
class Looked:
    """An event a windowed rule looked at (matching its filter, its base or both)."""

    position: int
    group: str
    bucket: int
    recorded: int
    m: bool
    n: bool


@dataclass
class Reference:
    rules: list[Rule]
    events: list[Event] = field(default_factory=list)
    """Every event handed over so far."""
    looked: list[list[Looked]] = field(default_factory=list)
    forgotten: dict[tuple[int, str], int] = field(default_factory=dict)
    """(rule, group) -> the position up to which a resolution by time forgot its counts."""
    firing: set[tuple[int, str]] = field(default_factory=set)
    position: int = 0

    def __post_init__(self) -> None:
        self.looked = [[] for _ in self.rules]

    def lead_sum(self, account: str, lead: str, up_to: int) -> Decimal:
        """The price sum of a lead's events at positions up to ``up_to``."""
        return sum(
            (
                _price(e)
                for e in self.events
                if (e.account_id, e.lead_id) == (account, lead) and e.position <= up_to
            ),
            Decimal(0),
        )

    def counts(self, i: int, group: str) -> tuple[int, int, int, int]:
        """Matching and base events of the newest window, then of the baseline before it."""
        rule = self.rules[i]
        seen = [x for x in self.looked[i] if x.group == group]
        per = _per_window(rule.window_s)
        span = per * (1 + rule.baseline_windows if rule.kind is Kind.DROP else 1)
        head = max(x.bucket for x in seen)
        live = [x for x in seen if x.position > self.forgotten.get((i, group), 0)]
        win = [x for x in live if head - per < x.bucket <= head]
        before = [x for x in live if head - span < x.bucket <= head - per]
        return (
            sum(x.m for x in win),
            sum(x.n for x in win),
            sum(x.m for x in before),
            sum(x.n for x in before),
        )

    def holds(self, i: int, group: str) -> tuple[bool, Decimal]:
        rule = self.rules[i]
        m, b, em, eb = self.counts(i, group)
        threshold = Fraction(rule.threshold)
        least = max(1, rule.min_events)
        if rule.kind is Kind.COUNT:
            return m >= threshold, Decimal(m)
        if rule.kind is Kind.RATE:
            return b >= least and Fraction(m, b) >= threshold, _share(m, b)
        fall = _share(em, eb) - _share(m, b) if b and eb else Decimal(0)
        holds = b >= least and eb >= least and Fraction(em, eb) - Fraction(m, b) >= threshold
        return holds, fall

    def handle(self, events: Sequence[Event]) -> list[Emitted]:
        out: list[Emitted] = []
        for e in events:
            self.events.append(e)
            self.position = e.position
            if e.type.startswith(SERVER_PREFIXES):
                continue
            for i, rule in enumerate(self.rules):
                if e.account_id != rule.account_id or e.position <= rule.set_after_position:
                    continue
                m = _passes(rule.filter, e)
                n = rule.kind in (Kind.RATE, Kind.DROP) and _passes(rule.base, e)
                if m or n:
                    self._event(i, e, m, n, out)
        return out

    def _event(self, i: int, e: Event, m: bool, n: bool, out: list[Emitted]) -> None:
        rule = self.rules[i]
        group = rule.group_of(e.entity_id, e.flow_id)
        kind = rule.kind
        if kind is Kind.MATCH:
            out.append((e.position, rule.name, group, "fired", Decimal(1)))
        elif kind is Kind.LEAD_MARGIN:
            total = self.lead_sum(e.account_id, e.lead_id, e.position)
            if total <= rule.threshold:
                out.append((e.position, rule.name, group, "fired", total))
        elif kind is Kind.ABSENCE:
            if (i, group) in self.firing:
                self.firing.discard((i, group))
                out.append((e.position, rule.name, group, "resolved", Decimal(0)))
        else:
            recorded = e.recorded_at_ms
            ts = min(e.timestamp_ms or 0, recorded + MAX_SKEW_MS)
            width = rule.window_s * 1000 // _per_window(rule.window_s)
            self.looked[i].append(Looked(e.position, group, ts // width, recorded, m, n))
            holds, value = self.holds(i, group)
            if holds != ((i, group) in self.firing):
                self.firing.symmetric_difference_update({(i, group)})
                out.append((e.position, rule.name, group, "fired" if holds else "resolved", value))

    def tick(self, now_ms: int) -> list[Emitted]:
        out: list[Emitted] = []
        for i, rule in enumerate(self.rules):
            window_ms = rule.window_s * 1000
            if rule.kind in (Kind.COUNT, Kind.RATE, Kind.DROP):
                for j, group in sorted(self.firing):
                    if j != i:
                        continue
                    newest = max(x.recorded for x in self.looked[i] if x.group == group)
                    if newest <= now_ms - window_ms:
                        self.forgotten[(i, group)] = self.position
                        self.firing.discard((i, group))
                        out.append((self.position, rule.name, group, "resolved", self.holds(i, group)[1]))
            elif rule.kind is Kind.ABSENCE:
                last: dict[str, int] = {}
                for e in self.events:
                    if (
                        e.account_id == rule.account_id
                        and e.position > rule.set_after_position
                        and not e.type.startswith(SERVER_PREFIXES)
                        and _passes(rule.filter, e)
                    ):
                        group = rule.group_of(e.entity_id, e.flow_id)
                        last[group] = max(last.get(group, e.recorded_at_ms), e.recorded_at_ms)
                for group, seen_ms in sorted(last.items()):
                    if (i, group) not in self.firing and seen_ms <= now_ms - window_ms:
                        self.firing.add((i, group))
                        silent = Decimal((now_ms - seen_ms) // 1000)
                        out.append((self.position, rule.name, group, "fired", silent))
        return out


# -- streams ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    """An event to come: what it is and how the server's clock and its timestamp move."""

    account: str
    type: str
    entity: str
    flow: str
    outcome: Outcome
    lead: str
    price: str
    advance_ms: int
    """How far the server's clock (``recorded_at``) moves on before it."""
    offset_ms: int
    """Its ``timestamp`` against its ``recorded_at`` (late < 0, early > 0)."""


@dataclass(frozen=True)
class Tick:
    ahead_ms: int
    """How far past the newest ``recorded_at`` the tick's ``now`` is."""


Step = list[Spec] | Tick

SMALL_STEPS = st.integers(0, 1500)
"""Most events: the clock moves on by up to 1.5 s (several events a bucket of a short window)."""


def specs(types: Sequence[str]) -> st.SearchStrategy[Spec]:
    return st.builds(
        Spec,
        account=st.sampled_from(ACCOUNTS),
        type=st.sampled_from(types),
        entity=st.sampled_from(ENTITIES),
        flow=st.sampled_from(FLOWS),
        outcome=st.sampled_from((Outcome.SUCCESS, Outcome.FAILURE, Outcome.ERROR)),
        lead=st.sampled_from(LEADS),
        price=st.sampled_from(PRICES),
        advance_ms=st.one_of(
            SMALL_STEPS,
            SMALL_STEPS,
            SMALL_STEPS,
            SMALL_STEPS,
            st.sampled_from((999, 1000, 5000, 9999, 10_000, 60_000, 61_000, 130_000, 700_000, 3_600_000)),
        ),
        offset_ms=st.one_of(
            st.just(0),
            st.just(0),
            st.integers(-3000, 0),
            st.integers(-30_000, 0),
            st.integers(-MAX_SKEW_MS, MAX_SKEW_MS),
            # Edges: a window or span back (windows of 5, 10, 60 and 120 s, baselines of 1 to 3),
            # the skew's limit and past it.
            st.sampled_from((-5000, -10_000, -20_000, -40_000, -60_000, -120_000, -240_000, -480_000)),
            st.sampled_from((MAX_SKEW_MS - 30_000, MAX_SKEW_MS - 1000, MAX_SKEW_MS, MAX_SKEW_MS + 1)),
            st.sampled_from((-2 * MAX_SKEW_MS, 2 * MAX_SKEW_MS, 10 * MAX_SKEW_MS)),
        ),
    )


@st.composite
def batches(draw: st.DrawFn) -> list[Spec]:
    """Events of a few types: a burst of errors, a run of successes (shares that rise and
    fall from one window to the next, so RATE and DROP fire and resolve)."""
    palette = draw(st.lists(st.sampled_from(CLIENT_TYPES * 3 + SERVER_TYPES), min_size=1, max_size=3))
    return draw(st.lists(specs(palette), min_size=1, max_size=10))


steps = st.lists(
    st.one_of(
        batches(),
        batches(),
        batches(),
        # A window after the newest event, a millisecond short of it, or far past.
        st.builds(
            Tick, st.sampled_from([0, 130_000, 700_000] + [w * 1000 + d for w in WINDOWS for d in (-1, 0)])
        ),
    ),
    min_size=3,
    max_size=30,
)


def _filter(
    account: str, types: tuple[str, ...], outcomes: tuple[Outcome, ...], flow: str, entity: str
) -> EventFilter:
    # As rules.py stores it: the rule's own output (alert.*) hidden.
    return EventFilter(
        account_id=account,
        types=types,
        outcomes=outcomes,
        flow_id=flow,
        entity_id=entity,
        hidden_types=("alert.*",),
    )


filters = st.tuples(
    st.sampled_from((("recipient.error",), ("recipient.*",), ("recipient.error", "source.accepted"), ())),
    st.sampled_from(((), (), (), (Outcome.FAILURE,), (Outcome.SUCCESS, Outcome.ERROR))),
    st.sampled_from(("",) * 6 + ("f1", "audit")),
    st.sampled_from(("",) * 8 + ("e1",)),
)
THRESHOLDS = {
    Kind.COUNT: ("1", "2", "3", "5"),
    Kind.RATE: ("0.25", "0.5", "0.3333", "1"),
    Kind.DROP: ("0.1", "0.25", "0.5", "1"),
    Kind.LEAD_MARGIN: ("-0.01", "0", "5", "-12.5"),
    Kind.MATCH: ("0",),
    Kind.ABSENCE: ("0",),
}


@st.composite
def rules_of(draw: st.DrawFn, kinds: Sequence[Kind], count: int) -> list[Rule]:
    rules = []
    for i in range(count):
        kind = draw(st.sampled_from(kinds))
        account = draw(st.sampled_from(("acme",) * 5 + ("beta",)))
        based = kind in (Kind.RATE, Kind.DROP)
        rules.append(
            Rule(
                account_id=account,
                name=f"r{i}",
                kind=kind,
                filter=_filter(account, *draw(filters)),
                base=_filter(account, *draw(filters)) if based else None,
                threshold=Decimal(draw(st.sampled_from(THRESHOLDS[kind]))),
                window_s=draw(st.sampled_from(WINDOWS)) if kind not in (Kind.MATCH, Kind.LEAD_MARGIN) else 0,
                min_events=draw(st.sampled_from((0, 1, 2, 4))) if based else 0,
                baseline_windows=draw(st.integers(1, 3)) if kind is Kind.DROP else 0,
                group_by=draw(st.sampled_from(tuple(GroupBy))),
                set_after_position=draw(st.sampled_from((0, 0, 0, 3, 15))),
                set_at_ms=T0,
                revision=i + 1,
            )
        )
    return rules


# -- running both -------------------------------------------------------------------------------------


def _emitted(emissions: list[Emission]) -> list[Emitted]:
    return sorted(
        (e.position, e.rule.name, e.group, "fired" if e.type == ALERT_FIRED else "resolved", e.value)
        for e in emissions
    )


class Run:
    """One pass of a stream through an evaluator: positions, clock and the alert events it
    emits handed back as the log would, lead sums answered from every event so far."""

    def __init__(self, rules: list[Rule], saves: frozenset[int] = frozenset(), restart: bool = False) -> None:
        self.rules = rules
        self.saves = saves
        """The steps before which the evaluator is saved."""
        self.restart = restart
        """Whether a fresh evaluator restored from each save goes on (else the same one)."""
        ids = (f"alert-{i}" for i in itertools.count(1))
        self.new_id: Callable[[], str] = lambda: next(ids)
        self.evaluator = Evaluator(rules, new_id=self.new_id)
        self.events: list[Event] = []
        self.pending: list[Event] = []
        """Alert events emitted and not yet read back."""
        self.position = 0
        self.clock = T0

    def _event(self, s: Spec) -> Event:
        self.clock += s.advance_ms
        self.position += 1
        return Event(
            type=s.type,
            lead_id=s.lead,
            flow_id=s.flow,
            id=f"ev-{self.position}",
            timestamp_ms=self.clock + s.offset_ms,
            entity_id=s.entity,
            outcome=s.outcome,
            price="" if s.type.startswith(SERVER_PREFIXES) else s.price,
            account_id=s.account,
            position=self.position,
            recorded_at_ms=self.clock,
        )

    def _read_back(self, emissions: list[Emission]) -> None:
        for emission in emissions:
            if not emission.done:
                self.pending.append(emission.event())

    def _batch(self, specs: list[Spec]) -> list[Event]:
        batch = []
        for alert in self.pending:
            self.position += 1
            batch.append(dataclasses.replace(alert, position=self.position, recorded_at_ms=self.clock))
        self.pending = []
        return batch + [self._event(s) for s in specs]

    def steps(self, stream: list[Step]) -> Iterator[tuple[str, list[Event] | int, list[Emission]]]:
        for index, step in enumerate(stream):
            # Saved whether or not its own alert events are read back yet: the state keeps their
            # ids, so a restored evaluator knows them as its own when they come.
            if index in self.saves and self.restart:
                self._restart()
            if isinstance(step, Tick):
                if self.pending:
                    # The clock goes by only once the evaluator has read the log to its end
                    # (``alerting.tick`` caps it at the last event read while catching up).
                    yield self._handle([])
                now = self.clock + step.ahead_ms
                self.clock = now  # later events are recorded after the tick
                out = self.evaluator.tick(now)
                self._read_back(out)
                yield "tick", now, out
                continue
            yield self._handle(step)

    def _handle(self, specs: list[Spec]) -> tuple[str, list[Event], list[Emission]]:
        ev = self.evaluator
        batch = self._batch(specs)
        for q in ev.needed_leads(batch):
            before = [e for e in self.events if (e.account_id, e.lead_id) == (q.account_id, q.lead_id)]
            ev.hold_lead(q.account_id, q.lead_id, sum((_price(e) for e in before), Decimal(0)))
        self.events.extend(batch)
        out = ev.handle(batch, self.clock)
        self._read_back(out)
        return "events", batch, out

    def _restart(self) -> None:
        """Save, start a fresh evaluator from the saved state, as ``alerting`` does after a
        crash: the alert events after the saved position handed over first."""
        saved = json.loads(json.dumps(self.evaluator.state()))
        fresh = Evaluator(new_id=self.new_id)
        fresh.restore(saved, self.rules, self.evaluator.position)
        fresh.expect(self.pending)
        self.evaluator = fresh


def run_both(rules: list[Rule], stream: list[Step]) -> list[tuple[list[Emitted], list[Emitted]]]:
    reference = Reference(rules)
    calls = []
    for what, arg, out in Run(rules).steps(stream):
        if what == "tick":
            assert isinstance(arg, int)
            expected = sorted(reference.tick(arg))
        else:
            assert isinstance(arg, list)
            expected = sorted(reference.handle(arg))
        calls.append((_emitted(out), expected))
    return calls


def assert_agree(rules: list[Rule], stream: list[Step]) -> None:
    for n, (got, expected) in enumerate(run_both(rules, stream)):
        assert got == expected, f"call {n}: evaluator {got} != reference {expected}"


def _runs(rules: list[Rule], stream: list[Step], saves: frozenset[int], restart: bool) -> list[list[Emitted]]:
    return [_emitted(out) for _, _, out in Run(rules, saves, restart).steps(stream)]


# -- properties ---------------------------------------------------------------------------------------


@PROPERTY
@given(rules_of([Kind.COUNT], 3), steps)
def test_count_agrees_with_the_reference(rules: list[Rule], stream: list[Step]) -> None:
    assert_agree(rules, stream)


@PROPERTY
@given(rules_of([Kind.RATE], 3), steps)
def test_rate_agrees_with_the_reference(rules: list[Rule], stream: list[Step]) -> None:
    assert_agree(rules, stream)


@PROPERTY
@given(rules_of([Kind.DROP], 3), steps)
def test_drop_agrees_with_the_reference(rules: list[Rule], stream: list[Step]) -> None:
    assert_agree(rules, stream)


@PROPERTY
@given(rules_of([Kind.MATCH], 2), steps)
def test_match_agrees_with_the_reference(rules: list[Rule], stream: list[Step]) -> None:
    assert_agree(rules, stream)


@PROPERTY
@given(rules_of([Kind.LEAD_MARGIN], 3), steps)
def test_lead_margin_agrees_with_the_reference(rules: list[Rule], stream: list[Step]) -> None:
    assert_agree(rules, stream)


@PROPERTY
@given(rules_of([Kind.ABSENCE], 3), steps)
def test_absence_agrees_with_the_reference(rules: list[Rule], stream: list[Step]) -> None:
    assert_agree(rules, stream)


@PROPERTY
@given(rules_of(list(Kind), 5), steps, st.data())
def test_a_restart_from_the_saved_state_emits_what_the_run_without_it_does(
    rules: list[Rule], stream: list[Step], data: st.DataObject
) -> None:
    saves = data.draw(st.frozensets(st.integers(0, len(stream) - 1), min_size=1))
    assert_agree(rules, stream)
    assert _runs(rules, stream, saves, restart=True) == _runs(rules, stream, saves, restart=False)


# -- the edges, spelled out ---------------------------------------------------------------------------


def _rule(kind: Kind, threshold: str, window_s: int, *, baseline_windows: int = 0) -> Rule:
    base = _filter("acme", ("recipient.*",), (), "", "") if kind in (Kind.RATE, Kind.DROP) else None
    return Rule(
        account_id="acme",
        name="r0",
        kind=kind,
        filter=_filter("acme", ("recipient.error",), (), "", ""),
        base=base,
        threshold=Decimal(threshold),
        window_s=window_s,
        baseline_windows=baseline_windows,
        set_at_ms=T0,
        revision=1,
    )


def _at(type: str, advance_ms: int, offset_ms: int) -> Spec:
    return Spec("acme", type, "e1", "f1", Outcome.FAILURE, "l1", "", advance_ms, offset_ms)


EDGES: dict[str, tuple[Rule, list[Step]]] = {
    # A window of 10 s keeps 10 buckets: an event 10 s behind the newest is in none of them
    # (the third event fires, counting 2).
    "older than the span": (
        _rule(Kind.COUNT, "2", 10),
        [[_at("recipient.error", 0, 0), _at("recipient.error", 0, -10_000), _at("recipient.error", 1000, 0)]],
    ),
    # One window back (a DROP rule's baseline), not in the newest window.
    "just before the window": (
        _rule(Kind.DROP, "0.5", 10, baseline_windows=1),
        [[_at("recipient.failed", 0, 0), _at("recipient.error", 0, -10_000)]],
    ),
    # Stamped 50 min ahead: counted 5 min past its recording, with an event stamped just that.
    "past the skew": (
        _rule(Kind.COUNT, "2", 10),
        [[_at("recipient.error", 0, 10 * MAX_SKEW_MS), _at("recipient.error", 0, MAX_SKEW_MS)]],
    ),
    # Silent for exactly a window: due.
    "absent for a window": (
        _rule(Kind.ABSENCE, "0", 10),
        [[_at("recipient.error", 0, 0)], Tick(9999), Tick(1)],
    ),
    # Recorded exactly a window before the tick: resolved.
    "quiet for a window": (
        _rule(Kind.COUNT, "1", 10),
        [[_at("recipient.error", 0, 0)], Tick(9999), Tick(1)],
    ),
    # Firing across restarts: resolved by time a window after its last event, not before.
    "firing for a while": (
        _rule(Kind.RATE, "0.5", 10),
        [[_at("recipient.error", 0, 0)], Tick(5000), [_at("recipient.failed", 0, 0)], Tick(5000), Tick(5000)],
    ),
}


def test_the_edges_agree_with_the_reference_and_across_restarts() -> None:
    for name, (rule, stream) in EDGES.items():
        calls = run_both([rule], stream)
        assert any(got for got, _ in calls), f"{name}: nothing emitted"
        for got, expected in calls:
            assert got == expected, f"{name}: evaluator {got} != reference {expected}"
        every_step = frozenset(range(len(stream)))
        restarted = _runs([rule], stream, every_step, restart=True)
        assert restarted == _runs([rule], stream, every_step, restart=False), f"{name}: restarted {restarted}"
