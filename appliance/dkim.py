"""DKIM keys on the appliance: making one, the DNS record to publish, and whether it is published.

A key is a PKCS#8 PEM file under /etc/postern/dkim, `<domain>.<selector>.key`, written as the
relay's TLS key is (root:postern 0640: the relay reads it, no other user does). RSA keys are
2048 bits (what verifiers expect today); Ed25519 keys (RFC 8463) are shorter, but not every
verifier knows them yet, so publish one beside an RSA key rather than instead of it.
"""

from __future__ import annotations

import base64
import time
from pathlib import Path

import dns.asyncresolver
import dns.exception
import dns.resolver
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from relay.config import check_domain, check_selector

from .certificates import CertificateError, InputError, write_key

DEFAULT_DIRECTORY = Path("/etc/postern/dkim")
ALGORITHMS = ("rsa", "ed25519")


def default_selector(now: float | None = None) -> str:
    """sYYYYMM: a new selector each month, so that a new key never needs an old one's name."""
    return time.strftime("s%Y%m", time.gmtime(now))


def key_path(directory: Path, domain: str, selector: str) -> Path:
    return directory / f"{domain}.{selector}.key"


def _checked(domain: str, selector: str) -> tuple[str, str]:
    try:
        domain = check_domain(domain)
    except ValueError as error:
        raise InputError(str(error), "domain") from None
    try:
        return domain, check_selector(selector)
    except ValueError as error:
        raise InputError(str(error), "selector") from None


def create_key(directory: Path, domain: str, selector: str, algorithm: str = "rsa",
               root: Path | str = "/") -> tuple[Path, list[str]]:
    """A new key for `domain` and `selector`; refuses to replace one (a published key would stop verifying)."""
    domain, selector = _checked(domain, selector)
    if algorithm not in ALGORITHMS:
        raise InputError(f"{algorithm!r} is not one of {', '.join(ALGORITHMS)}", "algorithm")
    path = key_path(directory, domain, selector)
    if path.exists():
        raise CertificateError(f"{path} exists: choose another selector (--selector) for a new key; "
                               "the old one stays valid while its DNS record is published")
    key = rsa.generate_private_key(65537, 2048) if algorithm == "rsa" else ed25519.Ed25519PrivateKey.generate()
    path.parent.mkdir(parents=True, exist_ok=True)
    notes = write_key(path, key, root)
    return path, notes


def record_value(key_file: Path) -> str:
    """The TXT record's value for the key in `key_file`: 'v=DKIM1; k=rsa; p=MIIB...'."""
    try:
        key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    except (ValueError, TypeError):
        raise CertificateError(f"{key_file}: not a PEM private key") from None
    if isinstance(key, rsa.RSAPrivateKey):
        der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        return f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}"
    if isinstance(key, ed25519.Ed25519PrivateKey):
        raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return f"v=DKIM1; k=ed25519; p={base64.b64encode(raw).decode()}"
    raise CertificateError(f"{key_file}: neither an RSA nor an Ed25519 key")


def dns_record(key_file: Path, domain: str, selector: str) -> tuple[str, str, str]:
    """(name, value, zone-file line): the record to publish, the zone-file form in strings of 255 octets."""
    name = f"{selector}._domainkey.{domain}"
    value = record_value(key_file)
    strings = " ".join(f'"{value[i:i + 255]}"' for i in range(0, len(value), 255))
    return name, value, f"{name}. IN TXT ( {strings} )"


def _tags(text: str) -> dict[str, str]:
    tags = {}
    for part in text.split(";"):
        key, sep, value = part.partition("=")
        if sep:
            tags[key.strip()] = "".join(value.split())
    return tags


async def check_published(resolver: dns.asyncresolver.Resolver, key_file: Path, domain: str,
                          selector: str) -> tuple[bool, str]:
    """Is the key's record published in DNS? (True, why) or (False, what to do)."""
    name, value, _ = dns_record(key_file, domain, selector)
    try:
        answer = await resolver.resolve(name, "TXT", search=False)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return False, f"{name}: not published: add the TXT record `postern-appliance dkim show {domain}` prints"
    except dns.exception.Timeout:
        return False, f"{name}: no answer from DNS within {resolver.lifetime:g} s: try again"
    except dns.resolver.NoNameservers as error:
        return False, f"{name}: no answer from DNS ({error}): try again"
    found = ["".join(part.decode("ascii", "replace") for part in record.strings) for record in answer]
    wanted = _tags(value)
    for text in found:
        tags = _tags(text)
        if "p" not in tags:
            return False, f"{name}: record malformed (no p= tag): {text[:80]}"
        if tags["p"] == wanted["p"] and tags.get("k", "rsa") == wanted["k"]:
            return True, f"{name}: published and matches the key"
    return False, f"{name}: published, but for another key: publish the record `postern-appliance dkim show {domain}` prints"
