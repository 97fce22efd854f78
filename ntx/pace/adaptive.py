"""`--sleep auto`: find the fastest pace the server accepts and keep to it, like TCP.

The controller steers a target rate r (requests/s). Every request waits its turn on one
schedule shared by all workers (`Throttle.schedule`, a bucket of burst 1), so requests go
out evenly spaced 1 / r apart, never in clusters a strict limiter would refuse; the worker
slots (the run's `trio.CapacityLimiter.total_tokens`) are the fewest that keep r going at
the smoothed latency L with room to spare, w = ceil(2 r L) + 1, and they sleep no more.

- Start: r = workers / (L + sleep), the pace of the flags given.
- Slow start: while answers are healthy, latency is flat and r is being reached, r grows by
  a quarter every tick (0.5 s).
- A latency jump (latency at twice its floor and 50 ms above it): r drops to 0.9 x r and
  climbs back as below; the new latency becomes the floor.
- Congestion (a 429 or 503 answer, or a connection dropped): r drops to 0.9 x the rate
  the server accepted over the last 2 s, pauses included, and by at most half; or to
  0.9 x the rate it accepted since it first refused, if that is lower (a limiter's burst
  allowance lets a client run above the limit for a while; the long run tells the limit).
  One decrease per round: answers to requests sent before the last decrease do not cut
  again. `Retry-After` is honoured by the retry policy, which pauses every worker.
- Afterwards (additive increase): r climbs back fast, half the gap per tick, to the rate it
  fell from, then probes above it slowly, by 0.5% of that rate per tick.

All timing is trio's clock, so tests drive it with `trio.testing.MockClock`.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Awaitable, Callable

import trio

from ntx.events import Paced
from ntx.pace.throttle import Outcome, Throttle, TokenBucket

TICK = 0.5  # seconds between increases
WINDOW = 2.0  # seconds over which the accepted rate is measured
GROWTH = 1.25  # slow start: r *= GROWTH per tick
BACKOFF = 0.9  # on congestion: r = BACKOFF x accepted rate
PROBE = 0.005  # then r += PROBE x that rate per tick
HEADROOM = 2.0  # workers = ceil(HEADROOM x r x L)
LATENCY_JUMP = 2.0  # latency this many times its floor ...
LATENCY_JUMP_MIN = 0.05  # ... and at least this many seconds above it, is congestion
FLOOR_MEMORY = 30.0  # seconds a latency floor is remembered (the server may change)
MIN_RATE = 0.1
MAX_AUTO_WORKERS = 32


class AutoPace:
    """The `--sleep auto` controller; `answered()` is the `Throttle`'s observer hook."""

    def __init__(
        self,
        limiter: trio.CapacityLimiter,
        throttle: Throttle,
        *,
        max_workers: int = MAX_AUTO_WORKERS,
    ) -> None:
        self._limiter = limiter
        self._throttle = throttle
        self.max_workers = max(max_workers, int(limiter.total_tokens))
        self.rate: float | None = None  # None until the first healthy answer
        self.refused_at: float | None = None  # the rate of the last congestion (None: never)
        self.latency: float | None = None  # smoothed latency of healthy answers
        self._floors: deque[tuple[float, float]] = deque()  # (time, latency floor then)
        self._answers: deque[float] = deque()  # times of healthy answers within WINDOW
        self._first_answer: float | None = None
        self.healthy = 0  # healthy answers in all
        self._first_congestion: tuple[float, int] | None = None  # (when, healthy answers then)
        self._tick_answers = 0  # healthy answers since the last tick
        self._tick_congested = False
        self._last_decrease = -math.inf
        self.decreases = 0
        self._reason = "start"
        self._started = False
        self._changed = False

    # ------------------------------------------------------------------ signals

    def answered(self, started: float, finished: float, outcome: Outcome) -> None:
        """The throttle's report of one request (see `ntx.pace.throttle.Observer`)."""
        if outcome is Outcome.OK:
            self._healthy(finished, finished - started)
        elif outcome is Outcome.CONGESTED:
            self._tick_congested = True
            if started >= self._last_decrease:  # once per round, like TCP
                self._decrease(finished, "congestion")

    def _healthy(self, now: float, latency: float) -> None:
        if self._first_answer is None:
            self._first_answer = now
        self._answers.append(now)
        self.healthy += 1
        self._tick_answers += 1
        self.latency = latency if self.latency is None else 0.875 * self.latency + 0.125 * latency
        if self.rate is None:
            self.rate = self._limiter.total_tokens / (self.latency + self._throttle.sleep)

    def _floor(self, now: float) -> float | None:
        """The lowest smoothed latency of the last FLOOR_MEMORY seconds."""
        while self._floors and self._floors[0][0] < now - FLOOR_MEMORY:
            self._floors.popleft()
        return min((floor for _, floor in self._floors), default=None)

    def accepted_rate(self, now: float) -> float | None:
        """Healthy answers per second over the last WINDOW seconds, pauses included: a rate
        limiter refills while every worker waits (None: too little time to say)."""
        while self._answers and self._answers[0] < now - WINDOW:
            self._answers.popleft()
        if self._first_answer is None or now - self._first_answer < TICK:
            return None
        return len(self._answers) / min(WINDOW, now - self._first_answer)

    def long_run_rate(self, now: float) -> float | None:
        """Healthy answers per second since the server first refused (None: not long enough)."""
        if self._first_congestion is None:
            return None
        since, healthy = self._first_congestion
        if now - since < 2 * WINDOW:
            return None
        return (self.healthy - healthy) / (now - since)

    # ------------------------------------------------------------------ control

    def _cut(self, now: float, basis: float, reason: str) -> None:
        """r falls to BACKOFF x `basis`; requests sent before `now` cannot cut again."""
        self.rate = max(MIN_RATE, BACKOFF * basis)
        self._last_decrease = now
        self.decreases += 1
        self._apply(reason)

    def _slow_for_latency(self, now: float) -> None:
        """A latency jump says "less, for now", not where the limit is: r falls by the usual
        factor and climbs back to where it was (slow start ends: growth is additive now)."""
        assert self.rate is not None
        self.refused_at = self.refused_at or self.rate
        self._cut(now, self.rate, "latency")

    def _decrease(self, now: float, reason: str) -> None:
        if self.rate is None:
            return  # nothing healthy yet: the retry policy's waits are all there is to go by
        if self._first_congestion is None:
            self._first_congestion = (now, self.healthy)
        # What the server accepts: over the last seconds (at least half of r), and over the
        # long run since it first refused if that is lower: a limiter's burst allowance lets
        # a client run above the limit for a while, and only the long run tells.
        accepted = self.accepted_rate(now)
        basis = min(self.rate, max(accepted, 0.5 * self.rate)) if accepted else self.rate
        long_run = self.long_run_rate(now)
        if long_run is not None:
            basis = min(basis, long_run)
        self.refused_at = basis
        self._cut(now, basis, reason)

    def tick(self, now: float) -> Paced | None:
        """One control step; returns the new pace if the knobs changed since the last tick."""
        answers, congested = self._tick_answers, self._tick_congested
        self._tick_answers, self._tick_congested = 0, False
        if self.rate is None or self.latency is None:
            return None
        floor = self._floor(now)
        self._floors.append((now, self.latency))
        if not self._started:
            self._started = True
            self._apply("start")
        elif floor is None:
            pass  # a new latency floor is being measured
        elif (
            self.latency > LATENCY_JUMP * floor
            and self.latency - floor > LATENCY_JUMP_MIN
            and now - self._last_decrease > WINDOW
        ):
            self._slow_for_latency(now)
            self._floors.clear()  # a new floor from here: a lasting change is accepted
        elif (
            not congested
            and not self._throttle.paused
            and answers >= 0.8 * self.rate * TICK - 1  # the target is being reached
        ):
            self._increase()
        if not self._changed:
            return None
        self._changed = False
        return self.pace(now)

    def _increase(self) -> None:
        assert self.rate is not None
        if self.refused_at is None:
            self.rate *= GROWTH
        elif self.rate < self.refused_at:
            gap = self.refused_at - self.rate
            self.rate += max(0.5 * gap, min(gap, PROBE * self.refused_at))
        else:
            self.rate += PROBE * self.refused_at
        self._apply("faster")

    def _knobs(self, rate: float) -> int:
        """The worker slots that keep `rate` requests/s going at the latency seen."""
        assert self.latency is not None
        return min(self.max_workers, max(1, math.ceil(HEADROOM * rate * self.latency) + 1))

    def _apply(self, reason: str) -> None:
        assert self.rate is not None
        self._limiter.total_tokens = self._knobs(self.rate)
        self._throttle.sleep = 0.0  # the schedule spaces the requests, not the workers' rests
        if self._throttle.schedule is None:
            self._throttle.schedule = TokenBucket(self.rate)
        else:
            self._throttle.schedule.set_rate(self.rate)
        self._reason = reason
        self._changed = True

    # ------------------------------------------------------------------ reporting

    def pace(self, now: float) -> Paced:
        workers, sleep = int(self._limiter.total_tokens), self._throttle.sleep
        achieved = self.accepted_rate(now) or 0.0
        return Paced(workers, sleep, self.rate or 0.0, achieved, self._reason, at=now)

    def advice(self, now: float) -> Paced | None:
        """Static flags for next time, and how much is known ("reason"):

        - "refused": a little under the rate the server accepted on average since it first
          refused;
        - "unsettled": it refused too shortly before the end to tell the limit from a burst
          allowance; the pace it fell back to, a starting point only;
        - "never refused": the pace reached (the target, if answers kept up with it).

        None if the run ended before the controller took a step: it learnt nothing.
        """
        if not self._started or self.rate is None or self.latency is None:
            return None
        long_run = self.long_run_rate(now)
        achieved = long_run or self.accepted_rate(now) or 0.0
        if self.refused_at is None:
            reason, rate = "never refused", min(self.rate, achieved or self.rate)
        elif long_run is None:
            reason, rate = "unsettled", min(self.rate, BACKOFF * self.refused_at)
        else:
            reason, rate = "refused", min(self.rate, 0.97 * long_run)
        return Paced(self._knobs(rate), 0.0, math.floor(rate * 10) / 10, achieved, reason, at=now)

    async def run(self, notify: Callable[[Paced], Awaitable[None]]) -> None:
        """Tick every TICK seconds, telling `notify` of each change, until cancelled."""
        while True:
            await trio.sleep(TICK)
            pace = self.tick(trio.current_time())
            if pace is not None:
                await notify(pace)
