"""Pacing of HTTP requests: the proactive throttle every worker obeys.

`Throttle.request()` wraps exactly one HTTP request. When the request is over (answer read,
or failed) the calling task sleeps `sleep` seconds before it may do anything else; since the
caller holds its worker slot all the while, `workers` slots give at most
workers / (latency + sleep) requests per second. `pause_for()` holds back every worker's next
request (after a 429, or while the circuit breaker cools down). All timing goes through
trio's clock.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Protocol

import trio


class RequestGate(Protocol):
    """What a source wraps around each HTTP request it makes, and tells of each retry."""

    def request(self) -> AbstractAsyncContextManager[None]: ...

    def retried(self) -> None: ...


class Throttle:
    """The gate shared by all workers of a run; also counts requests and concurrency."""

    def __init__(self, sleep: float) -> None:
        if sleep < 0:
            raise ValueError("sleep must not be negative")
        self.sleep = sleep
        self.requests = 0
        self.retries = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.resume_at = -math.inf

    def retried(self) -> None:
        self.retries += 1

    def pause_for(self, seconds: float) -> None:
        """No request of any worker starts until `seconds` from now (pauses only extend)."""
        self.resume_at = max(self.resume_at, trio.current_time() + seconds)

    @property
    def paused(self) -> bool:
        return trio.current_time() < self.resume_at

    @asynccontextmanager
    async def request(self) -> AsyncIterator[None]:
        while self.paused:  # a pause may be extended while we wait
            await trio.sleep_until(self.resume_at)
        self.requests += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            yield
        finally:
            self.in_flight -= 1
            # After every request, failed or not, while the caller still holds its slot.
            await trio.sleep(self.sleep)


class RequestMeter:
    """A per-job view of a gate that counts the job's own requests and retries."""

    def __init__(self, gate: RequestGate) -> None:
        self._gate = gate
        self.count = 0
        self.retries = 0

    def retried(self) -> None:
        self.retries += 1
        self._gate.retried()

    def request(self) -> AbstractAsyncContextManager[None]:
        self.count += 1
        return self._gate.request()
