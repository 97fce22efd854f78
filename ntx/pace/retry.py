"""The retry policy: what each failed request means, how long to wait, when to stop.

| answer                                         | verdict                               |
|------------------------------------------------|---------------------------------------|
| 429, 503, a dropped connection (closed,        | retry after `Retry-After` (seconds or |
| reset or refused without an answer)            | HTTP date) or a backoff; the wait     |
|                                                | holds back every worker (shared gate),|
|                                                | or under `--sleep auto` the retry     |
|                                                | alone (the controller slows the rest) |
|                                                | unless `Retry-After` is over 5 s      |
| 500 502 504, timeout, truncated, malformed or  | retry after exponential backoff with  |
| wrongly shaped JSON                            | full jitter (base 1 s, cap 60 s)      |
| 404                                            | skip the job: not found               |
| other 4xx (and other statuses)                 | fail the job, no retry                |
| 401, 403                                       | stop the whole run (`AccessDenied`)   |
| 401 right after a new token (`TokenRefused`)   | fail the job, no retry                |
| 500 `Searched Date is not valid.`              | no retry: the date is before the      |
| (`DateNotServed`)                              | server's history window               |

A `CircuitBreaker` watches every attempt of every worker: when `threshold` transient failures
come in a row, all workers pause for a cool-down that doubles while the storm lasts (30 s,
60 s, ... capped at 5 min) and resume by themselves. All waiting uses trio's clock.
"""

from __future__ import annotations

import math
import random
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from enum import Enum
from typing import TypeVar

import trio

from ntx.errors import (
    AccessDenied,
    DateNotServed,
    FetchError,
    HttpStatusError,
    NotFound,
    OutsideWindow,
    TokenRefused,
)
from ntx.pace.throttle import Outcome, RequestGate, Throttle

T = TypeVar("T")
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
# a Retry-After longer than this closes the door for a while (a limiter's own rounding is a
# second or two): every worker waits it out, even under `--sleep auto`
LONG_RETRY_AFTER = 5.0
Notify = Callable[[float, str], Awaitable[None]]


class Verdict(Enum):
    RETRY = "retry"
    SKIP = "skip"
    FAIL = "fail"
    STOP = "stop"


def classify(error: FetchError) -> Verdict:
    """What a failed request means for its job (see the module's table)."""
    if isinstance(error, TokenRefused | DateNotServed | OutsideWindow):
        return Verdict.FAIL  # asking again would get the same answer
    if not isinstance(error, HttpStatusError):
        return Verdict.RETRY  # transport trouble, truncated or malformed answers
    if error.status in RETRY_STATUSES:
        return Verdict.RETRY
    if error.status == 404:
        return Verdict.SKIP
    if error.status in (401, 403):
        return Verdict.STOP
    return Verdict.FAIL


def _congestion(error: FetchError) -> str | None:
    """Why `error` asks every worker to slow down (congestion, as the throttle's `Outcome`
    defines it), or None when it says nothing of the pace."""
    if Outcome.of(error) is not Outcome.CONGESTED:
        return None
    if isinstance(error, HttpStatusError):
        words = "asked to slow down" if error.status == 429 else "is overloaded"
        return f"the server {words} (HTTP {error.status})"
    return "the server dropped a connection"


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a `Retry-After` header (delta-seconds or HTTP date), or None."""
    if value is None:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - now).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def full_jitter(attempt: int, rng: random.Random, base: float = 1.0, cap: float = 60.0) -> float:
    """Backoff before retry number `attempt` (0-based): uniform in [0, min(cap, base * 2^n)]."""
    return rng.uniform(0.0, min(cap, base * 2.0**attempt))


class CircuitBreaker:
    """Pauses every worker when transient failures dominate; resumes by itself."""

    def __init__(
        self,
        gate: Throttle,
        *,
        threshold: int = 10,
        first_pause: float = 30.0,
        max_pause: float = 300.0,
    ) -> None:
        self._gate = gate
        self.threshold = threshold
        self.first_pause = first_pause
        self.max_pause = max_pause
        self.next_pause = first_pause
        self.consecutive = 0
        self.trips = 0

    def success(self) -> None:
        self.consecutive = 0
        self.next_pause = self.first_pause

    def failure(self) -> float | None:
        """Count one transient failure; returns the pause begun, if this one tripped it."""
        if self._gate.paused:
            return None  # attempts that were in flight when the pause began do not count
        self.consecutive += 1
        if self.consecutive < self.threshold:
            return None
        pause, self.consecutive, self.trips = self.next_pause, 0, self.trips + 1
        self.next_pause = min(self.next_pause * 2, self.max_pause)
        self._gate.pause_for(pause)
        return pause


async def ignore_pause(seconds: float, reason: str) -> None:
    """A `Notify` that tells no one."""


class RetryPolicy:
    """Runs one request with the policy above; shared by all workers of a run."""

    def __init__(
        self,
        gate: Throttle,
        *,
        retries: int = 5,
        base: float = 1.0,
        cap: float = 60.0,
        breaker: CircuitBreaker | None = None,
        notify: Notify = ignore_pause,
        rng: random.Random | None = None,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        shared_waits: bool = True,
    ) -> None:
        """`shared_waits`: a congestion wait holds back every worker (False: only the retry,
        for a controller that slows the others down itself; a `Retry-After` over
        LONG_RETRY_AFTER seconds holds back every worker all the same)."""
        self._gate = gate
        self._shared_waits = shared_waits
        self.retries = retries
        self._base = base
        self._cap = cap
        self._breaker = breaker
        self._notify = notify
        self._rng = rng or random.Random()
        self._wall_clock = wall_clock

    async def call(self, attempt: Callable[[], Awaitable[T]], meter: RequestGate) -> T:
        """`attempt()` until it succeeds, the policy gives up, or the run must stop."""
        retry = 0
        while True:
            try:
                result = await attempt()
            except FetchError as error:
                verdict = classify(error)
                if verdict is Verdict.STOP:
                    raise AccessDenied(
                        f"the API refused access ({error}): check the URL and any credentials"
                    ) from error
                if verdict is Verdict.SKIP:
                    raise NotFound(f"not found ({error})") from error
                if verdict is Verdict.FAIL:
                    raise
                await self._after_transient_failure(error, retry)
                if retry >= self.retries:
                    if not self.retries:
                        raise
                    noun = "retry" if self.retries == 1 else "retries"
                    raise FetchError(f"{error} (gave up after {self.retries} {noun})") from error
                retry += 1
                meter.retried()
                continue
            if self._breaker is not None:
                self._breaker.success()
            return result

    async def _after_transient_failure(self, error: FetchError, retry: int) -> None:
        if self._breaker is not None:
            pause = self._breaker.failure()
            if pause is not None:
                await self._notify(
                    pause, f"{self._breaker.threshold} failures in a row (last: {error})"
                )
        if retry >= self.retries:
            return
        reason = _congestion(error)
        if reason is None:
            await trio.sleep(full_jitter(retry, self._rng, self._base, self._cap))
            return
        wait = None
        if isinstance(error, HttpStatusError):
            wait = parse_retry_after(error.retry_after, self._wall_clock())
        told_to_stay_away = wait is not None and wait > LONG_RETRY_AFTER
        if wait is None:
            wait = full_jitter(retry, self._rng, self._base, self._cap)
        if not self._shared_waits and not told_to_stay_away:
            await trio.sleep(wait)
            return
        self._gate.pause_for(wait)  # every worker waits, not only the one that was told
        await self._notify(wait, reason)
