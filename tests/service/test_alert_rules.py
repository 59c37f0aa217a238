"""AlertService rules over a real server with API keys: each bad field refused by name with
nothing stored, set / replace / list / delete, the webhook secret never answered and kept on
a replace, accounts that never see each other's rules, a limited key's scope kept, the
presets, and ListAlerts in the read audit."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from leadtrail.server.alerts import GroupBy, Kind
from leadtrail.server.alerts.rules import MAX_WINDOW_S, PRESETS, Scope, preset, preset_message
from leadtrail.server.simulation import LeadFlowSimulator
from leadtrail.v1 import alerts_pb2, alerts_pb2_grpc, event_pb2, query_pb2, submission_pb2

Stubs = Any  # conftest.Stubs
Server = Any  # conftest.ServerProcess
CLI = [sys.executable, "-m", "leadtrail.server.cli"]


def new_key(server: Server, account: str, role: str, *scope: str) -> str:
    done = subprocess.run(
        [*CLI, "keys", "create", "--data", str(server.data), "--account", account, "--role", role, *scope],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def auth(key: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {key}"),)


@pytest.fixture(scope="module")
def keys(server: Server) -> dict[str, str]:
    return {
        "admin": new_key(server, "acme", "admin"),
        "reader": new_key(server, "acme", "reader"),
        "other": new_key(server, "globex", "admin"),
        "limited": new_key(server, "acme", "admin", "--entity", "buyer-7"),
    }


@pytest.fixture(scope="module")
def alerts(stubs: Stubs) -> Iterator[Any]:
    yield alerts_pb2_grpc.AlertServiceStub(stubs.channel)


def rate_rule(name: str = "fails", /, **fields: Any) -> alerts_pb2.AlertRule:
    values: dict[str, Any] = {
        "name": name,
        "kind": alerts_pb2.ALERT_KIND_RATE,
        "filter": event_pb2.EventFilter(types=["recipient.failed"]),
        "base": event_pb2.EventFilter(types=["recipient.*"]),
        "threshold": "0.2",
        "window_s": 300,
        "min_events": 20,
        "group_by": query_pb2.GROUP_BY_ENTITY,
    }
    values.update(fields)
    return alerts_pb2.AlertRule(**values)


def listed(alerts: Any, key: str) -> list[alerts_pb2.AlertRule]:
    return list(
        alerts.ListAlertRules(alerts_pb2.ListAlertRulesRequest(), metadata=auth(key), timeout=10).rules
    )


def stored_rules(server: Server) -> list[dict[str, Any]]:
    with open(server.data / "alerts" / "rules.json", "rb") as f:
        rules: list[dict[str, Any]] = json.load(f)["rules"]
    return rules


def refusal(alerts: Any, key: str, rule: alerts_pb2.AlertRule) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        alerts.SetAlertRule(rule, metadata=auth(key), timeout=10)
    return info.value.code(), info.value.details()


def test_a_rule_is_set_listed_replaced_and_deleted(alerts: Any, keys: dict[str, str], stubs: Stubs) -> None:
    admin = keys["admin"]
    event = event_pb2.Event(type="source.submitted", lead_id="lead-r1", flow_id="flow-r")
    [result] = stubs.submission.Append(
        submission_pb2.AppendRequest(events=[event]), metadata=auth(admin), timeout=10
    ).results
    answer = alerts.SetAlertRule(rate_rule("crud"), metadata=auth(admin), timeout=10)
    assert answer.name == "crud" and answer.kind == alerts_pb2.ALERT_KIND_RATE
    assert list(answer.filter.types) == ["recipient.failed"] and list(answer.base.types) == ["recipient.*"]
    assert (answer.threshold, answer.window_s, answer.min_events) == ("0.2", 300, 20)
    assert answer.group_by == query_pb2.GROUP_BY_ENTITY
    # The rule counts what is committed after it was set: at least the event just appended.
    assert answer.set_after_position >= result.position and answer.set_at.seconds > 0
    assert "crud" in [r.name for r in listed(alerts, admin)]

    replaced = alerts.SetAlertRule(rate_rule("crud", threshold="0.5"), metadata=auth(admin), timeout=10)
    assert replaced.threshold == "0.5"
    assert [r.threshold for r in listed(alerts, admin) if r.name == "crud"] == ["0.5"]

    alerts.DeleteAlertRule(alerts_pb2.DeleteAlertRuleRequest(name="crud"), metadata=auth(admin), timeout=10)
    assert "crud" not in [r.name for r in listed(alerts, admin)]
    with pytest.raises(grpc.RpcError) as info:
        alerts.DeleteAlertRule(
            alerts_pb2.DeleteAlertRuleRequest(name="crud"), metadata=auth(admin), timeout=10
        )
    assert info.value.code() == grpc.StatusCode.NOT_FOUND and "crud" in info.value.details()


def _filter(**fields: Any) -> event_pb2.EventFilter:
    return event_pb2.EventFilter(**fields)


BAD_RULES: list[tuple[str, dict[str, Any], str]] = [
    # (case, fields replaced in a good RATE rule, what the message starts with)
    ("empty name", {"name": ""}, "name: required"),
    ("upper-case name", {"name": "Fails"}, "name: 'Fails' must match"),
    ("long name", {"name": "a" * 65}, "name:"),
    ("name with a space", {"name": "a b"}, "name:"),
    ("no kind", {"kind": alerts_pb2.ALERT_KIND_UNSPECIFIED}, "kind: required"),
    ("unknown kind", {"kind": 99}, "kind: 99 is not a known AlertKind"),
    ("threshold not a decimal", {"threshold": "lots"}, "threshold: 'lots' is not a decimal"),
    ("threshold NaN", {"threshold": "NaN"}, "threshold: 'NaN' is not a finite"),
    ("threshold infinite", {"threshold": "Infinity"}, "threshold: 'Infinity' is not a finite"),
    ("no threshold", {"threshold": ""}, "threshold: required for ALERT_KIND_RATE"),
    ("rate share over 1", {"threshold": "1.5"}, "threshold: '1.5': ALERT_KIND_RATE takes a share in (0, 1]"),
    ("rate share of 0", {"threshold": "0"}, "threshold: '0': ALERT_KIND_RATE takes a share"),
    ("window of 0", {"window_s": 0}, "window_s: required for ALERT_KIND_RATE"),
    ("window too long", {"window_s": MAX_WINDOW_S + 1}, f"window_s: {MAX_WINDOW_S + 1} is over the limit"),
    ("window of coarse buckets", {"window_s": 61}, "window_s: 61 seconds cannot be cut into 10 to 60 whole"),
    ("min_events too many", {"min_events": 1_000_001}, "min_events: 1000001 is over the limit of 1,000,000"),
    ("group by type", {"group_by": query_pb2.GROUP_BY_TYPE}, "group_by: GROUP_BY_TYPE is not a grouping"),
    ("group by day", {"group_by": query_pb2.GROUP_BY_DAY}, "group_by: GROUP_BY_DAY"),
    (
        "webhook ftp",
        {"webhook_url": "ftp://example.com/h"},
        "webhook_url: 'ftp://example.com/h' is not an http",
    ),
    ("webhook no host", {"webhook_url": "http:///path"}, "webhook_url:"),
    ("webhook not a url", {"webhook_url": "example.com"}, "webhook_url:"),
    ("webhook bad port", {"webhook_url": "http://example.com:99999/"}, "webhook_url:"),
    ("webhook space", {"webhook_url": "http://exa mple.com/"}, "webhook_url:"),
    ("webhook too long", {"webhook_url": "http://e.com/" + "a" * 2048}, "webhook_url: 2061 characters"),
    ("secret too long", {"webhook_url": "http://e.com/", "webhook_secret": "s" * 257}, "webhook_secret: 257"),
    ("secret without url", {"webhook_secret": "s"}, "webhook_secret: given without a webhook_url"),
    ("bad filter type", {"filter": _filter(types=["Recipient"])}, "filter.types[0]: 'Recipient' is neither"),
    ("bad base type", {"base": _filter(types=["recipient.*", "x"])}, "base.types[1]: 'x' is neither"),
    ("bad filter outcome", {"filter": _filter(outcomes=[9])}, "filter.outcomes[0]: 9 is not a known Outcome"),
    ("long filter lead", {"filter": _filter(lead_id="l" * 129)}, "filter.lead_id: longer than"),
    ("alert types counted", {"filter": _filter(types=["alert.fired"])}, "filter.types[0]: 'alert.fired'"),
    ("alert prefix counted", {"base": _filter(types=["alert.*"])}, "base.types[0]: 'alert.*'"),
    ("alert flow counted", {"filter": _filter(flow_id="alerts")}, "filter.flow_id: 'alerts'"),
    ("description too long", {"description": "d" * 1025}, "description: 1025 characters"),
]


@pytest.mark.parametrize(("fields", "message"), [c[1:] for c in BAD_RULES], ids=[c[0] for c in BAD_RULES])
def test_each_bad_field_is_refused_by_name_and_nothing_is_stored(
    alerts: Any, keys: dict[str, str], fields: dict[str, Any], message: str
) -> None:
    admin = keys["admin"]
    before = listed(alerts, admin)
    code, details = refusal(alerts, admin, rate_rule("refused", **fields))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith(message), details
    assert listed(alerts, admin) == before


KIND_RULES: list[tuple[str, dict[str, Any], str]] = [
    (
        "rate without base",
        {"kind": alerts_pb2.ALERT_KIND_RATE, "base": None},
        "base: required for ALERT_KIND_RATE",
    ),
    (
        "drop without base",
        {"kind": alerts_pb2.ALERT_KIND_DROP, "base": None},
        "base: required for ALERT_KIND_DROP",
    ),
    (
        "drop without baseline",
        {"kind": alerts_pb2.ALERT_KIND_DROP},
        "baseline_windows: 0 is out of range 1..168",
    ),
    (
        "drop baseline too long",
        {"kind": alerts_pb2.ALERT_KIND_DROP, "baseline_windows": 169},
        "baseline_windows: 169 is out of range 1..168",
    ),
    (
        "count of a share",
        {"kind": alerts_pb2.ALERT_KIND_COUNT, "threshold": "0.5"},
        "threshold: '0.5': ALERT_KIND_COUNT",
    ),
    (
        "count of 0",
        {"kind": alerts_pb2.ALERT_KIND_COUNT, "threshold": "0"},
        "threshold: '0': ALERT_KIND_COUNT",
    ),
    (
        "count window 0",
        {"kind": alerts_pb2.ALERT_KIND_COUNT, "threshold": "5", "window_s": 0},
        "window_s: required",
    ),
    (
        "absence window 0",
        {"kind": alerts_pb2.ALERT_KIND_ABSENCE, "threshold": "", "window_s": 0},
        "window_s: required",
    ),
    (
        "absence threshold",
        {"kind": alerts_pb2.ALERT_KIND_ABSENCE},
        "threshold: not used by ALERT_KIND_ABSENCE",
    ),
    ("match threshold", {"kind": alerts_pb2.ALERT_KIND_MATCH}, "threshold: not used by ALERT_KIND_MATCH"),
    (
        "margin not money",
        {"kind": alerts_pb2.ALERT_KIND_LEAD_MARGIN, "threshold": "-"},
        "threshold: '-' is not",
    ),
    (
        "margin no threshold",
        {"kind": alerts_pb2.ALERT_KIND_LEAD_MARGIN, "threshold": ""},
        "threshold: required",
    ),
]


@pytest.mark.parametrize(("fields", "message"), [c[1:] for c in KIND_RULES], ids=[c[0] for c in KIND_RULES])
def test_what_each_kind_needs_is_checked(
    alerts: Any, keys: dict[str, str], fields: dict[str, Any], message: str
) -> None:
    admin = keys["admin"]
    before = listed(alerts, admin)
    rule = rate_rule("kinded", **{k: v for k, v in fields.items() if v is not None})
    if "base" in fields and fields["base"] is None:
        rule.ClearField("base")
    code, details = refusal(alerts, admin, rule)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith(message), details
    assert listed(alerts, admin) == before


def test_what_a_kind_does_not_use_is_stored_empty(alerts: Any, keys: dict[str, str]) -> None:
    admin = keys["admin"]
    match = alerts.SetAlertRule(
        rate_rule("each-error", kind=alerts_pb2.ALERT_KIND_MATCH, threshold="", baseline_windows=4),
        metadata=auth(admin),
        timeout=10,
    )
    assert (match.threshold, match.window_s, match.min_events, match.baseline_windows) == ("", 0, 0, 0)
    assert not match.HasField("base")
    count = alerts.SetAlertRule(
        rate_rule("many-errors", kind=alerts_pb2.ALERT_KIND_COUNT, threshold="5.0"),
        metadata=auth(admin),
        timeout=10,
    )
    assert (count.threshold, count.window_s, count.min_events) == ("5", 300, 0)
    margin = alerts.SetAlertRule(
        rate_rule("loss", kind=alerts_pb2.ALERT_KIND_LEAD_MARGIN, threshold="-12.50", group_by=0),
        metadata=auth(admin),
        timeout=10,
    )
    assert (margin.threshold, margin.window_s, margin.group_by) == ("-12.50", 0, 0)
    for name in ("each-error", "many-errors", "loss"):
        alerts.DeleteAlertRule(alerts_pb2.DeleteAlertRuleRequest(name=name), metadata=auth(admin), timeout=10)


def test_the_webhook_secret_is_never_answered_and_kept_on_a_replace(
    server: Server, alerts: Any, keys: dict[str, str]
) -> None:
    admin = keys["admin"]
    hook = "https://hooks.example.com/leadtrail"
    secret = "s3cr3t-webhook-key"
    set_answer = alerts.SetAlertRule(
        rate_rule("hooked", webhook_url=hook, webhook_secret=secret), metadata=auth(admin), timeout=10
    )
    for rule in (set_answer, *listed(alerts, admin)):
        assert rule.webhook_secret == ""
        assert secret.encode() not in rule.SerializeToString()
    assert set_answer.webhook_secret_set and set_answer.webhook_url == hook

    # Re-set with another threshold and no secret (a client cannot send it back): kept.
    again = alerts.SetAlertRule(
        rate_rule("hooked", threshold="0.3", webhook_url=hook), metadata=auth(admin), timeout=10
    )
    assert again.webhook_secret_set and again.threshold == "0.3"
    [kept] = [r for r in stored_rules(server) if r["account_id"] == "acme" and r["name"] == "hooked"]
    assert kept["webhook_secret"] == secret
    # The file that holds it is the server user's alone.
    assert stat.S_IMODE(os.stat(server.data / "alerts" / "rules.json").st_mode) == 0o600

    # Another URL without a secret: the old secret is not sent to a new place.
    moved = alerts.SetAlertRule(
        rate_rule("hooked", webhook_url="https://other.example.com/h"), metadata=auth(admin), timeout=10
    )
    assert not moved.webhook_secret_set
    [kept] = [r for r in stored_rules(server) if r["account_id"] == "acme" and r["name"] == "hooked"]
    assert kept["webhook_secret"] == ""
    alerts.DeleteAlertRule(alerts_pb2.DeleteAlertRuleRequest(name="hooked"), metadata=auth(admin), timeout=10)


def test_accounts_never_see_each_others_rules(alerts: Any, keys: dict[str, str]) -> None:
    acme, globex = keys["admin"], keys["other"]
    alerts.SetAlertRule(rate_rule("shared-name", threshold="0.25"), metadata=auth(acme), timeout=10)
    alerts.SetAlertRule(rate_rule("shared-name", threshold="0.75"), metadata=auth(globex), timeout=10)
    alerts.SetAlertRule(rate_rule("acme-only"), metadata=auth(acme), timeout=10)
    assert [r.threshold for r in listed(alerts, acme) if r.name == "shared-name"] == ["0.25"]
    assert [(r.name, r.threshold) for r in listed(alerts, globex)] == [("shared-name", "0.75")]
    with pytest.raises(grpc.RpcError) as info:
        alerts.DeleteAlertRule(
            alerts_pb2.DeleteAlertRuleRequest(name="acme-only"), metadata=auth(globex), timeout=10
        )
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    alerts.DeleteAlertRule(
        alerts_pb2.DeleteAlertRuleRequest(name="shared-name"), metadata=auth(globex), timeout=10
    )
    assert [r.threshold for r in listed(alerts, acme) if r.name == "shared-name"] == ["0.25"]
    for name in ("shared-name", "acme-only"):
        alerts.DeleteAlertRule(alerts_pb2.DeleteAlertRuleRequest(name=name), metadata=auth(acme), timeout=10)


def test_a_limited_keys_rule_counts_its_entities_only(
    server: Server, alerts: Any, keys: dict[str, str]
) -> None:
    alerts.SetAlertRule(rate_rule("buyer7-fails"), metadata=auth(keys["limited"]), timeout=10)
    [stored] = [r for r in stored_rules(server) if r["name"] == "buyer7-fails"]
    assert stored["account_id"] == "acme"
    assert stored["filter"]["entity_scope"] == ["buyer-7"] and stored["base"]["entity_scope"] == ["buyer-7"]
    # Both filters hide the rules' own output.
    assert stored["filter"]["hidden_types"] == ["alert.*"] and stored["base"]["hidden_types"] == ["alert.*"]
    # It may not replace or delete a rule of the whole account; the whole account's admin may.
    alerts.SetAlertRule(rate_rule("account-fails"), metadata=auth(keys["admin"]), timeout=10)
    limited = auth(keys["limited"])
    for call in (
        lambda: alerts.SetAlertRule(rate_rule("account-fails"), metadata=limited, timeout=10),
        lambda: alerts.DeleteAlertRule(
            alerts_pb2.DeleteAlertRuleRequest(name="account-fails"), metadata=limited, timeout=10
        ),
    ):
        with pytest.raises(grpc.RpcError) as info:
            call()
        assert (
            info.value.code() == grpc.StatusCode.PERMISSION_DENIED and "account-fails" in info.value.details()
        )
    [whole] = [r for r in stored_rules(server) if r["name"] == "account-fails"]
    assert whole["filter"]["entity_scope"] == []
    # Its own rule it replaces and deletes.
    alerts.SetAlertRule(rate_rule("buyer7-fails", threshold="0.4"), metadata=limited, timeout=10)
    alerts.DeleteAlertRule(
        alerts_pb2.DeleteAlertRuleRequest(name="buyer7-fails"), metadata=limited, timeout=10
    )
    alerts.DeleteAlertRule(
        alerts_pb2.DeleteAlertRuleRequest(name="account-fails"), metadata=auth(keys["admin"]), timeout=10
    )


def test_a_rule_name_to_delete_or_list_by_is_checked(alerts: Any, keys: dict[str, str]) -> None:
    for request in (alerts_pb2.DeleteAlertRuleRequest(), alerts_pb2.DeleteAlertRuleRequest(name="Bad Name")):
        with pytest.raises(grpc.RpcError) as info:
            alerts.DeleteAlertRule(request, metadata=auth(keys["admin"]), timeout=10)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and info.value.details().startswith(
            "name:"
        )
    for request in (alerts_pb2.ListAlertsRequest(rule="Bad Name"), alerts_pb2.ListAlertsRequest(limit=1001)):
        with pytest.raises(grpc.RpcError) as info:
            alerts.ListAlerts(request, metadata=auth(keys["reader"]), timeout=10)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_the_presets_are_set_as_any_rule(alerts: Any, keys: dict[str, str]) -> None:
    admin = keys["admin"]
    for name in PRESETS:
        answer = alerts.SetAlertRule(preset_message(name), metadata=auth(admin), timeout=10)
        assert answer.name == name and answer.description
    by_name = {r.name: r for r in listed(alerts, admin)}
    assert by_name["delivery-failures"].kind == alerts_pb2.ALERT_KIND_RATE
    assert (by_name["delivery-failures"].threshold, by_name["delivery-failures"].window_s) == ("0.35", 300)
    assert list(by_name["delivery-failures"].filter.types) == ["recipient.error"]
    assert list(by_name["negative-margin"].filter.outcomes) == [event_pb2.OUTCOME_SUCCESS]
    assert by_name["service-down"].kind == alerts_pb2.ALERT_KIND_ABSENCE
    assert by_name["negative-margin"].threshold == "-0.01"
    assert by_name["source-quality"].baseline_windows == 24
    named = alerts.SetAlertRule(
        preset_message("service-down", "svc-down-2"), metadata=auth(admin), timeout=10
    )
    assert named.name == "svc-down-2"
    for name in (*PRESETS, "svc-down-2"):
        alerts.DeleteAlertRule(alerts_pb2.DeleteAlertRuleRequest(name=name), metadata=auth(admin), timeout=10)


def test_the_presets_watch_what_the_simulated_platform_emits() -> None:
    """Each preset's types and groups exist in the simulation's traffic (the catalog a demo runs)."""
    events = list(LeadFlowSimulator(seed=3).events(400))
    types = {e["type"] for e in events}
    entities_of: dict[str, set[str]] = {}
    for e in events:
        entities_of.setdefault(e["type"], set()).add(e["entity_id"].split("_")[0])
    for p in PRESETS.values():
        rule = preset(p.name, "acme", scope=Scope())
        for pattern in (*rule.filter.types, *(rule.base.types if rule.base else ())):
            matched = {
                t for t in types if t == pattern or (pattern.endswith(".*") and t.startswith(pattern[:-1]))
            }
            assert matched, (p.name, pattern)
    assert {"rcp"} == set().union(*(entities_of[t] for t in ("recipient.failed", "recipient.delivered")))
    assert entities_of["enhancement.success"] == {"svc"}
    assert entities_of["source.accepted"] == entities_of["source.submitted"] == {"src"}
    assert {t for t in types if t.startswith("recipient.")} == {
        "recipient.delivered",
        "recipient.failed",
        "recipient.error",
    }
    assert preset("delivery-failures", "acme").group_by is GroupBy.ENTITY
    assert preset("negative-margin", "acme").kind is Kind.LEAD_MARGIN
    # A lead's price sum at flow.completed: costs are negative, sales positive.
    prices = [e["price"] for e in events if e["type"] == "source.accepted" and e["price"]]
    assert prices and all(p.startswith("-") for p in prices)


def test_list_alerts_is_recorded_by_the_read_audit(alerts: Any, keys: dict[str, str], stubs: Stubs) -> None:
    alerts.ListAlerts(
        alerts_pb2.ListAlertsRequest(firing_only=True), metadata=auth(keys["reader"]), timeout=10
    )
    audit = query_pb2.QueryEventsRequest(
        filter=event_pb2.EventFilter(types=["audit.read"]), page_size=1000, descending=True
    )
    deadline = time.monotonic() + 10
    while True:  # the record is written with the next group commit
        page = stubs.query.QueryEvents(audit, metadata=auth(keys["admin"]), timeout=10)
        recorded = [e for e in page.events if e.reason == "ListAlerts"]
        if recorded or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert recorded and recorded[0].details["rpc"] == "ListAlerts" and recorded[0].details["role"] == "reader"
