"""The hash chain as the writer makes it: receipts, chain points, blocks, and what keeps
them (reopen, a lost index, an erasure)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from leadtrail.storage import GENESIS, Event, EventLog, NotFoundError, Options
from leadtrail.storage.chain import COMMITTED, SALTED, link
from leadtrail.storage.index import CHAIN_ANCHOR_EVERY

OPTIONS = Options(segment_bytes=48 * 1024)


def _events(start: int, count: int) -> list[Event]:
    return [
        Event(
            type="recipient.delivered" if i % 3 else "source.submitted",
            lead_id=f"lead-{i % 23}",
            flow_id="flow-1",
            reason=f"step {i}",
            price="12.50" if i % 3 else "",
            details={"attempt": i % 4},
            lead={"email": f"person{i % 23}@example.com", "state": "TX", "loan": 1000 + i},
        )
        for i in range(start, start + count)
    ]


def _append(log: EventLog, batches: int, size: int = 40) -> list[tuple[int, bytes]]:
    receipts = []
    for b in range(batches):
        receipts += [(r.position, r.chain_hash) for r in log.append(_events(b * size, size))]
    return receipts


def test_receipts_are_the_chain_of_the_stored_digests(tmp_path: Path) -> None:
    with EventLog.open(tmp_path / "d", OPTIONS) as log:
        receipts = _append(log, 15)
        assert len(log.segments) > 2
        assert len({h for _, h in receipts}) == len(receipts) and all(len(h) == 32 for _, h in receipts)
        running = GENESIS
        for position, chain_hash in receipts:
            stored = log.stored_at(position)
            assert stored is not None and stored.seal is not None and stored.seal.kind == SALTED
            digest = stored.digest()
            assert digest is not None
            running = link(running, digest)
            assert running == chain_hash
            assert stored.seal.chain8 == chain_hash[:8]
        head = log.chain_head()
        assert (head.position, head.chain_hash) == receipts[-1]
        for position, chain_hash in receipts[:: len(receipts) // 17] + receipts[-3:]:
            assert log.chain_point(position).chain_hash == chain_hash
        with pytest.raises(NotFoundError):
            log.chain_point(receipts[-1][0] + 1)


def test_a_changed_field_changes_the_digest(tmp_path: Path) -> None:
    with EventLog.open(tmp_path / "d", OPTIONS) as log:
        [first] = log.append(_events(0, 1))
        stored = log.stored_at(first.position)
        assert stored is not None
        digest = stored.digest()
        content = stored.content_commitment()
        assert digest is not None and content is not None
        from leadtrail.storage import chain

        meta = stored.meta
        assert (
            chain.digest(first.position, stored.recorded_at_ms, stored.timestamp_ms, "default", meta, content)
            == digest
        )
        for i in range(len(meta)):
            if i == 6:
                continue  # the reason is content: it changes the commitment instead
            changed = list(meta)
            changed[i] = changed[i] + 1 if isinstance(changed[i], int) else str(changed[i]) + "x"
            assert (
                chain.digest(
                    first.position, stored.recorded_at_ms, stored.timestamp_ms, "default", changed, content
                )
                != digest
            )
        assert (
            chain.digest(
                first.position + 1, stored.recorded_at_ms, stored.timestamp_ms, "default", meta, content
            )
            != digest
        )
        assert (
            chain.digest(
                first.position, stored.recorded_at_ms + 1, stored.timestamp_ms, "default", meta, content
            )
            != digest
        )
        assert (
            chain.digest(
                first.position, stored.recorded_at_ms, stored.timestamp_ms - 1, "default", meta, content
            )
            != digest
        )
        assert (
            chain.digest(first.position, stored.recorded_at_ms, stored.timestamp_ms, "other", meta, content)
            != digest
        )
        assert stored.seal is not None
        details_json, lead_json = stored.json_parts()
        salt = stored.seal.value
        assert chain.commitment(salt, "step 0", details_json, lead_json) == content
        assert chain.commitment(salt, "step 1", details_json, lead_json) != content
        assert chain.commitment(salt, "step 0", details_json, lead_json.replace(b"TX", b"CA")) != content
        assert chain.commitment(bytes(16), "step 0", details_json, lead_json) != content


def test_the_chain_goes_on_across_a_reopen_and_a_lost_index(tmp_path: Path) -> None:
    path = tmp_path / "d"
    with EventLog.open(path, OPTIONS) as log:
        receipts = _append(log, 8)
    with EventLog.open(path, OPTIONS) as log:
        assert log.chain_head().chain_hash == receipts[-1][1]
        receipts += [(r.position, r.chain_hash) for r in log.append(_events(900, 5))]
    shutil.rmtree(path / "index")
    with EventLog.open(path, OPTIONS) as log:  # rebuilt from the log, chain points too
        assert log.chain_head().chain_hash == receipts[-1][1]
        more = log.append(_events(1000, 3))
        running = receipts[-1][1]
        for r in more:
            stored = log.stored_at(r.position)
            assert stored is not None
            digest = stored.digest()
            assert digest is not None
            running = link(running, digest)
            assert r.chain_hash == running
        for position, chain_hash in receipts[:: CHAIN_ANCHOR_EVERY // 3]:
            assert log.chain_point(position).chain_hash == chain_hash
        log.reindex()
        assert log.chain_point(receipts[5][0]).chain_hash == receipts[5][1]


def test_an_erasure_keeps_the_chain_and_destroys_the_salts(tmp_path: Path) -> None:
    with EventLog.open(tmp_path / "d", OPTIONS) as log:
        receipts = dict(_append(log, 10))
        before = {p: log.stored_at(p) for p in receipts}
        lead_positions = [p for p, s in before.items() if s is not None and s.lead_id == "lead-5"]
        assert lead_positions
        report = log.erase_lead("lead-5", "default", requested_by="dpo", reason="asked")
        assert report is not None
        for position in lead_positions:
            stored = log.stored_at(position)
            assert stored is not None and stored.seal is not None
            assert stored.seal.kind == COMMITTED
            old = before[position]
            assert old is not None and old.seal is not None
            assert old.seal.value not in stored.body  # the salt is gone
            assert b"person5@example.com" not in stored.body
            assert stored.digest() == old.digest()
            assert log.chain_point(position).chain_hash == receipts[position]
        other = next(p for p, s in before.items() if s is not None and s.lead_id == "lead-6")
        kept = log.stored_at(other)
        assert kept is not None and kept.seal is not None and kept.seal.kind == SALTED
        head = log.chain_head()
        assert head.position == report.audit_position
        last = max(receipts)
        assert log.chain_point(last).chain_hash == receipts[last]


def test_a_duplicate_append_stores_nothing_new_in_the_chain(tmp_path: Path) -> None:
    with EventLog.open(tmp_path / "d", OPTIONS) as log:
        [first] = log.append(_events(0, 1))
        [again] = log.append(
            [Event(type="source.submitted", lead_id="lead-0", flow_id="flow-1", id=first.id)]
        )
        assert again.duplicate and again.position == first.position
        assert log.chain_head().chain_hash == first.chain_hash
