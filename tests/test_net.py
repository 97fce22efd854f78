"""ntx's HTTP client (httpx) against real sockets on 127.0.0.1: keep-alive, stale
connections, body framings, broken answers, timeouts (under MockClock), TLS verification and
proxies. httpx's errors reach ntx as `TransportError`s that say what happened."""

from __future__ import annotations

import gzip
import re
import ssl
import zlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import pytest
import trio
import trustme
from trio.testing import MockClock

from ntx.errors import CertificateError, ConnectionDropped, TransportError, UsageError
from ntx.net.client import BROWSER_USER_AGENT, HttpClient, open_client, site_headers
from tests.helpers import run_ntx_async

Answer = Callable[[int], tuple[bytes, bool]]  # request number -> (bytes to write, close after)


def answer(body: bytes, *, status: str = "200 OK", headers: bytes = b"") -> bytes:
    return (
        f"HTTP/1.1 {status}\r\ncontent-length: {len(body)}\r\n".encode() + headers + b"\r\n" + body
    )


@dataclass
class ScriptedServer:
    """Counts connections and requests; each request gets `reply(n)`."""

    reply: Answer
    connections: int = 0
    requests: int = 0
    targets: list[str] = field(default_factory=list)
    heads: list[bytes] = field(default_factory=list)

    async def handle(self, stream: trio.abc.Stream) -> None:
        self.connections += 1
        buffer = b""
        async with stream:
            while True:
                while b"\r\n\r\n" not in buffer:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    buffer += data
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                self.targets.append(head.split(b" ")[1].decode())
                self.heads.append(head)
                self.requests += 1
                data, close = self.reply(self.requests)
                if data:
                    await stream.send_all(data)
                if close:
                    return


@asynccontextmanager
async def serving(
    reply: Answer, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[tuple[str, ScriptedServer]]:
    server = ScriptedServer(reply)

    async def handler(stream: trio.abc.Stream) -> None:
        with suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await server.handle(stream)

    async with trio.open_nursery() as nursery:
        if ssl_context is None:
            listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
            scheme = "http"
        else:
            serve = partial(trio.serve_ssl_over_tcp, handler, 0, ssl_context, host="127.0.0.1")
            listeners = await nursery.start(serve)
            scheme = "https"
        listener = listeners[0].transport_listener if ssl_context else listeners[0]
        port = listener.socket.getsockname()[1]
        yield f"{scheme}://127.0.0.1:{port}", server
        nursery.cancel_scope.cancel()


def client(url: str, *, workers: int = 4, timeout: float = 5, verify: bool = True) -> HttpClient:
    return open_client(url, workers=workers, timeout=timeout, verify=verify)


async def test_keep_alive_connections_are_reused_one_per_concurrent_request() -> None:
    async with serving(lambda n: (answer(b"[%d]" % n), False)) as (url, server), client(url) as api:
        bodies = [(await api.get("/api/x", {"page": i})).content for i in range(20)]
        assert server.connections == 1
        assert bodies == [b"[%d]" % n for n in range(1, 21)]
        assert server.targets[:2] == ["/api/x?page=0", "/api/x?page=1"]

        async def fetch_ten() -> None:
            for _ in range(10):
                assert (await api.get("/api/y")).status_code == 200

        async with trio.open_nursery() as nursery:
            for _ in range(4):
                nursery.start_soon(fetch_ten)
        assert server.requests == 60 and server.connections <= 4


async def test_a_connection_the_server_closed_while_idle_is_replaced_without_an_error() -> None:
    # the server closes every connection after its answer, without saying so
    async with serving(lambda n: (answer(b"[%d]" % n), True)) as (url, server), client(url) as api:
        for i in range(1, 6):
            response = await api.get("/api/x")
            assert response.status_code == 200 and response.content == b"[%d]" % i
    assert server.connections == 5 and server.requests == 5


CHUNKED = (
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n4\r\n[1,2\r\n5\r\n,3,4]\r\n0\r\n\r\n"
)
UNTIL_CLOSE = b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n[5,6]"
GZIPPED = answer(gzip.compress(b"[7,8]"), headers=b"content-encoding: gzip\r\n")
DEFLATED = answer(zlib.compress(b"[9]"), headers=b"content-encoding: deflate\r\n")
_raw = zlib.compressobj(wbits=-zlib.MAX_WBITS)
RAW_DEFLATED = answer(
    _raw.compress(b"[10]") + _raw.flush(), headers=b"content-encoding: deflate\r\n"
)
RETRY_LATER = answer(b"{}", status="429 Too Many Requests", headers=b"retry-after: 3\r\n")


every_framing = pytest.mark.parametrize(
    ("raw", "close", "status", "body"),
    [
        (CHUNKED, False, 200, b"[1,2,3,4]"),
        (UNTIL_CLOSE, True, 200, b"[5,6]"),
        (GZIPPED, False, 200, b"[7,8]"),
        (DEFLATED, False, 200, b"[9]"),
        (RAW_DEFLATED, False, 200, b"[10]"),
        (RETRY_LATER, False, 429, b"{}"),
    ],
    ids=["chunked", "until-close", "gzip", "deflate", "raw-deflate", "429"],
)


@every_framing
async def test_every_http11_body_framing_is_read_whole(
    raw: bytes, close: bool, status: int, body: bytes
) -> None:
    async with serving(lambda n: (raw, close)) as (url, server), client(url) as api:
        for _ in range(3):  # and the connection is reused, or replaced, after each
            response = await api.get("/api/x")
            assert (response.status_code, response.content) == (status, body)
        if status == 429:
            assert response.headers["Retry-After"] == "3"
    assert server.connections == (3 if close else 1)


async def test_a_corrupt_compressed_body_is_a_transport_error() -> None:
    """(A gzip body cut short decodes to a body cut short: the source's JSON check catches it,
    tests/test_source.py.)"""
    corrupt = answer(b"\x1f\x8b not gzip at all", headers=b"content-encoding: gzip\r\n")
    async with serving(lambda n: (corrupt, False)) as (url, _), client(url) as api:
        with pytest.raises(TransportError, match=r"undecodable answer from .*/api/x"):
            await api.get("/api/x")


async def test_the_request_names_its_host_and_asks_for_json() -> None:
    async with (
        serving(lambda n: (answer(b"[]"), False)) as (url, server),
        client(f"{url}/b/") as api,
    ):
        await api.get("/api/x", {"a": "b c"})
    request_line, *lines = server.heads[0].decode().split("\r\n")
    headers = {name.lower(): value.strip() for name, value in (h.split(":", 1) for h in lines)}
    assert request_line == "GET /b/api/x?a=b+c HTTP/1.1"
    assert headers["host"] == url.removeprefix("http://")
    assert headers["accept"].startswith("application/json")
    assert headers["accept-encoding"] == "gzip, deflate"
    assert headers["user-agent"] == BROWSER_USER_AGENT
    assert headers["origin"] == url and headers["referer"] == f"{url}/"


async def test_an_answer_cut_short_is_an_error_and_not_sent_again() -> None:
    cut = answer(b"[1,2,3,4,5,6,7,8]")[:-5]
    async with (
        serving(lambda n: (cut if n > 1 else answer(b"[]"), n > 1)) as (url, server),
        client(url) as api,
    ):
        assert (await api.get("/api/x")).content == b"[]"
        with pytest.raises(TransportError, match="connection broken at"):
            await api.get("/api/x")  # on the reused connection: not taken for stale
    assert server.requests == 2


async def test_nothing_listening_is_a_connect_error() -> None:
    with trio.socket.socket() as sock:
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connections are refused
        async with client(f"http://127.0.0.1:{port}") as api:
            with pytest.raises(TransportError, match=r"cannot connect to .*Connection refused"):
                await api.get("/api/x")  # why, not only trio's "all attempts ... failed"


async def test_a_server_that_never_answers_times_out_after_the_limit(mock_clock: MockClock) -> None:
    async with (
        serving(lambda n: (b"", False)) as (url, _),
        client(url, timeout=7.5) as api,
    ):  # reads, never writes
        started = trio.current_time()
        with pytest.raises(TransportError, match=r"timed out: .*ReadTimeout"):
            await api.get("/api/x")
        assert trio.current_time() - started == pytest.approx(7.5)


@pytest.fixture(scope="module")
def authority() -> trustme.CA:
    return trustme.CA()


def server_context(authority: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(context)
    return context


async def test_tls_certificates_are_verified_by_default(authority: trustme.CA) -> None:
    async with (
        serving(lambda n: (answer(b"[1]"), False), server_context(authority)) as (url, _),
        client(url) as api,
    ):
        with pytest.raises(CertificateError) as caught:
            await api.get("/api/x")
    message = str(caught.value)
    assert "TLS certificate of 127.0.0.1 cannot be verified (" in message
    assert "CERTIFICATE_VERIFY_FAILED" in message and "--ca-bundle PATH" in message


async def test_ca_bundle_adds_trust_anchors(authority: trustme.CA, tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(bundle))
    async with (
        serving(lambda n: (answer(b"[1]"), False), server_context(authority)) as (url, _),
        open_client(url, workers=1, timeout=5, ca_bundle=bundle) as api,
    ):
        assert (await api.get("/api/x")).content == b"[1]"
    with pytest.raises(UsageError, match=r"--ca-bundle .*: not a readable PEM file"):
        open_client(url, workers=1, timeout=5, ca_bundle=tmp_path / "missing.pem")


async def test_a_certificate_error_stops_a_backfill_with_one_line(
    authority: trustme.CA, tmp_path: Path
) -> None:
    async with serving(lambda n: (answer(b"[1]"), False), server_context(authority)) as (url, s):
        db = tmp_path / "tls.db"
        result = await run_ntx_async("backfill", "--api", url, "--db", str(db), "--companies")
        requests = s.connections
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "the TLS certificate of 127.0.0.1 cannot be verified" in lines[0]
    assert requests == 2  # the request, and a look at the certificate for its AIA address:
    # not retried as a transient fault


async def test_tls_trusts_the_authorities_named_by_ssl_cert_file(
    authority: trustme.CA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(bundle))
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    async with (
        serving(lambda n: (answer(b"[1]"), False), server_context(authority)) as (url, s),
        client(url) as api,
    ):
        for _ in range(3):
            assert (await api.get("/api/x")).content == b"[1]"
    assert s.connections == 1


async def test_insecure_skips_verification(authority: trustme.CA) -> None:
    async with (
        serving(lambda n: (answer(b"[1]"), False), server_context(authority)) as (url, _),
        client(url, verify=False) as api,
    ):
        assert (await api.get("/api/x")).content == b"[1]"


async def test_a_proxy_named_by_the_environment_carries_the_requests(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    async with serving(lambda n: (answer(b"[1]"), False)) as (proxy, server):
        monkeypatch.setenv("HTTP_PROXY", proxy)
        async with client("http://exchange.invalid/base") as api:
            assert (await api.get("/api/x", {"page": 2})).content == b"[1]"
    assert server.targets == ["http://exchange.invalid/base/api/x?page=2"]


async def test_a_proxy_is_not_used_for_hosts_named_by_no_proxy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with (
        serving(lambda n: (answer(b"[2]"), False)) as (url, server),
        serving(lambda n: (answer(b"[1]"), False)) as (proxy, proxied),
    ):
        monkeypatch.setenv("HTTP_PROXY", proxy)
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        async with client(url) as api:
            assert (await api.get("/api/x")).content == b"[2]"
    assert (server.requests, proxied.requests) == (1, 0)


def test_site_headers_look_like_the_sites_own_pages_and_give_way_to_the_users() -> None:
    headers = site_headers("https://www.nepalstock.com.np/", None, {"x-extra": "1"})
    assert headers["user-agent"] == BROWSER_USER_AGENT
    assert headers["referer"] == "https://www.nepalstock.com.np/"
    assert headers["origin"] == "https://www.nepalstock.com.np"
    assert headers["x-extra"] == "1"
    replaced = site_headers(
        "http://127.0.0.1:8123/api", "mine/1", {"Referer": "https://a.example/"}
    )
    assert replaced["user-agent"] == "mine/1"
    assert replaced["referer"] == "https://a.example/"
    assert replaced["origin"] == "http://127.0.0.1:8123"


async def test_backfill_sends_the_headers_of_flags_and_config(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('user_agent = "ntx-test/1"\nheaders = { "X-Team" = "config" }\n')
    env = {"NTX_CONFIG": str(config)}
    args = ["backfill", "--companies", "--db", str(tmp_path / "h.db")]
    async with serving(lambda n: (answer(b"{}", status="404 Not Found"), False)) as (url, server):
        from_config = await run_ntx_async(*args, "--api", url, env=env)
        first = len(server.heads)
        from_flags = await run_ntx_async(
            *args, "--api", url, "--user-agent", "flag/2", "-H", "X-Team: flag", env=env
        )
    assert from_config.returncode == from_flags.returncode == 1, from_flags.stderr
    head = server.heads[0].decode().lower()
    assert "user-agent: ntx-test/1" in head
    assert "x-team: config" in head
    assert f"origin: {url}" in head
    assert f"referer: {url}/" in head
    head = server.heads[first].decode().lower()
    assert "user-agent: flag/2" in head
    assert "x-team: flag" in head  # a flag's list replaces the config's


async def test_a_refused_connection_is_a_drop_and_an_unknown_name_is_not() -> None:
    # a server that refuses or closes is congested; a name that does not resolve says
    # nothing of any server's load (".invalid" never resolves)
    with pytest.raises(ConnectionDropped, match=re.escape("cannot connect to http://127.0.0.1:1/")):
        async with client("http://127.0.0.1:1") as api:
            await api.get("/api/x")
    with pytest.raises(TransportError) as caught:
        async with client("http://exchange.invalid") as api:
            await api.get("/api/x")
    assert not isinstance(caught.value, ConnectionDropped)
    assert "cannot connect to http://exchange.invalid/api/x" in str(caught.value)
