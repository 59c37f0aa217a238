"""Warnings about calls that succeeded but may not have done what the caller meant."""

from __future__ import annotations

import warnings
from collections.abc import Iterable

from ._model import AppendResult


class AppendConflictWarning(UserWarning):
    """An appended id was already stored with other content (type, lead, flow or timestamp).

    Ids are idempotency keys: the event stored first is kept and the one sent is not
    stored. Usually a bug in how the sender makes ids, hence a warning, not an error.
    """

    def __init__(self, event_id: str) -> None:
        super().__init__(
            f"event id {event_id} is already stored with another type, lead, flow or timestamp: "
            "the stored event was kept, the one sent was not stored"
        )
        self.event_id = event_id


def warn_of_conflicts(results: Iterable[AppendResult], *, stacklevel: int = 1) -> None:
    """One ``AppendConflictWarning`` per conflicting result; ``stacklevel`` counts from the
    caller of this function, as for ``warnings.warn``."""
    for result in results:
        if result.conflict:
            warnings.warn(AppendConflictWarning(result.id), stacklevel=stacklevel + 1)
