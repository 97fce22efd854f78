"""The NEPSE wire protocol over one `HttpClient` whose base URL is the API root (the real
exchange's public API, a mirror, the demo).

Paths, paging, the token handshake and payload ids are those of docs/nepse-api.md.
Identifiers are URL-encoded before they enter a path. Every API request carries the run's
token (`Authorization: Salter <token>`); a 401, or a 200 whose body cannot be JSON, makes one
new handshake for all workers and the request is sent again; refused again, it fails with
`TokenRefused`. A server without the handshake (`prove` answers 404) is read as a plain
mirror: no token, no payload ids, GET everywhere. Price history is paged to the end and
checked: a page sequence that loses or repeats rows raises `MalformedResponse`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime
from functools import partial
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
import trio

from ntx.errors import (
    DateNotServed,
    HttpStatusError,
    MalformedResponse,
    OutsideWindow,
    TokenRefused,
)
from ntx.model import DateRange
from ntx.nepal import nepal_today
from ntx.net.client import HttpClient, Params
from ntx.pace.retry import RetryPolicy
from ntx.pace.throttle import RequestGate
from ntx.sources.nepse import wire
from ntx.sources.nepse.payload import PayloadKind, nepal_day, payload_id
from ntx.sources.nepse.session import NO_TOKEN, Credentials, ModuleCache, Session
from ntx.sources.nepse.token import TokenModule, TokenModuleError, cut
from ntx.sources.nepse.window import HistoryWindow
from ntx.sources.nepse.wire import CompanyRecord, SecurityRecord, Wire

T = TypeVar("T")
PAGE_SIZE = 500  # the server's cap; it may answer with smaller pages, which is fine
PROVE = "/api/authenticate/prove"
MODULE = "/assets/prod/css.wasm"
MARKET_OPEN = "/api/nots/nepse-data/market-open"
TODAY_PRICE = "/api/nots/nepse-data/today-price"
HOLIDAYS = "/api/nots/holiday/list"
TODAY = PayloadKind.TODAY_PRICE
Decode = Callable[[bytes, str], T]


def _segment(identifier: object) -> str:
    return quote(str(identifier), safe="")


def _history_path(security_id: int) -> str:
    return f"/api/nots/market/history/security/{_segment(security_id)}"


class NepseSource:
    """The NEPSE endpoints ntx reads. Every request passes the gate, and with a `policy` is
    retried by it; without one, each request is tried once and its error raised as it is.

    `session` is shared by every `bind` of one source (one token for the whole run);
    `modules` keeps the site's token module between runs; `wall_clock` gives the instant
    whose Nepal day enters payload ids.
    """

    def __init__(
        self,
        client: HttpClient,
        gate: RequestGate,
        policy: RetryPolicy | None = None,
        *,
        session: Session | None = None,
        modules: ModuleCache | None = None,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        window: HistoryWindow | None = None,
        day_window: HistoryWindow | None = None,
    ) -> None:
        self._client = client
        self._gate = gate
        self._policy = policy
        self.session = session if session is not None else Session()
        self.window = window if window is not None else HistoryWindow()
        self.day_window = day_window if day_window is not None else HistoryWindow()
        self._modules = modules if modules is not None else ModuleCache(None, client.url("/"))
        self._wall_clock = wall_clock

    def bind(self, gate: RequestGate) -> NepseSource:
        return NepseSource(
            self._client,
            gate,
            self._policy,
            session=self.session,
            modules=self._modules,
            wall_clock=self._wall_clock,
            window=self.window,
            day_window=self.day_window,
        )

    def window_starts(self, by_date: bool = False) -> date | None:
        return (self.day_window if by_date else self.window).first

    async def market_day(self) -> wire.MarketOpen | None:
        """The market's state as the server last reported it (`market-open`, fetched with
        the first token), or None from a server that does not say."""
        await self.session.credentials(self._handshake)
        if self.session.market is None:  # a server without the handshake: ask it plainly
            try:
                self.session.market = await self._get(MARKET_OPEN, wire.market_open)
            except (HttpStatusError, MalformedResponse):
                return None
        return self.session.market

    async def holidays(self, year: int) -> list[Wire]:
        """The exchange's holiday list of one year."""
        return await self._get(HOLIDAYS, wire.records, params={"year": year})

    async def prices_on(self, day: date, keep: Callable[[list[Wire]], list[T]] = list) -> list[T]:
        """Every security's prices of one business date (`today-price`, a POST with the
        payload id), all pages, checked as history is. `OutsideWindow` for a date before
        the server's window for this endpoint: known, or found now when it refuses `day`."""
        first = self.day_window.first
        if first is not None and day < first:
            raise OutsideWindow(first)
        params: Params = {"businessDate": day.isoformat()}
        try:
            return await self._all_pages(TODAY_PRICE, params, keep, "securityId", "POST")
        except DateNotServed:
            newest = max(day, nepal_today(self._wall_clock()))
            found = await self.day_window.find(self._accepts_day, day, newest)
            raise OutsideWindow(found) from None

    async def _accepts_day(self, day: date) -> bool:
        """Whether the server serves `today-price` for `day` (one request of one row)."""
        params: Params = {"businessDate": day.isoformat(), "size": 1, "page": 0}
        try:
            await self._call("POST", TODAY_PRICE, wire.page, params=params, payload=TODAY)
        except DateNotServed:
            return False
        return True

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
        (and for days repeated); `keep` turns each page into what is kept of it, one per row.

        `OutsideWindow` when `period` starts before the server's history window: known, or
        found now (a few requests) when the server refuses the start."""
        first = self.window.first
        if first is not None and period.start < first:
            raise OutsideWindow(first)
        try:
            return await self._history(security_id, period, keep)
        except DateNotServed:
            newest = max(period.end, nepal_today(self._wall_clock()))
            accepts = partial(self._accepts_start, security_id, newest)
            raise OutsideWindow(await self.window.find(accepts, period.start, newest)) from None

    async def _accepts_start(self, security_id: int, newest: date, start: date) -> bool:
        """Whether the server serves history from `start` (one request of one row)."""
        params: Params = {
            "startDate": start.isoformat(),
            "endDate": newest.isoformat(),
            "size": 1,
            "page": 0,
        }
        try:
            await self._get(_history_path(security_id), wire.page, params=params)
        except DateNotServed:
            return False
        return True

    async def _history(
        self, security_id: int, period: DateRange, keep: Callable[[list[Wire]], list[T]]
    ) -> list[T]:
        params: Params = {"startDate": period.start.isoformat(), "endDate": period.end.isoformat()}
        return await self._all_pages(_history_path(security_id), params, keep, "businessDate")

    async def _all_pages(
        self,
        path: str,
        params: Params,
        keep: Callable[[list[Wire]], list[T]],
        unique: str,
        method: str = "GET",
    ) -> list[T]:
        """Every row of a paged answer, pages asked in order until the last, each turned by
        `keep` as it arrives. `MalformedResponse` unless the rows add up to the server's
        `totalElements`, which must not change while paging, with no `unique` value twice."""
        payload = TODAY if method == "POST" else None
        rows: list[T] = []
        seen: set[object] = set()
        total: int | None = None
        page = 0
        while True:
            asked: Params = {**params, "size": PAGE_SIZE, "page": page}
            content, total_pages, elements = await self._call(
                method, path, wire.page, params=asked, payload=payload
            )
            if total is None:
                total = elements
            elif elements != total:
                raise MalformedResponse(
                    f"{path}: totalElements changed from {total} to {elements} while paging"
                )
            seen.update(row.get(unique) for row in content)
            rows.extend(keep(content))
            page += 1
            if page >= total_pages or not content:
                break
        if len(rows) != total:
            raise MalformedResponse(
                f"{path}: paging gave {len(rows)} rows but the server counts {total}"
            )
        if len(seen) != len(rows):
            raise MalformedResponse(f"{path}: paging returned the same {unique} twice")
        return rows

    async def reports(self, security_id: int) -> list[Wire]:
        path = f"/api/nots/application/reports/{_segment(security_id)}"
        return await self._get(path, wire.records)

    async def dividends(self, security_id: int) -> list[Wire]:
        path = f"/api/nots/application/dividend/{_segment(security_id)}"
        return await self._get(path, wire.records)

    async def ownership(self, security_id: int) -> dict[str, Wire]:
        """The security detail with ownership: a POST with the payload id (a GET of the same
        path answers a smaller object without the ownership fields)."""
        path = f"/api/nots/security/{_segment(security_id)}"
        return await self._call("POST", path, wire.security_detail, payload=PayloadKind.SECURITY)

    async def _get(self, path: str, decode: Decode[T], params: Params | None = None) -> T:
        return await self._call("GET", path, decode, params=params)

    async def _call(
        self,
        method: str,
        path: str,
        decode: Decode[T],
        *,
        params: Params | None = None,
        payload: PayloadKind | None = None,
    ) -> T:
        """One request whose answer `decode` accepts, retried by the policy if there is one.

        A wrongly shaped answer counts like any other bad answer: it is retried. Each attempt
        takes the session's current token and computes its payload id from that token's salts.
        """

        async def attempt() -> T:
            credentials = await self.session.credentials(self._handshake)
            response = await self._send(method, path, params, payload, credentials)
            if _refused(response, credentials):
                renewed = await self.session.renew(credentials, self._handshake)
                response = await self._send(method, path, params, payload, renewed)
                if _refused(response, renewed) and not renewed.module_fetched:
                    # the cached module may be one the site has since replaced
                    renewed = await self.session.renew(
                        renewed,
                        self._handshake,
                        refetch_module=True,
                        reason="the server refused a new token: the module is fetched again",
                    )
                    response = await self._send(method, path, params, payload, renewed)
                if _refused(response, renewed):
                    raise TokenRefused(
                        f"HTTP {response.status_code} from {path} right after a new token:"
                        " the server refuses this request"
                    )
            # `_send` raised on any status but 200 and 401, and a 401 is refused above
            return decode(response.content, path)

        if self._policy is None:
            return await attempt()
        return await self._policy.call(attempt, self._gate)

    async def _send(
        self,
        method: str,
        path: str,
        params: Params | None,
        payload: PayloadKind | None,
        credentials: Credentials,
    ) -> httpx.Response:
        if credentials.token is None:
            method = "GET"  # a plain mirror: no token, no payload ids, GET everywhere
        async with self._gate.request():  # the gate paces by the status: check it inside
            # The id carries the Nepal day: compute it as the request leaves, not before a
            # wait at the gate that may cross midnight there (the server would answer 401).
            body = self._payload_body(payload, credentials)
            response = await self._client.request(
                method, path, params=params, json=body, headers=credentials.header
            )
            _check_status(response, path, allow=(401,) if credentials.token else ())
        return response

    def _payload_body(
        self, payload: PayloadKind | None, credentials: Credentials
    ) -> dict[str, Any] | None:
        """The POST body `{"id": ...}` for today in Nepal, or None where no id is sent."""
        if payload is None or credentials.token is None:
            return None
        market = self.session.market
        assert market is not None, "the handshake that made the token fetched it"
        day = nepal_day(self._wall_clock())
        return {"id": payload_id(payload, market.id, credentials.salts, day)}

    async def _handshake(self, refetch_module: bool) -> Credentials:
        """Prove, then unscramble the access token with the site's module."""
        async with self._gate.request():
            response = await self._client.get(PROVE)
            if response.status_code == 404:
                return NO_TOKEN  # a server without the handshake: no token to send
            _check_status(response, PROVE)
        proved = wire.prove(response.content, PROVE)
        module, fetched = await self._token_module(refetch_module)
        try:
            token = cut(proved.access_token, module.access_positions(proved.salts))
        except TokenModuleError:
            if fetched:
                raise
            module, fetched = await self._token_module(refetch=True)
            token = cut(proved.access_token, module.access_positions(proved.salts))
        credentials = Credentials(token, proved.salts, trio.current_time(), fetched)
        if self.session.market is None:  # once per run, while every worker waits anyway
            response = await self._send("GET", MARKET_OPEN, None, None, credentials)
            _check_status(response, MARKET_OPEN)
            self.session.market = wire.market_open(response.content, MARKET_OPEN)
        return credentials

    async def _token_module(self, refetch: bool) -> tuple[TokenModule, bool]:
        """The site's module and whether it was fetched now: the one in use, else the
        cached one, else (or when `refetch`) the one the server serves."""
        if not refetch:
            if self.session.module is not None:
                return self.session.module, False
            cached = self._modules.load()
            if cached is not None:
                try:
                    self.session.module = TokenModule(cached)
                    return self.session.module, False
                except TokenModuleError:
                    pass  # a damaged cache: fetch it again
        module, _ = await self.fetch_module()
        return module, True

    async def fetch_module(self) -> tuple[TokenModule, bytes]:
        """The token module the server serves now, checked, kept for the run and cached."""
        async with self._gate.request():
            response = await self._client.get(MODULE)
            _check_status(response, MODULE)
        self.session.module = TokenModule(response.content)
        self._modules.save(response.content)
        return self.session.module, response.content

    async def handshake(self) -> Credentials:
        """Credentials for the next request: the session's own, or a new handshake's."""
        return await self.session.credentials(self._handshake)

    async def history_starts(self, security_id: int, since: date) -> date | None:
        """The first day the server serves history from, searched for from `since` on (a
        few requests); None when it serves `since` already."""
        newest = nepal_today(self._wall_clock())
        accepts = partial(self._accepts_start, security_id, newest)
        if await accepts(since):
            return None
        return await self.window.find(accepts, since, newest)


def _refused(response: httpx.Response, credentials: Credentials) -> bool:
    """A token the server no longer takes: 401, or a 200 whose body cannot be JSON."""
    if credentials.token is None:
        return False
    if response.status_code == 401:
        return True
    return response.status_code == 200 and not wire.looks_like_json(response.content)


DATE_NOT_VALID = b"Searched Date is not valid"  # the body of the history window's 500


def _check_status(response: httpx.Response, path: str, allow: tuple[int, ...] = ()) -> None:
    if response.status_code == 500 and DATE_NOT_VALID in response.content:
        raise DateNotServed(path)
    if response.status_code != 200 and response.status_code not in allow:
        raise HttpStatusError(response.status_code, path, response.headers.get("Retry-After"))
