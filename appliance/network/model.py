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
every problem at once, each naming the field and the fix. The fields are described with the
relay's `relay.fields.Field` and walked by the same `parse_section` as its `mta:` section
(host names are checked by the very same functions); what depends on more than one field
(an address and its gateway, DHCP and a static address) is checked here after the walk.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from dataclasses import dataclass
from typing import Any

from relay.addresses import has_control_chars
from relay.config import check_bool, check_domain, check_fqdn, refuse_control_chars
from relay.fields import WRONG, Field, as_items, item_where, parse_section, parse_value

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface

MAX_DNS_SERVERS = 3  # glibc's resolver reads no more (MAXNS)
MAX_SEARCH_DOMAINS = 6
MAX_HOSTNAME = 64  # the kernel's HOST_NAME_MAX
MTU_RANGE = (576, 9216)
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


def check_dhcp(value: Any) -> bool:
    try:
        return check_bool(value)
    except ValueError as error:
        raise ValueError(f"{error}: true takes the address from a DHCP server, false uses address") from None


def check_gateway(value: Any) -> IPAddress:
    return check_ip(value, "192.0.2.1")


def check_broadcast(value: Any) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    return None if value in (None, "") else check_ip(value, "192.0.2.255")


def check_optional_mtu(value: Any) -> int | None:
    return None if value is None else check_mtu(value)


def check_optional_hostname(value: Any) -> str | None:
    return None if value is None else check_hostname(value)


def check_hosts_address(value: Any) -> IPAddress:
    return check_ip(value, "192.0.2.25")


INTERFACE_FIELDS = (
    Field("dhcp", "bool", check_dhcp, "DHCP", "the address and gateway come from a DHCP server",
          doc="`true`: the address, gateway and DNS come from DHCP; `address`, `gateway` and `broadcast` are then "
              "refused. Default `false`."),
    Field("address", "list", check_host_address, "Address", "with its prefix, such as 192.0.2.10/24",
          doc="With `dhcp: false`, required: `192.0.2.10/24` or `192.0.2.10/255.255.255.0`, or a list that may add "
              "IPv6 addresses. Not the subnet's network or broadcast address; no two interfaces in overlapping "
              "subnets.",
          shape="must be an address like 192.0.2.10/24, or a list of them", index_one=False),
    Field("gateway", "list", check_gateway, "Default gateway", "such as 192.0.2.1, in the address's subnet; "
          "empty: no default route here",
          doc="The default gateway: inside the interface's subnet, not its network, broadcast or own address. A list "
              "may hold one IPv4 and one IPv6 gateway (an IPv6 one may be link-local). Only one interface may have "
              "a gateway per address family.",
          shape="must be an address like 192.0.2.1, or a list with one IPv4 and one IPv6 gateway", index_one=False),
    Field("broadcast", "text", check_broadcast, "Broadcast", "the IPv4 broadcast address; empty: the subnet's",
          doc="Optional: inside the IPv4 subnet; default the subnet's broadcast address."),
    Field("mtu", "number", check_optional_mtu, "MTU", f"{MTU_RANGE[0]} to {MTU_RANGE[1]} bytes; empty: the link's",
          doc=f"Optional, {MTU_RANGE[0]} to {MTU_RANGE[1]} (at least 1280 with an IPv6 address)."),
)
DNS_FIELDS = (
    Field("servers", "list", check_ip, "DNS servers", f"such as 192.0.2.53, at most {MAX_DNS_SERVERS}",
          doc=f"Up to {MAX_DNS_SERVERS} addresses (the resolver reads no more). "
              "At least one is required when no interface uses DHCP.",
          shape="must be a list of addresses such as [192.0.2.53]"),
    Field("search", "list", check_domain, "Search domains", f"such as example.com, at most {MAX_SEARCH_DOMAINS}",
          doc=f"Up to {MAX_SEARCH_DOMAINS} search domains.",
          shape="must be a list of domains such as [example.com]"),
)


def _interface_entry(where: str, data: Any, problems: list[str]) -> InterfaceConfig | None:
    """One interface's settings, which depend on each other (see parse_interface)."""
    return parse_interface(where.removeprefix("network.interfaces."), data, problems)


HOST_NAMES = Field("*", "list", check_domain, "Names", "names for the address, one per line")


def _host_names(where: str, value: Any, problems: list[str]) -> Any:
    """A hosts line's names: at least one."""
    if not as_items(value):
        problems.append(f"{where}: needs at least one name, such as [mail.example.com]")
        return WRONG
    return parse_value(where, HOST_NAMES, value, problems)


NETWORK_FIELDS = (
    Field("hostname", "text", check_optional_hostname, "Hostname", "such as gw.example.com; empty: left as it is",
          doc=f"The fully qualified name (same rules as `mta.hostname`, checked by the same function), at most "
              f"{MAX_HOSTNAME} characters (the kernel's limit). Left out: the hostname, `/etc/hostname` and "
              "`/etc/hosts` are not touched."),
    Field("interfaces", "map", None, "Interfaces", "settings per interface, by the kernel's name",
          key_check=check_interface_name,
          doc=f"The kernel's interface name (`eth0`, `ens18`; at most {IFNAMSIZ - 1} bytes; not `lo`). No white "
              "space, `/` or `:` (the kernel refuses them), and none of networkd's pattern characters `* ? [ ]`, a "
              "leading `!`, quotes or `\\`, so its `.network` file matches this link only.",
          entry=Field("*", "section", None, "Interface", "the kernel's name, such as eth0", fields=INTERFACE_FIELDS,
                      parse=_interface_entry),
          shape="must be a mapping of interface names to settings, such as eth0: {dhcp: true}"),
    Field("dns", "section", None, "DNS", "resolvers and search domains", fields=DNS_FIELDS,
          shape="must be a mapping such as {servers: [192.0.2.53], search: [example.com]}"),
    Field("hosts", "map", None, "Hosts", "extra /etc/hosts lines: address to names", key_check=check_hosts_address,
          doc="Address to names, written after the standard lines of `/etc/hosts`.",
          entry=dataclasses.replace(HOST_NAMES, parse=_host_names),
          shape="must be a mapping of addresses to names, such as {192.0.2.25: [mail.example.com]}"),
)


def _checked(where: str, raw: list, check, field: Field) -> list[tuple[str, Any]]:
    """(where, clean value) for each item of a list that passes its check (the walk named the others)."""
    clean = []
    for index, value in enumerate(raw):
        try:
            clean.append((item_where(where, index, len(raw), field), check(value)))
        except ValueError:
            continue
    return clean


def parse_interface(name: str, data: Any, problems: Problems) -> InterfaceConfig | None:
    where = f"network.interfaces.{name}"
    before = len(problems)
    values = parse_section(where, data, INTERFACE_FIELDS, problems,
                           "must be a mapping such as {dhcp: true} or {address: 192.0.2.10/24, gateway: 192.0.2.1}")
    if values is None:
        return None
    data = data or {}
    dhcp = values.get("dhcp", False)
    address_field, gateway_field = INTERFACE_FIELDS[1], INTERFACE_FIELDS[2]

    addresses: list[IPInterface] = []
    raw_addresses = as_items(data.get("address")) or []
    for field, address in _checked(f"{where}.address", raw_addresses, check_host_address, address_field):
        if address.ip in {known.ip for known in addresses}:
            problems.append(f"{field}: {address.ip} is listed twice: keep one")
        else:
            addresses.append(address)
    if dhcp and raw_addresses:
        problems.add(f"{where}.address", "not used with dhcp: true (the DHCP server assigns the address): remove it or set dhcp: false")
    if not dhcp and not raw_addresses:
        problems.add(f"{where}.address", "required when dhcp is false: write it like 192.0.2.10/24, or set dhcp: true")

    addresses_known = len(problems) == before  # else the gateway and broadcast checks would only repeat it
    gateways: list[IPAddress] = []
    raw_gateways = as_items(data.get("gateway")) or []
    if dhcp and raw_gateways:
        problems.add(f"{where}.gateway", "not used with dhcp: true (the DHCP server names the gateway): remove it or set dhcp: false")
        raw_gateways = []
    for field, gateway in _checked(f"{where}.gateway", raw_gateways, check_gateway, gateway_field):
        if any(known.version == gateway.version for known in gateways):
            problems.add(field, f"a second IPv{gateway.version} gateway: an interface has at most one per address family")
            continue
        if not addresses_known or _check_gateway(field, gateway, addresses, problems):
            gateways.append(gateway)

    broadcast = values.get("broadcast")
    if broadcast is not None:
        field = f"{where}.broadcast"
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

    mtu = values.get("mtu")
    if mtu is not None and mtu < 1280 and any(address.version == 6 for address in addresses):
        problems.add(f"{where}.mtu", f"{mtu} is below 1280, the least IPv6 needs: raise it or remove the IPv6 address")
    if len(problems) > before:
        return None
    return InterfaceConfig(name, dhcp, tuple(addresses), tuple(gateways), broadcast, mtu)


# --- the whole section ---


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


def _check_dns(data: Any, problems: Problems) -> tuple[IPAddress, ...]:
    """The servers without repeats; a problem for too many servers or search domains, and for each repeat."""
    if not isinstance(data, dict):
        return ()
    raw = as_items(data.get("servers")) or []
    if len(raw) > MAX_DNS_SERVERS:
        problems.add("network.dns.servers", f"{len(raw)} servers: the resolver uses at most {MAX_DNS_SERVERS}: keep the first three")
    servers: list[IPAddress] = []
    for field, server in _checked("network.dns.servers", raw, check_ip, DNS_FIELDS[0]):
        if server in servers:
            problems.add(field, f"{server} is listed twice: keep one")
        else:
            servers.append(server)
    search = as_items(data.get("search")) or []
    if len(search) > MAX_SEARCH_DOMAINS:
        problems.add("network.dns.search", f"{len(search)} domains: use at most {MAX_SEARCH_DOMAINS}")
    return tuple(servers)


def parse_network(data: Any) -> tuple[NetworkConfig | None, list[str]]:
    """Validate a `network:` section; returns (config, []) or (None, problems)."""
    problems = Problems()
    if data is None:
        return NetworkConfig(), []
    if not isinstance(data, dict):
        return None, ["network: must be a mapping with hostname, interfaces and dns"]
    values = parse_section("network", data, NETWORK_FIELDS, problems) or {}
    interfaces = [interface for interface in values.get("interfaces", {}).values() if interface is not None]
    _check_across_interfaces(interfaces, problems)
    servers = _check_dns(data.get("dns"), problems)
    dns = DnsConfig(servers, values.get("dns", {}).get("search", ()))
    hosts = tuple(values.get("hosts", {}).items())
    problems = Problems(refuse_control_chars("network", data, problems))
    wrote_servers = any(problem.startswith("network.dns") for problem in problems)
    if interfaces and not any(i.dhcp for i in interfaces) and not dns.servers and not wrote_servers:
        problems.add(
            "network.dns.servers",
            "at least one DNS server is needed when no interface uses DHCP: write it like servers: [192.0.2.53]",
        )
    if problems:
        return None, list(problems)
    return NetworkConfig(values.get("hostname"), tuple(interfaces), dns, hosts), []
