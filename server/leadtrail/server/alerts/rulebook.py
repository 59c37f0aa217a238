"""The alert rules of every account: ``<data>/alerts/rules.json``.

One file for all accounts, replaced atomically on every change (rules change
rarely; the evaluator reads them from memory). It holds webhook secrets, so it is
created readable by the server's user alone (0600). Listeners hear of every
change on the thread that made it (the event loop), in order. A crash or a failed
change leaves the old file or the new one (``configbook``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from leadtrail.server.config_filters import filter_from_json, filter_json
from leadtrail.server.configbook import FORMAT as FORMAT
from leadtrail.server.configbook import TMP_SUFFIX as TMP_SUFFIX
from leadtrail.server.configbook import BookForm, ConfigFile, ConfigFileError, NamedBook
from leadtrail.storage import Files

from .model import GroupBy, Kind, Rule

DIRECTORY = "alerts"
FILE = "rules.json"
MAX_RULES_PER_ACCOUNT = 200
"""Each rule holds up to tens of MB of windows (evaluator.py): the bound of the whole."""
MODE = 0o600
"""The file and its temporary file: they hold webhook secrets."""


class RuleBookError(ConfigFileError):
    """The rules file cannot be read; the message names the file and the problem."""


class TooManyRulesError(Exception):
    """An account already holds ``MAX_RULES_PER_ACCOUNT`` rules and a new one was set."""


def rule_json(rule: Rule) -> dict[str, Any]:
    return {
        "account_id": rule.account_id,
        "name": rule.name,
        "kind": rule.kind.label,
        "filter": filter_json(rule.filter),
        "base": filter_json(rule.base) if rule.base is not None else None,
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
    base = raw.get("base")
    return Rule(
        account_id=account,
        name=raw["name"],
        kind=Kind[raw["kind"].upper()],
        filter=filter_from_json(account, raw["filter"]),
        base=filter_from_json(account, base) if base is not None else None,
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


_FORM: BookForm[Rule] = BookForm(
    "rules", rule_json, rule_from, MAX_RULES_PER_ACCOUNT, TooManyRulesError, "alert rules"
).numbered()


class RuleBook(NamedBook[Rule]):
    """Every account's rules, kept in memory and in one file."""

    def __init__(self, data_dir: str, files: Files | None = None) -> None:
        self.directory = os.path.join(data_dir, DIRECTORY)
        self.path = os.path.join(self.directory, FILE)
        # The temporary file is made 0600 before a byte of secrets is written.
        super().__init__(ConfigFile(self.path, files or Files(), mode=MODE, error=RuleBookError), _FORM)

    def rules(self, account_id: str | None = None) -> list[Rule]:
        """The rules of ``account_id`` (of every account when None), by account and name."""
        return self.entries(account_id)

    def set(self, rule: Rule, *, notify: bool = True) -> Rule:
        """Create or replace ``rule`` (by account and name), durably. ``notify=False`` leaves
        telling the listeners to the caller (``notify()``): the file is written on a thread
        and the listeners hear on the event loop."""
        rule = super().set(rule)
        if notify:
            self.notify()
        return rule

    def delete(self, account_id: str, name: str, *, notify: bool = True) -> bool:
        """False when the account has no rule of that name."""
        if not super().delete(account_id, name):
            return False
        if notify:
            self.notify()
        return True
