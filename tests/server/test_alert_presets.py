"""The presets serve an operator on day one: on the simulated platform's healthy traffic
they stay quiet, and each incident of ``demo --live`` makes the preset written for it fire
for the entity it hits (and resolve once it is over).

The evaluator runs offline over ``LiveTraffic`` (the stream ``demo --live`` sends), its
clock the traffic's own: event ``timestamp`` = the moment it is sent at the chosen rate,
ticks every second of that time. source-quality compares an hour with the 24 before it,
so it needs a day of traffic and is checked with a shorter rule of the same kind in
test_alert_eval.py; negative-margin asks the log for lead sums and is checked over a
server in test_alert_firing.py.
"""

from __future__ import annotations

from collections import defaultdict

from leadtrail.server.alerts.evaluator import Emission, Evaluator
from leadtrail.server.alerts.rules import preset
from leadtrail.server.simulation import Incident, IncidentChange, LiveTraffic
from leadtrail.storage import Event, Outcome

RATE = 40
"""Events a second: a small platform, where the presets' minimum counts matter most."""
EVERY_S = 900
"""An incident every 15 minutes, lasting 7.5: longer than the presets' 5-minute windows."""
INCIDENTS = 3
START_MS = 1_800_000_000_000


def test_presets_are_quiet_on_healthy_traffic_and_fire_on_their_incidents() -> None:
    rules = [preset(name, "default") for name in ("delivery-failures", "service-down")]
    evaluator = Evaluator(rules)
    traffic = LiveTraffic(seed=11, rate=RATE, incident_every_s=EVERY_S)
    fired: list[tuple[Emission, Incident | None, int]] = []
    incidents: list[Incident] = []
    active: Incident | None = None
    position = 0
    next_tick_ms = START_MS + 1000

    def note(emissions: list[Emission], now_ms: int) -> None:
        for emission in emissions:
            if emission.type == "alert.fired":
                fired.append((emission, active, now_ms))

    total = RATE * EVERY_S * INCIDENTS
    while position < total:
        for item in traffic.take(RATE):
            if isinstance(item, IncidentChange):
                active = item.incident if item.started else None
                if item.started:
                    incidents.append(item.incident)
                continue
            position += 1
            now_ms = START_MS + position * 1000 // RATE
            while now_ms >= next_tick_ms:
                note(evaluator.tick(next_tick_ms), next_tick_ms)
                next_tick_ms += 1000
            event = Event(
                type=item["type"],
                lead_id=item["lead_id"],
                flow_id=item["flow_id"],
                entity_id=item["entity_id"],
                outcome=Outcome(item["outcome"]),
                timestamp_ms=now_ms,
                price=item["price"],
                position=position,
            )
            note(evaluator.handle([event], now_ms), now_ms)

    kinds = {i.kind for i in incidents}
    assert {"buyer-outage", "slow-enhancement"} <= kinds, incidents
    by_rule: dict[str, list[tuple[str, Incident | None]]] = defaultdict(list)
    for emission, during, _ in fired:
        by_rule[emission.rule.name].append((emission.group, during))
    # Quiet on healthy traffic: every firing falls within the incident it is about.
    for name, firings in by_rule.items():
        for group, during in firings:
            assert during is not None, f"{name} fired for {group} with no incident running"
            assert group == during.entity_id, f"{name} fired for {group} during {during.describe()}"
    outage = next(i for i in incidents if i.kind == "buyer-outage")
    assert ("delivery-failures", outage.entity_id) in {(n, g) for n, f in by_rule.items() for g, _ in f}
    down = [i for i in incidents if i.kind == "slow-enhancement" and i.down]
    for incident in down:
        assert (incident.entity_id, incident) in by_rule["service-down"]
    assert evaluator.firing() == [] or all(
        a.group in {i.entity_id for i in incidents} for a in evaluator.firing()
    )
