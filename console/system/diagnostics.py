"""The checks of the Diagnostics screen, as `postern-appliance diag` runs them: a DNS lookup, the
HELO/PTR check and the next-hop check, asking the DNS servers typed, else the configuration's,
else the system's (`dns_lookup.system_servers`: DNS servers only, never /etc/hosts, LLMNR or mDNS)."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from appliance.topology import ip_or_none

from . import FieldError

if TYPE_CHECKING:
    from appliance.diagnostics.dns_lookup import LookupReport
    from appliance.diagnostics.helo import HeloVerdict
    from appliance.diagnostics.next_hop import Hop, NextHopReport
    from appliance.schema import ApplianceConfig

RECORD_TYPES = ("ALL", "A", "AAAA", "MX", "TXT", "PTR", "NS", "CNAME")


@dataclass
class DnsResult:
    rdtype: str  # one of RECORD_TYPES
    servers: str  # the servers asked, in words
    report: LookupReport


class Diagnostics:
    """`settings` reads the configuration in force (its DNS servers, names and relay hosts); `netns` is
    the network namespace whose addresses are this appliance's (None: this machine's); `root` is where the
    system's resolver files are (resolv.conf)."""

    def __init__(self, settings: Callable[[], ApplianceConfig], netns: str | None = None, root: Path | str = "/"):
        self.settings = settings
        self.netns = netns
        self.root = root

    def resolver(self, servers_text: str, timeout: float = 3.0):
        """A resolver for the servers typed, else the configuration's, else the system's; and their names."""
        from appliance.diagnostics.dns_lookup import make_resolver, system_servers

        servers = [word for word in servers_text.replace(",", " ").split() if word]
        if not servers:
            settings = self.settings()
            servers = list(settings.mta.dns_servers) or [str(s) for s in settings.network.dns.servers]
        servers = servers or system_servers(self.root)
        try:
            resolver = make_resolver(servers, timeout=timeout, root=self.root)
        except ValueError:
            raise FieldError("servers", f"{servers_text!r} is not a DNS server: write it like 192.0.2.53 or "
                                        "127.0.0.1:5353 (several with commas)") from None
        shown = ", ".join(servers) if servers else "no DNS server"
        return resolver, shown

    def dns_lookup(self, name: str, rdtype: str, servers_text: str = "") -> DnsResult:
        """ALL: what `postern-appliance diag dns` shows; one type: its records (TXT with SPF and DMARC)."""
        from appliance.diagnostics.dns_lookup import NAME_TYPES, LookupReport, lookup_name, reverse_lookup

        name = name.strip().rstrip(".")
        if not name:
            raise FieldError("name", "type a domain name, host name or IP address to look up")
        resolver, shown = self.resolver(servers_text)
        address = ip_or_none(name)
        if rdtype in ("ALL", "PTR") and address:
            return DnsResult(rdtype, shown, LookupReport(name, [reverse_lookup(resolver, address)]))
        if rdtype == "PTR":
            raise FieldError("name", f"{name} is not an IP address: a PTR lookup needs one, such as 192.0.2.10")
        return DnsResult(rdtype, shown, lookup_name(resolver, name, NAME_TYPES if rdtype == "ALL" else (rdtype,)))

    def helo_check(self, address: str, helo_name: str, servers_text: str = "") -> HeloVerdict:
        from appliance.diagnostics.helo import check_helo
        from relay.config import check_fqdn

        address = address.strip()
        if not ip_or_none(address):
            raise FieldError("address", f"{address!r} is not an IP address: type the public address your mail "
                                        "leaves from, such as 203.0.113.10" if address else
                             "type the public address your mail leaves from, such as 203.0.113.10")
        helo_name = helo_name.strip() or self.settings().mta.outgoing_helo
        try:
            helo_name = check_fqdn(helo_name)
        except ValueError as error:
            raise FieldError("helo", str(error)) from None
        resolver, _ = self.resolver(servers_text)
        return check_helo(resolver, helo_name, address)

    def next_hop_targets(self, text: str) -> list[Hop]:
        """The hop typed (HOST:PORT), or the configuration's relay hosts, each with its role and TLS policy."""
        from appliance.diagnostics.next_hop import configured_hops, parse_target

        configured = configured_hops(self.settings().mta)
        if not text.strip():
            if not configured:
                raise FieldError("hop", "type a HOST:PORT; the configuration names no relay host to check")
            return configured
        try:
            return [parse_target(text, configured)]
        except ValueError as error:
            raise FieldError("hop", str(error)) from None

    def next_hop(self, hop: Hop, servers_text: str = "", timeout: float = 10.0) -> NextHopReport:
        from appliance.diagnostics.next_hop import check_next_hop, local_addresses

        settings = self.settings()
        resolver, _ = self.resolver(servers_text)
        own = (socket.gethostname(), settings.mta.hostname, settings.mta.helo_name, settings.network.hostname or "")
        return check_next_hop(hop.host, hop.port, resolver=resolver, helo_name=settings.mta.outgoing_helo,
                              own_names=own, local_addresses=local_addresses(self.netns),
                              listen_ports={listen.port for listen in settings.mta.listen}, timeout=timeout,
                              tls_policy=hop.tls)

