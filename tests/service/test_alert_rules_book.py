"""The checked rule and its file, without a server: the wire form converted there and back, the
secret kept on a replace to the same URL only, a limited key's scope and the hidden alert
types surviving the file, and the rule book telling its listeners when asked to."""

from __future__ import annotations

import os
import stat
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import grpc
import pytest
from leadtrail.server.alerts import MAX_RULES_PER_ACCOUNT, GroupBy, Kind, RuleBook, TooManyRulesError
from leadtrail.server.alerts.rules import (
    PRESETS,
    Scope,
    keeping_secret,
    message_from_rule,
    preset,
    preset_message,
    rule_from_message,
)
from leadtrail.server.status import ServiceError
from leadtrail.storage import Outcome
from leadtrail.v1 import alerts_pb2, event_pb2, query_pb2


def message(**fields: object) -> alerts_pb2.AlertRule:
    values: dict[str, object] = {
        "name": "fails",
        "kind": alerts_pb2.ALERT_KIND_DROP,
        "filter": event_pb2.EventFilter(types=["source.accepted"], outcomes=[event_pb2.OUTCOME_SUCCESS]),
        "base": event_pb2.EventFilter(types=["source.submitted"]),
        "threshold": "0.25",
        "window_s": 3600,
        "min_events": 20,
        "baseline_windows": 24,
        "group_by": query_pb2.GROUP_BY_FLOW,
        "webhook_url": "https://hooks.example.com/x",
        "webhook_secret": "k1",
        "description": "sources",
    }
    values.update(fields)
    return alerts_pb2.AlertRule(**values)  # type: ignore[arg-type]


def test_a_rule_converts_there_and_back_without_its_secret() -> None:
    msg = message()
    msg.filter.start.FromMilliseconds(1_700_000_000_000)
    rule = rule_from_message(msg, "acme", Scope(("src_1",), ()), now_ms=1234, last_position=77)
    assert (rule.account_id, rule.kind, rule.threshold, rule.group_by) == (
        "acme",
        Kind.DROP,
        Decimal("0.25"),
        GroupBy.FLOW,
    )
    assert rule.filter.outcomes == (Outcome.SUCCESS,) and rule.filter.start_ms == 1_700_000_000_000
    assert (
        rule.filter.entity_scope == ("src_1",)
        and rule.base is not None
        and rule.base.entity_scope == ("src_1",)
    )
    assert rule.filter.hidden_types == ("alert.*",) and rule.base.hidden_types == ("alert.*",)
    assert (rule.set_at_ms, rule.set_after_position, rule.version) == (1234, 77, "0:77:1234")
    assert "k1" not in repr(rule)
    back = message_from_rule(rule)
    assert back.webhook_secret == "" and back.webhook_secret_set
    assert back.set_at.ToMilliseconds() == 1234 and back.set_after_position == 77
    expected = message()
    expected.filter.start.FromMilliseconds(1_700_000_000_000)
    expected.ClearField("webhook_secret")
    back.ClearField("webhook_secret_set")
    back.ClearField("set_at")
    back.ClearField("set_after_position")
    assert back == expected


def test_the_secret_is_kept_for_the_same_url_only() -> None:
    old = rule_from_message(message(), "acme", Scope(), 1, 1)
    same = rule_from_message(message(webhook_secret="", threshold="0.3"), "acme", Scope(), 2, 2)
    assert keeping_secret(same, old).webhook_secret == "k1"
    replaced = rule_from_message(message(webhook_secret="k2"), "acme", Scope(), 2, 2)
    assert keeping_secret(replaced, old).webhook_secret == "k2"
    moved = rule_from_message(
        message(webhook_secret="", webhook_url="https://else.example.com/"), "acme", Scope(), 2, 2
    )
    assert keeping_secret(moved, old).webhook_secret == ""
    unhooked = rule_from_message(message(webhook_secret="", webhook_url=""), "acme", Scope(), 2, 2)
    assert keeping_secret(unhooked, old).webhook_secret == ""
    assert keeping_secret(same, None).webhook_secret == ""


def test_a_refusal_is_invalid_argument_naming_the_field() -> None:
    with pytest.raises(ServiceError) as info:
        rule_from_message(message(base=event_pb2.EventFilter(types=["Nope"])), "acme", Scope(), 1, 1)
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert str(info.value).startswith("base.types[0]: 'Nope'")
    too_late = message()
    too_late.filter.end.seconds = 2**60
    with pytest.raises(ServiceError) as info:
        rule_from_message(too_late, "acme", Scope(), 1, 1)
    assert str(info.value).startswith("filter.end: outside the years")


def test_every_preset_is_a_checked_rule_named_as_asked() -> None:
    for name in PRESETS:
        rule = preset(name, "acme", webhook_url="https://h.example.com/", webhook_secret="s")
        assert rule.name == name and rule.account_id == "acme" and rule.webhook_secret == "s"
        assert rule.description
        assert preset_message(name, "mine").name == "mine"
    with pytest.raises(KeyError):
        preset_message("no-such-preset")


def test_the_rule_book_keeps_scopes_and_tells_listeners_when_asked(tmp_path: Path) -> None:
    book = RuleBook(str(tmp_path))
    heard: list[list[str]] = []
    book.add_listener(lambda rules: heard.append([r.name for r in rules]))
    scoped = rule_from_message(message(), "acme", Scope(("src_1",), ("flow_9",)), 5, 6)
    book.set(scoped, notify=False)
    assert heard == []
    book.notify()
    assert heard == [["fails"]]
    book.set(rule_from_message(message(name="other"), "globex", Scope(), 5, 6))
    assert heard[-1] == ["fails", "other"]
    assert stat.S_IMODE(os.stat(book.path).st_mode) == 0o600

    again = RuleBook(str(tmp_path))
    assert again.get("acme", "fails") == replace(scoped, revision=1)
    [kept] = again.rules("acme")
    assert kept.filter.entity_scope == ("src_1",) and kept.filter.flow_scope == ("flow_9",)
    assert kept.webhook_secret == "k1" and kept.filter.hidden_types == ("alert.*",)
    assert again.delete("acme", "fails", notify=False) and not again.delete("acme", "fails")
    assert [r.name for r in RuleBook(str(tmp_path)).rules()] == ["other"]


def test_every_set_gets_a_new_revision_that_survives_a_restart(tmp_path: Path) -> None:
    """Two sets of a rule within one millisecond and with no commit between are still two
    versions: the evaluator drops the state of the first (a changed kind or window)."""
    book = RuleBook(str(tmp_path))
    first = book.set(rule_from_message(message(), "acme", Scope(), 5, 6))
    second = book.set(rule_from_message(message(threshold="0.5"), "acme", Scope(), 5, 6))
    assert (first.revision, second.revision) == (1, 2) and first.version != second.version
    book.delete("acme", "fails")
    again = RuleBook(str(tmp_path))
    third = again.set(rule_from_message(message(), "acme", Scope(), 5, 6))
    assert third.revision == 3  # never given twice, even after the rule it was given to is gone


def test_an_account_holds_at_most_max_rules(tmp_path: Path) -> None:
    book = RuleBook(str(tmp_path))
    for i in range(MAX_RULES_PER_ACCOUNT):
        book.set(rule_from_message(message(name=f"r{i}"), "acme", Scope(), 5, 6), notify=False)
    with pytest.raises(TooManyRulesError, match=f"holds {MAX_RULES_PER_ACCOUNT} alert rules"):
        book.set(rule_from_message(message(name="one-more"), "acme", Scope(), 5, 6))
    assert book.get("acme", "one-more") is None
    book.set(rule_from_message(message(name="r0", threshold="0.9"), "acme", Scope(), 5, 6))  # a replace
    book.set(rule_from_message(message(name="one-more"), "globex", Scope(), 5, 6))  # another account
    assert len(RuleBook(str(tmp_path)).rules("acme")) == MAX_RULES_PER_ACCOUNT
