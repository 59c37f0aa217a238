"""How a store is opened: limits, fsync policy, segment size."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .errors import InvalidArgumentError
from .fs import OS_FILES, Files

MiB = 1024 * 1024

DEFAULT_MAX_OPEN_SEGMENTS = 128
MIN_MAX_OPEN_SEGMENTS = 2
MAX_MAX_OPEN_SEGMENTS = 1_000_000


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class FsyncPolicy:
    """``always``: an append is acknowledged only after its bytes are fsynced.

    ``interval:MS``: appends are acknowledged once written to the OS, and the
    log is fsynced at most MS milliseconds later. A process crash loses
    nothing (the bytes are in the kernel), but a power loss or kernel crash
    can lose up to MS milliseconds of acknowledged events.
    """

    interval_ms: int = 0

    @property
    def always(self) -> bool:
        return self.interval_ms == 0

    @classmethod
    def parse(cls, text: str) -> FsyncPolicy:
        if text == "always":
            return cls(0)
        match = re.fullmatch(r"interval:(\d{1,6})", text)
        if not match or int(match.group(1)) == 0:
            raise InvalidArgumentError(
                f"fsync policy {text!r}: expected 'always' or 'interval:MS' with MS in 1..999999"
            )
        return cls(int(match.group(1)))

    def __str__(self) -> str:
        return "always" if self.always else f"interval:{self.interval_ms}"


@dataclass(frozen=True)
class Options:
    segment_bytes: int = 64 * MiB
    fsync: FsyncPolicy = field(default_factory=FsyncPolicy)
    max_events_per_append: int = 1000
    max_snapshot_bytes: int = 64 * 1024
    """Limit on the JSON encoding of one event's ``lead`` snapshot."""
    max_details_bytes: int = 64 * 1024
    quarantine: bool = False
    """Open a store with mid-log corruption by moving the damaged ranges aside."""
    read_only: bool = False
    map_size: int = 1 << 40
    """Upper bound of the LMDB index (address space, not disk)."""
    dictionary_training_samples: int = 2000
    """Snapshots gathered before the first zstd dictionary is trained."""
    dictionary_bytes: int = 32 * 1024
    retrain_ratio_decay: float = 0.75
    """Retrain when the recent ratio falls below this fraction of the ratio at training."""
    compression_level: int = 3
    clock_ms: Callable[[], int] = wall_clock_ms
    record_form: str = "wire"
    """How new records hold an event (FORMAT.md): "wire" (format 1.2: the bytes of its
    answers, read without decoding) or "json" (format 1.1: a JSON array with snapshot
    deltas, which releases before 1.2 read; rewrites always use "wire")."""
    files: Files = OS_FILES
    checkpoints: bool = False
    """Whether a writable store signs and appends ``audit.checkpoint`` records (FORMAT.md,
    "Signed records") while events arrive. The server turns it on; off by default for the
    engine's other users (offline commands, tests that count events or file operations),
    to whom a record appended by a timer would be an event they did not write."""
    checkpoint_interval_s: float = 10.0
    """How often the checkpointer looks for new events to sign, in seconds."""
    max_open_segments: int = DEFAULT_MAX_OPEN_SEGMENTS
    """Read descriptors of segment files kept open between reads, the least recently used
    closed beyond it (RocksDB's ``max_open_files``); more are open only while more reads
    are under way at once. The writer's descriptor of the active segment is not counted."""

    def __post_init__(self) -> None:
        if self.record_form not in ("wire", "json"):
            raise InvalidArgumentError(f"record_form {self.record_form!r}: must be 'wire' or 'json'")
        if self.segment_bytes < 4096:
            raise InvalidArgumentError(f"segment_bytes {self.segment_bytes}: must be at least 4096")
        if not 1 <= self.max_events_per_append <= 100_000:
            raise InvalidArgumentError(
                f"max_events_per_append {self.max_events_per_append}: must be in 1..100000"
            )
        if not MIN_MAX_OPEN_SEGMENTS <= self.max_open_segments <= MAX_MAX_OPEN_SEGMENTS:
            raise InvalidArgumentError(
                f"max_open_segments {self.max_open_segments}: must be in "
                f"{MIN_MAX_OPEN_SEGMENTS}..{MAX_MAX_OPEN_SEGMENTS}"
            )
        if not 0 < self.checkpoint_interval_s <= 86_400:
            raise InvalidArgumentError(
                f"checkpoint_interval_s {self.checkpoint_interval_s}: must be over 0 and at most 86400"
            )
