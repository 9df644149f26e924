"""Pilot tests of the MTA settings screen against a real relay on its real control socket."""

import smtplib

import yaml

from console.app import make_app
from relay.config_file import ConfigFile
from relay.control.client import ControlClient
from tests.console.conftest import text_of, until


def running_mta(relay) -> dict:
    with ControlClient(str(relay.workdir / "control.sock")) as client:
        return client.call("io.postern.Config.Get")["mta"]



def banner_of(relay) -> str:
    client = smtplib.SMTP(timeout=10)
    try:
        _, message = client.connect("127.0.0.1", relay.port)
        return message.decode()
    finally:
        client.close()


async def open_mta(pilot, app):
    await pilot.press("f4")
    await until(pilot, lambda: app.screen.__class__.__name__ == "MtaScreen", what="the MTA screen")
    await until(pilot, lambda: app.screen.running is not None, what="the running settings")
    return app.screen


async def test_mta_screen_loads_checks_shows_the_diff_and_applies(make_relay, sink):
    relay = make_relay(sink.port)
    app = make_app(str(relay.workdir / "control.sock"))
    async with app.run_test(size=(80, 25)) as pilot:
        screen = await open_mta(pilot, app)
        # The running values, every field with its help.
        assert screen.query_one("#mta-hostname").value == "gw.example.com"
        assert screen.query_one("#mta-banner").value == "ESMTP Postern"
        assert screen.query_one("#mta-relay_domains").text == "example.com"
        assert screen.query_one("#mta-my_networks").text == "127.0.0.1/32"
        assert screen.query_one("#mta-internal_relay--port").value == str(sink.port)
        assert screen.query_one("#mta-match_subdomains").value is False
        assert screen.query_one("#mta-queue--maximal_queue_lifetime").value == "5d"
        assert len(screen.query(".mta-note")) == len(screen.fields)  # one line of help each
        assert "the internet hostname of this mail system" in text_of(app, "#note-mta-hostname")
        assert "The running settings" in text_of(app, "#mta-notice")

        # A bad network is named under its field, and nothing can be applied.
        screen.query_one("#mta-my_networks").load_text("127.0.0.1/32\n10.0.0.300/8")
        await until(pilot, lambda: "10.0.0.300/8" in screen.error_text("my_networks"), what="the field's problem")
        assert screen.error_text("my_networks").startswith("line 2: '10.0.0.300/8' is not an IP network")
        assert "1 problem" in text_of(app, "#mta-notice")
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert app.screen is screen and "Not applied" in text_of(app, "#mta-notice")
        assert running_mta(relay)["my_networks"] == ["127.0.0.1/32"]

        # Fixed (a list may be comma-separated too), and a new banner typed in.
        screen.query_one("#mta-my_networks").load_text("127.0.0.1/32, 10.0.0.0/8")
        banner = screen.query_one("#mta-banner")
        banner.focus()
        banner.value = ""
        await pilot.press(*"ESMTP Changed", "space", *"here")
        await until(pilot, lambda: "2 changes" in text_of(app, "#mta-notice"), what="two changes")
        assert screen.error_text("my_networks") == ""
        assert "* Banner" in str(screen.query_one("#label-mta-banner").render())

        # Ctrl+S shows the diff first; n keeps editing and changes nothing.
        await pilot.press("ctrl+s")
        await until(pilot, lambda: app.screen.__class__.__name__ == "ChangesScreen", what="the diff")
        changes = text_of(app, "#changes-text")
        assert "banner: ESMTP Postern -> ESMTP Changed here" in changes
        assert "my_networks:\n  + 10.0.0.0/8" in changes
        await pilot.press("n")
        await until(pilot, lambda: app.screen is screen, what="back to the form")
        assert running_mta(relay)["banner"] == "ESMTP Postern"

        # y applies it: the daemon reports it, and a new SMTP connection gets the new banner.
        await pilot.press("ctrl+s")
        await until(pilot, lambda: app.screen.__class__.__name__ == "ChangesScreen", what="the diff")
        await pilot.press("y")
        await until(pilot, lambda: "Applied" in text_of(app, "#mta-notice"), what="the change applied")
        applied = running_mta(relay)
        assert applied["banner"] == "ESMTP Changed here"
        assert applied["my_networks"] == ["127.0.0.1/32", "10.0.0.0/8"]
        assert banner_of(relay) == "gw.example.com ESMTP Changed here"
        # The file keeps what the admin set, not every default.
        written = yaml.safe_load(relay.config_path.read_text())["mta"]
        assert written["banner"] == "ESMTP Changed here" and "m365" not in written and "marker" not in written
        assert ConfigFile(relay.config_path).version_text(0) == relay.config_path.read_text()
        await until(pilot, lambda: "* Banner" not in str(screen.query_one("#label-mta-banner").render()),
                    what="the form to show the running settings again")


async def test_mta_screen_shows_the_relays_refusal_at_the_field(make_relay, sink):
    relay = make_relay(sink.port)
    app = make_app(str(relay.workdir / "control.sock"))
    async with app.run_test(size=(80, 25)) as pilot:
        screen = await open_mta(pilot, app)
        # Valid on paper, but the port is taken (by the sink): the relay refuses and keeps running as it was.
        screen.query_one("#mta-listen").load_text(f"127.0.0.1:{sink.port}")
        await until(pilot, lambda: "1 change" in text_of(app, "#mta-notice"), what="the change")
        await pilot.press("ctrl+s")
        await until(pilot, lambda: app.screen.__class__.__name__ == "ChangesScreen", what="the diff")
        await pilot.press("y")
        await until(pilot, lambda: "Not applied" in text_of(app, "#mta-notice"), what="the refusal")
        assert "cannot listen on" in text_of(app, "#mta-notice")
        assert "cannot listen on" in screen.error_text("listen")
        assert running_mta(relay)["listen"] == [f"127.0.0.1:{relay.port}"]
        # Ctrl+R asks, then puts the running settings back in the form.
        await pilot.press("ctrl+r")
        await until(pilot, lambda: app.screen.__class__.__name__ == "ConfirmScreen", what="the question")
        await pilot.press("y")
        await until(pilot, lambda: screen.query_one("#mta-listen").text == f"127.0.0.1:{relay.port}",
                    what="the running value back")
        await until(pilot, lambda: "The running settings" in text_of(app, "#mta-notice"), what="a clean form")
        assert screen.error_text("listen") == ""


async def test_mta_screen_when_the_relay_is_down(make_relay, sink):
    relay = make_relay(sink.port, start=False)
    app = make_app(str(relay.workdir / "control.sock"))
    async with app.run_test(size=(80, 25)) as pilot:
        await pilot.press("f4")
        await until(pilot, lambda: "not running" in text_of(app, "#mta-notice"), what="the relay down")
        screen = app.screen
        assert "appear here once the relay answers" in text_of(app, "#mta-notice")
        await pilot.press("ctrl+s")
        assert "Nothing to apply" in text_of(app, "#mta-notice")
        relay.start()
        await until(pilot, lambda: screen.running is not None, timeout=15, what="the settings once the relay runs")
        assert screen.query_one("#mta-hostname").value == "gw.example.com"


async def test_list_fields_leave_f6_and_f7_to_the_console_and_keys_add_to_what_is_there(make_relay, sink):
    relay = make_relay(sink.port)
    app = make_app(str(relay.workdir / "control.sock"))
    async with app.run_test(size=(80, 25)) as pilot:
        screen = await open_mta(pilot, app)
        networks = screen.query_one("#mta-my_networks")
        networks.focus()
        await pilot.press("f7")  # Textual's text area would select everything here
        await until(pilot, lambda: type(app.screen).__name__ == "NetworkScreen", what="the Network screen")
        await pilot.press("f4")
        await until(pilot, lambda: app.screen is screen, what="the MTA screen again")
        networks.focus()
        await pilot.press("f6")  # ... and select the line here
        await until(pilot, lambda: type(app.screen).__name__ == "SmtpTestScreen", what="the SMTP test screen")
        await pilot.press("f4")
        await until(pilot, lambda: app.screen is screen, what="the MTA screen again")
        networks.focus()
        await pilot.press("end", "x")
        assert networks.text == "127.0.0.1/32x", "a key typed adds to the list, never replaces it"
        # Into a one-line field with Tab: the text is not selected, so the next key adds to it.
        screen.query_one("#mta-helo_name").focus()
        await pilot.press("tab")
        assert app.focused.id == "mta-banner"
        await pilot.press("end", "!")
        assert app.focused.value == "ESMTP Postern!"


async def test_a_host_address_with_a_network_prefix_is_named_with_the_fix(make_relay, sink):
    relay = make_relay(sink.port)
    app = make_app(str(relay.workdir / "control.sock"))
    async with app.run_test(size=(80, 25)) as pilot:
        screen = await open_mta(pilot, app)
        screen.query_one("#mta-my_networks").load_text("127.0.0.1/32\n10.0.0.3/8")
        await until(pilot, lambda: "10.0.0.3/8" in screen.error_text("my_networks"), what="the field's problem")
        assert ("line 2: '10.0.0.3/8' has host bits set: write 10.0.0.0/8 for the network, or 10.0.0.3/32 for "
                "that one host") in screen.error_text("my_networks")
        assert "mail from or to these is refused (451" in text_of(app, "#note-mta-paused_domains")


async def test_quitting_with_edits_not_applied_asks_first(make_relay, sink):
    relay = make_relay(sink.port)
    app = make_app(str(relay.workdir / "control.sock"))
    async with app.run_test(size=(80, 25)) as pilot:
        screen = await open_mta(pilot, app)
        screen.query_one("#mta-banner").value = "ESMTP edited"
        await until(pilot, lambda: "1 change" in text_of(app, "#mta-notice"), what="the edit")
        await pilot.press("f2")  # the edits live on in the MTA area, so quitting from anywhere asks
        await pilot.press("ctrl+q")
        await until(pilot, lambda: type(app.screen).__name__ == "ConfirmScreen", what="the question")
        assert "MTA settings" in text_of(app, "#question")
        await pilot.press("n")
        await pilot.pause()
        assert app.is_running and type(app.screen).__name__ == "DashboardScreen"
        await pilot.press("ctrl+q", "y")
        await until(pilot, lambda: not app.is_running, what="the console to quit")


async def test_quitting_without_edits_does_not_ask(make_relay, sink):
    relay = make_relay(sink.port)
    app = make_app(str(relay.workdir / "control.sock"))
    async with app.run_test(size=(80, 25)) as pilot:
        await open_mta(pilot, app)
        await pilot.press("ctrl+q")
        await until(pilot, lambda: not app.is_running, what="the console to quit")
