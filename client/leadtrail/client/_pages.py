"""Answers that arrive in pages, joined for the callers that want them whole."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from ._model import Timeline


def joined_timeline(pages: Sequence[Timeline]) -> Timeline:
    """One timeline of every page's steps, in order. ``total_ms`` and ``audit`` are the
    whole journey's already (the server sends them on the first page)."""
    first = pages[0]
    if len(pages) == 1:  # the last page already: its token is empty (most timelines are one page)
        return first
    steps = [step for page in pages for step in page.steps]
    return replace(first, steps=steps, next_page_token="")
