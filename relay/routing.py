"""Where a recipient's mail goes next, and the addresses of that next hop.

Recipients in the relay domains go to the internal relay host; all others to the
external relay host, or straight to the domain's MX hosts when none is set.
`mx: true` on a relay host means "look up that name's MX records", like Postfix's
relayhost without brackets. A next hop carries the TLS policy of the relay host it
came from; direct MX delivery takes the domain's `tls_policy` entry, else the external
relay's `tls`, which is the policy for all mail to the outside (`tls_policy.py`).

Lookups ask for the AD bit (RFC 6840 5.7): a target found only through answers a
validating resolver marked authentic is `secure`, which DANE needs (RFC 7672 2.2).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.flags
import dns.resolver

from . import addresses
from .config import MtaConfig, is_ip


@dataclass(frozen=True)
class NextHop:
    host: str
    port: int = 25
    mx: bool = True
    tls: str = "may"
    tls_name: str = ""
    login: bool = False  # authenticate with the external relay's username and password
    direct: bool = False  # straight to the recipient domain's MX hosts: MTA-STS and TLS reports apply
    match: tuple[str, ...] = ()  # a tls_policy entry's names for verify and secure
    ca_file: str = ""  # a tls_policy entry's authorities
    listed: bool = False  # the level comes from a tls_policy entry, which overrides MTA-STS

    @property
    def tls_level(self) -> str:
        """The TLS level in force. The password goes only to a server whose certificate is checked:
        the configuration refuses a login at any other level, and should one slip through, verify."""
        from .config import LOGIN_LEVELS
        return "verify" if self.login and self.tls not in LOGIN_LEVELS else self.tls

    def __str__(self) -> str:
        return f"{self.host}:{self.port}" + ("" if self.mx else " (no MX)")


@dataclass(frozen=True)
class Target:
    """One address to connect to, with the name it was found under."""

    name: str
    ip: str
    port: int
    preference: int = 0  # the MX preference it was found under
    secure: bool = False  # its MX record (if any) and its address came with the AD bit: DANE may apply

    def __str__(self) -> str:
        return f"{self.name}[{self.ip}]:{self.port}"


class RouteError(Exception):
    """The next hop cannot be reached this time (`permanent` False) or ever (True)."""

    def __init__(self, dsn: str, text: str):
        super().__init__(text)
        self.dsn = dsn
        self.text = text

    @property
    def permanent(self) -> bool:
        return self.dsn.startswith("5")


def next_hop(config: MtaConfig, domain: str) -> NextHop:
    literal = addresses.address_literal(domain)
    if literal:
        return NextHop(literal, 25, mx=False)
    if config.is_relay_domain(domain) and config.internal_relay.host:
        relay = config.internal_relay
        return NextHop(relay.host, relay.port, relay.mx, relay.tls, relay.tls_name)
    relay = config.external_relay
    if relay.host:
        return NextHop(relay.host, relay.port, relay.mx, relay.tls, relay.tls_name, login=bool(relay.username))
    listed = config.tls_policy_for(domain)
    if listed is not None:
        return NextHop(domain, 25, mx=True, tls=listed.level, direct=True, match=listed.match,
                       ca_file=listed.ca_file, listed=True)
    return NextHop(domain, 25, mx=True, tls=relay.tls, tls_name=relay.tls_name, direct=True)


def make_resolver(config: MtaConfig) -> dns.asyncresolver.Resolver:
    """The resolver of delivery lookups: `dns_servers`, else the system's; asking for the AD bit."""
    resolver = configure(dns.asyncresolver.Resolver(configure=not config.dns_servers), config)
    resolver.flags = dns.flags.RD | dns.flags.AD
    return resolver


def configure(resolver, config: MtaConfig):
    """A resolver (blocking or async) set to `dns_servers` (`192.0.2.53`, `127.0.0.1:5353`), when there are any."""
    if not config.dns_servers:
        return resolver
    servers, port = [], 53
    for server in config.dns_servers:
        host, sep, port_text = server.rpartition(":") if server.count(":") == 1 else ("", "", "")
        servers.append(host if sep else server.strip("[]"))
        if sep:
            port = int(port_text)
    resolver.nameservers = servers
    resolver.port = port
    resolver.lifetime = 10.0
    return resolver


def authentic(answer) -> bool:
    """Did a validating resolver vouch for this answer (the AD bit)?"""
    return bool(answer.response.flags & dns.flags.AD)


async def host_addresses(resolver, name: str) -> list[str]:
    """A and AAAA records of a name; RouteError when it has none (4.4.3 when DNS did not answer)."""
    return [ip for ip, _ in await _secure_addresses(resolver, name)]


async def _secure_addresses(resolver, name: str) -> list[tuple[str, bool]]:
    """A and AAAA records of a name, each with whether its answer was authentic; RouteError when it has none."""
    found, temporary = [], None
    for rdtype in ("A", "AAAA"):
        try:
            answer = await resolver.resolve(name, rdtype, search=False)
            found.extend((str(record), authentic(answer)) for record in answer)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            continue
        except (dns.exception.Timeout, dns.resolver.NoNameservers) as error:
            temporary = error
    if found:
        return found
    if temporary:
        raise RouteError("4.4.3", f"Host or domain name not found. Name service error for name={name} type=A: {temporary}")
    raise RouteError("5.4.4", f"Host or domain name not found. Name service error for name={name} type=A: Host not found")


def _denial_authentic(error: dns.resolver.NoAnswer) -> bool:
    response = error.kwargs.get("response")
    return bool(response is not None and response.flags & dns.flags.AD)


MX_ADDRESS_LIMIT = 5  # Postfix's smtp_mx_address_limit


def without_self(targets: list[Target], is_myself, domain: str, best_preference: int) -> list[Target]:
    """Drop the MX hosts at or below our own preference (RFC 5321 5.1), as Postfix's smtp_addr.c does.

    Nothing better left: 5.4.6 "loops back to myself"; but 4.4.4 when better MX hosts
    exist without a usable address (we may be their backup: wait for them).
    """
    myself = next((target for target in targets if is_myself(target)), None)
    if myself is None:
        return targets
    better = [target for target in targets if target.preference < myself.preference]
    if better:
        return better
    if targets[0].preference != best_preference:
        raise RouteError("4.4.4", f"unable to find primary relay for {domain}")
    raise RouteError("5.4.6", f"mail for {domain} loops back to myself")


async def resolve(resolver, hop: NextHop, max_addresses: int = MX_ADDRESS_LIMIT, is_myself=None) -> list[Target]:
    """The addresses to try for a next hop, best first (MX preference, then record order).

    With `is_myself`, MX hosts that are this gateway, and those less preferred, are left out."""
    if is_ip(hop.host):
        return [Target(hop.host, hop.host, hop.port)]
    if not hop.mx:
        return [Target(hop.host, ip, hop.port, secure=secure)
                for ip, secure in await _secure_addresses(resolver, hop.host)][:max_addresses]
    try:
        answer = await resolver.resolve(hop.host, "MX", search=False)
    except dns.resolver.NoAnswer as error:
        # No MX records: the domain itself is the mail host (RFC 5321 5.1); DANE needs the denial authentic.
        denied = _denial_authentic(error)
        return [Target(hop.host, ip, hop.port, secure=secure and denied)
                for ip, secure in await _secure_addresses(resolver, hop.host)][:max_addresses]
    except dns.resolver.NXDOMAIN:
        raise RouteError(
            "5.4.4", f"Host or domain name not found. Name service error for name={hop.host} type=MX: Host not found"
        ) from None
    except (dns.exception.Timeout, dns.resolver.NoNameservers) as error:
        raise RouteError(
            "4.4.3", f"Host or domain name not found. Name service error for name={hop.host} type=MX: {error}"
        ) from None
    mx_secure = authentic(answer)
    records = [(r.preference, random.random(), str(r.exchange).rstrip(".")) for r in answer]
    if len(records) == 1 and records[0][2] == "":
        raise RouteError("5.1.10", f"mail for {hop.host} is not accepted: the domain publishes a null MX (RFC 7505)")
    targets: list[Target] = []
    last_error: RouteError | None = None
    for preference, _, exchange in sorted(records):
        if not exchange:
            continue
        try:
            targets.extend(Target(exchange, ip, hop.port, preference, secure=mx_secure and secure)
                           for ip, secure in await _secure_addresses(resolver, exchange))
        except RouteError as error:
            last_error = error
        if len(targets) >= max_addresses:
            break
    if not targets:
        raise last_error or RouteError("4.4.3", f"no usable MX host for {hop.host}")
    targets = targets[:max_addresses]
    return without_self(targets, is_myself, hop.host, min(records)[0]) if is_myself else targets
