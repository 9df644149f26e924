"""Mail addresses as the relay checks and routes them."""

from __future__ import annotations

import ipaddress

# Characters that make a local part route mail somewhere else on a sloppy next hop:
# the percent hack (user%host@relay), bang paths (host!user@relay) and a second @.
_ROUTING_CHARS = set('%!@"')


def split(address: str) -> tuple[str, str]:
    """Local part and domain, the domain lower-cased without a trailing dot."""
    local, _, domain = address.rpartition("@")
    return local, domain.lower().rstrip(".")


def domain_of(address: str) -> str:
    return split(address)[1]


def has_control_chars(address: str) -> bool:
    return any(ord(ch) < 32 or ord(ch) == 127 for ch in address)


def is_routed(address: str) -> bool:
    """True for local parts that try to route beyond the named domain."""
    local, domain = split(address)
    return not local or not domain or bool(_ROUTING_CHARS & set(local))


def address_literal(domain: str) -> str | None:
    """The IP address of a domain written as [192.0.2.1] or [IPv6:2001:db8::1], else None."""
    if not (domain.startswith("[") and domain.endswith("]")):
        return None
    inner = domain[1:-1]
    if inner.lower().startswith("ipv6:"):
        inner = inner[5:]
    try:
        return str(ipaddress.ip_address(inner))
    except ValueError:
        return None
