"""``leadtrail alerts set|list|rm|show``: a running server's alert rules and alerts, through the SDK.

Imported only when one of them runs (as ``cli_remote``, whose connection and error
lines it shares). A webhook secret is sent, never printed: rules read back say
only whether one is held.
"""

from __future__ import annotations

import argparse
import os
import sys
from decimal import Decimal
from typing import Any

from leadtrail.client import Alert, AlertKind, AlertRule, EventFilter, GroupBy, Outcome

from .alerts.rules import PRESETS, Preset
from .cli_errors import UsageError
from .cli_listing import filter_json, filter_text, print_listing
from .cli_output import iso_ms
from .cli_remote import connect

SECRET_VARIABLE = "LEADTRAIL_WEBHOOK_SECRET"
KINDS = tuple(kind.name.lower() for kind in AlertKind)
GROUPS = ("entity", "flow")
_RULE_FLAGS = ("kind", "type", "base", "threshold", "window", "min_events", "baseline_windows", "group_by")
_RULE_FLAG_NAMES = {name: "--" + name.replace("_", "-") for name in _RULE_FLAGS}
_RULE_FLAG_NAMES["type"] = "--type"


# --------------------------------------------------------------------------- set


def rule_of(args: argparse.Namespace) -> AlertRule:
    """The rule the ``alerts set`` flags describe (a preset, or the flags themselves)."""
    if args.preset:
        given = [_RULE_FLAG_NAMES[name] for name in _RULE_FLAGS if getattr(args, name) not in (None, [])]
        given += [f"--{name}" for name in ("flow", "entity", "outcome") if getattr(args, name)]
        if given:
            raise UsageError(f"--preset {args.preset} sets the rule itself; leave out {', '.join(given)}")
        return _preset_rule(PRESETS[args.preset], args)
    if not args.name:
        raise UsageError("NAME is required (or --preset NAME)")
    if args.kind is None:
        raise UsageError(f"--kind is required: one of {', '.join(KINDS)}")
    flow, entity = args.flow or "", args.entity or ""
    base = EventFilter(types=tuple(args.base), flow_id=flow, entity_id=entity) if args.base else None
    return AlertRule(
        args.name,
        AlertKind[args.kind.upper()],
        filter=EventFilter(
            types=tuple(args.type or ()), flow_id=flow, entity_id=entity, outcomes=tuple(args.outcome or ())
        ),
        base=base,
        threshold=Decimal(args.threshold) if args.threshold is not None else None,
        window_s=args.window or 0,
        min_events=args.min_events or 0,
        baseline_windows=args.baseline_windows or 0,
        group_by=GroupBy[args.group_by.upper()] if args.group_by else None,
        webhook_url=args.webhook or "",
        webhook_secret=_secret(args),
        description=args.description or "",
    )


def _secret(args: argparse.Namespace) -> str:
    """The secret to send: --webhook-secret, else LEADTRAIL_WEBHOOK_SECRET, and only with a
    webhook (the variable set in a shell must not turn a rule without one into a refusal)."""
    if not args.webhook:
        if args.webhook_secret:
            raise UsageError("--webhook-secret needs --webhook")
        return ""
    return args.webhook_secret or os.environ.get(SECRET_VARIABLE, "")


def _preset_rule(p: Preset, args: argparse.Namespace) -> AlertRule:
    """The preset in the SDK's terms (the server checks it as any rule); every field of
    ``Preset`` is carried over: tests/cli/test_alerts.py compares it with ``preset_message``."""
    return AlertRule(
        args.name or p.name,
        AlertKind(int(p.kind)),
        filter=EventFilter(types=p.types, outcomes=tuple(Outcome(int(o)) for o in p.outcomes)),
        base=EventFilter(types=p.base_types) if p.base_types else None,
        threshold=Decimal(p.threshold) if p.threshold else None,
        window_s=p.window_s,
        min_events=p.min_events,
        baseline_windows=p.baseline_windows,
        group_by=GroupBy[p.group_by.name] if p.group_by.value else None,
        webhook_url=args.webhook or "",
        webhook_secret=_secret(args),
        description=args.description or p.description,
    )


def cmd_alerts_set(args: argparse.Namespace) -> int:
    rule = rule_of(args)
    with connect(args) as client:
        stored = client.set_alert_rule(rule)
    print(f"alert rule {stored.name} set: {describe(stored)}")
    return 0


# --------------------------------------------------------------------------- list, rm


def describe(rule: AlertRule) -> str:
    """One line an operator reads: what the rule watches for."""
    counted = _filter_text(rule.filter)
    window = f" in {rule.window_s} s" if rule.window_s else ""
    match rule.kind:
        case AlertKind.MATCH:
            what = f"each {counted}"
        case AlertKind.COUNT:
            what = f"{_plain(rule.threshold)} or more {counted}{window}"
        case AlertKind.RATE:
            base = _filter_text(rule.base) if rule.base is not None else "?"
            what = f"{counted} / {base} >= {_plain(rule.threshold)}{window}{_at_least(rule)}"
        case AlertKind.ABSENCE:
            what = f"no {counted}{window}"
        case AlertKind.DROP:
            base = _filter_text(rule.base) if rule.base is not None else "?"
            what = (
                f"{counted} / {base}{window} fell by {_plain(rule.threshold)} or more below the last "
                f"{rule.baseline_windows} windows{_at_least(rule)}"
            )
        case _:
            what = f"a lead's price sum <= {_plain(rule.threshold)} at {counted}"
    group = f", per {rule.group_by.name.lower()}" if rule.group_by is not None else ""
    hook = ""
    if rule.webhook_url:
        hook = f", webhook {rule.webhook_url} ({'signed' if rule.webhook_secret_set else 'unsigned'})"
    return f"{rule.kind.name.lower()}: {what}{group}{hook}"


def _at_least(rule: AlertRule) -> str:
    return f" (at least {rule.min_events})" if rule.min_events else ""


def _plain(value: Decimal | None) -> str:
    return "" if value is None else format(value, "f")


def _filter_text(f: EventFilter) -> str:
    return filter_text(f, order=("entity", "flow", "lead"), everything="events")


def rule_json(rule: AlertRule) -> dict[str, Any]:
    """A rule as JSON, API.md field names; never a webhook secret (the server sends none)."""
    return {
        "name": rule.name,
        "kind": rule.kind.name.lower(),
        "filter": filter_json(rule.filter),
        "base": filter_json(rule.base) if rule.base is not None else None,
        "threshold": _plain(rule.threshold),
        "window_s": rule.window_s,
        "min_events": rule.min_events,
        "baseline_windows": rule.baseline_windows,
        "group_by": rule.group_by.name.lower() if rule.group_by is not None else "",
        "webhook_url": rule.webhook_url,
        "webhook_secret_set": rule.webhook_secret_set,
        "description": rule.description,
        "set_at": iso_ms(rule.set_at),
        "set_after_position": rule.set_after_position,
    }


def cmd_alerts_list(args: argparse.Namespace) -> int:
    with connect(args) as client:
        rules = client.list_alert_rules()
    print_listing(args.format, rules, rule_json, "no alert rules", ("NAME", "RULE", "SET AT"), _rule_row)
    return 0


def _rule_row(x: AlertRule) -> tuple[str, ...]:
    return (x.name, describe(x), iso_ms(x.set_at))


def cmd_alerts_rm(args: argparse.Namespace) -> int:
    with connect(args) as client:
        client.delete_alert_rule(args.name)
    print(f"alert rule {args.name} deleted")
    return 0


# --------------------------------------------------------------------------- show


def alert_json(alert: Alert) -> dict[str, Any]:
    return {
        "rule": alert.rule,
        "kind": alert.kind.name.lower() if alert.kind is not None else "",
        "group": alert.group,
        "firing": alert.firing,
        "fired_at": iso_ms(alert.fired_at),
        "resolved_at": iso_ms(alert.resolved_at),
        "value": _plain(alert.value),
        "event_id": alert.event_id,
        "resolved_event_id": alert.resolved_event_id,
        "lead_id": alert.lead_id,
        "reason": alert.reason,
    }


def _state(alert: Alert) -> str:
    if alert.firing:
        return "FIRING"
    return "resolved" if alert.resolved_at is not None else "fired"


def cmd_alerts_show(args: argparse.Namespace) -> int:
    with connect(args) as client:
        alerts = client.list_alerts(firing_only=args.firing, rule=args.rule or "", limit=args.limit)
    header = ("STATE", "RULE", "GROUP", "FIRED", "RESOLVED", "VALUE", "REASON")
    nothing = "no alerts firing" if args.firing else "no alerts"
    if print_listing(args.format, alerts, alert_json, nothing, header, _row):
        firing = sum(1 for a in alerts if a.firing)
        print(f"{firing} firing, {len(alerts) - firing} resolved or instantaneous", file=sys.stderr)
    return 0


def _row(a: Alert) -> tuple[str, ...]:
    return (
        _state(a),
        a.rule,
        a.group or "-",
        iso_ms(a.fired_at),
        iso_ms(a.resolved_at) or "-",
        _plain(a.value),
        a.reason,
    )
