"""Console sessions: a key posted once to ``POST /login``, then a cookie.

A session is a random id (``secrets.token_urlsafe``) kept in this process's memory, mapped
to the key it was opened with. The key is admitted again on every request (the gate reads
the key file as it stands), so a revoked key stops working at once, session or not. The
cookie is HttpOnly (no script reads it), SameSite=Strict (no other site's page sends it),
Path=/, and Secure when the listener serves HTTPS. A session idle for ``IDLE_SECONDS`` is
gone; a restart forgets every session (the visitor logs in again).

Each session has its own CSRF token, sent in a hidden field of every form that posts and
compared on every POST (``csrf_ok``).
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

COOKIE = "leadtrail_session"
IDLE_SECONDS = 12 * 3600
MAX_SESSIONS = 10_000
"""Sessions kept at most; past it the longest idle one is closed (memory stays bounded)."""


@dataclass
class Session:
    id: str
    secret: str
    """The API key the session was opened with."""
    csrf: str
    last_seen: float = field(default=0.0)


class Sessions:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._open: OrderedDict[str, Session] = OrderedDict()  # least recently seen first

    def open(self, secret: str) -> Session:
        session = Session(secrets.token_urlsafe(32), secret, secrets.token_urlsafe(32), self._clock())
        self._open[session.id] = session
        while len(self._open) > MAX_SESSIONS:
            self._open.popitem(last=False)
        return session

    def get(self, session_id: str | None) -> Session | None:
        """The live session of a cookie's value, seen now; None when unknown or idle too long."""
        if not session_id:
            return None
        session = self._open.get(session_id)
        if session is None:
            return None
        now = self._clock()
        if now - session.last_seen > IDLE_SECONDS:
            del self._open[session_id]
            return None
        session.last_seen = now
        self._open.move_to_end(session_id)
        return session

    def close(self, session_id: str) -> None:
        self._open.pop(session_id, None)

    def __len__(self) -> int:
        return len(self._open)


def csrf_ok(session: Session, token: str | None) -> bool:
    return token is not None and hmac.compare_digest(session.csrf.encode(), token.encode())
