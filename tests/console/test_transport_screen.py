"""The Transport security view, the policy of a destination, the live check, the next-hop check of a domain
and editing the TLS policy table, on a real relay delivering by MX to recording next hops.

Three destinations, each with an MX host of its own on port 25 of a spare loopback address (needs root):
partner.org under a `verify` entry, with a certificate from the authority the relay trusts; plain.example,
which offers no STARTTLS; rogue.example under `verify` too, whose certificate comes from an authority the
relay does not trust; sts.example, with no entry, publishes an MTA-STS policy (enforce) served over HTTPS.
A DNS server on loopback answers their MX, A and TXT records.
"""

from __future__ import annotations

import re

import pytest

from console.app import make_app
from console.screens.transport import DomainScreen
from relay.control.client import ControlClient
from tests.console.conftest import text_of, until
from tests.console.test_snapshots import fixed_clock  # noqa: F401  (a fixture)
from tests.support.certs import Authority
from tests.support.dns_server import DnsServer
from tests.support.https_server import HttpsServer, Response
from tests.support.mail import make_message
from tests.support.net import spare_loopback_ip
from tests.support.next_hop import NextHop

DESTINATIONS = {"partner.org": "mx.partner.org", "plain.example": "mx.plain.example",
                "rogue.example": "mx.rogue.example", "sts.example": "mx.sts.example"}


class Silent:
    """A host that takes connections on port 25 and never says a word."""

    def __init__(self, host: str):
        import socket

        self.host = host
        self.socket = socket.socket()
        self.socket.bind((host, 25))
        self.socket.listen()

    def stop(self) -> None:
        self.socket.close()


@pytest.fixture
def started():
    things = []
    yield things
    for thing in reversed(things):
        thing.stop()


@pytest.fixture
def world(tmp_path, make_relay, sink, started):
    """The relay, its three MX hosts (by domain) and the trusted authority's file."""
    (tmp_path / "ca").mkdir()
    (tmp_path / "rogue").mkdir()
    trusted = Authority(tmp_path / "ca")
    rogue = Authority(tmp_path / "rogue", name="Rogue CA")
    contexts = {"partner.org": trusted.server_context("mx.partner.org"), "plain.example": None,
                "rogue.example": rogue.server_context("mx.rogue.example"),
                "sts.example": trusted.server_context("mx.sts.example")}
    hops, records = {}, {}
    for domain, mx in DESTINATIONS.items():
        try:
            address = spare_loopback_ip(25)
        except PermissionError:
            pytest.skip("MX delivery goes to port 25: binding it needs root")
        hops[domain] = NextHop(host=address, port=25, tls_context=contexts[domain]).start()
        started.append(hops[domain])
        records[(domain, "MX")] = [f"10 {mx}."]
        records[(mx, "A")] = [address]
    policy_host = spare_loopback_ip(443)
    policy = b"version: STSv1\r\nmode: enforce\r\nmx: mx.sts.example\r\nmax_age: 86400\r\n"
    started.append(HttpsServer(trusted, "mta-sts.sts.example", host=policy_host, port=443,
                               routes={"/.well-known/mta-sts.txt": Response(policy)}).start())
    records[("_mta-sts.sts.example", "TXT")] = ['"v=STSv1; id=20261206T1"']
    records[("mta-sts.sts.example", "A")] = [policy_host]
    silent = Silent(spare_loopback_ip(25))  # slow.example's MX host
    started.append(silent)
    records[("slow.example", "MX")] = ["10 mx.slow.example."]
    records[("mx.slow.example", "A")] = [silent.host]
    dns = DnsServer(records).start()
    started.append(dns)
    relay = make_relay(sink.port, external_relay={"host": ""}, dns_servers=[dns.address],
                       tls={"ca_file": str(trusted.cert_path)},
                       tls_policy={"partner.org": "verify", "rogue.example": "verify"})
    relay.socket = relay.workdir / "control.sock"
    return relay, hops, trusted


def deliver(relay, hops) -> None:
    """One message to each destination: two go out, the rogue one waits in the queue."""
    for domain in DESTINATIONS:
        relay.send("alice@example.com", [f"dave@{domain}"], make_message(f"{domain}@example.com"))
    hops["partner.org"].wait_for(1)
    hops["plain.example"].wait_for(1)
    hops["sts.example"].wait_for(1)
    relay.wait_log(r"to=<dave@rogue\.example>, .*status=deferred \(server certificate not verified")


def running_policy(relay) -> dict:
    with ControlClient(str(relay.socket)) as client:
        return client.call("io.postern.Config.Get")["mta"]["tls_policy"]


def console(relay, monkeypatch):
    monkeypatch.setenv("TERM", "linux")
    return make_app(str(relay.socket), str(relay.config_path))


async def transport(pilot):
    """F8, then Ctrl+T: the view, once the relay's counts are in."""
    await pilot.press("f8")
    await until(pilot, lambda: type(pilot.app.screen).__name__ == "DiagnosticsScreen", what="the diagnostics")
    await pilot.press("ctrl+t")
    await until(pilot, lambda: type(pilot.app.screen).__name__ == "TransportScreen"
                and pilot.app.screen.answer is not None, what="the transport security view")
    return pilot.app.screen


def rows(screen) -> dict[str, str]:
    listing = screen.query_one("#tls-rows")
    return {listing.get_option_at_index(i).id: str(listing.get_option_at_index(i).prompt)
            for i in range(listing.option_count)}


def counts(line: str) -> list[int]:
    return [int(word) for word in line.split()[1:]]


async def open_domain(pilot, domain: str):
    screen = pilot.app.screen
    listing = screen.query_one("#tls-rows")
    listing.highlighted = list(rows(screen)).index(domain)
    await pilot.press("enter")
    await until(pilot, lambda: type(pilot.app.screen).__name__ == "DomainScreen"
                and "TLS level" in pilot.app.screen.text(), what=f"the policy of {domain}")
    return pilot.app.screen


async def live_check(pilot, expect: str) -> str:
    screen = pilot.app.screen
    await pilot.press("c")
    await until(pilot, lambda: "Checking" in text_of(pilot.app, ".tls-notice") or "Live check" in screen.text(),
                what="the check under way")
    await until(pilot, lambda: expect in screen.text(), timeout=30, what=expect)
    return screen.text()


async def test_the_view_counts_real_deliveries_and_shows_a_refused_certificate_with_its_reason(world, monkeypatch):
    relay, hops, _ = world
    deliver(relay, hops)
    app = console(relay, monkeypatch)
    async with app.run_test(size=(80, 25)) as pilot:
        screen = await transport(pilot)
        await until(pilot, lambda: "rogue.example" in rows(screen), what="the rogue destination counted")
        shown = rows(screen)
        # DESTINATION, then DANE, MTA-STS, Verified, Unverified, Plain, Failed
        assert counts(shown["partner.org"]) == [0, 0, 1, 0, 0, 0]
        assert counts(shown["plain.example"]) == [0, 0, 0, 0, 1, 0]
        assert counts(shown["sts.example"]) == [0, 1, 0, 0, 0, 0]
        assert counts(shown["rogue.example"])[-1] >= 1
        header = text_of(app, "#tls-header")
        assert header.split() == ["DESTINATION", "DANE", "MTA-STS", "Verified", "Unverif.", "Plain", "Failed"]
        # The failing destination is red, with its reason under the table when highlighted.
        listing = screen.query_one("#tls-rows")
        rogue = listing.get_option_at_index(list(shown).index("rogue.example")).prompt
        assert any("red" in str(span.style) for span in rogue.spans)
        listing.highlighted = list(shown).index("rogue.example")
        await pilot.pause(0.1)
        detail = " ".join(text_of(app, "#tls-detail").split())  # unwrapped
        assert "tls_policy: verify" in detail
        assert "certificate-not-trusted at mx.rogue.example: server certificate not verified" in detail
        assert "with connections refused by their policy" in text_of(app, ".tls-notice")

        # Enter: the policy in force, the counts and the failures.
        domain = await open_domain(pilot, "rogue.example")
        text = domain.text()
        assert "Next hop   the MX hosts of rogue.example" in text
        assert "TLS level  verify, from the tls_policy entry rogue.example" in text
        assert "MTA-STS    does not apply: the tls_policy entry overrides it" in text
        assert "Failures" in text and "certificate-not-trusted at mx.rogue.example" in text

        # The live check: the untrusted certificate means the mail would wait.
        text = await live_check(pilot, "would defer")
        rogue_host = f"mx.rogue.example[{hops['rogue.example'].host}]:25"
        assert f"{rogue_host}: would defer: server certificate not verified" in text
        assert "Mail to rogue.example would defer: it waits in the queue." in text
        assert "would wait in the queue" in text_of(app, ".tls-notice")
        await pilot.press("escape")
        await until(pilot, lambda: type(app.screen).__name__ == "TransportScreen", what="the table again")

        # A domain without an entry: its MTA-STS policy, as the relay cached it.
        domain = await open_domain(pilot, "sts.example")
        text = domain.text()
        assert "TLS level  dane, from external_relay.tls (the default for other mail)" in text
        assert "MTA-STS    applies" in text
        assert "cached policy: mode enforce, MX mx.sts.example" in text
        assert re.search(r"expires \d{4}-\d\d-\d\d \d\d:\d\d \(in (23h|1d)\)", text), text  # max_age: a day
        await pilot.press("escape")
        await until(pilot, lambda: type(app.screen).__name__ == "TransportScreen", what="the table again")

        domain = await open_domain(pilot, "partner.org")
        text = await live_check(pilot, "would deliver")
        assert f"mx.partner.org[{hops['partner.org'].host}]:25: would deliver with verified TLS" in text
        assert "Mail to partner.org would be delivered now." in text
    assert len(hops["partner.org"].messages) == 1, "a check sends no mail"


async def test_escape_leaves_a_check_under_way(world, monkeypatch):
    """slow.example's host takes the connection and never answers: the check waits, the screen does not."""
    relay, _, _ = world
    app = console(relay, monkeypatch)
    async with app.run_test(size=(80, 25)) as pilot:
        screen = await transport(pilot)
        app.push_screen(DomainScreen("slow.example"))
        await until(pilot, lambda: "TLS level" in app.screen.text(), what="the policy")
        await pilot.press("c")
        await until(pilot, lambda: "Checking" in text_of(app, ".tls-notice") and "(1 s;" in text_of(app, ".tls-notice"),
                    what="the progress")
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is screen, what="back at the table")
        await pilot.press("r")
        await until(pilot, lambda: "destinations" in text_of(app, ".tls-notice"), what="the table still answering")


async def test_next_hop_check_of_a_domain_says_where_delivery_would_defer(world, monkeypatch):
    relay, hops, _ = world
    app = console(relay, monkeypatch)
    async with app.run_test(size=(80, 25)) as pilot:
        await pilot.press("f8")
        await until(pilot, lambda: type(app.screen).__name__ == "DiagnosticsScreen", what="the diagnostics")
        screen = app.screen

        async def run(text: str, expect: str) -> str:
            field = screen.query_one("#diag-hop")
            field.focus()
            field.value = text
            before = len(screen.result_text())
            await pilot.press("enter")
            await until(pilot, lambda: expect in screen.result_text()[before:], timeout=30, what=expect)
            return screen.result_text()[before:]

        shown = await run("rogue.example", "would defer")
        assert "mail to rogue.example (TLS level verify, from the tls_policy entry rogue.example)" in shown
        assert "mx.rogue.example" in shown and "server certificate not verified" in shown
        assert "would defer" in text_of(app, "#area-notice")
        shown = await run("partner.org", "would deliver")
        assert "would deliver with verified TLS" in shown
        # A host with its port is still talked to from here, as before: banner, EHLO, certificate.
        shown = await run(f"{hops['plain.example'].host}:25", "STARTTLS")
        assert "banner: 220" in shown and "STARTTLS: not offered" in shown
    assert hops["rogue.example"].messages == [] and hops["partner.org"].messages == []


async def test_editing_the_table_goes_through_the_relay(world, monkeypatch, tmp_path):
    relay, _, trusted = world
    app = console(relay, monkeypatch)
    async with app.run_test(size=(80, 25)) as pilot:
        screen = await transport(pilot)
        assert "rogue.example" in rows(screen)  # an entry without mail is listed, dimmed

        # Add an entry: the relay applies it and runs with it.
        await pilot.press("a")
        await until(pilot, lambda: type(app.screen).__name__ == "EntryScreen", what="the form")
        form = app.screen
        form.query_one("#entry-domain").value = ".Bank.Example"
        form.query_one("#entry-level").value = "secure"
        form.query_one("#entry-match").value = "mx1.bank.example, .bank.example"
        await pilot.press("ctrl+s")
        await until(pilot, lambda: app.screen is screen, what="the form applied")
        assert running_policy(relay)[".bank.example"] == {
            "level": "secure", "match": ["mx1.bank.example", ".bank.example"], "ca_file": ""}
        await until(pilot, lambda: ".bank.example" in rows(screen), what="the new entry listed")

        # A name the relay refuses: its own words under the field; nothing changes.
        before = running_policy(relay)
        screen.query_one("#tls-rows").highlighted = list(rows(screen)).index(".bank.example")
        await pilot.press("e")
        await until(pilot, lambda: type(app.screen).__name__ == "EntryScreen", what="the form")
        form = app.screen
        assert form.query_one("#entry-match").value == "mx1.bank.example, .bank.example"
        form.query_one("#entry-match").value = "mx1.bank.example, bad_name"
        await pilot.press("ctrl+s")
        await until(pilot, lambda: form.problem_text("match"), what="the relay's problem")
        assert form.problem_text("match").startswith("name 2: 'bad_name' is not a certificate name")
        assert "is not a certificate name" in text_of(app, "#note-match")
        assert form.query_one("#entry-match").has_class("-invalid")
        assert running_policy(relay) == before

        # A CA file the relay cannot load: refused when it is put in force, and the file keeps the old entry.
        form.query_one("#entry-match").value = ""
        form.query_one("#entry-level").value = "verify"
        form.query_one("#entry-ca_file").value = str(tmp_path / "missing-ca.pem")
        await pilot.press("ctrl+s")
        await until(pilot, lambda: form.problem_text("ca_file"), what="the relay's refusal")
        assert "missing-ca.pem" in form.problem_text("ca_file")
        assert "nothing changed" in text_of(app, "#entry-notice")
        assert running_policy(relay) == before

        # Level alone: written as the admin writes it, `.bank.example: verify`.
        form.query_one("#entry-ca_file").value = ""
        await pilot.press("ctrl+s")
        await until(pilot, lambda: app.screen is screen, what="the form applied")
        assert running_policy(relay)[".bank.example"]["level"] == "verify"
        assert "'.bank.example': verify" in relay.config_path.read_text() or \
            ".bank.example: verify" in relay.config_path.read_text()

        # Remove it, after the question.
        await until(pilot, lambda: screen.current() == ".bank.example", what="the entry highlighted")
        await pilot.press("d")
        await until(pilot, lambda: type(app.screen).__name__ == "ConfirmScreen", what="the question")
        await pilot.press("y")
        await until(pilot, lambda: ".bank.example" not in running_policy(relay), what="the entry removed")
        await until(pilot, lambda: ".bank.example" not in rows(screen), what="the table without it")
        assert set(running_policy(relay)) == {"partner.org", "rogue.example"}


async def test_a_relay_that_is_down_is_said_and_nothing_breaks(tmp_path, monkeypatch, world):
    relay, _, _ = world
    monkeypatch.setenv("TERM", "linux")
    app = make_app(str(tmp_path / "no-relay.sock"))
    async with app.run_test(size=(80, 25)) as pilot:
        await pilot.press("f8", "ctrl+t")
        await until(pilot, lambda: type(app.screen).__name__ == "TransportScreen"
                    and "not running" in text_of(app, ".tls-notice"), what="the relay said to be down")
        assert "The counts cannot be read: Relay: not running" in text_of(app, ".tls-notice")
        for key in ("enter", "e", "d", "r"):
            await pilot.press(key)
        await pilot.press("a")
        await until(pilot, lambda: type(app.screen).__name__ == "EntryScreen", what="the form")
        app.screen.query_one("#entry-domain").value = "partner.org"
        await pilot.press("ctrl+s")
        await until(pilot, lambda: "not running" in text_of(app, "#entry-notice"), what="the form's answer")
        await pilot.press("escape")
        app.push_screen(DomainScreen("partner.org"))
        await until(pilot, lambda: "not running" in app.screen.text(), what="the policy's answer")
        await pilot.press("c")
        await until(pilot, lambda: "The check failed: Relay: not running" in text_of(app, ".tls-notice"),
                    what="the check's answer")

    # A relay that stops while the view is open: the view says so, and comes back with it.
    app = console(relay, monkeypatch)
    async with app.run_test(size=(80, 25)) as pilot:
        screen = await transport(pilot)
        relay.kill()
        await until(pilot, lambda: "Not up to date: Relay: not running" in text_of(app, ".tls-notice"),
                    timeout=15, what="the relay's absence")
        relay.start()
        await until(pilot, lambda: "destinations" in text_of(app, ".tls-notice"), timeout=20,
                    what="the counts again")
        assert "rogue.example" in rows(screen)


# --- what it looks like ------------------------------------------------------------------------------

ROGUE_DETAIL = ("server certificate not verified: host mx.rogue.example[198.51.100.25]:25: certificate verify "
                "failed: self-signed certificate in certificate chain")


def row(domain: str, failures=(), **counts) -> dict:
    return {"domain": domain, **{key: counts.get(key, 0) for key in
                                 ("dane", "mta_sts", "verified", "unverified", "plain", "failed")},
            "failures": list(failures)}


FIXED_SUMMARY = {"since": 1740729600.0, "domains": [
    row("gmail.com", mta_sts=1284, unverified=2),
    row("partner.org", verified=412),
    row("bank.example", dane=120),
    row("rogue.example", [{"result_type": "certificate-not-trusted", "detail": ROGUE_DETAIL,
                          "mx_host": "mx.rogue.example", "count": 9}], failed=9),
    row("testing.example", [{"result_type": "validation-failure", "mx_host": "mx.testing.example", "count": 3,
                            "detail": "MX host mx.testing.example is not in the MTA-STS policy of testing.example"}],
        unverified=3),
    row("oldschool.example", plain=14),
]}
FIXED_POLICY = {"partner.org": {"level": "verify", "match": [], "ca_file": ""},
                "rogue.example": {"level": "verify", "match": [], "ca_file": ""},
                ".bank.example": {"level": "secure", "match": ["mx1.bank.example"], "ca_file": ""}}


def test_the_view_at_80x25(snap_compare, fixed_queue_relay, fixed_clock, monkeypatch):
    """Busiest first; the refused destination red with its reason under the table; the testing policy's
    failure yellow; an entry without mail dimmed at the end."""
    from tests.console.test_snapshots import fixed_relay_app

    async def shown(pilot):
        screen = await transport(pilot)
        await until(pilot, lambda: ".bank.example" in rows(screen), what="the fixed rows")
        await pilot.press("down", "down", "down")
        await until(pilot, lambda: "certificate-not-trusted" in text_of(pilot.app, "#tls-detail"), what="the detail")
        await pilot.pause(0.2)

    app = fixed_relay_app(fixed_queue_relay, monkeypatch, **{
        "io.postern.Tls.Summary": lambda answer: FIXED_SUMMARY,
        "io.postern.Config.Get": lambda answer: {"mta": {**answer["mta"], "listen": ["0.0.0.0:25"],
                                                         "tls_policy": FIXED_POLICY},
                                                 "path": "/etc/postern/postern.yaml"}})
    assert snap_compare(app, terminal_size=(80, 25), run_before=shown)


async def test_a_relay_that_takes_the_call_and_never_answers_is_said_to_be_stuck(tmp_path, monkeypatch):
    import socket

    path = tmp_path / "stuck.sock"
    stuck = socket.socket(socket.AF_UNIX)
    stuck.bind(str(path))
    stuck.listen(16)
    try:
        monkeypatch.setenv("TERM", "linux")
        app = make_app(str(path))
        app.link.client.timeout = 1.0
        async with app.run_test(size=(80, 25)) as pilot:
            await pilot.press("f8", "ctrl+t")
            await until(pilot, lambda: "did not answer within 1 s" in text_of(app, ".tls-notice"),
                        what="the relay said to be stuck")
            assert "The counts cannot be read" in text_of(app, ".tls-notice")
            await pilot.press("escape")
            await until(pilot, lambda: type(app.screen).__name__ == "DiagnosticsScreen", what="the diagnostics")
    finally:
        stuck.close()


async def test_an_entry_for_mail_that_goes_to_a_relay_host_is_said_not_to_apply(make_relay, sink, monkeypatch):
    """Mail for every domain goes to the smart host here: the entry is kept, but the host's own tls decides."""
    relay = make_relay(sink.port, tls_policy={".partner.org": "secure"})
    relay.socket = relay.workdir / "control.sock"
    app = console(relay, monkeypatch)
    async with app.run_test(size=(80, 25)) as pilot:
        await transport(pilot)
        app.push_screen(DomainScreen("eu.partner.org"))
        await until(pilot, lambda: "TLS level" in app.screen.text() and "entry" in app.screen.text(),
                    what="the policy")
        text = app.screen.text()
        assert f"Next hop   the relay host 127.0.0.1:{sink.port} (no MX)" in text
        assert "TLS level  may, from external_relay.tls" in text
        assert ("the tls_policy entry .partner.org does not apply: mail to eu.partner.org goes to a relay host, "
                "which follows its own tls") in text


async def test_the_palette_opens_the_view(tmp_path, monkeypatch):
    monkeypatch.setenv("TERM", "linux")
    app = make_app(str(tmp_path / "no-relay.sock"))
    async with app.run_test(size=(80, 25)) as pilot:
        await pilot.press("ctrl+p", *"transport security")

        def offered():
            lists = app.screen.query("CommandList")
            return lists and lists.first().option_count and "Transport security" in str(
                lists.first().get_option_at_index(0).prompt)

        await until(pilot, offered, what="the palette's answer")
        await pilot.press("enter")
        await until(pilot, lambda: type(app.screen).__name__ == "TransportScreen", what="the view")
        await pilot.press("escape")
        await until(pilot, lambda: type(app.screen).__name__ == "DiagnosticsScreen", what="the diagnostics")


def test_the_check_shows_each_hosts_tlsa_records_under_it():
    from console.tls_words import check_lines
    answer = {"policy": {"domain": "partner.org"},
              "hosts": [{"host": "mx.partner.org", "address": "mx.partner.org[192.0.2.25]:25", "verdict": "refuse",
                         "security": "", "detail": "DANE: no TLSA record matched", "tlsa": ["3 1 1 0a1b"]}]}
    plain = [line.plain for line in check_lines(answer)]
    assert plain[0] == "  mx.partner.org[192.0.2.25]:25: would defer: DANE: no TLSA record matched"
    assert plain[1] == "    TLSA 3 1 1 0a1b"
    assert plain[2] == "  Mail to partner.org would defer: it waits in the queue."
