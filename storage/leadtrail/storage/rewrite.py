"""Rewriting sealed segments in place: what retention and erasure share.

A segment is rewritten under a temporary name, fsynced and renamed over the old
file while readers wait at the swap, and the index is marked as under
maintenance from before the file changes until its entries match the new file:
a crash at any step leaves each segment as it was or as it will be, and an
index that may be behind is rebuilt from the log on the next open.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from crc32c import crc32c

from .codec import EventEncoder, encode_body
from .errors import StorageError
from .event import Event
from .format import (
    FLAG_COMMIT,
    KIND_EVENT,
    encode_record,
    encode_seal,
    encode_segment_header,
)
from .index import Located

if TYPE_CHECKING:
    from .maintenance import Maintenance
    from .segment import Segment


@contextmanager
def rewriting(store: Maintenance, segment: Segment) -> Iterator[None]:
    """Around the change of a segment's file and its index entries."""
    index = store.index
    index.set_meta("maintenance", segment.name.encode())
    index.sync()
    with store.rewriting_segment():
        yield
    index.delete_meta("maintenance")
    index.sync()


def seal_active(store: Maintenance, last_position: int) -> None:
    """Seal the active segment when it holds positions up to ``last_position``, so that
    it can be rewritten like any other."""
    writer = store.writer()
    segments = store.segments()
    if segments and segments[-1].base <= last_position:
        writer.call(writer.roll_now).result()


def rewrite_segments(
    store: Maintenance,
    segments: list[Segment],
    transform: Callable[[Event], Event | None],
    force: bool = False,
) -> tuple[int, int]:
    """Apply ``transform`` to every event of ``segments`` and rewrite those it changes
    (all of them with ``force``); returns (events changed, segments rewritten)."""
    index = store.index
    changed = rewritten = 0
    for segment in segments:
        items = list(store.segment_events(segment, include_lead=True))
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
        with rewriting(store, segment):
            new_items = rewrite_whole(store, segment, updated)
            index.replace_segment(segment.base, items, new_items)
        changed += touched
        rewritten += 1
    return changed, rewritten


def replace_records(
    store: Maintenance, segment: Segment, lead_events: list[Event], changed: dict[int, Event]
) -> None:
    """Rewrite a sealed segment with the records of one lead encoded anew (``changed``
    ones erased): every other record is copied as it is, undecoded, so an erasure costs
    a copy of the segment rather than a decode of its events. Deltas never cross leads,
    so the lead's records, all re-encoded together, are the only ones whose bases move."""
    encoder = EventEncoder(store.dictionaries, None)  # a fresh one: deltas only among these
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
    with rewriting(store, segment):
        swap_in(store, segment, body, count, last)
        store.index.move_segment(segment.base, offsets, raw_change)


def rewrite_whole(store: Maintenance, segment: Segment, survivors: list[Located]) -> list[Located]:
    """Write the survivors to a new sealed file and swap it in for the segment."""
    encoder = EventEncoder(store.dictionaries, None)
    body = bytearray(encode_segment_header(segment.base))
    located = []
    for item in survivors:
        event = item.event
        payload = encoder.encode(event, event.position, segment.base)
        located.append(Located(event, segment.base, len(body), item.raw_bytes))
        body += encode_record(KIND_EVENT | FLAG_COMMIT, event.position, payload)
    last = survivors[-1].event.position if survivors else 0
    swap_in(store, segment, body, len(survivors), last)
    return located


def swap_in(store: Maintenance, segment: Segment, body: bytearray, count: int, last: int) -> None:
    """Seal ``body`` (header and records), write it durably under a temporary name and
    rename it over the segment: readers see the old file or the new one, never a mix."""
    body += encode_seal(crc32c(bytes(body)), count, last)
    store.files.write_file_atomically(segment.path, bytes(body), tmp_suffix=".compact")
    segment.reopen()
    segment.event_count = count
    segment.last_position = last
    segment.sealed = True
