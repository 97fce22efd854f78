"""Job planning and date ranges: coverage stays one exact range, whatever is asked."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from ntx.datasets import MAX_JOB_DAYS, PRICES, REPORTS, plan_jobs
from ntx.engine import RunPlan
from ntx.model import DateRange, Security

DAY0 = date(2020, 1, 1)
day = st.integers(0, 2000).map(lambda n: DAY0 + timedelta(days=n))


@st.composite
def ranges(draw: st.DrawFn) -> DateRange:
    a, b = draw(day), draw(day)
    return DateRange(min(a, b), max(a, b))


def days_of(r: DateRange) -> set[date]:
    return {r.start + timedelta(days=i) for i in range(r.days)}


@given(period=ranges(), covered=st.none() | ranges())
def test_missing_parts_grow_coverage_into_one_range(
    period: DateRange, covered: DateRange | None
) -> None:
    parts = period.missing_from(covered)
    fetched = set().union(*(days_of(p) for p in parts)) if parts else set()
    known = days_of(covered) if covered else set()
    assert not fetched & known  # nothing stored is fetched again
    assert days_of(period) <= fetched | known  # everything asked for is there afterwards
    whole = fetched | known
    assert whole == days_of(DateRange(min(whole), max(whole)))  # one range, no hole


@given(
    period=ranges(),
    covered=st.none() | ranges(),
    force=st.booleans(),
    today_offset=st.integers(-5, 2100),
)
def test_planned_jobs_cover_what_they_claim(
    period: DateRange, covered: DateRange | None, force: bool, today_offset: int
) -> None:
    today = DAY0 + timedelta(days=today_offset)
    sec = Security(1, "A")
    planned = list(
        plan_jobs(
            PRICES,
            [sec],
            period=period,
            today=today,
            coverage={1: covered} if covered else {},
            force=force,
        )
    )
    if not planned:
        assert not force and covered is not None and days_of(period) <= days_of(covered)
        return
    (jobs,) = planned
    known = days_of(covered) if covered else set()
    fetched: set[date] = set()
    for job in jobs:  # committed in this order: stop after any of them, the claim holds
        (part,) = job.ranges
        assert part.days <= MAX_JOB_DAYS  # a worker holds a bounded share of the history
        assert not days_of(part) & fetched  # no day is fetched twice
        fetched |= days_of(part)
        claim = days_of(job.covers) if job.covers else set()
        assert claim <= fetched | known  # coverage never claims a day that was not fetched
        assert all(d < today for d in claim)  # today may still change: never covered
    if force:
        assert days_of(period) <= fetched  # --force fetches the whole period again
    else:
        assert days_of(period) <= fetched | known
        assert not fetched & known  # and nothing already covered
    last = jobs[-1].covers
    if last is not None:  # once all are stored, coverage holds what was fetched before today
        assert days_of(last) >= {d for d in fetched | days_of(period) if d < today}


@given(period=ranges(), days=st.integers(1, 800), newest_first=st.booleans())
def test_a_range_splits_into_consecutive_pieces(
    period: DateRange, days: int, newest_first: bool
) -> None:
    pieces = period.split(days, newest_first=newest_first)
    ordered = sorted(pieces, key=lambda piece: piece.start, reverse=newest_first)
    assert pieces == ordered
    assert all(piece.days <= days for piece in pieces)
    assert sum(piece.days for piece in pieces) == period.days
    assert days_of(period) == set().union(*(days_of(piece) for piece in pieces))
    assert len(pieces) == -(-period.days // days)  # as few as the length allows


def test_snapshot_datasets_plan_one_job_per_security() -> None:
    secs = [Security(i, f"S{i}") for i in range(5)]
    planned = list(plan_jobs(REPORTS, secs, period=DateRange(DAY0, DAY0), today=DAY0, coverage={}))
    assert all(len(jobs) == 1 for jobs in planned)
    jobs = [job for (job,) in planned]
    assert [j.security for j in jobs] == secs and all(not j.ranges for j in jobs)


def test_a_snapshot_is_fresh_for_its_max_age_less_a_little_for_a_wandering_daily_run() -> None:
    now = datetime(2026, 12, 2, 18, 0, tzinfo=UTC)
    plan = RunPlan(
        datasets=("reports", "ownership", "prices"),
        db_path=Path("x.db"),
        period=DateRange(date(2026, 1, 1), date(2026, 12, 2)),
        today=date(2026, 12, 2),
        workers=1,
        max_age={"reports": 86400.0, "ownership": 1800.0, "dividends": 0.0},
        now=now,
    )
    # yesterday's run at 18:00:05 is old enough today at 18:00: the daily run refreshes daily
    assert plan.fresh_since("reports") == now - timedelta(hours=23)
    assert plan.fresh_since("ownership") == now - timedelta(minutes=28.5)
    assert plan.fresh_since("dividends") is None  # 0: every run
    assert plan.fresh_since("prices") is None  # not a snapshot
    assert replace(plan, force=True).fresh_since("reports") is None
