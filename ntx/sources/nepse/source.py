"""The NEPSE wire protocol over one `HttpClient` whose base URL is the API root (the real
exchange's public API, a mirror, the demo).

Paths and paging are those of docs/nepse-api.md. Identifiers are URL-encoded before they
enter a path. Price history is paged to the end and checked: a page sequence that loses or
repeats rows raises `MalformedResponse` instead of silently storing a partial history.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar
from urllib.parse import quote

from ntx.errors import HttpStatusError, MalformedResponse
from ntx.model import DateRange
from ntx.net.client import HttpClient, Params
from ntx.pace.retry import RetryPolicy
from ntx.pace.throttle import RequestGate
from ntx.sources.nepse import wire
from ntx.sources.nepse.wire import CompanyRecord, SecurityRecord, Wire

T = TypeVar("T")
PAGE_SIZE = 500  # the server's cap; it may answer with smaller pages, which is fine
Decode = Callable[[bytes, str], T]


def _segment(identifier: object) -> str:
    return quote(str(identifier), safe="")


class NepseSource:
    """The NEPSE endpoints ntx reads. Every request passes the gate, and with a `policy` is
    retried by it; without one, each request is tried once and its error raised as it is."""

    def __init__(
        self, client: HttpClient, gate: RequestGate, policy: RetryPolicy | None = None
    ) -> None:
        self._client = client
        self._gate = gate
        self._policy = policy

    def bind(self, gate: RequestGate) -> NepseSource:
        return NepseSource(self._client, gate, self._policy)

    async def companies(self) -> list[CompanyRecord]:
        return await self._get("/api/nots/company/list", wire.company_list)

    async def securities(self) -> list[SecurityRecord]:
        return await self._get(
            "/api/nots/security", wire.security_list, params={"nonDelisted": "true"}
        )

    async def price_history(
        self,
        security_id: int,
        period: DateRange,
        keep: Callable[[list[Wire]], list[T]] = list,
    ) -> list[T]:
        """Every history row of `period`, all pages, checked against the server's own count
        (and for days repeated); `keep` turns each page into what is kept of it, one per row."""
        path = f"/api/nots/market/history/security/{_segment(security_id)}"
        rows: list[T] = []
        dates: set[object] = set()
        total: int | None = None
        page = 0
        while True:
            params: Params = {
                "startDate": period.start.isoformat(),
                "endDate": period.end.isoformat(),
                "size": PAGE_SIZE,
                "page": page,
            }
            content, total_pages, elements = await self._get(path, wire.page, params=params)
            if total is None:
                total = elements
            elif elements != total:
                raise MalformedResponse(
                    f"{path}: totalElements changed from {total} to {elements} while paging"
                )
            dates.update(row.get("businessDate") for row in content)
            rows.extend(keep(content))
            page += 1
            if page >= total_pages or not content:
                break
        if len(rows) != total:
            raise MalformedResponse(
                f"{path}: paging gave {len(rows)} rows but the server counts {total}"
            )
        if len(dates) != len(rows):
            raise MalformedResponse(f"{path}: paging returned the same day twice")
        return rows

    async def reports(self, security_id: int) -> list[Wire]:
        path = f"/api/nots/application/reports/{_segment(security_id)}"
        return await self._get(path, wire.records)

    async def dividends(self, security_id: int) -> list[Wire]:
        path = f"/api/nots/application/dividend/{_segment(security_id)}"
        return await self._get(path, wire.records)

    async def ownership(self, security_id: int) -> dict[str, Wire]:
        path = f"/api/nots/security/{_segment(security_id)}"
        return await self._get(path, wire.security_detail)

    async def _get(self, path: str, decode: Decode[T], params: Params | None = None) -> T:
        """One GET whose answer `decode` accepts, retried by the policy if there is one.

        A wrongly shaped answer counts like any other bad answer: it is retried.
        """

        async def attempt() -> T:
            async with self._gate.request():  # the gate paces by the status: check it inside
                response = await self._client.get(path, params=params)
                if response.status_code != 200:
                    retry_after = response.headers.get("Retry-After")
                    raise HttpStatusError(response.status_code, path, retry_after)
            return decode(response.content, path)

        if self._policy is None:
            return await attempt()
        return await self._policy.call(attempt, self._gate)
