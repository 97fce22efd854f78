"""NEPSE's answers, decoded and checked: the two lists as msgspec structs, the other answers
as JSON values whose shape is checked before anyone reads them.

Every decoder takes an answer's body and the path it came from, and returns the decoded
answer or raises `MalformedResponse` naming the path and what was wrong. JSON beyond the
standard (NaN, Infinity, integers beyond 64 bits, which some servers write) is still read, so
that validation can refuse the one row that holds such a value instead of its whole answer.
"""

from __future__ import annotations

import json
from datetime import date
from typing import Any, TypeVar

import msgspec

from ntx.errors import MalformedResponse

T = TypeVar("T")
Wire = Any  # decoded JSON exactly as the API sent it


class CompanyRecord(msgspec.Struct, rename="camel"):
    """One entry of `GET /api/nots/company/list`."""

    symbol: str
    id: int | None = None
    company_name: str | None = None
    security_name: str | None = None
    status: str | None = None
    company_email: str | None = None
    website: str | None = None
    sector_name: str | None = None
    regulatory_body: str | None = None
    instrument_type: str | None = None


class SecurityRecord(msgspec.Struct, rename="camel"):
    """One entry of `GET /api/nots/security?nonDelisted=true`."""

    id: int
    symbol: str
    security_name: str | None = None
    active_status: str | None = None


class Prove(msgspec.Struct, rename="camel"):
    """The answer of `GET /api/authenticate/prove`: scrambled tokens and their five salts."""

    access_token: str
    refresh_token: str
    salt1: int
    salt2: int
    salt3: int
    salt4: int
    salt5: int
    server_time: int | None = None

    @property
    def salts(self) -> tuple[int, int, int, int, int]:
        return (self.salt1, self.salt2, self.salt3, self.salt4, self.salt5)


class MarketOpen(msgspec.Struct, rename="camel"):
    """The answer of `GET /api/nots/nepse-data/market-open`; `id` seeds the payload ids."""

    id: int
    is_open: str | None = None
    as_of: str | None = None

    @property
    def day(self) -> date | None:
        """The business date the server's figures are as of, if it says."""
        try:
            return date.fromisoformat(self.as_of[:10]) if self.as_of else None
        except ValueError:
            return None

    @property
    def closed(self) -> bool:
        """The market is closed: the figures of `day` are final."""
        return self.is_open == "CLOSE"


def decode_json(content: bytes, path: str) -> Wire:
    """The answer's JSON as Python values, or `MalformedResponse`."""
    try:
        return msgspec.json.decode(content)
    except msgspec.DecodeError:
        pass
    try:
        return json.loads(content)  # NaN, Infinity, big integers: msgspec refuses them
    except ValueError as exc:
        raise MalformedResponse(f"{path}: the answer is not valid JSON ({exc})") from exc


def decode_as(kind: type[T], content: bytes, path: str) -> T:
    """The answer decoded into `kind` (msgspec types), or `MalformedResponse`."""
    try:
        return msgspec.json.decode(content, type=kind)
    except msgspec.ValidationError as exc:
        raise MalformedResponse(f"{path}: {shape_error(exc)}") from exc
    except msgspec.DecodeError:
        pass
    try:
        return msgspec.convert(decode_json(content, path), kind)
    except msgspec.ValidationError as exc:
        raise MalformedResponse(f"{path}: {shape_error(exc)}") from exc


def company_list(content: bytes, path: str) -> list[CompanyRecord]:
    return decode_as(list[CompanyRecord], content, path)


def security_list(content: bytes, path: str) -> list[SecurityRecord]:
    return decode_as(list[SecurityRecord], content, path)


def prove(content: bytes, path: str) -> Prove:
    return decode_as(Prove, content, path)


def market_open(content: bytes, path: str) -> MarketOpen:
    return decode_as(MarketOpen, content, path)


def looks_like_json(content: bytes) -> bool:
    """Whether a 200's body can be a JSON answer at all (a stale token has been seen to get
    200 with an empty or HTML body)."""
    return content.lstrip()[:1] in (b"{", b"[")


def records(content: bytes, path: str) -> list[Wire]:
    """A JSON array of objects (reports, dividends)."""
    body = decode_json(content, path)
    if not isinstance(body, list):
        raise MalformedResponse(f"{path}: expected a JSON array, got {type(body).__name__}")
    if not all(isinstance(item, dict) for item in body):
        raise MalformedResponse(f"{path}: expected an array of objects")
    return body


OWNERSHIP_FIELDS = (
    "stockListedShares",
    "paidUpCapital",
    "publicShares",
    "publicPercentage",
    "promoterShares",
    "promoterPercentage",
)


def security_detail(content: bytes, path: str) -> dict[str, Wire]:
    """The security detail object, with every ownership field present (null allowed)."""
    body = decode_json(content, path)
    if not isinstance(body, dict):
        raise MalformedResponse(f"{path}: expected a JSON object, got {type(body).__name__}")
    missing = [name for name in OWNERSHIP_FIELDS if name not in body]
    if missing:
        raise MalformedResponse(f"{path}: the answer has no {missing[0]!r}")
    return body


def page(content: bytes, path: str) -> tuple[list[Wire], int, int]:
    """The rows, `totalPages` and `totalElements` of one Spring-style page."""
    body = decode_json(content, path)
    if not isinstance(body, dict):
        raise MalformedResponse(f"{path}: expected a page object, got {type(body).__name__}")
    content_, pages, elements = (
        body.get("content"),
        body.get("totalPages"),
        body.get("totalElements"),
    )
    if not isinstance(content_, list) or not all(isinstance(row, dict) for row in content_):
        raise MalformedResponse(f"{path}: page has no 'content' array of objects")
    for name, value in (("totalPages", pages), ("totalElements", elements)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise MalformedResponse(f"{path}: page has no valid '{name}'")
    assert isinstance(pages, int) and isinstance(elements, int)
    return content_, pages, elements


def number(value: Any) -> float | int | None:
    """A JSON number as is, None as None; anything else is a malformed answer.

    Non-finite numbers pass here and are refused row by row by validation.
    """
    if isinstance(value, bool) or not (value is None or isinstance(value, int | float)):
        raise ValueError(f"expected a number, got {value!r}")
    return value


def text(value: Any) -> str | None:
    """A JSON string as is, None as None; anything else is a malformed answer."""
    if value is not None and not isinstance(value, str):
        raise ValueError(f"expected a string, got {value!r}")
    return value


def shape_error(exc: Exception) -> str:
    """What a lookup or type error met while walking an answer says about its shape."""
    return f"unexpected answer shape: {type(exc).__name__}: {exc}"
