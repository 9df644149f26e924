"""Every screen and dialog fits the VM console's 80x25, an SSH terminal's 120x40 and a large one's
200x60: nothing drawn outside the screen, no line wider than its box (no sideways scrolling), every
key of the footer on the line, and the status line whole.

The console runs on a real relay (the fixed queue of the snapshots) and visits each screen as an admin
would, with the keys; each stop is checked the same way."""

from __future__ import annotations

import pytest
from rich.text import Text
from textual.widgets import Footer, Input

from console.app import make_app
from console.widgets.status_line import StatusLine
from tests.console.appliance_support import root  # noqa: F401
from tests.console.conftest import text_of, until
from tests.console.wizard_support import complete_draft, dns, machine  # noqa: F401

SIZES = [(80, 25), (120, 40), (200, 60)]
sizes = pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")


def misfits(app) -> list[str]:
    """What does not fit on the screen as it is drawn now, in words."""
    screen = app.screen
    width, height = app.size
    found = []
    for widget in screen.query("*"):
        if not widget.display or not widget.visible or widget.region.area == 0:
            continue
        region, name = widget.region, f"{type(widget).__name__}#{widget.id}"
        # Lists and forms longer than the screen scroll up and down; a screen's own parts (a dialog) never do.
        below = widget.parent is screen and (region.y < 0 or region.bottom > height)
        if region.x < 0 or region.right > width or below:
            found.append(f"{name} at {region} is outside the {width}x{height} screen")
        # (an Input scrolls its own text sideways: a long SSH key is no misfit)
        if getattr(widget, "show_horizontal_scrollbar", False) and not isinstance(widget, Input):
            found.append(f"{name}: its content is wider than its {region.width} columns")
    for footer in screen.query(Footer):
        if footer.virtual_size.width > footer.size.width:
            found.append(f"the footer's keys take {footer.virtual_size.width} columns of {footer.size.width}")
    for line in screen.query(StatusLine):
        shown = line.render()  # a rich Text, or Textual's Content
        if (shown.cell_len if isinstance(shown, Text) else shown.cell_length) > line.content_size.width:
            found.append(f"the status line is cut: {shown.plain!r}")
    return found


async def stop(pilot, what: str, seen: dict, ready=lambda app: True) -> None:
    await until(pilot, lambda: ready(pilot.app), what=what)
    await pilot.pause(0.2)
    if problems := misfits(pilot.app):
        seen[what] = problems


VISITS = [
    # (keys, what the stop is, ready)
    ([], "the dashboard", lambda app: app.relay_status is not None),
    (["f3"], "the queue", lambda app: app.screen.query("#queue-list") and app.screen.query_one("#queue-list").total == 3),
    (["h"], "the question before holding a message", lambda app: type(app.screen).__name__ == "ConfirmScreen"),
    # held: the status line grows by "hold 1", too long for 80 columns on the screens with the longest titles
    (["y"], "the queue with a message held", lambda app: app.relay_status and app.relay_status["queue"]["hold"] == 1),
    (["enter"], "a message", lambda app: "Headers" in text_of(app, "#message-text")),
    (["d"], "the question before deleting it", lambda app: type(app.screen).__name__ == "ConfirmScreen"),
    (["n", "escape"], "the queue again", lambda app: type(app.screen).__name__ == "QueueScreen"),
    (["g"], "the queue by domain", lambda app: "TOTAL" in text_of(app, "#summary-total")),
    (["escape", "p"], "the paused domains", lambda app: type(app.screen).__name__ == "PausedScreen"),
    (["a"], "pausing a domain", lambda app: app.screen.query_one("#paused-add").display),
    (["escape", "escape", "f1"], "the keys panel", lambda app: app.screen.query("KeyPanel")),
    (["f1", "ctrl+p"], "the command palette", lambda app: type(app.screen).__name__ == "CommandPalette"),
    (["escape", "f4"], "the MTA settings", lambda app: getattr(app.screen, "running", None) is not None),
    (["f5"], "the logs", lambda app: type(app.screen).__name__ == "LogScreen"),
    (["f6"], "the SMTP session", lambda app: type(app.screen).__name__ == "SmtpTestScreen"),
    (["ctrl+t"], "the SMTP test message", lambda app: app.screen.query_one("#send-view").display),
    (["f8", "ctrl+t"], "the transport security view", lambda app: type(app.screen).__name__ == "TransportScreen"
     and app.screen.answer is not None),
    (["a"], "a new TLS policy entry", lambda app: type(app.screen).__name__ == "EntryScreen"),
    ([*"partner.org", "down", "right", "down", *"mx.partner.org", "ctrl+s"], "the entry added",
     lambda app: type(app.screen).__name__ == "TransportScreen" and "partner.org" in app.screen.entries),
    (["enter"], "a destination's policy", lambda app: type(app.screen).__name__ == "DomainScreen"
     and "TLS level" in app.screen.text()),
    (["c"], "its live check", lambda app: "Live check" in app.screen.text()),
    (["e"], "its TLS policy entry", lambda app: type(app.screen).__name__ == "EntryScreen"),
    (["escape", "escape", "escape"], "the diagnostics again", lambda app: type(app.screen).__name__ == "DiagnosticsScreen"),
    (["f11"], "the system screen", lambda app: type(app.screen).__name__ == "SystemScreen"),
    (["r"], "the question before a reboot", lambda app: type(app.screen).__name__ == "ConfirmScreen"),
]


@sizes
async def test_every_screen_of_the_console_fits(fixed_queue_relay, monkeypatch, size):
    monkeypatch.setenv("TERM", "linux")
    app = make_app(str(fixed_queue_relay.socket), run_command=lambda argv, interactive=False: None)
    seen: dict[str, list[str]] = {}
    async with app.run_test(size=size) as pilot:
        for keys, what, ready in VISITS:
            for key in keys:
                await pilot.press(key)
                await pilot.pause(0.1)
            await stop(pilot, what, seen, ready)
    assert not seen, seen


@sizes
async def test_the_mta_changes_dialog_fits(fixed_queue_relay, monkeypatch, size):
    """Many changes at once: the dialog scrolls its list, inside the screen."""
    monkeypatch.setenv("TERM", "linux")
    app = make_app(str(fixed_queue_relay.socket))
    seen: dict[str, list[str]] = {}
    async with app.run_test(size=size) as pilot:
        await pilot.press("f4")
        await until(pilot, lambda: getattr(app.screen, "running", None) is not None, what="the settings")
        screen = app.screen
        screen.query_one("#mta-hostname").value = "mail.example.com"
        screen.query_one("#mta-banner").value = "ESMTP " + "a long banner " * 8
        screen.query_one("#mta-relay_domains").load_text("\n".join(f"d{n}.example.com" for n in range(30)))
        await pilot.pause(0.2)
        await pilot.press("ctrl+s")
        await stop(pilot, "the changes", seen, lambda app: type(app.screen).__name__ == "ChangesScreen")
    assert not seen, seen


async def test_a_reply_wraps_under_itself_in_the_message_view(fixed_queue_relay, monkeypatch):
    """At 80 columns a next hop's reply takes two lines: the second starts where the first does. Opened
    on a wider terminal, the reply takes one line, and two once the terminal is made narrower."""
    from textual.geometry import Region

    def reply_lines() -> list[str]:
        shown = app.screen.query_one("#message-text")
        lines = [strip.text.rstrip() for strip in shown.render_lines(Region(0, 0, *shown.size))]
        said = next(i for i, line in enumerate(lines) if "said: 451" in line)
        return lines[said:said + 2]

    monkeypatch.setenv("TERM", "linux")
    app = make_app(str(fixed_queue_relay.socket))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("f3")
        await until(pilot, lambda: app.screen.query_one("#queue-list").total == 3, what="the queue")
        await pilot.press("enter")
        await until(pilot, lambda: "Headers" in text_of(app, "#message-text"), what="the message")
        await pilot.pause(0.2)
        assert reply_lines()[0].endswith("said: 451 4.7.1 Greylisted, try again later")
        await pilot.resize_terminal(80, 25)
        await pilot.pause(0.3)
        wrapped = reply_lines()
    assert wrapped[0].startswith("    host mx.partner.org") and wrapped[1] == "    Greylisted, try again later"


@sizes
async def test_every_wizard_step_fits(tmp_path, machine, monkeypatch, size):
    """Each step as the wizard resumes it, on the fixed machine of the wizard's tests."""
    from tests.console.test_wizard_snapshots import STEPS, settled, wizard_at

    monkeypatch.setenv("TERM", "linux")
    seen: dict[str, list[str]] = {}
    for number, step in enumerate(STEPS, 1):
        app = wizard_at(tmp_path / step, step, complete_draft("via-relay" if step == "external" else "direct"))
        async with app.run_test(size=size) as pilot:
            await settled(pilot, number)
            if problems := misfits(app):
                seen[step] = problems
    assert not seen, seen


@sizes
async def test_the_system_screens_and_the_locked_screen_fit(tmp_path, root, monkeypatch, size):
    """Network, diagnostics, certificates (and their forms), system, with no relay; then the console locked."""
    from .appliance_support import console, write_config

    monkeypatch.setenv("TERM", "linux")
    config = write_config(tmp_path / "postern.yaml", {"mta": {"hostname": "gw.example.com"}, "network": {
        "hostname": "gw.example.com", "interfaces": {"eth0": {"address": "198.51.100.5/24", "gateway": "198.51.100.1"}},
        "dns": {"servers": ["198.51.100.53"], "search": ["example.net"]}}})
    visits = [
        (["f7"], "the network", lambda app: type(app.screen).__name__ == "NetworkScreen"
         and app.screen.view is not None),
        (["f8"], "the diagnostics", lambda app: type(app.screen).__name__ == "DiagnosticsScreen"),
        (["f9"], "the certificates", lambda app: type(app.screen).__name__ == "CertificatesScreen"),
        (["s"], "a self-signed certificate", lambda app: app.screen.form == "self"),
        (["escape", "r"], "a certificate request", lambda app: app.screen.form == "csr"),
        (["escape", "i"], "importing a certificate", lambda app: app.screen.form == "import"),
        (["escape", "f11"], "the system screen", lambda app: type(app.screen).__name__ == "SystemScreen"),
        (["p"], "powering off refused under a root other than /", lambda app: "refused" in text_of(app, "#area-notice")),
    ]
    seen: dict[str, list[str]] = {}
    app = console(tmp_path, config, root, run_command=lambda argv, interactive=False: None)
    async with app.run_test(size=size) as pilot:
        await until(pilot, lambda: "not running" in app.relay_problem, what="the relay status")
        for keys, what, ready in visits:
            for key in keys:
                await pilot.press(key)
                await pilot.pause(0.1)
            await stop(pilot, what, seen, ready)
    locked = console(tmp_path, config, root, require_login=True, login_user="admin")
    async with locked.run_test(size=size) as pilot:
        await stop(pilot, "the locked console", seen, lambda app: "not running" in text_of(app, "#lock-status"))
    assert not seen, seen
