"""The desired network state: the `network:` section of the appliance YAML file, validated.

```yaml
network:
  hostname: gw.example.com
  interfaces:
    eth0: {dhcp: false, address: 192.0.2.10/24, gateway: 192.0.2.1}
    eth1: {dhcp: true}
  dns: {servers: [192.0.2.53], search: [example.com]}
  hosts: {192.0.2.25: [mail.example.com, mail]}
```

The fields follow the network pages admins know from other mail gateways: per interface DHCP or
a static address with netmask, broadcast and gateway; a fully qualified hostname; one to
three DNS servers and search domains; extra /etc/hosts lines. `parse_network` returns
every problem at once, each naming the field and the fix, in the same form as the relay's
`mta:` checks (host names are checked by the very same functions).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any

from relay.addresses import has_control_chars
from relay.config import check_bool, check_domain, check_fqdn, refuse_control_chars

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface

MAX_DNS_SERVERS = 3  # glibc's resolver reads no more (MAXNS)
MAX_SEARCH_DOMAINS = 6
MAX_HOSTNAME = 64  # the kernel's HOST_NAME_MAX
MTU_RANGE = (576, 9216)
INTERFACE_KEYS = ("dhcp", "address", "gateway", "broadcast", "mtu")
DNS_KEYS = ("servers", "search")
NETWORK_KEYS = ("hostname", "interfaces", "dns", "hosts")
IFNAMSIZ = 16  # the kernel's limit for an interface name, its final NUL included
# The kernel refuses a slash, a colon and white space in an interface name (dev_valid_name);
# networkd reads Name= as shell globs, so *, ?, [ and ] would match other links, a leading !
# would match every link but this one, and quotes and backslashes would be taken apart.
_IFNAME = re.compile(r"[^\s/:*?\[\]\\\"'!][^\s/:*?\[\]\\\"']*")


@dataclass(frozen=True)
class InterfaceConfig:
    name: str
    dhcp: bool = False
    addresses: tuple[IPInterface, ...] = ()
    gateways: tuple[IPAddress, ...] = ()
    broadcast: ipaddress.IPv4Address | None = None
    mtu: int | None = None


@dataclass(frozen=True)
class DnsConfig:
    servers: tuple[IPAddress, ...] = ()
    search: tuple[str, ...] = ()


@dataclass(frozen=True)
class NetworkConfig:
    hostname: str | None = None
    interfaces: tuple[InterfaceConfig, ...] = ()
    dns: DnsConfig = DnsConfig()
    hosts: tuple[tuple[IPAddress, tuple[str, ...]], ...] = ()

    def interface(self, name: str) -> InterfaceConfig | None:
        return next((interface for interface in self.interfaces if interface.name == name), None)

    @property
    def uses_dhcp(self) -> bool:
        return any(interface.dhcp for interface in self.interfaces)


class Problems(list):
    """Problem lines, each `field: what is wrong: what to do`."""

    def add(self, where: str, message: str) -> None:
        self.append(f"{where}: {message}")


# --- single values: each returns the clean value or raises ValueError(message) ---


def check_hostname(value: Any) -> str:
    name = check_fqdn(value)
    if len(name) > MAX_HOSTNAME:
        raise ValueError(f"{value!r} is longer than {MAX_HOSTNAME} characters, the most the kernel takes: use a shorter name")
    return name


def check_interface_name(name: Any) -> str:
    if (not isinstance(name, str) or not _IFNAME.fullmatch(name) or has_control_chars(name)
            or len(name.encode()) >= IFNAMSIZ or name in (".", "..")):
        raise ValueError(
            f"{name!r} is not an interface name: use the kernel's name such as eth0 or ens18 "
            f"(at most {IFNAMSIZ - 1} bytes; no spaces, slashes, colons, quotes, or the patterns * ? [ ] !)"
        )
    if name == "lo":
        raise ValueError("the loopback interface is set up by the system: leave lo out")
    return name


def check_host_address(value: Any) -> IPInterface:
    """An address with its prefix, like 192.0.2.10/24 or 192.0.2.10/255.255.255.0."""
    text = str(value).strip() if isinstance(value, (str, int)) else None
    if text is None or "/" not in text:
        raise ValueError(
            f"{value!r} has no prefix length: write the address with its netmask, "
            "like 192.0.2.10/24 or 192.0.2.10/255.255.255.0"
        )
    try:
        address = ipaddress.ip_interface(text)
    except ValueError:
        raise ValueError(f"{value!r} is not an address with a prefix: write it like 192.0.2.10/24") from None
    ip, network = address.ip, address.network
    if ip.is_multicast or ip.is_unspecified or ip.is_loopback or (ip.version == 6 and ip.is_link_local):
        raise ValueError(f"{ip} is not an address a host can use on a network: use a unicast address such as 192.0.2.10/24")
    if ip.version == 4 and network.prefixlen < 31:
        if ip == network.network_address:
            raise ValueError(
                f"{ip} is the network address of {network}, not a host address: "
                f"use one from {network.network_address + 1} to {network.broadcast_address - 1}"
            )
        if ip == network.broadcast_address:
            raise ValueError(
                f"{ip} is the broadcast address of {network}, not a host address: "
                f"use one from {network.network_address + 1} to {network.broadcast_address - 1}"
            )
    return address


def check_ip(value: Any, example: str = "192.0.2.53") -> IPAddress:
    try:
        return ipaddress.ip_address(str(value).strip())
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address: write it like {example}") from None


def check_mtu(value: Any) -> int:
    low, high = MTU_RANGE
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{value!r} is not an MTU: use {low} to {high} bytes (1500 for plain Ethernet)")
    return value


def _as_list(value: Any) -> list | None:
    if value is None:
        return []
    if isinstance(value, (str, int)):
        return [value]
    return value if isinstance(value, list) else None


# --- an interface ---


def _host_range(network) -> str:
    if network.version == 4 and network.prefixlen < 31:
        return f"{network.network_address + 1} to {network.broadcast_address - 1}"
    return f"an address in {network}"


def _check_gateway(where: str, gateway: IPAddress, addresses: list[IPInterface], problems: Problems) -> bool:
    same_family = [address for address in addresses if address.version == gateway.version]
    if not same_family:
        family = "IPv4" if gateway.version == 4 else "IPv6"
        problems.add(where, f"{gateway} needs an {family} address on this interface: add one in the gateway's subnet to address")
        return False
    if gateway.version == 6 and gateway.is_link_local:
        return True
    inside = [address for address in same_family if gateway in address.network]
    if not inside:
        address = same_family[0]
        problems.add(
            where,
            f"{gateway} is not inside {address.network} (the subnet of {address}): the gateway must be on the "
            f"interface's own subnet: use {_host_range(address.network)}, or correct the address's prefix",
        )
        return False
    address = inside[0]
    network = address.network
    if gateway == address.ip:
        problems.add(where, f"{gateway} is this interface's own address: the gateway is the router, such as {network.network_address + 1}")
        return False
    if gateway.version == 4 and network.prefixlen < 31:
        if gateway == network.network_address:
            problems.add(where, f"{gateway} is the network address of {network}, not a router: use {_host_range(network)}")
            return False
        if gateway == network.broadcast_address:
            problems.add(where, f"{gateway} is the broadcast address of {network}, not a router: use {_host_range(network)}")
            return False
    return True


def parse_interface(name: str, data: Any, problems: Problems) -> InterfaceConfig | None:
    where = f"network.interfaces.{name}"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        problems.add(where, "must be a mapping such as {dhcp: true} or {address: 192.0.2.10/24, gateway: 192.0.2.1}")
        return None
    before = len(problems)
    for key in data:
        if key not in INTERFACE_KEYS:
            problems.add(f"{where}.{key}", f"unknown key; known keys are {', '.join(INTERFACE_KEYS)}")
    dhcp = False
    if "dhcp" in data:
        try:
            dhcp = check_bool(data["dhcp"])
        except ValueError as error:
            problems.add(f"{where}.dhcp", f"{error}: true takes the address from a DHCP server, false uses address")

    addresses: list[IPInterface] = []
    raw_addresses = _as_list(data.get("address"))
    if raw_addresses is None:
        problems.add(f"{where}.address", "must be an address like 192.0.2.10/24, or a list of them")
        raw_addresses = []
    many = len(raw_addresses) > 1
    for index, value in enumerate(raw_addresses):
        field = f"{where}.address[{index}]" if many else f"{where}.address"
        try:
            address = check_host_address(value)
        except ValueError as error:
            problems.add(field, str(error))
            continue
        if address.ip in {known.ip for known in addresses}:
            problems.add(field, f"{address.ip} is listed twice: keep one")
            continue
        addresses.append(address)
    if dhcp and raw_addresses:
        problems.add(f"{where}.address", "not used with dhcp: true (the DHCP server assigns the address): remove it or set dhcp: false")
    if not dhcp and not raw_addresses:
        problems.add(f"{where}.address", "required when dhcp is false: write it like 192.0.2.10/24, or set dhcp: true")

    addresses_known = len(problems) == before  # else the gateway and broadcast checks would only repeat it
    gateways: list[IPAddress] = []
    raw_gateways = _as_list(data.get("gateway"))
    if raw_gateways is None:
        problems.add(f"{where}.gateway", "must be an address like 192.0.2.1, or a list with one IPv4 and one IPv6 gateway")
        raw_gateways = []
    if dhcp and raw_gateways:
        problems.add(f"{where}.gateway", "not used with dhcp: true (the DHCP server names the gateway): remove it or set dhcp: false")
        raw_gateways = []
    many = len(raw_gateways) > 1
    for index, value in enumerate(raw_gateways):
        field = f"{where}.gateway[{index}]" if many else f"{where}.gateway"
        try:
            gateway = check_ip(value, "192.0.2.1")
        except ValueError as error:
            problems.add(field, str(error))
            continue
        if any(known.version == gateway.version for known in gateways):
            problems.add(field, f"a second IPv{gateway.version} gateway: an interface has at most one per address family")
            continue
        if not addresses_known or _check_gateway(field, gateway, addresses, problems):
            gateways.append(gateway)

    broadcast = None
    if data.get("broadcast") not in (None, ""):
        field = f"{where}.broadcast"
        try:
            broadcast = check_ip(data["broadcast"], "192.0.2.255")
        except ValueError as error:
            problems.add(field, str(error))
        else:
            ipv4 = [address for address in addresses if address.version == 4]
            if dhcp:
                problems.add(field, "not used with dhcp: true: remove it or set dhcp: false")
            elif broadcast.version != 4:
                problems.add(field, f"{broadcast} is not an IPv4 address: only IPv4 has broadcast addresses")
            elif not addresses_known:
                pass
            elif ipv4 and broadcast not in ipv4[0].network:
                problems.add(field, f"{broadcast} is not inside {ipv4[0].network}: use {ipv4[0].network.broadcast_address} or leave it out")
            elif not ipv4 and not raw_addresses:
                problems.add(field, "needs an IPv4 address on this interface: add address or leave broadcast out")

    mtu = None
    if data.get("mtu") is not None:
        try:
            mtu = check_mtu(data["mtu"])
        except ValueError as error:
            problems.add(f"{where}.mtu", str(error))
        else:
            if mtu < 1280 and any(address.version == 6 for address in addresses):
                problems.add(f"{where}.mtu", f"{mtu} is below 1280, the least IPv6 needs: raise it or remove the IPv6 address")
    if len(problems) > before:
        return None
    return InterfaceConfig(name, dhcp, tuple(addresses), tuple(gateways), broadcast, mtu)


# --- the whole section ---


def _parse_interfaces(data: Any, problems: Problems) -> list[InterfaceConfig]:
    if data is None:
        return []
    if not isinstance(data, dict):
        problems.add("network.interfaces", "must be a mapping of interface names to settings, such as eth0: {dhcp: true}")
        return []
    interfaces = []
    for name, spec in data.items():
        try:
            check_interface_name(name)
        except ValueError as error:
            problems.add(f"network.interfaces.{name}", str(error))
            continue
        interface = parse_interface(name, spec, problems)
        if interface:
            interfaces.append(interface)
    _check_across_interfaces(interfaces, problems)
    return interfaces


def _check_across_interfaces(interfaces: list[InterfaceConfig], problems: Problems) -> None:
    seen: list[tuple[str, IPInterface]] = []
    default_by_family: dict[int, tuple[str, IPAddress]] = {}
    for interface in interfaces:
        where = f"network.interfaces.{interface.name}"
        for address in interface.addresses:
            for other_name, other in seen:
                if other.version == address.version and other.network.overlaps(address.network):
                    problems.add(
                        f"{where}.address",
                        f"{address} overlaps {other_name}'s {other}: two interfaces in one subnet confuse routing: "
                        "use a different subnet or leave one interface out",
                    )
            seen.append((interface.name, address))
        for gateway in interface.gateways:
            if gateway.version in default_by_family:
                other_name, other = default_by_family[gateway.version]
                problems.add(
                    f"{where}.gateway",
                    f"{other_name} already has the default gateway {other}: only one interface may have an "
                    f"IPv{gateway.version} gateway: remove one",
                )
            else:
                default_by_family[gateway.version] = (interface.name, gateway)


def _parse_dns(data: Any, problems: Problems) -> DnsConfig:
    if data is None:
        return DnsConfig()
    if not isinstance(data, dict):
        problems.add("network.dns", "must be a mapping such as {servers: [192.0.2.53], search: [example.com]}")
        return DnsConfig()
    for key in data:
        if key not in DNS_KEYS:
            problems.add(f"network.dns.{key}", f"unknown key; known keys are {', '.join(DNS_KEYS)}")
    servers: list[IPAddress] = []
    raw = _as_list(data.get("servers"))
    if raw is None:
        problems.add("network.dns.servers", "must be a list of addresses such as [192.0.2.53]")
        raw = []
    if len(raw) > MAX_DNS_SERVERS:
        problems.add("network.dns.servers", f"{len(raw)} servers: the resolver uses at most {MAX_DNS_SERVERS}: keep the first three")
    for index, value in enumerate(raw):
        try:
            server = check_ip(value)
        except ValueError as error:
            problems.add(f"network.dns.servers[{index}]", str(error))
            continue
        if server in servers:
            problems.add(f"network.dns.servers[{index}]", f"{server} is listed twice: keep one")
        else:
            servers.append(server)
    search: list[str] = []
    raw = _as_list(data.get("search"))
    if raw is None:
        problems.add("network.dns.search", "must be a list of domains such as [example.com]")
        raw = []
    if len(raw) > MAX_SEARCH_DOMAINS:
        problems.add("network.dns.search", f"{len(raw)} domains: use at most {MAX_SEARCH_DOMAINS}")
    for index, value in enumerate(raw):
        try:
            search.append(check_domain(value))
        except ValueError as error:
            problems.add(f"network.dns.search[{index}]", str(error))
    return DnsConfig(tuple(servers), tuple(search))


def _parse_hosts(data: Any, problems: Problems) -> list[tuple[IPAddress, tuple[str, ...]]]:
    if data is None:
        return []
    if not isinstance(data, dict):
        problems.add("network.hosts", "must be a mapping of addresses to names, such as {192.0.2.25: [mail.example.com]}")
        return []
    entries = []
    for key, names in data.items():
        where = f"network.hosts.{key}"
        try:
            address = check_ip(key, "192.0.2.25")
        except ValueError as error:
            problems.add(where, str(error))
            continue
        raw = _as_list(names)
        if not raw:
            problems.add(where, "needs at least one name, such as [mail.example.com]")
            continue
        clean = []
        for index, name in enumerate(raw):
            try:
                clean.append(check_domain(name))
            except ValueError as error:
                problems.add(f"{where}[{index}]", str(error))
        entries.append((address, tuple(clean)))
    return entries


def field_paths() -> list[tuple[tuple[str, ...], bool]]:
    """Every field of the section as (path of keys, is it a list); "*" is a key of the admin's choosing
    (an interface name, a hosts address), itself a field."""
    paths = [(("hostname",), False), (("interfaces", "*"), False), (("hosts", "*"), True)]
    paths += [(("interfaces", "*", key), key in ("address", "gateway")) for key in INTERFACE_KEYS]
    paths += [(("dns", key), True) for key in DNS_KEYS]
    assert {path[0] for path, _ in paths} == set(NETWORK_KEYS), "a key of the section is missing here"
    return paths


def parse_network(data: Any) -> tuple[NetworkConfig | None, list[str]]:
    """Validate a `network:` section; returns (config, []) or (None, problems)."""
    problems = Problems()
    if data is None:
        return NetworkConfig(), []
    if not isinstance(data, dict):
        return None, ["network: must be a mapping with hostname, interfaces and dns"]
    for key in data:
        if key not in NETWORK_KEYS:
            problems.add(f"network.{key}", f"unknown key; known keys are {', '.join(NETWORK_KEYS)}")
    hostname = None
    if data.get("hostname") is not None:
        try:
            hostname = check_hostname(data["hostname"])
        except ValueError as error:
            problems.add("network.hostname", str(error))
    interfaces = _parse_interfaces(data.get("interfaces"), problems)
    dns = _parse_dns(data.get("dns"), problems)
    hosts = _parse_hosts(data.get("hosts"), problems)
    problems = Problems(refuse_control_chars("network", data, problems))
    wrote_servers = any(problem.startswith("network.dns") for problem in problems)
    if interfaces and not any(i.dhcp for i in interfaces) and not dns.servers and not wrote_servers:
        problems.add(
            "network.dns.servers",
            "at least one DNS server is needed when no interface uses DHCP: write it like servers: [192.0.2.53]",
        )
    if problems:
        return None, list(problems)
    return NetworkConfig(hostname, tuple(interfaces), dns, tuple(hosts)), []
