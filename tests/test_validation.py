"""Validation before writing: a row that breaks a rule is refused, counted and logged with
the rule; the valid rows of the same answer are stored."""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from ntx.datasets import PRICES, REPORTS
from ntx.demo.market import Market
from ntx.errors import MalformedResponse
from ntx.model import DateRange, Job, Security
from tests.helpers import TODAY, backfill_args, default_universe, run_ntx_async, table


def spoil_history(body: dict[str, Any]) -> dict[str, Any]:
    rows = body["content"]
    rows[0]["lowPrice"], rows[0]["highPrice"] = rows[0]["highPrice"] + 1, rows[0]["lowPrice"]
    rows[1]["totalTradedQuantity"] = -5
    rows[2]["closePrice"] = math.nan
    rows[3]["businessDate"] = "2019-01-01"  # outside the requested range
    return body


async def test_invalid_rows_are_refused_and_logged_the_rest_stored(
    start_demo: Callable[..., Any], tmp_path: Path
) -> None:
    url, recorder = await start_demo(securities=30)
    market = recorder.app.market
    first, second = default_universe(market)[:2]
    recorder.rewrite[f"/api/nots/market/history/security/{first}"] = spoil_history

    def spoil_ownership(body: dict[str, Any]) -> dict[str, Any]:
        body["promoterPercentage"] = 150.0
        return body

    recorder.rewrite[f"/api/nots/security/{second}"] = spoil_ownership
    db = tmp_path / "v.db"
    dates = ("--from", "2026-01-01", "--to", "2026-06-30", "--prices-by", "security")
    result = await run_ntx_async(*backfill_args(url, db, "--prices", "--ownership", *dates))
    assert result.returncode == 0, result.stdout
    assert "Prices: " in result.stdout and "4 invalid rows refused" in result.stdout
    assert "Ownership: " in result.stdout and "1 invalid row refused" in result.stdout

    period = DateRange(date(2026, 1, 1), TODAY)
    good = market.expected_prices(first, period)[4:]  # the spoiled four are the newest rows
    stored = [row for row in table(db, "prices") if row[0] == first]
    assert sorted(stored) == sorted(good)
    assert second not in {row[0] for row in table(db, "ownership")}
    with sqlite3.connect(db) as conn:
        logged = conn.execute(
            "SELECT dataset, security_id, rule FROM ntx_invalid_rows ORDER BY rowid"
        ).fetchall()
    rules = sorted(rule for _, _, rule in logged)
    assert len(logged) == 5
    assert any(r.startswith("low ") and "is above high" in r for r in rules)
    assert "volume -5 is negative" in rules
    assert "close is not a finite number" in rules
    assert "date 2019-01-01 is outside the requested range" in rules
    assert "promoter_pct 150.0 is not a percentage from 0 to 100" in rules
    shown = await run_ntx_async("runs", "show", "1", "--db", str(db))
    assert "Invalid rows refused" in shown.stdout and "volume -5 is negative" in shown.stdout


NO_DAY = (None, None, None, None)  # the by-date columns of a history row
JOB = Job("prices", Security(1, "X"), (DateRange(date(2024, 1, 1), date(2024, 12, 31)),))


@pytest.mark.parametrize(
    ("row", "rule"),
    [
        ((1, "2024-05-05", None, 10.0, 9.0, 9.5, 5, 50.0, 1, *NO_DAY), None),
        ((1, "2024-05-05", None, 10.0, 9.0, 10.009, 5, 50.0, 1, *NO_DAY), None),  # within tolerance
        (
            (1, "2024-05-05", None, 10.0, 9.0, 10.2, 5, 50.0, 1, *NO_DAY),
            "close 10.2 is outside [low 9.0, high 10.0]",
        ),
        (
            (1, "2024-05-05", None, 10.0, 9.0, math.inf, 5, 50.0, 1, *NO_DAY),
            "close is not a finite number",
        ),
        ((1, "2024-05-05", None, 10.0, 9.0, 9.5, 5, -1.0, 1, *NO_DAY), "turnover -1.0 is negative"),
        (
            (1, "2025-01-01", None, 10.0, 9.0, 9.5, 5, 50.0, 1, *NO_DAY),
            "date 2025-01-01 is outside the requested range",
        ),
        (
            (1, "2024-05-05", None, None, 9.0, 9.5, 5, 50.0, 1, *NO_DAY),
            "high, low and close must all be present",
        ),
        ((1, "2024-05-05", 9.2, 10.0, 9.0, 9.5, 5, 50.0, 1, 9.4, 9.6, 12.0, 8.0), None),
        (
            (1, "2024-05-05", 8.0, 10.0, 9.0, 9.5, 5, 50.0, 1, *NO_DAY),
            "open 8.0 is outside [low 9.0, high 10.0]",
        ),
        (
            (1, "2024-05-05", 9.2, 10.0, 9.0, 9.5, 5, 50.0, 1, 9.4, 9.6, 8.0, 12.0),
            "52-week low 12.0 is above the 52-week high 8.0",
        ),
    ],
)
def test_price_rules(row: tuple[Any, ...], rule: str | None) -> None:
    assert PRICES.broken_rule(row, JOB) == rule


@pytest.mark.parametrize("eps", [True, "1.5", [1.5], {"value": 1.5}])
def test_a_figure_that_is_not_a_json_number_makes_the_answer_malformed(eps: Any) -> None:
    market = Market(seed=1, securities=20, today=TODAY)
    sec = next(s for s in market.listed() if market.reports_wire(s.security_id))
    wire = market.reports_wire(sec.security_id)
    report = next(entry["fiscalReport"] for entry in wire if entry["fiscalReport"])
    report["epsValue"] = eps
    with pytest.raises(MalformedResponse, match="expected a number"):
        REPORTS.to_rows(wire, Job("reports", Security(sec.security_id, sec.symbol)))


@pytest.mark.parametrize("eps", [3, -2.5, None, math.inf])
def test_a_json_number_or_null_is_taken_as_it_is(eps: Any) -> None:
    market = Market(seed=1, securities=20, today=TODAY)
    sec = next(s for s in market.listed() if market.reports_wire(s.security_id))
    wire = [entry for entry in market.reports_wire(sec.security_id) if entry["fiscalReport"]][:1]
    wire[0]["fiscalReport"]["epsValue"] = eps
    (row,) = REPORTS.to_rows(wire, Job("reports", Security(sec.security_id, sec.symbol)))
    assert row[3] is eps  # the very object decoded: no conversion on the way
