"""DNS lookups against the appliance's own DNS servers (dnspython), as an admin would run dig.

`lookup(name)` asks for A, AAAA, MX and TXT and picks the SPF record out of the TXT
records and the DMARC policy out of `_dmarc.<name>`; an IP address gets its PTR record.
`lookup_name(name, types)` asks for some of the types only (the SPF and DMARC records come with TXT).
Each answer says what was found or why nothing was: no such domain, no record of that
type, or a server that did not answer.

Only DNS servers are asked: the ones given, else the system's (`system_servers`), never the
name service switch (getaddrinfo reads /etc/hosts and asks LLMNR and mDNS) nor
systemd-resolved's local stub, which answers from those same sources; and no search domain is added.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

import dns.exception
import dns.name
import dns.nameserver
import dns.resolver
import dns.reversename

DEFAULT_TIMEOUT = 3.0
RESOLVED_STUBS = ("127.0.0.53", "127.0.0.54")  # systemd-resolved's local listeners
NAME_TYPES = ("A", "AAAA", "MX", "TXT")


class LookupFailed(Exception):
    """The servers did not answer; the message names them."""


def parse_server(text: str) -> tuple[str, int]:
    """'192.0.2.53', '127.0.0.1:5353' or '[2001:db8::53]:53' -> (address, port)."""
    text = text.strip()
    if text.startswith("["):
        host, _, port = text[1:].partition("]")
        port = port.lstrip(":")
    elif text.count(":") == 1:
        host, port = text.split(":")
    else:
        host, port = text, ""
    ipaddress.ip_address(host)
    return host, int(port) if port else 53


def system_servers(root="/") -> list[str]:
    """The DNS servers the system asks: systemd-resolved's upstream servers, else resolv.conf's, without
    resolved's stub (it answers from /etc/hosts, LLMNR and mDNS too: names no one else can see)."""
    from appliance.network.live import read_dns

    servers, _ = read_dns(root)
    return [server for server in servers if server not in RESOLVED_STUBS and _readable(server)]


def _readable(server: str) -> bool:
    try:
        parse_server(server)
    except ValueError:
        return False
    return True


def make_resolver(servers: list[str] | None, timeout: float = DEFAULT_TIMEOUT, root="/") -> dns.resolver.Resolver:
    """A resolver that asks exactly `servers`; none given: the system's (`system_servers` under `root`).
    With no server at all, each query fails as from servers that do not answer."""
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [dns.nameserver.Do53Nameserver(*parse_server(s)) for s in servers or system_servers(root)]
    resolver.timeout = resolver.lifetime = timeout
    return resolver


def servers_of(resolver: dns.resolver.Resolver) -> str:
    if not resolver.nameservers:
        return "none"
    names = []
    for server in resolver.nameservers:
        address, port = getattr(server, "address", server), getattr(server, "port", 53)
        names.append(str(address) if port == 53 else f"{address}:{port}")
    return ", ".join(names)


@dataclass
class Answer:
    name: str
    rdtype: str
    records: list[str] = field(default_factory=list)
    status: str = "ok"  # "ok", "no such domain", "no records", "no answer"

    def line(self) -> str:
        if self.records:
            return f"{self.rdtype:5} {self.name}: " + "; ".join(self.records)
        return f"{self.rdtype:5} {self.name}: {self.status}"


def query(resolver: dns.resolver.Resolver, name: str, rdtype: str) -> Answer:
    answer = Answer(name, rdtype)
    if not resolver.nameservers:
        raise LookupFailed(f"no DNS server to ask for {name} {rdtype}: none is configured (mta.dns_servers, "
                           "network.dns.servers) and the system names none but its local stub")
    try:
        result = resolver.resolve(name, rdtype, search=False)
    except dns.resolver.NXDOMAIN:
        answer.status = "no such domain"
    except dns.resolver.NoAnswer:
        answer.status = "no records"
    except (dns.resolver.NoNameservers, dns.exception.Timeout) as error:
        raise LookupFailed(f"no answer from {servers_of(resolver)} for {name} {rdtype}: {_reason(error)}") from None
    else:
        answer.records = sorted(_text(rdata, rdtype) for rdata in result)
    return answer


def _reason(error: Exception) -> str:
    if isinstance(error, dns.exception.Timeout):
        return "timed out"
    return "the servers failed or refused the query"


def _text(rdata, rdtype: str) -> str:
    if rdtype == "TXT":
        return b"".join(rdata.strings).decode("utf-8", "replace")
    if rdtype == "MX":
        return f"{rdata.preference} {rdata.exchange.to_text().rstrip('.')}"
    if rdtype == "PTR":
        return rdata.target.to_text().rstrip(".")
    return rdata.to_text()


@dataclass
class LookupReport:
    name: str
    answers: list[Answer] = field(default_factory=list)
    spf: list[str] = field(default_factory=list)
    dmarc: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def has_policies(self) -> bool:
        """Were the SPF and DMARC records asked for (TXT, of a name that exists)?"""
        return (any(a.rdtype == "TXT" for a in self.answers)
                and not any(a.status == "no such domain" for a in self.answers))

    def lines(self) -> list[str]:
        lines = [answer.line() for answer in self.answers]
        if self.has_policies:
            lines.append(f"SPF   {'; '.join(self.spf) or '(none)'}")
            lines.append(f"DMARC {'; '.join(self.dmarc) or '(none)'}")
        return lines + self.notes


def reverse_lookup(resolver: dns.resolver.Resolver, address: str) -> Answer:
    answer = query(resolver, dns.reversename.from_address(address).to_text(), "PTR")
    answer.name = address
    return answer


def lookup(resolver: dns.resolver.Resolver, name: str) -> LookupReport:
    """A, AAAA, MX and TXT of a name (with its SPF record and DMARC policy); an IP address gets its PTR record."""
    name = name.strip().rstrip(".")
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return lookup_name(resolver, name)
    return LookupReport(name, [reverse_lookup(resolver, name)])


def lookup_name(resolver: dns.resolver.Resolver, name: str, rdtypes: tuple[str, ...] = NAME_TYPES) -> LookupReport:
    """The records of each type, up to a name that does not exist; with TXT among the types, the SPF record
    picked out of the TXT records and the DMARC policy out of `_dmarc.<name>`."""
    report = LookupReport(name)
    for rdtype in rdtypes:
        report.answers.append(query(resolver, name, rdtype))
        if report.answers[-1].status == "no such domain":
            report.notes.append(f"{name} does not exist in DNS")
            return report
    txt = next((a for a in report.answers if a.rdtype == "TXT"), None)
    if txt is None:
        return report
    report.spf = [r for r in txt.records if r.lower().startswith("v=spf1")]
    if len(report.spf) > 1:
        report.notes.append("more than one SPF record: receivers treat that as an error (RFC 7208); merge them")
    dmarc = query(resolver, f"_dmarc.{name}", "TXT")
    report.dmarc = [r for r in dmarc.records if r.lower().startswith("v=dmarc1")]
    return report


def addresses_of(resolver: dns.resolver.Resolver, name: str) -> list[str]:
    """The A and AAAA addresses of a name (none when it has none)."""
    found = []
    for rdtype in ("A", "AAAA"):
        found += query(resolver, name, rdtype).records
    return found
