"""--sleep auto under MockClock: the real engine, source, retry policy and store against a
simulated server whose rate limit ntx is not told; and the controller's rules one by one."""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from trio.testing import MockClock

from ntx.demo.app import DemoApp
from ntx.demo.limits import Limit, Limiter, Refusal, make_limit
from ntx.demo.market import Market
from ntx.engine import Engine, RunPlan
from ntx.errors import HttpStatusError
from ntx.events import Event, Paced, RunSummary
from ntx.model import DateRange
from ntx.net.client import open_client
from ntx.pace import Pace
from ntx.pace.adaptive import HEADROOM, TICK, AutoPace
from ntx.pace.throttle import Outcome, Throttle
from ntx.sources.nepse.source import NepseSource
from ntx.ui.tally import pace_line
from tests.helpers import TODAY, default_universe, demo_response, expected_tables, run_ntx, table
from tests.limited import LIMITER_KINDS as LIMITERS

DATASETS = ("reports", "dividends", "ownership")


class HiddenLimit:
    """A server-side limit written apart from ntx's own bucket: `rate` tokens a second, at
    most `rate` stored; a request finding no token is answered 429, Retry-After in seconds."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.tokens = rate
        self.stamp = 0.0
        self.accepted: list[float] = []
        self.refused = 0

    def retry_after(self, now: float) -> int | None:
        self.tokens = min(self.rate, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            self.accepted.append(now)
            return None
        self.refused += 1
        return max(1, math.ceil((1 - self.tokens) / self.rate))


def limited_network(market: Market, limit: HiddenLimit, latency: float) -> httpx.MockTransport:
    app = DemoApp(market, latency=0)

    async def handler(request: httpx.Request) -> httpx.Response:
        wait = limit.retry_after(trio.current_time())
        await trio.sleep(latency)
        if wait is not None:
            return httpx.Response(429, headers={"Retry-After": str(wait)}, json={})
        return demo_response(app, request)

    return httpx.MockTransport(handler)


async def backfill_auto(
    tmp_path: Path, transport: httpx.MockTransport
) -> tuple[RunSummary, AutoPace, list[Paced]]:
    """One backfill through `transport` with --sleep auto from the defaults (5 workers,
    0.2 s)."""
    run_pace = Pace(workers=5, sleep=0.2, auto=True, rng=random.Random(1))
    pace = run_pace.auto
    assert pace is not None
    plan = RunPlan(
        datasets=DATASETS,
        db_path=tmp_path / "auto.db",
        period=DateRange(TODAY.replace(month=1, day=1), TODAY),
        today=TODAY,
        workers=5,
    )
    paced: list[Paced] = []

    async def notify(event: Paced) -> None:
        paced.append(event)

    send, receive = trio.open_memory_channel[Event](0)

    async def drain() -> None:
        async for _ in receive:
            pass

    async with trio.open_nursery() as nursery:
        nursery.start_soon(drain)
        nursery.start_soon(run_pace.run, notify)
        async with send:
            client = open_client("http://limited.test", workers=64, timeout=30, transport=transport)
            async with client:
                engine = Engine(plan, run_pace, send)
                summary = await engine.run(NepseSource(client, run_pace.throttle, run_pace.policy))
        nursery.cancel_scope.cancel()
    return summary, pace, paced


@pytest.fixture
def inline_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLite work runs inline on trio's thread. Under an autojumping MockClock a task waiting
    for a worker thread looks idle, and the controller's ticks would jump the clock ahead
    while the writer's thread works; inline, the store takes no virtual time at all."""

    async def run_inline(function: Any, *args: Any, **_: Any) -> Any:
        return function(*args)

    monkeypatch.setattr(trio.to_thread, "run_sync", run_inline)


@pytest.mark.parametrize(("limit_rate", "securities"), [(8, 300), (60, 1200)])
async def test_converges_near_a_hidden_limit_and_stays_there(
    mock_clock: MockClock,
    inline_threads: None,
    tmp_path: Path,
    limit_rate: float,
    securities: int,
) -> None:
    market = Market(seed=11, securities=securities, today=TODAY)
    limit = HiddenLimit(limit_rate)
    started = trio.current_time()
    summary, pace, paced = await backfill_auto(tmp_path, limited_network(market, limit, 0.05))
    elapsed = trio.current_time() - started

    assert not summary.failures
    expected = expected_tables(market, DateRange(TODAY, TODAY), default_universe(market))
    for name in DATASETS:
        assert table(tmp_path / "auto.db", name) == expected[name]  # nothing lost on the way

    answered = len(limit.accepted)
    assert answered == summary.requests - limit.refused
    assert elapsed <= 1.15 * answered / limit_rate  # near the limit ...
    assert limit.refused / (answered + limit.refused) <= 0.02  # ... without hammering it
    # ... and stays there: over the second half the server accepted >= 90% of R, no 5 s of
    # it fell below 60% of R, and every change of pace there aimed within 25% of R
    half = started + elapsed / 2
    second_half = sum(1 for t in limit.accepted if t >= half)
    assert second_half >= 0.9 * limit_rate * (elapsed / 2)
    windows = [half + 5 * k for k in range(int((elapsed / 2) // 5))]
    assert len(windows) >= 2
    for begin in windows:
        accepted = sum(1 for t in limit.accepted if begin <= t < begin + 5)
        assert accepted >= 0.6 * 5 * limit_rate, (begin, accepted)
    late = [p.target for p in paced if p.at >= half]
    assert late and all(0.75 * limit_rate <= target <= 1.25 * limit_rate for target in late)
    assert any(p.reason == "congestion" for p in paced)  # it did find the limit
    advice = pace.advice(trio.current_time())
    assert advice is not None and advice.reason == "refused"
    assert 0.8 * limit_rate <= advice.target <= limit_rate  # a static pace just under it
    latency = pace.latency or 0.0
    # next time, --rate spaces the requests at that pace, and the workers can reach it
    assert advice.flags.endswith(f"--rate {advice.target:g}")
    assert advice.workers / (latency + advice.sleep) >= advice.target


class LimitedServer:
    """A simulated server behind one of the demo's limiters (`ntx.demo.limits`), refusing as
    told: 429 with Retry-After, 503, or a connection closed without an answer."""

    def __init__(self, limit: Limit, refuse: Refusal) -> None:
        self.limit = limit
        self.refuse = refuse
        self.accepted: list[float] = []
        self.refused = 0

    def transport(self, market: Market, latency: float) -> httpx.MockTransport:
        app = DemoApp(market, latency=0)

        async def handler(request: httpx.Request) -> httpx.Response:
            now = trio.current_time()
            wait = self.limit.check(now)
            await trio.sleep(latency)
            if wait is None:
                self.accepted.append(now)
                return demo_response(app, request)
            self.refused += 1
            if self.refuse is Refusal.drop:
                raise httpx.RemoteProtocolError("Server disconnected", request=request)
            if self.refuse is Refusal.unavailable:
                return httpx.Response(503, json={})
            return httpx.Response(429, headers={"Retry-After": str(math.ceil(wait))}, json={})

        return httpx.MockTransport(handler)

    def rate_over(self, start: float, end: float) -> float:
        return sum(1 for t in self.accepted if start <= t < end) / (end - start)


@pytest.mark.parametrize("limit_rate", [8, 60])
@pytest.mark.parametrize(("kind", "burst", "refuse"), LIMITERS)
async def test_every_kind_of_limiter_gets_every_row_without_being_hammered(
    mock_clock: MockClock,
    inline_threads: None,
    tmp_path: Path,
    limit_rate: float,
    kind: Limiter,
    burst: int | None,
    refuse: Refusal,
) -> None:
    market = Market(seed=11, securities=1200 if limit_rate > 10 else 300, today=TODAY)
    server = LimitedServer(make_limit(kind, limit_rate, burst), refuse)
    summary, pace, _ = await backfill_auto(tmp_path, server.transport(market, 0.05))

    assert summary.exit_code == 0 and not summary.failures
    expected = expected_tables(market, DateRange(TODAY, TODAY), default_universe(market))
    for name in DATASETS:
        assert table(tmp_path / "auto.db", name) == expected[name]  # every row, once
    answered = len(server.accepted)
    assert server.refused / (answered + server.refused) <= 0.03
    advice = pace.advice(trio.current_time())
    assert advice is not None and advice.target <= limit_rate  # next time: under the limit
    assert advice.flags.endswith(f"--rate {advice.target:g}")  # spaced evenly


def _pace(workers: int = 5, sleep: float = 0.2) -> tuple[AutoPace, trio.CapacityLimiter, Throttle]:
    throttle = Throttle(sleep)
    limiter = trio.CapacityLimiter(workers)
    return AutoPace(limiter, throttle), limiter, throttle


def _answers(pace: AutoPace, start: float, end: float, rate: float, latency: float) -> None:
    """Healthy answers at `rate` per second, each taking `latency`, from `start` to `end`."""
    count = int((end - start) * rate)
    for k in range(count):
        finished = start + (k + 1) / rate
        pace.answered(finished - latency, finished, Outcome.OK)


def _running(seconds: float) -> tuple[AutoPace, float]:
    """A controller that has seen `seconds` of healthy answers (20/s, 50 ms) and one tick."""
    pace, _, _ = _pace()
    _answers(pace, 0.0, seconds, 20, 0.05)
    pace.tick(0.5)
    assert pace.rate is not None
    return pace, pace.rate


async def test_knobs_follow_the_target_rate_and_the_latency(mock_clock: MockClock) -> None:
    pace, limiter, throttle = _pace()
    _answers(pace, 0.0, 0.5, 20, 0.05)
    changed = pace.tick(0.5)
    assert changed is not None and changed.reason == "start"
    assert pace.rate == pytest.approx(5 / (0.05 + 0.2))  # the pace of the flags given
    latency = pace.latency
    assert latency == pytest.approx(0.05)
    workers = math.ceil(HEADROOM * pace.rate * latency)
    assert limiter.total_tokens == workers + 1  # one slot to spare for a slow answer
    assert throttle.sleep == 0  # the requests are spaced by one schedule, not by rests
    assert throttle.schedule is not None and throttle.schedule.rate == pace.rate
    assert changed.flags == f"--workers {workers + 1} --sleep 0 --rate {changed.target:g}"


async def test_slow_start_grows_only_while_the_target_is_reached(mock_clock: MockClock) -> None:
    pace, rate = _running(0.5)
    _answers(pace, 0.5, 0.5 + TICK, rate, 0.05)
    assert pace.tick(0.5 + TICK) is not None and pace.rate == pytest.approx(rate * 1.25)
    _answers(pace, 0.5 + TICK, 0.5 + 2 * TICK, rate / 2, 0.05)  # answers at half the target
    assert pace.tick(0.5 + 2 * TICK) is None and pace.rate == pytest.approx(rate * 1.25)


async def test_429_cuts_once_per_round_of_requests(mock_clock: MockClock) -> None:
    pace, before = _running(3.0)
    pace.answered(2.95, 3.0, Outcome.CONGESTED)
    assert pace.decreases == 1 and pace.rate < before
    after = pace.rate
    # answers to requests sent before that cut say nothing new: no second cut
    pace.answered(2.96, 3.01, Outcome.CONGESTED)
    pace.answered(2.99, 3.04, Outcome.CONGESTED)
    assert pace.decreases == 1 and pace.rate == after
    pace.answered(3.02, 3.07, Outcome.CONGESTED)  # sent after it: the cut was not enough
    assert pace.decreases == 2 and pace.rate < after
    assert pace.rate >= 0.5 * 0.9 * after  # never by more than half (and the 0.9 backoff)


async def test_other_failures_do_not_change_the_pace(mock_clock: MockClock) -> None:
    pace, rate = _running(1.0)
    for k in range(20):
        pace.answered(1.0 + k * 0.01, 1.2 + k * 0.01, Outcome.OTHER)
    assert pace.rate == rate and pace.decreases == 0


def _floor_learnt() -> tuple[AutoPace, float]:
    """A controller that has seen 3 s of answers at 20/s, all in 50 ms (a latency floor)."""
    pace, _, _ = _pace()
    now = 0.0
    for _ in range(6):
        _answers(pace, now, now + 0.5, 20, 0.05)
        now += 0.5
        pace.tick(now)
    return pace, now


async def test_a_latency_jump_is_congestion(mock_clock: MockClock) -> None:
    pace, now = _floor_learnt()
    before = pace.decreases
    for _ in range(6):  # the server slows down to 300 ms
        _answers(pace, now, now + 0.5, 20, 0.3)
        now += 0.5
        changed = pace.tick(now)
        if changed is not None and changed.reason == "latency":
            break
    else:
        pytest.fail("a six-fold latency jump was not taken for congestion")
    assert pace.decreases == before + 1


async def test_advice_after_a_latency_jump_alone_says_the_answers_slowed(
    mock_clock: MockClock,
) -> None:
    """A server that queues instead of refusing: the summary must not say it refused."""
    pace, now = _floor_learnt()
    latency = 0.3  # the server slows down from 50 ms to 300 ms
    while pace.decreases == 0:
        _answers(pace, now, now + 0.5, 20, latency)
        now += 0.5
        pace.tick(now)
    early = pace.advice(now)
    assert early is not None and early.reason == "slowed late"
    assert pace_line(early).startswith("Pace: the API slowed down, but the run was too short")
    end = now + 10.0
    while now < end:  # ten seconds at the pace it came down to, answered in 300 ms
        _answers(pace, now, now + TICK, pace.rate, latency)
        now += TICK
        pace.tick(now)
    settled = pace.advice(now)
    assert settled is not None and settled.reason == "slowed" and pace.refusals == 0
    assert pace_line(settled).startswith("Pace: the API never refused, but its answers slowed")
    pace.answered(now, now + 0.05, Outcome.CONGESTED)  # one refusal, even taken for noise
    again = pace.advice(now + 0.05)
    assert again is not None and again.reason == "refused"
    assert pace_line(again).startswith("Pace: the API accepted")


async def test_429_is_seen_by_the_throttle_as_congestion(mock_clock: MockClock) -> None:
    """The observer hook: the source raises inside the throttle's request, so it sees why."""
    seen: list[Outcome] = []

    class Recorder:
        def answered(self, started: float, finished: float, outcome: Outcome) -> None:
            seen.append(outcome)

    throttle = Throttle(0.0, observer=Recorder())
    async with throttle.request():
        await trio.sleep(0.1)
    for error in (HttpStatusError(429, "/x", "1"), HttpStatusError(503, "/x", None)):
        with pytest.raises(HttpStatusError):
            async with throttle.request():
                raise error
    with pytest.raises(HttpStatusError):
        async with throttle.request():
            raise HttpStatusError(500, "/x", None)
    assert seen == [Outcome.OK, Outcome.CONGESTED, Outcome.CONGESTED, Outcome.OTHER]


async def test_advice_says_how_much_it_knows(mock_clock: MockClock) -> None:
    untried, _, _ = _pace()
    _answers(untried, 0.0, 0.2, 20, 0.05)  # the run ended before the first step
    assert untried.advice(0.2) is None  # it learnt nothing: no advice
    slow, _, _ = _pace()  # 5 workers at 0.2 s aim at 20/s; answers come at 10/s
    _answers(slow, 0.0, 3.0, 10, 0.05)
    slow.tick(0.5)
    unreached = slow.advice(3.0)
    assert unreached is not None and unreached.reason == "never refused"
    assert slow.rate == pytest.approx(20)
    assert unreached.target == pytest.approx(10, abs=0.5)  # the pace answered, not 20/s
    pace, _ = _running(3.0)
    never = pace.advice(3.0)
    assert never is not None and never.reason == "never refused"
    assert never.target == pytest.approx(
        pace.rate, abs=0.1
    )  # reached: nothing says it could not go faster
    pace.answered(2.95, 3.0, Outcome.CONGESTED)
    early = pace.advice(4.0)  # one second after the refusal: a burst allowance or the limit?
    assert early is not None and early.reason == "refused late"
    assert early.target <= pace.rate
    now = 3.0
    while now < 10.0:  # seven seconds of answers at the pace it fell back to
        _answers(pace, now, now + TICK, pace.rate, 0.05)
        now += TICK
        pace.tick(now)
    settled = pace.advice(now)
    assert settled is not None and settled.reason == "refused"
    assert pace.held is not None and settled.target <= pace.held  # a rate that held ...
    assert settled.target <= 0.97 * settled.achieved + 0.1  # ... and kept in the long run


def test_sleep_accepts_auto_in_any_case_or_seconds(tmp_path: Path) -> None:
    for pace, header in ((" AUTO ", "auto pace from 5 workers, 0.2 s throttle"), ("0.5", "0.5 s")):
        result = run_ntx(
            "backfill", "--demo", "--demo-securities", "3", "--demo-latency-ms", "0",
            "--ownership", "--progress", "plain", "--db", str(tmp_path / f"{pace.strip()}.db"),
            "--sleep", pace,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert header in result.stdout
