"""The console's parts that need no server: durations in human units, what the search box
was given, session expiry and the CSRF comparison, the report chart's geometry."""

from __future__ import annotations

import pytest
from leadtrail.server.web.console import display, reports
from leadtrail.server.web.console.search import Kind, classify
from leadtrail.server.web.console.sessions import IDLE_SECONDS, MAX_SESSIONS, Sessions, csrf_ok


@pytest.mark.parametrize(
    ("ms", "shown"),
    [
        (0, "+0 ms"),
        (999, "+999 ms"),
        (1000, "+1 s"),
        (4250, "+4.2 s"),
        (59_999, "+59.9 s"),
        (60_000, "+1 min"),
        (123_000, "+2 min 3 s"),
        (3_600_000, "+1 h"),
        (7_500_000, "+2 h 5 min"),
        (97_200_000, "+1 d 3 h"),
    ],
)
def test_durations_are_shown_in_their_two_largest_units(ms: int, shown: str) -> None:
    assert display.since_previous(ms) == shown


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("evt_01HM67Q82P26GJG1W8RZJ6M406", Kind.EVENT),
        (" Dana@Example.com ", Kind.EMAIL),
        ("(737) 555-0199", Kind.PHONE),
        ("+1 737.555.0199", Kind.PHONE),
        ("1234", Kind.LEAD),  # too few digits for a phone number
        ("lead_36a8d437ba2ee688", Kind.LEAD),
    ],
)
def test_the_search_box_tells_ids_emails_and_phones_apart(text: str, kind: Kind) -> None:
    query = classify(text)
    assert query.kind == kind and query.text == text.strip()


def test_a_session_ends_after_its_idle_time_and_the_oldest_go_first() -> None:
    now = [0.0]
    sessions = Sessions(clock=lambda: now[0])
    first = sessions.open("ltk_a")
    assert sessions.get(first.id) is first and sessions.get("nope") is None and sessions.get(None) is None
    now[0] += IDLE_SECONDS - 1
    assert sessions.get(first.id) is first  # seen: its idle time starts again
    now[0] += IDLE_SECONDS - 1
    assert sessions.get(first.id) is first
    now[0] += IDLE_SECONDS + 1
    assert sessions.get(first.id) is None and len(sessions) == 0
    made = [sessions.open(f"ltk_{i}") for i in range(MAX_SESSIONS + 1)]
    assert len(sessions) == MAX_SESSIONS and sessions.get(made[0].id) is None
    assert sessions.get(made[-1].id) is made[-1]


def test_csrf_tokens_are_per_session_and_compared_whole() -> None:
    sessions = Sessions()
    one, two = sessions.open("ltk_a"), sessions.open("ltk_a")
    assert one.csrf != two.csrf and one.id != two.id
    assert csrf_ok(one, one.csrf)
    assert not csrf_ok(one, two.csrf) and not csrf_ok(one, None) and not csrf_ok(one, one.csrf[:-1])


def test_chart_bars_start_at_zero_and_losses_go_left() -> None:
    chart = reports.chart("profit", [("a", "30.00"), ("b", "-10.00"), ("c", "0")])
    a, b, c = chart.bars
    assert a.x == chart.zero_x and b.x + b.width == chart.zero_x and b.negative and not a.negative
    assert a.width == 3 * b.width and c.width == 1
