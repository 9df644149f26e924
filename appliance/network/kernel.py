"""The kernel's network state through netlink (pyroute2): read it, change it, put it back.

Everything here takes a network namespace name (None is the caller's own), so the same
code serves the appliance and tests that work inside a namespace they created.

`KernelState` is a snapshot of links, their addresses, and the main routing table; it is
what `show` reports and what a rollback restores. `apply_interface` makes one interface
match its configuration; `restore_links` puts links back exactly as a snapshot had them.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from contextlib import contextmanager
from dataclasses import asdict, dataclass

from pyroute2 import IPRoute
from pyroute2 import netns as pyroute2_netns
from pyroute2.netlink.exceptions import NetlinkError

from .model import InterfaceConfig

MAIN_TABLE = 254
PROTO_KERNEL = 2
PROTO_RA = 9
PROTO_BOOT = 3
PROTO_DHCP = 16
EADDRNOTAVAIL = 99
ESRCH = 3
SCOPE_LINK = 253
IFF_UP = 0x1
IFA_F_PERMANENT = 0x80
FOREVER = 0xFFFFFFFF


class KernelError(Exception):
    """The kernel refused a change; the message says which and why."""


@dataclass(frozen=True)
class KernelAddress:
    address: str
    prefixlen: int
    family: int
    broadcast: str | None = None
    scope: int = 0
    permanent: bool = True
    preferred_lft: int = FOREVER
    valid_lft: int = FOREVER

    @property
    def interface(self):
        return ipaddress.ip_interface(f"{self.address}/{self.prefixlen}")

    @property
    def is_global(self) -> bool:
        return self.scope < SCOPE_LINK

    def key(self) -> tuple:
        return (self.address, self.prefixlen, self.broadcast)

    def ip_key(self) -> tuple:
        return (self.address, self.prefixlen)


@dataclass(frozen=True)
class KernelLink:
    index: int
    name: str
    mac: str
    mtu: int
    up: bool
    operstate: str
    carrier: bool
    addresses: tuple[KernelAddress, ...] = ()


@dataclass(frozen=True)
class KernelRoute:
    family: int
    dst: str | None  # None: the default route
    dst_len: int
    gateway: str | None
    oif: str | None
    proto: int
    scope: int
    prefsrc: str | None
    priority: int | None
    type: int

    @property
    def is_default(self) -> bool:
        return self.dst is None and self.dst_len == 0

    def key(self) -> tuple:
        return (self.family, self.dst, self.dst_len, self.gateway, self.oif, self.priority)

    def destination(self) -> str:
        if self.is_default:
            return "default"
        return f"{self.dst}/{self.dst_len}"


@dataclass(frozen=True)
class KernelState:
    links: tuple[KernelLink, ...]
    routes: tuple[KernelRoute, ...]

    def link(self, name: str) -> KernelLink | None:
        return next((link for link in self.links if link.name == name), None)

    def routes_of(self, name: str) -> list[KernelRoute]:
        return [route for route in self.routes if route.oif == name]

    def to_json(self) -> dict:
        return {"links": [asdict(link) for link in self.links], "routes": [asdict(route) for route in self.routes]}

    @classmethod
    def from_json(cls, data: dict) -> KernelState:
        links = tuple(
            KernelLink(**{**link, "addresses": tuple(KernelAddress(**a) for a in link["addresses"])})
            for link in data["links"]
        )
        return cls(links, tuple(KernelRoute(**route) for route in data["routes"]))


@contextmanager
def _thread_in_namespace(name: str):
    """This thread in the named network namespace, then back in its own.

    setns(2) moves only the calling thread, and a socket stays in the namespace it was made in.
    pyroute2's own `IPRoute(netns=...)` forks a child to make the socket instead; a fork of a
    process with other threads (the console's workers, a test's servers) can deadlock in the
    child on a lock another thread held, and pyroute2 then waits for that child forever."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        pyroute2_netns.setns(netns_path(name), flags=0, fork=False)
        try:
            yield
        finally:
            pyroute2_netns.setns(own, flags=0, fork=False)
    finally:
        os.close(own)


def netns_path(name: str) -> str:
    return name if name.startswith("/") else f"/var/run/netns/{name}"


@contextmanager
def netlink(namespace: str | None = None):
    """An IPRoute socket in the given network namespace (None: this process's own)."""
    try:
        if namespace:
            with _thread_in_namespace(namespace):
                ipr = IPRoute()
        else:
            ipr = IPRoute()
    except (OSError, NetlinkError) as error:
        raise KernelError(f"cannot open netlink in namespace {namespace or 'of this process'}: {error}") from None
    try:
        yield ipr
    finally:
        ipr.close()


def _address_of(message) -> KernelAddress:
    cache = message.get("IFA_CACHEINFO") or {}
    flags = message.get("IFA_FLAGS") or message["flags"]
    return KernelAddress(
        address=message.get("IFA_ADDRESS"),
        prefixlen=message["prefixlen"],
        family=message["family"],
        broadcast=message.get("IFA_BROADCAST"),
        scope=message["scope"],
        permanent=bool(flags & IFA_F_PERMANENT),
        preferred_lft=cache.get("ifa_preferred", FOREVER),
        valid_lft=cache.get("ifa_valid", FOREVER),
    )


def read_state(ipr) -> KernelState:
    addresses: dict[int, list[KernelAddress]] = {}
    for message in ipr.get_addr():
        addresses.setdefault(message["index"], []).append(_address_of(message))
    links = []
    names = {}
    for message in ipr.get_links():
        name = message.get("IFLA_IFNAME")
        names[message["index"]] = name
        links.append(KernelLink(
            index=message["index"],
            name=name,
            mac=message.get("IFLA_ADDRESS") or "",
            mtu=message.get("IFLA_MTU") or 0,
            up=bool(message["flags"] & IFF_UP),
            operstate=str(message.get("IFLA_OPERSTATE") or "UNKNOWN"),
            carrier=bool(message.get("IFLA_CARRIER")),
            addresses=tuple(addresses.get(message["index"], ())),
        ))
    routes = []
    for family in (socket.AF_INET, socket.AF_INET6):
        for message in ipr.get_routes(family=family, table=MAIN_TABLE):
            if message.get("RTA_TABLE", message["table"]) != MAIN_TABLE:
                continue
            routes.append(KernelRoute(
                family=message["family"],
                dst=message.get("RTA_DST"),
                dst_len=message["dst_len"],
                gateway=message.get("RTA_GATEWAY"),
                oif=names.get(message.get("RTA_OIF")),
                proto=message["proto"],
                scope=message["scope"],
                prefsrc=message.get("RTA_PREFSRC"),
                priority=message.get("RTA_PRIORITY"),
                type=message["type"],
            ))
    return KernelState(tuple(links), tuple(routes))


def read_kernel_state(netns: str | None = None) -> KernelState:
    with netlink(netns) as ipr:
        return read_state(ipr)


# --- changes ---


def _call(what: str, function, *args, **kwargs):
    try:
        return function(*args, **kwargs)
    except NetlinkError as error:
        raise KernelError(f"{what}: {_reason(error)}") from None


def _reason(error: NetlinkError) -> str:
    return str(error.args[1]) if len(error.args) > 1 else str(error)


def _broadcast(address, explicit) -> str | None:
    if address.version != 4 or address.network.prefixlen >= 31:
        return None
    return str(explicit or address.network.broadcast_address)


def add_address(ipr, link: KernelLink, address: KernelAddress) -> None:
    extra = {}
    if address.broadcast:
        extra["broadcast"] = address.broadcast
    if not address.permanent:
        extra["IFA_CACHEINFO"] = {"ifa_preferred": address.preferred_lft, "ifa_valid": address.valid_lft}
    _call(f"{link.name}: adding {address.address}/{address.prefixlen}", ipr.addr, "add", index=link.index,
          address=address.address, prefixlen=address.prefixlen, **extra)


def remove_address(ipr, link: KernelLink, address: KernelAddress) -> None:
    try:
        ipr.addr("del", index=link.index, address=address.address, prefixlen=address.prefixlen)
    except NetlinkError as error:
        if error.code != EADDRNOTAVAIL:  # gone already: removing a primary address takes its secondaries along
            raise KernelError(f"{link.name}: removing {address.address}/{address.prefixlen}: {_reason(error)}") from None


def add_route(ipr, link_index: int, route: KernelRoute) -> None:
    spec = {"family": route.family, "dst_len": route.dst_len, "proto": route.proto, "scope": route.scope,
            "type": route.type, "table": MAIN_TABLE, "oif": link_index}
    if route.dst:
        spec["dst"] = route.dst
    for name in ("gateway", "prefsrc", "priority"):
        if getattr(route, name) is not None:
            spec[name] = getattr(route, name)
    _call(f"{route.oif}: adding route {route.destination()} via {route.gateway or 'link'}", ipr.route, "add", **spec)


def remove_route(ipr, link_index: int, route: KernelRoute) -> None:
    spec = {"family": route.family, "dst_len": route.dst_len, "table": MAIN_TABLE, "oif": link_index}
    if route.dst:
        spec["dst"] = route.dst
    if route.gateway:
        spec["gateway"] = route.gateway
    if route.priority is not None:
        spec["priority"] = route.priority
    try:
        ipr.route("del", **spec)
    except NetlinkError as error:
        if error.code != ESRCH:  # the kernel already removed it with its address
            raise KernelError(f"{route.oif}: removing route {route.destination()}: {error}") from None


def set_link(ipr, link: KernelLink, mtu: int | None = None, up: bool | None = None) -> None:
    if mtu is not None and mtu != link.mtu:
        _call(f"{link.name}: setting MTU {mtu}", ipr.link, "set", index=link.index, mtu=mtu)
    if up is not None and up != link.up:
        _call(f"{link.name}: setting link {'up' if up else 'down'}", ipr.link, "set", index=link.index,
              state="up" if up else "down")


def _desired_addresses(interface: InterfaceConfig) -> list[KernelAddress]:
    return [
        KernelAddress(str(a.ip), a.network.prefixlen, socket.AF_INET if a.version == 4 else socket.AF_INET6,
                      _broadcast(a, interface.broadcast if a.version == 4 else None))
        for a in interface.addresses
    ]


def apply_interface(ipr, interface: InterfaceConfig) -> list[str]:
    """Make one interface match its configuration; returns notes for the admin."""
    state = read_state(ipr)
    link = state.link(interface.name)
    if link is None:
        raise KernelError(f"{interface.name}: no such interface")
    set_link(ipr, link, mtu=interface.mtu, up=True)
    notes = []
    current = [a for a in link.addresses if a.is_global]
    if interface.dhcp:
        desired = []
        keep = [a for a in current if not a.permanent]  # leases a DHCP client holds
        notes.append(f"{interface.name}: DHCP: without systemd-networkd no DHCP client is started; "
                     "the link is up, static addresses are removed")
    else:
        desired = _desired_addresses(interface)
        keep = []
    present = {a.ip_key(): a for a in current}
    for address in desired:
        old = present.get(address.ip_key())
        if old and interface.broadcast and old.broadcast != address.broadcast:
            remove_address(ipr, link, old)  # a new broadcast address needs the address added anew
            old = None
        if old is None:
            add_address(ipr, link, address)
    wanted = {a.ip_key() for a in desired}
    for address in current:
        if address.ip_key() not in wanted and address not in keep:
            remove_address(ipr, link, address)
    _apply_routes(ipr, link, interface)
    return notes


def _apply_routes(ipr, link: KernelLink, interface: InterfaceConfig) -> None:
    """The link's routes become the configured default routes; others set by hand go, as networkd does."""
    state = read_state(ipr)  # removing an address can take routes with it
    routes = [r for r in state.routes_of(link.name) if _restorable(r)]
    desired = {(socket.AF_INET if g.version == 4 else socket.AF_INET6): str(g) for g in interface.gateways}
    for route in routes:
        if interface.dhcp and route.proto == PROTO_DHCP:  # a DHCP client's routes stay
            continue
        if not (route.is_default and desired.get(route.family) == route.gateway):
            remove_route(ipr, link.index, route)
    for family, gateway in desired.items():
        if not any(r.is_default and r.family == family and r.gateway == gateway for r in routes):
            add_route(ipr, link.index, KernelRoute(family, None, 0, gateway, link.name, PROTO_BOOT, 0, None, None, 1))


def restore_links(ipr, snapshot: KernelState, names: list[str]) -> None:
    """Put the named links back as the snapshot had them: MTU, up/down, addresses, routes."""
    for name in names:
        before = snapshot.link(name)
        now = read_state(ipr).link(name)
        if before is None or now is None:
            continue
        set_link(ipr, now, mtu=before.mtu, up=before.up)
        wanted = {a.key(): a for a in before.addresses if a.is_global}
        present = {a.key(): a for a in now.addresses if a.is_global}
        for key, address in present.items():
            if key not in wanted:
                remove_address(ipr, now, address)
        for key, address in wanted.items():
            if key not in present:
                add_address(ipr, now, address)
        _restore_routes(ipr, snapshot, now)


def _restorable(route: KernelRoute) -> bool:
    return route.proto not in (PROTO_KERNEL, PROTO_RA) and route.type == 1


def _restore_routes(ipr, snapshot: KernelState, link: KernelLink) -> None:
    wanted = {r.key(): r for r in snapshot.routes_of(link.name) if _restorable(r)}
    present = {r.key(): r for r in read_state(ipr).routes_of(link.name) if _restorable(r)}
    for key, route in present.items():
        if key not in wanted:
            remove_route(ipr, link.index, route)
    for key, route in wanted.items():
        if key not in present:
            add_route(ipr, link.index, route)
