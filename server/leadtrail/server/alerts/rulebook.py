"""The alert rules of every account: ``<data>/alerts/rules.json``.

One file for all accounts, replaced atomically on every change (rules change
rarely; the evaluator reads them from memory). It holds webhook secrets, so it is
created readable by the server's user alone (0600). Listeners hear of every
change on the thread that made it (the event loop), in order.

Every step of a write goes through the ``Files`` seam (fault tests fail or crash
each one). A crash leaves the old file or the new one and perhaps a temporary file,
which opening the book removes. A change that fails stores nothing: the book in
memory keeps the old rules, and the file is put back to them when the failure came
after the new one took its place.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import replace
from decimal import Decimal
from typing import Any

import orjson

from leadtrail.storage import EventFilter, Files, Outcome

from .model import GroupBy, Kind, Rule

DIRECTORY = "alerts"
FILE = "rules.json"
FORMAT = 1
MAX_RULES_PER_ACCOUNT = 200
"""Each rule holds up to tens of MB of windows (evaluator.py): the bound of the whole."""
TMP_SUFFIX = ".tmp"
MODE = 0o600
"""The file and its temporary file: they hold webhook secrets."""


class RuleBookError(Exception):
    """The rules file cannot be read; the message names the file and the problem."""


class TooManyRulesError(Exception):
    """An account already holds ``MAX_RULES_PER_ACCOUNT`` rules and a new one was set."""


def _filter_json(f: EventFilter | None) -> dict[str, Any] | None:
    if f is None:
        return None
    return {
        "types": list(f.types),
        "lead_id": f.lead_id,
        "flow_id": f.flow_id,
        "entity_id": f.entity_id,
        "outcomes": [int(o) for o in f.outcomes],
        "start_ms": f.start_ms,
        "end_ms": f.end_ms,
        # The setting key's scope and what rules never count (``rules.py``).
        "entity_scope": list(f.entity_scope),
        "flow_scope": list(f.flow_scope),
        "hidden_types": list(f.hidden_types),
    }


def _filter_from(account_id: str, raw: dict[str, Any] | None) -> EventFilter | None:
    if raw is None:
        return None
    return EventFilter(
        account_id=account_id,
        types=tuple(raw.get("types", ())),
        lead_id=raw.get("lead_id", ""),
        flow_id=raw.get("flow_id", ""),
        entity_id=raw.get("entity_id", ""),
        outcomes=tuple(Outcome(o) for o in raw.get("outcomes", ())),
        start_ms=raw.get("start_ms"),
        end_ms=raw.get("end_ms"),
        entity_scope=tuple(raw.get("entity_scope", ())),
        flow_scope=tuple(raw.get("flow_scope", ())),
        hidden_types=tuple(raw.get("hidden_types", ())),
    )


def rule_json(rule: Rule) -> dict[str, Any]:
    return {
        "account_id": rule.account_id,
        "name": rule.name,
        "kind": rule.kind.label,
        "filter": _filter_json(rule.filter),
        "base": _filter_json(rule.base),
        "threshold": str(rule.threshold),
        "window_s": rule.window_s,
        "min_events": rule.min_events,
        "baseline_windows": rule.baseline_windows,
        "group_by": rule.group_by.value,
        "webhook_url": rule.webhook_url,
        "webhook_secret": rule.webhook_secret,
        "description": rule.description,
        "set_at_ms": rule.set_at_ms,
        "set_after_position": rule.set_after_position,
        "revision": rule.revision,
    }


def rule_from(raw: dict[str, Any]) -> Rule:
    account = raw["account_id"]
    f = _filter_from(account, raw["filter"])
    assert f is not None
    return Rule(
        account_id=account,
        name=raw["name"],
        kind=Kind[raw["kind"].upper()],
        filter=f,
        base=_filter_from(account, raw.get("base")),
        threshold=Decimal(raw["threshold"]),
        window_s=raw.get("window_s", 0),
        min_events=raw.get("min_events", 0),
        baseline_windows=raw.get("baseline_windows", 0),
        group_by=GroupBy(raw.get("group_by", "")),
        webhook_url=raw.get("webhook_url", ""),
        webhook_secret=raw.get("webhook_secret", ""),
        description=raw.get("description", ""),
        set_at_ms=raw.get("set_at_ms", 0),
        set_after_position=raw.get("set_after_position", 0),
        revision=raw.get("revision", 0),
    )


Listener = Callable[[list[Rule]], None]


class RuleBook:
    """Every account's rules, kept in memory and in one file."""

    def __init__(self, data_dir: str, files: Files | None = None) -> None:
        self.directory = os.path.join(data_dir, DIRECTORY)
        self.path = os.path.join(self.directory, FILE)
        self._files = files or Files()
        self._lock = threading.Lock()
        self._listeners: list[Listener] = []
        self._revision = 0
        """The last revision given (kept in the file, so it never goes back)."""
        self._stored: bytes | None = None
        """The file's bytes as last read or written (None: no file), put back when a change fails."""
        self._directory_made = False
        self._remove_leftover()
        self._rules: dict[tuple[str, str], Rule] = self._load()

    def _remove_leftover(self) -> None:
        """A write that crashed may have left its temporary file (secrets, perhaps half
        written); the rules file itself is the old one or the new one."""
        tmp = self.path + TMP_SUFFIX
        try:
            self._files.remove(tmp)
        except FileNotFoundError:
            pass
        except OSError as e:
            raise RuleBookError(f"{tmp}: cannot remove a leftover of a write: {e}") from None

    def _load(self) -> dict[tuple[str, str], Rule]:
        try:
            with open(self.path, "rb") as f:
                stored = f.read()
            raw = orjson.loads(stored)
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            raise RuleBookError(f"{self.path}: {e}") from None
        try:
            if raw.get("format") != FORMAT:
                raise ValueError(f"format {raw.get('format')!r}, expected {FORMAT}")
            rules = [rule_from(r) for r in raw["rules"]]
            revision = raw.get("revision", 0)
            if type(revision) is not int or revision < 0:
                raise ValueError(f"revision {revision!r} is not a revision")
        except (ValueError, KeyError, TypeError, AttributeError, ArithmeticError) as e:
            raise RuleBookError(f"{self.path}: {e}") from None
        self._revision = max([revision, *(r.revision for r in rules)])
        self._stored = stored
        return {r.key: r for r in rules}

    def rules(self, account_id: str | None = None) -> list[Rule]:
        """The rules of ``account_id`` (of every account when None), by account and name."""
        chosen = (r for r in self._rules.values() if account_id is None or r.account_id == account_id)
        return sorted(chosen, key=lambda r: r.key)

    def get(self, account_id: str, name: str) -> Rule | None:
        return self._rules.get((account_id, name))

    def set(self, rule: Rule, *, notify: bool = True) -> Rule:
        """Create or replace ``rule`` (by account and name), durably. ``notify=False`` leaves
        telling the listeners to the caller (``notify()``): the file is written on a thread
        and the listeners hear on the event loop."""
        with self._lock:
            if rule.key not in self._rules:
                held = sum(1 for key in self._rules if key[0] == rule.account_id)
                if held >= MAX_RULES_PER_ACCOUNT:
                    raise TooManyRulesError(
                        f"account {rule.account_id!r} holds {held} alert rules, the most it may hold "
                        f"({MAX_RULES_PER_ACCOUNT}); delete one first"
                    )
            rule = replace(rule, revision=self._revision + 1)
            rules = dict(self._rules)
            rules[rule.key] = rule
            self._write(rules, rule.revision)
        if notify:
            self._changed()
        return rule

    def delete(self, account_id: str, name: str, *, notify: bool = True) -> bool:
        """False when the account has no rule of that name."""
        with self._lock:
            if (account_id, name) not in self._rules:
                return False
            rules = dict(self._rules)
            del rules[(account_id, name)]
            self._write(rules, self._revision)
        if notify:
            self._changed()
        return True

    def notify(self) -> None:
        """Tell the listeners the rules as they are now (after ``set``/``delete`` with
        ``notify=False``)."""
        self._changed()

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def _write(self, rules: dict[tuple[str, str], Rule], revision: int) -> None:
        """Store ``rules`` or, raising OSError, leave memory and the file as they were."""
        ordered = sorted(rules.values(), key=lambda r: r.key)
        data = orjson.dumps(
            {"format": FORMAT, "revision": revision, "rules": [rule_json(r) for r in ordered]},
            option=orjson.OPT_INDENT_2,
        )
        if not self._directory_made:
            self._files.make_directory(self.directory)
            self._directory_made = True
        # The temporary file is made 0600 before a byte of secrets is written; a failure puts
        # the file back to the rules in memory, which stay as they are.
        self._files.replace_file(self.path, data, self._stored, TMP_SUFFIX, mode=MODE)
        self._rules = rules
        self._revision = revision
        self._stored = data

    def _changed(self) -> None:
        rules = self.rules()
        for listener in self._listeners:
            listener(rules)
