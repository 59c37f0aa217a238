"""Keyed fingerprints of personal values: finding a lead by email or phone with no
personal value in clear in the index.

A lead is found by a value its snapshot held in a personal field. The index keeps
``HMAC-SHA256(key, account \\0 value class \\0 normalised value)`` (its first 16 bytes) of
each such value, never the value: without the key (``search.key`` of the data directory, 32 random
bytes made on first open, mode 0600, never in the index) an index file tells nothing
of the values, not even which leads share one across accounts.

Value classes and how a value is normalised before it is fingerprinted:

- ``email``: fields named ``email`` (``e_mail``, ``email_address``, ``work_email``,
  ``emails``, ``email_2``...): trimmed and case-blind.
- ``phone``: fields whose name holds ``phone`` (``phone``, ``phone_2``, ``phoneNumber``,
  ``home_phone``), ``mobile`` or ``cell``: digits only, and of a number with more
  than ten digits only its last ten, so ``+1 (555) 010-2030``, ``555.010.2030`` and
  ``15550102030`` are one number (two numbers of different countries sharing their
  last ten digits would be found together, within one account).
- every other field the account's field policy classes ``pii``: the class is the
  field's name (its last dotted part, snake_case, lower case), the value trimmed,
  case-blind, its runs of white space made one space.

Email and phone fields are searchable whatever the policy says of them (unless it
makes them secret); ``secret`` fields are never fingerprinted here: the server stores
them sealed already, and a search by a secret would be a way to test guesses of it.
``[erased]`` (what an erasure leaves) and ``audit.*`` records are not indexed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

import lmdb

from .event import AUDIT_TYPE_PREFIX, EventFields
from .fields import PII, SECRET, Classify
from .fs import Files
from .keyfile import load_key_file

KEY_FILE = "search.key"
KEY_BYTES = 32
EMAIL = "email"
PHONE = "phone"
PHONE_DIGITS = 10
"""A phone number is compared by its last ten digits: a country code is left out."""
MAX_LEADS = 1000
"""A search answers at most this many leads, the most recently active."""
MAX_VALUE_BYTES = 1024
"""A longer value is not fingerprinted, and not searched for."""
ERASED = "[erased]"
FINGERPRINT_BYTES = 16
Value = tuple[str, str]
"""A personal value as sent, with its class: (class, value)."""
_Shapes = dict[tuple[str, ...], tuple[tuple[tuple[str, str], ...], tuple[str, ...]]]
"""A snapshot's field names -> (its searchable fields with their class, the other fields
that are not secret: where nested values are looked for)."""
_SCALARS = frozenset({str, int, float, bool, type(None)})

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_EMAIL_NAME = re.compile(r"(^|_)e_?mail(_address)?(e?s|_?\d+)?$")
_PHONE_NAME = re.compile(r"phone|(^|_)(mobile|cell)(e?s|_?\d+)?$")
_SPACES = re.compile(r"\s+")
_NOT_DIGITS = re.compile(r"\D+")


def load_key(data_dir: str, files: Files, create: bool) -> bytes | None:
    """The data directory's search key (see keyfile.py); None when there is none and not
    ``create``."""
    return load_key_file(data_dir, KEY_FILE, KEY_BYTES, files, create, f"a {KEY_BYTES}-byte key")


def field_name(key: str) -> str:
    """A field's name as classes compare it: its last dotted part, snake_case, lower case."""
    last = key.rsplit(".", 1)[-1]
    return _CAMEL.sub("_", last).lower().replace("-", "_").strip()


def value_class(key: str) -> str:
    """The class of the values of a field: ``email``, ``phone`` or the field's name."""
    name = field_name(key)
    if _EMAIL_NAME.search(name):
        return EMAIL
    if _PHONE_NAME.search(name):
        return PHONE
    return "field:" + name


def normalise(value_cls: str, value: str) -> str:
    """The value as it is compared (see the module's text); empty when nothing is left."""
    if value_cls == PHONE:
        digits = _NOT_DIGITS.sub("", value)
        return digits[-PHONE_DIGITS:]
    if value_cls == EMAIL:
        return value.strip().casefold()
    return _SPACES.sub(" ", value.strip()).casefold()


def searchable(key: str, classify: Classify) -> str | None:
    """The value class a field is searched by, or None when it is not searchable."""
    cls = classify(key)
    if cls == SECRET:
        return None
    value_cls = value_class(key)
    if cls == PII or value_cls == EMAIL or "phone" in field_name(key):
        return value_cls
    return None


def fingerprint(key: bytes, account_id: str, value_cls: str, normalised: str) -> bytes:
    """HMAC-SHA256 cut to its first 16 bytes (as RFC 4868's HMAC-SHA-256-128): 128 bits keep
    two values from sharing one, and every entry of the index is 32 bytes smaller."""
    message = b"\0".join((account_id.encode(), value_cls.encode(), normalised.encode()))
    return hmac.digest(key, message, hashlib.sha256)[:FINGERPRINT_BYTES]


class KeyedHash:
    """``fingerprint`` with the key's padded blocks hashed once (RFC 2104: HMAC is
    H(key ^ opad, H(key ^ ipad, message))): each value then costs two copies of a hash
    state instead of a new HMAC context, a third of the time on the write path. Same
    bytes as ``fingerprint`` (tested)."""

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes) -> None:
        block = hashlib.sha256().block_size
        padded = (hashlib.sha256(key).digest() if len(key) > block else key).ljust(block, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in padded))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in padded))

    def __call__(self, account_id: str, value_cls: str, normalised: str) -> bytes:
        inner = self._inner.copy()
        inner.update(b"\0".join((account_id.encode(), value_cls.encode(), normalised.encode())))
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()[:FINGERPRINT_BYTES]


@dataclass(frozen=True, slots=True)
class LeadMatch:
    """A lead found by a personal value: its events the caller may see."""

    lead_id: str
    first_timestamp_ms: int
    last_timestamp_ms: int
    events: int


class LeadPrints:
    """The fingerprints of the personal values of snapshots, and of a search."""

    def __init__(self, key: bytes, classifier: Callable[[str], Classify]) -> None:
        self._hash = KeyedHash(key)
        self.key_id = hmac.digest(key, b"leadtrail search key id", hashlib.sha256)[:8].hex().encode()
        """Names the key without revealing it: an index made with another key is rebuilt."""
        self._classifier = classifier
        self._shapes: dict[Classify, _Shapes] = {}

    def of_search(self, account_id: str, field: str, value: str) -> bytes | None:
        """The fingerprint a search looks up; None when ``field`` is not searchable in the
        account or the value normalises to nothing."""
        value_cls = searchable(field, self._classifier(account_id))
        if value_cls is None:
            return None
        normalised = normalise(value_cls, value)
        if not normalised:
            return None
        return self._hash(account_id, value_cls, normalised)

    def searchable(self, account_id: str, field: str) -> bool:
        return searchable(field, self._classifier(account_id)) is not None

    def of_event(self, account_id: str, event_type: str, snapshot: Mapping[str, Any]) -> set[bytes]:
        """The fingerprints of every personal value of an event's snapshot."""
        return {
            fp
            for value_cls, leaf in self.values_of(account_id, event_type, snapshot)
            if (fp := self.of_value(account_id, value_cls, leaf))
        }

    def values_of(self, account_id: str, event_type: str, snapshot: Mapping[str, Any]) -> set[Value]:
        """Every personal value of an event's snapshot with its class, as sent: what
        ``of_value`` fingerprints. Cheap next to that: the index asks it of every step and
        fingerprints only the values it does not know a lead to have."""
        out: set[Value] = set()
        if snapshot and not event_type.startswith(AUDIT_TYPE_PREFIX):
            classify = self._classifier(account_id)
            shapes = self._shapes.get(classify)
            if shapes is None:
                if len(self._shapes) > 64:  # classifiers of replaced policies
                    self._shapes.clear()
                shapes = self._shapes[classify] = {}
            self._add(out, snapshot, classify, shapes)
        return out

    def of_value(self, account_id: str, value_cls: str, leaf: str) -> bytes | None:
        """A value's fingerprint; None for one that normalises to nothing."""
        normalised = normalise(value_cls, leaf)
        return self._hash(account_id, value_cls, normalised) if normalised else None

    def _add(self, out: set[Value], data: Any, classify: Classify, shapes: _Shapes) -> None:
        if type(data) is not dict:
            if isinstance(data, list):
                for item in data:
                    if type(item) not in _SCALARS:
                        self._add(out, item, classify, shapes)
                return
            if not isinstance(data, Mapping):
                return
        # Snapshots of a flow share a few shapes (their field names): each shape is classed
        # once, and a snapshot's plain fields cost nothing but this lookup.
        names = tuple(data)
        shape = shapes.get(names)
        if shape is None:
            if len(shapes) > 10_000:  # random field names
                shapes.clear()
            personal = tuple((k, c) for k in names if (c := searchable(k, classify)) is not None)
            others = tuple(k for k in names if searchable(k, classify) is None and classify(k) != SECRET)
            shape = shapes[names] = (personal, others)
        personal, others = shape
        for key, value_cls in personal:
            value = data[key]
            if type(value) is str:
                if value and value != ERASED and len(value) <= MAX_VALUE_BYTES:
                    out.add((value_cls, value))
            else:
                out.update((value_cls, leaf) for leaf in _leaves(value))
        if others and not set(map(type, data.values())) <= _SCALARS:
            for key in others:
                value = data[key]
                if type(value) not in _SCALARS:
                    self._add(out, value, classify, shapes)


def _leaves(value: Any) -> Iterator[str]:
    if isinstance(value, Mapping):
        for v in value.values():
            yield from _leaves(v)
    elif isinstance(value, list):
        for v in value:
            yield from _leaves(v)
    elif value is None or isinstance(value, bool) or value == "" or value == ERASED:
        return
    else:
        text = value if isinstance(value, str) else json.dumps(value)
        if len(text) <= MAX_VALUE_BYTES:
            yield text


class PrintIndex(Protocol):
    """What a search reads of the index (``index.Index``)."""

    @property
    def env(self) -> lmdb.Environment: ...

    def leads_of(self, txn: lmdb.Transaction, fingerprint: bytes) -> list[bytes]: ...

    def lead_span(self, txn: lmdb.Transaction, lead_key: bytes) -> tuple[int, int, int, int] | None: ...

    def lead_positions(self, txn: lmdb.Transaction, lead_key: bytes) -> list[int]: ...


class FoundEvent(EventFields, Protocol):
    @property
    def timestamp_ms(self) -> int | None: ...


class LeadReads(Protocol):
    """How a search reads events (``reader.Reader``)."""

    def reading(self) -> AbstractContextManager[PrintIndex]: ...

    def stored_at(self, txn: lmdb.Transaction, position: int) -> FoundEvent | None: ...


def find_leads(
    reads: LeadReads,
    prints: LeadPrints,
    account_id: str,
    field: str,
    value: str,
    visible: Callable[[EventFields], bool] | None,
    limit: int = MAX_LEADS,
) -> list[LeadMatch]:
    """The account's leads whose snapshot held ``value`` in ``field``, most recently active
    first. ``visible`` None counts every event of a lead from the index alone (one lookup
    and a count a lead); else only the events it admits are counted, and a lead with none
    is left out."""
    fp = prints.of_search(account_id, field, value)
    if fp is None:
        return []
    found: list[LeadMatch] = []
    with reads.reading() as index, index.env.begin() as txn:
        spans = []
        for lead_key in index.leads_of(txn, fp):
            span = index.lead_span(txn, lead_key)
            if span is not None:
                spans.append((span, lead_key))
        spans.sort(key=lambda s: (s[0][1], s[0][2]), reverse=True)
        for (first, last, position, count), lead_key in spans:
            if visible is None:
                event = reads.stored_at(txn, position)
                if event is not None and event.account_id == account_id:
                    found.append(LeadMatch(event.lead_id, first, last, count))
                if len(found) >= limit:
                    break
                continue
            shown = [
                e
                for e in (reads.stored_at(txn, p) for p in index.lead_positions(txn, lead_key))
                if e is not None and e.account_id == account_id and visible(e)
            ]
            if shown:
                times = [e.timestamp_ms or 0 for e in shown]
                found.append(LeadMatch(shown[-1].lead_id, min(times), max(times), len(shown)))
    if visible is not None:
        # What the caller sees may end earlier than the lead: ordered by that.
        found.sort(key=lambda m: m.last_timestamp_ms, reverse=True)
    return found[:limit]
