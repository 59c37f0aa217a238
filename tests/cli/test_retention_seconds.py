"""`leadtrail retention set --max-age-seconds`: ages below a day from the command line."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from conftest import CLI


def test_retention_set_takes_an_age_in_seconds(cli: CLI, server: str) -> None:
    run = cli("retention", "set", "--account", "test-traffic", "--max-age-seconds", "90", "--server", server)
    assert run.status == 0, run
    assert run.stdout.strip() == "retention for account test-traffic: keep 90 seconds"
    run = cli("retention", "apply", "--server", server)
    assert run.status == 0, run
    assert run.stdout.startswith("removed 0 events")


def test_days_and_seconds_together_is_a_usage_error(cli: CLI) -> None:
    run = cli(
        "retention", "set", "--account", "a", "--max-age-days", "1", "--max-age-seconds", "60",
        "--server", "127.0.0.1:1",
    )  # fmt: skip
    assert run.status == 2, run
    assert "usage:" in run.stderr
    assert "--max-age-seconds" in run.stderr and "--max-age-days" in run.stderr


def test_an_age_is_required(cli: CLI) -> None:
    run = cli("retention", "set", "--account", "a", "--server", "127.0.0.1:1")
    assert run.status == 2, run
    assert "--max-age-days" in run.stderr and "--max-age-seconds" in run.stderr


def test_the_server_refuses_too_many_seconds_naming_the_limit(cli: CLI, server: str) -> None:
    run = cli("retention", "set", "--account", "a", "--max-age-seconds", "4000000000", "--server", server)
    assert "max_age_seconds" in run.error_line()
    assert "3153600000" in run.stderr
