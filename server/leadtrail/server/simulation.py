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

import bisect
import heapq
import json
import math
import random
import string
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal, TypedDict

__all__ = [
    "DAY_MS",
    "DEFAULT_START_MS",
    "SNAPSHOT_MAX_BYTES",
    "SNAPSHOT_MIN_BYTES",
    "Enhancement",
    "Flow",
    "LeadFlowSimulator",
    "Recipient",
    "SimulatedEvent",
    "Source",
    "snapshot_bytes",
]

DAY_MS: Final = 86_400_000
DEFAULT_START_MS: Final = 1_705_294_800_000
"""2024-01-15T05:00:00Z, midnight on the US east coast, where the day's traffic curve starts."""

SNAPSHOT_MIN_BYTES: Final = 1024
SNAPSHOT_MAX_BYTES: Final = 1400
"""Every snapshot's compact JSON lies in this range: 1.0 to 1.4 KB whichever KB is meant."""

DEFAULT_EVENTS_RANGE: Final = (5, 8)
_MAX_EVENTS: Final = 12

# Outcome numbers as leadtrail.storage.Outcome (and leadtrail.v1.Outcome) number them;
# repeated here so that the simulation does not depend on the engine.
_UNSPECIFIED, _SUCCESS, _FAILURE, _ERROR = 0, 1, 2, 3


class SimulatedEvent(TypedDict):
    """One event as plain data; the keys are ``leadtrail.storage.Event``'s fields."""

    type: str
    lead_id: str
    flow_id: str
    id: str
    timestamp_ms: int
    entity_id: str
    outcome: int
    reason: str
    duration_ms: int
    integration: str
    response_code: int
    price: str
    details: dict[str, Any]
    lead: dict[str, Any]


def snapshot_bytes(snapshot: dict[str, Any]) -> int:
    """Size of a snapshot as compact JSON, the measure the size range refers to."""
    return len(json.dumps(snapshot, separators=(",", ":")).encode())


def _money(cents: int) -> str:
    """A decimal string from whole cents: integer arithmetic, so never a float's rounding."""
    sign = "-" if cents < 0 else ""
    cents = abs(cents)
    return f"{sign}{cents // 100}.{cents % 100:02d}"


def _date(ms: int) -> str:
    return datetime.fromtimestamp(ms // 1000, tz=UTC).strftime("%Y-%m-%d")


def _hex(rng: random.Random, digits: int) -> str:
    return f"{rng.getrandbits(4 * digits):0{digits}x}"


# --------------------------------------------------------------------------- reference data
# Lists long enough that values repeat only as often as they do in real traffic.

_FIRST_NAMES = (
    "James", "Mary", "Robert", "Patricia", "John", "Jennifer", "Michael", "Linda", "David",
    "Elizabeth", "William", "Barbara", "Richard", "Susan", "Joseph", "Jessica", "Thomas",
    "Sarah", "Christopher", "Karen", "Charles", "Lisa", "Daniel", "Nancy", "Matthew", "Betty",
    "Anthony", "Sandra", "Mark", "Margaret", "Donald", "Ashley", "Steven", "Kimberly",
    "Andrew", "Emily", "Paul", "Donna", "Joshua", "Michelle", "Kenneth", "Carol", "Kevin",
    "Amanda", "Brian", "Melissa", "George", "Deborah", "Timothy", "Stephanie", "Ronald",
    "Dorothy", "Jason", "Rebecca", "Edward", "Sharon", "Jeffrey", "Laura", "Ryan", "Cynthia",
    "Jacob", "Amy", "Gary", "Kathleen", "Nicholas", "Angela", "Eric", "Shirley", "Jonathan",
    "Brenda", "Stephen", "Emma", "Larry", "Anna", "Justin", "Pamela", "Scott", "Nicole",
    "Brandon", "Samantha", "Benjamin", "Katherine", "Samuel", "Christine", "Gregory", "Debra",
    "Alexander", "Rachel", "Patrick", "Carolyn", "Frank", "Janet", "Raymond", "Maria", "Jack",
    "Olivia", "Dennis", "Heather", "Jerry", "Helen", "Tyler", "Catherine", "Aaron", "Diane",
    "Jose", "Julie", "Adam", "Victoria", "Nathan", "Joyce", "Henry", "Lauren", "Zachary",
    "Kelly", "Douglas", "Christina", "Peter", "Ruth", "Kyle", "Joan", "Noah", "Virginia",
    "Ethan", "Judith", "Jeremy", "Evelyn", "Walter", "Hannah", "Christian", "Andrea", "Keith",
    "Megan", "Roger", "Cheryl", "Terry", "Jacqueline", "Austin", "Madison", "Sean", "Teresa",
    "Gerald", "Abigail", "Carl", "Sophia", "Harold", "Martha",
)  # fmt: skip

_LAST_NAMES = (
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez",
    "Martinez", "Hernandez", "Lopez", "Gonzalez", "Wilson", "Anderson", "Thomas", "Taylor",
    "Moore", "Jackson", "Martin", "Lee", "Perez", "Thompson", "White", "Harris", "Sanchez",
    "Clark", "Ramirez", "Lewis", "Robinson", "Walker", "Young", "Allen", "King", "Wright",
    "Scott", "Torres", "Nguyen", "Hill", "Flores", "Green", "Adams", "Nelson", "Baker", "Hall",
    "Rivera", "Campbell", "Mitchell", "Carter", "Roberts", "Gomez", "Phillips", "Evans",
    "Turner", "Diaz", "Parker", "Cruz", "Edwards", "Collins", "Reyes", "Stewart", "Morris",
    "Morales", "Murphy", "Cook", "Rogers", "Gutierrez", "Ortiz", "Morgan", "Cooper",
    "Peterson", "Bailey", "Reed", "Kelly", "Howard", "Ramos", "Kim", "Cox", "Ward",
    "Richardson", "Watson", "Brooks", "Chavez", "Wood", "James", "Bennett", "Gray", "Mendoza",
    "Ruiz", "Hughes", "Price", "Alvarez", "Castillo", "Sanders", "Patel", "Myers", "Long",
    "Ross", "Foster", "Jimenez", "Powell", "Jenkins", "Perry", "Russell", "Sullivan", "Bell",
    "Coleman", "Butler", "Henderson", "Barnes", "Gonzales", "Fisher", "Vasquez", "Simmons",
    "Romero", "Jordan", "Patterson", "Alexander", "Hamilton", "Graham", "Reynolds", "Griffin",
)  # fmt: skip

_EMAIL_DOMAINS = (
    ("gmail.com", 44), ("yahoo.com", 16), ("hotmail.com", 9), ("outlook.com", 6),
    ("aol.com", 5), ("icloud.com", 6), ("comcast.net", 3), ("msn.com", 2),
    ("att.net", 2), ("verizon.net", 1), ("live.com", 2), ("sbcglobal.net", 2),
    ("charter.net", 1), ("me.com", 1),
)  # fmt: skip

_STREET_NAMES = (
    "Main", "Oak", "Maple", "Cedar", "Pine", "Elm", "Washington", "Lake", "Hill", "Park",
    "Sunset", "Highland", "Meadow", "Forest", "Lincoln", "Jefferson", "Madison", "Franklin",
    "Chestnut", "Willow", "Walnut", "Spring", "Church", "River", "Ridge", "Valley", "Jackson",
    "Adams", "Center", "Mill", "Cherry", "Dogwood", "Magnolia", "Hickory", "Laurel", "Birch",
    "Prospect", "Fairview", "Woodland", "Lakeview", "Broad", "Union", "Grove", "Railroad",
    "Smith", "Canyon", "Vista", "Sierra", "Mesa",
)  # fmt: skip
_STREET_SUFFIXES = ("St", "Ave", "Rd", "Dr", "Ln", "Blvd", "Ct", "Way", "Pl", "Cir", "Ter", "Pkwy")

# (city, state, first three zip digits, area codes)
_CITIES: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    ("Houston", "TX", "770", ("713", "281", "832")),
    ("Dallas", "TX", "752", ("214", "469", "972")),
    ("Austin", "TX", "787", ("512", "737")),
    ("San Antonio", "TX", "782", ("210", "726")),
    ("Phoenix", "AZ", "850", ("602", "480", "623")),
    ("Tucson", "AZ", "857", ("520",)),
    ("Los Angeles", "CA", "900", ("213", "310", "323")),
    ("San Diego", "CA", "921", ("619", "858")),
    ("Sacramento", "CA", "958", ("916", "279")),
    ("Fresno", "CA", "937", ("559",)),
    ("Jacksonville", "FL", "322", ("904",)),
    ("Miami", "FL", "331", ("305", "786")),
    ("Tampa", "FL", "336", ("813", "656")),
    ("Orlando", "FL", "328", ("407", "321")),
    ("Atlanta", "GA", "303", ("404", "470", "678")),
    ("Savannah", "GA", "314", ("912",)),
    ("Charlotte", "NC", "282", ("704", "980")),
    ("Raleigh", "NC", "276", ("919", "984")),
    ("Columbus", "OH", "432", ("614", "380")),
    ("Cleveland", "OH", "441", ("216",)),
    ("Cincinnati", "OH", "452", ("513",)),
    ("Chicago", "IL", "606", ("312", "773", "872")),
    ("Springfield", "IL", "627", ("217",)),
    ("Detroit", "MI", "482", ("313",)),
    ("Grand Rapids", "MI", "495", ("616",)),
    ("Philadelphia", "PA", "191", ("215", "267")),
    ("Pittsburgh", "PA", "152", ("412", "878")),
    ("Nashville", "TN", "372", ("615", "629")),
    ("Memphis", "TN", "381", ("901",)),
    ("Indianapolis", "IN", "462", ("317", "463")),
    ("Denver", "CO", "802", ("303", "720")),
    ("Seattle", "WA", "981", ("206",)),
    ("Spokane", "WA", "992", ("509",)),
    ("Las Vegas", "NV", "891", ("702", "725")),
    ("Albuquerque", "NM", "871", ("505",)),
    ("Oklahoma City", "OK", "731", ("405",)),
    ("Louisville", "KY", "402", ("502",)),
    ("Baltimore", "MD", "212", ("410", "443")),
    ("Milwaukee", "WI", "532", ("414",)),
    ("Kansas City", "MO", "641", ("816",)),
    ("St. Louis", "MO", "631", ("314",)),
    ("Birmingham", "AL", "352", ("205",)),
    ("Charleston", "SC", "294", ("843",)),
    ("Richmond", "VA", "232", ("804",)),
    ("Newark", "NJ", "071", ("973", "862")),
    ("Buffalo", "NY", "142", ("716",)),
    ("Portland", "OR", "972", ("503", "971")),
    ("Salt Lake City", "UT", "841", ("801", "385")),
    ("Boise", "ID", "837", ("208",)),
    ("Omaha", "NE", "681", ("402", "531")),
)

_USER_AGENTS = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS {a}_{b} like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/{a}.{b} Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android {a}; SM-S9{b}1U) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/{c}.0.{d}.{e} Mobile Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/{c}.0.{d}.{e} Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_{b}) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/{a}.{b} Safari/605.1.15",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:{c}.0) Gecko/20100101 Firefox/{c}.0",
    "Mozilla/5.0 (Linux; Android {a}; Pixel {b}) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/{c}.0.{d}.{e} Mobile Safari/537.36",
)

_LANDING_SITES = (
    "www.quickloanfinder.com", "get.autoquotesnow.com", "www.homerefihelp.com",
    "solar.savingsexperts.net", "apply.lendmatch.io", "www.bestratecompare.com",
    "offers.coverageking.com", "www.sunpowerquotes.org", "lp.cashadvanceusa.com",
)  # fmt: skip
_LANDING_PATHS = ("apply", "get-quote", "step-2", "compare", "lp/v3", "offer", "start")
_UTM_SOURCES = ("google", "facebook", "bing", "tiktok", "email", "native", "affiliate")
_UTM_MEDIA = ("cpc", "paid_social", "display", "newsletter", "referral")
_CARRIERS_MOBILE = (
    "Verizon Wireless", "T-Mobile USA", "AT&T Mobility", "Cricket Wireless",
    "Metro by T-Mobile", "US Cellular", "Boost Mobile", "Visible",
)  # fmt: skip
_CARRIERS_LANDLINE = ("Comcast Cable", "Charter Communications", "Frontier", "CenturyLink")
_CREDIT = ("excellent", "good", "fair", "poor")


# --------------------------------------------------------------------------- verticals


@dataclass(frozen=True, slots=True)
class _Vertical:
    """What a kind of lead carries and what it is worth."""

    key: str
    title: str
    fields: Callable[[random.Random], dict[str, Any]]
    cost_cents: tuple[int, int]
    """What a source is paid per accepted lead."""
    price_cents: tuple[int, int]
    """What a buyer pays per delivered lead."""
    filter_reasons: tuple[str, ...]
    loan_purposes: tuple[str, ...] = ()


def _loan_fields(rng: random.Random) -> dict[str, Any]:
    return {
        "loan_amount": rng.randrange(1000, 35001, 250),
        "loan_purpose": rng.choice(
            ("debt_consolidation", "home_improvement", "auto_repair", "medical", "other")
        ),
        "credit_rating": rng.choice(_CREDIT),
        "employment_status": rng.choice(("employed", "self_employed", "retired", "benefits")),
        "monthly_income": rng.randrange(1200, 15001, 50),
    }


def _auto_fields(rng: random.Random) -> dict[str, Any]:
    make, models = rng.choice(
        (
            ("Toyota", ("Camry", "Corolla", "RAV4", "Tacoma")),
            ("Honda", ("Civic", "Accord", "CR-V", "Pilot")),
            ("Ford", ("F-150", "Escape", "Explorer", "Fusion")),
            ("Chevrolet", ("Silverado", "Malibu", "Equinox", "Tahoe")),
            ("Nissan", ("Altima", "Rogue", "Sentra")),
            ("Hyundai", ("Elantra", "Tucson", "Sonata")),
        )
    )
    return {
        "vehicle_1.year": rng.randint(2004, 2024),
        "vehicle_1.make": make,
        "vehicle_1.model": rng.choice(models),
        "currently_insured": rng.random() < 0.7,
        "credit_rating": rng.choice(_CREDIT),
    }


def _mortgage_fields(rng: random.Random) -> dict[str, Any]:
    value = rng.randrange(120_000, 900_001, 5000)
    return {
        "property_value": value,
        "loan_amount": rng.randrange(value // 5, value * 4 // 5 + 1, 1000),
        "property_type": rng.choice(("single_family", "condo", "townhouse", "multi_family")),
        "credit_rating": rng.choice(_CREDIT),
        "military_service": rng.random() < 0.12,
    }


def _solar_fields(rng: random.Random) -> dict[str, Any]:
    return {
        "monthly_electric_bill": rng.randrange(60, 451, 5),
        "roof_shade": rng.choice(("no_shade", "some_shade", "a_lot_of_shade")),
        "homeowner": rng.random() < 0.9,
        "utility_provider": rng.choice(
            ("Duke Energy", "Florida Power & Light", "PG&E", "Georgia Power", "APS", "Xcel")
        ),
        "credit_rating": rng.choice(_CREDIT),
    }


_VERTICALS = (
    _Vertical(
        "personal_loan", "Personal Loans", _loan_fields, (800, 2500), (1500, 6000),
        ("Credit rating below minimum", "Loan amount out of range", "State not in approved list"),
    ),
    _Vertical(
        "auto_insurance", "Auto Insurance", _auto_fields, (300, 1500), (700, 3200),
        ("Vehicle year too old", "State not in approved list", "Currently insured required"),
    ),
    _Vertical(
        "mortgage_refi", "Mortgage Refinance", _mortgage_fields, (1500, 4500), (3500, 9500),
        ("Loan-to-value above maximum", "Credit rating below minimum", "Property type excluded"),
    ),
    _Vertical(
        "solar", "Solar", _solar_fields, (2000, 6000), (4500, 14000),
        ("Renters not accepted", "Electric bill below minimum", "Utility not serviced"),
    ),
)  # fmt: skip
_CHANNELS = ("Web Forms", "Affiliates", "Facebook Leads", "Google PPC", "Call Transfers")


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


_SOURCE_NAMES = (
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
_ENHANCEMENTS = (
    Enhancement("trustedform", "svc_trustedform", "trustedform_consent", 140, 5000),
    Enhancement("phone_check", "svc_phone_check", "phone_check", 110, 3000),
    Enhancement("email_verify", "svc_email_verify", "email_verify", 260, 5000),
)


def _build_flows(rng: random.Random, count: int) -> tuple[Flow, ...]:
    sources = tuple(
        Source(f"src_{_hex(rng, 16)}", name, rng.choice(("form_post", "json_post", "ping_post")))
        for name in _SOURCE_NAMES
    )
    recipients = [
        (
            Recipient(
                id=f"rcp_{_hex(rng, 16)}",
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
        vertical = _VERTICALS[index % len(_VERTICALS)]
        channel = _CHANNELS[(index // len(_VERTICALS)) % len(_CHANNELS)]
        name = f"{vertical.title} - {channel}"
        if index >= len(_VERTICALS) * len(_CHANNELS):
            name += f" {index // (len(_VERTICALS) * len(_CHANNELS)) + 1}"
        n_enhancements = rng.choices((1, 2, 3), weights=(35, 40, 25))[0]
        chosen = sorted(rng.sample(range(len(_ENHANCEMENTS)), n_enhancements))
        n_recipients = rng.choices((1, 2, 3, 4), weights=(20, 35, 30, 15))[0]
        buyers = [recipient for recipient, verticals in recipients if vertical.key in verticals]
        flows.append(
            Flow(
                id=f"flow_{_hex(rng, 24)}",
                name=name,
                vertical=vertical.key,
                sources=tuple(rng.sample(sources, rng.randint(2, 4))),
                recipients=tuple(rng.sample(buyers, n_recipients)),
                enhancements=tuple(_ENHANCEMENTS[i] for i in chosen),
                exclusive=n_recipients == 1 or rng.random() < 0.75,
                filter_id=f"fil_{_hex(rng, 16)}",
                weight=1.0 / (index + 1) ** 0.8,
            )
        )
    return tuple(flows)


# --------------------------------------------------------------------------- journey shapes


@dataclass(frozen=True, slots=True)
class _Shape:
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


def _shapes(flow: Flow, lengths: range) -> list[_Shape]:
    """Every journey the flow can produce whose length is in ``lengths``."""
    shapes = [_Shape("rejected"), _Shape("filtered")]
    for tried in range(1, len(flow.recipients) + 1):
        for retries in range(tried + 1):
            for feedback in (False, True):
                shapes.append(_Shape("routed", tried, retries, feedback))
    return [s for s in shapes if s.length(len(flow.enhancements)) in lengths]


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
        self.flows: tuple[Flow, ...] = _build_flows(random.Random(f"{seed}:catalog"), flows)
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
        choices = [(flow, _shapes(flow, lengths)) for flow in self.flows]
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
        vertical = rng.choice(_VERTICALS)
        snapshot = _person(rng, vertical, f"lead_{_hex(rng, 24)}", rng.choice(_SOURCE_NAMES))
        snapshot.update(_parsed(rng, snapshot))
        for enhancement in _ENHANCEMENTS:
            snapshot.update(_appended(rng, enhancement, snapshot))
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
        if not low <= events_per_lead <= _MAX_EVENTS:
            raise ValueError(f"events_per_lead {events_per_lead}: must be in {low}..{_MAX_EVENTS}")
        return range(events_per_lead, events_per_lead + 1)

    def _arrival_offset_ms(self, fraction: float) -> int:
        """Map a uniform fraction of the window to a time that follows the daily curve.

        Increasing in ``fraction``, so leads drawn in order arrive in order.
        """
        hour = min(bisect.bisect_right(_TRAFFIC_CDF, fraction) - 1, len(_HOURLY_TRAFFIC) - 1)
        low, high = _TRAFFIC_CDF[hour], _TRAFFIC_CDF[hour + 1]
        position = (hour + (fraction - low) / (high - low)) / len(_HOURLY_TRAFFIC)
        return min(int(position * self._span_ms), self._span_ms - 1)

    def _journey(self, flow: Flow, shape: _Shape, arrival_ms: int) -> list[SimulatedEvent]:
        """Render one journey, redrawing the lead's data until every snapshot fits the size range."""
        rng = self._rng
        vertical = next(v for v in _VERTICALS if v.key == flow.vertical)
        source = rng.choice(flow.sources)
        lead_id = f"lead_{_hex(rng, 24)}"
        duplicate_of = None
        if shape.end == "rejected" and self._seen and rng.random() < 0.7:
            duplicate_of = rng.choice(self._seen)
        for _attempt in range(50):
            raw = _person(rng, vertical, lead_id, source.name)
            if duplicate_of is not None:
                raw.update(duplicate_of[0])
            events = _Journey(rng, flow, vertical, source, lead_id, arrival_ms).render(
                shape, raw, duplicate_of[1] if duplicate_of else None
            )
            sizes = (snapshot_bytes(events[0]["lead"]), snapshot_bytes(events[-1]["lead"]))
            if sizes[0] >= SNAPSHOT_MIN_BYTES and sizes[1] <= SNAPSHOT_MAX_BYTES:
                break
        else:  # pragma: no cover - the reference data makes this unreachable
            raise RuntimeError(f"no snapshot of {lead_id} fits the size range")
        identity = {k: raw[k] for k in _IDENTITY_FIELDS if k in raw}
        self._seen.append((identity, arrival_ms))
        return events


_IDENTITY_FIELDS = (
    "first_name", "last_name", "email", "phone_1", "address_1", "city", "state",
    "postal_code", "dob", "gender",
)  # fmt: skip


def _person(rng: random.Random, vertical: _Vertical, lead_id: str, source_name: str) -> dict[str, Any]:
    """The fields as a source posts them: raw text, nothing parsed or appended."""
    first, last = rng.choice(_FIRST_NAMES), rng.choice(_LAST_NAMES)
    domain = rng.choices(*zip(*_EMAIL_DOMAINS, strict=True))[0]
    local = rng.choice(
        (
            f"{first}.{last}",
            f"{first[0]}{last}",
            f"{first}{last}{rng.randint(1, 99)}",
            f"{first}.{last}{rng.randint(1960, 2005)}",
            f"{first}_{last[0]}{rng.randint(100, 9999)}",
        )
    ).lower()
    city, state, zip3, area_codes = rng.choice(_CITIES)
    phone = f"{rng.choice(area_codes)}{rng.randint(200, 999)}{rng.randint(0, 9999):04d}"
    ua = rng.choice(_USER_AGENTS).format(
        a=rng.randint(11, 17),
        b=rng.randint(1, 9),
        c=rng.randint(110, 121),
        d=rng.randint(5000, 6200),
        e=rng.randint(10, 230),
    )
    utm = (
        f"?utm_source={rng.choice(_UTM_SOURCES)}&utm_medium={rng.choice(_UTM_MEDIA)}"
        f"&utm_campaign={rng.choice(('spring', 'q1', 'promo', 'brand', 'retarget'))}"
        f"{rng.randint(1, 40)}&gclid={_hex(rng, 12)}"
    )
    lead: dict[str, Any] = {
        "lead.id": lead_id,
        "first_name": first,
        "last_name": last,
        "email": f"{local}@{domain}",
        "phone_1": phone,
        "address_1": f"{rng.randint(1, 9999)} {rng.choice(_STREET_NAMES)} {rng.choice(_STREET_SUFFIXES)}",
        "city": city,
        "state": state,
        "postal_code": f"{zip3}{rng.randint(0, 99):02d}",
        "dob": f"{rng.randint(1948, 2004)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
        "gender": rng.choice("MF"),
        "ip_address": f"{rng.randint(24, 223)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}."
        f"{rng.randint(1, 254)}",
        "user_agent": ua,
        "trustedform_cert_url": f"https://cert.trustedform.com/{_hex(rng, 40)}",
        "trustedform_ping_url": f"https://ping.trustedform.com/0.{_hex(rng, 40)}",
        "jornaya_leadid": "-".join(_hex(rng, n) for n in (8, 4, 4, 4, 12)).upper(),
        "landing_page_url": f"https://{rng.choice(_LANDING_SITES)}/{rng.choice(_LANDING_PATHS)}{utm}",
        "sub_id": f"{rng.choice(('aff', 'pub', 'sub'))}_{rng.randint(100, 99999)}",
        "tcpa_consent": True,
        "best_time_to_call": rng.choice(("morning", "afternoon", "evening", "anytime")),
        "reference": "".join(rng.choices(string.ascii_uppercase + string.digits, k=12)),
        "source.name": source_name,
    }
    lead.update(vertical.fields(rng))
    return lead


def _parsed(rng: random.Random, lead: dict[str, Any]) -> dict[str, Any]:
    """Components the platform parses out of typed fields when it accepts a lead."""
    email = str(lead.get("email", ""))
    phone = str(lead.get("phone_1", ""))
    return {
        "email.domain": email.partition("@")[2],
        "email.valid": "@" in email,
        "phone_1.area": phone[:3],
        "phone_1.type": rng.choices(("mobile", "home", "work"), weights=(80, 15, 5))[0],
    }


def _appended(rng: random.Random, enhancement: Enhancement, lead: dict[str, Any]) -> dict[str, Any]:
    """What a successful call of the service appends to the snapshot."""
    prefix = f"appended.{enhancement.service}."
    if enhancement.service == "trustedform":
        return {prefix + "outcome": "success", prefix + "age_in_seconds": rng.randint(4, 900)}
    if enhancement.service == "phone_check":
        mobile = lead.get("phone_1.type", "mobile") == "mobile"
        carriers = _CARRIERS_MOBILE if mobile else _CARRIERS_LANDLINE
        return {
            prefix + "carrier": rng.choice(carriers),
            prefix + "line_type": "mobile" if mobile else rng.choice(("landline", "voip")),
        }
    status = rng.choices(("valid", "invalid", "catch_all", "unknown"), weights=(82, 6, 8, 4))
    return {prefix + "status": status[0]}


class _Journey:
    """Renders one lead's events: a clock that advances step by step and a snapshot
    that only ever gains fields, copied into each event."""

    def __init__(
        self,
        rng: random.Random,
        flow: Flow,
        vertical: _Vertical,
        source: Source,
        lead_id: str,
        arrival_ms: int,
    ) -> None:
        self.rng = rng
        self.flow = flow
        self.vertical = vertical
        self.source = source
        self.lead_id = lead_id
        self.arrival_ms = arrival_ms
        self.now_ms = arrival_ms
        self.snapshot: dict[str, Any] = {}
        self.events: list[SimulatedEvent] = []

    def emit(
        self,
        type: str,
        *,
        outcome: int,
        entity_id: str = "",
        duration_ms: int = 0,
        gap_ms: int = 0,
        reason: str = "",
        integration: str = "",
        response_code: int = 0,
        price: str = "",
        details: dict[str, Any] | None = None,
    ) -> SimulatedEvent:
        """Record a step that began ``gap_ms`` after the previous one ended and took
        ``duration_ms``; its timestamp is when it finished."""
        self.now_ms += gap_ms + duration_ms
        event: SimulatedEvent = {
            "type": type,
            "lead_id": self.lead_id,
            "flow_id": self.flow.id,
            "id": "",
            "timestamp_ms": self.now_ms,
            "entity_id": entity_id,
            "outcome": outcome,
            "reason": reason,
            "duration_ms": duration_ms,
            "integration": integration,
            "response_code": response_code,
            "price": price,
            "details": details if details is not None else {},
            "lead": dict(self.snapshot),
        }
        self.events.append(event)
        return event

    def gap(self, low: int, high: int) -> int:
        return self.rng.randint(low, high)

    def latency(self, median_ms: int) -> int:
        """Service latencies are log-normal: mostly near the median, with a long tail."""
        return max(1, int(median_ms * self.rng.lognormvariate(0.0, 0.45)))

    def render(
        self,
        shape: _Shape,
        raw: dict[str, Any],
        first_seen_ms: int | None,
    ) -> list[SimulatedEvent]:
        rng = self.rng
        rejection = ""
        if shape.end == "rejected":
            if first_seen_ms is not None or rng.random() < 0.5:
                seen = (
                    first_seen_ms
                    if first_seen_ms is not None
                    else (self.arrival_ms - rng.randint(1, 60) * DAY_MS)
                )
                rejection = f"Duplicate: previously submitted {_date(seen)}"
            else:
                missing = rng.choice(("postal_code", "dob", "ip_address"))
                del raw[missing]
                rejection = f"Missing required field: {missing}"

        self.snapshot = raw
        self.emit(
            "source.submitted",
            outcome=_UNSPECIFIED,
            entity_id=self.source.id,
            duration_ms=rng.randint(1, 4),
            integration=self.source.integration,
            details={"content_type": "application/json"
                     if self.source.integration == "json_post"
                     else "application/x-www-form-urlencoded", "fields": len(raw)},
        )  # fmt: skip
        self.snapshot = {**raw, **_parsed(rng, raw)}
        if shape.end != "rejected":
            cost = rng.randrange(*self.vertical.cost_cents, 25)
            self.emit(
                "source.accepted",
                outcome=_SUCCESS,
                entity_id=self.source.id,
                duration_ms=rng.randint(1, 8),
                gap_ms=self.gap(2, 30),
                integration=self.source.integration,
                response_code=201,
                price=_money(-cost),
                details={"source": self.source.name, "fields_parsed": len(self.snapshot)},
            )
        for enhancement in self.flow.enhancements:
            self.enhance(enhancement)

        if shape.end == "rejected":
            self.filter(passed=False, rule_set="acceptance", reason=rejection)
            self.emit(
                "source.rejected",
                outcome=_FAILURE,
                entity_id=self.source.id,
                duration_ms=rng.randint(0, 2),
                gap_ms=self.gap(1, 10),
                reason=rejection,
                integration=self.source.integration,
                response_code=200,
                details={"source": self.source.name},
            )
            self.complete(delivered=[], reason=rejection)
            return self.events
        if shape.end == "filtered":
            reason = rng.choice(self.vertical.filter_reasons)
            self.filter(passed=False, rule_set=f"{self.vertical.key}_rules", reason=reason)
            self.complete(delivered=[], reason=reason)
            return self.events

        self.filter(passed=True, rule_set=f"{self.vertical.key}_rules", reason="")
        delivered = self.route(shape)
        self.complete(delivered=delivered, reason="" if delivered else "No buyer accepted the lead")
        if shape.feedback:
            self.feedback(rng.choice(delivered))
        return self.events

    def enhance(self, enhancement: Enhancement) -> None:
        rng = self.rng
        prefix = f"appended.{enhancement.service}."
        if rng.random() < 0.05:
            timed_out = rng.random() < 0.6
            duration = enhancement.timeout_ms if timed_out else self.latency(enhancement.median_ms)
            code = 0 if timed_out else rng.choice((500, 502, 503))
            reason = (
                f"Service timeout after {enhancement.timeout_ms}ms"
                if timed_out
                else f"HTTP {code} from {enhancement.service}"
            )
            self.snapshot[prefix + "outcome"] = "error"
            self.emit(
                "enhancement.error",
                outcome=_ERROR,
                entity_id=enhancement.entity_id,
                duration_ms=duration,
                gap_ms=self.gap(10, 120),
                reason=reason,
                integration=enhancement.integration,
                response_code=code,
                details={"service": enhancement.service},
            )
            return
        appended = _appended(rng, enhancement, self.snapshot)
        self.snapshot.update(appended)
        self.emit(
            "enhancement.success",
            outcome=_SUCCESS,
            entity_id=enhancement.entity_id,
            duration_ms=self.latency(enhancement.median_ms),
            gap_ms=self.gap(10, 120),
            integration=enhancement.integration,
            response_code=200,
            details={"service": enhancement.service, "fields_appended": len(appended)},
        )

    def filter(self, *, passed: bool, rule_set: str, reason: str) -> None:
        rules = self.rng.randint(2, 6)
        self.emit(
            "filter.passed" if passed else "filter.failed",
            outcome=_SUCCESS if passed else _FAILURE,
            entity_id=self.flow.filter_id,
            duration_ms=self.rng.randint(0, 3),
            gap_ms=self.gap(5, 60),
            reason=reason,
            details={
                "rule_set": rule_set,
                "rules_evaluated": rules if passed else self.rng.randint(1, rules),
            },
        )

    def route(self, shape: _Shape) -> list[tuple[Recipient, int, str]]:
        """Offer the lead to ``shape.tried`` buyers; returns (buyer, delivered at, price)."""
        rng = self.rng
        retried = set(rng.sample(range(shape.tried), shape.retries))
        last = shape.tried - 1
        plan: list[str] = []
        for slot in range(shape.tried):
            must_fail = self.flow.exclusive and slot < last
            if slot in retried:
                plan.append("retry_failed" if must_fail or rng.random() < 0.2 else "retry_ok")
            elif must_fail:
                plan.append(rng.choices(("cap", "declined", "error"), weights=(55, 30, 15))[0])
            else:
                outcomes = ("delivered", "cap", "declined", "error")
                plan.append(rng.choices(outcomes, weights=(80, 10, 6, 4))[0])
        if shape.feedback and not any(p in ("delivered", "retry_ok") for p in plan):
            slot = last if self.flow.exclusive else rng.randrange(shape.tried)
            plan[slot] = "retry_ok" if slot in retried else "delivered"

        delivered = []
        for recipient, result in zip(self.flow.recipients, plan, strict=False):
            sale = self.deliver(recipient, result)
            if sale is not None:
                delivered.append((recipient, self.now_ms, sale))
        return delivered

    def deliver(self, recipient: Recipient, result: str) -> str | None:
        """Emit one buyer's events; returns the price when the buyer took the lead."""
        rng = self.rng
        url = f"https://{recipient.host}/leads"
        if result == "cap":
            daily = rng.random() < 0.7
            cap = recipient.daily_cap if daily else recipient.hourly_cap
            self.emit(
                "recipient.failed",
                outcome=_FAILURE,
                entity_id=recipient.id,
                duration_ms=rng.randint(0, 2),
                gap_ms=self.gap(5, 40),
                reason=f"{'Daily' if daily else 'Hourly'} cap reached ({cap}/{cap})",
                integration=recipient.integration,
                details={"buyer": recipient.name, "cap": "daily" if daily else "hourly"},
            )
            return None
        if result == "declined":
            self.emit(
                "recipient.failed",
                outcome=_FAILURE,
                entity_id=recipient.id,
                duration_ms=self.latency(380),
                gap_ms=self.gap(10, 150),
                reason=rng.choice(("Duplicate", "Rejected: outside coverage area", "Bid below floor price")),
                integration=recipient.integration,
                response_code=200,
                details={"buyer": recipient.name, "url": url, "response": "rejected"},
            )
            return None
        if result in ("error", "retry_ok", "retry_failed"):
            self.error(recipient, url, attempt=1)
            if result == "error":
                return None
            wait_ms = rng.choice((30_000, 60_000, 120_000))
            self.emit(
                "retry.scheduled",
                outcome=_UNSPECIFIED,
                entity_id=recipient.id,
                gap_ms=self.gap(1, 5),
                integration=recipient.integration,
                details={"buyer": recipient.name, "attempt": 2, "retry_in_ms": wait_ms},
            )
            self.now_ms += wait_ms
            if result == "retry_failed":
                self.error(recipient, url, attempt=2, event_type="retry.attempted")
                return None
            return self.sale(recipient, url, "retry.attempted", attempt=2)
        return self.sale(recipient, url, "recipient.delivered", attempt=1)

    def error(
        self, recipient: Recipient, url: str, *, attempt: int, event_type: str = "recipient.error"
    ) -> None:
        timed_out = self.rng.random() < 0.5
        code = 0 if timed_out else self.rng.choice((500, 502, 503, 504, 401))
        self.emit(
            event_type,
            outcome=_ERROR,
            entity_id=recipient.id,
            duration_ms=10_000 if timed_out else self.latency(300),
            gap_ms=self.gap(10, 150),
            reason="Service timeout after 10000ms" if timed_out else f"HTTP {code} from buyer",
            integration=recipient.integration,
            response_code=code,
            details={"buyer": recipient.name, "url": url, "attempt": attempt},
        )

    def sale(self, recipient: Recipient, url: str, event_type: str, *, attempt: int) -> str:
        price = _money(self.rng.randrange(*self.vertical.price_cents, 25))
        self.emit(
            event_type,
            outcome=_SUCCESS,
            entity_id=recipient.id,
            duration_ms=self.latency(420),
            gap_ms=self.gap(10, 150),
            integration=recipient.integration,
            response_code=200,
            price=price,
            details={
                "buyer": recipient.name,
                "url": url,
                "attempt": attempt,
                "response": "accepted",
                "buyer_lead_id": _hex(self.rng, 16),
            },
        )
        return price

    def complete(self, *, delivered: list[tuple[Recipient, int, str]], reason: str) -> None:
        self.emit(
            "flow.completed",
            outcome=_SUCCESS if delivered else _FAILURE,
            entity_id=self.flow.id,
            gap_ms=self.gap(1, 20),
            reason=reason,
            details={"recipients_delivered": len(delivered)},
        )
        # The step's duration is the whole journey's, set once the clock is known.
        self.events[-1]["duration_ms"] = self.now_ms - self.arrival_ms

    def feedback(self, sale: tuple[Recipient, int, str]) -> None:
        """The buyer reports days later, naming the delivery it is about."""
        recipient, delivered_ms, price = sale
        rng = self.rng
        converted = rng.random() < 0.65
        days = rng.randint(1, 14) if converted else rng.randint(1, 30)
        self.now_ms = delivered_ms + days * DAY_MS + rng.randint(0, DAY_MS // 2)
        details: dict[str, Any] = {
            "type": "conversion" if converted else "return",
            "value": "sold" if converted else "returned",
            "recipient_id": recipient.id,
            "delivered_at_ms": delivered_ms,
        }
        details["days_to_convert" if converted else "days_to_return"] = days
        self.emit(
            "feedback.received",
            outcome=_SUCCESS if converted else _FAILURE,
            entity_id=recipient.id,
            duration_ms=rng.randint(2, 40),
            reason="" if converted else rng.choice(
                ("Disconnected number", "Wrong person", "Duplicate lead", "Not interested")
            ),
            integration="feedback_api",
            response_code=200,
            # A return credits the buyer what they paid.
            price="" if converted else "-" + price,
            details=details,
        )  # fmt: skip
