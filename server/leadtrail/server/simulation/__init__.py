"""A deterministic simulation of lead flows, for benchmarks, demos and tests.

Measurements of the store are only honest when the events look like the ones a
lead-distribution platform produces: the same mix of steps, outcomes and
reasons, snapshots of realistic size whose values vary (so compression is not
flattered by repetition), timestamps that spread over a day with the gaps of a
real flow. Everything here comes from one seeded ``random.Random``, so a seed
names a data set: the same seed and the same calls give the same events on
every machine and Python version.

The output is plain dicts whose keys are exactly the field names of
``leadtrail.storage.Event`` (``Event(**event)`` builds one), with ``outcome``
as the ``Outcome`` number and money as decimal strings. Nothing here imports
the storage engine, so the simulation can feed the engine, the server, the SDK
or a competitor alike.

A lead's journey, as the platforms documented in DOMAIN.md record it::

    source.submitted           raw fields as posted, before any parsing
    source.accepted            parsed components added, the source's cost (price < 0)
    enhancement.success|error  one per enrichment service, appending ``appended.<service>.*``
    filter.passed|failed       the flow's rule set
    recipient.delivered|failed|error   one per buyer tried; revenue on delivery
      retry.scheduled, retry.attempted after an error the buyer retries
    flow.completed             the verdict, total duration
    feedback.received          sometimes, days later: conversion or return

A rejected lead runs the enrichment its acceptance rules need (duplicate
detection looks leads up by the normalised phone and e-mail), fails the
``acceptance`` rule set and is answered with ``source.rejected``: platforms
answer the source once the flow has a verdict, which is why the rejection is
not the second event. Every journey has 5 to 8 events unless a fixed length is
asked for (the timeline benchmark asks for 10).
"""

from __future__ import annotations

from .catalog import Enhancement, Flow, Recipient, Source
from .live import Incident, IncidentChange, LiveTraffic
from .records import (
    DAY_MS,
    DEFAULT_START_MS,
    SNAPSHOT_MAX_BYTES,
    SNAPSHOT_MIN_BYTES,
    SimulatedEvent,
    snapshot_bytes,
)
from .simulator import LeadFlowSimulator

__all__ = [
    "DAY_MS",
    "DEFAULT_START_MS",
    "SNAPSHOT_MAX_BYTES",
    "SNAPSHOT_MIN_BYTES",
    "Enhancement",
    "Flow",
    "Incident",
    "IncidentChange",
    "LeadFlowSimulator",
    "LiveTraffic",
    "Recipient",
    "SimulatedEvent",
    "Source",
    "snapshot_bytes",
]
