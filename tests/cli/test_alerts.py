"""``leadtrail alerts set|list|rm|show`` against a spawned server with API keys, as an operator
runs them: the presets, a custom rule with a webhook whose secret never shows, refusals as one
line (status 1) and usage errors (status 2)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from leadtrail.client import Alert, AlertKind
from leadtrail.server.alerts.rules import PRESETS
from leadtrail.server.cli import ALERT_PRESETS
from leadtrail.server.cli_alerts import alert_json

server_process = sys.modules["server_process"]
SECRET = "hmac-key-never-printed"


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    data: Path = tmp_path_factory.mktemp("alerts-cli") / "data"
    admin = server_process.create_key(data, "acme", "admin")
    reader = server_process.create_key(data, "acme", "reader")
    process = server_process.ServerProcess(data, "--http", "off").start()
    yield {"address": process.address, "admin": admin, "reader": reader, "data": data}
    assert process.stop() == 0


def remote(keyed: dict[str, Any], role: str = "admin") -> list[str]:
    return ["--server", keyed["address"], "--api-key", keyed[role]]


def test_the_help_names_the_commands_and_flags_of_the_api(cli: Any) -> None:
    done = cli("alerts", "--help")
    assert done.status == 0
    for action in ("set", "list", "rm", "show"):
        assert action in done.stdout
    done = cli("alerts", "set", "--help")
    for flag in (
        "--kind",
        "--type",
        "--base",
        "--threshold",
        "--window",
        "--min-events",
        "--baseline-windows",
        "--group-by",
        "--webhook",
        "--webhook-secret",
        "--preset",
        "--server",
        "--api-key",
        "--tls-ca",
    ):
        assert flag in done.stdout, flag
    assert set(ALERT_PRESETS) == set(PRESETS)


def test_the_presets_are_set_and_listed(cli: Any, keyed: dict[str, Any]) -> None:
    for name in ALERT_PRESETS:
        done = cli("alerts", "set", "--preset", name, *remote(keyed))
        assert done.status == 0, done.stderr
        assert done.stdout.startswith(f"alert rule {name} set: ")
    named = cli("alerts", "set", "--preset", "service-down", "enrichment-down", *remote(keyed))
    assert (
        named.status == 0
        and "alert rule enrichment-down set: absence: no enhancement.success" in named.stdout
    )
    listed = cli("alerts", "list", "--format", "json", *remote(keyed))
    assert listed.status == 0, listed.stderr
    rules = {r["name"]: r for r in json.loads(listed.stdout)}
    assert set(ALERT_PRESETS) | {"enrichment-down"} <= set(rules)
    failures = rules["delivery-failures"]
    assert (failures["kind"], failures["threshold"], failures["window_s"], failures["min_events"]) == (
        "rate",
        "0.35",
        300,
        30,
    )
    assert failures["filter"]["types"] == ["recipient.error"]
    assert failures["base"]["types"] == ["recipient.*"] and failures["group_by"] == "entity"
    assert (
        rules["negative-margin"]["threshold"] == "-0.01" and rules["negative-margin"]["kind"] == "lead_margin"
    )
    assert rules["source-quality"]["baseline_windows"] == 24
    table = cli("alerts", "list", *remote(keyed))
    assert table.status == 0 and table.stdout.splitlines()[0].split() == ["NAME", "RULE", "SET", "AT"]
    assert "enrichment-down" in table.stdout
    assert cli("alerts", "rm", "enrichment-down", *remote(keyed)).status == 0


def test_a_custom_rule_with_a_webhook_never_shows_its_secret(cli: Any, keyed: dict[str, Any]) -> None:
    done = cli(
        "alerts",
        "set",
        "buyer-errors",
        "--kind",
        "rate",
        "--type",
        "recipient.error",
        "--base",
        "recipient.*",
        "--threshold",
        "0.3",
        "--window",
        "600",
        "--min-events",
        "10",
        "--group-by",
        "entity",
        "--flow",
        "flow-solar",
        "--webhook",
        "https://hooks.example.com/leadtrail",
        "--webhook-secret",
        SECRET,
        "--description",
        "a buyer erring",
        *remote(keyed),
    )
    assert done.status == 0, done.stderr
    assert "webhook https://hooks.example.com/leadtrail (signed)" in done.stdout
    shown = [done]
    shown.append(cli("alerts", "list", *remote(keyed)))
    shown.append(listed := cli("alerts", "list", "--format", "json", *remote(keyed)))
    for run in shown:
        assert SECRET not in run.stdout + run.stderr
    [rule] = [r for r in json.loads(listed.stdout) if r["name"] == "buyer-errors"]
    assert rule["webhook_secret_set"] is True and "webhook_secret" not in rule
    assert rule["filter"]["flow_id"] == "flow-solar" and rule["base"]["flow_id"] == "flow-solar"
    assert rule["description"] == "a buyer erring"
    # Re-set with another threshold and no secret: the stored secret is kept.
    again = cli(
        "alerts",
        "set",
        "buyer-errors",
        "--kind",
        "rate",
        "--type",
        "recipient.error",
        "--base",
        "recipient.*",
        "--threshold",
        "0.4",
        "--window",
        "600",
        "--webhook",
        "https://hooks.example.com/leadtrail",
        *remote(keyed),
    )
    assert again.status == 0 and "(signed)" in again.stdout
    stored = json.loads((keyed["data"] / "alerts" / "rules.json").read_text())["rules"]
    assert [r["webhook_secret"] for r in stored if r["name"] == "buyer-errors"] == [SECRET]
    assert cli("alerts", "rm", "buyer-errors", *remote(keyed)).status == 0


def test_refusals_are_one_line_and_nothing_is_stored(cli: Any, keyed: dict[str, Any]) -> None:
    before = cli("alerts", "list", "--format", "json", *remote(keyed)).stdout
    no_base = cli(
        "alerts", "set", "x", "--kind", "rate", "--type", "recipient.failed", "--threshold", "0.2",
        "--window", "60", *remote(keyed),
    )  # fmt: skip
    assert (
        no_base.error_line()
        == "leadtrail: INVALID_ARGUMENT: base: required for ALERT_KIND_RATE: the events the share is taken of"
    )
    bad_url = cli(
        "alerts", "set", "x", "--kind", "count", "--threshold", "3", "--window", "60", "--webhook", "ftp://h/x",
        *remote(keyed),
    )  # fmt: skip
    assert bad_url.error_line().startswith(
        "leadtrail: INVALID_ARGUMENT: webhook_url: 'ftp://h/x' is not an http"
    )
    no_window = cli(
        "alerts", "set", "x", "--kind", "absence", "--type", "enhancement.success", *remote(keyed)
    )
    assert no_window.error_line().startswith(
        "leadtrail: INVALID_ARGUMENT: window_s: required for ALERT_KIND_ABSENCE"
    )
    bad_name = cli("alerts", "set", "Bad_Name", "--kind", "match", *remote(keyed))
    assert bad_name.error_line().startswith("leadtrail: INVALID_ARGUMENT: name: 'Bad_Name' must match")
    missing = cli("alerts", "rm", "no-such-rule", *remote(keyed))
    assert missing.error_line() == "leadtrail: NOT_FOUND: alert rule 'no-such-rule' not found"
    as_reader = cli("alerts", "set", "--preset", "service-down", *remote(keyed, "reader"))
    assert as_reader.error_line().startswith("leadtrail: PERMISSION_DENIED: ")
    assert cli("alerts", "list", "--format", "json", *remote(keyed)).stdout == before


@pytest.mark.parametrize(
    "args",
    [
        ("--kind", "count"),  # no NAME
        ("x",),  # no --kind
        ("x", "--kind", "often"),
        ("x", "--kind", "count", "--threshold", "lots"),
        ("x", "--kind", "count", "--window", "-1"),
        ("x", "--kind", "count", "--window", str(2**32)),
        ("x", "--kind", "rate", "--group-by", "type"),
        ("--preset", "service-down", "--kind", "count"),
        ("--preset", "service-down", "--type", "x.y"),
        ("--preset", "no-such-preset"),
    ],
)
def test_usage_errors_exit_2(cli: Any, keyed: dict[str, Any], args: tuple[str, ...]) -> None:
    done = cli("alerts", "set", *args, *remote(keyed))
    assert done.status == 2, done
    assert "Traceback" not in done.stderr and "usage: leadtrail alerts set" in done.stderr


def test_show_lists_the_alerts_for_readers(cli: Any, keyed: dict[str, Any]) -> None:
    empty = cli("alerts", "show", "--format", "json", *remote(keyed, "reader"))
    assert empty.status == 0, empty.stderr
    assert json.loads(empty.stdout) == []
    table = cli("alerts", "show", "--firing", *remote(keyed, "reader"))
    assert table.status == 0 and table.stderr.strip() == "no alerts firing"
    assert cli("alerts", "show", "--limit", "1001", *remote(keyed, "reader")).status == 2
    assert cli("alerts", "list", *remote(keyed, "reader")).status == 1


def test_an_alert_as_json_has_the_api_names() -> None:
    fired = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
    alert = Alert(
        "fails", "rcp_1", True, fired, None, Decimal("0.35"), "evt_1", AlertKind.RATE, "", "why", "rule:fails"
    )
    assert alert_json(alert) == {
        "rule": "fails",
        "kind": "rate",
        "group": "rcp_1",
        "firing": True,
        "fired_at": "2026-12-03T09:00:00.000Z",
        "resolved_at": "",
        "value": "0.35",
        "event_id": "evt_1",
        "resolved_event_id": "",
        "lead_id": "rule:fails",
        "reason": "why",
    }


def test_a_preset_set_from_the_command_line_is_the_servers_preset() -> None:
    """The CLI builds a preset in the SDK's terms: field for field what the server's
    ``preset_message`` is, outcomes included (negative-margin counts sold leads only)."""
    import argparse

    from leadtrail.client._convert import alert_rule_to_proto
    from leadtrail.server.alerts.rules import preset_message
    from leadtrail.server.cli_alerts import _preset_rule

    for name, p in PRESETS.items():
        args = argparse.Namespace(name="", webhook="", webhook_secret="", description="")
        assert alert_rule_to_proto(_preset_rule(p, args)) == preset_message(name), name


def test_the_secret_variable_goes_with_a_webhook_only(
    cli: Any, keyed: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """LEADTRAIL_WEBHOOK_SECRET set in the shell signs the rules given a --webhook, and does not
    turn a rule without one into a refusal; --webhook-secret alone is a usage error."""
    monkeypatch.setenv("LEADTRAIL_WEBHOOK_SECRET", SECRET)
    plain = cli("alerts", "set", "env-plain", "--kind", "match", "--type", "x.y", *remote(keyed))
    assert plain.status == 0, plain.stderr
    hooked = cli(
        "alerts", "set", "env-hooked", "--kind", "match", "--type", "x.y",
        "--webhook", "http://127.0.0.1:9/hook", *remote(keyed),
    )  # fmt: skip
    assert hooked.status == 0, hooked.stderr
    rules = {
        r["name"]: r for r in json.loads(cli("alerts", "list", "--format", "json", *remote(keyed)).stdout)
    }
    assert not rules["env-plain"]["webhook_secret_set"] and rules["env-hooked"]["webhook_secret_set"]
    alone = cli("alerts", "set", "env-alone", "--kind", "match", "--type", "x.y", "--webhook-secret", "s")
    assert alone.status == 2 and "--webhook-secret needs --webhook" in alone.stderr
    for name in ("env-plain", "env-hooked"):
        assert cli("alerts", "rm", name, *remote(keyed)).status == 0
