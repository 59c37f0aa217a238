"""The remote commands against a real server: `leadtrail serve` on a free loopback port,
driven by the `leadtrail` command as an operator would."""

from __future__ import annotations

import csv
import io
import json
import re
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from conftest import CLI, Run

server_process = sys.modules["server_process"]  # loaded by conftest.py from tests/server_process.py


LEAD = "lead_cli_0001"
FLOW = "flow_cli"
JOURNEY = [
    {
        "type": "source.submitted", "lead_id": LEAD, "flow_id": FLOW, "entity_id": "src_acme",
        "id": "evt_01HM60PZYF26GJG1W8RZJ6M401", "timestamp": "2024-01-15T14:30:45.100Z",
        "integration": "form_post", "duration_ms": 3,
        "lead": {"email": "jane@example.com", "score": 71, "comments": "call me"},
    },
    {
        "type": "source.accepted", "lead_id": LEAD, "flow_id": FLOW, "entity_id": "src_acme",
        "id": "evt_01HM60PZYF26GJG1W8RZJ6M402", "timestamp": 1705329045150,
        "outcome": "SUCCESS", "price": "-4.50",
        "lead": {"email": "jane@example.com", "email.valid": True, "score": 80, "comments": "call me"},
    },
    {
        "type": "recipient.delivered", "lead_id": LEAD, "flow_id": FLOW, "entity_id": "rcp_buyer",
        "id": "evt_01HM60PZYF26GJG1W8RZJ6M403", "timestamp": "2024-01-15T14:30:45.395Z",
        "outcome": "OUTCOME_SUCCESS", "price": "25.00", "response_code": 200, "duration_ms": 245,
        "details": {"buyer": "Premier Leads"},
        "lead": {"email": "jane@example.com", "email.valid": True, "score": 80},
    },
]  # fmt: skip
OTHER = [
    {
        "type": "recipient.failed", "lead_id": "lead_cli_0002", "flow_id": FLOW, "entity_id": "rcp_buyer",
        "timestamp": "2024-01-15T15:00:00Z", "outcome": 2, "reason": "Daily cap reached (100/100)",
        "lead": {"email": "joe@example.com"},
    },
    {
        "type": "recipient.error", "lead_id": "lead_cli_0002", "flow_id": FLOW, "entity_id": "rcp_other",
        "timestamp": "2024-01-15T15:00:01Z", "outcome": "ERROR", "reason": "HTTP 503 from buyer",
        "lead": {"email": "joe@example.com"},
    },
]  # fmt: skip


def _jsonl(events: list[dict[str, object]]) -> str:
    return "".join(json.dumps(e) + "\n" for e in events)


@pytest.fixture(scope="module")
def stored(server: str, cli: CLI, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The journey appended from a file, the other lead from stdin."""
    events = tmp_path_factory.mktemp("input") / "journey.jsonl"
    events.write_text(_jsonl(JOURNEY))
    run = cli("append", str(events), "--server", server, "--batch", "2")
    assert run.status == 0, run
    assert run.stdout.strip() == "appended 3, duplicates 0, last position 3"
    run = cli("append", "--server", server, input="\n" + _jsonl(OTHER))
    assert run.status == 0, run
    assert run.stdout.strip() == "appended 2, duplicates 0, last position 5"
    return server


def test_appending_the_same_ids_again_reports_duplicates(cli: CLI, stored: str) -> None:
    run = cli("append", "-", "--server", stored, input=_jsonl(JOURNEY))
    assert run.status == 0, run
    assert run.stdout.strip() == "appended 0, duplicates 3, last position 3"


def test_an_event_the_server_refuses_names_its_line(cli: CLI, stored: str) -> None:
    bad = {"type": "Not A Type", "lead_id": "lead_x", "flow_id": FLOW}
    line = cli("append", "--server", stored, input=_jsonl([OTHER[0], bad])).error_line()
    assert "line 2" in line
    assert "type" in line


def test_get_prints_the_event_as_json(cli: CLI, stored: str) -> None:
    run = cli("get", JOURNEY[2]["id"], "--server", stored)  # type: ignore[arg-type]
    assert run.status == 0, run
    event = json.loads(run.stdout)
    assert event["position"] == 3
    assert event["timestamp"] == "2024-01-15T14:30:45.395Z"
    assert event["outcome"] == "SUCCESS"
    assert event["price"] == "25.00"
    assert event["details"] == {"buyer": "Premier Leads"}
    assert event["lead"]["email.valid"] is True
    assert run.stdout.startswith("{\n  ")


def test_get_of_an_unknown_id_is_one_line_and_exit_1(cli: CLI, stored: str) -> None:
    line = cli("get", "evt_01HM60PZYF26GJG1W8RZJ6M4ZZ", "--server", stored).error_line()
    assert "evt_01HM60PZYF26GJG1W8RZJ6M4ZZ" in line
    assert "not found" in line


def test_timeline_table_shows_steps_gaps_and_changed_fields(cli: CLI, stored: str) -> None:
    run = cli("timeline", LEAD, "--server", stored)
    assert run.status == 0, run
    lines = run.stdout.splitlines()
    assert lines[0].startswith(f"lead {LEAD}  flow {FLOW}  3 steps over 295 ms")
    rows = [line for line in lines if re.match(r"^\s+\d+\s+2024-", line)]
    assert [row.split()[:4] for row in rows] == [
        ["1", "2024-01-15T14:30:45.100Z", "0", "source.submitted"],
        ["2", "2024-01-15T14:30:45.150Z", "+50", "source.accepted"],
        ["3", "2024-01-15T14:30:45.395Z", "+245", "recipient.delivered"],
    ]
    text = run.stdout
    assert '+email="jane@example.com"' in text
    assert "+email.valid=true" in text
    assert "~score 71→80" in text
    assert "-comments" in text
    assert "SUCCESS" in rows[2] and "rcp_buyer" in rows[2]


def test_timeline_json_carries_the_changes(cli: CLI, stored: str) -> None:
    run = cli("timeline", LEAD, "--format", "json", "--server", stored)
    assert run.status == 0, run
    timeline = json.loads(run.stdout)
    assert timeline["total_ms"] == 295
    assert [s["since_previous_ms"] for s in timeline["steps"]] == [0, 50, 245]
    changes = {c["field"]: c for c in timeline["steps"][1]["changes"]}
    assert changes["score"] == {"field": "score", "kind": "CHANGED", "before": 71, "after": 80}


def test_timeline_of_an_unknown_lead_is_one_line_and_exit_1(cli: CLI, stored: str) -> None:
    assert "lead_nobody" in cli("timeline", "lead_nobody", "--server", stored).error_line()


def test_query_table_filters_by_type_prefix_and_outcome(cli: CLI, stored: str) -> None:
    run = cli(
        "query", "--type", "recipient.*", "--outcome", "FAILURE", "--outcome", "error", "--server", stored
    )
    assert run.status == 0, run
    header, *rows = run.stdout.splitlines()
    assert header.split()[:4] == ["POSITION", "TIME", "(UTC)", "TYPE"]
    assert [row.split()[2] for row in rows] == ["recipient.failed", "recipient.error"]
    assert "Daily cap reached (100/100)" in rows[0]


def test_query_jsonl_and_json_agree_and_respect_limit_and_order(cli: CLI, stored: str) -> None:
    jsonl = cli("query", "--flow", FLOW, "--desc", "--limit", "4", "--format", "jsonl", "--server", stored)
    assert jsonl.status == 0, jsonl
    lines = [json.loads(line) for line in jsonl.stdout.splitlines()]
    assert [e["position"] for e in lines] == [5, 4, 3, 2]
    assert "lead" not in lines[0]
    as_json = cli("query", "--flow", FLOW, "--desc", "--limit", "4", "--format", "json", "--server", stored)
    assert json.loads(as_json.stdout) == lines


def test_query_by_lead_and_time_range_with_snapshots(cli: CLI, stored: str) -> None:
    run = cli(
        "query", "--lead", LEAD, "--since", "2024-01-15T14:30:45.150Z", "--until", "1705329045395",
        "--include-lead", "--format", "jsonl", "--server", stored,
    )  # fmt: skip
    assert run.status == 0, run
    events = [json.loads(line) for line in run.stdout.splitlines()]
    assert [e["type"] for e in events] == ["source.accepted"]
    assert events[0]["lead"]["score"] == 80


def test_query_matching_nothing_says_so(cli: CLI, stored: str) -> None:
    run = cli("query", "--entity", "nobody", "--server", stored)
    assert (run.status, run.stdout) == (0, "")
    assert "no events match" in run.stderr


def test_export_csv_reaches_into_the_snapshot(cli: CLI, stored: str, tmp_path: Path) -> None:
    target = tmp_path / "out.csv"
    run = cli(
        "export", "--output", str(target), "--format", "csv", "--fields", "id,type,price,lead.email",
        "--lead", LEAD, "--server", stored,
    )  # fmt: skip
    assert run.status == 0, run
    assert run.stdout.strip().startswith("exported 3 events")
    rows = list(csv.reader(io.StringIO(target.read_text())))
    assert rows[0] == ["id", "type", "price", "lead.email"]
    assert [r[1] for r in rows[1:]] == ["source.submitted", "source.accepted", "recipient.delivered"]
    assert rows[3][2:] == ["25.00", "jane@example.com"]
    assert not list(tmp_path.glob("*.partial"))


def test_export_jsonl_to_stdout(cli: CLI, stored: str) -> None:
    run = cli("export", "--output", "-", "--type", "recipient.*", "--server", stored)
    assert run.status == 0, run
    types = [json.loads(line)["type"] for line in run.stdout.splitlines()]
    assert types == ["recipient.delivered", "recipient.failed", "recipient.error"]


def test_tail_from_start_replays_then_stops_cleanly_on_sigterm(cli: CLI, stored: str) -> None:
    tail = cli.start("tail", "--from-start", "--flow", FLOW, "--server", stored)
    try:
        lines = [tail.stdout.next() for _ in range(5)]
        tail.signal(signal.SIGTERM)
        assert tail.wait() == 0
    finally:
        tail.close()
    assert "Traceback" not in tail.stderr.text
    assert [line.split()[0] for line in lines] == ["1", "2", "3", "4", "5"]
    assert "recipient.delivered" in lines[2] and LEAD in lines[2]


def test_tail_follows_events_appended_while_it_runs(cli: CLI, stored: str) -> None:
    tail = cli.start("tail", "--lead", "lead_live", "--format", "jsonl", "--server", stored)
    try:
        # Subscribed from the end: only what is appended once it has caught up is shown.
        tail.stderr.wait_for("caught up")
        live = {"type": "feedback.received", "lead_id": "lead_live", "flow_id": FLOW, "outcome": "SUCCESS"}
        assert cli("append", "--server", stored, input=_jsonl([live])).status == 0
        event = json.loads(tail.stdout.next())
        tail.signal(signal.SIGTERM)
        assert tail.wait() == 0
    finally:
        tail.close()
    assert (event["type"], event["lead_id"]) == ("feedback.received", "lead_live")


PROMPT_EXIT_S = 2.0
"""How long a tail may take to end after SIGTERM or SIGINT."""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_tail_since_replays_what_was_recorded_from_then_says_it_caught_up_and_ends_on_a_signal(
    cli: CLI, stored: str, sig: signal.Signals
) -> None:
    tail = cli.start("tail", "--since", "1h", "--flow", FLOW, "--server", stored)
    try:
        replayed = [tail.stdout.next() for _ in range(5)]
        assert "caught up at position" in tail.stderr.next()
        tail.signal(sig)
        assert tail.wait(timeout=PROMPT_EXIT_S) == 0
    finally:
        tail.close()
    assert [line.split()[0] for line in replayed] == ["1", "2", "3", "4", "5"]
    assert "Traceback" not in tail.stderr.text


def test_tail_since_a_later_time_replays_nothing(cli: CLI, stored: str) -> None:
    tail = cli.start("tail", "--since", "2999-01-01T00:00:00Z", "--format", "jsonl", "--server", stored)
    try:
        tail.stderr.wait_for("caught up")
        tail.signal(signal.SIGTERM)
        assert tail.wait(timeout=PROMPT_EXIT_S) == 0
    finally:
        tail.close()
    assert tail.stdout.text == ""


def test_stats_of_the_server(cli: CLI, stored: str) -> None:
    run = cli("stats", "--server", stored, "--json")
    assert run.status == 0, run
    stats = json.loads(run.stdout)
    assert stats["event_count"] >= 5
    assert stats["writable"] is True


def test_stats_of_the_server_is_a_table_with_the_events_of_each_account(cli: CLI, stored: str) -> None:
    run = cli("stats", "--server", stored)
    assert run.status == 0, run
    rows = {line.split()[0]: line.split()[1:] for line in run.stdout.splitlines() if line.strip()}
    assert rows["writable"] == ["yes"]
    assert rows["ACCOUNT"] == ["EVENTS"]
    assert int(rows["default"][0].replace(",", "")) >= 5
    assert int(rows["events"][0].replace(",", "")) >= 5


def test_retention_set_and_apply(cli: CLI, stored: str) -> None:
    run = cli(
        "retention", "set", "--account", "other", "--max-age-days", "30", "--legal-hold", "--server", stored
    )
    assert run.status == 0, run
    assert run.stdout.strip() == "retention for account other: keep 30 days, legal hold (nothing is removed)"
    run = cli("retention", "apply", "--server", stored)
    assert run.status == 0, run
    assert run.stdout.startswith("removed 0 events")


def test_retention_set_with_ages_per_field_class(cli: CLI, stored: str) -> None:
    run = cli(
        "retention", "set", "--account", "tiers", "--max-age-days", "0",
        "--pii-max-age-days", "30", "--secret-max-age-days", "7", "--server", stored,
    )  # fmt: skip
    assert run.status == 0, run
    assert (
        run.stdout.strip()
        == "retention for account tiers: keep forever, pii values 30 days, secret values 7 days"
    )


def test_fields_set_and_show(cli: CLI, stored: str) -> None:
    run = cli(
        "fields",
        "set",
        "--pii",
        "customer_ref",
        "--pii",
        "contact.*",
        "--plain",
        "first_name",
        "--server",
        stored,
    )
    assert run.status == 0, run
    expected = "secret: (built-in rules only)\npii: customer_ref, contact.*\nplain: first_name"
    assert run.stdout.strip() == expected
    assert cli("fields", "show", "--server", stored).stdout.strip() == expected
    line = cli("fields", "set", "--secret", "a b", "--server", stored).error_line()
    assert "secret[0] 'a b'" in line
    assert cli("fields", "set", "--server", stored).status == 0  # back to the built-in rules


def test_erase_a_lead_over_the_server(cli: CLI, stored: str) -> None:
    lead = {"email": "erin.erase@example.com", "first_name": "Erin", "score": 12}
    event = {"type": "source.submitted", "lead_id": "lead_cli_erase", "flow_id": FLOW, "lead": lead}
    assert cli("append", "-", "--server", stored, input=_jsonl([event, event])).status == 0
    run = cli("erase", "--lead", "lead_cli_erase", "--reason", "DSR-9", "--server", stored)
    assert run.status == 0, run
    assert run.stdout.startswith("erased lead lead_cli_erase: 2 events changed, ")
    run = cli("timeline", "lead_cli_erase", "--format", "json", "--server", stored)
    assert "erin.erase@example.com" not in run.stdout and "Erin" not in run.stdout
    assert '"[erased]"' in run.stdout
    line = cli("erase", "--lead", "lead_cli_nobody", "--server", stored).error_line()
    assert "NOT_FOUND" in line or "no events" in line


def test_demo_appends_simulated_flows_and_shows_a_timeline(cli: CLI, server: str) -> None:
    run: Run = cli("demo", "--leads", "20", "--seed", "5", "--server", server)
    assert run.status == 0, run
    summary = run.stdout.splitlines()[0]
    appended = int(re.search(r"appended (\d+), duplicates 0", summary).group(1))  # type: ignore[union-attr]
    assert 100 <= appended <= 160  # 5 to 8 events a lead
    assert "journeys" in run.stdout and "money" in run.stdout
    assert "sample lead:" in run.stdout
    assert re.search(r"^\s+1\s+2024-\S+\s+0\s+source\.submitted", run.stdout, re.M)
    again = cli("demo", "--leads", "20", "--seed", "5", "--server", server)
    assert f"appended 0, duplicates {appended}" in again.stdout.splitlines()[0]


def test_demo_with_a_writer_key_says_what_it_stored_and_why_it_shows_no_timeline(
    cli: CLI, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    writer = server_process.create_key(data, "acme", "writer")
    server = server_process.ServerProcess(data).start()
    try:
        run = cli("demo", "--leads", "5", "--server", server.address, "--api-key", writer)
    finally:
        assert server.stop() == 0
    assert run.status == 0, run
    assert re.match(r"demo: 5 leads, \d+ events to .*: appended \d+, duplicates 0", run.stdout)
    assert "journeys" in run.stdout
    assert "not shown: this API key's role may append but not read" in run.stdout
    assert "PERMISSION_DENIED" not in run.stdout + run.stderr


def test_every_output_spells_outcomes_by_their_short_name(cli: CLI, stored: str, tmp_path: Path) -> None:
    """SUCCESS, never OUTCOME_SUCCESS: in get, query, tail and exports to a file alike."""
    outputs = {
        "get": cli("get", JOURNEY[2]["id"], "--server", stored).stdout,  # type: ignore[arg-type]
        "query": cli("query", "--lead", LEAD, "--format", "jsonl", "--server", stored).stdout,
        "table": cli("query", "--lead", LEAD, "--server", stored).stdout,
    }
    tail = cli.start("tail", "--from-start", "--lead", LEAD, "--format", "jsonl", "--server", stored)
    try:
        outputs["tail"] = "".join(tail.stdout.next() for _ in range(3))
        tail.signal(signal.SIGTERM)
        assert tail.wait() == 0
    finally:
        tail.close()
    outputs["aggregate"] = cli("aggregate", "--by", "outcome", "--lead", LEAD, "--server", stored).stdout
    for form in ("jsonl", "csv"):
        target = tmp_path / f"out.{form}"
        run = cli("export", "-o", str(target), "--format", form, "--lead", LEAD, "--server", stored)
        assert run.status == 0, run
        outputs[f"export {form}"] = target.read_text()
    for name, text in outputs.items():
        assert "SUCCESS" in text, name
        assert "OUTCOME_" not in text, name


def test_a_long_export_to_a_file_shows_its_count_on_a_terminal_only(
    cli: CLI, stored: str, tmp_path: Path
) -> None:
    target = tmp_path / "all.jsonl"
    on_terminal = cli.on_terminal("export", "-o", str(target), "--server", stored)
    assert on_terminal.status == 0, on_terminal
    assert re.search(r"exported \d+ events, \d+", on_terminal.stderr)
    in_a_pipe = cli("export", "-o", str(target), "--server", stored)
    assert (in_a_pipe.status, in_a_pipe.stderr) == (0, "")
    assert in_a_pipe.stdout == on_terminal.stdout


def test_append_warns_on_stderr_once_per_id_stored_with_other_content(cli: CLI, stored: str) -> None:
    changed = [
        {**JOURNEY[0], "type": "source.rejected"},  # same id, another type
        JOURNEY[1],  # the very same event: a plain duplicate
        {**JOURNEY[2], "lead_id": "lead_someone_else"},  # same id, another lead
    ]
    run = cli("append", "--server", stored, input=_jsonl(changed))
    assert run.status == 0, run
    assert run.stdout.strip() == "appended 0, duplicates 3, last position 3"
    warned = run.stderr.splitlines()
    assert len(warned) == 2, run.stderr
    for line, event in zip(warned, (JOURNEY[0], JOURNEY[2]), strict=True):
        assert line.startswith(f"leadtrail: warning: {event['id']} is already stored with another type")
    assert "AppendConflictWarning" not in run.stderr  # the CLI's words, not the SDK's warning


def test_a_timeline_longer_than_a_page_is_printed_whole_page_by_page(cli: CLI, stored: str) -> None:
    lead = "lead_cli_long"
    events = [
        {"type": "enhancement.success", "lead_id": lead, "flow_id": "flow_long",
         "timestamp": 1705329045000 + i * 1000, "lead": {"step": i}}
        for i in range(2500)
    ]  # fmt: skip
    assert cli("append", "--server", stored, input=_jsonl(events)).status == 0
    run = cli("timeline", lead, "--server", stored)
    assert run.status == 0, run
    lines = run.stdout.splitlines()
    assert lines[0].startswith(f"lead {lead}  flow flow_long  more steps than a page over 41 min 39 s")
    rows = [line.split() for line in lines if re.match(r"^\s*\d+\s+2024-", line)]
    assert [int(row[0]) for row in rows] == list(range(1, 2501))
    assert {row[2] for row in rows[1:]} == {"+1,000"}  # the gap is known across page boundaries
    assert lines[-1] == "2,500 steps"
    as_json = json.loads(cli("timeline", lead, "--format", "json", "--server", stored).stdout)
    assert as_json["total_ms"] == 2_499_000 and as_json["audit"] == []
    assert [s["since_previous_ms"] for s in as_json["steps"]] == [0] + [1000] * 2499
    assert [s["changes"] for s in as_json["steps"]][1000] == [
        {"field": "step", "kind": "CHANGED", "before": 999, "after": 1000}
    ]


def test_an_erasure_is_shown_apart_from_the_journey(cli: CLI, stored: str) -> None:
    lead = {"email": "apart@example.com"}
    event = {"type": "source.submitted", "lead_id": "lead_cli_apart", "flow_id": FLOW, "lead": lead}
    assert cli("append", "--server", stored, input=_jsonl([event])).status == 0
    assert cli("erase", "--lead", "lead_cli_apart", "--reason", "DSR-10", "--server", stored).status == 0
    run = cli("timeline", "lead_cli_apart", "--server", stored)
    assert run.status == 0, run
    assert run.stdout.splitlines()[0].startswith(f"lead lead_cli_apart  flow {FLOW}  1 steps over 0 ms")
    journey, _, apart = run.stdout.partition("recorded by the store about this lead")
    assert "audit.erased" not in journey
    assert "audit.erased" in apart and "DSR-10" in apart
    as_json = json.loads(cli("timeline", "lead_cli_apart", "--format", "json", "--server", stored).stdout)
    assert [s["event"]["type"] for s in as_json["steps"]] == ["source.submitted"]
    assert [e["type"] for e in as_json["audit"]] == ["audit.erased"]


def test_aggregate_counts_and_sums_per_group_as_a_table_or_json(cli: CLI, stored: str) -> None:
    run = cli("aggregate", "--by", "type,outcome", "--lead", LEAD, "--server", stored)
    assert run.status == 0, run
    header, *rows = run.stdout.splitlines()
    assert header.split() == ["TYPE", "OUTCOME", "EVENTS", "PRICE", "SUM"]
    assert sorted(row.split() for row in rows) == [
        ["recipient.delivered", "SUCCESS", "1", "25.00"],
        ["source.accepted", "SUCCESS", "1", "-4.50"],
        ["source.submitted", "UNSPECIFIED", "1", "0"],
    ]
    by_day = cli("aggregate", "--by", "day", "--lead", LEAD, "--format", "json", "--server", stored)
    assert json.loads(by_day.stdout) == [{"keys": ["2024-01-15"], "count": 3, "price_sum": "20.50"}]
    usage = cli("aggregate", "--by", "colour", "--server", stored)
    assert usage.status == 2 and usage.stderr.startswith("usage: leadtrail aggregate ")


def test_verify_with_a_server_asks_the_server(cli: CLI, stored: str) -> None:
    run = cli("verify", "--server", stored)
    assert run.status == 0, run
    assert run.stdout.strip().endswith(" events checked, 0 problems")
