"""A server that sends only its own certificate (as the exchange does): ntx completes the
chain from the certificate's AIA address and verifies it against the roots, all on
127.0.0.1. Certificates are made here with `cryptography`: a root, an intermediate, a leaf."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import AuthorityInformationAccessOID, NameOID

from ntx.errors import CertificateError
from ntx.net.client import open_client
from tests.test_net import answer, serving

NOW = dt.datetime.now(dt.UTC)


@dataclass
class Authority:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _issue(
    subject: str,
    issuer: Authority | None,
    *,
    ca: bool,
    aia: str | None = None,
) -> Authority:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer.cert.subject if issuer else _name(subject))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
    )
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()), False
        )
    if ca:
        usage = x509.KeyUsage(False, False, False, False, False, True, True, False, False)
        builder = builder.add_extension(usage, critical=True)
    else:
        san = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
        builder = builder.add_extension(san, critical=False)
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), False
        )
    if aia is not None:
        access = x509.AccessDescription(
            AuthorityInformationAccessOID.CA_ISSUERS, x509.UniformResourceIdentifier(aia)
        )
        builder = builder.add_extension(x509.AuthorityInformationAccess([access]), False)
    signer = issuer.key if issuer else key
    return Authority(key, builder.sign(signer, hashes.SHA256()))


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass
class Chain:
    roots: Path  # the root alone: what the client trusts
    intermediate: bytes  # DER, as an AIA address serves it
    leaf_only: ssl.SSLContext  # the server's context: its certificate, no intermediate


def make_chain(folder: Path, aia_url: str) -> Chain:
    root = _issue("ntx test root", None, ca=True)
    intermediate = _issue("ntx test intermediate", root, ca=True)
    leaf = _issue("127.0.0.1", intermediate, ca=False, aia=aia_url)
    roots = folder / "roots.pem"
    roots.write_bytes(_pem(root.cert))
    cert_file, key_file = folder / "leaf.pem", folder / "leaf.key"
    cert_file.write_bytes(_pem(leaf.cert))
    key_file.write_bytes(
        leaf.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    return Chain(roots, intermediate.cert.public_bytes(serialization.Encoding.DER), context)


async def test_an_incomplete_chain_is_completed_by_aia_and_verified(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with serving(lambda n: (b"", True)) as (aia_base, aia):
        chain = make_chain(tmp_path, f"{aia_base}/intermediate.der")
        aia.reply = lambda n: (answer(chain.intermediate), False)
        monkeypatch.setenv("SSL_CERT_FILE", str(chain.roots))
        cache = tmp_path / "chains"
        async with serving(lambda n: (answer(b"[1]"), False), chain.leaf_only) as (url, api):
            async with open_client(url, workers=2, timeout=5, chain_cache=cache) as client:
                assert (await client.get("/api/x")).content == b"[1]"
                assert (await client.get("/api/x")).content == b"[1]"
                assert client.chains is not None and client.chains.completed == {"127.0.0.1": 1}
            assert aia.targets == ["/intermediate.der"]
            assert len(list(cache.iterdir())) == 1
            # a later run takes the intermediate from the cache: no download, no failed try
            connections = api.connections
            async with open_client(url, workers=1, timeout=5, chain_cache=cache) as client:
                assert (await client.get("/api/x")).content == b"[1]"
                assert client.chains is not None and client.chains.completed == {}
            assert aia.targets == ["/intermediate.der"]
            assert api.connections == connections + 1


async def test_without_the_intermediate_the_certificate_error_is_one_clear_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with serving(lambda n: (answer(b"gone", status="404 Not Found"), False)) as (base, _):
        chain = make_chain(tmp_path, f"{base}/intermediate.der")
        monkeypatch.setenv("SSL_CERT_FILE", str(chain.roots))
        async with (
            serving(lambda n: (answer(b"[1]"), False), chain.leaf_only) as (url, _),
            open_client(url, workers=1, timeout=5) as client,
        ):
            with pytest.raises(CertificateError) as caught:
                await client.get("/api/x")
            assert client.chains is not None and client.chains.completed == {"127.0.0.1": 0}
    message = str(caught.value)
    assert "TLS certificate of 127.0.0.1 cannot be verified" in message
    assert "unable to get local issuer certificate" in message and "--ca-bundle" in message


async def test_ca_bundle_with_the_intermediate_needs_no_chasing(tmp_path: Path) -> None:
    async with serving(lambda n: (b"", True)) as (base, aia):
        chain = make_chain(tmp_path, f"{base}/intermediate.der")
        bundle = tmp_path / "bundle.pem"
        der = x509.load_der_x509_certificate(chain.intermediate)
        bundle.write_bytes(chain.roots.read_bytes() + _pem(der))
        async with (
            serving(lambda n: (answer(b"[1]"), False), chain.leaf_only) as (url, _),
            open_client(url, workers=1, timeout=5, ca_bundle=bundle) as client,
        ):
            assert (await client.get("/api/x")).content == b"[1]"
        assert aia.targets == []
