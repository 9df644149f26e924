"""Pilot tests of the first-boot wizard: every topology walked through against a real relay, with a
temporary root; what is written is read back. Validation names the field, Back keeps answers,
and a wizard started again after a restart picks up at the step it was on."""

import asyncio
import subprocess
from pathlib import Path

import pytest
import yaml
from textual.widgets import Input, OptionList

from appliance.firstboot import SetupState
from appliance.network.live import LiveAddress, LiveInterface, LiveState, parse_resolv_conf
from appliance.schema import load_config_file
from console.app import make_app
from console.screens.confirm import ConfirmScreen
from console.screens.keep_settings import KeepSettingsScreen
from console.wizard.step import StepScreen
from relay.control.client import ControlClient
from tests.appliance.conftest import COMMAND
from tests.console.wizard_support import (SSH_KEY, TENANT, at_step, dns, machine, make_root, step_title,  # noqa: F401
                                          text_of, until)
from tests.support.console_font import unreadable
from tests.support.sink import Sink

TOPOLOGIES = ["direct", "via-relay", "virus-scanner", "virus-scanner-via-relay", "m365"]
SMART_HOST = {"via-relay", "virus-scanner-via-relay", "m365"}


@pytest.fixture
def smarthost():
    server = Sink().start()
    yield server
    server.stop()


@pytest.fixture
def gateway(make_relay, sink, tmp_path):
    """A running relay, and a root whose configuration is the image's with the test relay's listener."""
    relay = make_relay(sink.port)
    relay.socket = relay.workdir / "control.sock"
    shipped = {**relay.mta, "relay_domains": [], "my_networks": [], "internal_relay": {"host": "", "port": 25},
               "external_relay": {"host": "", "port": 25}}  # as an image ships it, on the test relay's port
    relay.root = make_root(tmp_path, shipped)
    return relay


def wizard_app(relay):
    return make_app(str(relay.socket), first_boot=True, root=str(relay.root))


def fill(app, **values) -> None:
    for widget_id, value in values.items():
        app.screen.query_one(f"#{widget_id}", Input).value = value


async def next_step(pilot, number: int) -> None:
    await pilot.press("ctrl+n")
    await at_step(pilot, number)


async def keep_network(pilot) -> None:
    """Next on the network step: the change is in force (under the test's root, its files only) and
    the countdown asks; Enter keeps it."""
    await pilot.press("ctrl+n")
    await until(pilot, lambda: isinstance(pilot.app.screen, KeepSettingsScreen), what="the countdown")
    await pilot.press("enter")
    await at_step(pilot, 2)


async def walk(pilot, topology: str, sink, smarthost) -> None:
    """Answer every step as an admin would for this topology, up to the apply step."""
    app = pilot.app
    await at_step(pilot, 1)
    assert app.screen.query_one("#address", Input).value == "192.0.2.10/24"  # the machine's own, prefilled
    await keep_network(pilot)
    fill(app, hostname="gw.example.com")
    await next_step(pilot, 3)
    fill(app, servers="192.0.2.53")
    await next_step(pilot, 4)
    await pilot.press(*["down"] * TOPOLOGIES.index(topology))
    await next_step(pilot, 5)
    fill(app, domains="example.com, example.org")
    await next_step(pilot, 6)
    fill(app, host="127.0.0.1", port=str(sink.port))
    if topology == "m365":
        fill(app, tenant=TENANT)
    await next_step(pilot, 7)  # the connection check reached the sink
    if topology in SMART_HOST:
        assert app.screen.smart
        fill(app, host="127.0.0.1", port=str(smarthost.port))
        if topology == "via-relay":  # a smart host that wants a login: known by the name in its certificate
            fill(app, host="smtp.example.net", username="gateway", password="s3cret smart host")
    else:
        assert not app.screen.smart
    await next_step(pilot, 8)
    networks = app.screen.query_one("#networks", Input)
    if topology == "m365":
        assert not app.screen.query_one("#prefill").display  # Exchange Online's shared servers are not offered
        fill(app, networks="")
    else:
        await until(pilot, lambda: networks.value == "127.0.0.1/32", what="my networks prefilled")
    await next_step(pilot, 9)
    await next_step(pilot, 10)
    # Mail authentication: both domains offered and ticked, RSA, checks on, annotate only.
    assert [tick.label.plain for tick in app.screen.query("#sign Checkbox")] == [
        "Sign mail from example.com", "Sign mail from example.org"]
    assert all(tick.value for tick in app.screen.query("#sign Checkbox"))
    await next_step(pilot, 11)
    fill(app, key=SSH_KEY)
    await next_step(pilot, 12)
    await next_step(pilot, 13)


def running_mta(relay) -> dict:
    with ControlClient(str(relay.socket)) as client:
        return client.call("io.postern.Config.Get")["mta"]


@pytest.mark.parametrize("topology", TOPOLOGIES)
async def test_each_topology_from_first_boot_to_a_delivered_test_message(gateway, sink, smarthost, machine,
                                                                         topology):
    app = wizard_app(gateway)
    async with app.run_test(size=(80, 25)) as pilot:
        await walk(pilot, topology, sink, smarthost)
        await pilot.press("ctrl+n")  # apply, then the test message
        await until(pilot, lambda: "configuration: wrote /etc/postern/postern.yaml" in text_of(app, "#apply-report"),
                    what="the configuration written")
        assert "relay: the new configuration is in force" in text_of(app, "#apply-report")
        assert "dkim: made an RSA key for example.com (selector s" in text_of(app, "#apply-report")
        # The records to publish, and the live check's verdict: 192.0.2.53 (TEST-NET) never answers.
        await until(pilot, lambda: "no answer from DNS" in text_of(app, "#dkim-records"), timeout=30,
                    what="the DKIM records checked")
        records = text_of(app, "#dkim-records")
        assert "._domainkey.example.com" in records and "._domainkey.example.org" in records
        assert "v=DKIM1; k=rsa; p=" in records
        await until(pilot, lambda: "status=sent" in text_of(app, "#transcript"), timeout=30, what="the delivery")
        transcript = text_of(app, "#transcript")
        assert "-> MAIL FROM:<postmaster@gw.example.com>" in transcript and "TLS started" in transcript
        assert [m.recipients for m in sink.messages] == [["postmaster@example.com"]]
        await pilot.press("ctrl+n")  # finish
        await until(pilot, lambda: SetupState(gateway.root).is_complete(), what="setup marked complete")
        await until(pilot, lambda: step_title(app) == "", what="the wizard to close")

    state = SetupState(gateway.root)
    assert state.completed_topology() == topology
    assert not (gateway.root / "var/lib/postern/firstboot.yaml").exists()
    config = load_config_file(gateway.root / "etc/postern/postern.yaml")
    mta = config.mta
    assert mta.hostname == "gw.example.com" and config.network.hostname == "gw.example.com"
    assert mta.relay_domains == ("example.com", "example.org")
    assert (mta.internal_relay.host, mta.internal_relay.port) == ("127.0.0.1", sink.port)
    assert str(mta.listen[0]) == f"127.0.0.1:{gateway.port}"  # what the wizard does not ask about stays
    assert mta.queue.minimal_backoff_time == 1
    if topology in SMART_HOST:
        host = "smtp.example.net" if topology == "via-relay" else "127.0.0.1"
        assert (mta.external_relay.host, mta.external_relay.port) == (host, smarthost.port)
    else:
        assert mta.external_relay.host == ""
    if topology == "via-relay":
        password_file = gateway.root / "etc/postern/smarthost.password"
        assert mta.external_relay.username == "gateway" and mta.external_relay.password_file == str(password_file)
        assert password_file.read_text() == "s3cret smart host\n" and password_file.stat().st_mode & 0o007 == 0
        assert "s3cret" not in (gateway.root / "etc/postern/postern.yaml").read_text()
    if topology == "m365":
        assert mta.m365.tenant_ids == (TENANT,) and mta.my_networks == () and mta.marker.enabled
    else:
        assert [str(n) for n in mta.my_networks] == ["127.0.0.1/32"]
    assert mta.tls.cert_file == str(gateway.root / "etc/postern/tls/postern.pem")
    assert (gateway.root / "etc/postern/tls/postern.key").stat().st_mode & 0o777 == 0o600
    assert config.network.interface("eth0").gateways[0].compressed == "192.0.2.1"
    network_file = gateway.root / "etc/systemd/network/10-postern-eth0.network"
    assert "Address=192.0.2.10/24" in network_file.read_text()
    assert "nameserver 192.0.2.53" in (gateway.root / "etc/resolv.conf").read_text()
    assert running_mta(gateway)["relay_domains"] == ["example.com", "example.org"]
    assert (gateway.root / "home/admin/.ssh/authorized_keys").read_text() == SSH_KEY + "\n"
    assert set(mta.authentication.dkim_keys) == {"example.com", "example.org"}
    for key in mta.authentication.dkim_keys.values():  # the relay reads the key, nobody else
        assert Path(key.key_file).parent == gateway.root / "etc/postern/dkim"
        assert Path(key.key_file).stat().st_mode & 0o077 == 0
    assert running_mta(gateway)["authentication"]["dkim_keys"].keys() == {"example.com", "example.org"}
    if topology in SMART_HOST:  # outgoing mail from my networks (or the tenant) goes to the smart host
        if topology == "virus-scanner-via-relay":  # (via-relay's smart host here offers no login to take)
            gateway.send("alice@example.com", ["bob@partner.example"])
            assert smarthost.wait_for(1)[0].recipients == ["bob@partner.example"]


async def test_each_step_names_the_field_that_is_wrong(gateway, machine):
    app = wizard_app(gateway)
    async with app.run_test(size=(80, 25)) as pilot:
        await at_step(pilot, 1)
        fill(app, gateway="198.51.100.1")
        await pilot.press("ctrl+n")
        await until(pilot, lambda: "Default gateway: 198.51.100.1 is not inside 192.0.2.0/24" in
                    text_of(app, "#step-problems"), what="the gateway problem")
        assert step_title(app).startswith("1/") and app.screen.query_one("#gateway").has_class("-problem")
        fill(app, gateway="192.0.2.1")
        await keep_network(pilot)
        fill(app, hostname="gw")
        await pilot.press("ctrl+n")
        await until(pilot, lambda: "Hostname: 'gw' is not a fully qualified host name" in
                    text_of(app, "#step-problems"), what="the hostname problem")
        assert app.focused is app.screen.query_one("#hostname")
        fill(app, hostname="gw.example.com", public="not-an-address")
        await pilot.press("ctrl+n")
        await until(pilot, lambda: "Public address: 'not-an-address' is not an IP address" in
                    text_of(app, "#step-problems"), what="the address problem")
        fill(app, public="192.0.2.10")
        await next_step(pilot, 3)
        fill(app, servers="192.0.2.300")
        await pilot.press("ctrl+n")
        await until(pilot, lambda: "DNS servers: '192.0.2.300' is not an IP address" in text_of(app, "#step-problems"),
                    what="the DNS problem")
        fill(app, servers="192.0.2.53")
        await next_step(pilot, 4)
        await next_step(pilot, 5)
        await pilot.press("ctrl+n")
        await until(pilot, lambda: "Relay domains: the Direct delivery setup receives mail for your domains" in
                    text_of(app, "#step-problems"), what="the missing domains")
        fill(app, domains="example.com")
        await next_step(pilot, 6)
        fill(app, host="mail.example.com", port="0")
        await pilot.press("ctrl+n")
        await until(pilot, lambda: "Port: 0 is not a port number: use 1 to 65535" in text_of(app, "#step-problems"),
                    what="the port problem")
        fill(app, host="gw.example.com", port="25")
        await pilot.press("ctrl+n")
        await until(pilot, lambda: "Host: gw.example.com is this gateway's own name" in
                    text_of(app, "#step-problems"), what="the loop")


async def test_a_failed_connection_check_asks_before_going_on(gateway, machine):
    from tests.support.net import free_port

    app = wizard_app(gateway)
    async with app.run_test(size=(80, 25)) as pilot:
        await at_step(pilot, 1)
        await keep_network(pilot)
        for number in range(2, 6):
            if number == 2:
                fill(app, hostname="gw.example.com")
            if number == 3:
                fill(app, servers="192.0.2.53")
            if number == 5:
                fill(app, domains="example.com")
            await next_step(pilot, number + 1)
        fill(app, host="127.0.0.1", port=str(free_port()))  # nothing listens there
        await pilot.press("ctrl+n")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the question")
        assert "connection refused" in str(app.screen.query_one("#question").render())
        await pilot.press("n")
        await at_step(pilot, 6)
        assert "connection refused" in text_of(app, "#hop")
        await pilot.press("ctrl+n")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the question again")
        await pilot.press("y")
        await at_step(pilot, 7)


async def test_the_ptr_check_compares_the_helo_name_with_the_forward_confirmed_ptr(gateway, machine):
    app = wizard_app(gateway)
    async with app.run_test(size=(80, 25)) as pilot:
        await at_step(pilot, 1)
        await keep_network(pilot)
        fill(app, hostname="gw.example.com")
        await pilot.press("ctrl+t")
        await until(pilot, lambda: "PASS" in text_of(app, "#ptr"), what="the PTR verdict")
        assert "PTR of 192.0.2.10: gw.example.com" in text_of(app, "#ptr")
        fill(app, helo="mail.example.com")
        await pilot.press("ctrl+t")
        await until(pilot, lambda: "FAIL: the HELO name mail.example.com differs" in text_of(app, "#ptr"),
                    what="the mismatch")


async def test_back_keeps_the_answers_and_a_restart_resumes_at_the_same_step(gateway, machine):
    app = wizard_app(gateway)
    async with app.run_test(size=(80, 25)) as pilot:
        await at_step(pilot, 1)
        await keep_network(pilot)
        fill(app, hostname="gw.example.com")
        await next_step(pilot, 3)
        fill(app, servers="192.0.2.53")
        await pilot.press("escape")
        await at_step(pilot, 2)
        assert app.screen.query_one("#hostname", Input).value == "gw.example.com"
        await next_step(pilot, 3)
        assert app.screen.query_one("#servers", Input).value == "192.0.2.53"
        await next_step(pilot, 4)
        await pilot.press("down")
        await next_step(pilot, 5)
        fill(app, domains="example.com")
        await next_step(pilot, 6)
    # The console goes away (a reboot, a dropped SSH session): the answers so far are on disk.
    saved = yaml.safe_load((gateway.root / "var/lib/postern/firstboot.yaml").read_text())
    assert saved["step"] == "internal" and saved["answers"]["topology"] == "via-relay"
    assert (gateway.root / "var/lib/postern/firstboot.yaml").stat().st_mode & 0o777 == 0o600

    again = wizard_app(gateway)
    async with again.run_test(size=(80, 25)) as pilot:
        await at_step(pilot, 6)
        assert "Setup 6/13: Internal relay host" in text_of(again, "#status-line")
        await pilot.press("escape")
        await at_step(pilot, 5)
        assert again.screen.query_one("#domains", Input).value == "example.com"
        await pilot.press("escape")
        await at_step(pilot, 4)
        options = again.screen.query_one("#topology", OptionList)
        assert options.get_option_at_index(options.highlighted).id == "via-relay"


async def test_first_boot_offers_only_the_wizard(gateway, machine):
    """No way out to the other screens, the command palette or a shell until setup is complete."""
    from textual.command import CommandPalette

    app = wizard_app(gateway)
    async with app.run_test(size=(80, 25)) as pilot:
        await at_step(pilot, 1)
        await pilot.press("escape")  # Back on the first step: there is nothing before it
        await pilot.pause(0.3)
        assert not isinstance(app.screen, ConfirmScreen) and step_title(app).startswith("1/")
        for key in ("ctrl+p", "f11", "f2", "f3", "f7", "f12"):
            await pilot.press(key)
            await pilot.pause()
            assert isinstance(app.screen, StepScreen) and not CommandPalette.is_open(app), f"{key} left the wizard"
        assert step_title(app).startswith("1/")
        assert not SetupState(gateway.root).is_complete()


async def test_leaving_the_wizard_run_again_keeps_it_for_later(gateway, machine):
    app = make_app(str(gateway.socket), root=str(gateway.root))
    async with app.run_test(size=(80, 25)) as pilot:
        await palette_command(pilot, "setup wiz")
        await at_step(pilot, 1)
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the question")
        await pilot.press("y")
        await until(pilot, lambda: step_title(app) == "", what="the wizard to close")
        assert app.screen.__class__.__name__ == "DashboardScreen"
    assert yaml.safe_load((gateway.root / "var/lib/postern/firstboot.yaml").read_text())["step"] == "network"
    assert not SetupState(gateway.root).is_complete()


async def palette_command(pilot, words: str) -> None:
    from textual.command import CommandList, CommandPalette

    await pilot.press("ctrl+p")
    await until(pilot, lambda: isinstance(pilot.app.screen, CommandPalette), what="the command palette")
    await pilot.press(*words)
    await until(pilot, lambda: "Setup wizard" in str(pilot.app.screen.query_one(CommandList).get_option_at_index(0).prompt),
                what="the command found")
    await pilot.press("enter")


async def test_the_wizard_runs_again_from_the_command_palette(gateway, machine):
    app = make_app(str(gateway.socket), root=str(gateway.root))
    async with app.run_test(size=(80, 25)) as pilot:
        await pilot.pause()
        assert step_title(app) == ""  # without --first-boot the console opens on the dashboard
        await palette_command(pilot, "setup wiz")
        await at_step(pilot, 1)
        await palette_command(pilot, "setup wiz")  # once is enough: a second one is not stacked on it
        await pilot.pause(0.5)
        assert sum(isinstance(screen, StepScreen) for screen in app.screen_stack) == 1
        assert step_title(app).startswith("1/")


async def test_the_network_change_stays_only_when_kept_and_confirm_from_another_shell_keeps_it(
        gateway, machine, monkeypatch):
    """The same change and countdown as the Network screen's; under the test's root, the files only."""
    network_file = gateway.root / "etc/systemd/network/10-postern-eth0.network"
    record = gateway.root / "run/postern/network-try.json"
    app = wizard_app(gateway)
    async with app.run_test(size=(80, 25)) as pilot:
        await at_step(pilot, 1)
        fill(app, address="192.0.2.20/24")
        await pilot.press("ctrl+n")
        await until(pilot, lambda: isinstance(app.screen, KeepSettingsScreen), what="the countdown")
        assert "Keep these settings? Reverting in 1" in text_of(app, "#keep-countdown")
        assert f"files only: the running system is not changed under the root {gateway.root}" in text_of(
            app, "#keep-summary")
        assert "Address=192.0.2.20/24" in network_file.read_text() and record.exists()
        await pilot.press("escape")  # any key but Enter restores now
        await until(pilot, lambda: "not confirmed: the previous settings are back" in text_of(app, "#step-problems"),
                    what="the restore")
        assert step_title(app).startswith("1/") and not network_file.exists() and not record.exists()

        monkeypatch.setattr("console.wizard.steps_system.TRY_TIMEOUT", 1.0)  # nobody answers in time
        await pilot.press("ctrl+n")
        await until(pilot, lambda: isinstance(app.screen, KeepSettingsScreen), what="the countdown")
        await until(pilot, lambda: "not confirmed" in text_of(app, "#step-problems"), timeout=5,
                    what="the restore at the deadline")
        assert step_title(app).startswith("1/") and not network_file.exists() and not record.exists()

        # `postern-appliance confirm` in another shell keeps it, as with the Network screen and `try`.
        monkeypatch.setattr("console.wizard.steps_system.TRY_TIMEOUT", 120.0)
        await pilot.press("ctrl+n")
        await until(pilot, lambda: isinstance(app.screen, KeepSettingsScreen), what="the countdown")
        confirmed = await asyncio.to_thread(subprocess.run, [COMMAND, "confirm", "--root", str(gateway.root)],
                                            capture_output=True, text=True, timeout=30)
        assert confirmed.returncode == 0, confirmed.stderr
        await at_step(pilot, 2)
        assert "Address=192.0.2.20/24" in network_file.read_text() and not record.exists()

        # Back, and Next with nothing changed: no question (the countdown would stop it at step 1).
        kept = (gateway.root / "run/postern/network-try.outcome").stat().st_mtime_ns
        await pilot.press("escape")
        await at_step(pilot, 1)
        await next_step(pilot, 2)
        assert (gateway.root / "run/postern/network-try.outcome").stat().st_mtime_ns == kept


async def test_quitting_during_the_countdown_restores_the_previous_settings(gateway, machine):
    network_file = gateway.root / "etc/systemd/network/10-postern-eth0.network"
    app = wizard_app(gateway)
    async with app.run_test(size=(80, 25)) as pilot:
        await at_step(pilot, 1)
        fill(app, address="192.0.2.20/24")
        await pilot.press("ctrl+n")
        await until(pilot, lambda: isinstance(app.screen, KeepSettingsScreen), what="the countdown")
        assert network_file.exists()
        await pilot.press("ctrl+q")
    assert not network_file.exists()
    assert not (gateway.root / "run/postern/network-try.json").exists()


async def test_running_the_wizard_again_starts_from_the_configuration_as_it_is(gateway, sink, smarthost, machine):
    from appliance.provision import carry_out, check_seed

    seed = {"topology": "via-relay",
            "network": {"hostname": "gw.example.com",
                        "interfaces": {"eth0": {"address": "192.0.2.10/24", "gateway": "192.0.2.1"}},
                        "dns": {"servers": ["192.0.2.53"]}},
            "mta": {**yaml.safe_load((gateway.root / "etc/postern/postern.yaml").read_text())["mta"],
                    "relay_domains": ["example.com"], "my_networks": ["127.0.0.1/32"],
                    "internal_relay": {"host": "127.0.0.1", "port": sink.port},
                    "external_relay": {"host": "127.0.0.1", "port": smarthost.port}},
            "tls": {"mode": "self-signed"}}
    plan, problems = check_seed(seed, gateway.root)
    assert not problems
    carry_out(plan, gateway.root)
    SetupState(gateway.root).mark_complete("via-relay", by="a test")

    app = wizard_app(gateway)
    async with app.run_test(size=(80, 25)) as pilot:
        await at_step(pilot, 1)
        assert app.screen.query_one("#address", Input).value == "192.0.2.10/24"
        await next_step(pilot, 2)
        assert app.screen.query_one("#hostname", Input).value == "gw.example.com"
        for number in range(3, 10):
            await next_step(pilot, number)
            if number == 4:
                options = app.screen.query_one("#topology", OptionList)
                assert options.get_option_at_index(options.highlighted).id == "via-relay"
            if number == 7:
                assert app.screen.smart and app.screen.query_one("#port", Input).value == str(smarthost.port)
        assert app.screen.mode == "keep"  # the certificate made before is offered, and chosen
        await next_step(pilot, 10)
        await next_step(pilot, 11)
        fill(app, key=SSH_KEY)
        await next_step(pilot, 12)
        assert "cert_file: /etc/postern/tls/postern.pem" in text_of(app, "#summary-text")


async def test_the_administrator_gets_a_key_or_a_password(gateway, machine, tmp_path):
    from tests.console.wizard_support import complete_draft, save_progress

    draft = complete_draft(listen=gateway.mta["listen"][0])
    del draft["admin"]
    save_progress(gateway.root, "admin", draft)
    app = wizard_app(gateway)
    async with app.run_test(size=(80, 25)) as pilot:
        await at_step(pilot, 11)
        assert "admin has no SSH key and no password" in text_of(app, "#login")
        assert "Type an SSH key or a password" in text_of(app, "#login")
        await pilot.press("ctrl+n")
        await until(pilot, lambda: "SSH public key: give an SSH key or a password" in text_of(app, "#step-problems"),
                    what="the missing login")
        fill(app, key="ssh-ed25519 not-a-key")
        await pilot.press("ctrl+n")
        await until(pilot, lambda: "is not an SSH public key" in text_of(app, "#step-problems"), what="the bad key")
        fill(app, key="", password="short", password2="short")
        await pilot.press("ctrl+n")
        await until(pilot, lambda: "Password: at least 10 characters" in text_of(app, "#step-problems"),
                    what="the short password")
        fill(app, password="correct horse battery", password2="correct horse batterie")
        await pilot.press("ctrl+n")
        await until(pilot, lambda: "Password again: the two passwords differ" in text_of(app, "#step-problems"),
                    what="the mismatch")
        fill(app, password2="correct horse battery", key=SSH_KEY)
        await pilot.pause()
        # What is typed shows as what the login will be: not "no SSH key and no password" alone.
        assert ("After setup: admin logs in with the SSH key above and the password typed here."
                in text_of(app, "#login"))
        await next_step(pilot, 12)
        summary = text_of(app, "#summary-text")
        assert "Administrator login: 1 SSH key added, and a new password" in summary
        assert summary.startswith("In three parts:") and "the configuration file" in summary.splitlines()[0]


async def test_a_typed_admin_password_outlives_a_restart_only_as_its_hash(gateway, machine):
    from appliance.admin_login import password_matches
    from tests.console.wizard_support import complete_draft, save_progress

    draft = complete_draft(listen=gateway.mta["listen"][0])
    del draft["admin"]
    save_progress(gateway.root, "admin", draft)
    app = wizard_app(gateway)
    async with app.run_test(size=(80, 25)) as pilot:
        await at_step(pilot, 11)
        fill(app, key=SSH_KEY, password="correct horse battery", password2="correct horse battery")
        await next_step(pilot, 12)
    progress = gateway.root / "var/lib/postern/firstboot.yaml"
    assert "correct horse" not in progress.read_text()

    again = wizard_app(gateway)
    async with again.run_test(size=(80, 25)) as pilot:
        await at_step(pilot, 12)
        assert "1 SSH key added, and a new password" in text_of(again, "#summary-text")
        await pilot.press("escape")
        await at_step(pilot, 11)
        assert again.screen.query_one("#password", Input).placeholder == "(kept: leave empty)"
        await next_step(pilot, 12)  # left empty: the password typed before stays
        assert "1 SSH key added, and a new password" in text_of(again, "#summary-text")
    saved = yaml.safe_load(progress.read_text())["answers"]
    assert "correct horse" not in progress.read_text() and "password2" not in saved["wizard"]
    assert password_matches("correct horse battery", saved["admin"]["password_hash"])


async def test_a_root_it_cannot_write_does_not_end_the_console(gateway, machine):
    # Even root cannot put a file where a directory is (as an admin without root cannot write there).
    (gateway.root / "var/lib/postern/firstboot.yaml").mkdir(parents=True)
    app = wizard_app(gateway)
    async with app.run_test(size=(80, 25)) as pilot:
        await at_step(pilot, 1)
        await keep_network(pilot)
        await until(pilot, lambda: any("could not be saved" in str(n.message) for n in app._notifications),
                    what="the warning")


async def test_the_tls_step_does_not_ask_for_files_copied_before_any_login_exists(gateway, machine):
    from tests.console.wizard_support import complete_draft, save_progress

    save_progress(gateway.root, "tls", complete_draft(listen=gateway.mta["listen"][0]))
    app = wizard_app(gateway)
    async with app.run_test(size=(80, 25)) as pilot:
        await at_step(pilot, 9)
        help_text = text_of(app, "#step-help")
        assert "scp" not in help_text
        assert "choose self-signed now" in help_text and "Certificates screen (F9)" in help_text


def dhcp_machine(resolv_conf: str) -> LiveState:
    """eth0 with an address from DHCP, and the DNS servers and search domains as a resolv.conf says them."""
    servers, search = parse_resolv_conf(resolv_conf)
    return LiveState(
        hostname="localhost",
        interfaces=(LiveInterface("eth0", "52:54:00:12:34:56", "up", 1500,
                                  (LiveAddress("192.0.2.10/24", "192.0.2.255", "255.255.255.0", True),), ("192.0.2.1",),
                                  True),),
        default_gateways=("192.0.2.1 (eth0)",), dns_servers=tuple(servers), search_domains=tuple(search))


async def test_a_dhcp_network_without_a_search_domain_passes_the_network_and_dns_steps(tmp_path, monkeypatch):
    """systemd-resolved writes `search .` when DHCP gives no search domain: that is none, not a domain to refuse."""
    monkeypatch.setenv("TERM", "linux")  # the VM console's 16 colours
    machine = dhcp_machine("nameserver 192.0.2.53\nsearch .\n")
    monkeypatch.setattr("console.wizard.system.live_state", lambda: machine)
    root = make_root(tmp_path)
    app = make_app(str(tmp_path / "no-relay.sock"), first_boot=True, root=str(root))
    async with app.run_test(size=(80, 25)) as pilot:
        await at_step(pilot, 1)
        screen = app.screen
        # DHCP: the address and gateway are the server's, and say so; nothing is drawn black on black.
        address, gateway = screen.query_one("#address", Input), screen.query_one("#gateway", Input)
        assert address.disabled and address.value == "" and address.placeholder == "given by the DHCP server"
        assert address.border_title == "Address" and gateway.border_title == "Default gateway"
        await pilot.pause(0.2)
        assert unreadable(app) == []
        # A static address: the placeholders are examples, in words, not values that look set.
        screen.query_one("#dhcp").value = False
        await pilot.pause()
        assert not address.disabled and address.placeholder.startswith("with its prefix, such as 192.0.2.10/24")
        fill(app, address="192.0.2.20/24")
        # Back to DHCP: the typed address is not shown as if in use, and comes back with a static address again.
        screen.query_one("#dhcp").value = True
        await pilot.pause()
        assert address.value == "" and address.placeholder == "given by the DHCP server"
        screen.query_one("#dhcp").value = False
        await pilot.pause()
        assert address.value == "192.0.2.20/24"
        screen.query_one("#dhcp").value = True
        await pilot.pause()
        await keep_network(pilot)
        assert app.screen.query_one("#hostname", Input).placeholder == "such as gw.example.com"
        fill(app, hostname="gw.example.com", public="")
        await pilot.press("ctrl+n")
        await at_step(pilot, 3)
        assert app.screen.query_one("#servers", Input).value == "192.0.2.53"
        assert app.screen.query_one("#search", Input).value == ""
        assert app.screen.query_one("#search", Input).placeholder.startswith("such as example.com")
        await pilot.pause(0.2)
        assert unreadable(app) == []
        await pilot.press("ctrl+n")
        await at_step(pilot, 4)
    assert SetupState(root).load_progress().document["network"]["dns"] == {"servers": ["192.0.2.53"]}


async def test_the_authentication_step_keeps_a_key_in_place_and_signs_only_what_is_ticked(gateway, machine):
    from appliance import dkim
    from tests.console.wizard_support import complete_draft, save_progress

    key, _ = dkim.create_key(gateway.root / "etc/postern/dkim", "example.com", "s2025", "rsa", gateway.root)
    draft = complete_draft(listen=gateway.mta["listen"][0])
    draft["mta"]["relay_domains"] = ["example.com", "example.org", "example.net"]
    draft["mta"]["authentication"] = {"dkim_keys": {"example.com": {"selector": "s2025", "key_file": str(key)}}}
    save_progress(gateway.root, "authentication", draft)
    app = wizard_app(gateway)
    async with app.run_test(size=(80, 25)) as pilot:
        await at_step(pilot, 10)
        ticks = {tick.name: tick for tick in app.screen.query("#sign Checkbox")}
        assert str(ticks["example.com"].label) == "Sign mail from example.com (key s2025 in place)"
        ticks["example.org"].value = False  # this one stays unsigned
        app.screen.query_one("#inbound").value = False
        await pilot.pause()
        assert not app.screen.query_one("#dmarc").display  # no policy to choose without the checks
        await next_step(pilot, 11)
        saved = app.screen.wizard.draft
        assert saved.get("dkim.domains") == ["example.net"]
        assert saved.get("mta.authentication.dkim_keys") == {"example.com": {"selector": "s2025", "key_file": str(key)}}
        assert saved.get("mta.authentication.check_inbound") is False
        await pilot.press("escape")  # back: the answers come back as given
        await at_step(pilot, 10)
        ticks = {tick.name: tick.value for tick in app.screen.query("#sign Checkbox")}
        assert ticks == {"example.com": True, "example.org": False, "example.net": True}
    plan, problems = saved.check(gateway.root)
    assert not problems
    assert [new.domain for new in plan.dkim_keys] == ["example.net"]  # the key in place is not made again
    assert sorted(plan.document["mta"]["authentication"]["dkim_keys"]) == ["example.com", "example.net"]
