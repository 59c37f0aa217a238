"""Lead search over keyed fingerprints: how values are compared, the key file, and the
``fingerprints`` / ``leadprints`` databases kept right by appends, erasure, retention
and rebuilds (read raw with LMDB, not through the engine)."""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
from pathlib import Path

import lmdb
import pytest
from hypothesis import given
from hypothesis import strategies as st
from leadtrail.storage import Event, EventLog, FieldPolicy, RetentionPolicy
from leadtrail.storage.fields import default_classify
from leadtrail.storage.fingerprints import (
    EMAIL,
    KEY_FILE,
    PHONE,
    KeyedHash,
    LeadPrints,
    fingerprint,
    normalise,
    searchable,
    value_class,
)

DAY_MS = 86_400_000
T0 = 1_700_000_000_000


@given(st.binary(min_size=1, max_size=130), st.text(max_size=20), st.text(max_size=40))
def test_the_keyed_hash_of_the_write_path_is_hmac_sha256(key: bytes, account: str, value: str) -> None:
    """The precomputed form gives the bytes of the one-shot HMAC, for keys shorter and longer
    than SHA-256's block, and of the standard library's HMAC."""
    reference = hmac.new(key, b"\0".join((account.encode(), b"email", value.encode())), hashlib.sha256)
    assert KeyedHash(key)(account, EMAIL, value) == fingerprint(key, account, EMAIL, value)
    assert fingerprint(key, account, EMAIL, value) == reference.digest()[:16]


def test_emails_compare_trimmed_and_case_blind() -> None:
    assert normalise(EMAIL, "  Jane.Doe@Example.COM ") == "jane.doe@example.com"
    assert normalise(EMAIL, "jane.doe@example.com") == normalise(EMAIL, "JANE.DOE@EXAMPLE.COM")
    assert normalise(EMAIL, "jane@example.com") != normalise(EMAIL, "jane@example.org")


def test_phones_compare_by_their_last_ten_digits() -> None:
    same = ["+1 (555) 010-2030", "555.010.2030", "15550102030", "555 010 2030", "+1-555-010-2030"]
    assert {normalise(PHONE, p) for p in same} == {"5550102030"}
    assert normalise(PHONE, "010-2030") == "0102030"  # a short number is kept whole
    assert normalise(PHONE, "+44 20 7946 0958") == normalise(PHONE, "020 7946 0958")
    assert normalise(PHONE, "no digits") == ""


def test_other_personal_values_compare_case_blind_with_spaces_made_one() -> None:
    assert normalise("field:last_name", "  van   der Berg ") == "van der berg"
    assert normalise("field:last_name", "VAN DER BERG") == "van der berg"


def test_field_names_give_the_value_class() -> None:
    for name in ("email", "Email", "work_email", "emailAddress", "contact.email", "emails", "e_mail"):
        assert value_class(name) == EMAIL, name
    for name in ("phone", "phone_2", "phoneNumber", "home_phone", "mobile", "contact.cell_phone"):
        assert value_class(name) == PHONE, name
    assert value_class("lastName") == value_class("last_name") == "field:last_name"


def test_only_personal_fields_are_searchable_and_never_secret_ones() -> None:
    assert searchable("email", default_classify) == EMAIL
    assert searchable("phone_7", default_classify) == PHONE
    assert searchable("first_name", default_classify) == "field:first_name"
    assert searchable("state", default_classify) is None
    assert searchable("ssn", default_classify) is None
    assert searchable("password", default_classify) is None


def _lead_key_suffix(lead_id: str) -> bytes:
    """The 8 bytes that end a lead's key in the index (its hash: index.lead_hash)."""
    return hashlib.blake2b(lead_id.encode(), digest_size=8).digest()


def raw_entries(data: Path) -> tuple[list[tuple[bytes, bytes]], list[tuple[bytes, bytes]]]:
    """Every (key, value) of ``fingerprints`` and of ``leadprints``, read with LMDB alone."""
    env = lmdb.open(str(data / "index"), readonly=True, lock=False, max_dbs=32, subdir=True)
    try:
        out = []
        for name in (b"fingerprints", b"leadprints"):
            db = env.open_db(name, create=False)
            with env.begin(db=db) as txn:
                out.append([(bytes(k), bytes(v)) for k, v in txn.cursor().iternext(keys=True, values=True)])
        return out[0], out[1]
    finally:
        env.close()


def lead_entries(data: Path, lead_id: str) -> int:
    forward, reverse = raw_entries(data)
    suffix = _lead_key_suffix(lead_id)
    return sum(v.endswith(suffix) for _, v in forward) + sum(k.endswith(suffix) for k, _ in reverse)


def step(lead_id: str, n: int, lead: dict[str, object], account: str = "default", **more: object) -> Event:
    return Event(
        "source.submitted",
        lead_id,
        "flow-a",
        timestamp_ms=T0 + n,
        entity_id="src-1",
        lead=lead,
        account_id=account,
        **more,  # type: ignore[arg-type]
    )


JANE = {"email": "Jane.Doe@Example.com", "phone": "+1 (555) 010-2030", "last_name": "Doe", "state": "TX"}


def found(log: EventLog, field: str, value: str, account: str = "default") -> list[str]:
    return [m.lead_id for m in log.find_leads(field, value, account)]


def test_search_finds_by_normalised_value_most_recent_first_within_the_account(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with EventLog.open(data) as log:
        log.append([step("L1", 1, JANE), step("L1", 2, {**JANE, "state": "CA"})])
        log.append([step("L2", 5, {"contact": {"workEmail": " JANE.DOE@example.COM"}, "mobile": 5550102030})])
        log.append([step("G1", 9, JANE, account="globex")])
        log.append([step("L3", 7, {"email": "someone@example.com", "state": "TX"})])
        assert found(log, "email", "jane.doe@example.com") == ["L2", "L1"]
        assert found(log, "phone", "555-010-2030") == ["L2", "L1"]
        assert found(log, "phone_2", "15550102030") == ["L2", "L1"]
        assert found(log, "last_name", "doe") == ["L1"]
        assert found(log, "email", "jane.doe@example.com", "globex") == ["G1"]
        assert found(log, "email", "nobody@example.com") == []
        assert found(log, "state", "TX") == []  # not personal: not indexed, not searchable
        [l1] = [m for m in log.find_leads("email", "jane.doe@example.com") if m.lead_id == "L1"]
        assert (l1.first_timestamp_ms, l1.last_timestamp_ms, l1.events) == (T0 + 1, T0 + 2, 2)
        scoped = log.find_leads("email", "jane.doe@example.com", visible=lambda e: e.position != 2)
        assert [(m.lead_id, m.events, m.last_timestamp_ms) for m in scoped] == [
            ("L2", 1, T0 + 5),
            ("L1", 1, T0 + 1),
        ]
        assert log.find_leads("email", "jane.doe@example.com", visible=lambda e: e.lead_id != "L1")[0].lead_id
        assert [m.lead_id for m in log.find_leads("email", "jane.doe@example.com", limit=1)] == ["L2"]


def test_a_policy_makes_a_field_searchable_and_secrets_are_never_indexed(tmp_path: Path) -> None:
    with EventLog.open(tmp_path / "data") as log:
        log.set_field_policy(FieldPolicy("default", pii=("customer_ref",)))
        log.append([step("L1", 1, {"customer_ref": "CR-77", "password": "hunter2", "ssn": "123456789"})])
        assert found(log, "customer_ref", "cr-77") == ["L1"]
        assert not log.searchable("password") and not log.searchable("ssn")
        assert found(log, "password", "hunter2") == []


def test_the_key_file_is_private_and_the_index_holds_no_value_in_clear(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with EventLog.open(data) as log:
        log.append([step("L1", 1, JANE)])
        key = (data / KEY_FILE).read_bytes()
    assert len(key) == 32
    assert stat.S_IMODE(os.stat(data / KEY_FILE).st_mode) == 0o600
    index = (data / "index" / "data.mdb").read_bytes()
    for value in (b"Jane.Doe@Example.com", b"jane.doe@example.com", b"5550102030", b"010-2030", b"Doe"):
        assert value not in index
    assert key not in index
    forward, reverse = raw_entries(data)
    assert len(forward) == len(reverse) == 3  # email, phone, last_name: one pair each, both ways
    with EventLog.open(data) as log:  # the same key again: still found
        assert (data / KEY_FILE).read_bytes() == key
        assert found(log, "email", "jane.doe@example.com") == ["L1"]


def test_a_new_key_rebuilds_the_index_so_search_keeps_working(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with EventLog.open(data) as log:
        log.append([step("L1", 1, JANE)])
    os.remove(data / KEY_FILE)
    with EventLog.open(data) as log:
        assert found(log, "email", "jane.doe@example.com") == ["L1"]


def test_erasure_removes_every_entry_of_the_lead(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with EventLog.open(data) as log:
        log.append([step("L1", 1, JANE), step("L1", 2, JANE), step("L2", 3, {"email": JANE["email"]})])
    assert lead_entries(data, "L1") == 6  # email, phone, last_name: once each, both ways
    with EventLog.open(data) as log:
        assert found(log, "email", "jane.doe@example.com") == ["L2", "L1"]
        assert log.erase_lead("L1", requested_by="test") is not None
        assert found(log, "email", "jane.doe@example.com") == ["L2"]
        assert found(log, "phone", "5550102030") == []
        log.reindex()  # what the erasure left holds nothing to index again
        assert found(log, "email", "jane.doe@example.com") == ["L2"]
    assert lead_entries(data, "L1") == 0
    assert lead_entries(data, "L2") == 2


def test_reindex_rebuilds_emptied_search_entries(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with EventLog.open(data) as log:
        log.append([step("L1", 1, JANE)])
    env = lmdb.open(str(data / "index"), max_dbs=32, subdir=True)
    with env.begin(write=True) as txn:
        for name in (b"fingerprints", b"leadprints"):
            txn.drop(env.open_db(name, txn=txn), delete=False)
    env.close()
    with EventLog.open(data) as log:
        assert found(log, "email", "jane.doe@example.com") == []  # the emptied index is trusted
        log.reindex()
        assert found(log, "email", "jane.doe@example.com") == ["L1"]
    assert lead_entries(data, "L1") == 6


def test_retention_removes_expired_leads_and_values_erased_by_age(tmp_path: Path) -> None:
    from leadtrail.storage import Options

    data = tmp_path / "data"
    now = [T0]
    options = Options(segment_bytes=4096, clock_ms=lambda: now[0])
    with EventLog.open(data, options) as log:
        log.append([step("OLD", 1, JANE, account="acme")])
        log.append([step("AGED", 2, {"email": "aged@example.com"}, account="tier")])
        log.append([step("SPLIT", 3, {"email": "split@example.com"}, account="tier")])
        now[0] = T0 + 3 * DAY_MS
        log.append([step("NEW", 4, JANE, account="acme")])
        log.append([step("SPLIT", 5, {"email": "split@example.com"}, account="tier")])
        log.set_retention_policy(RetentionPolicy("acme", max_age_days=2))
        log.set_retention_policy(RetentionPolicy("tier", pii_max_age_days=2))
        assert found(log, "email", "jane.doe@example.com", "acme") == ["NEW", "OLD"]
        report = log.apply_retention(now[0])
        assert report.events_removed == 1 and report.events_scrubbed == 2
        assert found(log, "email", "jane.doe@example.com", "acme") == ["NEW"]
        assert found(log, "email", "aged@example.com", "tier") == []  # its only value erased by age
        assert found(log, "email", "split@example.com", "tier") == ["SPLIT"]  # its newer step holds it
        assert [e.lead["email"] for e in log.timeline("AGED", "tier")] == ["[erased]"]
    assert lead_entries(data, "OLD") == 0
    assert lead_entries(data, "AGED") == 0


def test_prints_of_an_audit_record_or_an_erased_value_are_none(tmp_path: Path) -> None:
    prints = LeadPrints(b"k" * 32, lambda account: default_classify)
    assert prints.of_event("a", "audit.erased", JANE) == set()
    assert prints.of_event("a", "source.submitted", {"email": "[erased]", "phone": ""}) == set()
    assert len(prints.of_event("a", "source.submitted", JANE)) == 3
    assert prints.of_event("a", "x.y", JANE) != prints.of_event("b", "x.y", JANE)  # the account counts
    assert prints.of_search("a", "state", "TX") is None


@pytest.mark.parametrize("field", ["email", "EMAIL", "contact.email"])
def test_a_search_field_is_named_any_way_an_email_field_is(tmp_path: Path, field: str) -> None:
    prints = LeadPrints(b"k" * 32, lambda account: default_classify)
    assert prints.of_search("a", field, "X@Y.Z") == prints.of_search("a", "email", "x@y.z")


def test_a_lead_erased_then_seen_again_with_the_same_email_is_found_again(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with EventLog.open(data) as log:
        log.append([step("L1", 1, JANE)])
        log.append([step("L1", 2, JANE)])  # its values are known to be indexed by now
        log.erase_lead("L1", requested_by="test")
        assert found(log, "email", "jane.doe@example.com") == []
        log.append([step("L1", 3, JANE)])  # the same values again, after the erasure
        assert found(log, "email", "jane.doe@example.com") == ["L1"]
        log.reindex()
        assert found(log, "email", "jane.doe@example.com") == ["L1"]
        log.append([step("L1", 4, {**JANE, "email": "jane@new.example"})])
        assert found(log, "email", "JANE@new.example") == ["L1"]
    assert lead_entries(data, "L1") == 8  # two emails, phone, last_name
