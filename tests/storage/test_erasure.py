"""Erasure of a lead's personal data, field policies and tiered retention, on the engine.

An erased lead keeps its audit skeleton and loses every pii and secret value
(and quotes of them) from every event recorded before the erasure; afterwards
the values are in no decoded record, no byte of any file under the data
directory and no dictionary, whatever crashes in between (running it again
finishes the job). Tiered retention does the same by age and field class.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import leadtrail_storage_faults as faults  # loaded by conftest.py
import orjson
import pytest
from leadtrail.storage import (
    ERASED,
    Event,
    EventLog,
    FieldPolicy,
    Options,
    Outcome,
    RetentionPolicy,
    StorageError,
    new_event_id,
)
from leadtrail.storage.fields import FieldPolicies, classifier, default_class
from leadtrail_storage_support import Clock  # loaded by conftest.py

DAY_MS = 86_400_000
T0 = 1_767_225_600_000
SEGMENT_BYTES = 4096
JANE = {
    "email": "jane.doe@example.com",
    "phone": "+1-555-867-5309",
    "first_name": "Janette",
    "last_name": "Doeberg",
    "address": {"street": "742 Evergreen Terrace", "city": "Springfield", "state": "OR"},
    "ssn": "fp:0123456789abcdef0123456789abcdef",
}
JANE_VALUES = ["jane.doe@example.com", "+1-555-867-5309", "Janette", "Doeberg", "742 Evergreen Terrace"]


def lead_event(lead_id: str, n: int, account: str = "default", person: dict[str, Any] | None = None) -> Event:
    """Step ``n`` of a lead: personal fields stay, plain fields change (deltas happen)."""
    person = person or {
        "email": f"someone{lead_id}@example.com",
        "phone": f"+1-555-{abs(hash(lead_id)) % 1000:03d}-{n:04d}",
        "first_name": "Sam",
        "address": {"street": f"{n} Side St", "city": "Portland", "state": "OR"},
    }
    return Event(
        type=("source.submitted", "validation.passed", "recipient.delivered", "feedback.converted")[n % 4],
        lead_id=lead_id,
        flow_id="flow-solar",
        id=new_event_id(),
        entity_id="buyer-7" if n % 4 == 2 else "",
        outcome=Outcome.SUCCESS,
        reason="",
        price="12.50" if n % 4 == 2 else "",
        details={"attempt": n, "buyer_response": f"accepted {person['email']}" if n % 4 == 2 else "ok"},
        lead={**person, "loan_amount": 250_000 + n, "source": "google", "step": n},
        account_id=account,
    )


def decoded_text(log: EventLog) -> str:
    return "\n".join(orjson.dumps(dataclasses.asdict(e), default=str).decode() for e in log.read_from(1))


def files_holding(data: Path, values: list[str]) -> list[str]:
    hits = []
    for path in sorted(p for p in data.rglob("*") if p.is_file()):
        content = path.read_bytes()
        for value in values:
            for needle in {value.encode(), orjson.dumps(value)[1:-1]}:
                if needle in content:
                    hits.append(f"{path.relative_to(data)}: {value}")
    return hits


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
def options(clock: Clock, request: pytest.FixtureRequest) -> Options:
    form = getattr(request, "param", "wire")
    return Options(
        segment_bytes=SEGMENT_BYTES, clock_ms=clock, dictionary_training_samples=50, record_form=form
    )


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def log(data: Path, options: Options) -> Iterator[EventLog]:
    with EventLog.open(data, options) as store:
        yield store


def fill(log: EventLog, jane_steps: int = 6, others: int = 60) -> tuple[list[Event], list[Event]]:
    """Jane's lead interleaved with other leads, over several segments and the active one."""
    jane: list[Event] = []
    rest: list[Event] = []
    spread = {round(i * (others - 1) / max(jane_steps - 1, 1)): i for i in range(jane_steps)}
    for n in range(others):
        batch = [lead_event(f"lead-{n % 9}", n)]
        if n in spread:
            batch.append(lead_event("lead-jane", spread[n], person=JANE))
        results = log.append(batch)
        for e, r in zip(batch, results, strict=True):
            stored = dataclasses.replace(
                e, position=r.position, recorded_at_ms=r.recorded_at_ms, timestamp_ms=r.recorded_at_ms
            )
            (jane if e.lead_id == "lead-jane" else rest).append(stored)
    return jane, rest


def skeleton(e: Event) -> tuple[Any, ...]:
    return (
        e.id,
        e.type,
        e.lead_id,
        e.flow_id,
        e.entity_id,
        e.outcome,
        e.price,
        e.position,
        e.recorded_at_ms,
        e.timestamp_ms,
        e.account_id,
    )


def test_erasure_removes_personal_values_and_keeps_the_audit_skeleton(log: EventLog) -> None:
    jane, rest = fill(log)
    assert log.segments[-1].base <= jane[-1].position, "Jane's last event must be in the active segment"
    report = log.erase_lead("lead-jane", requested_by="key-1", reason="data subject request #42")
    assert report is not None
    assert report.events_erased == len(jane)
    assert report.segments_rewritten >= 2
    timeline = log.timeline("lead-jane")
    erased, [audit] = timeline[:-1], timeline[-1:]
    assert [skeleton(e) for e in erased] == [skeleton(e) for e in jane]
    for e in erased:
        assert e.lead["email"] == e.lead["phone"] == e.lead["first_name"] == e.lead["last_name"] == ERASED
        assert e.lead["address"] == ERASED  # a personal field holding an object goes whole
        assert e.lead["ssn"] == ERASED  # a secret's fingerprint links records: erased too
        assert (e.lead["loan_amount"], e.lead["source"]) == (250_000 + e.lead["step"], "google")
        assert e.details["attempt"] == e.lead["step"]
    delivered = [e for e in erased if e.type == "recipient.delivered"]
    assert delivered and all(e.details["buyer_response"] == f"accepted {ERASED}" for e in delivered)
    assert (audit.type, audit.lead_id, audit.entity_id, audit.reason) == (
        "audit.erased",
        "lead-jane",
        "key-1",
        "data subject request #42",
    )
    assert audit.details["events_erased"] == len(jane)
    assert audit.details["through_position"] == jane[-1].position
    assert (audit.id, audit.position) == (report.audit_event_id, report.audit_position)
    assert log.get(jane[0].id) == erased[0]
    # Nobody else changed.
    for e in rest:
        assert log.get(e.id) == e
    assert log.verify().problems == []


def payloads_by_position(log: EventLog) -> dict[int, bytes]:
    return {
        header.position: bytes(payload)
        for segment in log.segments
        for _, header, payload in segment.records()
        if header.kind == 1
    }


def test_other_leads_records_are_copied_byte_for_byte(log: EventLog) -> None:
    jane, rest = fill(log)
    before = payloads_by_position(log)
    report = log.erase_lead("lead-jane")
    assert report is not None and report.segments_rewritten >= 2
    after = payloads_by_position(log)
    assert all(after[e.position] == before[e.position] for e in rest)
    assert after[jane[0].position] != before[jane[0].position]  # (later steps may be equal deltas)
    assert log.verify().problems == []


def test_erased_values_are_in_no_decoded_record_no_file_and_no_dictionary(log: EventLog, data: Path) -> None:
    fill(log, jane_steps=8, others=120)
    trainer = log.trainer
    assert trainer is not None and trainer.wait_idle(30)
    assert log.dictionaries.ids(), "the scenario needs a trained dictionary"
    text = decoded_text(log)
    assert all(v in text for v in JANE_VALUES)  # so that the checks below can fail
    log.erase_lead("lead-jane")
    text = decoded_text(log)
    assert [v for v in JANE_VALUES if v in text] == []
    assert files_holding(data, JANE_VALUES) == []
    assert "someonelead-1@example.com" in text  # other leads keep theirs
    log.close()
    with EventLog.open(data, Options(segment_bytes=SEGMENT_BYTES)) as reopened:
        assert [v for v in JANE_VALUES if v in decoded_text(reopened)] == []
        assert reopened.verify().problems == []
    assert faults.stray_files(data) == []


def test_dictionaries_are_trained_without_personal_values(log: EventLog) -> None:
    # One lead's personal fields in every sample: trained raw, the dictionary would keep
    # them. (A quote of them in plain text may still be learnt: see the next test.)
    for n in range(120):
        e = lead_event("lead-jane", n, person=JANE)
        e.details = {"attempt": n}
        log.append([e])
    trainer = log.trainer
    assert trainer is not None and trainer.wait_idle(30)
    assert log.dictionaries.ids()
    assert log.dictionaries.holding([b"jane.doe@example.com", b"Evergreen"]) == []
    assert log.dictionaries.holding([b"loan_amount"]) != []  # while field names are learnt


def test_wire_form_training_never_learns_a_quoted_personal_value(log: EventLog) -> None:
    # Each wire body holds the whole snapshot, so its sample finds every personal value
    # and blanks its quotes in plain fields too.
    for n in range(120):
        e = lead_event("lead-jane", n, person=JANE)
        e.lead = {**e.lead, "notes": "call back at jane.doe@example.com after 5pm"}
        log.append([e])
    trainer = log.trainer
    assert trainer is not None and trainer.wait_idle(30)
    assert log.dictionaries.ids()
    assert log.dictionaries.holding([b"jane.doe@example.com", b"Evergreen"]) == []
    assert log.dictionaries.holding([b"call back at"]) != []  # plain text is learnt


# Format 1.1 records: a training sample of a snapshot delta keeps a plain field's quote
# of a personal value (the wire form's samples never do: see the test below).
@pytest.mark.parametrize("options", ["json"], indirect=True)
def test_a_dictionary_that_learnt_an_erased_value_is_replaced(log: EventLog, data: Path) -> None:
    # A plain field quoting the email in every event of the lead: training keeps it.
    for n in range(120):
        e = lead_event("lead-jane", n, person=JANE)
        e.lead = {**e.lead, "notes": "call back at jane.doe@example.com after 5pm"}
        log.append([e])
    trainer = log.trainer
    assert trainer is not None and trainer.wait_idle(30)
    tainted = log.dictionaries.holding([b"jane.doe@example.com"])
    assert tainted, "precondition: the dictionary learnt the quoted email"
    report = log.erase_lead("lead-jane")
    assert report is not None and report.dictionaries_replaced == len(tainted)
    assert not set(tainted) & set(log.dictionaries.ids())
    assert files_holding(data, JANE_VALUES) == []
    assert all(e.lead["notes"] == f"call back at {ERASED} after 5pm" for e in log.timeline("lead-jane")[:-1])
    log.append([lead_event("lead-next", 1)])  # appends go on with the dictionaries left
    assert log.verify().problems == []
    log.close()
    with EventLog.open(data, Options(segment_bytes=SEGMENT_BYTES)) as reopened:
        assert reopened.verify().problems == []
        assert len(reopened.timeline("lead-jane")) == 121


def test_erasing_again_changes_nothing_and_ids_stay_duplicates(log: EventLog, data: Path) -> None:
    jane, _ = fill(log)
    log.erase_lead("lead-jane")
    sealed = {p.name: p.read_bytes() for p in sorted((data / "log").glob("*.log"))[:-1]}
    again = log.erase_lead("lead-jane")
    assert again is not None and (again.events_erased, again.segments_rewritten) == (0, 0)
    assert {name: (data / "log" / name).read_bytes() for name in sealed} == sealed  # nothing rewritten
    resent = dataclasses.replace(lead_event("lead-jane", 0, person=JANE), id=jane[0].id)
    [dup] = log.append([resent])
    assert (dup.duplicate, dup.position) == (True, jane[0].position)


def test_an_unknown_lead_or_another_accounts_lead_erases_nothing(log: EventLog) -> None:
    jane, _ = fill(log, others=10)
    log.append([lead_event("lead-g", 1, account="globex", person=JANE)])
    assert log.erase_lead("lead-nobody") is None
    assert log.erase_lead("lead-jane", "globex") is None
    assert log.timeline("lead-jane") == jane
    assert log.erase_lead("lead-g", "globex") is not None
    assert log.timeline("lead-jane") == jane  # same values, other account: untouched
    assert log.timeline("lead-g", "globex")[0].lead["email"] == ERASED


def test_appends_during_an_erasure_are_all_kept(log: EventLog) -> None:
    fill(log, others=40)
    acked: list[tuple[Event, int]] = []
    stop = threading.Event()

    def append_forever() -> None:
        n = 1000
        while not stop.is_set():
            e = lead_event(f"lead-busy-{n % 5}", n)
            acked.append((e, log.append([e])[0].position))
            n += 1

    worker = threading.Thread(target=append_forever)
    worker.start()
    try:
        for _ in range(3):
            log.erase_lead("lead-jane")
    finally:
        stop.set()
        worker.join()
    assert len(acked) > 0
    for e, position in acked:
        got = log.get(e.id)
        assert got is not None and got.position == position and got.lead == e.lead
    assert log.verify().problems == []


def test_indexes_after_erasure_equal_a_rebuild(log: EventLog, data: Path, tmp_path: Path) -> None:
    jane, rest = fill(log)
    log.erase_lead("lead-jane")
    ids = [(e.account_id, e.id) for e in jane + rest]
    seen = faults.query_results(log, ids)
    log.close()
    copy = faults.copy_store(data, tmp_path / "copy")
    with EventLog.open(copy, Options(segment_bytes=SEGMENT_BYTES)) as rebuilt:
        rebuilt.reindex()
        assert faults.result_differences(seen, faults.query_results(rebuilt, ids)) == []


@pytest.mark.slow
def test_a_crash_at_any_file_operation_of_an_erasure_loses_nothing_and_a_rerun_finishes(
    tmp_path: Path,
) -> None:
    base = tmp_path / "base"
    options = Options(segment_bytes=SEGMENT_BYTES, dictionary_training_samples=50)
    with EventLog.open(base, options) as log:
        jane, rest = fill(log, jane_steps=8, others=80)
        trainer = log.trainer
        assert trainer is not None and trainer.wait_idle(30)
    command = faults.child_command(
        "erase", "", f"--segment-bytes={SEGMENT_BYTES}", "--lead=lead-jane", "--account=default"
    )

    def run(path: Path, crash_at: int | None) -> subprocess.CompletedProcess[str]:
        args = [*command[:3], str(path), *command[4:]]
        if crash_at is not None:
            args.append(f"--crash-at={crash_at}")
        return subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)

    probe = faults.copy_store(base, tmp_path / "probe")
    done = run(probe, None)
    assert done.returncode == 0, done.stderr
    ops = json.loads(done.stdout)["ops"]
    assert any(op.startswith("rename") for op in ops), ops
    with EventLog.open(probe, options) as log:
        erased_leads = {e.id: e.lead for e in log.timeline("lead-jane")}
    points = sorted(
        {*range(1, min(len(ops), 12) + 1), *range(1, len(ops) + 1, max(1, len(ops) // 25)), len(ops)}
    )
    by_id = {e.id: e for e in jane + rest}
    for crash_at in points:
        where = f"crash at operation {crash_at} ({ops[crash_at - 1]})"
        path = faults.copy_store(base, tmp_path / f"crash-{crash_at}")
        child = run(path, crash_at)
        assert child.returncode in (faults.CRASH_EXIT, 0), f"{where}: {child.stderr}"
        with EventLog.open(path, options) as log:
            events = [e for e in faults.check_log(log) if not e.type.startswith("audit.")]
            assert len(events) == len(by_id), where
            for e in events:
                original = by_id[e.id]
                assert skeleton(e) == skeleton(original), where
                if e.lead_id == "lead-jane":  # as it was or as erased, never anything else
                    assert e.lead in (original.lead, erased_leads[e.id]), where
                else:
                    assert e == original, where
            log.erase_lead("lead-jane")
            assert all(
                e.lead["email"] == ERASED for e in log.timeline("lead-jane") if e.type != "audit.erased"
            ), where
            assert log.verify().problems == []
        assert faults.stray_files(path) == [], where
        assert files_holding(path, JANE_VALUES) == [], where


# -- field policies --------------------------------------------------------------------


def test_the_built_in_classes() -> None:
    assert {default_class(k) for k in ("ssn", "socialSecurityNumber", "card_number", "api_key")} == {"secret"}
    assert {default_class(k) for k in ("email", "contact.phone", "firstName", "ip_address", "name")} == {
        "pii"
    }
    assert {default_class(k) for k in ("source.name", "state", "loan_amount", "leadId")} == {"plain"}


def test_an_account_policy_adds_classes_and_declassifies_pii_but_never_a_secret() -> None:
    classify = classifier(
        FieldPolicy(
            "acme", secret=("loyalty_code",), pii=("customer_ref", "contact.*"), plain=("first_name", "ssn")
        )
    )
    assert classify("loyalty_code") == classify("profile.loyalty_code") == "secret"
    assert classify("customer_ref") == classify("CUSTOMER_REF") == classify("contact.anything") == "pii"
    assert classify("first_name") == "plain"
    assert classify("ssn") == "secret"  # a built-in secret stays one
    assert classify("last_name") == "pii" and classify("state") == "plain"


def test_field_policies_are_validated_and_durable(tmp_path: Path, options: Options) -> None:
    with EventLog.open(tmp_path / "d", options) as log:
        with pytest.raises(StorageError, match=r"secret\[0\] 'a b'"):
            log.set_field_policy(FieldPolicy("acme", secret=("a b",)))
        with pytest.raises(StorageError, match="over the limit of 128"):
            log.set_field_policy(FieldPolicy("acme", pii=("x" * 129,)))
        log.set_field_policy(FieldPolicy("acme", pii=("customer_ref",)))
        assert log.fields.classifier("acme")("customer_ref") == "pii"
        assert log.fields.classifier("globex")("customer_ref") == "plain"
    policies = FieldPolicies(str(tmp_path / "d"), options.files)
    assert policies.get("acme") == FieldPolicy("acme", pii=("customer_ref",))


def test_erasure_follows_the_accounts_field_policy(log: EventLog) -> None:
    log.set_field_policy(FieldPolicy("default", pii=("customer_ref",), plain=("first_name",)))
    e = lead_event("lead-p", 1, person=JANE)
    e.lead = {**e.lead, "customer_ref": "CR-99812"}
    log.append([e])
    log.erase_lead("lead-p")
    [erased, _audit] = log.timeline("lead-p")
    assert erased.lead["customer_ref"] == ERASED
    assert erased.lead["first_name"] == "Janette"  # plain in this account


# -- tiered retention ---------------------------------------------------------------


def test_personal_values_are_erased_after_their_age_and_events_kept(log: EventLog, clock: Clock) -> None:
    old = [lead_event(f"lead-{n}", n, person=JANE) for n in range(30)]
    for e in old:
        log.append([e])
    clock.now += 20 * DAY_MS
    young = [lead_event(f"lead-y{n}", n, person=JANE) for n in range(10)]
    for e in young:
        log.append([e])
    log.set_retention_policy(RetentionPolicy("default", pii_max_age_days=30, secret_max_age_days=7))

    def lead_of(e: Event) -> dict[str, Any]:
        got = log.get(e.id)
        assert got is not None
        return dict(got.lead)

    # Old events 25 days old, young 5: the old lose their secrets only.
    assert log.apply_retention(clock.now + 5 * DAY_MS).events_scrubbed == len(old)
    assert all(lead_of(e)["ssn"] == ERASED and lead_of(e)["email"] == JANE["email"] for e in old)
    assert all(lead_of(e)["ssn"] == JANE["ssn"] for e in young)
    # 31 and 11 days: the old lose their personal values, the young their secrets.
    after = log.apply_retention(clock.now + 11 * DAY_MS)
    assert after.events_scrubbed == len(old) + len(young)
    assert after.events_removed == 0
    for e in old:
        got = log.get(e.id)
        assert got is not None and got.lead["email"] == ERASED and got.lead["address"] == ERASED
        assert got.details["buyer_response"] in ("ok", f"accepted {ERASED}")
        assert got.lead["loan_amount"] == e.lead["loan_amount"]
    assert all(lead_of(e)["email"] == JANE["email"] and lead_of(e)["ssn"] == ERASED for e in young)
    again = log.apply_retention(clock.now + 11 * DAY_MS)
    assert (again.events_scrubbed, again.segments_rewritten) == (0, 0)
    assert log.verify().problems == []


def test_a_legal_hold_keeps_personal_values_past_their_age(log: EventLog, clock: Clock) -> None:
    e = lead_event("lead-h", 1, person=JANE)
    log.append([e])
    log.set_retention_policy(RetentionPolicy("default", legal_hold=True, pii_max_age_days=1))
    assert log.apply_retention(clock.now + 5 * DAY_MS).events_scrubbed == 0
    got = log.get(e.id)
    assert got is not None and got.lead["email"] == JANE["email"]


def test_tier_ages_are_validated_and_durable(data: Path, options: Options) -> None:
    with EventLog.open(data, options) as log:
        with pytest.raises(StorageError, match="pii_max_age_days"):
            log.set_retention_policy(RetentionPolicy("default", pii_max_age_days=40_000))
        log.set_retention_policy(RetentionPolicy("default", pii_max_age_days=30, secret_max_age_days=7))
    with EventLog.open(data, options) as log:
        assert log.retention_policies() == [RetentionPolicy("default", 0, False, 30, 7)]


# -- what the review of erasure found -----------------------------------------------


# Format 1.1 records: a training sample of a snapshot delta keeps a plain field's quote
# of a personal value (the wire form's samples never do: see the test below).
@pytest.mark.parametrize("options", ["json"], indirect=True)
def test_a_deleted_dictionarys_id_is_never_given_out_again(log: EventLog, data: Path) -> None:
    for n in range(120):
        e = lead_event("lead-jane", n, person=JANE)
        e.lead = {**e.lead, "notes": "call back at jane.doe@example.com after 5pm"}
        log.append([e])
    trainer = log.trainer
    assert trainer is not None and trainer.wait_idle(30)
    [first] = log.dictionaries.ids()
    assert log.erase_lead("lead-jane") is not None
    assert first not in log.dictionaries.ids()
    new = log.dictionaries.train([orjson.dumps(lead_event(f"lead-{n}", n).lead) for n in range(300)])
    assert new > first
    log.append([lead_event("lead-after", 1)])
    log.close()
    with EventLog.open(data, Options(segment_bytes=SEGMENT_BYTES)) as reopened:
        assert reopened.verify().problems == []
        assert first not in reopened.dictionaries.ids() and new in reopened.dictionaries.ids()
        assert reopened.timeline("lead-after")[0].lead["source"] == "google"


def test_a_retirement_left_by_an_interrupted_erasure_is_finished_by_the_next(
    log: EventLog, data: Path
) -> None:
    fill(log, others=150)
    trainer = log.trainer
    assert trainer is not None and trainer.wait_idle(30)
    [dict_id] = log.dictionaries.ids()
    log.dictionaries.retire(dict_id)  # as an erasure does before rewriting, then crashed
    log.close()
    with EventLog.open(data, Options(segment_bytes=SEGMENT_BYTES)) as reopened:
        assert reopened.dictionaries.pending_retirement() == [dict_id]
        report = reopened.erase_lead("lead-1")
        assert report is not None and report.dictionaries_replaced == 1
        assert reopened.dictionaries.pending_retirement() == []
        assert not (data / "dictionaries" / f"{dict_id:08d}.zdict").exists()
        assert reopened.verify().problems == []
        assert len(list(reopened.read_from(1))) == reopened.stats().event_count


def test_the_reason_given_is_kept_without_the_values_it_quotes(log: EventLog) -> None:
    fill(log, others=10)
    report = log.erase_lead("lead-jane", reason="request from JANE.DOE@example.com, ticket 7")
    assert report is not None
    audit = log.get(report.audit_event_id)
    assert audit is not None and audit.reason == f"request from {ERASED}, ticket 7"


def test_quotes_are_found_whatever_their_case(log: EventLog) -> None:
    e = lead_event("lead-case", 2, person=JANE)
    e.details = {"buyer_response": "Accepted JANE.DOE@EXAMPLE.COM", "agent": "janette called"}
    log.append([e])
    log.erase_lead("lead-case")
    got = log.get(e.id)
    assert got is not None
    assert got.details == {"buyer_response": f"Accepted {ERASED}", "agent": f"{ERASED} called"}


def test_a_reader_going_through_the_log_during_an_erasure_sends_no_erased_value(log: EventLog) -> None:
    fill(log, others=120)
    reader = log.read_from(1)
    first = [next(reader) for _ in range(3)]
    assert [e.position for e in first] == [1, 2, 3]
    log.erase_lead("lead-jane")
    rest = list(reader)
    assert [e.position for e in first + rest] == list(range(1, log.last_position + 1))
    late = [e for e in rest if e.lead_id == "lead-jane" and e.type != "audit.erased"]
    assert late and all(e.lead["email"] == ERASED for e in late)


def test_a_field_policy_changed_after_tiering_is_applied_to_segments_tiered_before(
    log: EventLog, clock: Clock
) -> None:
    events = []
    for n in range(30):
        e = lead_event(f"lead-{n}", n, person=JANE)
        e.lead = {**e.lead, "customer_ref": f"CR-{n:05d}"}
        events.append(e)
        log.append([e])
    log.set_retention_policy(RetentionPolicy("default", pii_max_age_days=30))
    assert log.apply_retention(clock.now + 31 * DAY_MS).events_scrubbed == len(events)
    assert log.apply_retention(clock.now + 31 * DAY_MS).events_scrubbed == 0
    log.set_field_policy(FieldPolicy("default", pii=("customer_ref",)))
    assert log.apply_retention(clock.now + 31 * DAY_MS).events_scrubbed == len(events)
    for e in events:
        got = log.get(e.id)
        assert got is not None and got.lead["customer_ref"] == ERASED


# Format 1.1 records: a training sample of a snapshot delta keeps a plain field's quote
# of a personal value (the wire form's samples never do: see the test below).
@pytest.mark.parametrize("options", ["json"], indirect=True)
def test_tiered_retention_replaces_a_dictionary_that_learnt_an_aged_value(
    log: EventLog, clock: Clock, data: Path
) -> None:
    for n in range(120):
        e = lead_event("lead-jane", n, person=JANE)
        e.lead = {**e.lead, "notes": "call back at jane.doe@example.com after 5pm"}
        log.append([e])
    trainer = log.trainer
    assert trainer is not None and trainer.wait_idle(30)
    assert log.dictionaries.holding([b"jane.doe@example.com"])
    log.set_retention_policy(RetentionPolicy("default", pii_max_age_days=30))
    assert log.apply_retention(clock.now + 31 * DAY_MS).events_scrubbed == 120
    assert log.dictionaries.holding([b"jane.doe@example.com"]) == []
    assert files_holding(data, JANE_VALUES) == []
