"""The simulator: a day of traffic over the catalog, deterministically from a seed."""

from __future__ import annotations

import bisect
import heapq
import random
from collections import deque
from collections.abc import Iterator
from typing import Any

from .catalog import ENHANCEMENTS, SOURCE_NAMES, Flow, Shape, build_flows, flow_shapes
from .journey import Journey
from .people import IDENTITY_FIELDS, VERTICALS, appended_fields, parsed, person
from .records import (
    DAY_MS,
    DEFAULT_EVENTS_RANGE,
    DEFAULT_START_MS,
    MAX_EVENTS,
    SNAPSHOT_MAX_BYTES,
    SNAPSHOT_MIN_BYTES,
    SimulatedEvent,
    hex_digits,
    snapshot_bytes,
)

# --------------------------------------------------------------------------- the simulator

# Traffic by hour of the day (from the start, i.e. US-east midnight): quiet at
# night, peaks in the late morning and the evening.
_HOURLY_TRAFFIC = (
    2, 1.5, 1, 1, 1, 1.5, 3, 5, 7, 9, 10, 10, 9.5, 9, 8.5, 8, 8, 8.5, 9, 9, 8, 6, 4, 3,
)  # fmt: skip
_TRAFFIC_CDF = tuple(sum(_HOURLY_TRAFFIC[:h]) / sum(_HOURLY_TRAFFIC) for h in range(len(_HOURLY_TRAFFIC) + 1))

_COMMENT_WORDS = (
    "please", "call", "after", "five", "pm", "weekdays", "only", "prefers", "text", "message",
    "about", "rates", "interested", "in", "lower", "monthly", "payment", "has", "questions",
    "about", "the", "offer", "spouse", "also", "on", "the", "application", "looking", "to",
    "start", "next", "month", "compare", "quotes",
)  # fmt: skip


class LeadFlowSimulator:
    """Generates lead journeys through ``flows`` flows, deterministically from ``seed``.

    Each call to :meth:`leads` or :meth:`events` simulates the next day
    (``span_ms``) of traffic, starting at ``start_ms`` for the first call, so
    successive calls never repeat lead ids or overlap in time.
    """

    def __init__(
        self,
        seed: int = 0,
        start_ms: int = DEFAULT_START_MS,
        flows: int = 20,
        *,
        span_ms: int = DAY_MS,
    ) -> None:
        if flows < 1:
            raise ValueError(f"flows {flows}: must be at least 1")
        if span_ms < 1:
            raise ValueError(f"span_ms {span_ms}: must be at least 1")
        # The catalog has its own stream so that it stays the same whatever is generated.
        self.flows: tuple[Flow, ...] = build_flows(random.Random(f"{seed}:catalog"), flows)
        self._rng = random.Random(f"{seed}:leads")
        self._window_start_ms = start_ms
        self._span_ms = span_ms
        # Earlier people, so that duplicates are real re-submissions of a lead already
        # seen (a lookup by e-mail or phone finds it), with the date it was first seen.
        self._seen: deque[tuple[dict[str, Any], int]] = deque(maxlen=512)

    # ------------------------------------------------------------------ public API

    def leads(self, n: int, *, events_per_lead: int | None = None) -> Iterator[list[SimulatedEvent]]:
        """Yield ``n`` leads' events, one list per lead, leads in arrival order.

        ``events_per_lead`` fixes every journey's length (5 to 12; flows that
        cannot produce it get no traffic); by default lengths are 5 to 8.
        """
        if n < 0:
            raise ValueError(f"n {n}: must not be negative")
        lengths = self._lengths(events_per_lead)
        choices = [(flow, flow_shapes(flow, lengths)) for flow in self.flows]
        choices = [(flow, shapes) for flow, shapes in choices if shapes]
        if not choices:
            raise ValueError(f"events_per_lead {events_per_lead}: no flow has journeys that long")
        flow_weights = [flow.weight for flow, _ in choices]
        shape_weights = {flow.id: [shape.weight for shape in shapes] for flow, shapes in choices}
        start_ms = self._window_start_ms
        self._window_start_ms += self._span_ms
        rng = self._rng
        for index in range(n):
            arrival_ms = start_ms + self._arrival_offset_ms((index + rng.random()) / n)
            flow, shapes = rng.choices(choices, weights=flow_weights)[0]
            shape = rng.choices(shapes, weights=shape_weights[flow.id])[0]
            yield self._journey(flow, shape, arrival_ms)

    def events(self, n_leads: int, *, events_per_lead: int | None = None) -> Iterator[SimulatedEvent]:
        """Yield the events of ``n_leads`` leads interleaved in timestamp order, as a flow
        engine emits them.

        Events due after the last lead's arrival (retries, and feedback days
        later) are held until their time, so memory grows with the number of
        pending feedback events (about a tenth of the leads).
        """
        pending: list[tuple[int, int, SimulatedEvent]] = []
        sequence = 0
        for lead in self.leads(n_leads, events_per_lead=events_per_lead):
            arrival_ms = lead[0]["timestamp_ms"]
            while pending and pending[0][0] <= arrival_ms:
                yield heapq.heappop(pending)[2]
            for event in lead:
                heapq.heappush(pending, (event["timestamp_ms"], sequence, event))
                sequence += 1
        while pending:
            yield heapq.heappop(pending)[2]

    def snapshot_of_size(self, target_bytes: int = 1200) -> dict[str, Any]:
        """A fully enriched snapshot whose compact JSON is exactly ``target_bytes`` long.

        For measurements that must not depend on the mix of journeys (codec
        speed, bytes per event at a fixed snapshot size). Optional fields are
        dropped when too large and a free-text ``comments`` field fills the rest.
        """
        rng = self._rng
        vertical = rng.choice(VERTICALS)
        snapshot = person(rng, vertical, f"lead_{hex_digits(rng, 24)}", rng.choice(SOURCE_NAMES))
        snapshot.update(parsed(rng, snapshot))
        for enhancement in ENHANCEMENTS:
            snapshot.update(appended_fields(rng, enhancement.service, snapshot))
        optional = [
            "sub_id", "best_time_to_call", "reference", "trustedform_ping_url",
            "landing_page_url", "jornaya_leadid", "user_agent",
        ]  # fmt: skip
        snapshot["comments"] = ""
        while snapshot_bytes(snapshot) > target_bytes and optional:
            del snapshot[optional.pop(0)]
        room = target_bytes - snapshot_bytes(snapshot)
        if room < 0:
            minimum = target_bytes - room
            raise ValueError(f"target_bytes {target_bytes}: below the minimum of {minimum}")
        words: list[str] = []
        while sum(len(w) + 1 for w in words) <= room:
            words.append(rng.choice(_COMMENT_WORDS))
        snapshot["comments"] = " ".join(words)[:room]
        return snapshot

    # ------------------------------------------------------------------ internals

    @staticmethod
    def _lengths(events_per_lead: int | None) -> range:
        if events_per_lead is None:
            return range(DEFAULT_EVENTS_RANGE[0], DEFAULT_EVENTS_RANGE[1] + 1)
        low = DEFAULT_EVENTS_RANGE[0]
        if not low <= events_per_lead <= MAX_EVENTS:
            raise ValueError(f"events_per_lead {events_per_lead}: must be in {low}..{MAX_EVENTS}")
        return range(events_per_lead, events_per_lead + 1)

    def _arrival_offset_ms(self, fraction: float) -> int:
        """Map a uniform fraction of the window to a time that follows the daily curve.

        Increasing in ``fraction``, so leads drawn in order arrive in order.
        """
        hour = min(bisect.bisect_right(_TRAFFIC_CDF, fraction) - 1, len(_HOURLY_TRAFFIC) - 1)
        low, high = _TRAFFIC_CDF[hour], _TRAFFIC_CDF[hour + 1]
        position = (hour + (fraction - low) / (high - low)) / len(_HOURLY_TRAFFIC)
        return min(int(position * self._span_ms), self._span_ms - 1)

    def _journey(self, flow: Flow, shape: Shape, arrival_ms: int) -> list[SimulatedEvent]:
        """Render one journey, redrawing the lead's data until every snapshot fits the size range."""
        rng = self._rng
        vertical = next(v for v in VERTICALS if v.key == flow.vertical)
        source = rng.choice(flow.sources)
        lead_id = f"lead_{hex_digits(rng, 24)}"
        duplicate_of = None
        if shape.end == "rejected" and self._seen and rng.random() < 0.7:
            duplicate_of = rng.choice(self._seen)
        for _attempt in range(50):
            raw = person(rng, vertical, lead_id, source.name)
            if duplicate_of is not None:
                raw.update(duplicate_of[0])
            events = Journey(rng, flow, vertical, source, lead_id, arrival_ms).render(
                shape, raw, duplicate_of[1] if duplicate_of else None
            )
            sizes = (snapshot_bytes(events[0]["lead"]), snapshot_bytes(events[-1]["lead"]))
            if sizes[0] >= SNAPSHOT_MIN_BYTES and sizes[1] <= SNAPSHOT_MAX_BYTES:
                break
        else:  # pragma: no cover - the reference data makes this unreachable
            raise RuntimeError(f"no snapshot of {lead_id} fits the size range")
        identity = {k: raw[k] for k in IDENTITY_FIELDS if k in raw}
        self._seen.append((identity, arrival_ms))
        return events
