"""The signature of a webhook body: ``X-LeadTrail-Signature: sha256=<hex HMAC-SHA256(secret, body)>``.

The receiver recomputes the HMAC over the exact bytes it received with the rule's
``webhook_secret`` and compares in constant time (``verify`` does both), so a body
changed on the way or sent by someone without the secret is refused.
"""

from __future__ import annotations

import hashlib
import hmac

EVENT_ID_HEADER = "X-LeadTrail-Event-Id"
"""The alert event's id: the same on every attempt, so a receiver drops what it already has."""
SIGNATURE_HEADER = "X-LeadTrail-Signature"
ATTEMPT_HEADER = "X-LeadTrail-Attempt"
SCHEME = "sha256="


def signature(secret: str, body: bytes) -> str:
    """The header value that signs ``body`` with ``secret``."""
    return SCHEME + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, header: str) -> bool:
    """Whether ``header`` (an ``X-LeadTrail-Signature`` value) signs ``body`` with ``secret``."""
    return hmac.compare_digest(signature(secret, body).encode(), header.strip().encode())
