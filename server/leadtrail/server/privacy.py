"""Personal data in snapshots: secrets never stored, personal fields masked for most roles.

Fields are classed by their name (the last part of a dotted or nested key):
``secret`` (SSNs, passwords, card numbers, credentials, API keys, bank
numbers) are replaced before the write by a keyed fingerprint, so equal
values stay comparable while the value itself is in no byte under the data
directory and in no response; ``pii`` (emails, phones, names, addresses, IPs,
birth dates) are stored, and masked in every answer to a role without access
to personal data (``reader``, ``analyst``); the rest is plain.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Mapping
from typing import Any

from leadtrail.storage import Event, Files
from leadtrail.storage.fields import PII, SECRET, Classify, default_classify
from leadtrail.storage.keyfile import load_key_file

FINGERPRINT_KEY_FILE = "fingerprint.key"
FINGERPRINT_KEY_BYTES = 32
FINGERPRINT_PREFIX = "fp:"
_FINGERPRINT = re.compile(r"^fp:[0-9a-f]{32}$")

_SCALARS = frozenset({str, int, float, bool, type(None)})
_CLEAR_KEYS: dict[tuple[Classify, str], set[str]] = {}
"""Per classifier and class: field names seen not to be in the class."""


def _nothing_of(data: dict[str, Any], classify: Classify, cls: str) -> bool:
    """Whether a dict surely holds no field of class ``cls``: every name known clear of it
    and every value a scalar. Two set operations in C instead of a call per field, for the
    snapshots of every event appended and every answer masked."""
    clear = _CLEAR_KEYS.get((classify, cls))
    if clear is None:
        if len(_CLEAR_KEYS) > 256:  # classifiers of replaced policies
            _CLEAR_KEYS.clear()
        clear = _CLEAR_KEYS[(classify, cls)] = set()
    unknown = data.keys() - clear
    if unknown:
        if len(clear) > 100_000:
            clear.clear()
        for key in unknown:
            if classify(key) == cls:
                return False
            clear.add(key)
    return set(map(type, data.values())) <= _SCALARS


field_class = default_classify
"""The built-in classes (an account's field policy may add to them)."""


class Fingerprints:
    """Keyed fingerprints of secret values, with a key kept in the data directory: made
    on the server's first start like the store's own keys (storage/keyfile.py), through
    the ``Files`` seam, so that a key that fingerprinted a stored value survives a power
    cut; a key file of another size refuses the start (``MetadataFileError``)."""

    def __init__(self, data_dir: str, files: Files | None = None) -> None:
        key = load_key_file(
            data_dir, FINGERPRINT_KEY_FILE, FINGERPRINT_KEY_BYTES, files or Files(), True, "a 32-byte key"
        )
        assert key is not None  # made when missing
        self._key = key

    def of(self, value: Any) -> str:
        text = value if isinstance(value, str) else repr(value)
        digest = hmac.new(self._key, text.encode(), hashlib.sha256).hexdigest()
        return FINGERPRINT_PREFIX + digest[:32]


def _seal(value: Any, fingerprint: Callable[[Any], str]) -> Any:
    if value is None:
        return None
    if isinstance(value, str) and _FINGERPRINT.match(value):
        return value  # sealed already (an event copied from this store)
    return fingerprint(value)


def seal_secrets(
    data: Any, fingerprint: Callable[[Any], str], classify: Classify = default_classify
) -> Any | None:
    """``data`` (an object or a list) with every secret value replaced by its fingerprint,
    at any depth; None when it holds none."""
    if isinstance(data, list):
        items = [seal_secrets(item, fingerprint, classify) for item in data]
        if all(item is None for item in items):
            return None
        return [original if item is None else item for original, item in zip(data, items, strict=True)]
    if type(data) is dict:
        if _nothing_of(data, classify, SECRET):
            return None
    elif not isinstance(data, Mapping):
        return None
    out: dict[str, Any] | None = None
    for key, value in data.items():
        if classify(key) == SECRET:
            sealed = _seal(value, fingerprint)
            if sealed is value:
                continue
        else:
            if type(value) in _SCALARS:
                continue  # most of a snapshot: no call for it
            sealed = seal_secrets(value, fingerprint, classify)
            if sealed is None:
                continue
        if out is None:
            out = dict(data)
        out[key] = sealed
    return out


def mask_value(key: str, value: Any) -> Any:
    """How a personal value is shown to a role without access to personal data."""
    if value is None or value == "":
        return value
    if not isinstance(value, str):
        return "***"
    name = key.rsplit(".", 1)[-1].lower()
    if "mail" in name and "@" in value:
        local, _, domain = value.partition("@")
        return f"{local[:1]}***@{domain}"
    if any(part in name for part in ("phone", "mobile", "cell")):
        digits = [c for c in value if c.isdigit()]
        return "***-***-" + "".join(digits[-4:]) if len(digits) >= 4 else "***"
    if "name" in name:
        return value[:1] + "***"
    return "***"


def mask_pii(data: Any, classify: Classify = default_classify) -> Any | None:
    """``data`` (an object or a list) with personal values masked at any depth; None when it
    holds none."""
    if isinstance(data, list):
        items = [mask_pii(item, classify) for item in data]
        if all(item is None for item in items):
            return None
        return [original if item is None else item for original, item in zip(data, items, strict=True)]
    if type(data) is dict:
        if _nothing_of(data, classify, PII):
            return None
    elif not isinstance(data, Mapping):
        return None
    out: dict[str, Any] | None = None
    for key, value in data.items():
        if classify(key) == PII:
            if isinstance(value, list):
                masked: Any = [mask_value(key, item) for item in value]
            else:
                masked = mask_value(key, value)
        else:
            if type(value) in _SCALARS:
                continue
            masked = mask_pii(value, classify)
            if masked is None:
                continue
        if out is None:
            out = dict(data)
        out[key] = masked
    return out


def sealed_event(
    event: Event, fingerprint: Callable[[Any], str], classify: Classify = default_classify
) -> None:
    """Seal the secrets of an event about to be stored (in place: it is the caller's new copy)."""
    lead = seal_secrets(event.lead, fingerprint, classify)
    if lead is not None:
        event.lead = lead
    details = seal_secrets(event.details, fingerprint, classify)
    if details is not None:
        event.details = details


def masked_event(event: Event, classify: Classify = default_classify) -> Event:
    """The event as a role without access to personal data sees it (the original is left alone)."""
    lead, details = mask_pii(event.lead, classify), mask_pii(event.details, classify)
    if lead is None and details is None:
        return event
    shown = event.copy()
    if lead is not None:
        shown.lead = lead
    if details is not None:
        shown.details = details
    return shown
