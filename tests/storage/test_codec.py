"""The snapshot codec: what goes in comes out, bit for bit, whatever the dictionary.

Snapshots are compressed with zstd dictionaries trained from the first
snapshots and retrained when the ratio decays. None of that may change a
value: not before training, not after, not after reopening, not for records
written under a dictionary that has since been replaced.
"""

from __future__ import annotations

import random
import shutil
import struct
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import orjson
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from leadtrail.storage import CorruptionError, Event, EventLog, Options, Outcome
from leadtrail_storage_support import canon  # loaded by conftest.py

TRAINING_SAMPLES = 200


def assert_round_trips(stored: Event | None, sent: Event) -> None:
    assert stored is not None
    assert canon(dict(stored.lead)) == canon(dict(sent.lead))
    assert canon(dict(stored.details)) == canon(dict(sent.details))


json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**53), 2**53),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(st.characters(exclude_categories=("Cs",)), max_size=40),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.dictionaries(st.text(st.characters(exclude_categories=("Cs",))), inner, max_size=5)
    ),
    max_leaves=25,
)
# Top-level field names are 1..256 characters (the engine's rule for dotted names).
snapshots = st.dictionaries(
    st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=30),
    json_values,
    max_size=10,
)

EDGE_SNAPSHOTS: list[dict[str, Any]] = [
    {},
    {"nested": {"": "an empty nested field name"}},
    {"unicode": "héllo wörld — 中文 — العربية — 😀👍🏽 — \u0000 \u2028 \ufeff \U0010ffff"},
    {"ключ.ünïcödé.😀": "v", "tab\tkey": 'quote" backslash\\ newline\n'},
    {"big": 2**53, "negative_big": -(2**53), "zero": 0, "one": 1, "minus_one": -1},
    {"floats": [0.0, -0.0, 1.0, -1.5, 1e-300, 1.7976931348623157e308, 5e-324, 0.1, 1 / 3]},
    {"one_float": 1.0, "one_int": 1, "true": True, "false": False, "none": None},
    {"nested": {"a": {"b": {"c": [1, [2, [3, {"d": None}]]]}}}, "empty": {}, "empty_list": []},
    {"long": "x" * 5000, "long_unicode": "😀" * 2000},
    {"email.valid": True, "appended.phone_check.carrier": "Verizon", "price_like": "25.00"},
]

FIRST = ("Ana", "Bo", "Chen", "Dara", "Émile", "Farah", "Gus", "Hiro", "Ines", "José")
LAST = ("Smith", "Nguyen", "García", "Okafor", "Kowalski", "Ivanova", "Tanaka", "Brown")
DOMAINS = ("gmail.com", "yahoo.com", "outlook.com", "icloud.com", "example.org")
STATES = ("CA", "TX", "NY", "FL", "IL", "PA", "OH", "GA")
CARRIERS = ("Verizon", "AT&T", "T-Mobile", "US Cellular")


def realistic_lead(rng: random.Random, n: int) -> dict[str, Any]:
    """A lead snapshot shaped like a consumer-loan lead after enrichment."""
    first, last, domain = rng.choice(FIRST), rng.choice(LAST), rng.choice(DOMAINS)
    area = rng.randrange(201, 989)
    return {
        "email": f"{first.lower()}.{last.lower()}{n}@{domain}",
        "email.valid": rng.random() < 0.9,
        "email.domain": domain,
        "phone": f"+1{area}{rng.randrange(10**7):07d}",
        "phone.area": str(area),
        "first_name": first,
        "last_name": last,
        "address.street": f"{rng.randrange(1, 9999)} {rng.choice(('Oak', 'Main', 'Elm'))} St",
        "address.state": rng.choice(STATES),
        "address.zip": f"{rng.randrange(10**5):05d}",
        "loan.amount": rng.randrange(1_000, 50_000, 500),
        "loan.purpose": rng.choice(("debt_consolidation", "home_improvement", "auto")),
        "credit.score_band": rng.choice(("excellent", "good", "fair", "poor")),
        "income.monthly": round(rng.uniform(1500, 12000), 2),
        "consent.trustedform_url": f"https://cert.trustedform.com/{rng.getrandbits(160):040x}",
        "ip": f"{rng.randrange(1, 255)}.{rng.randrange(256)}.{rng.randrange(256)}.{n % 256}",
        "appended.phone_check.carrier": rng.choice(CARRIERS),
        "appended.phone_check.line_type": rng.choice(("mobile", "landline", "voip")),
        "utm.source": rng.choice(("google", "facebook", "bing", "affiliate_17")),
        "submitted_at": f"2025-0{rng.randrange(1, 10)}-1{rng.randrange(10)}T12:00:00Z",
    }


def vehicle_lead(rng: random.Random, n: int) -> dict[str, Any]:
    """A differently shaped snapshot: the dictionary trained on loans fits it poorly."""
    return {
        "vehicle.vin": "".join(rng.choice("ABCDEFGHJKLMNPRSTUVWXYZ0123456789") for _ in range(17)),
        "vehicle.make": rng.choice(("Toyota", "Subaru", "Ford", "Tesla", "Kia")),
        "vehicle.model_year": rng.randrange(1995, 2026),
        "insurance.current_carrier": rng.choice(("Geico", "Progressive", "Allstate")),
        "insurance.continuous_coverage_months": rng.randrange(0, 120),
        "driver.violations": [rng.choice(("speeding", "dui", "none")) for _ in range(3)],
        "driver.license_state": rng.choice(STATES),
        "quote.requested_coverages": {"liability": True, "collision": rng.random() < 0.5},
        "quote.reference": f"Q-{n:08d}-{rng.getrandbits(64):016x}",
    }


def event(n: int, lead: dict[str, Any], details: dict[str, Any] | None = None) -> Event:
    return Event(
        type="source.submitted",
        lead_id=f"lead-{n}",
        flow_id="flow-1",
        timestamp_ms=1_700_000_000_000 + n,
        outcome=Outcome.SUCCESS,
        price="-3.50",
        details={"rule_set": "intake", "n": n} if details is None else details,
        lead=lead,
    )


def append_all(log: EventLog, events: list[Event], batch: int = 10) -> list[int]:
    positions = []
    for i in range(0, len(events), batch):
        positions += [r.position for r in log.append(events[i : i + batch])]
    return positions


def assert_all_round_trip(log: EventLog, sent: list[Event], positions: list[int]) -> None:
    by_position = {e.position: e for e in log.read_from(1)}
    for position, event in zip(positions, sent, strict=True):
        assert_round_trips(by_position.get(position), event)


@pytest.fixture(scope="module", params=["untrained", "trained"])
def shared_log(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EventLog]:
    data = tmp_path_factory.mktemp("codec") / "data"
    with EventLog.open(data, Options(dictionary_training_samples=TRAINING_SAMPLES)) as log:
        if request.param == "trained":
            rng = random.Random(1)
            append_all(log, [event(n, realistic_lead(rng, n)) for n in range(TRAINING_SAMPLES + 50)])
            wait_for_dictionaries(log, 1)
        yield log


def wait_for_dictionaries(log: EventLog, count: int) -> None:
    """Training runs beside the writer, never in its way: wait for it."""
    deadline = time.monotonic() + 30
    while log.stats().dictionaries < count and time.monotonic() < deadline:
        time.sleep(0.05)
    assert log.stats().dictionaries >= count, f"{count} dictionaries trained within 30 s"


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(leads=st.lists(snapshots, min_size=1, max_size=4), details=snapshots)
def test_any_json_snapshot_round_trips_exactly(
    shared_log: EventLog, leads: list[dict[str, Any]], details: dict[str, Any]
) -> None:
    sent = [event(n, lead, details) for n, lead in enumerate(leads)]
    results = shared_log.append(sent)
    for result, one in zip(results, sent, strict=True):
        assert_round_trips(shared_log.get(result.id), one)
    [from_log] = shared_log.read_from(results[0].position, limit=1)
    assert_round_trips(from_log, sent[0])


def test_snapshots_round_trip_across_training_and_reopen(tmp_path: Path) -> None:
    rng = random.Random(2)
    data = tmp_path / "data"
    options = Options(dictionary_training_samples=TRAINING_SAMPLES, segment_bytes=64 * 1024)
    sent = []
    for n in range(3 * TRAINING_SAMPLES):
        lead = realistic_lead(rng, n)
        lead.update(EDGE_SNAPSHOTS[n % len(EDGE_SNAPSHOTS)])
        sent.append(event(n, lead, EDGE_SNAPSHOTS[(n + 3) % len(EDGE_SNAPSHOTS)]))
    sent += [event(n, edge) for n, edge in enumerate(EDGE_SNAPSHOTS, start=len(sent))]
    with EventLog.open(data, options) as log:
        positions = append_all(log, sent[: 2 * TRAINING_SAMPLES])
        wait_for_dictionaries(log, 1)
        positions += append_all(log, sent[2 * TRAINING_SAMPLES :])
        assert_all_round_trip(log, sent, positions)
    assert list((data / "dictionaries").glob("*.zdict"))
    with EventLog.open(data, options) as log:
        assert_all_round_trip(log, sent, positions)
        assert log.verify().problems == []
    shutil.rmtree(data / "index")
    with EventLog.open(data, options) as log:
        assert_all_round_trip(log, sent, positions)
        for position in positions[::37]:
            [stored] = log.read_from(position, limit=1)
            assert_round_trips(log.get(stored.id), sent[positions.index(position)])


def test_old_records_stay_readable_after_the_dictionary_is_retrained(tmp_path: Path) -> None:
    rng = random.Random(3)
    data = tmp_path / "data"
    options = Options(dictionary_training_samples=TRAINING_SAMPLES)
    loans = [event(n, realistic_lead(rng, n)) for n in range(6 * TRAINING_SAMPLES)]
    vehicles = [event(n, vehicle_lead(rng, n)) for n in range(10_000, 10_000 + 8 * TRAINING_SAMPLES)]
    with EventLog.open(data, options) as log:
        loan_positions = append_all(log, loans[: 2 * TRAINING_SAMPLES])
        wait_for_dictionaries(log, 1)
        trained = log.stats().dictionaries
        # Loans under the new dictionary set the ratio that vehicles then fall short of.
        loan_positions += append_all(log, loans[2 * TRAINING_SAMPLES :])
        vehicle_positions = append_all(log, vehicles)
        wait_for_dictionaries(log, trained + 1)  # a decayed ratio retrains the dictionary
        more = [event(n, vehicle_lead(rng, n)) for n in range(50_000, 50_000 + TRAINING_SAMPLES)]
        vehicles += more
        vehicle_positions += append_all(log, more)  # written under the retrained dictionary
        assert_all_round_trip(log, loans, loan_positions)
        assert_all_round_trip(log, vehicles, vehicle_positions)
    assert len(list((data / "dictionaries").glob("*.zdict"))) >= 2
    with EventLog.open(data, options) as log:
        assert_all_round_trip(log, loans, loan_positions)
        assert_all_round_trip(log, vehicles, vehicle_positions)
        assert log.verify().problems == []


@pytest.mark.parametrize(
    "make_lead",
    [
        pytest.param(lambda n: {}, id="empty snapshots"),
        pytest.param(lambda n: {"a": 1}, id="identical snapshots"),
        pytest.param(lambda n: {"n": n}, id="tiny snapshots"),
    ],
)
def test_training_on_degenerate_snapshots_never_fails_an_append(tmp_path: Path, make_lead: Any) -> None:
    data = tmp_path / "data"
    options = Options(dictionary_training_samples=TRAINING_SAMPLES)
    rng = random.Random(4)
    sent = [event(n, make_lead(n)) for n in range(TRAINING_SAMPLES + 100)]
    sent += [event(n, realistic_lead(rng, n)) for n in range(len(sent), len(sent) + 50)]
    with EventLog.open(data, options) as log:
        positions = append_all(log, sent, batch=25)
        assert_all_round_trip(log, sent, positions)
    with EventLog.open(data, options) as log:
        assert_all_round_trip(log, sent, positions)
        assert log.stats().writable


def test_stats_show_compression_of_realistic_snapshots(tmp_path: Path) -> None:
    rng = random.Random(5)
    with EventLog.open(tmp_path / "data", Options(dictionary_training_samples=200)) as log:
        append_all(log, [event(n, realistic_lead(rng, n)) for n in range(1000)], batch=50)
        wait_for_dictionaries(log, 1)
        stats = log.stats()
    assert stats.event_count == 1000
    assert stats.dictionaries >= 1
    assert stats.dictionary_bytes > 0
    assert stats.raw_bytes > 0 and stats.log_bytes > 0
    assert stats.compression_ratio > 1
    assert stats.compression_ratio == pytest.approx(stats.raw_bytes / stats.log_bytes, rel=0.01)
    assert stats.bytes_per_event > 0
    assert stats.disk_bytes >= stats.log_bytes + stats.dictionary_bytes


def test_realistic_snapshots_round_trip_with_replaced_fields(tmp_path: Path) -> None:
    # Consecutive snapshots of one lead differ by a few fields: the common case.
    rng = random.Random(6)
    lead = realistic_lead(rng, 0)
    sent = []
    for n in range(TRAINING_SAMPLES + 60):
        lead = {**lead, f"step.{n % 7}": n, "email.valid": n % 2 == 0}
        if n % 11 == 0:
            lead.pop("phone", None)
        sent.append(replace(event(n, dict(lead)), lead_id="one-lead"))
    with EventLog.open(tmp_path / "data", Options(dictionary_training_samples=200)) as log:
        positions = append_all(log, sent)
        assert_all_round_trip(log, sent, positions)
        timeline = log.timeline("one-lead")
        assert [canon(dict(e.lead)) for e in timeline] == [canon(e.lead) for e in sent]


def _as_format_1_0(data: Path) -> int:
    """Rewrite every segment as format 1.0 wrote it: zstd frames with their magic
    number and dictionary id (codecs 1 and 2). Returns how many records changed."""
    from crc32c import crc32c
    from leadtrail.storage.codec import EventPrefix, read_dictionary_file
    from leadtrail.storage.format import (
        BARE_CODECS,
        CODEC_ZSTD,
        CODEC_ZSTD_DICT,
        CODEC_ZSTD_DICT_BARE,
        EVENT_PREFIX,
        KIND_EVENT,
        encode_record,
        encode_seal,
        parse_segment_name,
    )
    from leadtrail.storage.segment import Segment

    changed = 0
    for path in sorted((data / "log").glob("*.log")):
        base = parse_segment_name(path.name)
        assert base is not None
        segment = Segment(str(data / "log"), base)
        out = bytearray(path.read_bytes()[:24])
        count = last = 0
        sealed = False
        for _, header, payload in segment.records():
            if header.kind != KIND_EVENT:
                sealed = True
                continue
            prefix = EventPrefix(payload, header.position)
            payload = bytes(payload)
            if prefix.codec in BARE_CODECS:
                dictionary = None
                if prefix.codec == CODEC_ZSTD_DICT_BARE:
                    stored = data / "dictionaries" / f"{prefix.dict_id:08d}.zdict"
                    dictionary = zstandard.ZstdCompressionDict(read_dictionary_file(str(stored))[2])
                body = zstandard.ZstdDecompressor(
                    dict_data=dictionary, format=zstandard.FORMAT_ZSTD1_MAGICLESS
                ).decompress(prefix.body, max_output_size=1 << 24)
                old_codec = CODEC_ZSTD_DICT if dictionary is not None else CODEC_ZSTD
                framed = zstandard.ZstdCompressor(level=3, dict_data=dictionary).compress(body)
                assert framed[:4] == b"\x28\xb5\x2f\xfd"  # the magic number codecs 1 and 2 carry
                head = bytearray(payload[: len(payload) - len(prefix.body)])
                head[12] = old_codec
                payload = bytes(head) + framed
                assert EVENT_PREFIX.unpack_from(payload)[4] == old_codec
                changed += 1
            out += encode_record(KIND_EVENT | (0x80 if header.commit else 0), header.position, payload)
            count, last = count + 1, header.position
        if sealed:
            out += encode_seal(crc32c(bytes(out)), count, last)
        segment.close()
        path.write_bytes(bytes(out))
    # 1.0 dictionary files: magic "LTZDICT1", id, crc, the dictionary; no store named.
    for path in (data / "dictionaries").glob("*.zdict"):
        dict_id, _, body = read_dictionary_file(str(path))
        path.write_bytes(b"LTZDICT1" + struct.pack("<II", dict_id, crc32c(body)) + body)
    return changed


def test_records_of_format_1_0_codecs_stay_readable(tmp_path: Path) -> None:
    # Format 1.0 stored zstd frames whole; 1.1 writes them without magic number and
    # dictionary id. A store written by 1.0 must read the same after the upgrade.
    rng = random.Random(7)
    data = tmp_path / "data"
    options = Options(
        dictionary_training_samples=TRAINING_SAMPLES, segment_bytes=256 * 1024, record_form="json"
    )
    sent = [event(n, realistic_lead(rng, n)) for n in range(3 * TRAINING_SAMPLES)]
    with EventLog.open(data, options) as log:
        positions = append_all(log, sent[: 2 * TRAINING_SAMPLES])
        wait_for_dictionaries(log, 1)
        positions += append_all(log, sent[2 * TRAINING_SAMPLES :])
        new_bytes = log.stats().log_bytes
    assert _as_format_1_0(data) == len(sent) - sum(1 for e in sent if len(e.lead) == 0)
    shutil.rmtree(data / "index")  # record offsets moved
    with EventLog.open(data, options) as log:
        assert log.verify().problems == []
        assert_all_round_trip(log, sent, positions)
        # Each record is longer in the old form: the 4-byte magic number, and the
        # dictionary id where there is one.
        assert log.stats().log_bytes - new_bytes >= 4 * len(sent)
        # A 1.0 dictionary names no store: it still decodes what it compressed, but
        # bare frames (no dictionary id for zstd to check) are never made with it.
        old_dictionaries = log.dictionaries.ids()
        assert log.dictionaries.current_id == 0
        more = [event(n, realistic_lead(rng, n)) for n in range(10_000, 10_000 + 2 * TRAINING_SAMPLES)]
        positions += append_all(log, more)  # new records in the new form beside the old
        wait_for_dictionaries(log, len(old_dictionaries) + 1)
        assert log.dictionaries.current_id not in old_dictionaries
        assert_all_round_trip(log, sent + more, positions)
    with EventLog.open(data, options) as log:
        assert log.verify().problems == []
        assert_all_round_trip(log, sent + more, positions)


def test_a_dictionary_of_another_store_refuses_the_open(tmp_path: Path) -> None:
    # Bare frames carry no dictionary id: decoded with another store's dictionary
    # of the same number they would come out wrong, so such a file is refused.
    rng = random.Random(8)
    options = Options(dictionary_training_samples=TRAINING_SAMPLES)
    stores = [tmp_path / "one", tmp_path / "two"]
    for n, data in enumerate(stores):
        with EventLog.open(data, options) as log:
            append_all(log, [event(k, realistic_lead(rng, k + n)) for k in range(2 * TRAINING_SAMPLES)])
            wait_for_dictionaries(log, 1)
    name = "00000001.zdict"
    shutil.copy(stores[0] / "dictionaries" / name, stores[1] / "dictionaries" / name)
    with pytest.raises(CorruptionError, match=f"{name}: belongs to another store"):
        EventLog.open(stores[1], options)


def test_a_sample_compressed_before_a_training_finished_starts_no_second_one(tmp_path: Path) -> None:
    from leadtrail.storage.codec import Dictionaries, Trainer
    from leadtrail.storage.fs import OS_FILES

    rng = random.Random(9)
    dictionaries = Dictionaries(str(tmp_path / "dictionaries"), OS_FILES, 3, 8 * 1024, b"store")
    trainer = Trainer(dictionaries, 100, 0.75)
    bodies = [orjson.dumps(realistic_lead(rng, n)) for n in range(101)]
    for body in bodies[:100]:
        trainer.observe(body, len(body), 0)  # the 100th starts the training
    assert trainer.wait_idle(30)
    assert dictionaries.ids() == [1]
    # Compressed without a dictionary while the training ran, observed after it ended.
    trainer.observe(bodies[100], len(bodies[100]), 0)
    assert trainer.wait_idle(30)
    assert dictionaries.ids() == [1]
    trainer.close()
