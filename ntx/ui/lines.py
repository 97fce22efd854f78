"""Output for pipes, logs and programs: plain lines (one per step) and JSON lines (one object
per event). They only display what events say; they never redraw on a timer."""

from __future__ import annotations

import dataclasses
import math
import sys
from pathlib import Path
from typing import Any, TextIO

import msgspec

from ntx.events import (
    DatasetPlanned,
    Event,
    Handshook,
    JobFinished,
    JobStarted,
    Paced,
    Paused,
    PricesPlanned,
    Resumed,
    RunFinished,
    RunStarted,
)
from ntx.ui.tally import Tracker, ranges_text, resumed_line, summary_lines, up_to_date
from ntx.words import plural


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
                self._print(f"=== {event.title}: {up_to_date(event.unit, event.up_to_date)} ===")
            case JobStarted():
                if event.dataset not in self._headed and tracker.run is not None:
                    self._headed.add(event.dataset)
                    self._print(f"=== Backfilling {event.dataset} ({tracker.run.pacing}) ===")
                self._print(f"{tag} {event.label} fetching{ranges_text(event.ranges)}...")
            case JobFinished():
                if event.skipped:
                    outcome = f"skipped: {event.error}"
                elif event.error:
                    outcome = f"FAILED: {event.error}"
                else:
                    refused = f", {event.invalid:,} invalid" if event.invalid else ""
                    outcome = f"done ({plural(event.rows, 'record')}{refused})"
                if event.outside and event.requests == 0:
                    outcome = f"not asked: {event.outside} is before the server's window"
                elif event.outside:
                    outcome += f"; {event.outside} is before the server's window"
                if event.retries and not event.error:  # a failure says how it gave up
                    outcome += f" after {plural(event.retries, 'retry', 'retries')}"
                self._print(f"{tag} {event.label} {outcome}")
            case Handshook():
                self._print(f"ntx: token handshake {event.number} ({event.reason})")
            case Paused():
                self._print(f"ntx: every worker waits {event.seconds:.1f}s: {event.reason}")
            case Paced() if event.reason != "faster":  # the climbs would be a line a tick
                self._print(f"ntx: {event.line} ({event.reason})")
            case Resumed():
                self._print(resumed_line(event))
            case PricesPlanned():
                self._print(f"ntx: price plan: {event.line}")
            case RunFinished():
                for line in summary_lines(event.summary):
                    self._print(line)

    def refresh(self) -> None:
        pass

    def close(self) -> None:
        pass


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {value!r}")


def event_name(event: Event) -> str:
    """`job_finished` for a `JobFinished`."""
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in type(event).__name__)[1:]


class JsonRenderer:
    """One JSON object per event, `{"event": "job_finished", ...}`, for other programs.

    Encoded by msgspec, which writes dates and nested dataclasses itself.
    """

    refresh_every = math.inf  # every line comes from an event

    def __init__(self, out: TextIO | None = None) -> None:
        self._out = out or sys.stdout
        self._encoder = msgspec.json.Encoder(enc_hook=_jsonable)

    def handle(self, event: Event) -> None:
        payload: dict[str, Any] = {"event": event_name(event)}
        payload.update(
            (field.name, getattr(event, field.name)) for field in dataclasses.fields(event)
        )
        if isinstance(event, RunFinished):
            payload["exit_code"] = event.summary.exit_code
        self._out.write(self._encoder.encode(payload).decode() + "\n")
        self._out.flush()

    def refresh(self) -> None:
        pass

    def close(self) -> None:
        pass
