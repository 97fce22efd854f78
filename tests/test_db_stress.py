"""The database under stress, with the CLI as a real subprocess: locked by another program,
read-only, a disk that fills up during a run, a file that is not an ntx database."""

from __future__ import annotations

import hashlib
import os
import resource
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

from ntx.model import DateRange
from tests.helpers import (
    TODAY,
    backfill_args,
    default_universe,
    expected_tables,
    ntx_env,
    run_ntx_async,
    table,
)


async def make_db(url: str, db: Path) -> None:
    result = await run_ntx_async(*backfill_args(url, db, "--ownership"))
    assert result.returncode == 0, result.stderr


async def test_locked_by_another_program_waits_then_says_so_before_any_fetch(
    start_demo: Callable[..., Any], tmp_path: Path
) -> None:
    url, recorder = await start_demo(securities=20)
    db = tmp_path / "busy.db"
    await make_db(url, db)
    recorder.seen.clear()
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another program is writing
    try:
        result = await run_ntx_async(*backfill_args(url, db, "--busy-timeout", "0.5"))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"ntx: error: database {db} is locked by another program (waited 0.5 s);"
        " close it or raise --busy-timeout"
    )
    assert recorder.seen == []  # nothing was fetched
    assert (await run_ntx_async(*backfill_args(url, db))).returncode == 0  # free again: fine


@contextmanager
def read_only(path: Path) -> Iterator[None]:
    """Make `path` unwritable, even for root (whom permission bits do not stop)."""
    if os.geteuid() == 0:
        subprocess.run(["chattr", "+i", str(path)], check=True)
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", str(path)], check=True)
    else:
        path.chmod(0o444)
        yield


async def test_read_only_database_is_a_clear_error_before_any_fetch(
    start_demo: Callable[..., Any], tmp_path: Path
) -> None:
    url, recorder = await start_demo(securities=20)
    db = tmp_path / "ro.db"
    await make_db(url, db)
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    recorder.seen.clear()
    with read_only(db):
        result = await run_ntx_async(*backfill_args(url, db))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"ntx: error: --db {db}: cannot open it for writing"
    )
    assert recorder.seen == []
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before


def run_with_file_size_limit(args: list[str], limit: int) -> subprocess.CompletedProcess[str]:
    def preexec() -> None:  # a disk that is full once the database reaches `limit` bytes
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    return subprocess.run(
        [sys.executable, "-m", "ntx", *args],
        capture_output=True,
        text=True,
        env=ntx_env(),
        stdin=subprocess.DEVNULL,
        preexec_fn=preexec,
        timeout=120,
    )


async def test_disk_full_during_a_run_keeps_every_earlier_commit(
    start_demo: Callable[..., Any], tmp_path: Path
) -> None:
    url, recorder = await start_demo(securities=60)
    db = tmp_path / "full.db"
    args = backfill_args(url, db, "--prices", "--from", "2015-01-01", "--to", "2026-06-30")
    result = await trio.to_thread.run_sync(partial(run_with_file_size_limit, args, 1_500_000))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "(while saving; every earlier commit is intact)" in lines[0]
    assert "run the same command to resume" in lines[0]
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        saved = conn.execute("SELECT count(*) FROM prices").fetchone()[0]
        jobs_rows = conn.execute(
            "SELECT coalesce(sum(rows), 0) FROM ntx_jobs"
            " WHERE status = 'done' AND dataset = 'prices'"
        ).fetchone()[0]
    assert saved > 0 and saved == jobs_rows  # every committed job, whole; nothing half-written
    again = await run_ntx_async(*args)  # space again: the same command finishes the job
    assert again.returncode == 0, again.stderr
    market = recorder.app.market
    expected = expected_tables(market, DateRange(date(2015, 1, 1), TODAY), default_universe(market))
    assert table(db, "prices") == expected["prices"]


@pytest.mark.parametrize("content", [b"", b"SQLite format 3\x00" + b"\x00" * 84])
def test_empty_or_headerless_file_is_not_mistaken_for_a_foreign_database(
    tmp_path: Path, content: bytes
) -> None:
    """An empty file may become an ntx database; a corrupt SQLite header is refused untouched."""
    from ntx.db.store import check_path
    from ntx.errors import UsageError

    path = tmp_path / "x.db"
    path.write_bytes(content)
    if content:
        with pytest.raises(UsageError, match="cannot be read as a SQLite database"):
            check_path(path)
        assert path.read_bytes() == content
    else:
        check_path(path)  # an empty file is a new database
