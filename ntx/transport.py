"""A lean HTTP/1.1 transport for httpx on trio: the network under every ntx request.

Why not httpx's default transport (httpcore): on every request its pool checks every idle
connection for readability, one system call each, so the CPU a request costs grows with
`--workers` (1.5 ms per request at 16 workers on the benchmark machine). Here an idle
connection is taken from a last-in first-out stack: O(1), whatever the pool's size. The
protocol itself is h11's (the same parser httpcore uses); TLS is trio's `SSLStream` over
the context httpx would build (certificates verified unless told otherwise).

A reused keep-alive connection may have been closed by the server while it sat idle; that
shows as a failure before the first byte of the answer, and the request is then sent once
more on a new connection (ntx only sends GETs, which are safe to repeat). Any other failure
raises the `httpx` exception httpx's own transport would (`ConnectError`, `ReadError`,
`ConnectTimeout`, `ReadTimeout`, `RemoteProtocolError`, ...), so callers see one vocabulary.
"""

from __future__ import annotations

import math
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import h11
import httpx
import trio

RECEIVE_SIZE = 65536


@dataclass(eq=False)
class _Connection:
    stream: trio.abc.Stream
    protocol: h11.Connection = field(default_factory=lambda: h11.Connection(h11.CLIENT))
    reused: bool = False


class _StaleConnection(Exception):
    """A reused connection failed before any of the answer arrived."""


class LeanTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 keep-alive connections reused last-in first-out, at most `max_idle` kept.

    Honours httpx's timeout extension: `connect` bounds connecting (with the TLS
    handshake), `read` bounds the exchange from the first byte sent to the last byte of the
    answer. The answer's body is read whole before this returns (ntx needs all of it).
    """

    def __init__(self, *, verify: bool = True, max_idle: int = 64) -> None:
        self._verify = verify
        self._ssl_context: ssl.SSLContext | None = None
        self._max_idle = max_idle
        self._idle: dict[tuple[bytes, bytes, int], list[_Connection]] = {}
        self._closed = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.scheme not in ("http", "https"):
            raise httpx.UnsupportedProtocol(f"unsupported scheme {url.scheme!r}", request=request)
        origin = (url.raw_scheme, url.raw_host, _port(url))
        timeouts = request.extensions.get("timeout", {})
        idle = self._idle.setdefault(origin, [])
        while True:
            connection = idle.pop() if idle else await self._connect(request, timeouts)
            try:
                status, headers, body = await self._exchange(connection, request, timeouts)
            except _StaleConnection:
                continue  # the server closed it while idle: once more, on the next one
            break
        if self._reusable(connection) and len(idle) < self._max_idle and not self._closed:
            connection.protocol.start_next_cycle()
            connection.reused = True
            idle.append(connection)
        else:
            await trio.aclose_forcefully(connection.stream)
        return httpx.Response(
            status,
            headers=headers,
            stream=httpx.ByteStream(body),
            request=request,
            extensions={"http_version": b"HTTP/1.1"},
        )

    async def aclose(self) -> None:
        self._closed = True
        for connections in self._idle.values():
            for connection in connections:
                await trio.aclose_forcefully(connection.stream)
        self._idle.clear()

    async def _connect(self, request: httpx.Request, timeouts: dict[str, float]) -> _Connection:
        url = request.url
        host, port = url.host, _port(url)
        try:
            with _deadline(timeouts.get("connect"), httpx.ConnectTimeout, request):
                stream: trio.abc.Stream = await trio.open_tcp_stream(host, port)
                if url.scheme == "https":
                    tls = trio.SSLStream(
                        stream, self._context(), server_hostname=host, https_compatible=True
                    )
                    await tls.do_handshake()
                    stream = tls
        except (OSError, trio.BrokenResourceError, ssl.SSLError) as exc:
            raise httpx.ConnectError(_reason(exc), request=request) from exc
        return _Connection(stream)

    def _context(self) -> ssl.SSLContext:
        if self._ssl_context is None:  # built on first use: it reads the CA bundle
            self._ssl_context = httpx.create_ssl_context(verify=self._verify)
        return self._ssl_context

    async def _exchange(
        self, connection: _Connection, request: httpx.Request, timeouts: dict[str, float]
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """Send `request`, read its whole answer: (status, headers, body)."""
        protocol = connection.protocol
        answered = False
        try:
            with _deadline(timeouts.get("read"), httpx.ReadTimeout, request):
                head = h11.Request(
                    method=request.method, target=request.url.raw_path, headers=request.headers.raw
                )
                data = protocol.send(head) or b""
                async for chunk in request.stream:  # type: ignore[union-attr]
                    if chunk:
                        data += protocol.send(h11.Data(data=chunk)) or b""
                data += protocol.send(h11.EndOfMessage()) or b""
                await connection.stream.send_all(data)
                response: h11.Response | None = None
                body: list[bytes] = []
                while True:
                    event = protocol.next_event()
                    if event is h11.NEED_DATA:
                        received = await connection.stream.receive_some(RECEIVE_SIZE)
                        answered = answered or bool(received)
                        protocol.receive_data(bytes(received))
                    elif isinstance(event, h11.Response):
                        response = event
                    elif isinstance(event, h11.Data):
                        body.append(bytes(event.data))
                    elif isinstance(event, h11.EndOfMessage):
                        break
                    elif isinstance(event, h11.ConnectionClosed):
                        raise h11.RemoteProtocolError("connection closed before the answer")
        except BaseException as exc:
            await trio.aclose_forcefully(connection.stream)
            if isinstance(exc, trio.Cancelled | httpx.TimeoutException):
                raise
            if connection.reused and not answered and _is_connection_failure(exc):
                raise _StaleConnection from exc
            if isinstance(exc, h11.RemoteProtocolError):
                raise httpx.RemoteProtocolError(str(exc), request=request) from exc
            if isinstance(exc, h11.LocalProtocolError):
                raise httpx.LocalProtocolError(str(exc), request=request) from exc
            if isinstance(exc, OSError | trio.BrokenResourceError | ssl.SSLError):
                raise httpx.ReadError(_reason(exc), request=request) from exc
            raise
        assert response is not None
        return response.status_code, list(response.headers), b"".join(body)

    @staticmethod
    def _reusable(connection: _Connection) -> bool:
        protocol = connection.protocol
        return protocol.our_state is h11.DONE and protocol.their_state is h11.DONE


def _port(url: httpx.URL) -> int:
    return url.port or (443 if url.scheme == "https" else 80)


def _reason(exc: BaseException) -> str:
    """What went wrong, in the words of the errors trio wrapped: a TLS error or a reset under
    `BrokenResourceError`, why each attempt failed under "all attempts to connect failed"."""
    cause = exc.__cause__
    if isinstance(cause, BaseExceptionGroup):
        return "; ".join(dict.fromkeys(_reason(error) for error in cause.exceptions))
    if isinstance(exc, trio.BrokenResourceError) and cause is not None:
        return _reason(cause)
    return str(exc) or type(exc).__name__


def _is_connection_failure(exc: BaseException) -> bool:
    return isinstance(exc, OSError | trio.BrokenResourceError | h11.RemoteProtocolError)


@contextmanager
def _deadline(
    seconds: float | None, error: type[httpx.TimeoutException], request: httpx.Request
) -> Iterator[None]:
    """`trio.fail_after(seconds)` raising httpx's `error`; no limit when seconds is None."""
    try:
        with trio.fail_after(math.inf if seconds is None else seconds):
            yield
    except trio.TooSlowError as exc:
        raise error("timed out", request=request) from exc
