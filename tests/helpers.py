"""Test helpers: a recording wrapper around the demo app, a fake network for MockClock
tests, and the database-versus-oracle comparison."""

from __future__ import annotations

import atexit
import inspect
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
import trio

from ntx.db import schema
from ntx.demo.app import DemoApp, content_type, encode, headers_of, read_body
from ntx.demo.market import Market
from ntx.model import DateRange

REPO = Path(__file__).resolve().parents[1]
TODAY = date(2026, 6, 30)  # the test market's "today": a fixed day keeps the oracle fixed
TABLES = ("securities", "prices", "reports", "dividends", "ownership")


def backfill_args(url: str, db: Path, *extra: str) -> list[str]:
    """`backfill` against `url` into `db`, unthrottled, with plain output, and `extra`."""
    return [
        "backfill",
        "--api",
        url,
        "--db",
        str(db),
        "--sleep",
        "0",
        "--progress",
        "plain",
        *extra,
    ]


@dataclass
class Seen:
    """One request as the server saw it (times on the server's trio clock)."""

    method: str
    path: str
    query: str
    started: float
    finished: float = 0.0
    status: int = 0


@dataclass
class RecordingApp:
    """ASGI wrapper: records every request and the most requests ever in flight at once.

    `fail` maps a path to the status to answer instead of the demo's answer.
    """

    app: DemoApp
    seen: list[Seen] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    fail: dict[str, int] = field(default_factory=dict)
    rewrite: dict[str, Any] = field(default_factory=dict)  # path -> function of the JSON body

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        record = Seen(
            scope["method"], scope["path"], scope["query_string"].decode(), trio.current_time()
        )
        self.seen.append(record)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)

        async def recording_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                record.status = message["status"]
            await send(message)

        try:
            if scope["path"] in self.rewrite:
                status, body = self.app.answer(
                    scope["method"],
                    scope["path"],
                    scope["query_string"],
                    headers_of(scope),
                    await read_body(receive),
                )
                payload = json.dumps(self.rewrite[scope["path"]](body)).encode()  # NaN stays NaN
                record.status = status
                await send({"type": "http.response.start", "status": status, "headers": []})
                await send({"type": "http.response.body", "body": payload})
            elif scope["path"] in self.fail:
                await trio.sleep(self.app.latency)
                record.status = self.fail[scope["path"]]
                await send({"type": "http.response.start", "status": record.status, "headers": []})
                await send({"type": "http.response.body", "body": b"{}"})
            else:
                await self.app(scope, receive, recording_send)
        finally:
            self.in_flight -= 1
            record.finished = trio.current_time()

    def paths(self, fragment: str) -> list[Seen]:
        return [s for s in self.seen if fragment in s.path]


def mock_network(
    market: Market,
    latency: float,
    log: list[tuple[float, float]] | None = None,
    fail: dict[str, int] | None = None,
    paths: list[str] | None = None,
) -> httpx.MockTransport:
    """The demo exchange as an in-memory transport with fixed latency (for MockClock tests).

    `log` receives (start, end) of every request on trio's clock, and `paths` its path.
    """
    app = DemoApp(market, latency=0)
    state = {"in_flight": 0, "max": 0}

    async def handler(request: httpx.Request) -> httpx.Response:
        started = trio.current_time()
        state["in_flight"] += 1
        state["max"] = max(state["max"], state["in_flight"])
        try:
            await trio.sleep(latency)
        finally:
            state["in_flight"] -= 1
        if log is not None:
            log.append((started, trio.current_time()))
        if paths is not None:
            paths.append(request.url.path)
        if fail and request.url.path in fail:
            return httpx.Response(fail[request.url.path], json={})
        return demo_response(app, request)

    transport = httpx.MockTransport(handler)
    transport.state = state  # type: ignore[attr-defined]
    return transport


Handler = Callable[[httpx.Request], Any]


def tokenless(handler: Handler) -> httpx.MockTransport:
    """A server without NEPSE's handshake (a plain mirror): `prove` answers 404 and every
    other request goes to `handler` (sync or async)."""

    async def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/api/authenticate/prove"):
            return httpx.Response(404, text="Not Found")
        answer = handler(request)
        return await answer if inspect.isawaitable(answer) else answer  # type: ignore[no-any-return]

    return httpx.MockTransport(handle)


def demo_response(app: DemoApp, request: httpx.Request) -> httpx.Response:
    """The demo app's answer to an httpx request (for `httpx.MockTransport` handlers)."""
    headers = {k.lower(): v for k, v in request.headers.items()}
    status, body = app.answer(
        request.method, request.url.path, request.url.query, headers, request.content
    )
    return httpx.Response(
        status, content=encode(body), headers={"content-type": content_type(body).decode()}
    )


def table(db: Path, name: str) -> list[tuple[Any, ...]]:
    """All rows of a dataset table in key order."""
    spec = next(t for t in schema.TABLES.values() if t.name == name)
    with sqlite3.connect(db) as conn:
        return conn.execute(
            f"SELECT {', '.join(spec.columns)} FROM {name} ORDER BY {', '.join(spec.key)}"
        ).fetchall()


def expected_by_date(market: Market, period: DateRange) -> list[tuple[Any, ...]]:
    """What a correct by-date price backfill of `period` stores: every security's row of
    every session, opens included, in key order."""
    rows = []
    day = period.start
    while day <= min(period.end, market.today):
        if market.is_trading_day(day):
            rows.extend(market.expected_day(day))
        day += timedelta(days=1)
    return sorted(rows)


def expected_tables(
    market: Market, period: DateRange, universe: list[int], by: str = "security"
) -> dict[str, list[tuple[Any, ...]]]:
    """What a correct backfill of `universe` over `period` stores, in key order, with
    prices fetched `by` security or by date."""
    prices = (
        expected_by_date(market, period)
        if by == "date"
        else sorted(row for sid in universe for row in market.expected_prices(sid, period))
    )
    return {
        "securities": sorted(market.expected_securities()),
        "prices": prices,
        "reports": sorted(row for sid in universe for row in market.expected_reports(sid)),
        "dividends": sorted(row for sid in universe for row in market.expected_dividends(sid)),
        "ownership": sorted(market.expected_ownership(sid) for sid in universe),
    }


def default_universe(market: Market) -> list[int]:
    return [
        s.security_id
        for s in market.securities
        if s.instrument_type == "Equity" and s.status == "A"
    ]


TEST_CACHE = tempfile.mkdtemp(prefix="ntx-test-cache-")
atexit.register(shutil.rmtree, TEST_CACHE, True)


def ntx_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NTX_")}
    env["NTX_CONFIG"] = ""
    env["XDG_CONFIG_HOME"] = "/nonexistent-ntx-test-config"
    env["XDG_CACHE_HOME"] = TEST_CACHE  # the token module cache, never the user's
    env["PYTHONPATH"] = str(REPO)
    return env


def run_ntx(
    *args: str, cwd: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """`ntx ARGS` as a real subprocess (blocking; for sync tests)."""
    return subprocess.run(
        [sys.executable, "-m", "ntx", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=ntx_env(),
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


async def run_ntx_async(
    *args: str, cwd: Path | None = None, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`ntx ARGS` as a real subprocess, awaited from a trio test (the server keeps serving);
    `env` adds to the test environment."""
    result = await trio.run_process(
        [sys.executable, "-m", "ntx", *args],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        cwd=cwd,
        env={**ntx_env(), **(env or {})},
        stdin=subprocess.DEVNULL,
    )
    return subprocess.CompletedProcess(
        result.args, result.returncode, result.stdout.decode(), result.stderr.decode()
    )


def spawn_ntx(args: list[str], **popen: Any) -> subprocess.Popen[str]:
    """`ntx ARGS` started as a subprocess with its output piped (the caller waits for it)."""
    return subprocess.Popen(
        [sys.executable, "-m", "ntx", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=ntx_env(),
        **popen,
    )


def run_and_signal(
    args: list[str],
    *,
    after: str,
    signals: list[int],
    gap: float = 0.0,
    **popen: Any,
) -> subprocess.CompletedProcess[str]:
    """`ntx ARGS` as a subprocess; once a stdout line matches the regex `after`, send `signals`.

    Blocking: call it through `trio.to_thread.run_sync` from a trio test.
    """
    import re
    import time

    proc = spawn_ntx(args, **popen)
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if re.search(after, line):
            break
    for number in signals:
        proc.send_signal(number)
        time.sleep(gap)
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, "".join(seen) + out, err)
