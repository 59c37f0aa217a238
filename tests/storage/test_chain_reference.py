"""The engine's chain hashes are FORMAT.md's: an independent verifier (chain_reference.py,
which imports nothing of the engine) computes the same hash at every position as the
receipts ``append`` gave, over segments holding dictionary-compressed bodies, bodies
compressed against a base (codec 8) and the kind 2 blocks an erasure leaves.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from leadtrail.storage import Event, EventLog, Options, Outcome


def _reference() -> ModuleType:
    name = "leadtrail_chain_reference"
    if name not in sys.modules:  # beside this file; tests run with --import-mode=importlib
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("chain_reference.py"))
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


T0 = 1_767_225_600_000


def step(n: int) -> Event:
    lead_id = f"lead-{n % 7}"
    return Event(
        type=("source.submitted", "validation.passed", "recipient.delivered")[n % 3],
        lead_id=lead_id,
        flow_id="flow-solar",
        timestamp_ms=T0 + n * 500,
        entity_id="buyer-1" if n % 3 == 2 else "",
        outcome=Outcome.SUCCESS if n % 5 else Outcome.FAILURE,
        reason="" if n % 5 else "timeout",
        duration_ms=n * 3,
        integration="http-post" if n % 3 == 2 else "",
        response_code=200 if n % 3 == 2 else 0,
        price="7.25" if n % 3 == 2 else "",
        details={"attempt": n % 4, "echo": f"to {lead_id}@example.com", "unicode": "Zoë ✓"},
        lead={
            "email": f"{lead_id}@example.com",
            "phone": f"+1555000{n % 7:04d}",
            "first_name": "Robin",
            "address": {"street": "12 Oak Lane", "city": "Salem", "state": "OR"},
            "stage": n,
            "score": n / 7,
        },
    )


def test_an_independent_verifier_computes_the_engines_chain(tmp_path: Path) -> None:
    store = tmp_path / "store"
    receipts: dict[int, bytes] = {}
    options = Options(segment_bytes=16 * 1024, dictionary_training_samples=40, checkpoints=False)
    with EventLog.open(store, options) as log:
        for at in range(0, 60, 10):
            for r in log.append([step(n) for n in range(at, at + 10)]):
                receipts[r.position] = r.chain_hash
        trainer = log.trainer
        assert trainer is None or trainer.wait_idle(30)
        for at in range(60, 200, 10):
            for r in log.append([step(n) for n in range(at, at + 10)]):
                receipts[r.position] = r.chain_hash
        erased = log.erase_lead("lead-3", requested_by="dpo")
        assert erased is not None and erased.events_erased > 0
        head = log.chain_head()
        engine = log.verify_chain()
    assert engine.problems == []

    found = _reference().walk(str(store))
    assert found.mismatches == []
    assert {6, 8} <= found.codecs, found.codecs  # a dictionary, and bases
    assert found.committed >= erased.events_erased
    assert len({p.name for p in (store / "log").glob("*.log")}) >= 3
    for position, chain_hash in receipts.items():
        assert found.hashes[position] == chain_hash, position
    assert found.hashes[head.position] == head.chain_hash == engine.chain_hash


def test_the_reference_verifier_sees_an_edit(tmp_path: Path) -> None:
    """The reference can fail: a timestamp changed in a record's prefix breaks its chain8."""
    store = tmp_path / "store"
    with EventLog.open(store, Options()) as log:
        results = log.append([step(n) for n in range(3)])
    segment = next((store / "log").glob("*.log"))
    data = bytearray(segment.read_bytes())
    payload = 24 + 20  # the first record's payload, after the segment and record headers
    data[payload + 6] ^= 0x01  # timestamp, low byte
    segment.write_bytes(bytes(data))
    found = _reference().walk(str(store), check_crc=False)
    assert found.mismatches[0] == results[0].position
