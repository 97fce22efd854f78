"""One `ntx backfill`, wired together: the demo exchange (if asked), the HTTP client, the
engine and the progress printer, all in one trio nursery."""

from __future__ import annotations

from functools import partial

import trio

from ntx.demo.faults import build_demo_app
from ntx.demo.server import serve
from ntx.engine import Engine, RunPlan
from ntx.events import Event, Paused, RunFinished, RunStarted, RunSummary
from ntx.progress import Renderer, run_printer
from ntx.retry import CircuitBreaker, RetryPolicy
from ntx.settings import BackfillSettings
from ntx.sources.nepse import NepseSource, open_client
from ntx.store import check_path
from ntx.throttle import Throttle

EVENT_BUFFER = 1024


async def run_backfill(settings: BackfillSettings, renderer: Renderer, command: str) -> RunSummary:
    """Run one backfill to its end; the printer renders it and prints the summary."""
    check_path(settings.db)  # before any fetch: a bad --db is a usage error, not a crash later
    send, receive = trio.open_memory_channel[Event](EVENT_BUFFER)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_printer, receive, renderer)
        async with send:
            summary = await _run(settings, send, command)
            await send.send(RunFinished(summary))
    return summary


async def _run(
    settings: BackfillSettings, events: trio.MemorySendChannel[Event], command: str
) -> RunSummary:
    async with trio.open_nursery() as services:
        if settings.demo is not None:
            app = build_demo_app(settings.demo, settings.today)
            base_url = await services.start(partial(serve, app))
            source_name = f"the demo exchange at {base_url}"
        else:
            assert settings.api is not None
            base_url = source_name = settings.api
        throttle = Throttle(settings.sleep)

        async def announce_pause(seconds: float, reason: str) -> None:
            await events.send(Paused(seconds, reason))

        policy = RetryPolicy(
            throttle,
            retries=settings.retries,
            breaker=CircuitBreaker(throttle),
            notify=announce_pause,
        )
        plan = RunPlan(
            datasets=settings.datasets,
            db_path=settings.db,
            period=settings.period,
            today=settings.today,
            workers=settings.workers,
            symbols=settings.symbols,
            all_instruments=settings.all_instruments,
            force=settings.force,
            command=command,
            source_name=source_name,
        )
        await events.send(RunStarted(source_name, settings.db, settings.workers, settings.sleep))
        client = open_client(
            base_url,
            workers=settings.workers,
            timeout=settings.timeout,
            verify=not settings.insecure,
        )
        async with client:
            source = NepseSource(client, throttle, policy)
            summary = await Engine(plan, source, throttle, events).run()
        services.cancel_scope.cancel()
    return summary
