"""``leadtrail report``: counts, revenue, cost and profit of the matching events per group.

One Aggregate call through the SDK: its rows, sorted by their keys, then a total.
A price is money by sign (API.md): revenue is the sum of the positive prices, cost
the sum of the negative ones (a negative figure), profit their sum. Every figure is
the server's exact decimal, never a float: the total is summed here in a context
that never rounds.

Formats: ``table`` (for a person: the keys, EVENTS, REVENUE, COST, PROFIT, a TOTAL
row), ``json`` (one object per group: the keys by their names, ``count``,
``revenue_sum``, ``cost_sum``, ``profit`` as decimal strings) and ``csv`` (a header,
then one row per group, the same columns as JSON).
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Context, Decimal, Inexact

from rich import box
from rich.console import Console
from rich.table import Table

from leadtrail.client import AggregateRow

from .cli_output import dumps
from .cli_remote import connect, filter_kwargs

EXACT = Context(prec=1000, traps=[Inexact])
"""Totals never round (a price has up to 32 digits, past the default context's 28)."""

MONEY_FIELDS = ("revenue_sum", "cost_sum", "profit")


@dataclass(frozen=True)
class Totals:
    count: int
    revenue_sum: Decimal
    cost_sum: Decimal
    profit: Decimal


def totals(rows: Sequence[AggregateRow]) -> Totals:
    """The sums over every group, exact."""

    def total(values: Sequence[Decimal]) -> Decimal:
        result = Decimal(0)
        for value in values:
            result = EXACT.add(result, value)
        return result

    return Totals(
        count=sum(row.count for row in rows),
        revenue_sum=total([row.revenue_sum for row in rows]),
        cost_sum=total([row.cost_sum for row in rows]),
        profit=total([row.profit for row in rows]),
    )


def money(value: Decimal, *, grouped: bool = False) -> str:
    """An exact decimal as written for a program (``-1234.50``) or a person (``-1,234.50``);
    never an exponent, and no ``-0``."""
    text = format(value, ",f" if grouped else "f")
    return "0" if text == "-0" else text


def cmd_report(args: argparse.Namespace) -> int:
    keys: tuple[str, ...] = args.by
    with connect(args) as client:
        rows = client.aggregate(keys, **filter_kwargs(args))
    rows = sorted(rows, key=lambda row: row.keys)
    if args.format == "json":
        sys.stdout.buffer.write(dumps([_record(keys, row) for row in rows], indent=True) + b"\n")
        return 0
    if args.format == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow([*keys, "count", *MONEY_FIELDS])
        writer.writerows(
            [*row.keys, row.count, *(money(getattr(row, f)) for f in MONEY_FIELDS)] for row in rows
        )
        return 0
    if not rows:
        print("no events match", file=sys.stderr)
        return 0
    _print_table(keys, rows)
    return 0


def _record(keys: Sequence[str], row: AggregateRow) -> dict[str, object]:
    record: dict[str, object] = dict(zip(keys, row.keys, strict=True))
    record["count"] = row.count
    record.update({f: money(getattr(row, f)) for f in MONEY_FIELDS})
    return record


def _print_table(keys: Sequence[str], rows: Sequence[AggregateRow]) -> None:
    """The groups under a header, a rule, then the TOTAL row; the style of ``stats``."""
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    for key in keys:
        table.add_column(key.upper())
    for title in ("EVENTS", "REVENUE", "COST", "PROFIT"):
        table.add_column(title, justify="right", no_wrap=True)
    for row in rows:
        table.add_row(
            *row.keys, f"{row.count:,}", *(money(getattr(row, f), grouped=True) for f in MONEY_FIELDS)
        )
    table.add_section()
    total = totals(rows)
    label = ["TOTAL", *([""] * (len(keys) - 1))]
    table.add_row(
        *label,
        f"{total.count:,}",
        *(money(getattr(total, f), grouped=True) for f in MONEY_FIELDS),
        style="bold",
    )
    # A file or a pipe gets every column whole; a terminal, its own width.
    console = Console(file=sys.stdout, highlight=False, width=None if sys.stdout.isatty() else 10_000)
    with console.capture() as captured:
        console.print(table)
    # Cells are padded to the column width; a line's trailing blanks are noise in a file.
    sys.stdout.write("".join(line.rstrip() + "\n" for line in captured.get().splitlines()))
