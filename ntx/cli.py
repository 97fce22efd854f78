"""The command line: Typer commands with typed options, and exit statuses. No business logic.

Every option has its type, bounds and environment variable declared here (`--help` shows
them); the config file comes in as Typer's default map (`ntx.settings.default_map`). Exit
statuses: 0 all jobs done, 1 some failed or the run could not go on, 2 bad usage, 130
interrupted. Every error is one line on stderr, never a traceback.
"""

from __future__ import annotations

import math
import os
import shlex
import signal
import sys
from collections.abc import Callable
from dataclasses import replace
from datetime import date, datetime
from enum import StrEnum
from functools import partial
from pathlib import Path
from typing import Annotated, NoReturn, TypeVar
from urllib.parse import urlsplit

import trio
import typer
from typer.main import get_command

from ntx import __version__
from ntx.backfill import run_backfill
from ntx.db.lock import holder
from ntx.db.store import Store
from ntx.demo import options as demo
from ntx.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, NtxError, UsageError, reportable
from ntx.price_plan import PricesBy
from ntx.settings import (
    AUTO,
    DEFAULT_API,
    DEFAULT_MAX_AGE,
    cache_dir,
    default_map,
    max_age_text,
    parse_headers,
    parse_max_age,
    resolve_backfill,
)
from ntx.ui.printer import choose_renderer
from ntx.ui.tables import print_run, print_runs, print_status

T = TypeVar("T")
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a pipe's writer
MAX_WORKERS = 512
MAX_RETRIES = 100

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
runs_app = typer.Typer(help="The history of backfill runs.", invoke_without_command=True)
app.add_typer(runs_app, name="runs")


# ------------------------------------------------------------------ checks Typer's types lack


def _seconds(*, positive: bool) -> Callable[[float | None], float | None]:
    def check(value: float | None) -> float | None:
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise typer.BadParameter(f"must be a number of seconds >= 0, got {value:g}")
        if value is not None and positive and value == 0:
            raise typer.BadParameter("must be a number of seconds > 0, got 0")
        return value

    return check


def _rate(value: float | None) -> float | None:
    if value is not None and not (math.isfinite(value) and value > 0):
        raise typer.BadParameter(f"must be a number of requests per second > 0, got {value:g}")
    return value


def _pace(value: str) -> str:
    text = value.strip().lower()
    if text == AUTO:
        return AUTO
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds >= 0):
        raise typer.BadParameter(f"must be a number of seconds >= 0, or 'auto', got {value!r}")
    return text


def _url(value: str | None) -> str | None:
    if value is None:
        return None
    text = value.strip()
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise typer.BadParameter(f"must be an http:// or https:// URL, got {text!r}")
    return text.rstrip("/")


def _max_age(value: str | None) -> str | None:
    if value is not None:
        try:
            parse_max_age(value)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
    return value


def _symbols(value: str | None) -> str | None:
    if value is not None and any(not part.strip() for part in value.split(",")):
        raise typer.BadParameter(f"takes a comma-separated list like NABIL,ADBL, got {value!r}")
    return value


class Progress(StrEnum):
    auto = "auto"
    rich = "rich"
    plain = "plain"
    json = "json"


DAY_FORMATS = ["%Y-%m-%d"]
Db = Annotated[
    Path | None,
    typer.Option(
        "--db",
        envvar="NTX_DB",
        metavar="PATH",
        help="The database [default: ntx.db, or ntx-demo.db with --demo].",
    ),
]

# The options of every command that talks to an API (`backfill`, `doctor`), declared once.
Api = Annotated[
    str | None,
    typer.Option(
        "--api",
        callback=_url,
        envvar="NTX_API",
        metavar="URL",
        help=f"Base URL of a NEPSE-compatible API [default: {DEFAULT_API}, the exchange].",
    ),
]
Insecure = Annotated[
    bool,
    typer.Option(
        "--insecure",
        envvar="NTX_INSECURE",
        help="Do not verify TLS certificates (warned; avoid).",
    ),
]
CaBundle = Annotated[
    Path | None,
    typer.Option(
        "--ca-bundle",
        envvar="NTX_CA_BUNDLE",
        metavar="PATH",
        help="Also trust the certificate authorities in this PEM file.",
    ),
]
UserAgent = Annotated[
    str | None,
    typer.Option(
        "--user-agent",
        envvar="NTX_USER_AGENT",
        metavar="TEXT",
        help="The User-Agent header [default: a browser's, as the exchange's site expects].",
    ),
]
Header = Annotated[
    list[str] | None,
    typer.Option(
        "--header",
        "-H",
        metavar="'NAME: VALUE'",
        help="An HTTP header for every request (repeatable); replaces ntx's of that name.",
    ),
]


def _day(value: datetime | None) -> date | None:
    return value.date() if value is not None else None


# ------------------------------------------------------------------ commands


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
    ctx: typer.Context,
    companies: bool = typer.Option(
        False, "--companies", help="Fetch the company and security lists."
    ),
    prices: bool = typer.Option(False, "--prices", help="Fetch daily price history."),
    reports: bool = typer.Option(False, "--reports", help="Fetch quarterly and annual reports."),
    dividends: bool = typer.Option(False, "--dividends", help="Fetch dividends."),
    ownership: bool = typer.Option(False, "--ownership", help="Fetch share ownership."),
    symbols: str | None = typer.Option(
        None,
        callback=_symbols,
        metavar="NABIL,ADBL",
        help="Only these securities (case-insensitive).",
    ),
    all_instruments: bool = typer.Option(
        False, "--all-instruments", help="Every listed security, not only active equities."
    ),
    start: datetime | None = typer.Option(
        None,
        "--from",
        formats=DAY_FORMATS,
        metavar="YYYY-MM-DD",
        help="First day of prices [default: a year before --to].",
    ),
    end: datetime | None = typer.Option(
        None,
        "--to",
        formats=DAY_FORMATS,
        metavar="YYYY-MM-DD",
        help="Last day of prices [default: today in Nepal].",
    ),
    workers: int = typer.Option(
        5,
        "--workers",
        "-w",
        min=1,
        max=MAX_WORKERS,
        envvar="NTX_WORKERS",
        help="Requests in flight at most.",
    ),
    sleep: str = typer.Option(
        "0.2",
        callback=_pace,
        envvar="NTX_SLEEP",
        metavar="SECONDS|auto",
        help="Pause after every request, per worker; 'auto' finds the fastest pace the API"
        " accepts, starting from --workers and 0.2 s.",
    ),
    rate: float | None = typer.Option(
        None,
        callback=_rate,
        envvar="NTX_RATE",
        metavar="R",
        help="At most R requests per second across all workers, spaced evenly.",
    ),
    timeout: float = typer.Option(
        30.0,
        callback=_seconds(positive=True),
        envvar="NTX_TIMEOUT",
        metavar="SECONDS",
        help="Limit per request.",
    ),
    retries: int = typer.Option(
        5,
        min=0,
        max=MAX_RETRIES,
        envvar="NTX_RETRIES",
        help="Retries per request after 429, 5xx, timeouts, bad answers.",
    ),
    force: bool = typer.Option(
        False, "--force", help="Fetch the whole price range, and every snapshot, again."
    ),
    max_age: str | None = typer.Option(
        None,
        callback=_max_age,
        envvar="NTX_MAX_AGE",
        metavar="DATASET=AGE,...",
        help="Fetch a snapshot again only once it is this old (0: every run)"
        f" [default: {max_age_text(DEFAULT_MAX_AGE)}].",
    ),
    prices_by: PricesBy = typer.Option(
        PricesBy.AUTO,
        "--prices-by",
        envvar="NTX_PRICES_BY",
        case_sensitive=False,
        help="Fetch prices by business date (every security's day, opens included), by"
        " security (one history each, no opens), or auto: by date unless by security costs"
        " a tenth as many requests.",
    ),
    busy_timeout: float = typer.Option(
        10.0,
        callback=_seconds(positive=False),
        envvar="NTX_BUSY_TIMEOUT",
        metavar="SECONDS",
        help="Wait this long for another program's lock on the database.",
    ),
    retry_failed: bool = typer.Option(
        False, "--retry-failed", help="Re-run only the jobs that failed in the last run."
    ),
    db: Db = None,
    api: Api = None,
    use_demo: bool = typer.Option(
        False, "--demo", help="Backfill from the built-in demo exchange."
    ),
    insecure: Insecure = False,
    progress: Progress = typer.Option(
        Progress.auto, envvar="NTX_PROGRESS", case_sensitive=False, help="Progress display."
    ),
    ca_bundle: CaBundle = None,
    token_max_age: float = typer.Option(
        45.0,
        callback=_seconds(positive=True),
        envvar="NTX_TOKEN_MAX_AGE",
        metavar="SECONDS",
        help="Renew the API token before the next request once it is this old.",
    ),
    user_agent: UserAgent = None,
    header: Header = None,
    demo_securities: demo.Securities = demo.DemoOptions.securities,
    demo_seed: demo.Seed = demo.DemoOptions.seed,
    demo_latency_ms: demo.LatencyMs = demo.DemoOptions.latency_ms,
    demo_rate_limit: demo.RateLimit = None,
    demo_limiter: demo.LimiterKind = None,
    demo_burst: demo.Burst = None,
    demo_refuse: demo.Refuse = None,
    fail_rate: demo.FailRate = None,
    faults: demo.Faults = None,
    demo_token_ttl: demo.TokenTtl = None,
    demo_window_days: demo.WindowDays = None,
    demo_today: demo.Today = None,
) -> None:
    """Fetch market data into the database. No dataset flag means all five."""

    def run() -> int:
        demo_only = {
            "--demo-rate-limit": demo_rate_limit,
            "--demo-limiter": demo_limiter,
            "--demo-burst": demo_burst,
            "--demo-refuse": demo_refuse,
            "--fail-rate": fail_rate,
            "--faults": faults,
            "--demo-token-ttl": demo_token_ttl,
            "--demo-window-days": demo_window_days,
            "--demo-today": demo_today,
        }
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
            start=_day(start),
            end=_day(end),
            workers=workers,
            sleep=sleep,
            rate=rate,
            timeout=timeout,
            retries=retries,
            busy_timeout=busy_timeout,
            force=force,
            db=db,
            api=api,
            api_given=_source(ctx, "api") == "COMMANDLINE",
            demo=demo.demo_options(
                demo_securities,
                demo_seed,
                demo_latency_ms,
                demo_rate_limit,
                fail_rate,
                faults,
                demo_token_ttl,
                demo_window_days,
                demo_today,
                demo_limiter,
                demo_burst,
                demo_refuse,
            )
            if use_demo
            else None,
            demo_only_given=[flag for flag, value in demo_only.items() if value is not None],
            insecure=insecure,
            progress=progress.value,
            retry_failed=retry_failed,
            token_max_age=token_max_age,
            user_agent=user_agent,
            headers=header or (),
            cache_dir=cache_dir(os.environ),
            ca_bundle=ca_bundle,
            max_age=max_age or "",
            prices_by=prices_by,
        )
        if settings.insecure and (settings.api or "").startswith("https://"):
            typer.echo("ntx: warning: TLS certificate verification is OFF (--insecure)", err=True)
        renderer = choose_renderer(settings.progress)
        command = shlex.join(["ntx", *sys.argv[1:]])
        summary = trio.run(run_backfill, settings, renderer, command)
        return summary.exit_code

    raise typer.Exit(_guarded(run))


@app.command()
def doctor(
    ctx: typer.Context,
    api: Api = None,
    use_demo: bool = typer.Option(False, "--demo", help="Check the built-in demo exchange."),
    timeout: float = typer.Option(
        10.0,
        callback=_seconds(positive=True),
        envvar="NTX_TIMEOUT",
        metavar="SECONDS",
        help="Limit per check's request.",
    ),
    ca_bundle: CaBundle = None,
    insecure: Insecure = False,
    user_agent: UserAgent = None,
    header: Header = None,
) -> None:
    """Check, step by step, that this machine can backfill from the API. Writes nothing."""
    from ntx.doctor import DoctorSettings, run_doctor

    def run() -> int:
        if use_demo and _source(ctx, "api") == "COMMANDLINE":
            raise UsageError("give --api URL or --demo, not both")
        settings = DoctorSettings(
            api=api or DEFAULT_API,
            timeout=timeout,
            insecure=insecure,
            ca_bundle=ca_bundle.expanduser() if ca_bundle else None,
            user_agent=user_agent,
            headers=parse_headers(header or ()),
        )

        async def main() -> bool:
            if not use_demo:
                return await run_doctor(settings, typer.echo)
            from ntx.demo.faults import build_demo_app
            from ntx.demo.server import serve

            async with trio.open_nursery() as nursery:
                url = await nursery.start(partial(serve, build_demo_app(demo.DemoOptions())))
                typer.echo(f"ntx doctor: checking the demo exchange at {url}")
                passed = await run_doctor(replace(settings, api=url), typer.echo)
                nursery.cancel_scope.cancel()
            return passed

        return 0 if trio.run(main) else EXIT_FAILED

    raise typer.Exit(_guarded(run))


@app.command()
def status(db: Db = None) -> None:
    """Show what the database holds, per dataset."""
    _with_readonly_store(db, lambda store, running: print_status(store))


@runs_app.callback()
def runs(ctx: typer.Context, db: Db = None) -> None:
    """List the runs: id, start, duration, status, datasets, rows, failed jobs."""
    if ctx.invoked_subcommand is None:
        _with_readonly_store(db, lambda store, running: print_runs(store, running))


@runs_app.command("show")
def runs_show(
    run_id: int = typer.Argument(..., metavar="ID", help="The run's id, from `ntx runs`."),
    db: Db = None,
) -> None:
    """Show one run and its failed and skipped jobs, with their reasons."""
    _with_readonly_store(db, lambda store, running: print_run(store, run_id, running))


@demo_app.command("serve")
def demo_serve(
    host: str = typer.Option("127.0.0.1", help="Address to listen on (loopback unless told)."),
    port: int = typer.Option(8000, min=0, max=65535, help="Port; 0 picks a free one."),
    securities: demo.Securities = demo.DemoOptions.securities,
    seed: demo.Seed = demo.DemoOptions.seed,
    latency_ms: demo.LatencyMs = demo.DemoOptions.latency_ms,
    rate_limit: demo.RateLimit = None,
    limiter: demo.LimiterKind = None,
    burst: demo.Burst = None,
    refuse: demo.Refuse = None,
    fail_rate: demo.FailRate = None,
    faults: demo.Faults = None,
    token_ttl: demo.TokenTtl = None,
    window_days: demo.WindowDays = None,
    today: demo.Today = None,
) -> None:
    """Serve the demo exchange: a NEPSE-compatible API with deterministic synthetic data."""
    # imported here, as in ntx.backfill: a backfill from a real API never loads hypercorn
    from ntx.demo.faults import build_demo_app
    from ntx.demo.server import is_loopback, serve

    def run() -> None:
        options = demo.demo_options(
            securities,
            seed,
            latency_ms,
            rate_limit,
            fail_rate,
            faults,
            token_ttl,
            window_days,
            today,
            limiter,
            burst,
            refuse,
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
                nursery.start_soon(_stop_on_signal, nursery.cancel_scope)
                url = await nursery.start(
                    lambda task_status: serve(
                        app_, host=host, port=port, quiet=False, task_status=task_status
                    )
                )
                faulty = ""
                if options.rate_limit:
                    limit = demo.limit_words(options, options.rate_limit)
                    faulty += f", limited to {options.rate_limit:g} requests/s ({limit})"
                if options.fail_rate > 0:
                    kinds = ",".join(options.faults) or "all faults"
                    faulty += f", failing {options.fail_rate:.0%} of requests ({kinds})"
                history = (
                    f"{options.window_days:,} days of daily history"
                    if options.window_days
                    else "all daily history"
                )
                equities = sum(
                    1
                    for s in market.securities
                    if s.instrument_type == "Equity" and s.status == "A"
                )
                typer.echo(
                    f"Demo exchange at {url}: {len(market.securities)} securities"
                    f" ({equities} active equities), seed {market.seed}, market day {market.today},"
                    f" {app_.latency * 1000:g} ms latency, tokens living {options.token_ttl:g} s,"
                    f" {history}{faulty}. Ctrl-C stops it.",
                )

        try:
            trio.run(main)
            typer.echo("Demo exchange stopped.")
        except BaseException as exc:
            error = reportable(exc)
            if isinstance(error, KeyboardInterrupt):
                typer.echo("Demo exchange stopped.")
                return
            if isinstance(error, OSError):
                reason = error.strerror or str(error)
                raise NtxError(f"cannot listen on {host}:{port}: {reason}") from exc
            raise

    _guarded(run)


async def _stop_on_signal(scope: trio.CancelScope) -> None:
    """Cancel `scope` at the first Ctrl-C or SIGTERM (a server has nothing to save)."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            scope.cancel()
            return


# ------------------------------------------------------------------ errors and exit statuses


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


def _with_readonly_store(db: Path | None, show: Callable[[Store, bool], None]) -> None:
    def action() -> None:
        path = (db or Path("ntx.db")).expanduser()
        store = Store.open_readonly(path)
        try:
            show(store, holder(path) is not None)
        finally:
            store.close()

    _guarded(action)


def _source(ctx: typer.Context, name: str) -> str:
    """Where a parameter's value came from: COMMANDLINE, ENVIRONMENT, DEFAULT_MAP, DEFAULT."""
    source = ctx.get_parameter_source(name)
    return source.name if source is not None else "DEFAULT"


def _usage_line(error: typer.TyperException, config: Path | None) -> str:
    """One line for a bad flag, environment variable or config value: where, and what is
    wanted (Typer's own words, without pydantic's "Value error, ")."""
    param = getattr(error, "param", None)
    ctx = getattr(error, "ctx", None)
    message = str(getattr(error, "message", error)).removeprefix("Value error, ")
    if param is None or ctx is None or not param.opts:
        return error.format_message()
    flag = max(param.opts, key=len)
    source = _source(ctx, param.name) if param.name else "COMMANDLINE"
    if source == "ENVIRONMENT" and param.envvar:
        return f"{param.envvar}: {message}"
    if source == "DEFAULT_MAP":
        return f"{config}: {param.name}: {message}"
    return f"{flag}: {message}"


def main() -> None:
    """Entry point of the `ntx` command (and of `python -m ntx`)."""
    try:
        defaults, config = default_map()
    except UsageError as exc:
        typer.echo(f"ntx: error: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    command = get_command(app)
    try:
        code = command.main(
            sys.argv[1:], prog_name="ntx", standalone_mode=False, default_map=defaults
        )
    except typer.Abort:
        typer.echo("ntx: interrupted", err=True)
        code = EXIT_INTERRUPTED
    except typer.TyperException as error:
        if type(error).__name__ == "NoArgsIsHelpError":
            typer.echo(error.format_message())
            code = EXIT_USAGE
        else:
            ctx = getattr(error, "ctx", None)
            hint = f" (see: {ctx.command_path} --help)" if ctx is not None else ""
            typer.echo(f"ntx: error: {_usage_line(error, config)}{hint}", err=True)
            code = EXIT_USAGE
    sys.exit(code if isinstance(code, int) else 0)


__all__ = ["EXIT_USAGE", "app", "main"]
