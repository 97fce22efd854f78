"""`ntx doctor`: can this machine backfill from this API? One line per check, in order.

The checks follow a backfill's first steps: the host's name and a TCP connection, TLS, the
site's token module, the handshake, one authenticated GET, one POST with a payload id, the
first day the history window serves, and this machine's Nepal date. Each check needs the one
before it, so the first failure ends the run: its line says what to do, and the checks after
it are listed as not run. Requests go through the run's own client and source (the same code
as a backfill), one at a time, tried once. Nothing is written: no database, no cache.
"""

from __future__ import annotations

import hashlib
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from urllib.parse import urlsplit

import trio

from ntx.errors import HttpStatusError, NtxError
from ntx.nepal import nepal_today
from ntx.net.chain import ISSUER_UNKNOWN, ChainCompleter
from ntx.net.client import innermost_reason, open_client, site_headers, trust
from ntx.pace.throttle import Throttle
from ntx.sources.nepse.payload import nepal_day
from ntx.sources.nepse.session import ModuleCache
from ntx.sources.nepse.source import NepseSource
from ntx.sources.nepse.token import EXPORTS
from ntx.sources.nepse.wire import SecurityRecord
from ntx.words import plural

HISTORY_PROBE_YEARS = 10  # how far back the window check starts
CHECKS = (
    "name resolution and TCP",
    "TLS",
    "token module",
    "handshake",
    "authenticated GET",
    "POST with payload id",
    "history window",
    "Nepal date",
)


@dataclass(frozen=True)
class DoctorSettings:
    api: str
    timeout: float = 10.0
    insecure: bool = False
    ca_bundle: Path | None = None
    user_agent: str | None = None
    headers: dict[str, str] | None = None


class CheckFailed(Exception):
    """A check's failure: what was seen, and what to do."""

    def __init__(self, seen: str, advice: str) -> None:
        super().__init__(seen)
        self.seen = seen
        self.advice = advice


Report = Callable[[str], None]


async def run_doctor(settings: DoctorSettings, report: Report) -> bool:
    """Run every check against `settings.api`, reporting one line each; True if all pass."""
    client = open_client(
        settings.api,
        workers=1,
        timeout=settings.timeout,
        verify=not settings.insecure,
        ca_bundle=settings.ca_bundle,
        headers=site_headers(settings.api, settings.user_agent, settings.headers),
    )
    doctor = Doctor(settings, NepseSource(client, Throttle(0.0), modules=ModuleCache(None, "")))
    steps = (
        doctor.tcp,
        doctor.tls,
        doctor.module,
        doctor.handshake,
        doctor.authenticated_get,
        doctor.post,
        doctor.window,
        doctor.nepal_date,
    )
    async with client:
        for index, (name, step) in enumerate(zip(CHECKS, steps, strict=True)):
            try:
                detail = await step()
            except CheckFailed as failed:
                return _failed(report, index, failed.seen, failed.advice)
            except (NtxError, OSError, trio.TooSlowError) as exc:
                seen = str(exc) or type(exc).__name__
                return _failed(report, index, seen, _ADVICE.get(name, _SITE_CHANGED))
            report(_line("ok", name, detail))
    return True


class Doctor:
    """The checks, each returning its line's detail or raising; they run in `CHECKS` order
    and each may use what the ones before it found."""

    def __init__(self, settings: DoctorSettings, source: NepseSource) -> None:
        self._settings = settings
        self._source = source
        parts = urlsplit(settings.api)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port or (443 if self._https else 80)
        self._mirror = False  # no token module: perhaps a server without the handshake
        self._security: SecurityRecord | None = None

    async def tcp(self) -> str:
        host, port = self._host, self._port
        with trio.fail_after(self._settings.timeout):
            try:
                infos = await trio.socket.getaddrinfo(host, port, type=trio.socket.SOCK_STREAM)
            except OSError as exc:
                raise CheckFailed(
                    f"cannot resolve {host} ({innermost_reason(exc)})",
                    _ADVICE["name resolution and TCP"],
                ) from exc
            started = time.monotonic()
            try:
                stream = await trio.open_tcp_stream(host, port)
            except OSError as exc:
                raise CheckFailed(
                    f"cannot connect to {host} port {port} ({innermost_reason(exc)})",
                    _ADVICE["name resolution and TCP"],
                ) from exc
            await stream.aclose()
        address = infos[0][4][0]
        return f"{host} is {address}; port {port} accepts connections ({_ms(started)})"

    async def tls(self) -> str:
        if not self._https:
            return "not used (http://)"
        if self._settings.insecure:
            return "NOT verified: --insecure is on"
        context = trust(self._settings.ca_bundle)
        bundle = f" and {self._settings.ca_bundle}" if self._settings.ca_bundle else ""
        try:
            await self._tls_handshake(context)
            return f"the certificate of {self._host} is verified against the usual roots{bundle}"
        except ssl.SSLCertVerificationError as exc:
            failure = exc
        if ISSUER_UNKNOWN in str(failure):
            roots = partial(trust, self._settings.ca_bundle, verify=False)
            chains = ChainCompleter(context, roots, None)
            if await chains.complete(self._host, self._port):
                try:
                    await self._tls_handshake(context)
                    return (
                        f"the certificate of {self._host} is verified against the usual"
                        f" roots{bundle}, after completing its chain: the server omits"
                        f" {plural(chains.completed[self._host], 'intermediate')}, which ntx"
                        " fetched from the certificate's AIA address (it does so by itself)"
                    )
                except ssl.SSLCertVerificationError as exc:
                    failure = exc
        raise CheckFailed(
            f"the certificate of {self._host} cannot be verified ({failure.verify_message})",
            "give --ca-bundle PATH with the authority (or the missing intermediate)"
            " that issued it; see docs/troubleshooting.md",
        ) from failure

    async def _tls_handshake(self, context: ssl.SSLContext) -> None:
        with trio.fail_after(self._settings.timeout):
            stream = await trio.open_ssl_over_tcp_stream(
                self._host, self._port, ssl_context=context
            )
            await stream.do_handshake()
            await stream.aclose()

    async def module(self) -> str:
        try:
            _, wasm = await self._source.fetch_module()
        except HttpStatusError as exc:
            if exc.status != 404:
                raise
            self._mirror = True
            return "not served (404): fine for a mirror without the handshake (next line)"
        digest = hashlib.sha256(wasm).hexdigest()[:12]
        return f"{len(wasm):,} bytes, sha256 {digest}..., exports {' '.join(EXPORTS)}"

    async def handshake(self) -> str:
        credentials = await self._source.handshake()
        if credentials.token is None:
            return "none needed: prove answers 404 (a mirror, read without a token)"
        if self._mirror:
            raise CheckFailed("prove answers, but the token module is missing", _SITE_CHANGED)
        market = self._source.session.market
        return (
            f"token received ({len(credentials.token)} characters, not shown);"
            f" market-open id {market.id if market else 'unknown'}"
        )

    async def authenticated_get(self) -> str:
        securities = await self._source.securities()
        if not securities:
            raise CheckFailed("the security list is empty", _SITE_CHANGED)
        self._security = securities[0]
        return f"the security list has {len(securities):,} securities"

    async def post(self) -> str:
        assert self._security is not None, "the GET before found one"
        detail = await self._source.ownership(self._security.id)
        if "stockListedShares" not in detail:
            raise CheckFailed("the answer has no ownership fields", _SITE_CHANGED)
        how = "by GET (a mirror)" if self._mirror else "the payload id was accepted"
        return f"ownership of {self._security.symbol} answered; {how}"

    async def window(self) -> str:
        assert self._security is not None, "the GET before found one"
        since = nepal_today() - timedelta(days=365 * HISTORY_PROBE_YEARS)
        first = await self._source.history_starts(self._security.id, since)
        if first is None:
            return f"the server serves daily history from {since} on (no window since then)"
        return (
            f"the server serves daily history from {first} on;"
            " older days exist only in an archive ntx builds by running daily"
        )

    async def nepal_date(self) -> str:
        now = datetime.now(UTC)
        return (
            f"{nepal_today(now)} (UTC+05:45; {now:%H:%M} UTC here);"
            f" payload ids use day {nepal_day(now)}"
        )


_SITE_CHANGED = (
    "the site may have changed its API: see docs/nepse-api.md, and report it with this output"
)
_ADVICE = {
    "name resolution and TCP": "check the URL (--api), your network, DNS, or proxy settings",
    "TLS": "see docs/troubleshooting.md on certificates; --ca-bundle PATH adds authorities",
    "token module": _SITE_CHANGED,
    "handshake": _SITE_CHANGED,
}


def _failed(report: Report, index: int, seen: str, advice: str) -> bool:
    report(_line("FAIL", CHECKS[index], f"{seen}. What to do: {advice}"))
    for name in CHECKS[index + 1 :]:
        report(_line("-", name, "not run (needs the check above)"))
    return False


def _line(mark: str, name: str, detail: str) -> str:
    return f"{mark:<5} {name + ':':<25} {detail}"


def _ms(started: float) -> str:
    return f"{(time.monotonic() - started) * 1000:.0f} ms"
