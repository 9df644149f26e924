"""DANE for outbound SMTP (RFC 7672, RFC 7671): TLSA lookup and certificate matching.

A mail host publishes TLSA records at _PORT._tcp.HOST in a DNSSEC-signed zone. When
the lookup is secure and finds usable records, the SMTP client must use STARTTLS and
the server's certificate must match one of them; otherwise the message is not sent
to that host. Only two certificate usages make sense for SMTP (RFC 7672 3.1):

- DANE-EE (3): the records pin the server certificate itself, or its public key.
  Names and dates are not checked: the DNS vouches for the key.
- DANE-TA (2): the records pin a certificate the server sends in its chain (a trust
  anchor, typically the domain's own CA). The server certificate must chain to it,
  be within its validity dates, and carry the MX host name or the next-hop domain.

PKIX-TA (0) and PKIX-EE (1) are "unusable" for SMTP: there is no agreed set of
public CAs for mail, so the client treats such records as absent, apart from
insisting on TLS when all the records found are unusable.

The lookup relies on the resolver's AD bit: the resolver must be a local validating
one, and the caller sets the flags that ask for it.
"""

from __future__ import annotations

import datetime
import hashlib
import ssl
from collections.abc import Sequence
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.flags
import dns.message
import dns.resolver
from cryptography import x509
from cryptography.x509 import verification
from cryptography.x509.oid import NameOID

try:
    from _ssl import ENCODING_DER as _ENCODING_DER
except ImportError:  # every CPython has it; the value it has there
    _ENCODING_DER = 2

USABLE_USAGES = (2, 3)  # DANE-TA, DANE-EE; PKIX-TA(0) / PKIX-EE(1) are "unusable" for SMTP (RFC 7672 3.1.3)
USABLE_SELECTORS = (0, 1)  # the whole certificate, its SubjectPublicKeyInfo
USABLE_MATCHING_TYPES = (0, 1, 2)  # exact, SHA-256, SHA-512
_DIGESTS = {1: hashlib.sha256, 2: hashlib.sha512}
_DIGEST_SIZES = {1: 32, 2: 64}


@dataclass(frozen=True)
class Tlsa:
    """One TLSA record: certificate usage, selector, matching type and the data to compare."""

    usage: int
    selector: int
    mtype: int
    data: bytes

    def __str__(self) -> str:
        return f"{self.usage} {self.selector} {self.mtype} {self.data.hex()}"

    @property
    def malformed(self) -> bool:
        """A digest of the wrong length, or no data at all: it can never match anything."""
        size = _DIGEST_SIZES.get(self.mtype)
        return not self.data or (size is not None and len(self.data) != size)


def short(record: Tlsa, digits: int = 16) -> str:
    """The record as dig prints it, with the data cut to `digits` hex digits, for log lines."""
    text = record.data.hex()
    if len(text) > digits:
        text = text[:digits] + "..."
    return f"{record.usage} {record.selector} {record.mtype} {text}"


@dataclass(frozen=True)
class TlsaLookup:
    """What the TLSA lookup found for one host and port."""

    records: tuple[Tlsa, ...]  # the usable ones (usage 2/3, selector 0/1, mtype 0/1/2)
    unusable: int  # records present but unusable
    secure: bool  # the answer (or the denial) carried the AD bit

    @property
    def usable(self) -> bool:
        """DANE applies: the certificate must match one of `records` (RFC 7672 2.2)."""
        return self.secure and bool(self.records)

    @property
    def all_unusable(self) -> bool:
        """Records exist but none is usable: TLS is still mandatory, without authentication
        (RFC 7672 2.2: a downgrade to plain text is what an attacker would want)."""
        return self.secure and not self.records and self.unusable > 0


class DnssecFailure(Exception):
    """The TLSA lookup failed (SERVFAIL, timeout) for a host whose addresses were DNSSEC-secure:
    RFC 7672 2.2: do not deliver to that host this time (defer). .text says why."""

    def __init__(self, text: str):
        super().__init__(text)
        self.text = text


def _authentic(response: dns.message.Message | None) -> bool:
    return response is not None and bool(response.flags & dns.flags.AD)


async def lookup(resolver: dns.asyncresolver.Resolver, host: str, port: int) -> TlsaLookup:
    """The TLSA records at _PORT._tcp.HOST, sorted into usable and unusable.

    No records (NXDOMAIN or an empty answer) gives an empty TlsaLookup whose `secure`
    says whether the denial was authenticated. A lookup that fails (SERVFAIL, which a
    validating resolver also answers for a bogus signature; no answer in time) raises
    DnssecFailure: for a host with DNSSEC-secure addresses, that is not "no DANE".
    """
    qname = f"_{port}._tcp.{host.rstrip('.')}"
    try:
        answer = await resolver.resolve(qname, "TLSA", search=False, raise_on_no_answer=False)
    except dns.resolver.NXDOMAIN as denial:
        responses = list(denial.responses().values())
        return TlsaLookup((), 0, secure=bool(responses) and all(_authentic(r) for r in responses))
    except dns.exception.Timeout as error:
        raise DnssecFailure(f"TLSA lookup for {qname} timed out: {error}") from error
    except dns.resolver.NoNameservers as error:
        raise DnssecFailure(f"TLSA lookup for {qname} failed (SERVFAIL or no usable server): {error}") from error
    except dns.exception.DNSException as error:
        raise DnssecFailure(f"TLSA lookup for {qname} failed: {error}") from error
    secure = _authentic(answer.response)
    records, unusable = [], 0
    for rdata in answer.rrset or ():
        record = Tlsa(rdata.usage, rdata.selector, rdata.mtype, bytes(rdata.cert))
        if (record.usage in USABLE_USAGES and record.selector in USABLE_SELECTORS
                and record.mtype in USABLE_MATCHING_TYPES):
            records.append(record)
        else:
            unusable += 1
    return TlsaLookup(tuple(records), unusable, secure)


@dataclass(frozen=True)
class DaneResult:
    ok: bool
    detail: str  # what matched, or a sentence an admin understands naming what did not
    result_type: str = ""  # failure only, RFC 8460 result type


# --- Matching a record against a certificate ---------------------------------------------------

def _der_item(der: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """The DER element at `pos`: its tag, where its content starts and where it ends."""
    if pos + 2 > end:
        raise ValueError("truncated DER")
    tag, length = der[pos], der[pos + 1]
    pos += 2
    if length & 0x80:
        count = length & 0x7F
        if not 1 <= count <= 4 or pos + count > end:
            raise ValueError("bad DER length")
        length = int.from_bytes(der[pos:pos + count], "big")
        pos += count
    if pos + length > end:
        raise ValueError("DER element runs past its container")
    return tag, pos, pos + length


def spki(der: bytes) -> bytes:
    """The SubjectPublicKeyInfo of a DER certificate, byte for byte as the certificate carries it.

    Taken from the encoding rather than re-encoded from the parsed key, so it matches
    what the TLSA record's publisher hashed whatever the key type or point format.
    """
    _, body, body_end = _der_item(der, 0, len(der))  # Certificate
    _, pos, tbs_end = _der_item(der, body, body_end)  # tbsCertificate
    tag, _, end = _der_item(der, pos, tbs_end)
    if tag == 0xA0:  # [0] version
        pos = end
    for _ in range(5):  # serialNumber, signature, issuer, validity, subject
        _, _, pos = _der_item(der, pos, tbs_end)
    tag, _, end = _der_item(der, pos, tbs_end)
    if tag != 0x30:
        raise ValueError("no SubjectPublicKeyInfo where expected")
    return der[pos:end]


def matches(record: Tlsa, der: bytes) -> bool:
    """Whether the record matches this certificate (DER). Malformed records match nothing."""
    if record.malformed or record.selector not in USABLE_SELECTORS or record.mtype not in USABLE_MATCHING_TYPES:
        return False
    try:
        content = der if record.selector == 0 else spki(der)
    except ValueError:
        return False
    if record.mtype == 0:
        return content == record.data
    return _DIGESTS[record.mtype](content).digest() == record.data


# --- Names (RFC 7672 3.2.3) ---------------------------------------------------------------------

def certificate_names(certificate: x509.Certificate) -> list[str]:
    """The DNS names of the certificate's subjectAltName; the subject CN only when it has none."""
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = san.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        names = []
    except ValueError:  # a malformed extension: the certificate names nothing we can trust
        return []
    if names:
        return names
    try:
        return [str(attribute.value) for attribute in certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    except ValueError:
        return []


def name_matches(pattern: str, name: str) -> bool:
    """A certificate name against a reference name. A wildcard is the whole left-most label and
    stands for exactly one label, with at least two labels after it ("*.example.com")."""
    pattern, name = pattern.lower().rstrip("."), name.lower().rstrip(".")
    if not pattern or not name:
        return False
    if pattern == name:
        return True
    if not pattern.startswith("*."):
        return False
    suffix = pattern[2:]
    label, dot, rest = name.partition(".")
    return bool(label) and bool(dot) and rest == suffix and "*" not in suffix and "." in suffix


# --- Verification --------------------------------------------------------------------------------

def _now(now: datetime.datetime | None) -> datetime.datetime:
    now = now or datetime.datetime.now(datetime.timezone.utc)
    return now if now.tzinfo else now.replace(tzinfo=datetime.timezone.utc)


def _subject(certificate: x509.Certificate) -> str:
    try:
        return certificate.subject.rfc4514_string() or "an empty subject"
    except ValueError:
        return "an unreadable subject"


def _parse(der: bytes) -> x509.Certificate | None:
    try:
        return x509.load_der_x509_certificate(der)
    except ValueError:
        return None


def _chain_policy(anchors: list[x509.Certificate], now: datetime.datetime) -> verification.ClientVerifier:
    """A verifier of signatures, validity dates and CA constraints up to the given trust anchors.

    The client verifier, because it checks no name: names follow RFC 7672's rules (CN
    when there is no DNS name in the subjectAltName), not the Web PKI's. Extensions
    are not held to the Web PKI profile either: a DANE-TA anchor is the domain's own
    CA, vouched for by the DNS, not a public one. Issuers must still be CAs.
    """
    ca_policy = verification.ExtensionPolicy.permit_all().require_present(
        x509.BasicConstraints, verification.Criticality.AGNOSTIC, None)
    return (verification.PolicyBuilder()
            .store(verification.Store(anchors))
            .time(now)
            .extension_policies(ca_policy=ca_policy, ee_policy=verification.ExtensionPolicy.permit_all())
            .build_client_verifier())


def _fail(detail: str, result_type: str) -> DaneResult:
    return DaneResult(False, detail, result_type)


def _verify_ta(records: list[Tlsa], chain: Sequence[bytes], names: Sequence[str],
               now: datetime.datetime) -> DaneResult | None:
    """DANE-TA: a certificate in the chain matches, and the server certificate chains to it and
    names one of `names`. None when no certificate in the chain matches any record."""
    anchors: list[tuple[int, Tlsa, x509.Certificate]] = []
    for depth, der in enumerate(chain):
        record = next((record for record in records if matches(record, der)), None)
        certificate = _parse(der) if record else None
        if record and certificate:
            anchors.append((depth, record, certificate))
    if not anchors:
        return None
    if not hasattr(verification.PolicyBuilder, "extension_policies"):  # cryptography < 45
        return _fail(f"TLSA {short(anchors[0][1])} matched the certificate at depth {anchors[0][0]}, but this "
                     "system's cryptography package is too old to verify the chain to it (45 or later needed)",
                     "validation-failure")
    leaf = _parse(chain[0])
    if leaf is None:
        return _fail("the server certificate cannot be parsed", "validation-failure")
    untrusted = [certificate for certificate in map(_parse, chain[1:]) if certificate is not None]
    try:
        verified = _chain_policy([certificate for _, _, certificate in anchors], now).verify(leaf, untrusted)
    except verification.VerificationError as error:
        depth, record, _ = anchors[0]
        below = [certificate for certificate in map(_parse, chain[:max(d for d, _, _ in anchors) + 1]) if certificate]
        expired = next((certificate for certificate in below if certificate.not_valid_after_utc < now), None)
        if expired is not None:
            whose = "the server certificate" if expired == leaf else f"the chain certificate {_subject(expired)}"
            return _fail(f"TLSA {short(record)} matched the certificate at depth {depth}, but {whose} "
                         f"expired on {expired.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC", "certificate-expired")
        return _fail(f"TLSA {short(record)} matched the certificate at depth {depth}, but the server "
                     f"certificate does not chain to it: {error}", "validation-failure")
    anchor = verified.chain[-1]
    depth, record, _ = next(found for found in anchors if found[2] == anchor)
    wanted = [name.lower().rstrip(".") for name in names if name]
    presented = certificate_names(leaf)
    name = next((name for name in wanted if any(name_matches(pattern, name) for pattern in presented)), None)
    if name is None:
        return _fail(f"TLSA {short(record)} matched the certificate at depth {depth}, but the server "
                     f"certificate is for {', '.join(presented) or 'no name'}, not "
                     f"{' or '.join(wanted) or 'any expected name'}", "certificate-host-mismatch")
    return DaneResult(True, f"TLSA {short(record)} matched the certificate at depth {depth}; the server "
                            f"certificate chains to it and names {name}")


def verify(records: Sequence[Tlsa], chain: Sequence[bytes], names: Sequence[str],
           now: datetime.datetime | None = None) -> DaneResult:
    """Whether the server's certificate chain (DER, leaf first, as sent) satisfies the TLSA records.

    Any one record matching is enough (RFC 7671 5). `names` are the reference
    identifiers for DANE-TA: the MX host name and the next-hop domain (RFC 7672 3.2.2).
    """
    now = _now(now)
    if not chain:
        return _fail("the server sent no certificate", "validation-failure")
    for record in records:
        if record.usage == 3 and matches(record, chain[0]):
            return DaneResult(True, f"TLSA {short(record)} matched the certificate at depth 0")
    ta_records = [record for record in records if record.usage == 2]
    ta_result = _verify_ta(ta_records, chain, names, now) if ta_records else None
    if ta_result is not None:
        return ta_result
    listed = ", ".join(short(record) for record in records) or "none"
    try:
        key_digest = hashlib.sha256(spki(chain[0])).hexdigest()
        own = f" (a DANE-EE record for its certificate would read 3 1 1 {key_digest})"
    except ValueError:
        own = ""
    sent = f"{len(chain)} certificate" + ("" if len(chain) == 1 else "s")
    detail = f"none of the TLSA records ({listed}) matches the {sent} the server sent{own}"
    if ta_records:
        detail += "; for DANE-TA (2) the server must send the trust anchor certificate in its chain"
    if any(record.malformed for record in records):
        malformed = ", ".join(short(record) for record in records if record.malformed)
        return _fail(f"{detail}; malformed: {malformed} (no data, or a digest of the wrong length)", "tlsa-invalid")
    return _fail(detail, "validation-failure")


# --- The chain the server sent -------------------------------------------------------------------

def peer_chain(ssl_object: ssl.SSLObject | ssl.SSLSocket) -> list[bytes]:
    """The certificates the server sent, DER, leaf first, unverified.

    Python 3.13 has get_unverified_chain() on SSLObject and SSLSocket; 3.11 and 3.12
    have it only on the underlying _ssl._SSLSocket, returning _ssl.Certificate objects.
    Failing both, the server certificate alone.
    """
    getter = getattr(ssl_object, "get_unverified_chain", None)
    if getter is None:
        getter = getattr(getattr(ssl_object, "_sslobj", None), "get_unverified_chain", None)
    chain = None
    if getter is not None:
        try:
            chain = getter()
        except (AttributeError, ValueError, ssl.SSLError):
            chain = None
    if chain:
        return [certificate if isinstance(certificate, bytes) else certificate.public_bytes(_ENCODING_DER)
                for certificate in chain]
    leaf = ssl_object.getpeercert(binary_form=True)
    return [leaf] if leaf else []
