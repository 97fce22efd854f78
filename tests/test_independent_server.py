"""Against an independent NEPSE-compatible server (tests/independent_server.py): not the
demo, written from the API doc alone, so the client is not fitted to the demo's quirks.
Observed from the server: exact data, at most --workers requests in flight, --sleep between
one answer and the next request, and a rate limit found and kept to with --sleep auto."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import run_ntx, run_ntx_async
from tests.independent_server import FAULTS, Exchange, Handler, running
from tests.test_net import answer, serving
from tests.test_tls_chain import make_chain


@pytest.fixture
def independent() -> Iterator[tuple[str, type[Handler]]]:
    with running(Exchange()) as served:
        yield served


ARGS = (
    "--from",
    "2021-01-01",
    "--to",
    "2025-06-30",
    "--workers",
    "4",
    "--sleep",
    "0",
    "--progress",
    "plain",
)


def expected(ex: Exchange, start: str = "2021-01-01") -> dict[str, list[tuple[Any, ...]]]:
    """What a correct backfill of the default universe stores, table by table, in key order
    (prices from `start`)."""
    ids = {s["symbol"]: s["id"] for s in ex.securities}
    universe = sorted(
        ids[c["symbol"]]
        for c in ex.companies
        if c["instrumentType"] == "Equity" and c["status"] == "A"
    )
    return {
        "prices": sorted(
            (
                sid,
                r["businessDate"],
                None,
                r["highPrice"],
                r["lowPrice"],
                r["closePrice"],
                r["totalTradedQuantity"],
                r["totalTradedValue"],
                r["totalTrades"],
                None,
                None,
                None,
                None,
            )
            for sid in universe
            for r in ex.history[sid]
            if start <= r["businessDate"] <= "2025-06-30"
        ),
        "reports": [(sid, "2080/2081", "Q2", 12.5, 20.0, 150.0, 1e9, 1e8) for sid in universe],
        "dividends": [(sid, "2079/2080", 5.0, 0.0, None) for sid in universe],
        "ownership": [(sid, 1e6, 1e8, 400000, 40.0, 600000.0, 60.0) for sid in universe],
    }


def assert_exact(db: Path, ex: Exchange, start: str = "2021-01-01") -> None:
    with sqlite3.connect(db) as conn:
        for name, rows in expected(ex, start).items():
            assert conn.execute(f"SELECT * FROM {name} ORDER BY 1, 2").fetchall() == rows, name
        assert conn.execute("SELECT count(*) FROM securities").fetchone()[0] == 12


def test_every_row_of_all_five_datasets_and_at_most_workers_in_flight(
    independent: tuple[str, type[Handler]], tmp_path: Path
) -> None:
    url, handler = independent
    db = tmp_path / "ind.db"
    result = run_ntx("backfill", "--api", url, "--db", str(db), *ARGS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert_exact(db, handler.exchange)
    assert len(expected(handler.exchange)["prices"]) > 8000
    assert handler.max_in_flight <= 4
    pages = [p for _, _, p in handler.log if "page=2" in p]
    assert pages  # 100-row pages: multi-year histories took many pages


def test_one_worker_starts_each_request_sleep_after_the_previous_answer(
    independent: tuple[str, type[Handler]], tmp_path: Path
) -> None:
    url, handler = independent
    result = run_ntx(
        "backfill",
        "--api",
        url,
        "--from",
        "2025-01-01",
        "--to",
        "2025-06-30",
        "--db",
        str(tmp_path / "s.db"),
        "--workers",
        "1",
        "--sleep",
        "0.5",
        "--prices",
        "--symbols",
        "IND01,IND02",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    log = sorted(handler.log)
    assert len(log) >= 6  # two lists, then two histories of more than one page each
    assert handler.max_in_flight == 1
    gaps = [nxt[0] - prev[1] for prev, nxt in pairwise(log)]
    assert min(gaps) >= 0.5, gaps


def test_hostile_server_every_row_still_exact(
    independent: tuple[str, type[Handler]], tmp_path: Path
) -> None:
    """15% of answers: 429 with Retry-After, 500/502/503, TCP resets, connections closed
    without an answer, truncated and malformed bodies, 2.5 s stalls, on every request the
    handshake included. Every row of all five datasets is stored exactly; exit 0."""
    url, handler = independent
    handler.fault_rate = 0.15
    db = tmp_path / "hostile.db"
    result = run_ntx("backfill", "--api", url, "--db", str(db), *ARGS, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr
    assert set(handler.faults) == set(FAULTS) and len(handler.faults) >= 2 * len(FAULTS)
    assert_exact(db, handler.exchange)
    assert "of them retries" in result.stdout


def test_sleep_auto_finds_the_servers_limit_and_honours_retry_after(tmp_path: Path) -> None:
    """A limit of 20 requests/s that ntx is not told, and 5 workers at 0.2 s to start from
    (about 24/s here): it gets 429s, slows down, keeps every row, and says what to use."""
    exchange = Exchange(securities=40, history=False)
    with running(exchange, limit=20, latency=0.01) as (url, handler):
        db = tmp_path / "auto.db"
        result = run_ntx(
            "backfill",
            "--api",
            url,
            "--db",
            str(db),
            "--reports",
            "--dividends",
            "--ownership",
            "--sleep",
            "auto",
            "--progress",
            "plain",
        )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr
    with sqlite3.connect(db) as conn:
        for name, rows in expected(exchange).items():
            if name != "prices":
                assert conn.execute(f"SELECT * FROM {name} ORDER BY 1, 2").fetchall() == rows
    assert "auto pace from 5 workers, 0.2 s throttle" in result.stdout
    advice = re.search(r"Pace: .*next time: .*--workers (\d+) --sleep ([\d.]+)", result.stdout)
    assert advice, result.stdout[-1000:]
    refused = [
        (end, path)
        for (_, end, path), status in zip(handler.log, handler.statuses, strict=True)
        if status == 429
    ]
    assert refused  # the limit was reached ...
    assert "congestion" in result.stdout  # ... and the pace came down for it
    # Retry-After: 1 holds back the refused request: it is not asked again within the second
    # after its 429 (under --sleep auto the other workers go on at the lowered pace)
    for end, path in refused:
        again = [start for start, _, other in handler.log if other == path and start > end]
        assert again and min(again) >= end + 0.95, (path, end, again[:1])


def test_short_lived_tokens_many_handshakes_and_every_row_exact(tmp_path: Path) -> None:
    """Tokens live 0.2 s: the run renews them again and again (401, one handshake for all
    workers), POSTs ownership with each token's payload id, and stores every row."""
    with running(Exchange(), token_ttl=0.2, latency=0.02) as (url, handler):
        db = tmp_path / "tokens.db"
        result = run_ntx("backfill", "--api", url, "--db", str(db), *ARGS)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr
    assert_exact(db, handler.exchange)
    assert handler.handshakes >= 3
    assert re.search(rf"{handler.handshakes} token handshakes", result.stdout)
    assert 401 in handler.statuses  # expired tokens were refused, then renewed


def test_a_plain_mirror_without_the_handshake_is_read_without_a_token(tmp_path: Path) -> None:
    with running(Exchange(), protocol=False) as (url, handler):
        db = tmp_path / "mirror.db"
        result = run_ntx("backfill", "--api", url, "--db", str(db), *ARGS)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr
    assert_exact(db, handler.exchange)
    assert "token handshake" not in result.stdout


def test_a_from_older_than_the_window_costs_a_few_requests_not_a_retry_storm(
    tmp_path: Path,
) -> None:
    with running(Exchange(), window_days=365) as (url, handler):
        db = tmp_path / "window.db"
        result = run_ntx("backfill", "--api", url, "--db", str(db), *ARGS)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr
    assert_exact(db, handler.exchange, start="2024-06-30")
    refused = handler.statuses.count(500)
    assert 1 <= refused <= 13, refused  # the first refusals, and half of a binary search
    assert "the server keeps daily history from 2024-06-30 on" in result.stdout


def test_a_server_that_clips_silently_gets_coverage_only_where_the_rows_are(
    tmp_path: Path,
) -> None:
    """The window again, but the server answers an early start with the rows it keeps, and
    no error: ntx stores them, covers only from where they start, and asks again next run
    without changing a row."""
    with running(Exchange(), window_days=365, clip=True) as (url, handler):
        db = tmp_path / "clip.db"
        first = run_ntx("backfill", "--api", url, "--db", str(db), *ARGS, "--prices")
        assert first.returncode == 0, first.stdout[-2000:] + first.stderr
        assert 500 not in handler.statuses
        with sqlite3.connect(db) as conn:
            starts = conn.execute(
                "SELECT c.covered_from, min(p.date) FROM ntx_coverage c"
                " JOIN prices p USING (security_id) WHERE c.dataset = 'prices'"
                " GROUP BY c.security_id"
            ).fetchall()
            before = conn.execute("SELECT * FROM prices ORDER BY 1, 2").fetchall()
        assert starts and all(covered == first_row >= "2024-06-30" for covered, first_row in starts)
        assert before == expected(handler.exchange, start="2024-06-30")["prices"]
        asked = len(handler.log)
        again = run_ntx("backfill", "--api", url, "--db", str(db), *ARGS, "--prices")
        assert again.returncode == 0, again.stdout[-2000:] + again.stderr
        history = [p for _, _, p in handler.log[asked:] if "/market/history/" in p]
        # the days before the rows (2021-01-01 to 2024-06-29), asked again: two jobs of at
        # most 700 days a security, and nothing else
        assert len(history) == 2 * len(starts)
        with sqlite3.connect(db) as conn:
            assert conn.execute("SELECT * FROM prices ORDER BY 1, 2").fetchall() == before


async def test_an_incomplete_tls_chain_is_completed_and_every_row_exact(tmp_path: Path) -> None:
    """The server presents only its own certificate, as the exchange does; the intermediate
    is at the certificate's AIA address. Verification stays on and every row is stored."""
    async with serving(lambda n: (b"", True)) as (aia_base, aia):
        chain = make_chain(tmp_path, f"{aia_base}/intermediate.der")
        aia.reply = lambda n: (answer(chain.intermediate), False)
        with running(Exchange(), tls=chain.leaf_only) as (url, handler):
            assert url.startswith("https://127.0.0.1:")
            db = tmp_path / "tls.db"
            result = await run_ntx_async(
                "backfill",
                "--api",
                url,
                "--db",
                str(db),
                *ARGS,
                env={"SSL_CERT_FILE": str(chain.roots)},
            )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr
    assert "warning" not in result.stderr.lower()
    assert_exact(db, handler.exchange)
    assert aia.targets == ["/intermediate.der"]
