"""Pacing of HTTP requests: the proactive throttle every worker obeys.

`Throttle.request()` wraps exactly one HTTP request. When the request is over (answer read,
or failed) the calling task sleeps `sleep` seconds before it may do anything else; since the
caller holds its worker slot all the while, `workers` slots give at most
workers / (latency + sleep) requests per second. All timing goes through trio's clock.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Protocol

import trio


class RequestGate(Protocol):
    """What a source wraps around each HTTP request it makes."""

    def request(self) -> AbstractAsyncContextManager[None]: ...


class Throttle:
    """The gate shared by all workers of a run; also counts requests and concurrency."""

    def __init__(self, sleep: float) -> None:
        if sleep < 0:
            raise ValueError("sleep must not be negative")
        self.sleep = sleep
        self.requests = 0
        self.in_flight = 0
        self.max_in_flight = 0

    @asynccontextmanager
    async def request(self) -> AsyncIterator[None]:
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
    """A per-job view of a gate that counts the job's own requests."""

    def __init__(self, gate: RequestGate) -> None:
        self._gate = gate
        self.count = 0

    def request(self) -> AbstractAsyncContextManager[None]:
        self.count += 1
        return self._gate.request()
