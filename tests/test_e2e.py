"""End to end over 127.0.0.1: the ntx CLI as a subprocess against a real demo exchange
(hypercorn on trio); the market generator is the oracle."""

from __future__ import annotations

import math
import re
import sqlite3
from collections.abc import Callable
from datetime import date, timedelta
from functools import partial
from itertools import pairwise
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import trio

from ntx.demo.app import DemoApp
from ntx.demo.faults import FAULTS, FaultyApp
from ntx.demo.market import Market
from ntx.demo.server import serve
from ntx.model import DateRange
from tests.helpers import (
    TABLES,
    TODAY,
    RecordingApp,
    backfill_args,
    default_universe,
    expected_tables,
    run_ntx_async,
    table,
)


async def test_database_equals_the_source_for_all_five_datasets(
    start_demo: Callable[..., Any], tmp_path: Path
) -> None:
    url, recorder = await start_demo(securities=40, seed=7)
    market = recorder.app.market
    db = tmp_path / "ntx.db"
    result = await run_ntx_async(
        *backfill_args(url, db, "--from", "2019-01-01", "--to", "2026-06-30", "--workers", "6")
    )
    assert result.returncode == 0, result.stderr
    expected = expected_tables(market, DateRange(date(2019, 1, 1), TODAY), default_universe(market))
    for name in TABLES:
        assert table(db, name) == expected[name], name
    # multi-year histories really were fetched in several parts (each one page here; the
    # independent server's smaller pages make ntx page through them)
    starts = {parse_qs(s.query)["startDate"][0] for s in recorder.paths("/history/")}
    assert len(starts) >= 3
    assert len(expected["prices"]) > 10_000
    assert "Prices: " in result.stdout and "0 errors" in result.stdout


async def test_all_instruments_and_symbols_choose_the_universe(
    start_demo: Callable[..., Any], tmp_path: Path
) -> None:
    url, recorder = await start_demo(securities=30, seed=11)
    market = recorder.app.market
    everything = [s.security_id for s in market.listed()]
    db = tmp_path / "all.db"
    result = await run_ntx_async(
        *backfill_args(
            url,
            db,
            "--all-instruments",
            "--prices-by",
            "security",  # by date, every security's day is stored whatever the universe
            "--from",
            "2026-01-01",
            "--to",
            "2026-06-30",
        )
    )
    assert result.returncode == 0, result.stderr
    expected = expected_tables(market, DateRange(date(2026, 1, 1), TODAY), everything)
    for name in TABLES:
        assert table(db, name) == expected[name], name

    two = [market.listed()[3], market.listed()[0]]
    db2 = tmp_path / "two.db"
    symbols = f"{two[0].symbol.lower()},{two[1].symbol}"
    result = await run_ntx_async(
        *backfill_args(url, db2, "--symbols", symbols, "--prices", "--ownership")
    )
    assert result.returncode == 0, result.stderr
    assert {row[0] for row in table(db2, "ownership")} == {s.security_id for s in two}
    assert table(db2, "reports") == []  # not asked for


async def test_second_run_fetches_only_the_tail_and_changes_no_row(
    start_demo: Callable[..., Any], tmp_path: Path
) -> None:
    url, recorder = await start_demo(securities=30, seed=7)
    market = recorder.app.market
    db = tmp_path / "ntx.db"
    first = await run_ntx_async(
        *backfill_args(url, db, "--from", "2024-01-01", "--to", "2026-03-31")
    )
    assert first.returncode == 0, first.stderr
    before = {name: table(db, name) for name in TABLES}

    recorder.seen.clear()
    second = await run_ntx_async(
        *backfill_args(url, db, "--from", "2024-01-01", "--to", "2026-06-30")
    )
    assert second.returncode == 0, second.stderr
    # the tail; and the days before the first row of a security whose history starts more
    # than a month after --from (listed later here; a server that clips looks the same)
    late = late_starters(db, "2024-01-01")
    assert late  # the demo market has one, NLIC, listed in July 2024
    asked = {
        (s.path, *(parse_qs(s.query)[k][0] for k in ("startDate", "endDate")))
        for s in recorder.paths("/history/")
    }
    tails = {a for a in asked if a[1:] == ("2026-04-01", "2026-06-30")}
    assert len(tails) == len(default_universe(market))
    assert asked - tails == reasks(late, "2024-01-01")
    after = {name: table(db, name) for name in TABLES}
    for name in TABLES:
        assert set(before[name]) <= set(after[name]), f"{name}: a stored row changed or vanished"
    expected = expected_tables(market, DateRange(date(2024, 1, 1), TODAY), default_universe(market))
    assert after["prices"] == expected["prices"]
    assert "0 updated" in second.stdout and " updated" in second.stdout
    for line in second.stdout.splitlines():
        if line.startswith(("Companies:", "Prices:", "Reports:", "Dividends:", "Ownership:")):
            assert " 0 updated" in line, line

    recorder.seen.clear()
    third = await run_ntx_async(
        *backfill_args(url, db, "--from", "2024-01-01", "--to", "2026-06-30")
    )
    assert third.returncode == 0, third.stderr
    asked = {
        (s.path, *(parse_qs(s.query)[k][0] for k in ("startDate", "endDate")))
        for s in recorder.paths("/history/")
    }
    assert asked == reasks(late, "2024-01-01")  # nothing else
    assert {name: table(db, name) for name in TABLES} == after
    assert len(recorder.paths("/history/")) == len(late)  # one request each, no more


def history_asked(recorder: RecordingApp) -> set[tuple[str, str, str]]:
    """(path, startDate, endDate) of every history request the server saw."""
    return {
        (seen.path, *(parse_qs(seen.query)[key][0] for key in ("startDate", "endDate")))
        for seen in recorder.paths("/history/")
    }


def late_starters(db: Path, asked_from: str) -> dict[int, str]:
    """Each security whose stored prices begin more than 31 days after `asked_from`."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT security_id, min(date) FROM prices GROUP BY security_id"
            " HAVING min(date) > date(?, '+31 days')",
            (asked_from,),
        ).fetchall()
    return dict(rows)


def reasks(late: dict[int, str], asked_from: str) -> set[tuple[str, str, str]]:
    """The requests that ask again for the days before each late starter's first row."""
    return {
        (
            f"/api/nots/market/history/security/{sid}",
            asked_from,
            str(date.fromisoformat(first) - timedelta(days=1)),
        )
        for sid, first in late.items()
    }


async def test_server_sees_at_most_workers_in_flight(
    start_demo: Callable[..., Any], tmp_path: Path
) -> None:
    url, recorder = await start_demo(securities=60, seed=7, latency=0.03)
    result = await run_ntx_async(
        *backfill_args(url, tmp_path / "w.db", "--workers", "3", "--ownership", "--reports")
    )
    assert result.returncode == 0, result.stderr
    assert len(recorder.seen) > 40
    assert recorder.max_in_flight == 3


async def test_one_worker_waits_sleep_after_every_answer(
    start_demo: Callable[..., Any], tmp_path: Path
) -> None:
    url, recorder = await start_demo(securities=30, seed=7, latency=0.01)
    market = recorder.app.market
    symbols = ",".join(market.by_id[sid].symbol for sid in default_universe(market)[:3])
    args = [
        "backfill",
        "--api",
        url,
        "--db",
        str(tmp_path / "s.db"),
        "--workers",
        "1",
        "--sleep",
        "0.5",
        "--ownership",
        "--symbols",
        symbols,
        "--progress",
        "plain",
    ]
    result = await run_ntx_async(*args)
    assert result.returncode == 0, result.stderr
    seen = sorted(recorder.seen, key=lambda s: s.started)
    # the handshake (prove, market-open, and the module unless an earlier test's run cached
    # it), two lists, three ownership details
    assert len([s for s in seen if not s.path.endswith("css.wasm")]) == 2 + 5
    gaps = [nxt.started - prev.finished for prev, nxt in pairwise(seen)]
    assert min(gaps) >= 0.5, gaps


async def test_failed_job_is_named_exit_1_and_others_are_stored(
    start_demo: Callable[..., Any], tmp_path: Path
) -> None:
    url, recorder = await start_demo(securities=30, seed=7)
    market = recorder.app.market
    universe = default_universe(market)
    victim, ghost = market.by_id[universe[1]], market.by_id[universe[2]]
    recorder.fail[f"/api/nots/application/reports/{victim.security_id}"] = 400  # fails, no retry
    recorder.fail[f"/api/nots/application/reports/{ghost.security_id}"] = 404  # skipped
    db = tmp_path / "f.db"
    result = await run_ntx_async(*backfill_args(url, db, "--reports", "--dividends"))
    assert result.returncode == 1
    path = f"/api/nots/application/reports/{victim.security_id}"
    assert f"reports {victim.symbol}: HTTP 400 from {path}" in result.stdout
    assert f"reports {ghost.symbol}: not found" in result.stdout
    assert "Reports: " in result.stdout and "1 error, 1 skipped" in result.stdout
    stored = [s for s in universe if s not in (victim.security_id, ghost.security_id)]
    expected = expected_tables(market, DateRange(TODAY, TODAY), stored)
    assert table(db, "reports") == expected["reports"]
    assert len(table(db, "dividends")) == sum(len(market.expected_dividends(s)) for s in universe)
    with sqlite3.connect(db) as conn:
        jobs = conn.execute(
            "SELECT status, security_id, reason FROM ntx_jobs"
            " WHERE status != 'done' ORDER BY status"
        ).fetchall()
    assert jobs == [
        ("failed", victim.security_id, f"HTTP 400 from {path}"),
        (
            "skipped",
            ghost.security_id,
            f"not found (HTTP 404 from /api/nots/application/reports/{ghost.security_id})",
        ),
    ]


async def test_only_skips_still_exit_0(start_demo: Callable[..., Any], tmp_path: Path) -> None:
    url, recorder = await start_demo(securities=30, seed=7)
    ghost = default_universe(recorder.app.market)[0]
    recorder.fail[f"/api/nots/security/{ghost}"] = 404
    result = await run_ntx_async(*backfill_args(url, tmp_path / "k.db", "--ownership"))
    assert result.returncode == 0, result.stdout
    assert "Skipped jobs (1):" in result.stdout


async def test_access_denied_stops_the_run_at_once(
    start_demo: Callable[..., Any], tmp_path: Path
) -> None:
    url, recorder = await start_demo(securities=60, seed=7)
    market = recorder.app.market
    universe = sorted(default_universe(market), key=lambda sid: market.by_id[sid].symbol)
    # 403: refused whatever the token (a 401 means a stale token: handshake, then retry)
    recorder.fail[f"/api/nots/application/dividend/{universe[0]}"] = 403  # ntx's first job
    args = backfill_args(url, tmp_path / "d.db", "--dividends", "--workers", "1")
    result = await run_ntx_async(*args)
    assert result.returncode == 1
    errors = result.stderr.strip().splitlines()
    assert errors == [
        "ntx: error: the API refused access (HTTP 403 from"
        f" /api/nots/application/dividend/{universe[0]}): check the URL and any credentials"
    ]
    assert len(recorder.paths("/dividend/")) == 1  # nothing after the 403
    with sqlite3.connect(tmp_path / "d.db") as conn:
        assert conn.execute("SELECT status FROM ntx_runs").fetchall() == [("failed",)]


async def test_status_describes_the_database(
    start_demo: Callable[..., Any], tmp_path: Path
) -> None:
    url, _ = await start_demo(securities=30, seed=7)
    db = tmp_path / "s.db"
    assert (
        await run_ntx_async(*backfill_args(url, db, "--from", "2026-01-01", "--to", "2026-06-30"))
    ).returncode == 0
    result = await run_ntx_async("status", "--db", str(db))
    assert result.returncode == 0, result.stderr
    prices_line = next(line for line in result.stdout.splitlines() if line.startswith("prices"))
    count = len(table(db, "prices"))
    first = min(row[1] for row in table(db, "prices"))
    assert f"{count:,}" in prices_line and first in prices_line and "2026-06-30" in prices_line
    assert "Last run: #1 completed" in result.stdout


async def test_hostile_api_every_fault_still_an_exact_database(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    """15% of requests fail in every way the policy knows; the database is still exact."""
    market = Market(seed=5, securities=40, today=TODAY)
    faulty = FaultyApp(DemoApp(market, latency=0.002), rate=0.15, seed=3)
    recorder = RecordingApp(faulty)  # type: ignore[arg-type]
    url = await nursery.start(partial(serve, recorder))
    db = tmp_path / "hostile.db"
    args = backfill_args(url, db, "--from", "2023-01-01", "--to", "2026-06-30", "--workers", "6")
    result = await run_ntx_async(*args)
    assert result.returncode == 0, result.stdout[-3000:]
    assert set(faulty.injected) == set(FAULTS) and sum(faulty.injected.values()) >= 12
    expected = expected_tables(market, DateRange(date(2023, 1, 1), TODAY), default_universe(market))
    for name in TABLES:
        assert table(db, name) == expected[name], name
    retries = int(re.search(r"([\d,]+) of them retries", result.stdout).group(1).replace(",", ""))  # type: ignore[union-attr]
    assert retries >= sum(faulty.injected[k] for k in FAULTS if k != "stall")
    assert "every worker waits" in result.stdout  # the 429s paused everyone
    assert "the server dropped a connection" in result.stdout  # and so did the drops


async def test_short_lived_tokens_are_renewed_and_the_database_is_exact(
    start_demo: Callable[..., Any], tmp_path: Path
) -> None:
    """Tokens the demo forgets after 0.3 s: ntx renews them (401, one handshake for all
    workers, the request again) and still stores every row."""
    url, recorder = await start_demo(securities=20, seed=4, latency=0.02, token_ttl=0.3)
    market = recorder.app.market
    db = tmp_path / "t.db"
    args = backfill_args(url, db, "--from", "2026-01-01", "--to", "2026-06-30", "--workers", "3")
    result = await run_ntx_async(*args, "--sleep", "0.05")
    assert result.returncode == 0, result.stdout[-2000:]
    expected = expected_tables(market, DateRange(date(2026, 1, 1), TODAY), default_universe(market))
    for name in TABLES:
        assert table(db, name) == expected[name], name
    proves = len(recorder.paths("/authenticate/prove"))
    assert proves >= 3 and len(recorder.paths("css.wasm")) <= 1  # the module is kept
    assert any(s.status == 401 for s in recorder.seen)
    assert f"{proves} token handshakes" in result.stdout
    # each handshake is an event, with its reason
    assert "ntx: token handshake 1 (the first token)" in result.stdout
    assert "ntx: token handshake 2 (the server refused the last token)" in result.stdout


async def test_a_from_older_than_the_window_stores_the_window_and_records_the_rest(
    start_demo: Callable[..., Any], tmp_path: Path
) -> None:
    url, recorder = await start_demo(securities=30, seed=5, window_days=200)
    market = recorder.app.market
    first_day = recorder.app.window_starts
    assert first_day is not None
    db = tmp_path / "ntx.db"
    args = backfill_args(url, db, "--prices", "--from", "2019-01-01", "--to", "2026-06-30")
    result = await run_ntx_async(*args)
    assert result.returncode == 0, result.stderr
    universe = default_universe(market)
    expected = expected_tables(market, DateRange(first_day, TODAY), universe)
    assert table(db, "prices") == expected["prices"]
    assert f"the server keeps daily history from {first_day} on" in result.stdout
    assert f"the older days asked for {len(universe)} securities are recorded" in result.stdout

    # no retry storm: one refusal starts the search, and the search takes about log2(days)
    history = recorder.paths("/history/")
    refused = [s for s in history if s.status == 500]
    days = (TODAY - date(2019, 1, 1)).days
    assert 1 <= len(refused) <= 1 + math.ceil(math.log2(days))
    assert len(history) <= len(universe) * 2 + 2 * math.ceil(math.log2(days)) + 1
    last_refused = max(i for i, s in enumerate(history) if s.status == 500)
    after_search = history[last_refused + 1 :]
    assert all(parse_qs(s.query)["startDate"][0] >= str(first_day) for s in after_search)

    with sqlite3.connect(db) as conn:
        outside = conn.execute(
            "SELECT DISTINCT security_id FROM ntx_jobs WHERE status = 'outside'"
        ).fetchall()
        coverage = conn.execute(
            "SELECT DISTINCT covered_from FROM ntx_coverage WHERE dataset = 'prices'"
        ).fetchall()
    assert {sec for (sec,) in outside} == set(universe)
    assert coverage == [(str(first_day),)]
    shown = await run_ntx_async("runs", "show", "1", "--db", str(db))
    assert f"is before {first_day}, the first day the server's history window serves" in (
        shown.stdout
    )

    recorder.seen.clear()
    again = await run_ntx_async(*args)
    assert again.returncode == 0, again.stderr
    assert table(db, "prices") == expected["prices"]
    history = recorder.paths("/history/")
    assert len([s for s in history if s.status == 500]) <= 1 + math.ceil(math.log2(days))


async def test_snapshots_are_fetched_again_only_once_older_than_their_max_age(
    start_demo: Callable[..., Any], tmp_path: Path
) -> None:
    url, recorder = await start_demo(securities=30, seed=3)
    market = recorder.app.market
    universe = default_universe(market)
    db = tmp_path / "ages.db"
    args = backfill_args(url, db, "--reports", "--dividends", "--ownership")
    assert (await run_ntx_async(*args)).returncode == 0
    snapshot = {name: table(db, name) for name in ("reports", "dividends", "ownership")}

    def fetched(fragment: str) -> int:
        return len(recorder.paths(fragment))

    recorder.seen.clear()
    again = await run_ntx_async(*args)  # the defaults: a day, a day, a day, a week
    assert again.returncode == 0, again.stderr
    assert fetched("/reports/") == fetched("/dividend/") == fetched("/security/") == 0
    assert fetched("/company/list") == fetched("/api/nots/security") == 0  # the lists too
    assert "=== Companies: the stored lists are kept" in again.stdout
    assert f"=== Ownership: all {len(universe)} securities up to date ===" in again.stdout

    recorder.seen.clear()
    reports_now = await run_ntx_async(*args, "--max-age", "reports=0")
    assert reports_now.returncode == 0, reports_now.stderr
    assert fetched("/reports/") == len(universe)
    assert fetched("/dividend/") == fetched("/api/nots/security/") == 0  # no ownership

    # another source: the ages of what the first one gave do not count
    other_url, other = await start_demo(securities=30, seed=3)
    elsewhere = await run_ntx_async(
        *backfill_args(other_url, db, "--reports", "--dividends", "--ownership")
    )
    assert elsewhere.returncode == 0, elsewhere.stderr
    assert len(other.paths("/company/list")) == 1
    assert len(other.paths("/reports/")) == len(universe)

    recorder.seen.clear()
    forced = await run_ntx_async(*args, "--force")
    assert forced.returncode == 0, forced.stderr
    assert fetched("/reports/") == fetched("/dividend/") == len(universe)
    assert fetched("/company/list") == 1
    assert {name: table(db, name) for name in snapshot} == snapshot  # nothing changed
