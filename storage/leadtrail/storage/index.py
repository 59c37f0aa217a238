"""LMDB secondary indexes: derived state, rebuilt from the log whenever in doubt.

Like Kafka's offset index, nothing here is authoritative: in the event of a
crash, a mismatch or a deleted directory it is rebuilt from the segments.
Keys are big-endian composites prefixed by a 4-byte account number, so
tenants never mix and range scans follow (timestamp, position) order.

Databases (``dupfixed`` ones keep 12-byte (timestamp, position) values packed
side by side under one key, about 12 bytes an event):
- ``ids``       account + 16-byte ULID -> position (6 bytes)
- ``positions`` segment base -> dups (position, offset): where a record lives
- ``lead``      account + 8-byte hash of lead_id -> dups (timestamp, position): a page of
                a long journey is read from any (timestamp, position) on, without
                decoding the events before it
- ``type``, ``flow``, ``entity``  account + name number -> dups (timestamp, position)
- ``time``      account -> dups (timestamp, position)
- ``segacct``   segment base + account -> (min, max recorded_at): retention planning
- ``names``/``numbers``  interned accounts, types, flows, entities (both ways)
- ``meta``      high-water position, event count, store id, index version
- ``fingerprints`` 16-byte keyed fingerprint of a personal value (fingerprints.py) ->
                dups lead key (account + 8-byte hash of lead_id, the ``lead`` key): lead search
- ``leadprints`` lead key -> dups fingerprint: the reverse map, so that an erasure or a
                lead leaving the log removes exactly the entries that were made for it,
                whatever the field policy or key was when they were made, without
                decoding an event
"""

from __future__ import annotations

import hashlib
import itertools
import os
import struct
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import lmdb

from . import ingest
from .chain import ChainPoint
from .errors import StorageError
from .event import Event
from .fingerprints import LeadPrints, Value
from .ulid import id_bytes

INDEX_VERSION = b"8"
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
# (timestamp, position) as two big-endian 48-bit numbers: 12 bytes that sort
# like the pair. 48 bits hold every timestamp validation admits (up to year
# 9999 in ms) and 281 trillion positions.
_TSPOS = struct.Struct(">HIHI")
_U48_MAX = (1 << 48) - 1
_U32_MASK = 0xFFFFFFFF
_POSOFF = struct.Struct(">II")  # position - segment base, byte offset in the segment
_MINMAX = struct.Struct(">QQ")

KIND_ACCOUNT = b"a"
KIND_TYPE = b"t"
KIND_FLOW = b"f"
KIND_ENTITY = b"e"

_DUP_DBS = ("positions", "lead", "type", "time", "flow", "entity", "fingerprints", "leadprints")
_PLAIN_DBS = ("meta", "names", "numbers", "ids", "segacct", "chain")
_CHAIN_POINT = struct.Struct(">32sQ")  # chain hash, recorded_at_ms
_CHAIN_HEAD = struct.Struct(">Q32sQ")  # position, chain hash, recorded_at_ms
CHAIN_ANCHOR_EVERY = 256
"""The index keeps the chain hash at every position that is a multiple of this (FORMAT.md,
"What the chain stores"): a chain point is at most that many digests away."""


_LONG_NAME = 400  # LMDB keys are at most 511 bytes


def name_key(kind: bytes, name: str) -> bytes:
    """The ``names`` key: the name itself, or a digest when it would not fit a key.

    Types are short ASCII (validated), so prefix searches over them still work.
    """
    raw = name.encode()
    if len(raw) > _LONG_NAME:
        return kind + b"\xff" + hashlib.blake2b(raw, digest_size=16).digest()
    return kind + raw


_U48 = struct.Struct(">HI")


def pack_u48(value: int) -> bytes:
    return _U48.pack(value >> 32, value & _U32_MASK)


def unpack_u48(value: bytes | memoryview) -> int:
    hi, lo = _U48.unpack(value)
    return int(hi << 32 | lo)


def lead_hash(lead_id: str) -> bytes:
    return hashlib.blake2b(lead_id.encode(), digest_size=8).digest()


def tspos(timestamp_ms: int, position: int) -> bytes:
    """(timestamp, position) as 12 bytes that sort like the pair. Clamped to 48 bits
    each: callers also pass range bounds past what any event holds (a start before
    1970, "the largest" position), which mean the same as the ends of the range."""
    timestamp_ms = 0 if timestamp_ms < 0 else min(timestamp_ms, _U48_MAX)
    position = 0 if position < 0 else min(position, _U48_MAX)
    return (timestamp_ms << 48 | position).to_bytes(12, "big")


def untspos(value: bytes) -> tuple[int, int]:
    ts_hi, ts_lo, pos_hi, pos_lo = _TSPOS.unpack(value)
    return (ts_hi << 32) | ts_lo, (pos_hi << 32) | pos_lo


@dataclass(slots=True)
class Located:
    """An event to index: its decoded fields and where its record sits."""

    event: Event
    segment_base: int
    offset: int
    raw_bytes: int = 0
    """Size of the event as plain JSON with its full snapshot (for the ratio in stats)."""
    id_key: bytes | None = None
    """Its ``ids`` key, when the writer already made it for the duplicate check."""


class StagedAdd:
    """A batch's index entries in an open write transaction: ``commit`` or ``abort`` it."""

    __slots__ = ("_committed", "_txn")

    def __init__(self, txn: lmdb.Transaction, committed: Callable[[], None]) -> None:
        self._txn = txn
        self._committed = committed

    def commit(self) -> None:
        self._txn.commit()
        self._committed()

    def abort(self) -> None:
        self._txn.abort()


class KnownPrints:
    """The personal values each recent lead is known to have fingerprints of in the index.

    A lead's snapshot repeats its personal values at every step, and putting a pair that is
    there already costs a descent of a B-tree keyed by random bytes, per database: a step
    whose values are known costs no put. A removal holds the leads it touches (``holding``):
    while it runs nothing is known of them and nothing is learnt, and what a transaction
    put is remembered only when no removal began between its start and its commit
    (``epoch``), so a pair is never thought to be there when it is not. Bounded: the
    lead learnt of first is forgotten first."""

    def __init__(self, size: int = 10_000) -> None:
        self._size = size
        self._known: dict[bytes, frozenset[Value]] = {}
        self._held: set[bytes] = set()
        self._all_held = False
        self._lock = threading.Lock()
        self.epoch = 0

    def missing(self, lead_key: bytes, prints: set[Value]) -> set[Value]:
        if self._all_held or lead_key in self._held:
            return prints
        known = self._known.get(lead_key)
        return prints if known is None else prints - known

    def remember(self, epoch: int, added: dict[bytes, set[Value]]) -> None:
        with self._lock:
            if epoch != self.epoch or self._all_held:
                return
            known = self._known
            held = self._held
            for lead_key, prints in added.items():
                if lead_key in held:
                    continue
                old = known.get(lead_key)
                if old is None:
                    known[lead_key] = frozenset(prints)
                elif not prints <= old:
                    known[lead_key] = old | prints
            while len(known) > self._size:
                del known[next(iter(known))]

    @contextmanager
    def holding(self, lead_keys: set[bytes] | None = None) -> Iterator[None]:
        """Around a removal of the entries of these leads (None: of every lead)."""
        with self._lock:
            self.epoch += 1
            if lead_keys is None:
                self._all_held = True
                self._known.clear()
            else:
                self._held |= lead_keys
                for lead_key in lead_keys:
                    self._known.pop(lead_key, None)
        try:
            yield
        finally:
            with self._lock:
                self.epoch += 1
                if lead_keys is None:
                    self._all_held = False
                    self._known.clear()
                else:
                    self._held -= lead_keys
                    for lead_key in lead_keys:
                        self._known.pop(lead_key, None)


def _looks_truncated(path: str) -> bool:
    """True when data.mdb is shorter than its own meta page says.

    LMDB maps the file and would die of SIGBUS touching a page past its end,
    so a short file is caught before it is opened. The two meta pages hold
    (txnid, last page number); the newer one counts.
    """
    data = os.path.join(path, "data.mdb")
    try:
        size = os.path.getsize(data)
        with open(data, "rb") as f:
            head = f.read(2 * _PAGE)
    except FileNotFoundError:
        return False
    if len(head) < 2 * _PAGE:
        return size > 0
    metas = []
    for page in (0, 1):
        magic, last_pg, txnid = (
            struct.unpack_from("<I", head, page * _PAGE + 16)[0],
            *struct.unpack_from("<QQ", head, page * _PAGE + 136),
        )
        if magic == _LMDB_MAGIC:
            metas.append((txnid, last_pg))
    if not metas:
        return True
    _, last_pg = max(metas)
    return bool(size < (int(last_pg) + 1) * _PAGE)


_PAGE = 4096
_COPY_CHUNK = 100_000
_LMDB_MAGIC = 0xBEEFC0DE


class Index:
    def __init__(
        self, path: str, map_size: int, readonly: bool = False, prints: LeadPrints | None = None
    ) -> None:
        self.path = path
        self.map_size = map_size
        self.prints = prints
        self._known_prints = KnownPrints()
        """Fingerprints each added event's personal values into ``fingerprints``; None
        leaves that database alone (a read-only follower, a copy)."""
        if _looks_truncated(path):
            raise StorageError(f"index at {path} is shorter than its own meta page says")
        try:
            self.env = lmdb.open(
                path,
                map_size=map_size,
                max_dbs=len(_DUP_DBS) + len(_PLAIN_DBS) + 2,
                max_readers=1024,
                subdir=True,
                readonly=readonly,
                # Derived state: a write that the OS loses is rebuilt from the
                # log (high-water mark), so LMDB need not fsync every commit.
                sync=False,
                metasync=False,
                readahead=False,
                lock=True,
            )
            self.dbs: dict[str, lmdb._Database] = {}
            for name in _PLAIN_DBS:
                self.dbs[name] = self.env.open_db(name.encode(), create=not readonly)
            for name in _DUP_DBS:
                self.dbs[name] = self.env.open_db(
                    name.encode(), dupsort=True, dupfixed=True, create=not readonly
                )
        except lmdb.Error as e:
            raise StorageError(f"index at {path} cannot be opened: {e}") from e
        self._names: dict[tuple[bytes, str], int] = {}
        self._numbers: dict[tuple[bytes, int], str] = {}
        # Numbers are given out anew after a reset: what a transaction older than
        # the last reset reads of them must not go back into the caches.
        self._names_valid_from = 0
        self._lock = threading.Lock()

    def close(self) -> None:
        self.env.sync(True)
        self.env.close()

    def sync(self) -> None:
        self.env.sync(True)

    def copy_live(self, path: str) -> None:
        """Write every entry into a new index at ``path`` (an empty directory), in key order:
        its pages are filled and none is free. LMDB's own compacting copy
        (``env.copy(compact=True)``) crashes the process on ``dupfixed`` sub-databases."""
        target = Index(path, self.map_size)
        try:
            with self.env.begin() as source:
                for name, db in self.dbs.items():
                    entries = source.cursor(db=db).iternext(keys=True, values=True)
                    while True:
                        chunk = [(bytes(k), bytes(v)) for k, v in itertools.islice(entries, _COPY_CHUNK)]
                        if not chunk:
                            break
                        with target.env.begin(write=True) as txn:
                            cursor = txn.cursor(db=target.dbs[name])
                            _, appended = cursor.putmulti(chunk, dupdata=True, append=True)
                            if appended < len(chunk):
                                cursor.putmulti(chunk[appended:], dupdata=True)
            target.sync()
        except lmdb.Error as e:
            raise StorageError(f"index at {self.path} could not be copied to {path}: {e}") from e
        finally:
            target.env.close()

    # -- meta ---------------------------------------------------------------

    def meta(self, key: str) -> bytes | None:
        with self.env.begin(db=self.dbs["meta"]) as txn:
            value = txn.get(key.encode())
        return bytes(value) if value is not None else None

    def set_meta(self, key: str, value: bytes) -> None:
        with self.env.begin(write=True, db=self.dbs["meta"]) as txn:
            txn.put(key.encode(), value)

    def delete_meta(self, key: str) -> None:
        with self.env.begin(write=True, db=self.dbs["meta"]) as txn:
            txn.delete(key.encode())

    @property
    def high_water(self) -> int:
        value = self.meta("high_water")
        return _U64.unpack(value)[0] if value else 0

    @property
    def raw_bytes(self) -> int:
        value = self.meta("raw")
        return _U64.unpack(value)[0] if value else 0

    @property
    def event_count(self) -> int:
        value = self.meta("count")
        return _U64.unpack(value)[0] if value else 0

    def matches(self, store_id: bytes) -> bool:
        return self.meta("store_id") == store_id and self.meta("version") == INDEX_VERSION

    def reset(self, store_id: bytes) -> None:
        """Empty every database; the caller re-adds the whole log."""
        with self._known_prints.holding(), self.env.begin(write=True) as txn:
            for db in self.dbs.values():
                txn.drop(db, delete=False)
            meta = self.dbs["meta"]
            txn.put(b"store_id", store_id, db=meta)
            txn.put(b"version", INDEX_VERSION, db=meta)
            txn.put(b"high_water", _U64.pack(0), db=meta)
            txn.put(b"count", _U64.pack(0), db=meta)
            txn.put(b"raw", _U64.pack(0), db=meta)
            if self.prints is not None:
                txn.put(b"prints", self.prints.key_id, db=meta)
            reset_id = txn.id()
        with self._lock:
            self._names_valid_from = reset_id
            self._names.clear()
            self._numbers.clear()

    # -- names --------------------------------------------------------------

    def number(self, txn: lmdb.Transaction, kind: bytes, name: str, create: bool) -> int | None:
        key = (kind, name)
        known = self._names.get(key)
        if known is not None:
            return known
        raw = txn.get(name_key(kind, name), db=self.dbs["names"])
        if raw is not None:
            number = int(_U32.unpack(raw)[0])
        elif not create:
            return None
        else:
            counter = b"next_" + kind
            meta = self.dbs["meta"]
            current = txn.get(counter, db=meta)
            number = int(_U32.unpack(current)[0]) if current else 1
            txn.put(counter, _U32.pack(number + 1), db=meta)
            txn.put(name_key(kind, name), _U32.pack(number), db=self.dbs["names"])
            txn.put(kind + _U32.pack(number), name.encode(), db=self.dbs["numbers"])
            # Not cached: the transaction may still abort. ``add`` caches the
            # numbers it created once its transaction has committed.
            return number
        with self._lock:
            if txn.id() >= self._names_valid_from:
                self._names[key] = number
        return number

    def name(self, txn: lmdb.Transaction, kind: bytes, number: int) -> str:
        key = (kind, number)
        known = self._numbers.get(key)
        if known is None:
            raw = txn.get(kind + _U32.pack(number), db=self.dbs["numbers"])
            if raw is None:
                raise StorageError(f"index names no {kind.decode()} number {number}")
            known = bytes(raw).decode()
            with self._lock:
                if txn.id() >= self._names_valid_from:
                    self._numbers[key] = known
        return known

    def names_with_prefix(self, txn: lmdb.Transaction, kind: bytes, prefix: str) -> list[int]:
        start = kind + prefix.encode()
        numbers = []
        cursor = txn.cursor(db=self.dbs["names"])
        if cursor.set_range(start):
            for key, value in cursor:
                if not bytes(key).startswith(start):
                    break
                numbers.append(int(_U32.unpack(value)[0]))
        return numbers

    # -- writes -------------------------------------------------------------

    def add(self, located: Iterable[Located], high_water: int) -> None:
        """Index a committed batch in one transaction, with its high-water position."""
        self.stage(located, high_water).commit()

    def stage(
        self, located: Iterable[Located], high_water: int, chain: Sequence[ChainPoint] = ()
    ) -> StagedAdd:
        """Put a batch's entries in a write transaction left open: readers see none of
        them until ``commit``. The writer stages a group while its bytes are being made
        durable, and commits once they are (or aborts). Same thread for both calls.
        ``chain``: chain points of the group (anchors, then its last event: the head)."""
        epoch = self._known_prints.epoch
        txn = self.env.begin(write=True)
        try:
            created, printed = self._put(txn, located, high_water)
            if chain:
                self._put_chain(txn, chain)
        except BaseException:
            txn.abort()
            raise

        # Numbers created in the transaction, and the fingerprints it put, are remembered
        # only once it has committed.
        def committed() -> None:
            self._remember_numbers(created)
            if printed:
                self._known_prints.remember(epoch, printed)

        return StagedAdd(txn, committed)

    # -- the hash chain ------------------------------------------------------

    def _put_chain(self, txn: lmdb.Transaction, points: Sequence[ChainPoint]) -> None:
        db = self.dbs["chain"]
        for point in points:
            txn.put(
                _U64.pack(point.position), _CHAIN_POINT.pack(point.chain_hash, point.recorded_at_ms), db=db
            )
        head = points[-1]
        txn.put(
            b"chain_head",
            _CHAIN_HEAD.pack(head.position, head.chain_hash, head.recorded_at_ms),
            db=self.dbs["meta"],
        )

    def put_chain(self, points: Sequence[ChainPoint]) -> None:
        """Keep these chain points, the last as the head (the chain's catch-up, retention)."""
        if points:
            with self.env.begin(write=True) as txn:
                self._put_chain(txn, points)

    def put_chain_anchors(self, points: Sequence[ChainPoint]) -> None:
        """Keep these chain points without moving the head (retention keeps the hash at the
        end of each run it removes, so a chain point past it is found without the run)."""
        db = self.dbs["chain"]
        with self.env.begin(write=True) as txn:
            for point in points:
                txn.put(
                    _U64.pack(point.position),
                    _CHAIN_POINT.pack(point.chain_hash, point.recorded_at_ms),
                    db=db,
                )

    def chain_head(self) -> ChainPoint | None:
        """The chain point of the latest chained event indexed; None before the first."""
        value = self.meta("chain_head")
        if value is None:
            return None
        position, chain_hash, recorded_at = _CHAIN_HEAD.unpack(value)
        return ChainPoint(position, chain_hash, recorded_at)

    def chain_anchor(self, txn: lmdb.Transaction, position: int) -> ChainPoint | None:
        """The kept chain point at or before ``position``, the nearest; None when none is."""
        cursor = txn.cursor(db=self.dbs["chain"])
        key = _U64.pack(position)
        if cursor.set_range(key):
            if cursor.key() != key and not cursor.prev():
                return None
        elif not cursor.last():
            return None
        found = _U64.unpack(cursor.key())[0]
        chain_hash, recorded_at = _CHAIN_POINT.unpack(cursor.value())
        return ChainPoint(found, chain_hash, recorded_at)

    def _remember_numbers(self, created: dict[tuple[bytes, str], bytes]) -> None:
        """Cache the numbers a committed transaction used (some it may have created)."""
        with self._lock:
            for key, value in created.items():
                self._names.setdefault(key, int(_U32.unpack(value)[0]))

    def _put(
        self, txn: lmdb.Transaction, located: Iterable[Located], high_water: int
    ) -> tuple[dict[tuple[bytes, str], bytes], dict[bytes, set[Value]]]:
        names = self._names
        packed: dict[tuple[bytes, str], bytes] = {}

        def number(kind: bytes, name: str) -> bytes:
            key = (kind, name)
            value = packed.get(key)
            if value is None:
                known = names.get(key)
                if known is None:
                    known = self.number(txn, kind, name, True) or 0
                value = packed[key] = _U32.pack(known)
            return value

        group = located if isinstance(located, list) else list(located)
        ids, positions, leads, types, times, flows, entities, segacct, added, raw = ingest.index_rows(
            group, number, lead_hash
        )
        # Before the rows are sorted: ``leads`` holds each event's lead key in group order.
        printed = {} if self.prints is None else self._put_prints(txn, group, leads)
        for name, items in (
            ("ids", ids),
            ("positions", positions),
            ("lead", leads),
            ("type", types),
            ("time", times),
            ("flow", flows),
            ("entity", entities),
        ):
            if items:
                # In key order and appended: LMDB then fills pages instead of
                # splitting them in half, which halves the index on disk.
                # Whatever arrives out of order (a backfilled timestamp, a
                # client-chosen id) is refused by the append and put normally.
                items.sort()
                cursor = txn.cursor(db=self.dbs[name])
                _, appended = cursor.putmulti(items, dupdata=True, append=True)
                if appended < len(items):
                    cursor.putmulti(items, dupdata=True)
        db = self.dbs["segacct"]
        for key, (low, high) in segacct.items():
            old = txn.get(key, db=db)
            if old is not None:
                old_low, old_high = _MINMAX.unpack(old)
                low, high = min(low, old_low), max(high, old_high)
            txn.put(key, _MINMAX.pack(low, high), db=db)
        meta = self.dbs["meta"]
        count = txn.get(b"count", db=meta)
        total = (_U64.unpack(count)[0] if count else 0) + added
        txn.put(b"count", _U64.pack(total), db=meta)
        old_raw = txn.get(b"raw", db=meta)
        txn.put(b"raw", _U64.pack((_U64.unpack(old_raw)[0] if old_raw else 0) + raw), db=meta)
        if high_water:
            txn.put(b"high_water", _U64.pack(high_water), db=meta)
        return packed, printed

    def _put_prints(
        self, txn: lmdb.Transaction, group: list[Located], leads: list[tuple[bytes, bytes]]
    ) -> dict[bytes, set[Value]]:
        """The fingerprints of the group's snapshots, both ways: only of the values not known
        to be there already (a pair put again stays one pair). Returns lead key -> the
        values its snapshots held in the group."""
        prints = self.prints
        assert prints is not None
        by_lead: dict[bytes, set[Value]] = {}
        accounts: dict[bytes, str] = {}
        for item, (lead_key, _) in zip(group, leads, strict=True):
            e = item.event
            if not e.lead:
                continue
            found = prints.values_of(e.account_id, e.type, e.lead)
            if found:
                held = by_lead.get(lead_key)
                if held is None:
                    by_lead[lead_key] = found
                    accounts[lead_key] = e.account_id
                else:
                    held |= found
        known = self._known_prints
        pairs = set()
        for lead_key, values in by_lead.items():
            account = accounts[lead_key]
            for value_cls, leaf in known.missing(lead_key, values):
                fp = prints.of_value(account, value_cls, leaf)
                if fp is not None:
                    pairs.add((fp, lead_key))
        if pairs:
            forward = sorted(pairs)
            txn.cursor(db=self.dbs["fingerprints"]).putmulti(forward, dupdata=False)
            reverse = sorted((lead_key, fp) for fp, lead_key in forward)
            txn.cursor(db=self.dbs["leadprints"]).putmulti(reverse, dupdata=False)
        return by_lead

    def _forget_prints(self, txn: lmdb.Transaction, lead_key: bytes, keep: set[bytes] | None = None) -> int:
        """Remove a lead's fingerprint entries (those not in ``keep``); how many went."""
        reverse = txn.cursor(db=self.dbs["leadprints"])
        if not reverse.set_key(lead_key):
            return 0
        gone = [bytes(fp) for fp in reverse.iternext_dup()]
        if keep is not None:
            gone = [fp for fp in gone if fp not in keep]
        forward = self.dbs["fingerprints"]
        leadprints = self.dbs["leadprints"]
        for fp in gone:
            txn.delete(fp, lead_key, db=forward)
            txn.delete(lead_key, fp, db=leadprints)
        return len(gone)

    def forget_lead(self, account_id: str, lead_id: str) -> int:
        """Remove every fingerprint entry of a lead (an erasure); how many went."""
        return self._rewrite_prints(account_id, lead_id, None)

    def _rewrite_prints(self, account_id: str, lead_id: str, keep: set[bytes] | None) -> int:
        with self.env.begin() as txn:
            acct = self.number(txn, KIND_ACCOUNT, account_id, False)
        if acct is None:
            return 0
        lead_key = _U32.pack(acct) + lead_hash(lead_id)
        with self._known_prints.holding({lead_key}), self.env.begin(write=True) as txn:
            return self._forget_prints(txn, lead_key, keep)

    def refresh_lead(self, account_id: str, lead_id: str, prints: set[bytes]) -> int:
        """Keep of a lead's fingerprint entries only ``prints`` (those its events still
        hold, after some of its values were erased by age); how many went."""
        return self._rewrite_prints(account_id, lead_id, prints)

    def leads_of(self, txn: lmdb.Transaction, fingerprint: bytes) -> list[bytes]:
        """The lead keys (``lead`` keys) under a fingerprint."""
        cursor = txn.cursor(db=self.dbs["fingerprints"])
        if not cursor.set_key(fingerprint):
            return []
        return [bytes(value) for value in cursor.iternext_dup()]

    def prints_of(self, txn: lmdb.Transaction, lead_key: bytes) -> list[bytes]:
        """The fingerprints under a lead key (the reverse map)."""
        cursor = txn.cursor(db=self.dbs["leadprints"])
        if not cursor.set_key(lead_key):
            return []
        return [bytes(value) for value in cursor.iternext_dup()]

    def lead_span(self, txn: lmdb.Transaction, lead_key: bytes) -> tuple[int, int, int, int] | None:
        """(first timestamp, last timestamp, last position, events) of a lead key, from the
        ``lead`` index alone; None when it has no event."""
        cursor = txn.cursor(db=self.dbs["lead"])
        if not cursor.set_key(lead_key):
            return None
        count = int(cursor.count())
        first, _ = untspos(bytes(cursor.value()))
        cursor.last_dup()
        last, position = untspos(bytes(cursor.value()))
        return first, last, position, count

    def lead_positions(self, txn: lmdb.Transaction, lead_key: bytes) -> list[int]:
        """The positions of a lead key's events in (timestamp, position) order."""
        return [untspos(value)[1] for value in self.iter_dups(txn, "lead", lead_key, None, False)]

    def account_events(self, txn: lmdb.Transaction) -> dict[str, int]:
        """Stored events per account: the ``time`` index holds one value per event under
        its account, and LMDB keeps the count of a key's values (no walk)."""
        out: dict[str, int] = {}
        cursor = txn.cursor(db=self.dbs["time"])
        found = cursor.first()
        while found:
            number = int(_U32.unpack(cursor.key())[0])
            out[self.name(txn, KIND_ACCOUNT, number)] = int(cursor.count())
            found = cursor.next_nodup()
        return out

    def remove_segment(self, segment_base: int, events: Iterable[Located]) -> None:
        """Forget a segment's events (before it is deleted)."""
        self.replace_segment(segment_base, events, ())

    def replace_segment(
        self, segment_base: int, events: Iterable[Located], rewritten: Sequence[Located]
    ) -> None:
        """Forget a segment's events and index ``rewritten``, the events of the file that
        replaced it, in one transaction: a reader never finds a surviving event missing in
        between (it did, as NOT_FOUND, between a removal and an add that followed it)."""
        removed = raw = 0
        lead_keys: set[bytes] = set()
        created: dict[tuple[bytes, str], bytes] = {}
        events = events if isinstance(events, list) else list(events)
        with self._known_prints.holding(self._lead_keys_of(events)), self.env.begin(write=True) as txn:
            for item in events:
                e = item.event
                raw += item.raw_bytes
                acct_no = self.number(txn, KIND_ACCOUNT, e.account_id, False)
                if acct_no is None:
                    continue
                acct = _U32.pack(acct_no)
                value = tspos(e.timestamp_ms or 0, e.position)
                if txn.delete(acct + id_bytes(e.id), db=self.dbs["ids"]):
                    removed += 1
                lead_key = acct + lead_hash(e.lead_id)
                txn.delete(lead_key, value, db=self.dbs["lead"])
                lead_keys.add(lead_key)
                txn.delete(acct, value, db=self.dbs["time"])
                for db, kind, name in (
                    ("type", KIND_TYPE, e.type),
                    ("flow", KIND_FLOW, e.flow_id),
                    ("entity", KIND_ENTITY, e.entity_id),
                ):
                    if name:
                        number = self.number(txn, kind, name, False)
                        if number is not None:
                            txn.delete(acct + _U32.pack(number), value, db=self.dbs[db])
            # A lead none of whose events is left is no longer found; one with events
            # left keeps its entries (its later snapshots usually hold the same values).
            lead_cursor = txn.cursor(db=self.dbs["lead"])
            for lead_key in sorted(lead_keys):
                if not lead_cursor.set_key(lead_key):
                    self._forget_prints(txn, lead_key)
            base = _U64.pack(segment_base)
            txn.delete(base, db=self.dbs["positions"])
            cursor = txn.cursor(db=self.dbs["segacct"])
            if cursor.set_range(base):
                while cursor.key()[:8] == base:
                    if not cursor.delete():
                        break
            meta = self.dbs["meta"]
            count = txn.get(b"count", db=meta)
            total = (_U64.unpack(count)[0] if count else 0) - removed
            txn.put(b"count", _U64.pack(max(total, 0)), db=meta)
            old_raw = txn.get(b"raw", db=meta)
            left = (_U64.unpack(old_raw)[0] if old_raw else 0) - raw
            txn.put(b"raw", _U64.pack(max(left, 0)), db=meta)
            if rewritten:
                created, _ = self._put(txn, rewritten, 0)
        self._remember_numbers(created)

    def _lead_keys_of(self, events: list[Located]) -> set[bytes]:
        out: set[bytes] = set()
        with self.env.begin() as txn:
            for item in events:
                e = item.event
                acct = self.number(txn, KIND_ACCOUNT, e.account_id, False)
                if acct is not None:
                    out.add(_U32.pack(acct) + lead_hash(e.lead_id))
        return out

    def move_segment(self, segment_base: int, offsets: Iterable[tuple[int, int]], raw_change: int) -> None:
        """A segment rewritten with the same events at new offsets (erasure): its
        position -> offset entries replaced, nothing else (ids, leads, types, times
        and flows do not change)."""
        base = _U64.pack(segment_base)
        items = sorted((base, _POSOFF.pack(position - segment_base, offset)) for position, offset in offsets)
        with self.env.begin(write=True) as txn:
            txn.delete(base, db=self.dbs["positions"])
            if items:
                txn.cursor(db=self.dbs["positions"]).putmulti(items, dupdata=True)
            meta = self.dbs["meta"]
            old_raw = txn.get(b"raw", db=meta)
            total = (_U64.unpack(old_raw)[0] if old_raw else 0) + raw_change
            txn.put(b"raw", _U64.pack(max(total, 0)), db=meta)

    # -- reads --------------------------------------------------------------

    def position_of(self, txn: lmdb.Transaction, account_id: str, event_id: str) -> int | None:
        key = self.id_key(txn, account_id, event_id)
        return None if key is None else self.position_at(txn, key)

    def id_key(self, txn: lmdb.Transaction, account_id: str, event_id: str) -> bytes | None:
        """The ``ids`` key of an event; None while its account has no number (no event yet)."""
        acct = self.number(txn, KIND_ACCOUNT, account_id, False)
        return None if acct is None else _U32.pack(acct) + id_bytes(event_id)

    def position_at(self, txn: lmdb.Transaction, id_key: bytes) -> int | None:
        raw = txn.get(id_key, db=self.dbs["ids"])
        return unpack_u48(raw) if raw is not None else None

    def offset_of(self, txn: lmdb.Transaction, segment_base: int, position: int) -> int | None:
        cursor = txn.cursor(db=self.dbs["positions"])
        if position < segment_base or not cursor.set_range_dup(
            _U64.pack(segment_base), _POSOFF.pack(position - segment_base, 0)
        ):
            return None
        found, offset = _POSOFF.unpack(cursor.value())
        return int(offset) if found + segment_base == position else None

    def offset_at_or_after(self, txn: lmdb.Transaction, segment_base: int, position: int) -> int | None:
        """Offset of the first indexed event of the segment at or after ``position``."""
        cursor = txn.cursor(db=self.dbs["positions"])
        relative = max(position - segment_base, 0)
        if not cursor.set_range_dup(_U64.pack(segment_base), _POSOFF.pack(relative, 0)):
            return None
        return int(_POSOFF.unpack(cursor.value())[1])

    def segment_positions(self, txn: lmdb.Transaction, segment_base: int) -> Iterator[tuple[int, int]]:
        cursor = txn.cursor(db=self.dbs["positions"])
        if cursor.set_key(_U64.pack(segment_base)):
            for value in cursor.iternext_dup():
                relative, offset = _POSOFF.unpack(value)
                yield segment_base + relative, int(offset)

    def segment_accounts(self, txn: lmdb.Transaction, segment_base: int) -> dict[str, tuple[int, int]]:
        """account -> (min, max recorded_at) of a segment's events."""
        base = _U64.pack(segment_base)
        out = {}
        cursor = txn.cursor(db=self.dbs["segacct"])
        if cursor.set_range(base):
            for key, value in cursor:
                key = bytes(key)
                if key[:8] != base:
                    break
                account = self.name(txn, KIND_ACCOUNT, int(_U32.unpack(key[8:12])[0]))
                low, high = _MINMAX.unpack(value)
                out[account] = (int(low), int(high))
        return out

    def dup_key(
        self, txn: lmdb.Transaction, db: str, account_id: str, kind: bytes | None, name: str | None
    ) -> bytes | None:
        acct = self.number(txn, KIND_ACCOUNT, account_id, False)
        if acct is None:
            return None
        key = _U32.pack(acct)
        if db == "lead":
            assert name is not None
            return key + lead_hash(name)
        if kind is not None:
            assert name is not None
            number = self.number(txn, kind, name, False)
            if number is None:
                return None
            key += _U32.pack(number)
        return key

    def account_key(self, txn: lmdb.Transaction, account_id: str) -> bytes | None:
        acct = self.number(txn, KIND_ACCOUNT, account_id, False)
        return None if acct is None else _U32.pack(acct)

    def type_keys(self, txn: lmdb.Transaction, account_key: bytes, patterns: Iterable[str]) -> list[bytes]:
        numbers: set[int] = set()
        for pattern in patterns:
            if pattern.endswith(".*"):
                numbers.update(self.names_with_prefix(txn, KIND_TYPE, pattern[:-1]))
            else:
                number = self.number(txn, KIND_TYPE, pattern, False)
                if number is not None:
                    numbers.add(number)
        return [account_key + _U32.pack(n) for n in sorted(numbers)]

    def count_dups(self, txn: lmdb.Transaction, db: str, key: bytes) -> int:
        cursor = txn.cursor(db=self.dbs[db])
        return int(cursor.count()) if cursor.set_key(key) else 0

    def count_dups_of(self, txn: lmdb.Transaction, db: str, keys: Sequence[bytes | None]) -> list[int]:
        """``count_dups`` of each key (0 for None) with one cursor."""
        cursor = txn.cursor(db=self.dbs[db])
        return [int(cursor.count()) if key is not None and cursor.set_key(key) else 0 for key in keys]

    def iter_dups(
        self, txn: lmdb.Transaction, db: str, key: bytes, start: bytes | None, descending: bool
    ) -> Iterator[bytes]:
        """Values under ``key`` from ``start`` (inclusive, in scan direction) onwards."""
        cursor = txn.cursor(db=self.dbs[db])
        if not cursor.set_key(key):
            return
        if descending:
            if start is None:
                if not cursor.last_dup():
                    return
            elif cursor.set_range_dup(key, start):
                if bytes(cursor.value()) > start and not cursor.prev_dup():
                    return
            elif not (cursor.set_key(key) and cursor.last_dup()):
                return
            while True:
                yield bytes(cursor.value())
                if not cursor.prev_dup():
                    return
        else:
            if start is not None and not cursor.set_range_dup(key, start):
                return
            yield bytes(cursor.value())
            while cursor.next_dup():
                yield bytes(cursor.value())

    def disk_bytes(self) -> int:
        info = self.env.info()
        stat = self.env.stat()
        return int((info["last_pgno"] + 1) * stat["psize"])
