"""Damage that a crash cannot explain is corruption (DESIGN.md, "The log" 2, 7).

A flipped bit anywhere in a sealed segment (its header, a record header, a
payload, the seal), or a bad record followed by valid ones in the last
segment, refuses the open and names the segment file; it is never truncated
away, skipped or served. ``Options(quarantine=True)`` moves the damaged
range aside, opens, and ``verify()`` lists what was lost from then on.
"""

from __future__ import annotations

import dataclasses
import json
import random
import subprocess
from pathlib import Path

import leadtrail_storage_faults as faults  # loaded by conftest.py
import pytest
from leadtrail.storage import CorruptionError, Event, EventLog, Options

SMALL = Options(segment_bytes=4096)
QUARANTINE = dataclasses.replace(SMALL, quarantine=True)
EVENTS = 90


@dataclasses.dataclass(frozen=True)
class SealedStore:
    path: Path
    stored: list[Event]

    @property
    def target(self) -> Path:
        """A sealed segment with segments before and after it."""
        return faults.segment_paths(self.path)[1]


@pytest.fixture(scope="module")
def sealed_store(tmp_path_factory: pytest.TempPathFactory) -> SealedStore:
    path = tmp_path_factory.mktemp("bitflips") / "store"
    stored: dict[str, Event] = {}
    with EventLog.open(path, SMALL) as log:
        for start in range(1, EVENTS + 1, 3):
            stored |= faults.append_numbers(log, range(start, start + 3))
    assert len(faults.segment_paths(path)) >= 4, "the store should span several segments"
    return SealedStore(path, list(stored.values()))


def sampled_bits(segment: Path, rng: random.Random) -> list[tuple[str, int]]:
    """Bits covering the segment header, record headers, payloads and the seal."""
    spans = faults.record_spans(segment)
    assert spans[-1].kind == faults.KIND_SEAL, f"{segment.name} is not sealed"
    bits = [("segment header", byte * 8 + bit) for byte in range(24) for bit in (0, 7)]
    for label, span in (("first record", spans[0]), ("second record", spans[1])):
        bits += [(f"{label} header", (span.offset + i) * 8 + i % 8) for i in range(20)]
    seal = spans[-1]
    bits += [("seal", (seal.offset + i) * 8 + (i * 3) % 8) for i in range(seal.size)]
    for _ in range(90):
        span = rng.choice(spans[:-1])
        byte = rng.randrange(span.offset + 20, span.end)
        bits.append((f"payload of position {span.position}", byte * 8 + rng.randrange(8)))
    return bits


def names_segment(error: CorruptionError, segment: Path) -> bool:
    return segment.name in str(error) or any(segment.name in p for p in error.problems)


@pytest.mark.slow
def test_bit_flip_in_sealed_segment_refuses_open_naming_the_segment(
    sealed_store: SealedStore, tmp_path: Path
) -> None:
    relative = sealed_store.target.relative_to(sealed_store.path)
    bits = sampled_bits(sealed_store.target, random.Random(4))
    failures = []
    for i, (where, bit) in enumerate(bits):
        store = faults.copy_store(sealed_store.path, tmp_path / f"flip-{i}")
        faults.flip_bit(store / relative, bit)
        damaged = (store / relative).read_bytes()
        try:
            with EventLog.open(store, SMALL):
                failures.append(f"bit {bit} ({where}): opened without complaint")
        except CorruptionError as e:
            if not names_segment(e, sealed_store.target):
                failures.append(f"bit {bit} ({where}): error does not name the segment: {e}")
        if (store / relative).read_bytes() != damaged:
            failures.append(f"bit {bit} ({where}): a refused open modified the segment")
    assert failures == [], f"{len(failures)} of {len(bits)} flips: {failures[:10]}"


@pytest.mark.slow
def test_quarantine_opens_a_store_with_a_damaged_sealed_segment(
    sealed_store: SealedStore, tmp_path: Path
) -> None:
    relative = sealed_store.target.relative_to(sealed_store.path)
    base = faults.segment_base(sealed_store.target)
    next_base = faults.segment_base(faults.segment_paths(sealed_store.path)[2])
    in_target = {e.id for e in sealed_store.stored if base <= e.position < next_base}
    bits = sampled_bits(sealed_store.target, random.Random(5))[::7]
    for i, (where, bit) in enumerate(bits):
        store = faults.copy_store(sealed_store.path, tmp_path / f"flip-{i}")
        faults.flip_bit(store / relative, bit)
        with EventLog.open(store, QUARANTINE) as log:
            report = log.verify()
            assert report.problems == [], f"bit {bit} ({where}): {report.problems}"
            assert report.quarantined, f"bit {bit} ({where}): nothing reported quarantined"
            events = faults.check_log(log, gapless=False)
            present = {e.id: e for e in events}
            for expected in sealed_store.stored:
                got = log.get(expected.id, account_id=expected.account_id)
                if expected.id in in_target and got is None:
                    assert expected.id not in present
                    continue
                assert faults.event_diff(got, expected) == [], f"bit {bit} ({where})"
                assert faults.event_diff(present.get(expected.id), expected) == []
            assert faults.query_mismatches(log, events, scans=3) == []
            [fresh] = log.append([faults.make_event(EVENTS + 1)])
            assert fresh.position == EVENTS + 1
        assert list((store / "quarantine").glob("*.bad")), "no quarantine file"
        with EventLog.open(store, SMALL) as log:  # quarantined once, not refused again
            assert log.verify().quarantined
            events = faults.check_log(log, gapless=False)
            assert events[-1].position == EVENTS + 1
        assert faults.stray_files(store) == []


def test_verify_reports_damage_made_while_open_and_reads_refuse_it(
    sealed_store: SealedStore, tmp_path: Path
) -> None:
    store = faults.copy_store(sealed_store.path, tmp_path / "store")
    segment = store / sealed_store.target.relative_to(sealed_store.path)
    victim_span = faults.event_spans(segment)[1]
    [victim] = [e for e in sealed_store.stored if e.position == victim_span.position]
    bystander = sealed_store.stored[0]
    with EventLog.open(store, SMALL) as log:
        assert log.verify().problems == []
        middle = victim_span.offset + 20 + (victim_span.size - 20) // 2
        faults.flip_bit(segment, middle * 8 + 3)
        problems = log.verify().problems
        assert problems, "verify() missed a flipped payload bit"
        assert any(segment.name in p for p in problems), problems
        assert any(str(victim.position) in p for p in problems), problems
        with pytest.raises(CorruptionError):
            log.get(victim.id, account_id=victim.account_id)
        with pytest.raises(CorruptionError):
            log.timeline(victim.lead_id, account_id=victim.account_id)
        with pytest.raises(CorruptionError):
            list(log.read_from(1))
        got = log.get(bystander.id, account_id=bystander.account_id)
        assert faults.event_diff(got, bystander) == []


MID_LOG_DAMAGE = {
    "magic": 0,
    "version": 2,
    "kind_flags": 3,
    "length_low_bit": 4,
    "length_high_bit": 7,
    "position": 8,
    "crc": 16,
    "payload": 40,
}


@pytest.mark.parametrize("field", sorted(MID_LOG_DAMAGE))
def test_damaged_record_followed_by_valid_ones_in_last_segment_is_corruption_not_torn_tail(
    tmp_path: Path, field: str
) -> None:
    store = tmp_path / "store"
    stored: list[Event] = []
    with EventLog.open(store) as log:
        for n in range(1, 7):
            stored += faults.append_numbers(log, [n]).values()
    [segment] = faults.segment_paths(store)
    victim = faults.event_spans(segment)[1]
    bit = 7 if field == "length_high_bit" else 0
    faults.flip_bit(segment, (victim.offset + MID_LOG_DAMAGE[field]) * 8 + bit)
    damaged = segment.read_bytes()

    with pytest.raises(CorruptionError) as raised:
        EventLog.open(store)
    assert names_segment(raised.value, segment), raised.value.problems
    assert segment.read_bytes() == damaged, "damage in the middle of the log was truncated away"

    with EventLog.open(store, Options(quarantine=True)) as log:
        report = log.verify()
        assert report.problems == []
        assert report.quarantined
        assert faults.check_log(log, gapless=False) == [e for e in stored if e.position != 2]
        assert log.get(stored[1].id, account_id=stored[1].account_id) is None
        [fresh] = log.append([faults.make_event(7)])
        assert fresh.position == 7
    assert list((store / "quarantine").glob("*.bad"))
    with EventLog.open(store) as log:
        assert log.verify().quarantined
        positions = [e.position for e in faults.check_log(log, gapless=False)]
        assert positions == [1, 3, 4, 5, 6, 7]


def test_quarantine_never_leaves_an_event_whose_snapshot_base_was_quarantined(
    tmp_path: Path,
) -> None:
    """Snapshots of one lead are stored as deltas against the previous one (FORMAT.md)."""
    store = tmp_path / "store"
    chain = [69 * j + 3 for j in range(7)]  # one account, one lead
    stored: list[Event] = []
    with EventLog.open(store, Options(record_form="json")) as log:
        for n in chain:
            stored += faults.append_numbers(log, [n]).values()
    [segment] = faults.segment_paths(store)
    spans = faults.event_spans(segment)
    assert faults.delta_base(segment, spans[2]) == spans[1].position, "no delta chain to test"
    faults.flip_bit(segment, (spans[1].offset + 20 + spans[1].size // 2) * 8)

    with EventLog.open(store, Options(quarantine=True)) as log:
        events = faults.check_log(log, gapless=False)
        assert events[0] == stored[0]
        assert stored[1].id not in {e.id for e in events}
        for expected in stored:
            got = log.get(expected.id, account_id=expected.account_id)
            assert got is None or faults.event_diff(got, expected) == []
        assert log.timeline(stored[0].lead_id, account_id=stored[0].account_id) == events


@pytest.mark.slow
def test_crash_at_every_operation_of_quarantine_never_loses_events_silently(
    sealed_store: SealedStore, tmp_path: Path
) -> None:
    """Quarantine moves bytes aside and rewrites the segment: a crash at each step
    must leave the damage either still refused/quarantinable or recorded as lost."""
    damaged = faults.copy_store(sealed_store.path, tmp_path / "damaged")
    segment = damaged / sealed_store.target.relative_to(sealed_store.path)
    victim = faults.event_spans(segment)[1]
    faults.flip_bit(segment, (victim.offset + 20 + (victim.size - 20) // 2) * 8)
    base = faults.segment_base(segment)
    next_base = faults.segment_base(faults.segment_paths(damaged)[2])

    def open_child(store: Path, crash_at: int | None) -> subprocess.CompletedProcess[str]:
        args = ["open", str(store), "--segment-bytes=4096", "--quarantine"]
        args += [f"--crash-at={crash_at}"] if crash_at is not None else []
        return subprocess.run(
            faults.child_command(*args), capture_output=True, text=True, timeout=120, check=False
        )

    probe = open_child(faults.copy_store(damaged, tmp_path / "probe"), None)
    assert probe.returncode == 0, probe.stderr
    ops = json.loads(probe.stdout.splitlines()[-1].removeprefix("OPS "))
    assert any(op.startswith("rename") for op in ops), ops

    for crash_at in range(1, len(ops) + 1):
        where = f"crash at operation {crash_at} ({ops[crash_at - 1]})"
        store = faults.copy_store(damaged, tmp_path / f"crash-{crash_at}")
        child = open_child(store, crash_at)
        assert child.returncode == faults.CRASH_EXIT, f"{where}: {child.stderr}"
        with EventLog.open(store, QUARANTINE) as log:
            report = log.verify()
            assert report.problems == [], f"{where}: {report.problems}"
            present = {e.id: e for e in faults.check_log(log, gapless=False)}
            lost = [e for e in sealed_store.stored if e.id not in present]
            for expected in sealed_store.stored:
                if expected.id in present:
                    assert faults.event_diff(present[expected.id], expected) == [], where
            assert all(base <= e.position < next_base for e in lost), f"{where}: {lost}"
            assert lost, f"{where}: the damaged event is served"
            assert report.quarantined, (
                f"{where}: positions {[e.position for e in lost]} vanished and "
                "verify() does not report anything quarantined"
            )
