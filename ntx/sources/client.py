"""GET requests to one API root: each request's target, headers and time limit, and the
exchange that carries it (`ntx.transport.LeanTransport` unless told otherwise).

An API needs none of `httpx.AsyncClient`'s cookies, auth or redirects; skipping them, and
httpx's request and response objects, saves most of the CPU the HTTP layer cost per
request. Any httpx transport still fits (through `HttpxExchange`), which is how tests put
an `httpx.MockTransport` where the network would be.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import TracebackType
from urllib.parse import urlencode, urlsplit
from urllib.request import getproxies_environment, proxy_bypass

import httpx

from ntx import __version__
from ntx.transport import Answer, BodySink, Exchange, HttpxExchange, LeanTransport, Origin


def open_client(
    base_url: str,
    *,
    workers: int,
    timeout: float,
    verify: bool = True,
    transport: httpx.AsyncBaseTransport | None = None,
) -> ApiClient:
    """A client for one run: a keep-alive connection per worker, TLS verified by default.

    `transport` (an httpx transport) replaces the network. Behind a proxy that the
    environment names for this URL (`HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`, minus
    `NO_PROXY`), httpx's own transport carries the requests, since it speaks to proxies.
    """
    exchange: Exchange
    if transport is None:
        proxy = environment_proxy(base_url)
        if proxy is not None:
            limits = httpx.Limits(max_connections=workers, max_keepalive_connections=workers)
            transport = httpx.AsyncHTTPTransport(proxy=proxy, verify=verify, limits=limits)
    if transport is not None:
        exchange = HttpxExchange(transport)
    else:
        exchange = LeanTransport(verify=verify, max_idle=workers)
    return ApiClient(base_url, exchange, timeout)


def environment_proxy(url: str) -> str | None:
    """The proxy the environment names for `url`, as curl and httpx read it, or None."""
    parts = urlsplit(url)
    proxies = getproxies_environment()
    if not proxies or proxy_bypass(parts.hostname or ""):
        return None
    return proxies.get(parts.scheme) or proxies.get("all")


class ApiClient:
    """GETs of paths under `base_url`; every request is limited to `timeout` seconds."""

    def __init__(self, base_url: str, exchange: Exchange, timeout: float) -> None:
        self.base_url = base_url.rstrip("/")
        self._origin = Origin.of(self.base_url)
        self._prefix = urlsplit(self.base_url).path
        self._exchange = exchange
        self._timeout = timeout
        self._headers = [
            (b"User-Agent", f"ntx/{__version__}".encode()),
            (b"Accept", b"application/json"),
            (b"Accept-Encoding", b"gzip, deflate"),
        ]

    def url(self, path: str, params: Mapping[str, str | int] | None = None) -> str:
        """The absolute URL of `path` (already URL-encoded) with `params` as its query."""
        return f"{self.base_url}{path}{_query(params)}"

    async def get(
        self,
        path: str,
        params: Mapping[str, str | int] | None = None,
        sink: BodySink | None = None,
    ) -> Answer:
        """The answer to one GET, its body read whole, or for a 200 answer given to `sink`
        piece by piece if there is one (see `Exchange`). Raises `httpx.HTTPError`s."""
        target = f"{self._prefix}{path}{_query(params)}"
        return await self._exchange.get(self._origin, target, self._headers, self._timeout, sink)

    async def aclose(self) -> None:
        await self._exchange.aclose()

    async def __aenter__(self) -> ApiClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()


def _query(params: Mapping[str, str | int] | None) -> str:
    return f"?{urlencode(params)}" if params else ""
