"""A hostile API on demand: the demo exchange with injected faults.

`FaultyApp` wraps the demo app. Each request, with probability `rate`, gets one of the enabled
faults (each kind in turn) instead of, or before, its answer:

| fault       | what the client sees                                                   |
|-------------|------------------------------------------------------------------------|
| `429`       | 429 Too Many Requests with Retry-After, in seconds or as an HTTP date  |
| `5xx`       | 500, 502 or 503                                                        |
| `reset`     | the connection dies in the middle of the answer                        |
| `drop`      | the connection is closed before any of the body, as the exchange does  |
|             | to a client that bursts (hypercorn always sends a status line first)   |
| `truncated` | status 200 and half of the JSON                                        |
| `malformed` | status 200 and JSON of the wrong shape                                 |
| `stall`     | the right answer, 2.5 s late                                           |
"""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import trio

from ntx.demo.app import (
    DemoApp,
    InjectedReset,
    Receive,
    Scope,
    Send,
    drop_connection,
    encode,
    headers_of,
    read_body,
    send_json,
)
from ntx.demo.limits import make_limit
from ntx.demo.market import Market
from ntx.demo.options import FAULTS, DemoOptions
from ntx.demo.protocol import TokenDesk

STALL_SECONDS = 2.5


class FaultyApp:
    """The demo app, failing a share `rate` of requests in the ways named by `kinds`."""

    def __init__(
        self, app: DemoApp, rate: float, kinds: tuple[str, ...] = FAULTS, seed: int = 0
    ) -> None:
        self.app = app
        self.rate = rate
        self.kinds = kinds
        self.injected: Counter[str] = Counter()
        self._rng = random.Random(seed)

    @property
    def market(self) -> Any:
        return self.app.market

    @property
    def latency(self) -> float:
        return self.app.latency

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._rng.random() >= self.rate:
            await self.app(scope, receive, send)
            return
        kind = self.kinds[sum(self.injected.values()) % len(self.kinds)]  # every kind in turn
        self.injected[kind] += 1
        if kind == "stall":
            await trio.sleep(STALL_SECONDS)
            await self.app(scope, receive, send)
            return
        await trio.sleep(self.app.latency)
        if kind == "429":
            if self._rng.random() < 0.5:
                retry_after = "1"
            else:
                retry_after = format_datetime(datetime.now(UTC) + timedelta(seconds=2), usegmt=True)
            await send_json(
                send,
                429,
                b'{"message":"Too Many Requests"}',
                [(b"retry-after", retry_after.encode())],
            )
        elif kind == "5xx":
            await send_json(send, self._rng.choice((500, 502, 503)), b'{"message":"Server Error"}')
        elif kind == "drop":
            await drop_connection(send)
        elif kind == "malformed":
            await send_json(send, 200, b'{"status":"ok","data":"maintenance"}')
        else:
            status, body = self.app.answer(
                scope["method"],
                scope["path"],
                scope.get("query_string", b""),
                headers_of(scope),
                await read_body(receive),
            )
            payload = encode(body)
            if kind == "truncated":
                await send_json(send, status, payload[: len(payload) // 2])
            else:  # reset: promise the whole body, send half, drop the connection
                headers = [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                ]
                await send({"type": "http.response.start", "status": status, "headers": headers})
                await send(
                    {
                        "type": "http.response.body",
                        "body": payload[: len(payload) // 2],
                        "more_body": True,
                    }
                )
                raise InjectedReset("connection reset (injected)")


def build_demo_app(options: DemoOptions, today: date | None = None) -> DemoApp | FaultyApp:
    """The demo exchange of `ntx demo serve` and `ntx backfill --demo` alike."""
    market = Market(options.seed, options.securities, today=options.today or today)
    desk = TokenDesk(ttl=options.token_ttl, seed=options.seed)
    limit = (
        make_limit(options.limiter, options.rate_limit, options.burst)
        if options.rate_limit
        else None
    )
    app = DemoApp(
        market,
        options.latency_ms / 1000,
        limit,
        desk,
        refuse=options.refuse,
        window_days=options.window_days or None,
    )
    if options.fail_rate <= 0:
        return app
    return FaultyApp(app, options.fail_rate, options.faults or FAULTS, seed=options.seed)
