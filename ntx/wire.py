"""Typed reads of values from untrusted JSON: what the API sent, or a `ValueError` that
callers turn into a malformed answer."""

from __future__ import annotations

from typing import Any


def number(value: Any) -> float | int | None:
    """A JSON number as is, None as None; anything else is a malformed answer.

    Non-finite numbers pass here and are refused row by row by validation.
    """
    if value is None or type(value) in _DECODED_NUMBERS:
        decoded: float | int | None = value  # what JSON decoders give: nearly every value
        return decoded
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"expected a number, got {value!r}")
    return value


_DECODED_NUMBERS = (int, float)  # exactly these types: bool, a subclass of int, is not one


def text(value: Any) -> str | None:
    """A JSON string as is, None as None; anything else is a malformed answer."""
    if value is not None and not isinstance(value, str):
        raise ValueError(f"expected a string, got {value!r}")
    return value


def shape_error(exc: Exception) -> str:
    """What a lookup or type error met while walking an answer says about its shape."""
    return f"unexpected answer shape: {type(exc).__name__}: {exc}"
