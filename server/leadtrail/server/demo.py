"""``leadtrail demo``: simulated lead flows appended to a running server.

The events come from :class:`LeadFlowSimulator` (sources, validation,
enrichment, filters, buyers with caps, retries, feedback days later). Event
ids are derived from the seed as well, so running the demo twice with the same
seed appends nothing new the second time: the store reports duplicates, as it
would for a flow engine retrying a batch.
"""

from __future__ import annotations

import argparse
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from leadtrail.client import Event, Outcome, PermissionDeniedError

from .cli_output import duration, timeline_table
from .cli_remote import connect
from .simulation import LeadFlowSimulator, SimulatedEvent
from .term import ProgressLine

BATCH = 500
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
