"""Paging: for every server page cap and range length, no row is lost and none repeated;
a server whose pages do not add up is caught, never stored as a partial history."""

from __future__ import annotations

import math
from datetime import date, timedelta

import httpx
import pytest
import trio
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from ntx.errors import MalformedResponse
from ntx.model import DateRange
from ntx.net.client import open_client
from ntx.pace.throttle import Throttle
from ntx.sources.nepse.source import NepseSource
from tests.helpers import tokenless

START = date(2015, 1, 1)


def paging_server(
    rows: int, cap: int, *, skip_page: int | None = None, shift: bool = False
) -> httpx.MockTransport:
    """A history endpoint over `rows` days, most recent first, with pages of at most `cap`."""
    days = [(START + timedelta(days=rows - 1 - i)).isoformat() for i in range(rows)]
    requests: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        size = min(int(request.url.params["size"]), cap)
        page = int(request.url.params["page"])
        requests.append(page)
        offset = page * size + (1 if shift and page > 0 else 0)  # a row slid between pages
        content = [] if page == skip_page else days[offset : offset + size]
        body = {
            "content": [
                {"businessDate": d, "highPrice": 2.0, "lowPrice": 1.0, "closePrice": 1.5}
                for d in content
            ],
            "number": page,
            "size": size,
            "totalElements": rows,
            "totalPages": math.ceil(rows / size),
            "numberOfElements": len(content),
        }
        return httpx.Response(200, json=body)

    transport = tokenless(handler)
    transport.requests = requests  # type: ignore[attr-defined]
    return transport


def fetch(transport: httpx.MockTransport, rows: int) -> list[str]:
    async def main() -> list[str]:
        async with open_client("http://x", workers=1, timeout=5, transport=transport) as client:
            source = NepseSource(client, Throttle(0))
            period = DateRange(START, START + timedelta(days=max(rows, 1)))
            return [r["businessDate"] for r in await source.price_history(1, period)]

    return trio.run(main)


@settings(max_examples=150, deadline=None)
@given(rows=st.integers(0, 2500), cap=st.integers(1, 700))
def test_every_row_exactly_once_for_any_page_cap(rows: int, cap: int) -> None:
    transport = paging_server(rows, cap)
    got = fetch(transport, rows)
    assert len(got) == rows
    assert set(got) == {(START + timedelta(days=i)).isoformat() for i in range(rows)}
    assert transport.requests == list(range(max(1, math.ceil(rows / min(cap, 500)))))  # type: ignore[attr-defined]


@settings(max_examples=60, deadline=None)
@given(rows=st.integers(2, 1500), cap=st.integers(1, 500), data=st.data())
def test_a_missing_page_is_an_error_not_a_hole(rows: int, cap: int, data: st.DataObject) -> None:
    pages = math.ceil(rows / cap)
    assume(pages >= 2)
    skip = data.draw(st.integers(1, pages - 1))
    with pytest.raises(MalformedResponse, match="paging"):
        fetch(paging_server(rows, cap, skip_page=skip), rows)


def test_rows_sliding_between_pages_are_caught() -> None:
    with pytest.raises(MalformedResponse, match="paging"):
        fetch(paging_server(1200, 500, shift=True), 1200)
