"""One PTR/HELO verdict: the daemon, the CLI, the console and the wizard agree, whatever form the address is in."""

from __future__ import annotations

import dns.reversename
import pytest

from appliance.diagnostics.dns_lookup import make_resolver
from appliance.diagnostics.helo import PASS, check_helo
from console.appliance_link import ApplianceLink
from console.wizard import system
from relay.config import MtaConfig
from relay.names import check_names, public_name
from relay.routing import make_resolver as relay_resolver

from .appliance_support import dns_server as start_dns_server

RECORDS = {
    (dns.reversename.from_address("2001:db8::10").to_text(), "PTR"): ["gw.example.com."],
    (dns.reversename.from_address("2001:db8::20").to_text(), "PTR"): ["stale.example.com."],
    ("gw.example.com", "A"): ["192.0.2.10", "192.0.2.30"],
    ("gw.example.com", "AAAA"): ["2001:db8::10"],
    ("10.2.0.192.in-addr.arpa", "PTR"): ["gw.example.com."],
    ("20.2.0.192.in-addr.arpa", "PTR"): ["stale.example.com."],
    ("30.2.0.192.in-addr.arpa", "PTR"): ["stale.example.com.", "gw.example.com."],
    ("stale.example.com", "A"): ["192.0.2.21"],
    # what a home router's DNS or LLMNR answers; DNS resolves the names back, so only their form tells
    ("40.2.0.192.in-addr.arpa", "PTR"): ["postern.local."],
    ("postern.local", "A"): ["192.0.2.40"],
    ("41.2.0.192.in-addr.arpa", "PTR"): ["postern."],
    ("postern", "A"): ["192.0.2.41"],
    ("42.2.0.192.in-addr.arpa", "PTR"): ["gw.home.arpa.", "mail.internal."],
    ("gw.home.arpa", "A"): ["192.0.2.42"],
    ("mail.internal", "A"): ["192.0.2.42"],
}


@pytest.fixture(scope="module")
def dns_server():
    server = start_dns_server(RECORDS)
    yield server
    server.stop()


async def verdicts(server, tmp_path, helo: str, address: str) -> dict[str, bool]:
    """Does the HELO name pass for this address, as each place that checks it says?"""
    config = MtaConfig(hostname=helo, dns_servers=(server.address,))
    daemon = await check_names(config, relay_resolver(config), address)
    cli = check_helo(make_resolver([server.address]), helo, address)
    console = ApplianceLink(tmp_path / "postern.yaml", tmp_path).diagnostics.helo_check(address, helo, server.address)
    wizard = system.ptr_check(helo, address, [server.address])
    return {"daemon": daemon.warnings == [], "cli": cli.verdict == PASS, "console": console.verdict == PASS,
            "wizard": wizard.verdict == PASS}


@pytest.mark.parametrize("helo, address, passed", [
    ("gw.example.com", "2001:db8::10", True),
    ("gw.example.com", "2001:DB8::10", True),  # capitals
    ("gw.example.com", "2001:db8:0:0:0:0:0:10", True),  # expanded
    ("gw.example.com", "2001:0db8:0000::0010", True),  # leading zeros
    ("gw.example.com", "::ffff:192.0.2.10", True),  # IPv4-mapped: the PTR record of 192.0.2.10
    ("GW.Example.COM", "192.0.2.10", True),  # a name's case does not count
    ("gw.example.com", "192.0.2.30", True),  # the second PTR name is the HELO name, forward-confirmed
    ("gw.example.com", "192.0.2.20", False),  # the PTR name does not resolve back
    ("mail.example.com", "2001:DB8::10", False),  # another name than the PTR name
])
async def test_every_place_gives_the_same_verdict(dns_server, tmp_path, helo, address, passed):
    assert await verdicts(dns_server, tmp_path, helo, address) == {
        "daemon": passed, "cli": passed, "console": passed, "wizard": passed}


@pytest.mark.parametrize("address, private", [
    ("192.0.2.40", ["postern.local"]), ("192.0.2.41", ["postern"]), ("192.0.2.42", ["gw.home.arpa", "mail.internal"])])
async def test_a_private_ptr_name_is_as_good_as_none_and_never_offered(dns_server, tmp_path, address, private):
    assert await verdicts(dns_server, tmp_path, "gw.example.com", address) == {
        "daemon": False, "cli": False, "console": False, "wizard": False}
    for helo in ("gw.example.com", private[0]):  # even when the HELO name is that private name
        config = MtaConfig(hostname=helo, dns_servers=(dns_server.address,))
        daemon = await check_names(config, relay_resolver(config), address)
        cli = check_helo(make_resolver([dns_server.address]), helo, address)
        words = " ".join(daemon.warnings + cli.lines)
        assert "private name" in words
        assert not any(f"to {name}" in words for name in private), words
    [warning] = (await check_names(MtaConfig(hostname="gw.example.com", dns_servers=(dns_server.address,)),
                                   relay_resolver(MtaConfig(dns_servers=(dns_server.address,))), address)).warnings
    named, _, rest = warning.removeprefix(f"the PTR record of {address} names only ").partition(", a private")
    assert sorted(named.split(", ")) == private  # in the order DNS gave them
    assert rest == (" name no receiver can look up: ask whoever runs the address (your provider) for one naming "
                    "gw.example.com, since many receivers distrust mail from an address without one")


@pytest.mark.parametrize("name, public", [
    ("gw.example.com", True), ("GW.Example.COM.", True), ("mail.locality.example", True), ("lan.example.net", True),
    ("postern", False), ("localhost", False), ("postern.local", False), ("POSTERN.LOCAL.", False),
    ("gw.localdomain", False), ("gw.lan", False), ("router.home.arpa", False), ("gw.internal", False),
    ("app.localhost", False), ("gw..example.com", False),
])
def test_which_names_can_be_public(name, public):
    assert public_name(name) is public


def test_the_address_is_shown_in_its_canonical_form(dns_server):
    verdict = check_helo(make_resolver([dns_server.address]), "gw.example.com", "2001:DB8:0:0:0:0:0:10")
    assert verdict.lines == ["PTR of 2001:db8::10: gw.example.com",
                             "gw.example.com resolves back to 2001:db8::10: forward-confirmed",
                             "PASS: the HELO name gw.example.com is the forward-confirmed PTR name of 2001:db8::10"]


def test_an_ipv6_address_that_does_not_confirm_asks_for_an_aaaa_record(dns_server):
    verdict = check_helo(make_resolver([dns_server.address]), "stale.example.com", "2001:db8::20")
    assert verdict.lines[-1].startswith(
        "FAIL: the PTR name does not resolve back to 2001:db8::20: add an AAAA record stale.example.com -> 2001:db8::20")


def test_the_wizard_names_an_address_it_cannot_read(dns_server):
    assert system.ptr_check("gw.example.com", "203.0.113", [dns_server.address]) == (
        "203.0.113 is not an IP address: type the public address your mail leaves from")
