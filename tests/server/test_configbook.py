"""The one way named, per-account configuration is kept (``configbook``), its EventFilter codec
(``config_filters``) and name check (``config_names``), and the files the alert rules, sinks and
export jobs books wrote before they shared it, which must still load."""

from __future__ import annotations

import errno
import json
import stat
from dataclasses import dataclass, replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import grpc
import orjson
import pytest
from leadtrail.server.alerts import RuleBook, RuleBookError
from leadtrail.server.alerts.model import GroupBy, Kind
from leadtrail.server.config_filters import filter_from_json, filter_json, filter_message
from leadtrail.server.config_names import check_name, is_name
from leadtrail.server.configbook import BookForm, ConfigFile, ConfigFileError, NamedBook
from leadtrail.server.exports import JobBook
from leadtrail.server.sinks.book import SinkBook, TooManySinksError
from leadtrail.server.sinks.model import WebhookSpec
from leadtrail.server.status import ServiceError
from leadtrail.storage import EventFilter, Files, Outcome


@dataclass(frozen=True)
class Note:
    account_id: str
    name: str
    text: str = ""
    revision: int = 0

    @property
    def key(self) -> tuple[str, str]:
        return (self.account_id, self.name)


class TooManyNotes(Exception):
    pass


def _note_json(note: Note) -> dict[str, Any]:
    return {"account_id": note.account_id, "name": note.name, "text": note.text, "revision": note.revision}


def _note_from(raw: dict[str, Any]) -> Note:
    return Note(raw["account_id"], raw["name"], raw["text"], raw["revision"])


NOTES: BookForm[Note] = BookForm("notes", _note_json, _note_from, 2, TooManyNotes, "notes").numbered()
PLAIN: BookForm[Note] = BookForm("notes", _note_json, _note_from, 2, TooManyNotes, "notes")


class FailingOnce(Files):
    """Fails the first ``op`` with EIO, the way the fault tests inject errors through the seam."""

    def __init__(self, op: str) -> None:
        self.op = op
        self.failed = False

    def _maybe_fail(self, op: str) -> None:
        if op == self.op and not self.failed:
            self.failed = True
            raise OSError(errno.EIO, f"injected at {op}")

    def rename(self, src: str, dst: str) -> None:
        self._maybe_fail("rename")
        super().rename(src, dst)

    def fsync_dir(self, path: str) -> None:
        self._maybe_fail("fsync_dir")
        super().fsync_dir(path)


def _book(path: Path, form: BookForm[Note] = NOTES, files: Files | None = None) -> NamedBook[Note]:
    return NamedBook(ConfigFile(str(path), files or Files(), mode=0o600), form)


# -- NamedBook and ConfigFile ---------------------------------------------------------------------


def test_a_book_numbers_its_changes_and_keeps_them_across_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "notes" / "notes.json"
    book = _book(path)
    assert book.entries() == [] and not path.exists()
    assert book.set(Note("b", "x", "1")).revision == 1
    assert book.set(Note("a", "y", "2")).revision == 2
    assert book.set(Note("a", "y", "3")).revision == 3
    assert book.delete("b", "x") and not book.delete("b", "x")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_bytes()) == {
        "format": 1,
        "revision": 3,
        "notes": [{"account_id": "a", "name": "y", "text": "3", "revision": 3}],
    }
    again = _book(path)
    assert again.entries() == [Note("a", "y", "3", 3)] and again.get("a", "y") == Note("a", "y", "3", 3)
    assert again.set(Note("c", "z")).revision == 4  # never goes back, though the newest was deleted


def test_entries_are_by_account_and_name(tmp_path: Path) -> None:
    book = _book(tmp_path / "n.json", PLAIN)
    for account, name in (("b", "a"), ("a", "b"), ("a", "a")):
        book.set(Note(account, name))
    assert [n.key for n in book.entries()] == [("a", "a"), ("a", "b"), ("b", "a")]
    assert [n.key for n in book.entries("a")] == [("a", "a"), ("a", "b")]
    # Without revisions the file holds none and entries are stored as given.
    assert "revision" not in json.loads((tmp_path / "n.json").read_bytes())
    assert book.get("a", "a") == Note("a", "a")


def test_an_account_over_its_limit_is_refused_and_nothing_is_stored(tmp_path: Path) -> None:
    path = tmp_path / "n.json"
    book = _book(path)
    book.set(Note("a", "one"))
    book.set(Note("a", "two"))
    before = path.read_bytes()
    with pytest.raises(
        TooManyNotes, match=r"^account 'a' holds 2 notes, the most it may hold \(2\); delete one first$"
    ):
        book.set(Note("a", "three"))
    assert path.read_bytes() == before and len(book.entries("a")) == 2
    assert book.set(Note("a", "two", "replaced")).text == "replaced"  # replacing is no new entry
    assert book.set(Note("b", "one")).account_id == "b"  # another account has its own limit


def test_listeners_hear_every_entry_on_notify(tmp_path: Path) -> None:
    book = _book(tmp_path / "n.json")
    heard: list[list[Note]] = []
    book.add_listener(heard.append)
    book.set(Note("a", "x"))
    assert heard == []  # the caller chooses when (on the event loop)
    book.notify()
    assert heard == [[Note("a", "x", revision=1)]]


@pytest.mark.parametrize("op", ["rename", "fsync_dir"])
def test_a_failed_change_leaves_memory_and_file_as_they_were(tmp_path: Path, op: str) -> None:
    path = tmp_path / "notes" / "n.json"
    _book(path).set(Note("a", "x", "old"))
    before = path.read_bytes()
    files = FailingOnce(op)
    book = _book(path, files=files)
    with pytest.raises(OSError) as info:
        book.set(Note("a", "x", "new"))
    assert info.value.errno == errno.EIO and files.failed
    assert book.entries() == [Note("a", "x", "old", 1)]
    assert path.read_bytes() == before  # after the rename (fsync_dir) it was put back
    assert book.set(Note("a", "x", "new")).revision == 2  # the number of the failed change is free
    assert _book(path).entries() == [Note("a", "x", "new", 2)]


def test_a_failed_first_change_leaves_no_file(tmp_path: Path) -> None:
    path = tmp_path / "n.json"
    book = _book(path, files=FailingOnce("fsync_dir"))
    with pytest.raises(OSError):
        book.set(Note("a", "x"))
    assert not path.exists() and book.entries() == []


def test_opening_removes_a_leftover_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "n.json"
    _book(path).set(Note("a", "x"))
    leftover = tmp_path / "n.json.tmp"
    leftover.write_bytes(b'{"format": 1, "notes": [')  # a write cut short
    assert _book(path).entries() == [Note("a", "x", revision=1)]
    assert not leftover.exists()


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"{not json", "unexpected character"),
        (b'{"format": 2, "notes": []}', "format 2, expected 1"),
        (b'{"format": 1}', "'notes'"),
        (b'{"format": 1, "revision": -1, "notes": []}', "revision -1 is not a revision"),
        (b'{"format": 1, "notes": [{"name": "x"}]}', "'account_id'"),
    ],
)
def test_a_damaged_file_is_refused_naming_the_file_and_the_problem(
    tmp_path: Path, content: bytes, problem: str
) -> None:
    path = tmp_path / "n.json"
    path.write_bytes(content)

    class NotesError(ConfigFileError):
        pass

    with pytest.raises(NotesError) as info:
        NamedBook(ConfigFile(str(path), Files(), error=NotesError), NOTES)
    assert str(info.value).startswith(f"{path}: ") and problem in str(info.value), str(info.value)


# -- the files the books wrote before they shared one class ---------------------------------------

FULL_FILTER = {
    "types": ["recipient.error"],
    "lead_id": "",
    "flow_id": "",
    "entity_id": "",
    "outcomes": [],
    "start_ms": None,
    "end_ms": None,
    "entity_scope": ["rcp_1"],
    "flow_scope": [],
    "hidden_types": ["alert.*"],
}
RULE = {
    "account_id": "acme",
    "name": "errors",
    "kind": "count",
    "filter": FULL_FILTER,
    "base": None,
    "threshold": "5",
    "window_s": 60,
    "min_events": 0,
    "baseline_windows": 0,
    "group_by": "entity",
    "webhook_url": "https://hooks.example.com/a",
    "webhook_secret": "s3cret",
    "description": "",
    "set_at_ms": 1_767_225_600_000,
    "set_after_position": 12,
    "revision": 3,
}


def test_a_rules_file_written_before_loads_and_is_written_back_the_same(tmp_path: Path) -> None:
    path = tmp_path / "alerts" / "rules.json"
    path.parent.mkdir()
    old = {"format": 1, "revision": 7, "rules": [RULE]}
    path.write_bytes(orjson.dumps(old, option=orjson.OPT_INDENT_2))
    book = RuleBook(str(tmp_path))
    (rule,) = book.rules("acme")
    assert (rule.kind, rule.threshold, rule.group_by, rule.revision) == (
        Kind.COUNT,
        Decimal(5),
        GroupBy.ENTITY,
        3,
    )
    assert rule.filter.entity_scope == ("rcp_1",) and rule.filter.account_id == "acme"
    second = book.set(replace(rule, name="more", revision=0))
    assert second.revision == 8  # after the file's revision, not the rule's
    assert book.delete("acme", "more")
    assert json.loads(path.read_bytes()) == {**old, "revision": 8}
    assert path.read_bytes() == orjson.dumps({**old, "revision": 8}, option=orjson.OPT_INDENT_2)


def test_a_filter_from_before_the_scopes_loads_with_none(tmp_path: Path) -> None:
    path = tmp_path / "alerts" / "rules.json"
    path.parent.mkdir()
    rule = {**RULE, "filter": {"types": ["recipient.error"]}}
    path.write_bytes(orjson.dumps({"format": 1, "rules": [rule]}))
    (loaded,) = RuleBook(str(tmp_path)).rules()
    assert loaded.filter == EventFilter(account_id="acme", types=("recipient.error",))


def test_a_damaged_rules_file_is_a_rule_book_error(tmp_path: Path) -> None:
    path = tmp_path / "alerts" / "rules.json"
    path.parent.mkdir()
    path.write_bytes(b'{"format": 1, "rules": [{"account_id": "a"}]}')
    with pytest.raises(RuleBookError) as info:
        RuleBook(str(tmp_path))
    assert str(info.value) == f"{path}: 'name'"


def test_a_sinks_file_written_before_loads_and_keeps_its_limit(tmp_path: Path) -> None:
    path = tmp_path / "sinks" / "sinks.json"
    path.parent.mkdir()
    target = {
        "kind": "webhook",
        "url": "https://h.example.com/",
        "secret": "x",
        "batch_size": 10,
        "max_wait_ms": 5,
    }
    sink = {"account_id": "acme", "name": "out", "filter": FULL_FILTER, "target": target, "revision": 2}
    path.write_bytes(orjson.dumps({"format": 1, "revision": 2, "sinks": [sink]}))
    book = SinkBook(str(tmp_path))
    (loaded,) = book.sinks()
    assert loaded.target == WebhookSpec("https://h.example.com/", "x", 10, 5) and not loaded.masked
    assert book.set(replace(loaded, name="again")).revision == 3
    for i in range(48):
        book.set(replace(loaded, name=f"s{i}"))
    with pytest.raises(
        TooManySinksError, match=r"account 'acme' holds 50 sinks, the most it may hold \(50\)"
    ):
        book.set(replace(loaded, name="one-more"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_jobs_file_written_before_loads_with_its_files(tmp_path: Path) -> None:
    exports = tmp_path / "exports"
    (exports / "acme" / "daily").mkdir(parents=True)
    job = {
        "account_id": "acme",
        "name": "daily",
        "filter": FULL_FILTER,
        "format": "jsonl",
        "fields": [],
        "every_s": 86_400,
        "lookback_s": 86_400,
        "keep_days": 7,
        "masked": False,
        "set_at_ms": 1_000,
        "last_run_at_ms": 2_000,
        "running_since_ms": None,
    }
    files = [_made(n) for n in (1, 3, 2)]
    (exports / "jobs.json").write_bytes(orjson.dumps({"format": 1, "jobs": [job]}))
    (exports / "acme" / "daily" / "files.json").write_bytes(orjson.dumps({"format": 1, "files": files}))
    book = JobBook(str(tmp_path))
    loaded = book.get("acme", "daily")
    assert loaded is not None and loaded.last_run_at_ms == 2_000
    assert [f.created_at_ms for f in book.files("acme", "daily")] == [3, 2, 1]  # newest first
    book.forget(loaded.key, "daily-2.jsonl")
    assert [
        f["name"] for f in json.loads((exports / "acme" / "daily" / "files.json").read_bytes())["files"]
    ] == [
        "daily-3.jsonl",
        "daily-1.jsonl",
    ]
    assert "revision" not in json.loads((exports / "jobs.json").read_bytes())


def _made(n: int) -> dict[str, Any]:
    return {
        "name": f"daily-{n}.jsonl",
        "bytes": 10,
        "rows": 1,
        "sha256": "0" * 64,
        "created_at_ms": n,
        "expires_at_ms": n + 1,
        "from_ms": 0,
        "to_ms": n,
    }


# -- the filter codec and the name check ----------------------------------------------------------


def test_a_filter_goes_to_json_and_back_whole() -> None:
    f = EventFilter(
        account_id="acme",
        types=("lead.*", "source.accepted"),
        lead_id="l1",
        flow_id="f1",
        entity_id="e1",
        outcomes=(Outcome.SUCCESS, Outcome.FAILURE),
        start_ms=1_000,
        end_ms=2_000,
        entity_scope=("e1", "e2"),
        flow_scope=("f1",),
        hidden_types=("alert.*",),
    )
    raw = json.loads(json.dumps(filter_json(f)))  # through the text a file holds
    assert filter_from_json("acme", raw) == f
    message = filter_message(f)
    assert list(message.types) == ["lead.*", "source.accepted"]
    assert (message.lead_id, message.flow_id, message.entity_id) == ("l1", "f1", "e1")
    assert list(message.outcomes) == [int(Outcome.SUCCESS), int(Outcome.FAILURE)]
    assert message.start.ToMilliseconds() == 1_000 and message.end.ToMilliseconds() == 2_000


def test_a_filter_without_times_has_none_on_the_wire() -> None:
    message = filter_message(EventFilter(account_id="a", types=("x",)))
    assert not message.HasField("start") and not message.HasField("end")


@pytest.mark.parametrize("name", ["a", "0-b_c", "x" * 64])
def test_names_that_are_names(name: str) -> None:
    assert is_name(name) and check_name(name) == name


@pytest.mark.parametrize("name", ["", "-a", "A", "a.b", "x" * 65, "a b"])
def test_names_that_are_not(name: str) -> None:
    assert not is_name(name)
    with pytest.raises(ServiceError) as info:
        check_name(name, "job_name")
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    if name:
        assert (
            str(info.value)
            == f"job_name: {name!r} must match ^[a-z0-9][a-z0-9_-]{{0,63}}$ (at most 64 characters)"
        )
    else:
        assert str(info.value) == "job_name: required"


def test_a_name_refused_as_a_noun_says_so() -> None:
    with pytest.raises(ServiceError) as info:
        check_name("Bad", noun="job")
    assert (
        str(info.value) == "name: 'Bad' is not a job name (^[a-z0-9][a-z0-9_-]{0,63}$: at most 64 characters)"
    )
