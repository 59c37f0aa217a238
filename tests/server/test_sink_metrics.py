"""``leadtrail_sink_lag_events{sink}``: the collector reads where each of the scraping account's
sinks is (``Sinks.statuses``), never another account's."""

from __future__ import annotations

from dataclasses import dataclass

from leadtrail.server.sinks import SinkState
from leadtrail.server.web.meters import Meters
from leadtrail.server.web.metrics import AccountMetrics, exposition


@dataclass
class Position:
    last_position: int = 40


class Statuses:
    """Where the sinks of two accounts are, as ``Sinks.statuses`` answers."""

    def __init__(self) -> None:
        self.held = {
            "acme": [
                SinkState("crm", "webhook", 30, 10, 25, "retrying", "HTTP 503", 1),
                SinkState("lake", "files", 40, 0, 31, "running", "", 0),
            ],
            "globex": [SinkState("theirs", "nats", 1, 39, 1, "running", "", 0)],
        }

    def statuses(self, account_id: str) -> list[SinkState]:
        return self.held.get(account_id, [])


def lag_lines(account: str, sinks: Statuses | None) -> list[str]:
    metrics = AccountMetrics(account, Meters(), Position(), None, None, sinks=sinks)
    text = exposition(metrics).decode()
    return [line for line in text.splitlines() if line.startswith("leadtrail_sink_lag_events")]


def test_each_sink_of_the_account_has_its_lag() -> None:
    assert lag_lines("acme", Statuses()) == [
        'leadtrail_sink_lag_events{sink="crm"} 10.0',
        'leadtrail_sink_lag_events{sink="lake"} 0.0',
    ]


def test_another_accounts_sinks_never_appear_and_no_sinks_no_samples() -> None:
    assert lag_lines("globex", Statuses()) == ['leadtrail_sink_lag_events{sink="theirs"} 39.0']
    assert lag_lines("initech", Statuses()) == []
    assert lag_lines("acme", None) == []
