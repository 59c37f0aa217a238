"""Signed checkpoints stored in the log itself (FORMAT.md, "Signed records").

A writable store runs one ``Checkpointer``: every interval, when events came since its
last record, it signs the chain head and appends the signature as an ``audit.checkpoint``
event of the account ``leadtrail.system``, chained like any other. Kept in the log, a
checkpoint is copied, backed up and verified with the events it covers; kept by an auditor
outside the store, it proves that nothing up to it was changed since.

A record never counts as new itself, so an idle store appends nothing. An append that
fails (a disk full, a store gone read-only) is logged and tried again at the next tick.
"""

from __future__ import annotations

import base64
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .chain import SYSTEM_ACCOUNT, ChainPoint
from .errors import ClosedError
from .event import AUDIT_FLOW, AppendResult, Event, Outcome
from .signing import SignedCheckpoint, Signer

CHECKPOINT_TYPE = "audit.checkpoint"
CHECKPOINT_LEAD = "chain"
"""The lead id of every checkpoint record: a timeline of the store's checkpoints."""
CHECKPOINT_ENTITY = "leadtrail"
STOP_WAIT_SECONDS = 10.0
"""How long closing waits for a record being appended."""

log = logging.getLogger("leadtrail.storage.checkpoints")


def checkpoint_event(checkpoint: SignedCheckpoint) -> Event:
    """The ``audit.checkpoint`` record of a signed checkpoint."""
    return Event(
        type=CHECKPOINT_TYPE,
        lead_id=CHECKPOINT_LEAD,
        flow_id=AUDIT_FLOW,
        entity_id=CHECKPOINT_ENTITY,
        outcome=Outcome.SUCCESS,
        account_id=SYSTEM_ACCOUNT,
        details={
            "position": checkpoint.position,
            "chain_hash": checkpoint.chain_hash.hex(),
            "recorded_at_ms": checkpoint.recorded_at_ms,
            "signature": base64.b64encode(checkpoint.signature).decode(),
            "public_key": base64.b64encode(checkpoint.public_key).decode(),
        },
    )


def checkpoint_of(event: Event) -> SignedCheckpoint | None:
    """The signed checkpoint an ``audit.checkpoint`` record holds; None for any other event
    or a record whose details are not a checkpoint's."""
    if event.type != CHECKPOINT_TYPE or event.account_id != SYSTEM_ACCOUNT:
        return None
    return _parsed(event.details)


def _parsed(details: Mapping[str, Any]) -> SignedCheckpoint | None:
    try:
        position, recorded_at = details["position"], details["recorded_at_ms"]
        if type(position) is not int or type(recorded_at) is not int:
            return None
        return SignedCheckpoint(
            position,
            bytes.fromhex(details["chain_hash"]),
            recorded_at,
            base64.b64decode(details["signature"], validate=True),
            base64.b64decode(details["public_key"], validate=True),
        )
    except (KeyError, TypeError, ValueError):
        return None


class Checkpointer:
    """The thread that signs the chain head every ``interval_s`` while events arrive."""

    def __init__(
        self,
        signer: Signer,
        head: Callable[[], ChainPoint],
        append: Callable[[Sequence[Event]], list[AppendResult]],
        interval_s: float,
        last_event: Event | None,
    ) -> None:
        """``head``: the store's chain head; ``last_event``: the event at that head when the
        store opened, so that a reopened idle store does not sign again what its last
        record signed."""
        self._signer = signer
        self._head = head
        self._append = append
        self._interval_s = interval_s
        last = None if last_event is None else checkpoint_of(last_event)
        # The position of the last record, and the head it signed: events between the two
        # came while it was being appended, and still need a checkpoint.
        self._record = 0 if last is None or last_event is None else last_event.position
        self._signed = 0 if last is None else last.position
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="leadtrail-checkpoints", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """Stop; a record being appended is waited for (bounded), none is started after."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(STOP_WAIT_SECONDS)

    def pending(self, head: ChainPoint) -> bool:
        """Whether events other than the last record came since the head it signed."""
        if head.position == 0:
            return False
        return head.position > self._record or self._record > self._signed + 1

    def tick(self) -> AppendResult | None:
        """Sign the head and append its record when events came since the last; the
        record's result, or None when nothing was new."""
        head = self._head()
        if not self.pending(head):
            return None
        checkpoint = self._signer.sign_checkpoint(head)
        (result,) = self._append([checkpoint_event(checkpoint)])
        self._record, self._signed = result.position, head.position
        return result

    def _run(self) -> None:
        failing = False
        while not self._stop.wait(self._interval_s):
            try:
                self.tick()
            except ClosedError:
                return
            except Exception as e:  # a disk full, a failed writer: the next tick tries again
                # Said once per run of failures: a store gone read-only fails every tick.
                if not failing:
                    log.warning("a checkpoint could not be appended (%s); trying at every tick", e)
                failing = True
            else:
                failing = False


__all__ = [
    "CHECKPOINT_ENTITY",
    "CHECKPOINT_LEAD",
    "CHECKPOINT_TYPE",
    "Checkpointer",
    "checkpoint_event",
    "checkpoint_of",
]
