"""One backfill per database at a time: an exclusive `flock` on `<db>.lock`.

The operating system releases the lock when its process ends, however it ends, so a crashed
run never leaves the database locked. The lock file holds who has it (pid, start, command),
so that a second backfill can say which one is running.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ntx.errors import NtxError


class DatabaseBusy(NtxError):
    """Another ntx backfill is writing the same database."""


def lock_path(db_path: Path) -> Path:
    return db_path.with_name(db_path.name + ".lock")


@contextmanager
def exclusive(db_path: Path, command: str) -> Iterator[None]:
    """Hold the database's lock for the duration, or raise `DatabaseBusy` naming the holder."""
    fd = os.open(lock_path(db_path), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DatabaseBusy(
                f"{db_path} is being written by another ntx backfill ({_describe(_read(fd))});"
                " wait for it to finish, or stop it"
            ) from None
        holder = {
            "pid": os.getpid(),
            "started": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": command,
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def holder(db_path: Path) -> dict[str, Any] | None:
    """Who holds the database's lock now, or None when no backfill is running."""
    try:
        fd = os.open(lock_path(db_path), os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read(fd)
        return None
    finally:
        os.close(fd)


def _read(fd: int) -> dict[str, Any]:
    try:
        data = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _describe(info: dict[str, Any]) -> str:
    if not info:
        return "details unknown"
    return f"pid {info.get('pid')}, started {info.get('started')}: {info.get('command')}"
