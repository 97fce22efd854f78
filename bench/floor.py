"""The floor under ntx's client figures: the throughput run's requests, made by a bare trio
client with no ntx code at all.

    .venv/bin/python bench/floor.py http://127.0.0.1:PORT --workers 16 --sleep 0

It sends the same GETs as `ntx backfill --reports --dividends --ownership --all-instruments`
(the two lists, then each dataset's path for every security), over the same stack ntx sends
them with (trio sockets, h11, msgspec to decode every answer), from `--workers` tasks that
each sleep `--sleep` after every answer. No retries, no validation, no database, no progress:
what is left is what any trio client pays on this machine. It prints one JSON line,
{"requests": ..., "elapsed": ...}, timed as ntx's summary is (after start-up).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from urllib.parse import urlsplit

import h11
import msgspec
import trio

PATHS = (
    "/api/nots/application/reports/{}",
    "/api/nots/application/dividend/{}",
    "/api/nots/security/{}",
)


class Connection:
    """One keep-alive HTTP/1.1 connection: GET a target, get the whole body back."""

    def __init__(self, stream: trio.SocketStream, host: str) -> None:
        self._stream = stream
        self._host = host
        self._h11 = h11.Connection(h11.CLIENT)

    async def get(self, target: str) -> bytes:
        request = h11.Request(
            method="GET",
            target=target,
            headers=[("Host", self._host), ("Accept", "application/json")],
        )
        await self._stream.send_all(self._h11.send(request) + self._h11.send(h11.EndOfMessage()))
        body = bytearray()
        while True:
            event = self._h11.next_event()
            if event is h11.NEED_DATA:
                self._h11.receive_data(await self._stream.receive_some(65536))
            elif isinstance(event, h11.Response) and event.status_code != 200:
                raise SystemExit(f"{target}: HTTP {event.status_code}")
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                self._h11.start_next_cycle()
                return bytes(body)


async def run(url: str, workers: int, sleep: float) -> dict[str, float]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    started = trio.current_time()
    requests = 0

    async def connect() -> Connection:
        return Connection(await trio.open_tcp_stream(host, port), f"{host}:{port}")

    first = await connect()
    msgspec.json.decode(await first.get("/api/nots/company/list"))
    securities = msgspec.json.decode(await first.get("/api/nots/security?nonDelisted=true"))
    requests += 2
    targets: Iterator[str] = (path.format(sec["id"]) for path in PATHS for sec in securities)

    async def worker() -> None:
        nonlocal requests
        connection = await connect()
        for target in targets:  # one shared iterator: each target goes to one worker
            msgspec.json.decode(await connection.get(target))
            requests += 1
            await trio.sleep(sleep)

    async with trio.open_nursery() as nursery:
        for _ in range(workers):
            nursery.start_soon(worker)
    return {"requests": requests, "elapsed": trio.current_time() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url")
    parser.add_argument("--workers", type=int, required=True)
    parser.add_argument("--sleep", type=float, required=True)
    options = parser.parse_args()
    print(json.dumps(trio.run(run, options.url, options.workers, options.sleep)))


if __name__ == "__main__":
    main()
