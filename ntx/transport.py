"""HTTP exchanges on trio: the network under every ntx request.

`LeanTransport` is ntx's own HTTP/1.1 client, used for every request unless a proxy is in
the way. Why not httpx's: on every request httpcore's pool checks every idle connection for
readability, one system call each, so the CPU a request costs grows with `--workers` (1.5 ms
per request at 16 workers on the benchmark machine); and an `httpx.Request` and
`httpx.Response` per request (URL parsing, header objects, streams, decoders) took a third
of what was left. Here an idle connection is taken from a last-in first-out stack, O(1)
whatever the pool's size, and a request is a target string and a few header lines. The
protocol itself is h11's (the parser httpcore uses); TLS is trio's `SSLStream` over the
context httpx would build (certificates verified unless told otherwise).

`HttpxExchange` carries the same requests over any httpx transport: httpx's own behind a
proxy, `httpx.MockTransport` in tests.

A reused keep-alive connection may have been closed by the server while it sat idle; that
shows as a failure before the first byte of the answer, and the request is then sent once
more on a new connection (ntx only sends GETs, which are safe to repeat). Other failures
raise the `httpx` exception httpx's own transport would (`ConnectError`, `ReadError`,
`ConnectTimeout`, `ReadTimeout`, `RemoteProtocolError`, ...), so callers see one vocabulary
whichever exchange carried the request.
"""

from __future__ import annotations

import ssl
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import urlsplit

import h11
import httpx
import trio

RECEIVE_SIZE = 65536
Header = tuple[bytes, bytes]
_END_OF_REQUEST = h11.EndOfMessage()  # immutable: one for every request (building one costs)


@dataclass(frozen=True, slots=True)
class Origin:
    """Where requests go: scheme, host and port of an http:// or https:// URL."""

    scheme: str
    host: str
    port: int

    @classmethod
    def of(cls, url: str) -> Origin:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http:// or https:// URL: {url!r}")
        return cls(parts.scheme, parts.hostname, parts.port or _DEFAULT_PORTS[parts.scheme])

    @property
    def host_header(self) -> bytes:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = self.port == _DEFAULT_PORTS[self.scheme]
        return (host if default else f"{host}:{self.port}").encode("ascii")

    def url(self, target: str) -> str:
        """The absolute URL of `target` (a path with its query) at this origin."""
        return f"{self.scheme}://{self.host_header.decode()}{target}"


_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(slots=True)
class Answer:
    """One HTTP answer, read whole: its status, headers and body (content-decoded)."""

    status_code: int
    headers: list[tuple[str, str]]
    content: bytes

    def header(self, name: str) -> str | None:
        """The first value of header `name` (any case), or None."""
        return _first(self.headers, name)


def _first(headers: list[tuple[str, str]], name: str) -> str | None:
    wanted = name.lower()
    return next((value for key, value in headers if key.lower() == wanted), None)


BodySink = Callable[[bytes], None]


class Exchange(Protocol):
    """Sends one GET and returns its answer; raises `httpx.HTTPError`s.

    With a `sink`, a 200 answer's body goes to it piece by piece as it arrives (decoded),
    and the `Answer` holds no content; other answers are read whole either way. Whatever
    the sink raises ends the exchange and is raised as it is.
    """

    async def get(
        self,
        origin: Origin,
        target: str,
        headers: Sequence[Header],
        timeout: float,
        sink: BodySink | None = None,
    ) -> Answer: ...

    async def aclose(self) -> None: ...


@dataclass(eq=False)
class _Connection:
    stream: trio.abc.Stream
    protocol: h11.Connection = field(default_factory=lambda: h11.Connection(h11.CLIENT))
    reused: bool = False


class _StaleConnection(Exception):
    """A reused connection failed before any of the answer arrived."""


class LeanTransport:
    """HTTP/1.1 keep-alive connections reused last-in first-out, at most `max_idle` kept.

    `timeout` bounds connecting (with the TLS handshake), and separately the exchange from
    the first byte sent to the last byte of the answer.
    """

    def __init__(self, *, verify: bool = True, max_idle: int = 64) -> None:
        self._verify = verify
        self._ssl_context: ssl.SSLContext | None = None
        self._max_idle = max_idle
        self._idle: dict[Origin, list[_Connection]] = {}
        self._closed = False

    async def get(
        self,
        origin: Origin,
        target: str,
        headers: Sequence[Header],
        timeout: float,
        sink: BodySink | None = None,
    ) -> Answer:
        idle = self._idle.setdefault(origin, [])
        head = h11.Request(
            method="GET", target=target, headers=[(b"Host", origin.host_header), *headers]
        )
        while True:
            connection = idle.pop() if idle else await self._connect(origin, timeout)
            try:
                status, texts, body = await self._exchange(connection, head, timeout, sink)
            except _StaleConnection:
                continue  # the server closed it while idle: once more, on the next one
            break
        if self._reusable(connection) and len(idle) < self._max_idle and not self._closed:
            connection.protocol.start_next_cycle()
            connection.reused = True
            idle.append(connection)
        else:
            await trio.aclose_forcefully(connection.stream)
        return Answer(status, texts, body)

    async def aclose(self) -> None:
        self._closed = True
        for connections in self._idle.values():
            for connection in connections:
                await trio.aclose_forcefully(connection.stream)
        self._idle.clear()

    async def _connect(self, origin: Origin, timeout: float) -> _Connection:
        try:
            with _deadline(timeout, httpx.ConnectTimeout):
                stream: trio.abc.Stream = await trio.open_tcp_stream(origin.host, origin.port)
                if origin.scheme == "https":
                    tls = trio.SSLStream(
                        stream, self._context(), server_hostname=origin.host, https_compatible=True
                    )
                    await tls.do_handshake()
                    stream = tls
        except (OSError, trio.BrokenResourceError, ssl.SSLError) as exc:
            raise httpx.ConnectError(_reason(exc)) from exc
        return _Connection(stream)

    def _context(self) -> ssl.SSLContext:
        if self._ssl_context is None:  # built on first use: it reads the CA bundle
            self._ssl_context = httpx.create_ssl_context(verify=self._verify)
        return self._ssl_context

    async def _exchange(
        self, connection: _Connection, head: h11.Request, timeout: float, sink: BodySink | None
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        """Send `head`, read its answer: (status, headers, body decoded, unless it went to
        `sink`)."""
        protocol = connection.protocol
        answered = False
        try:
            with _deadline(timeout, httpx.ReadTimeout):
                data = protocol.send(head) or b""
                data += protocol.send(_END_OF_REQUEST) or b""
                await connection.stream.send_all(data)
                status = 0
                texts: list[tuple[str, str]] = []
                body = bytearray()
                decoder = _Decoder(None)
                streaming = False
                while True:
                    event = protocol.next_event()
                    if event is h11.NEED_DATA:
                        received = await connection.stream.receive_some(RECEIVE_SIZE)
                        answered = answered or bool(received)
                        protocol.receive_data(bytes(received))
                    elif isinstance(event, h11.Response):
                        status = event.status_code
                        texts = [
                            (name.decode("latin-1"), value.decode("latin-1"))
                            for name, value in event.headers.raw_items()  # a list: fast
                        ]
                        decoder = _Decoder(_first(texts, "content-encoding"))
                        streaming = sink is not None and status == 200
                    elif isinstance(event, h11.Data):
                        if streaming:
                            assert sink is not None
                            for piece in decoder.decode(event.data):
                                sink(piece)
                        else:
                            body += event.data
                    elif isinstance(event, h11.EndOfMessage):
                        break
                    elif isinstance(event, h11.ConnectionClosed):
                        raise h11.RemoteProtocolError("connection closed before the answer")
                if streaming:
                    assert sink is not None
                    for piece in decoder.decode(b"", last=True):
                        sink(piece)
                    return status, texts, b""
                return status, texts, b"".join(decoder.decode(bytes(body), last=True))
        except BaseException as exc:
            await trio.aclose_forcefully(connection.stream)
            if isinstance(exc, trio.Cancelled | httpx.TimeoutException | httpx.DecodingError):
                raise
            if connection.reused and not answered and _is_connection_failure(exc):
                raise _StaleConnection from exc
            if isinstance(exc, h11.RemoteProtocolError):
                raise httpx.RemoteProtocolError(str(exc)) from exc
            if isinstance(exc, h11.LocalProtocolError):
                raise httpx.LocalProtocolError(str(exc)) from exc
            if isinstance(exc, OSError | trio.BrokenResourceError | ssl.SSLError):
                raise httpx.ReadError(_reason(exc)) from exc
            raise

    @staticmethod
    def _reusable(connection: _Connection) -> bool:
        protocol = connection.protocol
        return protocol.our_state is h11.DONE and protocol.their_state is h11.DONE


class HttpxExchange:
    """The same GETs over any httpx transport (it decodes the body as httpx does)."""

    def __init__(self, transport: httpx.AsyncBaseTransport) -> None:
        self._transport = transport

    async def get(
        self,
        origin: Origin,
        target: str,
        headers: Sequence[Header],
        timeout: float,
        sink: BodySink | None = None,
    ) -> Answer:
        request = httpx.Request(
            "GET",
            origin.url(target),
            headers=list(headers),
            extensions={"timeout": httpx.Timeout(timeout).as_dict()},
        )
        response = await self._transport.handle_async_request(request)
        headers_read = list(response.headers.items())
        try:
            if sink is not None and response.status_code == 200:
                async for piece in response.aiter_bytes():
                    sink(piece)
                return Answer(response.status_code, headers_read, b"")
            await response.aread()
        finally:
            await response.aclose()
        return Answer(response.status_code, headers_read, response.content)

    async def aclose(self) -> None:
        await self._transport.aclose()


PIECE_SIZE = 65536  # the most a compressed piece decodes to at once


class _Decoder:
    """Undoes a Content-Encoding (gzip or deflate, the ones ntx asks for, in any chain) piece
    by piece, each decoded piece at most `PIECE_SIZE` bytes however well the body compressed.
    Raises `httpx.DecodingError` on an unknown coding or a corrupt or truncated body."""

    def __init__(self, encoding: str | None) -> None:
        self._encoding = encoding
        self._steps: list[_Inflate] = []
        for coding in reversed([part.strip().lower() for part in (encoding or "").split(",")]):
            if coding in ("gzip", "x-gzip"):
                self._steps.append(_Inflate(16 + zlib.MAX_WBITS))
            elif coding == "deflate":
                self._steps.append(_Inflate(zlib.MAX_WBITS, raw_fallback=True))
            elif coding not in ("identity", ""):
                raise httpx.DecodingError(f"unsupported content encoding {coding!r}")

    def decode(self, data: bytes, *, last: bool = False) -> Iterator[bytes]:
        """What the piece `data` decodes to; with `last`, the body ends with it and must be
        complete."""
        pieces: Iterator[bytes] = iter((data,))
        for step in self._steps:
            pieces = step.run(pieces, last)
        try:
            yield from pieces
        except zlib.error as exc:
            raise httpx.DecodingError(
                f"the answer's {self._encoding} body is corrupt ({exc})"
            ) from exc


class _Inflate:
    """One zlib stream, fed in pieces. `raw_fallback`: a deflate body that is not
    zlib-wrapped (as the standard says) is raw deflate (as some servers send)."""

    def __init__(self, wbits: int, raw_fallback: bool = False) -> None:
        self._inflater = zlib.decompressobj(wbits)
        self._start: bytes | None = b"" if raw_fallback else None  # held until it is known

    def run(self, pieces: Iterator[bytes], last: bool) -> Iterator[bytes]:
        for data in pieces:
            yield from self._inflate(data)
        if last:
            if self._start:
                yield from self._inflate(b"", force=True)
            yield self._inflater.flush()
            if not self._inflater.eof:
                raise zlib.error("incomplete or truncated stream")

    def _inflate(self, data: bytes, force: bool = False) -> Iterator[bytes]:
        if self._start is not None:
            data = self._start + data
            if len(data) < 2 and not force:
                self._start = data  # the first two bytes tell zlib-wrapped from raw
                return
            self._start = None
            try:
                first = self._inflater.decompress(data, PIECE_SIZE)
            except zlib.error:
                self._inflater = zlib.decompressobj(-zlib.MAX_WBITS)
            else:
                yield first
                data = self._inflater.unconsumed_tail
        while data:
            yield self._inflater.decompress(data, PIECE_SIZE)
            data = self._inflater.unconsumed_tail


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
def _deadline(seconds: float, error: type[httpx.TimeoutException]) -> Iterator[None]:
    """`trio.fail_after(seconds)` raising httpx's `error` instead of trio's."""
    try:
        with trio.fail_after(seconds):
            yield
    except trio.TooSlowError as exc:
        raise error("timed out") from exc
