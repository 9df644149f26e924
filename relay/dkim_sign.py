"""DKIM signatures on outbound mail (RFC 6376; Ed25519, RFC 8463), made with dkimpy.

Mail from a trusted client (`my_networks`, the Microsoft 365 tenant) whose `From:` domain
has a key in `authentication.dkim_keys` is signed when it is received, after every header
Postern adds (`Received:`, the loop marker), so the signature sits on top. As OpenDKIM
does by default: `simple/simple` canonicalization, the header fields RFC 6376 5.4.1
recommends (those present), and `From` signed once more than it occurs (oversigning, the
Debian package's default), so that a second `From:` added later breaks the signature.
Mail from other domains passes unsigned.

Keys are PKCS#8 PEM files (RSA, at least 1024 bits; or Ed25519), readable by root and the
relay only; `postern-appliance dkim new` makes them. They are loaded with the configuration,
so a key that cannot be used refuses the configuration with the field and the fix.
"""

from __future__ import annotations

import base64
import email.utils
import logging
import os
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from . import headers
from .config import ConfigError, MtaConfig

log = logging.getLogger("postern/dkim")

# RFC 6376 5.4.1's list, as OpenDKIM signs by default (only those present are signed).
SIGNED_HEADERS = (
    b"from", b"sender", b"reply-to", b"subject", b"date", b"message-id", b"to", b"cc", b"mime-version",
    b"content-type", b"content-transfer-encoding", b"content-id", b"content-description", b"resent-date",
    b"resent-from", b"resent-sender", b"resent-to", b"resent-cc", b"resent-message-id", b"in-reply-to",
    b"references", b"list-id", b"list-help", b"list-unsubscribe", b"list-subscribe", b"list-post",
    b"list-owner", b"list-archive",
)
CANONICALIZATION = (b"simple", b"simple")  # OpenDKIM's default


@dataclass(frozen=True)
class SigningKey:
    """A loaded key: `private_key` in the form dkimpy takes (PEM for RSA; the base64 seed for Ed25519)."""

    domain: str
    selector: str
    algorithm: str  # rsa-sha256 | ed25519-sha256
    private_key: bytes = b""


def load_key(domain: str, selector: str, key_file: str) -> SigningKey:
    """The key in `key_file`; ValueError with a sentence naming the file and the fix."""
    fix = f"make one with: postern-appliance dkim new {domain} --selector {selector}"
    try:
        info = os.stat(key_file)
        data = open(key_file, "rb").read(64 * 1024)
    except OSError as error:
        raise ValueError(f"cannot read {key_file}: {error.strerror or error}: {fix}") from None
    if info.st_mode & stat.S_IROTH:
        raise ValueError(f"{key_file} is readable by every user: chown root:postern {key_file} && "
                         f"chmod 640 {key_file}")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise ValueError(f"{key_file} is not a PEM private key: {fix}") from None
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < 1024:
            raise ValueError(f"{key_file} is a {key.key_size}-bit RSA key; verifiers ignore keys under 1024 bits: {fix}")
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
        return SigningKey(domain, selector, "rsa-sha256", pem)
    if isinstance(key, ed25519.Ed25519PrivateKey):
        seed = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                 serialization.NoEncryption())
        return SigningKey(domain, selector, "ed25519-sha256", base64.b64encode(seed))
    raise ValueError(f"{key_file} is neither an RSA nor an Ed25519 key: {fix}")


def load_keys(config: MtaConfig) -> dict[str, SigningKey]:
    """Every key of `authentication.dkim_keys`, by domain; ConfigError naming each one that cannot be used."""
    keys, problems = {}, []
    for domain, entry in config.authentication.dkim_keys.items():
        try:
            keys[domain] = load_key(domain, entry.selector, entry.key_file)
        except ValueError as error:
            problems.append(f"mta.authentication.dkim_keys.{domain}.key_file: {error}")
    auth = config.authentication
    sealer = keys.get(auth.arc_domain)
    if auth.arc_seal and sealer is not None and sealer.algorithm != "rsa-sha256":
        problems.append(f"mta.authentication.arc_domain: the key of {sealer.domain} is Ed25519, and ARC seals are "
                        "RSA only (RFC 8617): name a domain with an RSA key, or set arc_seal: false")
    if problems:
        raise ConfigError(problems)
    return keys


def sealing_key(config: MtaConfig, keys: Mapping[str, SigningKey]) -> SigningKey | None:
    """The key that seals ARC: `arc_domain`'s, else the first RSA key (seals are RSA only, RFC 8617);
    None when sealing is off or there is no such key."""
    auth = config.authentication
    if not auth.arc_seal:
        return None
    if auth.arc_domain:
        return keys.get(auth.arc_domain)
    return next((key for key in keys.values() if key.algorithm == "rsa-sha256"), None)


def from_domain(header_section: bytes) -> str | None:
    """The domain of the one `From:` address; None when there is none, or several."""
    values = headers.values(header_section, "From")
    if len(values) != 1:
        return None
    addresses = [address for _, address in email.utils.getaddresses([values[0]]) if address]
    if len(addresses) != 1:  # "a@example.com, b@example.net": several authors, none of them ours alone
        return None
    local, at, domain = addresses[0].strip().rpartition("@")
    domain = domain.strip().rstrip(".").lower()
    return domain if at and local and domain and " " not in domain and "," not in domain else None


def sign(message: bytes, key: SigningKey, now: int | None = None) -> bytes:
    """The DKIM-Signature header (CRLF-terminated, folded) to put on top of `message`.

    Linear in the message's size: one pass over the body for its hash."""
    present = {name.lower() for name in _field_names(headers.section(message))}
    include = [name for name in SIGNED_HEADERS if name in present] + [b"from"]  # From once more: oversigned
    signature = dkim.sign(message, key.selector.encode(), key.domain.encode(), key.private_key,
                          canonicalize=CANONICALIZATION, signature_algorithm=key.algorithm.encode(),
                          include_headers=include, linesep=b"\r\n")
    return signature


def signed(message: bytes, keys: Mapping[str, SigningKey], header_section: bytes, queue_id: str = "") -> bytes:
    """`message` with a signature on top when its From: domain has a key, else as it is."""
    domain = from_domain(header_section)
    key = keys.get(domain) if domain else None
    if key is None:
        return message
    signature = sign(message, key)
    log.info("%s: DKIM-Signature field added (s=%s, d=%s)", queue_id, key.selector, key.domain)
    return signature + message


def _field_names(section: bytes) -> Sequence[bytes]:
    return [line.split(b":", 1)[0].strip() for line in section.split(b"\r\n")
            if line and line[:1] not in (b" ", b"\t") and b":" in line]
