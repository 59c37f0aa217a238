"""Field classes of snapshots and details: ``secret``, ``pii`` or ``plain``.

A field is classed by its name (the last part of a dotted key, camelCase or
snake_case): ``secret`` (SSNs, passwords, card and bank numbers, credentials,
API keys) are never stored in clear, ``pii`` (emails, phones, names,
addresses, IPs, birth dates) are personal data, masked for most roles, erased
on request and after their retention age; the rest is plain.

Each account may add names to a class with its own field policy (patterns
such as ``customer_ref`` or ``contact.*``) and may declare a name the defaults
class as ``pii`` plain (``"source_name"`` in a business where that is a
company). A default ``secret`` stays secret whatever a policy says: the store
promises that no secret value is ever on disk in clear.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from .errors import InvalidArgumentError, MetadataFileError
from .fs import Files

SECRET = "secret"
PII = "pii"
PLAIN = "plain"

# A name is classed by its last dotted part ("contact.email" is an email), ending
# in one of these words, optionally numbered ("phone_1", "address_2").
_SECRET_NAMES = re.compile(
    r"(^|_)(ssn|social_security(_number)?|password|passwd|passphrase|credentials?|api_?key|secret"
    r"|access_token|auth_token|api_token|card_number|cc_number|credit_card(_number)?|cvv|cvc"
    r"|routing_number|account_number|bank_account(_number)?|iban|tax_id|drivers?_license(_number)?"
    r"|passport(_number)?)(_\d+)?$"
)
_PII_NAMES = re.compile(
    r"(^|_)(e_?mail|email_address|phone|phone_number|mobile|mobile_phone|cell_phone|home_phone"
    r"|work_phone|first_name|last_name|full_name|middle_name|maiden_name|address|address_line"
    r"|street|street_address|ip_address|dob|date_of_birth|birth_date|birthday)(e?s|_?\d+)?$"
)
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
PII_WHOLE_NAMES = frozenset({"name", "ip", "cell"})
"""Personal only as a whole top-level name: "source.name" is the lead source's name."""

MAX_PATTERNS = 200
MAX_PATTERN_LENGTH = 128
_PATTERN = re.compile(r"^[A-Za-z0-9_.*?\-\[\]]+$")
POLICY_FILE = "fields.json"


def default_class(key: str) -> str:
    """The class the built-in rules give a field name."""
    last = key.rsplit(".", 1)[-1]
    name = _CAMEL.sub("_", last).lower().replace("-", "_")  # "socialSecurityNumber" too
    if _SECRET_NAMES.search(name):
        return SECRET
    if _PII_NAMES.search(name) or key.lower() in PII_WHOLE_NAMES:
        return PII
    return PLAIN


@dataclass(frozen=True, slots=True)
class FieldPolicy:
    """One account's additions to the built-in field classes."""

    account_id: str
    secret: tuple[str, ...] = ()
    """Names or patterns (``*``, ``?``) classed secret; matched, case-blind, against the
    whole key and its last dotted part."""
    pii: tuple[str, ...] = ()
    plain: tuple[str, ...] = ()
    """Names the built-in rules class pii that are not personal in this account."""


def _matcher(patterns: Iterable[str]) -> Callable[[str], bool]:
    compiled = [re.compile(fnmatch.translate(p.lower())) for p in patterns]
    if not compiled:
        return lambda key: False
    combined = re.compile("|".join(f"(?:{c.pattern})" for c in compiled))

    def matches(key: str) -> bool:
        lower = key.lower()
        return bool(combined.match(lower) or combined.match(lower.rsplit(".", 1)[-1]))

    return matches


Classify = Callable[[str], str]


def classifier(policy: FieldPolicy | None) -> Classify:
    """A cached ``name -> class`` function for an account's policy (None: the defaults)."""
    if policy is None or not (policy.secret or policy.pii or policy.plain):
        return default_classify
    secret, pii, plain = _matcher(policy.secret), _matcher(policy.pii), _matcher(policy.plain)

    @lru_cache(maxsize=4096)
    def classify(key: str) -> str:
        built_in = default_class(key)
        if built_in == SECRET or secret(key):
            return SECRET
        if pii(key):
            return PII
        if built_in == PII and plain(key):
            return PLAIN
        return built_in

    return classify


default_classify: Classify = lru_cache(maxsize=4096)(default_class)


def check_policy(policy: FieldPolicy) -> None:
    for name in ("secret", "pii", "plain"):
        patterns = getattr(policy, name)
        if len(patterns) > MAX_PATTERNS:
            raise InvalidArgumentError(f"{name}: {len(patterns)} patterns, over the limit of {MAX_PATTERNS}")
        for i, pattern in enumerate(patterns):
            if not isinstance(pattern, str) or not pattern:
                raise InvalidArgumentError(f"{name}[{i}]: empty pattern")
            if len(pattern) > MAX_PATTERN_LENGTH:
                raise InvalidArgumentError(
                    f"{name}[{i}]: {len(pattern)} characters, over the limit of {MAX_PATTERN_LENGTH}"
                )
            if not _PATTERN.match(pattern):
                raise InvalidArgumentError(
                    f"{name}[{i}] {pattern!r}: only letters, digits, '_', '-', '.', '*', '?' and [] "
                    "are allowed"
                )


class FieldPolicies:
    """The field policy of every account, kept in ``fields.json`` of the data directory."""

    def __init__(self, path: str, files: Files) -> None:
        self._path = os.path.join(path, POLICY_FILE)
        self._files = files
        self._lock = threading.Lock()
        self._policies: dict[str, FieldPolicy] = {}
        self._classifiers: dict[str, Classify] = {}
        try:
            with open(self._path) as f:
                items = json.load(f)
            for item in items:
                policy = FieldPolicy(
                    item["account_id"],
                    tuple(item.get("secret", ())),
                    tuple(item.get("pii", ())),
                    tuple(item.get("plain", ())),
                )
                check_policy(policy)
                self._policies[policy.account_id] = policy
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError, TypeError, InvalidArgumentError) as e:
            raise MetadataFileError(f"{self._path} cannot be read: {e}") from e

    def get(self, account_id: str) -> FieldPolicy:
        return self._policies.get(account_id) or FieldPolicy(account_id)

    def set(self, policy: FieldPolicy) -> FieldPolicy:
        check_policy(policy)
        with self._lock:
            updated = dict(self._policies)
            updated[policy.account_id] = policy
            items = [
                {
                    "account_id": p.account_id,
                    "secret": list(p.secret),
                    "pii": list(p.pii),
                    "plain": list(p.plain),
                }
                for p in sorted(updated.values(), key=lambda p: p.account_id)
            ]
            self._files.write_file_atomically(self._path, json.dumps(items, indent=1).encode())
            self._policies = updated
            self._classifiers.pop(policy.account_id, None)
        return policy

    def classifier(self, account_id: str) -> Classify:
        found = self._classifiers.get(account_id)
        if found is None:
            found = classifier(self._policies.get(account_id))
            self._classifiers[account_id] = found
        return found


def personal_values(
    data: Any, classify: Classify, out: set[str], classes: frozenset[str] = frozenset({SECRET, PII})
) -> None:
    """Add to ``out`` every value of a field in ``classes`` in ``data`` (at any depth), as text."""
    if isinstance(data, list):
        for item in data:
            personal_values(item, classify, out, classes)
        return
    if not isinstance(data, Mapping):
        return
    for key, value in data.items():
        if classify(key) in classes:
            _leaves(value, out)
        else:
            personal_values(value, classify, out, classes)


def _leaves(value: Any, out: set[str]) -> None:
    if isinstance(value, Mapping):
        for v in value.values():
            _leaves(v, out)
    elif isinstance(value, list):
        for v in value:
            _leaves(v, out)
    elif value is not None and value != "" and not isinstance(value, bool):
        out.add(value if isinstance(value, str) else json.dumps(value))


MIN_QUOTED = 5
"""Shorter personal values ("Al", "CA") are erased from their own fields only, not hunted
through free text, where they would cut ordinary words."""

Quotes = re.Pattern[str]


def quotes_of(values: Iterable[str]) -> Quotes | None:
    """A pattern finding any of ``values`` (those long enough) in text, whatever its case."""
    long_enough = sorted({v for v in values if len(v) >= MIN_QUOTED}, key=len, reverse=True)
    if not long_enough:
        return None
    return re.compile("|".join(re.escape(v) for v in long_enough), re.IGNORECASE)


def scrub(data: Any, classify: Classify, classes: frozenset[str], marker: Any, quotes: Quotes | None) -> Any:
    """``data`` with the values of fields in ``classes`` replaced by ``marker``, and every
    text of ``quotes`` in the remaining strings replaced too; the input is left alone."""
    if isinstance(data, list):
        return [scrub(item, classify, classes, marker, quotes) for item in data]
    if isinstance(data, Mapping):
        out = {}
        for key, value in data.items():
            if value is not None and value != "" and classify(key) in classes:
                out[key] = marker
            else:
                out[key] = scrub(value, classify, classes, marker, quotes)
        return out
    if quotes is not None and isinstance(data, str):
        return quotes.sub(marker if isinstance(marker, str) else "", data)
    return data
