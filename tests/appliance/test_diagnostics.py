"""Diagnostics against a DNS server and SMTP servers on loopback, as an admin runs them."""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import sys
import time
from textwrap import dedent

import pytest

from appliance.diagnostics.dns_lookup import LookupFailed, lookup, lookup_name, make_resolver
from appliance.diagnostics.helo import FAIL, PASS, check_helo
from appliance.diagnostics.next_hop import check_next_hop
from appliance.diagnostics.smtp_probe import ehlo_name
from tests.support.certs import self_signed
from tests.support.dns_server import DnsServer
from tests.support.net import free_port
from tests.support.plain_text_tls import plain_text_tls_hop  # noqa: F401 (a fixture)
from tests.support.scripted_hop import Script, ScriptedHop
from tests.support.sink import Sink

from .conftest import COMMAND, ROOT, write_config

RECORDS = {
    ("example.com", "A"): ["192.0.2.10"],
    ("example.com", "AAAA"): ["2001:db8::10"],
    ("example.com", "MX"): ["10 gw.example.com.", "20 backup.example.com."],
    ("example.com", "TXT"): ['"v=spf1 ip4:192.0.2.10 -all"', '"google-site-verification=abc"'],
    ("_dmarc.example.com", "TXT"): ['"v=DMARC1; p=reject; rua=mailto:dmarc@example.com"'],
    ("gw.example.com", "A"): ["192.0.2.10"],
    ("10.2.0.192.in-addr.arpa", "PTR"): ["gw.example.com."],
    ("20.2.0.192.in-addr.arpa", "PTR"): ["stale.example.com."],
    ("stale.example.com", "A"): ["192.0.2.21"],
    ("40.2.0.192.in-addr.arpa", "PTR"): ["postern.local."],  # as LLMNR or a home router's DNS answers
    ("postern.local", "A"): ["192.0.2.40"],
    ("relay.example.com", "A"): ["127.0.0.1"],
    ("nomail.example.com", "A"): ["192.0.2.30"],
    ("twice.example.com", "TXT"): ['"v=spf1 mx -all"', '"v=spf1 ip4:192.0.2.10 -all"'],
}


@pytest.fixture(scope="module")
def dns_server():
    server = DnsServer(RECORDS).start()
    yield server
    server.stop()


@pytest.fixture
def resolver(dns_server):
    return make_resolver([dns_server.address], timeout=2)


def test_lookup_shows_each_record_type_and_picks_out_spf_and_dmarc(resolver):
    report = lookup(resolver, "example.com")
    assert report.lines() == [
        "A     example.com: 192.0.2.10",
        "AAAA  example.com: 2001:db8::10",
        "MX    example.com: 10 gw.example.com; 20 backup.example.com",
        "TXT   example.com: google-site-verification=abc; v=spf1 ip4:192.0.2.10 -all",
        "SPF   v=spf1 ip4:192.0.2.10 -all",
        "DMARC v=DMARC1; p=reject; rua=mailto:dmarc@example.com",
    ]


def test_lookup_says_why_nothing_was_found(resolver):
    assert lookup(resolver, "nomail.example.com").lines()[2:] == [
        "MX    nomail.example.com: no records", "TXT   nomail.example.com: no records", "SPF   (none)", "DMARC (none)"]
    assert lookup(resolver, "missing.example.com").lines() == [
        "A     missing.example.com: no such domain", "missing.example.com does not exist in DNS"]
    assert lookup(resolver, "192.0.2.10").lines() == ["PTR   192.0.2.10: gw.example.com"]


def test_one_type_at_a_time_with_spf_and_dmarc_only_for_txt(resolver):
    assert lookup_name(resolver, "example.com", ("MX",)).lines() == [
        "MX    example.com: 10 gw.example.com; 20 backup.example.com"]
    assert lookup_name(resolver, "example.com", ("TXT",)).lines()[1:] == [
        "SPF   v=spf1 ip4:192.0.2.10 -all", "DMARC v=DMARC1; p=reject; rua=mailto:dmarc@example.com"]
    assert lookup_name(resolver, "twice.example.com", ("TXT",)).lines()[1:] == [
        "SPF   v=spf1 ip4:192.0.2.10 -all; v=spf1 mx -all", "DMARC (none)",
        "more than one SPF record: receivers treat that as an error (RFC 7208); merge them"]
    assert lookup_name(resolver, "missing.example.com", ("TXT",)).lines() == [
        "TXT   missing.example.com: no such domain", "missing.example.com does not exist in DNS"]


def test_a_server_that_does_not_answer_is_named():
    silent = make_resolver([f"127.0.0.1:{free_port()}"], timeout=0.5)
    with pytest.raises(LookupFailed, match=r"^no answer from 127\.0\.0\.1:\d+ for example.com A: timed out$"):
        lookup(silent, "example.com")


def test_helo_check_passes_when_the_name_is_the_forward_confirmed_ptr(resolver):
    verdict = check_helo(resolver, "gw.example.com", "192.0.2.10")
    assert verdict.verdict == PASS
    assert verdict.lines[-1] == "PASS: the HELO name gw.example.com is the forward-confirmed PTR name of 192.0.2.10"


@pytest.mark.parametrize("helo, address, last_line", [
    ("mail.example.com", "192.0.2.10",
     "FAIL: the HELO name mail.example.com differs from the PTR name gw.example.com: set mta.helo_name to gw.example.com"),
    ("gw.example.com", "192.0.2.99",
     "FAIL: 192.0.2.99 has no PTR record (no such domain): ask whoever runs that address (the ISP or hosting provider) "
     "to set its PTR record to gw.example.com"),
    ("stale.example.com", "192.0.2.20",
     "FAIL: the PTR name does not resolve back to 192.0.2.20: add an A record stale.example.com -> 192.0.2.20"),
])
def test_helo_check_says_what_to_change(resolver, helo, address, last_line):
    verdict = check_helo(resolver, helo, address)
    assert verdict.verdict == FAIL
    assert verdict.lines[-1].startswith(last_line)


def test_helo_check_never_advises_a_private_ptr_name(dns_server):
    resolver = make_resolver([dns_server.address], timeout=2)
    verdict = check_helo(resolver, "gw.example.com", "192.0.2.40")
    assert verdict.verdict == FAIL
    assert verdict.lines == [
        "PTR of 192.0.2.40: postern.local",
        "postern.local is a private name: receivers on the Internet cannot look it up",
        "FAIL: the PTR record of 192.0.2.40 is private (it names only postern.local): ask whoever runs that address "
        "(the ISP or hosting provider) to set its PTR record to gw.example.com"]


def test_a_private_helo_name_is_named_and_never_offered_for_the_ptr_record(resolver):
    missing = check_helo(resolver, "postern.localdomain", "192.0.2.99")
    assert missing.lines == [
        "the HELO name postern.localdomain is a private name: receivers on the Internet cannot look it up",
        "FAIL: 192.0.2.99 has no PTR record (no such domain): ask whoever runs that address (the ISP or hosting "
        "provider) to set its PTR record to the gateway's public name (such as mail.example.com), and set "
        "mta.helo_name to that name"]
    other = check_helo(resolver, "postern.lan", "192.0.2.10")
    assert other.lines[-1] == ("FAIL: the HELO name postern.lan differs from the PTR name gw.example.com: "
                               "set mta.helo_name to gw.example.com")


HOSTS_SCRIPT = """
    import json, socket, subprocess, sys
    from appliance.diagnostics.dns_lookup import system_servers
    from console.appliance_link import ApplianceLink
    from console.wizard import system
    from tests.support.dns_server import DnsServer

    address, helo, config = "203.0.113.7", "gw.example.com", sys.argv[1]
    # systemd-resolved's stub answers from /etc/hosts (and LLMNR, mDNS) as well as DNS
    stub = DnsServer({("7.113.0.203.in-addr.arpa", "PTR"): ["gw.example.com."],
                      ("gw.example.com", "A"): ["203.0.113.7"]}, host="127.0.0.53", port=53).start()
    upstream = DnsServer({("gw.example.com", "A"): ["203.0.113.7"]}, host="127.0.0.1", port=53).start()
    print(json.dumps({
        "name service": socket.gethostbyaddr(address)[0],
        "servers": system_servers(),
        "console": ApplianceLink(config, "/").diagnostics.helo_check(address, helo).lines[-1],
        "wizard": system.ptr_check(helo, address, []).lines[-1],
        "wizard, resolv.conf's servers": system.ptr_check(helo, address, ["127.0.0.53"]).lines[-1],
        "cli": subprocess.run([sys.argv[2], "diag", "helo", "--ip", address, "--helo", helo],
                              capture_output=True, text=True).stdout.splitlines()[-1],
        "stub asked": stub.queries, "upstream asked": sorted(set(upstream.queries)),
    }))
"""


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"),
                    reason="needs root, unshare and ip for network and mount namespaces")
def test_the_helo_check_asks_dns_servers_never_etc_hosts_nor_the_local_stub(tmp_path):
    """/etc/hosts names the public address; resolv.conf names resolved's stub, which would answer from it. The
    check asks resolved's upstream server, where the address has no PTR record, and says so."""
    (tmp_path / "hosts").write_text("127.0.0.1 localhost\n203.0.113.7 gw.example.com\n", encoding="utf-8")
    (tmp_path / "resolv.conf").write_text("nameserver 127.0.0.53\noptions edns0\n", encoding="utf-8")
    (tmp_path / "check.py").write_text(dedent(HOSTS_SCRIPT), encoding="utf-8")
    config = write_config(tmp_path / "postern.yaml", {"mta": {"hostname": "gw.example.com"}})
    setup = (f"ip link set lo up && mount --bind {tmp_path}/hosts /etc/hosts && "
             f"mount --bind {tmp_path}/resolv.conf /etc/resolv.conf && mount -t tmpfs tmpfs /run && "
             "mkdir -p /run/systemd/resolve && echo 'nameserver 127.0.0.1' > /run/systemd/resolve/resolv.conf && ")
    run = subprocess.run(["unshare", "--net", "--mount", "--propagation", "private", "sh", "-c",
                          setup + f'exec "$0" {tmp_path}/check.py {config} {COMMAND}', sys.executable],
                         capture_output=True, text=True, timeout=60, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert run.returncode == 0, run.stderr
    seen = json.loads(run.stdout)
    no_ptr = ("FAIL: 203.0.113.7 has no PTR record (no such domain): ask whoever runs that address "
              "(the ISP or hosting provider) to set its PTR record to gw.example.com")
    assert seen == {"name service": "gw.example.com", "servers": ["127.0.0.1"],
                    "console": no_ptr, "wizard": no_ptr, "wizard, resolv.conf's servers": no_ptr, "cli": no_ptr,
                    "stub asked": [], "upstream asked": [["7.113.0.203.in-addr.arpa", "PTR"]]}


@pytest.fixture
def tls_sink(tmp_path):
    cert, key = self_signed(tmp_path, "relay.example.com")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server = Sink(tls_context=context).start()
    server.cert_file = str(cert)
    yield server
    server.stop()


def test_next_hop_reports_banner_ehlo_and_no_starttls(sink, resolver):
    report = check_next_hop("127.0.0.1", sink.port, resolver=resolver, helo_name="gw.example.com", timeout=5)
    assert report.errors == [] and report.warnings == []
    assert report.banner.startswith("220 ")
    assert report.lines[-1] == "STARTTLS: not offered (mail to this hop travels unencrypted)"
    assert any(line.startswith("EHLO: 250 ") for line in report.lines)


def test_next_hop_reports_the_certificate_and_whether_it_verifies(tls_sink, resolver):
    report = check_next_hop("relay.example.com", tls_sink.port, resolver=resolver, timeout=5)
    assert report.address == "127.0.0.1" and report.starttls
    assert "subject:     CN=relay.example.com" in report.certificate
    assert "SANs:        relay.example.com, 127.0.0.1" in report.certificate
    assert report.verified is False
    assert any("self-signed certificate" in w or "self signed certificate" in w for w in report.warnings), report.warnings
    trusted = check_next_hop("relay.example.com", tls_sink.port, resolver=resolver, cafile=tls_sink.cert_file, timeout=5)
    assert trusted.verified is True
    assert "certificate chain: verified" in trusted.lines
    # the test certificate lives one day: that is worth a warning too
    assert [w.split(",")[0] for w in trusted.warnings] == ["certificate: expires in 0 days"]


def test_next_hop_warns_when_the_hop_is_this_appliance(sink, resolver):
    report = check_next_hop("127.0.0.1", sink.port, resolver=resolver, listen_ports={sink.port}, timeout=5)
    assert report.warnings[0].startswith(f"127.0.0.1:{sink.port} is this appliance itself")
    named = check_next_hop("relay.example.com", sink.port, resolver=resolver, own_names=("relay.example.com",),
                           listen_ports={25}, timeout=5)  # the name resolves to 127.0.0.1, like every hop here
    assert named.warnings == ["relay.example.com is this appliance's own name: mail sent there loops back to itself"]


def test_next_hop_that_refuses_or_does_not_exist(resolver):
    port = free_port()
    refused = check_next_hop("127.0.0.1", port, resolver=resolver, timeout=5)
    assert refused.errors == [f"cannot connect to 127.0.0.1 port {port}: connection refused: nothing listens on "
                              f"127.0.0.1:{port}, or a firewall rejects it"]
    unknown = check_next_hop("missing.example.com", 25, resolver=resolver, timeout=5)
    assert unknown.errors == ["missing.example.com has no A or AAAA record: check the name, or use its IP address"]


def test_the_diag_commands(dns_server, sink, tmp_path):
    def run(*args):
        return subprocess.run([COMMAND, "diag", *args], capture_output=True, text=True, cwd=ROOT, timeout=60)

    found = run("dns", "example.com", "--server", dns_server.address)
    assert found.returncode == 0 and "SPF   v=spf1 ip4:192.0.2.10 -all" in found.stdout
    helo = run("helo", "--ip", "192.0.2.10", "--helo", "mail.example.com", "--server", dns_server.address)
    assert helo.returncode == 6 and "set mta.helo_name to gw.example.com" in helo.stdout
    config = write_config(tmp_path / "postern.yaml", {
        "mta": {"hostname": "gw.example.com", "listen": [f"127.0.0.1:{sink.port}"], "dns_servers": [dns_server.address],
                "relay_domains": ["example.com"], "internal_relay": {"host": "relay.example.com", "port": sink.port}},
    })
    helo_from_config = run("helo", "--ip", "192.0.2.10", "--config", str(config))
    assert helo_from_config.returncode == 0 and "PASS" in helo_from_config.stdout
    loop = run("next-hop", "--config", str(config))
    assert loop.returncode == 6
    assert f"internal relay host (mail for the relay domains) relay.example.com:{sink.port} (tls: may)" in loop.stdout
    assert f"warning: relay.example.com:{sink.port} is this appliance itself" in loop.stdout
    port_in_words = run("next-hop", "relay.example.com:abc", "--config", str(config))
    assert port_in_words.returncode == 1 and port_in_words.stderr.startswith(
        "postern-appliance: HOST[:PORT]: 'relay.example.com:abc': write the next hop as HOST:PORT")
    bad = run("dns", "example.com", "--server", "dns.example.com")
    assert bad.returncode == 1 and bad.stderr.startswith("postern-appliance: --server: ")
    not_an_address = run("helo", "--ip", "gw.example.com", "--server", dns_server.address)
    assert not_an_address.returncode == 1 and not_an_address.stderr.startswith(
        "postern-appliance: --ip: 'gw.example.com' is not an IP address")


# --- where the next-hop check and the console's SMTP test once disagreed (now one client, smtp_probe) ---


def test_next_hop_that_takes_the_connection_but_never_greets_is_named_as_such(resolver):
    hop = ScriptedHop(Script(delay={"greeting": 5})).start()
    try:
        started = time.monotonic()
        report = check_next_hop("127.0.0.1", hop.port, resolver=resolver, timeout=0.5)
        waited = time.monotonic() - started
    finally:
        hop.stop()
    assert f"connected to 127.0.0.1 port {hop.port}" in report.lines
    assert report.errors == [f"127.0.0.1:{hop.port} did not answer within 0.5 s"]
    assert waited < 3


@pytest.mark.parametrize("greeting", ["554 5.7.1 no mail from you", "421 4.3.2 too busy, try later"])
def test_next_hop_that_greets_with_a_refusal_is_quoted_and_told_quit(resolver, greeting):
    hop = ScriptedHop(Script(greeting=greeting)).start()
    try:
        report = check_next_hop("127.0.0.1", hop.port, resolver=resolver, timeout=5)
        assert hop.verbs() == ["QUIT"]  # RFC 5321 3.1: after a 554 greeting the client says QUIT
    finally:
        hop.stop()
    assert report.banner == greeting
    assert report.errors == [f"127.0.0.1:{hop.port} takes no mail now: it greets with {greeting}"]


def test_next_hop_whose_tls_handshake_fails_says_why_in_words(resolver, plain_text_tls_hop):
    report = check_next_hop("127.0.0.1", plain_text_tls_hop, resolver=resolver, timeout=5)
    assert report.starttls
    assert report.errors == [f"the TLS handshake with 127.0.0.1:{plain_text_tls_hop} failed: wrong version number"]


def test_next_hop_given_as_an_ipv6_literal_in_brackets(resolver):
    hop = ScriptedHop(host="::1").start()
    try:
        report = check_next_hop("[::1]", hop.port, resolver=resolver, timeout=5)
    finally:
        hop.stop()
    assert report.errors == [] and report.address == "::1"
    assert report.banner == "220 hop.example.org ESMTP"


def test_next_hop_says_ehlo_with_a_name_servers_take(resolver):
    hop = ScriptedHop().start()
    try:
        check_next_hop("127.0.0.1", hop.port, resolver=resolver, timeout=5)  # no HELO name given
        named = ehlo_name("", "127.0.0.1")
        assert [line for _, line in hop.commands] == [f"EHLO {named}", "QUIT"]
    finally:
        hop.stop()
    assert "." in named.strip("[]") and named != "localhost"


def test_a_target_is_written_host_port_and_a_configured_hop_keeps_its_policy():
    from appliance.diagnostics.next_hop import Hop, parse_target

    assert parse_target("mail.example.com") == Hop("mail.example.com", 25)
    assert parse_target("[2001:db8::25]:2525") == Hop("2001:db8::25", 2525)
    assert parse_target("[::1]") == Hop("::1", 25)
    configured = [Hop("Relay.Example.com", 587, "external relay host (all other mail)", "verify")]
    assert parse_target("relay.example.com:587", configured) == configured[0]
    for wrong in ("relay.example.com:abc", "[::1]x", ":25", "relay:0", "relay:70000", ""):
        with pytest.raises(ValueError, match="write the next hop as HOST:PORT"):
            parse_target(wrong)
