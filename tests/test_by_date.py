"""Prices by business date, end to end: the ntx CLI as a subprocess against a real demo
exchange on 127.0.0.1 (and the independent server), the market generator as the oracle.
Exact by date, by security and auto, opens included; a date with a missing page is never
covered; holidays and weekends are never asked; a week of daily runs builds the archive."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable
from datetime import date, timedelta
from functools import partial
from pathlib import Path
from signal import SIGINT
from typing import Any
from urllib.parse import parse_qs

import trio

from ntx.demo.market import Market
from ntx.model import DateRange
from tests.helpers import (
    TODAY,
    backfill_args,
    default_universe,
    expected_by_date,
    expected_tables,
    run_and_signal,
    run_ntx,
    run_ntx_async,
    table,
)
from tests.independent_server import LAST_DAY, Exchange, running

HALF_YEAR = DateRange(date(2026, 1, 1), TODAY)
DATES = ("--from", "2026-01-01", "--to", "2026-06-30")
TODAY_PRICE = "/api/nots/nepse-data/today-price"


def asked_dates(recorder: Any) -> list[date]:
    return [
        date.fromisoformat(parse_qs(seen.query)["businessDate"][0])
        for seen in recorder.paths(TODAY_PRICE)
        if "size=500" in seen.query  # not the window search's one-row probes
    ]


def stored_dates(db: Path) -> dict[str, str]:
    with sqlite3.connect(db) as conn:
        return dict(conn.execute("SELECT date, status FROM ntx_dates WHERE dataset = 'prices'"))


async def test_by_date_is_exact_opens_included_and_asks_only_sessions(
    start_demo: Callable[..., Any], tmp_path: Path
) -> None:
    url, recorder = await start_demo(securities=40)
    market = recorder.app.market
    db = tmp_path / "date.db"
    result = await run_ntx_async(*backfill_args(url, db, "--prices", *DATES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Price plan: by date" in result.stdout  # auto: 18 histories cost more than a tenth
    rows = table(db, "prices")
    assert rows == expected_by_date(market, HALF_YEAR)
    assert all(row[2] is not None for row in rows)  # every row has its open
    assert "Opens:" not in result.stdout
    asked = asked_dates(recorder)
    listed = {day for year in (2025, 2026) for day, _ in market.holidays(year)}
    assert len(asked) == len(set(asked))  # each session once
    assert all(day.weekday() not in (4, 5) and day not in listed for day in asked)
    # a date answered empty is a closure the holiday list missed: recorded as no session
    for day, status in stored_dates(db).items():
        assert status == ("traded" if market.is_trading_day(date.fromisoformat(day)) else "closed")
    published = {(d.isoformat(), name) for d, name in market.holidays(2026)}
    assert set(table(db, "holidays")) >= published

    recorder.seen.clear()
    again = await run_ntx_async(*backfill_args(url, db, "--prices", *DATES))
    assert again.returncode == 0
    assert asked_dates(recorder) == []  # stored, closed: none asked twice
    assert "nothing missing" in again.stdout


async def test_by_security_then_by_date_agree_and_the_opens_arrive(
    start_demo: Callable[..., Any], tmp_path: Path
) -> None:
    url, recorder = await start_demo(securities=40)
    market = recorder.app.market
    universe = default_universe(market)
    db = tmp_path / "both.db"
    first = await run_ntx_async(
        *backfill_args(url, db, "--prices", "--prices-by", "security", *DATES)
    )
    assert first.returncode == 0, first.stdout + first.stderr
    assert table(db, "prices") == expected_tables(market, HALF_YEAR, universe)["prices"]
    lacking = len(table(db, "prices"))
    assert f"Opens: {lacking:,} price rows of the period have no open price" in first.stdout

    second = await run_ntx_async(*backfill_args(url, db, "--prices", "--prices-by", "date", *DATES))
    assert second.returncode == 0, second.stdout + second.stderr
    assert table(db, "prices") == expected_by_date(market, HALF_YEAR)  # opens filled in place
    assert "Opens:" not in second.stdout

    # history again over by-date rows: its nulls never erase an open
    third = await run_ntx_async(
        *backfill_args(url, db, "--prices", "--prices-by", "security", "--force", *DATES)
    )
    assert third.returncode == 0
    assert table(db, "prices") == expected_by_date(market, HALF_YEAR)
    assert re.search(r"Prices: 0 new, 0 updated, [\d,]+ unchanged", third.stdout), third.stdout


async def test_auto_takes_a_few_symbols_by_security_and_says_what_lacks_opens(
    start_demo: Callable[..., Any], tmp_path: Path
) -> None:
    url, recorder = await start_demo(securities=40)
    market = recorder.app.market
    two = sorted(default_universe(market))[:2]
    symbols = ",".join(market.by_id[sid].symbol for sid in two)
    db = tmp_path / "two.db"
    result = await run_ntx_async(*backfill_args(url, db, "--prices", "--symbols", symbols, *DATES))
    assert result.returncode == 0, result.stdout
    assert "Price plan: by security, 2 securities, about 2 requests" in result.stdout
    assert table(db, "prices") == expected_tables(market, HALF_YEAR, two)["prices"]
    assert asked_dates(recorder) == []
    assert "have no open price: they came by security" in result.stdout
    shown = await run_ntx_async("runs", "show", "1", "--db", str(db))
    assert "Prices: by security, 2 securities" in shown.stdout


async def test_a_date_with_a_missing_page_is_never_covered(
    start_demo: Callable[..., Any], tmp_path: Path
) -> None:
    url, recorder = await start_demo(securities=40)
    market = recorder.app.market
    spoiled = "2026-06-29"

    def lose_a_row(body: dict[str, Any]) -> dict[str, Any]:
        if body.get("content") and body["content"][0]["businessDate"] == spoiled:
            body["content"].pop()  # the page says more rows than it holds
        return body

    recorder.rewrite[TODAY_PRICE] = lose_a_row
    db = tmp_path / "page.db"
    result = await run_ntx_async(
        *backfill_args(url, db, "--prices", "--prices-by", "date", "--retries", "1", *DATES)
    )
    assert result.returncode == 1  # that job failed after its retries
    assert f"prices {spoiled}: " in result.stdout and "paging gave" in result.stdout
    assert spoiled not in stored_dates(db)
    assert not [row for row in table(db, "prices") if row[1] == spoiled]

    del recorder.rewrite[TODAY_PRICE]
    recorder.seen.clear()
    retried = await run_ntx_async(*backfill_args(url, db, "--retry-failed"))
    assert retried.returncode == 0, retried.stdout
    assert asked_dates(recorder) == [date.fromisoformat(spoiled)]
    assert stored_dates(db)[spoiled] == "traded"
    assert table(db, "prices") == expected_by_date(market, HALF_YEAR)


async def test_dates_before_the_window_are_found_once_and_never_asked_again(
    start_demo: Callable[..., Any], tmp_path: Path
) -> None:
    url, recorder = await start_demo(securities=40, window_days=90)
    market = recorder.app.market
    db = tmp_path / "window.db"
    result = await run_ntx_async(*backfill_args(url, db, "--prices", "--prices-by", "date", *DATES))
    assert result.returncode == 0, result.stdout
    first = recorder.app.window_starts
    assert first is not None
    assert table(db, "prices") == expected_by_date(market, DateRange(first, TODAY))
    outside = [d for d, status in stored_dates(db).items() if status == "outside"]
    assert outside and max(outside) < first.isoformat()
    assert f"the server keeps daily history from {first} on" in result.stdout
    refused = [seen for seen in recorder.paths(TODAY_PRICE) if seen.status == 500]
    # the first refusals (one per worker at most), then a binary search: about log2(180)
    assert len(refused) <= 5 + 8

    recorder.seen.clear()
    again = await run_ntx_async(*backfill_args(url, db, "--prices", "--prices-by", "date", *DATES))
    assert again.returncode == 0
    assert recorder.paths(TODAY_PRICE) == []  # neither stored nor outside days asked again


def test_a_week_of_daily_runs_builds_an_archive_past_the_window(tmp_path: Path) -> None:
    """The demo's market day moves one session each run: each run costs a few requests,
    the archive stays exact and ends up holding sessions the server no longer serves."""
    db = tmp_path / "daily.db"
    # 150 securities, 65 active equities: a year by security would cost more than a tenth of
    # by date, so the first run goes by date too, as a whole market's does
    demo = ("--demo", "--demo-securities", "150", "--demo-latency-ms", "1", "--db", str(db))
    plain = ("--progress", "plain", "--sleep", "0")
    start_day = date(2026, 6, 30)
    first = run_ntx("backfill", *demo, *plain, "--demo-today", str(start_day))
    assert first.returncode == 0, first.stdout + first.stderr
    market = Market(1, 150, today=start_day)
    day, costs = start_day, []
    for _ in range(6):
        day += timedelta(days=1)
        while not market.is_trading_day(day):
            day += timedelta(days=1)
        run = run_ntx("backfill", *demo, *plain, "--demo-today", str(day))
        assert run.returncode == 0, run.stdout + run.stderr
        found = re.search(r"Requests: (\d+) ", run.stdout)
        assert found, run.stdout
        costs.append(int(found.group(1)))
        assert f"{day} done" in run.stdout
    assert max(costs) <= 8, costs
    archive = DateRange(date(2025, 6, 30), day)
    assert table(db, "prices") == expected_by_date(Market(1, 150, today=day), archive)
    window_starts = day - timedelta(days=365)
    older = {row[1] for row in table(db, "prices") if row[1] < window_starts.isoformat()}
    assert older  # kept nowhere else: the server's window has moved past them
    status = run_ntx("status", "--db", str(db))
    assert status.returncode == 0, status.stderr
    assert f"{len(older)} sessions older than the API's window" in status.stdout


def test_the_independent_server_by_date_is_exact_opens_included(tmp_path: Path) -> None:
    with running(Exchange(securities=12), window_days=365) as (url, handler):
        db = tmp_path / "ind.db"
        args = ("--from", "2024-01-01", "--to", "2025-06-30", "--sleep", "0")
        result = run_ntx(
            "backfill", "--api", url, "--db", str(db), "--prices", "--prices-by", "date", *args
        )
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr
        first = LAST_DAY - timedelta(days=365)
        expected = sorted(
            (
                r["securityId"],
                r["businessDate"],
                r["openPrice"],
                r["highPrice"],
                r["lowPrice"],
                r["closePrice"],
                r["totalTradedQuantity"],
                r["totalTradedValue"],
                r["totalTrades"],
                r["previousDayClosePrice"],
                r["averageTradedPrice"],
                r["fiftyTwoWeekHigh"],
                r["fiftyTwoWeekLow"],
            )
            for n in range((LAST_DAY - first).days + 1)
            for r in handler.exchange.day_rows(first + timedelta(days=n))
        )
        assert table(db, "prices") == expected
        closures = {d for d in handler.exchange.closed if first <= d <= LAST_DAY}
        assert all(
            stored_dates(db).get(d.isoformat()) == "closed"
            for d in closures
            if d not in handler.exchange.holidays
        )


async def test_an_interrupted_run_by_date_resumes_without_asking_a_stored_date_again(
    start_demo: Callable[..., Any], tmp_path: Path
) -> None:
    url, recorder = await start_demo(securities=40, latency=0.02)
    market = recorder.app.market
    db = tmp_path / "stop.db"
    args = backfill_args(url, db, "--prices", "--prices-by", "date", "--workers", "2", *DATES)
    stopped = await trio.to_thread.run_sync(
        partial(run_and_signal, args, after=r"\[prices 20/\d+\] \S+ done", signals=[SIGINT])
    )
    assert stopped.returncode == 130, stopped.stderr
    kept = set(stored_dates(db))
    assert len(kept) >= 20
    recorder.seen.clear()
    resumed = await run_ntx_async(*args)
    assert resumed.returncode == 0, resumed.stdout
    assert not kept & {day.isoformat() for day in asked_dates(recorder)}
    assert table(db, "prices") == expected_by_date(market, HALF_YEAR)
