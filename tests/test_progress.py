"""The progress renderers, fed events under MockClock: what a person sees."""

from __future__ import annotations

import io
import json
import math
from datetime import date
from pathlib import Path

import trio
from rich.console import Console
from trio.testing import MockClock

from ntx.events import (
    DatasetPlanned,
    DatasetTotals,
    Event,
    Failure,
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
from ntx.ui.lines import JsonRenderer, PlainRenderer
from ntx.ui.live import RichRenderer
from ntx.ui.printer import run_printer
from ntx.ui.tally import format_duration


async def feed(renderer: PlainRenderer | RichRenderer) -> None:
    """Ten one-request jobs, 0.2 s apart, then two idle seconds."""
    renderer.handle(RunStarted("http://api.test", Path("x.db"), 5, 0.2))
    renderer.handle(DatasetPlanned("prices", "Prices", 10, 3))
    for i in range(10):
        label = f"S{i}"
        renderer.handle(JobStarted("prices", label, ()))
        await trio.sleep(0.2)
        renderer.handle(JobFinished("prices", label, 5, 1, "HTTP 500 from /x" if i == 3 else None))
    renderer.handle(RowsCommitted("prices", WriteCounts(new=45)))
    await trio.sleep(2.0)


async def test_rich_bars_show_counts_and_a_rate_that_stops_when_done(mock_clock: MockClock) -> None:
    out = io.StringIO()
    renderer = RichRenderer(Console(file=out, force_terminal=True, width=140, color_system=None))
    await feed(renderer)
    renderer.refresh()
    renderer.close()
    screen = out.getvalue()
    last_frame = screen[screen.rfind("Prices") :]
    assert "10/10" in last_frame and "ETA done" in last_frame
    assert "5.0 req/s" in last_frame  # 10 requests over 2.0 s, not diluted by the idle time
    assert "45 new, 0 updated" in last_frame and "1 error, 0 retries" in last_frame


async def test_the_live_line_names_what_the_workers_are_on_between_requests_too(
    mock_clock: MockClock,
) -> None:
    out = io.StringIO()
    renderer = RichRenderer(Console(file=out, force_terminal=True, width=140, color_system=None))

    def working_line() -> str:
        renderer.refresh()
        screen = out.getvalue()
        return screen[screen.rfind("working on:") :].splitlines()[0].strip()

    renderer.handle(RunStarted("http://api.test", Path("x.db"), 3, 0.2))
    renderer.handle(DatasetPlanned("prices", "Prices", 5, 0))
    assert working_line() == "working on: -"
    for label in ("A", "B", "C", "D"):
        renderer.handle(JobStarted("prices", label, ()))
        renderer.handle(JobFinished("prices", label, 1, 1, None))  # answered; its slot now rests
    assert working_line() == "working on: B C D"  # the last 3 started: one per worker
    renderer.handle(Paced(2, 0.1, 20.0, 18.0, "congestion"))
    assert working_line() == "working on: C D"  # --sleep auto took a worker away
    renderer.handle(JobStarted("prices", "E", ()))
    renderer.handle(JobFinished("prices", "E", 1, 1, None))
    assert working_line() == "working on: -"  # every job finished
    renderer.close()


async def test_plain_lines_number_jobs_and_end_with_the_summary(mock_clock: MockClock) -> None:
    out = io.StringIO()
    renderer = PlainRenderer(out)
    await feed(renderer)
    totals = DatasetTotals(
        "prices",
        "Prices",
        jobs=10,
        up_to_date=3,
        done=9,
        failed=1,
        requests=10,
        rows=WriteCounts(45, 2, 1),
        started_at=0.0,
        finished_at=112.0,
    )
    summary = RunSummary(
        1,
        Path("x.db"),
        {"prices": totals},
        [Failure("prices", "S3", "HTTP 500 from /x")],
        10,
        112.0,
    )
    renderer.handle(RunFinished(summary))
    lines = out.getvalue().splitlines()
    assert lines[:4] == [
        "ntx: backfilling from http://api.test into x.db",
        "=== Backfilling prices (5 workers, 0.2 s throttle) ===",
        "[prices 1/10] S0 fetching...",
        "[prices 1/10] S0 done (5 records)",
    ]
    assert "[prices 4/10] S3 FAILED: HTTP 500 from /x" in lines
    assert (
        "Prices: 45 new, 2 updated, 1 unchanged, 1 error in 1m52s (3 securities already up to date)"
        in lines
    )
    assert "  prices S3: HTTP 500 from /x" in lines
    assert lines[-1] == f"Database: {Path('x.db').resolve()}"


def test_durations_read_like_a_clock() -> None:
    assert [format_duration(s) for s in (0.04, 59.94, 112, 3600 + 120)] == [
        "0.0s",
        "59.9s",
        "1m52s",
        "1h02m",
    ]


async def test_rich_shows_a_pause_with_its_countdown(mock_clock: MockClock) -> None:
    out = io.StringIO()
    renderer = RichRenderer(Console(file=out, force_terminal=True, width=140, color_system=None))
    renderer.handle(RunStarted("http://api.test", Path("x.db"), 5, 0.2))
    renderer.handle(DatasetPlanned("prices", "Prices", 10, 0))
    renderer.handle(Paused(30.0, "10 failures in a row (last: HTTP 503 from /x)"))
    await trio.sleep(12)
    renderer.refresh()
    assert (
        "paused, resuming in 18s: 10 failures in a row (last: HTTP 503 from /x)" in out.getvalue()
    )
    await trio.sleep(20)
    out.truncate(0)
    renderer.refresh()
    renderer.close()
    assert "paused" not in out.getvalue()  # over: the line is gone


def test_json_lines_carry_every_field_of_every_event() -> None:
    """The JSON contract: one line per event, its name then its fields as JSON (nested
    objects included, dates as ISO strings, paths as text), and the run's exit code."""
    summary = RunSummary(
        1,
        Path("x.db"),
        {"prices": DatasetTotals("prices", "Prices", jobs=2, done=1, rows=WriteCounts(5, 1, 2))},
        [Failure("prices", "NABIL", "HTTP 500 from /x")],
        requests=7,
        elapsed=1.5,
        advice=Paced(3, 0.07, 28.3, 27.0, "refused", 12.5),
    )
    period = DateRange(date(2024, 1, 1), date(2024, 3, 31))
    events = [
        RunStarted("http://api.test", Path("x.db"), 5, 0.2, 10.0, auto=True),
        Resumed(4, 17),
        DatasetPlanned("prices", "Prices", 2, 0),
        JobStarted("prices", "NABIL", (period,)),
        JobFinished("prices", "NABIL", 5, 2, "HTTP 500 from /x", retries=1),
        RowsCommitted("prices", WriteCounts(5, 1, 2)),
        Paused(2.5, "429"),
        Paced(6, 0.09, 38.4, 36.0, "start", 1.0),
        RunFinished(summary),
    ]
    out = io.StringIO()
    renderer = JsonRenderer(out)
    for event in events:
        renderer.handle(event)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["event"] for line in lines] == [
        "run_started",
        "resumed",
        "dataset_planned",
        "job_started",
        "job_finished",
        "rows_committed",
        "paused",
        "paced",
        "run_finished",
    ]
    assert lines[0] == {
        "event": "run_started",
        "source": "http://api.test",
        "db_path": "x.db",
        "workers": 5,
        "sleep": 0.2,
        "rate": 10.0,
        "auto": True,
    }
    assert lines[3]["ranges"] == [{"start": "2024-01-01", "end": "2024-03-31"}]
    assert lines[5]["counts"] == {"new": 5, "updated": 1, "unchanged": 2}
    finished = lines[8]
    assert finished["exit_code"] == 1
    assert finished["summary"]["datasets"]["prices"]["rows"] == {
        "new": 5,
        "updated": 1,
        "unchanged": 2,
    }
    assert finished["summary"]["failures"] == [
        {"dataset": "prices", "label": "NABIL", "reason": "HTTP 500 from /x"}
    ]
    assert finished["summary"]["advice"]["workers"] == 3


async def test_the_printer_redraws_a_live_display_on_a_timer_and_wakes_no_other_for_nothing(
    mock_clock: MockClock,
) -> None:
    class Counted(PlainRenderer):
        def __init__(self, refresh_every: float) -> None:
            super().__init__(io.StringIO())
            self.refresh_every = refresh_every
            self.refreshes = 0

        def refresh(self) -> None:
            self.refreshes += 1

    for refresh_every, expected in ((0.1, 10), (math.inf, 0)):
        renderer = Counted(refresh_every)
        send, receive = trio.open_memory_channel[Event](10)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_printer, receive, renderer)
            await trio.sleep(1.05)  # no events at all
            await send.send(RunStarted("http://api.test", Path("x.db"), 5, 0.2))
            await send.aclose()
        assert renderer.refreshes == expected
