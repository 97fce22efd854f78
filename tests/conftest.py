from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable
from functools import partial

import pytest
import trio
from trio.testing import MockClock

from ntx.demo.app import DemoApp
from ntx.demo.limits import Limiter, Refusal, make_limit
from ntx.demo.market import Market
from ntx.demo.protocol import TOKEN_TTL, TokenDesk
from ntx.demo.server import serve
from tests.helpers import TODAY, RecordingApp

# Under MockClock with autojump, trio polls without sleeping while a task waits for a worker
# thread (the writer's SQLite work), so the two threads contend for the GIL; at Python's
# default 5 ms switch interval every SQLite call in the thread waits that long for it. A
# shorter interval only makes the hand-over sooner: it changes no timing that a test checks.
sys.setswitchinterval(0.0002)


@pytest.fixture
def mock_clock() -> MockClock:
    """trio's MockClock jumping ahead whenever every task waits: timing tests run exactly,
    without real sleeping (pytest-trio runs a test under the clock it is given)."""
    return MockClock(autojump_threshold=0)


@pytest.fixture
def start_demo(nursery: trio.Nursery) -> Callable[..., object]:
    """Start a real demo exchange (hypercorn on 127.0.0.1, free port) wrapped in a recorder.

    Returns an async function: `url, recorder = await start_demo(securities=30, latency=0.0)`.
    It speaks NEPSE's protocol (handshake, tokens living `token_ttl` seconds, payload ids;
    history only `window_days` back, when given).
    """

    async def start(
        securities: int = 30,
        seed: int = 7,
        latency: float = 0.0,
        rate_limit: float | None = None,
        token_ttl: float = TOKEN_TTL,
        window_days: int | None = None,
        limiter: Limiter = Limiter.bucket,
        burst: int | None = None,
        refuse: Refusal = Refusal.too_many,
    ) -> tuple[str, RecordingApp]:
        market = Market(seed=seed, securities=securities, today=TODAY)
        desk = TokenDesk(ttl=token_ttl, seed=seed)
        limit = make_limit(limiter, rate_limit, burst) if rate_limit else None
        app = DemoApp(market, latency, limit, desk, refuse=refuse, window_days=window_days)
        recorder = RecordingApp(app)
        url = await nursery.start(partial(serve, recorder))  # type: ignore[arg-type]
        return url, recorder

    return start


@pytest.fixture
async def demo_url(start_demo: Callable[..., object]) -> AsyncIterator[tuple[str, RecordingApp]]:
    yield await start_demo()  # type: ignore[misc]
