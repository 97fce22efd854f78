"""The command line: Typer commands, flag parsing and exit statuses. No business logic.

Exit statuses: 0 all jobs done, 1 some failed or the run could not go on, 2 bad usage,
130 interrupted. Every error is one line on stderr, never a traceback.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import trio
import typer

from ntx import __version__
from ntx.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, NtxError, UsageError, reportable

if TYPE_CHECKING:
    from ntx.settings import DemoOptions

T = TypeVar("T")
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a pipe's writer
DB_HELP = "The database [default: ntx.db; NTX_DB]."
FAULTS_HELP = "Faults to inject: 429,5xx,reset,truncated,malformed,stall [default: all]."

app = typer.Typer(
    name="ntx",
    help="Backfill a stock exchange's market data into a local SQLite database.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
demo_app = typer.Typer(help="The built-in demo exchange.", no_args_is_help=True)
app.add_typer(demo_app, name="demo")


def _fail(message: str, code: int) -> NoReturn:
    typer.echo(f"ntx: error: {message}", err=True)
    raise typer.Exit(code)


def _guarded(action: Callable[[], T]) -> T:
    """Run `action`, turning ntx's errors and Ctrl-C into one line and an exit status."""
    try:
        return action()
    except BaseException as exc:
        if isinstance(exc, typer.Exit | SystemExit):
            raise
        error = reportable(exc)
        if isinstance(error, BrokenPipeError):
            # The reader went away (`ntx status | head`): stop quietly, as Unix tools do.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(EXIT_BROKEN_PIPE) from None
        if isinstance(error, KeyboardInterrupt):
            typer.echo("ntx: interrupted", err=True)
            raise typer.Exit(EXIT_INTERRUPTED) from None
        if isinstance(error, NtxError) and error.exit_code == 0:
            typer.echo(f"ntx: {error}")
            raise typer.Exit(0) from None
        if isinstance(error, NtxError):
            _fail(str(error), error.exit_code)
        if os.environ.get("NTX_DEBUG"):
            raise
        _fail(
            f"internal error: {type(error).__name__}: {error}"
            " (a bug in ntx; NTX_DEBUG=1 shows the traceback)",
            EXIT_FAILED,
        )


def _version(value: bool) -> None:
    if value:
        typer.echo(f"ntx {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """ntx backfills market data (companies, prices, reports, dividends, ownership) for every
    listed security from a rate-limited HTTP API into SQLite: concurrently, politely, exactly."""


@app.command()
def backfill(
    companies: bool = typer.Option(
        False, "--companies", help="Fetch the company and security lists."
    ),
    prices: bool = typer.Option(False, "--prices", help="Fetch daily price history."),
    reports: bool = typer.Option(False, "--reports", help="Fetch quarterly and annual reports."),
    dividends: bool = typer.Option(False, "--dividends", help="Fetch dividends."),
    ownership: bool = typer.Option(False, "--ownership", help="Fetch share ownership."),
    symbols: str | None = typer.Option(
        None, "--symbols", metavar="NABIL,ADBL", help="Only these securities (case-insensitive)."
    ),
    all_instruments: bool = typer.Option(
        False, "--all-instruments", help="Every listed security, not only active equities."
    ),
    start: str | None = typer.Option(
        None,
        "--from",
        metavar="YYYY-MM-DD",
        help="First day of prices [default: a year before --to].",
    ),
    end: str | None = typer.Option(
        None, "--to", metavar="YYYY-MM-DD", help="Last day of prices [default: today in Nepal]."
    ),
    workers: str | None = typer.Option(
        None,
        "--workers",
        "-w",
        metavar="N",
        help="Requests in flight at most [default: 5; NTX_WORKERS].",
    ),
    sleep: str | None = typer.Option(
        None,
        "--sleep",
        metavar="SECONDS|auto",
        help="Pause after every request, per worker; 'auto' finds the fastest pace the API"
        " accepts, starting from --workers and 0.2 s [default: 0.2; NTX_SLEEP].",
    ),
    rate: str | None = typer.Option(
        None,
        "--rate",
        metavar="R",
        help="At most R requests per second across all workers (burst = workers) [NTX_RATE].",
    ),
    timeout: str | None = typer.Option(
        None, "--timeout", metavar="SECONDS", help="Limit per request [default: 30; NTX_TIMEOUT]."
    ),
    retries: str | None = typer.Option(
        None,
        "--retries",
        metavar="N",
        help="Retries per request after 429, 5xx, timeouts, bad answers [default: 5; NTX_RETRIES].",
    ),
    force: bool = typer.Option(False, "--force", help="Fetch the whole price range again."),
    busy_timeout: str | None = typer.Option(
        None,
        "--busy-timeout",
        metavar="SECONDS",
        help="Wait this long for another program's lock on the database [default: 10].",
    ),
    retry_failed: bool = typer.Option(
        False, "--retry-failed", help="Re-run only the jobs that failed in the last run."
    ),
    db: str | None = typer.Option(
        None,
        "--db",
        metavar="PATH",
        help="The database [default: ntx.db, ntx-demo.db with --demo; NTX_DB].",
    ),
    api: str | None = typer.Option(
        None, "--api", metavar="URL", help="Base URL of a NEPSE-compatible API [NTX_API]."
    ),
    demo: bool = typer.Option(False, "--demo", help="Backfill from the built-in demo exchange."),
    insecure: bool = typer.Option(
        False, "--insecure", help="Do not verify TLS certificates (warned; avoid) [NTX_INSECURE]."
    ),
    progress: str | None = typer.Option(
        None,
        "--progress",
        metavar="auto|rich|plain|json",
        help="Progress display [default: auto; NTX_PROGRESS].",
    ),
    demo_securities: str = typer.Option(
        "600", "--demo-securities", metavar="N", help="With --demo: securities."
    ),
    demo_seed: str = typer.Option(
        "1", "--demo-seed", metavar="N", help="With --demo: the market's seed."
    ),
    demo_latency_ms: str = typer.Option(
        "40", "--demo-latency-ms", metavar="MS", help="With --demo: latency."
    ),
    demo_rate_limit: str | None = typer.Option(
        None, "--demo-rate-limit", metavar="R", help="With --demo: answer 429 above R requests/s."
    ),
    fail_rate: str | None = typer.Option(
        None, "--fail-rate", metavar="F", help="With --demo: share of requests to fail (0 to 1)."
    ),
    faults: str | None = typer.Option(None, "--faults", metavar="LIST", help=FAULTS_HELP),
) -> None:
    """Fetch market data into the database. No dataset flag means all five."""
    from ntx.backfill import run_backfill
    from ntx.settings import resolve_backfill
    from ntx.ui.printer import choose_renderer

    def run() -> int:
        demo_options = (
            _demo_options(
                demo_securities,
                demo_seed,
                demo_latency_ms,
                demo_rate_limit,
                fail_rate,
                faults,
                prefix="--demo-",
            )
            if demo
            else None
        )
        if not demo and (fail_rate, faults, demo_rate_limit) != (None, None, None):
            raise UsageError(
                "--fail-rate, --faults and --demo-rate-limit go with --demo (or ntx demo serve)"
            )
        settings = resolve_backfill(
            datasets={
                "companies": companies,
                "prices": prices,
                "reports": reports,
                "dividends": dividends,
                "ownership": ownership,
            },
            symbols=symbols,
            all_instruments=all_instruments,
            start=start,
            end=end,
            workers=workers,
            sleep=sleep,
            rate=rate,
            timeout=timeout,
            retries=retries,
            busy_timeout=busy_timeout,
            force=force,
            db=db,
            api=api,
            demo=demo_options,
            insecure=insecure,
            progress=progress,
            retry_failed=retry_failed,
        )
        if settings.insecure and (settings.api or "").startswith("https://"):
            typer.echo("ntx: warning: TLS certificate verification is OFF (--insecure)", err=True)
        renderer = choose_renderer(settings.progress)
        command = shlex.join(["ntx", *sys.argv[1:]])
        summary = trio.run(run_backfill, settings, renderer, command)
        return summary.exit_code

    raise typer.Exit(_guarded(run))


@app.command()
def status(
    db: str | None = typer.Option(None, "--db", metavar="PATH", help=DB_HELP),
) -> None:
    """Show what the database holds, per dataset."""
    from ntx.ui.tables import print_status

    _with_readonly_store(db, lambda store, running: print_status(store))


runs_app = typer.Typer(help="The history of backfill runs.", invoke_without_command=True)
app.add_typer(runs_app, name="runs")


def _with_readonly_store(db: str | None, show: Callable[[Any, bool], None]) -> None:
    from ntx.db.lock import holder
    from ntx.db.store import Store
    from ntx.settings import resolve_db

    def action() -> None:
        path = resolve_db(db)
        store = Store.open_readonly(path)
        try:
            show(store, holder(path) is not None)
        finally:
            store.close()

    _guarded(action)


@runs_app.callback()
def runs(
    ctx: typer.Context,
    db: str | None = typer.Option(None, "--db", metavar="PATH", help=DB_HELP),
) -> None:
    """List the runs: id, start, duration, status, datasets, rows, failed jobs."""
    from ntx.ui.tables import print_runs

    if ctx.invoked_subcommand is None:
        _with_readonly_store(db, lambda store, running: print_runs(store, running))


@runs_app.command("show")
def runs_show(
    run_id: int = typer.Argument(..., metavar="ID", help="The run's id, from `ntx runs`."),
    db: str | None = typer.Option(None, "--db", metavar="PATH", help=DB_HELP),
) -> None:
    """Show one run and its failed and skipped jobs, with their reasons."""
    from ntx.ui.tables import print_run

    _with_readonly_store(db, lambda store, running: print_run(store, run_id, running))


@demo_app.command("serve")
def demo_serve(
    host: str = typer.Option(
        "127.0.0.1", "--host", help="Address to listen on (loopback unless told)."
    ),
    port: str = typer.Option("8000", "--port", metavar="PORT", help="Port; 0 picks a free one."),
    securities: str = typer.Option("600", "--securities", metavar="N", help="How many securities."),
    seed: str = typer.Option(
        "1", "--seed", metavar="N", help="The market's seed: same seed, same data."
    ),
    latency_ms: str = typer.Option(
        "40", "--latency-ms", metavar="MS", help="Delay of every answer."
    ),
    rate_limit: str | None = typer.Option(
        None, "--rate-limit", metavar="R", help="Answer 429 to requests above R per second."
    ),
    fail_rate: str | None = typer.Option(
        None, "--fail-rate", metavar="F", help="Share of requests to fail (0 to 1) [default: 0]."
    ),
    faults: str | None = typer.Option(None, "--faults", metavar="LIST", help=FAULTS_HELP),
) -> None:
    """Serve the demo exchange: a NEPSE-compatible API with deterministic synthetic data."""
    from ntx.demo.faults import build_demo_app
    from ntx.demo.server import is_loopback, serve
    from ntx.settings import whole_number

    def run() -> None:
        port_number = whole_number(port, "--port", 0, 65535)
        options = _demo_options(
            securities, seed, latency_ms, rate_limit, fail_rate, faults, prefix="--"
        )
        app_ = build_demo_app(options)
        market = app_.market
        if not is_loopback(host):
            typer.echo(
                f"ntx: warning: the demo exchange listens on {host}, not only this machine",
                err=True,
            )

        async def main() -> None:
            async with trio.open_nursery() as nursery:
                url = await nursery.start(
                    lambda task_status: serve(
                        app_, host=host, port=port_number, quiet=False, task_status=task_status
                    )
                )
                faulty = ""
                if options.rate_limit:
                    faulty += f", limited to {options.rate_limit:g} requests/s"
                if options.fail_rate > 0:
                    kinds = ",".join(options.faults) or "all faults"
                    faulty += f", failing {options.fail_rate:.0%} of requests ({kinds})"
                equities = sum(
                    1
                    for s in market.securities
                    if s.instrument_type == "Equity" and s.status == "A"
                )
                typer.echo(
                    f"Demo exchange at {url}: {len(market.securities)} securities"
                    f" ({equities} active equities), seed {market.seed},"
                    f" {app_.latency * 1000:g} ms latency{faulty}. Ctrl-C stops it.",
                )

        try:
            trio.run(main)
        except BaseException as exc:
            error = reportable(exc)
            if isinstance(error, KeyboardInterrupt):
                typer.echo("Demo exchange stopped.")
                return
            if isinstance(error, OSError):
                reason = error.strerror or str(error)
                raise NtxError(f"cannot listen on {host}:{port_number}: {reason}") from exc
            raise

    _guarded(run)


def _demo_options(
    securities: str,
    seed: str,
    latency_ms: str,
    rate_limit: str | None,
    fail_rate: str | None,
    faults: str | None,
    *,
    prefix: str,
) -> DemoOptions:
    """The demo market's flags (`--securities` or `--demo-securities`, ...), validated."""
    from ntx.demo.faults import parse_faults
    from ntx.settings import (
        DemoOptions,
        parse_fail_rate,
        parse_milliseconds,
        parse_rate,
        whole_number,
    )

    try:
        kinds = parse_faults(faults) if faults is not None else ()
    except ValueError as exc:
        raise UsageError(f"--faults: {exc}") from None
    return DemoOptions(
        securities=whole_number(securities, f"{prefix}securities", 1),
        seed=whole_number(seed, f"{prefix}seed", 0),
        latency_ms=parse_milliseconds(latency_ms, f"{prefix}latency-ms"),
        rate_limit=(
            parse_rate(rate_limit, f"{prefix}rate-limit") if rate_limit is not None else None
        ),
        fail_rate=parse_fail_rate(fail_rate, "--fail-rate") if fail_rate is not None else 0.0,
        faults=kinds,
    )


def main() -> None:
    """Entry point of the `ntx` command (and of `python -m ntx`)."""
    app(prog_name="ntx")


__all__ = ["EXIT_USAGE", "app", "main"]
