"""An independent NEPSE-compatible server: not the demo, written from the API doc alone
(stdlib http.server, threads, its own data, pages capped at 100 not 500), so the client is
not fitted to the demo's quirks. Used by tests/test_independent_server.py and by the
benchmark (bench/run.py) to try ntx as a new user would.

Modes: hostile (`fault_rate`: a share of answers goes wrong in one of six ways) and
rate-limited (`limit`: a token bucket of that many requests per second, bursts of as many;
above it, 429 with Retry-After in whole seconds).
"""

from __future__ import annotations

import json
import math
import random
import socket
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

PAGE_CAP = 100
FAULTS = ("429", "5xx", "reset", "truncated", "malformed", "stall")


class Exchange:
    """Random but fixed data for a handful of securities with multi-year histories."""

    def __init__(self, seed: int = 99, securities: int = 12, history: bool = True) -> None:
        rng = random.Random(seed)
        self.companies = []
        self.securities = []
        self.history: dict[int, list[dict[str, Any]]] = {}
        self.reports: dict[int, list[dict[str, Any]]] = {}
        self.dividends: dict[int, list[dict[str, Any]]] = {}
        self.detail: dict[int, dict[str, Any]] = {}
        for n in range(securities):
            sid, symbol = 5000 + n * 7, f"IND{n:02d}"
            kind = "Equity" if n % 4 else "Mutual Fund"
            self.companies.append(
                {
                    "instrumentType": kind,
                    "status": "A" if n != 5 else "S",
                    "symbol": symbol,
                    "id": 70 + n,
                    "companyName": f"Independent {n}",
                    "sectorName": "Others",
                    "securityName": f"Independent {n} Ltd",
                    "companyEmail": None,
                    "website": None,
                    "regulatoryBody": "SEBON",
                }
            )
            self.securities.append(
                {"activeStatus": "A", "id": sid, "symbol": symbol, "securityName": f"Ind {n}"}
            )
            day, rows = date(2020, 6, 1), []
            while history and day <= date(2025, 6, 30):
                if day.weekday() in (6, 0, 1, 2, 3) and rng.random() > 0.05:
                    low = round(rng.uniform(100, 900), 2)
                    rows.append(
                        {
                            "businessDate": day.isoformat(),
                            "lowPrice": low,
                            "highPrice": round(low * 1.04, 2),
                            "closePrice": round(low * 1.02, 2),
                            "totalTradedQuantity": float(rng.randrange(1, 9999)),
                            "totalTradedValue": round(rng.uniform(1e4, 1e7), 2),
                            "totalTrades": rng.randrange(1, 500),
                        }
                    )
                day += timedelta(days=1)
            self.history[sid] = rows[::-1]
            self.reports[sid] = [
                {
                    "id": 1,
                    "modifiedDate": "2024-01-01T00:00:00",
                    "fiscalReport": {
                        "financialYear": {"fyName": "2080/2081"},
                        "quarterMaster": {"id": 2, "quarterName": "Second Quarter"},
                        "epsValue": 12.5,
                        "peValue": 20.0,
                        "netWorthPerShare": 150.0,
                        "paidUpCapital": 1e9,
                        "profitAmount": 1e8,
                    },
                },
                {"id": 2, "modifiedDate": "2024-09-01T00:00:00", "fiscalReport": None},
            ]
            self.dividends[sid] = [
                {
                    "id": 3,
                    "companyNews": {
                        "dividendsNotice": {
                            "financialYear": {"fyName": "2079/2080"},
                            "cashDividend": 5.0,
                            "bonusShare": 0.0,
                            "rightShare": None,
                        }
                    },
                }
            ]
            self.detail[sid] = {
                "stockListedShares": 1e6,
                "paidUpCapital": 1e8,
                "publicShares": 400000,
                "publicPercentage": 40.0,
                "promoterShares": 600000.0,
                "promoterPercentage": 60.0,
            }


class Handler(BaseHTTPRequestHandler):
    exchange: Exchange
    log: list[tuple[float, float, str]]
    lock = threading.Lock()
    in_flight = 0
    max_in_flight = 0
    fault_rate = 0.0  # hostile mode: this share of answers goes wrong
    faults: list[str]
    statuses: list[int]  # each answer's status, in the order of `log`
    rng = random.Random(5)
    limit: float | None = None  # rate-limited mode: requests per second
    tokens = 0.0
    stamp = 0.0
    latency = 0.005
    counted = False  # this request is in `in_flight`

    def do_GET(self) -> None:
        cls = type(self)
        started = time.monotonic()
        with cls.lock:
            cls.in_flight += 1
            cls.max_in_flight = max(cls.max_in_flight, cls.in_flight)
            self.counted = True
            fault = cls.rng.choice(FAULTS) if cls.rng.random() < cls.fault_rate else None
            retry_after = cls.take_token(started)
        status = 0  # 0: no answer (the connection was reset)
        try:
            time.sleep(cls.latency)
            status, body = self.route()
            payload = json.dumps(body).encode()
            if retry_after is not None:
                fault = None
                status, payload = 429, b'{"error": "rate limit exceeded"}'
            if fault is not None:
                cls.faults.append(fault)
                status, payload = self.misbehave(fault, status, payload)
                if status == 0:
                    return
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            if status == 429:
                self.send_header("Retry-After", str(retry_after or 1))
            self.end_headers()
            self.answered()
            self.wfile.write(payload)
        finally:
            self.answered()
            with cls.lock:
                cls.log.append((started, time.monotonic(), self.path))
                cls.statuses.append(status)

    def answered(self) -> None:
        """The request leaves `in_flight` (once): called just before the last bytes of its
        answer (or the reset) go out, since from then on the client may send its next request
        while this thread has not yet run its bookkeeping."""
        if self.counted:
            self.counted = False
            with type(self).lock:
                type(self).in_flight -= 1

    @classmethod
    def take_token(cls, now: float) -> int | None:
        """Rate-limited mode: None if the request may go on, else Retry-After in seconds."""
        if cls.limit is None:
            return None
        cls.tokens = min(cls.limit, cls.tokens + (now - cls.stamp) * cls.limit)
        cls.stamp = now
        if cls.tokens >= 1:
            cls.tokens -= 1
            return None
        return max(1, math.ceil((1 - cls.tokens) / cls.limit))

    def misbehave(self, fault: str, status: int, payload: bytes) -> tuple[int, bytes]:
        """The answer a hostile server gives instead; status 0 means the socket is gone."""
        if fault == "429":
            return 429, b'{"error": "slow down"}'
        if fault == "5xx":
            return self.rng.choice((500, 502, 503)), b"<html>Bad Gateway</html>"
        if fault == "truncated":
            return status, payload[: len(payload) // 3]
        if fault == "malformed":
            return status, b'{"maintenance": true}'
        if fault == "stall":
            time.sleep(2.5)
            return status, payload
        # reset: a TCP RST halfway through the body
        self.send_response(status)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload[: len(payload) // 2])
        self.wfile.flush()
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.answered()
        self.connection.close()
        self.close_connection = True
        return 0, b""

    def route(self) -> tuple[int, Any]:
        url = urlsplit(self.path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        parts = url.path.strip("/").split("/")
        ex = self.exchange
        if url.path == "/api/nots/company/list":
            return 200, ex.companies
        if url.path == "/api/nots/security":
            return 200, ex.securities
        sid = int(parts[-1]) if parts[-1].isdigit() else -1
        if sid not in ex.history:
            return 404, {"error": "no such security"}
        if "/market/history/" in url.path:
            lo, hi = date.fromisoformat(q["startDate"]), date.fromisoformat(q["endDate"])
            rows = [r for r in ex.history[sid] if lo <= date.fromisoformat(r["businessDate"]) <= hi]
            size, page = min(int(q.get("size", 20)), PAGE_CAP), int(q.get("page", 0))
            return 200, {
                "totalElements": len(rows),
                "content": rows[page * size : (page + 1) * size],
                "totalPages": -(-len(rows) // size),
            }
        if "/reports/" in url.path:
            return 200, ex.reports[sid]
        if "/dividend/" in url.path:
            return 200, ex.dividends[sid]
        return 200, ex.detail[sid]

    def log_message(self, *args: object) -> None:
        pass


class Server(ThreadingHTTPServer):
    # A listen backlog like a production server's: the stdlib's default of 5 drops the SYNs
    # of a burst of new connections, which the client sees as 1 s (SYN retry) latencies.
    request_queue_size = 128
    daemon_threads = True


@contextmanager
def running(
    exchange: Exchange, *, limit: float | None = None, latency: float = 0.005
) -> Iterator[tuple[str, type[Handler]]]:
    """Serve `exchange` on 127.0.0.1 (a free port) in a thread: yields (URL, handler class,
    whose class attributes record what the server saw)."""
    handler = type(
        "H",
        (Handler,),
        {
            "exchange": exchange,
            "log": [],
            "statuses": [],
            "in_flight": 0,
            "max_in_flight": 0,
            "lock": threading.Lock(),
            "faults": [],
            "rng": random.Random(5),
            "limit": limit,
            "tokens": float(limit or 0),
            "stamp": time.monotonic(),
            "latency": latency,
        },
    )
    server = Server(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()
