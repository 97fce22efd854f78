"""--rate: one token bucket for all workers; and the demo's own rate limit (429 above it)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
import trio
from trio.testing import MockClock

from ntx.demo.market import Market
from ntx.model import DateRange
from ntx.nepal import sessions
from ntx.pace.throttle import Throttle, TokenBucket
from ntx.sources.nepse.payload import nepal_day
from tests.helpers import (
    TODAY,
    backfill_args,
    default_universe,
    expected_tables,
    run_ntx,
    run_ntx_async,
    table,
)


async def test_bucket_keeps_the_rate_after_a_burst_of_workers(mock_clock: MockClock) -> None:
    rate, workers, per_worker = 10.0, 8, 25
    throttle = Throttle(0.0, TokenBucket(rate, burst=workers))
    starts: list[float] = []

    async def worker() -> None:
        for _ in range(per_worker):
            async with throttle.request():
                starts.append(trio.current_time())
                await trio.sleep(0.01)

    async with trio.open_nursery() as nursery:
        for _ in range(workers):
            nursery.start_soon(worker)
    starts.sort()
    # GCRA: the k-th request may start at (k - burst + 1) / rate, and does, exactly
    assert starts == pytest.approx([max(0.0, (k - workers + 1) / rate) for k in range(len(starts))])
    for first in range(len(starts)):
        in_one_second = sum(1 for t in starts[first:] if t < starts[first] + 1.0)
        assert in_one_second <= rate + workers


async def test_a_schedule_spaces_every_workers_requests_evenly(mock_clock: MockClock) -> None:
    """`--sleep auto` and `--rate` space requests 1/rate apart across all workers (a bucket
    of burst 1), so that even a limiter that allows no burst sees none; a new rate applies
    from the next turn on."""
    throttle = Throttle(0.0)
    throttle.schedule = TokenBucket(10.0)
    starts: list[float] = []

    async def worker() -> None:
        for _ in range(5):
            async with throttle.request():
                starts.append(trio.current_time())
                await trio.sleep(0.05)

    async with trio.open_nursery() as nursery:
        for _ in range(6):
            nursery.start_soon(worker)
    starts.sort()
    assert starts == pytest.approx([k / 10 for k in range(30)])
    throttle.schedule.set_rate(20.0)
    async with trio.open_nursery() as nursery:
        for _ in range(4):
            nursery.start_soon(worker)
    assert len(starts) == 50
    gaps = [b - a for a, b in itertools.pairwise(starts[30:])]
    assert gaps == pytest.approx([0.05] * len(gaps))


async def test_rate_composes_with_workers_and_sleep(mock_clock: MockClock) -> None:
    """The slower of the two bounds wins: here workers / (latency + sleep) = 2/s < rate."""
    throttle = Throttle(0.4, TokenBucket(50.0, burst=1))
    starts: list[float] = []
    async with throttle.request():
        starts.append(trio.current_time())
        await trio.sleep(0.1)
    async with throttle.request():
        starts.append(trio.current_time())
    assert starts == [0.0, 0.5]


async def test_demo_rate_limit_answers_429_and_rate_keeps_under_it(
    start_demo: Callable[..., Any], tmp_path: Path
) -> None:
    url, recorder = await start_demo(securities=40, rate_limit=20)
    market = recorder.app.market
    dates = ("--from", "2026-01-01", "--to", "2026-06-30")
    eager = await run_ntx_async(
        *backfill_args(url, tmp_path / "eager.db", *dates, "--workers", "16")
    )
    assert eager.returncode == 0, eager.stdout
    refused = [s for s in recorder.seen if s.status == 429]
    assert refused  # 16 unthrottled workers go over 20/s...
    expected = expected_tables(
        market, DateRange(date(2026, 1, 1), TODAY), default_universe(market), by="date"
    )
    assert "Price plan: by date" in eager.stdout  # 40 securities: by date is cheaper
    for name in expected:
        assert table(tmp_path / "eager.db", name) == expected[name]  # ...and still get every row

    recorder.seen.clear()
    began = nepal_day(datetime.now(UTC))
    polite = await run_ntx_async(
        *backfill_args(url, tmp_path / "polite.db", *dates, "--workers", "16", "--rate", "15")
    )
    crossed_midnight_in_nepal = nepal_day(datetime.now(UTC)) != began
    assert polite.returncode == 0
    assert "at most 15 requests/s" in polite.stdout
    assert [s.status for s in recorder.seen if s.status == 429] == []
    universe = default_universe(market)
    data = [s for s in recorder.seen if s.path.startswith("/api/nots/") and "open" not in s.path]
    # A POST in flight as the day turns in Nepal carries yesterday's payload id: the server
    # answers 401 and ntx asks again with a new token. Only then may an answer be refused.
    refused_ids = [s for s in data if s.status == 401]
    assert crossed_midnight_in_nepal or not refused_ids
    data = [s for s in data if s.status != 401]
    period = DateRange(date(2026, 1, 1), TODAY)
    listed_holidays = {day for day, _ in market.holidays(2026)}
    asked_dates = sessions(period, listed_holidays)  # closures the list misses are asked too
    # the lists, the calendar, a request per session, then 3 datasets x 1 request
    assert len(data) == 2 + 1 + len(asked_dates) + 3 * len(universe)
    starts = sorted(s.started for s in recorder.seen)
    # The schedule's contract: by t seconds after the first request, at most 1 + 15 t have
    # started (evenly spaced, a burst of 1). Seen from the server, a request may arrive a
    # little early or late against the client's clock (the first waits for its connection):
    # allow three, 0.2 s of a loaded machine's jitter, far below the 16 workers' burst.
    for count, started in enumerate(starts, start=1):
        assert count <= 1 + 15 * (started - starts[0]) + 3, (count, started - starts[0])
    assert (starts[-1] - starts[0]) >= (len(starts) - 4) / 15  # and it did keep to it
    for name in expected:
        assert table(tmp_path / "polite.db", name) == expected[name]


def test_the_default_pace_against_a_strict_limiter_ends_exact_and_exits_0(
    tmp_path: Path,
) -> None:
    """nginx's `limit_req` without `burst=` (503 to a request sooner than 1/R after the last):
    the default 5 workers and 0.2 s come in clusters, and come down once refused."""
    db = tmp_path / "strict.db"
    run = run_ntx(
        "backfill", "--demo", "--demo-securities", "40", "--demo-today", str(TODAY),
        "--demo-rate-limit", "8", "--demo-burst", "1", "--demo-refuse", "503",
        "--ownership", "--dividends", "--progress", "plain", "--db", str(db),
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    assert "(congestion)" in run.stdout  # it said it came down
    market = Market(1, 40, today=TODAY)
    expected = expected_tables(market, DateRange(TODAY, TODAY), default_universe(market))
    for name in ("ownership", "dividends"):
        assert table(db, name) == expected[name]
