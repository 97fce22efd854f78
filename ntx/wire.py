"""Typed reads of values from untrusted JSON: what the API sent, or a `ValueError` that
callers turn into a malformed answer."""

from __future__ import annotations

from typing import Any


def number(value: Any) -> float | int | None:
    """A JSON number as is, None as None; anything else is a malformed answer.

    Non-finite numbers pass here and are refused row by row by validation.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"expected a number, got {value!r}")
    return value


def text(value: Any) -> str | None:
    """A JSON string as is, None as None; anything else is a malformed answer."""
    if value is not None and not isinstance(value, str):
        raise ValueError(f"expected a string, got {value!r}")
    return value
