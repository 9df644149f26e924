"""DANE for outbound SMTP: TLSA lookups against a real DNS server on loopback, and certificate
matching on chains taken from real TLS handshakes."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import dns.asyncresolver
import dns.flags
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from relay import dane
from relay.dane import DnssecFailure, Tlsa
from tests.support.certs import Authority, self_signed
from tests.support.dns_server import DnsServer

NOW = datetime.datetime.now(datetime.timezone.utc)
DAY = datetime.timedelta(days=1)


# --- DNS -----------------------------------------------------------------------------------------

SHA256_A = hashlib.sha256(b"a key").hexdigest()
SHA256_B = hashlib.sha256(b"another key").hexdigest()


@pytest.fixture
def dns_server():
    servers = []

    def start(records, **kwargs) -> DnsServer:
        server = DnsServer(records, **kwargs).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def resolver_for(server: DnsServer, lifetime: float = 5.0) -> dns.asyncresolver.Resolver:
    """A resolver asking for the AD bit, as the relay's is set up for DANE."""
    resolver = dns.asyncresolver.Resolver(configure=False)
    resolver.nameservers = [server.host]
    resolver.port = server.port
    resolver.flags = dns.flags.RD | dns.flags.AD
    resolver.lifetime = lifetime
    resolver.timeout = lifetime
    return resolver


async def test_secure_tlsa_records_are_found_and_usable(dns_server):
    server = dns_server({("_25._tcp.mx.example.org", "TLSA"): [f"3 1 1 {SHA256_A}", f"2 0 1 {SHA256_B}"]},
                        secure=("example.org",))
    found = await dane.lookup(resolver_for(server), "mx.example.org", 25)
    assert found.secure and found.usable and not found.all_unusable
    assert found.unusable == 0
    assert set(found.records) == {Tlsa(3, 1, 1, bytes.fromhex(SHA256_A)), Tlsa(2, 0, 1, bytes.fromhex(SHA256_B))}
    assert ("_25._tcp.mx.example.org", "TLSA") in server.queries
    assert str(Tlsa(3, 1, 1, bytes.fromhex(SHA256_A))) == f"3 1 1 {SHA256_A}"
    assert dane.short(Tlsa(3, 1, 1, bytes.fromhex(SHA256_A))) == f"3 1 1 {SHA256_A[:16]}..."


async def test_port_and_trailing_dot_make_the_query_name(dns_server):
    server = dns_server({("_587._tcp.mx.example.org", "TLSA"): [f"3 1 1 {SHA256_A}"]}, secure=("example.org",))
    found = await dane.lookup(resolver_for(server), "mx.example.org.", 587)
    assert found.usable
    assert server.queries == [("_587._tcp.mx.example.org", "TLSA")]


async def test_records_without_the_ad_bit_are_not_usable(dns_server):
    server = dns_server({("_25._tcp.mx.example.org", "TLSA"): [f"3 1 1 {SHA256_A}"]})
    found = await dane.lookup(resolver_for(server), "mx.example.org", 25)
    assert len(found.records) == 1
    assert not found.secure and not found.usable and not found.all_unusable


@pytest.mark.parametrize("secure", [True, False])
async def test_no_such_name_is_a_denial_secure_or_not(dns_server, secure):
    server = dns_server({("mx.example.org", "A"): ["127.0.0.1"]}, secure=("example.org",) if secure else ())
    found = await dane.lookup(resolver_for(server), "mx.example.org", 25)
    assert found == dane.TlsaLookup((), 0, secure=secure)
    assert not found.usable and not found.all_unusable


@pytest.mark.parametrize("secure", [True, False])
async def test_a_name_without_tlsa_is_a_denial_secure_or_not(dns_server, secure):
    # The name exists (it has a TXT record), so the TLSA query gets an empty NOERROR answer.
    server = dns_server({("_25._tcp.mx.example.org", "TXT"): ['"hello"']},
                        secure=("example.org",) if secure else ())
    found = await dane.lookup(resolver_for(server), "mx.example.org", 25)
    assert found == dane.TlsaLookup((), 0, secure=secure)


async def test_only_unusable_records(dns_server):
    server = dns_server({("_25._tcp.mx.example.org", "TLSA"): [
        f"0 0 1 {SHA256_A}", f"1 1 1 {SHA256_A}",  # PKIX-TA, PKIX-EE: not for SMTP
        f"3 2 1 {SHA256_A}", f"3 1 3 {SHA256_A}",  # unknown selector, unknown matching type
    ]}, secure=("example.org",))
    found = await dane.lookup(resolver_for(server), "mx.example.org", 25)
    assert found.records == () and found.unusable == 4
    assert found.all_unusable and not found.usable


async def test_usable_records_among_unusable_ones(dns_server):
    server = dns_server({("_25._tcp.mx.example.org", "TLSA"): [f"1 1 1 {SHA256_A}", f"3 1 1 {SHA256_B}"]},
                        secure=("example.org",))
    found = await dane.lookup(resolver_for(server), "mx.example.org", 25)
    assert found.records == (Tlsa(3, 1, 1, bytes.fromhex(SHA256_B)),) and found.unusable == 1
    assert found.usable and not found.all_unusable


async def test_servfail_is_a_dnssec_failure(dns_server):
    server = dns_server({("_25._tcp.mx.example.org", "TLSA"): [f"3 1 1 {SHA256_A}"]},
                        secure=("example.org",), servfail=("_25._tcp.mx.example.org",))
    with pytest.raises(DnssecFailure) as failure:
        await dane.lookup(resolver_for(server), "mx.example.org", 25)
    assert "_25._tcp.mx.example.org" in failure.value.text and "SERVFAIL" in failure.value.text


async def test_a_silent_server_is_a_dnssec_failure_within_the_lifetime(dns_server):
    server = dns_server({("_25._tcp.mx.example.org", "TLSA"): [f"3 1 1 {SHA256_A}"]},
                        secure=("example.org",), silent=("_25._tcp.mx.example.org",))
    started = time.monotonic()
    with pytest.raises(DnssecFailure) as failure:
        await dane.lookup(resolver_for(server, lifetime=0.5), "mx.example.org", 25)
    assert time.monotonic() - started < 3
    assert "timed out" in failure.value.text


# --- Certificates ----------------------------------------------------------------------------------

@dataclass
class Issued:
    cert: x509.Certificate
    key: object

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)


def make_cert(cn: str, issuer: Issued | None = None, ca: bool = False, names: tuple[str, ...] | None = None,
              not_before: datetime.datetime | None = None, not_after: datetime.datetime | None = None,
              key=None, signing_key=None, server_auth_only: bool = False) -> Issued:
    """A certificate for `cn`: self-signed without `issuer`; a CA with `ca`; DNS names `names`
    (default: the CN; () for none). `signing_key` forges one: the issuer's name, another key."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or NOW - datetime.timedelta(minutes=5))
        .not_valid_after(not_after or NOW + DAY)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                          encipher_only=False, decipher_only=False), critical=True)
    names = (cn,) if names is None else names
    if names and not ca:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
    if server_auth_only:
        builder = builder.add_extension(x509.ExtendedKeyUsage([x509.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    if issuer:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.cert.public_key()), critical=False)
    return Issued(builder.sign(signing_key or (issuer.key if issuer else key), hashes.SHA256()), key)


def record(cert: x509.Certificate, usage: int, selector: int, mtype: int) -> Tlsa:
    """The TLSA record for a certificate, computed independently of relay.dane."""
    if selector == 0:
        content = cert.public_bytes(serialization.Encoding.DER)
    else:
        content = cert.public_key().public_bytes(serialization.Encoding.DER,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo)
    data = {0: content, 1: hashlib.sha256(content).digest(), 2: hashlib.sha512(content).digest()}[mtype]
    return Tlsa(usage, selector, mtype, data)


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _write_chain(directory: Path, key, certs: list[x509.Certificate]) -> tuple[Path, Path]:
    index = len(list(directory.glob("served-*-chain.pem")))
    chain_path, key_path = directory / f"served-{index}-chain.pem", directory / f"served-{index}-key.pem"
    chain_path.write_bytes(b"".join(_pem(cert) for cert in certs))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return chain_path, key_path


def _client_context() -> ssl.SSLContext:
    """Like an opportunistic SMTP client: any certificate; DANE decides afterwards."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


async def served_chain(directory: Path, key, certs: list[x509.Certificate]) -> list[bytes]:
    """Serve `certs` (leaf first, with the leaf's key) over TLS on 127.0.0.1; return what
    peer_chain takes from the client's side of the handshake."""
    chain_path, key_path = _write_chain(directory, key, certs)
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(chain_path, key_path)

    async def handle(reader, writer):
        await reader.read()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_context)
    port = server.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=_client_context(),
                                                       server_hostname="mx.example.org")
        chain = dane.peer_chain(writer.get_extra_info("ssl_object"))
        writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await writer.wait_closed()
    finally:
        server.close()
        await server.wait_closed()
    return chain


@pytest.fixture
def pki():
    """A root CA, an intermediate under it, and a server certificate for mx.example.org under that."""
    root = make_cert("Example Root", ca=True)
    intermediate = make_cert("Example Intermediate", issuer=root, ca=True)
    leaf = make_cert("mx.example.org", issuer=intermediate)
    return root, intermediate, leaf


NAMES = ["mx.example.org", "example.org"]


async def test_peer_chain_is_what_the_server_sent_leaf_first(tmp_path, pki):
    root, intermediate, leaf = pki
    chain = await served_chain(tmp_path, leaf.key, [leaf.cert, intermediate.cert, root.cert])
    assert chain == [leaf.der, intermediate.der, root.der]


async def test_peer_chain_from_a_blocking_socket(tmp_path, pki):
    root, intermediate, leaf = pki
    chain_path, key_path = _write_chain(tmp_path, leaf.key, [leaf.cert, intermediate.cert])
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(chain_path, key_path)
    listener = socket.create_server(("127.0.0.1", 0))

    def serve():
        connection, _ = listener.accept()
        with contextlib.suppress(OSError), server_context.wrap_socket(connection, server_side=True) as tls:
            tls.recv(1)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    with socket.create_connection(listener.getsockname()) as plain:
        with _client_context().wrap_socket(plain, server_hostname="mx.example.org") as tls:
            assert dane.peer_chain(tls) == [leaf.der, intermediate.der]
            tls.sendall(b"x")
    thread.join(5)
    listener.close()


def test_spki_is_taken_from_the_encoding(pki):
    rsa_cert = make_cert("rsa.example.org", key=rsa.generate_private_key(public_exponent=65537, key_size=2048))
    for issued in (*pki, rsa_cert):
        assert dane.spki(issued.der) == issued.cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    for hostile in (b"", b"\x30", b"\x30\x84\xff\xff\xff\xff", pki[2].der[:40], b"\x30\x03\x30\x01\x00"):
        with pytest.raises(ValueError):
            dane.spki(hostile)
        assert not dane.matches(Tlsa(3, 1, 1, hashlib.sha256(b"").digest()), hostile)


# DANE-EE (3)

@pytest.mark.parametrize("selector, mtype", [(1, 1), (0, 2), (0, 0), (1, 0), (0, 1), (1, 2)])
async def test_dane_ee_matches_the_server_certificate(tmp_path, selector, mtype):
    authority = Authority(tmp_path)
    cert_path, key_path = authority.issue("mx.example.org")
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    key = serialization.load_pem_private_key(key_path.read_bytes(), None)
    chain = await served_chain(tmp_path, key, [cert])
    # DANE-EE checks no name: the names given do not appear in the certificate.
    result = dane.verify([record(cert, 3, selector, mtype)], chain, ["elsewhere.example"])
    assert result.ok, result.detail
    assert result.detail.startswith(f"TLSA 3 {selector} {mtype} ") and "at depth 0" in result.detail
    assert result.result_type == ""


async def test_dane_ee_mismatch_names_the_records_and_the_right_one(tmp_path, pki):
    _, _, leaf = pki
    other = make_cert("mx.example.org")
    chain = await served_chain(tmp_path, leaf.key, [leaf.cert])
    result = dane.verify([record(other.cert, 3, 1, 1)], chain, NAMES)
    assert not result.ok and result.result_type == "validation-failure"
    assert dane.short(record(other.cert, 3, 1, 1)) in result.detail
    assert str(record(leaf.cert, 3, 1, 1)) in result.detail  # what the admin should publish


async def test_dane_ee_only_pins_the_leaf_not_the_chain(tmp_path, pki):
    root, intermediate, leaf = pki
    chain = await served_chain(tmp_path, leaf.key, [leaf.cert, intermediate.cert, root.cert])
    result = dane.verify([record(root.cert, 3, 1, 1), record(intermediate.cert, 3, 0, 1)], chain, NAMES)
    assert not result.ok and result.result_type == "validation-failure"


async def test_dane_ee_ignores_expiry_and_names(tmp_path):
    expired = make_cert("old.example.net", not_before=NOW - 30 * DAY, not_after=NOW - 10 * DAY)
    chain = await served_chain(tmp_path, expired.key, [expired.cert])
    result = dane.verify([record(expired.cert, 3, 1, 1)], chain, NAMES)
    assert result.ok, result.detail


async def test_dane_ee_with_the_support_self_signed_certificate(tmp_path):
    cert_path, key_path = self_signed(tmp_path, "mx.example.org")
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    key = serialization.load_pem_private_key(key_path.read_bytes(), None)
    chain = await served_chain(tmp_path, key, [cert])
    assert dane.verify([record(cert, 3, 1, 2)], chain, NAMES).ok


# DANE-TA (2)

async def test_dane_ta_with_the_authority_sent_in_the_chain(tmp_path):
    authority = Authority(tmp_path)
    cert_path, key_path = authority.issue("mx.example.org")
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    key = serialization.load_pem_private_key(key_path.read_bytes(), None)
    chain = await served_chain(tmp_path, key, [cert, authority.cert])
    for ta in (record(authority.cert, 2, 0, 1), record(authority.cert, 2, 1, 1), record(authority.cert, 2, 1, 2)):
        result = dane.verify([ta], chain, NAMES)
        assert result.ok, result.detail
        assert result.detail.startswith(f"TLSA {dane.short(ta)} matched the certificate at depth 1")
        assert "mx.example.org" in result.detail


@pytest.mark.parametrize("anchor, depth", [(0, 2), (1, 1)])
async def test_dane_ta_at_the_root_or_at_an_intermediate(tmp_path, pki, anchor, depth):
    """The anchor need not be self-signed: an intermediate pinned by TLSA is trusted as it is."""
    chain = await served_chain(tmp_path, pki[2].key, [pki[2].cert, pki[1].cert, pki[0].cert])
    ta = record(pki[anchor].cert, 2, 1, 1)
    result = dane.verify([ta], chain, NAMES)
    assert result.ok, result.detail
    assert f"at depth {depth}" in result.detail


async def test_dane_ta_server_certificate_for_servers_only(tmp_path, pki):
    """As public CAs issue them: extended key usage serverAuth alone, an RSA key."""
    root, intermediate, _ = pki
    leaf = make_cert("mx.example.org", issuer=intermediate, server_auth_only=True,
                     key=rsa.generate_private_key(public_exponent=65537, key_size=2048))
    chain = await served_chain(tmp_path, leaf.key, [leaf.cert, intermediate.cert, root.cert])
    result = dane.verify([record(root.cert, 2, 1, 1)], chain, NAMES)
    assert result.ok, result.detail


async def test_dane_ta_names_the_next_hop_domain(tmp_path, pki):
    root, intermediate, _ = pki
    leaf = make_cert("example.org", issuer=intermediate)
    chain = await served_chain(tmp_path, leaf.key, [leaf.cert, intermediate.cert])
    result = dane.verify([record(intermediate.cert, 2, 0, 1)], chain, ["mx.example.org", "example.org."])
    assert result.ok and result.detail.endswith("names example.org")


async def test_dane_ta_certificate_for_another_name(tmp_path, pki):
    root, intermediate, _ = pki
    leaf = make_cert("mx.example.net", issuer=intermediate)
    chain = await served_chain(tmp_path, leaf.key, [leaf.cert, intermediate.cert, root.cert])
    result = dane.verify([record(root.cert, 2, 1, 1)], chain, NAMES)
    assert not result.ok and result.result_type == "certificate-host-mismatch"
    assert "mx.example.net" in result.detail and "mx.example.org or example.org" in result.detail


async def test_dane_ta_common_name_only_when_there_is_no_dns_name(tmp_path, pki):
    _, intermediate, _ = pki
    bare = make_cert("mx.example.org", issuer=intermediate, names=())
    chain = await served_chain(tmp_path, bare.key, [bare.cert, intermediate.cert])
    assert dane.verify([record(intermediate.cert, 2, 1, 1)], chain, NAMES).ok
    # With DNS names present the CN is not looked at.
    other = make_cert("mx.example.org", issuer=intermediate, names=("smtp.example.net",))
    chain = await served_chain(tmp_path, other.key, [other.cert, intermediate.cert])
    assert dane.verify([record(intermediate.cert, 2, 1, 1)], chain, NAMES).result_type == "certificate-host-mismatch"


@pytest.mark.parametrize("reference, ok", [
    ("mx.example.org", True),
    ("MX.Example.ORG.", True),
    ("example.org", False),  # the wildcard stands for exactly one label...
    ("a.mx.example.org", False),  # ...not two
])
async def test_dane_ta_wildcard_certificate(tmp_path, pki, reference, ok):
    _, intermediate, _ = pki
    leaf = make_cert("*.example.org", issuer=intermediate)
    chain = await served_chain(tmp_path, leaf.key, [leaf.cert, intermediate.cert])
    result = dane.verify([record(intermediate.cert, 2, 1, 1)], chain, [reference])
    assert result.ok is ok, result.detail
    if not ok:
        assert result.result_type == "certificate-host-mismatch" and "*.example.org" in result.detail


def test_wildcard_rules():
    assert dane.name_matches("*.example.org", "mx.example.org")
    assert not dane.name_matches("*.org", "example.org")  # too broad
    assert not dane.name_matches("mx*.example.org", "mx1.example.org")  # partial-label wildcards
    assert not dane.name_matches("*.*.example.org", "a.b.example.org")
    assert not dane.name_matches("*.example.org", ".example.org")
    assert not dane.name_matches("", "")


async def test_dane_ta_expired_server_certificate(tmp_path, pki):
    root, intermediate, _ = pki
    leaf = make_cert("mx.example.org", issuer=intermediate, not_before=NOW - 30 * DAY, not_after=NOW - DAY)
    chain = await served_chain(tmp_path, leaf.key, [leaf.cert, intermediate.cert, root.cert])
    result = dane.verify([record(root.cert, 2, 1, 1)], chain, NAMES)
    assert not result.ok and result.result_type == "certificate-expired"
    assert "server certificate expired on" in result.detail


async def test_dane_ta_expired_intermediate(tmp_path):
    root = make_cert("Example Root", ca=True)
    intermediate = make_cert("Example Intermediate", issuer=root, ca=True,
                             not_before=NOW - 30 * DAY, not_after=NOW - DAY)
    leaf = make_cert("mx.example.org", issuer=intermediate)
    chain = await served_chain(tmp_path, leaf.key, [leaf.cert, intermediate.cert, root.cert])
    result = dane.verify([record(root.cert, 2, 1, 1)], chain, NAMES)
    assert result.result_type == "certificate-expired" and "Example Intermediate" in result.detail


async def test_dane_ta_not_yet_valid_is_a_validation_failure(tmp_path, pki):
    root, intermediate, leaf = pki
    chain = await served_chain(tmp_path, leaf.key, [leaf.cert, intermediate.cert, root.cert])
    result = dane.verify([record(root.cert, 2, 1, 1)], chain, NAMES, now=NOW - DAY)
    assert not result.ok and result.result_type == "validation-failure"
    # and the `now` given is the one used: the same chain verifies later on
    assert dane.verify([record(root.cert, 2, 1, 1)], chain, NAMES, now=NOW + datetime.timedelta(hours=1)).ok


async def test_dane_ta_not_sent_by_the_server(tmp_path, pki):
    root, intermediate, leaf = pki
    chain = await served_chain(tmp_path, leaf.key, [leaf.cert, intermediate.cert])
    result = dane.verify([record(root.cert, 2, 1, 1)], chain, NAMES)
    assert not result.ok and result.result_type == "validation-failure"
    assert "trust anchor" in result.detail and "2 certificates" in result.detail


async def test_dane_ta_forged_server_certificate(tmp_path, pki):
    """The right issuer name and the real CA in the chain, but signed by someone else's key."""
    root, intermediate, _ = pki
    forged = make_cert("mx.example.org", issuer=intermediate, signing_key=ec.generate_private_key(ec.SECP256R1()))
    chain = await served_chain(tmp_path, forged.key, [forged.cert, intermediate.cert, root.cert])
    result = dane.verify([record(root.cert, 2, 1, 1)], chain, NAMES)
    assert not result.ok and result.result_type == "validation-failure"
    assert "does not chain" in result.detail


async def test_dane_ta_issuer_must_be_a_ca(tmp_path):
    """A certificate that is not a CA (basicConstraints cA false) cannot issue the server's."""
    not_ca = make_cert("Just A Server")
    leaf = make_cert("mx.example.org", issuer=not_ca)
    chain = await served_chain(tmp_path, leaf.key, [leaf.cert, not_ca.cert])
    result = dane.verify([record(not_ca.cert, 2, 0, 1)], chain, NAMES)
    assert not result.ok and result.result_type == "validation-failure"


async def test_any_matching_record_is_enough(tmp_path, pki):
    root, intermediate, leaf = pki
    chain = await served_chain(tmp_path, leaf.key, [leaf.cert, intermediate.cert, root.cert])
    stale = record(make_cert("old").cert, 3, 1, 1)
    malformed = Tlsa(3, 1, 1, b"\x01" * 31)
    assert dane.verify([stale, malformed, record(root.cert, 2, 1, 1)], chain, NAMES).ok
    assert dane.verify([record(root.cert, 2, 1, 1), stale, record(leaf.cert, 3, 1, 1)], chain, ["nope.example"]).ok


@pytest.mark.parametrize("bad", [
    Tlsa(3, 1, 1, b"\x00" * 31),  # a SHA-256 digest one byte short
    Tlsa(2, 0, 2, b"\x00" * 32),  # a SHA-256-sized digest in a SHA-512 record
    Tlsa(3, 0, 0, b""),
])
async def test_malformed_records_are_tlsa_invalid(tmp_path, pki, bad):
    _, _, leaf = pki
    chain = await served_chain(tmp_path, leaf.key, [leaf.cert])
    result = dane.verify([bad, record(make_cert("old").cert, 3, 1, 1)], chain, NAMES)
    assert not result.ok and result.result_type == "tlsa-invalid"
    assert "malformed" in result.detail and dane.short(bad) in result.detail


async def test_truncated_digest_of_the_right_certificate_does_not_match(tmp_path, pki):
    _, _, leaf = pki
    chain = await served_chain(tmp_path, leaf.key, [leaf.cert])
    right = record(leaf.cert, 3, 1, 1)
    assert not dane.verify([Tlsa(3, 1, 1, right.data[:-1])], chain, NAMES).ok
    assert not dane.verify([Tlsa(3, 1, 2, right.data)], chain, NAMES).ok  # SHA-256 data labelled SHA-512


def test_no_certificate_at_all():
    result = dane.verify([Tlsa(3, 1, 1, bytes(32))], [], NAMES)
    assert not result.ok and result.result_type == "validation-failure"


def test_garbage_in_the_chain_does_not_match_or_crash(pki):
    root, _, _ = pki
    result = dane.verify([record(root.cert, 2, 1, 1), Tlsa(3, 1, 1, bytes(32))], [b"\x30\x00", b"junk"], NAMES)
    assert not result.ok and result.result_type == "validation-failure"
