"""The retry policy under trio's MockClock: exact waits, no real sleeping."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, datetime
from itertools import pairwise

import httpx
import pytest
import trio
from trio.testing import MockClock

from ntx.errors import (
    AccessDenied,
    ConnectionDropped,
    DateNotServed,
    FetchError,
    HttpStatusError,
    NotFound,
    TransportError,
)
from ntx.net.client import open_client
from ntx.pace.retry import (
    CircuitBreaker,
    RetryPolicy,
    Verdict,
    classify,
    full_jitter,
    parse_retry_after,
)
from ntx.pace.throttle import Outcome, RequestMeter, Throttle
from ntx.sources.nepse.source import NepseSource
from tests.helpers import tokenless

DETAIL = {
    "stockListedShares": 1e6,
    "paidUpCapital": 1e8,
    "publicShares": 4e5,
    "publicPercentage": 40.0,
    "promoterShares": 6e5,
    "promoterPercentage": 60.0,
}


class Highest(random.Random):
    """Full jitter's worst case: always the top of the range."""

    def uniform(self, a: float, b: float) -> float:
        return b


def test_backoff_doubles_from_one_second_up_to_the_cap() -> None:
    assert [full_jitter(n, Highest()) for n in range(9)] == [1, 2, 4, 8, 16, 32, 60, 60, 60]
    rng = random.Random(4)
    for n in range(12):
        for _ in range(50):
            assert 0 <= full_jitter(n, rng) <= min(60, 2**n)


def test_retry_after_in_both_forms() -> None:
    now = datetime(2015, 10, 21, 7, 27, 30, tzinfo=UTC)
    assert parse_retry_after("5", now) == 5
    assert parse_retry_after(" 2.5 ", now) == 2.5
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now) == 30
    assert parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now) == 0  # already past
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None


@pytest.mark.parametrize(
    ("error", "verdict"),
    [
        (HttpStatusError(429, "/x"), Verdict.RETRY),
        (HttpStatusError(502, "/x"), Verdict.RETRY),
        (HttpStatusError(504, "/x"), Verdict.RETRY),
        (TransportError("reset"), Verdict.RETRY),
        (ConnectionDropped("closed without an answer"), Verdict.RETRY),
        (DateNotServed("/x"), Verdict.FAIL),
        (HttpStatusError(404, "/x"), Verdict.SKIP),
        (HttpStatusError(400, "/x"), Verdict.FAIL),
        (HttpStatusError(501, "/x"), Verdict.FAIL),
        (HttpStatusError(401, "/x"), Verdict.STOP),
        (HttpStatusError(403, "/x"), Verdict.STOP),
    ],
)
def test_classification(error: FetchError, verdict: Verdict) -> None:
    assert classify(error) is verdict


def scripted(answers: list[httpx.Response], log: list[float]) -> httpx.MockTransport:
    """Answers in order (the last one repeats); logs each request's start time."""

    def handler(request: httpx.Request) -> httpx.Response:
        log.append(trio.current_time())
        return answers.pop(0) if len(answers) > 1 else answers[0]

    return tokenless(handler)


async def ownership_with(
    policy: RetryPolicy, transport: httpx.MockTransport, meter: RequestMeter
) -> object:
    async with open_client("http://x", workers=1, timeout=5, transport=transport) as client:
        return await NepseSource(client, meter, policy).ownership(1)


async def test_transient_errors_are_retried_after_backoff(mock_clock: MockClock) -> None:
    gate = Throttle(0.0)
    log: list[float] = []
    transport = scripted(
        [
            httpx.Response(503),
            httpx.Response(200, content=b'{"trunc'),
            httpx.Response(200, json=DETAIL),
        ],
        log,
    )
    meter = RequestMeter(gate)
    assert await ownership_with(RetryPolicy(gate, rng=Highest()), transport, meter) == DETAIL
    assert log == [0.0, 1.0, 3.0]  # waits of 1 s then 2 s
    assert meter.retries == 2 and gate.retries == 2
    assert meter.count == 1 + 3  # the handshake's prove (404: a plain mirror) counts too


async def test_gives_up_after_the_retries_with_the_last_reason(mock_clock: MockClock) -> None:
    gate = Throttle(0.0)
    log: list[float] = []
    policy = RetryPolicy(gate, retries=3, rng=Highest())
    with pytest.raises(
        FetchError, match=r"HTTP 502 from /api/nots/security/1 \(gave up after 3 retries\)"
    ):
        await ownership_with(policy, scripted([httpx.Response(502)], log), RequestMeter(gate))
    assert log == [0.0, 1.0, 3.0, 7.0]


@pytest.mark.parametrize(
    ("status", "raised"),
    [(404, NotFound), (401, AccessDenied), (403, AccessDenied), (400, HttpStatusError)],
)
async def test_no_retry_for_client_errors(
    mock_clock: MockClock, status: int, raised: type[Exception]
) -> None:
    gate = Throttle(0.0)
    log: list[float] = []
    with pytest.raises(raised):
        await ownership_with(
            RetryPolicy(gate), scripted([httpx.Response(status)], log), RequestMeter(gate)
        )
    assert log == [0.0]


async def test_retry_after_http_date_is_honoured(mock_clock: MockClock) -> None:
    gate = Throttle(0.0)
    log: list[float] = []
    now = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
    answers = [
        httpx.Response(429, headers={"Retry-After": "Wed, 01 Jan 2025 12:00:07 GMT"}),
        httpx.Response(200, json=DETAIL),
    ]
    policy = RetryPolicy(gate, wall_clock=lambda: now)
    await ownership_with(policy, scripted(answers, log), RequestMeter(gate))
    assert log == [0.0, 7.0]


async def workers_after_one_failure(
    gate: Throttle, policy: RetryPolicy, failure: Callable[[], httpx.Response], who: str
) -> dict[str, list[float]]:
    """Workers `who` (one letter each) make three requests each; a's take 1 s and the
    others' 1.5 s, and a's first one ends in `failure()`. Returns each worker's start times."""
    starts: dict[str, list[float]] = {name: [] for name in who}
    failed = trio.Event()

    async def handler(request: httpx.Request) -> httpx.Response:
        name = request.url.path.rsplit("/", 1)[-1]
        starts[name].append(trio.current_time())
        await trio.sleep(1.0 if name == "a" else 1.5)
        if name == "a" and not failed.is_set():
            failed.set()
            return failure()
        return httpx.Response(200, json=[])

    async with open_client(
        "http://x", workers=len(who), timeout=30, transport=tokenless(handler)
    ) as client:
        source = NepseSource(client, gate, policy)

        async def worker(name: str) -> None:
            for _ in range(3):
                await source.bind(RequestMeter(gate)).reports(name)  # type: ignore[arg-type]

        async with trio.open_nursery() as nursery:
            for name in who:
                nursery.start_soon(worker, name)
    return starts


async def test_a_429_holds_back_every_worker(mock_clock: MockClock) -> None:
    """One worker is told to wait 5 s; the others' next requests wait with it."""
    gate = Throttle(0.0)
    starts = await workers_after_one_failure(
        gate,
        RetryPolicy(gate),
        lambda: httpx.Response(429, headers={"Retry-After": "5"}),
        "abc",
    )
    # a's 429 arrives at t=1: nobody starts a request in (1, 6), though b and c were
    # ready to at t=1.5
    assert starts["a"] == [0.0, 6.0, 7.0, 8.0]
    assert starts["b"] == [0.0, 6.0, 7.5] and starts["c"] == [0.0, 6.0, 7.5]


@pytest.mark.parametrize(
    "drop",
    [
        httpx.RemoteProtocolError("Server disconnected without sending a response."),
        httpx.ReadError("[Errno 104] Connection reset by peer"),
        httpx.ConnectError("[Errno 111] Connection refused"),
    ],
)
async def test_a_dropped_connection_pauses_every_worker(
    mock_clock: MockClock, drop: httpx.HTTPError
) -> None:
    """A server that drops a connection is overloaded: every worker backs off with the one
    that saw it (here 1 s, the first backoff), as after a 503; and `--sleep auto` hears it."""
    gate = Throttle(0.0)
    outcomes: list[Outcome] = []
    gate.observer = Recorder(outcomes)

    def dropped() -> httpx.Response:
        raise drop

    starts = await workers_after_one_failure(gate, RetryPolicy(gate, rng=Highest()), dropped, "ab")
    # a's drop comes at t=1: nobody starts a request in (1, 2), though b was ready at 1.5
    assert starts["a"] == [0.0, 2.0, 3.0, 4.0]
    assert starts["b"] == [0.0, 2.0, 3.5]
    assert Outcome.CONGESTED in outcomes


class Recorder:
    def __init__(self, outcomes: list[Outcome]) -> None:
        self.outcomes = outcomes

    def answered(self, started: float, finished: float, outcome: Outcome) -> None:
        self.outcomes.append(outcome)


async def test_circuit_breaker_pauses_doubles_and_recovers(mock_clock: MockClock) -> None:
    gate = Throttle(0.0)
    breaker = CircuitBreaker(gate, threshold=10, first_pause=30, max_pause=300)
    pauses: list[tuple[float, float]] = []

    async def notify(seconds: float, reason: str) -> None:
        if "in a row" in reason:
            pauses.append((trio.current_time(), seconds))

    policy = RetryPolicy(
        gate, retries=1000, breaker=breaker, notify=notify, rng=random.Random(1), cap=0.5
    )
    storm_ends = 200.0
    attempt_times: list[float] = []

    async def attempt() -> str:
        async with gate.request():
            attempt_times.append(trio.current_time())
            await trio.sleep(0.1)
        if trio.current_time() < storm_ends:
            raise HttpStatusError(503, "/x")
        return "ok"

    async def worker() -> None:
        for _ in range(3):
            assert await policy.call(attempt, RequestMeter(gate)) == "ok"

    async with trio.open_nursery() as nursery:
        for _ in range(4):
            nursery.start_soon(worker)
    assert [seconds for _, seconds in pauses] == [30, 60, 120]
    for (began, seconds), (next_began, _) in pairwise(pauses):
        assert next_began >= began + seconds  # the storm outlasted each pause
    for began, seconds in pauses:  # nobody started a request during a pause
        assert not [t for t in attempt_times if began < t < began + seconds]
    assert attempt_times[-1] > storm_ends  # and it resumed by itself
    assert breaker.next_pause == 30  # a success ends the storm: the cool-down starts over


async def test_breaker_cooldown_is_capped(mock_clock: MockClock) -> None:
    gate = Throttle(0.0)
    breaker = CircuitBreaker(gate, threshold=1, first_pause=30, max_pause=300)
    pauses = []
    for _ in range(7):
        pauses.append(breaker.failure())
        await trio.sleep_until(gate.resume_at)
    assert pauses == [30, 60, 120, 240, 300, 300, 300]


async def test_a_list_retried_after_a_cut_answer_holds_each_record_once(
    mock_clock: MockClock,
) -> None:
    gate = Throttle(0.0)
    log: list[float] = []
    full = b'[{"id": 1, "symbol": "A"}, {"id": 2, "symbol": "B"}]'
    transport = scripted(
        [httpx.Response(200, content=full[:30]), httpx.Response(200, content=full)], log
    )
    policy = RetryPolicy(gate, rng=Highest())
    async with open_client("http://x", workers=1, timeout=5, transport=transport) as client:
        listed = await NepseSource(client, RequestMeter(gate), policy).securities()
    assert [(record.id, record.symbol) for record in listed] == [(1, "A"), (2, "B")]
    assert log == [0.0, 1.0]
