"""The server's own durable files (``consumers/<name>.json``, ``alerts/rules.json``) under a
crash and under an I/O error at every step of their write.

Each change is first made without faults to count its steps (the ``Files`` seam of
``storage/leadtrail/storage/fs.py``, counted by ``InjectedFiles`` of tests/storage/faults.py).
Then, for every step N: a child process makes the change and ends itself (``os._exit``) at
step N, and the parent reopens the file: exactly the old or the new content, never a mix nor
an error, no temporary file left, the rules 0600; and a change failing with EIO or ENOSPC at
step N raises, leaving the object in memory and a reopen with the old content, and the next
change succeeds. A consumer started on a position file a crash left resumes after the old or
the new save and hands every later event over, in order; a real server started on a data
directory with half-written temporary files of both serves the old rules and removes them.

The children are forked from one helper process (this file run as a script) that imported
the server once: a fresh interpreter per crash point would spend most of the test importing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import importlib.util
import json
import os
import shutil
import stat
import subprocess
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from leadtrail.server.alerts import RuleBook
from leadtrail.server.alerts.rules import preset
from leadtrail.server.consumers import ConsumerPosition, DurableConsumer, Saved
from leadtrail.server.feed import Feed
from leadtrail.storage import Event, EventLog, Files, FsyncPolicy, Options


def _load_faults() -> ModuleType:
    """tests/storage/faults.py, by path, under the name tests/storage/conftest.py gives it."""
    name = "leadtrail_storage_faults"
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(
            name, Path(__file__).parents[1] / "storage" / "faults.py"
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return module


faults = _load_faults()
ERRORS = (errno.EIO, errno.ENOSPC)
CONSUMER = "alerts"
OLD_SAVE, NEW_SAVE = Saved(4, [4, 10]), Saved(8, [8, 36])
"""Events 1..4 handled (count 4, positions summing to 10), then 1..8."""
EVENTS = 12


# -- the changes --------------------------------------------------------------------------------


def _rule(preset_name: str, account: str, name: str = "", threshold: str = "") -> Any:
    rule = preset(
        preset_name,
        account,
        name=name,
        webhook_url=f"https://hooks.example.com/{account}",
        webhook_secret=f"secret-of-{account}",
        now_ms=1_767_225_600_000,
        last_position=3,
    )
    return dataclasses.replace(rule, threshold=Decimal(threshold)) if threshold else rule


def _first_rules() -> list[Any]:
    return [
        _rule("delivery-failures", "acme"),
        _rule("delivery-failures", "acme", name="buyer-errors", threshold="0.5"),
        _rule("delivery-failures", "globex"),
    ]


@dataclasses.dataclass(frozen=True)
class Change:
    """A change of one file: ``prepare`` a data directory (no faults), ``open`` the object with a
    ``Files``, ``make`` the change on it; ``content`` reads the file back through a fresh object
    (which removes a leftover temporary file); ``held`` is what the object holds in memory."""

    prepare: Callable[[Path], None]
    open: Callable[[Path, Files], Any]
    make: Callable[[Any], Any]
    content: Callable[[Path], Any]
    held: Callable[[Any], Any]
    directory: str
    secret: bool


def _prepare_book(data: Path) -> None:
    book = RuleBook(str(data))
    for rule in _first_rules():
        book.set(rule)


def _prepare_position(data: Path) -> None:
    with EventLog.open(str(data), Options(fsync=FsyncPolicy.parse("always"))) as log:
        log.append(_events(EVENTS))
    ConsumerPosition(str(data), CONSUMER).save(OLD_SAVE.position, OLD_SAVE.state)


def _book(data: Path, files: Files) -> RuleBook:
    return RuleBook(str(data), files)


def _rules(data: Path) -> list[Any]:
    return RuleBook(str(data)).rules()


CHANGES: dict[str, Change] = {
    "position-save": Change(
        prepare=_prepare_position,
        open=lambda data, files: ConsumerPosition(str(data), CONSUMER, files),
        make=lambda position: position.save(NEW_SAVE.position, NEW_SAVE.state),
        content=lambda data: ConsumerPosition(str(data), CONSUMER).load(),
        held=lambda position: position.load(),
        directory="consumers",
        secret=False,
    ),
    "rule-replace": Change(
        prepare=_prepare_book,
        open=_book,
        make=lambda book: book.set(_rule("delivery-failures", "acme", name="buyer-errors", threshold="0.75")),
        content=_rules,
        held=lambda book: book.rules(),
        directory="alerts",
        secret=True,
    ),
    "rule-add": Change(
        prepare=_prepare_book,
        open=_book,
        make=lambda book: book.set(_rule("delivery-failures", "acme", name="new-one")),
        content=_rules,
        held=lambda book: book.rules(),
        directory="alerts",
        secret=True,
    ),
    "rule-delete": Change(
        prepare=_prepare_book,
        open=_book,
        make=lambda book: book.delete("acme", "delivery-failures"),
        content=_rules,
        held=lambda book: book.rules(),
        directory="alerts",
        secret=True,
    ),
}


def _events(n: int, start: int = 0) -> list[Event]:
    return [Event(type="source.submitted", lead_id=f"lead-{start + i}", flow_id="f") for i in range(n)]


def _temporary_files(data: Path) -> list[str]:
    return sorted(str(p.relative_to(data)) for p in data.rglob("*.tmp"))


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- the helper process that forks the crashing children -----------------------------------------


def _zygote() -> int:
    """Read ``{"change", "data", "crash_at"}`` lines; fork a child per line that makes the change
    with a ``Files`` crashing at step ``crash_at`` (or none: it prints the steps it counted);
    print ``EXIT <status>`` when the child ended."""
    for line in sys.stdin:
        request = json.loads(line)
        change = CHANGES[request["change"]]
        sys.stdout.flush()  # nothing buffered is printed twice
        pid = os.fork()
        if pid == 0:
            status = 1
            try:
                files = faults.InjectedFiles(request["crash_at"], crash=True)
                target = change.open(Path(request["data"]), files)
                files.armed = True
                change.make(target)
                files.armed = False
                print("OPS " + json.dumps(files.ops), flush=True)
                status = 0
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(status)
        _, wait_status = os.waitpid(pid, 0)
        print(f"EXIT {os.waitstatus_to_exitcode(wait_status)}", flush=True)
    return 0


class Crasher:
    """The helper process (``python this_file.py zygote``), read with deadlines."""

    def __init__(self) -> None:
        server_process = sys.modules["server_process"]  # loaded by tests/conftest.py
        self._child = server_process.Child([sys.executable, __file__, "zygote"], stdin=subprocess.PIPE)

    def run(self, change: str, data: Path, crash_at: int | None) -> tuple[int, list[str]]:
        """The child's exit status and (when it did not crash) the steps it counted."""
        stdin = self._child.proc.stdin
        assert stdin is not None
        stdin.write(json.dumps({"change": change, "data": str(data), "crash_at": crash_at}) + "\n")
        stdin.flush()
        ops: list[str] = []
        while True:
            line = self._child.stdout.next(timeout=30).strip()
            if line.startswith("OPS "):
                ops = json.loads(line[4:])
            elif line.startswith("EXIT "):
                return int(line[5:]), ops

    def close(self) -> None:
        stdin = self._child.proc.stdin
        if stdin is not None:
            stdin.close()
        try:
            status = self._child.wait(timeout=30)
            assert status == 0, self._child.stderr.text
        finally:
            self._child.close()


@pytest.fixture(scope="module")
def crasher() -> Iterator[Crasher]:
    crasher = Crasher()
    yield crasher
    crasher.close()


# -- the file of each change under crashes and I/O errors ----------------------------------------


@dataclasses.dataclass(frozen=True)
class Prepared:
    base: Path
    old: Any
    new: Any
    ops: list[str]


def _prepared(change_name: str, root: Path) -> Prepared:
    change = CHANGES[change_name]
    base = root / "base"
    change.prepare(base)
    counted = root / "counted"
    shutil.copytree(base, counted)
    files = faults.InjectedFiles()
    target = change.open(counted, files)
    files.armed = True
    change.make(target)
    files.armed = False
    old, new = change.content(base), change.content(counted)
    assert old != new and old is not None and new is not None
    assert any(op.startswith("rename ") for op in files.ops) and files.ops[-1].startswith("fsync_dir ")
    if change.secret:
        assert "chmod 0o600" in files.ops, files.ops  # through the seam, before the write
        assert files.ops.index("chmod 0o600") < next(
            i for i, op in enumerate(files.ops) if op.startswith("write")
        )
    return Prepared(base, old, new, files.ops)


@pytest.mark.parametrize("change_name", sorted(CHANGES))
def test_a_crash_at_any_step_leaves_the_old_or_the_new_file(
    change_name: str, crasher: Crasher, tmp_path: Path
) -> None:
    change = CHANGES[change_name]
    prepared = _prepared(change_name, tmp_path)
    seen: dict[str, list[int]] = {"old": [], "new": []}
    leftovers = []
    for n in range(1, len(prepared.ops) + 1):
        where = f"{change_name}: crash at step {n} ({prepared.ops[n - 1]})"
        data = tmp_path / f"crash-{n}"
        shutil.copytree(prepared.base, data)
        status, _ = crasher.run(change_name, data, n)
        assert status == faults.CRASH_EXIT, f"{where}: the child ended with {status}"
        rules_file = data / "alerts" / "rules.json"
        if change.secret and rules_file.exists():
            assert _mode(rules_file) == 0o600, where
        if _temporary_files(data):
            leftovers.append(n)
        if change.secret:
            # Secrets are never in a file others may read, even one a crash left half written.
            for tmp in (data / "alerts").glob("*.tmp"):
                assert tmp.stat().st_size == 0 or _mode(tmp) == 0o600, f"{where}: {tmp.name}"
        content = change.content(data)  # never raises: a crash leaves no damaged file
        assert content in (prepared.old, prepared.new), f"{where}: {content!r}"
        seen["old" if content == prepared.old else "new"].append(n)
        assert _temporary_files(data) == [], f"{where}: a temporary file survived the reopen"
        if change.secret and rules_file.exists():
            assert _mode(rules_file) == 0o600, where
    assert seen["old"] and seen["new"], f"{change_name}: {seen}"
    assert max(seen["old"]) < min(seen["new"]), f"{change_name}: old after new: {seen}"
    assert leftovers, f"{change_name}: no crash left a temporary file to remove"


@pytest.mark.parametrize("change_name", sorted(CHANGES))
def test_an_io_error_at_any_step_stores_nothing_and_the_next_change_succeeds(
    change_name: str, tmp_path: Path
) -> None:
    change = CHANGES[change_name]
    prepared = _prepared(change_name, tmp_path)
    fired = 0
    for n in range(1, len(prepared.ops) + 1):
        for error in ERRORS:
            where = f"{change_name}: {errno.errorcode[error]} at step {n} ({prepared.ops[n - 1]})"
            data = tmp_path / f"fail-{n}-{error}"
            shutil.copytree(prepared.base, data)
            files = faults.InjectedFiles(n, error=error)
            target = change.open(data, files)
            files.armed = True
            with pytest.raises(OSError) as info:
                change.make(target)
            files.armed = False
            assert info.value.errno == error, where
            fired += len(files.fired)
            assert change.held(target) == prepared.old, f"{where}: memory changed"
            assert change.content(data) == prepared.old, f"{where}: the file changed"
            change.make(target)  # no fault now
            assert change.held(target) == prepared.new and change.content(data) == prepared.new, where
            assert _temporary_files(data) == [], where
            if change.secret:
                assert _mode(data / "alerts" / "rules.json") == 0o600, where
    assert fired == 2 * len(prepared.ops)


def test_a_failed_put_back_is_noted_on_the_first_error(tmp_path: Path) -> None:
    """A disk that fails every step from the directory fsync of the rename on: the book in memory
    keeps the old rules, the caller hears of both failures."""
    prepared = _prepared("rule-add", tmp_path)
    data = tmp_path / "sticky"
    shutil.copytree(prepared.base, data)
    files = faults.InjectedFiles(len(prepared.ops), error=errno.EIO, sticky=True)
    book = RuleBook(str(data), files)
    files.armed = True
    with pytest.raises(OSError) as info:
        CHANGES["rule-add"].make(book)
    files.armed = False
    assert book.rules() == prepared.old
    assert any("putting the previous content back failed too" in note for note in info.value.__notes__)


# -- a consumer resumes from the file a crash left ----------------------------------------------


class Counter:
    """A handler whose state is the number of events and the sum of their positions."""

    def __init__(self) -> None:
        self.count = 0
        self.total = 0
        self.seen: list[int] = []
        self.restored: list[Saved] = []

    async def restore(self, saved: Saved) -> None:
        self.restored.append(saved)
        self.count, self.total = saved.state or (0, 0)

    async def handle(self, events: Sequence[Event]) -> None:
        for event in events:
            self.count += 1
            self.total += event.position
            self.seen.append(event.position)

    async def tick(self, now_ms: int) -> None:
        pass

    def state(self) -> Any:
        return [self.count, self.total]


async def _resume(data: Path, more: int) -> Counter:
    """Start the consumer on ``data``, append ``more`` events, wait until it handled them all."""
    log = EventLog.open(str(data), Options(fsync=FsyncPolicy.parse("always")))
    feed = Feed(log.last_position)
    reads = ThreadPoolExecutor(max_workers=2)
    loop = asyncio.get_running_loop()

    def published(events: list[Event]) -> None:  # on the writer's thread
        loop.call_soon_threadsafe(feed.publish, events)

    log.add_commit_listener(published)
    handler = Counter()
    try:
        consumer = DurableConsumer(
            ConsumerPosition(str(data), CONSUMER),
            handler,
            log=log,
            feed=feed,
            reads=reads,
            new_start=log.last_position,
            save_every_s=0.0,
            tick_s=0.05,
            retry_s=0.01,
        )
        await consumer.start()
        results = await asyncio.wrap_future(log.submit(_events(more, EVENTS)))
        assert await consumer.handled(results[-1].position, timeout=10)
        await consumer.stop()
    finally:
        feed.close()
        log.close()
        reads.shutdown()
    return handler


def test_a_consumer_resumes_after_the_save_a_crash_left(crasher: Crasher, tmp_path: Path) -> None:
    prepared = _prepared("position-save", tmp_path)
    assert (prepared.old, prepared.new) == (OLD_SAVE, NEW_SAVE)
    resumed_from = set()
    for n in range(1, len(prepared.ops) + 1):
        where = f"crash at step {n} ({prepared.ops[n - 1]})"
        data = tmp_path / f"crash-{n}"
        shutil.copytree(prepared.base, data)
        status, _ = crasher.run("position-save", data, n)
        assert status == faults.CRASH_EXIT, where
        handler = asyncio.run(_resume(data, 3))
        [saved] = handler.restored
        assert saved in (OLD_SAVE, NEW_SAVE), f"{where}: {saved}"
        resumed_from.add(saved.position)
        # Every event after the save, once more if handled before the crash, in order.
        assert handler.seen == list(range(saved.position + 1, EVENTS + 4)), where
        assert ConsumerPosition(str(data), CONSUMER).load() == Saved(
            EVENTS + 3, [EVENTS + 3, sum(range(1, EVENTS + 4))]
        ), where
    assert resumed_from == {OLD_SAVE.position, NEW_SAVE.position}


# -- a real server on a data directory with half-written temporary files ------------------------


def test_a_server_starts_on_half_written_temporary_files_with_the_old_rules(
    crasher: Crasher, tmp_path: Path
) -> None:
    import grpc
    from leadtrail.server.alerts.rules import preset_message
    from leadtrail.v1 import alerts_pb2, alerts_pb2_grpc

    server_process = sys.modules["server_process"]  # loaded by tests/conftest.py
    data = tmp_path / "data"
    key = server_process.create_key(data, "acme", "admin")
    auth = (("authorization", f"Bearer {key}"),)

    def listed(server: Any) -> list[tuple[str, str]]:
        with grpc.insecure_channel(server.address) as channel:
            stub = alerts_pb2_grpc.AlertServiceStub(channel)
            answer = stub.ListAlertRules(alerts_pb2.ListAlertRulesRequest(), metadata=auth, timeout=10)
        return [(r.name, r.threshold) for r in answer.rules]

    server = server_process.ServerProcess(data, "--http", "off").start()
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = alerts_pb2_grpc.AlertServiceStub(channel)
            for name in ("delivery-failures", "buyer-errors"):
                message = preset_message("delivery-failures", name, "https://hooks.example.com/x", "s3cret")
                stub.SetAlertRule(message, metadata=auth, timeout=10)
        old_rules = listed(server)
    finally:
        assert server.stop() == 0, server.output
    assert [name for name, _ in old_rules] == ["buyer-errors", "delivery-failures"]
    position = ConsumerPosition(str(data), CONSUMER)
    old_position = position.load()
    assert old_position is not None

    # Crash a rule change and a position save of the stopped server's files mid-write.
    for change_name in ("rule-add", "position-save"):
        counted = tmp_path / f"counted-{change_name}"
        shutil.copytree(data, counted)
        status, ops = crasher.run(change_name, counted, None)
        assert status == 0
        write_step = next(i for i, op in enumerate(ops) if op.startswith("write ")) + 1
        status, _ = crasher.run(change_name, data, write_step)
        assert status == faults.CRASH_EXIT
    temporary = [data / "alerts" / "rules.json.tmp", data / "consumers" / f"{CONSUMER}.json.tmp"]
    for tmp in temporary:
        half = tmp.read_bytes()
        assert half, f"{tmp.name} is empty"
        with pytest.raises(ValueError):
            json.loads(half)  # half written
    assert _mode(temporary[0]) == 0o600

    server = server_process.ServerProcess(data, "--http", "off").start()
    try:
        assert listed(server) == old_rules
        assert [tmp for tmp in temporary if tmp.exists()] == []
        assert _mode(data / "alerts" / "rules.json") == 0o600
    finally:
        assert server.stop() == 0, server.output
    assert _temporary_files(data) == []
    reloaded = ConsumerPosition(str(data), CONSUMER).load()
    assert reloaded is not None and reloaded.position >= old_position.position


if __name__ == "__main__":
    sys.exit(_zygote() if sys.argv[1:] == ["zygote"] else 2)
