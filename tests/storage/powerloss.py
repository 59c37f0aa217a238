"""A file layer that can cut the power: the disk states a power loss may leave.

``PowerFiles`` is a ``Files`` (storage/leadtrail/storage/fs.py) that performs every
operation on the real files, so the engine runs normally, and records it in a model
of what the disk holds durably:

- per file (an inode: it keeps its bytes across renames and unlinks), its bytes as
  of its last fsync, and the writes and truncates made since;
- per directory, its entries as of its last directory fsync, and the creates,
  renames, unlinks and mkdirs made since. A directory fsync records the real listing,
  so that entries made outside the seam (``os.makedirs``) become durable with it, as
  they do on a real file system, and are lost without it.

``cut(at)`` makes the ``at``-th recorded operation raise ``PowerCut`` (a
``BaseException``: nothing in the engine catches it as an I/O error) before it
happens, and every later one too: the power is off. ``states(seed, n)`` then
materializes up to ``n`` disk states that the recorded history allows, each in a
fresh directory:

- per file: unsynced writes dropped, all kept, a prefix kept, a prefix and the next
  write torn at a 512-byte sector boundary (the rest zero-filled, or the old
  contents), all kept but the last write, each of whose sectors reached the disk or
  not independently (one not written holds its old bytes, zeros beyond them: disks
  and file systems keep no order between the sectors of one write), or any subset
  kept (writes to one file reordered; files are chosen independently, so writes to
  different files are reordered wherever no fsync ordered them);
- per directory: a prefix of its unsynced changes kept (a rename is one change: the
  target has the old file or the new one, never both or neither);
- the LMDB index (written through mmap, outside the seam: derived state): as the
  real files are after the store was abandoned, removed, or truncated.

State 0 drops everything unsynced, state 2 keeps everything; the others are drawn
from ``random.Random(seed)``. When the last unsynced write of a file touches two
sectors or more, one state more keeps everything but the first sector of each such
write (its old bytes, or zeros): the later sectors, a request's COMMIT record among
them, reached the disk and the first did not.

Files outside ``root`` are written for real and not modelled.
"""

from __future__ import annotations

import dataclasses
import os
import random
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from leadtrail.storage import Files

SECTOR = 512
INDEX_NAMES = ("index", "index.new", "index.old")
"""Top-level directories of the LMDB index: outside the model (derived state)."""


INDEX_STATES = ("real", "removed", "truncated")


class PowerCut(BaseException):
    """The power went off at this operation."""


@dataclasses.dataclass
class Node:
    """A file's content: durable bytes and the unsynced operations since."""

    durable: bytes
    current: bytearray
    pending: list[tuple[str, int, bytes]] = dataclasses.field(default_factory=list)
    """("write", offset, data) or ("truncate", size, b"")."""
    links: int = 1


@dataclasses.dataclass
class DirOp:
    kind: str  # create, mkdir, link, unlink, rename
    name: str
    node: Node | None = None
    dst: str = ""


@dataclasses.dataclass
class Dir:
    durable: dict[str, Node | None]  # None: a subdirectory
    pending: list[DirOp] = dataclasses.field(default_factory=list)


def _apply(content: bytearray, op: tuple[str, int, bytes]) -> None:
    kind, at, data = op
    if kind == "truncate":
        if at < len(content):
            del content[at:]
        else:
            content.extend(bytes(at - len(content)))
        return
    if at > len(content):
        content.extend(bytes(at - len(content)))
    content[at : at + len(data)] = data


class PowerFiles(Files):
    """Real files plus a model of what is durable; see the module docstring."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = os.path.abspath(root)
        self.ops: list[str] = []
        self.at: int | None = None
        self.fired: str | None = None
        self.draining = False
        self._lock = threading.RLock()
        self._dirs: dict[str, Dir] = {}
        self._nodes: dict[int, Node] = {}  # by st_ino
        self._fds: dict[int, Node] = {}
        self._register_tree(self.root)

    # -- the model -----------------------------------------------------------

    def _modelled(self, path: str) -> str | None:
        """``path`` relative to the root, or None when the model leaves it alone."""
        path = os.path.abspath(path)
        if path != self.root and not path.startswith(self.root + os.sep):
            return None
        rel = os.path.relpath(path, self.root)
        if rel.split(os.sep)[0] in INDEX_NAMES:
            return None
        return path

    def _node_of(self, path: str) -> Node:
        """The node a real file is, made from its real bytes when the model does not know it."""
        st = os.stat(path)
        node = self._nodes.get(st.st_ino)
        if node is None or node.links <= 0 or len(node.current) != st.st_size:
            # New to the model (written outside the seam, or an inode number reused
            # after an unlink outside the seam): taken as it is, durable.
            data = Path(path).read_bytes()
            node = Node(durable=data, current=bytearray(data))
            self._nodes[st.st_ino] = node
        return node

    def _listing(self, path: str) -> dict[str, Node | None]:
        entries: dict[str, Node | None] = {}
        for name in sorted(os.listdir(path)):
            full = os.path.join(path, name)
            if self._modelled(full) is None:
                continue
            if os.path.isdir(full):
                entries[name] = None
                if full not in self._dirs:
                    self._register_tree(full)
            else:
                entries[name] = self._node_of(full)
        return entries

    def _register_tree(self, path: str) -> None:
        if os.path.isdir(path):
            self._dirs[path] = Dir(durable=self._listing(path))
        else:
            self._dirs[path] = Dir(durable={})

    def _dir(self, path: str) -> Dir:
        d = self._dirs.get(path)
        if d is None:
            # Made outside the seam since: empty as far as anything durable goes.
            d = self._dirs[path] = Dir(durable={})
        return d

    def _count(self, op: str) -> bool:
        """Count the operation; raise PowerCut at and after the cut. False once the power is
        back for ``drain``: the operation is done for real only, the model stays as at the cut."""
        with self._lock:
            if self.fired is not None:
                if self.draining:
                    return False
                raise PowerCut(self.fired)
            self.ops.append(op)
            if self.at is not None and len(self.ops) >= self.at:
                self.fired = f"#{len(self.ops)} {op}"
                raise PowerCut(self.fired)
            return True

    def drain(self) -> None:
        """Let later operations run for real without touching the model, so that the
        abandoned store can release its files and threads (``close``)."""
        self.draining = True

    def unsynced(self, fd: int) -> int:
        """The writes and truncates made through ``fd``'s file since its last fsync."""
        with self._lock:
            node = self._fds.get(fd)
            return 0 if node is None else len(node.pending)

    def cut(self, at: int | None) -> None:
        """Cut the power at the ``at``-th operation from now on counted (None: never)."""
        self.at = None if at is None else len(self.ops) + at

    # -- the seam ------------------------------------------------------------

    def open_for_append(self, path: str) -> int:
        full = self._modelled(path)
        if not self._count(f"open {self._rel(path)}"):
            return super().open_for_append(path)
        with self._lock:
            existed = os.path.exists(path)
            fd = super().open_for_append(path)
            if full is None:
                return fd
            if existed:
                node = self._node_of(full)
            else:
                node = Node(durable=b"", current=bytearray())
                self._nodes[os.fstat(fd).st_ino] = node
                self._dir(os.path.dirname(full)).pending.append(DirOp("create", os.path.basename(full), node))
            self._fds[fd] = node
            return fd

    def write(self, fd: int, data: bytes | memoryview) -> None:
        if not self._count(f"write {len(data)}"):
            super().write(fd, data)
            return
        with self._lock:
            super().write(fd, data)
            node = self._fds.get(fd)
            if node is not None:
                op = ("write", len(node.current), bytes(data))  # O_APPEND
                node.pending.append(op)
                _apply(node.current, op)

    def fsync(self, fd: int) -> None:
        if not self._count("fsync"):
            super().fsync(fd)
            return
        with self._lock:
            super().fsync(fd)
            node = self._fds.get(fd)
            if node is not None:
                node.durable = bytes(node.current)
                node.pending.clear()

    def truncate(self, fd: int, size: int) -> None:
        if not self._count(f"truncate {size}"):
            super().truncate(fd, size)
            return
        with self._lock:
            super().truncate(fd, size)
            node = self._fds.get(fd)
            if node is not None:
                op = ("truncate", size, b"")
                node.pending.append(op)
                _apply(node.current, op)

    def chmod(self, fd: int, mode: int) -> None:
        self._count(f"chmod {oct(mode)}")
        super().chmod(fd, mode)

    def close(self, fd: int) -> None:
        # Not a point where data moves: never cut, so that fds are always released.
        with self._lock:
            self._fds.pop(fd, None)
        super().close(fd)

    def rename(self, src: str, dst: str) -> None:
        if not self._count(f"rename {self._rel(src)} -> {self._rel(dst)}"):
            super().rename(src, dst)
            return
        with self._lock:
            fsrc, fdst = self._modelled(src), self._modelled(dst)
            moved = self._node_of(src) if fsrc is not None and os.path.isfile(src) else None
            replaced = self._node_of(dst) if fdst is not None and os.path.isfile(dst) else None
            super().rename(src, dst)
            if replaced is not None and replaced is not moved:
                replaced.links -= 1
            if fsrc is None or fdst is None:
                return
            sdir, ddir = os.path.dirname(fsrc), os.path.dirname(fdst)
            if sdir == ddir:
                self._dir(sdir).pending.append(
                    DirOp("rename", os.path.basename(fsrc), moved, os.path.basename(fdst))
                )
            else:
                self._dir(ddir).pending.append(DirOp("link", os.path.basename(fdst), moved))
                self._dir(sdir).pending.append(DirOp("unlink", os.path.basename(fsrc)))

    def remove(self, path: str) -> None:
        if not self._count(f"remove {self._rel(path)}"):
            super().remove(path)
            return
        with self._lock:
            full = self._modelled(path)
            node = self._node_of(path) if full is not None and os.path.isfile(path) else None
            super().remove(path)
            if full is None:
                return
            if node is not None:
                node.links -= 1
            self._dir(os.path.dirname(full)).pending.append(DirOp("unlink", os.path.basename(full)))

    def fsync_dir(self, path: str) -> None:
        if not self._count(f"fsync_dir {self._rel(path)}"):
            super().fsync_dir(path)
            return
        with self._lock:
            super().fsync_dir(path)
            full = self._modelled(path)
            if full is not None:
                d = self._dir(full)
                d.durable = self._listing(full)
                d.pending.clear()

    def make_directory(self, path: str) -> None:
        if not self._count(f"mkdir {self._rel(path)}"):
            super().make_directory(path)
            return
        with self._lock:
            full = os.path.abspath(path)
            missing = []
            while not os.path.isdir(full):
                missing.append(full)
                full = os.path.dirname(full)
            os.makedirs(path, exist_ok=True)
            for made in reversed(missing):
                if self._modelled(made) is not None:
                    self._dir(os.path.dirname(made)).pending.append(DirOp("mkdir", os.path.basename(made)))
                    self._dirs[made] = Dir(durable={})
        self.fsync_dir(os.path.dirname(os.path.abspath(path)))

    def _rel(self, path: str) -> str:
        full = os.path.abspath(path)
        return os.path.relpath(full, self.root) if full.startswith(self.root) else full

    # -- the disk states -----------------------------------------------------

    def states(self, seed: int, n: int) -> Iterator[tuple[str, Path]]:
        """Up to ``n`` (description, directory) disk states, each materialized afresh."""
        rng = random.Random(seed)
        with self._lock:
            modes = ["drop" if k == 0 else "keep" if k == 2 else "random" for k in range(n)]
            if self.spans_sectors():
                modes.append("sectors")
            for k, mode in enumerate(modes):
                target = Path(f"{self.root}.power-{seed}-{k}")
                shutil.rmtree(target, ignore_errors=True)
                notes: list[str] = []
                self._materialize(self.root, target, mode, rng, notes)
                self._place_index(target, "real" if mode != "random" else rng.choice(INDEX_STATES), notes)
                yield f"state {k} ({mode}): " + "; ".join(notes), target

    def _materialize(self, path: str, target: Path, mode: str, rng: random.Random, notes: list[str]) -> None:
        d = self._dir(path)
        keep = (
            0
            if mode == "drop"
            else len(d.pending)
            if mode in ("keep", "sectors")
            else rng.randint(0, len(d.pending))
        )
        if d.pending and keep < len(d.pending):
            rel = os.path.relpath(path, self.root)
            notes.append(f"{rel}: {keep}/{len(d.pending)} dir changes")
        entries = dict(d.durable)
        for op in d.pending[:keep]:
            if op.kind in ("create", "link"):
                entries[op.name] = op.node
            elif op.kind == "mkdir":
                entries[op.name] = None
            elif op.kind == "unlink":
                entries.pop(op.name, None)
            elif op.kind == "rename":
                entries.pop(op.name, None)
                entries[op.dst] = op.node
        target.mkdir(parents=True)
        for name, node in sorted(entries.items()):
            full = os.path.join(path, name)
            if node is None:
                self._materialize(full, target / name, mode, rng, notes)
            else:
                (target / name).write_bytes(
                    self._content(node, mode, rng, os.path.relpath(full, self.root), notes)
                )

    def _content(self, node: Node, mode: str, rng: random.Random, rel: str, notes: list[str]) -> bytes:
        if not node.pending or mode == "keep":
            return bytes(node.current)
        content = bytearray(node.durable)
        if mode == "drop":
            return bytes(content)
        if mode == "sectors":
            return self._sectors(node, lambda i: i > 0, rel, notes)
        how = rng.choice(("drop", "keep", "prefix", "torn", "subset", "sectors"))
        ops = node.pending
        if how == "sectors":
            return self._sectors(node, lambda _: rng.random() < 0.5, rel, notes)
        if how == "keep":
            return bytes(node.current)
        if how == "drop":
            notes.append(f"{rel}: unsynced dropped")
            return bytes(content)
        if how == "subset":
            kept = [op for op in ops if rng.random() < 0.5]
            for op in kept:
                _apply(content, op)
            notes.append(f"{rel}: {len(kept)}/{len(ops)} unsynced ops (any order)")
            return bytes(content)
        k = rng.randint(0, len(ops) - 1)
        for op in ops[:k]:
            _apply(content, op)
        if how == "prefix" or ops[k][0] != "write":
            notes.append(f"{rel}: {k}/{len(ops)} unsynced ops")
            return bytes(content)
        _, offset, data = ops[k]
        end = offset + len(data)
        boundaries = list(range((offset // SECTOR + 1) * SECTOR, end, SECTOR))
        torn_at = rng.choice(boundaries) if boundaries else offset
        before = bytes(content)
        _apply(content, ("write", offset, data[: torn_at - offset]))
        if rng.random() < 0.5:
            _apply(content, ("write", torn_at, bytes(end - torn_at)))
            notes.append(f"{rel}: {k}/{len(ops)} ops, then a write torn at {torn_at}, zeros to {end}")
        else:
            if len(before) > torn_at:
                _apply(content, ("write", torn_at, before[torn_at:end]))
            notes.append(f"{rel}: {k}/{len(ops)} ops, then a write torn at {torn_at}, old bytes after")
        return bytes(content)

    def _sectors(self, node: Node, written: Callable[[int], bool], rel: str, notes: list[str]) -> bytes:
        """Every unsynced operation kept but the last write, of which each sector (the i-th
        the write touches) reached the disk or not as ``written(i)`` says: one not written
        holds its old bytes, zeros beyond them (disks and file systems keep no order between
        the sectors of one write)."""
        ops = node.pending
        last = ops[-1]
        if last[0] != "write":
            notes.append(f"{rel}: unsynced kept")
            return bytes(node.current)
        content = bytearray(node.durable)
        for op in ops[:-1]:
            _apply(content, op)
        before = bytes(content)
        _, offset, data = last
        end = offset + len(data)
        _apply(content, ("write", offset, data))
        lost = []
        for i, sector in enumerate(range(offset - offset % SECTOR, end, SECTOR)):
            if written(i):
                continue
            lo, hi = max(sector, offset), min(sector + SECTOR, end)
            old = before[lo:hi]
            content[lo:hi] = old + bytes(hi - lo - len(old))
            lost.append(sector)
        notes.append(
            f"{rel}: {len(ops) - 1}/{len(ops)} ops, then a write of {offset}..{end} without "
            f"its sectors at {lost}"
        )
        return bytes(content)

    def spans_sectors(self) -> bool:
        """Whether the last unsynced write of some file touches two sectors or more."""
        with self._lock:
            for node in self._nodes.values():
                if node.links > 0 and node.pending and node.pending[-1][0] == "write":
                    _, offset, data = node.pending[-1]
                    if (offset + len(data) - 1) // SECTOR > offset // SECTOR:
                        return True
            return False

    def _place_index(self, target: Path, how: str, notes: list[str]) -> None:
        real = Path(self.root) / "index"
        if how == "removed" or not real.is_dir():
            if real.is_dir():
                notes.append("index removed")
            return
        shutil.copytree(real, target / "index")
        if how == "truncated":
            data = target / "index" / "data.mdb"
            if data.exists():
                size = data.stat().st_size
                os.truncate(data, size // 2 // 4096 * 4096)
                notes.append(f"index truncated to {size // 2 // 4096 * 4096} of {size} bytes")
