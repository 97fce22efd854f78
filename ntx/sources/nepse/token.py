"""Unscrambling the handshake's tokens with the site's WebAssembly module.

`GET /api/authenticate/prove` answers two scrambled tokens and five salts. The site serves a
small module (no imports) exporting `cdx`, `rdx`, `bdx`, `ndx` and `mdx`, each taking five
32-bit integers; called with the salts in the documented orders they give five ascending
positions, and the real token is the scrambled one without the characters at them. The module
has changed before, so ntx runs the one the site serves (wasmtime, with a fuel limit: it is
code from the network) and never hard-codes what it computes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from itertools import pairwise

import wasmtime

from ntx.errors import NtxError

EXPORTS = ("cdx", "rdx", "bdx", "ndx", "mdx")
FUEL = 1_000_000  # far more than five small functions need; a looping module traps instead
Salts = tuple[int, int, int, int, int]
# The salts each export is called with, as indexes of (s1..s5): `cdx(s1,s2,s3,s4,s5)`, ...
ACCESS_ORDERS = (
    (0, 1, 2, 3, 4),  # cdx(s1,s2,s3,s4,s5)
    (0, 1, 3, 2, 4),  # rdx(s1,s2,s4,s3,s5); bdx, ndx and mdx the same
    (0, 1, 3, 2, 4),
    (0, 1, 3, 2, 4),
    (0, 1, 3, 2, 4),
)
REFRESH_ORDERS = (
    (1, 0, 2, 4, 3),  # cdx(s2,s1,s3,s5,s4)
    (1, 0, 2, 3, 4),  # rdx(s2,s1,s3,s4,s5)
    (1, 0, 3, 2, 4),  # bdx(s2,s1,s4,s3,s5); ndx and mdx the same
    (1, 0, 3, 2, 4),
    (1, 0, 3, 2, 4),
)


class TokenModuleError(NtxError):
    """The site's module cannot be used: not WebAssembly, wrong exports, or bad positions."""


class TokenModule:
    """One WebAssembly module, compiled once, run for every handshake."""

    def __init__(self, wasm: bytes) -> None:
        self.digest = hashlib.sha256(wasm).hexdigest()
        config = wasmtime.Config()
        config.consume_fuel = True
        self._engine = wasmtime.Engine(config)
        try:
            module = wasmtime.Module(self._engine, wasm)
        except wasmtime.WasmtimeError as exc:
            raise TokenModuleError(f"the token module is not valid WebAssembly ({exc})") from exc
        if module.imports:
            raise TokenModuleError("the token module wants imports; the site's module has none")
        found = {export.name: export.type for export in module.exports}
        missing = [name for name in EXPORTS if name not in found]
        if missing:
            raise TokenModuleError(f"the token module does not export {', '.join(missing)}")
        for name in EXPORTS:
            kind = found[name]
            if not (
                isinstance(kind, wasmtime.FuncType)
                and [str(p) for p in kind.params] == ["i32"] * 5
                and [str(r) for r in kind.results] == ["i32"]
            ):
                raise TokenModuleError(f"the token module's {name} is not (5 x i32) -> i32")
        self._store = wasmtime.Store(self._engine)
        self._instance = wasmtime.Instance(self._store, module, [])

    def call(self, name: str, *args: int) -> int:
        self._store.set_fuel(FUEL)
        function = self._instance.exports(self._store)[name]
        assert isinstance(function, wasmtime.Func)
        try:
            result = function(self._store, *args)
        except (wasmtime.Trap, wasmtime.WasmtimeError) as exc:
            raise TokenModuleError(f"the token module's {name} failed ({exc})") from exc
        assert isinstance(result, int)
        return result

    def access_positions(self, salts: Salts) -> tuple[int, ...]:
        """Where the access token's five filler characters are."""
        return self._positions(salts, ACCESS_ORDERS)

    def refresh_positions(self, salts: Salts) -> tuple[int, ...]:
        """Where the refresh token's five filler characters are."""
        return self._positions(salts, REFRESH_ORDERS)

    def _positions(self, salts: Salts, orders: tuple[tuple[int, ...], ...]) -> tuple[int, ...]:
        return tuple(
            self.call(name, *(salts[i] for i in order))
            for name, order in zip(EXPORTS, orders, strict=True)
        )


def cut(scrambled: str, positions: Sequence[int]) -> str:
    """`scrambled` without the characters at `positions`, which must ascend strictly and lie
    inside it (`TokenModuleError` otherwise: the module and the server disagree)."""
    if not all(a < b for a, b in pairwise(positions)):
        raise TokenModuleError(f"the token module's positions do not ascend: {list(positions)}")
    if positions and (positions[0] < 0 or positions[-1] >= len(scrambled)):
        raise TokenModuleError(
            f"the token module's positions {list(positions)} fall outside a token of"
            f" {len(scrambled)} characters"
        )
    drop = set(positions)
    return "".join(char for index, char in enumerate(scrambled) if index not in drop)
