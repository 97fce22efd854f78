"""`--sleep auto`: find the fastest pace the server accepts and keep to it.

The controller steers a target rate r (requests/s). Every request waits its turn on one
schedule shared by all workers (`Throttle.schedule`, a bucket of burst 1), so requests go
out evenly spaced 1 / r apart, never in clusters a strict limiter would refuse; the worker
slots (the run's `trio.CapacityLimiter.total_tokens`) are the fewest that keep r going at
the smoothed latency L with room to spare, w = ceil(2 r L) + 1, and they sleep no more.

A rate is *held* once it has been in force for a trial (1 s at first) with its requests
really sent at it and nothing refused since: the highest such rate is the pace known to be
safe. The rate a refused request was sent at is the limit's upper bound.

- Start: r = workers / (L + sleep), the pace of the flags given (spaced from the first
  request on, at an assumed 100 ms until an answer tells the latency).
- Slow start: until the server first refuses, r grows by a quarter every tick (0.25 s)
  while the answers keep up with it.
- Congestion (a 429 or 503 answer, or a connection dropped; a latency jump to twice its
  floor and 50 ms above it counts too), once per round: answers to requests sent before
  the last decrease do not cut again.
  - Nothing held yet: r falls to a guess, what the server accepted in the last second
    (a limiter lets its rate through), between half the refused rate and the one before.
  - Refused above the rate held: r falls to 0.85 x the rate held for a trial, so that
    the limiter refills (a refusal above 13 requests/s: to the rate held itself), and the
    search goes on from the rate held.
  - Refused at or below the rate held: a burst allowance fooled a trial, or the limit
    fell: the rate held becomes 0.85 x the refused one, and trials last twice as long as
    that rate did, up to 8 s.
- Timing noise: above 13 requests/s (where 3 ms of unevenness on the way to the server is
  more than the search's 4% tells apart), a refusal at or below the rate held is taken
  for noise unless 3 of the last 100 answers since the last decrease were refused; its
  retry pays for it. Refusals answered closer together than they were sent count as one
  (a server that stalled let them reach its limiter at once). When refusals do recur
  there, the rate held becomes what got through since the third last of them (the limit,
  for a saturated limiter), but no less than half the rate refused, r holds there and
  trials last twice as long.
- Search: once the rate in force has held, r moves 40% of the way to the bound, until the
  two are within 4%.
- Hold and probe: r stays there 8 s, then probes 3% higher; at once if the bound is a
  refused guess (a sliding window that still holds the slow start's burst refuses a rate
  below its limit). A refused probe doubles the next hold (up to 64 s); a probe that holds
  above the bound means the limit rose: r grows by 6%, then 12% a trial until refused again.

Under auto, a congestion wait (`Retry-After` or a backoff) holds back only the retry that
was told: the controller slows every worker instead of a pause stopping them all. A
`Retry-After` over `ntx.pace.retry.LONG_RETRY_AFTER` (5 s) still pauses every worker: the
server is closed for a while, not metering a rate.

All timing is trio's clock, so tests drive it with `trio.testing.MockClock`.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Awaitable, Callable

import trio

from ntx.events import Paced
from ntx.pace.throttle import Outcome, Throttle, TokenBucket

TICK = 0.25  # seconds between control steps
TRIAL = 1.0  # seconds a rate must last, with nothing refused, to count as held
MAX_TRIAL = 8.0  # ... at most, after burst allowances fooled shorter trials
GROWTH = 1.25  # slow start: r *= GROWTH per tick
BACKOFF = 0.85  # a refusal at the rate held: it falls to BACKOFF x the refused rate
CLOSE = 0.04  # the search ends when the rate held is within this share of the bound
BISECT = 0.4  # ... each step going this share of the way to it
FIRST_HOLD = 8.0  # seconds at the limit found before a probe above it
MAX_HOLD = 64.0
PROBE = 0.03  # a probe: this much above the rate held; growth after it: twice as much
MAX_STEP = 0.12  # ... at most
HEADROOM = 2.0  # workers = ceil(HEADROOM x r x L) + 1
LATENCY_JUMP = 2.0  # latency this many times its floor ...
LATENCY_JUMP_MIN = 0.05  # ... and at least this many seconds above it, is congestion
FLOOR_MEMORY = 30.0  # seconds a latency floor is remembered (the server may change)
JITTER = 0.003  # seconds: how unevenly requests spaced evenly may reach the server
RECUR = 100  # at the rate held, a refusal is congestion if, of the last RECUR answers ...
RECURRING = 3  # ... sent since the last decrease, this many were refused (else: noise)
DEEPEST_CUT = 0.5  # recurring refusals at the rate held cut it to no less than this share
HISTORY = 60.0  # seconds of past rates kept, to tell the rate a request was sent at
ASSUMED_LATENCY = 0.1  # before the first answer: the schedule's first rate assumes this
MIN_RATE = 0.1
MAX_AUTO_WORKERS = 32


class AutoPace:
    """The pace controller (`--sleep auto`, or capped at the flags' pace without it);
    `answered()` is the `Throttle`'s observer hook."""

    def __init__(
        self,
        limiter: trio.CapacityLimiter,
        throttle: Throttle,
        *,
        max_workers: int = MAX_AUTO_WORKERS,
        capped: bool = False,
    ) -> None:
        """`capped`: the pace of the flags given is a ceiling (a run without `--sleep auto`):
        nothing changes until the server first refuses; from then on the requests are
        spaced at a rate found as above, never above the flags' pace, with the flags'
        workers and sleep kept."""
        self._limiter = limiter
        self._throttle = throttle
        self.capped = capped
        self.engaged = trio.Event()  # set once the controller steers (at once, unless capped)
        self.max_workers = (
            int(limiter.total_tokens) if capped else max(max_workers, int(limiter.total_tokens))
        )
        self.held: float | None = None  # the highest rate that held (None: none yet)
        self._verified = False  # `held` held for a trial (else: a guess after a refusal)
        self.refused_at: float | None = None  # the bound: the last rate refused above `held`
        self.latency: float | None = None  # smoothed latency of healthy answers
        self.decreases = 0
        self._rates: deque[tuple[float, float]] = deque()  # (since when, rate)
        self._floors: deque[tuple[float, float]] = deque()  # (time, latency floor then)
        self._first_answer: float | None = None
        self._answers: deque[float] = deque()  # times of healthy answers, the last 2 s
        self._sent: deque[float] = deque()  # when the requests answered lately were sent
        self._first_congestion: tuple[float, int] | None = None  # (when, healthy then)
        self._round: deque[bool] = deque(maxlen=RECUR)  # refused?, of answers since a decrease
        self._last_refused: tuple[float, float] | None = None  # (started, finished) of it
        self.healthy = 0
        self.refusals = 0  # answers refused (429, 503, dropped), timing noise included
        self._tick_answers = 0
        self._last_decrease = -math.inf  # when r last fell (requests sent before: same round)
        self._last_congestion = -math.inf
        self._trial = TRIAL
        self._hold = FIRST_HOLD
        self._hold_until: float | None = None  # holding at the limit found until then
        self._guessed_bound = False  # the bound is a guess's that was refused
        self._step = PROBE  # the next increase above the rate held, as a share of it
        self._reason = "start"
        self._started = False
        self._changed = False
        self._slow_start = True  # until the server first refuses
        self._sleep_given = throttle.sleep
        self.rate = self._flags_pace()  # the target
        self._rates.append((-math.inf, self.rate))
        if not capped:  # the first requests go out evenly spaced too, at about the flags' pace
            self._engage()

    def _engage(self) -> None:
        self._throttle.schedule = TokenBucket(self.rate)
        if not self.capped:
            self._throttle.sleep = 0.0  # the schedule spaces the requests, not the rests
        self.engaged.set()

    # ------------------------------------------------------------------ signals

    def answered(self, started: float, finished: float, outcome: Outcome) -> None:
        """The throttle's report of one request (see `ntx.pace.throttle.Observer`)."""
        self._sent.append(started)
        refused = outcome is Outcome.CONGESTED
        if started >= self._last_decrease and not (refused and self._bunched(started, finished)):
            self._round.append(refused)
        if refused:
            self._last_refused = (started, finished)
        if outcome is Outcome.OK:
            self._healthy(finished, finished - started)
        elif outcome is Outcome.CONGESTED:
            self.refusals += 1
            if self._noise(started):
                return
            self._last_congestion = finished
            if started >= self._last_decrease:  # once per round, like TCP
                self._congestion(finished, started, "congestion")

    def _noise(self, started: float) -> bool:
        """Whether a refusal of a request sent at `started` is timing noise. Requests spaced
        evenly by the schedule do not reach the server evenly (a loaded machine, the
        network): one delayed a few ms arrives close behind the one before it, and a limiter
        of burst 1 refuses it below its rate. Above CLOSE / JITTER requests/s, a refusal at
        or below a rate that held, with fewer than RECURRING refused since the last
        decrease, is noise: its retry pays for it and the pace stays. A limit refuses again."""
        sent, _ = self.rate_at(started)
        return self._noisy_at_held(sent) and not self._recurring()

    def _noisy_at_held(self, sent: float) -> bool:
        """Whether a request sent at rate `sent` went at or below a rate that held, where
        timing noise is more than the search tells apart: the noise rule's ground."""
        at_held = self._verified and self.held is not None and sent <= self.held
        return at_held and self._noisy(sent)

    @staticmethod
    def _noisy(rate: float) -> bool:
        """Whether timing noise (JITTER) at `rate` is more than the search tells apart."""
        return JITTER * rate > CLOSE

    def _bunched(self, started: float, finished: float) -> bool:
        """Whether a refusal was answered with the refusal before it, closer together than
        the two were sent: the server (or the way to it) held them and let them in at once,
        a limiter of burst 1 refused all but the first, and together they are one event."""
        if self._last_refused is None:
            return False
        last_started, last_finished = self._last_refused
        return abs(finished - last_finished) < abs(started - last_started) / 2

    def _recurring(self) -> bool:
        return sum(self._round) >= RECURRING

    def _refused_share(self) -> float:
        """The share refused of the answers after the RECURRING-th last refusal (there are
        that many since the last decrease)."""
        refused = 0
        for span, was_refused in enumerate(reversed(self._round)):
            refused += was_refused
            if refused == RECURRING:
                return (refused - 1) / span
        raise AssertionError("fewer than RECURRING refusals since the last decrease")

    def _healthy(self, now: float, latency: float) -> None:
        if self._first_answer is None:
            self._first_answer = now
        self._answers.append(now)
        self.healthy += 1
        self._tick_answers += 1
        self.latency = latency if self.latency is None else 0.875 * self.latency + 0.125 * latency

    def rate_at(self, when: float) -> tuple[float, float]:
        """The schedule's rate at `when` (a request's start), and since when it was."""
        since, rate = self._rates[0]
        for changed, then in self._rates:
            if changed > when:
                break
            since, rate = changed, then
        return rate, since

    def _lowest_since(self, when: float) -> float:
        """The lowest rate in force from `when` to now."""
        lowest, _ = self.rate_at(when)
        return min([lowest] + [rate for since, rate in self._rates if since > when])

    def accepted_rate(self, now: float) -> float | None:
        """Healthy answers per second over the last 2 s (None: too little time to say)."""
        while self._answers and self._answers[0] < now - 2.0:
            self._answers.popleft()
        if self._first_answer is None or now - self._first_answer < 0.5:
            return None
        return len(self._answers) / min(2.0, now - self._first_answer)

    def _accepted_lately(self, now: float) -> float:
        """Healthy answers in the last second: what a limiter lets through when saturated."""
        return float(sum(1 for answer in self._answers if answer >= now - 1.0))

    def long_run_rate(self, now: float) -> float | None:
        """Healthy answers per second since the server first refused (None: not long enough)."""
        if self._first_congestion is None:
            return None
        since, healthy = self._first_congestion
        if now - since < 2 * TRIAL:
            return None
        return (self.healthy - healthy) / (now - since)

    # ------------------------------------------------------------------ control

    def _congestion(self, now: float, started: float, reason: str) -> None:
        """A request sent at `started` was refused (or the latency jumped)."""
        if not self.engaged.is_set():  # capped: the flags' pace is what was refused
            self._rates[0] = (-math.inf, self._ceiling())
        sent, since = self.rate_at(started)
        if self._first_congestion is None:
            self._first_congestion = (now, self.healthy)
        dip = 1.0  # how far below the rate held to go while the limiter refills
        bound = sent  # the limit is below the rate refused
        guessed = False  # refused at a guess: perhaps the limiter's memory of a burst
        if self._slow_start or self.held is None or (not self._verified and sent <= self.held):
            # a guess to try: what the server has just accepted (a saturated limiter lets
            # its rate through), within half the rate refused and the rate below it
            guessed = not self._slow_start
            below = 1 / GROWTH if self._slow_start else BACKOFF
            lately = BACKOFF * self._accepted_lately(now)
            self.held, self._verified = min(below * sent, max(sent / 2, lately)), False
            self._slow_start = False
        elif self._noisy_at_held(sent) and self._recurring():
            # refusals recur at the rate held: the limit fell, or a burst allowance fooled
            # a trial; what got through since is the limit (no less than half the rate
            # refused, a round at a time): hold there, then probe
            self._trial = min(MAX_TRIAL, 2 * self._trial)
            self.held = sent * max(1 - self._refused_share(), DEEPEST_CUT)
            bound = min(sent, (1 + CLOSE) * self.held)
            self._hold = FIRST_HOLD
        elif sent <= self.held:  # a burst allowance fooled a trial, or the limit fell
            self._trial = min(MAX_TRIAL, max(self._trial, 2 * (started - since)))
            self.held = BACKOFF * sent
            self._hold = FIRST_HOLD
        else:  # refused above the rate held: back below it, then up again
            # (a refusal at a noisy rate is as likely noise as not; a latency jump is a queue)
            refusal = reason == "congestion"
            dip = 1.0 if refusal and self._noisy(sent) else BACKOFF
            if self._hold_until is not None:  # a probe refused: the limit has not moved
                self._hold = min(MAX_HOLD, 2 * self._hold)
        self.refused_at = bound
        self._guessed_bound = guessed
        self._hold_until = None
        self._step = PROBE
        self._last_decrease = now
        self._round.clear()
        self.decreases += 1
        self.held = max(MIN_RATE, self.held)
        self._set(min(self.rate, dip * self.held), now, reason)

    def tick(self, now: float) -> Paced | None:
        """One control step; returns the new pace if the knobs changed since the last tick."""
        answers, self._tick_answers = self._tick_answers, 0
        if self.latency is None:
            return None  # no answer yet
        floor = self._floor(now)
        self._floors.append((now, self.latency))
        verified = False  # the rate in force has held
        if now - self._last_congestion >= self._trial and self._tried(now):
            tried = min(self._lowest_since(now - self._trial), self.rate)
            verified = tried >= self.rate
            if verified or self._verified:
                self.held = max(self.held or 0.0, tried)
                self._verified = True
        if not self._started:
            self._started = True
            if not self.capped:  # (capped, the first refusal started it)
                if self._slow_start:  # the flags' pace, at the latency measured
                    self.rate = self._flags_pace()
                self._set(self.rate, now, "start")
        elif (
            not self.capped  # a latency jump is too weak a sign to override the flags
            and floor is not None
            and self.latency > LATENCY_JUMP * floor
            and self.latency - floor > LATENCY_JUMP_MIN
            and now - self._last_decrease > 2 * TRIAL
        ):
            self._congestion(now, now, "latency")
            self._floors.clear()  # a new floor from here: a lasting change is accepted
        elif self._slow_start:
            if answers >= 0.8 * self.rate * TICK - 1 and not self._throttle.paused:
                self._set(self.rate * GROWTH, now, "faster")  # slow start
        elif verified:
            assert self.held is not None
            self._next(now, self.held)
        if not self._changed:
            return None
        self._changed = False
        return self.pace(now)

    def _tried(self, now: float) -> bool:
        """Whether the requests of the last trial went out at about the rates in force (not
        held back by retries, pauses or too few jobs): only then does a trial tell."""
        start = now - self._trial
        while self._sent and self._sent[0] < start:
            self._sent.popleft()
        return len(self._sent) >= 0.8 * self._lowest_since(start) * self._trial - 1

    def _next(self, now: float, held: float) -> None:
        """The rate in force has held: where to go from it."""
        bound = self.refused_at
        if bound is not None and bound - held > CLOSE * bound:
            self._set(held + BISECT * (bound - held), now, "faster")  # search
        elif bound is not None and held < bound:
            if self.rate < held:
                self._set(held, now, "faster")  # back from the dip after a refusal
            elif self._hold_until is None:
                # found: hold there (not if a guess was refused: probe at once)
                self._hold_until = now + (0.0 if self._guessed_bound else self._hold)
            elif now >= self._hold_until:
                self._set(held * (1 + self._step), now, "probe")
        else:  # above the last bound: the limit rose, or was never met
            if bound is not None:
                self.refused_at = None
                self._hold = FIRST_HOLD
            self._step = min(MAX_STEP, 2 * self._step)
            self._set(held * (1 + self._step), now, "faster")

    def _set(self, rate: float, now: float, reason: str) -> None:
        rate = max(MIN_RATE, min(rate, self._ceiling()))
        if rate == self.rate and self.engaged.is_set() and reason != "start":
            return  # at the ceiling already: nothing changes
        self.rate = rate
        self._rates.append((now, self.rate))
        while len(self._rates) > 2 and self._rates[1][0] < now - HISTORY:
            self._rates.popleft()
        self._apply(reason)

    def _floor(self, now: float) -> float | None:
        """The lowest smoothed latency of the last FLOOR_MEMORY seconds."""
        while self._floors and self._floors[0][0] < now - FLOOR_MEMORY:
            self._floors.popleft()
        return min((floor for _, floor in self._floors), default=None)

    def _flags_pace(self) -> float:
        """workers / (latency + sleep) for the flags given, at the latency seen so far."""
        latency = self.latency or ASSUMED_LATENCY
        return self._limiter.total_tokens / (latency + self._sleep_given)

    def _ceiling(self) -> float:
        """The fastest the controller may aim: the flags' pace when capped."""
        return self._flags_pace() if self.capped else math.inf

    def _knobs(self, rate: float) -> int:
        """The worker slots that keep `rate` requests/s going at the latency seen."""
        if self.capped:
            return int(self._limiter.total_tokens)
        latency = self.latency or ASSUMED_LATENCY
        return min(self.max_workers, max(1, math.ceil(HEADROOM * rate * latency) + 1))

    def _apply(self, reason: str) -> None:
        if self._throttle.schedule is None:
            self._engage()
        assert self._throttle.schedule is not None
        self._limiter.total_tokens = self._knobs(self.rate)
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

        - "refused": the highest rate that held since the server refused;
        - "slowed": the same, when the server never refused but its answers slowed down
          (a latency jump: a queue);
        - "refused late", "slowed late": that came too shortly before the end for any
          rate to hold; the pace it fell back to, a starting point only;
        - "never refused": the pace reached (the target, if answers kept up with it).

        None if the run ended before the controller took a step: it learnt nothing.
        """
        if not self._started or self.rate is None or self.latency is None:
            return None
        long_run = self.long_run_rate(now)
        achieved = long_run or self.accepted_rate(now) or 0.0
        signal = "refused" if self.refusals else "slowed"  # else a latency jump, alone
        if self._first_congestion is None:
            reason, rate = "never refused", min(self.rate, achieved or self.rate)
        elif long_run is None or self.held is None:
            reason, rate = f"{signal} late", self.rate
        else:  # a static pace must also hold against a full burst allowance: the long run
            reason, rate = signal, min(self.held, 0.97 * long_run)
        return Paced(self._knobs(rate), 0.0, math.floor(rate * 10) / 10, achieved, reason, at=now)

    async def run(self, notify: Callable[[Paced], Awaitable[None]]) -> None:
        """Tick every TICK seconds once engaged, telling `notify` of each change, until
        cancelled."""
        await self.engaged.wait()
        while True:
            await trio.sleep(TICK)
            pace = self.tick(trio.current_time())
            if pace is not None:
                await notify(pace)
