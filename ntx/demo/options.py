"""The demo exchange's options, declared once for `ntx demo serve` (`--securities`, ...) and
`ntx backfill --demo` (`--demo-securities`, ...): each option's type, bounds and help live in
one `Annotated` alias, and the command's parameter name gives it its flag."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date
from typing import Annotated

import typer

from ntx.demo.limits import Limiter, Refusal, default_burst
from ntx.errors import UsageError

FAULTS = ("429", "5xx", "reset", "drop", "truncated", "malformed", "stall")


@dataclass(frozen=True)
class DemoOptions:
    securities: int = 600
    seed: int = 1
    latency_ms: float = 40.0
    rate_limit: float | None = None  # requests per second the demo allows; more are refused
    limiter: Limiter = Limiter.bucket  # how it counts them
    burst: int | None = None  # a bucket's burst; None: about a second's worth
    refuse: Refusal = Refusal.too_many  # how it answers a refused request
    fail_rate: float = 0.0
    faults: tuple[str, ...] = ()  # empty: every kind of fault
    token_ttl: float = 60.0  # seconds a token lives (the real exchange's is about a minute)
    window_days: int = 365  # days of history served before today, as the exchange; 0: all
    today: date | None = None  # the market's day; None: today in Nepal


def parse_faults(text: str) -> tuple[str, ...]:
    """`429,5xx,...` to a tuple of fault names; ValueError names an unknown one."""
    kinds = tuple(dict.fromkeys(part.strip().lower() for part in text.split(",") if part.strip()))
    unknown = [kind for kind in kinds if kind not in FAULTS]
    if unknown or not kinds:
        raise ValueError(
            f"unknown fault {unknown[0] if unknown else text!r} (known: {','.join(FAULTS)})"
        )
    return kinds


def _faults(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return ",".join(parse_faults(value))
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def _finite(value: float | None) -> float | None:
    if value is not None and not math.isfinite(value):
        raise typer.BadParameter(f"must be a finite number, got {value}")
    return value


def _positive(value: float | None) -> float | None:
    if value is not None and not (math.isfinite(value) and value > 0):
        raise typer.BadParameter(f"must be a number of requests per second > 0, got {value:g}")
    return value


Securities = Annotated[int, typer.Option(min=1, metavar="N", help="Securities in the demo market.")]
Seed = Annotated[
    int, typer.Option(min=0, metavar="N", help="The market's seed: same seed, same data.")
]
LatencyMs = Annotated[
    float,
    typer.Option(min=0, callback=_finite, metavar="MS", help="Delay of every answer, in ms."),
]
RateLimit = Annotated[
    float | None,
    typer.Option(
        callback=_positive,
        metavar="R",
        help="Refuse requests above R a second (how: the limiter and refuse options).",
    ),
]
LimiterKind = Annotated[
    Limiter | None,
    typer.Option(
        case_sensitive=False,
        help="How the rate limit counts: a token bucket, a sliding second, or fixed seconds"
        " [default: bucket].",
    ),
]
Burst = Annotated[
    int | None,
    typer.Option(
        min=1,
        metavar="N",
        help="A bucket limiter's burst: requests at once [default: about a second's worth].",
    ),
]
Refuse = Annotated[
    Refusal | None,
    typer.Option(
        case_sensitive=False,
        help="How a request over the rate limit is answered: 429 with Retry-After, 503, or"
        " the connection dropped [default: 429].",
    ),
]
FailRate = Annotated[
    float | None,
    typer.Option(
        min=0, max=1, metavar="F", help="Share of requests to fail (0 to 1) [default: 0]."
    ),
]
TokenTtl = Annotated[
    float | None,
    typer.Option(
        min=0.1,
        max=86400,
        callback=_finite,
        metavar="S",
        help="Seconds a token lives; an older one gets 401 [default: 60].",
    ),
]
WindowDays = Annotated[
    int | None,
    typer.Option(
        min=0,
        max=100_000,
        metavar="DAYS",
        help="Serve history only this many days back, like the exchange; 0 serves it all"
        " [default: 365].",
    ),
]


def _day(value: str | None) -> str | None:
    if value is not None:
        try:
            date.fromisoformat(value)
        except ValueError:
            raise typer.BadParameter(f"takes a date like 2026-06-30, got {value!r}") from None
    return value


Today = Annotated[
    str | None,
    typer.Option(
        callback=_day,
        metavar="DATE",
        help="The market's day: its last session and history window end there"
        " [default: today in Nepal].",
    ),
]
Faults = Annotated[
    str | None,
    typer.Option(
        callback=_faults,
        metavar="LIST",
        help=f"Faults to inject: {','.join(FAULTS)} [default: all].",
    ),
]


def demo_options(
    securities: int,
    seed: int,
    latency_ms: float,
    rate_limit: float | None,
    fail_rate: float | None,
    faults: str | None,
    token_ttl: float | None = None,
    window_days: int | None = None,
    today: str | None = None,
    limiter: Limiter | None = None,
    burst: int | None = None,
    refuse: Refusal | None = None,
) -> DemoOptions:
    """The options as the demo takes them (each already checked by its declaration;
    `UsageError` for a limiter's option without a rate limit, or a burst without a bucket)."""
    if rate_limit is None and (limiter or burst or refuse):
        raise UsageError(
            "the limiter, burst and refuse options shape a rate limit: give one"
            " (--rate-limit R; with --demo, --demo-rate-limit R)"
        )
    if burst is not None and limiter not in (None, Limiter.bucket):
        raise UsageError(f"a burst is a bucket's: the {limiter} limiter has none")
    return DemoOptions(
        securities=securities,
        seed=seed,
        latency_ms=latency_ms,
        rate_limit=rate_limit,
        limiter=limiter or DemoOptions.limiter,
        burst=burst,
        refuse=refuse or DemoOptions.refuse,
        fail_rate=fail_rate or 0.0,
        faults=parse_faults(faults) if faults else (),
        token_ttl=token_ttl or DemoOptions.token_ttl,
        window_days=DemoOptions.window_days if window_days is None else window_days,
        today=date.fromisoformat(today) if today else None,
    )


def limit_words(options: DemoOptions, rate: float) -> str:
    """The demo's limit of `rate` requests/s in words, for its start-up line."""
    if options.limiter is Limiter.bucket:
        burst = options.burst or default_burst(rate)
        kind = f"a token bucket, burst {burst}"
    else:
        kind = "a sliding second" if options.limiter is Limiter.sliding else "fixed seconds"
    answer = {
        Refusal.too_many: "answering 429 with Retry-After",
        Refusal.unavailable: "answering 503",
        Refusal.drop: "dropping the connection",
    }[options.refuse]
    return f"{kind}, {answer}"
