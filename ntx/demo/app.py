"""The demo exchange's ASGI application: NEPSE's protocol and wire format over a `Market`.

A plain ASGI 3 callable (no framework): a handful of routes, JSON answers, a fixed latency
per request slept on trio's clock. Page size is capped at 500 like the real exchange. With a
`TokenDesk` (the default) it speaks the handshake as the exchange does: `prove` and the token
module need no token; every `/api/nots` request needs a live `Salter` token (else 401 with an
HTML body); ownership is a POST whose payload id is checked (a GET answers the small shape).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any
from urllib.parse import parse_qs

import msgspec
import trio

from ntx.demo.limits import Limit, Refusal
from ntx.demo.market import Market, spring_page
from ntx.demo.protocol import UNAUTHORIZED_HTML, Issued, TokenDesk
from ntx.model import DateRange
from ntx.sources.nepse.payload import PayloadKind

MAX_PAGE_SIZE = 500

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class BadRequest(Exception):
    pass


@dataclass(frozen=True)
class Raw:
    """An answer body that is not JSON (the 401 page, the token module)."""

    data: bytes
    content_type: str


UNAUTHORIZED = Raw(UNAUTHORIZED_HTML.encode(), "text/html")


@dataclass(frozen=True)
class Call:
    """What a route sees of its request."""

    method: str
    params: dict[str, str]
    body: bytes
    token: Issued | None


class DemoApp:
    """Serves `market`; every answer leaves `latency` seconds after its request arrived
    (building it is part of that time, so the client sees the latency it was promised).

    With a `limit` (`ntx.demo.limits`), the requests it refuses are answered as `refuse`
    says: 429 with a `Retry-After`, 503, or a connection dropped without an answer. With a
    `window_days`, history serves only the last that many days before the market's today: a
    `startDate` before them answers 500 `Searched Date is not valid.`, as the exchange does.
    """

    def __init__(
        self,
        market: Market,
        latency: float = 0.04,
        limit: Limit | None = None,
        desk: TokenDesk | None = None,
        *,
        refuse: Refusal = Refusal.too_many,
        protocol: bool = True,
        window_days: int | None = None,
    ) -> None:
        self.market = market
        self.latency = latency
        self.window_starts = market.today - timedelta(days=window_days) if window_days else None
        self.desk = desk if desk is not None else TokenDesk() if protocol else None
        self.requests = 0
        self.limited = 0
        self.limit = limit
        self.refuse = refuse
        self._routes: list[tuple[re.Pattern[str], Callable[..., Any]]] = [
            (re.compile(r"/api/nots/nepse-data/market-open"), self._market_open),
            (re.compile(r"/api/nots/nepse-data/today-price"), self._today_price),
            (re.compile(r"/api/nots/holiday/list"), self._holidays),
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
        wait = self.limit.check(arrived) if self.limit is not None else None
        if wait is not None:
            self.limited += 1
            await trio.sleep_until(arrived + self.latency)
            await self._refuse(send, wait)
            return
        body = await read_body(receive)
        status, answer = self.answer(
            scope["method"], scope["path"], scope.get("query_string", b""), headers_of(scope), body
        )
        await trio.sleep_until(arrived + self.latency)  # the work so far is part of the latency
        await send_answer(send, status, answer)

    async def _refuse(self, send: Send, wait: float) -> None:
        """A request over the limit: 429 with Retry-After (whole seconds), 503, or dropped."""
        if self.refuse is Refusal.drop:
            await drop_connection(send)
        elif self.refuse is Refusal.unavailable:
            await send_json(send, 503, b'{"message":"Service Temporarily Unavailable"}')
        else:
            retry_after = str(max(1, math.ceil(wait))).encode()
            await send_json(
                send, 429, b'{"message":"Too Many Requests"}', [(b"retry-after", retry_after)]
            )

    def answer(
        self,
        method: str,
        path: str,
        query: bytes | str,
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
    ) -> tuple[int, Any]:
        """(status, body) for one request: a JSON value, or `Raw` bytes. `headers` are
        lower-cased names."""
        if method not in ("GET", "POST"):
            return 405, {"message": "Method Not Allowed"}
        path = path.rstrip("/")
        if isinstance(query, str):
            query = query.encode("latin-1")
        params = {k: v[-1] for k, v in parse_qs(query.decode("latin-1")).items()}
        token = None
        if self.desk is not None:
            if path == PROVE:
                return 200, self.desk.prove()
            if path == MODULE:
                return 200, Raw(self.desk.wasm, "application/wasm")
            token = self.desk.holder((headers or {}).get("authorization"))
            if token is None and path.startswith("/api/nots/"):
                return 401, UNAUTHORIZED
        call = Call(method, params, body, token)
        for pattern, handler in self._routes:
            match = pattern.fullmatch(path)
            if match:
                try:
                    args = [int(group) for group in match.groups()]
                    if args and args[0] not in self.market.by_id:
                        return 404, {"message": f"Security {args[0]} not found"}
                    return 200, handler(*args, call=call)
                except BadRequest as exc:
                    return 400, {"message": str(exc)}
                except DateNotValid:
                    return 500, DATE_NOT_VALID
                except Unauthorized:
                    return 401, UNAUTHORIZED
                except NotAllowed:
                    return 405, {"message": "Method Not Allowed"}
        return 404, {"message": "Not Found"}

    def _market_open(self, call: Call) -> Any:
        """Closed, as of the close of the latest session (the demo's market is never open)."""
        market_id = self.desk.market_id if self.desk else 0
        last = self.market.last_session(self.market.today) or self.market.today
        return {"isOpen": "CLOSE", "asOf": f"{last}T15:00:00", "id": market_id}

    def _companies(self, call: Call) -> Any:
        return self.market.company_list_wire()

    def _securities(self, call: Call) -> Any:
        return self.market.security_list_wire(call.params.get("nonDelisted", "true") != "false")

    def _history(self, security_id: int, call: Call) -> Any:
        params = call.params
        try:
            start = date.fromisoformat(params["startDate"])
            end = date.fromisoformat(params["endDate"])
            size = min(int(params.get("size", MAX_PAGE_SIZE)), MAX_PAGE_SIZE)
            page = int(params.get("page", 0))
        except (KeyError, ValueError) as exc:
            raise BadRequest(f"bad history parameters: {exc}") from exc
        if size < 1 or page < 0 or start > end:
            raise BadRequest("size must be positive, page not negative, startDate <= endDate")
        if self.window_starts is not None and start < self.window_starts:
            raise DateNotValid
        return self.market.history_page_wire(security_id, DateRange(start, end), page, size)

    def _today_price(self, call: Call) -> Any:
        """Every security's prices of one business date (POST with the payload id; no
        `businessDate`: the latest session). A date before the window answers as history
        does; a day without a session, or one not yet reached, answers an empty page."""
        if self.desk is not None:
            if call.method != "POST":
                raise NotAllowed
            self._check_payload(call, PayloadKind.TODAY_PRICE)
        params = call.params
        try:
            size = min(int(params.get("size", MAX_PAGE_SIZE)), MAX_PAGE_SIZE)
            page = int(params.get("page", 0))
            asked = params.get("businessDate")
            day = (
                date.fromisoformat(asked) if asked else self.market.last_session(self.market.today)
            )
        except ValueError as exc:
            raise BadRequest(f"bad today-price parameters: {exc}") from exc
        if size < 1 or page < 0:
            raise BadRequest("size must be positive and page not negative")
        if day is not None and self.window_starts is not None and day < self.window_starts:
            raise DateNotValid
        if day is None or day > self.market.today:
            return spring_page([], page, size, 0)
        return self.market.today_price_wire(day, page, size)

    def _holidays(self, call: Call) -> Any:
        try:
            year = int(call.params["year"])
        except (KeyError, ValueError) as exc:
            raise BadRequest(f"bad holiday list parameters: {exc}") from exc
        return self.market.holidays_wire(year)

    def _check_payload(self, call: Call, kind: PayloadKind) -> None:
        """A POST whose body id is not the one its token's salts give answers 401."""
        assert self.desk is not None and call.token is not None
        try:
            sent = msgspec.json.decode(call.body).get("id")
        except (msgspec.DecodeError, AttributeError):
            sent = None
        if sent != self.desk.expected_id(kind, call.token):
            raise Unauthorized

    def _reports(self, security_id: int, call: Call) -> Any:
        return self.market.reports_wire(security_id)

    def _dividends(self, security_id: int, call: Call) -> Any:
        return self.market.dividends_wire(security_id)

    def _ownership(self, security_id: int, call: Call) -> Any:
        """POST with the payload id: the detail with ownership; GET: the small shape."""
        full = self.market.ownership_wire(security_id)
        if self.desk is None:
            return full
        if call.method == "GET":
            return {
                "securityData": {"id": security_id, "symbol": full["security"]["symbol"]},
                "securityMcsData": {"securityId": security_id},
            }
        self._check_payload(call, PayloadKind.SECURITY)
        return full


PROVE = "/api/authenticate/prove"
MODULE = "/assets/prod/css.wasm"


class Unauthorized(Exception):
    """A POST whose payload id is wrong: the exchange answers 401."""


class NotAllowed(Exception):
    """A GET of a POST-only endpoint."""


class DateNotValid(Exception):
    """A history start before the window: the exchange answers 500 with a plain text."""


DATE_NOT_VALID = Raw(b"Searched Date is not valid.", "text/plain")


class InjectedReset(Exception):
    """Raised mid-answer so that the server drops the connection."""


class QuietResets(logging.Filter):
    """Keeps the server's log free of the resets the demo makes on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], InjectedReset))


_PROMISED = [(b"content-type", b"application/json"), (b"content-length", b"64")]


async def drop_connection(send: Send) -> None:
    """Close the connection before any of the body, as the exchange does to a client that
    bursts (hypercorn always sends a status line first)."""
    await send({"type": "http.response.start", "status": 200, "headers": _PROMISED})
    await send({"type": "http.response.body", "body": b"", "more_body": True})
    raise InjectedReset("connection dropped")


def encode(body: Any) -> bytes:
    """The bytes of an answer. The market never holds NaN, which msgspec would write as null;
    tests that put NaN on the wire encode it themselves."""
    return body.data if isinstance(body, Raw) else msgspec.json.encode(body)


def content_type(body: Any) -> bytes:
    return (body.content_type if isinstance(body, Raw) else "application/json").encode()


def headers_of(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


async def read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    return b"".join(chunks)


async def send_answer(send: Send, status: int, body: Any) -> None:
    await send_json(send, status, encode(body), content=content_type(body))


async def send_json(
    send: Send,
    status: int,
    payload: bytes,
    headers: list[tuple[bytes, bytes]] | None = None,
    content: bytes = b"application/json",
) -> None:
    """One whole answer (`payload` already encoded: it may be deliberately broken)."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content),
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
