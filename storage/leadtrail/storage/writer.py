"""The only code that writes to the log: group commit on one writer thread.

Appenders queue their (already validated) batches and wait on a future. The
writer thread takes everything queued, assigns positions, encodes, writes it
with one ``write`` and makes it durable with one ``fdatasync``, indexes it in
one LMDB transaction, and only then resolves the futures. Throughput comes
from sharing that fsync, never from acknowledging early.

Any failed write or fsync poisons the writer: the batch in flight and every
later one fail with ``NotWritableError`` until the store is reopened and
recovery has established what actually reached the disk.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

from crc32c import crc32c

from . import ingest
from .chain import Chainer, ChainPoint
from .codec import Dictionaries, EventEncoder, EventPrefix, Trainer, encode_body
from .errors import ClosedError, NotWritableError
from .event import AppendResult, Event
from .format import (
    FLAG_COMMIT,
    KIND_EVENT,
    SEGMENT_HEADER_SIZE,
    encode_record,
    encode_seal,
    encode_segment_header,
    mark_write_end,
    segment_name,
)
from .fs import Files
from .index import CHAIN_ANCHOR_EVERY, Index, Located
from .options import FsyncPolicy, Options
from .segment import Segment
from .segment_list import SegmentList

MAX_GROUP_EVENTS = 20_000
_UNKNOWN = b"?"
"""Not yet looked up (an account key is 4 bytes or None)."""

CommitListener = Callable[[list[Event]], None]


@dataclass(slots=True)
class ActiveSegment:
    """The segment being appended to, as the writer sees it."""

    base: int
    fd: int
    size: int
    crc: int
    """CRC32C of every byte written to the file so far (the seal's checksum)."""
    event_count: int
    last_position: int
    sealed: bool = False


class _Request:
    __slots__ = ("call", "events", "future", "leads_json")

    def __init__(
        self,
        events: list[Event] | None,
        call: Callable[[], Any] | None = None,
        leads_json: list[bytes] | None = None,
    ) -> None:
        self.events = events
        self.leads_json = leads_json
        self.call = call
        self.future: Future[Any] = Future()


class Syncer:
    """Runs the writer's fdatasync calls on a thread of its own, one at a time, so that the
    writer can index a group while the group's bytes are being made durable."""

    def __init__(self, files: Files) -> None:
        self._files = files
        self._pool: ThreadPoolExecutor | None = None

    def sync(self, fd: int) -> Future[None]:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="leadtrail-fsync")
        return self._pool.submit(self._files.fsync, fd)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


class SegmentSteps(Protocol):
    """Where the writer reports the segments it makes: readers see the log through it."""

    def created(self, base: int) -> None: ...

    def sealed(self, base: int, size: int, event_count: int, last_position: int) -> None: ...

    def committed(self, base: int, size: int, event_count: int, last_position: int, visible: int) -> None:
        """A group is durable and indexed: readers may see positions up to ``visible``."""


class GroupCommit:
    def __init__(
        self,
        *,
        directory: str,
        active: ActiveSegment,
        next_position: int,
        last_recorded_at: int,
        segment_bytes: int,
        fsync: FsyncPolicy,
        files: Files,
        index: Index,
        encoder: EventEncoder,
        clock_ms: Callable[[], int],
        segments: SegmentSteps,
        stored_event: Callable[[int], Event],
    ) -> None:
        self._dir = directory
        self.active = active
        self.next_position = next_position
        self._last_recorded_at = last_recorded_at
        self._segment_bytes = segment_bytes
        self._fsync = fsync
        self._files = files
        self._index = index
        self._encoder = encoder
        self._clock = clock_ms
        self._segments = segments
        self._stored_event = stored_event
        self._queue: deque[_Request] = deque()
        self._cond = threading.Condition()
        self._closing = False
        self._dirty_since: float | None = None
        self.failure: NotWritableError | None = None
        self.listeners: list[CommitListener] = []
        self._syncer = Syncer(files)
        self._thread = threading.Thread(target=self._run, name="leadtrail-writer", daemon=True)
        self._thread.start()

    @property
    def last_recorded_at(self) -> int:
        return self._last_recorded_at

    # -- the appenders' side -----------------------------------------------

    def submit(
        self, events: list[Event], leads_json: list[bytes] | None = None
    ) -> Future[list[AppendResult]]:
        """Queue validated events; ``leads_json`` is each one's snapshot as JSON, if known."""
        return self._enqueue(_Request(events, leads_json=leads_json))

    def call(self, fn: Callable[[], Any]) -> Future[Any]:
        """Run ``fn`` on the writer thread between two groups (exclusive access)."""
        return self._enqueue(_Request(None, fn))

    def _enqueue(self, request: _Request) -> Future[Any]:
        with self._cond:
            if self._closing:
                raise ClosedError("the store is closed")
            if self.failure is not None and request.events is not None:
                raise self.failure
            self._queue.append(request)
            self._cond.notify()
        return request.future

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join()
        self._syncer.close()
        if self.active.fd >= 0:
            try:
                if self.failure is None:
                    self._files.fsync(self.active.fd)
            except OSError:
                pass
            self._files.close(self.active.fd)
            self.active.fd = -1

    # -- the writer thread --------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    timeout = self._fsync_due_in()
                    if timeout is not None and timeout <= 0:
                        break
                    self._cond.wait(timeout)
                if not self._queue and self._closing:
                    break
                group: list[_Request] = []
                count = 0
                while self._queue and count < MAX_GROUP_EVENTS:
                    request = self._queue[0]
                    if request.call is not None:
                        if group:
                            break
                        self._queue.popleft()
                        if request.future.set_running_or_notify_cancel():
                            group.append(request)
                        break
                    self._queue.popleft()
                    # A caller that gave up before its batch was taken (a cancelled
                    # future) has no answer to wait for, so the batch is not written;
                    # once taken, the future cannot be cancelled and always gets its result.
                    if not request.future.set_running_or_notify_cancel():
                        continue
                    group.append(request)
                    count += len(request.events or ())
            if not group:
                self._interval_fsync()
                continue
            if group[0].call is not None:
                self._run_call(group[0])
            else:
                self._commit(group)
        self._interval_fsync(force=True)

    def _run_call(self, request: _Request) -> None:
        try:
            assert request.call is not None
            request.future.set_result(request.call())
        except BaseException as e:
            request.future.set_exception(e)

    def _fsync_due_in(self) -> float | None:
        if self._dirty_since is None or self._fsync.always:
            return None
        return self._dirty_since + self._fsync.interval_ms / 1000 - time.monotonic()

    def _interval_fsync(self, force: bool = False) -> None:
        if self._dirty_since is None or self.failure is not None:
            return
        due = self._fsync_due_in()
        if force or (due is not None and due <= 0):
            try:
                self._files.fsync(self.active.fd)
                self._dirty_since = None
            except OSError as e:
                self._fail(e)

    def _fail(self, error: OSError) -> NotWritableError:
        if self.failure is None:
            self.failure = NotWritableError(
                f"the log could not be written ({error.strerror or error}); "
                "the store is read-only until it is restarted",
                errno=error.errno,
            )
            self.failure.__cause__ = error
        return self.failure

    def _commit(self, group: list[_Request]) -> None:
        if self.failure is not None:
            for request in group:
                request.future.set_exception(self.failure)
            return
        try:
            outcome = self._write_group(group)
        except OSError as e:
            failure = self._fail(e)
            for request in group:
                if not request.future.done():
                    request.future.set_exception(failure)
            return
        except BaseException as e:
            # Nothing here is expected: the log may hold part of this group,
            # so the writer stops acknowledging anything until a restart
            # recovers from what is on disk. A bug must fail callers, not hang them.
            failure = NotWritableError(
                f"append failed unexpectedly ({e!r}); the store is read-only until it is restarted"
            )
            failure.__cause__ = e
            if self.failure is None:
                self.failure = failure
            for request in group:
                if not request.future.done():
                    request.future.set_exception(failure)
            return
        results, stored = outcome
        for request, result in zip(group, results, strict=True):
            request.future.set_result(result)
        if stored:
            for listener in list(self.listeners):
                try:
                    listener(stored)
                except Exception:  # a listener never breaks the write path
                    pass

    def _write_group(self, group: list[_Request]) -> tuple[list[list[AppendResult]], list[Event]]:
        now = max(self._clock(), self._last_recorded_at)
        buffer: list[bytes] = []
        buffered = 0
        located: list[Located] = []
        stored: list[Event] = []
        # (account, id) -> its result and the event it stands for, as stored.
        pending: dict[tuple[str, str], tuple[AppendResult, Event]] = {}
        all_results: list[list[AppendResult]] = []
        position = self.next_position
        index = self._index
        # An account's ``ids`` key prefix, looked up once a group (None: no event of it yet).
        account_keys: dict[str, bytes | None] = {}
        make_id_key = ingest.id_key
        chainer = self._encoder.chainer
        chain_points: list[ChainPoint] = []
        with index.env.begin() as txn:
            for request in group:
                assert request.events is not None
                if (
                    self.active.size + buffered >= self._segment_bytes
                    and (self.active.event_count or buffered)
                ) or self.active.sealed:
                    self._flush(buffer)
                    buffer, buffered = [], 0
                    self._roll(position)
                results: list[AppendResult] = []
                last_new = -1
                fresh: list[tuple[Event, bytes | None, bytes | None, AppendResult]] = []
                leads_json = request.leads_json
                for i, event in enumerate(request.events):
                    account = event.account_id
                    key = (account, event.id)
                    first = pending.get(key)
                    id_key = None
                    if first is None:
                        acct = account_keys.get(account, _UNKNOWN)
                        if acct is _UNKNOWN:
                            acct = account_keys[account] = index.account_key(txn, account)
                        if acct is not None:
                            id_key = make_id_key(acct, event.id)
                        original = None if id_key is None else index.position_at(txn, id_key)
                        if original is not None:
                            kept = self._stored_event(original)
                            first = AppendResult(event.id, original, kept.recorded_at_ms, True), kept
                            pending[key] = first
                    if first is not None:
                        kept_result, kept = first
                        dup = AppendResult(
                            kept_result.id,
                            kept_result.position,
                            kept_result.recorded_at_ms,
                            True,
                            conflicts(kept, event),
                        )
                        results.append(dup)
                        continue
                    stored_event = _stored(event, position, now)
                    result = AppendResult(event.id, position, now, False)
                    pending[key] = result, stored_event
                    results.append(result)
                    fresh.append(
                        (stored_event, leads_json[i] if leads_json is not None else None, id_key, result)
                    )
                    last_new = len(fresh) - 1
                    position += 1
                # The request's records, one after the other in the active segment; its
                # count and last position are set once the request is encoded.
                active, encoder = self.active, self._encoder
                encode, base, start = encoder.encode, active.base, active.size
                for i, (stored_event, lead_json, id_key, result) in enumerate(fresh):
                    payload = encode(stored_event, stored_event.position, base, lead_json)
                    if chainer is not None:
                        result.chain_hash = chainer.chain_hash
                        if not chainer.position % CHAIN_ANCHOR_EVERY:
                            chain_points.append(chainer.head)
                    flags = KIND_EVENT | (FLAG_COMMIT if i == last_new else 0)
                    record = encode_record(flags, stored_event.position, payload)
                    buffer.append(record)
                    located.append(
                        Located(stored_event, base, start + buffered, encoder.last_raw_bytes, id_key)
                    )
                    buffered += len(record)
                if fresh:
                    stored.extend(item[0] for item in fresh)
                    active.event_count += len(fresh)
                    active.last_position = fresh[-1][0].position
                all_results.append(results)
        self._flush(buffer)
        if stored:
            # The group's index entries are put while its bytes reach the disk (the
            # fdatasync runs on a thread of its own and lets go of the GIL), and become
            # visible only once they are durable: the transaction commits after the sync.
            syncing = self._syncer.sync(self.active.fd) if self._fsync.always else None
            try:
                if chainer is not None and (
                    not chain_points or chain_points[-1].position != chainer.position
                ):
                    chain_points.append(chainer.head)  # the head, kept with each group
                staged = self._index.stage(located, position - 1, chain_points)
            finally:
                if syncing is not None:
                    synced = syncing.exception()  # waited for even when staging failed
            if syncing is not None and synced is not None:
                staged.abort()
                raise synced
            if not self._fsync.always and self._dirty_since is None:
                self._dirty_since = time.monotonic()
            staged.commit()
            self._last_recorded_at = now
            self.next_position = position
            active = self.active
            self._segments.committed(
                active.base, active.size, active.event_count, active.last_position, position - 1
            )
        return all_results, stored

    def _flush(self, buffer: list[bytes]) -> None:
        if not buffer:
            return
        # One write, fsynced before the next one: its last record says where it ends, so that
        # recovery can tell sectors of this write lost in a power cut from damage to an
        # earlier, acknowledged one (FORMAT.md, recovery rule 1).
        buffer[-1] = mark_write_end(buffer[-1])
        data = b"".join(buffer)
        self._files.write(self.active.fd, data)
        self.active.crc = crc32c(data, self.active.crc)
        self.active.size += len(data)

    def _roll(self, next_position: int) -> None:
        """Seal the active segment and start the next one at ``next_position``."""
        if not self.active.sealed:
            # The records before the seal are made durable first. Written back together,
            # the seal's sector could reach the disk and a record's before it not (a power
            # cut keeps no order within a file): a valid seal after damage is corruption
            # to recovery (rule 1), and the store would refuse to open over records that
            # were never acknowledged. Once a roll: nothing to write back costs little.
            self._files.fsync(self.active.fd)
            seal = encode_seal(self.active.crc, self.active.event_count, self.active.last_position)
            self._files.write(self.active.fd, seal)
            self.active.size += len(seal)
            self._files.fsync(self.active.fd)
            self.active.sealed = True
            self._segments.sealed(
                self.active.base, self.active.size, self.active.event_count, self.active.last_position
            )
        self._dirty_since = None
        path = os.path.join(self._dir, segment_name(next_position))
        fd = self._files.open_for_append(path)
        try:
            header = encode_segment_header(next_position)
            self._files.write(fd, header)
            self._files.fsync(fd)
            self._files.fsync_dir(self._dir)
        except OSError:
            self._files.close(fd)
            raise
        self._files.close(self.active.fd)
        self.active = ActiveSegment(next_position, fd, SEGMENT_HEADER_SIZE, crc32c(header), 0, 0)
        self._encoder.forget_segment()
        self._segments.created(next_position)

    def use_index(self, index: Index) -> None:
        """Writer thread only: index into ``index`` from now on (it replaced the old one)."""
        self._index = index

    def forget_lead(self, account_id: str, lead_id: str) -> None:
        """Writer thread only: forget what the encoder keeps of a lead (after an erasure)."""
        self._encoder.forget_lead(account_id, lead_id)

    def roll_now(self) -> None:
        """Seal the active segment now (writer thread only), e.g. before retention."""
        if self.failure is not None:
            raise self.failure
        if self.active.event_count == 0:
            return
        try:
            self._roll(self.next_position)
        except OSError as e:
            raise self._fail(e) from e


def conflicts(stored: Event, sent: Event) -> bool:
    """A re-sent id whose event is not the one stored: another type, lead, flow or time
    (a sent time left unset is filled by the store and differs from nothing)."""
    return (
        stored.type != sent.type
        or stored.lead_id != sent.lead_id
        or stored.flow_id != sent.flow_id
        or (bool(sent.timestamp_ms) and sent.timestamp_ms != stored.timestamp_ms)
    )


def open_active(segments: SegmentList, files: Files) -> ActiveSegment:
    """The last segment opened for appending (the first one created in a new store)."""
    if not len(segments):
        path = os.path.join(segments.directory, segment_name(1))
        fd = files.open_for_append(path)
        files.write(fd, encode_segment_header(1))
        files.fsync(fd)
        files.fsync_dir(segments.directory)
        files.close(fd)
        segments.replace([Segment(segments.directory, 1)])
    last = segments.all()[-1]
    data = last.read_all()
    fd = files.open_for_append(last.path)
    return ActiveSegment(
        base=last.base,
        fd=fd,
        size=len(data),
        crc=crc32c(data),
        event_count=last.event_count,
        last_position=last.last_position,
        sealed=last.sealed,
    )


def start(
    *,
    segments: SegmentList,
    options: Options,
    index: Index,
    dictionaries: Dictionaries,
    training_sample: Callable[[str, bytes], bytes],
    stored_event: Callable[[int], Event],
    last_recorded_at: int,
    chain_head: ChainPoint,
) -> tuple[Trainer, GroupCommit]:
    """The dictionary trainer and the writer thread of a store opened for writing."""
    files = options.files
    active = open_active(segments, files)
    trainer = Trainer(
        dictionaries, options.dictionary_training_samples, options.retrain_ratio_decay, training_sample
    )
    writer = GroupCommit(
        directory=segments.directory,
        active=active,
        next_position=max(segments.last_position_on_disk + 1, 1),
        last_recorded_at=last_recorded_at,
        segment_bytes=options.segment_bytes,
        fsync=options.fsync,
        files=files,
        index=index,
        encoder=_encoder(dictionaries, trainer, options, chain_head),
        clock_ms=options.clock_ms,
        segments=segments,
        stored_event=stored_event,
    )
    return trainer, writer


def _encoder(
    dictionaries: Dictionaries, trainer: Trainer, options: Options, chain_head: ChainPoint
) -> EventEncoder:
    """The writer's encoder; wire bodies (format 1.2 on) are chained from ``chain_head``."""
    json_form = options.record_form == "json"
    encoder = EventEncoder(dictionaries, trainer, json_form=json_form)
    if not json_form:
        encoder.chainer = Chainer(chain_head)
    return encoder


def _stored(e: Event, position: int, now: int) -> Event:
    """The event as committed."""
    stored = e.copy()
    stored.position = position
    stored.recorded_at_ms = now
    stored.seal = None  # an event read from a store and appended again is chained anew
    if stored.timestamp_ms is None:
        stored.timestamp_ms = now
    return stored


def recorded_at_from_payload(payload: bytes | memoryview) -> int:
    return int(EventPrefix(payload).recorded_at_ms)


__all__ = ["ActiveSegment", "CommitListener", "GroupCommit", "SegmentSteps", "encode_body"]
