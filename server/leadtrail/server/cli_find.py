"""``leadtrail find``: the leads whose snapshot ever held an email, a phone number or
another personal value (``QueryService.FindLeads``), as a table or JSON lines."""

from __future__ import annotations

import argparse
import sys

from leadtrail.client import LeadMatch

from .cli_errors import UsageError
from .cli_output import dumps, iso_ms, table
from .cli_remote import connect


def cmd_find(args: argparse.Namespace) -> int:
    if args.field is not None and args.value is None:
        raise UsageError("--field needs --value: the value to look for")
    if args.field is None and args.value is not None:
        raise UsageError("--value goes with --field (use --email or --phone alone)")
    with connect(args) as client:
        found = client.find_leads(email=args.email, phone=args.phone, field=args.field, value=args.value)
    if args.format == "json":
        for match in found:
            sys.stdout.write(dumps(match_json(match)).decode() + "\n")
        return 0
    if not found:
        print("no lead holds that value", file=sys.stderr)
        return 0
    rows = [(m.lead_id, iso_ms(m.first_timestamp), iso_ms(m.last_timestamp), str(m.events)) for m in found]
    print("\n".join(table(("LEAD", "FIRST", "LAST", "EVENTS"), rows, right=(3,))))
    return 0


def match_json(match: LeadMatch) -> dict[str, object]:
    return {
        "lead_id": match.lead_id,
        "first_timestamp": iso_ms(match.first_timestamp),
        "last_timestamp": iso_ms(match.last_timestamp),
        "events": match.events,
    }
