"""The price planner, for every input (hypothesis): each needed session planned exactly once,
never a holiday, a weekend or a day past the server's latest; `auto` follows its rule; no
plan costs more than the pure plan it chose; by security reaches every gap."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from ntx.model import DateRange, Security
from ntx.nepal import sessions
from ntx.price_plan import CHEAPER, PricesBy, calendar_jobs, plan_prices

START = date(2026, 1, 1)


@st.composite
def situations(draw: st.DrawFn) -> dict[str, object]:
    """A period, a calendar, what is stored by date and by security, and a universe."""
    first = START + timedelta(days=draw(st.integers(0, 60)))
    period = DateRange(first, first + timedelta(days=draw(st.integers(0, 120))))
    last_day = period.start + timedelta(days=draw(st.integers(-5, 140)))
    days = [period.start + timedelta(days=n) for n in range(period.days)]
    holidays = set(draw(st.lists(st.sampled_from(days), max_size=10)))
    known = draw(
        st.dictionaries(
            st.sampled_from(days), st.sampled_from(["traded", "closed", "outside"]), max_size=40
        )
    )
    count = draw(st.integers(1, 30))
    universe = [Security(100 + n, f"S{n}") for n in range(count)]
    coverage = {}
    for sec in universe:
        if draw(st.booleans()):
            a, b = sorted(draw(st.lists(st.sampled_from(days), min_size=2, max_size=2)))
            coverage[sec.id] = DateRange(a, b)
    return {
        "universe": universe,
        "period": period,
        "today": max(last_day, period.end) + timedelta(days=1),
        "last_day": last_day,
        "final_through": last_day - timedelta(days=draw(st.integers(0, 1))),
        "holidays": holidays,
        "dates_known": known,
        "coverage": coverage,
        "most_rows": draw(st.sampled_from([0, 300, 450, 900])),
    }


def needed(case: dict[str, object]) -> list[date]:
    period, last_day = case["period"], case["last_day"]
    assert isinstance(period, DateRange) and isinstance(last_day, date)
    if last_day < period.start:
        return []
    holidays = case["holidays"]
    assert isinstance(holidays, set)
    return sessions(DateRange(period.start, min(period.end, last_day)), holidays)


@settings(max_examples=300, deadline=None)
@given(case=situations())
def test_by_date_plans_each_missing_session_exactly_once(case: dict[str, object]) -> None:
    plan = plan_prices(mode=PricesBy.DATE, **case)  # type: ignore[arg-type]
    days = [job.day for jobs in plan.jobs for job in jobs]
    known = case["dates_known"]
    assert isinstance(known, dict)
    missing = [day for day in needed(case) if day not in known]
    assert sorted(d for d in days if d) == sorted(missing)
    assert len(days) == len(set(days))
    for day in days:
        assert day is not None
        assert day.weekday() not in (4, 5)  # never a Friday or a Saturday
        assert day not in case["holidays"]  # type: ignore[operator]
        assert day <= case["last_day"]  # type: ignore[operator]
    for jobs in plan.jobs:
        (job,) = jobs
        assert (job.covers is not None) == (job.day <= case["final_through"])  # type: ignore[operator]
    assert plan.chosen == ("date" if missing else "none")


@settings(max_examples=300, deadline=None)
@given(case=situations())
def test_by_security_reaches_every_security_missing_a_session(case: dict[str, object]) -> None:
    plan = plan_prices(mode=PricesBy.SECURITY, **case)  # type: ignore[arg-type]
    known = case["dates_known"]
    coverage = case["coverage"]
    assert isinstance(known, dict) and isinstance(coverage, dict)
    unknown = [day for day in needed(case) if day not in known]
    asked: dict[int, list[DateRange]] = {}
    for jobs in plan.jobs:
        for job in jobs:
            assert job.security is not None and job.day is None
            asked.setdefault(job.security.id, []).extend(job.ranges)
    for sec in case["universe"]:  # type: ignore[attr-defined]
        covered = coverage.get(sec.id)
        gaps = [day for day in unknown if covered is None or day not in covered]
        if gaps:
            assert all(any(day in part for part in asked[sec.id]) for day in gaps)
        else:
            assert sec.id not in asked
    assert plan.by_security == sum(len(jobs) for jobs in plan.jobs)


@settings(max_examples=300, deadline=None)
@given(case=situations())
def test_auto_follows_its_rule_and_costs_what_the_pure_plan_it_chose_costs(
    case: dict[str, object],
) -> None:
    auto = plan_prices(mode=PricesBy.AUTO, **case)  # type: ignore[arg-type]
    by_date = plan_prices(mode=PricesBy.DATE, **case)  # type: ignore[arg-type]
    by_security = plan_prices(mode=PricesBy.SECURITY, **case)  # type: ignore[arg-type]
    assert auto.by_security == by_security.requests
    # auto by date skips the sessions every security holds already (from history, no opens)
    assert auto.by_date <= by_date.requests
    coverage = case["coverage"]
    assert isinstance(coverage, dict)
    held = {
        job.day
        for (job,) in by_date.jobs
        if all(s.id in coverage and job.day in coverage[s.id] for s in case["universe"])  # type: ignore[attr-defined]
    }
    if not auto.by_date and not auto.by_security:
        assert auto.chosen == "none" and auto.jobs == ()
    elif auto.by_security * CHEAPER <= auto.by_date:
        assert auto.chosen == "security" and auto.jobs == by_security.jobs
    else:
        assert auto.chosen == "date"
        assert auto.jobs == tuple(jobs for jobs in by_date.jobs if jobs[0].day not in held)
    assert auto.requests <= max(auto.by_date, auto.by_security)
    chosen = {"date": auto.by_date, "security": auto.by_security}.get(auto.chosen, 0)
    assert auto.requests == chosen


@settings(max_examples=200, deadline=None)
@given(case=situations())
def test_force_asks_every_session_again(case: dict[str, object]) -> None:
    plan = plan_prices(mode=PricesBy.DATE, force=True, **case)  # type: ignore[arg-type]
    assert sorted(job.day for jobs in plan.jobs for job in jobs) == sorted(needed(case))  # type: ignore[type-var]


def test_a_few_symbols_go_by_security_and_a_whole_market_by_date() -> None:
    year = DateRange(date(2025, 7, 1), date(2026, 6, 30))
    kwargs = {
        "period": year,
        "today": date(2026, 7, 1),
        "last_day": year.end,
        "final_through": year.end,
        "holidays": set(),
        "dates_known": {},
        "coverage": {},
    }
    two = [Security(1, "NABIL"), Security(2, "ADBL")]
    market = [Security(n, f"S{n}") for n in range(300)]
    assert plan_prices(two, **kwargs).chosen == "security"  # type: ignore[arg-type]
    whole = plan_prices(market, **kwargs)  # type: ignore[arg-type]
    assert whole.chosen == "date" and whole.by_security == 300
    assert whole.by_date == len(sessions(year, set()))


def test_a_past_years_calendar_is_fetched_once_the_current_one_when_stale() -> None:
    period = DateRange(date(2025, 7, 1), date(2026, 6, 30))
    first = calendar_jobs(period, None, None, None)
    assert [job.ranges[0].start.year for job in first] == [2026, 2025]
    assert first[-1].covers == DateRange(date(2025, 1, 1), date(2026, 12, 31))
    covered = first[-1].covers
    fetched = datetime(2026, 6, 30, tzinfo=UTC)
    fresh = calendar_jobs(period, covered, fetched, fetched - timedelta(days=7))
    assert fresh == []
    stale = calendar_jobs(period, covered, fetched, fetched + timedelta(days=1))
    assert [job.ranges[0].start.year for job in stale] == [2026]  # 2025 was over: kept
