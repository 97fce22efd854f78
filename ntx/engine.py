"""The backfill engine: one nursery, a capacity limiter, bounded channels, one writer.

    lists job ─► universe ─► lazy job plan ─► fetchers (≤ workers alive) ─► writer ─► SQLite
                                                  └──────────── events ───────────► printer

Invariants kept here: at most `workers` fetch tasks exist (a slot is taken before a task is
spawned, and given back when it ends); jobs are produced lazily and results travel over
bounded channels, so memory does not grow with the number of securities; a failing job is
recorded and never stops the others; nothing is written before the universe is known good.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import partial
from pathlib import Path

import trio

from ntx.datasets import (
    COMPANIES,
    DATASETS,
    HOLIDAYS,
    PRICES,
    Dataset,
    choose_universe,
    plan_jobs,
)
from ntx.db.store import BUSY_TIMEOUT, LIST_LEVEL, Store
from ntx.errors import FetchError, Interrupted, NotFound, NtxError, OutsideWindow, StoreError
from ntx.events import (
    DatasetPlanned,
    DatasetTotals,
    Event,
    Failure,
    JobFinished,
    JobStarted,
    PricesPlanned,
    Resumed,
    RunSummary,
)
from ntx.model import DateRange, Job, JobKey, JobResult, Row, Security, WriteCounts
from ntx.pace import Pace
from ntx.pace.throttle import RequestMeter, Slot
from ntx.price_plan import PricePlan, PricesBy, calendar_jobs, plan_prices
from ntx.sources import Source
from ntx.sources.nepse.wire import MarketOpen
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
    plan_key: str = ""  # runs with the same key resume each other
    plan_json: str = ""  # what --retry-failed needs to repeat this run's plan
    only: Mapping[str, AbstractSet[int]] | None = None  # --retry-failed: just these jobs
    max_age: Mapping[str, float] = field(default_factory=dict)  # snapshot -> seconds; 0: always
    prices_by: PricesBy = PricesBy.AUTO
    only_days: AbstractSet[date] | None = None  # --retry-failed: just these by-date jobs
    now: datetime = field(default_factory=lambda: datetime.now(UTC))  # for the ages

    def fresh_since(self, dataset: str) -> datetime | None:
        """The instant after which a fetch of `dataset` is recent enough not to repeat, or
        None when it is fetched on every run. An age within an hour (or 5%) of the maximum
        counts as reached, so a daily run whose start time wanders refreshes daily."""
        age = self.max_age.get(dataset, 0.0)
        if age <= 0 or self.force:
            return None
        return self.now - timedelta(seconds=age - min(3600.0, 0.05 * age))

    busy_timeout: float = BUSY_TIMEOUT
    flush_rows: int = FLUSH_ROWS
    flush_seconds: float = FLUSH_SECONDS


UNITS = {COMPANIES.name: "lists", HOLIDAYS.name: "calendar years"}  # else securities


class ListsUnavailable(NtxError):
    """The company or security list could not be fetched: there is no universe to work on."""


class Engine:
    """Runs one `RunPlan` against a source; see the module docstring for the shape."""

    def __init__(
        self,
        plan: RunPlan,
        pace: Pace,
        events: trio.MemorySendChannel[Event],
    ) -> None:
        """`pace.limiter` admits the fetchers and `pace.throttle` gates their requests;
        `--sleep auto` may change the limiter's `total_tokens` during the run."""
        self.plan = plan
        self._source: Source | None = None
        self._throttle = pace.throttle
        self._events = events
        self._limiter = pace.limiter
        calendar = (HOLIDAYS.name,) if PRICES.name in plan.datasets else ()
        self._totals = {
            name: DatasetTotals(name, DATASETS[name].title, unit=UNITS.get(name, "securities"))
            for name in (COMPANIES.name, *calendar, *plan.datasets)
        }
        self._price_plan: PricesPlanned | None = None
        self._failures: list[Failure] = []
        self._skips: list[Failure] = []
        self._outside: set[tuple[str, str]] = set()  # (dataset, label) asked before the window
        self._fetch_scope: trio.CancelScope | None = None
        self._same_source = False  # the database's last run read this plan's source
        self.interrupted = False

    def interrupt(self) -> None:
        """Stop fetching; what was fetched is still committed, and the run ends `interrupted`."""
        self.interrupted = True
        if self._fetch_scope is not None:
            self._fetch_scope.cancel()

    @contextmanager
    def _fetching(self) -> Iterator[None]:
        """A scope that `interrupt()` cancels: the fetchers', never the writer's."""
        with trio.CancelScope() as scope:
            if self.interrupted:
                scope.cancel()
            self._fetch_scope = scope
            try:
                yield
            finally:
                self._fetch_scope = None

    async def run(self, source: Source) -> RunSummary:
        """Carry out the plan against `source`; see the module docstring for the shape."""
        self._source = source
        started = trio.current_time()
        fetched = None
        with self._fetching():
            fetched = await self._fetch_universe()
        if fetched is None or self.interrupted:
            raise Interrupted("interrupted before anything was fetched; nothing changed")
        universe, lists_result = fetched
        return await self._run_with_store(universe, lists_result, started)

    async def _run_with_store(
        self, universe: list[Security], lists_result: JobResult | None, started: float
    ) -> RunSummary:
        store = await trio.to_thread.run_sync(
            partial(Store.open, self.plan.db_path, busy_timeout=self.plan.busy_timeout)
        )
        try:
            resumes: int | None = None
            done: dict[str, set[JobKey]] = {}
            if self.plan.plan_key:
                resumes, done = await trio.to_thread.run_sync(store.resumable, self.plan.plan_key)
            run_id = await trio.to_thread.run_sync(
                partial(
                    store.begin_run,
                    self.plan.command,
                    self.plan.source_name,
                    [COMPANIES.name, *self.plan.datasets],
                    plan_key=self.plan.plan_key,
                    plan=self.plan.plan_json,
                    resumes=resumes,
                )
            )
            if resumes is not None:
                await self._events.send(Resumed(resumes, sum(len(ids) for ids in done.values())))
            try:
                await self._run_jobs(store, run_id, universe, lists_result, done, resumes)
                without_open = 0
                if PRICES.name in self.plan.datasets:
                    without_open = await trio.to_thread.run_sync(
                        store.without_open, self.plan.period
                    )
                if self.interrupted:
                    status = "interrupted"
                else:
                    status = "completed" if not self._failures else "completed with failures"
            except BaseException as exc:
                status = "interrupted" if _is_interrupt(exc) else "failed"
                raise
            finally:
                with trio.CancelScope(shield=True):
                    try:
                        await trio.to_thread.run_sync(store.finish_run, run_id, status)
                    except StoreError:
                        if status != "failed":
                            raise
                        # the database is what failed: its error, raised already, is the news
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
            interrupted=self.interrupted,
            command=self.plan.command,
            window_starts=self._window_starts(),
            price_plan=self._price_plan,
            without_open=without_open,
        )

    def _window_starts(self) -> date | None:
        """The first day the server serves, by either endpoint, if the run met its edge."""
        if self._source is None:
            return None
        return self._source.window_starts() or self._source.window_starts(by_date=True)

    async def _fetch_universe(self) -> tuple[list[Security], JobResult | None]:
        """Stage one: the lists (or, while young enough, the stored ones, and no result to
        write). Unknown symbols stop the run here, before any write."""
        stored = await trio.to_thread.run_sync(self._fresh_lists)
        if stored:
            await self._announce(COMPANIES.name, jobs=0, up_to_date=1)
            return choose_universe(stored, self.plan.symbols, self.plan.all_instruments), None
        await self._announce(COMPANIES.name, jobs=1, up_to_date=0)
        async with self._limiter:
            meter = RequestMeter(self._throttle)
            result = await self._fetch(Job(COMPANIES.name), meter)
            await meter.rested()
        if not result.ok:
            raise ListsUnavailable(f"cannot fetch the security list: {result.error}")
        universe = choose_universe(result.rows, self.plan.symbols, self.plan.all_instruments)
        return universe, result

    def _fresh_lists(self) -> list[Row] | None:
        """The stored lists if they were fetched recently enough from this same source
        (blocking; reads only). Notes whether the database's last run read this source:
        ages count only fetches from it."""
        if not self.plan.db_path.is_file():
            return None
        try:
            store = Store.open_readonly(self.plan.db_path)
        except NtxError:
            return None  # not readable as it is (an older schema, say): fetch the lists
        try:
            last = store.last_run()
            self._same_source = last is not None and last["source"] == self.plan.source_name
            since = self.plan.fresh_since(COMPANIES.name)
            if not self._same_source or since is None:
                return None
            if LIST_LEVEL not in store.fetched_since(COMPANIES.name, since):
                return None
            return store.listing_rows()
        finally:
            store.close()

    async def _run_jobs(
        self,
        store: Store,
        run_id: int,
        universe: list[Security],
        lists_result: JobResult | None,
        done: Mapping[str, AbstractSet[JobKey]],
        resumes: int | None = None,
    ) -> None:
        only = self.plan.only
        coverage = {
            name: await trio.to_thread.run_sync(store.coverage, name)
            for name in self.plan.datasets
            if DATASETS[name].ranged
        }
        fresh: dict[str, set[int]] = {}
        for name in self.plan.datasets:
            since = self.plan.fresh_since(name)
            # ages count only fetches from this source, and --retry-failed fetches what
            # failed whatever the age of the last success
            if since is not None and self._same_source and only is None:
                fresh[name] = await trio.to_thread.run_sync(store.fetched_since, name, since)
        first_results = [lists_result] if lists_result is not None else []
        prices: PricePlan | None = None
        if PRICES.name in self.plan.datasets:
            calendar, holidays, market = await self._calendar(store, done)
            first_results += calendar
            prices = await self._plan_prices(
                store, run_id, universe, holidays, market, coverage.get(PRICES.name, {}), resumes
            )

        def jobs_of(name: str) -> Iterator[tuple[Job, ...]]:
            """Each security's jobs still to do (or, by date, each date's), without those
            the resumed runs did."""
            finished = done.get(name, frozenset())
            wanted = only.get(name, frozenset()) if only is not None else None
            planned = (
                iter(prices.jobs)
                if name == PRICES.name and prices is not None
                else plan_jobs(
                    DATASETS[name],
                    (sec for sec in universe if wanted is None or sec.id in wanted),
                    period=self.plan.period,
                    today=self.plan.today,
                    coverage=coverage.get(name, {}),
                    force=self.plan.force,
                    fresh=fresh.get(name, frozenset()),
                )
            )
            for jobs in planned:
                todo = tuple(job for job in jobs if job.key not in finished)
                if todo:
                    yield todo

        for name in self.plan.datasets:
            securities = count = 0
            for todo in jobs_of(name):
                securities += 1
                count += len(todo)
            if name == PRICES.name and prices is not None and prices.chosen == "date":
                await self._announce(name, count, prices.needed - securities, unit="sessions")
            else:
                await self._announce(name, jobs=count, up_to_date=len(universe) - securities)

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
                for result in first_results:
                    await send_results.send(result)
                with self._fetching():
                    async with trio.open_nursery() as fetchers:
                        for name in self.plan.datasets:
                            for jobs in jobs_of(name):
                                slot = object()
                                await self._limiter.acquire_on_behalf_of(slot)
                                fetchers.start_soon(self._fetch_and_send, jobs, slot, send_results)

    async def _calendar(
        self, store: Store, done: Mapping[str, AbstractSet[JobKey]]
    ) -> tuple[list[JobResult], set[date], MarketOpen | None]:
        """Stage two, when prices run: the holiday lists of the period's years that are not
        stored or are stale (in order, stopping at a failure: each covers the years before
        it), and the market's state, which the first token's handshake brings. Returns the
        results for the writer, the holidays known, and the market's state."""
        holidays = set(await trio.to_thread.run_sync(store.holidays))
        covered = None
        fetched = None
        if self._same_source:
            covered = (await trio.to_thread.run_sync(store.coverage, HOLIDAYS.name)).get(LIST_LEVEL)
            fetched = await trio.to_thread.run_sync(store.fetched_at, HOLIDAYS.name, LIST_LEVEL)
        since = self.plan.fresh_since(HOLIDAYS.name)
        finished = done.get(HOLIDAYS.name, frozenset())
        jobs = [
            job
            for job in calendar_jobs(self.plan.period, covered, fetched, since)
            if job.key not in finished
        ]
        years = self.plan.period.end.year - self.plan.period.start.year + 1
        await self._announce(HOLIDAYS.name, jobs=len(jobs), up_to_date=years - len(jobs))
        results: list[JobResult] = []
        market = None
        with self._fetching():
            async with self._limiter:
                rest = Slot()
                for job in jobs:
                    result = await self._fetch(job, RequestMeter(self._throttle, rest))
                    results.append(result)
                    if not result.ok:
                        break
                    holidays.update(date.fromisoformat(row[0]) for row in result.rows)
                meter = RequestMeter(self._throttle, rest)
                assert self._source is not None, "run() sets the source"
                with suppress(FetchError):
                    market = await self._source.bind(meter).market_day()
                self._totals[HOLIDAYS.name].requests += meter.count
                await rest.rested()
        return results, holidays, market

    async def _plan_prices(
        self,
        store: Store,
        run_id: int,
        universe: Sequence[Security],
        holidays: set[date],
        market: MarketOpen | None,
        coverage: Mapping[int, DateRange],
        resumes: int | None,
    ) -> PricePlan:
        """The cheaper way to fetch the missing prices (or the one asked for), announced
        and recorded with the run. Dates after the server's latest business date are not
        asked; that date itself is final once the market has closed on it. A run that
        resumes another keeps the way that one chose: what is left of a run by date costs
        less by security, and would come without opens."""
        today = self.plan.today
        last_day, final_through = today, today - timedelta(days=1)
        if market is not None and market.day is not None:
            last_day = market.day
            final_through = market.day if market.closed else market.day - timedelta(days=1)
        only = self.plan.only
        wanted = only.get(PRICES.name, frozenset()) if only is not None else None
        mode = self.plan.prices_by
        if resumes is not None and mode is PricesBy.AUTO:
            resumed = await trio.to_thread.run_sync(store.price_plan_of, resumes)
            if resumed is not None and resumed[0] in (PricesBy.DATE, PricesBy.SECURITY):
                mode = PricesBy(resumed[0])
        plan = plan_prices(
            [sec for sec in universe if wanted is None or sec.id in wanted],
            period=self.plan.period,
            today=today,
            last_day=last_day,
            final_through=final_through,
            holidays=holidays,
            dates_known=await trio.to_thread.run_sync(store.dates, PRICES.name),
            coverage=coverage,
            most_rows=await trio.to_thread.run_sync(store.rows_per_date, PRICES.name),
            mode=mode,
            force=self.plan.force,
            only_days=self.plan.only_days,
        )
        event = PricesPlanned(
            plan.chosen,
            plan.by_date,
            plan.by_security,
            plan.dates,
            plan.securities,
            plan.reason,
            plan.line,
        )
        self._price_plan = event
        await trio.to_thread.run_sync(store.note_price_plan, run_id, plan.chosen, plan.line)
        await self._events.send(event)
        return plan

    async def _fetch_and_send(
        self, jobs: tuple[Job, ...], slot: object, results: trio.MemorySendChannel[JobResult]
    ) -> None:
        """One security's jobs in order, each result sent before the next job starts (so the
        writer commits them in order). After a failure the later jobs are recorded as failed
        without being tried: their coverage would assume the failed one's rows."""
        try:
            rest = Slot()  # one slot's pace, across the security's jobs
            failed: Job | None = None
            for job in jobs:
                meter = RequestMeter(self._throttle, rest)
                blocked = f"not tried: {failed.ranges_text} failed before it" if failed else None
                result = await self._fetch(job, meter, blocked)
                # A finished job reaches the writer even if fetching is being interrupted; if
                # the writer itself is gone, the run is failing and its channel says so.
                with trio.CancelScope(shield=True), suppress(trio.BrokenResourceError):
                    await results.send(result)
                failed = failed or (None if result.ok else job)
            await rest.rested()  # the slot's rest after the last request overlaps the above
        finally:
            self._limiter.release_on_behalf_of(slot)

    async def _fetch(self, job: Job, meter: RequestMeter, blocked: str | None = None) -> JobResult:
        """One job, run while the caller holds a limiter slot: its requests (each through
        the throttle, paced by `meter`), then wire to rows. A `FetchError` becomes a failed
        result, and so does a `blocked` job, which is not tried. The caller waits for
        `meter.rested()` before giving the slot up."""
        spec = DATASETS[job.dataset]
        totals = self._totals[job.dataset]
        if totals.started_at is None:
            totals.started_at = trio.current_time()
        await self._events.send(JobStarted(job.dataset, job.label, job.ranges))
        assert self._source is not None, "run() sets the source"
        try:
            if blocked:
                raise FetchError(blocked)
            result = await self._fetch_within_window(spec, job, self._source.bind(meter))
        except NotFound as exc:
            result = JobResult(job, error=str(exc), skipped=True)
        except FetchError as exc:
            result = JobResult(job, error=str(exc))
        result.requests, result.retries = meter.count, meter.retries
        totals.requests += meter.count
        totals.retries += meter.retries
        totals.invalid += len(result.invalid)
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
                len(result.invalid),
                str(result.outside) if result.outside else None,
            )
        )
        return result

    async def _fetch_within_window(self, spec: Dataset, job: Job, source: Source) -> JobResult:
        """The job's rows, asked only for the days the server's history window holds: the
        job is cut to the window's first day once it is known (the source finds it when
        the server first refuses a date), and the days cut off are kept in the result."""
        assert self._source is not None, "run() sets the source"
        first = self._source.window_starts(by_date=job.day is not None)
        while True:
            cut, outside = job.within(first)
            if cut is None:
                return JobResult(job, outside=outside, window_starts=first)
            try:
                wire = await spec.fetch(source, cut)
            except OutsideWindow as exc:
                if exc.first == first:
                    raise  # the cut job was refused again: not a window the source knows
                first = exc.first
                continue
            valid, invalid = spec.split_valid(spec.to_rows(wire, cut), cut)
            return JobResult(cut, valid, invalid=invalid, outside=outside, window_starts=first)

    def _committed(self, result: JobResult, counts: WriteCounts) -> None:
        totals = self._totals[result.job.dataset]
        totals.rows.add(counts)
        key = (result.job.dataset, result.job.label)
        if result.outside is not None and key not in self._outside:
            self._outside.add(key)
            totals.outside += 1
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

    async def _announce(
        self, name: str, jobs: int, up_to_date: int, unit: str | None = None
    ) -> None:
        totals = self._totals[name]
        totals.jobs, totals.up_to_date = jobs, up_to_date
        totals.unit = unit or totals.unit
        await self._events.send(DatasetPlanned(name, totals.title, jobs, up_to_date, totals.unit))


def _is_interrupt(exc: BaseException) -> bool:
    if isinstance(exc, KeyboardInterrupt | trio.Cancelled):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return any(_is_interrupt(inner) for inner in exc.exceptions)
    return False
