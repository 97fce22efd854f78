"""The NEPSE source over httpx.MockTransport: paths, encoding, error classification."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
import trio

from ntx.errors import HttpStatusError, MalformedResponse, TransportError
from ntx.sources.client import open_client
from ntx.sources.nepse import NepseSource
from ntx.throttle import Throttle

DETAIL = {
    "stockListedShares": 1.0,
    "paidUpCapital": 1.0,
    "publicShares": 1,
    "publicPercentage": 50.0,
    "promoterShares": 1.0,
    "promoterPercentage": 50.0,
}


class Collected(list[dict[str, object]]):
    """A `RecordSink` that keeps what it is given; `starts` counts the attempts."""

    starts = 0

    def start(self) -> None:
        self.starts += 1
        self.clear()

    def add(self, record: dict[str, object]) -> None:
        self.append(record)


async def call(handler, method: str, *args):  # type: ignore[no-untyped-def]
    async with open_client(
        "http://exchange.test/base", workers=1, timeout=5, transport=httpx.MockTransport(handler)
    ) as client:
        return await getattr(NepseSource(client, Throttle(0)), method)(*args)


async def test_identifiers_are_url_encoded_and_paths_keep_the_base_path() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.raw_path.decode())
        return httpx.Response(200, json=[])

    await call(handler, "reports", "12/../../admin?x=1")
    assert seen == ["/base/api/nots/application/reports/12%2F..%2F..%2Fadmin%3Fx%3D1"]


@pytest.mark.parametrize(
    ("status", "retry_after"), [(404, None), (429, "7"), (500, None), (401, None)]
)
async def test_status_other_than_200_is_an_http_error(status: int, retry_after: str | None) -> None:
    headers = {"Retry-After": retry_after} if retry_after else {}
    with pytest.raises(HttpStatusError) as caught:
        await call(lambda r: httpx.Response(status, headers=headers, json={}), "dividends", 5)
    assert caught.value.status == status and caught.value.retry_after == retry_after
    assert str(caught.value) == f"HTTP {status} from /api/nots/application/dividend/5"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'[{"id": 1', "not valid JSON"),
        (b'{"a": 1}', "expected a JSON array"),
        (b"", "not valid JSON"),
    ],
)
async def test_truncated_or_wrongly_shaped_answers_are_malformed(body: bytes, message: str) -> None:
    with pytest.raises(MalformedResponse, match=message):
        await call(lambda r: httpx.Response(200, content=body), "dividends", 1)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'[{"id": 1}, {"id": 2', "the array ends early"),
        (b'[{"id": 1}, {"id": }]', "not valid JSON"),
        (b'{"a": 1}', "expected a JSON array"),
        (b"[1, 2]", "expected an array of objects"),
        (b"", "no JSON array"),
    ],
)
async def test_a_streamed_list_that_is_truncated_or_wrongly_shaped_is_malformed(
    body: bytes, message: str
) -> None:
    with pytest.raises(MalformedResponse, match=message):
        await call(lambda r: httpx.Response(200, content=body), "companies", Collected())


async def test_a_streamed_list_arrives_record_by_record_and_a_refused_record_is_malformed() -> None:
    body = b'[{"symbol": "A"}, {"symbol": "B", "n": [1, {"x": "]"}]}]'
    into = Collected()
    await call(lambda r: httpx.Response(200, content=body), "securities", into)
    assert into == [{"symbol": "A"}, {"symbol": "B", "n": [1, {"x": "]"}]}] and into.starts == 1

    class Refusing(Collected):
        def add(self, record: dict[str, object]) -> None:
            raise ValueError(f"no {record['symbol']}")

    with pytest.raises(MalformedResponse, match=r"/api/nots/security: .*ValueError: no A"):
        await call(lambda r: httpx.Response(200, content=body), "securities", Refusing())


async def test_json_beyond_the_standard_is_still_read_so_validation_can_judge_each_row() -> None:
    """NaN, Infinity and integers beyond 64 bits (written by some servers) decode; only the
    row holding one is then refused, not the whole answer."""
    body = b'[{"a": NaN}, {"a": Infinity}, {"a": 123456789012345678901234567890}, {"a": 1.5}]'
    rows = Collected()
    await call(lambda r: httpx.Response(200, content=body), "companies", rows)
    assert math.isnan(rows[0]["a"]) and rows[1]["a"] == math.inf
    assert rows[2]["a"] == 123456789012345678901234567890 and rows[3] == {"a": 1.5}


async def test_connection_errors_and_timeouts_are_transport_errors() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    def stall(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    with pytest.raises(TransportError, match="cannot connect"):
        await call(refuse, "companies", Collected())
    with pytest.raises(TransportError, match="timed out"):
        await call(stall, "securities", Collected())


async def test_the_gate_is_left_only_after_the_body_is_read() -> None:
    events: list[str] = []

    class RecordingGate:
        @asynccontextmanager
        async def request(self) -> AsyncIterator[None]:
            events.append("enter")
            yield
            events.append("exit")

    async def handler(request: httpx.Request) -> httpx.Response:
        events.append("server")
        await trio.sleep(0)
        return httpx.Response(200, json=DETAIL)

    transport = httpx.MockTransport(handler)
    async with open_client("http://x", workers=1, timeout=5, transport=transport) as client:
        source = NepseSource(client, Throttle(0)).bind(RecordingGate())
        assert await source.ownership(1) == DETAIL
    assert events == ["enter", "server", "exit"]


async def test_an_answer_without_the_documented_fields_is_malformed() -> None:
    with pytest.raises(MalformedResponse, match="has no 'stockListedShares'"):
        await call(lambda r: httpx.Response(200, json={"status": "ok"}), "ownership", 3)
    with pytest.raises(MalformedResponse, match="array of objects"):
        await call(lambda r: httpx.Response(200, json=[1, 2]), "reports", 3)
