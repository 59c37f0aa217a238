"""Event payloads: fixed prefix, zstd-compressed body, compressed against the lead's last one.

Lead snapshots dominate the bytes, and a lead's consecutive snapshots differ
in a few fields (an enhancement appends ``appended.phone_check.carrier``).
So a wire body (format 1.3) is compressed against the raw bytes of the same
lead's previous body when that one is in the same segment and the chain is
short; a lead's first body in a segment is compressed with a zstd dictionary
trained on earlier bodies. Format 1.1 stored a snapshot as a JSON delta
against the previous snapshot instead (``Options.record_form="json"``).
"""

from __future__ import annotations

import hashlib
import math
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson
import zstandard
from crc32c import crc32c

from . import wirebody, wireform
from .chain import Chainer
from .errors import CorruptionError, StorageError
from .event import Event, Outcome
from .format import (
    BARE_CODECS,
    CODEC_PLAIN,
    CODEC_WIRE_PLAIN,
    CODEC_WIRE_ZSTD_BARE,
    CODEC_WIRE_ZSTD_DICT_BARE,
    CODEC_WIRE_ZSTD_PREFIX_BARE,
    CODEC_ZSTD_BARE,
    CODEC_ZSTD_DICT_BARE,
    DICT_HEADER,
    DICT_HEADER_1_0,
    DICT_MAGIC,
    DICT_MAGIC_1_0,
    DICTIONARY_CODECS,
    EVENT_PREFIX,
    MAX_DELTA_BACK,
    MAX_DICTIONARY_ID,
    WIRE_CODECS,
    ZSTD_CODECS,
    BadRecord,
    BodyField,
)
from .fs import Files
from .wirebody import NO_CHANGES, StoredEvent

MAX_DELTA_DEPTH = 8
"""Longest chain of bases (1.1 snapshot deltas, 1.3 bodies compressed against a base): a
read of the last one decodes at most this many records before it."""
MAX_BODY = 16 * 1024 * 1024


def store_digest(store_id: bytes) -> bytes:
    """What a dictionary file carries of the store it belongs to."""
    return hashlib.blake2b(store_id, digest_size=16).digest()


def read_dictionary_file(path: str) -> tuple[int, bytes | None, bytes]:
    """(id, store digest or None for a 1.0 file, zstd dictionary bytes), checked."""
    with open(path, "rb") as f:
        data = f.read()
    magic = data[:8]
    header = DICT_HEADER if magic == DICT_MAGIC else DICT_HEADER_1_0
    if len(data) < header.size or magic not in (DICT_MAGIC, DICT_MAGIC_1_0):
        raise CorruptionError([f"dictionary {path}: truncated or bad magic ({len(data)} bytes)"])
    _, dict_id, crc, *store = header.unpack_from(data)
    body = data[header.size :]
    if crc32c(body) != crc:
        raise CorruptionError([f"dictionary {path}: checksum does not match its bytes"])
    return int(dict_id), (store[0] if store else None), body


_SAMPLE_RING = 4000
_RATIO_WINDOW = 500


def _same_json(a: Any, b: Any) -> bool:
    """Equal as JSON values: 1, 1.0 and True are three different values here."""
    ta = type(a)
    if ta is not type(b):
        return False
    if ta is str or ta is int or ta is bool or a is None:
        return bool(a == b)
    if ta is float:
        return bool(a == b and math.copysign(1.0, a) == math.copysign(1.0, b))
    return orjson.dumps(a) == orjson.dumps(b)


_MISSING = object()


def snapshot_delta(base: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any] | None:
    """``{"s": set, "d": removed}`` turning ``base`` into ``new``, or None if not worth it."""
    changed = {}
    get = base.get
    for k, v in new.items():
        old = get(k, _MISSING)
        if old is v:
            continue
        kind = type(v)
        if kind is type(old) and (kind is str or kind is int or kind is bool) and old == v:
            continue
        if old is _MISSING or not _same_json(old, v):
            changed[k] = v
    removed = [k for k in base if k not in new] if len(base) + len(changed) > len(new) else []
    if (len(changed) + len(removed)) * 2 > len(new):
        return None
    return {"s": changed, "d": removed}


def apply_delta(base: Mapping[str, Any], delta: Mapping[str, Any]) -> dict[str, Any]:
    full = dict(base)
    full.update(delta["s"])
    for key in delta["d"]:
        del full[key]
    return full


class Dictionaries:
    """zstd dictionaries by id, trained from bodies as they arrive, immutable once written."""

    def __init__(
        self,
        directory: str,
        files: Files,
        options_level: int,
        size: int,
        store_id: bytes,
        read_only: bool = False,
    ) -> None:
        """``read_only``: another process writes the store (a follower), so nothing here
        is created or removed: a ``.tmp`` file may be its dictionary being written."""
        self.directory = directory
        self._files = files
        self._level = options_level
        self._size = size
        self._store = store_digest(store_id)
        self._lock = threading.Lock()
        self._dicts: dict[int, zstandard.ZstdCompressionDict] = {}
        self._retired: set[int] = set()
        # 1.0 files name no store. Bare frames (codecs 3 and 4) carry no dictionary
        # id for zstd to check, so a dictionary brought from another store would
        # decode them into wrong bytes: new records use only files bound to this store.
        self._unbound: set[int] = set()
        self._local = threading.local()
        if not read_only and not os.path.isdir(directory):
            # Its entry in the data directory made durable before a dictionary is written in it.
            files.make_directory(directory)
        for name in sorted(os.listdir(directory)) if os.path.isdir(directory) else ():
            path = os.path.join(directory, name)
            if name.endswith(".tmp"):
                if not read_only:
                    os.remove(path)  # an interrupted write: never referenced by a record
                continue
            if name.endswith(".retired"):
                self._retired.add(int(name.split(".")[0]))
                continue
            if not name.endswith(".zdict"):
                continue
            dict_id, store, body = read_dictionary_file(path)
            if store is None:
                self._unbound.add(dict_id)
            elif store != self._store:
                raise CorruptionError(
                    [f"dictionary {path}: belongs to another store (its records would decode wrongly)"]
                )
            self._dicts[dict_id] = zstandard.ZstdCompressionDict(body)
        self._current = self._newest_usable()

    def _newest_usable(self) -> int:
        # A ".retired" marker outlives its dictionary: the id is never given out again, so
        # no record or cached compressor can ever mistake a new dictionary for the old one.
        return max((i for i in self._dicts if i not in self._retired and i not in self._unbound), default=0)

    @property
    def level(self) -> int:
        """The store's zstd compression level."""
        return self._level

    @property
    def current_id(self) -> int:
        # Read by the writer for every event while a trainer thread may add a
        # dictionary: a plain attribute, set once the dictionary is durable.
        return self._current

    def ids(self) -> list[int]:
        return sorted(self._dicts)

    def disk_bytes(self) -> int:
        return sum(
            os.path.getsize(os.path.join(self.directory, n))
            for n in os.listdir(self.directory)
            if n.endswith(".zdict")
        )

    def train(self, samples: list[bytes]) -> int:
        """Train, persist durably, then publish a new dictionary; returns its id."""
        trained = zstandard.train_dictionary(
            self._size, list[bytes | bytearray | memoryview](samples), level=self._level
        )
        body = trained.as_bytes()
        with self._lock:
            newest = max(self._dicts.keys() | self._retired, default=0)
            if newest >= MAX_DICTIONARY_ID:
                return self.current_id  # the id space is full: keep compressing with the last one
            dict_id = newest + 1
            header = DICT_HEADER.pack(DICT_MAGIC, dict_id, crc32c(body), self._store)
            path = os.path.join(self.directory, f"{dict_id:08d}.zdict")
            self._files.write_file_atomically(path, header + body)
            self._dicts[dict_id] = zstandard.ZstdCompressionDict(body)
            self._current = dict_id
        return dict_id

    def holding(self, needles: list[bytes]) -> list[int]:
        """Ids of the dictionaries whose bytes contain any of ``needles`` (trained text),
        whatever the letter case."""
        lowered = [n.lower() for n in needles]
        found = []
        for dict_id, trained in sorted(self._dicts.items()):
            text = trained.as_bytes().lower()
            if any(n in text for n in lowered):
                found.append(dict_id)
        return found

    def pending_retirement(self) -> list[int]:
        """Retired dictionaries still on disk: records may still name them."""
        return sorted(self._retired & set(self._dicts))

    def retire(self, dict_id: int) -> None:
        """Compress nothing more with ``dict_id``; it still decodes until ``delete``."""
        with self._lock:
            # Durable, so that a crash before the records are rewritten does not
            # bring it back as the newest dictionary.
            self._files.write_file_atomically(os.path.join(self.directory, f"{dict_id:08d}.retired"), b"")
            self._retired.add(dict_id)
            if self._current == dict_id:
                self._current = self._newest_usable()

    def delete(self, dict_id: int) -> None:
        """Remove a retired dictionary once no record names it any more."""
        with self._lock:
            self._files.remove(os.path.join(self.directory, f"{dict_id:08d}.zdict"))
            self._files.fsync_dir(self.directory)
            self._dicts.pop(dict_id, None)  # the ".retired" marker stays: the id is spent

    def compressor(self, dict_id: int) -> zstandard.ZstdCompressor:
        """Writes bare frames (codecs 3 and 4): no magic number, no dictionary id."""
        cache = self._thread_cache("compressors")
        comp = cache.get(dict_id)
        if comp is None:
            params = zstandard.ZstdCompressionParameters.from_level(
                self._level,
                format=zstandard.FORMAT_ZSTD1_MAGICLESS,
                write_dict_id=False,
                # Kept: without it decompression allocates the largest body allowed.
                write_content_size=True,
            )
            dict_data = self._dicts[dict_id] if dict_id else None
            comp = zstandard.ZstdCompressor(dict_data=dict_data, compression_params=params)
            cache[dict_id] = comp
        return comp

    def decompressor(self, codec: int, dict_id: int) -> zstandard.ZstdDecompressor:
        """The decompressor for a record's codec and dictionary id."""
        if codec not in ZSTD_CODECS:
            raise BadRecord(f"unknown codec {codec}")
        if codec not in DICTIONARY_CODECS:
            dict_id = 0
        bare = codec in BARE_CODECS
        # zstd contexts are not thread-safe: one per thread and dictionary.
        cache = self._thread_cache("decompressors")
        dec = cache.get((dict_id, bare))
        if dec is None:
            known = None
            if dict_id:
                known = self._dicts.get(dict_id)
                if known is None:
                    raise BadRecord(f"record names dictionary {dict_id}, which does not exist")
            dec = zstandard.ZstdDecompressor(
                dict_data=known,
                format=zstandard.FORMAT_ZSTD1_MAGICLESS if bare else zstandard.FORMAT_ZSTD1,
            )
            cache[(dict_id, bare)] = dec
        return dec

    def _thread_cache(self, name: str) -> dict[Any, Any]:
        cache: dict[Any, Any] | None = getattr(self._local, name, None)
        if cache is None:
            cache = {}
            setattr(self._local, name, cache)
        return cache


class Trainer:
    """Decides when to (re)train: after the first samples, then when the ratio decays."""

    def __init__(
        self,
        dictionaries: Dictionaries,
        samples_needed: int,
        decay: float,
        scrub: Callable[[str, bytes], bytes] | None = None,
    ) -> None:
        self._dicts = dictionaries
        self._needed = samples_needed
        self._decay = decay
        self._scrub = scrub
        self._samples: list[tuple[str, bytes]] = []
        self._next = 0
        self._trained_ratio = 0.0
        self._window_raw = 0
        self._window_packed = 0
        self._busy = False
        self._pool: ThreadPoolExecutor | None = None
        self._window_records = 0
        self.last_error: BaseException | None = None

    def observe(self, body: bytes, packed: int | None, dict_id: int, account_id: str = "") -> None:
        """``packed``: the compressed size of ``body`` with dictionary ``dict_id`` (or none);
        None when it was compressed otherwise (against its base), which says nothing of the
        dictionary's ratio but makes a sample all the same: the bodies of a lead's later
        steps hold what its first ones do, and waiting for first steps alone would keep
        them without a dictionary several times longer."""
        # orjson hands back its whole output buffer (16 KiB or more, whatever the
        # JSON's length); a sample kept for retraining keeps an exact copy instead.
        sample = (account_id, bytes(memoryview(body)))
        if len(self._samples) < _SAMPLE_RING:
            self._samples.append(sample)
        else:
            self._samples[self._next] = sample
            self._next = (self._next + 1) % _SAMPLE_RING
        if self._busy or dict_id != self._dicts.current_id:
            # Compressed before a training just published its dictionary: says
            # nothing about the new one, and must not start a second training.
            return
        if dict_id == 0:
            if len(self._samples) >= self._needed:
                self._start()
            return
        if packed is None:
            return
        self._window_raw += len(body)
        self._window_packed += packed
        if self._window_raw and self._window_packed and self._window_count_full():
            ratio = self._window_raw / self._window_packed
            if self._trained_ratio == 0.0:
                self._trained_ratio = ratio
            elif ratio < self._trained_ratio * self._decay:
                self._start()
            self._window_raw = self._window_packed = 0

    def _window_count_full(self) -> bool:
        self._window_records += 1
        if self._window_records >= _RATIO_WINDOW:
            self._window_records = 0
            return True
        return False

    def _start(self) -> None:
        # Once after the first samples and again only when the ratio decays.
        # Training takes ~0.1-0.3 s for a few thousand samples and zstd lets go
        # of the GIL meanwhile, so it runs beside the writer, which keeps
        # compressing with the dictionary it has until the new one is durable.
        # One thread for every training of the store: zstd's training buffers
        # are tens of MB, and each new thread's malloc arena would keep its own.
        self._busy = True
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="leadtrail-dictionary-trainer")
        self._pool.submit(self._run, list(self._samples))

    def forget(self, needles: list[bytes]) -> None:
        """Drop the samples holding any of ``needles`` (erased values); writer thread only."""
        kept = [s for s in self._samples if not any(n in s[1] for n in needles)]
        if len(kept) != len(self._samples):
            self._samples, self._next = kept, 0

    def close(self) -> None:
        """Wait for a training in progress, then end the training thread."""
        self.wait_idle()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait for a training in progress to finish (tests and shutdown); True if idle."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._busy:
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(0.005)
        return True

    def _run(self, samples: list[tuple[str, bytes]]) -> None:
        try:
            # Trained text lands in the dictionary file: personal values are
            # taken out first, so that erasing them never means retraining.
            scrub = self._scrub
            self._dicts.train([scrub(a, b) if scrub is not None else b for a, b in samples])
            self._trained_ratio = 0.0  # measured again on the new dictionary
        except Exception as e:  # training failure only costs ratio, never data
            self.last_error = e
        finally:
            self._busy = False


def encode_body(event: Event, lead_part: Mapping[str, Any] | orjson.Fragment) -> bytes:
    """The JSON body: the fields in ``BodyField`` order (decode_event unpacks the same)."""
    return orjson.dumps([*wirebody.scalar_fields(event), event.details, lead_part])


_WIRE_CODECS = (CODEC_WIRE_PLAIN, CODEC_WIRE_ZSTD_DICT_BARE, CODEC_WIRE_ZSTD_BARE)
_JSON_CODECS = (CODEC_PLAIN, CODEC_ZSTD_DICT_BARE, CODEC_ZSTD_BARE)
"""A body form's codecs: (plain, zstd with dictionary, zstd without)."""

LAST_SNAPSHOTS_BUDGET = 16 * 1024 * 1024
"""Bytes of the latest snapshot (its JSON size) and bodies per lead the encoder keeps to
compute changes and compress against."""


class _Base:
    """A body a later one of its lead may be compressed against (format 1.3)."""

    __slots__ = ("body", "depth", "position", "step")

    def __init__(self, position: int, body: bytes, depth: int, step: int) -> None:
        self.position = position
        self.body = body
        self.depth = depth
        """Bases above it: 0 for a body that stands on its own."""
        self.step = step
        """Its place in the chain that began with the body of depth 0."""


class _LeadState:
    """What the encoder keeps of a lead's latest event in the active segment."""

    __slots__ = ("depth", "held", "latest", "older", "position", "segment_base", "snapshot")

    def __init__(
        self,
        segment_base: int,
        position: int,
        snapshot: dict[str, Any],
        depth: int,
        held: int,
        latest: _Base | None,
        older: _Base | None,
    ) -> None:
        self.segment_base = segment_base
        self.position = position
        self.snapshot = snapshot
        self.depth = depth
        """Of a 1.1 delta chain."""
        self.held = held
        self.latest = latest
        """The latest body (wire form), as a base."""
        self.older = older
        """The body before it, as a base."""

    def next_base(self, position: int) -> tuple[_Base, _Base] | None:
        """(the base of the lead's next body, at ``position``; the latest body), or None
        when the next body stands on its own.

        Steps of a chain alternate between the latest body (odd steps) and the one before
        it (even steps), so that the step n of a chain is about n/2 bases deep: a read of
        one event (a scan, a lookup) decodes fewer records before it, for about 5% more
        bytes than always the latest body (FORMAT.md, "Bodies compressed against a base")."""
        latest = self.latest
        if latest is None:
            return None
        base = latest
        if latest.step % 2 and self.older is not None:
            base = self.older
        if base.depth >= MAX_DELTA_DEPTH or position - base.position > MAX_DELTA_BACK:
            return None
        return base, latest


class EventEncoder:
    """Turns events into payloads; owned by the single writer thread."""

    def __init__(self, dictionaries: Dictionaries, trainer: Trainer | None, json_form: bool = False) -> None:
        """``json_form``: write format 1.1 records (``Options.record_form`` "json")."""
        self._json_form = json_form
        self._dicts = dictionaries
        self._trainer = trainer
        # (account, lead_id) -> the lead's latest event. Bounded by the bytes it holds,
        # oldest lead out first: a lead's steps mostly come close together, and a lead
        # seen again after eviction simply starts a new chain.
        self._last: OrderedDict[tuple[str, str], _LeadState] = OrderedDict()
        self._last_bytes = 0
        self._last_budget = LAST_SNAPSHOTS_BUDGET
        self.last_raw_bytes = 0
        """JSON size of the last event encoded, with its full snapshot (for stats)."""
        self.chainer: Chainer | None = None
        """The writer's chain: new events (without a seal) get a block from it."""

    def forget_segment(self) -> None:
        self._last.clear()
        self._last_bytes = 0

    def forget_lead(self, account_id: str, lead_id: str) -> None:
        """Drop the snapshot and bodies kept of a lead (its personal data was erased)."""
        dropped = self._last.pop((account_id, lead_id), None)
        if dropped is not None:
            self._last_bytes -= dropped.held

    def encode(self, event: Event, position: int, segment_base: int, lead_json: bytes | None = None) -> bytes:
        """``lead_json`` is ``event.lead`` as JSON when the caller has it already (validation does).

        The body is the event's wire form with its snapshot whole and the timeline
        changes against the lead's previous event in this segment, computed here once
        rather than on every read of the timeline, compressed against one of the lead's
        two previous bodies in this segment (format 1.3). Neither reaches back past the
        segment: a rewrite (erasure) re-encodes a segment's events together, and must
        find every value a change quotes and every base among them."""
        if self._json_form:
            return self._encode_json(event, position, segment_base, lead_json)
        key = (event.account_id, event.lead_id)
        lead = event.lead
        if not lead:
            lead_json = b""
        elif lead_json is None:
            lead_json = orjson.dumps(lead)
        previous = self._last.get(key)
        if previous is not None and previous.segment_base != segment_base:
            previous = None
        if previous is not None:
            changes, base_position = wireform.field_changes(previous.snapshot, lead), previous.position
        else:
            # A lead's first step shows every field as added: a copy of the snapshot that
            # would double the bytes of one-step leads, so its read computes it.
            changes, base_position = b"", NO_CHANGES
        details_json = orjson.dumps(event.details) if event.details else b""
        seal, chainer = event.seal, self.chainer
        if seal is not None:  # a rewrite: the block as it was (or committed, after an erasure)
            block = seal.encode()
        elif chainer is not None:
            block = chainer.next_block(event, details_json, lead_json)
        else:
            block = b""
        body, json_size = wirebody.encode(event, details_json, lead_json, changes, base_position, block)
        self.last_raw_bytes = json_size
        found = previous.next_base(position) if previous is not None else None
        if found is None:
            self._remember(key, segment_base, position, lead, 0, _Base(position, body, 0, 0), None)
            return self._frame(event, body, _WIRE_CODECS, 0)
        # Against a body of the same lead, most of this one is matches: its snapshot
        # repeats the lead's personal values, which no trained dictionary may hold.
        base = found[0]
        packed = wireform.prefix_compress(body, base.body, self._dicts.level)
        if self._trainer is not None:
            self._trainer.observe(body, None, 0, event.account_id)
        older = found[1]
        latest = _Base(position, body, base.depth + 1, older.step + 1)
        self._remember(key, segment_base, position, lead, 0, latest, older)
        return self._payload(event, CODEC_WIRE_ZSTD_PREFIX_BARE, 0, position - base.position, packed)

    def _encode_json(self, event: Event, position: int, segment_base: int, lead_json: bytes | None) -> bytes:
        """Format 1.1: a JSON array body, the snapshot as a delta against the lead's previous one."""
        key = (event.account_id, event.lead_id)
        lead = event.lead
        if lead_json is None:
            lead_json = orjson.dumps(lead)
        base_position, depth, part_json = 0, 0, lead_json
        previous = self._last.get(key)
        if (
            previous is not None
            and previous.segment_base == segment_base
            and previous.depth < MAX_DELTA_DEPTH
            and position - previous.position <= MAX_DELTA_BACK
        ):
            delta = snapshot_delta(previous.snapshot, lead)
            if delta is not None:
                base_position, depth, part_json = previous.position, previous.depth + 1, orjson.dumps(delta)
        body = encode_body(event, orjson.Fragment(part_json))
        self.last_raw_bytes = len(body) - len(part_json) + len(lead_json)
        self._remember(key, segment_base, position, lead, depth, None, None)
        back = position - base_position if base_position else 0
        return self._frame(event, body, _JSON_CODECS, back)

    def _remember(
        self,
        key: tuple[str, str],
        segment_base: int,
        position: int,
        lead: Mapping[str, Any],
        depth: int,
        latest: _Base | None,
        older: _Base | None,
    ) -> None:
        """Keep the lead's latest snapshot and bodies (for the next one's changes, delta or
        base), within budget."""
        held = self.last_raw_bytes
        held += len(latest.body) if latest is not None else 0
        held += len(older.body) if older is not None else 0
        replaced = self._last.pop(key, None)
        if replaced is not None:
            self._last_bytes -= replaced.held
        self._last[key] = _LeadState(segment_base, position, dict(lead), depth, held, latest, older)
        self._last_bytes += held
        while self._last_bytes > self._last_budget and len(self._last) > 1:
            self._last_bytes -= self._last.popitem(last=False)[1].held

    def _frame(self, event: Event, body: bytes, codecs: tuple[int, int, int], delta_back: int) -> bytes:
        """The payload: prefix, account and the body, compressed unless tiny. ``codecs``:
        the body form's (plain, with dictionary, without) codec numbers."""
        plain, with_dictionary, without = codecs
        dict_id = self._dicts.current_id
        if len(body) < 64:
            codec, packed = plain, body
            dict_id = 0
        else:
            packed = self._dicts.compressor(dict_id).compress(body)
            codec = with_dictionary if dict_id else without
            if self._trainer is not None:
                self._trainer.observe(body, len(packed), dict_id, event.account_id)
        return self._payload(event, codec, dict_id, delta_back, packed)

    @staticmethod
    def _payload(event: Event, codec: int, dict_id: int, delta_back: int, packed: bytes) -> bytes:
        account = event.account_id.encode()
        recorded, timestamp = event.recorded_at_ms, event.timestamp_ms or 0
        prefix = EVENT_PREFIX.pack(
            recorded & 0xFFFFFFFF,
            recorded >> 32,
            timestamp & 0xFFFFFFFF,
            timestamp >> 32,
            codec,
            dict_id,
            delta_back,
            len(account),
        )
        return b"".join((prefix, account, packed))


class EventPrefix:
    __slots__ = ("account_id", "base_position", "body", "codec", "dict_id", "recorded_at_ms", "timestamp_ms")

    def __init__(self, payload: bytes | memoryview, position: int = 0) -> None:
        """``position`` is the record's: a delta base is stored as a distance back from it."""
        if len(payload) < EVENT_PREFIX.size:
            raise BadRecord("event payload shorter than its prefix")
        (
            recorded_lo,
            recorded_hi,
            timestamp_lo,
            timestamp_hi,
            self.codec,
            self.dict_id,
            back,
            account_len,
        ) = EVENT_PREFIX.unpack_from(payload)
        self.recorded_at_ms = recorded_hi << 32 | recorded_lo
        self.timestamp_ms = timestamp_hi << 32 | timestamp_lo
        if back and back >= position:
            raise BadRecord(f"delta base {back} positions back from {position} is before the log")
        self.base_position = position - back if back else 0
        start = EVENT_PREFIX.size
        if len(payload) < start + account_len:
            raise BadRecord("event payload shorter than its account id")
        self.account_id = bytes(payload[start : start + account_len]).decode()
        self.body = payload[start + account_len :]


def _body_of(prefix: EventPrefix, dictionaries: Dictionaries) -> bytes:
    if prefix.codec == CODEC_PLAIN or prefix.codec == CODEC_WIRE_PLAIN:
        return bytes(prefix.body)
    dec = dictionaries.decompressor(prefix.codec, prefix.dict_id)
    try:
        return dec.decompress(prefix.body, max_output_size=MAX_BODY)
    except zstandard.ZstdError as e:
        raise BadRecord(f"undecodable event body: {e}") from e


def stored_form(payload: bytes | memoryview) -> bool:
    """Whether an event payload holds a wire body (format 1.2)."""
    return len(payload) > EVENT_PREFIX.size and payload[_CODEC_AT] in WIRE_CODECS


_CODEC_AT = 12
"""The codec's byte in the event prefix."""


BaseBody = Callable[[int], bytes]
"""The wire body of the event at a position: resolves the base of a body compressed
against one (format 1.3). It raises BadRecord when that event is not there."""


def no_base_body(position: int) -> bytes:
    """For a record read where no other can be: a body compressed against a base fails."""
    raise BadRecord(f"a body compressed against the event at {position}, which is not at hand")


def _wire_body(prefix: EventPrefix, dictionaries: Dictionaries, base_body: BaseBody) -> bytes:
    if prefix.codec == CODEC_WIRE_ZSTD_PREFIX_BARE:
        if not prefix.base_position:
            raise BadRecord("a body compressed against a base names none")
        base = base_body(prefix.base_position)
        try:
            return wireform.prefix_decompress(prefix.body, base, MAX_BODY)
        except ValueError as e:
            raise BadRecord(f"undecodable event body against its base {prefix.base_position}: {e}") from e
    if prefix.base_position:
        raise BadRecord("a wire body names a delta base")
    return _body_of(prefix, dictionaries)


def wire_body(
    payload: bytes | memoryview, position: int, dictionaries: Dictionaries, base_body: BaseBody = no_base_body
) -> bytes | None:
    """The wire body (format 1.2 and 1.3) of a CRC-checked event payload, decompressed;
    None when the record is in an older form. ``base_body`` resolves its base."""
    prefix = EventPrefix(payload, position)
    if prefix.codec not in WIRE_CODECS:
        return None
    return _wire_body(prefix, dictionaries, base_body)


def stored_event(
    payload: bytes | memoryview,
    position: int,
    dictionaries: Dictionaries,
    base_body: BaseBody = no_base_body,
) -> StoredEvent | None:
    """A CRC-checked event payload in its wire form (format 1.2 and 1.3), undecoded; None
    when the record is in an older form (decode it with ``decode_event``). ``base_body``
    resolves the base a body is compressed against."""
    prefix = EventPrefix(payload, position)
    if prefix.codec not in WIRE_CODECS:
        return None
    return StoredEvent(
        _wire_body(prefix, dictionaries, base_body),
        position,
        prefix.account_id,
        prefix.recorded_at_ms,
        prefix.timestamp_ms,
    )


def event_of(stored: StoredEvent, include_lead: bool = True) -> Event:
    """The decoded event of a wire body; BadRecord when its fields do not decode."""
    try:
        return stored.event(include_lead)
    except (orjson.JSONDecodeError, ValueError, TypeError, IndexError) as e:
        raise BadRecord(f"undecodable event body: {e}") from e


def decode_event(
    payload: bytes | memoryview,
    position: int,
    dictionaries: Dictionaries,
    base_snapshot: Callable[[int], Mapping[str, Any]],
    include_lead: bool = True,
    base_body: BaseBody = no_base_body,
    keep_body: Callable[[bytes], None] | None = None,
) -> Event:
    """Decode a CRC-checked event payload. ``base_snapshot`` resolves 1.1 delta bases,
    ``base_body`` the bases of 1.3 bodies; ``keep_body`` is given a wire body, decompressed
    (a base of later ones)."""
    stored = stored_event(payload, position, dictionaries, base_body)
    if stored is not None:
        if keep_body is not None:
            keep_body(stored.body)
        return event_of(stored, include_lead)
    try:
        prefix = EventPrefix(payload, position)
        body = _body_of(prefix, dictionaries)
        fields = orjson.loads(body)
        (
            event_id,
            type_,
            lead_id,
            flow_id,
            entity_id,
            outcome,
            reason,
            duration_ms,
            integration,
            response_code,
            price,
            details,
            lead_part,
        ) = fields
    except BadRecord:
        raise
    except (zstandard.ZstdError, orjson.JSONDecodeError, ValueError, UnicodeDecodeError) as e:
        raise BadRecord(f"undecodable event body: {e}") from e
    if not include_lead:
        lead: Mapping[str, Any] = {}
    elif prefix.base_position:
        lead = apply_delta(base_snapshot(prefix.base_position), lead_part)
    else:
        lead = lead_part
    return Event(
        type=type_,
        lead_id=lead_id,
        flow_id=flow_id,
        id=event_id,
        timestamp_ms=prefix.timestamp_ms,
        entity_id=entity_id,
        outcome=Outcome(outcome),
        reason=reason,
        duration_ms=duration_ms,
        integration=integration,
        response_code=response_code,
        price=price,
        details=details,
        lead=lead,
        account_id=prefix.account_id,
        position=position,
        recorded_at_ms=prefix.recorded_at_ms,
    )


def snapshot_part(
    payload: bytes | memoryview, position: int, dictionaries: Dictionaries, base_body: BaseBody = no_base_body
) -> tuple[int, Any]:
    """(base position, snapshot-or-delta) of an event payload, for resolving chains."""
    stored = stored_event(payload, position, dictionaries, base_body)
    if stored is not None:
        return 0, stored.lead()
    prefix = EventPrefix(payload, position)
    return prefix.base_position, orjson.loads(_body_of(prefix, dictionaries))[BodyField.LEAD]


def _no_base(position: int) -> Mapping[str, Any]:
    raise StorageError(f"unexpected delta base {position}")
