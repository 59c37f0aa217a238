"""Erasing personal data from stored events: one lead on request, or by age.

An erased event keeps its audit skeleton (id, type, lead, flow, entity, times,
outcome, price, position) and loses the values of its ``pii`` and ``secret``
fields, in the snapshot and in the details, which read ``[erased]`` from then
on; any other text of the lead's events that quotes one of those values (a
buyer's response echoing the email, a reason naming it) loses the quote too.

The bytes go the way retention's do: every segment holding such an event is
rewritten under a temporary name, fsynced and swapped in, with the index
marked as under maintenance meanwhile, so a crash leaves each segment either
as it was or erased, and running the erasure again finishes the job. Personal
values are kept out of trained dictionaries (samples are scrubbed before
training); a dictionary that holds an erased value all the same (trained by an
older version) is retired and every record that names it is recompressed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import orjson

from .codec import EventEncoder, EventPrefix, encode_body
from .errors import NotWritableError, StorageError
from .event import AUDIT_TYPE_PREFIX, Event, Outcome
from .fields import PII, SECRET, Classify, personal_values, scrub
from .format import CODEC_ZSTD_DICT, FLAG_COMMIT, KIND_EVENT, encode_record, encode_segment_header
from .index import Located

if TYPE_CHECKING:
    from .log import EventLog
    from .segment import Segment

ERASED = "[erased]"
"""What an erased value reads as."""
PERSONAL = frozenset({PII, SECRET})
MIN_QUOTED = 5
"""Shorter personal values ("Al", "CA") are erased from their own fields only, not
hunted through free text, where they would cut ordinary words."""
AUDIT_ERASED = AUDIT_TYPE_PREFIX + "erased"
AUDIT_FLOW = "audit"


@dataclass(frozen=True, slots=True)
class ErasureReport:
    events_erased: int
    """Events of the lead whose stored content changed."""
    segments_rewritten: int
    dictionaries_replaced: int
    audit_event_id: str = ""
    audit_position: int = 0


def erase_event(
    event: Event, classify: Classify, classes: frozenset[str], quoted: frozenset[str]
) -> Event | None:
    """The event with personal values erased, or None when it has none left."""
    lead = scrub(event.lead, classify, classes, ERASED, quoted)
    details = scrub(event.details, classify, classes, ERASED, quoted)
    reason = scrub(event.reason, classify, classes, ERASED, quoted)
    if lead == event.lead and details == event.details and reason == event.reason:
        return None
    erased = event.copy()
    erased.lead, erased.details, erased.reason = lead, details, reason
    return erased


def rewrite_segments(
    log: EventLog, segments: list[Segment], transform: Callable[[Event], Event | None], force: bool = False
) -> tuple[int, int]:
    """Apply ``transform`` to every event of ``segments`` and rewrite those it changes
    (all of them with ``force``); returns (events changed, segments rewritten)."""
    from .retention import _rewrite  # one writer of sealed segment files

    index = log.index
    changed = rewritten = 0
    for segment in segments:
        items = list(log._segment_events(segment, include_lead=True))
        updated = []
        touched = 0
        for item in items:
            new = transform(item.event)
            if new is not None:
                touched += 1
            updated.append(
                item if new is None else Located(new, item.segment_base, item.offset, item.raw_bytes)
            )
        if not touched and not force:
            continue
        index.set_meta("maintenance", segment.name.encode())
        index.sync()
        with log.swap_lock:
            new_items = _rewrite(log, segment, updated)
            index.remove_segment(segment.base, items)
            index.add(new_items, 0)
            log.forget_snapshots()
        index.delete_meta("maintenance")
        index.sync()
        changed += touched
        rewritten += 1
    return changed, rewritten


def seal_active(log: EventLog, last_position: int) -> None:
    """Seal the active segment when it holds positions up to ``last_position``, so that
    it can be rewritten like any other."""
    writer = log.writer
    if writer is None:
        raise NotWritableError("the store is open read-only: erasure rewrites segments")
    if log.segments and log.segments[-1].base <= last_position:
        writer.call(writer.roll_now).result()


def needles(values: frozenset[str]) -> list[bytes]:
    """Erased values as they may appear in stored JSON text (raw and escaped)."""
    out = set()
    for value in values:
        if len(value) >= MIN_QUOTED:
            out.add(value.encode())
            out.add(orjson.dumps(value)[1:-1])
    return sorted(out)


def replace_dictionaries(log: EventLog, found: list[bytes]) -> int:
    """Retire every dictionary holding an erased value and recompress the records naming it."""
    dictionaries = log.dictionaries
    tainted = dictionaries.holding(found) if found else []
    if not tainted:
        return 0
    for dict_id in tainted:
        dictionaries.retire(dict_id)
    writer = log.writer
    assert writer is not None
    writer.call(writer.roll_now).result()  # records compressed before the retirement are sealed now
    users = [s for s in log.segments[:-1] if _names_any(log, s, set(tainted))]
    rewrite_segments(log, users, lambda event: None, force=True)
    for dict_id in tainted:
        dictionaries.delete(dict_id)
    return len(tainted)


def _names_any(log: EventLog, segment: Segment, dict_ids: set[int]) -> bool:

    for _, header, payload in segment.records():
        if header.kind != KIND_EVENT:
            continue
        prefix = EventPrefix(payload, header.position)
        if prefix.codec == CODEC_ZSTD_DICT and prefix.dict_id in dict_ids:
            return True
    return False


def erase_lead(
    log: EventLog, account_id: str, lead_id: str, requested_by: str, reason: str
) -> ErasureReport | None:
    """Erase a lead's personal data from every event recorded so far; None when the
    account has no event of that lead."""
    everything = log.timeline(lead_id, account_id)  # with the lead's audit records
    timeline = [e for e in everything if not e.type.startswith(AUDIT_TYPE_PREFIX)]
    if not timeline:
        return None
    classify = log.fields.classifier(account_id)
    values: set[str] = set()
    for event in timeline:
        personal_values(event.lead, classify, values)
        personal_values(event.details, classify, values)
    quoted = frozenset(v for v in values if len(v) >= MIN_QUOTED)
    seal_active(log, max(e.position for e in everything))
    by_segment: dict[int, list[Event]] = {}
    for event in everything:
        segment = log.segment_for(event.position)
        if segment is not None:
            by_segment.setdefault(segment.base, []).append(event)
    erased = rewritten = 0
    for base, events in sorted(by_segment.items()):
        changed = {}
        for event in events:
            if not event.type.startswith(AUDIT_TYPE_PREFIX):
                new = erase_event(event, classify, PERSONAL, quoted)
                if new is not None:
                    changed[event.position] = new
        if not changed:
            continue
        segment = log.segment_for(base)
        assert segment is not None and segment.base == base
        replace_records(log, segment, sorted(events, key=lambda e: e.position), changed)
        erased += len(changed)
        rewritten += 1
    found = needles(quoted)
    writer = log.writer
    assert writer is not None
    trainer = log.trainer
    # Memory the writer keeps of the lead (the last snapshot, to delta against) and
    # dictionary samples holding its values go too: neither may reach a file later.
    writer.call(lambda: writer.forget_lead(account_id, lead_id)).result()
    if trainer is not None and found:
        writer.call(lambda: trainer.forget(found)).result()
    replaced = replace_dictionaries(log, found)
    last = timeline[-1]
    # The snapshot as it now stands, so that the lead's timeline shows no change at this step.
    now_stands = erase_event(last, classify, PERSONAL, quoted) or last
    record = Event(
        type=AUDIT_ERASED,
        lead_id=lead_id,
        flow_id=AUDIT_FLOW,
        entity_id=requested_by[:128] or "unknown",
        outcome=Outcome.SUCCESS,
        reason=reason[:1024],
        details={
            "events_checked": len(timeline),
            "events_erased": erased,
            "through_position": max(e.position for e in timeline),
            "segments_rewritten": rewritten,
            "dictionaries_replaced": replaced,
        },
        lead=now_stands.lead,
        account_id=account_id,
    )
    result = log.append([record])[0]
    return ErasureReport(erased, rewritten, replaced, result.id, result.position)


def replace_records(
    log: EventLog, segment: Segment, lead_events: list[Event], changed: dict[int, Event]
) -> None:
    """Rewrite a sealed segment with the records of one lead encoded anew (``changed``
    ones erased): every other record is copied as it is, undecoded, so an erasure costs
    a copy of the segment rather than a decode of its events. Deltas never cross leads,
    so the lead's records, all re-encoded together, are the only ones whose bases move."""
    from .retention import swap_in

    encoder = EventEncoder(log.dictionaries, None)  # a fresh one: deltas only among these
    payloads: dict[int, bytes] = {}
    raw_change = 0
    for event in lead_events:
        new = changed.get(event.position, event)
        payloads[event.position] = encoder.encode(new, event.position, segment.base)
        raw_change += encoder.last_raw_bytes - len(encode_body(event, event.lead))
    body = bytearray(encode_segment_header(segment.base))
    offsets = []
    count = last = 0
    data = segment.read_all()
    for offset, header, _ in segment.records():  # each one's CRC checked on the way
        if header.kind != KIND_EVENT:
            continue  # the seal: made anew for the new bytes
        position = header.position
        offsets.append((position, len(body)))
        new_payload = payloads.get(position)
        if new_payload is None:
            body += data[offset : offset + header.size]
        else:
            flags = KIND_EVENT | (FLAG_COMMIT if header.commit else 0)
            body += encode_record(flags, position, new_payload)
        count, last = count + 1, position
    missing = payloads.keys() - {p for p, _ in offsets}
    if missing:
        raise StorageError(f"segment {segment.name}: positions {sorted(missing)} of the lead are not in it")
    index = log.index
    index.set_meta("maintenance", segment.name.encode())
    index.sync()
    with log.swap_lock:
        swap_in(log, segment, body, count, last)
        index.move_segment(segment.base, offsets, raw_change)
        log.forget_snapshots()
    index.delete_meta("maintenance")
    index.sync()
