"""Client for NEPSE-compatible APIs (the real exchange's public API, mirrors, the demo).

Paths and paging follow `shared/design/nepse-api.md`. Identifiers are URL-encoded before they
enter a path. Price history is paged to the end and checked: a page sequence that loses or
repeats rows raises `MalformedResponse` instead of silently storing a partial history.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
import msgspec

from ntx.errors import HttpStatusError, MalformedResponse, TransportError
from ntx.jsonstream import NotAnArrayOfObjects, ObjectArray
from ntx.model import DateRange
from ntx.retry import RetryPolicy
from ntx.sources import RecordSink, Wire
from ntx.sources.client import ApiClient
from ntx.throttle import RequestGate
from ntx.transport import Answer, BodySink
from ntx.wire import shape_error

T = TypeVar("T")
PAGE_SIZE = 500  # the server's cap; it may answer with smaller pages, which is fine


def _segment(identifier: object) -> str:
    return quote(str(identifier), safe="")


class NepseSource:
    """The NEPSE wire format over an `ApiClient` whose base_url is the API root.

    With a `policy`, every request is retried by it; without one, each request is tried once
    and its error raised as it is.
    """

    def __init__(
        self, client: ApiClient, gate: RequestGate, policy: RetryPolicy | None = None
    ) -> None:
        self._client = client
        self._gate = gate
        self._policy = policy

    def bind(self, gate: RequestGate) -> NepseSource:
        return NepseSource(self._client, gate, self._policy)

    async def companies(self, into: RecordSink) -> None:
        """The company list, record by record into `into`."""
        await self._streamed_list("/api/nots/company/list", into)

    async def securities(self, into: RecordSink) -> None:
        """The security list, record by record into `into`."""
        await self._streamed_list("/api/nots/security", into, params={"nonDelisted": "true"})

    async def price_history(self, security_id: int, period: DateRange) -> list[Wire]:
        """Every history row of `period`, all pages, checked against the server's own count."""
        path = f"/api/nots/market/history/security/{_segment(security_id)}"
        rows: list[Wire] = []
        total: int | None = None
        page = 0
        while True:
            params = {
                "startDate": period.start.isoformat(),
                "endDate": period.end.isoformat(),
                "size": PAGE_SIZE,
                "page": page,
            }
            content, total_pages, elements = await self._get(path, params=params, shape=_page)
            if total is None:
                total = elements
            elif elements != total:
                raise MalformedResponse(
                    f"{path}: totalElements changed from {total} to {elements} while paging"
                )
            rows.extend(content)
            page += 1
            if page >= total_pages or not content:
                break
        if len(rows) != total:
            raise MalformedResponse(
                f"{path}: paging gave {len(rows)} rows but the server counts {total}"
            )
        dates = {row.get("businessDate") if isinstance(row, dict) else None for row in rows}
        if len(dates) != len(rows):
            raise MalformedResponse(f"{path}: paging returned the same day twice")
        return rows

    async def reports(self, security_id: int) -> list[Wire]:
        path = f"/api/nots/application/reports/{_segment(security_id)}"
        return await self._get(path, shape=_records)

    async def dividends(self, security_id: int) -> list[Wire]:
        path = f"/api/nots/application/dividend/{_segment(security_id)}"
        return await self._get(path, shape=_records)

    async def ownership(self, security_id: int) -> dict[str, Wire]:
        path = f"/api/nots/security/{_segment(security_id)}"
        return await self._get(path, shape=_security_detail)

    async def _streamed_list(
        self, path: str, into: RecordSink, params: dict[str, Any] | None = None
    ) -> None:
        """A JSON array of objects, streamed into `into`; retried by the policy, if any."""
        await self._tried(lambda: self._stream(path, params, into))

    async def _stream(self, path: str, params: dict[str, Any] | None, into: RecordSink) -> None:
        """One attempt: the array's elements are decoded and handed over as they arrive."""
        reader = ObjectArray()

        def take(piece: bytes) -> None:
            for element in reader.feed(piece):
                into.add(decode_json(element, path))

        async with self._gate.request():
            into.start()
            try:
                response = await self._send(path, params, take)
                if response.status_code == 200:
                    reader.close()
            except (ValueError, KeyError, TypeError) as exc:  # the reader's, or `into`'s
                raise MalformedResponse(f"{path}: {_shape_error(exc)}") from exc
            if response.status_code != 200:
                raise HttpStatusError(response.status_code, path, response.header("Retry-After"))

    async def _get(
        self, path: str, *, shape: Callable[[Wire, str], T], params: dict[str, Any] | None = None
    ) -> T:
        """One request whose answer must pass `shape`, retried by the policy if there is one.

        A wrongly shaped answer counts like any other bad answer: it is retried.
        """
        return await self._tried(lambda: self._attempt(path, params, shape))

    async def _tried(self, attempt: Callable[[], Awaitable[T]]) -> T:
        """`attempt()` once, or as often as the retry policy (if there is one) says."""
        if self._policy is None:
            return await attempt()
        return await self._policy.call(attempt, self._gate)

    async def _attempt(
        self, path: str, params: dict[str, Any] | None, shape: Callable[[Wire, str], T]
    ) -> T:
        """One attempt through the gate; the answer's body is read before the gate closes."""
        async with self._gate.request():
            response = await self._send(path, params)
            if response.status_code != 200:  # inside the gate, which paces by the status
                raise HttpStatusError(response.status_code, path, response.header("Retry-After"))
        return shape(decode_json(response.content, path), path)

    async def _send(
        self, path: str, params: dict[str, Any] | None, sink: BodySink | None = None
    ) -> Answer:
        """The answer to one GET; httpx's errors become `TransportError`s."""
        try:
            return await self._client.get(path, params=params, sink=sink)
        except httpx.TimeoutException as exc:
            raise TransportError(f"timed out: {self._url(path)} ({type(exc).__name__})") from exc
        except httpx.HTTPError as exc:
            reason = str(exc) or type(exc).__name__
            raise TransportError(f"{_describe(exc)} {self._url(path)} ({reason})") from exc

    def _url(self, path: str) -> str:
        return self._client.url(path)


_DECODER = msgspec.json.Decoder()


def decode_json(content: bytes, path: str) -> Wire:
    """The answer's JSON, or `MalformedResponse`.

    msgspec decodes: two to three times faster than the standard library, and straight into
    Python objects (orjson first builds a document tree, about twelve times the size of a
    large answer). What it refuses, the standard library tries too: it also reads the NaN and
    Infinity some servers write and integers beyond 64 bits, so a row holding one is refused
    by validation alone instead of its whole answer.
    """
    try:
        return _DECODER.decode(content)
    except msgspec.DecodeError:
        pass
    try:
        return json.loads(content)
    except ValueError as exc:
        raise MalformedResponse(f"{path}: the answer is not valid JSON ({exc})") from exc


def _describe(exc: httpx.HTTPError) -> str:
    if isinstance(exc, httpx.ConnectError):
        return "cannot connect to"
    if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError):
        return "connection broken at"
    return "request failed:"


OWNERSHIP_FIELDS = (
    "stockListedShares",
    "paidUpCapital",
    "publicShares",
    "publicPercentage",
    "promoterShares",
    "promoterPercentage",
)


def _shape_error(exc: Exception) -> str:
    if isinstance(exc, NotAnArrayOfObjects):
        return str(exc)
    return shape_error(exc)


def _records(body: Wire, path: str) -> list[Wire]:
    """A JSON array of objects."""
    if not isinstance(body, list):
        raise MalformedResponse(f"{path}: expected a JSON array, got {type(body).__name__}")
    if not all(isinstance(item, dict) for item in body):
        raise MalformedResponse(f"{path}: expected an array of objects")
    return body


def _security_detail(body: Wire, path: str) -> dict[str, Wire]:
    """The security detail object, with every ownership field present (null allowed)."""
    if not isinstance(body, dict):
        raise MalformedResponse(f"{path}: expected a JSON object, got {type(body).__name__}")
    missing = [name for name in OWNERSHIP_FIELDS if name not in body]
    if missing:
        raise MalformedResponse(f"{path}: the answer has no {missing[0]!r}")
    return body


def _page(body: Wire, path: str) -> tuple[list[Wire], int, int]:
    """The rows and counts of one Spring-style page, or `MalformedResponse`."""
    if not isinstance(body, dict):
        raise MalformedResponse(f"{path}: expected a page object, got {type(body).__name__}")
    content, pages, elements = (
        body.get("content"),
        body.get("totalPages"),
        body.get("totalElements"),
    )
    if not isinstance(content, list) or not all(isinstance(row, dict) for row in content):
        raise MalformedResponse(f"{path}: page has no 'content' array of objects")
    for name, value in (("totalPages", pages), ("totalElements", elements)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise MalformedResponse(f"{path}: page has no valid '{name}'")
    assert isinstance(pages, int) and isinstance(elements, int)
    return content, pages, elements
