"""One lead's journey rendered as events."""

from __future__ import annotations

import random
from typing import Any

from .catalog import Enhancement, Flow, Recipient, Shape, Source
from .people import Vertical, appended_fields, parsed
from .records import DAY_MS, ERROR, FAILURE, SUCCESS, UNSPECIFIED, SimulatedEvent, hex_digits, iso_date, money


class Journey:
    """Renders one lead's events: a clock that advances step by step and a snapshot
    that only ever gains fields, copied into each event."""

    def __init__(
        self,
        rng: random.Random,
        flow: Flow,
        vertical: Vertical,
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
        shape: Shape,
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
                rejection = f"Duplicate: previously submitted {iso_date(seen)}"
            else:
                missing = rng.choice(("postal_code", "dob", "ip_address"))
                del raw[missing]
                rejection = f"Missing required field: {missing}"

        self.snapshot = raw
        self.emit(
            "source.submitted",
            outcome=UNSPECIFIED,
            entity_id=self.source.id,
            duration_ms=rng.randint(1, 4),
            integration=self.source.integration,
            details={"content_type": "application/json"
                     if self.source.integration == "json_post"
                     else "application/x-www-form-urlencoded", "fields": len(raw)},
        )  # fmt: skip
        self.snapshot = {**raw, **parsed(rng, raw)}
        if shape.end != "rejected":
            cost = rng.randrange(*self.vertical.cost_cents, 25)
            self.emit(
                "source.accepted",
                outcome=SUCCESS,
                entity_id=self.source.id,
                duration_ms=rng.randint(1, 8),
                gap_ms=self.gap(2, 30),
                integration=self.source.integration,
                response_code=201,
                price=money(-cost),
                details={"source": self.source.name, "fields_parsed": len(self.snapshot)},
            )
        for enhancement in self.flow.enhancements:
            self.enhance(enhancement)

        if shape.end == "rejected":
            self.filter(passed=False, rule_set="acceptance", reason=rejection)
            self.emit(
                "source.rejected",
                outcome=FAILURE,
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
                outcome=ERROR,
                entity_id=enhancement.entity_id,
                duration_ms=duration,
                gap_ms=self.gap(10, 120),
                reason=reason,
                integration=enhancement.integration,
                response_code=code,
                details={"service": enhancement.service},
            )
            return
        appended = appended_fields(rng, enhancement.service, self.snapshot)
        self.snapshot.update(appended)
        self.emit(
            "enhancement.success",
            outcome=SUCCESS,
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
            outcome=SUCCESS if passed else FAILURE,
            entity_id=self.flow.filter_id,
            duration_ms=self.rng.randint(0, 3),
            gap_ms=self.gap(5, 60),
            reason=reason,
            details={
                "rule_set": rule_set,
                "rules_evaluated": rules if passed else self.rng.randint(1, rules),
            },
        )

    def route(self, shape: Shape) -> list[tuple[Recipient, int, str]]:
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
                outcome=FAILURE,
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
                outcome=FAILURE,
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
                outcome=UNSPECIFIED,
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
            outcome=ERROR,
            entity_id=recipient.id,
            duration_ms=10_000 if timed_out else self.latency(300),
            gap_ms=self.gap(10, 150),
            reason="Service timeout after 10000ms" if timed_out else f"HTTP {code} from buyer",
            integration=recipient.integration,
            response_code=code,
            details={"buyer": recipient.name, "url": url, "attempt": attempt},
        )

    def sale(self, recipient: Recipient, url: str, event_type: str, *, attempt: int) -> str:
        price = money(self.rng.randrange(*self.vertical.price_cents, 25))
        self.emit(
            event_type,
            outcome=SUCCESS,
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
                "buyer_lead_id": hex_digits(self.rng, 16),
            },
        )
        return price

    def complete(self, *, delivered: list[tuple[Recipient, int, str]], reason: str) -> None:
        self.emit(
            "flow.completed",
            outcome=SUCCESS if delivered else FAILURE,
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
            outcome=SUCCESS if converted else FAILURE,
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
