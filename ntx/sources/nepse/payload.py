"""POST payload ids: the `{"id": N}` body that NEPSE's POST-only endpoints want.

The rule (docs/nepse-api.md): with `m` the market-open id, `D` today's day of the month in
Nepal time when the request is sent, and `S` the five salts of the token the request carries,
`base = DUMMY[m] + m + 2*D` and `signed(j) = base + S[j]*D - S[j-1]`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum

from ntx.nepal import NEPAL_TZ

# A fixed array from the site's front-end bundle, the same in every client.
DUMMY = (
    147, 117, 239, 143, 157, 312, 161, 612, 512, 804, 411, 527, 170, 511, 421, 667, 764, 621,
    301, 106, 133, 793, 411, 511, 312, 423, 344, 346, 653, 758, 342, 222, 236, 811, 711, 611,
    122, 447, 128, 199, 183, 135, 489, 703, 800, 745, 152, 863, 134, 211, 142, 564, 375, 793,
    212, 153, 138, 153, 648, 611, 151, 649, 318, 143, 117, 756, 119, 141, 717, 113, 112, 146,
    162, 660, 693, 261, 362, 354, 251, 641, 157, 178, 631, 192, 734, 445, 192, 883, 187, 122,
    591, 731, 852, 384, 565, 596, 451, 772, 624, 691,
)  # fmt: skip


class PayloadKind(StrEnum):
    """The POST-only endpoints, each with its own rule."""

    SECURITY = "security"  # POST /api/nots/security/{id}: the detail with ownership
    TODAY_PRICE = "today-price"
    FLOORSHEET = "floorsheet"
    GRAPH = "graph"


def nepal_day(now: datetime) -> int:
    """The day of the month in Nepal (UTC+05:45) at the instant `now` (aware)."""
    return now.astimezone(NEPAL_TZ).day


def payload_id(kind: PayloadKind, market_id: int, salts: Sequence[int], day: int) -> int:
    """The body id of a request of `kind`; `salts` are s1..s5 of the token it carries."""
    if not 0 <= market_id < len(DUMMY):
        raise ValueError(f"market-open id {market_id} is outside 0..{len(DUMMY) - 1}")
    if len(salts) != 5:
        raise ValueError(f"five salts expected, got {len(salts)}")
    base = DUMMY[market_id] + market_id + 2 * day
    if kind is PayloadKind.SECURITY:
        return base
    if kind is PayloadKind.TODAY_PRICE:
        j = 1 if base % 10 < 5 else 3
    elif kind is PayloadKind.FLOORSHEET:
        j = 1 if base % 10 < 4 else 3
    else:
        j = 3 if base % 10 < 5 else 1
    return base + salts[j] * day - salts[j - 1]
