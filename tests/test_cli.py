"""The CLI as a subprocess: every bad input gets one clear line, the right exit status, no
traceback, and leaves the database as it was."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from ntx.doctor import CHECKS as DOCTOR_CHECKS
from ntx.nepal import nepal_today
from ntx.settings import DEFAULT_API, resolve_backfill
from ntx.sources.nepse.token import TokenModule, cut
from tests.helpers import ntx_env, run_ntx, run_ntx_async


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_one_line_error(
    result: subprocess.CompletedProcess[str], code: int, *needles: str
) -> None:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("ntx: error: ")
    assert "Traceback" not in result.stderr + result.stdout
    for needle in needles:
        assert needle in lines[0], lines[0]


SMALL_DEMO = [
    "backfill",
    "--demo",
    "--demo-securities",
    "15",
    "--demo-latency-ms",
    "0",
    "--sleep",
    "0",
]


@pytest.fixture(scope="module")
def existing_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real ntx database, made by a small demo backfill."""
    folder = tmp_path_factory.mktemp("db")
    db = folder / "ntx.db"
    result = run_ntx(
        *SMALL_DEMO,
        "--db",
        str(db),
        "--progress",
        "plain",
        "--ownership",
    )
    assert result.returncode == 0, result.stderr
    return db


BAD_FLAGS = [  # each error names the flag, and says what it wants
    (["--workers", "0"], "--workers: ", "greater than or equal to 1"),
    (["--workers", "many"], "--workers: ", "valid integer"),
    (["--sleep", "-1"], "--sleep: ", "must be a number of seconds >= 0, or 'auto'"),
    (["--sleep", "nan"], "--sleep: ", "must be a number of seconds"),
    (["--sleep", "fast"], "--sleep: ", "or 'auto', got 'fast'"),
    (["--from", "2025-13-01"], "--from: ", "'2025-13-01' does not match", "%Y-%m-%d"),
    (["--to", "yesterday"], "--to: ", "'yesterday' does not match"),
    (["--from", "2025-06-02", "--to", "2025-06-01"], "--from 2025-06-02 is after --to 2025-06-01"),
    (["--api", "ftp://example.com"], "--api: ", "must be an http:// or https:// URL"),
    (["--timeout", "0"], "--timeout: ", "must be a number of seconds > 0"),
    (["--symbols", "NABIL,,ADBL"], "--symbols: ", "takes a comma-separated list"),
    (["--progress", "loud"], "--progress: ", "'loud' is not one of 'auto', 'rich', 'plain'"),
    (["--demo-latency-ms", "-3"], "--demo-latency-ms: ", "greater than or equal to 0"),
    (["--demo-securities", "0"], "--demo-securities: ", "greater than or equal to 1"),
    (["--fail-rate", "2"], "--fail-rate: ", "less than or equal to 1"),
    (["--faults", "429,boom"], "--faults: ", "unknown fault 'boom'"),
    (["--retries", "-1"], "--retries: ", "greater than or equal to 0"),
    (["--retries", "101"], "--retries: ", "less than or equal to 100"),
    (["--api", "http://127.0.0.1:9", "--fail-rate", "0.1"], "--fail-rate: only with --demo"),
    (["--api", "http://127.0.0.1:9", "--demo-token-ttl", "5"], "--demo-token-ttl: only with"),
    (["--demo", "--demo-token-ttl", "0"], "--demo-token-ttl: ", "greater than or equal to 0.1"),
    (["--rate", "0"], "--rate: ", "must be a number of requests per second > 0"),
    (["--demo-rate-limit", "-4"], "--demo-rate-limit: ", "requests per second > 0"),
    (["--api", "http://127.0.0.1:9", "--demo-burst", "3"], "--demo-burst: only with --demo"),
    (["--demo", "--demo-limiter", "sliding"], "the limiter, burst and refuse options shape a"),
    (
        ["--demo", "--demo-rate-limit", "5", "--demo-burst", "0"],
        "--demo-burst: ",
        "greater than or equal to 1",
    ),
    (["--token-max-age", "0"], "--token-max-age: ", "must be a number of seconds > 0"),
    (["-H", "no colon here"], "--header takes NAME: VALUE", "got 'no colon here'"),
    (["--max-age", "ownership=soon"], "--max-age: ", "a number and a unit (30m, 12h, 7d) or 0"),
    (["--max-age", "prices=1d"], "--max-age: ", "DATASET=AGE pairs for companies, holidays"),
    (["--prices-by", "sometimes"], "--prices-by", "'sometimes' is not one of 'auto', 'date'"),
    (["--wrokers", "3"], "No such option: --wrokers"),
]
BACKFILL_DEFAULTS: dict[str, Any] = {  # what the CLI passes for `ntx backfill` alone
    "datasets": {},
    "symbols": None,
    "all_instruments": False,
    "start": None,
    "end": None,
    "workers": 5,
    "sleep": "0.2",
    "rate": None,
    "timeout": 30.0,
    "retries": 5,
    "busy_timeout": 10.0,
    "force": False,
    "db": None,
    "api": None,
    "api_given": False,
    "demo": None,
    "insecure": False,
    "progress": "auto",
}


@pytest.mark.parametrize(("flags", "messages"), [(flags, rest) for flags, *rest in BAD_FLAGS])
def test_bad_flags_are_usage_errors(
    existing_db: Path, flags: list[str], messages: list[str]
) -> None:
    before = digest(existing_db)
    args = ["backfill", "--db", str(existing_db), *flags]
    if "--api" not in flags:
        args.append("--demo")
    assert_one_line_error(run_ntx(*args), 2, *messages)
    assert digest(existing_db) == before


def test_the_real_exchange_is_the_default_source_and_only_one_is_given(tmp_path: Path) -> None:
    # without --api or --demo the run targets the exchange; asking it would leave 127.0.0.1,
    # so the check stops at the resolved settings and at what --help promises
    settings = resolve_backfill(**BACKFILL_DEFAULTS)
    assert settings.api == DEFAULT_API == "https://www.nepalstock.com.np"
    assert settings.db == Path("ntx.db")
    assert DEFAULT_API in " ".join(run_ntx("backfill", "--help").stdout.split())
    db = tmp_path / "new.db"
    assert_one_line_error(
        run_ntx("backfill", "--db", str(db), "--demo", "--api", "http://127.0.0.1:1"), 2, "not both"
    )
    assert not db.exists()


def test_unknown_symbol_is_named_before_anything_is_written(
    existing_db: Path, tmp_path: Path
) -> None:
    before = digest(existing_db)
    base = SMALL_DEMO
    result = run_ntx(*base, "--db", str(existing_db), "--symbols", "NABIL,NOSUCH")
    assert_one_line_error(result, 2, "unknown symbol NOSUCH")
    assert digest(existing_db) == before
    fresh = tmp_path / "fresh.db"
    assert_one_line_error(run_ntx(*base, "--db", str(fresh), "--symbols", "zzz"), 2, "ZZZ")
    assert not fresh.exists()


def test_db_in_a_missing_directory(tmp_path: Path) -> None:
    result = run_ntx("backfill", "--demo", "--db", str(tmp_path / "nope" / "ntx.db"))
    assert_one_line_error(result, 2, "does not exist")


def test_db_in_an_unwritable_directory(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        folder = Path("/sys")  # permission bits do not stop root; sysfs does
    else:
        folder = tmp_path / "ro"
        folder.mkdir()
        folder.chmod(0o555)
    result = run_ntx("backfill", "--demo", "--db", str(folder / "ntx.db"))
    assert_one_line_error(result, 2, "cannot create files in")


def test_db_that_is_not_sqlite_is_left_untouched(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("my precious notes\n" * 100)
    before = digest(notes)
    assert_one_line_error(
        run_ntx("backfill", "--demo", "--db", str(notes)), 2, "is not a SQLite database"
    )
    assert digest(notes) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_sqlite_file_of_another_program_is_left_untouched(tmp_path: Path) -> None:
    import sqlite3

    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE mine (x)")
    before = digest(other)
    assert_one_line_error(run_ntx("backfill", "--demo", "--db", str(other)), 2, "another program")
    assert digest(other) == before


def test_api_that_refuses_connections(existing_db: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    before = digest(existing_db)
    result = run_ntx(
        "backfill", "--api", f"http://127.0.0.1:{port}", "--db", str(existing_db), "--timeout", "5"
    )
    assert_one_line_error(result, 1, "cannot fetch the security list", "cannot connect")
    assert digest(existing_db) == before


def test_status_of_a_missing_database(tmp_path: Path) -> None:
    assert_one_line_error(
        run_ntx("status", "--db", str(tmp_path / "none.db")), 2, "no such database"
    )
    assert not (tmp_path / "none.db").exists()


def test_demo_backfill_from_a_fresh_directory_uses_its_own_database(tmp_path: Path) -> None:
    result = run_ntx(
        "backfill",
        "--demo",
        "--demo-securities",
        "20",
        "--demo-latency-ms",
        "1",
        "--sleep",
        "0",
        "--from",
        "2026-01-01",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "ntx-demo.db").exists() and not (tmp_path / "ntx.db").exists()
    lines = result.stdout.splitlines()  # not a terminal: plain lines
    assert lines[0].startswith("ntx: backfilling from the demo exchange at http://127.0.0.1:")
    assert "=== Backfilling prices (5 workers, 0 s throttle) ===" in lines
    assert any(
        re.fullmatch(r"\[prices 1/\d+\] \S+ fetching \(2026-01-01 to \d{4}-\d\d-\d\d\)\.\.\.", line)
        for line in lines
    )
    assert any(
        re.fullmatch(r"\[prices \d+/\d+\] \S+ done \([\d,]+ records\)", line) for line in lines
    )
    assert re.search(
        r"^Prices: [\d,]+ new, 0 updated, 0 unchanged, 0 errors in ", result.stdout, re.M
    )
    assert lines[-1] == f"Database: {tmp_path / 'ntx-demo.db'}"


def test_json_progress_is_one_object_per_line(tmp_path: Path) -> None:
    import json

    result = run_ntx(
        "backfill",
        "--demo",
        "--demo-securities",
        "12",
        "--demo-latency-ms",
        "0",
        "--sleep",
        "0",
        "--ownership",
        "--prices",
        "--from",
        "2026-01-01",
        "--progress",
        "json",
        "--db",
        str(tmp_path / "j.db"),
    )
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert events[0]["event"] == "run_started" and events[-1]["event"] == "run_finished"
    assert events[-1]["exit_code"] == 0
    finished = [e for e in events if e["event"] == "job_finished" and e["dataset"] == "ownership"]
    assert finished and all(e["error"] is None and e["rows"] == 1 for e in finished)
    prices = [e for e in events if e["event"] == "job_started" and e["dataset"] == "prices"]
    assert prices and prices[0]["ranges"][0]["start"] == "2026-01-01"


def test_settings_come_from_env_and_config_but_flags_win(tmp_path: Path) -> None:
    config = tmp_path / "ntx.toml"
    config.write_text('workers = 3\nsleep = 0\ndb = "%s"\n' % (tmp_path / "from-config.db"))
    env = {**ntx_env(), "NTX_CONFIG": str(config), "NTX_WORKERS": "2"}
    args = [
        sys.executable,
        "-m",
        "ntx",
        "backfill",
        "--demo",
        "--demo-securities",
        "12",
        "--demo-latency-ms",
        "0",
        "--ownership",
        "--progress",
        "plain",
    ]
    result = subprocess.run(
        args, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "(2 workers, 0 s throttle)" in result.stdout  # env beats config; config beats default
    assert (tmp_path / "from-config.db").exists()
    result = subprocess.run(  # a new database: the first one's snapshots are all fresh
        [*args, "--workers", "4", "--db", str(tmp_path / "flag.db")],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert "(4 workers, 0 s throttle)" in result.stdout  # the flag beats both
    config.write_text("wrokers = 3\n")
    result = subprocess.run(
        args, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120
    )
    assert_one_line_error(result, 2, "unknown setting 'wrokers'")
    bad_env = {**env, "NTX_SLEEP": "-2"}
    config.write_text("")
    result = subprocess.run(
        args, capture_output=True, text=True, env=bad_env, cwd=tmp_path, timeout=120
    )
    assert_one_line_error(result, 2, "NTX_SLEEP: ", "must be a number of seconds")
    config.write_text("workers = 0\n")
    no_env = {name: value for name, value in env.items() if name != "NTX_WORKERS"}
    result = subprocess.run(
        args, capture_output=True, text=True, env=no_env, cwd=tmp_path, timeout=120
    )
    assert_one_line_error(result, 2, f"{config}: workers: ", "greater than or equal to 1")


def test_demo_serve_answers_in_the_wire_format_and_stops_on_ctrl_c() -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ntx",
            "demo",
            "serve",
            "--port",
            "0",
            "--securities",
            "25",
            "--latency-ms",
            "0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ntx_env(),
        stdin=subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.match(r"Demo exchange at (http://127\.0\.0\.1:\d+): 25 securities", line)
        assert match, line
        base = match.group(1)
        refused = httpx.get(f"{base}/api/nots/company/list", timeout=10)
        assert refused.status_code == 401 and "text/html" in refused.headers["content-type"]
        # the handshake, by hand: prove, the module, the five positions cut out
        proved = httpx.get(f"{base}/api/authenticate/prove", timeout=10).json()
        module = TokenModule(httpx.get(f"{base}/assets/prod/css.wasm", timeout=10).content)
        salts = tuple(proved[f"salt{i}"] for i in range(1, 6))
        token = cut(proved["accessToken"], module.access_positions(salts))  # type: ignore[arg-type]
        api = httpx.Client(base_url=base, headers={"Authorization": f"Salter {token}"}, timeout=10)
        companies = api.get("/api/nots/company/list").json()
        assert len(companies) == 25 and {"symbol", "instrumentType", "status"} <= set(companies[0])
        securities = api.get("/api/nots/security?nonDelisted=true").json()
        history = f"/api/nots/market/history/security/{securities[0]['id']}"
        today = nepal_today()
        old = {"startDate": "2020-01-01", "endDate": str(today), "size": 9999, "page": 0}
        refused = api.get(history, params=old)  # before the 365-day window
        assert (refused.status_code, refused.text) == (500, "Searched Date is not valid.")
        recent = {**old, "startDate": str(today - timedelta(days=365))}
        page = api.get(history, params=recent).json()
        assert page["size"] == 500 and 0 < len(page["content"]) <= 500
        assert api.get("/api/nots/security/999999999").status_code == 404
        small = api.get(f"/api/nots/security/{securities[0]['id']}").json()
        assert set(small) == {"securityData", "securityMcsData"}  # a GET: no ownership
        assert (
            api.post(f"/api/nots/security/{securities[0]['id']}", json={"id": -1}).status_code
            == 401
        )
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "Traceback" not in err


async def test_exit_status_is_1_when_lists_fail(
    start_demo: Callable[..., Any], tmp_path: Path
) -> None:
    url, recorder = await start_demo(securities=10)
    recorder.fail["/api/nots/company/list"] = 503
    db = tmp_path / "x.db"
    result = await run_ntx_async("backfill", "--api", url, "--db", str(db))
    assert_one_line_error(result, 1, "cannot fetch the security list", "HTTP 503")
    assert not db.exists()


def test_rich_progress_end_to_end(tmp_path: Path) -> None:
    result = run_ntx(
        "backfill",
        "--demo",
        "--demo-securities",
        "15",
        "--demo-latency-ms",
        "1",
        "--sleep",
        "0",
        "--progress",
        "rich",
        "--db",
        str(tmp_path / "r.db"),
        "--from",
        "2026-01-01",
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    screen = result.stdout
    assert "\x1b[" in screen  # drawn for a terminal
    for title in ("Companies", "Prices", "Reports", "Dividends", "Ownership"):
        assert title in screen
    assert "ETA done" in screen and "working on:" in screen
    assert re.search(r"^Prices: [\d,]+ new, 0 updated", screen, re.M)


def test_internal_errors_are_one_line_unless_debugging(tmp_path: Path) -> None:
    """A bug must not dump a traceback on users, but NTX_DEBUG=1 shows it to developers."""
    code = (
        "import ntx.backfill as b\n"
        "async def broken(*a, **k):\n    raise RuntimeError('boom')\n"
        "b.run_backfill = broken\n"
        "from ntx.cli import main\nmain()\n"
    )
    args = [sys.executable, "-c", code, "backfill", "--demo", "--db", str(tmp_path / "x.db")]
    result = subprocess.run(args, capture_output=True, text=True, env=ntx_env(), timeout=60)
    assert_one_line_error(result, 1, "internal error: RuntimeError: boom", "NTX_DEBUG=1")
    debug = subprocess.run(
        args, capture_output=True, text=True, env={**ntx_env(), "NTX_DEBUG": "1"}, timeout=60
    )
    assert "Traceback" in debug.stderr and debug.returncode == 1


def test_a_reader_that_goes_away_stops_output_quietly(existing_db: Path) -> None:
    """`ntx status | head`: when the pipe's reader is gone, stop quietly as Unix tools do.
    (`true` exits without reading, so the pipe is always closed when ntx writes.)"""
    script = (
        f'"{sys.executable}" -m ntx status --db "{existing_db}" | true; echo "${{PIPESTATUS[0]}}"'
    )
    result = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, env=ntx_env(), timeout=60
    )
    assert result.stderr == ""  # no "internal error", no traceback
    assert result.stdout.strip() == "141"  # 128 + SIGPIPE, as a shell reports a pipe's writer


def test_doctor_passes_every_check_on_the_demo_and_writes_nothing(tmp_path: Path) -> None:
    result = run_ntx("doctor", "--demo", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("ntx doctor: checking the demo exchange at http://127.0.0.1:")
    checks = [line.split(":")[0].split(None, 1) for line in lines[1:]]
    assert checks == [["ok", name] for name in DOCTOR_CHECKS]
    assert "market-open id 80" in result.stdout and "payload id was accepted" in result.stdout
    assert "serves daily history from" in result.stdout
    assert list(tmp_path.iterdir()) == []  # no database, nothing else


async def test_doctor_names_the_first_failing_check_and_exits_1(
    start_demo: Callable[..., Any], tmp_path: Path
) -> None:
    url, recorder = await start_demo(securities=10)
    recorder.fail["/api/authenticate/prove"] = 500
    result = await run_ntx_async("doctor", "--api", url, cwd=tmp_path)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["ok", "ok", "ok", "FAIL", "-", "-", "-", "-"]
    assert "handshake:" in lines[3] and "HTTP 500 from /api/authenticate/prove" in lines[3]
    assert "What to do: the site may have changed its API" in lines[3]
    assert all("not run (needs the check above)" in line for line in lines[4:])
    assert list(tmp_path.iterdir()) == []


def test_doctor_says_what_to_do_when_the_host_cannot_be_reached() -> None:
    result = run_ntx("doctor", "--api", "http://127.0.0.1:1")
    assert result.returncode == 1
    first = result.stdout.splitlines()[0]
    assert first.startswith("FAIL  name resolution and TCP:")
    assert "cannot connect to 127.0.0.1 port 1" in first and "check the URL (--api)" in first
