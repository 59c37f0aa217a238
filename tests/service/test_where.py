"""Field rules (``EventFilter.where``) through a real server: QueryEvents (paged), Export,
Aggregate and Subscribe (replay and live) answer only the events every rule holds for; an
alert rule with rules fires only for matching events; a sink hands on only what they match; an
export job keeps its rules over a restart; a malformed rule is INVALID_ARGUMENT naming
``where[i]`` and stores nothing; a role that sees personal fields masked may not filter on
them; the CLI's ``--where``."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import TypeVar

import grpc
import orjson
import pytest
from leadtrail.client import (
    AlertKind,
    CaughtUp,
    Client,
    Event,
    EventFilter,
    ExportJob,
    FieldRule,
    FilesTarget,
    InvalidArgumentError,
    PermissionDeniedError,
    RuleOp,
    Sink,
)
from leadtrail.v1 import event_pb2, exports_pb2, exports_pb2_grpc, query_pb2, query_pb2_grpc

server_process = sys.modules["server_process"]  # loaded by tests/conftest.py
CLI = [sys.executable, "-m", "leadtrail.server.cli"]
WAIT_S = 30.0
STATES = ("TX", "CA", "NY")
T = TypeVar("T")


def until(what: str, probe: Callable[[], T | None]) -> T:
    deadline = time.monotonic() + WAIT_S
    while True:
        found = probe()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {WAIT_S} s: {what}")
        time.sleep(0.05)


def new_key(data: Path, role: str) -> str:
    done = subprocess.run(
        [*CLI, "keys", "create", "--data", str(data), "--account", "acme", "--role", role],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def lead_events(tag: str, count: int, flow_id: str = "flow-rules") -> list[Event]:
    """``count`` leads of one event each: state TX, CA, NY in turn, price ``i - 10``."""
    return [
        Event(
            "source.submitted" if i % 2 else "recipient.delivered",
            lead_id=f"{tag}-{i}",
            flow_id=flow_id,
            price=Decimal(i - 10),
            lead={"state": STATES[i % 3], "score": i, "email": f"p{i}@example.com"},
        )
        for i in range(count)
    ]


class Served:
    def __init__(self, data: Path) -> None:
        data.mkdir(parents=True)
        self.data = data
        self.keys = {role: new_key(data, role) for role in ("admin", "reader", "analyst")}
        self.process = server_process.ServerProcess(data, "--http", "off").start()

    def client(self, role: str = "admin") -> Client:
        return Client(self.process.address, api_key=self.keys[role], timeout=30)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    served = Served(tmp_path_factory.mktemp("where") / "data")
    with served.client() as client:
        client.append(lead_events("lead", 30))
    yield served
    assert served.process.stop() == 0, "".join(served.process.stderr_lines)


@pytest.fixture(scope="module")
def admin(served: Served) -> Iterator[Client]:
    with served.client() as client:
        yield client


def expected(state: str | None = None, min_price: int | None = None) -> list[str]:
    return [
        f"lead-{i}"
        for i in range(30)
        if (state is None or STATES[i % 3] == state) and (min_price is None or i - 10 >= min_price)
    ]


def test_query_pages_through_the_events_every_rule_holds_for(admin: Client) -> None:
    found = admin.query(flow_id="flow-rules", where="lead.state==TX", page_size=3)
    assert [e.lead_id for e in found] == expected("TX")
    both = admin.query(flow_id="flow-rules", where=["lead.state in TX,CA", FieldRule("price", ">=", 5)])
    assert sorted(e.lead_id for e in both) == sorted(expected("TX", 5) + expected("CA", 5))
    numbers = admin.query(flow_id="flow-rules", where="lead.score>=27", include_lead=True, page_size=1)
    assert [(e.lead_id, e.lead["score"]) for e in numbers] == [
        ("lead-27", 27),
        ("lead-28", 28),
        ("lead-29", 29),
    ]


def test_a_page_token_belongs_to_its_rules(admin: Client) -> None:
    _, token = admin.query_page(flow_id="flow-rules", where="lead.state==TX", page_size=2)
    assert token
    with pytest.raises(InvalidArgumentError, match="another filter"):
        admin.query_page(flow_id="flow-rules", where="lead.state==CA", page_size=2, page_token=token)


def test_export_and_aggregate_take_the_rules(admin: Client) -> None:
    lines = b"".join(admin.export(flow_id="flow-rules", where="lead.state==NY")).splitlines()
    assert [orjson.loads(line)["lead_id"] for line in lines] == expected("NY")
    csv = b"".join(admin.export(format="csv", fields=["lead_id"], where=["lead.state==NY", "price<0"]))
    assert csv.decode().split()[1:] == expected("NY")[:3]  # prices -10..-1: leads 2, 5, 8
    rows = admin.aggregate("type", flow_id="flow-rules", where="lead.state==TX")
    counts = {row.keys[0]: (row.count, row.price_sum) for row in rows}
    assert counts == {"recipient.delivered": (5, Decimal(10)), "source.submitted": (5, Decimal(25))}


def test_a_subscription_replays_and_follows_only_what_the_rules_match(admin: Client) -> None:
    where = ["lead.state==CA", "lead.score<6"]
    with admin.subscribe(from_start=True, include_checkpoints=True, where=where) as subscription:
        replayed = []
        for item in subscription:
            if isinstance(item, CaughtUp):
                break
            if isinstance(item, Event):
                replayed.append(item.lead_id)
        assert replayed == ["lead-1", "lead-4"]
        live = lead_events("live", 3, "flow-more")  # TX, CA, NY: only the CA one (score 1) matches
        admin.append(live)
        first = next(item for item in subscription if isinstance(item, Event))
        assert first.lead_id == "live-1"


def test_an_alert_rule_with_rules_fires_only_for_matching_events(admin: Client) -> None:
    admin.set_alert_rule(
        "texas-leads",
        kind=AlertKind.MATCH,
        filter=EventFilter(types="source.submitted", where="lead.state==TX"),
    )
    events = lead_events("alerting", 4, "flow-more")  # source.submitted: 1 (CA) and 3 (TX)
    admin.append(events)

    def fired() -> list[str]:
        return [e.lead_id for e in admin.query(flow_id="alerts", types="alert.fired")]

    until("the TX lead fired", lambda: "alerting-3" in fired())
    # Events are evaluated in position order: the CA one came before, so it had its chance.
    assert "alerting-1" not in fired()
    (rule,) = [r for r in admin.list_alert_rules() if r.name == "texas-leads"]
    assert rule.filter.where == (FieldRule("lead.state", RuleOp.EQ, ("TX",)),)


MALFORMED = [
    (event_pb2.FieldRule(field="state", op=event_pb2.RULE_OP_EQ, values=["TX"]), "is not lead.<name>"),
    (event_pb2.FieldRule(field="lead.state", values=["TX"]), "RULE_OP_UNSPECIFIED"),
    (event_pb2.FieldRule(field="lead.state", op=event_pb2.RULE_OP_EQ), "takes exactly one value, 0 given"),
    (event_pb2.FieldRule(field="lead.state", op=event_pb2.RULE_OP_EXISTS, values=["x"]), "takes no value"),
    (
        event_pb2.FieldRule(field="lead.state", op=event_pb2.RULE_OP_IN, values=["x"] * 101),
        "IN takes 1 to 100",
    ),
    (event_pb2.FieldRule(field="price", op=event_pb2.RULE_OP_GE, values=["ten"]), "is not a number"),
    (event_pb2.FieldRule(field="lead.note", op=event_pb2.RULE_OP_EQ, values=["x" * 1025]), "limit of 1024"),
]


@pytest.mark.parametrize(("rule", "problem"), MALFORMED)
def test_a_malformed_rule_is_invalid_argument_naming_it_and_nothing_is_set(
    served: Served, admin: Client, rule: event_pb2.FieldRule, problem: str
) -> None:
    good = event_pb2.FieldRule(field="lead.state", op=event_pb2.RULE_OP_EXISTS)
    stub = query_pb2_grpc.QueryServiceStub(admin.channel)
    request = query_pb2.QueryEventsRequest(filter=event_pb2.EventFilter(where=[good, rule]))
    with pytest.raises(grpc.RpcError) as raised:
        stub.QueryEvents(request, metadata=admin.metadata, timeout=30)
    assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "filter.where[1]" in raised.value.details() and problem in raised.value.details()
    # The same rule in an export job: refused, and no job is stored.
    exports = exports_pb2_grpc.ExportServiceStub(admin.channel)
    job = exports_pb2.ExportJob(
        name="refused", format=query_pb2.EXPORT_FORMAT_JSONL, every_s=3600, keep_days=1
    )
    job.filter.where.append(rule)
    with pytest.raises(grpc.RpcError) as refused:
        exports.SetExportJob(job, metadata=admin.metadata, timeout=30)
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "where[0]" in (refused.value.details() or "")
    assert "refused" not in [j.name for j in admin.list_export_jobs()]


@pytest.mark.parametrize("role", ["reader", "analyst"])
def test_a_masked_role_may_not_filter_on_a_personal_field(served: Served, role: str) -> None:
    with served.client(role) as client, pytest.raises(PermissionDeniedError, match=r"where\[1\].*personal"):
        list(client.query(where=["lead.state==TX", "lead.email==p3@example.com"]))


@pytest.mark.parametrize("role", ["reader", "analyst"])
def test_a_masked_role_filters_on_plain_fields_and_sees_personal_ones_masked(
    served: Served, role: str
) -> None:
    with served.client(role) as client:
        found = list(client.query(flow_id="flow-rules", where="lead.score==3", include_lead=True))
    assert [(e.lead_id, e.lead["email"]) for e in found] == [("lead-3", "p***@example.com")]


def test_the_cli_takes_where_and_refuses_a_malformed_rule_as_a_usage_error(served: Served) -> None:
    base = ["--server", served.process.address, "--api-key", served.keys["admin"]]
    rules = ["--where", "lead.state==TX", "--where", "price >= 5"]
    done = subprocess.run(
        [*CLI, "query", *base, "--flow", "flow-rules", *rules, "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert [e["lead_id"] for e in orjson.loads(done.stdout)] == expected("TX", 5)
    bad = subprocess.run(
        [*CLI, "query", *base, "--where", "lead.state=TX"], capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 2
    assert "--where: rule 'lead.state=TX'" in bad.stderr and "use ==" in bad.stderr


def test_an_export_job_keeps_its_rules_over_a_restart(tmp_path: Path) -> None:
    served = Served(tmp_path / "data")
    try:
        with served.client() as client:
            client.append(lead_events("lead", 9))
            client.set_export_job(
                ExportJob("texas", every_s=3600, filter=EventFilter(where=("lead.state==TX", "price>=-7")))
            )
    finally:
        assert served.process.stop() == 0
    served.process = server_process.ServerProcess(served.data, "--http", "off").start()
    try:
        with served.client() as client:
            (job,) = client.list_export_jobs()
            assert job.filter.where == (FieldRule("lead.state", "==", "TX"), FieldRule("price", ">=", "-7"))
            done = client.run_export_job("texas")
            lines = client.download_export_file("texas", done.name).splitlines()
            assert [orjson.loads(line)["lead_id"] for line in lines] == ["lead-3", "lead-6"]
    finally:
        assert served.process.stop() == 0


def test_a_sink_hands_on_only_what_its_rules_match(served: Served, admin: Client) -> None:
    admin.set_sink(
        Sink(
            "texas-files",
            FilesTarget("texas", rotate_events=5),
            filter=EventFilter(where=("lead.state==TX",)),
            start="start",
        )
    )
    directory = served.data / "sink-files" / "acme" / "texas"
    wanted = expected("TX")

    def written() -> list[str] | None:
        files = sorted(directory.glob("events-*.jsonl")) if directory.is_dir() else []
        leads = [orjson.loads(line)["lead_id"] for f in files for line in f.read_bytes().splitlines()]
        return leads if len(leads) >= len(wanted) else None

    assert until("the sink's files hold every TX lead", written) == wanted
    [sink] = [s for s in admin.list_sinks() if s.name == "texas-files"]
    assert sink.filter.where == (FieldRule("lead.state", RuleOp.EQ, ("TX",)),)  # kept as set
    admin.delete_sink("texas-files")
