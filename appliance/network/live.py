"""The network as it is now: what CipherMail's "Network info" page shows.

Per interface: name, MAC, link state, MTU, addresses with prefix and broadcast, gateway,
and whether its IPv4 address came from DHCP (a leased address has a finite lifetime; a
static one is permanent). Then the default gateways, the DNS servers and search domains
the resolver uses, and the hostname.

Links, addresses and routes come from netlink (pyroute2), which reads any network
namespace; psutil adds the link speed where the kernel knows it (it sees only the
namespace of this process).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

import psutil

from .kernel import KernelAddress, KernelState, read_kernel_state

RESOLVED_UPSTREAM = "run/systemd/resolve/resolv.conf"  # the servers resolved itself asks


@dataclass(frozen=True)
class LiveAddress:
    address: str  # with prefix: 192.0.2.10/24
    broadcast: str | None
    netmask: str | None
    dhcp: bool


@dataclass(frozen=True)
class LiveInterface:
    name: str
    mac: str
    link: str  # "up", "down" or "no carrier"
    mtu: int
    addresses: tuple[LiveAddress, ...]
    gateways: tuple[str, ...]
    dhcp: bool
    speed_mbps: int | None = None


@dataclass(frozen=True)
class LiveState:
    hostname: str
    interfaces: tuple[LiveInterface, ...]
    default_gateways: tuple[str, ...]
    dns_servers: tuple[str, ...] = ()
    search_domains: tuple[str, ...] = ()


def parse_resolv_conf(text: str) -> tuple[list[str], list[str]]:
    """The servers and search domains; `search .` (systemd-resolved's word for none) is no search domain."""
    servers, search = [], []
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if len(words) >= 2 and words[0] == "nameserver":
            servers.append(words[1])
        elif words and words[0] in ("search", "domain"):
            search = [word for word in words[1:] if word != "."]
    return servers, search


def read_dns(root: Path | str = "/") -> tuple[list[str], list[str]]:
    """The DNS servers and search domains in use: resolved's upstream list, else /etc/resolv.conf."""
    root = Path(root)
    for relative in (RESOLVED_UPSTREAM, "etc/resolv.conf"):
        try:
            return parse_resolv_conf((root / relative).read_text(encoding="utf-8", errors="replace"))
        except OSError:
            continue
    return [], []


def _link_word(up: bool, carrier: bool, operstate: str) -> str:
    if not up:
        return "down"
    if operstate in ("UP", "UNKNOWN") and (carrier or operstate == "UNKNOWN"):
        return "up"
    return "no carrier"


def _live_address(address: KernelAddress) -> LiveAddress:
    interface = address.interface
    netmask = str(interface.netmask) if address.family == socket.AF_INET else None
    return LiveAddress(str(interface), address.broadcast, netmask, dhcp=not address.permanent)


def describe(state: KernelState, hostname: str, dns: tuple[list[str], list[str]], speeds: dict | None = None) -> LiveState:
    speeds = speeds or {}
    interfaces = []
    for link in state.links:
        if link.name == "lo":
            continue
        addresses = tuple(_live_address(a) for a in link.addresses if a.is_global)
        gateways = tuple(r.gateway for r in state.routes_of(link.name) if r.is_default and r.gateway)
        ipv4 = [a for a in addresses if ":" not in a.address]
        interfaces.append(LiveInterface(
            name=link.name, mac=link.mac, link=_link_word(link.up, link.carrier, link.operstate), mtu=link.mtu,
            addresses=addresses, gateways=gateways, dhcp=any(a.dhcp for a in ipv4), speed_mbps=speeds.get(link.name),
        ))
    defaults = tuple(f"{r.gateway} ({r.oif})" for r in state.routes if r.is_default and r.gateway)
    servers, search = dns
    return LiveState(hostname, tuple(interfaces), defaults, tuple(servers), tuple(search))


def read_live_state(netns: str | None = None, root: Path | str = "/") -> LiveState:
    state = read_kernel_state(netns)
    speeds = {}
    if netns is None:
        speeds = {name: stats.speed for name, stats in psutil.net_if_stats().items() if stats.speed}
    return describe(state, socket.gethostname(), read_dns(root), speeds)
