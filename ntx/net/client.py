"""The one HTTP client of a run: an `httpx.AsyncClient` under one API root.

Every request of ntx goes through `HttpClient.request`: a keep-alive pool with a connection
per worker, a time limit per request, TLS verified unless told otherwise (certifi's roots, or
`SSL_CERT_FILE` / `SSL_CERT_DIR` when set), proxies from the environment (`HTTPS_PROXY`,
`HTTP_PROXY`, `ALL_PROXY`, minus `NO_PROXY`), gzip and deflate bodies decoded. A connection
the server closed while it sat idle is replaced by httpx's pool.

httpx's exceptions are mapped to ntx's `TransportError` here, once: nothing above this module
sees an httpx error. A connection closed, reset or refused without an answer is a
`ConnectionDropped`: the pace takes it as congestion. Tests put an `httpx.MockTransport`
where the network would be.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import httpx

from ntx.errors import CertificateError, ConnectionDropped, NtxError, TransportError, UsageError
from ntx.net.chain import ISSUER_UNKNOWN, ChainCompleter, links_only

Params = Mapping[str, str | int]
E = TypeVar("E", bound=BaseException)
# The real exchange's site is read by browsers; some networks answer other clients empty.
BROWSER_USER_AGENT = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko)"
    " Chrome/131.0.0.0 Safari/537.36"
)


def site_headers(
    base_url: str, user_agent: str | None = None, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The headers of every request to `base_url`: a browser's `User-Agent` (or
    `user_agent`), `Referer: <site>/` and `Origin: <site>` as the site's own pages send them,
    JSON and compressed bodies accepted; `extra` adds to them or replaces them by name
    (case-insensitive)."""
    origin = httpx.URL(base_url)
    site = f"{origin.scheme}://{origin.netloc.decode('ascii')}"
    headers = httpx.Headers(
        {
            "User-Agent": user_agent or BROWSER_USER_AGENT,
            "Referer": f"{site}/",
            "Origin": site,
            "Accept": "application/json, text/plain, */*",
            "Accept-Encoding": "gzip, deflate",
        }
    )
    headers.update(extra or {})
    return dict(headers.items())


def open_client(
    base_url: str,
    *,
    workers: int,
    timeout: float,
    verify: bool = True,
    ca_bundle: Path | None = None,
    chain_cache: Path | None = None,
    headers: Mapping[str, str] | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> HttpClient:
    """A client for one run: `workers` keep-alive connections at most, `timeout` seconds per
    request, TLS verified unless `verify` is False (against the usual roots and those of
    `ca_bundle`, a PEM file; an incomplete chain is completed by AIA chasing, with the
    intermediates kept in `chain_cache`), `headers` on every request (by default
    `site_headers(base_url)`). `transport` replaces the network. `UsageError` for a
    `ca_bundle` that cannot be read."""
    limits = httpx.Limits(max_connections=workers, max_keepalive_connections=workers)
    completer = None
    if verify:
        context = trust(ca_bundle)
        completer = ChainCompleter(context, partial(trust, ca_bundle, verify=False), chain_cache)
        completer.load_cached(httpx.URL(base_url).host)
    client = httpx.AsyncClient(
        base_url=base_url.rstrip("/"),
        timeout=timeout,
        verify=context if verify else False,
        limits=limits,
        transport=transport,
        headers=headers if headers is not None else site_headers(base_url),
    )
    return HttpClient(client, completer)


def trust(ca_bundle: Path | None = None, *, verify: bool = True) -> ssl.SSLContext:
    """The TLS context of verified requests: certifi's roots (or `SSL_CERT_FILE` /
    `SSL_CERT_DIR`), plus the authorities in `ca_bundle`; every chain must end at one of
    them. With `verify` False, a context that holds the same roots but checks nothing (to
    fetch a certificate whose chain is incomplete, and check it separately)."""
    context = httpx.create_ssl_context(verify=True, trust_env=True)
    links_only(context)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if ca_bundle is not None:
        try:
            context.load_verify_locations(cafile=str(ca_bundle))
        except (OSError, ssl.SSLError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            raise UsageError(
                f"--ca-bundle {ca_bundle}: not a readable PEM file ({reason})"
            ) from exc
    return context


class HttpClient:
    """Requests to paths under one API root; each answer is read whole before it returns."""

    def __init__(self, client: httpx.AsyncClient, completer: ChainCompleter | None = None) -> None:
        self._client = client
        self.chains = completer

    def url(self, path: str) -> str:
        """The absolute URL of `path` (already URL-encoded)."""
        return str(self._client.base_url.join(path.lstrip("/")))

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Params | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """The response to one request, of any status; `TransportError` when there is none
        (refused, reset, timed out, a body cut short or not decodable); `CertificateError`
        when the server's certificate cannot be verified, even with its chain completed."""
        try:
            return await self._request(method, path, params, json, headers)
        except CertificateError as exc:
            url = self._client.base_url
            if self.chains is None or ISSUER_UNKNOWN not in str(exc):
                raise
            if not await self.chains.complete(url.host, url.port or 443):
                raise
        return await self._request(method, path, params, json, headers)

    async def _request(
        self,
        method: str,
        path: str,
        params: Params | None,
        json: Any,
        headers: Mapping[str, str] | None,
    ) -> httpx.Response:
        try:
            return await self._client.request(
                method, path, params=params, json=json, headers=headers
            )
        except httpx.TimeoutException as exc:
            raise TransportError(f"timed out: {self.url(path)} ({type(exc).__name__})") from exc
        except DROPS as exc:
            raise self._connection_failure(exc, path) from exc
        except httpx.HTTPError as exc:
            raise TransportError(self._failure(exc, path)) from exc

    def _connection_failure(self, exc: httpx.HTTPError, path: str) -> NtxError:
        """What a connection that gave no answer means: a certificate that cannot be
        verified, a name that does not resolve, another TLS failure, or (most often) a
        server that closed, reset or refused it: a drop."""
        tls = _cause(exc, ssl.SSLError)  # the server's TLS, not its load
        if isinstance(tls, ssl.SSLCertVerificationError):
            return CertificateError(
                f"the TLS certificate of {self._client.base_url.host} cannot be verified"
                f" ({innermost_reason(exc)}): give --ca-bundle PATH with the authority that"
                " issued it, or --insecure to skip verification (warned; avoid)"
            )
        if tls is not None or _cause(exc, socket.gaierror) is not None:
            return TransportError(self._failure(exc, path))
        return ConnectionDropped(self._failure(exc, path))

    def _failure(self, exc: httpx.HTTPError, path: str) -> str:
        return f"{_describe(exc)} {self.url(path)} ({innermost_reason(exc)})"

    async def get(self, path: str, params: Params | None = None) -> httpx.Response:
        return await self.request("GET", path, params=params)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> HttpClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()


# The server closed, reset or refused the connection without an answer.
DROPS = (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)


def _cause(exc: BaseException, kind: type[E]) -> E | None:
    """The first exception of `kind` among `exc` and what caused it (groups searched)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, kind):
            return seen
        if isinstance(seen, BaseExceptionGroup):
            return next((c for i in seen.exceptions if (c := _cause(i, kind))), None)
        seen = seen.__cause__ or seen.__context__
    return None


def innermost_reason(exc: BaseException) -> str:
    """The innermost cause's words ("Connection refused", "CERTIFICATE_VERIFY_FAILED ..."):
    httpx's own message is often only "all attempts to connect ... failed", or empty."""
    reason = type(exc).__name__
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return str(seen)
        if isinstance(seen, OSError) and seen.strerror:
            reason = seen.strerror
        elif str(seen) and not isinstance(seen, BaseExceptionGroup):
            reason = str(seen)
        if isinstance(seen, BaseExceptionGroup):
            seen = seen.exceptions[0]
        else:
            seen = seen.__cause__ or seen.__context__
    return reason


def _describe(exc: httpx.HTTPError) -> str:
    if isinstance(exc, httpx.ConnectError):
        return "cannot connect to"
    if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError | httpx.WriteError):
        return "connection broken at"
    if isinstance(exc, httpx.DecodingError):
        return "undecodable answer from"
    return "request failed:"
