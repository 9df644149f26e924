"""SPF, DKIM and DMARC results for mail from outside, in one Authentication-Results header (RFC 8601).

The checks are authheaders' (which uses pyspf for SPF, RFC 7208; dkimpy for DKIM, RFC 6376;
and its own DMARC, RFC 7489, with the public suffix list for organisational domains), fed
by the relay's own DNS servers: DKIM keys and DMARC records through `dnsfunc`, SPF's
lookups through pyspf's DNS hook. They run in a thread, bounded by CHECK_SECONDS: a sender
whose DNS does not answer cannot hold a session.

Our authserv-id is the hostname (or `authentication.authserv_id`); a header with our id
that arrives from outside is a forgery and is removed before ours is added (RFC 8601 5).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import authheaders
import dns.exception
import dns.resolver
import spf

from . import headers
from .config import MtaConfig
from .routing import configure

log = logging.getLogger("postern/auth")

CHECK_SECONDS = 20.0
LOOKUP_SECONDS = 5.0
_DMARC = re.compile(r"\bdmarc=(\w+)([^;]*)", re.I)  # "dmarc=fail (...) header.from=x policy.dmarc=reject"
_POLICY = re.compile(r"\bpolicy\.dmarc=(\w+)", re.I)


@dataclass(frozen=True)
class Results:
    """Our Authentication-Results header's value, and the DMARC verdict read from it."""

    value: str  # "gw.example.com; spf=pass ...; dkim=pass ...; dmarc=pass ..."
    dmarc: str = "none"  # pass, fail, none, temperror, permerror
    policy: str = ""  # the domain's p= (none, quarantine, reject) when it failed

    @property
    def header(self) -> bytes:
        return b"Authentication-Results: " + _folded(self.value).encode("utf-8", "replace") + b"\r\n"

    def log_words(self) -> str:
        """As OpenDKIM and OpenDMARC put it: 'spf=pass, dkim=pass, dmarc=fail p=reject'."""
        parts = [part.strip().split(" ")[0] for part in self.value.split(";")[1:] if part.strip()]
        return ", ".join(parts) + (f" p={self.policy}" if self.dmarc == "fail" and self.policy else "")


def make_resolver(config: MtaConfig) -> dns.resolver.Resolver:
    """A blocking resolver on the relay's DNS servers, for the checks' thread."""
    resolver = configure(dns.resolver.Resolver(configure=not config.dns_servers), config)
    resolver.lifetime = LOOKUP_SECONDS
    return resolver


def txt_lookup(resolver: dns.resolver.Resolver):
    """A name's TXT records, each one's strings joined (None: no such name or no answer), for ARC."""

    def txt(name: str) -> list[bytes] | None:
        try:
            answer = resolver.resolve(name, "TXT", search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer, dns.exception.Timeout, dns.resolver.NoNameservers):
            return None
        return [b"".join(record.strings) for record in answer]

    return txt


def check(message: bytes, *, authserv_id: str, ip: str, mail_from: str, helo: str,
          resolver: dns.resolver.Resolver) -> Results:
    """SPF on the client and MAIL FROM (HELO for the null sender), DKIM, DMARC: our header's value."""

    def txt(name: bytes | str, timeout: int = 5) -> bytes | str | None:
        """A TXT record: dkimpy asks with bytes and wants bytes, authheaders' DMARC check with text and wants text."""
        text = name.decode("ascii", "replace") if isinstance(name, bytes) else name
        try:
            answer = resolver.resolve(text, "TXT", search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer, dns.exception.Timeout, dns.resolver.NoNameservers):
            return None
        record = b"".join(answer[0].strings)
        return record if isinstance(name, bytes) else record.decode("utf-8", "replace")

    def lookup(name, qtype, tcpfallback=True, timeout=30):
        try:
            answer = resolver.resolve(name, qtype, search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except (dns.exception.Timeout, dns.resolver.NoNameservers) as error:
            raise spf.TempError(f"DNS {error}") from None
        found = []
        for rdata in answer:
            if qtype in ("A", "AAAA"):
                found.append(((name, qtype), rdata.address))
            elif qtype == "MX":
                found.append(((name, qtype), (rdata.preference, rdata.exchange)))
            elif qtype == "PTR":
                found.append(((name, qtype), rdata.target.to_text(True)))
            elif qtype in ("TXT", "SPF"):
                found.append(((name, qtype), rdata.strings))
        return found

    spf.DNSLookup = lookup  # pyspf's hook: its lookups go to the relay's DNS servers
    # authheaders says dkim=fail for a message without a signature; RFC 8601 2.7.1 (and OpenDKIM) say none.
    signed = any(name.strip().lower() == b"dkim-signature"
                 for name, _, _ in (field.partition(b":") for field in _fields(headers.section(message))))
    unsigned = None if signed else f"Authentication-Results: {authserv_id}; dkim=none"
    value = authheaders.authenticate_message(message, authserv_id, prev=unsigned, spf=True, dkim=True, arc=True,
                                             dmarc=True, ip=ip, mail_from=mail_from or f"postmaster@{helo}", helo=helo,
                                             dnsfunc=txt)
    value = value.split(":", 1)[1].strip() if value.lower().startswith("authentication-results:") else value
    value = " ".join(value.split())
    found = _DMARC.search(value)
    dmarc = found.group(1).lower() if found else "none"
    policy = _POLICY.search(found.group(2) or "") if found else None
    return Results(value, dmarc, policy.group(1).lower() if policy else "")


def strip_forged(message: bytes, header_end: int, authserv_id: str) -> tuple[bytes, int]:
    """The message without Authentication-Results headers that carry our authserv-id (forgeries from
    outside), and how many were removed; other servers' are kept."""
    section = message[:header_end]
    kept, removed = [], 0
    for field in _fields(section):
        name, _, value = field.partition(b":")
        if name.strip().lower() == b"authentication-results" and \
                value.split(b";", 1)[0].strip().lower() == authserv_id.lower().encode():
            removed += 1
            continue
        kept.append(field)
    if not removed:
        return message, 0
    return b"".join(kept) + message[header_end:], removed


def _fields(section: bytes) -> list[bytes]:
    """The header fields of a section, each with its continuation lines and line ends."""
    fields: list[bytes] = []
    for line in section.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += line
        else:
            fields.append(line)
    return fields


def _folded(value: str, width: int = 76) -> str:
    """The value folded after its semicolons, so that no line is overlong."""
    parts = value.split("; ")
    return ";\r\n\t".join(parts) if len(value) > width else value

