"""NEPSE's protocol on the client side: token cutting with a WebAssembly module, payload ids,
the Nepal day, and the shared session (single-flight handshakes, renewal, a refused token)."""

from __future__ import annotations

import random
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st
from trio.testing import MockClock

from ntx.demo.app import DemoApp
from ntx.demo.market import Market
from ntx.demo.protocol import TokenDesk, build_module, module_wat, scramble
from ntx.errors import TokenRefused
from ntx.net.client import open_client
from ntx.pace.throttle import Throttle, TokenBucket
from ntx.sources.nepse.payload import DUMMY, PayloadKind, nepal_day, payload_id
from ntx.sources.nepse.session import ModuleCache, Session
from ntx.sources.nepse.source import NepseSource
from ntx.sources.nepse.token import TokenModule, TokenModuleError, cut
from tests.helpers import TODAY, demo_response

DOCS = Path(__file__).resolve().parent.parent / "docs" / "nepse-api.md"
salt = st.integers(10_000, 99_999)
salts = st.tuples(salt, salt, salt, salt, salt)


@st.composite
def ascending_modules(draw: st.DrawFn) -> tuple[str, int]:
    """WAT of a module whose five functions depend on every argument and always ascend,
    and the longest position it can give."""
    span = draw(st.integers(1, 12))
    gaps = draw(st.lists(st.integers(0, 6), min_size=5, max_size=5))
    functions, offset = [], draw(st.integers(0, 5))
    for gap in gaps:
        coefficients = draw(st.lists(st.integers(1, 97), min_size=5, max_size=5))
        functions.append((coefficients, offset))
        offset += span + gap
    return module_wat(functions, span), offset


@settings(max_examples=40, deadline=None)
@given(module=ascending_modules(), salts_=salts, length=st.integers(0, 40), seed=st.integers())
def test_cutting_a_scrambled_token_gives_it_back(
    module: tuple[str, int], salts_: tuple[int, int, int, int, int], length: int, seed: int
) -> None:
    wat, reach = module
    rng = random.Random(seed)
    # a real token is longer than the module's positions reach (the demo's: 64 characters)
    token = "".join(rng.choice("abcdefXYZ0123456789") for _ in range(reach + length))
    tokens = TokenModule(build_module(wat))
    for positions in (tokens.access_positions(salts_), tokens.refresh_positions(salts_)):
        assert list(positions) == sorted(set(positions))
        assert cut(scramble(token, positions, rng), positions) == token


def test_the_five_functions_get_the_documented_argument_orders() -> None:
    # Every function weighs each argument differently, so a swapped pair changes its result.
    weights = [(1, 10, 100, 1000, 10000), (3, 7, 11, 13, 17)] * 3
    functions = [(weights[k], 0) for k in range(5)]
    tokens = TokenModule(build_module(module_wat(functions, span=1 << 30)))
    s = (11, 22, 33, 44, 55)

    def f(k: int, *args: int) -> int:
        return sum(w * a for w, a in zip(weights[k], args, strict=True)) % (1 << 30)

    s1, s2, s3, s4, s5 = s
    assert tokens.access_positions(s) == (
        f(0, s1, s2, s3, s4, s5),
        f(1, s1, s2, s4, s3, s5),
        f(2, s1, s2, s4, s3, s5),
        f(3, s1, s2, s4, s3, s5),
        f(4, s1, s2, s4, s3, s5),
    )
    assert tokens.refresh_positions(s) == (
        f(0, s2, s1, s3, s5, s4),
        f(1, s2, s1, s3, s4, s5),
        f(2, s2, s1, s4, s3, s5),
        f(3, s2, s1, s4, s3, s5),
        f(4, s2, s1, s4, s3, s5),
    )


@pytest.mark.parametrize(
    ("wasm", "message"),
    [
        (b"not wasm", "not valid WebAssembly"),
        (
            build_module('(module (func (export "cdx") (param i32) (result i32) local.get 0))'),
            "rdx",
        ),
        (
            build_module(
                module_wat([((1, 1, 1, 1, 1), 0)] * 5).replace(
                    "(module", '(module (import "env" "f" (func))', 1
                )
            ),
            "imports",
        ),
    ],
)
def test_a_module_that_cannot_serve_says_why(wasm: bytes, message: str) -> None:
    with pytest.raises(TokenModuleError, match=message):
        TokenModule(wasm)


def test_a_module_that_loops_traps_instead_of_hanging() -> None:
    looping = "\n".join(
        f'(func (export "{name}") (param i32 i32 i32 i32 i32) (result i32) (loop br 0) i32.const 0)'
        for name in ("cdx", "rdx", "bdx", "ndx", "mdx")
    )
    tokens = TokenModule(build_module(f"(module {looping})"))
    with pytest.raises(TokenModuleError, match="failed"):
        tokens.access_positions((1, 2, 3, 4, 5))


@pytest.mark.parametrize("positions", [(3, 2, 5, 6, 7), (1, 2, 3, 4, 99), (-1, 2, 3, 4, 5)])
def test_positions_that_do_not_fit_the_token_are_refused(positions: tuple[int, ...]) -> None:
    with pytest.raises(TokenModuleError):
        cut("x" * 20, positions)


def test_the_dummy_array_is_the_documented_one() -> None:
    text = DOCS.read_text()
    documented = re.search(r"`((?:\d+,){99}\d+)`", text)
    assert documented, "docs/nepse-api.md lists the 100 DUMMY integers"
    assert tuple(int(n) for n in documented.group(1).split(",")) == DUMMY


@given(market=st.integers(0, 99), s=salts, day=st.integers(1, 32))
def test_payload_ids_follow_the_rule_for_every_endpoint(
    market: int, s: tuple[int, int, int, int, int], day: int
) -> None:
    base = DUMMY[market] + market + 2 * day

    def signed(j: int) -> int:
        return base + s[j] * day - s[j - 1]

    assert payload_id(PayloadKind.SECURITY, market, s, day) == base
    today = payload_id(PayloadKind.TODAY_PRICE, market, s, day)
    assert today == (signed(1) if base % 10 < 5 else signed(3))
    floorsheet = payload_id(PayloadKind.FLOORSHEET, market, s, day)
    assert floorsheet == (signed(1) if base % 10 < 4 else signed(3))
    graph = payload_id(PayloadKind.GRAPH, market, s, day)
    assert graph == (signed(3) if base % 10 < 5 else signed(1))


def test_the_nepal_day_turns_at_18_15_utc() -> None:
    assert nepal_day(datetime(2026, 12, 1, 18, 14, 59, tzinfo=UTC)) == 1
    assert nepal_day(datetime(2026, 12, 1, 18, 15, 0, tzinfo=UTC)) == 2
    assert nepal_day(datetime(2026, 12, 31, 18, 15, 0, tzinfo=UTC)) == 1  # a new month too


# ------------------------------------------------------------------ the session, end to end


class Counting:
    """The demo app as an in-memory network, counting each path and answering 401 to the
    paths in `refuse` whatever the token."""

    def __init__(self, desk: TokenDesk, refuse: tuple[str, ...] = (), latency: float = 0.01):
        self.app = DemoApp(Market(seed=2, securities=12, today=TODAY), latency=0, desk=desk)
        self.seen: list[str] = []
        self.refuse = refuse
        self.latency = latency

    async def handle(self, request: httpx.Request) -> httpx.Response:
        await trio.sleep(self.latency)
        self.seen.append(request.url.path)
        if any(request.url.path.endswith(path) for path in self.refuse):
            return httpx.Response(401, text="<html>401</html>")
        return demo_response(self.app, request)

    def count(self, fragment: str) -> int:
        return sum(fragment in path for path in self.seen)


async def run_with_source(network: Counting, body, **session: Any):  # type: ignore[no-untyped-def]
    async with open_client(
        "http://demo.test", workers=8, timeout=30, transport=httpx.MockTransport(network.handle)
    ) as client:
        source = NepseSource(client, Throttle(0), session=Session(**session))
        return await body(source)


async def test_many_workers_share_one_handshake(mock_clock: MockClock) -> None:
    network = Counting(TokenDesk(ttl=60))

    async def body(source: NepseSource) -> None:
        async with trio.open_nursery() as nursery:
            for security in network.app.market.securities[:8]:
                nursery.start_soon(source.ownership, security.security_id)

    await run_with_source(network, body)
    assert network.count("/prove") == 1 and network.count("css.wasm") == 1
    assert network.count("market-open") == 1
    assert network.count("/api/nots/security/") == 8  # every POST's payload id was right


async def test_posts_queued_at_the_gate_across_midnight_in_nepal_carry_the_new_day(
    mock_clock: MockClock,
) -> None:
    """The id is computed as a request leaves the gate: six workers queued behind a
    1 request/s pace across 18:15 UTC are each answered at the first try."""
    start = datetime(2026, 12, 1, 18, 14, 57, tzinfo=UTC)

    def wall_clock() -> datetime:
        return start + timedelta(seconds=trio.current_time())

    network = Counting(TokenDesk(ttl=60, wall_clock=wall_clock))
    securities = [s.security_id for s in network.app.market.securities[:6]]
    async with open_client(
        "http://demo.test", workers=8, timeout=30, transport=httpx.MockTransport(network.handle)
    ) as client:
        gate = Throttle(0, TokenBucket(1.0, burst=1))
        source = NepseSource(client, gate, session=Session(), wall_clock=wall_clock)
        async with trio.open_nursery() as nursery:
            for security in securities:
                nursery.start_soon(source.ownership, security)
        assert nepal_day(wall_clock()) == 2  # the last ones left after midnight there
    assert network.count("/api/nots/security/") == 6  # none refused for yesterday's id
    assert network.count("/prove") == 1


async def test_a_token_is_renewed_when_it_is_older_than_the_max_age(mock_clock: MockClock) -> None:
    network = Counting(TokenDesk(ttl=60))
    security = network.app.market.securities[0].security_id

    async def body(source: NepseSource) -> int:
        for _ in range(4):
            await source.reports(security)
            await trio.sleep(20)  # 0, 20, 40: one token; 60: older than 45 s
        return source.session.handshakes

    announced: list[tuple[float, int, str]] = []

    async def announce(number: int, reason: str) -> None:
        announced.append((trio.current_time(), number, reason))

    assert await run_with_source(network, body, max_age=45, announce=announce) == 2
    assert network.count("/prove") == 2 and network.count("css.wasm") == 1  # module kept
    assert [(n, why) for _, n, why in announced] == [
        (1, "the first token"),
        (2, "the last one is 45 s old"),
    ]
    assert announced[0][0] < 1 and 60 <= announced[1][0] < 61  # when the third request went


async def test_an_expired_token_gets_one_new_handshake_for_all_workers(
    mock_clock: MockClock,
) -> None:
    network = Counting(TokenDesk(ttl=10))  # the server forgets tokens before ntx renews them
    securities = [s.security_id for s in network.app.market.securities[:6]]

    async def body(source: NepseSource) -> None:
        await source.reports(securities[0])
        await trio.sleep(15)
        async with trio.open_nursery() as nursery:
            for security in securities:
                nursery.start_soon(source.ownership, security)

    announced: list[str] = []

    async def announce(number: int, reason: str) -> None:
        announced.append(reason)

    await run_with_source(network, body, max_age=45, announce=announce)
    assert network.count("/prove") == 2  # one at the start, one for all six refused workers
    assert announced == ["the first token", "the server refused the last token"]
    assert network.count("/api/nots/security/") == 6 * 2  # refused once, then answered


async def test_a_401_right_after_a_new_token_fails_once_and_never_loops(
    mock_clock: MockClock,
) -> None:
    network = Counting(TokenDesk(ttl=60), refuse=("/application/reports/5",))

    async def body(source: NepseSource) -> None:
        with pytest.raises(TokenRefused, match="right after a new token"):
            await source.reports(5)

    await run_with_source(network, body)
    # first; after a new token; after a new token made with the module fetched again (the
    # site may have changed it); then the request fails
    assert network.count("/application/reports/5") == 3
    assert network.count("/prove") == 3 and network.count("css.wasm") == 2


async def test_a_cached_module_is_used_and_fetched_again_when_it_fails(
    mock_clock: MockClock, tmp_path: Path
) -> None:
    desk = TokenDesk(ttl=60)
    network = Counting(desk)
    stale = build_module(module_wat([((1, 2, 3, 4, 5), 50 + 10 * k) for k in range(5)]))
    cache = ModuleCache(tmp_path, "http://demo.test/")
    cache.save(stale)  # a module the site has since replaced
    async with open_client(
        "http://demo.test", workers=2, timeout=30, transport=httpx.MockTransport(network.handle)
    ) as client:
        source = NepseSource(client, Throttle(0), modules=cache)
        await source.dividends(network.app.market.securities[0].security_id)
    assert network.count("css.wasm") == 1  # the stale one was tried, then the site's fetched
    assert cache.load() == desk.wasm
