"""The lists' scratch file: records in as they arrive, the joined rows and the universe out."""

from __future__ import annotations

import math
import os
import subprocess
from pathlib import Path

import pytest

from ntx.errors import StoreError, UsageError
from ntx.lists import ListStage

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


def staged(securities: list[dict[str, object]] = SECURITIES) -> ListStage:
    stage = ListStage()
    for sink, records in ((stage.companies, COMPANIES), (stage.securities, securities)):
        sink.start()
        for record in records:
            sink.add(record)
    return stage


def test_rows_join_by_symbol_one_per_listed_security_in_list_order() -> None:
    with staged() as stage:
        listing = stage.listing()
        assert len(listing) == 4
        assert list(listing) == [
            # the last company record of a symbol wins; an empty status falls back
            (3, "NABIL", "Nabil Bank Ltd", "Banks", "Equity", "A", "Nabil Bank", 31,
             "a@b.np", "nabil.np", "NRB"),
            # an empty company name falls back to the security's name
            (1, "ADBL", "Agri Bank", None, "Equity", "A", "Agri Bank", 10, None, None, None),
            (7, "MF1", "Fund One", None, "Mutual Fund", "A", "Fund One", 70, None, None, None),
            (9, "LONE", "No Company", None, None, "A", "No Company", None, None, None, None),
        ]  # fmt: skip
        assert list(listing) == list(listing)  # read again from the file, the same


def test_the_universe_is_active_equities_or_everything_or_the_named_sorted_by_symbol() -> None:
    with staged() as stage:
        listing = stage.listing()
        default = listing.universe((), all_instruments=False)
        assert [sec.symbol for sec in default] == ["ADBL", "NABIL"] and len(default) == 2
        everything = listing.universe((), all_instruments=True)
        assert [sec.symbol for sec in everything] == ["ADBL", "LONE", "MF1", "NABIL"]
        named = listing.universe(["nabil", "MF1", "NABIL"], all_instruments=False)
        assert [(sec.id, sec.symbol, sec.instrument_type) for sec in named] == [
            (7, "MF1", "Mutual Fund"),
            (3, "NABIL", "Equity"),
        ]
        with pytest.raises(UsageError, match="unknown symbols GONE, NOPE: not in the security"):
            listing.universe(["NABIL", "gone", "nope"], all_instruments=False)


def test_a_restarted_list_replaces_what_the_failed_attempt_left() -> None:
    with staged() as stage:
        stage.securities.start()  # a retried answer starts over
        stage.securities.add(SECURITIES[0])
        assert [row[1] for row in stage.listing()] == ["NABIL"]


@pytest.mark.parametrize(
    ("record", "error"),
    [
        ({"id": "3", "symbol": "X"}, "security id '3' is not an integer"),
        ({"id": True, "symbol": "X"}, "security id True is not an integer"),
        ({"id": 3, "symbol": 5}, "symbol 5 is not a string"),
        ({"id": 3, "symbol": "X", "securityName": 1}, "expected a string, got 1"),
    ],
)
def test_a_wrongly_typed_record_is_refused(record: dict[str, object], error: str) -> None:
    with ListStage() as stage:
        stage.securities.start()
        with pytest.raises(ValueError, match=error):
            stage.securities.add(record)
        with pytest.raises(KeyError):
            stage.securities.add({"symbol": "X"})


def test_thousands_of_records_stay_on_disk_and_the_file_goes_with_the_stage() -> None:
    securities = [
        {"id": n, "symbol": f"S{n:05d}", "securityName": f"Security {n}", "activeStatus": "A"}
        for n in range(5000)
    ]
    stage = staged(securities)
    listing = stage.listing()
    assert len(listing) == 5000 and sum(1 for _ in listing) == 5000
    assert stage.path.exists() and stage.path.stat().st_size > 100_000
    listing.close()
    assert not stage.path.exists()


def test_scratch_files_of_dead_processes_are_swept_and_the_living_ones_kept(
    tmp_path: Path,
) -> None:
    finished = subprocess.Popen(["true"])  # a process id that has just ended
    finished.wait()
    orphan = tmp_path / f"ntx-lists-{finished.pid}-abc.db"
    living = tmp_path / f"ntx-lists-{os.getppid()}-abc.db"
    other = tmp_path / "ntx-lists-notes.db"
    for path in (orphan, living, other):
        path.write_bytes(b"")
    with ListStage(tmp_path) as stage:
        assert stage.path.parent == tmp_path and str(os.getpid()) in stage.path.name
        assert not orphan.exists() and living.exists() and other.exists()
    assert not stage.path.exists()


def test_a_temporary_directory_that_cannot_be_written_is_a_one_line_store_error(
    tmp_path: Path,
) -> None:
    missing = tmp_path / "no-such-directory"
    with pytest.raises(StoreError, match=r"cannot make the lists' scratch file in .*no-such-dir"):
        ListStage(missing)


@pytest.mark.parametrize(
    ("company_id", "error"),
    [("7", "expected a number, got '7'"), (math.inf, "company id inf is not a finite number")],
)
def test_a_company_id_that_is_not_a_finite_number_is_refused(
    company_id: object, error: str
) -> None:
    with ListStage() as stage:
        stage.companies.start()
        with pytest.raises(ValueError, match=error):
            stage.companies.add({"id": company_id, "symbol": "X"})
