"""The writer task: the only owner of the database during a run.

It batches job results and flushes when `flush_rows` rows wait, when the oldest waiting
result is `flush_seconds` old, and when its channel closes. Each flush is one transaction
(`Store.apply`). When the run is cancelled, the writer commits what it holds inside a
shielded scope before it lets the cancellation through, so nothing fetched is lost.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import suppress

import trio

from ntx.db.store import Store
from ntx.events import Event, RowsCommitted
from ntx.model import JobResult, WriteCounts

FLUSH_ROWS = 2000
FLUSH_SECONDS = 1.0


class Writer:
    """Commits job results in batches; `on_commit` hears of every committed result."""

    def __init__(
        self,
        store: Store,
        run_id: int,
        events: trio.MemorySendChannel[Event],
        *,
        on_commit: Callable[[JobResult, WriteCounts], None] = lambda result, counts: None,
        flush_rows: int = FLUSH_ROWS,
        flush_seconds: float = FLUSH_SECONDS,
    ) -> None:
        self._store = store
        self._run_id = run_id
        self._events = events
        self._on_commit = on_commit
        self._flush_rows = flush_rows
        self._flush_seconds = flush_seconds
        self._pending: list[JobResult] = []
        self._pending_rows = 0
        self.flushes = 0

    async def run(self, results: trio.MemoryReceiveChannel[JobResult]) -> None:
        """Consume `results` until it closes; every result received is committed."""
        deadline = math.inf
        try:
            async with results:
                while True:
                    with trio.move_on_at(deadline) as timer:
                        try:
                            result = await results.receive()
                        except trio.EndOfChannel:
                            break
                    if timer.cancelled_caught:
                        await self._flush()
                        deadline = math.inf
                        continue
                    if not self._pending:
                        deadline = trio.current_time() + self._flush_seconds
                    self._pending.append(result)
                    self._pending_rows += len(result.rows)
                    if self._pending_rows >= self._flush_rows:
                        await self._flush()
                        deadline = math.inf
        finally:
            with trio.CancelScope(shield=True):
                await self._flush(final=True)

    async def _flush(self, final: bool = False) -> None:
        batch, self._pending, self._pending_rows = self._pending, [], 0
        if not batch:
            return
        counts = await trio.to_thread.run_sync(self._store.apply, self._run_id, batch)
        self.flushes += 1
        per_dataset: dict[str, WriteCounts] = {}
        for result, written in zip(batch, counts, strict=True):
            self._on_commit(result, written)
            per_dataset.setdefault(result.job.dataset, WriteCounts()).add(written)
        for dataset, written in per_dataset.items():
            event = RowsCommitted(dataset, written)
            if final:
                # The printer may be gone or cancelled by now: never block a final flush on it.
                with suppress(trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                    self._events.send_nowait(event)
            else:
                await self._events.send(event)
