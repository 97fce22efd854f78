"""The server's history window: the first day whose daily history it serves.

The exchange keeps about a year of daily history; a history request that starts before it
answers HTTP 500 `Searched Date is not valid.` (`DateNotServed`). The first day it accepts is
found once per run, by a binary search over the start date between a refused day and an
accepted one: about log2(days between them) requests, made by one worker while any other
that needs the answer waits for it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import date, timedelta

import trio

Accepts = Callable[[date], Awaitable[bool]]  # does the server accept a start on this day?


class HistoryWindow:
    """The run's knowledge of the window, shared by every worker: `first` once found."""

    def __init__(self) -> None:
        self.first: date | None = None
        self._lock = trio.Lock()

    async def find(self, accepts: Accepts, refused: date, newest: date) -> date:
        """The window's first day, searched for (once per run) between `refused`, a start the
        server refused, and `newest`, the newest day it could serve."""
        async with self._lock:
            if self.first is None:
                self.first = await first_accepted(accepts, refused, newest)
            return self.first


async def first_accepted(accepts: Accepts, refused: date, newest: date) -> date:
    """The first day after `refused` that `accepts`, for a server that accepts every day
    from some first day on and none before it; the day after `newest` if even `newest` is
    refused. Asks `accepts` at most about log2((newest - refused).days) + 1 times."""
    if newest <= refused or not await accepts(newest):
        return max(newest, refused) + timedelta(days=1)
    low, high = refused, newest  # low is refused, high accepted
    while (high - low).days > 1:
        middle = low + (high - low) // 2
        if await accepts(middle):
            high = middle
        else:
            low = middle
    return high
