"""The database's schema: each table's name, columns and key, stated once, and the numbered
migrations that build it.

`TABLES` is what the rest of ntx reads a table's shape from (the writer's upserts, the
datasets' rows, `ntx status`); a test checks that the migrated database has exactly these
columns and keys. Migrations are history: each is a tuple of SQL statements applied in order,
never edited once released; a new column comes in a new migration.
"""

from __future__ import annotations

from dataclasses import dataclass

APPLICATION_ID = 0x4E545831  # "NTX1"


@dataclass(frozen=True)
class Table:
    """One dataset table. `scope` is the column naming the security a row belongs to (None
    for a table that is one list as a whole); a job replaces nothing outside its scope."""

    name: str
    columns: tuple[str, ...]
    key: tuple[str, ...]
    scope: str | None = "security_id"
    partial: tuple[str, ...] = ()  # columns one source fills and another leaves null


TABLES: dict[str, Table] = {  # by the dataset that fills the table
    "companies": Table(
        "securities",
        (
            "id",
            "symbol",
            "name",
            "sector",
            "instrument_type",
            "status",
            "security_name",
            "company_id",
            "email",
            "website",
            "regulatory_body",
        ),
        ("id",),
        scope=None,
    ),
    "prices": Table(
        "prices",
        (
            "security_id",
            "date",
            "open",
            "high",
            "low",
            "close",
            "volume",
            "turnover",
            "trades",
            "prev_close",
            "avg_price",
            "high_52w",
            "low_52w",
        ),
        ("security_id", "date"),
        # only the by-date answer has them: a history row leaves what it stored in place
        partial=("open", "prev_close", "avg_price", "high_52w", "low_52w"),
    ),
    "reports": Table(
        "reports",
        (
            "security_id",
            "fiscal_year",
            "period",
            "eps",
            "pe",
            "book_value",
            "paid_up_capital",
            "profit",
        ),
        ("security_id", "fiscal_year", "period"),
    ),
    "dividends": Table(
        "dividends",
        ("security_id", "fiscal_year", "cash_pct", "bonus_pct", "right_pct"),
        ("security_id", "fiscal_year"),
    ),
    "ownership": Table(
        "ownership",
        (
            "security_id",
            "listed_shares",
            "paid_up_capital",
            "public_shares",
            "public_pct",
            "promoter_shares",
            "promoter_pct",
        ),
        ("security_id",),
    ),
    "holidays": Table("holidays", ("date", "description"), ("date",), scope=None),
}

# Numbered migrations, applied in order on open, all pending ones in one transaction.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 1: the five datasets and ntx's own bookkeeping
    (
        """
            CREATE TABLE securities (
                id              INTEGER PRIMARY KEY,
                symbol          TEXT NOT NULL UNIQUE,
                name            TEXT,
                sector          TEXT,
                instrument_type TEXT,
                status          TEXT,
                security_name   TEXT,
                company_id      INTEGER,
                email           TEXT,
                website         TEXT,
                regulatory_body TEXT
            )
        """,
        """
            CREATE TABLE prices (
                security_id INTEGER NOT NULL,
                date        TEXT NOT NULL,
                open        REAL,
                high        REAL,
                low         REAL,
                close       REAL,
                volume      INTEGER,
                turnover    REAL,
                trades      INTEGER,
                PRIMARY KEY (security_id, date)
            ) WITHOUT ROWID
        """,
        """
            CREATE TABLE reports (
                security_id     INTEGER NOT NULL,
                fiscal_year     TEXT NOT NULL,
                period          TEXT NOT NULL,
                eps             REAL,
                pe              REAL,
                book_value      REAL,
                paid_up_capital REAL,
                profit          REAL,
                PRIMARY KEY (security_id, fiscal_year, period)
            )
        """,
        """
            CREATE TABLE dividends (
                security_id INTEGER NOT NULL,
                fiscal_year TEXT NOT NULL,
                cash_pct    REAL,
                bonus_pct   REAL,
                right_pct   REAL,
                PRIMARY KEY (security_id, fiscal_year)
            )
        """,
        """
            CREATE TABLE ownership (
                security_id     INTEGER PRIMARY KEY,
                listed_shares   REAL,
                paid_up_capital REAL,
                public_shares   REAL,
                public_pct      REAL,
                promoter_shares REAL,
                promoter_pct    REAL
            )
        """,
        """
            CREATE VIEW price_history AS
                SELECT s.symbol, p.* FROM prices p JOIN securities s ON s.id = p.security_id
        """,
        """
            CREATE TABLE ntx_runs (
                id             INTEGER PRIMARY KEY,
                started_at     TEXT NOT NULL,
                finished_at    TEXT,
                status         TEXT NOT NULL,
                command        TEXT,
                source         TEXT,
                datasets       TEXT,
                jobs_done      INTEGER NOT NULL DEFAULT 0,
                jobs_failed    INTEGER NOT NULL DEFAULT 0,
                rows_new       INTEGER NOT NULL DEFAULT 0,
                rows_updated   INTEGER NOT NULL DEFAULT 0,
                rows_unchanged INTEGER NOT NULL DEFAULT 0
            )
        """,
        """
            CREATE TABLE ntx_jobs (
                run_id         INTEGER NOT NULL,
                dataset        TEXT NOT NULL,
                security_id    INTEGER,
                ranges         TEXT,
                status         TEXT NOT NULL,
                reason         TEXT,
                requests       INTEGER NOT NULL,
                rows           INTEGER NOT NULL,
                rows_new       INTEGER NOT NULL,
                rows_updated   INTEGER NOT NULL,
                rows_unchanged INTEGER NOT NULL,
                finished_at    TEXT NOT NULL
            )
        """,
        """
            CREATE INDEX ntx_jobs_by_run ON ntx_jobs (run_id, status)
        """,
        """
            CREATE TABLE ntx_coverage (
                dataset      TEXT NOT NULL,
                security_id  INTEGER NOT NULL,
                covered_from TEXT,
                covered_to   TEXT,
                fetched_at   TEXT NOT NULL,
                PRIMARY KEY (dataset, security_id)
            )
        """,
    ),
    # 2: resumable runs (the plan a run carried out, and the run it resumed)
    (
        """
            ALTER TABLE ntx_runs ADD COLUMN plan_key TEXT
        """,
        """
            ALTER TABLE ntx_runs ADD COLUMN plan TEXT
        """,
        """
            ALTER TABLE ntx_runs ADD COLUMN resumes INTEGER
        """,
        """
            CREATE INDEX ntx_runs_by_plan ON ntx_runs (plan_key, id)
        """,
    ),
    # 3: rows refused by validation, with the rule each broke
    (
        """
            CREATE TABLE ntx_invalid_rows (
                run_id      INTEGER NOT NULL,
                dataset     TEXT NOT NULL,
                security_id INTEGER,
                row         TEXT NOT NULL,
                rule        TEXT NOT NULL
            )
        """,
        """
            CREATE INDEX ntx_invalid_rows_by_run ON ntx_invalid_rows (run_id)
        """,
    ),
    # 4: prices by business date (the by-date answer's own columns, null in rows that only
    # the per-security history gave), the trading calendar, the business dates stored whole,
    # and the price plan each run chose
    (
        """
            ALTER TABLE prices ADD COLUMN prev_close REAL
        """,
        """
            ALTER TABLE prices ADD COLUMN avg_price REAL
        """,
        """
            ALTER TABLE prices ADD COLUMN high_52w REAL
        """,
        """
            ALTER TABLE prices ADD COLUMN low_52w REAL
        """,
        """
            CREATE INDEX prices_by_date ON prices (date)
        """,
        """
            CREATE TABLE holidays (
                date        TEXT PRIMARY KEY,
                description TEXT
            )
        """,
        """
            CREATE TABLE ntx_dates (
                dataset    TEXT NOT NULL,
                date       TEXT NOT NULL,
                status     TEXT NOT NULL,
                rows       INTEGER NOT NULL,
                run_id     INTEGER NOT NULL,
                fetched_at TEXT NOT NULL,
                PRIMARY KEY (dataset, date)
            ) WITHOUT ROWID
        """,
        """
            ALTER TABLE ntx_runs ADD COLUMN price_plan TEXT
        """,
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)
