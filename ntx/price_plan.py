"""Which way a run fetches prices, and what each way would cost.

Prices come two ways: by business date (`today-price`: every security's day, opens included,
in a page or two) and by security (the history endpoint: one security's days, no opens). Per
run the planner counts the requests of both over what is missing, and chooses:

- by date, the missing sessions x the pages a date takes (a session is missing when it is not
  stored by date and some security of the universe lacks it; `--prices-by date` takes every
  session not stored by date, so as to bring the opens of rows fetched by security);
- by security, the securities whose covered range misses a session not stored by date, x the
  jobs (a page each) that fill their ranges;
- `auto` fetches by date unless by security costs at most a tenth of it (a few `--symbols`,
  say); `date` and `security` force one.

Sessions are Sunday to Thursday, not on the stored holiday list. Nothing here talks to the
network or the database.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum

from ntx.datasets import HOLIDAYS, PRICES, plan_jobs
from ntx.model import DateRange, Job, Security
from ntx.nepal import sessions
from ntx.words import plural

PAGE_ROWS = 500  # rows per page of the by-date answer
CHEAPER = 10  # by security wins when it costs at most a tenth of by date


class PricesBy(StrEnum):
    AUTO = "auto"
    DATE = "date"
    SECURITY = "security"


def pages_per_date(most_rows: int) -> int:
    """The pages one date's answer takes, judged from the most rows a stored date had: one
    before any is stored (a session has 300 to 450 rows)."""
    return max(1, math.ceil(most_rows / PAGE_ROWS))


@dataclass(frozen=True)
class PricePlan:
    """The chosen way (`date`, `security`, or `none` when nothing is missing), its jobs, and
    the requests each pure way would make. Each element of `jobs` is run by one worker."""

    chosen: str
    jobs: tuple[tuple[Job, ...], ...]
    by_date: int
    by_security: int
    dates: int  # sessions missing by date
    securities: int  # securities with gaps by security
    reason: str
    needed: int = 0  # sessions of the period up to the server's latest

    @property
    def requests(self) -> int:
        """The requests of the chosen way (its pages as estimated)."""
        if self.chosen == "retry":
            return self.by_date + self.by_security
        return {"date": self.by_date, "security": self.by_security}.get(self.chosen, 0)

    @property
    def line(self) -> str:
        """One line for people: which way, what it costs, and what the other would."""
        if self.chosen == "none":
            return f"nothing missing ({self.reason})"
        if self.chosen == "retry":
            return (
                f"the failed jobs again: {plural(self.dates, 'session')} by date and"
                f" {plural(self.securities, 'security', 'securities')} by security,"
                f" about {plural(self.requests, 'request')}"
            )
        other = "by security" if self.chosen == "date" else "by date"
        other_cost = self.by_security if self.chosen == "date" else self.by_date
        what = (
            plural(self.dates, "session")
            if self.chosen == "date"
            else plural(self.securities, "security", "securities")
        )
        return (
            f"by {self.chosen}, {what}, about {plural(self.requests, 'request')}"
            f" ({other} would take {other_cost:,}; {self.reason})"
        )


def plan_prices(
    universe: Sequence[Security],
    *,
    period: DateRange,
    today: date,
    last_day: date,
    final_through: date,
    holidays: AbstractSet[date],
    dates_known: Mapping[date, str],
    coverage: Mapping[int, DateRange],
    most_rows: int = 0,
    mode: PricesBy = PricesBy.AUTO,
    force: bool = False,
    only_days: AbstractSet[date] | None = None,
) -> PricePlan:
    """The run's price plan over `period`, asked no later than `last_day` (the server's
    latest business date); a date's rows are final through `final_through`.

    `dates_known` are the dates a by-date run stored whole, found closed or outside the
    server's window: never asked again (unless `force`). `coverage` is each security's
    covered range. With `only_days` (--retry-failed) the plan is `retry`: those days by
    date, and the securities of `universe` (the failed ones) by security.
    """
    asked = DateRange(period.start, min(period.end, last_day)) if period.start <= last_day else None
    needed = sessions(asked, holidays) if asked else []
    unknown = [day for day in needed if day not in dates_known]
    if only_days is not None:
        missing = [day for day in needed if day in only_days]
    elif force:
        missing = needed
    elif mode is PricesBy.DATE:
        missing = unknown  # every session not stored whole: opens for rows that lack them
    else:  # a session some security of the universe lacks: auto never refetches for opens
        missing = [
            day
            for day in unknown
            if any(sec.id not in coverage or day not in coverage[sec.id] for sec in universe)
        ]
    by_date_jobs = tuple((Job.on(PRICES.name, day, final=day <= final_through),) for day in missing)
    per_security = tuple(
        jobs
        for jobs in plan_jobs(
            PRICES,
            universe,
            period=period,
            today=today,
            coverage=coverage,
            force=force,
        )
        if force or any(day in part for job in jobs for part in job.ranges for day in unknown)
    )
    by_date = len(missing) * pages_per_date(most_rows)
    by_security = sum(len(jobs) for jobs in per_security)
    if only_days is not None:
        chosen, reason = "retry", "--retry-failed"
        jobs = by_date_jobs + per_security
    else:
        chosen, reason = _choose(mode, by_date, by_security)
        jobs = {"date": by_date_jobs, "security": per_security}.get(chosen, ())
    return PricePlan(
        chosen, jobs, by_date, by_security, len(missing), len(per_security), reason, len(needed)
    )


def _choose(mode: PricesBy, by_date: int, by_security: int) -> tuple[str, str]:
    if mode is PricesBy.DATE:
        return ("date" if by_date else "none"), "--prices-by date"
    if mode is PricesBy.SECURITY:
        return ("security" if by_security else "none"), "--prices-by security"
    if not by_date and not by_security:
        return "none", "nothing is missing"
    if by_security * CHEAPER <= by_date:
        return "security", "at most a tenth of by date: no opens"
    return "date", "only by date brings opens"


def calendar_jobs(
    period: DateRange,
    covered: DateRange | None,
    fetched: datetime | None,
    fresh_since: datetime | None,
) -> list[Job]:
    """The holiday-list jobs of the years `period` touches, newest first: the years not yet
    fetched (and any between them and those fetched, so that what is covered stays one
    range), and the years the last fetch did not see end if it was made before
    `fresh_since` (every year when `fresh_since` is None)."""
    years = DateRange(date(period.start.year, 1, 1), date(period.end.year, 12, 31))
    if covered is None:
        wanted = set(_years(years))
    else:
        wanted = {year for part in years.missing_from(covered) for year in _years(part)}
        unfinished = fetched.year if fetched else period.start.year
        stale = fresh_since is None or fetched is None or fetched < fresh_since
        if stale:
            wanted |= {year for year in _years(years) if year >= unfinished}
    jobs = []
    running = covered
    for year in sorted(wanted, reverse=True):
        whole = DateRange(date(year, 1, 1), date(year, 12, 31))
        running = running.union(whole) if running else whole
        jobs.append(Job(HOLIDAYS.name, ranges=(whole,), covers=running, covered=covered))
    return jobs


def _years(period: DateRange) -> Iterable[int]:
    return range(period.start.year, period.end.year + 1)
