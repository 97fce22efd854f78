"""Market data sources. A source speaks one API's wire format and never writes to the database."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Protocol, TypeVar

from ntx.model import DateRange
from ntx.pace.throttle import RequestGate
from ntx.sources.nepse.wire import CompanyRecord, MarketOpen, SecurityRecord, Wire

T = TypeVar("T")


class Source(Protocol):
    """The calls the datasets need. Every HTTP request goes through the bound gate."""

    def bind(self, gate: RequestGate) -> Source:
        """The same source, with its requests going through `gate` (e.g. a per-job meter)."""
        ...

    async def companies(self) -> list[CompanyRecord]: ...
    async def securities(self) -> list[SecurityRecord]: ...
    async def price_history(
        self, security_id: int, period: DateRange, keep: Callable[[list[Wire]], list[T]]
    ) -> list[T]:
        """Every history row of `period`, all pages; `keep` turns each page into what is
        kept of it, as the page arrives. `OutsideWindow` when `period` starts before the
        server's history window (found, then, if it was not known)."""
        ...

    async def prices_on(self, day: date, keep: Callable[[list[Wire]], list[T]]) -> list[T]:
        """Every security's prices of one business date, all pages, turned by `keep` as
        they arrive. `OutsideWindow` for a date before the server's window."""
        ...

    def window_starts(self, by_date: bool = False) -> date | None:
        """The first day of the server's history window (of the by-date answer, with
        `by_date`), once known (None before)."""
        ...

    async def market_day(self) -> MarketOpen | None:
        """The market's state as the server reports it, or None if it does not say."""
        ...

    async def holidays(self, year: int) -> list[Wire]: ...

    async def reports(self, security_id: int) -> list[Wire]: ...
    async def dividends(self, security_id: int) -> list[Wire]: ...
    async def ownership(self, security_id: int) -> dict[str, Wire]: ...
