"""Resume after interruption at any point: interrupt a run after k committed flushes (for
many k, and chains of interruptions); re-running gives the database an uninterrupted run
gives. Real engine, source and SQLite; the network is the demo in memory."""

from __future__ import annotations

import sqlite3
import tempfile
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ntx.datasets import DATASETS, MAX_JOB_DAYS, PER_SECURITY
from ntx.demo.market import Market
from ntx.engine import Engine, RunPlan
from ntx.errors import EXIT_INTERRUPTED
from ntx.events import Event, RowsCommitted, RunSummary
from ntx.model import DateRange
from ntx.net.client import open_client
from ntx.pace import Pace
from ntx.price_plan import PricesBy
from ntx.sources.nepse.source import NepseSource
from tests.helpers import TODAY, default_universe, expected_tables, mock_network, table

MARKET = Market(seed=9, securities=24, today=TODAY)
PERIOD = DateRange(date(2024, 1, 1), TODAY)
TABLES = [spec.table.name for spec in DATASETS.values()]


async def run_once(
    db: Path, interrupt_after: int | None = None, by: PricesBy = PricesBy.SECURITY
) -> tuple[RunSummary, int]:
    """One backfill, fetching prices `by` date or by security (each way on its own: under
    auto, a re-run of a database complete by security may fill by date the sessions before
    a late listing, which by security are asked again each run); with `interrupt_after`,
    interrupted after that many commits."""
    pace = Pace(workers=4, sleep=0)
    throttle = pace.throttle
    plan = RunPlan(
        datasets=PER_SECURITY,
        db_path=db,
        period=PERIOD,
        today=TODAY,
        workers=4,
        plan_key="resume-test",
        prices_by=by,
        flush_rows=150,
        flush_seconds=0.05,
    )
    send, receive = trio.open_memory_channel[Event](0)
    engine = Engine(plan, pace, send)
    commits = 0

    async def watch() -> None:
        nonlocal commits
        async for event in receive:
            if isinstance(event, RowsCommitted):
                commits += 1
                if interrupt_after is not None and commits >= interrupt_after:
                    engine.interrupt()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch)
        async with send:
            transport = mock_network(MARKET, latency=0.0005)
            async with open_client(
                "http://demo.test", workers=4, timeout=30, transport=transport
            ) as client:
                summary = await engine.run(NepseSource(client, throttle))
    return summary, commits


def tables(db: Path) -> dict[str, list[Any]]:
    with sqlite3.connect(db) as conn:
        return {
            name: conn.execute(f"SELECT * FROM {name} ORDER BY 1, 2").fetchall() for name in TABLES
        }


@pytest.fixture(scope="module", params=[PricesBy.SECURITY, PricesBy.DATE])
def reference(request: pytest.FixtureRequest) -> tuple[dict[str, list[Any]], int, PricesBy]:
    """The database of one uninterrupted run, how many commits it took, and the price plan."""
    folder = Path(tempfile.mkdtemp())
    summary, commits = trio.run(run_once, folder / "ref.db", None, request.param)
    assert summary.exit_code == 0
    assert summary.price_plan is not None and summary.price_plan.chosen == request.param
    return tables(folder / "ref.db"), commits, request.param


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_interrupted_at_any_commit_then_resumed_equals_uninterrupted(
    reference: tuple[dict[str, list[Any]], int, PricesBy], data: st.DataObject
) -> None:
    expected, total_commits, by = reference
    assert total_commits > 10  # enough flushes for the interruption points to matter
    stops = data.draw(
        st.lists(st.integers(1, total_commits), min_size=1, max_size=3), label="stops"
    )
    db = Path(tempfile.mkdtemp()) / "r.db"
    for stop in stops:
        summary, _ = trio.run(run_once, db, stop, by)
        assert summary.interrupted or summary.exit_code == 0  # it may finish before the stop
        if summary.interrupted:
            assert summary.exit_code == EXIT_INTERRUPTED
    summary, _ = trio.run(run_once, db, None, by)
    assert summary.exit_code == 0
    assert tables(db) == expected
    with sqlite3.connect(db) as conn:
        statuses = [row[0] for row in conn.execute("SELECT status FROM ntx_runs ORDER BY id")]
        # a by-security job holds its security's rows; a by-date one (no security) its day's
        done_without_rows = conn.execute(
            "SELECT count(*) FROM ntx_jobs j WHERE j.status = 'done' AND j.dataset = 'prices' AND"
            " j.rows > (SELECT count(*) FROM prices p WHERE CASE WHEN j.security_id IS NULL"
            " THEN p.date = substr(j.ranges, 1, 10) ELSE p.security_id = j.security_id END)"
        ).fetchone()[0]
        done_jobs = conn.execute(
            "SELECT count(*) FROM ntx_jobs WHERE status = 'done' AND dataset = 'prices'"
        ).fetchone()[0]
    assert statuses[-1] == "completed"
    assert done_jobs > 0 and done_without_rows == 0  # a job is done only with its rows


LONG = DateRange(date(2016, 7, 1), TODAY)


async def run_long(db: Path, fail_from: date | None = None) -> tuple[RunSummary, list[str]]:
    """Ten years of prices for every default security; with `fail_from`, every history request
    whose range starts that day answers 500. Returns the summary and the ranges asked for."""
    asked: list[str] = []
    inner = mock_network(MARKET, latency=0)

    async def handler(request: httpx.Request) -> httpx.Response:
        start = request.url.params.get("startDate")
        if "/market/history/" in request.url.path:
            asked.append(f"{request.url.path.rsplit('/', 1)[1]}:{start}")
            if fail_from is not None and start == fail_from.isoformat():
                return httpx.Response(500, text="boom")
        return await inner.handle_async_request(request)

    pace = Pace(workers=4, sleep=0)
    plan = RunPlan(datasets=["prices"], db_path=db, period=LONG, today=TODAY, workers=4)
    send, receive = trio.open_memory_channel[Event](0)

    async def drain() -> None:
        async for _ in receive:
            pass

    async with trio.open_nursery() as nursery:
        nursery.start_soon(drain)
        async with (
            send,
            open_client(
                "http://demo.test", workers=4, timeout=30, transport=httpx.MockTransport(handler)
            ) as client,
        ):
            summary = await Engine(plan, pace, send).run(NepseSource(client, pace.throttle))
    return summary, asked


async def test_a_long_history_is_stored_in_parts_in_order_and_resumes_after_a_failed_one(
    tmp_path: Path,
) -> None:
    db = tmp_path / "long.db"
    parts = LONG.split(MAX_JOB_DAYS)
    assert len(parts) >= 4  # ten years are several jobs per security
    summary, _ = await run_long(db, fail_from=parts[2].start)
    assert summary.exit_code == 1  # the third part failed for every security
    with sqlite3.connect(db) as conn:
        jobs = conn.execute(
            "SELECT ranges, status, reason FROM ntx_jobs WHERE dataset = 'prices'"
            " AND security_id = ? ORDER BY rowid",
            (default_universe(MARKET)[0],),
        ).fetchall()
        by_security = conn.execute(
            "SELECT c.security_id, c.covered_from, c.covered_to, min(p.date) FROM ntx_coverage c"
            " JOIN prices p USING (security_id) WHERE c.dataset = 'prices'"
            " GROUP BY c.security_id"
        ).fetchall()
    covered_by_id = {sid: (start, end, first) for sid, start, end, first in by_security}
    covered = list(covered_by_id.values())
    assert [status for _, status, _ in jobs] == ["done", "done"] + ["failed"] * (len(parts) - 2)
    assert [ranges for ranges, _, _ in jobs] == [str(part) for part in parts]
    assert all("not tried" in reason for _, _, reason in jobs[3:])  # never fetched
    # what the done parts hold: from the start asked, or from the first row of a security
    # listed more than a month after it
    late = str(LONG.start + timedelta(days=31))
    assert covered and all(
        (start, end) == (first if first > late else str(LONG.start), str(parts[1].end))
        for start, end, first in covered
    )

    summary, asked = await run_long(db)
    assert summary.exit_code == 0
    universe = default_universe(MARKET)
    assert table(db, "prices") == expected_tables(MARKET, LONG, universe)["prices"]
    starts = {entry.split(":")[1] for entry in asked}
    assert str(parts[2].start) in starts  # the rest
    # the first part again only for the securities whose rows begin well after it
    late_ids = {str(sid) for sid, (_, _, first) in covered_by_id.items() if first > late}
    again = {entry.split(":")[0] for entry in asked if entry.endswith(f":{parts[0].start}")}
    assert late_ids and again == late_ids  # the market has such securities
