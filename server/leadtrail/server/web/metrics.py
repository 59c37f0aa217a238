"""``GET /metrics``: one account's view of the server in the Prometheus text format.

The families are made at scrape time from the meters (``meters``), the alert evaluator
and the log, by a ``prometheus_client`` collector: nothing is kept twice and a scrape
sees only its caller's account (another account's types and rule names never appear).

- ``leadtrail_events_appended_total{type,outcome}`` (counter): events committed since
  start-up; ``outcome`` is ``success``, ``failure``, ``error``, ``skip`` or
  ``unspecified``; past an account's first 1,000 types, ``type="other"``.
- ``leadtrail_append_seconds`` (histogram): an Append, or one AppendStream request, from
  its arrival to durable.
- ``leadtrail_subscribers`` (gauge): live subscriptions (Subscribe calls) of this process.
- ``leadtrail_subscriber_lag_events`` (gauge): the largest lag of a live subscription, the
  log positions it has still to read (0 with none).
- ``leadtrail_alerts_firing{rule}`` (gauge): groups firing now, for every rule of the account.
- ``leadtrail_alert_groups_refused_total{rule}`` (counter): events of a new group a rule
  did not track because it held its most groups (evaluator.py) and could let none go.
- ``leadtrail_sink_lag_events{sink}`` (gauge): committed events after a sink's delivered
  position, for every sink of the account.
- ``leadtrail_last_position`` (gauge): the log's last committed position, for the
  ``default`` account (the operator's) only: positions count every account's events, so
  another account would learn how much the others write.
- ``leadtrail_up`` (gauge): 1 while the server serves.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from leadtrail.storage import AUDIT_TYPE_PREFIX, DEFAULT_ACCOUNT

from .meters import APPEND_BUCKETS_S, Meters

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Firing(Protocol):
    @property
    def rule(self) -> str: ...


class AlertsFiring(Protocol):
    """What the metrics read of the alert evaluator."""

    def firing(self, account_id: str | None = None) -> Iterable[Firing]: ...
    def refused(self) -> dict[tuple[str, str], int]: ...


class Named(Protocol):
    @property
    def name(self) -> str: ...


class RuleNames(Protocol):
    """What the metrics read of the rule book: the account's rules."""

    def rules(self, account_id: str | None = None) -> Iterable[Named]: ...


class SinkLag(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def lag_events(self) -> int: ...


class SinkLags(Protocol):
    """What the metrics read of the running sinks: where each of the account's sinks is."""

    def statuses(self, account_id: str) -> Iterable[SinkLag]: ...


class LastPosition(Protocol):
    @property
    def last_position(self) -> int: ...


class AccountMetrics(Collector):
    """The families of one account, made when collected."""

    def __init__(
        self,
        account: str,
        meters: Meters,
        log: LastPosition,
        alerting: AlertsFiring | None,
        rules: RuleNames | None,
        *,
        sees_audit: bool = True,
        sinks: SinkLags | None = None,
    ) -> None:
        self.account = account
        self.meters = meters
        self.log = log
        self.alerting = alerting
        self.rules = rules
        self.sees_audit = sees_audit
        self.sinks = sinks

    def collect(self) -> Iterator[Metric]:
        account, meters = self.account, self.meters
        appended = CounterMetricFamily(
            "leadtrail_events_appended",
            "Events committed since the server started, by type and outcome.",
            labels=["type", "outcome"],
        )
        for (type_, outcome), n in sorted(meters.appended.of(account).items()):
            if not self.sees_audit and type_.startswith(AUDIT_TYPE_PREFIX):
                continue  # the read audit is for admins, as over gRPC
            appended.add_metric([type_, outcome], n)
        yield appended

        histogram = meters.append_seconds.of(account)
        cumulative, buckets = 0, []
        for bound, n in zip((*APPEND_BUCKETS_S, float("inf")), histogram.counts, strict=True):
            cumulative += n
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), float(cumulative)))
        yield HistogramMetricFamily(
            "leadtrail_append_seconds",
            "Appends (Append calls and AppendStream requests) from arrival to durable, in seconds.",
            buckets=buckets,
            sum_value=histogram.total,
        )

        last = self.log.last_position
        yield GaugeMetricFamily(
            "leadtrail_subscribers", "Live subscriptions.", value=meters.subscriptions.count(account)
        )
        yield GaugeMetricFamily(
            "leadtrail_subscriber_lag_events",
            "The largest lag of a live subscription: log positions it has still to read.",
            value=meters.subscriptions.largest_lag(account, last),
        )

        firing = GaugeMetricFamily(
            "leadtrail_alerts_firing", "Alert groups firing now, by rule.", labels=["rule"]
        )
        counts: dict[str, int] = {}
        if self.rules is not None:
            for rule in self.rules.rules(account):
                counts[rule.name] = 0
        if self.alerting is not None:
            for alert in self.alerting.firing(account):
                counts[alert.rule] = counts.get(alert.rule, 0) + 1
        for name, n in sorted(counts.items()):
            firing.add_metric([name], n)
        yield firing

        refused = CounterMetricFamily(
            "leadtrail_alert_groups_refused",
            "Events of a new group a rule did not track: it held its most groups and could let "
            "none go (all firing, or an ABSENCE rule), by rule.",
            labels=["rule"],
        )
        if self.alerting is not None:
            for (owner, name), n in sorted(self.alerting.refused().items()):
                if owner == account:
                    refused.add_metric([name], n)
        yield refused

        lags = GaugeMetricFamily(
            "leadtrail_sink_lag_events", "Events a sink has still to deliver, by sink.", labels=["sink"]
        )
        if self.sinks is not None:
            for sink in self.sinks.statuses(account):
                lags.add_metric([sink.name], sink.lag_events)
        yield lags
        if account == DEFAULT_ACCOUNT:
            yield GaugeMetricFamily(
                "leadtrail_last_position", "The log's last committed position.", value=last
            )
        yield GaugeMetricFamily("leadtrail_up", "1 while the server serves.", value=1)


def exposition(metrics: AccountMetrics) -> bytes:
    """The text a scrape answers (``CONTENT_TYPE``)."""
    return generate_latest(metrics)
