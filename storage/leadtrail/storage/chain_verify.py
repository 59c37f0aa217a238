"""Walking the hash chain (FORMAT.md, "Hash chain"): the first position edited, inserted,
reordered or removed.

The walk reads every stored event in position order, recomputes its digest from the
stored bytes, links it to the chain hash before it and compares the first 8 bytes with
the chain8 its block holds: an edited field (its CRC recomputed, as anyone can) breaks
the link at its own position. Positions must follow each other: a gap is events removed,
unless signed retirement records (retirement.py, ``retirements.json``) cover it, whose chain
hash at its end the walk continues from; a position that does not grow is records swapped
or duplicated.
Every signed record is checked with the store's key, and each checkpoint record's chain
hash against the hash the walk computed at its position, so a chain rewritten from an
edit onwards (every chain8 recomputed) is caught at the next checkpoint. An erasure's
``audit.erased`` record says that every event of the lead up to ``through_position`` holds
a committed block: a salted one there is an older copy of the record brought back. After
a problem the chain hash is unknown; the walk takes it up again at the next checkpoint
record that signs the position just before it, and reports what it finds after that too.
"""

from __future__ import annotations

import base64
import binascii
import bisect
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from . import signing
from .chain import COMMITTED, GENESIS, HASH_BYTES, SYSTEM_ACCOUNT, link
from .errors import CorruptionError, InvalidArgumentError, StorageError
from .event import AUDIT_TYPE_PREFIX, EventFilter, Progress
from .retirement import Retirement, Run
from .segment import Segment
from .wirebody import StoredEvent

CHECKPOINT_TYPE = AUDIT_TYPE_PREFIX + "checkpoint"
ERASED_TYPE = AUDIT_TYPE_PREFIX + "erased"
_PAGE = 10_000
RECENT_HASHES = 65_536
"""Chain hashes kept by position for the checkpoint records that follow: a checkpoint signs
the head as it stood just before its record, a few positions back under load."""


class ChainLog(Protocol):
    """What the walk reads of a store (``EventLog`` is one)."""

    def scan_stored(
        self,
        filter: EventFilter | None = None,
        *,
        after: str | None = None,
        limit: int = 100,
        descending: bool = False,
    ) -> tuple[list[StoredEvent], str | None]: ...

    @property
    def last_position(self) -> int: ...

    @property
    def segments(self) -> list[Segment]: ...

    def read_stored_from(self, position: int = 1, *, limit: int | None = None) -> Iterator[StoredEvent]: ...


class Checkpoint(Protocol):
    """A signed checkpoint kept outside the store (signing.py's ``SignedCheckpoint``)."""

    @property
    def position(self) -> int: ...

    @property
    def chain_hash(self) -> bytes: ...

    @property
    def recorded_at_ms(self) -> int: ...

    @property
    def signature(self) -> bytes: ...


@dataclass(frozen=True, slots=True)
class GivenCheckpoint:
    """A checkpoint read from a file (``leadtrail checkpoint`` prints it)."""

    position: int
    chain_hash: bytes
    recorded_at_ms: int
    signature: bytes


@dataclass(slots=True)
class ChainReport:
    """What the walk found; the fields of ``VerifyReport`` that ``VerifyChain`` answers."""

    events_read: int = 0
    chain_checked: int = 0
    """Events whose digest was recomputed and matched their chain8."""
    last_position: int = 0
    chain_hash: bytes = b""
    """The chain hash at ``last_position`` (empty when the walk lost it to a problem)."""
    first_bad_position: int = 0
    """0: none."""
    retired: list[str] = field(default_factory=list)
    content_erased: int = 0
    signatures_checked: int = 0
    problems: list[str] = field(default_factory=list)


def verify_chain(
    log: ChainLog,
    public_key: bytes | None,
    retirements: Callable[[], list[Retirement]],
    erasures: Callable[[], dict[tuple[str, str], int]],
    from_position: int = 0,
    from_chain_hash: bytes = b"",
    checkpoint: Checkpoint | None = None,
    progress: Progress | None = None,
) -> ChainReport:
    """Walk the chain from the log's first event (running hash ``GENESIS`` at the first
    chained one), or after ``from_position`` trusting ``from_chain_hash`` there; with
    ``checkpoint``, also check its signature and that the chain reaches it with its hash.
    ``public_key``: the store's (None when it has no key: signatures cannot be checked);
    ``retirements()``: the store's signed retirement records; ``erasures()``: (account,
    lead) -> the latest ``through_position`` of its ``audit.erased`` records."""
    if from_position and len(from_chain_hash) != HASH_BYTES:
        raise InvalidArgumentError(
            f"from_chain_hash: {len(from_chain_hash)} bytes, a chain hash has {HASH_BYTES}"
        )
    report = ChainReport(last_position=from_position)
    try:
        records = retirements()
    except StorageError as e:
        records = []
        report.problems.append(f"retirement records cannot be read: {e}")
    try:
        erased = erasures()
    except StorageError as e:
        erased = {}
        report.problems.append(f"erasure records cannot be read: {e}")
    start_hash = from_chain_hash if from_position else GENESIS
    walk = _Walk(report, public_key, records, erased, from_position, start_hash)
    if checkpoint is not None:
        walk.expect(checkpoint)
    for event in _events(log, from_position + 1, report, walk, progress):
        walk.event(event)
    walk.finish()
    return report


def _events(
    log: ChainLog, start: int, report: ChainReport, walk: _Walk, progress: Progress | None
) -> Iterator[StoredEvent]:
    """The stored events from ``start`` on, segment by segment: a segment that cannot be
    read is named as a problem and the walk goes on with the next one."""
    segments = log.segments
    for done, segment in enumerate(segments):
        if progress is not None:
            progress(done, len(segments))
        following = segments[done + 1].base if done + 1 < len(segments) else None
        if (segment.last_position and segment.last_position < start) or (
            following is not None and following <= start
        ):
            continue
        try:
            for stored in log.read_stored_from(max(start, segment.base)):
                if following is not None and stored.position >= following:
                    break
                yield stored
        except CorruptionError as e:
            for problem in e.problems:
                report.problems.append(f"{problem} (the chain cannot be checked there)")
            walk.lose(walk.previous + 1)
    if progress is not None:
        progress(len(segments), len(segments))


def _details(stored: StoredEvent) -> Mapping[str, Any]:
    details_json = stored.json_parts()[0]
    try:
        details = orjson.loads(details_json) if details_json else {}
    except orjson.JSONDecodeError:
        return {}
    return details if isinstance(details, dict) else {}


class _Retired:
    """The positions signed retirement records cover, merged, and the hash at each run's end."""

    def __init__(self, runs: list[Run]) -> None:
        self.hash_at: dict[int, bytes] = {}
        merged: list[list[int]] = []
        for run in sorted(runs, key=lambda r: r.first):
            self.hash_at.setdefault(run.last, run.chain_hash)
            if merged and run.first <= merged[-1][1] + 1:
                merged[-1][1] = max(merged[-1][1], run.last)
            else:
                merged.append([run.first, run.last])
        self._firsts = [m[0] for m in merged]
        self._lasts = [m[1] for m in merged]

    def covers(self, first: int, last: int) -> bool:
        at = bisect.bisect_right(self._firsts, first) - 1
        return at >= 0 and self._lasts[at] >= last


class _Walk:
    def __init__(
        self,
        report: ChainReport,
        public_key: bytes | None,
        retirements: list[Retirement],
        erased: dict[tuple[str, str], int],
        from_position: int,
        start_hash: bytes,
    ) -> None:
        self.report = report
        self.public_key = public_key
        self.previous = from_position
        """The last position read."""
        self.hash: bytes | None = start_hash
        """The chain hash at ``previous``; None once a problem made it unknown."""
        self.chained = from_position > 0
        """Whether a chained event was met (an unchained one after it is a problem)."""
        self.anchor = from_position
        """The last position whose chain hash was confirmed by a signed hash (or the start)."""
        self.recent: OrderedDict[int, bytes] = OrderedDict()
        if from_position:
            self.recent[from_position] = start_hash
        self.erased = erased
        """(account, lead) -> position through which an erasure left no salt."""
        self.expected: Checkpoint | None = None
        self.expected_met = False
        report.signatures_checked += len(retirements)
        trusted = []
        for record in retirements:
            if self._trusted(record):
                trusted.append(record)
            else:
                first = min(run.first for run in record.runs) if record.runs else 0
                report.problems.append(
                    f"retirement record {record.number} (positions from {first}): its signature does not "
                    "verify with the store's key; the gaps it states are not trusted"
                )
        self.retired = _Retired([run for r in trusted for run in r.runs])

    def _trusted(self, record: Retirement) -> bool:
        key = self.public_key if self.public_key is not None else record.public_key
        return record.signed and record.public_key == key

    # -- problems ---------------------------------------------------------------------

    def bad(self, position: int, problem: str) -> None:
        report = self.report
        report.problems.append(problem)
        if not report.first_bad_position or position < report.first_bad_position:
            report.first_bad_position = position

    def lose(self, position: int) -> None:
        """The chain hash is unknown from ``position`` on (a problem there)."""
        if not self.report.first_bad_position or position < self.report.first_bad_position:
            self.report.first_bad_position = position
        self.hash = None

    # -- the given checkpoint -------------------------------------------------------------

    def expect(self, checkpoint: Checkpoint) -> None:
        self.expected = checkpoint
        key = self.public_key
        if key is None:
            self.report.problems.append("checkpoint: the store has no signing key to check it with")
        else:
            self.report.signatures_checked += 1
            if not signing.verify_checkpoint(
                key,
                checkpoint.position,
                checkpoint.chain_hash,
                checkpoint.recorded_at_ms,
                checkpoint.signature,
            ):
                self.bad(
                    checkpoint.position,
                    f"checkpoint of position {checkpoint.position}: its signature does not verify "
                    "with the store's key",
                )

    # -- one event ---------------------------------------------------------------------

    def event(self, stored: StoredEvent) -> None:
        report = self.report
        report.events_read += 1
        position = stored.position
        if position <= self.previous:
            self.bad(
                position,
                f"position {position}: read after position {self.previous} (records reordered or duplicated)",
            )
            self.hash = None
            return
        before = self.previous
        if position > before + 1:
            self._gap(before + 1, position - 1, stored.seal is not None)
        self.previous = position
        report.last_position = position
        seal = stored.seal
        if seal is None:
            if self.chained:
                self.bad(position, f"position {position}: not chained, after chained events (inserted)")
                self.hash = None
            return
        self.chained = True
        audit = stored.type.startswith(AUDIT_TYPE_PREFIX)
        if seal.kind == COMMITTED:
            report.content_erased += 1
        elif not audit and self.erased:
            through = self.erased.get((stored.account_id, stored.lead_id), 0)
            if position <= through:
                self.bad(
                    position,
                    f"position {position}: the lead {stored.lead_id!r} of account {stored.account_id!r} was "
                    f"erased through position {through}, yet this record holds its content's salt: an older "
                    "copy of a record brought back",
                )
        if audit and stored.account_id == SYSTEM_ACCOUNT and stored.type == CHECKPOINT_TYPE:
            self._checkpoint_record(position, before, _details(stored))
        digest = stored.digest()
        assert digest is not None  # chained
        if self.hash is None:
            return
        chain_hash = link(self.hash, digest)
        if chain_hash[: len(seal.chain8)] != seal.chain8:
            self.bad(position, f"position {position}: digest does not match its chain8: edited")
            self.hash = None
            return
        self.hash = chain_hash
        report.chain_checked += 1
        recent = self.recent
        recent[position] = chain_hash
        if len(recent) > RECENT_HASHES:
            recent.popitem(last=False)
        expected = self.expected
        if expected is not None and expected.position == position:
            self._meet(expected, chain_hash)

    def _gap(self, first: int, last: int, chained: bool) -> None:
        report = self.report
        if not self.retired.covers(first, last) or last not in self.retired.hash_at:
            if not self.chained and not chained:
                # Before the chain began (a store older than format 1.4): nothing proves it.
                report.retired.append(f"positions {first}-{last}: removed before the chain began")
                return
            self.bad(first, f"positions {first}-{last} missing (removed)")
            self.hash = None
            return
        chain_hash = self.retired.hash_at[last]
        report.retired.append(f"positions {first}-{last}: retired, chain hash {chain_hash.hex()} at {last}")
        # Signed by the store: the chain goes on from it (taken up again after a problem too).
        self.hash = chain_hash
        self.anchor = last
        self.recent[last] = chain_hash

    def _checkpoint_record(self, position: int, before: int, details: Mapping[str, Any]) -> None:
        try:
            signed_position = int(details["position"])
            chain_hash = bytes.fromhex(details["chain_hash"])
            recorded_at_ms = int(details["recorded_at_ms"])
            signature = base64.b64decode(details["signature"], validate=True)
            public_key = base64.b64decode(details["public_key"], validate=True)
        except (KeyError, TypeError, ValueError, binascii.Error):
            self.bad(position, f"position {position}: a checkpoint record without its signed fields")
            return
        key = self.public_key if self.public_key is not None else public_key
        self.report.signatures_checked += 1
        if public_key != key or not signing.verify_checkpoint(
            key, signed_position, chain_hash, recorded_at_ms, signature
        ):
            self.bad(
                position, f"position {position}: checkpoint signature does not verify with the store's key"
            )
            return
        if self.hash is None:
            if signed_position == before == position - 1:
                self.hash = chain_hash  # taken up again from a signed hash
                self.anchor = signed_position
            return
        known = self.recent.get(signed_position)
        if known is None:
            return  # retired, or too far back to compare
        if known != chain_hash:
            first = self.anchor + 1
            self.bad(
                first,
                f"positions {first}-{signed_position}: the chain hash at {signed_position} is not the one "
                f"the checkpoint at position {position} signed: events there were edited, inserted or "
                "removed (and chain8 recomputed)",
            )
            self.hash = None
            return
        self.anchor = signed_position

    def _meet(self, expected: Checkpoint, chain_hash: bytes) -> None:
        self.expected_met = True
        if chain_hash != expected.chain_hash:
            first = self.anchor + 1
            self.bad(
                first,
                f"positions {first}-{expected.position}: the chain hash at {expected.position} is not "
                "the checkpoint's: events there were edited, inserted or removed",
            )
            self.hash = None
        else:
            self.anchor = expected.position

    def finish(self) -> None:
        report = self.report
        report.chain_hash = self.hash if self.hash is not None and self.chained else b""
        expected = self.expected
        if expected is None or self.expected_met:
            return
        end = self.previous
        if expected.position > end:
            self.bad(
                end + 1,
                f"events were removed after position {end}: the checkpoint names position "
                f"{expected.position}",
            )
        else:
            self.report.problems.append(
                f"checkpoint of position {expected.position}: the walk could not compare it (retired, "
                "not chained, or after a problem)"
            )


def erasures(log: ChainLog, accounts: Iterable[str]) -> dict[tuple[str, str], int]:
    """(account, lead) -> the latest ``through_position`` of the ``audit.erased`` records of
    ``accounts``, found through the index (the walk meets a lead's events before the record
    that erased them)."""
    found: dict[tuple[str, str], int] = {}
    for account in accounts:
        wanted = EventFilter(account_id=account, types=(ERASED_TYPE,))
        after: str | None = None
        while True:
            page, after = log.scan_stored(wanted, after=after, limit=_PAGE)
            for stored in page:
                through = _details(stored).get("through_position")
                if isinstance(through, int):
                    key = (stored.account_id, stored.lead_id)
                    found[key] = max(found.get(key, 0), through)
            if after is None or not page:
                break
    return found


__all__ = ["ChainLog", "ChainReport", "Checkpoint", "GivenCheckpoint", "erasures", "verify_chain"]
