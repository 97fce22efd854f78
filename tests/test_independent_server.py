"""Against an independent NEPSE-compatible server: not the demo, written from the API doc
alone (stdlib http.server, threads, its own data, pages capped at 100 not 500), so the
client is not fitted to the demo's quirks. Observed from the server: exact data, at most
--workers requests in flight, and --sleep between one answer and the next request."""

from __future__ import annotations

import json
import random
import sqlite3
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

    def do_GET(self) -> None:
        cls = type(self)
        with cls.lock:
            cls.in_flight += 1
            cls.max_in_flight = max(cls.max_in_flight, cls.in_flight)
        started = time.monotonic()
        try:
            time.sleep(0.005)
            status, body = self.route()
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        finally:
            with cls.lock:
                cls.in_flight -= 1
                cls.log.append((started, time.monotonic(), self.path))

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


def test_every_row_of_all_five_datasets_and_at_most_workers_in_flight(
    independent: tuple[str, type[Handler]], tmp_path: Path
) -> None:
    url, handler = independent
    db = tmp_path / "ind.db"
    result = run_ntx(
        "backfill",
        "--api",
        url,
        "--from",
        "2021-01-01",
        "--to",
        "2025-06-30",
        "--db",
        str(db),
        "--workers",
        "4",
        "--sleep",
        "0",
        "--progress",
        "plain",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    ex = handler.exchange
    universe = sorted(
        c["symbol"] for c in ex.companies if c["instrumentType"] == "Equity" and c["status"] == "A"
    )
    ids = {s["symbol"]: s["id"] for s in ex.securities}
    want_prices = sorted(
        (
            ids[sym],
            r["businessDate"],
            None,
            r["highPrice"],
            r["lowPrice"],
            r["closePrice"],
            r["totalTradedQuantity"],
            r["totalTradedValue"],
            r["totalTrades"],
        )
        for sym in universe
        for r in ex.history[ids[sym]]
        if "2021-01-01" <= r["businessDate"] <= "2025-06-30"
    )
    with sqlite3.connect(db) as conn:
        got = conn.execute("SELECT * FROM prices ORDER BY security_id, date").fetchall()
        assert got == want_prices and len(got) > 8000
        assert conn.execute("SELECT * FROM reports ORDER BY security_id").fetchall() == [
            (ids[s], "2080/2081", "Q2", 12.5, 20.0, 150.0, 1e9, 1e8)
            for s in sorted(universe, key=ids.get)
        ]
        assert conn.execute("SELECT * FROM dividends ORDER BY security_id").fetchall() == [
            (ids[s], "2079/2080", 5.0, 0.0, None) for s in sorted(universe, key=ids.get)
        ]
        assert conn.execute("SELECT * FROM ownership ORDER BY security_id").fetchall() == [
            (ids[s], 1e6, 1e8, 400000, 40.0, 600000.0, 60.0) for s in sorted(universe, key=ids.get)
        ]
        assert conn.execute("SELECT count(*) FROM securities").fetchone()[0] == 12
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
