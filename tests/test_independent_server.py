"""Against an independent NEPSE-compatible server: not the demo, written from the API doc
alone (stdlib http.server, threads, its own data, pages capped at 100 not 500), so the
client is not fitted to the demo's quirks. Observed from the server: exact data, at most
--workers requests in flight, and --sleep between one answer and the next request."""

from __future__ import annotations

import json
import random
import socket
import sqlite3
import struct
import threading
import time
from collections.abc import Iterator
from datetime import date, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import pairwise
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.helpers import run_ntx

PAGE_CAP = 100
FAULTS = ("429", "5xx", "reset", "truncated", "malformed", "stall")


class Exchange:
    """Random but fixed data for a handful of securities with multi-year histories."""

    def __init__(self, seed: int = 99) -> None:
        rng = random.Random(seed)
        self.companies = []
        self.securities = []
        self.history: dict[int, list[dict[str, Any]]] = {}
        self.reports: dict[int, list[dict[str, Any]]] = {}
        self.dividends: dict[int, list[dict[str, Any]]] = {}
        self.detail: dict[int, dict[str, Any]] = {}
        for n in range(12):
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
            while day <= date(2025, 6, 30):
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
    rng = random.Random(5)

    def do_GET(self) -> None:
        cls = type(self)
        with cls.lock:
            cls.in_flight += 1
            cls.max_in_flight = max(cls.max_in_flight, cls.in_flight)
            fault = cls.rng.choice(FAULTS) if cls.rng.random() < cls.fault_rate else None
        started = time.monotonic()
        try:
            time.sleep(0.005)
            status, body = self.route()
            payload = json.dumps(body).encode()
            if fault is not None:
                cls.faults.append(fault)
                status, payload = self.misbehave(fault, status, payload)
                if status == 0:
                    return
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            if status == 429:
                self.send_header("Retry-After", "1")
            self.end_headers()
            self.wfile.write(payload)
        finally:
            with cls.lock:
                cls.in_flight -= 1
                cls.log.append((started, time.monotonic(), self.path))

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


@pytest.fixture
def independent() -> Iterator[tuple[str, type[Handler]]]:
    handler = type(
        "H",
        (Handler,),
        {
            "exchange": Exchange(),
            "log": [],
            "in_flight": 0,
            "max_in_flight": 0,
            "lock": threading.Lock(),
            "faults": [],
            "rng": random.Random(5),
        },
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


ARGS = (
    "--from",
    "2021-01-01",
    "--to",
    "2025-06-30",
    "--workers",
    "4",
    "--sleep",
    "0",
    "--progress",
    "plain",
)


def expected(ex: Exchange) -> dict[str, list[tuple[Any, ...]]]:
    """What a correct backfill of the default universe stores, table by table, in key order."""
    ids = {s["symbol"]: s["id"] for s in ex.securities}
    universe = sorted(
        ids[c["symbol"]]
        for c in ex.companies
        if c["instrumentType"] == "Equity" and c["status"] == "A"
    )
    return {
        "prices": sorted(
            (
                sid,
                r["businessDate"],
                None,
                r["highPrice"],
                r["lowPrice"],
                r["closePrice"],
                r["totalTradedQuantity"],
                r["totalTradedValue"],
                r["totalTrades"],
            )
            for sid in universe
            for r in ex.history[sid]
            if "2021-01-01" <= r["businessDate"] <= "2025-06-30"
        ),
        "reports": [(sid, "2080/2081", "Q2", 12.5, 20.0, 150.0, 1e9, 1e8) for sid in universe],
        "dividends": [(sid, "2079/2080", 5.0, 0.0, None) for sid in universe],
        "ownership": [(sid, 1e6, 1e8, 400000, 40.0, 600000.0, 60.0) for sid in universe],
    }


def assert_exact(db: Path, ex: Exchange) -> None:
    with sqlite3.connect(db) as conn:
        for name, rows in expected(ex).items():
            assert conn.execute(f"SELECT * FROM {name} ORDER BY 1, 2, 3").fetchall() == rows, name
        assert conn.execute("SELECT count(*) FROM securities").fetchone()[0] == 12


def test_every_row_of_all_five_datasets_and_at_most_workers_in_flight(
    independent: tuple[str, type[Handler]], tmp_path: Path
) -> None:
    url, handler = independent
    db = tmp_path / "ind.db"
    result = run_ntx("backfill", "--api", url, "--db", str(db), *ARGS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert_exact(db, handler.exchange)
    assert len(expected(handler.exchange)["prices"]) > 8000
    assert handler.max_in_flight <= 4
    pages = [p for _, _, p in handler.log if "page=2" in p]
    assert pages  # 100-row pages: multi-year histories took many pages


def test_one_worker_starts_each_request_sleep_after_the_previous_answer(
    independent: tuple[str, type[Handler]], tmp_path: Path
) -> None:
    url, handler = independent
    result = run_ntx(
        "backfill",
        "--api",
        url,
        "--from",
        "2025-01-01",
        "--to",
        "2025-06-30",
        "--db",
        str(tmp_path / "s.db"),
        "--workers",
        "1",
        "--sleep",
        "0.5",
        "--prices",
        "--symbols",
        "IND01,IND02",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    log = sorted(handler.log)
    assert len(log) >= 6  # two lists, then two histories of more than one page each
    assert handler.max_in_flight == 1
    gaps = [nxt[0] - prev[1] for prev, nxt in pairwise(log)]
    assert min(gaps) >= 0.5, gaps


def test_hostile_server_every_row_still_exact(
    independent: tuple[str, type[Handler]], tmp_path: Path
) -> None:
    """15% of answers: 429 with Retry-After, 500/502/503, TCP resets, truncated and malformed
    bodies, 2.5 s stalls. Every row of all five datasets is stored exactly; exit 0."""
    url, handler = independent
    handler.fault_rate = 0.15
    db = tmp_path / "hostile.db"
    result = run_ntx("backfill", "--api", url, "--db", str(db), *ARGS, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr
    assert set(handler.faults) == set(FAULTS) and len(handler.faults) >= 20
    assert_exact(db, handler.exchange)
    assert "of them retries" in result.stdout
