"""The floor under ntx's client figures: the throughput run's requests, made by a bare trio
client with no ntx code at all.

    .venv/bin/python bench/floor.py http://127.0.0.1:PORT --workers 16 --sleep 0

It sends the same requests as `ntx backfill --reports --dividends --ownership
--all-instruments` (the handshake, the two lists, then each dataset's path for every
security, ownership as a POST with its payload id), over the same stack ntx sends them with
(trio sockets, h11, msgspec to decode every answer, wasmtime for the token), from `--workers`
tasks that each sleep `--sleep` after every answer. One token for the whole run (the bench
serves the demo with long-lived tokens), no retries, no validation, no database, no
progress: what is left is what any trio client pays on this machine. It prints one JSON
line, {"requests": ..., "refused": ..., "elapsed": ...}, timed as ntx's summary is (after
start-up).

With `--rate R` the requests after the handshake go out evenly spaced, 1 / R apart across
all workers (each waits its turn on one shared schedule, as `--sleep auto` spaces ntx's):
against a strict limiter this is the least that timing noise costs any client on this
machine at a known pace. A refused answer (429 or 503) is counted and its request sent again
at its worker's next turn.

The protocol is done here by hand from docs/nepse-api.md (DUMMY is read from it), not with
ntx's code.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import urlsplit

import h11
import msgspec
import trio
import wasmtime

PATHS = (
    ("GET", "/api/nots/application/reports/{}"),
    ("GET", "/api/nots/application/dividend/{}"),
    ("POST", "/api/nots/security/{}"),
)
ORDERS = ((0, 1, 2, 3, 4), (0, 1, 3, 2, 4), (0, 1, 3, 2, 4), (0, 1, 3, 2, 4), (0, 1, 3, 2, 4))
NEPAL = timezone(timedelta(hours=5, minutes=45))


def documented_dummy() -> list[int]:
    doc = (Path(__file__).parent.parent / "docs" / "nepse-api.md").read_text()
    found = re.search(r"`DUMMY`.*?\n\s*`([\d,]+)`", doc, re.DOTALL)
    assert found, "docs/nepse-api.md lists DUMMY"
    return [int(n) for n in found.group(1).split(",")]


def access_token(proved: dict[str, object], wasm: bytes) -> str:
    """The access token without the five characters at the module's positions."""
    store = wasmtime.Store()
    exports = wasmtime.Instance(store, wasmtime.Module(store.engine, wasm), []).exports(store)
    salts = [proved[f"salt{i}"] for i in range(1, 6)]
    positions = {
        exports[name](store, *(salts[i] for i in order))  # type: ignore[operator]
        for name, order in zip(("cdx", "rdx", "bdx", "ndx", "mdx"), ORDERS, strict=True)
    }
    scrambled = str(proved["accessToken"])
    return "".join(c for i, c in enumerate(scrambled) if i not in positions)


class Connection:
    """One keep-alive HTTP/1.1 connection: GET a target, get the whole body back."""

    def __init__(self, stream: trio.SocketStream, host: str) -> None:
        self._stream = stream
        self._host = host
        self._h11 = h11.Connection(h11.CLIENT)
        self.token = ""

    async def get(self, target: str, method: str = "GET", body: bytes = b"") -> bytes:
        status, answer = await self.send(target, method, body)
        if status != 200:
            raise SystemExit(f"{target}: HTTP {status}")
        return answer

    async def send(self, target: str, method: str, body: bytes) -> tuple[int, bytes]:
        """The status and the whole body of one request."""
        headers = [("Host", self._host), ("Accept", "application/json")]
        if self.token:
            headers.append(("Authorization", f"Salter {self.token}"))
        if method == "POST":
            headers += [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        request = h11.Request(method=method, target=target, headers=headers)
        data = self._h11.send(request) + (self._h11.send(h11.Data(data=body)) if body else b"")
        await self._stream.send_all(data + self._h11.send(h11.EndOfMessage()))
        answer, status = bytearray(), 0
        while True:
            event = self._h11.next_event()
            if event is h11.NEED_DATA:
                self._h11.receive_data(await self._stream.receive_some(65536))
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                answer += event.data
            elif isinstance(event, h11.EndOfMessage):
                self._h11.start_next_cycle()
                return status, bytes(answer)


class Schedule:
    """Turns `1 / rate` apart, first come first served (no rate: no waiting)."""

    def __init__(self, rate: float | None) -> None:
        self._interval = 1 / rate if rate else 0.0
        self._next = -math.inf
        self._turns = trio.Lock()

    async def turn(self) -> None:
        if not self._interval:
            return
        async with self._turns:
            await trio.sleep_until(self._next)
            self._next = max(self._next, trio.current_time()) + self._interval


async def run(url: str, workers: int, sleep: float, rate: float | None) -> dict[str, float]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    started = trio.current_time()
    requests = refused = 0
    schedule = Schedule(rate)

    async def connect() -> Connection:
        return Connection(await trio.open_tcp_stream(host, port), f"{host}:{port}")

    first = await connect()
    proved = msgspec.json.decode(await first.get("/api/authenticate/prove"))
    first.token = access_token(proved, await first.get("/assets/prod/css.wasm"))
    market = msgspec.json.decode(await first.get("/api/nots/nepse-data/market-open"))["id"]
    body = json.dumps(
        {"id": documented_dummy()[market] + market + 2 * datetime.now(NEPAL).day}
    ).encode()
    msgspec.json.decode(await first.get("/api/nots/company/list"))
    securities = msgspec.json.decode(await first.get("/api/nots/security?nonDelisted=true"))
    requests += 5
    targets: Iterator[tuple[str, str]] = (
        (method, path.format(sec["id"])) for method, path in PATHS for sec in securities
    )

    async def worker() -> None:
        nonlocal requests, refused
        connection = await connect()
        connection.token = first.token
        for method, target in targets:  # one shared iterator: each target goes to one worker
            while True:
                await schedule.turn()
                status, answer = await connection.send(
                    target, method, body if method == "POST" else b""
                )
                requests += 1
                if status not in (429, 503):
                    break
                refused += 1
            if status != 200:
                raise SystemExit(f"{target}: HTTP {status}")
            msgspec.json.decode(answer)
            await trio.sleep(sleep)

    async with trio.open_nursery() as nursery:
        for _ in range(workers):
            nursery.start_soon(worker)
    return {"requests": requests, "refused": refused, "elapsed": trio.current_time() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url")
    parser.add_argument("--workers", type=int, required=True)
    parser.add_argument("--sleep", type=float, required=True)
    parser.add_argument("--rate", type=float, help="space the requests 1 / RATE apart")
    options = parser.parse_args()
    print(json.dumps(trio.run(run, options.url, options.workers, options.sleep, options.rate)))


if __name__ == "__main__":
    main()
