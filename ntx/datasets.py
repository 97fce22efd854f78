"""One declarative spec per dataset: its table and key, how its jobs are planned, and how the
source's answers become rows. Nothing here talks to the network or the run's database; the engine
runs every dataset through the same pipeline.

Adding a dataset means adding a `Dataset` here, its table in `ntx.db.schema.TABLES` and a
migration that creates it.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from datetime import date, timedelta
from functools import wraps
from typing import Any

from ntx.db.schema import TABLES, Table
from ntx.errors import MalformedResponse, UsageError
from ntx.model import DateRange, Job, Row, Security
from ntx.sources import Source
from ntx.sources.nepse.wire import CompanyRecord, SecurityRecord, Wire, number, shape_error, text


@dataclass(frozen=True)
class Dataset:
    """How one dataset is fetched and stored.

    `fetch` names the source calls for a job; `to_rows` turns their answer into rows in the
    order of `table.columns` (raising `MalformedResponse` on a wrongly shaped answer). A
    `ranged` dataset's jobs carry date ranges planned from what the store already covers;
    the others are fetched whole on every run.
    """

    name: str
    title: str
    table: Table
    fetch: Callable[[Source, Job], Awaitable[Any]]
    to_rows: Callable[[Any, Job], list[Row]]
    check: Callable[[Row, Job], str | None] = lambda row, job: None
    ranged: bool = False
    per_security: bool = True

    def broken_rule(self, row: Row, job: Job) -> str | None:
        """The rule a row breaks, or None: every number finite, then the dataset's own rules."""
        for name, value in zip(self.table.columns, row, strict=True):
            if isinstance(value, float) and not math.isfinite(value):
                return f"{name} is not a finite number"
        return self.check(row, job)

    def split_valid(self, rows: list[Row], job: Job) -> tuple[list[Row], list[tuple[Row, str]]]:
        """The rows to store, and the others with the rule each breaks."""
        valid: list[Row] = []
        invalid: list[tuple[Row, str]] = []
        for row in rows:
            rule = self.broken_rule(row, job)
            if rule is None:
                valid.append(row)
            else:
                invalid.append((row, rule))
        return valid, invalid


def _shape_checked(convert: Callable[[Any, Job], list[Row]]) -> Callable[[Any, Job], list[Row]]:
    """Turns the lookup errors of walking untrusted JSON into `MalformedResponse`."""

    @wraps(convert)
    def checked(wire: Any, job: Job) -> list[Row]:
        try:
            return convert(wire, job)
        except (KeyError, IndexError, TypeError, AttributeError, ValueError) as exc:
            raise MalformedResponse(shape_error(exc)) from exc

    return checked


def _security_id(job: Job) -> int:
    assert job.security is not None, "per-security job without a security"
    return job.security.id


def _latest_first(entries: Iterable[Wire]) -> list[Wire]:
    """Entries newest revision first (by modifiedDate, then id), so the first per key wins."""

    def revision(entry: Wire) -> tuple[str, int]:
        return (str(entry.get("modifiedDate") or ""), int(entry.get("id") or 0))

    return sorted((e for e in entries if isinstance(e, dict)), key=revision, reverse=True)


def _unique_by_key(rows: Iterable[Row], key_width: int) -> list[Row]:
    """The first row for each key (rows' key columns come first)."""
    seen: dict[Row, Row] = {}
    for row in rows:
        seen.setdefault(row[:key_width], row)
    return list(seen.values())


# ---------------------------------------------------------------- companies (the lists)

DEFAULT_INSTRUMENT = "Equity"
ACTIVE = "A"


@dataclass(frozen=True)
class Lists:
    """Both list answers of one run, decoded whole."""

    companies: list[CompanyRecord]
    securities: list[SecurityRecord]


async def _fetch_lists(source: Source, job: Job) -> Lists:
    return Lists(await source.companies(), await source.securities())


def _listing_rows(lists: Lists, job: Job) -> list[Row]:
    """The `securities` rows: one per security of the security list, in its order, joined by
    symbol to the last company-list record of that symbol; a company's name and status, where
    missing or empty, come from the security list."""
    company = {record.symbol: record for record in lists.companies}  # the last one wins
    rows = []
    for listed in lists.securities:
        found = company.get(listed.symbol) or CompanyRecord(symbol=listed.symbol)
        rows.append(
            (
                listed.id,
                listed.symbol,
                found.company_name or listed.security_name,
                found.sector_name,
                found.instrument_type,
                found.status or listed.active_status,
                listed.security_name,
                found.id,
                found.company_email,
                found.website,
                found.regulatory_body,
            )
        )
    return rows


def choose_universe(
    securities: Iterable[Row], symbols: Sequence[str], all_instruments: bool
) -> list[Security]:
    """The securities a run covers, sorted by symbol, from the `securities` rows.

    Named `symbols` (case-insensitive) are taken exactly, and every one must exist
    (`UsageError` names the others); otherwise every listed security, or by default the
    active equities.
    """
    listed = [Security(*row[:6]) for row in securities]
    if symbols:
        wanted = list(dict.fromkeys(symbol.upper() for symbol in symbols))
        found = {sec.symbol.upper(): sec for sec in listed if sec.symbol.upper() in wanted}
        unknown = [symbol for symbol in wanted if symbol not in found]
        if unknown:
            noun = "symbol" if len(unknown) == 1 else "symbols"
            raise UsageError(f"unknown {noun} {', '.join(unknown)}: not in the security list")
        chosen = list(found.values())
    elif all_instruments:
        chosen = listed
    else:
        chosen = [
            sec
            for sec in listed
            if sec.instrument_type == DEFAULT_INSTRUMENT and sec.status == ACTIVE
        ]
    return sorted(chosen, key=lambda sec: sec.symbol)


# ---------------------------------------------------------------- prices


async def _fetch_prices(source: Source, job: Job) -> list[Row]:
    """Each page becomes rows as it arrives: a long history is held as rows, not answers.
    A by-date job asks for every security's day, the others for one security's history."""

    def keep(page: list[Wire]) -> list[Row]:
        return _price_rows(page, job) if job.day is None else _day_rows(page, job)

    if job.day is not None:
        return await source.prices_on(job.day, keep)

    rows: list[Row] = []
    for period in job.ranges:
        rows.extend(await source.price_history(_security_id(job), period, keep))
    return rows


def _already_rows(rows: list[Row], job: Job) -> list[Row]:
    return rows


@_shape_checked
def _price_rows(wire: list[Wire], job: Job) -> list[Row]:
    sec_id = _security_id(job)
    rows = []
    for item in wire:
        day = date.fromisoformat(item["businessDate"]).isoformat()
        rows.append(
            (
                sec_id,
                day,
                number(item.get("openPrice")),  # history rows carry no open price
                number(item["highPrice"]),
                number(item["lowPrice"]),
                number(item["closePrice"]),
                number(item.get("totalTradedQuantity")),
                number(item.get("totalTradedValue")),
                number(item.get("totalTrades")),
                None,  # the by-date columns: history has none of them
                None,
                None,
                None,
            )
        )
    return rows


@_shape_checked
def _day_rows(wire: list[Wire], job: Job) -> list[Row]:
    """The `prices` rows of one page of the by-date answer: every column, open included."""
    rows = []
    for item in wire:
        rows.append(
            (
                int(item["securityId"]),
                date.fromisoformat(item["businessDate"]).isoformat(),
                number(item.get("openPrice")),
                number(item["highPrice"]),
                number(item["lowPrice"]),
                number(item["closePrice"]),
                number(item.get("totalTradedQuantity")),
                number(item.get("totalTradedValue")),
                number(item.get("totalTrades")),
                number(item.get("previousDayClosePrice")),
                number(item.get("averageTradedPrice")),
                number(item.get("fiftyTwoWeekHigh")),
                number(item.get("fiftyTwoWeekLow")),
            )
        )
    return rows


CLOSE_TOLERANCE = 0.001  # close may stray this share of high (at least 0.01) outside [low, high]


def _check_price(row: Row, job: Job) -> str | None:
    _, day, opened, high, low, close, volume, turnover, trades, _, _, high_52w, low_52w = row
    if not any(date.fromisoformat(day) in period for period in job.ranges):
        return f"date {day} is outside the requested range"
    if high is None or low is None or close is None:
        return "high, low and close must all be present"
    if low > high:
        return f"low {low} is above high {high}"
    tolerance = max(0.01, CLOSE_TOLERANCE * abs(high))
    for name, value in (("close", close), ("open", opened)):
        if value is not None and not low - tolerance <= value <= high + tolerance:
            return f"{name} {value} is outside [low {low}, high {high}]"
    for name, value in (("volume", volume), ("turnover", turnover), ("trades", trades)):
        if value is not None and value < 0:
            return f"{name} {value} is negative"
    if high_52w is not None and low_52w is not None and low_52w > high_52w:
        return f"52-week low {low_52w} is above the 52-week high {high_52w}"
    return None


# ---------------------------------------------------------------- reports

QUARTERS = {
    "First Quarter": "Q1",
    "Second Quarter": "Q2",
    "Third Quarter": "Q3",
    "Fourth Quarter": "Q4",
}


async def _fetch_reports(source: Source, job: Job) -> list[Wire]:
    return await source.reports(_security_id(job))


def _period(fiscal_report: Wire) -> str:
    quarter = fiscal_report.get("quarterMaster")
    if not quarter:
        return "annual"
    name = quarter.get("quarterName")
    if name in QUARTERS:
        return QUARTERS[name]
    number = quarter.get("id")
    if isinstance(number, int) and 1 <= number <= 4:
        return f"Q{number}"
    raise ValueError(f"unknown quarter {name!r}")


@_shape_checked
def _report_rows(wire: list[Wire], job: Job) -> list[Row]:
    """One row per (fiscal year, period); of several revisions the newest wins."""
    sec_id = _security_id(job)
    rows = []
    for entry in _latest_first(wire):
        report = entry.get("fiscalReport")
        if not report:
            continue  # an entry without figures
        rows.append(
            (
                sec_id,
                text(report["financialYear"]["fyName"]),
                _period(report),
                number(report.get("epsValue")),
                number(report.get("peValue")),
                number(report.get("netWorthPerShare")),
                number(report.get("paidUpCapital")),
                number(report.get("profitAmount")),
            )
        )
    return _unique_by_key(rows, 3)


# ---------------------------------------------------------------- dividends


def _check_dividend(row: Row, job: Job) -> str | None:
    for name, value in zip(("cash_pct", "bonus_pct", "right_pct"), row[2:], strict=True):
        if value is not None and value < 0:
            return f"{name} {value} is negative"
    return None


async def _fetch_dividends(source: Source, job: Job) -> list[Wire]:
    return await source.dividends(_security_id(job))


@_shape_checked
def _dividend_rows(wire: list[Wire], job: Job) -> list[Row]:
    """One row per fiscal year; of several notices the newest wins."""
    sec_id = _security_id(job)
    rows = []
    for entry in _latest_first(wire):
        notice = (entry.get("companyNews") or {}).get("dividendsNotice")
        if not notice:
            continue  # news without a dividend notice
        rows.append(
            (
                sec_id,
                text(notice["financialYear"]["fyName"]),
                number(notice.get("cashDividend")),
                number(notice.get("bonusShare")),
                number(notice.get("rightShare")),
            )
        )
    return _unique_by_key(rows, 2)


# ---------------------------------------------------------------- ownership


async def _fetch_ownership(source: Source, job: Job) -> dict[str, Wire]:
    return await source.ownership(_security_id(job))


def _check_ownership(row: Row, job: Job) -> str | None:
    _, listed, _, public, public_pct, promoter, promoter_pct = row
    for name, pct in (("public_pct", public_pct), ("promoter_pct", promoter_pct)):
        if pct is not None and not 0 <= pct <= 100:
            return f"{name} {pct} is not a percentage from 0 to 100"
    for name, shares in (
        ("listed_shares", listed),
        ("public_shares", public),
        ("promoter_shares", promoter),
    ):
        if shares is not None and shares < 0:
            return f"{name} {shares} is negative"
    return None


@_shape_checked
def _ownership_rows(wire: dict[str, Wire], job: Job) -> list[Row]:
    return [
        (
            _security_id(job),
            number(wire.get("stockListedShares")),
            number(wire.get("paidUpCapital")),
            number(wire.get("publicShares")),
            number(wire.get("publicPercentage")),
            number(wire.get("promoterShares")),
            number(wire.get("promoterPercentage")),
        )
    ]


# ---------------------------------------------------------------- the trading calendar


async def _fetch_holidays(source: Source, job: Job) -> list[Wire]:
    return await source.holidays(job.ranges[0].start.year)


@_shape_checked
def _holiday_rows(wire: list[Wire], job: Job) -> list[Row]:
    return _unique_by_key(
        (
            (
                date.fromisoformat(item["holidayDate"][:10]).isoformat(),
                text(item.get("holidayDescription")),
            )
            for item in wire
        ),
        1,
    )


def _check_holiday(row: Row, job: Job) -> str | None:
    if date.fromisoformat(row[0]) not in job.ranges[0]:
        return f"holiday {row[0]} is not in the year asked for"
    return None


# ---------------------------------------------------------------- the specs

COMPANIES = Dataset(
    name="companies",
    title="Companies",
    table=TABLES["companies"],
    fetch=_fetch_lists,
    to_rows=_listing_rows,
    per_security=False,
)

PRICES = Dataset(
    name="prices",
    title="Prices",
    table=TABLES["prices"],
    fetch=_fetch_prices,
    to_rows=_already_rows,
    check=_check_price,
    ranged=True,
)

REPORTS = Dataset(
    name="reports",
    title="Reports",
    table=TABLES["reports"],
    fetch=_fetch_reports,
    to_rows=_report_rows,
)

DIVIDENDS = Dataset(
    name="dividends",
    title="Dividends",
    table=TABLES["dividends"],
    fetch=_fetch_dividends,
    to_rows=_dividend_rows,
    check=_check_dividend,
)

OWNERSHIP = Dataset(
    name="ownership",
    title="Ownership",
    table=TABLES["ownership"],
    fetch=_fetch_ownership,
    to_rows=_ownership_rows,
    check=_check_ownership,
)

HOLIDAYS = Dataset(
    name="holidays",
    title="Calendar",
    table=TABLES["holidays"],
    fetch=_fetch_holidays,
    to_rows=_holiday_rows,
    check=_check_holiday,
    per_security=False,
)

DATASETS: dict[str, Dataset] = {
    spec.name: spec for spec in (COMPANIES, PRICES, REPORTS, DIVIDENDS, OWNERSHIP, HOLIDAYS)
}
PER_SECURITY = tuple(name for name, spec in DATASETS.items() if spec.per_security)


# ---------------------------------------------------------------- universe and planning


MAX_JOB_DAYS = 700  # at most 500 sessions (five a week): one 500-row history page


def plan_jobs(
    spec: Dataset,
    universe: Iterable[Security],
    *,
    period: DateRange,
    today: date,
    coverage: Mapping[int, DateRange],
    force: bool = False,
    fresh: AbstractSet[int] = frozenset(),
) -> Iterator[tuple[Job, ...]]:
    """Each security's jobs of one per-security dataset, produced lazily: a tuple of jobs that
    one worker runs in order, for each security that needs any.

    A snapshot dataset has one job per security, except for the `fresh` ones (fetched
    recently enough; all are fetched when `force`). A ranged dataset's jobs fetch what `period`
    adds to the security's covered range (all of `period` when `force`), at most
    `MAX_JOB_DAYS` each, so a worker holds a bounded share of a long history. They are ordered
    outward from what is covered, so each job's `covers`, committed in that order, is one
    exact range. Coverage never reaches today: today's rows may still change.
    """
    for security in universe:
        if not spec.ranged:
            if force or security.id not in fresh:
                yield (Job(spec.name, security),)
            continue
        covered = coverage.get(security.id)
        jobs = tuple(
            Job(spec.name, security, (part,), _up_to_yesterday(covers, today), covered)
            for part, covers in _outward(period, covered, force)
        )
        if jobs:
            yield jobs


def _outward(
    period: DateRange, covered: DateRange | None, force: bool
) -> Iterator[tuple[DateRange, DateRange]]:
    """The parts to fetch, each with the covered range once it and those before it are
    stored: what `period` shares with `covered` (only when `force`), then the days before
    `covered` newest first, then the days after it oldest first. A `covered` range that a
    forced `period` does not touch is replaced by `period`."""
    if force and covered is not None and not covered.touches(period):
        covered = None
    inside: list[DateRange] = []
    if force and covered is not None and covered.overlaps(period):
        inside = [DateRange(max(period.start, covered.start), min(period.end, covered.end))]
    missing = period.missing_from(covered)
    before = [p for p in missing if covered and p.end < covered.start]
    after = [p for p in missing if p not in before]
    running = covered
    for part, newest_first in (
        *((p, False) for p in inside),
        *((p, True) for p in before),
        *((p, False) for p in after),
    ):
        for piece in part.split(MAX_JOB_DAYS, newest_first=newest_first):
            running = running.union(piece) if running else piece
            yield piece, running


def _up_to_yesterday(covers: DateRange, today: date) -> DateRange | None:
    yesterday = today - timedelta(days=1)
    if covers.start > yesterday:
        return None
    return DateRange(covers.start, min(covers.end, yesterday))
