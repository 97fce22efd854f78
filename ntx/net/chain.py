"""Completing a server's incomplete TLS certificate chain, as browsers do, with verification on.

Some servers (the exchange's among them) send their certificate without the intermediate
that issued it, so a client that trusts only the roots cannot build the chain. The
certificate names where its issuer can be downloaded (its Authority Information Access
extension); `aia-chaser` follows those addresses and checks the chain it finds against the
roots. The intermediates it finds are added to the run's TLS context as authorities that
may link a chain, never as anchors: OpenSSL still verifies the whole chain up to a root, on
every connection. Found intermediates are kept per host in the cache folder, so a later run
needs no download.
"""

from __future__ import annotations

import hashlib
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from cryptography import x509

ISSUER_UNKNOWN = "unable to get local issuer certificate"  # OpenSSL's words for a gap


def links_only(context: ssl.SSLContext) -> None:
    """Make `context` verify every chain up to a root: the intermediates added to it link
    chains but do not end them (Python 3.13's default context would let them)."""
    partial = getattr(ssl, "VERIFY_X509_PARTIAL_CHAIN", 0)
    context.verify_flags &= ~partial


class ChainCompleter:
    """Completes the chains of one run's TLS `context`, once per host, with what `cache`
    keeps between runs. `roots` makes a context that holds the same roots (the usual ones
    and any `--ca-bundle`) but verifies nothing, to fetch a certificate whose chain is
    incomplete; it is called only then."""

    def __init__(
        self, context: ssl.SSLContext, roots: Callable[[], ssl.SSLContext], cache: Path | None
    ) -> None:
        self._context = context
        self._roots = roots
        self._cache = cache
        self._lock = trio.Lock()
        self.completed: dict[str, int] = {}  # host -> intermediates added

    def load_cached(self, host: str) -> int:
        """Add the intermediates found for `host` by an earlier run; how many there were."""
        path = self._path(host)
        if path is None or not path.is_file():
            return 0
        try:
            pem = path.read_text(encoding="ascii")
            self._context.load_verify_locations(cadata=pem)
        except (OSError, ValueError, ssl.SSLError):
            return 0  # a damaged cache: chase again if needed
        return pem.count("BEGIN CERTIFICATE")

    async def complete(self, host: str, port: int) -> bool:
        """Fetch the intermediates `host`'s certificate points to and add them; True if any
        were added now or before (the caller tries again), False if the chain cannot be
        completed. One host is chased once per run, however many workers ask."""
        async with self._lock:
            if host not in self.completed:
                intermediates = await trio.to_thread.run_sync(self._chase, host, port)
                if intermediates:
                    pem = "".join(_pem(cert) for cert in intermediates)
                    self._context.load_verify_locations(cadata=pem)
                    self._save(host, pem)
                self.completed[host] = len(intermediates)
            return self.completed[host] > 0

    def _chase(self, host: str, port: int) -> list[x509.Certificate]:
        """The verified chain's certificates between the leaf and the root (blocking)."""
        # imported here: only a server with an incomplete chain needs them (100 ms at start-up)
        from aia_chaser import AiaChaser
        from aia_chaser.exceptions import AiaChaserError

        try:
            chaser = AiaChaser(context=self._roots(), allow_private_ip=True)  # mirrors on a LAN
            chain = chaser.fetch_cert_chain_for_host(host, port)
        except (AiaChaserError, OSError, ValueError):
            return []
        return [cert for cert in chain[1:] if cert.subject != cert.issuer]

    def _path(self, host: str) -> Path | None:
        if self._cache is None:
            return None
        return self._cache / f"{hashlib.sha256(host.encode()).hexdigest()[:16]}.pem"

    def _save(self, host: str, pem: str) -> None:
        path = self._path(host)
        if path is None:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(pem, encoding="ascii")
        except OSError:
            return  # a cache that cannot be written is skipped


def _pem(cert: x509.Certificate) -> str:
    from cryptography.hazmat.primitives.serialization import Encoding

    return cert.public_bytes(Encoding.PEM).decode()
