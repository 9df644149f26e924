"""What the console looks like, at the VM console's 80x25 and a larger SSH terminal, in the ansi theme
the VM console uses. Fixed queue contents make each screen the same on every run."""

import pytest

from console.app import make_app

SIZES = [(80, 25), (120, 40)]


async def queue_loaded(pilot):
    await pilot.press("f3")
    queue_list = pilot.app.screen.query_one("#queue-list")
    for _ in range(200):
        await pilot.pause(0.05)
        if queue_list.total == 3 and pilot.app.relay_status is not None:
            return
    raise AssertionError("the queue never loaded")


def app_for(relay, monkeypatch):
    monkeypatch.setenv("TERM", "linux")  # the VM console: 16 colours, console-safe glyphs
    return make_app(str(relay.socket))


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_queue_screen(snap_compare, fixed_queue_relay, monkeypatch, size):
    assert snap_compare(app_for(fixed_queue_relay, monkeypatch), terminal_size=size, run_before=queue_loaded)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_queue_by_domain(snap_compare, fixed_queue_relay, monkeypatch, size):
    async def summary(pilot):
        await queue_loaded(pilot)
        await pilot.press("g")
        for _ in range(100):
            await pilot.pause(0.05)
            if "TOTAL" in str(pilot.app.screen.query_one("#summary-total").render()):
                return

    assert snap_compare(app_for(fixed_queue_relay, monkeypatch), terminal_size=size, run_before=summary)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_delete_confirmation(snap_compare, fixed_queue_relay, monkeypatch, size):
    async def ask(pilot):
        await queue_loaded(pilot)
        await pilot.press("space", "space", "d")
        await pilot.pause(0.2)

    assert snap_compare(app_for(fixed_queue_relay, monkeypatch), terminal_size=size, run_before=ask)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_queue_without_a_relay(snap_compare, tmp_path, monkeypatch, size):
    async def down(pilot):
        await pilot.press("f3")
        for _ in range(100):
            await pilot.pause(0.05)
            if "not running" in str(pilot.app.screen.query_one("#queue-detail").render()):
                return

    monkeypatch.setenv("TERM", "linux")
    app = make_app(str(tmp_path / "no-relay.sock"))
    assert snap_compare(app, terminal_size=size, run_before=down)


FIXED_LOG = """\
2025-03-01 08:00:00,001 postern/master: daemon started -- version 0.1.0, configuration /etc/postern/postern.yaml
2025-03-01 08:00:02,114 postern/smtpd: connect from mail.example.net[192.0.2.25]
2025-03-01 08:00:02,131 postern/smtpd: 6600000000000000: client=mail.example.net[192.0.2.25]
2025-03-01 08:00:02,140 postern/smtpd: 6600000000000000: from=<alice@example.net>, size=2000, nrcpt=1 (queue active)
2025-03-01 08:00:02,388 postern/smtp: 6600000000000000: to=<bob@example.com>, relay=mx.example.com[198.51.100.5]:25, delay=0.25, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as 4XyZ1)
2025-03-01 08:00:02,390 postern/qmgr: 6600000000000000: removed
2025-03-01 08:01:10,502 postern/smtpd: 6600000000001000: from=<alice@example.net>, size=48000, nrcpt=2 (queue active)
2025-03-01 08:01:11,020 postern/smtp: 6600000000001000: to=<carol@partner.org>, relay=mx.partner.org[198.51.100.7]:25, delay=0.52, dsn=4.7.1, status=deferred (host mx.partner.org[198.51.100.7]:25 said: 451 4.7.1 Greylisted, try again later)
2025-03-01 08:01:11,021 postern/smtp: 6600000000001000: to=<dave@partner.org>, relay=mx.partner.org[198.51.100.7]:25, delay=0.52, dsn=5.1.1, status=bounced (host mx.partner.org[198.51.100.7]:25 said: 550 5.1.1 No such user)
2025-03-01 08:01:11,030 postern/master: unexpected error in the delivery of 6600000000001000
Traceback (most recent call last):
  File "/opt/postern/lib/python3.11/site-packages/relay/delivery.py", line 88, in run
2025-03-01 08:02:00,000 postern/master: daemon stopped; 1 messages stay queued
"""


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_logs_searched_with_the_relay_down(snap_compare, tmp_path, monkeypatch, size):
    """Older lines with their date, wrapped, coloured, a search's matches marked; the relay not running."""
    log = tmp_path / "relay.log"
    log.write_text(FIXED_LOG)

    async def searched(pilot):
        await pilot.press("f5")
        for _ in range(100):
            await pilot.pause(0.05)
            loaded = len(pilot.app.screen.query_one("#log").texts) == 13
            if loaded and pilot.app.relay_problem != "Relay: connecting...":
                break
        await pilot.press("slash", *"partner.org", "enter")
        await pilot.pause(0.1)

    monkeypatch.setenv("TERM", "linux")
    monkeypatch.chdir(tmp_path)  # the screen names the log file: the same name on every run
    app = make_app(str(tmp_path / "no-relay.sock"), log_file="relay.log")
    assert snap_compare(app, terminal_size=size, run_before=searched)
