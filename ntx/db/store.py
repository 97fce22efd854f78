"""The SQLite database: schema and migrations, the writer's batched upserts, read queries.

A `Store` is owned by one task at a time (the writer during a run); its methods are
blocking and are called through `trio.to_thread.run_sync`. Every `apply` is one
transaction: the rows of a batch of jobs and the records of those jobs commit together or
not at all. The file is marked as ntx's own (`PRAGMA application_id`), so ntx never writes
into a SQLite file that belongs to something else.
"""

from __future__ import annotations

import json
import sqlite3
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from ntx.db.schema import APPLICATION_ID, MIGRATIONS, SCHEMA_VERSION, TABLES, Table
from ntx.errors import StoreError, UsageError
from ntx.model import DateRange, Job, JobKey, JobResult, Row, WriteCounts
from ntx.nepal import sessions

SQLITE_HEADER = b"SQLite format 3\x00"
BUSY_TIMEOUT = 10.0  # seconds to wait for another program's write lock
CLIPPED_GAP = timedelta(days=31)  # longer than any closure of the exchange (Dashain included)

# Statuses a later run resumes. `running` is among them: whoever starts a run holds the
# database's lock, so a run still marked running belongs to a process that died.
UNFINISHED = ("interrupted", "failed", "crashed", "running")
LIST_LEVEL = 0  # ntx_coverage.security_id of a job that covers a whole list
TRADED, CLOSED, OUTSIDE = "traded", "closed", "outside"  # what ntx_dates knows of a date


def _scope(job: Job) -> tuple[str, Any] | None:
    """The rows a job may add to: its security's, its business date's, or a whole list's."""
    if job.security is not None:
        return ("security_id", job.security.id)
    if job.day is not None:
        return ("date", job.day.isoformat())
    return None


def _explain(exc: sqlite3.Error) -> str:
    text = str(exc)
    if "full" in text or "I/O" in text:
        return f"{text}: check the disk's free space, then run the same command to resume"
    if "locked" in text or "busy" in text:
        return f"{text}: another program holds a write lock on it"
    return text


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def check_path(path: Path, busy_timeout: float | None = None) -> None:
    """Pre-flight, before any fetch: `path` can become or already is an ntx database.

    Never creates or changes anything. Raises `UsageError` with one line otherwise. With a
    `busy_timeout`, an existing database must also be writable now: its write lock is taken
    and released, waiting that long for another program to let go (`StoreError` if not).
    """
    parent = path.parent
    if not parent.is_dir():
        raise UsageError(f"--db {path}: the directory {parent} does not exist")
    if path.is_dir():
        raise UsageError(f"--db {path}: is a directory, not a database file")
    if not path.exists():
        try:
            with tempfile.TemporaryFile(dir=parent):
                pass
        except OSError as exc:
            raise UsageError(
                f"--db {path}: cannot create files in {parent} ({exc.strerror})"
            ) from exc
        return
    try:
        with path.open("r+b") as handle:
            header = handle.read(len(SQLITE_HEADER))
    except OSError as exc:
        raise UsageError(f"--db {path}: cannot open it for writing ({exc.strerror})") from exc
    if header and header != SQLITE_HEADER:
        raise UsageError(f"--db {path}: is not a SQLite database; ntx leaves it untouched")
    if header:
        _check_existing(path)
        if busy_timeout is not None:
            _check_writable_now(path, busy_timeout)


def _check_writable_now(path: Path, busy_timeout: float) -> None:
    try:
        conn = sqlite3.connect(path, isolation_level=None, timeout=busy_timeout)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("ROLLBACK")
        finally:
            conn.close()
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc) or "busy" in str(exc):
            raise StoreError(
                f"database {path} is locked by another program (waited {busy_timeout:g} s);"
                " close it or raise --busy-timeout"
            ) from exc
        raise StoreError(f"database {path}: {exc}") from exc


def _check_existing(path: Path) -> None:
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise UsageError(f"--db {path}: cannot be read as a SQLite database ({exc})") from exc
    if app_id != APPLICATION_ID and (app_id != 0 or tables):
        raise UsageError(
            f"--db {path}: is a SQLite database of another program; ntx leaves it untouched"
        )
    if version > SCHEMA_VERSION:
        raise UsageError(
            f"--db {path}: was written by a newer ntx"
            f" (schema {version}, this one knows {SCHEMA_VERSION})"
        )


@dataclass(frozen=True)
class DatasetStatus:
    """One line of `ntx status`."""

    dataset: str
    securities: int
    rows: int
    first_date: str | None
    last_date: str | None
    last_fetched: str | None


@dataclass(frozen=True)
class Archive:
    """The price archive that `ntx status` shows: its first and last session, the sessions
    of the calendar between them and how many hold rows, the gaps (runs of sessions without
    any), and how many stored sessions are older than the API's window."""

    first: date
    last: date
    sessions: int
    covered: int
    gaps: list[DateRange]
    older_than_window: int
    window_starts: date


WINDOW = timedelta(days=365)  # the API keeps about a year of daily history


class Store:
    """An open ntx database. Not thread-safe: one owner at a time, as the engine guarantees."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn = conn
        self.path = path
        self._upserts = {name: _UpsertSql(table) for name, table in TABLES.items()}

    # ------------------------------------------------------------ opening

    @classmethod
    def open(cls, path: Path, *, busy_timeout: float = BUSY_TIMEOUT) -> Store:
        """Open (and create, and migrate) the database; `check_path` first for friendly errors."""
        check_path(path)
        try:
            conn = sqlite3.connect(
                path, isolation_level=None, check_same_thread=False, timeout=busy_timeout
            )
            conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            store = cls(conn, path)
            store._migrate()
        except sqlite3.Error as exc:
            raise StoreError(f"database {path}: {exc}") from exc
        return store

    @classmethod
    def open_readonly(cls, path: Path) -> Store:
        """Open an existing ntx database for reading only; never creates or migrates."""
        if not path.is_file():
            raise UsageError(f"--db {path}: no such database (ntx backfill creates it)")
        check_path(path)
        try:
            conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT * 1000)}")
            store = cls(conn, path)
            if store.schema_version < SCHEMA_VERSION:
                conn.close()
                raise UsageError(f"--db {path}: older schema; any ntx backfill on it upgrades it")
        except sqlite3.Error as exc:
            raise StoreError(f"database {path}: {exc}") from exc
        return store

    def close(self) -> None:
        self._conn.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One transaction; any SQLite failure in it becomes a one-line `StoreError`."""
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                with suppress(sqlite3.Error):
                    self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StoreError(f"database {self.path}: {_explain(exc)}") from exc

    def _migrate(self) -> None:
        with self._transaction() as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            for number in range(version, SCHEMA_VERSION):
                for statement in MIGRATIONS[number]:
                    conn.execute(statement)
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @property
    def schema_version(self) -> int:
        return int(self._conn.execute("PRAGMA user_version").fetchone()[0])

    # ------------------------------------------------------------ the writer's side

    def begin_run(
        self,
        command: str,
        source: str,
        datasets: Sequence[str],
        plan_key: str = "",
        plan: str = "",
        resumes: int | None = None,
    ) -> int:
        """Record a new run. Runs left `running` by a process that died become `crashed`
        (the caller holds the database's lock, so none of them is really running)."""
        with self._transaction() as conn:
            conn.execute("UPDATE ntx_runs SET status = 'crashed' WHERE status = 'running'")
            cursor = conn.execute(
                "INSERT INTO ntx_runs (started_at, status, command, source, datasets,"
                " plan_key, plan, resumes) VALUES (?, 'running', ?, ?, ?, ?, ?, ?)",
                (_now(), command, source, ",".join(datasets), plan_key, plan, resumes),
            )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def resumable(self, plan_key: str) -> tuple[int | None, dict[str, set[JobKey]]]:
        """The run a new run of `plan_key` resumes, and the jobs already done for it.

        If the latest run of that plan did not complete, the new run resumes it: every job
        recorded done by it, or by the runs it resumed in turn, is not fetched again. A job is
        known by its security and its ranges (`Job.key`).
        """
        row = self._conn.execute(
            "SELECT id, status FROM ntx_runs WHERE plan_key = ? ORDER BY id DESC LIMIT 1",
            (plan_key,),
        ).fetchone()
        if row is None or row[1] not in UNFINISHED:
            return None, {}
        done: dict[str, set[JobKey]] = {}
        chain = self._conn.execute(
            """
            WITH RECURSIVE chain(id) AS (
                SELECT ? UNION SELECT r.resumes FROM ntx_runs r JOIN chain ON r.id = chain.id
                WHERE r.resumes IS NOT NULL)
            SELECT dataset, security_id, ranges FROM ntx_jobs
            WHERE run_id IN (SELECT id FROM chain) AND status IN ('done', 'outside')
                AND (security_id IS NOT NULL OR ranges IS NOT NULL)
            """,
            (row[0],),
        )
        for dataset, security_id, ranges in chain:
            done.setdefault(dataset, set()).add((security_id, ranges))
        return row[0], done

    def runs(self, limit: int = 50) -> list[dict[str, Any]]:
        """The latest runs, newest first."""
        cursor = self._conn.execute("SELECT * FROM ntx_runs ORDER BY id DESC LIMIT ?", (limit,))
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor]

    def run(self, run_id: int) -> dict[str, Any] | None:
        cursor = self._conn.execute("SELECT * FROM ntx_runs WHERE id = ?", (run_id,))
        row = cursor.fetchone()
        return (
            None if row is None else dict(zip([d[0] for d in cursor.description], row, strict=True))
        )

    def unfinished_jobs(
        self, run_id: int
    ) -> list[tuple[str, int | None, str | None, str, str | None]]:
        """(dataset, security_id, ranges, status, reason) of a run's jobs not done."""
        return self._conn.execute(
            "SELECT dataset, security_id, ranges, status, reason FROM ntx_jobs"
            " WHERE run_id = ? AND status != 'done' ORDER BY status, dataset, security_id, ranges",
            (run_id,),
        ).fetchall()

    def invalid_rows(self, run_id: int, limit: int = 100) -> list[tuple[str, int | None, str, str]]:
        """(dataset, security_id, row as JSON, rule) of rows a run refused."""
        return self._conn.execute(
            "SELECT dataset, security_id, row, rule FROM ntx_invalid_rows WHERE run_id = ?"
            " ORDER BY rowid LIMIT ?",
            (run_id, limit),
        ).fetchall()

    def symbols(self, ids: Sequence[int]) -> dict[int, str]:
        found: dict[int, str] = {}
        for start in range(0, len(ids), 500):
            chunk = list(ids[start : start + 500])
            marks = ",".join("?" for _ in chunk)
            found.update(
                self._conn.execute(
                    f"SELECT id, symbol FROM securities WHERE id IN ({marks})", chunk
                )
            )
        return found

    def finish_run(self, run_id: int, status: str) -> None:
        """Close a run record, totalling its committed jobs."""
        with self._transaction() as conn:
            conn.execute(
                """
                UPDATE ntx_runs SET finished_at = ?, status = ?,
                    (jobs_done, jobs_failed, rows_new, rows_updated, rows_unchanged) = (
                        SELECT count(*) FILTER (WHERE status = 'done'),
                               count(*) FILTER (WHERE status = 'failed'),
                               coalesce(sum(rows_new), 0),
                               coalesce(sum(rows_updated), 0),
                               coalesce(sum(rows_unchanged), 0)
                        FROM ntx_jobs WHERE run_id = ?)
                WHERE id = ?
                """,
                (_now(), status, run_id, run_id),
            )

    def apply(self, run_id: int, results: Sequence[JobResult]) -> list[WriteCounts]:
        """Commit a batch in ONE transaction: each done job's rows, coverage and job record,
        and each failed job's record; the days a job asked before the server's history
        window get a record of their own (status `outside`). Returns the write counts per
        result, in order."""
        counts: list[WriteCounts] = []
        now = _now()
        try:
            with self._transaction() as conn:
                for result in results:
                    job = result.job
                    sec_id = job.security.id if job.security else LIST_LEVEL
                    written = WriteCounts()
                    if result.ok and not result.wholly_outside:
                        written = self._upserts[job.dataset].run(conn, result.rows, _scope(job))
                        if job.day is not None:
                            self._cover_day(conn, run_id, job, len(result.rows), now)
                        else:
                            self._cover(conn, job, sec_id, now)
                    elif result.wholly_outside and job.day is not None:
                        self._cover_day(conn, run_id, job, 0, now, status=OUTSIDE)
                    records = [(job.ranges_text, result.status, result.error, result.requests)]
                    if result.outside is not None:
                        reason = result.outside_reason
                        if result.wholly_outside:
                            records = [(job.ranges_text, "outside", reason, result.requests)]
                        else:
                            records.append((str(result.outside), "outside", reason, 0))
                    for ranges, status, reason, requests in records:
                        fetched = status == "done"
                        conn.execute(
                            "INSERT INTO ntx_jobs (run_id, dataset, security_id, ranges, status,"
                            " reason, requests, rows, rows_new, rows_updated, rows_unchanged,"
                            " finished_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                            (
                                run_id,
                                job.dataset,
                                job.security.id if job.security else None,
                                ranges,
                                status,
                                reason,
                                requests,
                                len(result.rows) if fetched else 0,
                                written.new if fetched else 0,
                                written.updated if fetched else 0,
                                written.unchanged if fetched else 0,
                                now,
                            ),
                        )
                    if result.invalid:
                        conn.executemany(
                            "INSERT INTO ntx_invalid_rows (run_id, dataset, security_id, row, rule)"
                            " VALUES (?, ?, ?, ?, ?)",
                            [
                                (run_id, job.dataset, sec_id, json.dumps(row, default=str), rule)
                                for row, rule in result.invalid
                            ],
                        )
                    counts.append(written)
        except StoreError as exc:
            raise StoreError(f"{exc} (while saving; every earlier commit is intact)") from exc
        return counts

    @staticmethod
    def _cover_day(
        conn: sqlite3.Connection,
        run_id: int,
        job: Job,
        rows: int,
        now: str,
        status: str | None = None,
    ) -> None:
        """Record a by-date job's business date as stored whole (`traded`), as a day without
        a session (`closed`: the exchange answered it empty), or as before the server's
        window (`outside`), so that no later run asks for it again. A date whose rows may
        still change (the job has no `covers`) is not recorded."""
        if job.covers is None or job.day is None:
            return
        conn.execute(
            "INSERT INTO ntx_dates (dataset, date, status, rows, run_id, fetched_at)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (dataset, date) DO UPDATE SET"
            " status = excluded.status, rows = excluded.rows, run_id = excluded.run_id,"
            " fetched_at = excluded.fetched_at",
            (
                job.dataset,
                job.day.isoformat(),
                status or (TRADED if rows else CLOSED),
                rows,
                run_id,
                now,
            ),
        )

    @staticmethod
    def _cover(conn: sqlite3.Connection, job: Job, sec_id: int, now: str) -> None:
        """Record what `job` completes as covered, starting no earlier than the stored rows
        when those begin over `CLIPPED_GAP` after it: so many days without a row at the
        start of what was asked are not holidays but a server that clipped the range
        silently (or a security listed later), and claiming them would stop a later run
        from asking again."""
        covers = job.covers
        table = TABLES[job.dataset]
        if covers is not None and table.scope is not None and "date" in table.columns:
            (first,) = conn.execute(
                f"SELECT min(date) FROM {table.name} WHERE {table.scope} = ?", (sec_id,)
            ).fetchone()
            first_row = date.fromisoformat(first) if first else None
            if first_row is not None and covers.start + CLIPPED_GAP < first_row <= covers.end:
                covers = DateRange(first_row, covers.end)
        conn.execute(
            """
            INSERT INTO ntx_coverage
                (dataset, security_id, covered_from, covered_to, fetched_at)
            VALUES (?, ?, ?, ?, ?)
            ON CONFLICT (dataset, security_id) DO UPDATE SET
                covered_from = coalesce(excluded.covered_from, covered_from),
                covered_to = coalesce(excluded.covered_to, covered_to),
                fetched_at = excluded.fetched_at
            """,
            (
                job.dataset,
                sec_id,
                covers.start.isoformat() if covers else None,
                covers.end.isoformat() if covers else None,
                now,
            ),
        )

    # ------------------------------------------------------------ reads

    def listing_rows(self) -> list[Row]:
        """The stored `securities` rows, as the lists job makes them."""
        table = TABLES["companies"]
        return self._conn.execute(f"SELECT {', '.join(table.columns)} FROM {table.name}").fetchall()

    def fetched_at(self, dataset: str, security_id: int) -> datetime | None:
        """When `dataset` was last fetched for `security_id` (`LIST_LEVEL`: the whole list)."""
        row = self._conn.execute(
            "SELECT fetched_at FROM ntx_coverage WHERE dataset = ? AND security_id = ?",
            (dataset, security_id),
        ).fetchone()
        return datetime.fromisoformat(row[0]) if row else None

    def fetched_since(self, dataset: str, since: datetime) -> set[int]:
        """The securities whose `dataset` was last fetched whole at `since` or later."""
        rows = self._conn.execute(
            "SELECT security_id FROM ntx_coverage WHERE dataset = ? AND fetched_at >= ?",
            (dataset, since.astimezone(UTC).isoformat(timespec="seconds")),
        )
        return {sec_id for (sec_id,) in rows}

    def dates(self, dataset: str) -> dict[date, str]:
        """The business dates of a by-date dataset that no run needs to ask again, with
        what is known of each (`traded`, `closed` or `outside`)."""
        rows = self._conn.execute(
            "SELECT date, status FROM ntx_dates WHERE dataset = ?", (dataset,)
        )
        return {date.fromisoformat(day): status for day, status in rows}

    def rows_per_date(self, dataset: str) -> int:
        """The most rows one stored business date had (0 before any)."""
        (most,) = self._conn.execute(
            "SELECT coalesce(max(rows), 0) FROM ntx_dates WHERE dataset = ?", (dataset,)
        ).fetchone()
        return int(most)

    def holidays(self) -> dict[date, str]:
        """The stored trading calendar's holidays, with their descriptions."""
        rows = self._conn.execute("SELECT date, description FROM holidays")
        return {date.fromisoformat(day): text for day, text in rows}

    def without_open(self, period: DateRange) -> int:
        """How many stored price rows of `period` lack an open price."""
        (count,) = self._conn.execute(
            "SELECT count(*) FROM prices WHERE open IS NULL AND date BETWEEN ? AND ?",
            (period.start.isoformat(), period.end.isoformat()),
        ).fetchone()
        return int(count)

    def note_price_plan(self, run_id: int, chosen: str, line: str) -> None:
        """Record which price plan a run chose (`date`, `security`...) and what it cost, in
        words (`ntx runs show` prints the line)."""
        text = json.dumps({"chosen": chosen, "line": line})
        with self._transaction() as conn:
            conn.execute("UPDATE ntx_runs SET price_plan = ? WHERE id = ?", (text, run_id))

    def price_plan_of(self, run_id: int) -> tuple[str, str] | None:
        """The way a run fetched prices (`date`, `security`, `none`...) and its line in
        words, if it recorded them."""
        row = self._conn.execute("SELECT price_plan FROM ntx_runs WHERE id = ?", (run_id,))
        (text,) = row.fetchone() or (None,)
        if not text:
            return None
        plan = json.loads(text)
        return str(plan["chosen"]), str(plan["line"])

    def coverage(self, dataset: str) -> dict[int, DateRange]:
        """Each security's covered date range for a ranged dataset."""
        rows = self._conn.execute(
            "SELECT security_id, covered_from, covered_to FROM ntx_coverage"
            " WHERE dataset = ? AND covered_from IS NOT NULL",
            (dataset,),
        )
        return {
            sec_id: DateRange(date.fromisoformat(start), date.fromisoformat(end))
            for sec_id, start, end in rows
        }

    def status(self) -> list[DatasetStatus]:
        """What the database holds, dataset by dataset."""
        lines = []
        for name, table in TABLES.items():
            who = table.scope or table.key[0]
            securities, rows = self._conn.execute(
                f"SELECT count(DISTINCT {who}), count(*) FROM {table.name}"
            ).fetchone()
            first = last = None
            if "date" in table.columns:
                first, last = self._conn.execute(
                    f"SELECT min(date), max(date) FROM {table.name}"
                ).fetchone()
            (fetched,) = self._conn.execute(
                "SELECT max(fetched_at) FROM (SELECT fetched_at FROM ntx_coverage WHERE"
                " dataset = ?1 UNION ALL SELECT fetched_at FROM ntx_dates WHERE dataset = ?1)",
                (name,),
            ).fetchone()
            lines.append(DatasetStatus(name, securities, rows, first, last, fetched))
        return lines

    def archive(self) -> Archive | None:
        """The price archive, or None before any price is stored. Sessions are Sunday to
        Thursday, not on the stored holiday list, nor answered empty by the exchange; the
        window is taken as a year before the latest stored session."""
        first, last = self._conn.execute("SELECT min(date), max(date) FROM prices").fetchone()
        if first is None:
            return None
        start, end = date.fromisoformat(first), date.fromisoformat(last)
        stored = {
            date.fromisoformat(d) for (d,) in self._conn.execute("SELECT DISTINCT date FROM prices")
        }
        closed = {day for day, status in self.dates("prices").items() if status == CLOSED}
        calendar = sessions(DateRange(start, end), set(self.holidays()) | closed)[::-1]
        gaps: list[DateRange] = []
        previous_missing = False
        for day in calendar:
            missing = day not in stored
            if missing and previous_missing:
                gaps[-1] = DateRange(gaps[-1].start, day)  # the gap goes on to this session
            elif missing:
                gaps.append(DateRange(day, day))
            previous_missing = missing
        window = end - WINDOW
        return Archive(
            first=start,
            last=end,
            sessions=len(calendar),
            covered=sum(1 for day in calendar if day in stored),
            gaps=gaps,
            older_than_window=sum(1 for day in stored if day < window),
            window_starts=window,
        )

    def last_run(self) -> dict[str, Any] | None:
        latest = self.runs(limit=1)
        return latest[0] if latest else None


class _UpsertSql:
    """Idempotent upsert of one dataset's rows in one statement, counting new, updated and
    unchanged rows.

    `INSERT ... ON CONFLICT DO UPDATE ... WHERE <a value differs>`: a new key is inserted, a
    changed row rewritten, an unchanged row left alone (never written). A `partial` column
    that a row leaves null keeps its stored value (one endpoint fills it, another cannot).
    SQLite counts inserts and updates together (`rowcount`); the new ones are the growth of
    the rows in the job's scope (a column and its value: the job's security, or its date;
    the whole table for a list), counted before and after on an index. Rows are never
    deleted, so the growth is exact.
    """

    def __init__(self, table: Table) -> None:
        values = [c for c in table.columns if c not in table.key]
        insert = (
            f"INSERT INTO {table.name} ({', '.join(table.columns)})"
            f" VALUES ({', '.join('?' for _ in table.columns)})"
            f" ON CONFLICT ({', '.join(table.key)})"
        )
        if values:
            changes = ", ".join(
                f"{c} = coalesce(excluded.{c}, {c})"
                if c in table.partial
                else f"{c} = excluded.{c}"
                for c in values
            )
            differs = " OR ".join(
                f"(excluded.{c} IS NOT NULL AND excluded.{c} IS NOT {c})"
                if c in table.partial
                else f"{c} IS NOT excluded.{c}"
                for c in values
            )
            self._sql = f"{insert} DO UPDATE SET {changes} WHERE {differs}"
        else:
            self._sql = f"{insert} DO NOTHING"
        self._table = table.name

    def run(
        self, conn: sqlite3.Connection, rows: list[Row], scope: tuple[str, Any] | None
    ) -> WriteCounts:
        """Upsert `rows`, all of them inside `scope` (column, value) when one is given."""
        if not rows:
            return WriteCounts()
        count_sql = f"SELECT count(*) FROM {self._table}"
        where: tuple[Any, ...] = ()
        if scope is not None:
            count_sql += f" WHERE {scope[0]} = ?"
            where = (scope[1],)
        before = conn.execute(count_sql, where).fetchone()[0]
        changed = conn.executemany(self._sql, rows).rowcount
        new = conn.execute(count_sql, where).fetchone()[0] - before
        return WriteCounts(new=new, updated=changed - new, unchanged=len(rows) - changed)
