"""The log's segments in position order, and the visible position.

Readers take the list as it is at one moment (a copy) and look positions up
by bisecting the bases. Three parties change it, each through a named step:
recovery sets it whole on open; the writer thread reports a segment
``created``, ``sealed`` and each group ``committed`` (which moves the visible
position: what readers may see is what is durable and indexed); maintenance
``delete``s a whole segment that retention emptied.

The list's segments read through one bounded cache of descriptors (``Descriptors``):
at most ``max_open_segments`` stay open between reads, whatever the number of files.
"""

from __future__ import annotations

import bisect
import os
import threading

from .follow import SegmentState, apply_state, state_on_disk
from .format import parse_segment_name
from .fs import Files
from .options import DEFAULT_MAX_OPEN_SEGMENTS
from .segment import Descriptors, Segment


class SegmentList:
    def __init__(
        self, directory: str, files: Files, max_open_segments: int = DEFAULT_MAX_OPEN_SEGMENTS
    ) -> None:
        self.directory = directory
        self._files = files
        self._descriptors = Descriptors(max_open_segments)
        self._segments: list[Segment] = []
        self._bases: list[int] = []
        self._lock = threading.Lock()
        self._visible = 0

    def replace(self, segments: list[Segment]) -> None:
        """Set the whole list (recovery)."""
        for segment in segments:
            segment.use(self._descriptors)
        with self._lock:
            self._segments = sorted(segments, key=lambda s: s.base)
            self._bases = [s.base for s in self._segments]

    def all(self) -> list[Segment]:
        """The segments as they are now, oldest first (a copy: the list may change)."""
        return list(self._segments)

    def __len__(self) -> int:
        return len(self._segments)

    @property
    def open_descriptors(self) -> int:
        """Segment descriptors open now (at most ``max_open_segments`` unless more are in use)."""
        return len(self._descriptors)

    def segment_for(self, position: int) -> Segment | None:
        bases = self._bases
        i = bisect.bisect_right(bases, position) - 1
        if i < 0:
            return None
        segments = self._segments
        return segments[i] if i < len(segments) and segments[i].base == bases[i] else None

    @property
    def visible(self) -> int:
        """The last position readers may see."""
        return self._visible

    def make_visible(self, position: int) -> None:
        """On open: everything recovered is visible."""
        self._visible = position

    @property
    def last_position_on_disk(self) -> int:
        # An empty last segment still holds its place: retention may have
        # removed every event before it, and positions are never reused.
        segments = self._segments
        last = max((s.last_position for s in segments), default=0)
        return max(last, segments[-1].base - 1) if segments else last

    @property
    def last_event_position(self) -> int:
        """The position of the newest event in any segment (0: none)."""
        return max((s.last_position for s in self._segments), default=0)

    # -- the writer thread's steps ---------------------------------------------------

    def created(self, base: int) -> None:
        """A new segment file starting at ``base`` exists (with its header, fsynced)."""
        self.replace([*self._segments, Segment(self.directory, base, self._descriptors)])

    def sealed(self, base: int, size: int, event_count: int, last_position: int) -> None:
        segment = self.segment_for(base)
        if segment is not None and segment.base == base:
            segment.sealed = True
            segment.size = size
            segment.event_count = event_count
            segment.last_position = last_position

    def committed(self, base: int, size: int, event_count: int, last_position: int, visible: int) -> None:
        """A group is durable and indexed in segment ``base``: readers may see up to ``visible``."""
        segment = self.segment_for(base)
        if segment is not None and segment.base == base:
            segment.size = size
            segment.event_count = event_count
            segment.last_position = last_position
            self._visible = visible

    # -- maintenance ----------------------------------------------------------------------

    def delete(self, segment: Segment) -> None:
        """Forget a whole segment and delete its file (retention emptied it)."""
        self.replace([s for s in self._segments if s.base != segment.base])
        segment.close()
        self._files.remove(segment.path)
        self._files.fsync_dir(self.directory)

    # -- a follower's steps (follow.py): the writer is another process --------------------

    def follow(self, tail: tuple[SegmentState, ...], visible: int) -> bool:
        """Take the writer's last segments as a commit notice describes them and move the
        visible position; False when segments before them were missed (reload instead)."""
        known = {s.base: s for s in self._segments}
        added = [
            Segment(self.directory, state.base, self._descriptors)
            for state in tail
            if state.base not in known
        ]
        if added:
            self.replace([*self._segments, *added])
            known.update((s.base, s) for s in added)
        for state in tail:
            apply_state(known[state.base], state)
        if tail:
            older = [s for s in self._segments if s.base < tail[0].base]
            if older and not older[-1].sealed:
                return False  # a segment was sealed (and maybe more made) between notices
        self._visible = visible
        return True

    def reload(self, tail: tuple[SegmentState, ...], visible: int) -> None:
        """Open every segment file anew (the writer rewrote or deleted some): the tail as
        the notice says, the others as their seals say. The old segments' descriptors stay
        open a while for reads already under way (the cache may close them sooner, when
        none of those reads is at its pread), then close."""
        described = {state.base: state for state in tail}
        fresh: list[Segment] = []
        for base in segment_bases(self.directory):
            segment: Segment | None = None
            try:
                segment = Segment(self.directory, base, self._descriptors)
                # Opened when first read (here, when no notice describes it), not before.
                apply_state(segment, described.get(base) or state_on_disk(segment))
            except FileNotFoundError:
                if segment is not None:
                    segment.close()
                continue  # retention deleted it meanwhile
            fresh.append(segment)
        old = self._segments
        self.replace(fresh)
        self._visible = visible

        def close_old() -> None:
            for segment in old:
                segment.close()

        closing = threading.Timer(_RETIRED_FDS_SECONDS, close_old)
        closing.daemon = True
        closing.start()

    def close(self) -> None:
        # Every descriptor, those of segments already dropped from the list too; one a
        # read still holds closes when that read ends.
        self._descriptors.close_all()


_RETIRED_FDS_SECONDS = 10.0
"""How long a follower keeps the descriptors of replaced files for reads begun before."""


def segment_bases(directory: str) -> list[int]:
    """The bases of the segment files in ``directory``, in order."""
    bases = []
    for name in os.listdir(directory):
        base = parse_segment_name(name)
        if base is not None:
            bases.append(base)
    return sorted(bases)
