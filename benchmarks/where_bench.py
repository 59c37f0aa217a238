"""What field rules (``EventFilter.where``) cost as a post-filter, against what an index on
snapshot values could give at best.

    python benchmarks/where_bench.py [--events N] [--runs N] [--json FILE]

One store (a temporary directory, ``interval`` fsync while loading) of N simulated events
(``leadtrail.server.simulation``: ~30-field snapshots of 1.0-1.4 KB, states drawn like the
US population, so ``lead.state==TX`` holds for about one event in nine), queried in this
process through the engine, as the servicers call it:

- ``all TX, stored``: every event with ``lead.state==TX``, pages of 1,000 through
  ``scan_stored`` (the QueryEvents path: the wire body is decoded for the rule only).
- ``all TX, decoded``: the same through ``scan(include_lead=False)`` (Export and Aggregate).
- ``no rule, stored``: every event, no rule: the walk of the time index and the reads alone.
- ``ideal index``: only the TX events, each read by id: what an index of
  (account, field, value) -> position would leave to do, at best (it would also cost a
  write per field per event on append, and space for every snapshot field).
- ``first page TX`` / ``first page rare``: the first QueryEvents page (100 events) for
  ``lead.state==TX`` and for a value of a handful of events (one lead's postal code): the
  page never fills, so the whole log is read, the worst case of a post-filter.
- ``type+hour+TX``: ``recipient.delivered`` in one hour with the rule: the type index narrows,
  the rule checks what is left.

Each figure is the median of the runs, in milliseconds, with events scanned per second
where it applies.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from leadtrail.server.simulation import LeadFlowSimulator, SimulatedEvent
from leadtrail.storage import Event, EventFilter, EventLog, FieldRule, Options, Outcome, RuleOp, new_event_id
from leadtrail.storage.options import FsyncPolicy

SEED = 20240115
HOUR_MS = 3_600_000
TEXAS = FieldRule("lead.state", RuleOp.EQ, ("TX",))


def to_event(d: SimulatedEvent) -> Event:
    return Event(
        type=d["type"],
        lead_id=d["lead_id"],
        flow_id=d["flow_id"],
        id=d["id"],
        timestamp_ms=d["timestamp_ms"],
        entity_id=d["entity_id"],
        outcome=Outcome(d["outcome"]),
        reason=d["reason"],
        duration_ms=d["duration_ms"],
        integration=d["integration"],
        response_code=d["response_code"],
        price=d["price"],
        details=d["details"],
        lead=d["lead"],
    )


def load(log: EventLog, n_events: int) -> list[Event]:
    simulated = list(LeadFlowSimulator(seed=SEED).events(n_events // 6 + 1))[:n_events]
    events = [to_event(d) for d in simulated]
    for event in events:  # the ids the ideal index is read by
        event.id = event.id or new_event_id()
    for i in range(0, len(events), 500):
        log.append(events[i : i + 500])
    return events


def timed(runs: int, work: Callable[[], int]) -> tuple[float, int]:
    """(median milliseconds, what the work counted)."""
    times, counted = [], 0
    for _ in range(runs):
        started = time.perf_counter()
        counted = work()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), counted


def all_stored(log: EventLog, f: EventFilter) -> int:
    cursor, count = None, 0
    while True:
        events, cursor = log.scan_stored(f, after=cursor, limit=1000)
        count += len(events)
        if cursor is None:
            return count


def all_decoded(log: EventLog, f: EventFilter) -> int:
    cursor, count = None, 0
    while True:
        page = log.scan(f, after=cursor, limit=1000, include_lead=False)
        count += len(page.events)
        if page.cursor is None:
            return count
        cursor = page.cursor


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as directory:
        options = Options(fsync=FsyncPolicy(interval_ms=200))
        with EventLog.open(directory, options) as log:
            started = time.perf_counter()
            events = load(log, args.events)
            print(f"loaded {len(events)} events in {time.perf_counter() - started:.1f} s", file=sys.stderr)
            texas_ids = [e.id for e in events if e.lead.get("state") == "TX"]
            codes = Counter(str(e.lead["postal_code"]) for e in events if "postal_code" in e.lead)
            rare_code = codes.most_common()[len(codes) // 2][0]  # one lead's or a few leads'
            texas = EventFilter(where=(TEXAS,))
            rare = EventFilter(where=(FieldRule("lead.postal_code", RuleOp.EQ, (rare_code,)),))
            delivered = [e for e in events if e.type == "recipient.delivered"]
            start = delivered[len(delivered) // 2].timestamp_ms or 0
            narrowed = EventFilter(
                types=("recipient.delivered",), start_ms=start, end_ms=start + HOUR_MS, where=(TEXAS,)
            )

            def ideal() -> int:
                return sum(log.get_stored(event_id) is not None for event_id in texas_ids)

            def first_page(f: EventFilter) -> Callable[[], int]:
                return lambda: len(log.scan_stored(f, limit=100)[0])

            cases: dict[str, Callable[[], int]] = {
                "all TX, stored": lambda: all_stored(log, texas),
                "all TX, decoded": lambda: all_decoded(log, texas),
                "no rule, stored": lambda: all_stored(log, EventFilter()),
                "ideal index": ideal,
                "first page TX": first_page(texas),
                "first page rare": first_page(rare),
                "type+hour+TX": lambda: all_stored(log, narrowed),
            }
            figures: dict[str, Any] = {"events": len(events), "texas": len(texas_ids), "runs": args.runs}
            for name, work in cases.items():
                ms, counted = timed(args.runs, work)
                figures[name] = {"ms": round(ms, 2), "found": counted}
                print(f"{name:18} {ms:9.1f} ms  found {counted}", file=sys.stderr)
            scanned = figures["all TX, stored"]
            scanned["events_scanned_per_s"] = round(len(events) / (scanned["ms"] / 1000))
    if args.json:
        with open(args.json, "w") as out:
            json.dump(figures, out, indent=1)
    print(json.dumps(figures, indent=1))
    return figures


if __name__ == "__main__":
    main()
