"""The demo exchange's ASGI application: NEPSE's wire format over a `Market`.

A plain ASGI 3 callable (no framework): a handful of routes, JSON answers, a fixed latency
per request slept on trio's clock. Page size is capped at 500 like the real exchange.
"""

from __future__ import annotations

import math
import re
from collections.abc import Awaitable, Callable
from datetime import date
from typing import Any
from urllib.parse import parse_qs

import msgspec
import trio

from ntx.demo.market import Market
from ntx.model import DateRange
from ntx.pace.throttle import TokenBucket

MAX_PAGE_SIZE = 500

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class BadRequest(Exception):
    pass


class DemoApp:
    """Serves `market`; every answer leaves `latency` seconds after its request arrived
    (building it is part of that time, so the client sees the latency it was promised).

    With a `rate_limit`, requests above that many per second (bursts of about one second's
    worth) are answered 429 with a `Retry-After`, like a real rate-limited API.
    """

    def __init__(
        self, market: Market, latency: float = 0.04, rate_limit: float | None = None
    ) -> None:
        self.market = market
        self.latency = latency
        self.requests = 0
        self.limited = 0
        self._bucket = (
            TokenBucket(rate_limit, burst=max(1, round(rate_limit))) if rate_limit else None
        )
        self._routes: list[tuple[re.Pattern[str], Callable[..., Any]]] = [
            (re.compile(r"/api/nots/company/list"), self._companies),
            (re.compile(r"/api/nots/security"), self._securities),
            (re.compile(r"/api/nots/market/history/security/(\d+)"), self._history),
            (re.compile(r"/api/nots/application/reports/(\d+)"), self._reports),
            (re.compile(r"/api/nots/application/dividend/(\d+)"), self._dividends),
            (re.compile(r"/api/nots/security/(\d+)"), self._ownership),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        self.requests += 1
        arrived = trio.current_time()
        if self._bucket is not None:
            wait = self._bucket.wait_needed(arrived)
            if wait > 0:
                self.limited += 1
                await trio.sleep_until(arrived + self.latency)
                retry_after = str(max(1, math.ceil(wait))).encode()
                await send_json(
                    send, 429, b'{"message":"Too Many Requests"}', [(b"retry-after", retry_after)]
                )
                return
            self._bucket.admit(arrived)
        status, body = self.answer(scope["method"], scope["path"], scope.get("query_string", b""))
        payload = encode(body)
        await trio.sleep_until(arrived + self.latency)  # the work so far is part of the latency
        await send_json(send, status, payload)

    def answer(self, method: str, path: str, query: bytes) -> tuple[int, Any]:
        """(status, JSON body) for one request."""
        if method not in ("GET", "POST"):
            return 405, {"message": "Method Not Allowed"}
        params = {k: v[-1] for k, v in parse_qs(query.decode("latin-1")).items()}
        for pattern, handler in self._routes:
            match = pattern.fullmatch(path.rstrip("/"))
            if match:
                try:
                    args = [int(group) for group in match.groups()]
                    if args and args[0] not in self.market.by_id:
                        return 404, {"message": f"Security {args[0]} not found"}
                    return 200, handler(*args, params=params)
                except BadRequest as exc:
                    return 400, {"message": str(exc)}
        return 404, {"message": "Not Found"}

    def _companies(self, params: dict[str, str]) -> Any:
        return self.market.company_list_wire()

    def _securities(self, params: dict[str, str]) -> Any:
        return self.market.security_list_wire(params.get("nonDelisted", "true") != "false")

    def _history(self, security_id: int, params: dict[str, str]) -> Any:
        try:
            start = date.fromisoformat(params["startDate"])
            end = date.fromisoformat(params["endDate"])
            size = min(int(params.get("size", MAX_PAGE_SIZE)), MAX_PAGE_SIZE)
            page = int(params.get("page", 0))
        except (KeyError, ValueError) as exc:
            raise BadRequest(f"bad history parameters: {exc}") from exc
        if size < 1 or page < 0 or start > end:
            raise BadRequest("size must be positive, page not negative, startDate <= endDate")
        return self.market.history_page_wire(security_id, DateRange(start, end), page, size)

    def _reports(self, security_id: int, params: dict[str, str]) -> Any:
        return self.market.reports_wire(security_id)

    def _dividends(self, security_id: int, params: dict[str, str]) -> Any:
        return self.market.dividends_wire(security_id)

    def _ownership(self, security_id: int, params: dict[str, str]) -> Any:
        return self.market.ownership_wire(security_id)


def encode(body: Any) -> bytes:
    """The JSON of an answer. The market never holds NaN, which msgspec would write as null;
    tests that put NaN on the wire encode it themselves."""
    return msgspec.json.encode(body)


async def send_json(
    send: Send, status: int, payload: bytes, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    """One whole JSON answer (`payload` already encoded: it may be deliberately broken)."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
