"""What Typer does not do for ntx's settings: the TOML config file, given to Typer as its
default map, and the rules that join several flags.

Every tunable setting is looked up as flag > `NTX_*` environment variable > config file >
default: the first two by Typer (`envvar=`), the file through the default map built here. The
config file is `$NTX_CONFIG` (which must exist), else `$XDG_CONFIG_HOME/ntx/config.toml` or
`~/.config/ntx/config.toml` if present. An unknown key is an error. Reads files only.
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from ntx.datasets import PER_SECURITY
from ntx.demo.options import DemoOptions
from ntx.errors import UsageError
from ntx.model import DateRange
from ntx.nepal import nepal_today, one_year_before
from ntx.price_plan import PricesBy

CONFIG_KEYS = (
    "workers",
    "sleep",
    "rate",
    "timeout",
    "retries",
    "busy_timeout",
    "db",
    "api",
    "progress",
    "insecure",
    "token_max_age",
    "user_agent",
    "headers",
    "ca_bundle",
    "max_age",
    "prices_by",
)
DEFAULT_API = "https://www.nepalstock.com.np"  # the real exchange
# How old a snapshot may be before a run fetches it again, per dataset (seconds).
DAY = 86400.0
DEFAULT_MAX_AGE = {
    "companies": DAY,  # the lists: a new listing shows up the next day
    "holidays": 7 * DAY,  # a closure the list missed is learned from its empty answer
    "reports": 7 * DAY,  # quarterly, published over weeks
    "dividends": 7 * DAY,  # declared once a year
    "ownership": 30 * DAY,  # changes with an issue of shares
}
UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": DAY}
DOCTOR_KEYS = ("api", "timeout", "insecure", "ca_bundle", "user_agent", "header")
AUTO = "auto"
DEFAULT_SLEEP = 0.2


def config_path(env: Mapping[str, str]) -> Path | None:
    """The config file in force: $NTX_CONFIG (which must exist), else the user's, if any."""
    if env.get("NTX_CONFIG"):
        path = Path(env["NTX_CONFIG"]).expanduser()
        if not path.is_file():
            raise UsageError(f"NTX_CONFIG: no config file at {path}")
        return path
    base = Path(env.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    path = base / "ntx" / "config.toml"
    return path if path.is_file() else None


def load_config(path: Path | None) -> dict[str, str | list[str]]:
    """The config file's settings, as the text a flag would carry (Typer converts them).

    `headers` is a table of HTTP headers; it becomes the `--header NAME:VALUE` list."""
    if path is None:
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"config file {path}: {exc}") from exc
    unknown = sorted(set(data) - set(CONFIG_KEYS))
    if unknown:
        raise UsageError(
            f"config file {path}: unknown setting {unknown[0]!r} (known: {', '.join(CONFIG_KEYS)})"
        )
    config: dict[str, str | list[str]] = {
        key: _as_text(value) for key, value in data.items() if key != "headers"
    }
    if "headers" in data:
        headers = data["headers"]
        if not isinstance(headers, dict) or not all(
            isinstance(value, str) for value in headers.values()
        ):
            raise UsageError(
                f"config file {path}: headers must be a table of names and text values,"
                ' like headers = {"User-Agent" = "..."}'
            )
        config["header"] = [f"{name}: {value}" for name, value in headers.items()]
    return config


def _as_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def cache_dir(env: Mapping[str, str]) -> Path:
    """Where ntx keeps what it may fetch again (the site's token module, the intermediate
    certificates AIA chasing found): `$XDG_CACHE_HOME/ntx`, else `~/.cache/ntx`."""
    return Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ntx"


def parse_headers(values: Sequence[str]) -> dict[str, str]:
    """`NAME: VALUE` texts (from `--header` or the config's `headers`) as a header mapping."""
    headers: dict[str, str] = {}
    for text in values:
        name, colon, value = text.partition(":")
        if not colon or not name.strip() or any(c.isspace() for c in name.strip()):
            raise UsageError(
                f"--header takes NAME: VALUE, like 'Accept-Language: en', got {text!r}"
            )
        headers[name.strip()] = value.strip()
    return headers


def parse_max_age(text: str) -> dict[str, float]:
    """`ownership=7d,reports=12h,...` as seconds per dataset, over the defaults; `0` means
    fetch on every run. `ValueError` says what is wrong, in words for the user."""
    ages = dict(DEFAULT_MAX_AGE)
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, equals, age = (piece.strip() for piece in part.partition("="))
        if not equals or name not in DEFAULT_MAX_AGE:
            known = ", ".join(DEFAULT_MAX_AGE)
            raise ValueError(
                f"takes DATASET=AGE pairs for {known} (like ownership=7d,reports=12h), got {part!r}"
            )
        ages[name] = _seconds_of(age, part)
    return ages


def max_age_text(ages: Mapping[str, float]) -> str:
    """`companies=1d,...` for ages in seconds (the units of `--max-age`)."""

    def age(seconds: float) -> str:
        for unit in ("d", "h", "m"):
            if seconds and seconds % UNITS[unit] == 0:
                return f"{seconds / UNITS[unit]:g}{unit}"
        return f"{seconds:g}s" if seconds else "0"

    return ",".join(f"{name}={age(seconds)}" for name, seconds in ages.items())


def _seconds_of(age: str, part: str) -> float:
    if age == "0":
        return 0.0
    unit = UNITS.get(age[-1:])
    try:
        amount = float(age[:-1]) if unit else math.nan
    except ValueError:
        amount = math.nan
    if unit is None or not (math.isfinite(amount) and amount >= 0):
        raise ValueError(f"{part!r}: an age is a number and a unit (30m, 12h, 7d) or 0")
    return amount * unit


def default_map(env: Mapping[str, str] | None = None) -> tuple[dict[str, Any], Path | None]:
    """Typer's default map for every command, from the config file; and the file's path."""
    path = config_path(os.environ if env is None else env)
    config = load_config(path)
    db = {"db": config["db"]} if "db" in config else {}
    doctor = {key: config[key] for key in DOCTOR_KEYS if key in config}
    return {"backfill": config, "doctor": doctor, "status": db, "runs": {**db, "show": db}}, path


@dataclass(frozen=True)
class BackfillSettings:
    datasets: tuple[str, ...]  # per-security datasets, in run order
    symbols: tuple[str, ...]
    all_instruments: bool
    period: DateRange
    today: date
    workers: int
    sleep: float  # with auto_pace, where the pace starts
    rate: float | None
    timeout: float
    retries: int
    busy_timeout: float
    force: bool
    db: Path
    api: str | None
    demo: DemoOptions | None
    insecure: bool
    progress: str
    retry_failed: bool = False
    auto_pace: bool = False  # --sleep auto
    token_max_age: float = 45.0
    user_agent: str | None = None  # None: the browser-like default
    headers: Mapping[str, str] = field(default_factory=dict)  # added to, or replacing, ntx's
    cache_dir: Path | None = None  # None: keep nothing between runs
    ca_bundle: Path | None = None  # more trust anchors (PEM)
    max_age: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_MAX_AGE))
    prices_by: PricesBy = PricesBy.AUTO


def parse_symbols(value: str) -> tuple[str, ...]:
    symbols = tuple(part.strip().upper() for part in value.split(","))
    if not symbols or any(not symbol for symbol in symbols):
        raise UsageError(f"--symbols takes a comma-separated list like NABIL,ADBL, got {value!r}")
    return symbols


def resolve_backfill(
    *,
    datasets: Mapping[str, bool],
    symbols: str | None,
    all_instruments: bool,
    start: date | None,
    end: date | None,
    workers: int,
    sleep: str,
    rate: float | None,
    timeout: float,
    retries: int,
    busy_timeout: float,
    force: bool,
    db: Path | None,
    api: str | None,
    api_given: bool,
    demo: DemoOptions | None,
    demo_only_given: Sequence[str] = (),
    insecure: bool,
    progress: str,
    retry_failed: bool = False,
    token_max_age: float = 45.0,
    user_agent: str | None = None,
    headers: Sequence[str] = (),
    cache_dir: Path | None = None,
    ca_bundle: Path | None = None,
    max_age: str = "",
    today: date | None = None,
    prices_by: PricesBy = PricesBy.AUTO,
) -> BackfillSettings:
    """Apply the rules that join several flags to values Typer has checked one by one.

    `api_given`: `--api` was on the command line (not from NTX_API or the config file);
    `demo_only_given`: the `--demo`-only flags that were given. Raises `UsageError`.
    """
    # the demo's market day is the run's today: the exchange and its client share a clock
    today = today or (demo.today if demo is not None else None) or nepal_today()
    if retry_failed:
        given = [f"--{name}" for name, on in datasets.items() if on]
        given += [
            flag
            for flag, value in (("--symbols", symbols), ("--from", start), ("--to", end))
            if value is not None
        ]
        given += [
            flag for flag, on in (("--all-instruments", all_instruments), ("--force", force)) if on
        ]
        if given:
            raise UsageError(
                "--retry-failed repeats the last run's failed jobs as they were planned;"
                f" it takes no {given[0]}"
            )
    if demo is None and demo_only_given:
        raise UsageError(
            f"{', '.join(demo_only_given)}: only with --demo (the demo exchange's options;"
            " ntx demo serve takes them too)"
        )
    chosen = tuple(name for name in PER_SECURITY if datasets.get(name))
    if not any(datasets.values()):
        chosen = PER_SECURITY  # no dataset flag: all five
    end_date = end or today
    start_date = start or one_year_before(end_date)
    if start_date > end_date:
        raise UsageError(f"--from {start_date} is after --to {end_date}")
    if demo is not None and api_given:
        raise UsageError("give --api URL or --demo, not both")
    if demo is not None:
        api = None
    elif api is None:
        api = DEFAULT_API
    default_db = Path("ntx-demo.db" if demo is not None else "ntx.db")
    return BackfillSettings(
        datasets=chosen,
        symbols=parse_symbols(symbols) if symbols is not None else (),
        all_instruments=all_instruments,
        period=DateRange(start_date, end_date),
        today=today,
        workers=workers,
        sleep=DEFAULT_SLEEP if sleep == AUTO else float(sleep),
        auto_pace=sleep == AUTO,
        rate=rate,
        timeout=timeout,
        retries=retries,
        busy_timeout=busy_timeout,
        force=force,
        db=(db or default_db).expanduser(),
        api=api,
        demo=demo,
        insecure=insecure,
        progress=progress,
        retry_failed=retry_failed,
        token_max_age=token_max_age,
        user_agent=user_agent,
        headers=parse_headers(headers),
        cache_dir=cache_dir,
        ca_bundle=ca_bundle.expanduser() if ca_bundle else None,
        max_age=parse_max_age(max_age),
        prices_by=prices_by,
    )
