"""Bodies compressed against a base (format 1.3): every read answers what the JSON form does.

A lead's later bodies are compressed against one of its two previous bodies in the
segment, so a read decodes a chain of records. Whatever the read (one event, a
timeline, a scan, a replay from any position, cold or warm), and after whatever
rewrite (erasure, retention tiering), the answers must equal those of a store
written in the 1.1 JSON form; a damaged base fails its dependents as damage.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from leadtrail.storage import CorruptionError, Event, EventFilter, EventLog, Options, Outcome, RetentionPolicy
from leadtrail.storage.codec import EventPrefix
from leadtrail.storage.format import CODEC_WIRE_ZSTD_PREFIX_BARE, RECORD_HEADER_SIZE
from leadtrail_storage_faults import event_id, record_spans, segment_paths  # loaded by conftest.py
from leadtrail_storage_support import Clock, canon_event  # loaded by conftest.py

T0 = 1_767_225_600_000
DAY_MS = 86_400_000
LONG_LEAD = "lead-long"
STEPS = 20
TYPES = ("source.submitted", "validation.passed", "enhancement.appended", "recipient.delivered")


def step_event(lead_id: str, n: int, number: int, email: str | None = None) -> Event:
    """Step ``n`` of a lead: the personal fields stay, a few plain ones change or appear."""
    lead: dict[str, Any] = {
        "email": email or f"person.{lead_id}@example.com",
        "phone": f"+1555{abs(hash(lead_id)) % 10**7:07d}",
        "first_name": "Robin",
        "address": {"street": "12 Oak Lane", "city": "Salem", "state": "OR"},
        "loan_amount": 200_000 + 1_000 * n,
        "stage": TYPES[n % len(TYPES)],
    }
    for k in range(n):
        lead[f"appended.check_{k}.result"] = f"ok-{k}"
    return Event(
        type=TYPES[n % len(TYPES)],
        lead_id=lead_id,
        flow_id="flow-solar",
        id=event_id(number),
        timestamp_ms=T0 + number * 1_000,
        entity_id="buyer-3" if n % 4 == 3 else "",
        outcome=Outcome.SUCCESS if n % 5 else Outcome.FAILURE,
        reason="" if n % 5 else "timeout",
        price="9.75" if n % 4 == 3 else "",
        details={"attempt": n, "echo": f"sent to {lead['email']}"},
        lead=lead,
    )


def journey_events(long_steps: int = STEPS, others: int = 12) -> list[Event]:
    """One long lead interleaved with shorter ones (chains of several lengths)."""
    events: list[Event] = []
    number = 1
    short_steps = [0] * others
    for n in range(long_steps):
        events.append(step_event(LONG_LEAD, n, number))
        number += 1
        for k in range(others):
            if (n + k) % 3 == 0 and short_steps[k] < 7:
                events.append(step_event(f"lead-{k}", short_steps[k], number))
                short_steps[k] += 1
                number += 1
    return events


def options(clock: Clock, form: str = "wire", **kw: Any) -> Options:
    return Options(clock_ms=clock, dictionary_training_samples=40, record_form=form, **kw)


def write(path: Path, events: list[Event], opts: Options) -> None:
    with EventLog.open(path, opts) as log:
        for start in range(0, len(events), 7):
            log.append(events[start : start + 7])
        trainer = log.trainer
        assert trainer is None or trainer.wait_idle(30)


def payloads(path: Path) -> Iterator[tuple[int, EventPrefix]]:
    for segment in segment_paths(path):
        data = segment.read_bytes()
        for span in record_spans(segment):
            if span.kind == 1:
                payload = data[span.offset + RECORD_HEADER_SIZE : span.end]
                yield span.position, EventPrefix(payload, span.position)


def everything(log: EventLog, events: list[Event], rng: random.Random) -> dict[str, Any]:
    """Every read of every event, lead and scan, in canonical form (compare with ==)."""
    answers: dict[str, Any] = {}
    shuffled = list(events)
    rng.shuffle(shuffled)  # lookups in random order: chains resolved cold, not step by step
    for e in shuffled:
        got = log.get(e.id)
        answers[f"get {e.id}"] = canon_event(got) if got else None
        stored = log.get_stored(e.id)
        answers[f"wire {e.id}"] = stored.wire() if stored else None
    for lead_id in sorted({e.lead_id for e in events}):
        answers[f"timeline {lead_id}"] = [canon_event(x) for x in log.timeline(lead_id)]
        answers[f"stored {lead_id}"] = [s.wire() for s in log.lead_stored(lead_id, descending=True)]
        answers[f"page {lead_id}"] = [canon_event(x) for x in log.lead_events(lead_id, limit=3)]
    for types in (("recipient.delivered",), ("enhancement.appended", "validation.passed"), ()):
        flt = EventFilter(types=types)
        answers[f"scan {types}"] = [canon_event(x) for x in log.scan(flt, limit=1000).events]
        answers[f"scan nolead {types}"] = [
            canon_event(x) for x in log.scan(flt, limit=1000, include_lead=False).events
        ]
        answers[f"scan stored {types}"] = [s.wire() for s in log.scan_stored(flt, limit=1000)[0]]
    last = log.last_position
    for start in (1, 2, last // 3, last // 2 + 1, last):
        answers[f"replay {start}"] = [canon_event(x) for x in log.read_from(start)]
        answers[f"replay stored {start}"] = [s.wire() for s in log.read_stored_from(start)]
    return answers


@pytest.fixture
def clock() -> Clock:
    return Clock(T0 + 10 * DAY_MS)


def test_later_bodies_of_a_lead_are_compressed_against_its_earlier_ones(tmp_path: Path, clock: Clock) -> None:
    events = journey_events()
    write(tmp_path / "store", events, options(clock))
    lead_of = {position: events[position - 1].lead_id for position, _ in payloads(tmp_path / "store")}
    chain: list[tuple[int, EventPrefix]] = [
        (p, prefix) for p, prefix in payloads(tmp_path / "store") if lead_of[p] == LONG_LEAD
    ]
    assert len(chain) == STEPS
    assert chain[0][1].codec != CODEC_WIRE_ZSTD_PREFIX_BARE and chain[0][1].base_position == 0
    depth: dict[int, int] = {}
    earlier: list[int] = []
    for position, prefix in chain:
        if prefix.codec == CODEC_WIRE_ZSTD_PREFIX_BARE:
            # The base is one of the lead's two previous events, never another lead's.
            assert prefix.base_position in earlier[-2:], (position, prefix.base_position)
            depth[position] = depth[prefix.base_position] + 1
        else:
            assert prefix.base_position == 0
            depth[position] = 0
        earlier.append(position)
    assert sum(1 for _, p in chain if p.codec == CODEC_WIRE_ZSTD_PREFIX_BARE) >= STEPS - 2
    assert max(depth.values()) <= 8
    assert max(depth.values()) < STEPS // 2 + 2, "steps alternate between two bases"


@pytest.mark.parametrize("segment_bytes", [64 * 1024 * 1024, 6 * 1024], ids=["one-segment", "segments"])
def test_every_read_equals_the_json_forms(tmp_path: Path, clock: Clock, segment_bytes: int) -> None:
    events = journey_events()
    write(tmp_path / "wire", events, options(clock, segment_bytes=segment_bytes))
    write(tmp_path / "json", events, options(clock, "json", segment_bytes=segment_bytes))
    assert any(p.codec == CODEC_WIRE_ZSTD_PREFIX_BARE for _, p in payloads(tmp_path / "wire"))
    if segment_bytes < 1024 * 1024:
        assert len(segment_paths(tmp_path / "wire")) >= 3, "chains must meet segment ends"
    with EventLog.open(tmp_path / "json", options(clock, "json")) as log:
        expected = everything(log, events, random.Random(3))
    assert expected[f"get {events[-1].id}"]["lead"]  # snapshots are there to compare
    with EventLog.open(tmp_path / "wire", options(clock)) as log:
        cold = everything(log, events, random.Random(3))
        warm = everything(log, events, random.Random(4))
    assert [k for k in expected if expected[k] != cold.get(k)] == []
    assert [k for k in expected if expected[k] != warm.get(k)] == []


def test_a_damaged_base_fails_its_dependents_as_damage(tmp_path: Path, clock: Clock) -> None:
    events = journey_events(long_steps=6, others=3)
    path = tmp_path / "store"
    with EventLog.open(path, options(clock)) as log:
        for e in events:
            log.append([e])
        chained = {p: prefix.base_position for p, prefix in payloads(path) if prefix.base_position}
        base = min(chained.values())
        dependents = sorted(p for p, b in chained.items() if b == base)
        assert dependents
        healthy = events[next(p for p in range(1, len(events) + 1) if p != base and p not in chained) - 1]
        span = next(s for s in record_spans(segment_paths(path)[-1]) if s.position == base)
        with open(segment_paths(path)[-1], "r+b") as f:  # a bit flips under the open store
            f.seek(span.end - 3)
            byte = f.read(1)
            f.seek(span.end - 3)
            f.write(bytes([byte[0] ^ 0x10]))
            f.flush()
            os.fsync(f.fileno())
        for position in dependents:
            with pytest.raises(CorruptionError, match=f"base at position {base}"):
                log.get_stored(events[position - 1].id)
            with pytest.raises(CorruptionError):
                log.get(events[position - 1].id)
        with pytest.raises(CorruptionError):
            log.timeline(events[base - 1].lead_id)
        assert log.get(healthy.id) is not None  # other leads' records still read


def test_erasing_a_lead_with_chains_leaves_every_other_read_as_it_was(tmp_path: Path, clock: Clock) -> None:
    events = journey_events()
    path = tmp_path / "store"
    opts = options(clock, segment_bytes=6 * 1024)
    write(path, events, opts)
    others = [e for e in events if e.lead_id != LONG_LEAD]
    with EventLog.open(path, opts) as log:
        before = {e.id: canon_event(log.get(e.id)) for e in others}  # type: ignore[arg-type]
        email = f"person.{LONG_LEAD}@example.com"
        long_events = [e for e in events if e.lead_id == LONG_LEAD]
        assert all(email in str(log.get(e.id)) for e in long_events)
        report = log.erase_lead(LONG_LEAD, requested_by="test")
        assert report is not None and report.events_erased == STEPS
        # The same process read every body before: none of them may be a base any more.
        for e in reversed(long_events):
            got = log.get_stored(e.id)
            assert got is not None and email not in got.event().lead.values()
    with EventLog.open(path, opts) as log:  # cold: every chain decoded from the new files
        shuffled = list(events)
        random.Random(8).shuffle(shuffled)
        for e in shuffled:
            got = log.get(e.id)
            assert got is not None
            if e.lead_id == LONG_LEAD:
                assert email not in str(got) and got.lead["email"] == "[erased]"
                assert got.lead["loan_amount"] == e.lead["loan_amount"]
                assert got.lead.keys() == e.lead.keys()
            else:
                assert canon_event(got) == before[e.id]
        timeline = [x for x in log.timeline(LONG_LEAD) if not x.type.startswith("audit.")]
        assert [x.id for x in timeline] == [e.id for e in events if e.lead_id == LONG_LEAD]
        assert all(email not in s.wire().decode("latin-1") for s in log.read_stored_from(1))
        assert log.verify().problems == []


def test_tiering_ages_a_leads_early_events_and_its_later_ones_still_read(tmp_path: Path) -> None:
    clock = Clock(T0)
    path = tmp_path / "store"
    opts = options(clock)
    email = "early.bird@example.com"
    early = [step_event("lead-tier", n, 100 + n, email) for n in range(6)]
    late = [step_event("lead-tier", n, 200 + n, email) for n in range(6, 12)]

    def check(log: EventLog) -> None:
        for e in reversed(early + late):  # the latest first: each read resolves its chain
            got = log.get(e.id)
            assert got is not None
            assert got.lead["email"] == ("[erased]" if e in early else email)
            if e in late:
                assert dict(got.lead) == e.lead and dict(got.details) == e.details
            else:  # personal fields (their class decides which) erased, every other value kept
                personal = {k for k, v in got.lead.items() if v == "[erased]"}
                assert "email" in personal and "loan_amount" not in personal
                assert {k: v for k, v in got.lead.items() if k not in personal} == {
                    k: v for k, v in e.lead.items() if k not in personal
                }
        assert [x.id for x in log.timeline("lead-tier")] == [e.id for e in early + late]
        assert log.verify().problems == []

    with EventLog.open(path, opts) as log:
        for e in early:
            log.append([e])
        clock.now += 20 * DAY_MS
        for e in late:
            log.append([e])
        assert sum(1 for _, p in payloads(path) if p.codec == CODEC_WIRE_ZSTD_PREFIX_BARE) >= 10
        assert all(log.get(e.id) is not None for e in early + late)  # every body read: cached
        log.set_retention_policy(RetentionPolicy("default", pii_max_age_days=30))
        report = log.apply_retention(clock.now + 15 * DAY_MS)  # early 35 days old, late 15
        assert report.events_scrubbed == len(early) and report.events_removed == 0
        check(log)  # in the same process: no body read before the rewrite may serve as a base
    chained = [p for _, p in payloads(path) if p.codec == CODEC_WIRE_ZSTD_PREFIX_BARE]
    assert len(chained) >= 10, "the rewritten segment compresses against bases again"
    with EventLog.open(path, opts) as log:
        check(log)
