"""Retention per account: whole expired segments deleted, mixed ones rewritten.

Age is measured on ``recorded_at`` (when the store committed the event), which
never goes backwards in position order, so expiry sweeps segments oldest
first. A crash at any step leaves each segment either as it was or as it will
be: the new file is fsynced under a temporary name before it replaces the old
one, and an index marked as under maintenance is rebuilt from the log on the
next open.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from typing import TYPE_CHECKING

from . import retirement
from .chain import GENESIS, SALTED, Seal, link
from .datadir import read_json_file, write_json_file
from .erasure import erase_event, finish_retirements, forget_in_memory, needles, retire_holders
from .errors import InvalidArgumentError, MetadataFileError, StorageError
from .event import AUDIT_TYPE_PREFIX, Event, Progress, RetentionPolicy, RetentionReport
from .fields import PII, SECRET, personal_values, quotes_of
from .fs import Files
from .index import Located
from .retirement import Run
from .rewrite import rewrite_segments, rewrite_whole, rewriting, seal_active

if TYPE_CHECKING:
    from .maintenance import Maintenance
    from .segment import Segment

DAY_MS = 86_400_000
POLICY_FILE = "retention.json"


MAX_DAYS = 36_500
MAX_SECONDS = MAX_DAYS * 86_400
"""``max_age_seconds`` reaches as far as ``max_age_days`` (100 years), and fits a uint32."""


def check_policy(policy: RetentionPolicy) -> None:
    """The one check of a policy's age limits."""
    for name in ("max_age_days", "pii_max_age_days", "secret_max_age_days"):
        days = getattr(policy, name)
        if not isinstance(days, int) or isinstance(days, bool) or not 0 <= days <= MAX_DAYS:
            raise InvalidArgumentError(f"{name} {days!r}: must be in 0..{MAX_DAYS} (0 keeps forever)")
    seconds = policy.max_age_seconds
    if not isinstance(seconds, int) or isinstance(seconds, bool) or not 0 <= seconds <= MAX_SECONDS:
        raise InvalidArgumentError(
            f"max_age_seconds {seconds!r}: must be in 0..{MAX_SECONDS} (0 leaves the age to max_age_days)"
        )
    if seconds and policy.max_age_days:
        raise InvalidArgumentError(
            f"max_age_days {policy.max_age_days} and max_age_seconds {seconds}: set one of the two, "
            "the other 0"
        )


def max_age_ms(policy: RetentionPolicy) -> int:
    """How old an event of the account may get before it is removed; 0 keeps it forever."""
    return policy.max_age_seconds * 1000 if policy.max_age_seconds else policy.max_age_days * DAY_MS


class RetentionPolicies:
    """The retention policy of every account, kept in ``retention.json`` of the data directory."""

    def __init__(self, path: str, files: Files) -> None:
        self._path = os.path.join(path, POLICY_FILE)
        self._files = files
        self._policies = self._load()

    def _load(self) -> dict[str, RetentionPolicy]:
        items = read_json_file(self._path)
        try:
            policies = {
                item["account_id"]: RetentionPolicy(
                    item["account_id"],
                    int(item.get("max_age_days", 0)),
                    bool(item.get("legal_hold", False)),
                    int(item.get("pii_max_age_days", 0)),
                    int(item.get("secret_max_age_days", 0)),
                    # Absent from files written before ages in seconds existed.
                    int(item.get("max_age_seconds", 0)),
                )
                for item in items or ()
            }
            for policy in policies.values():
                check_policy(policy)
        except (KeyError, TypeError, ValueError, AttributeError, InvalidArgumentError) as e:
            raise MetadataFileError(
                f"{POLICY_FILE} does not hold retention policies: {e!r} ({self._path})"
            ) from e
        return policies

    def all(self) -> list[RetentionPolicy]:
        return sorted(self._policies.values(), key=lambda p: p.account_id)

    def of(self, account_id: str | None) -> dict[str, RetentionPolicy]:
        """account -> policy: every account's, or only ``account_id``'s."""
        if account_id is None:
            return dict(self._policies)
        return {a: p for a, p in self._policies.items() if a == account_id}

    def held(self, account_id: str) -> bool:
        """Whether the account is under a legal hold (nothing of it is removed or erased)."""
        policy = self._policies.get(account_id)
        return policy is not None and policy.legal_hold

    def set(self, policy: RetentionPolicy) -> None:
        check_policy(policy)
        updated = dict(self._policies)
        updated[policy.account_id] = policy
        items = [asdict(p) for p in sorted(updated.values(), key=lambda p: p.account_id)]
        write_json_file(self._files, self._path, items, indent=1)
        self._policies = updated


def _cutoffs(policies: dict[str, RetentionPolicy], now_ms: int) -> dict[str, int]:
    return {
        account: now_ms - max_age_ms(p)
        for account, p in policies.items()
        if max_age_ms(p) > 0 and not p.legal_hold
    }


def apply(
    store: Maintenance, policies: dict[str, RetentionPolicy], now_ms: int, progress: Progress | None = None
) -> RetentionReport:
    """Expire, then erase by age; ``progress`` sees the two sweeps as halves of one."""
    removed = expire(store, policies, now_ms, _half(progress, 0))
    scrubbed, rewritten = scrub_by_age(store, policies, now_ms, _half(progress, 1))
    if progress is not None:
        progress(1, 1)
    return RetentionReport(
        removed.events_removed,
        removed.segments_deleted,
        removed.segments_rewritten + rewritten,
        removed.bytes_freed,
        scrubbed,
    )


def _half(progress: Progress | None, which: int) -> Progress | None:
    if progress is None:
        return None

    def report(done: int, total: int) -> None:
        progress(which * total + done, 2 * total)

    return report


def scrub_by_age(
    store: Maintenance, policies: dict[str, RetentionPolicy], now_ms: int, progress: Progress | None = None
) -> tuple[int, int]:
    """Erase the values of field classes past their age (``pii_max_age_days``,
    ``secret_max_age_days``); returns (events scrubbed, segments rewritten)."""
    tiers: dict[str, dict[str, int]] = {}
    for account, p in policies.items():
        if p.legal_hold:
            continue
        cut = {
            c: now_ms - days * DAY_MS
            for c, days in ((PII, p.pii_max_age_days), (SECRET, p.secret_max_age_days))
            if days
        }
        if cut:
            tiers[account] = cut
    if not tiers:
        return 0, 0
    index = store.index
    policy_marks = {account: _policy_mark(store, account) for account in tiers}

    def pending(segment: Segment) -> dict[str, dict[str, int]]:
        """What is still to do in a segment: account -> class -> cutoff."""
        with index.env.begin() as txn:
            accounts = index.segment_accounts(txn, segment.base)
        done = json.loads(index.meta(f"tiered:{segment.base}") or b"{}")
        todo: dict[str, dict[str, int]] = {}
        for account, (low, high) in accounts.items():
            if account not in tiers:
                continue
            marks = done.get(account, {})
            if marks.get("policy") != policy_marks[account]:
                marks = {}  # none yet, or the field policy changed since: other fields may be due
            for cls, cutoff in tiers[account].items():
                if low < cutoff and marks.get(cls, 0) < min(cutoff, high + 1):
                    todo.setdefault(account, {})[cls] = cutoff
        return todo

    segments = store.segments()
    if segments and pending(segments[-1]):
        seal_active(store, store.last_position)
    scrubbed = rewritten = 0
    aged: set[str] = set()
    touched: set[tuple[str, str]] = set()
    sweep = store.segments()[:-1]
    for done, segment in enumerate(sweep):
        if progress is not None:
            progress(done, len(sweep))
        todo = pending(segment)
        if not todo:
            continue

        def transform(event: Event, todo: dict[str, dict[str, int]] = todo) -> Event | None:
            cut = todo.get(event.account_id)
            if not cut or event.type.startswith(AUDIT_TYPE_PREFIX):
                return None
            classes = frozenset(c for c, cutoff in cut.items() if event.recorded_at_ms < cutoff)
            if not classes:
                return None
            classify = store.fields.classifier(event.account_id)
            values: set[str] = set()  # quotes of the values due, not of those kept a while yet
            personal_values(event.lead, classify, values, classes)
            personal_values(event.details, classify, values, classes)
            erased = erase_event(event, classify, classes, quotes_of(values))
            if erased is not None:
                aged.update(values)
                touched.add((event.account_id, event.lead_id))
                erased.seal = _committed_seal(store, event)
            return erased

        changed, count = rewrite_segments(store, [segment], transform)
        scrubbed += changed
        rewritten += count
        done = json.loads(index.meta(f"tiered:{segment.base}") or b"{}")
        for account, cut in todo.items():
            marks = done.get(account, {})
            if marks.get("policy") != policy_marks[account]:
                marks = {"policy": policy_marks[account]}
            marks.update(cut)
            done[account] = marks
        index.set_meta(f"tiered:{segment.base}", json.dumps(done).encode())
    refresh_search(store, touched)
    if aged:
        # Quotes of the aged values may have been learnt by a dictionary (fields classed
        # pii or secret are blanked in training samples; text quoting them is not).
        found = needles(aged)
        forget_in_memory(store, found)
        retire_holders(store, found)
        finish_retirements(store)
    return scrubbed, rewritten


def _committed_seal(store: Maintenance, event: Event) -> Seal | None:
    """The chain block of ``event`` once its content changes: the commitment to the content
    as written (computed from the stored record and its salt) in place of the salt, so that
    its digest, and the chain, stay as they were (FORMAT.md, "Hash chain")."""
    seal = event.seal
    if seal is None or seal.kind != SALTED:
        return seal  # not chained, or changed before: the commitment is there already
    stored = store.stored_at(event.position)
    commitment = stored.content_commitment() if stored is not None else None
    if commitment is None:
        raise StorageError(f"position {event.position}: its stored record holds no chain block to commit")
    return seal.committed(commitment)


def refresh_search(store: Maintenance, leads: set[tuple[str, str]]) -> None:
    """Leads whose values were erased by age are no longer found by them: each keeps the
    search entries of what its events still hold (its newer events may hold them yet)."""
    index = store.index
    prints = index.prints
    if prints is None:
        return
    for account_id, lead_id in sorted(leads):
        held: set[bytes] = set()
        for event in store.timeline(lead_id, account_id):
            held |= prints.of_event(event.account_id, event.type, event.lead)
        index.refresh_lead(account_id, lead_id, held)


def _policy_mark(store: Maintenance, account: str) -> str:
    """A short digest of an account's field policy, kept with what tiering has done."""
    policy = store.fields.get(account)
    text = json.dumps([policy.secret, policy.pii, policy.plain])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def expire(
    store: Maintenance, policies: dict[str, RetentionPolicy], now_ms: int, progress: Progress | None = None
) -> RetentionReport:
    """Remove the events older than their account's ``max_age_days`` (or ``max_age_seconds``)."""
    cutoffs = _cutoffs(policies, now_ms)
    removed = deleted = rewritten = freed = 0
    if not cutoffs:
        return RetentionReport(0, 0, 0, 0)
    index = store.index

    def expiry(segment: Segment) -> tuple[bool, bool]:
        with index.env.begin() as txn:
            accounts = index.segment_accounts(txn, segment.base)
        if not accounts:
            return False, False
        every = all(a in cutoffs and high < cutoffs[a] for a, (_, high) in accounts.items())
        some = any(a in cutoffs and low < cutoffs[a] for a, (low, _) in accounts.items())
        return every, some

    writer = store.writer_if_writable()
    segments = store.segments()
    if writer is not None and segments and expiry(segments[-1])[1]:
        writer.call(writer.roll_now).result()  # seal the active segment so it can be swept
    segments = store.segments()
    floor = writer.last_recorded_at if writer is not None else store.recorded_at_floor()
    if floor > store.recorded_at_floor():
        store.save_recorded_at_floor(floor)
    for done, segment in enumerate(segments[:-1]):
        if progress is not None:
            progress(done, len(segments) - 1)
        _, some = expiry(segment)
        if not some:
            continue
        items = list(store.segment_events(segment, include_lead=True))
        gone = [
            i
            for i in items
            if i.event.account_id in cutoffs
            and i.event.recorded_at_ms < cutoffs[i.event.account_id]
            and not i.event.type.startswith(AUDIT_TYPE_PREFIX)
        ]
        if not gone:
            continue
        size = segment.size
        next_base = segments[segments.index(segment) + 1].base
        gone_positions = {i.event.position for i in gone}
        survivors = [i for i in items if i.event.position not in gone_positions]
        survivors_last = survivors[-1].event.position if survivors else segment.base - 1
        whole = len(gone) == len(items)  # `every` may still leave audit records to keep
        # Signed first, so that a verifier continues the chain across the gap.
        _sign_retirement(store, segment, items, gone_positions)
        with rewriting(store, segment):
            # The positions leaving the log are recorded first, so a crash at any
            # later step never looks like a segment file lost outside retention.
            store.retire([(segment.base if whole else survivors_last + 1, next_base - 1)])
            if whole:
                index.remove_segment(segment.base, items)
                index.delete_meta(f"tiered:{segment.base}")
                store.delete_segment(segment)
                deleted += 1
                freed += size
            else:
                new_items = rewrite_whole(store, segment, survivors)
                index.replace_segment(segment.base, items, new_items)
                rewritten += 1
                freed += size - segment.size
        removed += len(gone)
    return RetentionReport(removed, deleted, rewritten, freed)


def _sign_retirement(store: Maintenance, segment: Segment, items: list[Located], gone: set[int]) -> None:
    """Add the signed retirement record (retirement.py) of the runs of ``gone`` about to
    leave ``segment``: each maximal run between survivors, with the chain hash at its last
    position, computed from the stored records before they go."""
    spans: list[list[int]] = []
    run: list[int] | None = None
    for item in items:
        position = item.event.position
        if position in gone:
            if run is None:
                run = [position, position]
                spans.append(run)
            else:
                run[1] = position
        else:
            run = None
    if not spans:
        return
    hashes = _chain_hashes(
        store, items[0].event.position, items[-1].event.position, {last for _, last in spans}
    )
    runs = [Run(first, last, hashes[last]) for first, last in spans]
    retirement.add(store.data_path, store.files, runs, store.signer)


def _chain_hashes(store: Maintenance, first: int, last: int, wanted: set[int]) -> dict[int, bytes]:
    """The chain hash at each of ``wanted`` in ``first``..``last`` (one segment's events)."""
    found: dict[int, bytes] = {}
    chain_hash: bytes | None = None
    previous = 0
    for stored in store.stored_from(first):
        position = stored.position
        if position > last:
            break
        if chain_hash is None or (position != previous + 1 and stored.seal is not None):
            # The index keeps the hash at the first, and after a gap an earlier retention left
            # in the segment (the hash there comes from its signed record, not from a link
            # across the gap); a store older than the chain starts at GENESIS.
            chain_hash = store.chain_point(position).chain_hash if stored.seal is not None else GENESIS
        else:
            digest = stored.digest()
            if digest is not None:
                chain_hash = link(chain_hash, digest)
        previous = position
        if position in wanted:
            found[position] = chain_hash
    missing = wanted - found.keys()
    if missing:
        raise StorageError(f"positions {sorted(missing)[:5]} to retire are not in the log")
    return found
