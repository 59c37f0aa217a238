"""The checks of a sink's configuration that need no server: a files target's directory
(relative to the account's root, or absolute under a root the operator allows), the
write-only webhook secret, the stored form of every target kind."""

from __future__ import annotations

from pathlib import Path

import pytest
from leadtrail.server.sinks.book import SinkBook
from leadtrail.server.sinks.model import FileFormat, FilesSpec, NatsSpec, SinkSpec, WebhookSpec
from leadtrail.server.sinks.rules import check_directory, keeping_secret
from leadtrail.server.status import ServiceError
from leadtrail.storage import EventFilter, Outcome


@pytest.mark.parametrize(
    ("directory", "held"),
    [("out", "out"), ("a/b.c/d_e-f", "a/b.c/d_e-f"), ("out/", "out")],
)
def test_relative_directories_are_kept(directory: str, held: str) -> None:
    assert check_directory(directory) == held


@pytest.mark.parametrize(
    ("directory", "roots", "problem"),
    [
        ("", (), "required"),
        ("..", (), "leaves its root"),
        ("a/../../b", (), "leaves its root"),
        ("a/./b", (), "names it by '.'"),
        ("a//b", (), "no empty part"),
        (".hidden", (), "each part must match"),
        ("/srv/lake", (), "is absolute"),
        ("/srv/other/x", ("/srv/lake",), "not under a directory the server allows"),
        ("/srv/lake", ("/srv/lake",), "not under a directory the server allows"),
        ("/srv/lake2/x", ("/srv/lake",), "not under a directory the server allows"),
        ("/srv/lake/../etc", ("/srv/lake",), "leaves its root"),
        ("x" * 1025, (), "over the limit of 1024"),
    ],
)
def test_directories_leaving_their_root_are_refused(
    directory: str, roots: tuple[str, ...], problem: str
) -> None:
    with pytest.raises(ServiceError) as info:
        check_directory(directory, roots)
    assert str(info.value).startswith("files.directory: ") and problem in str(info.value)


def test_absolute_directories_under_an_allowed_root_are_kept() -> None:
    assert check_directory("/srv/lake/acme/events/", ("/srv/other", "/srv/lake")) == "/srv/lake/acme/events"


def test_a_secret_is_kept_for_the_same_url_only() -> None:
    held = SinkSpec("acme", "crm", EventFilter("acme"), WebhookSpec("https://crm.example/a", secret="s1"))
    again = SinkSpec("acme", "crm", EventFilter("acme"), WebhookSpec("https://crm.example/a"))
    moved = SinkSpec("acme", "crm", EventFilter("acme"), WebhookSpec("https://crm.example/b"))
    assert keeping_secret(again, held).target == WebhookSpec("https://crm.example/a", secret="s1")
    assert keeping_secret(moved, held).target == WebhookSpec("https://crm.example/b")


def test_the_book_keeps_every_target_kind_and_its_secret_readable_by_the_server_alone(tmp_path: Path) -> None:
    f = EventFilter("acme", types=("source.*",), outcomes=(Outcome.FAILURE,), entity_scope=("buyer-7",))
    sinks = [
        SinkSpec(
            "acme", "a", f, NatsSpec(("nats://n1:4222", "nats://n2:4222"), "EVENTS", "lt", 3, 600), True, 5
        ),
        SinkSpec("acme", "b", f, WebhookSpec("https://crm.example/a", "s3cret", 50, 200), start_after=9),
        SinkSpec("acme", "c", f, FilesSpec("lake/csv", FileFormat.CSV, 100, 30, ("id", "lead.email"))),
    ]
    book = SinkBook(str(tmp_path))
    stored = [book.set(s) for s in sinks]
    assert [s.revision for s in stored] == [1, 2, 3]
    assert SinkBook(str(tmp_path)).sinks("acme") == stored
    assert SinkBook(str(tmp_path)).sinks("globex") == []
    assert (tmp_path / "sinks" / "sinks.json").stat().st_mode & 0o777 == 0o600
    assert book.delete("acme", "b") and not book.delete("acme", "b")
    assert [s.name for s in SinkBook(str(tmp_path)).sinks()] == ["a", "c"]
