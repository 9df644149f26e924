"""Every field of the `network:` section: a wrong value gets one line naming the field and the fix,
and `apply` with it changes nothing: not a file, not an address, not a route."""

from __future__ import annotations

import copy

import pytest

from appliance.network.model import parse_network
from relay.config import parse_mta

from .conftest import files_under, write_config

VALID = {
    "hostname": "gw.example.com",
    "interfaces": {
        "eth0": {"dhcp": False, "address": "192.0.2.10/24", "gateway": "192.0.2.1"},
        "eth1": {"dhcp": True},
    },
    "dns": {"servers": ["192.0.2.53"], "search": ["example.com"]},
}


def with_change(path: str, value):
    """VALID with the value at a dotted path replaced (None deletes it)."""
    document = copy.deepcopy(VALID)
    *parents, last = path.split("/")
    target = document
    for key in parents:
        target = target.setdefault(key, {})
    if value is None:
        target.pop(last, None)
    else:
        target[last] = value
    return document


E0 = "interfaces/eth0"
CASES = [
    # (where to change, new value, the field the message names, a piece of the message)
    ("hostname", "gw", "network.hostname", "'gw' is not a fully qualified host name: use letters, digits and hyphens"),
    ("hostname", "gw_1.example.com", "network.hostname", "is not a fully qualified host name"),
    ("hostname", "a" * 60 + ".example.com", "network.hostname", "is longer than 64 characters, the most the kernel takes"),
    ("unknown", 1, "network.unknown", "unknown key; known keys are hostname, interfaces, dns, hosts"),
    ("interfaces", ["eth0"], "network.interfaces", "must be a mapping of interface names to settings"),
    ("interfaces/eth 0", {"dhcp": True}, "network.interfaces.eth 0", "'eth 0' is not an interface name"),
    ("interfaces/averyveryverylongname", {"dhcp": True}, "network.interfaces.averyveryverylongname",
     "is not an interface name: use the kernel's name such as eth0 or ens18 (at most 15 bytes"),
    ("interfaces/lo", {"dhcp": True}, "network.interfaces.lo", "the loopback interface is set up by the system: leave lo out"),
    (E0, "dhcp", "network.interfaces.eth0", "must be a mapping such as {dhcp: true}"),
    (f"{E0}/netmask", "255.255.255.0", "network.interfaces.eth0.netmask",
     "unknown key; known keys are dhcp, address, gateway, broadcast, mtu"),
    (f"{E0}/dhcp", "yes", "network.interfaces.eth0.dhcp", "'yes' is not true or false: true takes the address from a DHCP server"),
    (f"{E0}/address", None, "network.interfaces.eth0.address", "required when dhcp is false: write it like 192.0.2.10/24, or set dhcp: true"),
    (f"{E0}/address", "192.0.2.10", "network.interfaces.eth0.address",
     "'192.0.2.10' has no prefix length: write the address with its netmask, like 192.0.2.10/24 or 192.0.2.10/255.255.255.0"),
    (f"{E0}/address", "192.0.2.300/24", "network.interfaces.eth0.address", "'192.0.2.300/24' is not an address with a prefix"),
    (f"{E0}/address", "192.0.2.0/24", "network.interfaces.eth0.address",
     "192.0.2.0 is the network address of 192.0.2.0/24, not a host address: use one from 192.0.2.1 to 192.0.2.254"),
    (f"{E0}/address", "192.0.2.255/24", "network.interfaces.eth0.address", "192.0.2.255 is the broadcast address of 192.0.2.0/24"),
    (f"{E0}/address", "224.0.0.5/24", "network.interfaces.eth0.address", "224.0.0.5 is not an address a host can use"),
    (f"{E0}/address", ["192.0.2.10/24", "192.0.2.10/25"], "network.interfaces.eth0.address[1]", "192.0.2.10 is listed twice"),
    ("interfaces/eth1/address", "192.0.2.20/24", "network.interfaces.eth1.address",
     "not used with dhcp: true (the DHCP server assigns the address): remove it or set dhcp: false"),
    (f"{E0}/gateway", "198.51.100.1", "network.interfaces.eth0.gateway",
     "198.51.100.1 is not inside 192.0.2.0/24 (the subnet of 192.0.2.10/24): the gateway must be on the interface's "
     "own subnet: use 192.0.2.1 to 192.0.2.254, or correct the address's prefix"),
    (f"{E0}/gateway", "192.0.2.0", "network.interfaces.eth0.gateway", "192.0.2.0 is the network address of 192.0.2.0/24, not a router"),
    (f"{E0}/gateway", "192.0.2.255", "network.interfaces.eth0.gateway", "192.0.2.255 is the broadcast address of 192.0.2.0/24"),
    (f"{E0}/gateway", "192.0.2.10", "network.interfaces.eth0.gateway", "192.0.2.10 is this interface's own address"),
    (f"{E0}/gateway", "router", "network.interfaces.eth0.gateway", "'router' is not an IP address: write it like 192.0.2.1"),
    (f"{E0}/gateway", "2001:db8::1", "network.interfaces.eth0.gateway", "2001:db8::1 needs an IPv6 address on this interface"),
    (f"{E0}/gateway", ["192.0.2.1", "192.0.2.2"], "network.interfaces.eth0.gateway[1]",
     "a second IPv4 gateway: an interface has at most one per address family"),
    ("interfaces/eth1/gateway", "192.0.2.1", "network.interfaces.eth1.gateway", "not used with dhcp: true (the DHCP server names the gateway)"),
    ("interfaces/eth2", {"address": "198.51.100.2/24", "gateway": "198.51.100.1"}, "network.interfaces.eth2.gateway",
     "eth0 already has the default gateway 192.0.2.1: only one interface may have an IPv4 gateway"),
    ("interfaces/eth2", {"address": "192.0.2.20/25"}, "network.interfaces.eth2.address",
     "192.0.2.20/25 overlaps eth0's 192.0.2.10/24: two interfaces in one subnet confuse routing"),
    (f"{E0}/broadcast", "198.51.100.255", "network.interfaces.eth0.broadcast", "198.51.100.255 is not inside 192.0.2.0/24: use 192.0.2.255"),
    (f"{E0}/broadcast", "2001:db8::ff", "network.interfaces.eth0.broadcast", "is not an IPv4 address: only IPv4 has broadcast"),
    (f"{E0}/broadcast", "bcast", "network.interfaces.eth0.broadcast", "'bcast' is not an IP address"),
    (f"{E0}/mtu", 100, "network.interfaces.eth0.mtu", "100 is not an MTU: use 576 to 9216 bytes (1500 for plain Ethernet)"),
    (f"{E0}/mtu", "1500", "network.interfaces.eth0.mtu", "'1500' is not an MTU"),
    (f"{E0}/mtu", True, "network.interfaces.eth0.mtu", "True is not an MTU"),
    (E0, {"address": ["192.0.2.10/24", "2001:db8::10/64"], "mtu": 1200}, "network.interfaces.eth0.mtu",
     "1200 is below 1280, the least IPv6 needs"),
    ("dns", "192.0.2.53", "network.dns", "must be a mapping such as {servers: [192.0.2.53], search: [example.com]}"),
    ("dns/servers", ["192.0.2.53", "192.0.2.54", "192.0.2.55", "192.0.2.56"], "network.dns.servers",
     "4 servers: the resolver uses at most 3: keep the first three"),
    ("dns/servers", ["dns.example.com"], "network.dns.servers[0]", "'dns.example.com' is not an IP address: write it like 192.0.2.53"),
    ("dns/servers", ["192.0.2.53", "192.0.2.53"], "network.dns.servers[1]", "192.0.2.53 is listed twice: keep one"),
    ("dns/servers", {"a": 1}, "network.dns.servers", "must be a list of addresses such as [192.0.2.53]"),
    ("dns/search", ["exa mple.com"], "network.dns.search[0]", "'exa mple.com' is not a domain name: write it like example.com"),
    ("dns/search", [f"d{i}.example" for i in range(7)], "network.dns.search", "7 domains: use at most 6"),
    ("dns/forwarders", ["192.0.2.1"], "network.dns.forwarders", "unknown key; known keys are servers, search"),
    ("hosts", {"mail": ["mail.example.com"]}, "network.hosts.mail", "'mail' is not an IP address: write it like 192.0.2.25"),
    ("hosts", {"192.0.2.25": ["mail_1"]}, "network.hosts.192.0.2.25[0]", "'mail_1' is not a domain name"),
    ("hosts", {"192.0.2.25": []}, "network.hosts.192.0.2.25", "needs at least one name, such as [mail.example.com]"),
    ("hosts", ["192.0.2.25 mail"], "network.hosts", "must be a mapping of addresses to names"),
    # A control character would add lines to the files written from the value, and a pattern
    # in an interface name would make its networkd file match other links, or every link.
    ("hostname", "gw.example.com\n", "network.hostname", "contains a control character (\\n at position 15): remove it"),
    ("hostname", "gw.example.com\u2028", "network.hostname", "contains a control character (\\u2028 at position 15)"),
    ("interfaces/*", {"dhcp": True}, "network.interfaces.*", "'*' is not an interface name"),
    ("interfaces/en*", {"dhcp": True}, "network.interfaces.en*", "'en*' is not an interface name"),
    ("interfaces/eth[01]", {"dhcp": True}, "network.interfaces.eth[01]", "'eth[01]' is not an interface name"),
    ("interfaces/!eth0", {"dhcp": True}, "network.interfaces.!eth0", "'!eth0' is not an interface name"),
    ("interfaces/eth2\n", {"dhcp": True}, "network.interfaces.eth2\\n",
     "the name contains a control character (\\n at position 5): remove it"),
    ("interfaces/eth2\x85", {"dhcp": True}, "network.interfaces.eth2\\x85", "the name contains a control character"),
    (f"{E0}/address", "192.0.2.10/24\n", "network.interfaces.eth0.address", "contains a control character (\\n at position 14)"),
    ("dns/servers", ["192.0.2.53\n"], "network.dns.servers[0]", "contains a control character (\\n at position 11)"),
    ("dns/search", ["example.com\n", "nameserver"], "network.dns.search[0]", "contains a control character (\\n at position 12)"),
    ("hosts", {"192.0.2.25": ["mail.example.com\n", "evil"]}, "network.hosts.192.0.2.25[0]",
     "contains a control character (\\n at position 17)"),
    ("hosts", {"192.0.2.25\r": ["mail.example.com"]}, "network.hosts.192.0.2.25\\r", "the name contains a control character"),
]


def _static_only_without_dns():
    document = with_change("interfaces/eth1", None)
    del document["dns"]["servers"]
    return document


@pytest.mark.parametrize("path, value, field, message", CASES, ids=[f"{c[0]}={c[1]!r}"[:60] for c in CASES])
def test_a_wrong_value_gets_one_line_naming_the_field_and_the_fix(path, value, field, message):
    config, problems = parse_network(with_change(path, value))
    assert config is None
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{field}: "), problems
    assert message in problems[0]


def test_a_static_only_network_needs_a_dns_server():
    config, problems = parse_network(_static_only_without_dns())
    assert problems == [
        "network.dns.servers: at least one DNS server is needed when no interface uses DHCP: "
        "write it like servers: [192.0.2.53]"
    ]


def test_the_issue_example_is_valid_and_every_problem_is_named_at_once():
    config, problems = parse_network(VALID)
    assert problems == []
    assert [i.name for i in config.interfaces] == ["eth0", "eth1"]
    assert str(config.interfaces[0].gateways[0]) == "192.0.2.1"
    _, problems = parse_network({**VALID, "hostname": "gw", "dns": {"servers": ["x"]}})
    assert [p.split(":")[0] for p in problems] == ["network.hostname", "network.dns.servers[0]"]


def test_a_netmask_may_be_written_out_and_ipv6_gateways_may_be_link_local():
    config, problems = parse_network(with_change(E0, {
        "address": ["192.0.2.10/255.255.255.0", "2001:db8::10/64"], "gateway": ["192.0.2.1", "fe80::1"],
        "broadcast": "192.0.2.255", "mtu": 1500,
    }))
    assert problems == []
    assert [str(a) for a in config.interfaces[0].addresses] == ["192.0.2.10/24", "2001:db8::10/64"]


OTHER_BAD_DOCUMENTS = [
    # (document, the field named, a piece of the message)
    ({"network": _static_only_without_dns()}, "network.dns.servers", "at least one DNS server is needed"),
    ({"network": with_change("interfaces/eth9", {"address": "198.51.100.9/24"})}, "network.interfaces.eth9",
     "no interface eth9 on this system (it has lo, peer0, eth0, peer1, eth1): use one of those names"),
    ({"network": VALID, "mta": {"internal_relay": {"port": 0}}}, "mta.internal_relay.port",
     "0 is not a port number: use 1 to 65535"),
    ({"network": VALID, "firewall": {}}, "firewall", "unknown section; known sections are network, mta"),
]
APPLY_CASES = [({"network": with_change(path, value)}, field, message) for path, value, field, message in CASES]
APPLY_CASES += OTHER_BAD_DOCUMENTS


@pytest.mark.parametrize("document, field, message", APPLY_CASES, ids=[f"{c[1]}:{c[2][:30]}" for c in APPLY_CASES])
def test_apply_with_a_wrong_value_changes_nothing(old_network, tmp_path, document, field, message):
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/hostname").write_text("old.example.com\n")
    (root / "etc/resolv.conf").write_text("nameserver 198.51.100.53\n")
    config = write_config(tmp_path / "postern.yaml", document)
    files_before, kernel_before = files_under(root), old_network.state()

    result = old_network.run("apply", "--config", str(config), "--root", str(root))

    assert result.returncode == 1, result.stderr
    assert f"postern-appliance: {field}: " in result.stderr and message in result.stderr, result.stderr
    assert all(out.startswith("postern-appliance: ") for out in result.stderr.splitlines())
    assert files_under(root) == files_before
    assert old_network.state() == kernel_before


def test_the_mta_section_is_judged_by_the_relays_own_validator(tmp_path):
    from appliance.schema import validate_document

    mta = {"hostname": "gw", "listen": ["0.0.0.0:99999"], "relay_domains": ["example.com"]}
    _, relay_problems = parse_mta(mta)
    _, problems = validate_document({"mta": mta})
    assert problems == relay_problems and len(problems) >= 2
