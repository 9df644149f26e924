"""What the wizard reads from the machine it runs on, and the blocking calls it makes (run in workers).

Kept in one place so that the screens never touch the system directly, and so that tests can
give the wizard a fixed machine (interfaces, addresses, DNS servers) where the real one
would differ from host to host.
"""

from __future__ import annotations

from appliance.diagnostics.dns_lookup import RESOLVED_STUBS, LookupFailed, addresses_of, make_resolver
from appliance.diagnostics.helo import HeloVerdict, check_helo
from appliance.diagnostics.next_hop import NextHopReport, check_next_hop, local_addresses
from appliance.network.change import SYSTEM_ERRORS
from appliance.network.live import LiveState, read_live_state
from appliance.topology import ip_or_none


def live_state() -> LiveState | None:
    """Interfaces, addresses, gateways, DNS servers and hostname as they are now (None if unreadable).

    Netlink runs its own event loop: call this in a thread, never on the console's loop."""
    try:
        return read_live_state()
    except (*SYSTEM_ERRORS, RuntimeError):
        return None


def ptr_check(hostname: str, address: str, servers: list[str]) -> HeloVerdict | str:
    """The HELO/PTR check (the PTR record of the public address against the HELO name); a string saying why not
    when DNS did not answer or the address or a DNS server is not one. resolved's stub, in the live state's
    servers when resolved names no upstream one, is never asked (see dns_lookup.system_servers)."""
    try:
        resolver = make_resolver([server for server in servers if server not in RESOLVED_STUBS] or None)
    except ValueError as error:
        return f"DNS server: {error}"
    try:
        return check_helo(resolver, hostname, address)
    except LookupFailed as error:
        return str(error)
    except ValueError:
        return f"{address} is not an IP address: type the public address your mail leaves from"


def next_hop(host: str, port: int, hostname: str, listen_ports: set[int], servers: list[str]) -> NextHopReport:
    return check_next_hop(host, port, resolver=make_resolver(servers or None), helo_name=hostname,
                          own_names=(hostname,), local_addresses=local_addresses(), listen_ports=listen_ports,
                          timeout=8.0)


def addresses_for(host: str, servers: list[str]) -> list[str]:
    """The addresses of a relay host: itself when it is an address, else its A and AAAA records."""
    if ip_or_none(host):
        return [ip_or_none(host)]
    try:
        return addresses_of(make_resolver(servers or None, timeout=3.0), host)
    except (LookupFailed, ValueError):
        return []

