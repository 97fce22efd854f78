"""`ntx status`: what a database holds, as a rich table on a terminal, plain text otherwise."""

from __future__ import annotations

import sys
from typing import Any, TextIO

from rich.console import Console
from rich.table import Table

from ntx.store import Store

HEADERS = ("dataset", "securities", "rows", "first date", "last date", "last fetched")


def status_rows(store: Store) -> list[tuple[str, ...]]:
    return [
        (
            line.dataset,
            f"{line.securities:,}",
            f"{line.rows:,}",
            line.first_date or "-",
            line.last_date or "-",
            line.last_fetched or "never",
        )
        for line in store.status()
    ]


def describe_run(run: dict[str, Any] | None) -> str:
    if run is None:
        return "Last run: none yet"
    return (
        f"Last run: #{run['id']} {run['status']}, started {run['started_at']},"
        f" {run['jobs_done']:,} jobs done, {run['jobs_failed']:,} failed,"
        f" {run['rows_new']:,} rows new, {run['rows_updated']:,} updated"
    )


def print_status(store: Store, out: TextIO | None = None) -> None:
    out = out or sys.stdout
    rows = status_rows(store)
    title = f"Database: {store.path.resolve()} (schema {store.schema_version})"
    last = describe_run(store.last_run())
    if out.isatty():
        console = Console(file=out)
        table = Table(*HEADERS, title=title, title_justify="left")
        for row in rows:
            table.add_row(*row)
        console.print(table)
        console.print(last, highlight=False)
        return
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(HEADERS)]
    print(title, file=out)
    for row in (HEADERS, *rows):
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip(),
            file=out,
        )
    print(last, file=out)
