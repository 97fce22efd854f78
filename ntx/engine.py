"""The backfill engine: one nursery, a capacity limiter, bounded channels, one writer.

    lists job ─► universe ─► lazy job plan ─► fetchers (≤ workers alive) ─► writer ─► SQLite
                                                  └──────────── events ───────────► printer

Invariants kept here: at most `workers` fetch tasks exist (a slot is taken before a task is
spawned, and given back when it ends); jobs are produced lazily and results travel over
bounded channels, so memory does not grow with the number of securities; a failing job is
recorded and never stops the others; nothing is written before the universe is known good.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import trio

from ntx.datasets import COMPANIES, DATASETS, plan_jobs, security_from_row, select_universe
from ntx.errors import FetchError, NotFound, NtxError
from ntx.events import (
    DatasetPlanned,
    DatasetTotals,
    Event,
    Failure,
    JobFinished,
    JobStarted,
    RunSummary,
)
from ntx.model import DateRange, Job, JobResult, Security, WriteCounts
from ntx.sources import Source
from ntx.store import Store
from ntx.throttle import RequestMeter, Throttle
from ntx.writer import FLUSH_ROWS, FLUSH_SECONDS, Writer


@dataclass(frozen=True)
class RunPlan:
    """What one backfill run is asked to do."""

    datasets: Sequence[str]  # per-security datasets, in run order; the lists always run
    db_path: Path
    period: DateRange
    today: date
    workers: int
    symbols: Sequence[str] = ()
    all_instruments: bool = False
    force: bool = False
    command: str = ""
    source_name: str = ""
    flush_rows: int = FLUSH_ROWS
    flush_seconds: float = FLUSH_SECONDS


class ListsUnavailable(NtxError):
    """The company or security list could not be fetched: there is no universe to work on."""


class Engine:
    """Runs one `RunPlan` against a source; see the module docstring for the shape."""

    def __init__(
        self,
        plan: RunPlan,
        source: Source,
        throttle: Throttle,
        events: trio.MemorySendChannel[Event],
    ) -> None:
        self.plan = plan
        self._source = source
        self._throttle = throttle
        self._events = events
        self._limiter = trio.CapacityLimiter(plan.workers)
        self._totals = {
            name: DatasetTotals(name, DATASETS[name].title)
            for name in (COMPANIES.name, *plan.datasets)
        }
        self._failures: list[Failure] = []
        self._skips: list[Failure] = []

    async def run(self) -> RunSummary:
        started = trio.current_time()
        universe, lists_result = await self._fetch_universe()
        store = await trio.to_thread.run_sync(Store.open, self.plan.db_path)
        try:
            run_id = await trio.to_thread.run_sync(
                store.begin_run,
                self.plan.command,
                self.plan.source_name,
                [COMPANIES.name, *self.plan.datasets],
            )
            status = "failed"
            try:
                await self._run_jobs(store, run_id, universe, lists_result)
                status = "completed" if not self._failures else "completed with failures"
            except BaseException as exc:
                status = "interrupted" if _is_interrupt(exc) else "failed"
                raise
            finally:
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(store.finish_run, run_id, status)
        finally:
            store.close()
        return RunSummary(
            run_id=run_id,
            db_path=self.plan.db_path,
            datasets=self._totals,
            failures=self._failures,
            requests=self._throttle.requests,
            elapsed=trio.current_time() - started,
            skips=self._skips,
            command=self.plan.command,
        )

    async def _fetch_universe(self) -> tuple[list[Security], JobResult]:
        """Stage one: the lists. Unknown symbols stop the run here, before any write."""
        await self._announce(COMPANIES.name, jobs=1, up_to_date=0)
        async with self._limiter:
            result = await self._fetch(Job(COMPANIES.name))
        if not result.ok:
            raise ListsUnavailable(f"cannot fetch the security list: {result.error}")
        securities = [security_from_row(row) for row in result.rows]
        universe = select_universe(securities, self.plan.symbols, self.plan.all_instruments)
        return universe, result

    async def _run_jobs(
        self, store: Store, run_id: int, universe: list[Security], lists_result: JobResult
    ) -> None:
        coverage = {
            name: await trio.to_thread.run_sync(store.coverage, name)
            for name in self.plan.datasets
            if DATASETS[name].ranged and not self.plan.force
        }

        def jobs_of(name: str) -> Iterator[Job]:
            return plan_jobs(
                DATASETS[name],
                universe,
                period=self.plan.period,
                today=self.plan.today,
                coverage=coverage.get(name, {}),
                force=self.plan.force,
            )

        for name in self.plan.datasets:
            count = sum(1 for _ in jobs_of(name))
            await self._announce(name, jobs=count, up_to_date=len(universe) - count)

        writer = Writer(
            store,
            run_id,
            self._events,
            on_commit=self._committed,
            flush_rows=self.plan.flush_rows,
            flush_seconds=self.plan.flush_seconds,
        )
        send_results, receive_results = trio.open_memory_channel[JobResult](self.plan.workers)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer.run, receive_results)
            async with send_results:
                await send_results.send(lists_result)
                async with trio.open_nursery() as fetchers:
                    for name in self.plan.datasets:
                        for job in jobs_of(name):
                            slot = object()
                            await self._limiter.acquire_on_behalf_of(slot)
                            fetchers.start_soon(self._fetch_and_send, job, slot, send_results)

    async def _fetch_and_send(
        self, job: Job, slot: object, results: trio.MemorySendChannel[JobResult]
    ) -> None:
        try:
            await results.send(await self._fetch(job))
        finally:
            self._limiter.release_on_behalf_of(slot)

    async def _fetch(self, job: Job) -> JobResult:
        """One job, run while the caller holds a limiter slot: its requests (each through
        the throttle), then wire to rows. A `FetchError` becomes a failed result."""
        spec = DATASETS[job.dataset]
        totals = self._totals[job.dataset]
        if totals.started_at is None:
            totals.started_at = trio.current_time()
        await self._events.send(JobStarted(job.dataset, job.label, job.ranges))
        meter = RequestMeter(self._throttle)
        try:
            wire = await spec.fetch(self._source.bind(meter), job)
            result = JobResult(job, spec.to_rows(wire, job))
        except NotFound as exc:
            result = JobResult(job, error=str(exc), skipped=True)
        except FetchError as exc:
            result = JobResult(job, error=str(exc))
        result.requests, result.retries = meter.count, meter.retries
        totals.requests += meter.count
        totals.retries += meter.retries
        totals.finished_at = trio.current_time()
        await self._events.send(
            JobFinished(
                job.dataset,
                job.label,
                len(result.rows),
                result.requests,
                result.error,
                result.retries,
                result.skipped,
            )
        )
        return result

    def _committed(self, result: JobResult, counts: WriteCounts) -> None:
        totals = self._totals[result.job.dataset]
        totals.rows.add(counts)
        if result.ok:
            totals.done += 1
            return
        failure = Failure(result.job.dataset, result.job.label, result.error or "unknown error")
        if result.skipped:
            totals.skipped += 1
            self._skips.append(failure)
        else:
            totals.failed += 1
            self._failures.append(failure)

    async def _announce(self, name: str, jobs: int, up_to_date: int) -> None:
        totals = self._totals[name]
        totals.jobs, totals.up_to_date = jobs, up_to_date
        await self._events.send(DatasetPlanned(name, totals.title, jobs, up_to_date))


def _is_interrupt(exc: BaseException) -> bool:
    if isinstance(exc, KeyboardInterrupt | trio.Cancelled):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return any(_is_interrupt(inner) for inner in exc.exceptions)
    return False
