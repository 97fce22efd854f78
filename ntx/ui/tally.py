"""The tally of a run as the renderers show it: counts per dataset, what the workers are on,
and the words shared by every renderer (durations, the end-of-run summary)."""

from __future__ import annotations

import dataclasses
from collections import deque

import trio

from ntx.events import (
    DatasetPlanned,
    Event,
    JobFinished,
    JobStarted,
    Paced,
    Paused,
    Resumed,
    RowsCommitted,
    RunStarted,
    RunSummary,
)
from ntx.model import DateRange, WriteCounts
from ntx.words import plural

MAX_LATEST = 12  # symbols the live display names at most
MAX_FAILURES_LISTED = 20


@dataclasses.dataclass
class _DatasetView:
    title: str
    jobs: int
    started: int = 0
    finished: int = 0
    failed: int = 0
    retries: int = 0
    requests: int = 0
    rows: WriteCounts = dataclasses.field(default_factory=WriteCounts)
    first_start: float | None = None
    last_finish: float | None = None

    def rate(self, now: float) -> float:
        """Requests per second while the dataset ran (its clock stops when it is done)."""
        if self.first_start is None:
            return 0.0
        end = self.last_finish if self.finished == self.jobs and self.last_finish else now
        return self.requests / (end - self.first_start) if end > self.first_start else 0.0


class Tracker:
    """Display state: counts per dataset, the jobs in flight, each job's [i/N] number."""

    def __init__(self) -> None:
        self.run: RunStarted | None = None
        self.datasets: dict[str, _DatasetView] = {}
        # The jobs in flight and their [i/N] numbers; nothing is kept once a job is done.
        self.in_flight: dict[tuple[str, str], int] = {}
        # The labels of the latest jobs started, newest last: with N workers, the last N
        # started are the ones the workers are on (asking, or resting after the answer).
        self.latest: deque[str] = deque(maxlen=MAX_LATEST)
        self.requests = 0
        self.started_at: float | None = None  # set by the first event, inside trio
        self.paused_until = 0.0
        self.pause_reason = ""
        self.pace: Paced | None = None  # --sleep auto: the knobs as set now

    def working_on(self) -> tuple[list[str], bool]:
        """What the workers are on: the last `workers` jobs started, oldest first (at most
        `MAX_LATEST`, and True if there are more); nothing once every job has finished."""
        if all(view.finished >= view.jobs for view in self.datasets.values()):
            return [], False
        workers = self.pace.workers if self.pace else self.run.workers if self.run else 0
        return list(self.latest)[-workers:], workers > MAX_LATEST

    def handle(self, event: Event) -> str:
        """Update the counts; for a job event, return its "[dataset i/N]" tag."""
        tag = ""
        if isinstance(event, JobStarted | JobFinished):
            view = self.datasets[event.dataset]
            key = (event.dataset, event.label)
            number = self.in_flight.get(key, view.started + 1)
            tag = f"[{event.dataset} {number}/{view.jobs}]"
        if self.started_at is None:
            self.started_at = trio.current_time()
        match event:
            case RunStarted():
                self.run = event
            case DatasetPlanned():
                self.datasets[event.dataset] = _DatasetView(event.title, event.jobs)
            case JobStarted():
                view = self.datasets[event.dataset]
                view.started += 1
                if view.first_start is None:
                    view.first_start = trio.current_time()
                self.in_flight[(event.dataset, event.label)] = view.started
                self.latest.append(event.label)
            case JobFinished():
                view = self.datasets[event.dataset]
                view.finished += 1
                view.failed += event.error is not None and not event.skipped
                view.retries += event.retries
                view.requests += event.requests
                view.last_finish = trio.current_time()
                self.requests += event.requests
                self.in_flight.pop((event.dataset, event.label), None)
            case RowsCommitted():
                self.datasets[event.dataset].rows.add(event.counts)
            case Paused():
                self.paused_until = max(self.paused_until, trio.current_time() + event.seconds)
                self.pause_reason = event.reason
            case Paced():
                self.pace = event
        return tag


ONE = {"securities": "security", "sessions": "session", "calendar years": "calendar year"}


def up_to_date(unit: str, count: int, *, already: bool = False) -> str:
    """How a plan's up-to-date part reads: so many securities (or sessions, or calendar
    years), or the lists."""
    if unit == "lists":
        return "the stored lists are kept: fetched within their --max-age"
    what = plural(count, ONE.get(unit, unit), unit)
    return f"{what} already up to date" if already else f"all {what} up to date"


def format_duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def ranges_text(ranges: tuple[DateRange, ...]) -> str:
    return f" ({', '.join(str(r) for r in ranges)})" if ranges else ""


def summary_lines(summary: RunSummary) -> list[str]:
    """The end-of-run report: one line per dataset, the failures, the database's path."""
    lines = []
    for totals in summary.datasets.values():
        rows = totals.rows
        line = (
            f"{totals.title}: {rows.new:,} new, {rows.updated:,} updated, "
            f"{rows.unchanged:,} unchanged, {plural(totals.failed, 'error')}"
        )
        if totals.skipped:
            line += f", {totals.skipped:,} skipped"
        if totals.invalid:
            line += f", {plural(totals.invalid, 'invalid row')} refused"
        line += f" in {format_duration(totals.elapsed)}"
        notes = [plural(totals.retries, "retry", "retries")] if totals.retries else []
        if totals.up_to_date:
            notes.append(up_to_date(totals.unit, totals.up_to_date, already=True))
        lines.append(line + (f" ({', '.join(notes)})" if notes else ""))
    rate = summary.requests / summary.elapsed if summary.elapsed > 0 else 0.0
    retries = sum(t.retries for t in summary.datasets.values())
    lines.append(
        f"Requests: {summary.requests:,} in {format_duration(summary.elapsed)} ({rate:.1f}/s),"
        f" {retries:,} of them retries"
        + (f", {plural(summary.handshakes, 'token handshake')}" if summary.handshakes else "")
    )
    outside = [t for t in summary.datasets.values() if t.outside]
    if summary.window_starts is not None and outside:
        asked = " and ".join(
            plural(t.outside, "session")
            if t.unit == "sessions"
            else plural(t.outside, "security", "securities")
            for t in outside
        )
        lines.append(
            f"History: the server keeps daily history from {summary.window_starts} on;"
            f" the older days asked for {asked} are"
            f" recorded as outside its window (ntx runs show {summary.run_id})"
        )
    if summary.price_plan is not None:
        plan = summary.price_plan
        lines.append(f"Price plan: {plan.line}")
        if summary.without_open:
            lines.append(
                f"Opens: {plural(summary.without_open, 'price row')} of the period"
                " have no open price: they came by security (the history endpoint has none);"
                " --prices-by date fetches their sessions whole"
            )
    for title, jobs in (("Failed jobs", summary.failures), ("Skipped jobs", summary.skips)):
        if not jobs:
            continue
        lines.append(f"{title} ({len(jobs)}):")
        for job in jobs[:MAX_FAILURES_LISTED]:
            lines.append(f"  {job.dataset} {job.label}: {job.reason}")
        if len(jobs) > MAX_FAILURES_LISTED:
            lines.append(
                f"  ... and {len(jobs) - MAX_FAILURES_LISTED} more: ntx runs show {summary.run_id}"
            )
    if summary.failures and not summary.interrupted:
        lines.append(
            "Retry just those with: ntx backfill --retry-failed (and your --api or --demo)"
        )
    if summary.advice is not None:
        lines.append(pace_line(summary.advice))
    lines.append(f"Database: {summary.db_path.resolve()}")
    if summary.interrupted:
        lines.append(
            f"Interrupted: {summary.rows_saved:,} rows saved (run {summary.run_id})."
            f" Resume with: {summary.command}"
        )
    return lines


def pace_line(advice: Paced) -> str:
    """The summary's last word on `--sleep auto`: what was found, as flags for next time."""
    if advice.reason == "refused":
        return (
            f"Pace: the API accepted {advice.achieved:.1f} requests/s;"
            f" next time: {advice.flags} (or --sleep auto again)"
        )
    if advice.reason == "slowed":
        return (
            f"Pace: the API never refused, but its answers slowed down; {advice.achieved:.1f}"
            f" requests/s answered since; next time: {advice.flags} (or --sleep auto again)"
        )
    if advice.reason in ("refused late", "slowed late"):
        what = "refused" if advice.reason == "refused late" else "slowed down"
        return (
            f"Pace: the API {what}, but the run was too short to tell its limit;"
            f" next time: --sleep auto again, or start from {advice.flags}"
        )
    return (
        f"Pace: {advice.achieved:.1f} requests/s answered and the API never refused;"
        f" next time: {advice.flags}, or --sleep auto again to go faster"
    )


def resumed_line(event: Resumed) -> str:
    return (
        f"ntx: resuming run {event.run_id}, which did not finish:"
        f" its {event.jobs:,} done jobs are not fetched again"
    )
