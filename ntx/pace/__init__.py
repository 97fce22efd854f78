"""Pacing: the proactive throttle, the `--rate` bucket, shared pauses, the retry policy,
the circuit breaker and `--sleep auto`, built together as one `Pace`."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable

import trio

from ntx.events import Paced
from ntx.pace.adaptive import AutoPace
from ntx.pace.retry import CircuitBreaker, Notify, RetryPolicy, ignore_pause
from ntx.pace.throttle import Throttle, TokenBucket


class Pace:
    """How fast one run may go, shared by all its workers, built from the flags in one place.

    - `limiter`: the worker slots (`--workers`; `--sleep auto` changes its `total_tokens`);
    - `throttle`: the gate of every request: the rest after it (`--sleep`), the `--rate`
      bucket (burst 1: evenly spaced), pauses that hold back every worker;
    - `policy`: retries with backoff, `Retry-After`, and the circuit breaker;
    - `control`: the pace controller (`ntx.pace.adaptive`): with `--sleep auto` it finds the
      pace; without, the flags' pace is its ceiling and it acts only once the server refuses;
    - `auto`: the controller if `--sleep auto`, else None.

    `notify` hears of every pause that holds back all workers (seconds, reason).
    """

    def __init__(
        self,
        *,
        workers: int,
        sleep: float,
        rate: float | None = None,
        auto: bool = False,
        retries: int = 5,
        notify: Notify = ignore_pause,
        rng: random.Random | None = None,
    ) -> None:
        bucket = TokenBucket(rate) if rate else None  # spaced evenly: strict limiters allow it
        self.throttle = Throttle(sleep, bucket)
        self.limiter = trio.CapacityLimiter(workers)
        self.control = AutoPace(self.limiter, self.throttle, capped=not auto)
        self.auto = self.control if auto else None
        self.throttle.observer = self.control
        self.policy = RetryPolicy(
            self.throttle,
            retries=retries,
            breaker=CircuitBreaker(self.throttle),
            notify=notify,
            rng=rng,
            shared_waits=not auto,  # under auto, the controller slows every worker
        )

    @property
    def max_workers(self) -> int:
        """The most slots the run may ever have (auto may grow beyond `--workers`)."""
        return self.control.max_workers

    async def run(self, paced: Callable[[Paced], Awaitable[None]]) -> None:
        """Steer the pace until cancelled, telling `paced` of each change."""
        await self.control.run(paced)

    def advice(self, now: float) -> Paced | None:
        """`--sleep auto`: the flags to give next time (None without auto, or too early)."""
        return self.auto.advice(now) if self.auto else None
