"""CPU a bare trio wake-up costs on this machine, slow-paced and busy.

    .venv/bin/python bench/wakeups.py

A slow-paced backfill (answers 250 ms apart) spends more CPU per request than a busy one
doing the same work; this shows the machine's part of that with no ntx code at all: tasks
that only sleep, then tasks that only yield.
"""

from __future__ import annotations

import resource

import trio


def cpu_per_wakeup(tasks: int, sleep: float, wakeups: int) -> float:
    """Milliseconds of CPU (user + system) per wake-up of `tasks` tasks sleeping `sleep` s."""

    async def sleeper() -> None:
        for _ in range(wakeups // tasks):
            await trio.sleep(sleep)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            for _ in range(tasks):
                nursery.start_soon(sleeper)

    before = resource.getrusage(resource.RUSAGE_SELF)
    trio.run(main)
    after = resource.getrusage(resource.RUSAGE_SELF)
    seconds = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return seconds / wakeups * 1000


if __name__ == "__main__":
    slow = cpu_per_wakeup(tasks=5, sleep=0.25, wakeups=500)
    busy = cpu_per_wakeup(tasks=16, sleep=0.0, wakeups=20_000)
    print(f"5 tasks sleeping 0.25 s: {slow:.3f} ms CPU per wake-up (500 wake-ups, 25 s)")
    print(f"16 tasks not sleeping:   {busy:.3f} ms CPU per wake-up (20,000 wake-ups)")
    print(f"ratio: {slow / busy:.0f}x")
