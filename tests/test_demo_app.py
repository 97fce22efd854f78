"""The demo exchange's latency contract, under MockClock: an answer leaves `latency` after
its request arrived, however long building it took (up to the latency)."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
import trio
from trio.testing import MockClock

from ntx.demo.app import DemoApp
from ntx.demo.market import Market


async def answered_after(app: DemoApp) -> float:
    """Seconds from calling the app to the start of its answer."""
    started = trio.current_time()
    sent: list[float] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            sent.append(trio.current_time() - started)

    scope = {"type": "http", "method": "GET", "path": "/api/nots/company/list"}
    await app(scope, receive, send)
    return sent[0]


@pytest.mark.parametrize("work", [0.0, 0.03, 0.05])
async def test_building_the_answer_is_part_of_the_latency(
    mock_clock: MockClock, work: float
) -> None:
    app = DemoApp(Market(seed=1, securities=20, today=date(2026, 6, 30)), latency=0.05)
    build = app.answer

    def slow_answer(*args: Any) -> tuple[int, Any]:
        mock_clock.jump(work)  # the server busy building it
        return build(*args)

    app.answer = slow_answer  # type: ignore[method-assign]
    assert await answered_after(app) == pytest.approx(0.05)
