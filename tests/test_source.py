"""The NEPSE source over httpx.MockTransport: paths, encoding, error classification."""

from __future__ import annotations

import gzip
import math
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import date

import httpx
import pytest
import trio

from ntx.errors import HttpStatusError, MalformedResponse, OutsideWindow, TransportError
from ntx.model import DateRange
from ntx.net.client import open_client
from ntx.pace.retry import RetryPolicy
from ntx.pace.throttle import Throttle
from ntx.sources.nepse.source import NepseSource
from tests.helpers import tokenless

DETAIL = {
    "stockListedShares": 1.0,
    "paidUpCapital": 1.0,
    "publicShares": 1,
    "publicPercentage": 50.0,
    "promoterShares": 1.0,
    "promoterPercentage": 50.0,
}


async def call(handler, method: str, *args):  # type: ignore[no-untyped-def]
    async with open_client(
        "http://exchange.test/base", workers=1, timeout=5, transport=tokenless(handler)
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
        (b'[{"id": 1, "symbol": "A"}, {"id": 2', "not valid JSON"),
        (b'{"a": 1}', "Expected `array`, got `object`"),
        (b"[1, 2]", "Expected `object`, got `int`"),
        (b'[{"id": "1", "symbol": "A"}]', r"Expected `int`, got `str` - at `\$\[0\].id`"),
        (b'[{"id": true, "symbol": "A"}]', "Expected `int`, got `bool`"),
        (b'[{"id": 1}]', "missing required field `symbol`"),
        (b'[{"id": 1, "symbol": "A", "securityName": 5}]', "Expected `str | null`"),
        (b"", "not valid JSON"),
    ],
)
async def test_a_list_that_is_truncated_or_wrongly_typed_is_malformed(
    body: bytes, message: str
) -> None:
    with pytest.raises(MalformedResponse, match=message):
        await call(lambda r: httpx.Response(200, content=body), "securities")


async def test_the_lists_decode_into_records_and_ignore_fields_they_do_not_use() -> None:
    body = b'[{"id": 3, "symbol": "NABIL", "securityName": "Nabil", "activeStatus": "A", "x": []}]'
    (record,) = await call(lambda r: httpx.Response(200, content=body), "securities")
    assert (record.id, record.symbol, record.security_name, record.active_status) == (
        3,
        "NABIL",
        "Nabil",
        "A",
    )
    body = (
        b'[{"symbol": "NABIL", "companyName": "Nabil Bank", "id": 31, "instrumentType": "Equity"}]'
    )
    (company,) = await call(lambda r: httpx.Response(200, content=body), "companies")
    assert (company.id, company.company_name, company.instrument_type, company.status) == (
        31,
        "Nabil Bank",
        "Equity",
        None,
    )


async def test_json_beyond_the_standard_is_still_read_so_validation_can_judge_each_row() -> None:
    """NaN, Infinity and integers beyond 64 bits (written by some servers) decode; only the
    row holding one is then refused, not the whole answer."""
    body = b'[{"a": NaN}, {"a": Infinity}, {"a": 123456789012345678901234567890}, {"a": 1.5}]'
    rows = await call(lambda r: httpx.Response(200, content=body), "reports", 1)
    assert math.isnan(rows[0]["a"]) and rows[1]["a"] == math.inf
    assert rows[2]["a"] == 123456789012345678901234567890 and rows[3] == {"a": 1.5}


async def test_a_gzipped_answer_cut_short_is_malformed_not_half_stored() -> None:
    body = gzip.compress(b'[{"id": 1, "symbol": "A"}, {"id": 2, "symbol": "B"}]')[:-12]
    headers = {"content-encoding": "gzip"}
    with pytest.raises(MalformedResponse, match="not valid JSON"):
        await call(lambda r: httpx.Response(200, content=body, headers=headers), "securities")


async def test_connection_errors_and_timeouts_are_transport_errors() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    def stall(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    with pytest.raises(TransportError, match="cannot connect"):
        await call(refuse, "companies")
    with pytest.raises(TransportError, match="timed out"):
        await call(stall, "securities")


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

    transport = tokenless(handler)
    async with open_client("http://x", workers=1, timeout=5, transport=transport) as client:
        source = NepseSource(client, Throttle(0)).bind(RecordingGate())
        assert await source.ownership(1) == DETAIL
    # the handshake's prove (answered 404 by a plain mirror), then the request itself
    assert events == ["enter", "exit", "enter", "server", "exit"]


async def test_an_answer_without_the_documented_fields_is_malformed() -> None:
    with pytest.raises(MalformedResponse, match="has no 'stockListedShares'"):
        await call(lambda r: httpx.Response(200, json={"status": "ok"}), "ownership", 3)
    with pytest.raises(MalformedResponse, match="array of objects"):
        await call(lambda r: httpx.Response(200, json=[1, 2]), "reports", 3)


async def test_a_date_before_the_window_is_not_retried_and_the_window_is_searched() -> None:
    first = date(2025, 12, 12)
    starts: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        start = request.url.params["startDate"]
        starts.append(start)
        if date.fromisoformat(start) < first:
            return httpx.Response(500, text="Searched Date is not valid.")
        return httpx.Response(200, json=page([], 0, 0))

    gate = Throttle(0)
    async with open_client(
        "http://exchange.test", workers=1, timeout=5, transport=tokenless(handler)
    ) as client:
        source = NepseSource(client, gate, RetryPolicy(gate, retries=5, rng=random.Random(1)))
        period = DateRange(date(2019, 1, 1), date(2026, 6, 30))
        with pytest.raises(OutsideWindow) as caught:
            await source.price_history(7, period)
        assert caught.value.first == first == source.window_starts()
        asked = len(starts)
        assert starts[0] == "2019-01-01" and asked <= 2 + math.ceil(math.log2(period.days))
        with pytest.raises(OutsideWindow):  # known now: not asked again
            await source.price_history(7, period)
        assert len(starts) == asked
        assert await source.price_history(7, DateRange(first, date(2026, 6, 30))) == []


def page(content: list[object], total: int, pages: int) -> dict[str, object]:
    return {"content": content, "totalElements": total, "totalPages": pages, "number": 0}
