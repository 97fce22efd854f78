"""The progress printer: the only task that writes to the terminal during a run.

Renderers turn events into output: `ntx.ui.live.RichRenderer` (live bars, for a terminal),
`PlainRenderer` (one line per step, for pipes and logs) and `JsonRenderer` (one JSON object
per event, for programs). They only display; what happened is decided by the engine. The
live display is a module of its own so that plain and JSON runs never import rich (about
30 ms of start-up CPU).
"""

from __future__ import annotations

import dataclasses
import math
import sys
from collections import deque
from pathlib import Path
from typing import Any, Protocol, TextIO

import msgspec
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
    RunFinished,
    RunStarted,
    RunSummary,
)
from ntx.model import DateRange, WriteCounts

REFRESH_SECONDS = 0.1
MAX_LATEST = 12  # symbols the live display names at most
MAX_FAILURES_LISTED = 20


class Renderer(Protocol):
    """Shows a run's events. `refresh_every`: seconds between redraws while no event comes
    (a live display's rates and ETAs move on their own); `math.inf` for one that only
    writes what events say, which then never wakes the printer for nothing."""

    refresh_every: float

    def handle(self, event: Event) -> None: ...
    def refresh(self) -> None: ...
    def close(self) -> None: ...


async def run_printer(events: trio.MemoryReceiveChannel[Event], renderer: Renderer) -> None:
    """Render events until the channel closes, refreshing every `renderer.refresh_every`."""
    every = renderer.refresh_every
    next_refresh = trio.current_time() + every
    try:
        async with events:
            while True:
                with trio.move_on_at(next_refresh):
                    try:
                        renderer.handle(await events.receive())
                        while True:  # and what else has arrived, without a wait each
                            renderer.handle(events.receive_nowait())
                    except trio.WouldBlock:
                        pass
                    except trio.EndOfChannel:
                        break
                if trio.current_time() >= next_refresh:
                    renderer.refresh()
                    next_refresh = trio.current_time() + every
    finally:
        renderer.close()


# ------------------------------------------------------------------ shared bookkeeping


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


def plural(count: int, noun: str, many: str | None = None) -> str:
    """`1 error`, `2 errors`, `1,000 retries`."""
    return f"{count:,} {noun if count == 1 else many or noun + 's'}"


def format_duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _ranges(ranges: tuple[DateRange, ...]) -> str:
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
            notes.append(f"{totals.up_to_date:,} already up to date")
        lines.append(line + (f" ({', '.join(notes)})" if notes else ""))
    rate = summary.requests / summary.elapsed if summary.elapsed > 0 else 0.0
    retries = sum(t.retries for t in summary.datasets.values())
    lines.append(
        f"Requests: {summary.requests:,} in {format_duration(summary.elapsed)} ({rate:.1f}/s),"
        f" {retries:,} of them retries"
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
    if advice.reason == "unsettled":
        return (
            "Pace: the API refused, but the run was too short to tell its limit;"
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


# ------------------------------------------------------------------ plain lines


class PlainRenderer:
    """One line per step, in the spirit of a log: for pipes, files and CI."""

    refresh_every = math.inf  # every line comes from an event

    def __init__(self, out: TextIO | None = None) -> None:
        self._out = out or sys.stdout
        self._tracker = Tracker()
        self._headed: set[str] = set()

    def _print(self, line: str) -> None:
        print(line, file=self._out, flush=True)

    def handle(self, event: Event) -> None:
        tracker = self._tracker
        tag = tracker.handle(event)
        match event:
            case RunStarted():
                self._print(f"ntx: backfilling from {event.source} into {event.db_path}")
            case DatasetPlanned() if event.jobs == 0:
                self._print(
                    f"=== {event.title}: all {event.up_to_date:,} securities up to date ==="
                )
            case JobStarted():
                if event.dataset not in self._headed and tracker.run is not None:
                    self._headed.add(event.dataset)
                    self._print(f"=== Backfilling {event.dataset} ({tracker.run.pacing}) ===")
                self._print(f"{tag} {event.label} fetching{_ranges(event.ranges)}...")
            case JobFinished():
                if event.skipped:
                    outcome = f"skipped: {event.error}"
                elif event.error:
                    outcome = f"FAILED: {event.error}"
                else:
                    refused = f", {event.invalid:,} invalid" if event.invalid else ""
                    outcome = f"done ({plural(event.rows, 'record')}{refused})"
                if event.retries:
                    outcome += f" after {plural(event.retries, 'retry', 'retries')}"
                self._print(f"{tag} {event.label} {outcome}")
            case Paused():
                self._print(f"ntx: every worker waits {event.seconds:.1f}s: {event.reason}")
            case Paced() if event.reason != "faster":  # the climbs would be a line a tick
                self._print(f"ntx: {event.line} ({event.reason})")
            case Resumed():
                self._print(resumed_line(event))
            case RunFinished():
                for line in summary_lines(event.summary):
                    self._print(line)

    def refresh(self) -> None:
        pass

    def close(self) -> None:
        pass


# ------------------------------------------------------------------ JSON lines


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {value!r}")


_EVENT_SHAPES: dict[type, tuple[str, tuple[str, ...]]] = {}


def _event_shape(event: Event) -> tuple[str, tuple[str, ...]]:
    """(`job_finished` for `JobFinished`, its dataclass field names), worked out once per kind
    of event."""
    kind = type(event)
    shape = _EVENT_SHAPES.get(kind)
    if shape is None:
        name = "".join(f"_{c.lower()}" if c.isupper() else c for c in kind.__name__).lstrip("_")
        shape = _EVENT_SHAPES[kind] = (name, tuple(f.name for f in dataclasses.fields(event)))
    return shape


class JsonRenderer:
    """One JSON object per event, `{"event": "job_finished", ...}`, for other programs.

    Encoded by msgspec, which writes dataclasses and dates itself: an event costs a few
    microseconds, where `dataclasses.asdict` and `json.dumps` cost a hundred.
    """

    refresh_every = math.inf  # every line comes from an event

    def __init__(self, out: TextIO | None = None) -> None:
        self._out = out or sys.stdout
        self._encoder = msgspec.json.Encoder(enc_hook=_jsonable)

    def handle(self, event: Event) -> None:
        name, fields = _event_shape(event)
        payload: dict[str, Any] = {"event": name}
        payload.update((field, getattr(event, field)) for field in fields)
        if isinstance(event, RunFinished):
            payload["exit_code"] = event.summary.exit_code
        self._out.write(self._encoder.encode(payload).decode() + "\n")
        self._out.flush()

    def refresh(self) -> None:
        pass

    def close(self) -> None:
        pass


def choose_renderer(mode: str, out: TextIO | None = None) -> Renderer:
    """`auto` is rich on a terminal and plain lines otherwise."""
    out = out or sys.stdout
    if mode == "auto":
        mode = "rich" if out.isatty() else "plain"
    if mode == "rich":
        from rich.console import Console

        from ntx.ui.live import RichRenderer

        return RichRenderer(Console(file=out, force_terminal=True))
    if mode == "json":
        return JsonRenderer(out)
    return PlainRenderer(out)
