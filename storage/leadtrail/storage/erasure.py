"""Erasing personal data from stored events: one lead on request, or by age.

An erased event keeps its audit skeleton (id, type, lead, flow, entity, times,
outcome, price, position) and loses the values of its ``pii`` and ``secret``
fields, in the snapshot and in the details, which read ``[erased]`` from then
on; any other text of the lead's events that quotes one of those values (a
buyer's response echoing the email, a reason naming it) loses the quote too.

Every segment holding such an event is rewritten as retention's are (see
rewrite.py), so a crash leaves each segment either as it was or erased, and
running the erasure again finishes the job. Personal fields are kept out of
trained dictionaries (samples are scrubbed before training); a dictionary
that learnt an erased value all the same (a quote in free text) is retired and
every record that names it is recompressed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import orjson

from . import wirebody
from .chain import SALTED
from .codec import EventPrefix
from .event import AUDIT_FLOW, AUDIT_TYPE_PREFIX, Event, Outcome, Progress
from .fields import (
    MIN_QUOTED,
    PII,
    SECRET,
    Classify,
    FieldPolicies,
    Quotes,
    personal_values,
    quotes_of,
    scrub,
)
from .format import DICTIONARY_CODECS, KIND_EVENT, BadRecord, BodyField
from .rewrite import replace_records, rewrite_segments, seal_active
from .wirebody import NO_CHANGES, StoredEvent

if TYPE_CHECKING:
    from .maintenance import Maintenance
    from .segment import Segment

ERASED = "[erased]"
"""What an erased value reads as."""
PERSONAL = frozenset({PII, SECRET})
AUDIT_ERASED = AUDIT_TYPE_PREFIX + "erased"


@dataclass(frozen=True, slots=True)
class ErasureReport:
    events_erased: int
    """Events of the lead whose stored content changed."""
    segments_rewritten: int
    dictionaries_replaced: int
    audit_event_id: str = ""
    audit_position: int = 0


def erase_event(
    event: Event, classify: Classify, classes: frozenset[str], quotes: Quotes | None
) -> Event | None:
    """The event with personal values erased, or None when it has none left."""
    lead = scrub(event.lead, classify, classes, ERASED, quotes)
    details = scrub(event.details, classify, classes, ERASED, quotes)
    reason = scrub(event.reason, classify, classes, ERASED, quotes)
    if lead == event.lead and details == event.details and reason == event.reason:
        return None
    erased = event.copy()
    erased.lead, erased.details, erased.reason = lead, details, reason
    return erased


def needles(values: Iterable[str]) -> list[bytes]:
    """Personal values as they may appear in stored JSON text (raw and escaped)."""
    out = set()
    for value in values:
        if len(value) >= MIN_QUOTED:
            out.add(value.encode())
            out.add(orjson.dumps(value)[1:-1])
    return sorted(out)


def forget_in_memory(store: Maintenance, found: list[bytes], lead: tuple[str, str] | None = None) -> None:
    """Drop what the writer keeps that holds these values (a lead's last snapshot, the
    dictionary samples) and wait for a training under way, so that nothing trained from
    them lands in a dictionary file after the check that follows."""
    writer = store.writer()
    trainer = store.trainer

    def forget() -> None:
        if lead is not None:
            writer.forget_lead(*lead)
        if trainer is not None and found:
            trainer.forget(found)

    writer.call(forget).result()
    if trainer is not None:
        trainer.wait_idle()


def retire_holders(store: Maintenance, found: list[bytes]) -> None:
    """Mark every dictionary that learnt one of ``found`` retired, durably, before the
    events are rewritten: once they are, the values are no longer there to look for,
    and a crash must still leave the dictionary to be replaced."""
    dictionaries = store.dictionaries
    for dict_id in dictionaries.holding(found) if found else []:
        dictionaries.retire(dict_id)


def finish_retirements(store: Maintenance) -> int:
    """Recompress the records naming a retired dictionary, then delete it; the number deleted."""
    dictionaries = store.dictionaries
    pending = dictionaries.pending_retirement()
    if not pending:
        return 0
    writer = store.writer()
    writer.call(writer.roll_now).result()  # records compressed before the retirement are sealed now
    users = [s for s in store.segments()[:-1] if _names_any(store, s, set(pending))]
    rewrite_segments(store, users, lambda event: None, force=True)
    for dict_id in pending:
        dictionaries.delete(dict_id)
    return len(pending)


def _names_any(store: Maintenance, segment: Segment, dict_ids: set[int]) -> bool:
    for _, header, payload in segment.records():
        if header.kind != KIND_EVENT:
            continue
        prefix = EventPrefix(payload, header.position)
        if prefix.codec in DICTIONARY_CODECS and prefix.dict_id in dict_ids:
            return True
    return False


MAX_PASSES = 3
"""Events of the lead appended while it is erased are erased too, up to this many rounds."""


def erase_lead(
    store: Maintenance,
    account_id: str,
    lead_id: str,
    requested_by: str,
    reason: str,
    progress: Progress | None = None,
) -> ErasureReport | None:
    """Erase a lead's personal data from every event recorded so far; None when the
    account has no event of that lead."""
    replaced = finish_retirements(store)  # left by an interrupted erasure
    classify = store.fields.classifier(account_id)
    values: set[str] = set()
    checked: set[int] = set()
    erased = rewritten = 0
    quotes = None
    for _ in range(MAX_PASSES):
        everything = store.timeline(lead_id, account_id)  # with the lead's audit records
        fresh = [
            e for e in everything if e.position not in checked and not e.type.startswith(AUDIT_TYPE_PREFIX)
        ]
        if not fresh:
            break
        for event in fresh:
            personal_values(event.lead, classify, values)
            personal_values(event.details, classify, values)
        quotes = quotes_of(values)
        found = needles(values)
        forget_in_memory(store, found, (account_id, lead_id))
        retire_holders(store, found)
        seal_active(store, max(e.position for e in everything))
        changes, segments = _erase_in_segments(store, everything, classify, quotes, progress)
        erased += changes
        rewritten += segments
        checked.update(e.position for e in _not_audit(everything))
    if not checked:
        return None
    # The lead is no longer found by what it held: its search entries go, by the reverse
    # map, whatever field policy or key was in force when they were made.
    store.index.forget_lead(account_id, lead_id)
    replaced += finish_retirements(store)
    timeline = _not_audit(store.timeline(lead_id, account_id))
    record = Event(
        type=AUDIT_ERASED,
        lead_id=lead_id,
        flow_id=AUDIT_FLOW,
        entity_id=requested_by[:128] or "unknown",
        outcome=Outcome.SUCCESS,
        # The request's own words may quote what it erases ("as asked by jane@...").
        reason=scrub(reason[:1024], classify, frozenset(), ERASED, quotes),
        details={
            "events_checked": len(checked),
            "events_erased": erased,
            "through_position": max(checked),
            "segments_rewritten": rewritten,
            "dictionaries_replaced": replaced,
        },
        # The snapshot as it now stands, so that the lead's timeline shows no change here.
        lead=timeline[-1].lead if timeline else {},
        account_id=account_id,
    )
    result = store.append([record])[0]
    return ErasureReport(erased, rewritten, replaced, result.id, result.position)


def _not_audit(events: list[Event]) -> list[Event]:
    return [e for e in events if not e.type.startswith(AUDIT_TYPE_PREFIX)]


def _erase_in_segments(
    store: Maintenance,
    everything: list[Event],
    classify: Classify,
    quotes: Quotes | None,
    progress: Progress | None,
) -> tuple[int, int]:
    by_segment: dict[int, list[Event]] = {}
    for event in everything:
        segment = store.segment_for(event.position)
        if segment is not None:
            by_segment.setdefault(segment.base, []).append(event)
    erased = rewritten = 0
    for done, (base, events) in enumerate(sorted(by_segment.items())):
        if progress is not None:
            progress(done, len(by_segment))
        changed = {}
        for event in events:
            if not event.type.startswith(AUDIT_TYPE_PREFIX):
                new = erase_event(event, classify, PERSONAL, quotes)
                erased += new is not None  # content changed (a seal alone is not an erasure)
                seal = event.seal
                if seal is not None and seal.kind == SALTED:
                    # The chain keeps the commitment the salt made, and the salt goes with
                    # the values: every event of the lead, so that an older copy of one
                    # (salted) is told from the record as the erasure left it.
                    stored = store.stored_at(event.position)
                    commitment = stored.content_commitment() if stored is not None else None
                    if commitment is not None:
                        new = new if new is not None else event.copy()
                        new.seal = seal.committed(commitment)
                if new is not None:
                    changed[event.position] = new
        if not changed:
            continue
        segment = store.segment_for(base)
        assert segment is not None and segment.base == base
        replace_records(store, segment, sorted(events, key=lambda e: e.position), changed)
        rewritten += 1
    if progress is not None:
        progress(len(by_segment), len(by_segment))
    return erased, rewritten


def training_sample(fields: FieldPolicies, account_id: str, body: bytes) -> bytes:
    """A body as the dictionary trainer may see it: personal values, and quotes of them
    elsewhere in the body, blanked (a dictionary must never learn what an erasure removes).

    A wire body (format 1.2) is rebuilt from its scrubbed event without its changes: they
    quote values of the lead's previous snapshot, which the sample cannot scrub by class
    alone, and the values they hold sit in the same frame's ``lead_json`` anyway."""
    try:
        values_of = orjson.loads(body)
    except orjson.JSONDecodeError:
        # Not a format 1.1 body: a wire body (its binary header is never JSON).
        return _wire_training_sample(fields, account_id, body)
    classify = fields.classifier(account_id)
    part = values_of[BodyField.LEAD]
    delta = isinstance(part, dict) and set(part) == {"s", "d"}
    values: set[str] = set()
    personal_values(part["s"] if delta else part, classify, values)
    personal_values(values_of[BodyField.DETAILS], classify, values)
    quoted = quotes_of(values)
    if delta:
        part = {"s": scrub(part["s"], classify, PERSONAL, "", quoted), "d": part["d"]}
    else:
        part = scrub(part, classify, PERSONAL, "", quoted)
    values_of[BodyField.DETAILS] = scrub(values_of[BodyField.DETAILS], classify, PERSONAL, "", quoted)
    values_of[BodyField.LEAD] = part
    values_of[BodyField.REASON] = scrub(values_of[BodyField.REASON], classify, PERSONAL, "", quoted)
    return orjson.dumps(values_of)


def _wire_training_sample(fields: FieldPolicies, account_id: str, body: bytes) -> bytes:
    try:
        event = StoredEvent(body, 1, account_id, 0, 0).event()
    except BadRecord:
        return b""
    classify = fields.classifier(account_id)
    values: set[str] = set()
    personal_values(event.lead, classify, values)
    personal_values(event.details, classify, values)
    quoted = quotes_of(values)
    event.lead = scrub(event.lead, classify, PERSONAL, "", quoted)
    event.details = scrub(event.details, classify, PERSONAL, "", quoted)
    event.reason = scrub(event.reason, classify, PERSONAL, "", quoted)
    return wirebody.encode(
        event,
        orjson.dumps(event.details) if event.details else b"",
        orjson.dumps(event.lead) if event.lead else b"",
        b"",
        NO_CHANGES,
    )[0]
