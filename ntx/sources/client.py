"""GET requests to one API root: each request's URL, headers and time limit, and the
transport that carries it (`ntx.transport.LeanTransport` unless told otherwise).

Requests are built directly as `httpx.Request`s and handed to the transport: an API needs
none of `httpx.AsyncClient`'s cookies, auth or redirects, and skipping them halves the CPU a
request costs. Any `httpx` transport fits, which is how tests put an `httpx.MockTransport`
where the network would be.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import TracebackType
from urllib.parse import urlencode, urlsplit
from urllib.request import getproxies_environment, proxy_bypass

import httpx

from ntx import __version__
from ntx.transport import LeanTransport


def open_client(
    base_url: str,
    *,
    workers: int,
    timeout: float,
    verify: bool = True,
    transport: httpx.AsyncBaseTransport | None = None,
) -> ApiClient:
    """A client for one run: a keep-alive connection per worker, TLS verified by default.

    `transport` replaces the network. Behind a proxy that the environment names for this
    URL (`HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`, minus `NO_PROXY`), httpx's own transport
    carries the requests, since it speaks to proxies.
    """
    if transport is None:
        proxy = environment_proxy(base_url)
        if proxy is not None:
            limits = httpx.Limits(max_connections=workers, max_keepalive_connections=workers)
            transport = httpx.AsyncHTTPTransport(proxy=proxy, verify=verify, limits=limits)
        else:
            transport = LeanTransport(verify=verify, max_idle=workers)
    return ApiClient(base_url, transport, timeout)


def environment_proxy(url: str) -> str | None:
    """The proxy the environment names for `url`, as curl and httpx read it, or None."""
    parts = urlsplit(url)
    proxies = getproxies_environment()
    if not proxies or proxy_bypass(parts.hostname or ""):
        return None
    return proxies.get(parts.scheme) or proxies.get("all")


class ApiClient:
    """GETs of paths under `base_url`; every request is limited to `timeout` seconds."""

    def __init__(self, base_url: str, transport: httpx.AsyncBaseTransport, timeout: float) -> None:
        self.base_url = base_url.rstrip("/")
        self._transport = transport
        self._headers = [
            (b"User-Agent", f"ntx/{__version__}".encode()),
            (b"Accept", b"application/json"),
            (b"Accept-Encoding", b"gzip, deflate"),
        ]
        self._extensions = {"timeout": httpx.Timeout(timeout).as_dict()}

    def url(self, path: str, params: Mapping[str, str | int] | None = None) -> str:
        """The absolute URL of `path` (already URL-encoded) with `params` as its query."""
        query = f"?{urlencode(params)}" if params else ""
        return f"{self.base_url}{path}{query}"

    async def get(self, path: str, params: Mapping[str, str | int] | None = None) -> httpx.Response:
        """The answer to one GET, its body read whole. Raises `httpx.HTTPError`s."""
        request = httpx.Request(
            "GET", self.url(path, params), headers=self._headers, extensions=self._extensions
        )
        response = await self._transport.handle_async_request(request)
        try:
            await response.aread()
        finally:
            await response.aclose()
        return response

    async def aclose(self) -> None:
        await self._transport.aclose()

    async def __aenter__(self) -> ApiClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()
