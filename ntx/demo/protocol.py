"""The demo exchange's side of NEPSE's handshake: its own token module, scrambled tokens with
a lifetime, and the checks of the `Authorization` header and of POST payload ids.

The module is built when the demo starts, by wasmtime from the WAT text below (ntx never
ships the exchange's own module). Its five functions each depend on all five arguments and
give ascending positions for any salts, as the site's module does.
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import trio
import wasmtime

from ntx.sources.nepse.payload import PayloadKind, nepal_day, payload_id
from ntx.sources.nepse.token import EXPORTS, Salts, TokenModule

# (coefficients of the five arguments, offset) per function; each gives offset + (sum mod 9)
DEMO_FUNCTIONS = (
    ((3, 5, 7, 11, 13), 1),
    ((5, 3, 11, 7, 2), 11),
    ((7, 13, 3, 5, 11), 21),
    ((11, 2, 5, 13, 3), 31),
    ((13, 11, 2, 3, 7), 41),
)
SPAN = 9
TOKEN_LENGTH = 64
MARKET_ID = 80  # the market-open id of every sample of the real exchange
TOKEN_TTL = 60.0
UNAUTHORIZED_HTML = "<html><body><h1>401 Unauthorized</h1></body></html>"


def module_wat(functions: Sequence[tuple[Sequence[int], int]], span: int = SPAN) -> str:
    """A module exporting `cdx`..`mdx`: function k is offset_k + (sum_i c_ki * arg_i) mod span."""
    bodies = []
    for name, (coefficients, offset) in zip(EXPORTS, functions, strict=True):
        total = ""
        for i, c in enumerate(coefficients):
            term = f"(i32.mul (local.get {i}) (i32.const {c}))"
            total = f"(i32.add {total} {term})" if total else term
        bodies.append(
            f'  (func (export "{name}") (param i32 i32 i32 i32 i32) (result i32)\n'
            f"    (i32.add (i32.const {offset}) (i32.rem_u {total} (i32.const {span}))))"
        )
    return "(module\n" + "\n".join(bodies) + ")\n"


def build_module(wat: str) -> bytes:
    return bytes(wasmtime.wat2wasm(wat))


def scramble(token: str, positions: Sequence[int], rng: random.Random) -> str:
    """`token` with a filler character inserted so that one lies at each of `positions`
    (ascending, in the scrambled string)."""
    chars = list(token)
    for position in positions:  # ascending: each insertion leaves the earlier ones in place
        chars.insert(position, rng.choice(string.ascii_letters + string.digits))
    return "".join(chars)


@dataclass(frozen=True)
class Issued:
    salts: Salts
    issued_at: float


class TokenDesk:
    """Issues tokens at `prove` and checks them on every API request."""

    def __init__(
        self,
        *,
        ttl: float = TOKEN_TTL,
        market_id: int = MARKET_ID,
        seed: int = 0,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        wat: str | None = None,
    ) -> None:
        self.ttl = ttl
        self.market_id = market_id
        self.wasm = build_module(wat or module_wat(DEMO_FUNCTIONS))
        self._module = TokenModule(self.wasm)
        self._rng = random.Random(seed)
        self._wall_clock = wall_clock
        self._issued: dict[str, Issued] = {}
        self.handshakes = 0

    def prove(self) -> dict[str, object]:
        """A new pair of scrambled tokens and their salts."""
        now = trio.current_time()
        self._issued = {t: i for t, i in self._issued.items() if now - i.issued_at < self.ttl}
        salts: Salts = tuple(self._rng.randrange(10_000, 100_000) for _ in range(5))  # type: ignore[assignment]
        alphabet = string.ascii_letters + string.digits
        access = "".join(self._rng.choice(alphabet) for _ in range(TOKEN_LENGTH))
        refresh = "".join(self._rng.choice(alphabet) for _ in range(TOKEN_LENGTH))
        self._issued[access] = Issued(salts, now)
        self.handshakes += 1
        s1, s2, s3, s4, s5 = salts
        return {
            "accessToken": scramble(access, self._module.access_positions(salts), self._rng),
            "refreshToken": scramble(refresh, self._module.refresh_positions(salts), self._rng),
            "salt1": s1,
            "salt2": s2,
            "salt3": s3,
            "salt4": s4,
            "salt5": s5,
            "salt": None,
            "tokenType": "Salter",
            "serverTime": int(self._wall_clock().timestamp() * 1000),
            "isDisplayActive": False,
            "popupDocFor": None,
        }

    def holder(self, authorization: str | None) -> Issued | None:
        """The live token an `Authorization: Salter <token>` header carries, or None."""
        if not authorization or not authorization.startswith("Salter "):
            return None
        issued = self._issued.get(authorization[len("Salter ") :])
        if issued is None or trio.current_time() - issued.issued_at >= self.ttl:
            return None
        return issued

    def expected_id(self, kind: PayloadKind, issued: Issued) -> int:
        """The payload id a POST of `kind` must carry now, with the salts of its token."""
        return payload_id(kind, self.market_id, issued.salts, nepal_day(self._wall_clock()))
