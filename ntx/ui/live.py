"""The live display: rich bars, one per dataset, redrawn by the progress printer."""

from __future__ import annotations

import trio
from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from ntx.events import Event, PricesPlanned, Resumed, RunFinished, RunStarted
from ntx.ui.tally import Tracker, format_duration, resumed_line, summary_lines
from ntx.words import plural

REFRESH_SECONDS = 0.1


class RichRenderer:
    """Live bars, one per dataset, and the symbols the workers are on; the summary when done."""

    refresh_every = REFRESH_SECONDS  # rates and ETAs move between events

    def __init__(self, console: Console | None = None) -> None:
        self._console = console or Console()
        self._tracker = Tracker()
        self._live = Live(console=self._console, auto_refresh=False, transient=False)
        self._live.start()

    def handle(self, event: Event) -> None:
        self._tracker.handle(event)
        if isinstance(event, RunStarted):
            self._console.print(
                f"[bold]ntx[/] backfilling from {event.source} into {event.db_path}"
                f" ({event.pacing})"
            )
        elif isinstance(event, Resumed):
            self._console.print(resumed_line(event), highlight=False)
        elif isinstance(event, PricesPlanned):
            self._console.print(f"Price plan: {event.line}", highlight=False)
        elif isinstance(event, RunFinished):
            self.refresh()
            self._live.stop()
            for line in summary_lines(event.summary):
                self._console.print(line, highlight=False)

    def refresh(self) -> None:
        if self._live.is_started:
            self._live.update(self._render(), refresh=True)

    def close(self) -> None:
        if self._live.is_started:
            self.refresh()
            self._live.stop()

    def _render(self) -> Group:
        now = trio.current_time()
        table = Table.grid(padding=(0, 2))
        for _ in range(7):
            table.add_column()
        for view in self._tracker.datasets.values():
            elapsed = now - view.first_start if view.first_start is not None else 0.0
            remaining = view.jobs - view.finished
            eta = "-"
            if remaining == 0:
                eta = "done"
            elif view.finished and elapsed > 0:
                eta = format_duration(remaining * elapsed / view.finished)
            errors = Text(
                f"{plural(view.failed, 'error')}, {plural(view.retries, 'retry', 'retries')}",
                style="red" if view.failed else "dim",
            )
            table.add_row(
                Text(view.title, style="bold"),
                ProgressBar(
                    total=max(view.jobs, 1), completed=view.finished if view.jobs else 1, width=30
                ),
                f"{view.finished:,}/{view.jobs:,}",
                f"{view.rate(now):5.1f} req/s",
                f"ETA {eta}",
                f"{view.rows.new:,} new, {view.rows.updated:,} updated",
                errors,
            )
        tracker = self._tracker
        elapsed = now - (tracker.started_at or now)
        overall = Text(
            f"{tracker.requests:,} requests in {format_duration(elapsed)}"
            f" ({tracker.requests / elapsed if elapsed > 0 else 0.0:.1f}/s)",
            style="dim",
        )
        if tracker.pace is not None:
            overall.append(f"; {tracker.pace.line}")
        working, more = tracker.working_on()
        line = Text("working on: ", style="dim")
        line.append(" ".join(working) + (" ..." if more else "") or "-")
        if now < tracker.paused_until:
            pause = Text(
                f"paused, resuming in {tracker.paused_until - now:.0f}s: {tracker.pause_reason}",
                style="yellow",
            )
            return Group(table, overall, pause, line)
        return Group(table, overall, line)
