"""The server's history window: finding its first day (a binary search, property-tested),
and cutting jobs to it without ever claiming a day that was not stored."""

from __future__ import annotations

import math
from datetime import date, timedelta

import trio
from hypothesis import given
from hypothesis import strategies as st

from ntx.model import DateRange, Job, Security
from ntx.sources.nepse.window import HistoryWindow, first_accepted

DAY = timedelta(days=1)
SECURITY = Security(1, "NABIL")
days = st.dates(min_value=date(2010, 1, 1), max_value=date(2030, 12, 31))


@given(refused=days, span=st.integers(1, 6000), first_offset=st.integers(1, 6001))
def test_the_binary_search_finds_the_first_accepted_day_in_few_requests(
    refused: date, span: int, first_offset: int
) -> None:
    newest = refused + span * DAY
    first = refused + first_offset * DAY  # may lie after newest: nothing is served
    asked: list[date] = []

    async def accepts(day: date) -> bool:
        asked.append(day)
        return day >= first

    found = trio.run(first_accepted, accepts, refused, newest)
    assert found == min(first, newest + DAY)
    assert len(asked) <= math.ceil(math.log2(span)) + 1 if span > 1 else len(asked) == 1
    assert all(refused < day <= newest for day in asked)


async def test_the_window_is_searched_once_however_many_workers_ask() -> None:
    window = HistoryWindow()
    asked: list[date] = []

    async def accepts(day: date) -> bool:
        asked.append(day)
        await trio.sleep(0.01)
        return day >= date(2025, 7, 1)

    found: list[date] = []

    async def worker() -> None:
        found.append(await window.find(accepts, date(2020, 1, 1), date(2026, 6, 30)))

    async with trio.open_nursery() as nursery:
        for _ in range(8):
            nursery.start_soon(worker)
    assert found == [date(2025, 7, 1)] * 8
    assert window.first == date(2025, 7, 1)
    assert len(asked) <= 13


ranges = st.tuples(days, st.integers(0, 900)).map(lambda p: DateRange(p[0], p[0] + p[1] * DAY))


@given(part=ranges, before=st.one_of(st.none(), ranges), first=days)
def test_a_cut_job_keeps_every_day_once_and_claims_only_stored_days(
    part: DateRange, before: DateRange | None, first: date
) -> None:
    covered = before if before is None or before.touches(part) else None
    covers = covered.union(part) if covered else part
    job = Job("prices", SECURITY, (part,), covers, covered)
    cut, outside = job.within(first)
    kept_days = sum(r.days for r in cut.ranges) if cut else 0
    assert kept_days + (outside.days if outside else 0) == part.days
    if outside is not None:
        assert outside.start == part.start and outside.end < first
    if cut is None:
        assert outside == part
        return
    assert all(r.start >= first for r in cut.ranges)
    if cut.covers is not None:
        # every claimed day was covered before the job, or is one it asks for now
        start = cut.covers.start
        assert start >= first or (
            covered is not None and start in covered and covered.end + DAY >= first
        )
        assert cut.covers.end == covers.end


def days(first: str, last: str) -> DateRange:
    return DateRange(date.fromisoformat(first), date.fromisoformat(last))


def prices(part: DateRange, covers: DateRange, covered: DateRange | None = None) -> Job:
    return Job("prices", SECURITY, (part,), covers, covered)


WINDOW_STARTS = date(2025, 7, 1)


def test_a_later_job_of_a_cut_security_claims_nothing_before_the_window() -> None:
    # a security's second and third jobs were planned as if the first one (now before the
    # window) would be stored: their `covers` start with the first one's days
    second = prices(days("2025-01-01", "2026-06-29"), days("2023-01-01", "2026-06-29"))
    cut, outside = second.within(WINDOW_STARTS)
    assert cut is not None and outside == days("2025-01-01", "2025-06-30")
    assert cut.ranges == (days("2025-07-01", "2026-06-29"),)
    assert cut.covers == days("2025-07-01", "2026-06-29")
    third = prices(days("2026-06-29", "2026-06-30"), days("2023-01-01", "2026-06-29"))
    cut, outside = third.within(WINDOW_STARTS)
    assert outside is None and cut is not None and cut.ranges == third.ranges
    assert cut.covers == days("2025-07-01", "2026-06-29")


def test_an_archive_older_than_the_window_keeps_its_coverage() -> None:
    archive = days("2023-01-01", "2026-06-28")
    tail = prices(days("2026-06-29", "2026-06-30"), days("2023-01-01", "2026-06-29"), archive)
    assert tail.within(WINDOW_STARTS) == (tail, None)
