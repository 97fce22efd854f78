"""Pacing of HTTP requests: the proactive throttle every worker obeys.

`Throttle.request()` wraps exactly one HTTP request. When the request is over (answer read,
or failed) its worker slot rests `sleep` seconds: the slot sends no other request and is not
given up until the rest is over, so `workers` slots give at most workers / (latency + sleep)
requests per second. The task holding the slot may decode the answer and hand it on while the
slot rests (a `Slot` keeps the rest); without a slot the calling task sleeps the rest itself.
`pause_for()` holds back every worker's next request (after a 429, or while the circuit
breaker cools down). An `observer` (the `--sleep auto` controller) is told how each request
went and may change `sleep` between requests. All timing goes through trio's clock.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from enum import Enum
from typing import Protocol

import trio

from ntx.errors import ConnectionDropped, HttpStatusError

CONGESTION_STATUSES = frozenset({429, 503})


class RequestGate(Protocol):
    """What a source wraps around each HTTP request it makes, and tells of each retry."""

    def request(self) -> AbstractAsyncContextManager[None]: ...

    def retried(self) -> None: ...


class Outcome(Enum):
    """How one request went, as far as pacing is concerned."""

    OK = "ok"  # answered 200 and read whole
    CONGESTED = "congested"  # 429, 503 or a dropped connection: the server asks for less
    OTHER = "other"  # any other failure: says nothing about the pace

    @classmethod
    def of(cls, error: BaseException | None) -> Outcome:
        if error is None:
            return cls.OK
        if isinstance(error, HttpStatusError) and error.status in CONGESTION_STATUSES:
            return cls.CONGESTED
        if isinstance(error, ConnectionDropped):
            return cls.CONGESTED
        return cls.OTHER


class Observer(Protocol):
    """Told of every request's end: when it started, when it ended, and how it went."""

    def answered(self, started: float, finished: float, outcome: Outcome) -> None: ...


class TokenBucket:
    """`rate` requests per second with bursts of up to `burst` (GCRA, first come first served).

    `take()` waits for the caller's turn; `wait_needed()` says how long a request would have to
    wait without taking a turn (a server uses it to refuse with 429 instead). A change of rate
    applies to every caller still waiting, not only to those who come after it.
    """

    def __init__(self, rate: float, burst: int = 1) -> None:
        if burst < 1:
            raise ValueError("a token bucket needs burst >= 1")
        self.burst = burst
        self._next = -math.inf  # when the next request is due, at the steady rate
        self._interval = 0.0
        self._changed = trio.Event()  # set when the rate changes (a waiter looks again)
        self._queue = trio.Lock()  # fair: callers take their turns in the order they came
        self.set_rate(rate)

    def set_rate(self, rate: float) -> None:
        """From now on, `rate` requests per second: the next turn is 1 / `rate` after the last."""
        if rate <= 0:
            raise ValueError("a token bucket needs rate > 0")
        self._next += 1.0 / rate - self._interval  # (-inf before the first turn stays so)
        self.rate = rate
        self._interval = 1.0 / rate
        self._tolerance = (self.burst - 1) * self._interval
        self._changed.set()
        self._changed = trio.Event()

    def wait_needed(self, now: float) -> float:
        return max(0.0, max(self._next, now) - self._tolerance - now)

    def admit(self, now: float) -> None:
        """Count one request at `now` (after `wait_needed(now)` said 0, or after waiting)."""
        self._next = max(self._next, now) + self._interval

    async def take(self) -> None:
        async with self._queue:
            while (wait := self.wait_needed(trio.current_time())) > 0:
                with trio.move_on_after(wait):
                    await self._changed.wait()
            self.admit(trio.current_time())


class Slot:
    """The pace of one worker slot: when its rest after its last request is over."""

    def __init__(self) -> None:
        self.rested_at = -math.inf

    async def rested(self) -> None:
        """Returns once the slot's rest is over (at once if it has none)."""
        await trio.sleep_until(self.rested_at)


class Throttle:
    """The gate shared by all workers of a run; also counts requests and concurrency.

    With a `bucket` (`--rate`), requests also keep to its rate, across all workers. With a
    `schedule` (set by `--sleep auto`), they also keep to its rate: a bucket of burst 1, so
    that requests are spaced evenly across workers rather than clustered behind their rests.
    """

    def __init__(
        self, sleep: float, bucket: TokenBucket | None = None, observer: Observer | None = None
    ) -> None:
        if sleep < 0:
            raise ValueError("sleep must not be negative")
        self.sleep = sleep
        self.bucket = bucket
        self.schedule: TokenBucket | None = None
        self.observer = observer
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
    async def request(self, slot: Slot | None = None) -> AsyncIterator[None]:
        """One request of `slot`, sent once the slot has rested from its previous one; its own
        rest starts when the request is over. Without a slot, the caller sleeps the rest."""
        rest = slot or Slot()
        await rest.rested()
        while True:
            while self.paused:  # a pause may be extended while we wait
                await trio.sleep_until(self.resume_at)
            for gate in (self.bucket, self.schedule):
                if gate is not None:
                    await gate.take()
            if not self.paused:  # no pause began while we waited for our turn
                break
        self.requests += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        started = trio.current_time()
        error: BaseException | None = None
        try:
            yield
        except BaseException as exc:
            error = exc
            raise
        finally:
            self.in_flight -= 1
            if self.observer is not None and not isinstance(error, trio.Cancelled):
                self.observer.answered(started, trio.current_time(), Outcome.of(error))
            # After every request, failed or not: the slot rests before it is used or given up.
            rest.rested_at = trio.current_time() + self.sleep
            if slot is None:
                await rest.rested()


class RequestMeter:
    """A per-job view of the throttle: counts the job's own requests and retries, and keeps
    the pace of the worker slot the job runs in. The slot's holder must `await rested()`
    before giving the slot up."""

    def __init__(self, gate: Throttle, slot: Slot | None = None) -> None:
        self._gate = gate
        self.slot = slot or Slot()
        self.count = 0
        self.retries = 0

    async def rested(self) -> None:
        await self.slot.rested()

    def retried(self) -> None:
        self.retries += 1
        self._gate.retried()

    def request(self) -> AbstractAsyncContextManager[None]:
        self.count += 1
        return self._gate.request(self.slot)
