"""`show`: the live state of a namespace's interfaces, as CipherMail's "Network info" page lists it."""

from __future__ import annotations

import json
import subprocess

from appliance.network.live import parse_resolv_conf, read_dns, read_live_state

from .conftest import COMMAND, ROOT


def _prepare(netns):
    netns.ip("link", "set", "eth0", "address", "02:00:00:00:00:10", "mtu", "1400", "up")
    netns.ip("addr", "add", "192.0.2.10/24", "brd", "+", "dev", "eth0")
    netns.ip("addr", "add", "2001:db8::10/64", "dev", "eth0", "nodad")
    netns.ip("route", "add", "default", "via", "192.0.2.1")
    netns.ip("addr", "add", "198.51.100.20/24", "dev", "eth1", "valid_lft", "600", "preferred_lft", "600")  # a lease


def test_interfaces_addresses_gateways_and_dhcp_are_read_from_the_namespace(netns, tmp_path):
    _prepare(netns)
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/resolv.conf").write_text("# comment\nnameserver 192.0.2.53\nnameserver 192.0.2.54\nsearch example.com corp.example.com\n")
    state = read_live_state(netns.name, tmp_path)
    eth0 = next(i for i in state.interfaces if i.name == "eth0")
    assert (eth0.mac, eth0.mtu, eth0.link, eth0.dhcp) == ("02:00:00:00:00:10", 1400, "up", False)
    assert [(a.address, a.broadcast, a.netmask) for a in eth0.addresses] == [
        ("192.0.2.10/24", "192.0.2.255", "255.255.255.0"), ("2001:db8::10/64", None, None)]
    assert eth0.gateways == ("192.0.2.1",)
    eth1 = next(i for i in state.interfaces if i.name == "eth1")
    assert (eth1.link, eth1.dhcp) == ("down", True)
    assert "lo" not in [i.name for i in state.interfaces]
    assert state.default_gateways == ("192.0.2.1 (eth0)",)
    assert state.dns_servers == ("192.0.2.53", "192.0.2.54")
    assert state.search_domains == ("example.com", "corp.example.com")


def test_resolveds_upstream_servers_are_preferred_over_its_stub(tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/resolv.conf").write_text("nameserver 127.0.0.53\n")
    (tmp_path / "run/systemd/resolve").mkdir(parents=True)
    (tmp_path / "run/systemd/resolve/resolv.conf").write_text("nameserver 192.0.2.53\nsearch example.com\n")
    assert read_dns(tmp_path) == (["192.0.2.53"], ["example.com"])
    assert parse_resolv_conf("domain a.example\nnameserver 192.0.2.1 # x\n") == (["192.0.2.1"], ["a.example"])
    # systemd-resolved says "no search domain" as `search .`
    assert parse_resolv_conf("nameserver 192.0.2.53\nsearch .\n") == (["192.0.2.53"], [])


def test_show_prints_the_table_and_json(netns):
    _prepare(netns)
    result = subprocess.run([COMMAND, "show", "--netns", netns.name], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[1].split() == ["interface", "MAC", "link", "MTU", "DHCP", "address", "broadcast", "netmask", "gateway"]
    assert "eth0 02:00:00:00:00:10 up 1400 no 192.0.2.10/24 192.0.2.255 255.255.255.0 192.0.2.1" in [" ".join(l.split()) for l in lines]
    assert "default gateway: 192.0.2.1 (eth0)" in lines
    inside = netns.run("show", "--json")
    assert inside.returncode == 0, inside.stderr
    names = [i["name"] for i in json.loads(inside.stdout)["interfaces"]]
    assert sorted(names) == ["eth0", "eth1", "peer0", "peer1"]
