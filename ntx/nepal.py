"""Calendar facts of the Nepal Stock Exchange that more than one module needs."""

from __future__ import annotations

from collections.abc import Set as AbstractSet
from datetime import date, datetime, timedelta, timezone

from ntx.model import DateRange

NEPAL_TZ = timezone(timedelta(hours=5, minutes=45), "NPT")
SESSION_WEEKDAYS = frozenset({6, 0, 1, 2, 3})  # the exchange trades Sunday to Thursday


def nepal_today(now: datetime | None = None) -> date:
    """The date in Nepal (UTC+05:45), which is what the exchange's dates mean, at the
    instant `now` (aware; default: now)."""
    return (now or datetime.now(NEPAL_TZ)).astimezone(NEPAL_TZ).date()


def one_year_before(day: date) -> date:
    """The same calendar date a year earlier (29 February maps to 28 February)."""
    try:
        return day.replace(year=day.year - 1)
    except ValueError:
        return day.replace(year=day.year - 1, day=28)


def sessions(period: DateRange, holidays: AbstractSet[date]) -> list[date]:
    """The business dates of `period` on which the exchange trades (Sunday to Thursday, not
    in `holidays`), newest first."""
    days = []
    day = period.end
    while day >= period.start:
        if day.weekday() in SESSION_WEEKDAYS and day not in holidays:
            days.append(day)
        day -= timedelta(days=1)
    return days
