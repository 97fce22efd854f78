"""How counts read in ntx's messages, for every layer that writes them."""

from __future__ import annotations


def plural(count: int, noun: str, many: str | None = None) -> str:
    """`1 error`, `2 errors`, `1,000 retries` (`many` where adding an s is wrong)."""
    return f"{count:,} {noun if count == 1 else many or noun + 's'}"
