"""The demo exchange's rate limiters: each kind's rule for every arrival pattern (hypothesis),
and how a refused request is answered, through the real demo server on 127.0.0.1."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ntx.demo.limits import BucketLimit, FixedLimit, Limiter, Refusal, SlidingLimit, make_limit
from tests.helpers import run_ntx

# arrival times: sorted offsets within a few seconds, on a millisecond grid
ARRIVALS = st.lists(st.integers(0, 4000), min_size=1, max_size=120).map(
    lambda ms: [m / 1000 for m in sorted(ms)]
)
RATES = st.integers(1, 30)


def admitted(limit: Any, arrivals: list[float]) -> list[float]:
    return [now for now in arrivals if limit.check(now) is None]


@given(arrivals=ARRIVALS, rate=RATES, burst=st.integers(1, 10))
def test_a_bucket_admits_at_most_its_burst_plus_its_rate(
    arrivals: list[float], rate: int, burst: int
) -> None:
    passed = admitted(BucketLimit(rate, burst), arrivals)
    for i, start in enumerate(passed):  # over any span of t seconds: burst + rate x t at most
        for j in range(i, len(passed)):
            assert j - i + 1 <= burst + rate * (passed[j] - start) + 1e-9


@given(rate=RATES)
def test_a_bucket_of_burst_one_admits_requests_spaced_one_interval_apart(rate: int) -> None:
    limit = BucketLimit(rate, 1)
    spaced = [n / rate for n in range(3 * rate)]
    assert admitted(limit, spaced) == spaced
    crowded = BucketLimit(rate, 1)
    assert admitted(crowded, [0.0, 0.5 / rate]) == [0.0]  # closer than 1/rate: refused


@given(arrivals=ARRIVALS, rate=RATES)
def test_a_sliding_window_admits_at_most_rate_in_any_second(
    arrivals: list[float], rate: int
) -> None:
    limit = SlidingLimit(rate)
    passed: list[float] = []
    for now in arrivals:
        wait = limit.check(now)
        recent = [t for t in passed if t > now - 1.0]
        if wait is None:
            assert len(recent) < rate  # room in the trailing second
            passed.append(now)
        else:
            assert len(recent) == rate and math.isclose(wait, recent[0] + 1.0 - now)


@given(arrivals=ARRIVALS, rate=RATES)
def test_fixed_windows_admit_at_most_rate_in_each_calendar_second(
    arrivals: list[float], rate: int
) -> None:
    passed = admitted(FixedLimit(rate), arrivals)
    for second in {math.floor(t) for t in arrivals}:
        inside = [t for t in arrivals if math.floor(t) == second]
        assert sum(1 for t in passed if math.floor(t) == second) == min(rate, len(inside))


def test_a_bucket_burst_defaults_to_about_a_seconds_worth() -> None:
    limit = make_limit(Limiter.bucket, 8)
    assert isinstance(limit, BucketLimit) and limit.burst == 8
    assert isinstance(make_limit(Limiter.sliding, 8), SlidingLimit)
    assert isinstance(make_limit(Limiter.fixed, 8), FixedLimit)


@pytest.mark.parametrize("refuse", list(Refusal))
async def test_a_refused_request_is_answered_as_told(
    start_demo: Callable[..., Any], refuse: Refusal
) -> None:
    url, recorder = await start_demo(rate_limit=1, burst=1, refuse=refuse)
    path = "/api/nots/nepse-data/market-open"
    async with httpx.AsyncClient(base_url=url) as client:
        first = await client.get(path)
        assert first.status_code == 401  # admitted: the demo asks for its token
        if refuse is Refusal.drop:
            with pytest.raises(httpx.RemoteProtocolError):  # closed without an answer
                await client.get(path)
            return
        second = await client.get(path)
    assert second.status_code == int(refuse.value)
    assert ("retry-after" in second.headers) == (refuse is Refusal.too_many)
    assert recorder.app.limited == 1


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--limiter", "sliding"], "the limiter, burst and refuse options shape a rate limit"),
        (["--rate-limit", "5", "--limiter", "fixed", "--burst", "3"], "the fixed limiter has none"),
        (["--rate-limit", "5", "--refuse", "404"], "'404' is not one of '429', '503', 'drop'"),
    ],
)
def test_bad_limiter_options_are_one_line_and_exit_2(flags: list[str], message: str) -> None:
    result = run_ntx("demo", "serve", "--port", "0", *flags)
    assert result.returncode == 2
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
