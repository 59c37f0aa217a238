"""The chain walk (``EventLog.verify_chain``) catches what an attacker with the files can do.

Each test takes a copy of a store with several small segments and does what the issue
describes, fixing every CRC (and the seal) as anyone holding the files can: edit a field,
cut the tail at a record boundary (against a checkpoint kept outside), swap two records,
delete a middle segment, bring back an old copy of a segment after an erasure. Each must
be caught, naming the first bad position. Maintenance that rewrites on purpose (erasure,
tiered scrubs, retention of whole and partial segments) must verify clean.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from leadtrail.storage import (
    CorruptionError,
    Event,
    EventLog,
    FieldPolicy,
    GivenCheckpoint,
    Options,
    Outcome,
    RetentionPolicy,
    retirement,
)
from leadtrail.storage.chain import ChainPoint
from leadtrail.storage.signing import Signer
from leadtrail_storage_faults import (  # loaded by conftest.py
    KIND_EVENT,
    RECORD_HEADER,
    delta_base,
    record,
    record_spans,
    seal_record,
    segment_header,
    segment_paths,
)
from leadtrail_storage_support import Clock  # loaded by conftest.py

T0 = 1_767_225_600_000
DAY_MS = 86_400_000
LEADS = 24


def make_event(n: int, account: str = "default", lead: str | None = None) -> Event:
    lead_id = lead or f"lead-{n % LEADS}"
    return Event(
        type=("source.submitted", "recipient.delivered", "feedback.received")[n % 3],
        lead_id=lead_id,
        flow_id="flow-solar",
        timestamp_ms=T0 + n * 1_000,
        entity_id=f"buyer-{n % 3}",
        outcome=Outcome.SUCCESS if n % 4 else Outcome.FAILURE,
        reason="" if n % 4 else f"no buyer for {lead_id}@example.com",
        price="12.50" if n % 3 == 1 else "",
        details={"attempt": n % 3, "echo": f"sent to {lead_id}@example.com"},
        lead={
            "email": f"{lead_id}@example.com",
            "phone": f"+1555{n % LEADS:07d}",
            "first_name": "Robin",
            "state": ("CA", "TX", "OR")[n % 3],
            "stage": n,
        },
        account_id=account,
    )


def options(clock: Clock | None = None) -> Options:
    # No checkpoint records: the tests count events (one test makes them on purpose).
    return Options(segment_bytes=4096, clock_ms=clock or Clock(T0), checkpoints=False)


@dataclass
class Pristine:
    path: Path
    receipts: dict[int, bytes]
    """position -> chain hash, as ``append`` answered."""
    last: int


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Pristine:
    """A store of several sealed segments and an active one; the tail appended one event per
    request, so that every record there is a commit point."""
    path = tmp_path_factory.mktemp("chain") / "store"
    receipts: dict[int, bytes] = {}
    with EventLog.open(path, options()) as log:
        for at in range(0, 90, 6):
            for result in log.append([make_event(n) for n in range(at, at + 6)]):
                receipts[result.position] = result.chain_hash
        for n in range(90, 96):
            result = log.append([make_event(n)])[0]
            receipts[result.position] = result.chain_hash
        last = log.last_position
    assert len(segment_paths(path)) >= 5
    return Pristine(path, receipts, last)


@pytest.fixture
def store(pristine: Pristine, tmp_path: Path) -> Path:
    return Path(shutil.copytree(pristine.path, tmp_path / "store"))


def verify(path: Path, **kw: Any) -> Any:
    with EventLog.open(path, Options(read_only=True)) as log:
        return log.verify_chain(**kw)


# -- what an attacker does to the files (every CRC and seal made right again) ------------------------


def records_of(path: Path) -> tuple[list[tuple[int, int, bytes]], bool]:
    """(kind|flags, position, payload) of each event record, and whether the segment is sealed."""
    data = path.read_bytes()
    found = []
    sealed = False
    for span in record_spans(path):
        if span.kind != KIND_EVENT:
            sealed = True
            continue
        found.append(
            (data[span.offset + 3], span.position, data[span.offset + RECORD_HEADER.size : span.end])
        )
    return found, sealed


def write_segment(path: Path, records: list[tuple[int, int, bytes]], sealed: bool) -> None:
    base = int(path.name.removesuffix(".log"))
    path.write_bytes(segment_header(base) + b"".join(record(f, p, payload) for f, p, payload in records))
    if sealed:
        with open(path, "ab") as f:
            f.write(seal_record(path))


def segment_of(store: Path, position: int) -> Path:
    return [p for p in segment_paths(store) if int(p.name.removesuffix(".log")) <= position][-1]


def rewrite(store: Path, position: int, change: Callable[[list[tuple[int, int, bytes]], int], None]) -> None:
    path = segment_of(store, position)
    records, sealed = records_of(path)
    at = next(i for i, (_, p, _) in enumerate(records) if p == position)
    change(records, at)
    write_segment(path, records, sealed)


def middle_position(pristine: Pristine, store: Path) -> int:
    """A position in the middle of a sealed segment in the middle of the log."""
    paths = segment_paths(store)
    middle = paths[len(paths) // 2]
    positions = [p for _, p, _ in records_of(middle)[0]]
    return positions[len(positions) // 2]


# -- a clean store ------------------------------------------------------------------------


def test_a_clean_store_verifies_and_ends_at_the_receipt_of_its_last_event(pristine: Pristine) -> None:
    report = verify(pristine.path)
    assert report.problems == [] and report.first_bad_position == 0
    assert report.chain_checked == len(pristine.receipts) == pristine.last
    assert report.last_position == pristine.last
    assert report.chain_hash == pristine.receipts[pristine.last]


def test_a_walk_from_a_kept_hash_checks_what_follows_it(pristine: Pristine) -> None:
    start = pristine.last // 2
    report = verify(pristine.path, from_position=start, from_chain_hash=pristine.receipts[start])
    assert report.problems == []
    assert report.chain_checked == pristine.last - start
    assert report.chain_hash == pristine.receipts[pristine.last]
    wrong = verify(pristine.path, from_position=start, from_chain_hash=bytes(32))
    assert wrong.first_bad_position == start + 1
    assert f"position {start + 1}: digest does not match its chain8" in wrong.problems[0]


# -- tampering ------------------------------------------------------------------------------


def test_an_edited_timestamp_with_its_crc_fixed_is_caught_at_its_position(
    pristine: Pristine, store: Path
) -> None:
    position = middle_position(pristine, store)

    def edit(records: list[tuple[int, int, bytes]], at: int) -> None:
        flags, p, payload = records[at]
        (lo,) = struct.unpack_from("<I", payload, 6)
        records[at] = (flags, p, payload[:6] + struct.pack("<I", lo + 60_000) + payload[10:])

    rewrite(store, position, edit)
    with EventLog.open(store, Options(read_only=True)) as log:
        assert log.verify().problems == []  # the CRCs hold: only the chain tells
        report = log.verify_chain()
    assert report.first_bad_position == position
    assert report.problems[0] == f"position {position}: digest does not match its chain8: edited"


def test_a_tail_cut_at_a_record_boundary_is_caught_against_a_kept_checkpoint(
    pristine: Pristine, store: Path
) -> None:
    with EventLog.open(store, Options(read_only=True)) as log:
        point = log.chain_point(pristine.last)
    signer = Signer((store / "signing.key").read_bytes())
    kept = signer.sign_checkpoint(point)
    cut_from = pristine.last - 2  # the last three events were each their own commit
    path = segment_of(store, cut_from)
    span = next(s for s in record_spans(path) if s.position == cut_from and s.kind == KIND_EVENT)
    os.truncate(path, span.offset)

    given = GivenCheckpoint(kept.position, kept.chain_hash, kept.recorded_at_ms, kept.signature)
    report = verify(store, checkpoint=given)
    assert report.first_bad_position == cut_from
    assert f"events were removed after position {cut_from - 1}" in report.problems[0]
    assert report.signatures_checked >= 1


def test_a_checkpoint_not_signed_by_the_store_is_refused(pristine: Pristine) -> None:
    point = ChainPoint(pristine.last, pristine.receipts[pristine.last], T0)
    forged = Signer(bytes(range(32))).sign_checkpoint(point)
    given = GivenCheckpoint(forged.position, forged.chain_hash, forged.recorded_at_ms, forged.signature)
    report = verify(pristine.path, checkpoint=given)
    assert "its signature does not verify with the store's key" in report.problems[0]


def test_two_swapped_records_with_positions_and_crcs_fixed_are_caught(
    pristine: Pristine, store: Path
) -> None:
    path = segment_paths(store)[len(segment_paths(store)) // 2]
    spans = [s for s in record_spans(path) if s.kind == KIND_EVENT]
    pair = next(
        (a, b) for a, b in itertools.pairwise(spans) if delta_base(path, a) == 0 and delta_base(path, b) == 0
    )
    first = pair[0].position

    def swap(records: list[tuple[int, int, bytes]], at: int) -> None:
        (fa, pa, a), (fb, pb, b) = records[at], records[at + 1]
        records[at], records[at + 1] = (fa, pa, b), (fb, pb, a)

    rewrite(store, first, swap)
    report = verify(store)
    assert report.first_bad_position == first
    assert report.problems[0].startswith(f"position {first}: ")


def test_a_record_replayed_within_a_sealed_segment_is_caught(pristine: Pristine, store: Path) -> None:
    position = middle_position(pristine, store)

    def duplicate(records: list[tuple[int, int, bytes]], at: int) -> None:
        records.insert(at + 1, records[at])

    rewrite(store, position, duplicate)
    report = verify(store)
    assert report.first_bad_position == position
    assert report.problems[0] == (
        f"position {position}: read after position {position} (records reordered or duplicated)"
    )


def test_a_deleted_middle_segment_is_caught(pristine: Pristine, store: Path) -> None:
    paths = segment_paths(store)
    gone = paths[len(paths) // 2]
    first = int(gone.name.removesuffix(".log"))
    last = int(paths[len(paths) // 2 + 1].name.removesuffix(".log")) - 1
    gone.unlink()
    with pytest.raises(CorruptionError, match=f"positions {first}..{last} are missing"):
        EventLog.open(store, Options(read_only=True))

    # Hidden from recovery as if retention had removed it: only the chain tells.
    retired = store / "retired.json"
    ranges = json.loads(retired.read_text()) if retired.exists() else []
    retired.write_text(json.dumps([*ranges, [first, last]]))
    report = verify(store)
    assert report.first_bad_position == first
    assert report.problems[0] == f"positions {first}-{last} missing (removed)"


def test_an_old_copy_of_a_segment_brought_back_after_an_erasure_is_caught(tmp_path: Path) -> None:
    store = tmp_path / "store"
    with EventLog.open(store, options()) as log:
        for at in range(0, 60, 6):
            log.append([make_event(n) for n in range(at, at + 6)])
        target = "lead-5"
        positions = [e.position for e in log.timeline(target)]
        path = segment_of(store, positions[0])
        old = path.read_bytes()
        report = log.erase_lead(target, requested_by="dpo")
        assert report is not None and report.events_erased == len(positions)
    clean = verify(store)
    assert clean.problems == [] and clean.content_erased >= len(positions)

    path.write_bytes(old)
    replayed = verify(store)
    first = min(p for p in positions if segment_of(store, p) == path)
    assert replayed.first_bad_position == first
    assert "an older copy of a record brought back" in replayed.problems[0]


def test_after_an_edit_the_walk_takes_the_chain_up_again_at_the_next_checkpoint_record(
    tmp_path: Path,
) -> None:
    store = tmp_path / "store"
    with EventLog.open(
        store, Options(segment_bytes=4096, checkpoints=True, checkpoint_interval_s=0.05)
    ) as log:
        for n in range(40):
            log.append([make_event(n)])
            time.sleep(0.01)
        deadline = time.monotonic() + 10
        while not _checkpoints(log) and time.monotonic() < deadline:
            time.sleep(0.05)
    with EventLog.open(store, Options(read_only=True)) as log:  # a record may land at close
        head = log.chain_head()
        records = _checkpoints(log)
    # A checkpoint record signing the event just before it, with events of ours before that.
    kept = {c for c, _ in records}
    signed = next(q for c, q in records if q == c - 1 and q > 3 and q - 1 not in kept)
    edited = signed - 1

    def edit(found: list[tuple[int, int, bytes]], at: int) -> None:
        flags, p, payload = found[at]
        found[at] = (flags, p, payload[:6] + bytes([payload[6] ^ 1]) + payload[7:])

    rewrite(store, edited, edit)
    report = verify(store)
    assert report.problems == [f"position {edited}: digest does not match its chain8: edited"]
    assert report.first_bad_position == edited
    # Taken up at the checkpoint record: everything after it is checked, to the same head.
    assert report.chain_hash == head.chain_hash
    assert report.chain_checked == head.position - 2
    assert report.signatures_checked == len(records)


def _checkpoints(log: EventLog) -> list[tuple[int, int]]:
    """(position, signed position) of each checkpoint record."""
    return [
        (e.position, int(e.details["position"])) for e in log.read_from(1) if e.type == "audit.checkpoint"
    ]


# -- maintenance on purpose verifies clean ---------------------------------------------------


def test_erasure_tiered_scrubs_and_retention_of_whole_and_partial_segments_verify_clean(
    tmp_path: Path,
) -> None:
    store = tmp_path / "store"
    clock = Clock(T0)
    with EventLog.open(store, options(clock)) as log:
        log.set_field_policy(FieldPolicy("default", pii=("first_name",)))
        # Old events: acme alone (whole segments to delete), then both accounts interleaved.
        for at in range(0, 30, 6):
            log.append([make_event(n, "acme") for n in range(at, at + 6)])
        for at in range(30, 90, 6):
            log.append([make_event(n, ("acme", "default")[n % 2]) for n in range(at, at + 6)])
        clock.now = T0 + 40 * DAY_MS
        for at in range(90, 120, 6):
            log.append([make_event(n, ("acme", "default")[n % 2]) for n in range(at, at + 6)])
        assert log.erase_lead("lead-7", "default", requested_by="dpo") is not None
        log.set_retention_policy(RetentionPolicy("acme", max_age_days=30))
        log.set_retention_policy(RetentionPolicy("default", pii_max_age_days=20))
        before = log.chain_head()
        report = log.apply_retention(now_ms=T0 + 41 * DAY_MS)
        assert report.events_removed > 0 and report.segments_deleted > 0 and report.events_scrubbed > 0
        assert report.segments_rewritten > 0
        assert log.chain_head() == before  # retention and scrubs change no hash
        walked = log.verify_chain()
        public_key = log.public_key
    assert walked.problems == [], walked.problems
    assert walked.retired and all("retired, chain hash" in line for line in walked.retired)
    assert walked.content_erased > 0
    assert walked.chain_hash == before.chain_hash
    assert walked.signatures_checked >= 1
    reopened = verify(store)
    assert reopened.problems == [] and reopened.chain_hash == before.chain_hash

    # Each record verifies over the bytes FORMAT.md gives, with any Ed25519 library.
    for item in json.loads((store / "retirements.json").read_text()):
        signed = (
            b"leadtrail retired v1\n"
            + struct.pack(">I", len(item["runs"]))
            + b"".join(
                struct.pack(">QQ", first, last) + bytes.fromhex(chain_hash)
                for first, last, chain_hash in item["runs"]
            )
        )
        assert base64.b64decode(item["public_key"]) == public_key
        Ed25519PublicKey.from_public_bytes(public_key).verify(base64.b64decode(item["signature"]), signed)

    stated = retirement.load(str(store))
    last, chain_hash = stated[0].runs[-1].last, stated[0].runs[-1].chain_hash
    assert retirement.boundary_hash(stated, last, public_key) == chain_hash
    assert retirement.boundary_hash(stated, last, bytes(32)) is None  # another key's: not trusted

    # A retirement record whose hash was changed no longer verifies: its gaps are not trusted.
    path = store / "retirements.json"
    records = json.loads(path.read_text())
    run = records[0]["runs"][0]
    run[2] = "00" * 32
    path.write_text(json.dumps(records))
    forged = verify(store)
    assert any("its signature does not verify" in line for line in forged.problems)
    assert forged.first_bad_position == run[0]


def test_a_rebuilt_index_takes_the_chain_up_after_the_retired_start_of_the_log(tmp_path: Path) -> None:
    clock = Clock(T0)
    with EventLog.open(tmp_path / "store", options(clock)) as log:
        for at in range(0, 48, 6):
            log.append([make_event(n, "acme") for n in range(at, at + 6)])
        clock.now = T0 + 40 * DAY_MS
        kept = [
            r
            for at in range(48, 72, 6)
            for r in log.append([make_event(n, "acme") for n in range(at, at + 6)])
        ]
        log.set_retention_policy(RetentionPolicy("acme", max_age_days=30))
        head = log.chain_head()
        assert log.apply_retention(now_ms=T0 + 41 * DAY_MS).segments_deleted > 0
        log.reindex()  # the index's chain points are recomputed from the log
        assert log.chain_head() == head
        assert all(log.chain_point(r.position).chain_hash == r.chain_hash for r in kept)
