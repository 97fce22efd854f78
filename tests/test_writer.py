"""The writer flushes on size, on time and at close: exact times under MockClock, real SQLite."""

from __future__ import annotations

import sqlite3
from datetime import date, timedelta
from pathlib import Path

import pytest
import trio
from trio.testing import MockClock

from ntx.db.store import Store
from ntx.events import Event, RowsCommitted
from ntx.model import Job, JobResult, Security
from ntx.writer import Writer


def price_result(security_id: int, count: int, first: date = date(2020, 1, 1)) -> JobResult:
    sec = Security(security_id, f"S{security_id}")
    rows = [
        (
            security_id,
            (first + timedelta(days=i)).isoformat(),
            None,
            11.0,
            9.0,
            10.0,
            100,
            1000.0,
            3,
            None,
            None,
            None,
            None,
        )
        for i in range(count)
    ]
    return JobResult(Job("prices", sec), rows, requests=1)


def stored_prices(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT count(*) FROM prices").fetchone()[0])


async def start_writer(tmp_path: Path, nursery: trio.Nursery):  # type: ignore[no-untyped-def]
    store = Store.open(tmp_path / "w.db")
    run_id = store.begin_run("test", "test", ["prices"])
    events_send, events_recv = trio.open_memory_channel[Event](100)
    results_send, results_recv = trio.open_memory_channel[JobResult](10)
    writer = Writer(store, run_id, events_send, flush_rows=2000, flush_seconds=1.0)
    done = trio.Event()

    async def run() -> None:
        await writer.run(results_recv)
        done.set()

    nursery.start_soon(run)
    return writer, results_send, events_recv, done


async def next_commit(events: trio.MemoryReceiveChannel[Event]) -> tuple[float, RowsCommitted]:
    while True:
        event = await events.receive()
        if isinstance(event, RowsCommitted):
            return trio.current_time(), event


async def test_flushes_when_enough_rows_wait(mock_clock: MockClock, tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        writer, results, events, _ = await start_writer(tmp_path, nursery)
        start = trio.current_time()
        await results.send(price_result(1, 1500))
        await results.send(price_result(2, 499))
        await trio.testing.wait_all_tasks_blocked()
        assert writer.flushes == 0  # 1,999 rows wait: not yet
        await results.send(price_result(3, 1))
        when, event = await next_commit(events)
        assert when == start  # on size, without waiting for the timer
        assert event.counts.new == 2000
        assert stored_prices(tmp_path / "w.db") == 2000
        await results.aclose()


async def test_flushes_one_second_after_the_first_waiting_result(
    mock_clock: MockClock, tmp_path: Path
) -> None:
    async with trio.open_nursery() as nursery:
        writer, results, events, _ = await start_writer(tmp_path, nursery)
        start = trio.current_time()
        await results.send(price_result(1, 10))
        await trio.sleep(0.6)
        await results.send(price_result(2, 10))  # does not restart the timer
        when, event = await next_commit(events)
        assert when == pytest.approx(start + 1.0)
        assert event.counts.new == 20 and writer.flushes == 1
        await results.aclose()


async def test_flushes_everything_at_close(mock_clock: MockClock, tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        writer, results, _, done = await start_writer(tmp_path, nursery)
        start = trio.current_time()
        await results.send(price_result(1, 7))
        await results.aclose()
        await done.wait()
        assert trio.current_time() == start  # at close, not on the timer
        assert writer.flushes == 1
        assert stored_prices(tmp_path / "w.db") == 7


async def test_cancelled_writer_commits_what_it_holds(
    mock_clock: MockClock, tmp_path: Path
) -> None:
    async with trio.open_nursery() as nursery:
        writer, results, _, _ = await start_writer(tmp_path, nursery)
        await results.send(price_result(1, 42))
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert writer.flushes == 1
    assert stored_prices(tmp_path / "w.db") == 42
    with sqlite3.connect(tmp_path / "w.db") as conn:
        assert (
            conn.execute("SELECT count(*) FROM ntx_jobs WHERE status = 'done'").fetchone()[0] == 1
        )
