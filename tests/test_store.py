"""The store on real SQLite files: migrations, ownership mark, atomic idempotent upserts."""

from __future__ import annotations

import sqlite3
from datetime import date
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ntx.db.schema import APPLICATION_ID, MIGRATIONS, SCHEMA_VERSION, TABLES
from ntx.db.store import Store
from ntx.errors import StoreError, UsageError
from ntx.model import DateRange, Job, JobResult, Security

maybe = st.one_of(st.none(), st.sampled_from([9.5, 10.5]))  # only the by-date answer has it
price = st.tuples(
    st.integers(1, 3),  # security id
    st.sampled_from(["2024-01-01", "2024-01-02", "2024-01-03"]),
    maybe,  # open
    st.sampled_from([10.0, 11.5]),
    st.sampled_from([9.0, 9.5]),
    st.sampled_from([9.5, 10.0]),
    st.integers(0, 3),
    st.sampled_from([0.0, 100.5]),
    st.integers(0, 2),
    maybe,  # previous close
    maybe,  # average price
    maybe,  # 52-week high
    maybe,  # 52-week low
)
PARTIAL = (2, 9, 10, 11, 12)
NO_DAY = (
    None,
    None,
    None,
    None,
)  # the by-date columns of a history row  # a null there leaves the stored value in place


def merged(old: tuple[object, ...] | None, new: tuple[object, ...]) -> tuple[object, ...]:
    """The row stored after `new` is upserted over `old`."""
    if old is None:
        return new
    return tuple(old[i] if i in PARTIAL and value is None else value for i, value in enumerate(new))


def result_for(rows: list[tuple[object, ...]]) -> list[JobResult]:
    by_security: dict[int, list[tuple[object, ...]]] = {}
    for row in rows:
        by_security.setdefault(int(row[0]), []).append(row)  # type: ignore[call-overload]
    return [
        JobResult(Job("prices", Security(sid, f"S{sid}")), rs) for sid, rs in by_security.items()
    ]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batches=st.lists(st.lists(price, max_size=12), min_size=1, max_size=5))
def test_upserts_are_idempotent_and_last_known_value_wins(
    tmp_path: Path, batches: list[list[tuple[object, ...]]]
) -> None:
    db = tmp_path / f"p{abs(hash(str(batches)))}.db"
    store = Store.open(db)
    run_id = store.begin_run("t", "t", ["prices"])
    model: dict[tuple[object, object], tuple[object, ...]] = {}
    for batch in batches:
        unique = {(row[0], row[1]): row for row in batch}  # one answer holds a day once
        counts = store.apply(run_id, result_for(list(unique.values())))
        new = sum(c.new for c in counts)
        updated = sum(c.updated for c in counts)
        assert new == sum(1 for key in unique if key not in model)
        assert updated == sum(
            1
            for key, row in unique.items()
            if key in model and merged(model[key], row) != model[key]
        )
        model.update({key: merged(model.get(key), row) for key, row in unique.items()})
        again = store.apply(run_id, result_for(list(unique.values())))
        assert all(c.new == 0 and c.updated == 0 for c in again)  # re-applying changes nothing
    with sqlite3.connect(db) as conn:
        stored = conn.execute("SELECT * FROM prices").fetchall()
    assert sorted(stored) == sorted(model.values())
    store.close()


def test_new_database_is_marked_and_migrated(tmp_path: Path) -> None:
    Store.open(tmp_path / "n.db").close()
    with sqlite3.connect(tmp_path / "n.db") as conn:
        assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {
        "securities",
        "prices",
        "reports",
        "dividends",
        "ownership",
        "ntx_runs",
        "ntx_jobs",
    } <= tables
    Store.open(tmp_path / "n.db").close()  # reopening is a no-op migration


def test_a_database_from_a_newer_ntx_is_refused(tmp_path: Path) -> None:
    Store.open(tmp_path / "f.db").close()
    with sqlite3.connect(tmp_path / "f.db") as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(UsageError, match="newer ntx"):
        Store.open(tmp_path / "f.db")


def test_a_flush_is_one_transaction(tmp_path: Path) -> None:
    """If any part of a flush fails, none of it is stored: rows and job records go together."""
    store = Store.open(tmp_path / "a.db")
    run_id = store.begin_run("t", "t", ["prices"])
    good = JobResult(
        Job("prices", Security(1, "A")),
        [(1, "2024-01-01", None, 2.0, 1.0, 1.5, 1, 1.0, 1, *NO_DAY)],
    )
    broken = JobResult(
        Job("prices", Security(2, "B")), [(2, "2024-01-01", None, 2.0)]
    )  # too few values
    with pytest.raises(StoreError, match="while saving; every earlier commit is intact"):
        store.apply(run_id, [good, broken])
    with sqlite3.connect(tmp_path / "a.db") as conn:
        assert conn.execute("SELECT count(*) FROM prices").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM ntx_jobs").fetchone()[0] == 0
    store.apply(run_id, [good])
    with sqlite3.connect(tmp_path / "a.db") as conn:
        assert conn.execute("SELECT count(*) FROM prices").fetchone()[0] == 1
        assert conn.execute("SELECT status FROM ntx_jobs").fetchall() == [("done",)]
    store.close()


def test_read_only_open_never_writes(tmp_path: Path) -> None:
    Store.open(tmp_path / "r.db").close()
    before = (tmp_path / "r.db").read_bytes()
    store = Store.open_readonly(tmp_path / "r.db")
    assert [line.rows for line in store.status()] == [0, 0, 0, 0, 0, 0]
    store.close()
    assert (tmp_path / "r.db").read_bytes() == before


def test_the_migrated_tables_have_exactly_the_columns_and_keys_the_schema_states(
    tmp_path: Path,
) -> None:
    Store.open(tmp_path / "s.db").close()
    with sqlite3.connect(tmp_path / "s.db") as conn:
        for table in TABLES.values():
            info = conn.execute(f"PRAGMA table_info({table.name})").fetchall()
            assert tuple(column[1] for column in info) == table.columns
            key = tuple(column[1] for column in sorted(info, key=lambda c: c[5]) if column[5])
            assert key == table.key


def test_each_migration_is_a_list_of_whole_statements() -> None:
    for migration in MIGRATIONS:
        assert migration and all(sqlite3.complete_statement(s + ";") for s in migration)
        assert not any(sqlite3.complete_statement(s) for s in migration)  # one statement each


@pytest.mark.parametrize(
    ("first_row", "covered_from"),
    [
        ("2024-01-05", "2024-01-01"),  # a few days without a row: holidays, a weekend
        ("2024-02-01", "2024-01-01"),  # 31 days: still a closure the exchange could have
        ("2024-02-02", "2024-02-02"),  # more: a server that clipped, or a later listing
    ],
)
def test_coverage_starts_where_the_rows_do_after_a_month_without_any(
    tmp_path: Path, first_row: str, covered_from: str
) -> None:
    store = Store.open(tmp_path / "c.db")
    run_id = store.begin_run("t", "t", ["prices"])
    asked = DateRange(date(2024, 1, 1), date(2024, 6, 30))
    row = (1, first_row, None, 2.0, 1.0, 1.5, 1, 1.0, 1, *NO_DAY)
    store.apply(run_id, [JobResult(Job("prices", Security(1, "A"), (asked,), asked), [row])])
    assert store.coverage("prices") == {1: DateRange(date.fromisoformat(covered_from), asked.end)}
    # an older row stored before (an archive) keeps the claim whole
    older = (1, "2023-12-29", None, 2.0, 1.0, 1.5, 1, 1.0, 1, *NO_DAY)
    again = DateRange(date(2023, 12, 1), date(2023, 12, 31))
    store.apply(
        run_id,
        [JobResult(Job("prices", Security(1, "A"), (again,), again.union(asked)), [older])],
    )
    assert store.coverage("prices") == {1: again.union(asked)}
    store.close()
