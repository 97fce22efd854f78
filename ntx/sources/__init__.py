"""Market data sources. A source speaks one API's wire format and never writes to the database."""

from __future__ import annotations

from typing import Any, Protocol

from ntx.model import DateRange
from ntx.throttle import RequestGate

Wire = Any  # decoded JSON exactly as the API sent it


class RecordSink(Protocol):
    """Takes a list answer's records (JSON objects) one by one, as they arrive, so that no
    list is ever held whole. `start()` comes before each attempt's first record: a retried
    answer starts over. What `add` raises as `ValueError`, `KeyError` or `TypeError` makes
    the answer malformed."""

    def start(self) -> None: ...
    def add(self, record: dict[str, Wire]) -> None: ...


class Source(Protocol):
    """The calls the datasets need. Every HTTP request goes through the bound gate."""

    def bind(self, gate: RequestGate) -> Source:
        """The same source, with its requests going through `gate` (e.g. a per-job meter)."""
        ...

    async def companies(self, into: RecordSink) -> None: ...
    async def securities(self, into: RecordSink) -> None: ...
    async def price_history(self, security_id: int, period: DateRange) -> list[Wire]: ...
    async def reports(self, security_id: int) -> list[Wire]: ...
    async def dividends(self, security_id: int) -> list[Wire]: ...
    async def ownership(self, security_id: int) -> dict[str, Wire]: ...
