"""What the MTA settings and SMTP test screens look like at 80x25 and 120x40 in the VM console's theme.

Without a relay every run draws the same screen: the SMTP test client needs none, and the
MTA screen says the relay is not running."""

import pytest

from console.app import make_app

SIZES = [(80, 25), (120, 40)]


def app_without_relay(tmp_path, monkeypatch):
    monkeypatch.setenv("TERM", "linux")  # the VM console: 16 colours, console-safe glyphs
    return make_app(str(tmp_path / "no-relay.sock"))


async def settle(pilot, condition):
    for _ in range(100):
        await pilot.pause(0.05)
        if condition():
            for field in pilot.app.screen.query("Input, TextArea"):
                field.cursor_blink = False  # a blinking cursor would make every picture different
            return
    raise AssertionError("the screen never settled")


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_smtp_session_view(snap_compare, tmp_path, monkeypatch, size):
    async def session(pilot):
        await pilot.press("f6")
        await settle(pilot, lambda: pilot.app.screen.__class__.__name__ == "SmtpTestScreen"
                     and pilot.app.relay_status is None and "not running" in pilot.app.relay_problem)
        pilot.app.screen.query_one("#session-host").value = "mail.example.com"
        await pilot.pause(0.1)

    assert snap_compare(app_without_relay(tmp_path, monkeypatch), terminal_size=size, run_before=session)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_smtp_send_view(snap_compare, tmp_path, monkeypatch, size):
    async def send_form(pilot):
        await pilot.press("f6")
        await settle(pilot, lambda: pilot.app.screen.__class__.__name__ == "SmtpTestScreen"
                     and "not running" in pilot.app.relay_problem)
        await pilot.press("ctrl+t")
        await pilot.pause(0.1)
        screen = pilot.app.screen
        screen.query_one("#send-sender").value = "alice@example.net"
        screen.query_one("#send-to").value = "bob@example.com"
        await pilot.pause(0.1)

    assert snap_compare(app_without_relay(tmp_path, monkeypatch), terminal_size=size, run_before=send_form)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_mta_settings_without_a_relay(snap_compare, tmp_path, monkeypatch, size):
    async def down(pilot):
        await pilot.press("f4")
        await settle(pilot, lambda: "not running" in str(pilot.app.screen.query_one("#mta-notice").render()))

    assert snap_compare(app_without_relay(tmp_path, monkeypatch), terminal_size=size, run_before=down)
