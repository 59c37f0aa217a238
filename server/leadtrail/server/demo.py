"""``leadtrail demo``: simulated lead flows appended to a running server.

The events come from :class:`LeadFlowSimulator` (sources, validation,
enrichment, filters, buyers with caps, retries, feedback days later). Event
ids are derived from the seed as well, so running the demo twice with the same
seed appends nothing new the second time: the store reports duplicates, as it
would for a flow engine retrying a batch.

``--live`` keeps flows running instead (``LiveTraffic``): events at ``--rate``
a second, timestamped as they are sent, with an incident every
``--incident-every`` seconds announced on stderr, until ``--duration`` seconds
or Ctrl-C. With ``--duration D`` exactly ``rate * D`` events are sent, the same
ones for the same seed (only their times and the time part of their ids
differ); a server slower than the rate makes the run longer, not smaller.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from leadtrail.client import Event, Outcome, PermissionDeniedError

from .cli_errors import UsageError
from .cli_output import duration, timeline_table
from .cli_remote import connect
from .simulation import IncidentChange, LeadFlowSimulator, LiveTraffic, SimulatedEvent
from .term import ProgressLine

BATCH = 500
DEFAULT_RATE = 50
DEFAULT_INCIDENT_EVERY_S = 720
LIVE_TICK_S = 0.05
"""How often the live sender looks whether events are due: small batches, a steady flow."""
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def event_id(timestamp_ms: int, rng: random.Random) -> str:
    """A ULID-shaped id (``evt_`` + 48-bit time + 80 random bits, Crockford base32) drawn
    from ``rng``: the same seed names the same ids, and ids still sort by time."""
    value = (timestamp_ms & ((1 << 48) - 1)) << 80 | rng.getrandbits(80)
    digits = [_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5)]
    return "evt_" + "".join(digits)


def to_event(simulated: SimulatedEvent, event_id: str) -> Event:
    return Event(
        type=simulated["type"],
        lead_id=simulated["lead_id"],
        flow_id=simulated["flow_id"],
        id=event_id,
        timestamp=_EPOCH + timedelta(milliseconds=simulated["timestamp_ms"]),
        entity_id=simulated["entity_id"],
        outcome=Outcome(simulated["outcome"]),
        reason=simulated["reason"],
        duration_ms=simulated["duration_ms"],
        integration=simulated["integration"],
        response_code=simulated["response_code"],
        price=Decimal(simulated["price"]) if simulated["price"] else None,
        details=simulated["details"],
        lead=simulated["lead"],
    )


@dataclass
class FlowReport:
    """What the simulated traffic did, counted the way an operator's daily report does."""

    types: Counter[str] = field(default_factory=Counter)
    buyer_results: Counter[str] = field(default_factory=Counter)
    journeys: Counter[str] = field(default_factory=Counter)
    cost: Decimal = Decimal(0)
    revenue: Decimal = Decimal(0)
    returns: Decimal = Decimal(0)
    events_by_lead: dict[str, list[SimulatedEvent]] = field(default_factory=dict)

    def add(self, event: SimulatedEvent) -> None:
        self.types[event["type"]] += 1
        self.events_by_lead.setdefault(event["lead_id"], []).append(event)
        price = Decimal(event["price"]) if event["price"] else Decimal(0)
        if event["type"] == "source.accepted":
            self.cost -= price
        elif event["type"] == "feedback.received":
            self.returns -= price
        elif price > 0:
            self.revenue += price
        if event["type"] in ("recipient.delivered", "recipient.failed", "recipient.error", "retry.attempted"):
            self.buyer_results[Outcome(event["outcome"]).name] += 1
        if event["type"] == "flow.completed":
            sold = event["outcome"] == Outcome.SUCCESS
            self.journeys["sold" if sold else "unsold"] += 1
        elif event["type"] == "source.rejected":
            self.journeys["rejected"] += 1
        elif event["type"] == "filter.failed" and event["details"].get("rule_set") != "acceptance":
            self.journeys["filtered"] += 1

    def sample_lead(self) -> str:
        """The lead that shows the most of a journey: retried, fed back, longest."""

        def interest(item: tuple[str, list[SimulatedEvent]]) -> tuple[bool, bool, bool, int]:
            types = {e["type"] for e in item[1]}
            fed_back, retried = "feedback.received" in types, "retry.scheduled" in types
            return (fed_back and retried, fed_back, retried, len(item[1]))

        return max(self.events_by_lead.items(), key=interest)[0]

    def lines(self) -> list[str]:
        j, t = self.journeys, self.types
        unsold = j["unsold"] - j["rejected"] - j["filtered"]
        b = self.buyer_results
        conversions = self.types["feedback.received"] - self._returned()
        money = (
            f"cost {self.cost:,.2f}  revenue {self.revenue:,.2f}  returns {self.returns:,.2f}  "
            f"profit {self.revenue - self.cost - self.returns:,.2f}"
        )
        mix = ", ".join(
            f"{name} {count}" for name, count in sorted(t.items(), key=lambda kv: (-kv[1], kv[0]))
        )
        return [
            f"  journeys  {j['sold']} sold, {j['rejected']} rejected at the source, "
            f"{j['filtered']} filtered, {unsold} offered but unsold",
            f"  services  {t['enhancement.success']} enrichments, {t['enhancement.error']} errors",
            f"  buyers    {b['SUCCESS']} deliveries, {b['FAILURE']} declined or capped, "
            f"{b['ERROR']} errors, {t['retry.scheduled']} retries",
            f"  feedback  {conversions} conversions, {self._returned()} returns",
            f"  money     {money}",
            f"  events    {mix}",
        ]

    def _returned(self) -> int:
        return sum(
            1
            for events in self.events_by_lead.values()
            for e in events
            if e["type"] == "feedback.received" and e["outcome"] != Outcome.SUCCESS
        )


def cmd_demo(args: argparse.Namespace) -> int:
    if args.live:
        return cmd_demo_live(args)
    given = [flag for flag, value in _live_flags(args).items() if value is not None]
    if given:
        raise UsageError(f"{', '.join(given)}: only with --live")
    simulated = list(LeadFlowSimulator(seed=args.seed).events(args.leads))
    ids = random.Random(f"{args.seed}:ids")
    events = [to_event(e, event_id(e["timestamp_ms"], ids)) for e in simulated]
    report = FlowReport()
    for e in simulated:
        report.add(e)

    appended = duplicates = 0
    first = last = 0
    started = time.monotonic()
    with connect(args) as client:
        with ProgressLine() as progress:
            for i in range(0, len(events), BATCH):
                for result in client.append(events[i : i + BATCH]):
                    duplicates += result.duplicate
                    appended += not result.duplicate
                    first = min(first or result.position, result.position)
                    last = max(last, result.position)
                progress.update(f"appended {appended + duplicates} of {len(events)} events")
        elapsed = time.monotonic() - started
        rate = f"{len(events) / elapsed:,.0f} events/s" if elapsed > 0 else ""
        # What was stored is said before anything is read back: a key that may only
        # write (the writer role) has done all the demo needs of it by now.
        print(
            f"demo: {args.leads} leads, {len(events)} events to {args.server}: appended {appended}, "
            f"duplicates {duplicates}, positions {first}..{last}, {duration(int(elapsed * 1000))} ({rate})"
        )
        print("\n".join(report.lines()))
        print()
        lead = report.sample_lead()
        try:
            sample = client.timeline(lead)
        except PermissionDeniedError:
            print(
                f"sample lead: {lead} not shown: this API key's role may append but not read "
                f"(a reader, analyst or admin key can: leadtrail timeline {lead})"
            )
            return 0
    print("sample lead:")
    print("\n".join(timeline_table(sample)))
    return 0


def _live_flags(args: argparse.Namespace) -> dict[str, int | None]:
    return {"--rate": args.rate, "--duration": args.duration, "--incident-every": args.incident_every}


def cmd_demo_live(args: argparse.Namespace) -> int:
    rate = args.rate or DEFAULT_RATE
    every = DEFAULT_INCIDENT_EVERY_S if args.incident_every is None else args.incident_every
    total = rate * args.duration if args.duration else None
    traffic = LiveTraffic(seed=args.seed, rate=rate, incident_every_s=every)
    ids = random.Random(f"{args.seed}:ids")
    until = f"{args.duration} s" if args.duration else "Ctrl-C"
    banner = f"demo: live traffic to {args.server} at {rate} events/s until {until}" + (
        f", an incident every {every} s" if every else ""
    )
    sent = duplicates = incidents = 0
    started = time.monotonic()
    with connect(args) as client:
        try:
            while total is None or sent < total:
                due = int(rate * (time.monotonic() - started)) + 1
                n = min(due - sent, BATCH, total - sent if total is not None else BATCH)
                if n <= 0:
                    time.sleep(LIVE_TICK_S)
                    continue
                now_ms = time.time_ns() // 1_000_000
                events: list[Event] = []
                for item in traffic.take(n):
                    if isinstance(item, IncidentChange):
                        incidents += item.started
                        _announce(item, now_ms)
                    else:
                        live = item.copy()
                        live["timestamp_ms"] = now_ms
                        events.append(to_event(live, event_id(now_ms, ids)))
                duplicates += sum(result.duplicate for result in client.append(events))
                if not sent:  # said once the server took the first events: an unreachable one is one line
                    print(banner, file=sys.stderr, flush=True)
                sent += len(events)
        except KeyboardInterrupt:  # the way a run without --duration ends
            pass
    if traffic.active is not None:
        print(f"demo: incident ended (demo stopped): {traffic.active.describe()}", file=sys.stderr)
    elapsed = time.monotonic() - started
    print(
        f"demo: live: {sent} events to {args.server} in {elapsed:.1f} s "
        f"({sent / elapsed if elapsed > 0 else 0:,.0f} events/s), duplicates {duplicates}, "
        f"incidents {incidents}"
    )
    return 0


def _announce(change: IncidentChange, now_ms: int) -> None:
    moment = (_EPOCH + timedelta(milliseconds=now_ms)).strftime("%H:%M:%S")
    state = "started" if change.started else "ended"
    print(f"demo: {moment} incident {state}: {change.incident.describe()}", file=sys.stderr, flush=True)
