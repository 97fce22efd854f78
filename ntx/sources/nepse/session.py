"""The run's NEPSE session, shared by every worker: the token, its age, the market-open id.

A token is renewed before the next request once it is `max_age` seconds old (trio's clock),
and when the server refuses it. Renewal is single flight: one handshake at a time; a worker
that waited for another's handshake takes its token instead of making one more.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import trio

from ntx.sources.nepse.token import Salts, TokenModule
from ntx.sources.nepse.wire import MarketOpen

TOKEN_MAX_AGE = 45.0  # seconds; clients prove again at this age (the real lifetime is unknown)


@dataclass(frozen=True)
class Credentials:
    """One handshake's result. `token` is None for a server that wants no token."""

    token: str | None
    salts: Salts
    issued_at: float
    module_fetched: bool = False  # the module came from the server, not from the cache

    @property
    def header(self) -> dict[str, str]:
        return {"Authorization": f"Salter {self.token}"} if self.token else {}


NO_TOKEN = Credentials(None, (0, 0, 0, 0, 0), float("inf"))


Handshake = Callable[[bool], Awaitable[Credentials]]  # (refetch the module?) -> credentials
Announce = Callable[[int, str], Awaitable[None]]  # (handshakes so far, why this one) -> None


async def _announce_nothing(number: int, reason: str) -> None:
    """An `Announce` that tells no one."""


class Session:
    """Credentials shared by all workers. The caller passes the `Handshake` that would make
    new ones (its requests go through the caller's own pace gate)."""

    def __init__(self, *, max_age: float = TOKEN_MAX_AGE, announce: Announce | None = None) -> None:
        self.max_age = max_age
        self._announce = announce or _announce_nothing
        self._lock = trio.Lock()
        self.current: Credentials | None = None
        self.handshakes = 0
        self.market: MarketOpen | None = None  # the market-open answer, with the first token
        self.module: TokenModule | None = None  # the site's module, once loaded

    async def credentials(self, handshake: Handshake) -> Credentials:
        """Credentials young enough for the next request."""
        current = self.current
        if current is not None and (
            current.token is None or trio.current_time() - current.issued_at < self.max_age
        ):
            return current
        reason = "the first token" if current is None else f"the last one is {self.max_age:g} s old"
        return await self.renew(current, handshake, reason=reason)

    async def renew(
        self,
        stale: Credentials | None,
        handshake: Handshake,
        *,
        refetch_module: bool = False,
        reason: str = "the server refused the last token",
    ) -> Credentials:
        """New credentials in place of `stale`, unless another worker already replaced it;
        each handshake is announced with `reason`."""
        async with self._lock:
            if self.current is not None and self.current is not stale:
                return self.current
            self.current = await handshake(refetch_module)
            if self.current.token is not None:  # a server without the handshake makes none
                self.handshakes += 1
                await self._announce(self.handshakes, reason)
            return self.current


class ModuleCache:
    """The last token module each source served, kept by content hash under `directory`;
    `source` names the source (its API root) stably across runs.

    Without a directory nothing is kept (every run fetches the module once)."""

    def __init__(self, directory: Path | None, source: str) -> None:
        self._directory = directory
        self._pointer = hashlib.sha256(source.encode()).hexdigest()[:16] + ".current"

    def load(self) -> bytes | None:
        if self._directory is None:
            return None
        try:
            digest = (self._directory / self._pointer).read_text().strip()
            wasm = (self._directory / f"{digest}.wasm").read_bytes()
        except OSError:
            return None
        return wasm if hashlib.sha256(wasm).hexdigest() == digest else None

    def save(self, wasm: bytes) -> None:
        """Keep `wasm` as the API root's module; a cache that cannot be written is skipped."""
        if self._directory is None:
            return
        digest = hashlib.sha256(wasm).hexdigest()
        try:
            self._directory.mkdir(parents=True, exist_ok=True)
            (self._directory / f"{digest}.wasm").write_bytes(wasm)
            (self._directory / self._pointer).write_text(digest + "\n")
        except OSError:
            return
