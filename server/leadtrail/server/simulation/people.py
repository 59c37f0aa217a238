"""The people behind leads: reference data (names, places, devices) and their snapshots."""

from __future__ import annotations

import random
import string
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .records import hex_digits

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
class Vertical:
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


VERTICALS = (
    Vertical(
        "personal_loan", "Personal Loans", _loan_fields, (800, 2500), (1500, 6000),
        ("Credit rating below minimum", "Loan amount out of range", "State not in approved list"),
    ),
    Vertical(
        "auto_insurance", "Auto Insurance", _auto_fields, (300, 1500), (700, 3200),
        ("Vehicle year too old", "State not in approved list", "Currently insured required"),
    ),
    Vertical(
        "mortgage_refi", "Mortgage Refinance", _mortgage_fields, (1500, 4500), (3500, 9500),
        ("Loan-to-value above maximum", "Credit rating below minimum", "Property type excluded"),
    ),
    Vertical(
        "solar", "Solar", _solar_fields, (2000, 6000), (4500, 14000),
        ("Renters not accepted", "Electric bill below minimum", "Utility not serviced"),
    ),
)  # fmt: skip
CHANNELS = ("Web Forms", "Affiliates", "Facebook Leads", "Google PPC", "Call Transfers")


IDENTITY_FIELDS = (
    "first_name", "last_name", "email", "phone_1", "address_1", "city", "state",
    "postal_code", "dob", "gender",
)  # fmt: skip


def person(rng: random.Random, vertical: Vertical, lead_id: str, source_name: str) -> dict[str, Any]:
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
        f"{rng.randint(1, 40)}&gclid={hex_digits(rng, 12)}"
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
        "trustedform_cert_url": f"https://cert.trustedform.com/{hex_digits(rng, 40)}",
        "trustedform_ping_url": f"https://ping.trustedform.com/0.{hex_digits(rng, 40)}",
        "jornaya_leadid": "-".join(hex_digits(rng, n) for n in (8, 4, 4, 4, 12)).upper(),
        "landing_page_url": f"https://{rng.choice(_LANDING_SITES)}/{rng.choice(_LANDING_PATHS)}{utm}",
        "sub_id": f"{rng.choice(('aff', 'pub', 'sub'))}_{rng.randint(100, 99999)}",
        "tcpa_consent": True,
        "best_time_to_call": rng.choice(("morning", "afternoon", "evening", "anytime")),
        "reference": "".join(rng.choices(string.ascii_uppercase + string.digits, k=12)),
        "source.name": source_name,
    }
    lead.update(vertical.fields(rng))
    return lead


def parsed(rng: random.Random, lead: dict[str, Any]) -> dict[str, Any]:
    """Components the platform parses out of typed fields when it accepts a lead."""
    email = str(lead.get("email", ""))
    phone = str(lead.get("phone_1", ""))
    return {
        "email.domain": email.partition("@")[2],
        "email.valid": "@" in email,
        "phone_1.area": phone[:3],
        "phone_1.type": rng.choices(("mobile", "home", "work"), weights=(80, 15, 5))[0],
    }


def appended_fields(rng: random.Random, service: str, lead: dict[str, Any]) -> dict[str, Any]:
    """What a successful call of the enhancement ``service`` appends to the snapshot."""
    prefix = f"appended.{service}."
    if service == "trustedform":
        return {prefix + "outcome": "success", prefix + "age_in_seconds": rng.randint(4, 900)}
    if service == "phone_check":
        mobile = lead.get("phone_1.type", "mobile") == "mobile"
        carriers = _CARRIERS_MOBILE if mobile else _CARRIERS_LANDLINE
        return {
            prefix + "carrier": rng.choice(carriers),
            prefix + "line_type": "mobile" if mobile else rng.choice(("landline", "voip")),
        }
    status = rng.choices(("valid", "invalid", "catch_all", "unknown"), weights=(82, 6, 8, 4))
    return {prefix + "status": status[0]}
