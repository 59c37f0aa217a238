"""The catalog of a platform: sources, recipients, enhancements, the flows that join them
and the journey shapes each flow allows."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Literal

from .people import CHANNELS, VERTICALS
from .records import hex_digits

# --------------------------------------------------------------------------- the catalog


@dataclass(frozen=True, slots=True)
class Source:
    """Who sends leads and is paid for each accepted one."""

    id: str
    name: str
    integration: str


@dataclass(frozen=True, slots=True)
class Recipient:
    """A buyer, with the caps that produce ``Daily cap reached (100/100)`` failures."""

    id: str
    name: str
    integration: str
    host: str
    daily_cap: int
    hourly_cap: int


@dataclass(frozen=True, slots=True)
class Enhancement:
    """An enrichment service; it appends ``appended.<service>.*`` fields to the snapshot."""

    service: str
    entity_id: str
    integration: str
    median_ms: int
    timeout_ms: int


@dataclass(frozen=True, slots=True)
class Flow:
    id: str
    name: str
    vertical: str
    sources: tuple[Source, ...]
    recipients: tuple[Recipient, ...]
    """In ping-tree order: an exclusive flow stops at the first buyer that takes the lead."""
    enhancements: tuple[Enhancement, ...]
    exclusive: bool
    """False: a shared lead is sold to every buyer that takes it."""
    filter_id: str
    weight: float
    """Share of the traffic, relative to the other flows."""


SOURCE_NAMES = (
    "Acme Media", "LeadGenius Affiliates", "BlueSky Marketing", "Northwind Leads",
    "Summit Digital", "Keystone Performance", "Harbor Call Center", "Pinnacle Web Forms",
    "Redwood Traffic", "Atlas Data Partners", "Brightline Media", "Crescent Affiliates",
    "Evergreen Lead Co", "Vertex Ads",
)  # fmt: skip
# Buyers and the verticals they buy: a flow only sells to buyers of its vertical.
_LOANS, _AUTO, _MORTGAGE, _SOLAR = "personal_loan", "auto_insurance", "mortgage_refi", "solar"
_RECIPIENT_NAMES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Premier Leads LLC", (_LOANS, _AUTO, _MORTGAGE, _SOLAR)),
    ("First Choice Lending", (_LOANS,)),
    ("Guardian Insurance Group", (_AUTO,)),
    ("National Rate Partners", (_LOANS, _MORTGAGE)),
    ("SunState Solar", (_SOLAR,)),
    ("Heritage Mortgage", (_MORTGAGE,)),
    ("Liberty Auto Direct", (_AUTO,)),
    ("Cornerstone Financial", (_LOANS, _MORTGAGE)),
    ("BrightPath Loans", (_LOANS,)),
    ("Apex Home Energy", (_SOLAR,)),
    ("Union Coverage Agency", (_AUTO,)),
    ("Lakeside Credit Union", (_LOANS, _MORTGAGE)),
    ("Frontier Policy Co", (_AUTO,)),
    ("Goldline Capital", (_LOANS, _MORTGAGE)),
    ("Meridian Solar", (_SOLAR,)),
    ("Trinity Insurance Brokers", (_AUTO,)),
    ("Clearsky Energy Partners", (_SOLAR,)),
)
ENHANCEMENTS = (
    Enhancement("trustedform", "svc_trustedform", "trustedform_consent", 140, 5000),
    Enhancement("phone_check", "svc_phone_check", "phone_check", 110, 3000),
    Enhancement("email_verify", "svc_email_verify", "email_verify", 260, 5000),
)


def build_flows(rng: random.Random, count: int) -> tuple[Flow, ...]:
    sources = tuple(
        Source(f"src_{hex_digits(rng, 16)}", name, rng.choice(("form_post", "json_post", "ping_post")))
        for name in SOURCE_NAMES
    )
    recipients = [
        (
            Recipient(
                id=f"rcp_{hex_digits(rng, 16)}",
                name=name,
                integration=rng.choice(("custom_json", "form_post", "xml_post", "ping_post")),
                host="api." + "".join(c for c in name.lower() if c.isalnum())[:18] + ".com",
                daily_cap=rng.choice((50, 100, 100, 150, 200, 250, 500)),
                hourly_cap=rng.choice((10, 15, 20, 25, 40)),
            ),
            verticals,
        )
        for name, verticals in _RECIPIENT_NAMES
    ]
    flows = []
    for index in range(count):
        vertical = VERTICALS[index % len(VERTICALS)]
        channel = CHANNELS[(index // len(VERTICALS)) % len(CHANNELS)]
        name = f"{vertical.title} - {channel}"
        if index >= len(VERTICALS) * len(CHANNELS):
            name += f" {index // (len(VERTICALS) * len(CHANNELS)) + 1}"
        n_enhancements = rng.choices((1, 2, 3), weights=(35, 40, 25))[0]
        chosen = sorted(rng.sample(range(len(ENHANCEMENTS)), n_enhancements))
        n_recipients = rng.choices((1, 2, 3, 4), weights=(20, 35, 30, 15))[0]
        buyers = [recipient for recipient, verticals in recipients if vertical.key in verticals]
        flows.append(
            Flow(
                id=f"flow_{hex_digits(rng, 24)}",
                name=name,
                vertical=vertical.key,
                sources=tuple(rng.sample(sources, rng.randint(2, 4))),
                recipients=tuple(rng.sample(buyers, n_recipients)),
                enhancements=tuple(ENHANCEMENTS[i] for i in chosen),
                exclusive=n_recipients == 1 or rng.random() < 0.75,
                filter_id=f"fil_{hex_digits(rng, 16)}",
                weight=1.0 / (index + 1) ** 0.8,
            )
        )
    return tuple(flows)


# --------------------------------------------------------------------------- journey shapes


@dataclass(frozen=True, slots=True)
class Shape:
    """How a journey ends and how many buyers it meets; its length follows from it."""

    end: Literal["rejected", "filtered", "routed"]
    tried: int = 0
    """Buyers attempted (routed journeys only)."""
    retries: int = 0
    """Of those, how many errored and were retried (three events instead of one)."""
    feedback: bool = False

    def length(self, enhancements: int) -> int:
        # submitted, accepted|rejected, the enhancements, the filter, completed
        base = 4 + enhancements
        return base + self.tried + 2 * self.retries + int(self.feedback)

    @property
    def weight(self) -> float:
        """Plausibility, from rough per-step rates of production flows."""
        if self.end == "rejected":
            return 0.08
        if self.end == "filtered":
            return 0.07
        return (
            0.85
            * 0.3 ** (self.tried - 1)
            * math.comb(self.tried, self.retries)
            * 0.1**self.retries
            * (0.15 if self.feedback else 0.85)
        )


def flow_shapes(flow: Flow, lengths: range) -> list[Shape]:
    """Every journey the flow can produce whose length is in ``lengths``."""
    shapes = [Shape("rejected"), Shape("filtered")]
    for tried in range(1, len(flow.recipients) + 1):
        for retries in range(tried + 1):
            for feedback in (False, True):
                shapes.append(Shape("routed", tried, retries, feedback))
    return [s for s in shapes if s.length(len(flow.enhancements)) in lengths]
