"""Plain value types shared by the planner, the engine, the source and the store."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
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
    store records as covered once the job's rows are committed; `covered` is what the store
    covered when the job was planned. A by-date job has a `day` and no security: it fetches
    every security's rows of that business date (its one range is that day).
    """

    dataset: str
    security: Security | None = None
    ranges: tuple[DateRange, ...] = ()
    covers: DateRange | None = None
    covered: DateRange | None = None
    day: date | None = None

    @classmethod
    def on(cls, dataset: str, day: date, final: bool) -> Job:
        """The by-date job of one business date; only a `final` one (its rows will not
        change) is recorded as covered."""
        one_day = DateRange(day, day)
        return cls(dataset, ranges=(one_day,), covers=one_day if final else None, day=day)

    def within(self, first: date | None) -> tuple[Job | None, DateRange | None]:
        """This job for a server that serves nothing before `first`, and the days it asked
        for before `first`: (the job cut to the days from `first` on, the days cut off or
        None), or (None, the days) when nothing is left.

        The job's `covers` then claims only days stored: those from `first` on, joined to
        what was `covered` before if the two touch (else the older part is let go). It is cut
        even when the ranges are not: an earlier job of the same security may have been."""
        if first is None:
            return self, None
        outside = None
        kept = self.ranges
        if any(r.start < first for r in self.ranges):
            earliest = min(r.start for r in self.ranges)
            latest = max(r.end for r in self.ranges)
            outside = DateRange(earliest, min(first - timedelta(days=1), latest))
            kept = tuple(
                DateRange(max(r.start, first), r.end) for r in self.ranges if r.end >= first
            )
            if not kept:
                return None, outside
        covers = self.covers
        if covers is not None and covers.start < first <= covers.end:
            fetched = DateRange(first, covers.end)
            known = self.covered
            covers = known.union(fetched) if known and known.touches(fetched) else fetched
        elif covers is not None and covers.end < first:
            covers = None
        if kept == self.ranges and covers == self.covers:
            return self, outside
        return replace(self, ranges=kept, covers=covers), outside

    @property
    def label(self) -> str:
        if self.security is not None:
            return self.security.symbol
        if self.day is not None:
            return self.day.isoformat()
        return self.ranges_text or "lists"

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
    outside: DateRange | None = None  # asked days before the server's history window
    window_starts: date | None = None  # the window's first day, when `outside` is set

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def wholly_outside(self) -> bool:
        """Every asked day is before the server's window: nothing was fetched."""
        return self.outside is not None and all(r.end <= self.outside.end for r in self.job.ranges)

    @property
    def status(self) -> str:
        if not self.ok:
            return "skipped" if self.skipped else "failed"
        return "outside" if self.wholly_outside else "done"

    @property
    def outside_reason(self) -> str | None:
        """Why the `outside` days were not fetched, as `ntx_jobs.reason` records it."""
        if self.outside is None or self.window_starts is None:
            return None
        return (
            f"{self.outside} is before {self.window_starts},"
            " the first day the server's history window serves"
        )


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
