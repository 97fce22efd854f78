"""The company and security lists, decoded whole and joined by symbol in memory: the
`securities` rows, and the universe a run covers."""

from __future__ import annotations

import msgspec
import pytest

from ntx.datasets import COMPANIES as LISTS_SPEC
from ntx.datasets import Lists, choose_universe
from ntx.errors import UsageError
from ntx.model import Job
from ntx.sources.nepse.wire import CompanyRecord, SecurityRecord

SECURITIES = [
    {"id": 3, "symbol": "NABIL", "securityName": "Nabil Bank", "activeStatus": "A"},
    {"id": 1, "symbol": "ADBL", "securityName": "Agri Bank", "activeStatus": "S"},
    {"id": 7, "symbol": "MF1", "securityName": "Fund One", "activeStatus": "A"},
    {"id": 9, "symbol": "LONE", "securityName": "No Company", "activeStatus": "A"},
]
COMPANIES = [
    {"id": 30, "symbol": "NABIL", "companyName": "old name", "instrumentType": "Equity"},
    {
        "id": 31,
        "symbol": "NABIL",
        "companyName": "Nabil Bank Ltd",
        "sectorName": "Banks",
        "instrumentType": "Equity",
        "status": "",
        "companyEmail": "a@b.np",
        "website": "nabil.np",
        "regulatoryBody": "NRB",
    },
    {"id": 10, "symbol": "ADBL", "companyName": "", "instrumentType": "Equity", "status": "A"},
    {"id": 70, "symbol": "MF1", "companyName": "Fund One", "instrumentType": "Mutual Fund"},
    {"id": 99, "symbol": "GONE", "companyName": "Not listed", "instrumentType": "Equity"},
]


def joined(securities: list[dict[str, object]] = SECURITIES) -> list[tuple[object, ...]]:
    lists = Lists(
        msgspec.convert(COMPANIES, list[CompanyRecord]),
        msgspec.convert(securities, list[SecurityRecord]),
    )
    return LISTS_SPEC.to_rows(lists, Job("companies"))


def test_rows_join_by_symbol_one_per_listed_security_in_list_order() -> None:
    assert joined() == [
        # the last company record of a symbol wins; an empty status falls back
        (3, "NABIL", "Nabil Bank Ltd", "Banks", "Equity", "A", "Nabil Bank", 31,
         "a@b.np", "nabil.np", "NRB"),
        # an empty company name falls back to the security's name
        (1, "ADBL", "Agri Bank", None, "Equity", "A", "Agri Bank", 10, None, None, None),
        (7, "MF1", "Fund One", None, "Mutual Fund", "A", "Fund One", 70, None, None, None),
        (9, "LONE", "No Company", None, None, "A", "No Company", None, None, None, None),
    ]  # fmt: skip
    assert all(LISTS_SPEC.broken_rule(row, Job("companies")) is None for row in joined())


def test_the_universe_is_active_equities_or_everything_or_the_named_sorted_by_symbol() -> None:
    rows = joined()
    default = choose_universe(rows, (), all_instruments=False)
    assert [sec.symbol for sec in default] == ["ADBL", "NABIL"]
    everything = choose_universe(rows, (), all_instruments=True)
    assert [sec.symbol for sec in everything] == ["ADBL", "LONE", "MF1", "NABIL"]
    named = choose_universe(rows, ["nabil", "MF1", "NABIL"], all_instruments=False)
    assert [(sec.id, sec.symbol, sec.instrument_type) for sec in named] == [
        (7, "MF1", "Mutual Fund"),
        (3, "NABIL", "Equity"),
    ]
    with pytest.raises(UsageError, match="unknown symbols GONE, NOPE: not in the security"):
        choose_universe(rows, ["NABIL", "gone", "nope"], all_instruments=False)
    with pytest.raises(UsageError, match="unknown symbol ZZZ: not in the security"):
        choose_universe(rows, ["zzz"], all_instruments=True)


def test_thousands_of_securities_join_in_one_pass() -> None:
    securities = [
        {"id": n, "symbol": f"S{n:05d}", "securityName": f"Security {n}", "activeStatus": "A"}
        for n in range(20_000)
    ]
    rows = joined(securities)
    assert len(rows) == 20_000 and [row[0] for row in rows] == list(range(20_000))
    assert len(choose_universe(rows, (), all_instruments=True)) == 20_000
