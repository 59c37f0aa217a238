"""What the one search box was given: an event id, an email, a phone number or a lead id.

``evt_...`` is an event id; text with an ``@`` an email; text of digits with at most the
signs a phone number is written with (``+``, ``-``, spaces, parentheses, dots), holding at
least ``MIN_PHONE_DIGITS`` digits, a phone number (which may also be a lead id: both are
tried); anything else a lead id.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

MAX_QUERY = 256
MIN_PHONE_DIGITS = 5
_PHONE = re.compile(r"\+?[\d\s\-().]+")


class Kind(Enum):
    EVENT = "event"
    EMAIL = "email"
    PHONE = "phone"
    LEAD = "lead"


@dataclass(frozen=True)
class Query:
    text: str
    kind: Kind

    @property
    def personal(self) -> bool:
        """Looked up by fingerprint (FindLeads)."""
        return self.kind in (Kind.EMAIL, Kind.PHONE)


def classify(text: str) -> Query:
    text = text.strip()
    if text.startswith("evt_"):
        return Query(text, Kind.EVENT)
    if "@" in text:
        return Query(text, Kind.EMAIL)
    if _PHONE.fullmatch(text) and sum(c.isdigit() for c in text) >= MIN_PHONE_DIGITS:
        return Query(text, Kind.PHONE)
    return Query(text, Kind.LEAD)
