"""``EventLog``: the storage engine's one entry point, a façade over its parts.

It owns a data directory (datadir.py) and, on open, has recovery check the
segments (recovery.py, quarantine.py), brings the derived LMDB index up to
the log's end, and starts the group-commit writer (writer.py). Reads go to
the reader (reader.py) and the queries over the index (query.py); retention,
erasure and rewrites get the narrow ``Maintenance`` interface
(maintenance.py), never this class. The rules that are the engine's, not a
caller's (a legal hold refuses an erasure), are checked here. See FORMAT.md
for the bytes and DESIGN.md for the rules.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future

import lmdb

from . import (
    chain_index,
    chain_verify,
    erasure,
    fingerprints,
    index_compaction,
    query,
    recovery,
    retention,
    retirement,
    stats,
    writer,
)
from .backup import Snapshot, Snapshots
from .chain import GENESIS, ChainPoint
from .checkpoints import Checkpointer
from .codec import Dictionaries, Trainer
from .datadir import DataDirectory
from .erasure import ErasureReport
from .errors import (
    ClosedError,
    DataDirectoryError,
    LegalHoldError,
    MetadataFileError,
    NotFoundError,
    NotWritableError,
    translated,
    translating,
)
from .event import (
    DEFAULT_ACCOUNT,
    AppendResult,
    Event,
    EventFields,
    EventFilter,
    Page,
    Progress,
    RetentionPolicy,
    RetentionReport,
    Stats,
    VerifyReport,
)
from .fields import Classify, FieldPolicies, FieldPolicy
from .fingerprints import LeadMatch, LeadPrints
from .follow import CommitNotice
from .index import Index
from .maintenance import StoreMaintenance
from .options import Options
from .quarantine import Quarantine
from .reader import Reader
from .segment import Segment
from .segment_list import SegmentList
from .signing import SignedCheckpoint, Signer, existing_signer, load_signer
from .ulid import new_event_id
from .validation import validate_batch
from .wirebody import StoredEvent
from .writer import CommitListener, GroupCommit


class EventLog:
    """A LeadTrail store on disk. Thread-safe; one process per data directory."""

    @classmethod
    def open(cls, path: str | os.PathLike[str], options: Options | None = None) -> EventLog:
        return cls(os.fspath(path), options or Options())

    @classmethod
    def open_follower(
        cls, path: str | os.PathLike[str], notice: CommitNotice, options: Options | None = None
    ) -> EventLog:
        """Open, for reading only, a store that another process writes (follow.py): no lock,
        no recovery, nothing written; ``follow_commit`` moves it along with the writer."""
        return cls(os.fspath(path), options or Options(read_only=True), follow=notice)

    def __init__(self, path: str, options: Options, *, follow: CommitNotice | None = None) -> None:
        self.path = path
        self.options = options
        self._following = follow
        self._index_inode = 0
        self._directory = DataDirectory(path, options.files)
        self._segments = SegmentList(self._directory.log_dir, options.files, options.max_open_segments)
        self._closed = False
        self._writer: GroupCommit | None = None
        self._trainer: Trainer | None = None
        self._index: Index | None = None
        self._maintenance_lock = threading.Lock()
        try:
            self._open()
        except OSError as e:
            self._release()
            raise DataDirectoryError(
                f"data directory {path} cannot be opened: {e.strerror or e} ({e.filename or path})"
            ) from e
        except BaseException:
            self._release()
            raise

    def _open(self) -> None:
        if self._following is not None:
            self._open_following(self._following)
            return
        directory, files, options = self._directory, self.options.files, self.options
        directory.lock()
        self.store_id = directory.store_id()
        directory.remove_leftovers()
        self.dictionaries = Dictionaries(
            directory.dictionaries_dir,
            files,
            options.compression_level,
            options.dictionary_bytes,
            self.store_id,
        )
        self._retention = retention.RetentionPolicies(self.path, files)
        self.fields = FieldPolicies(self.path, files)
        # Made even read-only: opening brings the index up to the log's end, lead search too.
        key = fingerprints.load_key(self.path, files, create=True)
        self._prints = None if key is None else LeadPrints(key, self._classifier)
        self._reader = Reader(self._require_index, self._segments, self.dictionaries)
        self._quarantine = Quarantine(directory.quarantine_dir, files, directory.retire)
        rewritten = recovery.recover(
            directory, self._segments, self._quarantine if options.quarantine else None
        )
        index = self._index = recovery.open_index(
            directory.index_dir,
            self.options.map_size,
            self.store_id,
            rewritten,
            self._segments,
            self._prints,
        )
        recovery.index_tail(index, self._segments, self._reader.segment_events, index.high_water)
        last = self._segments.last_position_on_disk
        self._segments.make_visible(last)
        chain_head = self._catch_up_chain()
        self._maintenance = StoreMaintenance(
            directory=directory,
            segments=self._segments,
            reader=self._reader,
            dictionaries=self.dictionaries,
            fields=self.fields,
            trainer=lambda: self._trainer,
            writer=lambda: self._writer,
            closed=lambda: self._closed,
            append=self.append,
            chain=self,
        )
        if options.read_only:
            return
        self._trainer, self._writer = writer.start(
            segments=self._segments,
            options=options,
            index=index,
            dictionaries=self.dictionaries,
            training_sample=functools.partial(erasure.training_sample, self.fields),
            stored_event=self._reader.stored_event,
            last_recorded_at=self._last_recorded_at(),
            chain_head=chain_head,
        )
        self._start_signing()

    # -- following another process's writer (follow.py) -------------------------------------

    def _open_following(self, notice: CommitNotice) -> None:
        directory, files = self._directory, self.options.files
        self.store_id = directory.existing_store_id()
        self._retention = retention.RetentionPolicies(self.path, files)
        self._quarantine = Quarantine(directory.quarantine_dir, files, directory.retire)
        key = fingerprints.load_key(self.path, files, create=False)
        self._prints = None if key is None else LeadPrints(key, self._classifier)
        self._index_inode = _inode(directory.index_dir)
        self._index = Index(directory.index_dir, self.options.map_size, readonly=True)
        self._segments.reload(notice.tail, notice.visible)
        self._load_followed_parts(0)
        self._maintenance = StoreMaintenance(
            directory=directory,
            segments=self._segments,
            reader=self._reader,
            dictionaries=self.dictionaries,
            fields=self.fields,
            trainer=lambda: None,
            writer=lambda: None,
            closed=lambda: self._closed,
            append=self.append,
            chain=self,
        )

    def _load_followed_parts(self, epoch: int) -> None:
        """The parts a follower reads anew after the writer changed them on disk."""
        files, options = self.options.files, self.options
        self.dictionaries = Dictionaries(
            self._directory.dictionaries_dir,
            files,
            options.compression_level,
            options.dictionary_bytes,
            self.store_id,
            read_only=True,
        )
        self.fields = FieldPolicies(self.path, files)
        reader = Reader(self._require_index, self._segments, self.dictionaries)
        # The rewrite epoch only ever grows: what was read before this reload is stale.
        for _ in range(epoch):
            reader.new_epoch()
        self._reader = reader

    def follow_commit(self, notice: CommitNotice, reload: bool = False) -> None:
        """A follower learns that the writer committed up to ``notice.visible``; a new
        maintenance epoch or dictionary (or ``reload``: the writer restarted) makes it
        reload segments, index and policies."""
        following = self._following
        if following is None or self._closed:
            return
        known = notice.dictionary == 0 or notice.dictionary in self.dictionaries.ids()
        if reload or notice.epoch != following.epoch or not known:
            self._reload_followed(notice)
        elif not self._segments.follow(notice.tail, notice.visible):
            self._segments.reload(notice.tail, notice.visible)

    def _reload_followed(self, notice: CommitNotice) -> None:
        with self._reader.swapping_index():
            inode = _inode(self._directory.index_dir)
            if inode != self._index_inode:  # the writer swapped in a new index
                # Closed first: LMDB refuses a second environment on one path in a process.
                # No reader holds it here (swapping_index).
                with contextlib.suppress(lmdb.Error):
                    self._require_index().env.close()
                self._index = Index(self._directory.index_dir, self.options.map_size, readonly=True)
                self._index_inode = inode
            self._segments.reload(notice.tail, notice.visible)
            self._load_followed_parts(self._reader.rewrite_epoch + 1)
        self._following = notice

    def _classifier(self, account_id: str) -> Classify:
        # Looked up each time: a follower reloads its field policies.
        return self.fields.classifier(account_id)

    # -- the hash chain (chain_index.py) ------------------------------------------

    def _catch_up_chain(self) -> ChainPoint:
        """Recompute the chain points the index lacks (after a crash, a rebuild)."""
        return chain_index.catch_up(
            self._require_index(), self._reader.read_stored_from, self._chain_boundary
        )

    def _chain_boundary(self, position: int) -> bytes | None:
        """The chain hash at a retired position, as a signed retirement record states it."""
        return self._retired_boundary(position)

    @translating("reading the hash chain")
    def chain_head(self) -> ChainPoint:
        """The chain point of the latest committed chained event (position 0: none yet)."""
        head = self._require_index().chain_head()
        return head if head is not None else ChainPoint(0, GENESIS, 0)

    @translating("reading the hash chain")
    def chain_point(self, position: int) -> ChainPoint:
        """The chain hash at ``position`` (FORMAT.md, "Hash chain"), recomputed from the
        nearest point the index keeps; NotFoundError when no chained event is there."""
        if not 0 < position <= self._segments.visible:
            raise NotFoundError(
                f"position {position} is not in the log (its last is {self._segments.visible})"
            )
        return chain_index.chain_point(
            self._require_index(),
            self.stored_at,
            self._reader.read_stored_from,
            position,
            self._chain_boundary,
        )

    @translating("reading the log")
    def stored_at(self, position: int) -> StoredEvent | None:
        """The record at ``position`` in its wire form, undecoded; None when none is there."""
        with self._reader.reading() as index, index.env.begin() as txn:
            return self._reader.stored_at(txn, position)

    def _last_recorded_at(self) -> int:
        last = self._segments.last_event_position
        stored = self._reader.stored_event(last).recorded_at_ms if last else 0
        return max(stored, self._directory.recorded_at_floor())

    # -- appends --------------------------------------------------------------

    def submit(self, events: Sequence[Event]) -> Future[list[AppendResult]]:
        """Validate and queue a batch; the future resolves once it is durable."""
        writer = self._require_writer()
        leads_json = validate_batch(events, self.options)
        prepared = [e if e.id else _named(e) for e in events]
        if not prepared:
            done: Future[list[AppendResult]] = Future()
            done.set_result([])
            return done
        return writer.submit(prepared, leads_json)

    def append(self, events: Sequence[Event]) -> list[AppendResult]:
        return self.submit(events).result()

    def add_commit_listener(self, listener: CommitListener) -> None:
        """``listener(events)`` runs on the writer thread after each durable commit."""
        self._require_writer().listeners.append(listener)

    def remove_commit_listener(self, listener: CommitListener) -> None:
        writer = self._writer
        if writer is not None and listener in writer.listeners:
            writer.listeners.remove(listener)

    @property
    def writable(self) -> bool:
        return self._writer is not None and self._writer.failure is None and not self._closed

    @property
    def last_position(self) -> int:
        return self._segments.visible

    # -- reads (a closed store answers ClosedError from the reader's index) -------

    @translating("reading an event")
    def get(self, event_id: str, account_id: str = DEFAULT_ACCOUNT) -> Event | None:
        return query.get(self._reader, event_id, account_id)

    @translating("reading a timeline")
    def timeline(self, lead_id: str, account_id: str = DEFAULT_ACCOUNT) -> list[Event]:
        return query.timeline(self._reader, lead_id, account_id)

    @translating("reading a timeline")
    def lead_events(
        self,
        lead_id: str,
        account_id: str = DEFAULT_ACCOUNT,
        *,
        start: tuple[int, int] | None = None,
        limit: int = 1000,
        descending: bool = False,
        include_lead: bool = True,
    ) -> list[Event]:
        """At most ``limit`` events of a lead in (timestamp, position) order (reversed when
        ``descending``), beginning at the key ``start`` = (timestamp_ms, position), inclusive."""
        return query.lead_events(self._reader, lead_id, account_id, start, limit, descending, include_lead)

    @translating("scanning events")
    def scan(
        self,
        filter: EventFilter | None = None,
        *,
        after: str | None = None,
        limit: int = 100,
        descending: bool = False,
        include_lead: bool = True,
    ) -> Page:
        return query.scan(self._reader, filter or EventFilter(), after, limit, descending, include_lead)

    # -- the same reads in the wire form: answers spliced from stored bytes ------------

    @translating("reading an event")
    def get_stored(self, event_id: str, account_id: str = DEFAULT_ACCOUNT) -> StoredEvent | None:
        return query.get_stored(self._reader, event_id, account_id)

    @translating("reading a timeline")
    def lead_size(self, lead_id: str, account_id: str = DEFAULT_ACCOUNT) -> int:
        """How many events a lead has, from the index alone (an upper bound: a lead whose
        key shares a hash with another's counts that one's events too)."""
        return query.lead_size(self._reader, lead_id, account_id)

    @translating("reading a timeline")
    def lead_sizes(self, leads: Sequence[tuple[str, str]]) -> list[int]:
        """``lead_size`` of each (lead_id, account_id), in one read transaction."""
        return query.lead_sizes(self._reader, leads)

    @translating("reading a timeline")
    def lead_stored(
        self,
        lead_id: str,
        account_id: str = DEFAULT_ACCOUNT,
        *,
        start: tuple[int, int] | None = None,
        limit: int = 1000,
        descending: bool = False,
    ) -> list[StoredEvent]:
        return query.lead_stored(self._reader, lead_id, account_id, start, limit, descending)

    @translating("scanning events")
    def scan_stored(
        self,
        filter: EventFilter | None = None,
        *,
        after: str | None = None,
        limit: int = 100,
        descending: bool = False,
    ) -> tuple[list[StoredEvent], str | None]:
        """``scan`` in the wire form: (events, cursor of the next page or None)."""
        return query.scan_stored(self._reader, filter or EventFilter(), after, limit, descending)

    @translating("finding leads")
    def find_leads(
        self,
        field: str,
        value: str,
        account_id: str = DEFAULT_ACCOUNT,
        *,
        visible: Callable[[EventFields], bool] | None = None,
        limit: int = fingerprints.MAX_LEADS,
    ) -> list[LeadMatch]:
        """The account's leads whose snapshot held ``value`` in the personal field ``field``
        (``email``, ``phone*`` or a field the account's policy classes ``pii``; see
        fingerprints.py), most recently active first, each with the span and count of its
        events ``visible`` admits (all of them when None). Empty for a field that is not
        searchable (``searchable`` says which are)."""
        prints = self._prints
        if prints is None:  # a follower of a store whose writer has not made its key yet
            return []
        return fingerprints.find_leads(self._reader, prints, account_id, field, value, visible, limit)

    def searchable(self, field: str, account_id: str = DEFAULT_ACCOUNT) -> bool:
        """Whether ``find_leads`` searches ``field`` in the account."""
        return fingerprints.searchable(field, self.fields.classifier(account_id)) is not None

    @property
    def rewrites(self) -> int:
        """Counts segment rewrites (erasure, retention): what was read before a change of
        this number may hold content no longer in the store."""
        return self._reader.rewrite_epoch

    def read_from(self, position: int = 1, *, limit: int | None = None) -> Iterator[Event]:
        """Every visible event with a position >= ``position``, in position order."""
        self._require_index()
        with translated("reading the log"):
            yield from self._reader.read_from(position, limit=limit)

    def read_stored_from(self, position: int = 1, *, limit: int | None = None) -> Iterator[StoredEvent]:
        """``read_from`` in the wire form: answers spliced from the stored bytes."""
        self._require_index()
        with translated("reading the log"):
            yield from self._reader.read_stored_from(position, limit=limit)

    # -- administration -------------------------------------------------------

    @translating("measuring the store")
    def stats(self) -> Stats:
        reader, fsync = self._reader, str(self.options.fsync)
        return stats.measure(
            self._directory, self._segments, reader.reading, self.dictionaries, fsync, self.writable
        )

    @translating("verifying the store")
    def verify(self, *, progress: Progress | None = None) -> VerifyReport:
        """Re-read every record of every segment; name each damaged range.

        ``progress(done, total)`` is called with segments checked."""
        self._require_index()
        reader = self._reader
        return recovery.verify(
            self._segments, reader.reading, reader.segment_events, self._quarantine, progress
        )

    @translating("reading the quarantine report")
    def quarantined(self) -> list[str]:
        return self._quarantine.report()

    @translating("rebuilding the index")
    def reindex(self, *, progress: Progress | None = None) -> int:
        """Rebuild every index from the log; returns the number of events indexed.

        The new index is built beside the old one, which serves reads meanwhile, and
        swapped in. ``progress(done, total)`` is called with segments indexed."""
        self._require_index()
        with self._maintenance_lock:
            build = functools.partial(
                recovery.rebuild_index,
                map_size=self.options.map_size,
                store_id=self.store_id,
                segments=self._segments,
                events=self._reader.segment_events,
                progress=progress,
                prints=self._prints,
            )

            def rebuild() -> None:
                self._replace_index(build)
                self._catch_up_chain()

            self._exclusively(rebuild)
            self._reader.new_epoch()
            return self._require_index().event_count

    def _replace_index(self, build: Callable[[str], None]) -> None:
        """Build a new index beside the current one, then swap it in (index_compaction.py).
        Runs where nothing else writes the index: on the writer thread, or with no writer."""
        fresh = index_compaction.prepare(self._directory.index_dir, build, self.options.files)
        with self._reader.swapping_index():
            self._index = index_compaction.swap(self._require_index(), fresh, self.options.files)
            if self._writer is not None:
                self._writer.use_index(self._index)

    def _exclusively(self, step: Callable[[], None]) -> None:
        if self._writer is not None:
            self._writer.call(step).result()
        else:
            step()

    @translating("saving a retention policy")
    def set_retention_policy(self, policy: RetentionPolicy) -> None:
        with self._maintenance_lock:
            self._retention.set(policy)

    def retention_policies(self) -> list[RetentionPolicy]:
        return self._retention.all()

    @translating("saving a field policy")
    def set_field_policy(self, policy: FieldPolicy) -> FieldPolicy:
        with self._maintenance_lock:
            return self.fields.set(policy)

    @translating("erasing a lead")
    def erase_lead(
        self,
        lead_id: str,
        account_id: str = DEFAULT_ACCOUNT,
        *,
        requested_by: str = "",
        reason: str = "",
        progress: Progress | None = None,
    ) -> ErasureReport | None:
        """Erase the personal data of a lead's events recorded so far (see erasure.py) and
        record an ``audit.erased`` event; None when the account has no such lead.

        Refused with ``LegalHoldError`` while the account is under a legal hold.
        ``progress(done, total)`` is called with segments rewritten."""
        self._require_writer()
        with self._maintenance_lock:
            if self._retention.held(account_id):
                raise LegalHoldError(
                    f"account {account_id!r} is under a legal hold: nothing of it may be erased "
                    "until it is lifted"
                )
            return erasure.erase_lead(self._maintenance, account_id, lead_id, requested_by, reason, progress)

    @translating("applying retention")
    def apply_retention(
        self,
        now_ms: int | None = None,
        account_id: str | None = None,
        *,
        progress: Progress | None = None,
    ) -> RetentionReport:
        """Remove what the policies expire at ``now_ms``; only ``account_id``'s events when given.

        ``progress(done, total)`` is called with segments swept."""
        self._require_index()
        with self._maintenance_lock:
            now = self.options.clock_ms() if now_ms is None else now_ms
            report = retention.apply(self._maintenance, self._retention.of(account_id), now, progress)
            if report.events_removed or report.segments_rewritten:
                # Give back the index pages retention freed: a copy of what is left.
                self._exclusively(lambda: self._replace_index(self._require_index().copy_live))
            return report

    @property
    def trainer(self) -> Trainer | None:
        return self._trainer

    @property
    def segments(self) -> list[Segment]:
        return self._segments.all()

    # -- verify: chain verification (chain_verify.py) -----------------------------

    @translating("verifying the chain")
    def verify_chain(
        self,
        from_position: int = 0,
        from_chain_hash: bytes = b"",
        checkpoint: chain_verify.Checkpoint | None = None,
        progress: Progress | None = None,
    ) -> chain_verify.ChainReport:
        """Walk the hash chain (chain_verify.py) from the first event, or after
        ``from_position`` trusting ``from_chain_hash`` there (a checkpoint kept earlier),
        and against ``checkpoint`` when given: the first position edited, inserted,
        reordered or removed, every signed record checked with the store's key.
        ``progress(done, total)`` is called with segments walked."""
        self._require_index()
        try:
            public_key: bytes | None = self.public_key
        except MetadataFileError:
            public_key = None  # a store whose writer never ran has signed nothing
        retirements = functools.partial(retirement.load, self.path)
        return chain_verify.verify_chain(
            self,
            public_key,
            retirements,
            self._erasures,
            from_position,
            from_chain_hash,
            checkpoint,
            progress,
        )

    def _erasures(self) -> dict[tuple[str, str], int]:
        with self._reader.reading() as index, index.env.begin() as txn:
            accounts = list(index.account_events(txn))
        return chain_verify.erasures(self, accounts)

    _retired_cache: tuple[tuple[int, int], dict[int, bytes]] | None = None

    def _retired_boundary(self, position: int) -> bytes | None:
        """The chain hash at ``position`` as a signed retirement record states it (None when
        none does): where the chain is taken up after positions retention removed (the
        index's catch-up after a rebuild, a chain point across a gap)."""
        path = os.path.join(self.path, retirement.RETIREMENTS_FILE)
        try:
            status = os.stat(path)
        except FileNotFoundError:
            return None
        mark = (status.st_mtime_ns, status.st_size)
        cached = self._retired_cache
        if cached is None or cached[0] != mark:
            # Read again only when the file changed: a catch-up asks at every gap.
            try:
                records = retirement.load(self.path)
            except MetadataFileError:
                records = []  # the store still opens; verify_chain reports the file
            ends = {run.last: run.chain_hash for r in records if r.signed for run in r.runs}
            cached = self._retired_cache = (mark, ends)
        return cached[1].get(position)

    # -- sign: signing key and checkpoints (signing.py, checkpoints.py) -------------

    _signer: Signer | None = None
    _checkpointer: Checkpointer | None = None

    def _start_signing(self) -> None:
        """A writable store makes its key if it has none, and starts signing checkpoints."""
        signer = self._signer = load_signer(self.path, self.options.files, create=True)
        if signer is None or not self.options.checkpoints:
            return
        head = self.chain_head()
        last = next(iter(self.read_from(head.position, limit=1)), None) if head.position else None
        self._checkpointer = Checkpointer(
            signer, self.chain_head, self.append, self.options.checkpoint_interval_s, last
        )
        self._checkpointer.start()

    def _stop_signing(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.close()

    def _require_signer(self) -> Signer:
        # A read-only store or a follower loads the key its writer made, when it needs it.
        if self._signer is None:
            self._signer = existing_signer(self.path, self.options.files)
        return self._signer

    @property
    def public_key(self) -> bytes:
        """The store's Ed25519 public key (raw, 32 bytes): every checkpoint verifies with it."""
        return self._require_signer().public_key

    def checkpoint(self, position: int = 0) -> SignedCheckpoint:
        """The chain hash at ``position`` (0: the chain head), signed; ``NotFoundError`` when
        the position holds no chained event (beyond the end, retired, written unchained)."""
        signer = self._require_signer()
        point = self.chain_head() if position == 0 else self.chain_point(position)
        return signer.sign_checkpoint(point)

    # -- backup: consistent copies of the data directory (backup.py) --------------

    _snapshots: Snapshots | None = None

    @translating("taking a backup snapshot")
    def backup_snapshot(self) -> Snapshot:
        """The data directory at the committed position, staged (backup.py) between two commit
        groups while no maintenance runs: appends wait for the hard links, not for a copy.
        ``close`` the snapshot once copied."""
        self._require_index()
        with self._maintenance_lock:
            if self._snapshots is None:
                self._snapshots = Snapshots(self.path)
            snapshots = self._snapshots
            taken: list[Snapshot] = []

            def stage() -> None:
                # On the writer thread: the last segment's size is what the writer committed.
                position, chain = self.last_position, self.chain_head()
                taken.append(snapshots.take(position, chain, self.store_id, self._segments.all()))

            self._exclusively(stage)
            return taken[0]

    # -- lifecycle --------------------------------------------------------------

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._release()

    def _release(self) -> None:
        self._stop_signing()
        if self._writer is not None:
            self._writer.close()
        if self._trainer is not None:
            # A dictionary being trained is written before the store lets go of its files.
            self._trainer.close()
        if self._index is not None:
            with contextlib.suppress(lmdb.Error):
                if self._following is not None:
                    self._index.env.close()  # read-only: nothing to sync
                else:
                    self._index.close()
        self._segments.close()
        self._directory.release()

    def __enter__(self) -> EventLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _require_writer(self) -> GroupCommit:
        if self._closed:
            raise ClosedError("the store is closed")
        if self._writer is None:
            raise NotWritableError("the store was opened read-only")
        return self._writer

    def _require_index(self) -> Index:
        if self._closed or self._index is None:
            raise ClosedError("the store is closed")
        return self._index


def _inode(path: str) -> int:
    try:
        return os.stat(path).st_ino
    except FileNotFoundError:
        return 0


def _named(event: Event) -> Event:
    """``event`` with an id assigned by the store."""
    named = event.copy()
    named.id = new_event_id()
    return named
