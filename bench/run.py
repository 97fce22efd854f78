"""ntx's benchmark: real `ntx backfill` processes against the demo exchange in its own
process, one table of figures, each a ratio measured in this one run (the machine is shared
and noisy: compare figures of one run, not across runs). Beside ntx's throughput figures,
the floor: the same requests from bench/floor.py, a bare trio client with no ntx code.

    .venv/bin/python bench/run.py            # the full table (a few minutes)
    .venv/bin/python bench/run.py --quick    # smaller runs, same figures, rougher

Not part of bin/test: it measures, it does not pass or fail.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ntx.datasets import PRICES  # noqa: E402
from ntx.db.store import Store  # noqa: E402
from ntx.demo.market import Market  # noqa: E402
from ntx.model import DateRange, Job, JobResult, Security  # noqa: E402
from ntx.nepal import one_year_before  # noqa: E402

PYTHON = sys.executable
PAST = ("--from", "2024-01-01", "--to", "2025-06-30")  # fixed: a re-run has nothing new to find


@dataclass
class Run:
    """One `ntx backfill` process: its summary, wall time, CPU seconds and peak memory."""

    summary: dict[str, Any]
    wall: float
    cpu: float
    peak_rss_mb: float


class Demo:
    """`ntx demo serve` in its own process, so its CPU is not the client's."""

    def __init__(
        self,
        securities: int,
        latency_ms: float,
        rate_limit: float | None = None,
        *,
        window_days: int = 0,
        today: date | None = None,
        port: int = 0,
        limiter: tuple[str, ...] = (),
    ) -> None:
        args = [
            PYTHON,
            "-m",
            "ntx",
            "demo",
            "serve",
            "--port",
            str(port),
            "--securities",
            str(securities),
            "--latency-ms",
            str(latency_ms),
            # the memory and re-run figures ask for ten years of history, which the demo
            # (like the exchange) serves only when told to; tokens outlive a run, so that
            # bench/floor.py needs one handshake (ntx still renews its own every 45 s)
            "--window-days",
            str(window_days),
            "--token-ttl",
            "3600",
        ]
        if today is not None:
            args += ["--today", today.isoformat()]
        if rate_limit:
            args += ["--rate-limit", str(rate_limit), *limiter]
        self.proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        match = re.search(r"(http://127\.0\.0\.1:\d+)", line)
        if not match:
            raise SystemExit(f"the demo exchange did not start: {line!r}")
        self.url = match.group(1)

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def backfill(url: str, db: Path, *args: str, failed_jobs_ok: bool = False) -> Run:
    """Run one `ntx backfill` with JSON progress; its last line is the summary. With
    `failed_jobs_ok`, exit 1 (jobs failed after their retries) is a result, not an error."""
    command = [
        PYTHON,
        "-m",
        "ntx",
        "backfill",
        "--api",
        url,
        "--db",
        str(db),
        "--progress",
        "json",
        *args,
    ]
    ok = (0, 1) if failed_jobs_ok else (0,)
    return measured(command, lambda last: json.loads(last)["summary"], ok)


def floor(url: str, workers: int, sleep: float, rate: float | None = None) -> Run:
    """The same requests from bench/floor.py: a bare trio client, no ntx code (with `rate`:
    spaced evenly at it)."""
    script = str(ROOT / "bench" / "floor.py")
    command = [PYTHON, script, url, "--workers", str(workers), "--sleep", str(sleep)]
    return measured(command + (["--rate", str(rate)] if rate else []), json.loads)


def measured(
    command: list[str], summary_of: Callable[[str], dict[str, Any]], ok: tuple[int, ...] = (0,)
) -> Run:
    """Run `command`; `os.wait4` gives exactly this process's CPU time and peak RSS, and
    `summary_of` reads its summary from the last line it printed."""
    started = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    assert proc.stdout is not None and proc.stderr is not None
    peak = PeakMemory(proc.pid)
    out = proc.stdout.read()
    err = proc.stderr.read()
    peak.stop()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    if proc.returncode not in ok:
        program = " ".join(Path(part).name for part in command[1:3])
        raise SystemExit(f"{program} failed ({proc.returncode}): {err.decode()[-500:]}")
    summary = summary_of(out.decode().strip().splitlines()[-1])
    return Run(summary, wall, usage.ru_utime + usage.ru_stime, peak.mb)


class PeakMemory:
    """Samples a process's VmHWM until it ends. (Not ru_maxrss: that survives exec, so a
    child would report this benchmark's own memory, which it had when it was forked.)"""

    def __init__(self, pid: int) -> None:
        self._path = Path(f"/proc/{pid}/status")
        self._done = threading.Event()
        self.kb = 0
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._done.is_set():
            try:
                for line in self._path.read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        self.kb = max(self.kb, int(line.split()[1]))
            except OSError:
                return
            time.sleep(0.02)

    def stop(self) -> None:
        self._done.set()
        self._thread.join()

    @property
    def mb(self) -> float:
        return self.kb / 1024


def requests_per_second(run: Run) -> float:
    return run.summary["requests"] / run.summary["elapsed"]


def throughput(
    workers: int, sleep: float, latency_ms: float, securities: int, tmp: Path
) -> tuple[Run, Run]:
    """ntx's run, then the floor's (bench/floor.py) against the same demo process."""
    demo = Demo(securities, latency_ms)
    try:
        run = backfill(
            demo.url,
            tmp / f"t{workers}.db",
            "--workers",
            str(workers),
            "--sleep",
            str(sleep),
            "--reports",
            "--dividends",
            "--ownership",
            "--all-instruments",
        )
        bare = floor(demo.url, workers, sleep)
    finally:
        demo.close()
    return run, bare


WRITER_ROUNDS = 3


def writer_ratio(rows_wanted: int, tmp: Path) -> tuple[float, int]:
    """Rows/s of ntx's writer path (Store.apply, 2,000-row flushes) over plain executemany.

    Each side runs `WRITER_ROUNDS` times, alternately, into new files; each side's fastest
    round counts (as timeit does: the slower rounds measure the machine's other load).
    """
    market = Market(seed=1, securities=400, today=date(2026, 6, 30))
    period = DateRange(date(2015, 1, 1), date(2026, 6, 30))
    results: list[JobResult] = []
    total = 0
    for sec in market.listed():
        rows = market.expected_prices(sec.security_id, period)
        results.append(
            JobResult(Job("prices", Security(sec.security_id, sec.symbol), (period,)), rows)
        )
        total += len(rows)
        if total >= rows_wanted:
            break
    ntx_rounds, plain_rounds = [], []
    for k in range(WRITER_ROUNDS):
        ntx_rounds.append(_ntx_writer(results, tmp / f"writer{k}.db"))
        plain_rounds.append(_plain_writer(results, tmp / f"plain{k}.db"))
    return min(plain_rounds) / min(ntx_rounds), total


def _ntx_writer(results: list[JobResult], db: Path) -> float:
    """Seconds ntx's store takes to commit `results` as the writer task would."""
    store = Store.open(db)
    run_id = store.begin_run("bench", "bench", ["prices"])
    started = time.perf_counter()
    batch: list[JobResult] = []
    pending = 0
    for result in results:
        batch.append(result)
        pending += len(result.rows)
        if pending >= 2000:
            store.apply(run_id, batch)
            batch, pending = [], 0
    store.apply(run_id, batch)
    seconds = time.perf_counter() - started
    store.close()
    return seconds


def _plain_writer(results: list[JobResult], db: Path) -> float:
    """Seconds plain `executemany` takes for the same rows into the same schema."""
    Store.open(db).close()  # the same schema
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    columns = ", ".join(PRICES.table.columns)
    marks = ", ".join("?" for _ in PRICES.table.columns)
    sql = f"INSERT INTO prices ({columns}) VALUES ({marks})"
    started = time.perf_counter()
    rows = [row for result in results for row in result.rows]
    for start in range(0, len(rows), 2000):
        conn.execute("BEGIN")
        conn.executemany(sql, rows[start : start + 2000])
        conn.execute("COMMIT")
    seconds = time.perf_counter() - started
    conn.close()
    return seconds


def rerun(tmp: Path, securities: int) -> dict[str, Any]:
    demo = Demo(securities, 0)
    try:
        db = tmp / "rerun.db"
        backfill(demo.url, db, "--workers", "8", "--sleep", "0", *PAST)
        second = backfill(demo.url, db, "--workers", "8", "--sleep", "0", *PAST)
    finally:
        demo.close()
    datasets = second.summary["datasets"]
    rewritten = sum(d["rows"]["new"] + d["rows"]["updated"] for d in datasets.values())
    securities_done = datasets["ownership"]["done"]
    return {
        "requests": second.summary["requests"],
        "price requests": datasets["prices"]["requests"],
        "securities": securities_done,
        "rewritten": rewritten,
    }


AUTO_RUN = ("--sleep", "auto", "--reports", "--dividends", "--ownership")  # 3 requests/security


def adaptive(limit: float, securities: int, tmp: Path) -> tuple[float, float, Run]:
    """`--sleep auto` from the default pace against a demo that answers 429 above `limit`/s.

    Returns (wall time over the least time the answers needed, share of answers that were
    429, the run). The demo injects no other faults, so every retry is a 429.
    """
    demo = Demo(securities, 50, rate_limit=limit)
    try:
        run = backfill(demo.url, tmp / f"auto{limit}.db", *AUTO_RUN)
    finally:
        demo.close()
    datasets = run.summary["datasets"].values()
    if any(d["failed"] for d in datasets):
        raise SystemExit("the adaptive run had failed jobs: the 429 count would be wrong")
    attempts = run.summary["requests"]
    refused = sum(d["retries"] for d in datasets)
    answered = attempts - refused
    return run.wall / (answered / limit), refused / attempts, run


def adaptive_independent(limit: float, securities: int, tmp: Path) -> tuple[float, float, Run]:
    """The same against the independent server of the tests (stdlib http.server, its own
    token bucket), run in this process's threads: not the demo, as a new user would."""
    from tests.independent_server import Exchange, running

    with running(Exchange(securities=securities, history=False), limit=limit, latency=0.05) as (
        url,
        handler,
    ):
        run = backfill(url, tmp / f"ind{limit}.db", *AUTO_RUN)
        answered = handler.statuses.count(200)
        refused = handler.statuses.count(429)
    return run.wall / (answered / limit), refused / (answered + refused), run


def limited(limit: float, securities: int, tmp: Path, limiter: tuple[str, ...]) -> Run:
    """`--sleep auto` from the default pace against the demo behind one kind of limiter
    (`limiter`: its `ntx demo serve` flags beside `--rate-limit`)."""
    demo = Demo(securities, 50, rate_limit=limit, limiter=limiter)
    try:
        return backfill(demo.url, tmp / f"lim{limit}.db", *AUTO_RUN, failed_jobs_ok=True)
    finally:
        demo.close()


LIMITER_KINDS = (
    ("bucket, burst 1, 429", ("--burst", "1")),
    ("bucket, burst 1, 503", ("--burst", "1", "--refuse", "503")),
    ("bucket, burst 5, 429", ("--burst", "5")),
    ("bucket, burst R, 429", ()),
    ("sliding second, 429", ("--limiter", "sliding")),
    ("bucket, burst R, drops", ("--refuse", "drop")),
)


def measure_limiters(tmp: Path, quick: bool) -> list[Row]:
    """--sleep auto against each kind of limiter, R = 8 and 60 (unknown to ntx): wall time
    over the least the answers needed, the share refused or dropped, the exit status."""
    rows: list[Row] = []
    for limit, securities in ((8, 80 if quick else 300), (60, 300 if quick else 1200)):
        for label, flags in LIMITER_KINDS:
            print(f"measuring --sleep auto against {label}, R={limit} ...", file=sys.stderr)
            run = limited(limit, securities, tmp, flags)
            failed = len(run.summary["failures"])  # their last attempt was refused too
            datasets = run.summary["datasets"].values()
            refused = sum(d["retries"] for d in datasets) + failed
            answered = run.summary["requests"] - refused
            slowdown, share = run.wall / (answered / limit), refused / run.summary["requests"]
            code = 1 if failed else 0
            rows.append(
                (
                    f"limiter {label}, R={limit}: wall / (answers / R), refused, exit",
                    f"{slowdown:.2f}, {share:.1%}, {code}",
                    "<= 1.15, <= 2%, 0",
                    _met(slowdown <= 1.15 and share <= 0.02 and code == 0),
                )
            )
    return rows


def measure_spacing(quick: bool) -> list[Row]:
    """The bare client (bench/floor.py), its requests spaced evenly at a pace it is told,
    against a bucket of burst 1 at R=60: what timing noise alone costs a client on this
    machine, beside ntx's `--sleep auto` rows, which must find the pace too."""
    rows: list[Row] = []
    limit = 60
    demo = Demo(150 if quick else 560, 50, rate_limit=limit, limiter=("--burst", "1"))
    try:
        for share in (0.9, 0.95):
            print(f"measuring the bare client spaced at {share} R, R={limit} ...", file=sys.stderr)
            run = floor(demo.url, 8, 0.0, share * limit)
            refused = run.summary["refused"]
            answered = run.summary["requests"] - refused
            rows.append(
                (
                    f"bare client spaced at {share:.2f} R, bucket burst 1, R={limit}: "
                    "wall / (answers / R), refused",
                    f"{run.wall / (answered / limit):.2f}, {refused / run.summary['requests']:.1%}",
                    "-",
                    "-",
                )
            )
    finally:
        demo.close()
    return rows


FIGURES = ("throughput", "writer", "memory", "rerun", "daily", "adaptive", "limiters", "spacing")
Row = tuple[str, str, str, str]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller runs: faster, rougher")
    parser.add_argument(
        "--only",
        choices=FIGURES,
        action="append",
        help="measure just this figure (repeatable) [default: all]",
    )
    options = parser.parse_args()
    wanted = set(options.only or FIGURES)
    # ntx's modules byte-compiled once, as any install has them: with PYTHONDONTWRITEBYTECODE
    # set, every process would compile them anew and the CPU figures would include that
    subprocess.run([PYTHON, "-m", "compileall", "-q", str(ROOT / "ntx")], check=True)
    small, large = (300, 4000) if options.quick else (600, 20000)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        if "throughput" in wanted:
            rows += measure_throughput(tmp, small)
        if "writer" in wanted:
            rows += measure_writer(tmp, 100_000 if options.quick else 300_000)
        if "memory" in wanted:
            rows += measure_memory(tmp, large, 50 if options.quick else 150)
        if "rerun" in wanted:
            rows += measure_rerun(tmp, 200 if options.quick else small)
        if "daily" in wanted:
            rows += measure_daily(tmp)
        if "adaptive" in wanted:
            rows += measure_adaptive(tmp, options.quick)
        if "limiters" in wanted:
            rows += measure_limiters(tmp, options.quick)
        if "spacing" in wanted:
            rows += measure_spacing(options.quick)
    print_table(rows)


def measure_throughput(tmp: Path, securities: int) -> list[Row]:
    """ntx against the bare client (bench/floor.py) on the same demo process, one right
    after the other: the ratio of their request rates is the figure; the bound
    N / (L + S) and the CPU per request are information."""
    rows: list[Row] = []
    info: list[Row] = []
    start_up = start_up_cpu(tmp)
    info.append(("start-up CPU of one ntx process", f"{start_up * 1000:.0f} ms", "-", "-"))
    for workers, sleep, latency_ms, target in ((5, 0.2, 50, 0.98), (16, 0.0, 20, None)):
        name = f"N={workers} S={sleep:g} L={latency_ms}ms"
        print(f"measuring throughput at {name} ...", file=sys.stderr)
        run, bare = throughput(workers, sleep, latency_ms, securities, tmp)
        bound = workers / (latency_ms / 1000 + sleep)
        ratio = requests_per_second(run) / requests_per_second(bare)
        rows.append(
            (
                f"throughput, ntx / bare client, {name}",
                f"{ratio:.3f}",
                f">= {target}" if target else "-",
                _met(ratio >= target) if target else "-",
            )
        )
        requests = run.summary["requests"]
        bare_cpu = bare.cpu / bare.summary["requests"] * 1000
        info.append(
            (
                f"  {name}: ntx, bare client / bound N/(L+S)",
                f"{requests_per_second(run) / bound:.3f}, {requests_per_second(bare) / bound:.3f}",
                "-",
                "-",
            )
        )
        info.append(
            (
                f"  {name}: CPU per request, ntx (after start-up), bare client",
                f"{run.cpu / requests * 1000:.2f} ({(run.cpu - start_up) / requests * 1000:.2f}),"
                f" {bare_cpu:.2f} ms",
                "-",
                "-",
            )
        )
    return rows + info


START_UP_ROUNDS = 3


def start_up_cpu(tmp: Path) -> float:
    """CPU seconds of an `ntx backfill` that stops at a usage error: the interpreter, the
    imports and the parsing of the flags, which every run pays once. The least of a few."""
    never_asked = "http://127.0.0.1:9"  # the usage error comes before any request
    command = [PYTHON, "-m", "ntx", "backfill", "--api", never_asked, "--db", str(tmp / "s.db")]
    seconds = []
    for _ in range(START_UP_ROUNDS):
        proc = subprocess.Popen(
            [*command, "--workers", "0"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        assert proc.stderr is not None
        err = proc.stderr.read()
        _, status, usage = os.wait4(proc.pid, 0)
        if os.waitstatus_to_exitcode(status) != 2 or b"--workers" not in err:
            raise SystemExit(f"the start-up probe did not stop at its usage error: {err!r}")
        seconds.append(usage.ru_utime + usage.ru_stime)
    return min(seconds)


def measure_writer(tmp: Path, rows_wanted: int) -> list[Row]:
    print("measuring the writer ...", file=sys.stderr)
    ratio, count = writer_ratio(rows_wanted, tmp)
    return [(f"writer ratio ({count:,} price rows)", f"{ratio:.3f}", ">= 0.8", _met(ratio >= 0.8))]


def measure_memory(tmp: Path, large: int, history: int) -> list[Row]:
    """Peak RSS of a backfill of `large` securities, and of one year against ten years of
    prices for the same `history` securities (memory must not grow with history)."""
    print(f"measuring memory at {large:,} securities ...", file=sys.stderr)
    demo = Demo(large, 0)
    try:
        run = backfill(
            demo.url, tmp / f"m{large}.db", "--ownership", "--workers", "16", "--sleep", "0"
        )
    finally:
        demo.close()
    rows: list[Row] = [
        (
            f"memory, peak RSS of a backfill of {large:,} securities",
            f"{run.peak_rss_mb:.0f} MB",
            "<= 150 MB",
            _met(run.peak_rss_mb <= 150),
        )
    ]
    print(f"measuring memory against history length ({history} securities) ...", file=sys.stderr)
    peaks = []
    demo = Demo(history, 0)
    try:
        for start in ("2025-06-30", "2016-06-30"):
            db = tmp / f"h{start}.db"
            flags = ("--prices", "--from", start, "--to", "2026-06-30", "--workers", "8")
            peaks.append(backfill(demo.url, db, *flags, "--sleep", "0").peak_rss_mb)
    finally:
        demo.close()
    growth = peaks[1] / peaks[0]
    rows.append(
        (
            "memory, peak RSS of ten years / one year of prices",
            f"{growth:.3f} ({peaks[1]:.0f} / {peaks[0]:.0f} MB)",
            "<= 1.10",
            _met(growth <= 1.10),
        )
    )
    return rows


def measure_rerun(tmp: Path, securities: int) -> list[Row]:
    print("measuring an incremental re-run ...", file=sys.stderr)
    again = rerun(tmp, securities)
    per_security = again["price requests"] / max(1, again["securities"])
    return [
        (
            "re-run of a complete database: price requests per security",
            f"{per_security:.2f}",
            "<= 1",
            _met(per_security <= 1),
        ),
        (
            "re-run of a complete database: rows rewritten",
            f"{again['rewritten']:,}",
            "0",
            _met(again["rewritten"] == 0),
        ),
    ]


DAY_ONE = date(2026, 6, 30)  # the demo's market day of the complete database
DAILY_SECURITIES = 690  # about 300 active equities, as the exchange lists


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def price_requests(run: Run) -> int:
    """The requests of the prices and of the calendar they need."""
    datasets = run.summary["datasets"]
    return int(datasets["prices"]["requests"] + datasets.get("holidays", {}).get("requests", 0))


def measure_daily(tmp: Path) -> list[Row]:
    """The daily update, and what each price plan costs for a year of a whole market and
    for two symbols, against the demo with its history window (365 days)."""
    print("measuring the daily update and the price plans ...", file=sys.stderr)
    os.environ["XDG_CACHE_HOME"] = str(tmp / "cache")  # the token module, as a user keeps it
    market = Market(1, DAILY_SECURITIES, today=DAY_ONE)
    equities = sum(
        1 for s in market.securities if s.instrument_type == "Equity" and s.status == "A"
    )
    next_day = DAY_ONE + timedelta(days=1)
    while not market.is_trading_day(next_day):
        next_day += timedelta(days=1)
    port = free_port()  # one address for both days: ages count only fetches from one source
    rows: list[Row] = []
    db = tmp / "daily.db"
    demo = Demo(DAILY_SECURITIES, 0, window_days=365, today=DAY_ONE, port=port)
    try:
        year_ago = ("--from", one_year_before(DAY_ONE).isoformat())  # the demo's year
        backfill(demo.url, db, "--workers", "8", "--sleep", "0", *year_ago)
        plans = {}
        for mode in ("date", "security", "auto"):
            by = ("--prices", "--prices-by", mode, *year_ago)
            year = backfill(demo.url, tmp / f"{mode}.db", *by)
            two = backfill(demo.url, tmp / f"{mode}-2.db", *by, "--symbols", "NABIL,ADBL")
            plans[mode] = (year, two)
    finally:
        demo.close()
    with sqlite3.connect(db) as conn:  # a day passes: every fetch is a day older
        for table in ("ntx_coverage", "ntx_dates"):
            conn.execute(
                f"UPDATE {table} SET fetched_at ="
                " strftime('%Y-%m-%dT%H:%M:%S+00:00', fetched_at, '-1 day')"  # ntx's format
            )
    demo = Demo(DAILY_SECURITIES, 40, window_days=365, today=next_day, port=port)
    try:
        update = backfill(demo.url, db)  # the default pace, the default ages
    finally:
        demo.close()
    requests = int(update.summary["requests"])
    rows.append(
        (
            f"daily update of a complete database ({equities} equities), all five, next session",
            f"{requests} requests",
            "<= 8",
            _met(requests <= 8),
        )
    )
    rows.append(
        ("  its wall time, demo at 40 ms (start-up included)", f"{update.wall:.2f} s", "-", "-")
    )
    for label, index in ((f"one year of {equities} equities", 0), ("--symbols NABIL,ADBL", 1)):
        costs = {mode: price_requests(runs[index]) for mode, runs in plans.items()}
        chosen = plans["auto"][index].summary["price_plan"]["chosen"]
        rows.append(
            (
                f"price requests, {label}: by date, by security, auto",
                f"{costs['date']}, {costs['security']}, {costs['auto']} (auto: by {chosen})",
                "-",
                "-",
            )
        )
    return rows


def measure_adaptive(tmp: Path, quick: bool) -> list[Row]:
    rows: list[Row] = []
    cases = (
        ("demo", adaptive, 8, 100 if quick else 400),
        ("demo", adaptive, 60, 300 if quick else 2000),
        ("independent server", adaptive_independent, 8, 60 if quick else 270),
        ("independent server", adaptive_independent, 60, 200 if quick else 1330),
    )
    for where, measure, limit, securities in cases:
        print(f"measuring --sleep auto against {where} limiting to {limit}/s ...", file=sys.stderr)
        slowdown, refused, run = measure(limit, securities, tmp)
        rows.append(
            (
                f"adaptive, {where}, R={limit}: wall time / (answers / R)",
                f"{slowdown:.3f} ({run.wall:.1f} s)",
                "<= 1.15",
                _met(slowdown <= 1.15),
            )
        )
        rows.append(
            (
                f"adaptive, {where}, R={limit}: share of answers that were 429",
                f"{refused:.2%}",
                "<= 2%",
                _met(refused <= 0.02),
            )
        )
        advice = run.summary["advice"]
        print(
            f"  settled: --workers {advice['workers']} --sleep {advice['sleep']:g}",
            file=sys.stderr,
        )
    return rows


def print_table(rows: list[Row]) -> None:
    header = ("figure", "value", "target", "met")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print("| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) + " |")


def _met(ok: bool) -> str:
    return "yes" if ok else "NO"


if __name__ == "__main__":
    main()
