"""A simulated rate-limited server for `--sleep auto`, under MockClock: the run's real `Pace`
(limiter, throttle, retry policy, controller) drives one request per job against one of the
demo's limiters (`ntx.demo.limits`), whose rate ntx is not told and which may change."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

import pytest
import trio

from ntx.demo.limits import Limit, Limiter, Refusal, make_limit
from ntx.errors import ConnectionDropped, FetchError, HttpStatusError
from ntx.events import Paced
from ntx.pace import Pace
from ntx.pace.throttle import RequestMeter, Slot

# each kind of limiter the controller must find the rate of: (kind, burst, how it refuses)
LIMITER_KINDS = [
    pytest.param(Limiter.bucket, 1, Refusal.too_many, id="bucket-1-429"),
    pytest.param(Limiter.bucket, 1, Refusal.unavailable, id="bucket-1-503"),
    pytest.param(Limiter.bucket, 5, Refusal.too_many, id="bucket-5-429"),
    pytest.param(Limiter.bucket, None, Refusal.too_many, id="bucket-R-429"),
    pytest.param(Limiter.sliding, None, Refusal.too_many, id="sliding-429"),
    pytest.param(Limiter.bucket, None, Refusal.drop, id="bucket-R-drop"),
]


@dataclass
class Served:
    """What the simulated server saw of one run."""

    accepted: list[float] = field(default_factory=list)  # when each admitted request arrived
    refused: list[float] = field(default_factory=list)
    paced: list[Paced] = field(default_factory=list)  # the controller's changes of pace
    elapsed: float = 0.0
    advice: Paced | None = None
    failed: int = 0  # jobs given up after their retries

    def rate_over(self, start: float, end: float) -> float:
        return sum(1 for t in self.accepted if start <= t < end) / (end - start)

    def refused_share(self) -> float:
        return len(self.refused) / (len(self.accepted) + len(self.refused))


async def serve(
    limit: Limit,
    refuse: Refusal,
    jobs: int,
    *,
    latency: float = 0.05,
    changes: tuple[tuple[float, Limit], ...] = (),
    auto: bool = True,
    jitter: bool = False,
    stalls: tuple[tuple[float, float], ...] = (),
) -> Served:
    """Run `jobs` one-request jobs from the default flags (5 workers, 0.2 s), with `--sleep
    auto` unless told, against `limit`; each `(t, other)` of `changes` puts `other` in its
    place at t s. With `jitter`, each request reaches the limiter a little late, as on a
    loaded machine (`transit_delay`). Each `(t, seconds)` of `stalls` holds every request
    arriving in those seconds from t s back until their end, when they reach the limiter
    together (a server busy for a while: a pause for garbage collection, a slow answer
    built on its event loop)."""
    pace = Pace(workers=5, sleep=0.2, auto=auto, rng=random.Random(1))
    transit = random.Random(2)
    served = Served()
    started = trio.current_time()
    current = [limit]

    async def answer() -> None:
        if jitter:
            await trio.sleep(transit_delay(transit))
        for at, seconds in stalls:
            if started + at <= trio.current_time() < started + at + seconds:
                await trio.sleep_until(started + at + seconds)
        now = trio.current_time()
        wait = current[0].check(now)
        await trio.sleep(latency)
        if wait is None:
            served.accepted.append(now)
            return
        served.refused.append(now)
        if refuse is Refusal.drop:
            raise ConnectionDropped("the server closed the connection without an answer")
        if refuse is Refusal.unavailable:
            raise HttpStatusError(503, "/x", None)
        raise HttpStatusError(429, "/x", str(math.ceil(wait)))

    async def job() -> None:
        async with pace.limiter:
            meter = RequestMeter(pace.throttle, Slot())

            async def attempt() -> None:
                async with meter.request():
                    await answer()

            try:
                await pace.policy.call(attempt, meter)
            except FetchError:
                served.failed += 1
            await meter.rested()

    async def swap(at: float, other: Limit) -> None:
        await trio.sleep_until(started + at)
        current[0] = other

    async def paced(event: Paced) -> None:
        served.paced.append(event)

    async with trio.open_nursery() as outer:
        outer.start_soon(pace.run, paced)
        for at, other in changes:
            outer.start_soon(swap, at, other)
        async with trio.open_nursery() as nursery:
            for _ in range(jobs):
                nursery.start_soon(job)
        served.elapsed = trio.current_time() - started
        served.advice = pace.advice(trio.current_time())
        outer.cancel_scope.cancel()
    return served


def transit_delay(rng: random.Random) -> float:
    """Seconds from a request leaving the schedule to the server's limiter seeing it, beyond
    the least, as measured between ntx and the demo on one 2-core machine at 50 requests/s:
    most within a millisecond, one in 150 or so 2 to 8 ms late (a request that close behind
    a late one is 2 ms early for a limiter of burst 1 about 1% of the time, 5 ms 0.3%)."""
    delay = rng.expovariate(1 / 0.00045)
    if rng.random() < 0.006:
        delay += rng.uniform(0.002, 0.008)
    return delay


def limit_of(kind: Limiter, rate: float, burst: int | None = None) -> Limit:
    return make_limit(kind, rate, burst)
