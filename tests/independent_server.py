"""An independent NEPSE-compatible server: not the demo, written from the API doc alone
(stdlib http.server, threads, its own data, pages capped at 100 not 500), so the client is
not fitted to the demo's quirks. Used by tests/test_independent_server.py and by the
benchmark (bench/run.py) to try ntx as a new user would.

It speaks the exchange's protocol as docs/nepse-api.md states it: `prove` hands out tokens
scrambled with its own WebAssembly module (its own functions, compiled from WAT with
wasmtime and run in the documented argument orders), every `/api/nots` request needs a live
`Salter` token (else 401 with an HTML body), `market-open` gives the payload ids' market id,
ownership is a POST whose payload id (DUMMY read from the doc itself) is checked, and a GET
of it answers the small shape. `protocol=False` makes it a plain mirror (prove answers 404).

Modes: hostile (`fault_rate`: a share of answers goes wrong in one of seven ways, `drop`
closing the connection without any answer), rate-limited (`limit`: a token bucket of that
many requests per second, bursts of as many; above it, 429 with Retry-After in whole
seconds), a history window (`window_days` before the data's last day: an older startDate
answers 500 `Searched Date is not valid.`; with `clip` the range is clipped to it silently,
as some reports say the exchange does), and a token lifetime (`token_ttl` seconds).

Prices by business date: `POST /api/nots/nepse-data/today-price?businessDate=&size=&page=`
with the signed payload id of the doc (the salts of the request's own token, the day of the
month in Nepal), every security of the day with its open, previous close, average price and
52-week range; the window as for history; an empty page for a day without a session. The
holiday list (`/api/nots/holiday/list?year=`) names most of the days the whole exchange was
closed (and some Saturdays), not all: the others answer empty.
"""

from __future__ import annotations

import json
import math
import random
import re
import socket
import ssl
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import wasmtime

PAGE_CAP = 100
FAULTS = ("429", "5xx", "reset", "drop", "truncated", "malformed", "stall")
LAST_DAY = date(2025, 6, 30)  # the data's last session
MARKET_ID = 37
NEPAL = timezone(timedelta(hours=5, minutes=45))
UNAUTHORIZED = b"<html><body><h1>401 Unauthorized</h1></body></html>"
# The five functions of this server's token module: disjoint ranges, so the positions of
# either token ascend; each depends on arguments that the documented orders move around.
MODULE_WAT = """
(module
  (func (export "cdx") (param i32 i32 i32 i32 i32) (result i32)
    (i32.add (i32.const 4) (i32.add (i32.rem_u (local.get 0) (i32.const 3))
                                     (i32.rem_u (local.get 1) (i32.const 2)))))
  (func (export "rdx") (param i32 i32 i32 i32 i32) (result i32)
    (i32.add (i32.const 10) (i32.add (i32.rem_u (local.get 2) (i32.const 3))
                                      (i32.rem_u (local.get 0) (i32.const 2)))))
  (func (export "bdx") (param i32 i32 i32 i32 i32) (result i32)
    (i32.add (i32.const 18) (i32.add (i32.rem_u (local.get 3) (i32.const 3))
                                      (i32.rem_u (local.get 4) (i32.const 2)))))
  (func (export "ndx") (param i32 i32 i32 i32 i32) (result i32)
    (i32.add (i32.const 26) (i32.rem_u (local.get 1) (i32.const 4))))
  (func (export "mdx") (param i32 i32 i32 i32 i32) (result i32)
    (i32.add (i32.const 34) (i32.add (i32.rem_u (local.get 2) (i32.const 2))
                                      (i32.rem_u (local.get 3) (i32.const 3)))))
)
"""
# argument orders of cdx, rdx, bdx, ndx, mdx (0-based salts), as the doc lists them
ACCESS = ((0, 1, 2, 3, 4), (0, 1, 3, 2, 4), (0, 1, 3, 2, 4), (0, 1, 3, 2, 4), (0, 1, 3, 2, 4))
REFRESH = ((1, 0, 2, 4, 3), (1, 0, 2, 3, 4), (1, 0, 3, 2, 4), (1, 0, 3, 2, 4), (1, 0, 3, 2, 4))


def documented_dummy() -> tuple[int, ...]:
    """The DUMMY array as docs/nepse-api.md gives it."""
    doc = (Path(__file__).parent.parent / "docs" / "nepse-api.md").read_text()
    found = re.search(r"`DUMMY`.*?\n\s*`([\d,]+)`", doc, re.DOTALL)
    assert found, "docs/nepse-api.md lists DUMMY"
    return tuple(int(n) for n in found.group(1).split(","))


class TokenModule:
    """This server's module, run with wasmtime."""

    def __init__(self) -> None:
        self.wasm = wasmtime.wat2wasm(MODULE_WAT)
        self._store = wasmtime.Store()
        instance = wasmtime.Instance(
            self._store, wasmtime.Module(self._store.engine, self.wasm), []
        )
        self._functions = [
            instance.exports(self._store)[n] for n in ("cdx", "rdx", "bdx", "ndx", "mdx")
        ]
        self._lock = threading.Lock()

    def positions(self, salts: tuple[int, ...], orders: tuple[tuple[int, ...], ...]) -> list[int]:
        with self._lock:
            return [
                function(self._store, *(salts[i] for i in order))  # type: ignore[operator]
                for function, order in zip(self._functions, orders, strict=True)
            ]


def scramble(clean: str, positions: list[int], rng: random.Random) -> str:
    """`clean` with a filler character at each of the (ascending) positions."""
    out, rest = [], iter(clean)
    for index in range(len(clean) + len(positions)):
        out.append(rng.choice("abcdef0123456789") if index in positions else next(rest))
    return "".join(out)


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
        days = random.Random(seed + 1)
        self.closed: set[date] = set()  # days the whole exchange did not trade
        self.holidays: dict[date, str] = {}  # the published list: most closures, and more
        day = date(2020, 6, 1)
        while day <= LAST_DAY + timedelta(days=400):
            if days.random() < 0.04:
                if day.weekday() in (6, 0, 1, 2, 3):
                    self.closed.add(day)
                if days.random() < 0.8:
                    self.holidays[day] = f"Holiday {len(self.holidays) + 1}"
            day += timedelta(days=1)
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
            while history and day <= LAST_DAY:
                if (
                    day.weekday() in (6, 0, 1, 2, 3)
                    and day not in self.closed
                    and rng.random() > 0.05
                ):
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

    def day_rows(self, day: date) -> list[dict[str, Any]]:
        """The by-date answer's rows for `day`: every security that traded, by symbol."""
        rows = []
        for listed in sorted(self.securities, key=lambda s: s["symbol"]):
            history = self.history[listed["id"]]  # newest first
            at = next((i for i, r in enumerate(history) if r["businessDate"] == str(day)), None)
            if at is None:
                continue
            r = history[at]
            year = [
                x
                for x in history[at:]
                if date.fromisoformat(x["businessDate"]) > day - timedelta(days=365)
            ]
            rows.append(
                {
                    "id": len(rows) + 1,
                    "businessDate": r["businessDate"],
                    "securityId": listed["id"],
                    "symbol": listed["symbol"],
                    "securityName": listed["securityName"],
                    "openPrice": round(r["lowPrice"] + (r["highPrice"] - r["lowPrice"]) * 0.3, 2),
                    "highPrice": r["highPrice"],
                    "lowPrice": r["lowPrice"],
                    "closePrice": r["closePrice"],
                    "totalTradedQuantity": r["totalTradedQuantity"],
                    "totalTradedValue": r["totalTradedValue"],
                    "previousDayClosePrice": history[at + 1]["closePrice"]
                    if at + 1 < len(history)
                    else None,
                    "fiftyTwoWeekHigh": max(x["highPrice"] for x in year),
                    "fiftyTwoWeekLow": min(x["lowPrice"] for x in year),
                    "lastUpdatedTime": f"{r['businessDate']}T15:00:00",
                    "lastUpdatedPrice": r["closePrice"],
                    "totalTrades": r["totalTrades"],
                    "averageTradedPrice": round(
                        r["totalTradedValue"] / r["totalTradedQuantity"], 2
                    ),
                    "marketCapitalization": None,
                }
            )
        return rows


class Raw:
    """An answer body that is not JSON."""

    def __init__(self, data: bytes, content_type: str) -> None:
        self.data = data
        self.content_type = content_type


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
    protocol = True  # the handshake, tokens and payload ids; False: a plain mirror
    token_ttl = 60.0
    window_days: int | None = None
    clip = False  # clip a start before the window silently instead of answering 500
    module: TokenModule
    dummy: tuple[int, ...]
    issued: dict[str, tuple[float, tuple[int, ...]]]  # clean token -> (issued when, salts)
    handshakes = 0

    def do_GET(self) -> None:
        self.serve("GET", b"")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.serve("POST", self.rfile.read(length) if length else b"")

    def serve(self, method: str, body: bytes) -> None:
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
            status, answer = self.route(method, body)
            raw = isinstance(answer, Raw)
            payload = answer.data if isinstance(answer, Raw) else json.dumps(answer).encode()
            content_type = answer.content_type if isinstance(answer, Raw) else "application/json"
            if retry_after is not None:
                fault = None
                status, payload = 429, b'{"error": "rate limit exceeded"}'
            if fault is not None:
                cls.faults.append(fault)
                status, payload = self.misbehave(fault, status, payload)
                if status == 0:
                    return
            self.send_response(status)
            self.send_header("Content-Type", content_type if raw else "application/json")
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
        if fault == "drop":  # closed without a byte of answer, as a busy server does
            self.answered()
            self.connection.close()
            self.close_connection = True
            return 0, b""
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

    def route(self, method: str, body: bytes) -> tuple[int, Any]:
        cls = type(self)
        url = urlsplit(self.path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        parts = url.path.strip("/").split("/")
        ex = self.exchange
        if url.path == "/api/authenticate/prove":
            return (200, self.prove()) if cls.protocol else (404, {"error": "no such page"})
        if url.path == "/assets/prod/css.wasm":
            if not cls.protocol:
                return 404, {"error": "no such page"}
            return 200, Raw(cls.module.wasm, "application/wasm")
        if cls.protocol and not self.authorized():
            return 401, Raw(UNAUTHORIZED, "text/html")
        post_only = url.path.startswith(("/api/nots/security/", "/api/nots/nepse-data/today-"))
        if method == "POST" and not post_only:
            return 405, {"error": "method not allowed"}
        if url.path == "/api/nots/nepse-data/market-open":
            return 200, {"isOpen": "CLOSE", "asOf": f"{LAST_DAY}T15:00:00", "id": MARKET_ID}
        if url.path == "/api/nots/holiday/list":
            year = int(q["year"])
            return 200, [
                {"holidayDate": str(day), "holidayDescription": name}
                for day, name in sorted(ex.holidays.items())
                if day.year == year
            ]
        if url.path == "/api/nots/nepse-data/today-price":
            if cls.protocol and method == "GET":
                return 405, {"error": "method not allowed"}
            if cls.protocol and self.payload_id(body) != self.signed_id():
                return 401, Raw(UNAUTHORIZED, "text/html")
            day = date.fromisoformat(q["businessDate"]) if "businessDate" in q else LAST_DAY
            window = LAST_DAY - timedelta(days=cls.window_days or 0)
            if cls.window_days is not None and day < window:
                return 500, Raw(b"Searched Date is not valid.", "text/plain")
            rows = ex.day_rows(day) if day <= LAST_DAY else []
            size, page = min(int(q.get("size", 20)), PAGE_CAP), int(q.get("page", 0))
            return 200, {
                "totalElements": len(rows),
                "content": rows[page * size : (page + 1) * size],
                "totalPages": -(-len(rows) // size),
            }
        if url.path == "/api/nots/company/list":
            return 200, ex.companies
        if url.path == "/api/nots/security":
            return 200, ex.securities
        sid = int(parts[-1]) if parts[-1].isdigit() else -1
        if sid not in ex.history:
            return 404, {"error": "no such security"}
        if "/market/history/" in url.path:
            lo, hi = date.fromisoformat(q["startDate"]), date.fromisoformat(q["endDate"])
            window = LAST_DAY - timedelta(days=cls.window_days or 0)
            if cls.window_days is not None and lo < window:
                if not cls.clip:
                    return 500, Raw(b"Searched Date is not valid.", "text/plain")
                lo = window
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
        if cls.protocol and method == "GET":  # the detail without ownership
            return 200, {"securityData": {"id": sid}, "securityMcsData": {"securityId": sid}}
        if cls.protocol and self.payload_id(body) != self.expected_id():
            return 401, Raw(UNAUTHORIZED, "text/html")
        return 200, ex.detail[sid]

    def prove(self) -> dict[str, Any]:
        """A new token, scrambled with the module at the documented positions."""
        cls = type(self)
        rng = random.Random()
        salts = tuple(rng.randrange(10000, 99999) for _ in range(5))
        clean = "".join(rng.choice("0123456789abcdef") for _ in range(40))
        with cls.lock:
            cls.issued[clean] = (time.monotonic(), salts)
            cls.handshakes += 1
        refresh = "".join(rng.choice("0123456789abcdef") for _ in range(40))
        return {
            "serverTime": int(time.time() * 1000),
            "salt": "",
            "accessToken": scramble(clean, cls.module.positions(salts, ACCESS), rng),
            "refreshToken": scramble(refresh, cls.module.positions(salts, REFRESH), rng),
            "tokenType": "Salter",
            "isDisplayActive": False,
            "popupDocFor": None,
            **{f"salt{i}": salt for i, salt in enumerate(salts, 1)},
        }

    def authorized(self) -> bool:
        cls = type(self)
        scheme, _, token = (self.headers.get("Authorization") or "").partition(" ")
        with cls.lock:
            issued = cls.issued.get(token)
        return (
            scheme == "Salter"
            and issued is not None
            and (time.monotonic() - issued[0] < cls.token_ttl)
        )

    def signed_id(self) -> int:
        """The today-price POST's body id: base + S[j] * D - S[j - 1], with S the salts of
        the token this request carries, j = 1 if base % 10 < 5 else 3."""
        cls = type(self)
        token = (self.headers.get("Authorization") or "").partition(" ")[2]
        with cls.lock:
            salts = cls.issued[token][1]
        day = datetime.now(NEPAL).day
        base = cls.dummy[MARKET_ID] + MARKET_ID + 2 * day
        j = 1 if base % 10 < 5 else 3
        return int(base + salts[j] * day - salts[j - 1])

    def expected_id(self) -> int:
        """The ownership POST's body id: DUMMY[m] + m + 2 * the day of month in Nepal."""
        day = datetime.now(NEPAL).day
        return type(self).dummy[MARKET_ID] + MARKET_ID + 2 * day

    @staticmethod
    def payload_id(body: bytes) -> object:
        try:
            sent = json.loads(body or b"null")
        except ValueError:
            return None
        return sent.get("id") if isinstance(sent, dict) else None

    def log_message(self, *args: object) -> None:
        pass


class Server(ThreadingHTTPServer):
    # A listen backlog like a production server's: the stdlib's default of 5 drops the SYNs
    # of a burst of new connections, which the client sees as 1 s (SYN retry) latencies.
    request_queue_size = 128
    daemon_threads = True


@contextmanager
def running(
    exchange: Exchange,
    *,
    limit: float | None = None,
    latency: float = 0.005,
    protocol: bool = True,
    token_ttl: float = 60.0,
    window_days: int | None = None,
    clip: bool = False,
    tls: ssl.SSLContext | None = None,
) -> Iterator[tuple[str, type[Handler]]]:
    """Serve `exchange` on 127.0.0.1 (a free port) in a thread, over TLS with `tls` (a
    server context): yields (URL, handler class, whose class attributes record what the
    server saw)."""
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
            "protocol": protocol,
            "token_ttl": token_ttl,
            "window_days": window_days,
            "clip": clip,
            "module": TokenModule(),
            "dummy": documented_dummy(),
            "issued": {},
            "handshakes": 0,
        },
    )
    server = Server(("127.0.0.1", 0), handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()
