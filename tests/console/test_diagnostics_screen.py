"""The diagnostics screen against a DNS server and SMTP servers on 127.0.0.1."""

from __future__ import annotations

import pytest

from tests.console.conftest import text_of, until
from tests.support.net import free_port

from .appliance_support import console, dns_server as start_dns_server, write_config

RECORDS = {
    ("example.com", "A"): ["192.0.2.10"],
    ("example.com", "MX"): ["10 gw.example.com.", "20 backup.example.com."],
    ("example.com", "TXT"): ['"v=spf1 ip4:192.0.2.10 -all"', '"google-site-verification=abc"'],
    ("_dmarc.example.com", "TXT"): ['"v=DMARC1; p=reject; rua=mailto:dmarc@example.com"'],
    ("gw.example.com", "A"): ["192.0.2.10"],
    ("10.2.0.192.in-addr.arpa", "PTR"): ["gw.example.com."],
    ("20.2.0.192.in-addr.arpa", "PTR"): ["stale.example.com."],
    ("stale.example.com", "A"): ["192.0.2.21"],
}


@pytest.fixture(scope="module")
def dns_server():
    server = start_dns_server(RECORDS)
    yield server
    server.stop()


@pytest.fixture
def config(tmp_path, dns_server):
    """The appliance's configuration: its DNS server is the test's; it listens on a port of its own."""
    return write_config(tmp_path / "postern.yaml", {"mta": {
        "hostname": "gw.example.com", "dns_servers": [dns_server.address], "listen": [f"127.0.0.1:{free_port()}"]}})


async def diagnostics(pilot):
    await pilot.press("f8")
    await until(pilot, lambda: type(pilot.app.screen).__name__ == "DiagnosticsScreen", what="the diagnostics")
    return pilot.app.screen


async def run(pilot, widget_id: str, text: str, expect: str, timeout: float = 10.0) -> str:
    """Fill a field, press Enter, and wait for the results (or the notice) to show `expect`."""
    screen = pilot.app.screen
    field = screen.query_one(f"#{widget_id}")
    field.focus()
    field.value = text
    before = len(screen.result_text())
    await pilot.press("enter")
    await until(pilot, lambda: expect in screen.result_text()[before:] or expect in text_of(pilot.app, "#area-notice"),
                timeout=timeout, what=expect)
    return screen.result_text()[before:]


async def test_dns_lookup_picks_out_spf_and_dmarc_and_asks_the_configured_servers(tmp_path, config, dns_server):
    app = console(tmp_path, config)
    async with app.run_test(size=(80, 25)) as pilot:
        screen = await diagnostics(pilot)
        shown = await run(pilot, "diag-name", "example.com", "DMARC")
        assert f"example.com ALL (asked {dns_server.address})" in shown
        assert "A     example.com: 192.0.2.10" in shown
        assert "MX    example.com: 10 gw.example.com; 20 backup.example.com" in shown
        assert "SPF   v=spf1 ip4:192.0.2.10 -all" in shown
        assert "DMARC v=DMARC1; p=reject; rua=mailto:dmarc@example.com" in shown

        # One type at a time: the choice next to the name.
        screen.query_one("#diag-type").value = "MX"
        shown = await run(pilot, "diag-name", "example.com", "MX    example.com")
        assert "A     example.com" not in shown and "SPF" not in shown
        screen.query_one("#diag-type").value = "TXT"
        shown = await run(pilot, "diag-name", "example.com", "DMARC")
        assert "SPF   v=spf1 ip4:192.0.2.10 -all" in shown
        screen.query_one("#diag-type").value = "ALL"
        shown = await run(pilot, "diag-name", "192.0.2.10", "PTR")
        assert "PTR   192.0.2.10: gw.example.com" in shown
        assert "SPF" not in shown and "DMARC" not in shown  # an address has no mail policies
        shown = await run(pilot, "diag-name", "nowhere.example.com", "does not exist")
        assert "no such domain" in shown

        # A server typed in the form is asked instead; one that does not answer is said so at the field.
        shown = await run(pilot, "diag-servers", dns_server.address, "asked")  # Enter there runs the lookup
        assert f"(asked {dns_server.address})" in shown
        screen.query_one("#diag-servers").value = "not-a-server"
        await run(pilot, "diag-name", "example.com", "DNS servers:")
        assert "is not a DNS server" in text_of(app, "#area-notice")
        assert screen.query_one("#diag-servers").has_class("-invalid")
        await pilot.press("ctrl+l")
        assert screen.result_text() == ""


async def test_helo_check_gives_its_verdict_and_what_to_change(tmp_path, config):
    app = console(tmp_path, config)
    async with app.run_test(size=(80, 25)) as pilot:
        screen = await diagnostics(pilot)
        # The HELO name defaults to the configuration's.
        await until(pilot, lambda: "gw.example.com" in screen.query_one("#diag-helo").placeholder,
                    what="the default HELO name")
        shown = await run(pilot, "diag-address", "192.0.2.10", "PASS")
        assert "PTR of 192.0.2.10: gw.example.com" in shown
        assert "PASS: the HELO name gw.example.com is the forward-confirmed PTR name of 192.0.2.10" in shown

        shown = await run(pilot, "diag-address", "192.0.2.20", "FAIL")
        assert "stale.example.com resolves to 192.0.2.21, not 192.0.2.20: not forward-confirmed" in shown
        assert "add an A record stale.example.com -> 192.0.2.20" in shown

        screen.query_one("#diag-helo").value = "other.example.com"
        shown = await run(pilot, "diag-address", "192.0.2.10", "FAIL")
        assert "set mta.helo_name to gw.example.com" in shown

        await run(pilot, "diag-address", "banana", "Address:")
        assert "'banana' is not an IP address" in text_of(app, "#area-notice")
        assert screen.query_one("#diag-address").has_class("-invalid")


async def test_next_hop_shows_banner_ehlo_starttls_and_the_certificate(tmp_path, config, tls_sink):
    app = console(tmp_path, config)
    async with app.run_test(size=(80, 25)) as pilot:
        await diagnostics(pilot)
        shown = await run(pilot, "diag-hop", f"127.0.0.1:{tls_sink.port}", "certificate chain")
        assert f"next hop 127.0.0.1:{tls_sink.port}" in shown
        assert "banner: 220" in shown and "EHLO: 250" in shown
        assert "STARTTLS: TLSv1.3" in shown
        assert "subject:     CN=gw.example.com" in shown
        assert "SANs:        gw.example.com, 127.0.0.1" in shown
        assert "valid until:" in shown
        assert "certificate chain: NOT verified" in shown
        assert "warning: certificate: not trusted" in shown

        shown = await run(pilot, "diag-hop", f"127.0.0.1:{free_port()}", "cannot connect")
        assert "connection refused" in shown
        await run(pilot, "diag-hop", "mail.example.com:seventy", "Host:port:")


async def test_next_hop_warns_of_a_loop_to_the_appliance_itself(tmp_path, dns_server, sink):
    config = write_config(tmp_path / "postern.yaml", {"mta": {
        "hostname": "gw.example.com", "dns_servers": [dns_server.address], "listen": [f"127.0.0.1:{sink.port}"],
        "internal_relay": {"host": "127.0.0.1", "port": sink.port}}})
    app = console(tmp_path, config)
    async with app.run_test(size=(80, 25)) as pilot:
        await diagnostics(pilot)
        shown = await run(pilot, "diag-hop", "", "loops back to itself")  # empty: the configured relay hosts
        assert f"internal relay host (mail for the relay domains) 127.0.0.1:{sink.port} (tls: may)" in shown
        assert "STARTTLS: not offered" in shown
        assert "is this appliance itself" in shown


async def test_next_hop_is_judged_against_its_tls_policy(tmp_path, dns_server, sink, tls_sink):
    """A hop without STARTTLS whose policy is encrypt gets no mail at all: the check must not say OK."""
    config = write_config(tmp_path / "postern.yaml", {"mta": {
        "hostname": "gw.example.com", "dns_servers": [dns_server.address], "listen": [f"127.0.0.1:{free_port()}"],
        "relay_domains": ["example.com"],
        "internal_relay": {"host": "127.0.0.1", "port": sink.port, "tls": "encrypt"},
        "external_relay": {"host": "127.0.0.1", "port": tls_sink.port, "tls": "encrypt"}}})
    app = console(tmp_path, config)
    async with app.run_test(size=(80, 25)) as pilot:
        await diagnostics(pilot)
        shown = await run(pilot, "diag-hop", "", "external relay host")
        await until(pilot, lambda: "certificate chain" in app.screen.result_text(), what="both hops checked")
        shown = app.screen.result_text()
        internal, external = shown.split("external relay host (all other mail)")
        assert f"internal relay host (mail for the relay domains) 127.0.0.1:{sink.port} (tls: encrypt)" in internal
        assert "problem: its policy is tls: encrypt and it offers no STARTTLS: every message to it is deferred" in internal
        assert "OK:" not in internal
        # encrypt takes any certificate: a self-signed one is no problem and not even a warning there.
        assert "STARTTLS: TLSv1.3" in external and "problem:" not in external and "not trusted" not in external
        # Typed by hand, a configured hop keeps its role and policy.
        shown = await run(pilot, "diag-hop", f"127.0.0.1:{sink.port}", "problem:")
        assert "internal relay host" in shown and "its policy is tls: encrypt" in shown


async def test_with_no_dns_server_configured_the_systems_are_asked_never_its_local_stub(tmp_path, dns_server):
    """resolved's stub (127.0.0.53) answers from /etc/hosts, LLMNR and mDNS too: only its upstream servers are asked."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/resolv.conf").write_text("nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch example.net\n")
    config = write_config(tmp_path / "postern.yaml", {"mta": {"hostname": "gw.example.com"}})
    app = console(tmp_path, config, root)
    async with app.run_test(size=(80, 25)) as pilot:
        screen = await diagnostics(pilot)
        await run(pilot, "diag-address", "192.0.2.10", "DNS servers:")
        assert "no DNS server to ask for 10.2.0.192.in-addr.arpa. PTR: none is configured" in text_of(
            app, "#area-notice")
        assert screen.query_one("#diag-servers").has_class("-invalid")

        (root / "run/systemd/resolve").mkdir(parents=True)
        (root / "run/systemd/resolve/resolv.conf").write_text(f"nameserver {dns_server.address}\n")
        shown = await run(pilot, "diag-name", "example.com", "DMARC")
        assert f"example.com ALL (asked {dns_server.address})" in shown
        shown = await run(pilot, "diag-address", "192.0.2.10", "PASS")
        assert "PTR of 192.0.2.10: gw.example.com" in shown
