"""The progress printer: the only task that writes to the terminal during a run.

Renderers turn events into output: `RichRenderer` (live bars, for a terminal),
`PlainRenderer` (one line per step, for pipes and logs) and `JsonRenderer` (one JSON object
per event, for programs). They only display; what happened is decided by the engine.
"""

from __future__ import annotations

import sys
from typing import Protocol, TextIO

import trio
from rich.console import Console

from ntx.events import Event
from ntx.ui.lines import JsonRenderer, PlainRenderer
from ntx.ui.live import RichRenderer


class Renderer(Protocol):
    """Shows a run's events. `refresh_every`: seconds between redraws while no event comes
    (a live display's rates and ETAs move on their own); `math.inf` for one that only
    writes what events say, which then never wakes the printer for nothing."""

    refresh_every: float

    def handle(self, event: Event) -> None: ...
    def refresh(self) -> None: ...
    def close(self) -> None: ...


async def run_printer(events: trio.MemoryReceiveChannel[Event], renderer: Renderer) -> None:
    """Render events until the channel closes, refreshing every `renderer.refresh_every`."""
    every = renderer.refresh_every
    next_refresh = trio.current_time() + every
    try:
        async with events:
            while True:
                with trio.move_on_at(next_refresh):
                    try:
                        renderer.handle(await events.receive())
                        while True:  # and what else has arrived, without a wait each
                            renderer.handle(events.receive_nowait())
                    except trio.WouldBlock:
                        pass
                    except trio.EndOfChannel:
                        break
                if trio.current_time() >= next_refresh:
                    renderer.refresh()
                    next_refresh = trio.current_time() + every
    finally:
        renderer.close()


def choose_renderer(mode: str, out: TextIO | None = None) -> Renderer:
    """`auto` is rich on a terminal and plain lines otherwise."""
    out = out or sys.stdout
    if mode == "auto":
        mode = "rich" if out.isatty() else "plain"
    if mode == "rich":
        return RichRenderer(Console(file=out, force_terminal=True))
    if mode == "json":
        return JsonRenderer(out)
    return PlainRenderer(out)
