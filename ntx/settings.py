"""Settings: flags > NTX_* environment variables > config file > defaults.

Every tunable setting (`workers`, `sleep`, `timeout`, `db`, `api`, `progress`, `insecure`)
is looked up the same way: the flag if given, else `NTX_<NAME>`, else the key `<name>` of
the TOML config file (`$NTX_CONFIG`, or `~/.config/ntx/config.toml` when present), else the
default. Bad values raise `UsageError` naming where the value came from. Reads files only.
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from ntx.datasets import PER_SECURITY
from ntx.errors import UsageError
from ntx.model import DateRange
from ntx.nepal import nepal_today, one_year_before

T = TypeVar("T")
MAX_WORKERS = 512
TUNABLE = (
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
)
MAX_RETRIES = 100
DEFAULT_SLEEP = 0.2
PROGRESS_MODES = ("auto", "rich", "plain", "json")


# ------------------------------------------------------------------ parsers: (value, where) -> T


def whole_number(value: Any, where: str, low: int, high: int | None = None) -> int:
    """An integer from `low` to `high` (no upper bound when None), or `UsageError`."""
    try:
        number = int(str(value).strip())
        valid = not isinstance(value, float | bool)
    except ValueError:
        number, valid = low, False
    if not valid or number < low or (high is not None and number > high):
        upper = f" to {high}" if high is not None else " or more"
        raise UsageError(f"{where} must be a whole number from {low}{upper}, got {value!r}")
    return number


def parse_workers(value: Any, where: str) -> int:
    return whole_number(value, where, 1, MAX_WORKERS)


def parse_retries(value: Any, where: str) -> int:
    return whole_number(value, where, 0, MAX_RETRIES)


def _amount(value: Any, where: str, *, positive: bool, unit: str = "seconds") -> float:
    try:
        number = float(str(value).strip())
    except ValueError:
        number = math.nan
    if (
        not math.isfinite(number)
        or number < 0
        or (positive and number == 0)
        or isinstance(value, bool)
    ):
        bound = "> 0" if positive else ">= 0"
        raise UsageError(f"{where} must be a number of {unit} {bound}, got {value!r}")
    return number


def parse_sleep(value: Any, where: str) -> float:
    return _amount(value, where, positive=False)


AUTO = "auto"


def parse_pace(value: Any, where: str) -> float | str:
    """A sleep in seconds, or `auto` (`--sleep auto`: ntx finds the pace itself)."""
    if isinstance(value, str) and value.strip().lower() == AUTO:
        return AUTO
    try:
        return parse_sleep(value, where)
    except UsageError:
        raise UsageError(
            f"{where} must be a number of seconds >= 0, or 'auto', got {value!r}"
        ) from None


def parse_timeout(value: Any, where: str) -> float:
    return _amount(value, where, positive=True)


def parse_milliseconds(value: Any, where: str) -> float:
    return _amount(value, where, positive=False, unit="milliseconds")


def parse_rate(value: Any, where: str) -> float:
    return _amount(value, where, positive=True, unit="requests per second")


def parse_date(value: Any, where: str) -> date:
    try:
        return date.fromisoformat(str(value).strip())
    except ValueError:
        raise UsageError(f"{where} {value} is not a valid date of the form YYYY-MM-DD") from None


def parse_url(value: Any, where: str) -> str:
    text = str(value).strip()
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"{where} must be an http:// or https:// URL, got {text!r}")
    return text.rstrip("/")


def parse_bool(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise UsageError(f"{where} must be true or false, got {value!r}")


def parse_progress(value: Any, where: str) -> str:
    text = str(value).strip().lower()
    if text not in PROGRESS_MODES:
        raise UsageError(f"{where} must be one of {', '.join(PROGRESS_MODES)}, got {value!r}")
    return text


def parse_fail_rate(value: Any, where: str) -> float:
    try:
        number = float(str(value).strip())
    except ValueError:
        number = math.nan
    if not 0 <= number <= 1:
        raise UsageError(f"{where} must be a number from 0 to 1, got {value!r}")
    return number


def parse_path(value: Any, where: str) -> Path:
    text = str(value).strip()
    if not text:
        raise UsageError(f"{where} must be a file path")
    return Path(text).expanduser()


def parse_symbols(value: str) -> tuple[str, ...]:
    symbols = tuple(part.strip().upper() for part in value.split(","))
    if not symbols or any(not symbol for symbol in symbols):
        raise UsageError(f"--symbols takes a comma-separated list like NABIL,ADBL, got {value!r}")
    return symbols


# ------------------------------------------------------------------ precedence


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


def load_config(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"config file {path}: {exc}") from exc
    unknown = sorted(set(data) - set(TUNABLE))
    if unknown:
        raise UsageError(
            f"config file {path}: unknown setting {unknown[0]!r} (known: {', '.join(TUNABLE)})"
        )
    return data


class Layers:
    """Looks a setting up in the flags, then the environment, then the config file."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self.env = os.environ if env is None else env
        self.config_file = config_path(self.env)
        self.config = load_config(self.config_file)

    def pick(self, name: str, flag: Any, parse: Callable[[Any, str], T], default: T) -> T:
        if flag is not None:
            return parse(flag, f"--{name}")
        env_name = f"NTX_{name.upper()}"
        if self.env.get(env_name, "") != "":
            return parse(self.env[env_name], env_name)
        if name in self.config:
            return parse(self.config[name], f"{self.config_file}: {name}")
        return default


# ------------------------------------------------------------------ the settings of a backfill


@dataclass(frozen=True)
class DemoOptions:
    securities: int = 600
    seed: int = 1
    latency_ms: float = 40.0
    rate_limit: float | None = None  # requests per second the demo allows; more get 429
    fail_rate: float = 0.0
    faults: tuple[str, ...] = ()  # empty: every kind of fault


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


def resolve_backfill(
    *,
    datasets: Mapping[str, bool],
    symbols: str | None,
    all_instruments: bool,
    start: str | None,
    end: str | None,
    workers: str | None,
    sleep: str | None,
    timeout: str | None,
    rate: str | None = None,
    retries: str | None,
    force: bool,
    busy_timeout: str | None = None,
    db: str | None,
    api: str | None,
    demo: DemoOptions | None,
    insecure: bool,
    progress: str | None,
    retry_failed: bool = False,
    env: Mapping[str, str] | None = None,
    today: date | None = None,
) -> BackfillSettings:
    """Validate and combine everything a backfill is told. Raises `UsageError`."""
    layers = Layers(env)
    today = today or nepal_today()
    if retry_failed:
        given = [name for name, on in datasets.items() if on]
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
                f"--retry-failed repeats the last run's failed jobs as they were planned;"
                f" it takes no {given[0] if given[0].startswith('--') else '--' + given[0]}"
            )
    chosen = tuple(name for name in PER_SECURITY if datasets.get(name))
    if not any(datasets.values()):
        chosen = PER_SECURITY  # no dataset flag: all five
    end_date = parse_date(end, "--to") if end is not None else today
    start_date = parse_date(start, "--from") if start is not None else one_year_before(end_date)
    if start_date > end_date:
        raise UsageError(f"--from {start_date} is after --to {end_date}")
    api_url = layers.pick("api", api, parse_url, None)
    if demo is not None and api is not None:
        raise UsageError("give --api URL or --demo, not both")
    if demo is not None:
        api_url = None
    elif api_url is None:
        raise UsageError(
            "no API to backfill from: give --api URL (or set NTX_API),"
            " or --demo to use the built-in demo exchange"
        )
    default_db = Path("ntx-demo.db" if demo is not None else "ntx.db")
    default_pace: float | str = DEFAULT_SLEEP
    pace = layers.pick("sleep", sleep, parse_pace, default_pace)
    return BackfillSettings(
        datasets=chosen,
        symbols=parse_symbols(symbols) if symbols is not None else (),
        all_instruments=all_instruments,
        period=DateRange(start_date, end_date),
        today=today,
        workers=layers.pick("workers", workers, parse_workers, 5),
        sleep=DEFAULT_SLEEP if pace == AUTO else float(pace),
        auto_pace=pace == AUTO,
        rate=layers.pick("rate", rate, parse_rate, None),
        timeout=layers.pick("timeout", timeout, parse_timeout, 30.0),
        retries=layers.pick("retries", retries, parse_retries, 5),
        busy_timeout=layers.pick("busy_timeout", busy_timeout, parse_sleep, 10.0),
        force=force,
        db=layers.pick("db", db, parse_path, default_db),
        api=api_url,
        demo=demo,
        insecure=layers.pick("insecure", True if insecure else None, parse_bool, False),
        progress=layers.pick("progress", progress, parse_progress, "auto"),
        retry_failed=retry_failed,
    )


def resolve_db(db: str | None, env: Mapping[str, str] | None = None) -> Path:
    """The database path for commands that only read it (`ntx status`)."""
    return Layers(env).pick("db", db, parse_path, Path("ntx.db"))
