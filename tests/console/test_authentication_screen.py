"""The Mail authentication screen on a real relay: the signing keys it runs with, the record to publish,
the live check against a DNS server on loopback, a new key added through the relay, the Microsoft 365
steps, and a relay that is down."""

from __future__ import annotations

import pytest

from appliance import dkim
from console.app import make_app
from console.screens.authentication import chunks, default_selector, microsoft_lines
from relay.control.client import ControlClient
from tests.console.conftest import text_of, until
from tests.console.test_screens_fit import SIZES, misfits
from tests.console.test_snapshots import fixed_clock  # noqa: F401  (a fixture)
from tests.support.dns_server import DnsServer

NAME = "s1._domainkey.example.com"


@pytest.fixture
def started():
    things = []
    yield things
    for thing in reversed(things):
        thing.stop()


@pytest.fixture
def world(tmp_path, make_relay, sink, started):
    """The console's root, the key of example.com under it, and a relay signing with it that asks `dns`."""
    root = tmp_path / "root"
    key, _ = dkim.create_key(root / "etc/postern/dkim", "example.com", "s1", "rsa", root)
    dns = DnsServer({}).start()
    started.append(dns)
    relay = make_relay(sink.port, dns_servers=[dns.address], authentication={
        "dkim_keys": {"example.com": {"selector": "s1", "key_file": str(key)}},
        "dmarc_policy": "enforce", "arc_domain": "example.com"})
    relay.socket = relay.workdir / "control.sock"
    return relay, root, key, dns


def console(relay, root, monkeypatch):
    monkeypatch.setenv("TERM", "linux")
    return make_app(str(relay.socket), str(relay.config_path), root=str(root))


def running_keys(relay) -> dict:
    with ControlClient(str(relay.socket)) as client:
        return client.call("io.postern.Config.Get")["mta"]["authentication"]["dkim_keys"]


def rows(screen) -> dict[str, str]:
    listing = screen.query_one("#tls-rows")
    return {listing.get_option_at_index(i).id: str(listing.get_option_at_index(i).prompt)
            for i in range(listing.option_count)}


async def authentication(pilot):
    """F11, then a: the list, once the relay's settings are in."""
    await pilot.press("f11")
    await until(pilot, lambda: type(pilot.app.screen).__name__ == "SystemScreen", what="the system screen")
    await pilot.press("a")
    await until(pilot, lambda: type(pilot.app.screen).__name__ == "AuthenticationScreen"
                and pilot.app.screen.running is not None, what="the mail authentication screen")
    return pilot.app.screen


def shown_value(text: str) -> str:
    """The record's value as the screen shows it, its lines joined again."""
    lines = text.splitlines()
    start, end = lines.index("Value (one line: join these lines)") + 1, lines.index("Zone-file form")
    return "".join(lines[start:end])


def zone_record(text: str) -> str:
    """The zone-file form as the screen shows it, read by dnspython: the TXT record's strings, joined."""
    import dns.zone

    lines = text.splitlines()
    zone_form = lines[lines.index("Zone-file form") + 1:]
    shown = "\n".join(zone_form[:zone_form.index("")] if "" in zone_form else zone_form)
    zone = dns.zone.from_text("$TTL 3600\n" + shown, origin=".", relativize=False, check_origin=False)
    (rdataset,) = [r for _, r in zone.iterate_rdatasets("TXT")]
    return b"".join(rdataset[0].strings).decode()


async def test_the_list_the_record_and_the_live_check(world, monkeypatch):
    relay, root, key, dns = world
    app = console(relay, root, monkeypatch)
    async with app.run_test(size=(80, 25)) as pilot:
        screen = await authentication(pilot)
        await until(pilot, lambda: "rsa" in rows(screen).get("example.com", ""), what="the key's algorithm")
        assert rows(screen)["example.com"].split() == ["example.com", "s1", "rsa", "not", "checked"]
        inbound = text_of(app, "#auth-inbound")
        assert "Inbound checks  SPF, DKIM, ARC and DMARC on mail from outside: on" in inbound
        assert "DMARC policy    enforce" in inbound
        assert "ARC sealing     on, sealed as example.com" in inbound

        # `c` on the list: nothing published yet.
        await pilot.press("c")
        await until(pilot, lambda: "not published" in rows(screen)["example.com"], what="the verdict in the list")
        assert f"{NAME}: not published" in text_of(app, ".tls-notice")
        assert (NAME, "TXT") in dns.queries

        # Enter: the record, cut to fit, and it is the key's.
        await pilot.press("enter")
        await until(pilot, lambda: type(app.screen).__name__ == "RecordScreen" and app.screen.record,
                    what="the record")
        record = app.screen
        name, value, zone = dkim.dns_record(key, "example.com", "s1")
        text = record.text()
        assert name in text.splitlines()
        assert shown_value(text) == value
        assert zone_record(text) == value
        assert all(len(line) <= 76 for line in text.splitlines())
        await pilot.pause(0.2)
        assert record.query_one("#auth-record").size.height == len(text.splitlines())  # none wrapped again
        assert not misfits(app)

        # Published (split in strings as a zone file has it): `c` says so; the list says it too.
        dns.records[(NAME.lower(), "TXT")] = ['"' + value[:200] + '" "' + value[200:] + '"']
        await pilot.press("c")
        await until(pilot, lambda: "published and matches the key" in record.text(), what="published")
        assert "published and matches the key" in text_of(app, ".tls-notice")
        await pilot.press("escape")
        await until(pilot, lambda: type(app.screen).__name__ == "AuthenticationScreen", what="the list again")
        assert rows(screen)["example.com"].split()[-1] == "published"

        # Another key's record at the name: not this key's.
        other, _ = dkim.create_key(root / "other", "example.com", "s1", "rsa", root)
        _, other_value, _ = dkim.dns_record(other, "example.com", "s1")
        dns.records[(NAME.lower(), "TXT")] = ['"' + other_value[:200] + '" "' + other_value[200:] + '"']
        await pilot.press("c")
        await until(pilot, lambda: "for another key" in text_of(app, ".tls-notice"), what="another key")
        assert rows(screen)["example.com"].split()[-2:] == ["other", "key"]

        # A DNS server that does not answer: said so, within the check's time.
        dns.silent = (NAME.lower(),)
        monkeypatch.setattr("console.screens.authentication.CHECK_TIMEOUT", 1.0)
        await pilot.press("c")
        await until(pilot, lambda: "no answer from DNS" in text_of(app, ".tls-notice"), what="no answer")
        assert rows(screen)["example.com"].split()[-2:] == ["no", "answer"]

        # Microsoft 365: the sealing domain filled in.
        await pilot.press("m")
        await until(pilot, lambda: type(app.screen).__name__ == "TextScreen", what="the Microsoft 365 steps")
        steps = app.screen.text()
        assert "trusted ARC sealer" in steps.lower() or "Trusted ARC sealer" in steps
        assert "ARC. Add: example.com" in steps
        assert "Enhanced Filtering" in steps
        assert not misfits(app)
        await pilot.press("escape")
        await until(pilot, lambda: type(app.screen).__name__ == "AuthenticationScreen", what="the list again")


async def test_a_new_key_is_made_and_the_relay_signs_with_it(world, monkeypatch):
    relay, root, _, dns = world
    app = console(relay, root, monkeypatch)
    async with app.run_test(size=(80, 25)) as pilot:
        screen = await authentication(pilot)
        await pilot.press("n")
        await until(pilot, lambda: type(app.screen).__name__ == "NewKeyScreen", what="the form")
        form = app.screen
        assert form.query_one("#entry-selector").value == default_selector()
        assert not misfits(app)

        # A name that is no domain: said, no file, nothing changed.
        await pilot.press(*"not a domain", "ctrl+s")
        await until(pilot, lambda: "Not made" in text_of(app, "#entry-notice"), what="the refusal")
        assert not (root / "etc/postern/dkim").joinpath("not a domain.%s.key" % default_selector()).exists()

        # The selector of the key in use: refused, the key stays.
        form.query_one("#entry-domain").value = "example.com"
        form.query_one("#entry-selector").value = "s1"
        await pilot.press("ctrl+s")
        await until(pilot, lambda: "exists" in text_of(app, "#entry-notice"), what="the existing key")
        assert running_keys(relay)["example.com"]["selector"] == "s1"

        # An Ed25519 key for a new domain: made under the root, in force, its record shown.
        form.query_one("#entry-domain").value = "Example.NET"
        form.query_one("#entry-selector").value = "s202612"
        form.query_one("#entry-algorithm").focus()
        await pilot.press("space")
        assert form.query_one("#entry-algorithm").value == "ed25519"
        await pilot.press("ctrl+s")
        await until(pilot, lambda: type(app.screen).__name__ == "RecordScreen" and app.screen.record,
                    timeout=15, what="the new key's record")
        path = root / "etc/postern/dkim/example.net.s202612.key"
        assert path.exists() and path.stat().st_mode & 0o077 in (0, 0o040)
        assert running_keys(relay)["example.net"] == {"selector": "s202612", "key_file": str(path)}
        _, value, _ = dkim.dns_record(path, "example.net", "s202612")
        assert shown_value(app.screen.text()) == value and "k=ed25519" in value
        assert zone_record(app.screen.text()) == value
        await pilot.press("escape")
        await until(pilot, lambda: "example.net" in rows(screen) and "ed25519" in rows(screen)["example.net"],
                    what="the new key in the list")
        assert list(running_keys(relay)) == ["example.com", "example.net"]


async def test_a_key_the_relay_refuses_changes_nothing(world, monkeypatch):
    """A key file every user can read (a root whose file system ignores modes): the relay refuses it with
    its problem line; the running settings stay, and the file made for it is gone."""
    relay, root, _, _ = world
    made = dkim.create_key

    def loose(*args, **kwargs):
        path, notes = made(*args, **kwargs)
        path.chmod(0o644)
        return path, notes

    monkeypatch.setattr(dkim, "create_key", loose)
    app = console(relay, root, monkeypatch)
    async with app.run_test(size=(80, 25)) as pilot:
        await authentication(pilot)
        await pilot.press("n")
        await until(pilot, lambda: type(app.screen).__name__ == "NewKeyScreen", what="the form")
        app.screen.query_one("#entry-domain").value = "example.net"
        await pilot.press("ctrl+s")
        await until(pilot, lambda: "Not applied" in text_of(app, "#entry-notice"), timeout=15, what="the refusal")
        notice = text_of(app, "#entry-notice")
        assert "Not applied, nothing changed: mta.authentication.dkim_keys.example.net.key_file" in notice
        assert "readable by every user" in notice
        assert type(app.screen).__name__ == "NewKeyScreen"
    assert list(running_keys(relay)) == ["example.com"]
    assert not list((root / "etc/postern/dkim").glob("example.net.*"))


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
async def test_every_screen_fits(world, monkeypatch, size):
    """The list, a record after its check, the Microsoft 365 steps and the new key's form, refused."""
    relay, root, _, _ = world
    app = console(relay, root, monkeypatch)
    seen = {}
    async with app.run_test(size=size) as pilot:
        visits = [
            ([], "the list", lambda: "rsa" in rows(app.screen).get("example.com", "")),
            (["enter", "c"], "a record, checked", lambda: "not published" in getattr(app.screen, "text", str)()),
            (["escape", "m"], "Microsoft 365", lambda: type(app.screen).__name__ == "TextScreen"),
            (["escape", "n", *"bad domain", "ctrl+s"], "the new key's form",
             lambda: "Not made" in text_of(app, "#entry-notice")),
        ]
        await authentication(pilot)
        for keys, what, ready in visits:
            for key in keys:
                await pilot.press(key)
                await pilot.pause(0.05)
            await until(pilot, ready, what=what)
            await pilot.pause(0.2)
            if problems := misfits(app):
                seen[what] = problems
    assert not seen, seen


async def test_a_relay_that_is_down_is_said_and_nothing_breaks(tmp_path, monkeypatch):
    monkeypatch.setenv("TERM", "linux")
    root = tmp_path / "root"
    app = make_app(str(tmp_path / "no-relay.sock"), root=str(root))
    async with app.run_test(size=(80, 25)) as pilot:
        await pilot.press("f11", "a")
        await until(pilot, lambda: type(app.screen).__name__ == "AuthenticationScreen"
                    and "not running" in text_of(app, ".tls-notice"), what="the relay said to be down")
        assert "The settings cannot be read: Relay: not running" in text_of(app, ".tls-notice")
        for key in ("enter", "c", "r"):
            await pilot.press(key)
        await pilot.press("n")
        await pilot.pause(0.1)
        assert "no key can be added now" in text_of(app, ".tls-notice")
        await pilot.press("m")
        await until(pilot, lambda: type(app.screen).__name__ == "TextScreen", what="the Microsoft 365 steps")
        assert app.screen.text().startswith("The relay's settings cannot be read now")
        await pilot.press("escape", "escape")
        await until(pilot, lambda: type(app.screen).__name__ == "SystemScreen", what="the system screen again")
    assert not (root / "etc/postern/dkim").exists()


async def test_the_palette_opens_the_screen(tmp_path, monkeypatch):
    monkeypatch.setenv("TERM", "linux")
    app = make_app(str(tmp_path / "no-relay.sock"), root=str(tmp_path))
    async with app.run_test(size=(80, 25)) as pilot:
        await pilot.press("ctrl+p")
        await until(pilot, lambda: type(app.screen).__name__ == "CommandPalette", what="the palette")
        await pilot.press(*"Mail authentication")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await until(pilot, lambda: type(app.screen).__name__ == "AuthenticationScreen", what="the screen")


def test_the_words_without_a_screen():
    assert chunks("abcdefghij" * 5, 20) == ["abcdefghij" * 2, "abcdefghij" * 2, "abcdefghij"]
    assert default_selector(0) == "s197001"
    no_key = microsoft_lines({"arc_seal": True, "dkim_keys": {}})
    assert any("No RSA signing key yet" in line for line in no_key)
    # An Ed25519 key never seals: the first RSA key's domain is the one to trust.
    lines = microsoft_lines({"dkim_keys": {"a.example": {}, "b.example": {}}},
                            {"a.example": "ed25519", "b.example": "rsa"})
    assert any(line.endswith("Add: b.example") for line in lines)
    assert any("ARC sealing is off" in line for line in microsoft_lines({"arc_seal": False}))


def test_the_screen_at_80x25(snap_compare, tmp_path, make_relay, sink, fixed_clock, monkeypatch):
    """Two signing domains, one of them checked; the inbound settings in words."""
    from tests.console.test_snapshots import fixed_relay_app

    root = tmp_path / "root"
    key, _ = dkim.create_key(root / "etc/postern/dkim", "example.com", "s202612", "rsa", root)
    ed, _ = dkim.create_key(root / "etc/postern/dkim", "example.com", "e202612", "ed25519", root)
    relay = make_relay(sink.port, authentication={"dkim_keys": {
        "example.com": {"selector": "s202612", "key_file": str(key)},
        "mail.example.org": {"selector": "e202612", "key_file": str(ed)}}})
    relay.socket = relay.workdir / "control.sock"

    async def shown(pilot):
        await authentication(pilot)
        await until(pilot, lambda: "ed25519" in rows(pilot.app.screen).get("mail.example.org", ""),
                    what="the algorithms")
        await pilot.pause(0.2)

    app = fixed_relay_app(relay, monkeypatch)
    assert snap_compare(app, terminal_size=(80, 25), run_before=shown)
