"""Following a store that another process writes: what a read-only worker needs to know.

With ``leadtrail serve --workers N`` one process owns the writer; the others open
the same data directory as followers (``EventLog(..., follow=notice)``): LMDB
read-only (multi-process safe), segment files through their own descriptors, no
lock, no recovery and no file ever written. They cannot see the writer's memory,
so after every commit the writer sends a ``CommitNotice``: the visible position
and the state of the last segments as its writer thread left them. A follower
reads nothing past ``visible``, and never past a segment's committed ``size``
(bytes after it may be a group still being written).

``epoch`` counts the changes a follower cannot pick up by moving forward: a
segment rewritten or deleted (erasure, retention), the index swapped, a field
policy changed, a dictionary trained. A notice with a new epoch makes the
follower reload those parts before it reads again.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from .format import KIND_EVENT, KIND_SEAL, SEAL_RECORD_SIZE, SEGMENT_HEADER_SIZE, BadRecord, decode_seal
from .segment import Segment, scan_bytes

TAIL_SEGMENTS = 2
"""Segments a notice describes: the active one and the one sealed just before it."""


@dataclass(frozen=True, slots=True)
class SegmentState:
    base: int
    size: int
    event_count: int
    last_position: int
    sealed: bool


@dataclass(frozen=True, slots=True)
class CommitNotice:
    visible: int
    epoch: int
    tail: tuple[SegmentState, ...] = ()
    dictionary: int = 0
    """The writer's newest dictionary id: a follower that does not know it reloads them."""

    def to_bytes(self) -> bytes:
        return orjson.dumps(
            {
                "visible": self.visible,
                "epoch": self.epoch,
                "dictionary": self.dictionary,
                "tail": [[s.base, s.size, s.event_count, s.last_position, s.sealed] for s in self.tail],
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> CommitNotice:
        value = orjson.loads(data)
        tail = tuple(
            SegmentState(int(b), int(size), int(count), int(last), bool(sealed))
            for b, size, count, last, sealed in value["tail"]
        )
        return cls(int(value["visible"]), int(value["epoch"]), tail, int(value.get("dictionary", 0)))


def tail_states(segments: list[Segment]) -> tuple[SegmentState, ...]:
    """The last segments of a writer's list as a notice carries them (on the writer thread,
    right after a commit, they are consistent with the visible position)."""
    return tuple(
        SegmentState(s.base, s.size, s.event_count, s.last_position, s.sealed)
        for s in segments[-TAIL_SEGMENTS:]
    )


def apply_state(segment: Segment, state: SegmentState) -> None:
    segment.size = state.size
    segment.event_count = state.event_count
    segment.last_position = state.last_position
    segment.sealed = state.sealed


def state_on_disk(segment: Segment) -> SegmentState:
    """What a segment the notices no longer describe holds: its seal says so when it has
    one (the writer checked it when it wrote it); otherwise its records up to the last
    commit, read and never repaired (repairs are the writer's)."""
    size = segment.file_size()
    if size >= SEGMENT_HEADER_SIZE + SEAL_RECORD_SIZE:
        try:
            header, payload = segment.read_record(size - SEAL_RECORD_SIZE)
            if header.kind == KIND_SEAL:
                _crc, count, last = decode_seal(payload)
                return SegmentState(segment.base, size, count, last, True)
        except BadRecord:
            pass
    scan = scan_bytes(segment.read_all(), segment.base)
    events = [r for r in scan.records if r.kind == KIND_EVENT and r.offset + r.size <= scan.commit_end]
    last = events[-1].position if events else 0
    return SegmentState(segment.base, scan.commit_end, len(events), last, scan.sealed)
