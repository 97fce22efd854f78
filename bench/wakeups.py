"""CPU a trio wake-up costs on this machine, slow-paced and busy, with no ntx code at all.

    .venv/bin/python bench/wakeups.py

A slow-paced backfill (answers 12 ms apart on average at N=5 S=0.2 L=50 ms) spends more CPU
per request than a busy one doing the same work. This shows the machine's part of that:
first tasks that only sleep, then the same fixed piece of Python work (decode a small JSON
answer, build rows from it) done back to back and done after every 12.5 ms sleep.
"""

from __future__ import annotations

import json
import resource

import trio

ANSWER = json.dumps(
    [{"id": i, "name": f"n{i}", "v": [i * 1.5, i * 2.5, f"{i}"]} for i in range(60)]
)


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def cpu_per_wakeup(tasks: int, sleep: float, wakeups: int) -> float:
    """Milliseconds of CPU (user + system) per wake-up of `tasks` tasks sleeping `sleep` s."""

    async def sleeper() -> None:
        for _ in range(wakeups // tasks):
            await trio.sleep(sleep)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            for _ in range(tasks):
                nursery.start_soon(sleeper)

    before = cpu_seconds()
    trio.run(main)
    return (cpu_seconds() - before) / wakeups * 1000


def work() -> int:
    """A fixed piece of the kind of Python work a request costs."""
    rows = [(r["id"], r["name"], r["v"][0] + r["v"][1], r["v"][2]) for r in json.loads(ANSWER)]
    groups: dict[int, list[tuple[int, str, float, str]]] = {}
    for row in rows:
        groups.setdefault(row[0] % 7, []).append(row)
    return len(groups)


def cpu_per_work(sleep: float, times: int) -> float:
    """Milliseconds of CPU per `work()` (three calls) done `times` times, `sleep` s apart."""

    async def main() -> None:
        for _ in range(times):
            work(), work(), work()
            await trio.sleep(sleep)

    before = cpu_seconds()
    trio.run(main)
    return (cpu_seconds() - before) / times * 1000


if __name__ == "__main__":
    slow = cpu_per_wakeup(tasks=5, sleep=0.25, wakeups=500)
    busy = cpu_per_wakeup(tasks=16, sleep=0.0, wakeups=20_000)
    print(f"5 tasks sleeping 0.25 s: {slow:.3f} ms CPU per wake-up (500 wake-ups, 25 s)")
    print(f"16 tasks not sleeping:   {busy:.3f} ms CPU per wake-up (20,000 wake-ups)")
    print(f"ratio: {slow / busy:.0f}x")
    warm = cpu_per_work(sleep=0, times=4000)
    cold = cpu_per_work(sleep=0.0125, times=400)
    print(f"the same Python work back to back:      {warm:.3f} ms CPU")
    print(f"the same Python work after 12.5 ms asleep: {cold:.3f} ms CPU ({cold / warm:.1f}x)")
