"""The evaluator and its windows without a server: rules and events in, emissions out."""

from __future__ import annotations

import itertools
from decimal import Decimal

import orjson
from leadtrail.server.alerts.evaluator import MAX_GROUPS, Emission, Evaluator
from leadtrail.server.alerts.model import ALERT_FIRED, ALERT_RESOLVED, GroupBy, Kind, Rule
from leadtrail.server.alerts.windows import Buckets, bucket_width_ms
from leadtrail.storage import Event as StoredEvent
from leadtrail.storage import EventFilter, Outcome

T0 = 1_800_000_000_000
ACCOUNT = "default"


def rule(
    kind: Kind,
    name: str = "r",
    *,
    types: tuple[str, ...] = ("recipient.failed",),
    base: tuple[str, ...] | None = None,
    threshold: str = "3",
    window_s: int = 60,
    min_events: int = 0,
    baseline_windows: int = 0,
    group_by: GroupBy = GroupBy.NONE,
    set_after_position: int = 0,
    set_at_ms: int = 1,
) -> Rule:
    return Rule(
        account_id=ACCOUNT,
        name=name,
        kind=kind,
        filter=EventFilter(account_id=ACCOUNT, types=types),
        base=EventFilter(account_id=ACCOUNT, types=base) if base else None,
        threshold=Decimal(threshold),
        window_s=window_s,
        min_events=min_events,
        baseline_windows=baseline_windows,
        group_by=group_by,
        set_after_position=set_after_position,
        set_at_ms=set_at_ms,
    )


class Log:
    """Events with consecutive positions, as the consumer hands them over."""

    def __init__(self) -> None:
        self.position = 0

    def event(
        self,
        type: str,
        ts: int,
        *,
        entity: str = "buyer-1",
        lead: str = "lead-1",
        account: str = ACCOUNT,
        price: str = "",
        flow: str = "flow-1",
        recorded: int | None = None,
    ) -> StoredEvent:
        """``recorded``: the server's ``recorded_at`` (the event's own time when not given)."""
        self.position += 1
        return StoredEvent(
            type=type,
            lead_id=lead,
            flow_id=flow,
            id=f"ev-{self.position}",
            timestamp_ms=ts,
            entity_id=entity,
            outcome=Outcome.SUCCESS,
            price=price,
            account_id=account,
            position=self.position,
            recorded_at_ms=ts if recorded is None else recorded,
        )


_IDS = (f"alert-{i}" for i in itertools.count(1))
"""Event ids unique across every evaluator of the tests, as the server's are (a restarted
evaluator never gives the id of an event written before)."""


def evaluator(*rules: Rule, **kw: int) -> Evaluator:
    return Evaluator(rules, new_id=lambda: next(_IDS), **kw)


def kinds(emissions: list[Emission]) -> list[tuple[str, str]]:
    return [(e.type, e.group) for e in emissions]


# -- windows -----------------------------------------------------------------------------------------


def test_bucket_width_is_at_least_a_second_and_at_most_sixty_a_window() -> None:
    assert bucket_width_ms(10) == 1000
    assert bucket_width_ms(3600) == 60_000
    assert Buckets(3600).per_window == 60
    assert Buckets(300, windows=25).span == 60 * 25


def test_window_slides_and_forgets_old_buckets() -> None:
    b = Buckets(10)
    for i in range(10):
        b.add(T0 + i * 1000, 1, 2)
    assert b.win == [10, 20]
    b.add(T0 + 10_000, 1, 0)  # the first second leaves the window
    assert b.win == [10, 18]
    b.advance_to(T0 + 100_000)
    assert b.win == [0, 0] and b.all == [0, 0]
    b.add(T0 + 50_000, 1, 1)  # older than the span: not counted
    assert b.win == [0, 0]


def test_window_keeps_earlier_windows_for_a_baseline() -> None:
    b = Buckets(10, windows=3)
    for i in range(30):
        b.add(T0 + i * 1000, 1, 1)
    assert b.win == [10, 10] and b.earlier == (20, 20)
    b.add(T0 + 35_000, 0, 1)
    assert b.win == [4, 5] and b.earlier == (20, 20)


def test_late_event_lands_in_its_bucket() -> None:
    b = Buckets(10)
    b.add(T0 + 9000, 1, 0)
    b.add(T0 + 1000, 1, 0)
    assert b.win == [2, 0]
    b.add(T0 + 11_500, 0, 0)  # T0+1000 leaves
    assert b.win == [1, 0]


def test_window_totals_agree_with_counting_every_event() -> None:
    import random

    rng = random.Random(7)
    for window_s, windows in ((5, 1), (120, 3), (3, 4)):
        b = Buckets(window_s, windows)
        kept: list[tuple[int, int, int]] = []
        t = T0
        for _ in range(3000):
            t += rng.choice([0, 10, 300, 1000, 2500, 7000, 40_000])
            ts = t - rng.choice([0, 0, 0, 1500, 6000])  # some arrive late
            m, n = rng.randrange(2), rng.randrange(2)
            b.add(ts, m, n)
            kept.append((ts // b.width_ms, m, n))
            head = b.head
            win = [0, 0]
            held = [0, 0]
            for bucket, mm, nn in kept:
                if head - b.span < bucket <= head:
                    held[0] += mm
                    held[1] += nn
                    if bucket > head - b.per_window:
                        win[0] += mm
                        win[1] += nn
            assert b.win == win and b.all == held
            kept = [k for k in kept if k[0] > head - b.span]


def test_buckets_state_round_trips() -> None:
    b = Buckets(60, windows=2)
    for i in range(0, 120, 7):
        b.add(T0 + i * 1000, i % 2, 1)
    again = Buckets.restored(60, 2, orjson.loads(orjson.dumps(b.state())))
    assert (again.win, again.all, again.head) == (b.win, b.all, b.head)
    b.add(T0 + 150_000, 1, 1)
    again.add(T0 + 150_000, 1, 1)
    assert (again.win, again.all) == (b.win, b.all)


# -- kinds -------------------------------------------------------------------------------------------


def test_count_fires_once_and_resolves_when_the_window_empties() -> None:
    log = Log()
    ev = evaluator(rule(Kind.COUNT, threshold="3", window_s=10))
    out = ev.handle([log.event("recipient.failed", T0 + i) for i in range(5)], T0)
    assert kinds(out) == [(ALERT_FIRED, "")]
    fired = out[0].event()
    assert fired.type == ALERT_FIRED and fired.flow_id == "alerts" and fired.lead_id == "rule:r"
    assert fired.outcome is Outcome.FAILURE
    assert fired.details["value"] == "3" and fired.details["threshold"] == "3"
    assert fired.details["sample_event_ids"] == ["ev-1", "ev-2", "ev-3"]
    assert fired.details["position"] == 3 and fired.details["kind"] == "count"
    assert [a.rule for a in ev.firing()] == ["r"]
    assert ev.tick(T0 + 5000) == []  # still within the window
    out = ev.tick(T0 + 20_000)
    assert kinds(out) == [(ALERT_RESOLVED, "")]
    resolved = out[0].event()
    assert resolved.details["fired_event_id"] == fired.id and resolved.outcome is Outcome.SUCCESS
    assert ev.firing() == []


def test_count_resolves_by_events_sliding_the_window() -> None:
    log = Log()
    ev = evaluator(rule(Kind.COUNT, threshold="2", window_s=10))
    assert kinds(ev.handle([log.event("recipient.failed", T0), log.event("recipient.failed", T0)], T0)) == [
        (ALERT_FIRED, "")
    ]
    out = ev.handle(
        [log.event("recipient.delivered", T0 + 30_000), log.event("recipient.failed", T0 + 30_000)], T0
    )
    assert kinds(out) == [(ALERT_RESOLVED, "")]


def test_rate_needs_min_events_and_fires_per_group() -> None:
    log = Log()
    r = rule(
        Kind.RATE,
        types=("recipient.failed",),
        base=("recipient.*",),
        threshold="0.5",
        min_events=4,
        group_by=GroupBy.ENTITY,
    )
    ev = evaluator(r)
    out = ev.handle([log.event("recipient.failed", T0, entity="a") for _ in range(3)], T0)
    assert out == []  # 3 base events < min_events
    out = ev.handle(
        [log.event("recipient.delivered", T0, entity="a"), log.event("recipient.delivered", T0, entity="b")],
        T0,
    )
    assert kinds(out) == [(ALERT_FIRED, "a")]
    assert out[0].value == Decimal("0.75")
    out = ev.handle([log.event("recipient.delivered", T0 + 1, entity="a") for _ in range(3)], T0)
    assert kinds(out) == [(ALERT_RESOLVED, "a")]  # 3 / 7 < 0.5


def test_drop_compares_the_window_with_its_baseline() -> None:
    log = Log()
    r = rule(
        Kind.DROP,
        types=("source.accepted",),
        base=("source.submitted", "source.accepted"),
        threshold="0.3",
        window_s=10,
        baseline_windows=2,
        min_events=4,
    )
    ev = evaluator(r)
    events = []
    for i in range(20):  # baseline: half of the base events accepted
        events.append(log.event("source.submitted", T0 + i * 1000))
        events.append(log.event("source.accepted", T0 + i * 1000))
    assert ev.handle(events, T0) == []
    later = [log.event("source.submitted", T0 + 40_000 + i * 100) for i in range(8)]
    out = ev.handle(later, T0)
    assert kinds(out) == [(ALERT_FIRED, "")]
    assert out[0].value == Decimal("0.5")
    recovered = []
    for i in range(8):
        recovered.append(log.event("source.accepted", T0 + 41_000 + i * 100))
        recovered.append(log.event("source.accepted", T0 + 41_000 + i * 100))
    out = ev.handle(recovered, T0)
    assert kinds(out) == [(ALERT_RESOLVED, "")]


def test_absence_fires_after_silence_and_resolves_on_the_next_event() -> None:
    log = Log()
    ev = evaluator(rule(Kind.ABSENCE, types=("enhancement.succeeded",), window_s=30, group_by=GroupBy.ENTITY))
    assert ev.tick(T0 + 100_000) == []  # nothing seen yet: nothing can be absent
    assert ev.handle([log.event("enhancement.succeeded", T0, entity="svc")], T0) == []
    assert ev.tick(T0 + 29_000) == []
    out = ev.tick(T0 + 31_000)
    assert kinds(out) == [(ALERT_FIRED, "svc")]
    assert ev.tick(T0 + 60_000) == []  # one firing until it resolves
    out = ev.handle([log.event("enhancement.succeeded", T0 + 61_000, entity="svc")], T0)
    assert kinds(out) == [(ALERT_RESOLVED, "svc")]


def test_match_fires_for_every_matching_event_with_its_lead() -> None:
    log = Log()
    ev = evaluator(rule(Kind.MATCH, types=("lead.flagged",)))
    out = ev.handle(
        [
            log.event("lead.flagged", T0, lead="l1"),
            log.event("x", T0),
            log.event("lead.flagged", T0, lead="l2"),
        ],
        T0,
    )
    assert [e.lead_id for e in out] == ["l1", "l2"]
    assert all(e.type == ALERT_FIRED for e in out)
    assert ev.firing() == []  # a match is a moment, not a state


def test_lead_margin_sums_every_priced_event_of_the_lead() -> None:
    log = Log()
    ev = evaluator(rule(Kind.LEAD_MARGIN, types=("flow.completed",), threshold="-0.01"))
    events = [
        log.event("source.purchased", T0, lead="l1", price="-10.00"),
        log.event("recipient.delivered", T0, lead="l1", price="9.99"),
        log.event("flow.completed", T0, lead="l1"),
        log.event("source.purchased", T0, lead="l2", price="-1"),
        log.event("recipient.delivered", T0, lead="l2", price="2"),
        log.event("flow.completed", T0, lead="l2"),
    ]
    needed = ev.needed_leads(events)
    assert [(q.account_id, q.lead_id, q.known_events, q.known_sum) for q in needed] == [
        (ACCOUNT, "l1", 3, Decimal(0)),
        (ACCOUNT, "l2", 3, Decimal(0)),
    ]
    for q in needed:
        ev.hold_lead(q.account_id, q.lead_id, Decimal("0"))  # nothing before the batch
    out = ev.handle(events, T0)
    assert [(e.lead_id, e.value) for e in out] == [("l1", Decimal("-0.01"))]
    assert out[0].event().lead_id == "l1"


def test_lead_margin_counts_what_came_before_the_batch() -> None:
    log = Log()
    ev = evaluator(rule(Kind.LEAD_MARGIN, types=("flow.completed",), threshold="0"))
    events = [log.event("flow.completed", T0, lead="l1")]
    ev.hold_lead(ACCOUNT, "l1", Decimal("-5"))
    assert ev.needed_leads(events) == []
    assert [e.value for e in ev.handle(events, T0)] == [Decimal("-5")]


# -- scope -------------------------------------------------------------------------------------------


def test_other_accounts_and_earlier_positions_never_count() -> None:
    log = Log()
    early = [log.event("recipient.failed", T0) for _ in range(5)]
    ev = evaluator(rule(Kind.COUNT, threshold="3", set_after_position=5))
    assert ev.handle(early, T0) == []
    other = [log.event("recipient.failed", T0, account="acme") for _ in range(5)]
    assert ev.handle(other, T0) == []
    assert kinds(ev.handle([log.event("recipient.failed", T0) for _ in range(3)], T0)) == [(ALERT_FIRED, "")]


def test_server_events_are_never_evaluated() -> None:
    log = Log()
    ev = evaluator(rule(Kind.COUNT, types=(), threshold="1"))  # every type
    events = [log.event("alert.fired", T0, flow="alerts"), log.event("audit.read", T0, flow="audit")]
    assert ev.handle(events, T0) == []
    assert kinds(ev.handle([log.event("anything", T0)], T0)) == [(ALERT_FIRED, "")]


def test_a_replaced_rule_starts_afresh_and_a_deleted_one_stops_firing() -> None:
    log = Log()
    r = rule(Kind.COUNT, threshold="2")
    ev = evaluator(r)
    ev.handle([log.event("recipient.failed", T0)], T0)
    ev.set_rules([r])  # the same version keeps its state
    assert kinds(ev.handle([log.event("recipient.failed", T0)], T0)) == [(ALERT_FIRED, "")]
    fired = ev.firing()[0]
    replaced = rule(Kind.COUNT, threshold="2", set_at_ms=2)
    ev.set_rules([replaced])
    assert ev.firing() == []
    assert ev.handle([log.event("recipient.failed", T0)], T0) == []
    # the next tick closes the alert of the rule as it was: no alert stays open in the log
    (closed,) = ev.tick(T0 + 1)
    event = closed.event()
    assert (event.type, event.entity_id, event.lead_id) == (ALERT_RESOLVED, "", "rule:r")
    assert event.details["fired_event_id"] == fired.event_id and event.details["cause"] == "rule_changed"
    assert event.details["rule_version"] == r.version != replaced.version
    assert event.reason == "Rule r was replaced: its alert is closed."
    assert ev.tick(T0 + 2) == []
    assert kinds(ev.handle([log.event("recipient.failed", T0)], T0)) == [(ALERT_FIRED, "")]
    ev.set_rules([])
    assert ev.firing() == []
    (closed,) = ev.tick(T0 + 3)
    assert closed.event().reason == "Rule r was deleted: its alert is closed."
    assert closed.event().details["rule_version"] == replaced.version
    assert ev.handle([log.event("recipient.failed", T0) for _ in range(5)], T0) == []


def test_groups_are_bounded_evicting_the_least_recently_seen_idle_group() -> None:
    log = Log()
    cap = 100
    ev = evaluator(rule(Kind.COUNT, threshold="2", group_by=GroupBy.ENTITY), max_groups=cap)
    fired = ev.handle(
        [log.event("recipient.failed", T0, entity=f"hot-{i}") for i in range(10) for _ in range(2)], T0
    )
    assert len(fired) == 10
    many = [log.event("recipient.failed", T0, entity=f"g-{i}") for i in range(50 * cap)]
    assert ev.handle(many, T0) == []
    assert ev.groups(ACCOUNT, "r") == cap
    assert len(ev.firing()) == 10  # firing groups are never evicted
    # an evicted group starts again from nothing: one more event does not reach 2
    assert ev.handle([log.event("recipient.failed", T0, entity="g-0")], T0) == []
    state = orjson.dumps(ev.state())
    assert len(state) < cap * 200  # the saved state is bounded by the groups held


def test_when_every_group_fires_new_groups_are_refused() -> None:
    log = Log()
    ev = evaluator(rule(Kind.COUNT, threshold="1", group_by=GroupBy.ENTITY), max_groups=3)
    out = ev.handle([log.event("recipient.failed", T0, entity=f"g-{i}") for i in range(5)], T0)
    assert len(out) == 3 and ev.refused == {(ACCOUNT, "r"): 2}
    assert MAX_GROUPS == 10_000


# -- restart -----------------------------------------------------------------------------------------


def test_state_round_trip_neither_repeats_nor_misses() -> None:
    log = Log()
    r = rule(Kind.COUNT, threshold="3", window_s=60, group_by=GroupBy.ENTITY)
    ev = evaluator(r)
    assert kinds(ev.handle([log.event("recipient.failed", T0, entity="a") for _ in range(3)], T0)) == [
        (ALERT_FIRED, "a")
    ]
    ev.handle([log.event("recipient.failed", T0, entity="b") for _ in range(2)], T0)
    saved = orjson.loads(orjson.dumps(ev.state()))
    again = evaluator(r)
    again.restore(saved, [r], log.position)
    assert [a.group for a in again.firing()] == ["a"]
    out = again.handle([log.event("recipient.failed", T0, entity=g) for g in ("a", "b")], T0)
    assert kinds(out) == [(ALERT_FIRED, "b")]  # a still fires (no repeat), b reaches 3 (no miss)
    out = again.tick(T0 + 120_000)
    assert sorted(kinds(out)) == [(ALERT_RESOLVED, "a"), (ALERT_RESOLVED, "b")]
    assert out[0].fired_event_id


def test_a_saved_state_of_another_rule_version_is_dropped() -> None:
    log = Log()
    r = rule(Kind.COUNT, threshold="2")
    ev = evaluator(r)
    ev.handle([log.event("recipient.failed", T0) for _ in range(2)], T0)
    again = evaluator()
    newer = rule(Kind.COUNT, threshold="2", set_at_ms=9)
    again.restore(ev.state(), [newer], log.position)
    assert again.firing() == []


def test_a_replayed_emission_the_log_holds_is_done_not_repeated() -> None:
    log = Log()
    r = rule(Kind.COUNT, threshold="2", window_s=10)
    ev = evaluator(r)
    saved = ev.state()
    batch = [log.event("recipient.failed", T0), log.event("recipient.failed", T0)]
    first = ev.handle(batch, T0)
    written = first[0].event()
    written.position = 3
    # a crash after the firing was appended, before the position was saved: replay
    again = evaluator(r)
    again.restore(saved, [r], 0)
    again.expect([written])
    replay = again.handle(batch, T0 + 5)
    assert len(replay) == 1 and replay[0].done and replay[0].event_id == written.id
    assert again.firing()[0].event_id == written.id
    out = again.tick(T0 + 30_000)
    assert kinds(out) == [(ALERT_RESOLVED, "")] and not out[0].done
    assert out[0].fired_event_id == written.id


def test_lead_sums_are_bounded_and_read_again_when_evicted() -> None:
    log = Log()
    ev = evaluator(rule(Kind.LEAD_MARGIN, types=("flow.completed",), threshold="0"), max_leads=2)
    for lead in ("a", "b", "c"):
        ev.hold_lead(ACCOUNT, lead, Decimal(-1))
    done = [log.event("flow.completed", T0, lead=lead) for lead in ("a", "b", "c")]
    assert [q.lead_id for q in ev.needed_leads(done)] == ["a"]  # the least recently used was let go


def test_lead_tallies_say_what_the_evaluator_saw_of_a_lead() -> None:
    log = Log()
    ev = evaluator(rule(Kind.LEAD_MARGIN, types=("flow.completed",), threshold="0"))
    ev.handle([log.event("source.purchased", T0, lead="l1", price="-2.5"), log.event("x", T0, lead="l1")], T0)
    (question,) = ev.needed_leads([log.event("flow.completed", T0, lead="l1")])
    assert (question.known_events, question.known_sum) == (3, Decimal("-2.5"))


def test_a_rule_with_a_long_baseline_holds_fewer_groups() -> None:
    log = Log()
    r = rule(
        Kind.DROP,
        types=("source.accepted",),
        base=("source.*",),
        threshold="0.2",
        window_s=3600,
        baseline_windows=24,
        group_by=GroupBy.ENTITY,
    )
    ev = evaluator(r)
    ev.handle([log.event("source.submitted", T0, entity=f"src-{i}") for i in range(3000)], T0)
    assert ev.groups(ACCOUNT, "r") == 2_000_000 // (60 * 25)  # MAX_RULE_BUCKETS // buckets a group


# -- event time and the clock ------------------------------------------------------------------------


def test_a_lagging_client_clock_neither_drops_events_nor_stops_a_rule_firing_again() -> None:
    log = Log()
    lag = 3_600_000  # the client's clock an hour behind the server's
    ev = evaluator(rule(Kind.COUNT, threshold="3", window_s=10))

    def failed(at: int) -> StoredEvent:
        return log.event("recipient.failed", at - lag, recorded=at)

    assert kinds(ev.handle([failed(T0), failed(T0), failed(T0 + 1000)], T0)) == [(ALERT_FIRED, "")]
    assert ev.tick(T0 + 2000) == []  # the newest event was recorded 1 s ago: still firing
    assert ev.handle([failed(T0 + 3000)], T0) == []
    assert ev.firing()[0].value == Decimal(3)
    out = ev.tick(T0 + 13_000)  # nothing recorded for a window: resolved, the window cleared
    assert kinds(out) == [(ALERT_RESOLVED, "")] and out[0].value == Decimal(0)
    assert ev.handle([failed(T0 + 14_000), failed(T0 + 14_000)], T0) == []
    assert kinds(ev.handle([failed(T0 + 15_000)], T0)) == [(ALERT_FIRED, "")]


def test_absence_goes_by_the_servers_time_not_the_events_stamps() -> None:
    log = Log()
    ev = evaluator(rule(Kind.ABSENCE, types=("enhancement.succeeded",), window_s=30))
    for i in range(60):  # a healthy service whose clock lags the server's by ten minutes
        at = T0 + i * 1000
        ev.handle([log.event("enhancement.succeeded", at - 600_000, recorded=at)], T0)
        assert ev.tick(at + 500) == []
    assert kinds(ev.tick(T0 + 59_000 + 30_000)) == [(ALERT_FIRED, "")]


def test_one_event_stamped_in_the_future_does_not_blind_a_rule() -> None:
    log = Log()
    ev = evaluator(rule(Kind.COUNT, threshold="3", window_s=60))
    year = 365 * 86_400_000
    assert ev.handle([log.event("recipient.failed", T0 + year, recorded=T0)], T0) == []
    # it counts as if stamped MAX_SKEW_MS past its recording; later events still count
    out = ev.handle([log.event("recipient.failed", T0 + 299_000, recorded=T0 + 1000) for _ in range(2)], T0)
    assert kinds(out) == [(ALERT_FIRED, "")] and out[0].value == Decimal(3)


def test_windows_are_whole_buckets_dividing_the_window() -> None:
    for window_s, width_s in ((60, 1), (101, 101), (90, 2), (300, 5), (7, 1), (3600, 60), (86_400, 1440)):
        assert bucket_width_ms(window_s) == width_s * 1000
        b = Buckets(window_s)
        assert b.per_window * b.width_ms == window_s * 1000


def test_window_counts_lie_between_exact_sliding_windows() -> None:
    """The bucketed count is that of a window between ``window_s - width`` and ``window_s``
    long, ending at the newest event: checked against counting every event kept."""
    import random

    rng = random.Random(8)
    for window_s in (60, 101, 7, 90, 150):
        b = Buckets(window_s)
        w, width = window_s * 1000, b.width_ms
        stamps: list[int] = []
        t = T0 + rng.randrange(1000)
        for _ in range(2000):
            t += rng.choice([1, 200, 999, 1001, 3500, 20_000, 61_000])
            ts = t - rng.choice([0, 0, 0, 700, 5000])
            b.add(ts, 1, 0)
            stamps.append(ts)
            newest = max(stamps)
            widest = sum(1 for s in stamps if newest - w < s <= newest)
            narrowest = sum(1 for s in stamps if newest - (w - width) < s <= newest)
            assert narrowest <= b.win[0] <= widest, (window_s, newest, b.win)
            stamps = [s for s in stamps if s > newest - 3 * w]


# -- replays -----------------------------------------------------------------------------------------


class Run:
    """One evaluator's run as the server makes it: batches handled, ticks between them, what
    it emits appended to the log (positions and recorded_at as the log gives them)."""

    def __init__(self, log: Log, written: list[StoredEvent], ev: Evaluator) -> None:
        self.log = log
        self.written = written
        self.ev = ev
        self.appended: list[Emission] = []

    def append(self, emissions: list[Emission], at: int) -> None:
        for emission in emissions:
            if emission.done:
                continue
            self.appended.append(emission)
            e = emission.event()
            self.log.position += 1
            e.position, e.recorded_at_ms = self.log.position, at
            self.written.append(e)

    def batch(self, events: list[StoredEvent]) -> None:
        self.written.extend(events)
        self.append(self.ev.handle(events, events[-1].recorded_at_ms), events[-1].recorded_at_ms)

    def tick(self, now: int) -> None:
        self.append(self.ev.tick(now), now)


def test_a_replay_with_ticks_between_batches_ends_as_the_live_run_did() -> None:
    """Ordinary timestamps, a resolution by time and an absence by time in the live run: the
    replay after a crash (ticks at the recorded_at of the last event handled, as while
    catching up) appends nothing and ends in the live run's firing state."""
    log = Log()
    rules = [
        rule(Kind.COUNT, "fails", threshold="3", window_s=10, group_by=GroupBy.ENTITY),
        rule(Kind.ABSENCE, "quiet", types=("enhancement.succeeded",), window_s=30),
    ]
    written: list[StoredEvent] = []
    live = Run(log, written, evaluator(*rules))
    saved = orjson.loads(orjson.dumps(live.ev.state()))
    live.batch([log.event("recipient.failed", T0 + i, entity="a") for i in range(3)])
    live.batch([log.event("enhancement.succeeded", T0 + 10)])
    live.tick(T0 + 1000)
    live.tick(T0 + 20_000)  # "a": nothing recorded for a window: resolved by time
    live.tick(T0 + 41_000)  # "quiet": absent for 30 s
    live.batch([log.event("recipient.failed", T0 + 42_000 + i, entity="a") for i in range(3)])
    live.tick(T0 + 43_000)
    live.batch([log.event("recipient.failed", T0 + 44_000, entity="a")])
    assert [(e.type, e.rule.name) for e in live.appended] == [
        (ALERT_FIRED, "fails"),
        (ALERT_RESOLVED, "fails"),
        (ALERT_FIRED, "quiet"),
        (ALERT_FIRED, "fails"),
    ]
    # the crash: the state saved before all this, the log as written, read again in batches
    # of any size (all at once; a few events with a tick after each)
    for size in (len(written), 4, 1):
        again = Run(Log(), [], evaluator(*rules))
        again.ev.restore(saved, rules, 0)
        again.ev.expect([e for e in written if e.flow_id == "alerts"])
        for i in range(0, len(written), size):
            again.batch(written[i : i + size])
            again.tick(written[min(i + size, len(written)) - 1].recorded_at_ms)
        assert again.appended == [], size
        assert again.ev.firing() == live.ev.firing()
        # and from there on, both go the same way
        again.tick(T0 + 60_000)
        assert kinds(again.appended) == [(ALERT_RESOLVED, "a")]
    live.tick(T0 + 60_000)
    assert kinds(live.appended[4:]) == [(ALERT_RESOLVED, "a")]


def test_own_alert_events_coming_back_change_nothing() -> None:
    log = Log()
    r = rule(Kind.COUNT, threshold="2", window_s=10)
    ev = evaluator(r)
    out = ev.handle([log.event("recipient.failed", T0) for _ in range(2)], T0)
    back = out[0].event()
    back.position = log.position = log.position + 1
    assert ev.handle([back], T0) == [] and [a.event_id for a in ev.firing()] == [back.id]
    resolved = ev.tick(T0 + 20_000)[0].event()
    assert ev.handle([resolved], T0) == [] and ev.firing() == []


def test_a_restart_closes_the_alerts_of_a_rule_changed_meanwhile_once() -> None:
    log = Log()
    r = rule(Kind.COUNT, threshold="2", window_s=60)
    ev = evaluator(r)
    (fired,) = ev.handle([log.event("recipient.failed", T0) for _ in range(2)], T0)
    saved = orjson.loads(orjson.dumps(ev.state()))
    newer = rule(Kind.COUNT, threshold="2", window_s=60, set_at_ms=5)
    # set again while the server was down (or before its state was saved)
    again = evaluator(newer)
    again.restore(saved, [newer], log.position)
    again.expect([])
    (closed,) = again.tick(T0 + 1)
    details = closed.event().details
    assert (closed.type, details["cause"], details["rule_version"]) == (
        ALERT_RESOLVED,
        "rule_changed",
        r.version,
    )
    assert details["fired_event_id"] == fired.event_id and details["kind"] == "count"
    assert details["threshold"] == "2" and details["window_s"] == 60
    # the same, but the closing was written before the crash: not written twice
    third = evaluator(newer)
    third.restore(saved, [newer], log.position)
    written = closed.event()
    written.position = log.position + 1
    third.expect([written])
    assert third.tick(T0 + 2) == []
    # owed when the state was saved, not yet written: saved with it, written after a restart
    ev.set_rules([newer])
    owed = orjson.loads(orjson.dumps(ev.state()))
    fourth = evaluator(newer)
    fourth.restore(owed, [newer], log.position)
    fourth.expect([])
    assert [e.fired_event_id for e in fourth.tick(T0 + 3)] == [fired.event_id]


# -- bounds and state --------------------------------------------------------------------------------


def test_absence_refuses_new_groups_rather_than_evict_the_one_about_to_fire() -> None:
    log = Log()
    ev = evaluator(
        rule(Kind.ABSENCE, types=("enhancement.succeeded",), window_s=30, group_by=GroupBy.ENTITY),
        max_groups=3,
    )
    ev.handle([log.event("enhancement.succeeded", T0 + i, entity=f"svc-{i}") for i in range(5)], T0)
    assert ev.groups(ACCOUNT, "r") == 3 and ev.refused == {(ACCOUNT, "r"): 2}
    out = ev.tick(T0 + 40_000)
    assert sorted(e.group for e in out) == ["svc-0", "svc-1", "svc-2"]


def test_client_events_of_any_flow_count_by_their_type() -> None:
    log = Log()
    ev = evaluator(rule(Kind.COUNT, types=(), threshold="2"))
    events = [log.event("recipient.failed", T0, flow="audit"), log.event("step.done", T0, flow="alerts")]
    assert kinds(ev.handle(events, T0)) == [(ALERT_FIRED, "")]


def test_the_state_of_ten_thousand_groups_round_trips() -> None:
    log = Log()
    rules = [
        rule(Kind.COUNT, "count", threshold="3", window_s=3600, group_by=GroupBy.ENTITY),
        rule(
            Kind.DROP,
            "drop",
            types=("recipient.failed",),
            base=("recipient.*",),
            threshold="0.5",
            window_s=60,
            baseline_windows=2,
            min_events=1,
            group_by=GroupBy.ENTITY,
        ),
    ]
    ev = evaluator(*rules)
    events = [
        log.event(
            "recipient.failed" if i % 3 else "recipient.delivered", T0 + i * 37, entity=f"g-{i % 10_000}"
        )
        for i in range(40_000)
    ]
    ev.handle(events, T0)
    assert ev.groups(ACCOUNT, "count") == ev.groups(ACCOUNT, "drop") == 10_000
    state = ev.state()
    again = evaluator(*rules)
    again.restore(orjson.loads(orjson.dumps(state)), rules, log.position)
    assert again.state() == orjson.loads(orjson.dumps(state))
    assert again.firing() == ev.firing() and len(ev.firing()) > 1000
    # a second save re-encodes only what changed since the first
    kept = ev.state()["rules"][0][6]
    assert all(a is b for a, b in zip(kept, state["rules"][0][6], strict=True))
    more = [log.event("recipient.failed", T0 + 40_000 * 37, entity=f"g-{i}") for i in range(10)]
    assert kinds(ev.handle(more, T0)) == kinds(again.handle(more, T0))
    assert [(a.group, a.value) for a in ev.firing()] == [(a.group, a.value) for a in again.firing()]
