"""The engine's concurrency and pacing, exactly, under trio's MockClock.

The real engine, source and store run against an in-memory network of fixed latency L.
"""

from __future__ import annotations

import math
from itertools import pairwise
from pathlib import Path

import pytest
import trio
from trio.testing import MockClock

from ntx.demo.market import Market
from ntx.engine import Engine, RunPlan
from ntx.events import Event
from ntx.model import DateRange
from ntx.net.client import open_client
from ntx.pace import Pace
from ntx.pace.throttle import RequestMeter, Throttle
from ntx.sources.nepse.session import Session
from ntx.sources.nepse.source import NepseSource
from tests.helpers import TODAY, default_universe, mock_network

OWNERSHIP = "/api/nots/security/"


def gaps_between(log: list[tuple[float, float]]) -> list[float]:
    """Idle time between each answer and the next request."""
    return [start - prev_end for (_, prev_end), (start, _) in pairwise(log)]


async def _drain(receive: trio.MemoryReceiveChannel[Event]) -> None:
    async for _ in receive:
        pass


async def run_engine(
    tmp_path: Path,
    market: Market,
    *,
    workers: int,
    sleep: float,
    latency: float,
    datasets: tuple[str, ...] = ("ownership",),
    log: list[tuple[float, float]] | None = None,
    fail: dict[str, int] | None = None,
    paths: list[str] | None = None,
) -> tuple[object, Throttle, dict[str, int]]:
    transport = mock_network(market, latency, log, fail, paths)
    pace = Pace(workers=workers, sleep=sleep)
    throttle = pace.throttle
    plan = RunPlan(
        datasets=datasets,
        db_path=tmp_path / "t.db",
        period=DateRange(TODAY.replace(month=1, day=1), TODAY),
        today=TODAY,
        workers=workers,
    )
    send, receive = trio.open_memory_channel[Event](0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_drain, receive)
        async with send:
            # The network is the only fake: everything above the transport is real.
            client = open_client(
                "http://demo.test", workers=workers, timeout=30, transport=transport
            )
            async with client:
                # one token for the whole run: a renewal would add requests to the rounds timed
                source = NepseSource(client, throttle, session=Session(max_age=math.inf))
                summary = await Engine(plan, pace, send).run(source)
    return summary, throttle, transport.state  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("workers", "sleep", "latency"), [(5, 0.2, 0.05), (16, 0.0, 0.02), (3, 0.5, 0.3)]
)
async def test_throughput_is_workers_over_latency_plus_sleep(
    mock_clock: MockClock, tmp_path: Path, workers: int, sleep: float, latency: float
) -> None:
    market = Market(seed=3, securities=400, today=TODAY)
    log: list[tuple[float, float]] = []
    paths: list[str] = []
    summary, throttle, network = await run_engine(
        tmp_path, market, workers=workers, sleep=sleep, latency=latency, log=log, paths=paths
    )
    jobs = len(default_universe(market))
    assert summary.datasets["ownership"].done == jobs  # type: ignore[attr-defined]
    # the handshake (prove, the token module, the market-open id; again when the token is
    # 45 s old) and the two lists are not the jobs' requests
    per_security = [
        entry for entry, path in zip(log, paths, strict=True) if path.startswith(OWNERSHIP)
    ]
    assert len(per_security) == jobs
    first_start = per_security[0][0]
    last_slot_free = max(end for _, end in per_security) + sleep
    achieved = jobs / (last_slot_free - first_start)
    bound = workers / (latency + sleep)
    # The last round may be partial: compare over whole rounds of `workers` jobs.
    rounds = -(-jobs // workers)
    assert last_slot_free - first_start == pytest.approx(rounds * (latency + sleep), rel=1e-9)
    full_rounds_rate = rounds * workers / (last_slot_free - first_start)
    assert abs(full_rounds_rate - bound) / bound < 0.01
    assert achieved <= bound * 1.0000001
    assert network["max"] == workers
    assert throttle.max_in_flight == workers


async def test_never_more_than_workers_in_flight_and_slots_sleep_after_every_request(
    mock_clock: MockClock, tmp_path: Path
) -> None:
    market = Market(seed=5, securities=120, today=TODAY)
    log: list[tuple[float, float]] = []
    _, throttle, network = await run_engine(
        tmp_path,
        market,
        workers=1,
        sleep=0.5,
        latency=0.07,
        datasets=("prices", "reports"),
        log=log,
    )
    assert network["max"] == 1 and throttle.max_in_flight == 1
    gaps = gaps_between(log)
    assert gaps and all(gap == pytest.approx(0.5) for gap in gaps)


async def test_failed_requests_are_throttled_too_and_isolated(
    mock_clock: MockClock, tmp_path: Path
) -> None:
    market = Market(seed=5, securities=60, today=TODAY)
    victim = default_universe(market)[0]
    log: list[tuple[float, float]] = []
    summary, _, _ = await run_engine(
        tmp_path,
        market,
        workers=1,
        sleep=0.25,
        latency=0.01,
        log=log,
        fail={f"/api/nots/security/{victim}": 500},
    )
    gaps = gaps_between(log)
    assert all(gap == pytest.approx(0.25) for gap in gaps)
    totals = summary.datasets["ownership"]  # type: ignore[attr-defined]
    assert totals.failed == 1 and totals.done == len(default_universe(market)) - 1
    assert [f.label for f in summary.failures] == [market.by_id[victim].symbol]  # type: ignore[attr-defined]
    assert "HTTP 500" in summary.failures[0].reason  # type: ignore[attr-defined]


async def test_work_after_an_answer_overlaps_the_slots_rest(mock_clock: MockClock) -> None:
    """The slot rests `sleep` from each answer; what its job does meanwhile (decoding, handing
    the rows on) does not add to the rest, but the slot is not free before the rest is over."""
    throttle = Throttle(0.25)
    meter = RequestMeter(throttle)
    async with meter.request():
        await trio.sleep(0.05)  # the request itself
    answered = trio.current_time()
    await trio.sleep(0.1)  # work on the answer
    async with meter.request():
        assert trio.current_time() == pytest.approx(answered + 0.25)
        await trio.sleep(0.05)
    answered = trio.current_time()
    await trio.sleep(0.1)
    await meter.rested()  # giving the slot up waits for the rest's remainder only
    assert trio.current_time() == pytest.approx(answered + 0.25)
    await trio.sleep(0.4)  # work longer than the rest: no wait at all
    before = trio.current_time()
    await meter.rested()
    assert trio.current_time() == before
    assert meter.count == 2 and throttle.requests == 2


async def test_a_request_without_a_slot_sleeps_the_rest_itself(mock_clock: MockClock) -> None:
    throttle = Throttle(0.25)
    async with throttle.request():
        await trio.sleep(0.05)
    assert trio.current_time() == pytest.approx(0.3)
