"""`ntx status` and `ntx runs`: what a database holds and what its runs did, as rich tables on
a terminal and plain text otherwise."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from datetime import datetime
from typing import Any, TextIO

from rich.console import Console
from rich.table import Table

from ntx.db.store import Archive, Store
from ntx.errors import UsageError
from ntx.ui.tally import format_duration
from ntx.words import plural

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
        f" {plural(run['jobs_done'], 'job')} done, {run['jobs_failed']:,} failed,"
        f" {run['rows_new']:,} rows new, {run['rows_updated']:,} updated"
    )


def print_status(store: Store, out: TextIO | None = None) -> None:
    out = out or sys.stdout
    rows = status_rows(store)
    title = f"Database: {store.path.resolve()} (schema {store.schema_version})"
    _print_table(title, HEADERS, rows, out)
    archive = store.archive()
    if archive is not None:
        for line in archive_lines(archive):
            print(line, file=out)
    print(describe_run(store.last_run()), file=out)


MAX_GAPS_LISTED = 5


def archive_lines(archive: Archive) -> list[str]:
    """The price archive in words: its span, the sessions covered, the gaps, and what the
    API no longer serves."""
    gaps = archive.gaps
    listed = ", ".join(
        str(gap.start) if gap.start == gap.end else str(gap) for gap in gaps[:MAX_GAPS_LISTED]
    )
    more = f" and {len(gaps) - MAX_GAPS_LISTED} more" if len(gaps) > MAX_GAPS_LISTED else ""
    return [
        f"Price archive: {archive.first} to {archive.last},"
        f" {archive.covered:,} of {plural(archive.sessions, 'session')} in the calendar covered",
        f"  gaps: {listed}{more}" if gaps else "  gaps: none",
        f"  {plural(archive.older_than_window, 'session')} older than the API's window"
        f" (it serves about a year, from about {archive.window_starts}): kept nowhere else",
    ]


RUN_HEADERS = (
    "id",
    "started",
    "duration",
    "status",
    "datasets",
    "new",
    "updated",
    "unchanged",
    "failed",
)


def _duration(run: dict[str, Any]) -> str:
    if not run.get("finished_at"):
        return "-"
    seconds = (
        datetime.fromisoformat(run["finished_at"]) - datetime.fromisoformat(run["started_at"])
    ).total_seconds()
    return format_duration(seconds)


def run_status(run: dict[str, Any], running_now: bool) -> str:
    """A run marked running whose process is gone (its lock is free) is shown as crashed."""
    if run["status"] == "running" and not running_now:
        return "crashed"
    return str(run["status"])


def print_runs(store: Store, running_now: bool, out: TextIO | None = None) -> None:
    rows = [
        (
            str(run["id"]),
            run["started_at"],
            _duration(run),
            run_status(run, running_now),
            run["datasets"] or "",
            f"{run['rows_new']:,}",
            f"{run['rows_updated']:,}",
            f"{run['rows_unchanged']:,}",
            f"{run['jobs_failed']:,}",
        )
        for run in store.runs()
    ]
    _print_table(f"Runs in {store.path.resolve()}", RUN_HEADERS, rows, out or sys.stdout)


def print_run(store: Store, run_id: int, running_now: bool, out: TextIO | None = None) -> None:
    out = out or sys.stdout
    run = store.run(run_id)
    if run is None:
        raise UsageError(f"no run {run_id} in {store.path}")
    jobs = store.unfinished_jobs(run_id)
    symbols = store.symbols([sid for _, sid, _, _, _ in jobs if sid is not None])
    print(
        f"Run {run_id}: {run_status(run, running_now)}, started {run['started_at']},"
        f" {_duration(run)}; {run['command'] or ''}",
        file=out,
    )
    if run.get("resumes"):
        print(f"It resumed run {run['resumes']}.", file=out)
    print(
        f"{plural(run['jobs_done'], 'job')} done, {run['jobs_failed']:,} failed;"
        f" rows: {run['rows_new']:,} new, {run['rows_updated']:,} updated,"
        f" {run['rows_unchanged']:,} unchanged",
        file=out,
    )
    plan = store.price_plan_of(run_id)
    if plan is not None:
        print(f"Prices: {plan[1]}", file=out)
    rows = [
        (status, dataset, _job_label(symbols, sid, ranges), reason or "")
        for dataset, sid, ranges, status, reason in jobs
    ]
    not_done = [row for row in rows if row[0] != "outside"]
    outside = [row[1:] for row in rows if row[0] == "outside"]
    if not_done:
        _print_table("Jobs not done", ("status", "dataset", "job", "reason"), not_done, out)
    else:
        print("Every job of this run was done.", file=out)
    if outside:
        title = "Days asked for before the server's history window (it does not serve them)"
        _print_table(title, ("dataset", "job", "reason"), outside, out)
    refused = store.invalid_rows(run_id)
    if refused:
        names = store.symbols([sid for _, sid, _, _ in refused if sid is not None])
        table = [
            (ds, names.get(sid, str(sid)) if sid else "-", rule, row)
            for ds, sid, row, rule in refused
        ]
        _print_table(
            "Invalid rows refused (first 100)", ("dataset", "symbol", "rule", "row"), table, out
        )


def _job_label(symbols: dict[int, str], sid: int | None, ranges: str | None) -> str:
    """A job as people know it: its security's symbol, its business date, or the lists."""
    if sid is not None:
        return symbols.get(sid, str(sid))
    if ranges and ranges[:10] == ranges[-10:]:
        return ranges[:10]  # a by-date job
    return ranges or "lists"


def _print_table(
    title: str, headers: Sequence[str], rows: Sequence[Sequence[str]], out: TextIO
) -> None:
    if out.isatty():
        table = Table(*headers, title=title, title_justify="left")
        for row in rows:
            table.add_row(*row)
        Console(file=out).print(table)
        return
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    print(title, file=out)
    for row in (tuple(headers), *rows):
        cells = zip(row, widths, strict=True)
        print("  ".join(cell.ljust(width) for cell, width in cells).rstrip(), file=out)
