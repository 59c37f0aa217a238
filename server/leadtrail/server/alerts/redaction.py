"""What the log may say of a webhook URL: its origin and a digest, never the URL itself.

A webhook URL is often a secret in its own right (Slack and Discord put the token in
the path, others a ``user:password@`` or a ``?token=``), while the events that record
the attempts are readable by every reader key, exports and subscriptions. So an
attempt event names only ``scheme://host[:port]`` and the first hex digits of the
SHA-256 of the full URL (enough for an operator who holds the URL to tell which one),
and any text a client library produced about the request is scrubbed of the URL and
of its secret-bearing parts before it is written.
"""

from __future__ import annotations

import hashlib
from urllib.parse import unquote, urlsplit

DIGEST_HEX = 12
"""Hex digits of the URL's SHA-256 kept: a fingerprint, not a way back to the URL."""
HIDDEN = "…"
"""What a secret-bearing part of a URL becomes in a scrubbed text."""


def url_origin(url: str) -> str:
    """``scheme://host[:port]`` of ``url`` (no userinfo, path, query or fragment); "" when none."""
    if not url:
        return ""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return ""  # never expected: rules are checked when set
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"  # IPv6
    return f"{parts.scheme}://{host}" + ("" if port is None else f":{port}")


def url_digest(url: str) -> str:
    """The first ``DIGEST_HEX`` hex digits of SHA-256 of the full URL; "" when none."""
    return hashlib.sha256(url.encode()).hexdigest()[:DIGEST_HEX] if url else ""


def scrub(text: str, url: str) -> str:
    """``text`` without ``url`` or any part of it that may hold a secret (userinfo, path,
    query, fragment), as written or percent-decoded: the URL becomes its origin."""
    if not url or not text:
        return text
    origin = url_origin(url)
    whole: set[str] = {url, unquote(url)}
    pieces: set[str] = set()
    try:
        parts = urlsplit(url)
        username, password = parts.username, parts.password
    except ValueError:
        parts, username, password = None, None, None
    if parts is not None:
        userinfo, at, _ = parts.netloc.rpartition("@")
        if at:
            pieces.add(userinfo)
        pieces.update(p for p in (password, username) if p)
        path_qs = parts.path + (f"?{parts.query}" if parts.query else "")
        tail = url[len(f"{parts.scheme}://{parts.netloc}") :]
        pieces.update({tail, path_qs, parts.path, parts.query, parts.fragment})
        # The URL as a client library writes it back: without its userinfo.
        bare = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"
        whole.update({bare + tail, bare + path_qs})
    pieces.update({unquote(p) for p in pieces})
    for found in sorted(whole, key=len, reverse=True):
        if len(found) > len(origin):
            text = text.replace(found, origin)
    for found in sorted(pieces, key=len, reverse=True):
        if len(found) > 1:  # a bare "/" says nothing and is everywhere
            text = text.replace(found, HIDDEN)
    return text
