"""The comparison's workload: simulated lead flows, and the answers every system must give.

Everything comes from ``LeadFlowSimulator`` with one seed (5-8 events a lead,
~30-field snapshots of 1.0-1.4 KB, 20 flows, a day of traffic), so every
system stores the same events and every run of the harness the same data set.
Ids are set on every event, as ``BackgroundAppender`` and any idempotent
writer sets them; they are drawn from a seeded generator too.

Three disjoint parts, so that no system ever sees an event twice in one store:

- ``dataset``: the events loaded in batches (the batched-ingest figure), then
  read back: timelines, scans and the replay. Their expected answers are
  computed here, from the generator, not from any system.
- ``singles``: the events of the single-event ingest figures (the next
  simulated day, so they never fall in a scan window).
- ``live``: the events published while a subscriber follows (the day after).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from leadtrail.server.simulation import DAY_MS, DEFAULT_START_MS, LeadFlowSimulator, SimulatedEvent

SEED = 20240115
"""As the other benchmarks' seed: the same lead flows."""
HOUR_MS = 3_600_000
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


@dataclass(frozen=True)
class Scan:
    """One type + 1-hour window query and the number of dataset events it must find."""

    event_type: str
    start_ms: int
    end_ms: int
    expected: int


@dataclass(frozen=True)
class Workload:
    dataset: list[SimulatedEvent]
    singles: list[SimulatedEvent]
    live: list[SimulatedEvent]
    timeline_lengths: dict[str, int]
    """Events per lead in the dataset: the length every timeline read must return."""
    timeline_sample: list[str]
    """Lead ids to read, in order, drawn at random from the dataset's leads."""
    scans: list[Scan]

    @property
    def leads(self) -> int:
        return len(self.timeline_lengths)


def event_id(rng: random.Random, timestamp_ms: int) -> str:
    """``evt_`` + a ULID (48-bit time, 80 random bits), from a seeded generator."""
    value = (timestamp_ms << 80) | rng.getrandbits(80)
    return "evt_" + "".join(_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))


def _whole_leads(simulator: LeadFlowSimulator, n_events: int, rng: random.Random) -> list[SimulatedEvent]:
    """At least ``n_events`` events of whole leads (one simulated day), in timestamp order."""
    events = list(simulator.events(max(1, n_events // 6 + 1)))
    for event in events:
        event["id"] = event_id(rng, event["timestamp_ms"])
    return events


def build(
    dataset_events: int,
    single_events: int,
    live_events: int,
    timeline_reads: int,
    scans: int,
    seed: int = SEED,
) -> Workload:
    simulator = LeadFlowSimulator(seed)
    ids = random.Random(f"{seed}:ids")
    dataset = _whole_leads(simulator, dataset_events, ids)
    singles = _whole_leads(simulator, single_events, ids)
    live = _whole_leads(simulator, live_events, ids)
    lengths = Counter(event["lead_id"] for event in dataset)
    chooser = random.Random(f"{seed}:reads")
    lead_ids = sorted(lengths)
    sample = [chooser.choice(lead_ids) for _ in range(timeline_reads)]
    return Workload(
        dataset=dataset,
        singles=singles,
        live=live,
        timeline_lengths=dict(lengths),
        timeline_sample=sample,
        scans=choose_scans(dataset, scans, chooser),
    )


def choose_scans(dataset: Sequence[SimulatedEvent], count: int, rng: random.Random) -> list[Scan]:
    """``count`` (type, hour) queries over the simulated day, weighted as the types occur."""
    types = Counter(event["type"] for event in dataset)
    names = sorted(types)
    weights = [types[name] for name in names]
    scans = []
    for _ in range(count):
        event_type = rng.choices(names, weights=weights)[0]
        start_ms = DEFAULT_START_MS + rng.randrange(DAY_MS // HOUR_MS) * HOUR_MS
        end_ms = start_ms + HOUR_MS
        expected = sum(
            1
            for event in dataset
            if event["type"] == event_type and start_ms <= event["timestamp_ms"] < end_ms
        )
        scans.append(Scan(event_type, start_ms, end_ms, expected))
    return scans
