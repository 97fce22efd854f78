"""Interruption, resume, the database lock and --retry-failed, with the CLI as a real
subprocess against the demo exchange on 127.0.0.1."""

from __future__ import annotations

import signal
import sqlite3
from collections.abc import Callable
from datetime import date
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import trio

from ntx.model import DateRange
from tests.helpers import (
    TABLES,
    TODAY,
    backfill_args,
    default_universe,
    expected_tables,
    run_and_signal,
    run_ntx_async,
    spawn_ntx,
    table,
)


def slow_args(url: str, db: Path, *extra: str) -> list[str]:
    """A backfill slow enough to interrupt at a chosen moment."""
    return backfill_args(
        url,
        db,
        "--from",
        "2023-01-01",
        "--to",
        "2026-06-30",
        "--workers",
        "3",
        "--sleep",
        "0.02",
        *extra,
    )


def assert_exact(db: Path, market: Any) -> None:
    expected = expected_tables(market, DateRange(date(2023, 1, 1), TODAY), default_universe(market))
    for name in TABLES:
        assert table(db, name) == expected[name], name


def consistent(db: Path) -> None:
    """SQLite's own check, and ntx's invariant: a job is done only with all its rows."""
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        missing = conn.execute(
            "SELECT count(*) FROM ntx_jobs j WHERE j.status = 'done' AND j.dataset = 'prices'"
            " AND j.rows > (SELECT count(*) FROM prices p WHERE p.security_id = j.security_id)"
        ).fetchone()[0]
    assert missing == 0


async def test_sigint_saves_what_was_fetched_and_the_same_command_resumes(
    start_demo: Callable[..., Any], tmp_path: Path
) -> None:
    url, recorder = await start_demo(securities=60, latency=0.01)
    db = tmp_path / "i.db"
    args = slow_args(url, db)
    result = await trio.to_thread.run_sync(
        partial(run_and_signal, args, after=r"\[prices 8/\d+\] \S+ done", signals=[signal.SIGINT])
    )
    assert result.returncode == 130, result.stderr
    assert "Traceback" not in result.stderr
    last = result.stdout.strip().splitlines()[-1]
    assert (
        last.startswith("Interrupted: ") and "rows saved (run 1). Resume with: ntx backfill" in last
    )
    consistent(db)
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT status FROM ntx_runs").fetchall() == [("interrupted",)]
        done_before = conn.execute(
            "SELECT count(*) FROM ntx_jobs WHERE status = 'done'"
        ).fetchone()[0]
        done_parts = {
            (str(security_id), ranges.split(" to ")[0])
            for security_id, ranges in conn.execute(
                "SELECT security_id, ranges FROM ntx_jobs"
                " WHERE status = 'done' AND dataset = 'prices'"
            )
        }
    assert done_before >= 1 + 6  # the lists, and every prices job that had finished

    recorder.seen.clear()
    again = await run_ntx_async(*args)
    assert again.returncode == 0, again.stdout
    assert "resuming run 1, which did not finish" in again.stdout
    assert_exact(db, recorder.app.market)
    asked = {
        (s.path.rsplit("/", 1)[1], parse_qs(s.query)["startDate"][0])
        for s in recorder.paths("/history/")
    }
    assert asked and not asked & done_parts  # no job done before the signal is fetched again


async def test_sigterm_is_an_interruption_too(
    start_demo: Callable[..., Any], tmp_path: Path
) -> None:
    url, _ = await start_demo(securities=60, latency=0.01)
    db = tmp_path / "t.db"
    result = await trio.to_thread.run_sync(
        partial(run_and_signal, slow_args(url, db), after=r"\[prices 5/", signals=[signal.SIGTERM])
    )
    assert result.returncode == 130 and "Resume with:" in result.stdout
    consistent(db)


async def test_a_second_signal_exits_at_once_and_the_database_stays_consistent(
    start_demo: Callable[..., Any], tmp_path: Path
) -> None:
    url, recorder = await start_demo(securities=60, latency=0.01)
    db = tmp_path / "d.db"
    # Stopped, the process gets both signals together: the second arrives mid-shutdown.
    signals = [signal.SIGSTOP, signal.SIGINT, signal.SIGTERM, signal.SIGCONT]
    result = await trio.to_thread.run_sync(
        partial(run_and_signal, slow_args(url, db), after=r"\[prices 6/", signals=signals)
    )
    assert result.returncode == 130
    assert "interrupted again: exiting now" in result.stderr
    consistent(db)
    again = await run_ntx_async(*slow_args(url, db))
    assert again.returncode == 0, again.stdout
    assert_exact(db, recorder.app.market)


async def test_ten_interruptions_at_random_moments_then_exact(
    start_demo: Callable[..., Any], tmp_path: Path
) -> None:
    """Interrupt, re-run, interrupt the re-run...: every interrupted run exits 130 and the
    final database is exact, with no duplicate."""
    import random

    url, recorder = await start_demo(securities=50, latency=0.005)
    db = tmp_path / "ten.db"
    args = slow_args(url, db)
    rng = random.Random(2)
    interrupted = 0
    for _ in range(10):
        marker = rng.choice(
            [r"\[prices 2/", r"\[prices 9/", r"\[reports 3/", r"\[dividends 1/", "done"]
        )
        result = await trio.to_thread.run_sync(
            partial(run_and_signal, args, after=marker, signals=[signal.SIGINT])
        )
        assert result.returncode in (0, 130), result.stderr
        interrupted += result.returncode == 130
        consistent(db)
    assert interrupted >= 5
    final = await run_ntx_async(*args)
    assert final.returncode == 0
    assert_exact(db, recorder.app.market)


async def test_one_backfill_per_database_and_a_crash_does_not_leave_it_locked(
    start_demo: Callable[..., Any], tmp_path: Path
) -> None:
    url, recorder = await start_demo(securities=60, latency=0.02)
    db = tmp_path / "l.db"
    args = slow_args(url, db)
    first = spawn_ntx(args)

    def wait_for_progress() -> None:  # in a thread: the server must keep serving meanwhile
        assert first.stdout is not None
        for line in first.stdout:
            if "[prices 3/" in line:
                return

    try:
        await trio.to_thread.run_sync(wait_for_progress)
        assert first.poll() is None
        second = await run_ntx_async(*args)
        assert second.returncode == 1
        assert second.stderr.strip() == (
            f"ntx: error: {db} is being written by another ntx backfill (pid {first.pid}, started "
            + second.stderr.split("started ", 1)[1].split(": ntx", 1)[0]
            + f": ntx {' '.join(args)}); wait for it to finish, or stop it"
        )
        first.kill()  # a crash: no chance to clean up
    finally:
        first.kill()
        first.communicate(timeout=30)
    runs = await run_ntx_async("runs", "--db", str(db))
    assert "crashed" in runs.stdout.splitlines()[2]
    third = await run_ntx_async(*args)
    assert third.returncode == 0, third.stderr
    assert "resuming run 1" in third.stdout
    assert_exact(db, recorder.app.market)


async def test_retry_failed_repeats_only_the_failed_jobs(
    start_demo: Callable[..., Any], tmp_path: Path
) -> None:
    url, recorder = await start_demo(securities=40)
    market = recorder.app.market
    universe = default_universe(market)
    victims = [market.by_id[sid] for sid in universe[:2]]
    for victim in victims:
        recorder.fail[f"/api/nots/application/reports/{victim.security_id}"] = 400
    db = tmp_path / "rf.db"
    base = ["--api", url, "--db", str(db), "--sleep", "0", "--progress", "plain"]
    first = await run_ntx_async("backfill", *base, "--from", "2023-01-01", "--to", "2026-06-30")
    assert first.returncode == 1
    assert "Retry just those with: ntx backfill --retry-failed" in first.stdout

    recorder.fail.clear()
    recorder.seen.clear()
    retry = await run_ntx_async("backfill", "--retry-failed", *base)
    assert retry.returncode == 0, retry.stdout
    setup = ("/api/authenticate/prove", "/assets/prod/css.wasm", "/api/nots/nepse-data/market-open")
    fetched = sorted(
        s.path
        for s in recorder.seen
        if "/company/" not in s.path and s.path not in ("/api/nots/security", *setup)
    )
    assert fetched == sorted(f"/api/nots/application/reports/{v.security_id}" for v in victims)
    assert_exact(db, market)

    nothing = await run_ntx_async("backfill", "--retry-failed", *base)
    assert nothing.returncode == 0
    assert nothing.stdout.strip() == "ntx: run 2 has no failed jobs: nothing to retry"
    mixed = await run_ntx_async("backfill", "--retry-failed", "--prices", *base)
    assert mixed.returncode == 2 and "takes no --prices" in mixed.stderr


async def test_runs_lists_history_and_shows_a_runs_failures(
    start_demo: Callable[..., Any], tmp_path: Path
) -> None:
    url, recorder = await start_demo(securities=30)
    market = recorder.app.market
    victim = market.by_id[default_universe(market)[0]]
    recorder.fail[f"/api/nots/security/{victim.security_id}"] = 400
    db = tmp_path / "h.db"
    base = ["backfill", "--api", url, "--db", str(db), "--sleep", "0", "--ownership"]
    assert (await run_ntx_async(*base)).returncode == 1
    recorder.fail.clear()
    assert (await run_ntx_async(*base)).returncode == 0
    listing = await run_ntx_async("runs", "--db", str(db))
    lines = listing.stdout.splitlines()
    assert lines[1].split()[:4] == ["id", "started", "duration", "status"]
    assert lines[2].split()[0] == "2" and " completed " in lines[2]
    assert lines[3].split()[0] == "1" and " completed with failures " in lines[3]
    shown = await run_ntx_async("runs", "show", "1", "--db", str(db))
    assert shown.returncode == 0
    assert f"failed  ownership  {victim.symbol}" in shown.stdout
    assert f"HTTP 400 from /api/nots/security/{victim.security_id}" in shown.stdout
    with sqlite3.connect(db) as conn:  # each run records what it fetched from
        assert conn.execute("SELECT source FROM ntx_runs").fetchall() == [(url,), (url,)]
    missing = await run_ntx_async("runs", "show", "99", "--db", str(db))
    assert missing.returncode == 2 and "no run 99" in missing.stderr
