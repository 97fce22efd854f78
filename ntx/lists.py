"""The company and security lists of one run, kept in a scratch SQLite file, not in memory.

Both lists are single answers that grow with the exchange. Held as Python objects they were
what made a run's memory grow with the number of securities (about 1.7 KB per security at
the peak); here their records go, as they arrive, into a scratch database in the system's
temporary directory (SQLite keeps at most its page cache of it in memory), are joined there
by symbol, and come back out as the `securities` table's rows and as the run's universe,
each a query read lazily. The scratch file is deleted when the stage closes, or by the next
run if its process was killed first.

Joining follows `shared/design/nepse-api.md`: one row per security of the security list;
its company is the last company-list record with the same symbol; a company's name and
status, where missing or empty, come from the security list.
"""

from __future__ import annotations

import math
import os
import sqlite3
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import suppress
from pathlib import Path
from typing import Any

from ntx.errors import StoreError, UsageError
from ntx.model import Row, Security
from ntx.wire import number, text

DEFAULT_INSTRUMENT = "Equity"
ACTIVE = "A"

_SCHEMA = """
    CREATE TABLE listed (
        seq INTEGER PRIMARY KEY, id INTEGER NOT NULL, symbol TEXT NOT NULL,
        security_name TEXT, active_status TEXT);
    CREATE INDEX listed_by_symbol ON listed (symbol);
    CREATE TABLE companies (
        symbol TEXT PRIMARY KEY, id, name TEXT, sector TEXT, instrument_type TEXT,
        status TEXT, email TEXT, website TEXT, regulatory_body TEXT);
"""
# The `securities` table's columns, in `ntx.datasets.COMPANIES` order.
_JOINED = """
    SELECT l.id, l.symbol, coalesce(nullif(c.name, ''), l.security_name), c.sector,
           c.instrument_type, coalesce(nullif(c.status, ''), l.active_status),
           l.security_name, c.id, c.email, c.website, c.regulatory_body
    FROM listed l LEFT JOIN companies c ON c.symbol = l.symbol
"""
_BATCH = 1000  # records inserted per statement
_PREFIX = "ntx-lists-"


class ListStage:
    """The scratch database of one run's lists. `securities` and `companies` are the
    `RecordSink`s the source streams each list into; then `listing()` is the joined result.

    One owner at a time, as the engine's lists job guarantees; `close()` deletes the file.
    """

    def __init__(self, directory: Path | None = None) -> None:
        where = Path(directory or tempfile.gettempdir())
        name = ""
        try:
            _sweep(where)
            prefix = f"{_PREFIX}{os.getpid()}-"
            handle, name = tempfile.mkstemp(prefix=prefix, suffix=".db", dir=where)
            os.close(handle)
            self.path = Path(name)
            self._conn = sqlite3.connect(self.path, isolation_level=None)
            self._conn.execute("PRAGMA journal_mode = OFF")
            self._conn.execute("PRAGMA synchronous = OFF")
            self._conn.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            if name:
                Path(name).unlink(missing_ok=True)
            raise StoreError(
                f"cannot make the lists' scratch file in {where} ({exc});"
                " set TMPDIR to a writable directory"
            ) from exc
        self.securities = _Sink(
            self._conn,
            "listed",
            "INSERT INTO listed (id, symbol, security_name, active_status) VALUES (?, ?, ?, ?)",
            _listed_values,
        )
        self.companies = _Sink(  # a later record of the same symbol replaces an earlier one
            self._conn,
            "companies",
            "INSERT OR REPLACE INTO companies (symbol, id, name, sector, instrument_type,"
            " status, email, website, regulatory_body) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            _company_values,
        )

    def listing(self) -> Listing:
        """The joined lists (after both were streamed in)."""
        self.securities.flush()
        self.companies.flush()
        count = int(self._conn.execute("SELECT count(*) FROM listed").fetchone()[0])
        return Listing(self, count)

    def close(self) -> None:
        self._conn.close()
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> ListStage:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class _Sink:
    """Records of one list into one table, `_BATCH` at a time; `start()` empties it."""

    def __init__(
        self, conn: sqlite3.Connection, table: str, insert: str, values: Callable[[Any], Row]
    ) -> None:
        self._conn = conn
        self._table = table
        self._sql = insert
        self._values = values
        self._pending: list[Row] = []

    def start(self) -> None:
        self._pending.clear()
        self._conn.execute(f"DELETE FROM {self._table}")

    def add(self, record: dict[str, Any]) -> None:
        self._pending.append(self._values(record))
        if len(self._pending) >= _BATCH:
            self.flush()

    def flush(self) -> None:
        if self._pending:
            try:
                self._conn.execute("BEGIN")  # one transaction per batch, not one per record
                self._conn.executemany(self._sql, self._pending)
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:  # the temporary directory's disk is full, say
                with suppress(sqlite3.Error):
                    self._conn.execute("ROLLBACK")
                raise StoreError(f"the lists' scratch file: {exc}; set TMPDIR elsewhere") from exc
            self._pending.clear()


class Listing:
    """The joined lists: as many rows as the security list has securities, each read from
    the scratch file when iterated (from any one thread at a time: each iteration opens its
    own connection)."""

    def __init__(self, stage: ListStage, count: int) -> None:
        self._stage = stage
        self._count = count

    def __len__(self) -> int:
        return self._count

    def close(self) -> None:
        """Delete the scratch file (iterations under way keep reading their open file)."""
        self._stage.close()

    def __iter__(self) -> Iterator[Row]:
        yield from self._query(f"{_JOINED} ORDER BY l.seq", ())

    def universe(self, symbols: Sequence[str], all_instruments: bool) -> Universe:
        """The securities a run covers, sorted by symbol.

        Named `symbols` (case-insensitive) are taken exactly, and every one must exist
        (`UsageError` names the others); otherwise every listed security, or by default the
        active equities.
        """
        if symbols:
            wanted = list(dict.fromkeys(symbol.upper() for symbol in symbols))
            found: dict[str, Security] = {}
            for start in range(0, len(wanted), 500):
                chunk = wanted[start : start + 500]
                marks = ", ".join("?" * len(chunk))
                for row in self._query(
                    f"{_JOINED} WHERE upper(l.symbol) IN ({marks}) ORDER BY l.seq", chunk
                ):
                    found[row[1].upper()] = _security(row)
            unknown = [symbol for symbol in wanted if symbol not in found]
            if unknown:
                noun = "symbol" if len(unknown) == 1 else "symbols"
                raise UsageError(f"unknown {noun} {', '.join(unknown)}: not in the security list")
            return Universe(self, "", (), sorted(found.values(), key=lambda sec: sec.symbol))
        if all_instruments:
            return Universe(self, "", ())
        return Universe(
            self,
            "WHERE c.instrument_type = ? AND coalesce(nullif(c.status, ''), l.active_status) = ?",
            (DEFAULT_INSTRUMENT, ACTIVE),
        )

    def _query(self, sql: str, parameters: Sequence[Any]) -> Iterator[Row]:
        conn = sqlite3.connect(f"{self._stage.path.as_uri()}?mode=ro", uri=True)
        try:
            yield from conn.execute(sql, parameters)
        finally:
            conn.close()


class Universe:
    """The securities of a run, sorted by symbol: a list if named, else a query of the
    joined lists run on each iteration (so nothing per security stays in memory)."""

    def __init__(
        self,
        listing: Listing,
        where: str,
        parameters: Sequence[Any],
        chosen: list[Security] | None = None,
    ) -> None:
        self.listing = listing
        self._where = where
        self._parameters = parameters
        self._chosen = chosen
        self._count: int | None = None if chosen is None else len(chosen)

    def __len__(self) -> int:
        if self._count is None:
            self._count = sum(1 for _ in self)
        return self._count

    def __iter__(self) -> Iterator[Security]:
        if self._chosen is not None:
            yield from self._chosen
            return
        sql = f"{_JOINED} {self._where} ORDER BY l.symbol, l.seq"
        for row in self.listing._query(sql, self._parameters):
            yield _security(row)


def _sweep(directory: Path) -> None:
    """Delete the scratch files of ntx processes that died without closing their stage
    (killed, or a second Ctrl-C); each file's name carries its process id."""
    for path in directory.glob(f"{_PREFIX}*.db"):
        pid = path.name.removeprefix(_PREFIX).split("-", 1)[0]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            path.unlink(missing_ok=True)
        except OSError:
            pass  # alive, or not ours to judge


def _security(row: Row) -> Security:
    return Security(
        id=row[0], symbol=row[1], name=row[2], sector=row[3], instrument_type=row[4], status=row[5]
    )


def _listed_values(record: dict[str, Any]) -> Row:
    sec_id = record["id"]
    if isinstance(sec_id, bool) or not isinstance(sec_id, int):
        raise ValueError(f"security id {sec_id!r} is not an integer")
    return (
        sec_id,
        _symbol(record["symbol"]),
        text(record.get("securityName")),
        text(record.get("activeStatus")),
    )


def _company_values(record: dict[str, Any]) -> Row:
    company_id = number(record.get("id"))
    if company_id is not None and not math.isfinite(company_id):
        raise ValueError(f"company id {company_id!r} is not a finite number")
    return (
        _symbol(record["symbol"]),
        company_id,
        text(record.get("companyName")),
        text(record.get("sectorName")),
        text(record.get("instrumentType")),
        text(record.get("status")),
        text(record.get("companyEmail")),
        text(record.get("website")),
        text(record.get("regulatoryBody")),
    )


def _symbol(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"symbol {value!r} is not a string")
    return value
