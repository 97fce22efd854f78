"""The demo exchange's rate limiters, for trying a client against the kinds real APIs use.

Each limiter allows `rate` requests per second and is asked once per arriving request:
`check(now)` admits it (None) or says how many seconds until one would be admitted (the
`Retry-After`). How a refused request is answered is the app's `refuse`: 429 with
`Retry-After`, 503 without (nginx's `limit_req` answers so), or the connection dropped
without an answer (as the exchange does to a client that bursts).

| kind      | allows                                                                    |
|-----------|---------------------------------------------------------------------------|
| `bucket`  | a token bucket: `burst` requests at once, refilled at `rate` (burst 1 is  |
|           | nginx's `limit_req` without `burst=`: requests at least 1/rate apart)     |
| `sliding` | at most `rate` requests in any trailing second                            |
| `fixed`   | at most `rate` requests in each calendar second (bursts at its edges)     |
"""

from __future__ import annotations

import math
from collections import deque
from enum import StrEnum
from typing import Protocol


class Limiter(StrEnum):
    """The kinds of limiter (`--demo-limiter`)."""

    bucket = "bucket"
    sliding = "sliding"
    fixed = "fixed"


class Refusal(StrEnum):
    """How a refused request is answered (`--demo-refuse`)."""

    too_many = "429"
    unavailable = "503"
    drop = "drop"


class Limit(Protocol):
    rate: float

    def check(self, now: float) -> float | None:
        """None: admitted (and counted); else the seconds until a request would be."""
        ...


class BucketLimit:
    """`burst` tokens at most, one more every 1/`rate` seconds; a request takes one."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._stamp = 0.0

    def check(self, now: float) -> float | None:
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        if self._tokens >= 1 - 1e-9:  # a request exactly 1/rate after the last one is in
            self._tokens = max(0.0, self._tokens - 1)
            return None
        return (1 - self._tokens) / self.rate


class SlidingLimit:
    """At most `rate` (rounded down, at least 1) requests in any trailing second."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._most = max(1, math.floor(rate))
        self._admitted: deque[float] = deque()

    def check(self, now: float) -> float | None:
        while self._admitted and self._admitted[0] <= now - 1.0:
            self._admitted.popleft()
        if len(self._admitted) < self._most:
            self._admitted.append(now)
            return None
        return self._admitted[0] + 1.0 - now


class FixedLimit:
    """At most `rate` (rounded down, at least 1) requests in each calendar second."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._most = max(1, math.floor(rate))
        self._second = -math.inf
        self._count = 0

    def check(self, now: float) -> float | None:
        second = math.floor(now)
        if second != self._second:
            self._second, self._count = second, 0
        if self._count < self._most:
            self._count += 1
            return None
        return second + 1 - now


def default_burst(rate: float) -> int:
    """A bucket's burst unless told: about a second's worth of requests."""
    return max(1, round(rate))


def make_limit(kind: Limiter, rate: float, burst: int | None = None) -> Limit:
    """The limiter of `kind`; a bucket's `burst` defaults to about a second's worth."""
    if kind is Limiter.sliding:
        return SlidingLimit(rate)
    if kind is Limiter.fixed:
        return FixedLimit(rate)
    return BucketLimit(rate, burst if burst is not None else default_burst(rate))
