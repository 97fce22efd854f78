"""One `ntx backfill`, wired together: the database lock, signal handling, the demo exchange
(if asked), the HTTP client, the engine and the progress printer, in one trio nursery.

Signals: the first SIGINT or SIGTERM stops fetching; the writer commits everything already
fetched and the run ends `interrupted` (exit 130). A second one exits at once; SQLite's
transactions keep the database consistent, and a re-run resumes.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from datetime import date
from functools import partial
from typing import Any

import trio

from ntx.datasets import PER_SECURITY, PRICES
from ntx.db.lock import exclusive
from ntx.db.store import Store, check_path
from ntx.engine import Engine, RunPlan
from ntx.errors import EXIT_INTERRUPTED, NtxError, UsageError
from ntx.events import Event, Handshook, Paused, RunFinished, RunStarted, RunSummary
from ntx.model import DateRange
from ntx.net.client import open_client, site_headers
from ntx.pace import Pace
from ntx.price_plan import PricesBy
from ntx.settings import BackfillSettings
from ntx.sources.nepse.session import ModuleCache, Session
from ntx.sources.nepse.source import NepseSource
from ntx.ui.printer import Renderer, run_printer

EVENT_BUFFER = 1024


class NothingToRetry(NtxError):
    """--retry-failed found no failed job: there is nothing to do, which is not an error."""

    exit_code = 0


async def run_backfill(settings: BackfillSettings, renderer: Renderer, command: str) -> RunSummary:
    """Run one backfill to its end; the printer renders it and prints the summary."""
    # Before any fetch: a bad --db is a usage error, a locked one a clear error, not a crash later.
    check_path(settings.db, busy_timeout=settings.busy_timeout)
    with exclusive(settings.db, command):
        plan = make_plan(settings, command)
        send, receive = trio.open_memory_channel[Event](EVENT_BUFFER)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_printer, receive, renderer)
            async with send:
                summary = await _run(settings, plan, send)
                await send.send(RunFinished(summary))
        return summary


def source_identity(settings: BackfillSettings) -> str:
    """What a plan is fetched from, stable across runs (the demo's port is not)."""
    if settings.demo is not None:
        return f"demo:seed={settings.demo.seed},securities={settings.demo.securities}"
    return settings.api or ""


def make_plan(settings: BackfillSettings, command: str) -> RunPlan:
    """The run's plan: from the flags, or for --retry-failed from the last run's record."""
    plan: dict[str, Any] = {
        "source": source_identity(settings),
        "datasets": list(settings.datasets),
        "symbols": list(settings.symbols),
        "all_instruments": settings.all_instruments,
        "from": settings.period.start.isoformat(),
        "to": settings.period.end.isoformat(),
        "force": settings.force,
        "max_age": dict(settings.max_age),
        "prices_by": settings.prices_by.value,
    }
    only = None
    only_days = None
    key = None
    if settings.retry_failed:
        plan, only, only_days, last_id = _failed_of_last_run(settings)
        key = f"retry-failed:{last_id}"
    plan_json = json.dumps(plan, sort_keys=True)
    return RunPlan(
        datasets=tuple(plan["datasets"]),
        db_path=settings.db,
        period=DateRange.parse(plan["from"], plan["to"]),
        today=settings.today,
        workers=settings.workers,
        symbols=tuple(plan["symbols"]),
        all_instruments=plan["all_instruments"],
        force=plan["force"],
        max_age=plan.get("max_age", {}),
        prices_by=PricesBy(plan.get("prices_by", PricesBy.AUTO)),
        only_days=only_days,
        command=command,
        source_name=source_identity(settings),
        busy_timeout=settings.busy_timeout,
        plan_key=key or plan_json,  # runs of the same plan resume each other
        plan_json=plan_json,
        only=only,
    )


def _failed_of_last_run(
    settings: BackfillSettings,
) -> tuple[dict[str, Any], dict[str, set[int]], set[date], int]:
    """The last run's plan, its failed jobs per dataset (securities; and the business dates
    of failed by-date price jobs), and its id."""
    if not settings.db.is_file():
        raise UsageError(f"--retry-failed: {settings.db} has no runs yet")
    store = Store.open(settings.db, busy_timeout=settings.busy_timeout)
    try:
        last = store.last_run()
        if last is None or not last.get("plan"):
            raise UsageError(f"--retry-failed: {settings.db} has no run to repeat")
        failed: dict[str, set[int]] = {}
        days: set[date] = set()
        for dataset, security_id, ranges, status, _ in store.unfinished_jobs(last["id"]):
            if status != "failed":
                continue
            if security_id is not None:
                failed.setdefault(dataset, set()).add(security_id)
            elif dataset == PRICES.name and ranges:
                days.add(date.fromisoformat(ranges[:10]))  # a by-date job: one day
    finally:
        store.close()
    if not failed and not days:
        raise NothingToRetry(f"run {last['id']} has no failed jobs: nothing to retry")
    plan: dict[str, Any] = json.loads(last["plan"])
    plan["datasets"] = [
        name for name in PER_SECURITY if name in failed or (name == PRICES.name and days)
    ]
    failed.setdefault(PRICES.name, set())
    return plan, failed, days, last["id"]


async def _watch_signals(engine: Engine, *, task_status: trio.TaskStatus[None]) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        task_status.started()
        async for _ in signals:
            if not engine.interrupted:
                engine.interrupt()
                continue
            sys.stderr.write(
                "\nntx: interrupted again: exiting now. The database is consistent;"
                " run the same command to resume.\n"
            )
            if sys.stdout.isatty():
                sys.stdout.write("\x1b[?25h")  # the live display hides the cursor
            sys.stdout.flush()
            os._exit(EXIT_INTERRUPTED)


async def _run(
    settings: BackfillSettings, plan: RunPlan, events: trio.MemorySendChannel[Event]
) -> RunSummary:
    async def announce_pause(seconds: float, reason: str) -> None:
        await events.send(Paused(seconds, reason))

    async def announce_handshake(number: int, reason: str) -> None:
        await events.send(Handshook(number, reason))

    pace = Pace(
        workers=settings.workers,
        sleep=settings.sleep,
        rate=settings.rate,
        auto=settings.auto_pace,
        retries=settings.retries,
        notify=announce_pause,
    )
    engine = Engine(plan, pace, events)
    async with trio.open_nursery() as services:
        await services.start(_watch_signals, engine)
        services.start_soon(pace.run, events.send)
        if settings.demo is not None:
            # imported here: the demo's HTTP server (hypercorn) is not needed by a backfill
            # from a real API
            from ntx.demo.faults import build_demo_app
            from ntx.demo.server import serve

            app = build_demo_app(settings.demo, settings.today)
            base_url = await services.start(partial(serve, app))
            source_name = f"the demo exchange at {base_url}"
        else:
            assert settings.api is not None
            base_url = source_name = settings.api

        await events.send(
            RunStarted(
                source_name,
                settings.db,
                settings.workers,
                settings.sleep,
                settings.rate,
                auto=settings.auto_pace,
            )
        )
        client = open_client(
            base_url,
            workers=pace.max_workers,  # a connection per slot
            timeout=settings.timeout,
            verify=not settings.insecure,
            ca_bundle=settings.ca_bundle,
            chain_cache=settings.cache_dir / "chains" if settings.cache_dir else None,
            headers=site_headers(base_url, settings.user_agent, settings.headers),
        )
        modules = ModuleCache(
            settings.cache_dir / "modules" if settings.cache_dir else None, plan.source_name
        )  # the cache folder holds nothing secret: modules and public certificates
        source = NepseSource(
            client,
            pace.throttle,
            pace.policy,
            session=Session(max_age=settings.token_max_age, announce=announce_handshake),
            modules=modules,
        )
        async with client:
            summary = await engine.run(source)
        summary.handshakes = source.session.handshakes
        summary.advice = pace.advice(trio.current_time())
        services.cancel_scope.cancel()
    return summary
