"""What a run tells its progress printer, and the summary it ends with.

Events flow one way, from the engine and the writer to the one task that owns the terminal.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from ntx.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK
from ntx.model import DateRange, WriteCounts


@dataclass(frozen=True)
class RunStarted:
    source: str
    db_path: Path
    workers: int
    sleep: float
    rate: float | None = None
    auto: bool = False  # --sleep auto: workers and sleep are where the pace starts

    @property
    def pacing(self) -> str:
        """`5 workers, 0.2 s throttle` (and `, at most 10 requests/s` with --rate)."""
        text = f"{self.workers} workers, {self.sleep:g} s throttle"
        if self.auto:
            text = f"auto pace from {text}"
        return text + (f", at most {self.rate:g} requests/s" if self.rate else "")


@dataclass(frozen=True)
class Resumed:
    """This run resumes an unfinished one: `jobs` it did are not fetched again."""

    run_id: int
    jobs: int


@dataclass(frozen=True)
class DatasetPlanned:
    dataset: str
    title: str
    jobs: int
    up_to_date: int
    unit: str = "securities"  # what a job is for: securities, sessions, years, or the lists


@dataclass(frozen=True)
class PricesPlanned:
    """How this run fetches prices (`date`, `security` or `none`) and what each way would
    cost in requests; `line` says it in words."""

    chosen: str
    by_date: int
    by_security: int
    sessions: int
    securities: int
    reason: str
    line: str


@dataclass(frozen=True)
class JobStarted:
    dataset: str
    label: str
    ranges: tuple[DateRange, ...]


@dataclass(frozen=True)
class JobFinished:
    dataset: str
    label: str
    rows: int
    requests: int
    error: str | None
    retries: int = 0
    skipped: bool = False
    invalid: int = 0
    outside: str | None = None  # the asked days before the server's history window


@dataclass(frozen=True)
class Handshook:
    """A new API token (token handshake number `number` of the run), and why."""

    number: int
    reason: str


@dataclass(frozen=True)
class Paused:
    """Every worker waits `seconds` (after a 429, or while the circuit breaker cools down)."""

    seconds: float
    reason: str


@dataclass(frozen=True)
class Paced:
    """`--sleep auto` set the knobs: `workers` slots, each sleeping `sleep` after a request,
    their requests spaced evenly at `target` requests/s."""

    workers: int
    sleep: float
    target: float  # requests/s the knobs are set for
    achieved: float  # healthy answers/s lately
    reason: str  # "start", "faster", "probe", "congestion", "latency"
    at: float = 0.0  # when, on trio's clock

    @property
    def flags(self) -> str:
        """The pace as flags: `--workers 6 --sleep 0 --rate 57.5`."""
        return f"--workers {self.workers} --sleep {round(self.sleep, 2):g} --rate {self.target:g}"

    @property
    def line(self) -> str:
        return (
            f"pace: {self.workers} workers, {self.target:.1f} requests/s targeted"
            f" (evenly spaced), {self.achieved:.1f}/s answered"
        )


@dataclass(frozen=True)
class RowsCommitted:
    dataset: str
    counts: WriteCounts


@dataclass
class DatasetTotals:
    """A dataset's part of a run; rows and job outcomes count only what was committed."""

    dataset: str
    title: str
    jobs: int = 0
    up_to_date: int = 0
    unit: str = "securities"  # what a job is for: securities, sessions, years, or the lists
    done: int = 0
    failed: int = 0
    skipped: int = 0
    outside: int = 0  # securities whose asked days begin before the server's history window
    requests: int = 0
    retries: int = 0
    invalid: int = 0
    rows: WriteCounts = field(default_factory=WriteCounts)
    started_at: float | None = None
    finished_at: float | None = None

    @property
    def elapsed(self) -> float:
        if self.started_at is None or self.finished_at is None:
            return 0.0
        return self.finished_at - self.started_at


@dataclass(frozen=True)
class Failure:
    dataset: str
    label: str
    reason: str


@dataclass
class RunSummary:
    """The outcome of a run, as printed at its end and mapped to the exit status."""

    run_id: int
    db_path: Path
    datasets: dict[str, DatasetTotals]
    failures: list[Failure]
    requests: int
    elapsed: float
    skips: list[Failure] = field(default_factory=list)
    interrupted: bool = False
    command: str = ""
    advice: Paced | None = None  # --sleep auto: the pace to give as flags next time
    handshakes: int = 0  # token handshakes made (their requests are among `requests`)
    window_starts: date | None = None  # the first day of the server's history window, if found
    price_plan: PricesPlanned | None = None  # how prices were fetched, when they were
    without_open: int = 0  # price rows of the period that lack an open price

    @property
    def rows_saved(self) -> int:
        return sum(t.rows.new + t.rows.updated for t in self.datasets.values())

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return EXIT_INTERRUPTED
        return EXIT_FAILED if self.failures else EXIT_OK


@dataclass(frozen=True)
class RunFinished:
    summary: RunSummary


Event = (
    RunStarted
    | Resumed
    | DatasetPlanned
    | PricesPlanned
    | JobStarted
    | JobFinished
    | RowsCommitted
    | Handshook
    | Paused
    | Paced
    | RunFinished
)
