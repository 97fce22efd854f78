"""Plain value types shared by the planner, the engine, the source and the store."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

Row = tuple[Any, ...]
JobKey = tuple[int | None, str | None]  # a job's security id and ranges, as ntx_jobs has them


@dataclass(frozen=True, slots=True)
class DateRange:
    """An inclusive range of calendar dates; `start <= end` always holds."""

    start: date
    end: date

    def __post_init__(self) -> None:
        if self.start > self.end:
            raise ValueError(f"empty date range {self.start} to {self.end}")

    @classmethod
    def parse(cls, start: str, end: str) -> DateRange:
        return cls(date.fromisoformat(start), date.fromisoformat(end))

    def __str__(self) -> str:
        return f"{self.start.isoformat()} to {self.end.isoformat()}"

    def __contains__(self, day: object) -> bool:
        return isinstance(day, date) and self.start <= day <= self.end

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1

    def union(self, other: DateRange) -> DateRange:
        """The smallest range holding both (callers keep them adjacent or overlapping)."""
        return DateRange(min(self.start, other.start), max(self.end, other.end))

    def missing_from(self, covered: DateRange | None) -> tuple[DateRange, ...]:
        """What to fetch so that `covered` grows to hold this range, staying one range.

        The parts before `covered.start` and after `covered.end`; a part reaches all the way
        to `covered`, so a range far from what is stored also fills the gap between them.
        """
        if covered is None:
            return (self,)
        parts = []
        if self.start < covered.start:
            parts.append(DateRange(self.start, covered.start - timedelta(days=1)))
        if self.end > covered.end:
            parts.append(DateRange(covered.end + timedelta(days=1), self.end))
        return tuple(parts)

    def overlaps(self, other: DateRange) -> bool:
        """True when the two ranges share a day."""
        return self.start <= other.end and other.start <= self.end

    def split(self, days: int, *, newest_first: bool = False) -> list[DateRange]:
        """This range cut into consecutive pieces of at most `days` days, oldest first (or
        newest first); the last piece in that order is the short one."""
        step = timedelta(days=days)
        pieces = []
        if newest_first:
            end = self.end
            while end >= self.start:
                start = max(self.start, end - step + timedelta(days=1))
                pieces.append(DateRange(start, end))
                end = start - timedelta(days=1)
        else:
            start = self.start
            while start <= self.end:
                end = min(self.end, start + step - timedelta(days=1))
                pieces.append(DateRange(start, end))
                start = end + timedelta(days=1)
        return pieces

    def touches(self, other: DateRange) -> bool:
        """True when the two ranges overlap or are adjacent (their union is one range)."""
        return self.start <= other.end + timedelta(days=1) and other.start <= self.end + timedelta(
            days=1
        )


@dataclass(frozen=True, slots=True)
class Security:
    """One listed security, as the universe of a run knows it."""

    id: int
    symbol: str
    name: str | None = None
    sector: str | None = None
    instrument_type: str | None = None
    status: str | None = None


@dataclass(frozen=True, slots=True)
class Job:
    """One unit of work: a dataset for one security (or for the whole list).

    `ranges` are the date ranges to fetch (ranged datasets only); `covers` is the range the
    store records as covered once the job's rows are committed.
    """

    dataset: str
    security: Security | None = None
    ranges: tuple[DateRange, ...] = ()
    covers: DateRange | None = None

    @property
    def label(self) -> str:
        return self.security.symbol if self.security else "lists"

    @property
    def key(self) -> JobKey:
        return (self.security.id if self.security else None, self.ranges_text)

    @property
    def ranges_text(self) -> str | None:
        """The ranges as `ntx_jobs.ranges` records them."""
        return ",".join(str(r) for r in self.ranges) or None


@dataclass(slots=True)
class JobResult:
    """What a fetcher hands the writer: the job's rows, or why it failed."""

    job: Job
    rows: list[Row] = field(default_factory=list)
    error: str | None = None  # why it failed, or why it was skipped
    requests: int = 0
    retries: int = 0
    skipped: bool = False  # the API has no such resource (404): not a failure
    invalid: list[tuple[Row, str]] = field(default_factory=list)  # refused rows, and why

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def status(self) -> str:
        return "done" if self.ok else "skipped" if self.skipped else "failed"


@dataclass(slots=True)
class WriteCounts:
    """How an upsert changed the table: rows inserted, rows changed, rows already equal."""

    new: int = 0
    updated: int = 0
    unchanged: int = 0

    def add(self, other: WriteCounts) -> None:
        self.new += other.new
        self.updated += other.updated
        self.unchanged += other.unchanged
