"""``leadtrail top``: a live view of a running server, through the public API only.

A subscription replays what was recorded in the last ``--window`` seconds and
then follows live events into a ``TopWindow``; the alerts firing now come from
``list_alerts(firing_only=True)``. The subscription is read by a thread so that
the screen refreshes every ``--interval`` whatever the traffic.

Until the replay has caught up once, losing the server is an error (exit 1, one
line); after that the view says it is reconnecting and resumes after the last
position it counted, so nothing is counted twice.

``--once --json`` prints one snapshot (keys below) when caught up::

    at, server, window_s, position      the snapshot's time, what it covers
    events {total, per_second, by_type_outcome [{type, outcome, count, per_second}]}
    recipients [{entity_id, failed, total, failure_share}]   recipient.* events; failed = FAILURE + ERROR
    money {window_s, revenue_per_minute, cost_per_minute, margin_per_minute}   decimal strings
    slowest [{entity_id, p95_ms, count}]   top 10 by p95 duration_ms (flow.* and alert.* left out)
    alerts [{rule, group, value, fired_at, event_id, reason}]   value a decimal string ("" if none)
    alerts_error                        null, or why the alerts could not be read (e.g. the key's role)
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from leadtrail.client import CancelledError, CaughtUp, Client, Event, LeadTrailError, UnavailableError

from .cli_errors import CommandError
from .cli_output import dumps, iso_ms
from .cli_remote import connect
from .top_window import TopWindow

ROWS_SHOWN = 15
"""Rows of the events table on screen (the JSON has them all)."""
REASON_SHOWN = 60
"""Characters of an alert's reason on screen."""
CATCH_UP_TIMEOUT_S = 120.0
"""How long a view waits for the replay of its window (a hung server must not hang top)."""
READ_AUDIT_PREFIX = "audit."
WIDE = 160
"""Columns of a ``--once`` view printed where there is no terminal to measure."""


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _ms(moment: datetime | None) -> int:
    return 0 if moment is None else int(moment.timestamp() * 1000)


class Follower:
    """Reads a subscription on a thread and counts its events into a ``TopWindow``."""

    def __init__(self, client: Client, window: TopWindow) -> None:
        self.client = client
        self.window = window
        self.lock = threading.Lock()
        self.caught_up = threading.Event()
        self.error: BaseException | None = None
        self.reconnecting = False
        self._stopped = threading.Event()
        since = datetime.now(UTC) - timedelta(seconds=window.window_s)
        # No reconnection until caught up: an unreachable server must end the command.
        self._subscription = client.subscribe(
            from_recorded_at=since, include_checkpoints=True, reconnect=False
        )
        self._thread = threading.Thread(target=self._run, name="top-follower", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                for item in self._subscription:
                    if isinstance(item, Event):
                        self._count(item)
                    elif isinstance(item, CaughtUp):
                        self.caught_up.set()
                    self.reconnecting = False
                lost: BaseException = CommandError(f"server {self.client.target} ended the subscription")
            except (UnavailableError, CancelledError) as error:  # the codes the SDK reconnects on
                lost = error
            except BaseException as error:  # reported by the main thread
                self._fail(error)
                return
            if self._stopped.is_set():
                return
            if not self.caught_up.is_set():
                self._fail(lost)
                return
            self.reconnecting = True
            # The SDK reconnects with backoff from here on, after what was counted.
            self._subscription = self.client.subscribe(
                after_position=self.window.position, include_checkpoints=True, reconnect=True
            )

    def _fail(self, error: BaseException) -> None:
        self.error = error
        self.caught_up.set()  # wakes a waiting --once

    def _count(self, event: Event) -> None:
        if event.type.startswith(READ_AUDIT_PREFIX):
            return  # the read audit is not the platform's traffic (and top's own reads land there)
        with self.lock:
            self.window.add(
                event,
                recorded_ms=_ms(event.recorded_at),
                outcome=event.outcome.name,
                position=event.position,
                now_ms=_now_ms(),
            )

    def wait_caught_up(self, timeout_s: float = CATCH_UP_TIMEOUT_S) -> None:
        """Block until the replay of the window is done; raises what ended the subscription,
        or a CommandError when a server that answers never finishes the replay."""
        if not self.caught_up.wait(timeout_s):
            raise CommandError(
                f"server {self.client.target} did not finish replaying the last window in {timeout_s:.0f} s"
            )
        self.raise_error()

    def raise_error(self) -> None:
        if self.error is not None:
            raise self.error

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return self.window.snapshot(_now_ms())

    def stop(self) -> None:
        self._stopped.set()
        self._subscription.stop()
        self._thread.join(5)


def firing_alerts(client: Client) -> tuple[list[dict[str, Any]], str | None]:
    """The alerts firing now as JSON-ready rows, and why they could not be read (None if they could)."""
    try:
        alerts = client.list_alerts(firing_only=True)
    except LeadTrailError as error:
        # A writer key may not read alerts; a server without them says UNIMPLEMENTED. The
        # rest of the view still holds.
        return [], str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    rows = [
        {
            "rule": alert.rule,
            "group": alert.group,
            "value": "" if alert.value is None else str(alert.value),
            "fired_at": _when(alert.fired_at),
            "event_id": alert.event_id,
            "reason": alert.reason,
        }
        for alert in alerts
    ]
    rows.sort(key=lambda row: (row["fired_at"] or "", row["rule"], row["group"]))
    return rows, None


def _when(moment: Any) -> str | None:
    """A time of the SDK (a datetime, or UTC milliseconds) as RFC 3339; None when unset."""
    if isinstance(moment, datetime):
        return iso_ms(moment)
    if isinstance(moment, int) and moment > 0:
        return iso_ms(datetime.fromtimestamp(moment / 1000, tz=UTC))
    return None


def snapshot(follower: Follower, client: Client, server: str) -> dict[str, Any]:
    numbers = follower.snapshot()
    alerts, problem = firing_alerts(client)
    return {
        "at": iso_ms(datetime.now(UTC)),
        "server": server,
        **numbers,
        "alerts": alerts,
        "alerts_error": problem,
    }


# --------------------------------------------------------------------------- the screen


def _table(title: str, *columns: str, right: Sequence[int] = ()) -> Table:
    table = Table(
        title=title, title_justify="left", box=box.SIMPLE, expand=False, pad_edge=False, min_width=len(title)
    )
    for index, column in enumerate(columns):
        table.add_column(column, justify="right" if index in right else "left", no_wrap=True)
    return table


def view(snap: dict[str, Any], *, reconnecting: bool = False, rows: int = ROWS_SHOWN) -> RenderableType:
    """The panels of a snapshot, each table at most ``rows`` long."""
    events = snap["events"]
    state = " [reconnecting]" if reconnecting else ""
    header = Text(
        f"leadtrail top  {snap['server']}  {snap['at']}  window {snap['window_s']} s  "
        f"{events['total']} events ({events['per_second']:g}/s)  position {snap['position']}{state}",
        style="bold",
    )

    rates = _table("events per second by type and outcome", "type", "outcome", "count", "per s", right=(2, 3))
    for row in events["by_type_outcome"][:rows]:
        rates.add_row(row["type"], row["outcome"], str(row["count"]), f"{row['per_second']:.2f}")
    hidden = len(events["by_type_outcome"]) - rows
    if hidden > 0:
        rates.add_row(f"... {hidden} more", "", "", "")

    recipients = _table("failure share per recipient", "recipient", "failed", "all", "share", right=(1, 2, 3))
    for row in snap["recipients"][:rows]:
        share = row["failure_share"]
        style = "red" if share >= 0.5 else ("yellow" if share >= 0.2 else "")
        recipients.add_row(
            row["entity_id"], str(row["failed"]), str(row["total"]), Text(f"{share:.1%}", style=style)
        )

    money = snap["money"]
    margin = Decimal(money["margin_per_minute"])
    money_table = _table(
        f"money over the last {money['window_s']} s", "revenue", "cost", "margin", right=(0, 1, 2)
    )
    money_table.add_row(
        f"{Decimal(money['revenue_per_minute']):,.2f}",
        f"{Decimal(money['cost_per_minute']):,.2f}",
        Text(f"{margin:,.2f}", style="red" if margin < 0 else "green"),
    )

    slowest = _table("slowest steps (p95 duration_ms)", "entity", "p95 ms", "events", right=(1, 2))
    for row in snap["slowest"][:rows]:
        slowest.add_row(row["entity_id"], f"{row['p95_ms']:,}", str(row["count"]))

    alerts = _table("alerts firing now", "rule", "group", "value", "since", "why")
    for row in snap["alerts"][:rows]:
        since = (row["fired_at"] or "")[11:19]  # HH:MM:SS of today's firings; the JSON has the date
        why = row["reason"] if len(row["reason"]) <= REASON_SHOWN else row["reason"][: REASON_SHOWN - 1] + "…"
        alerts.add_row(
            Text(row["rule"], style="bold red"), row["group"] or "-", _short(row["value"]), since, why
        )
    hidden = len(snap["alerts"]) - rows
    if hidden > 0:
        alerts.add_row(f"... {hidden} more", "", "", "", "")
    if snap["alerts_error"]:
        note = Text(f"alerts not shown: {snap['alerts_error']}", style="dim")
    else:
        note = Text("" if snap["alerts"] else "no alert is firing", style="dim")
    grid = Table.grid(padding=(0, 3))
    grid.add_row(rates, recipients)
    grid.add_row(slowest, money_table)
    return Group(header, grid, alerts, note)


def _short(value: str) -> str:
    """A measured value as a person reads it: a share to four places, a count or money as it is."""
    try:
        number = Decimal(value)
    except ArithmeticError:
        return value
    exponent = number.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -4:
        return str(number.quantize(Decimal("0.0001")))
    return value


# --------------------------------------------------------------------------- the command


def cmd_top(args: argparse.Namespace) -> int:
    with connect(args) as client:
        follower = Follower(client, TopWindow(args.window))
        try:
            follower.wait_caught_up()
            if args.once:
                _print(snapshot(follower, client, args.server), as_json=args.json)
                return 0
            if args.json:
                while True:
                    _print(snapshot(follower, client, args.server), as_json=True)
                    follower.raise_error()
                    time.sleep(args.interval)
            return _live(follower, client, args)
        except KeyboardInterrupt:  # the way out of a live view: not a failure
            return 0
        finally:
            follower.stop()


def _live(follower: Follower, client: Client, args: argparse.Namespace) -> int:
    console = Console()
    first = snapshot(follower, client, args.server)
    with Live(view(first, rows=_rows(console)), console=console, auto_refresh=False) as live:
        while True:
            time.sleep(args.interval)
            follower.raise_error()
            snap = snapshot(follower, client, args.server)
            live.update(view(snap, reconnecting=follower.reconnecting, rows=_rows(console)))
            live.refresh()


def _rows(console: Console) -> int:
    """Table rows that let the whole view fit the terminal: three rows of panels, each with a
    title, a header, a rule and blank lines (5 lines), the header line and the alerts' note."""
    return max(3, min(ROWS_SHOWN, (console.size.height - 17) // 3))


def _print(snap: dict[str, Any], *, as_json: bool) -> None:
    if as_json:
        sys.stdout.buffer.write(dumps(snap) + b"\n")
        sys.stdout.flush()
    else:
        # Into a pipe or a file rich would wrap at 80 columns, splitting the panels' rows.
        Console(width=None if sys.stdout.isatty() else WIDE).print(view(snap))
