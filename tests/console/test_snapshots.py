"""What the console looks like, at the VM console's 80x25 and SSH terminals of 120x40 and 200x60, in the
ansi theme the VM console uses. Fixed queue contents make each screen the same on every run."""

import time
import types

import pytest

from console.app import make_app
from tests.console.conftest import text_of, until

SIZES = [(80, 25), (120, 40), (200, 60)]


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


# --- Screens whose words hold the time or the machine -------------------------------------------------
# The relay is real; in its answers, what changes from run to run (the clock, the relay's uptime, its
# listening port, the paths under pytest's directory) is replaced by fixed values, and the console's
# own clock and the host's facts are fixed too.

NOW = 1740816000.0  # 2025-03-01 08:00:00 UTC


@pytest.fixture
def fixed_clock(monkeypatch):
    """Local time is UTC, the input cursor does not blink, and the host is always the same machine."""
    from textual.widgets import Input

    from console.host import HostFacts
    from console.screens import dashboard

    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    monkeypatch.setattr(Input, "_toggle_cursor", lambda self: None)
    monkeypatch.setattr(dashboard, "read_facts", lambda: HostFacts(
        "gw.example.com", "Debian GNU/Linux 13 (trixie)", "6.12.48+deb13-amd64", 3 * 86400, 1,
        ["eth0 192.0.2.10", "eth0 2001:db8::10"], 23.0, 77.9, 31.0, 0.12))
    yield
    monkeypatch.undo()
    time.tzset()


def rewrite_answers(app, rewrites: dict):
    """Each answer of the methods named, as the relay sent it but for the fixed values (rewrites[method](answer))."""
    link = app.link
    attempt, follow = link.attempt, link.follow

    async def fixed_attempt(method, failed, **parameters):
        answer = await attempt(method, failed, **parameters)
        return rewrites[method](answer) if answer is not None and method in rewrites else answer

    async def fixed_follow(method, answered, failed, **parameters):
        rewrite = rewrites.get(method, lambda answer: answer)
        await follow(method, lambda answer: answered(rewrite(answer)), failed, **parameters)

    link.attempt, link.follow = fixed_attempt, fixed_follow
    return app


PAUSED = [{"domain": "partner.org", "since": NOW - 3 * 86400, "turned_away": 12},
          {"domain": "old-company.example", "since": NOW - 5400, "turned_away": 0}]


def fixed_status(status: dict) -> dict:
    return {**status, "started": NOW - 3 * 86400, "uptime": 3 * 86400 + 4 * 3600, "listeners": ["0.0.0.0:25"],
            "last_errors": [{"destination": "mx.partner.org[198.51.100.7]:25", "time": NOW - 60,
                             "reply": "451 4.7.1 Greylisted, try again later"}],
            "paused_domains": [row["domain"] for row in PAUSED], "paused": PAUSED,
            # the machine's own disk would bring a warning when it fills; no certificate is configured
            "disk": {"free": 60 * 10**9, "size": 100 * 10**9, "files_free": 6_000_000}, "certificates": []}


RECENT = [line for line in FIXED_LOG.splitlines() if line.startswith("2025")][1:7]


def recent_log():
    """The first answer of Log.Tail is the fixed lines; later ones (the relay's own new lines) add nothing."""
    answers = iter([{"lines": [{"number": n, "text": text} for n, text in enumerate(RECENT)]}])
    return lambda answer: next(answers, {"lines": []})


def fixed_relay_app(relay, monkeypatch, **rewrites):
    app = app_for(relay, monkeypatch)
    return rewrite_answers(app, {
        "io.postern.Status.Watch": lambda answer: {**answer, "status": fixed_status(answer["status"])},
        "io.postern.Status.Get": lambda answer: {**answer, "status": fixed_status(answer["status"])},
        "io.postern.Config.Get": lambda answer: {
            "mta": {**answer["mta"], "listen": ["0.0.0.0:25"]}, "path": "/etc/postern/postern.yaml"},
        **rewrites})


sizes = pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")


@sizes
def test_dashboard(snap_compare, fixed_queue_relay, fixed_clock, monkeypatch, size):
    """Host, relay with its last error, queue, traffic and the recent log; every key of the areas."""
    async def shown(pilot):
        await until(pilot, lambda: pilot.app.relay_status is not None
                    and "gw.example.com" in text_of(pilot.app, "#system")
                    and "connect from" in text_of(pilot.app, "#recent"), what="the dashboard")

    app = fixed_relay_app(fixed_queue_relay, monkeypatch, **{"io.postern.Log.Tail": recent_log()})
    assert snap_compare(app, terminal_size=size, run_before=shown)


@sizes
def test_dashboard_without_a_relay(snap_compare, tmp_path, fixed_clock, monkeypatch, size):
    """Why the relay cannot be reached is read in full, wrapped in its panel."""
    async def shown(pilot):
        await until(pilot, lambda: "not running" in text_of(pilot.app, "#relay")
                    and "gw.example.com" in text_of(pilot.app, "#system"), what="the dashboard")

    monkeypatch.setenv("TERM", "linux")
    assert snap_compare(make_app(str(tmp_path / "no-relay.sock")), terminal_size=size, run_before=shown)


@sizes
def test_message_detail(snap_compare, fixed_queue_relay, fixed_clock, monkeypatch, size):
    def fixed_times(answer):
        message = {**answer["message"], "arrival": NOW - 7260, "age": 7260, "next_attempt": NOW + 86400}
        return {**answer, "message": message}

    async def opened(pilot):
        await queue_loaded(pilot)
        await pilot.press("down", "enter")
        await until(pilot, lambda: "Headers" in text_of(pilot.app, "#message-text"), what="the message")

    app = fixed_relay_app(fixed_queue_relay, monkeypatch, **{"io.postern.Queue.Show": fixed_times})
    assert snap_compare(app, terminal_size=size, run_before=opened)


@sizes
def test_paused_domains(snap_compare, fixed_queue_relay, fixed_clock, monkeypatch, size):
    from console.screens import paused

    monkeypatch.setattr(paused, "time", types.SimpleNamespace(
        time=lambda: NOW, strftime=time.strftime, localtime=time.localtime))

    async def opened(pilot):
        await queue_loaded(pilot)
        await pilot.press("p")
        await until(pilot, lambda: pilot.app.screen.query("#paused-list")
                    and pilot.app.screen.query_one("#paused-list").option_count == 2, what="the paused domains")

    assert snap_compare(fixed_relay_app(fixed_queue_relay, monkeypatch), terminal_size=size, run_before=opened)


@sizes
def test_keys_panel(snap_compare, fixed_queue_relay, fixed_clock, monkeypatch, size):
    """F1 over the queue: the panel lies over the screen, every key on a line of its own."""
    async def keys(pilot):
        await queue_loaded(pilot)
        await pilot.press("f1")
        await until(pilot, lambda: pilot.app.screen.query("KeyPanel"), what="the keys panel")
        await pilot.pause(0.2)

    assert snap_compare(fixed_relay_app(fixed_queue_relay, monkeypatch), terminal_size=size, run_before=keys)


@sizes
def test_command_palette(snap_compare, fixed_queue_relay, fixed_clock, monkeypatch, size):
    """Ctrl+P, 'hold partner.org': holding the mail to a destination, and the queue's Hold with its key."""
    async def palette(pilot):
        await queue_loaded(pilot)
        await pilot.press("ctrl+p", *"hold partner.org")
        def answered():
            lists = pilot.app.screen.query("CommandList")
            return lists and lists.first().option_count and "partner.org" in str(lists.first().get_option_at_index(0).prompt)

        await until(pilot, answered, what="the palette's answer")
        await pilot.pause(0.5)

    assert snap_compare(fixed_relay_app(fixed_queue_relay, monkeypatch), terminal_size=size, run_before=palette)


@sizes
def test_mta_settings(snap_compare, fixed_queue_relay, fixed_clock, monkeypatch, size):
    async def loaded(pilot):
        await pilot.press("f4")
        await until(pilot, lambda: getattr(pilot.app.screen, "running", None) is not None, what="the settings")
        await pilot.pause(0.2)

    assert snap_compare(fixed_relay_app(fixed_queue_relay, monkeypatch), terminal_size=size, run_before=loaded)


@sizes
def test_mta_changes_dialog(snap_compare, fixed_queue_relay, fixed_clock, monkeypatch, size):
    """Two edits, then Ctrl+S: the dialog lists each change before it applies them."""
    async def changes(pilot):
        await pilot.press("f4")
        await until(pilot, lambda: getattr(pilot.app.screen, "running", None) is not None, what="the settings")
        pilot.app.screen.query_one("#mta-hostname").value = "mail.example.com"
        pilot.app.screen.query_one("#mta-relay_domains").load_text("example.com\nexample.org")
        await pilot.pause(0.2)
        await pilot.press("ctrl+s")
        await until(pilot, lambda: type(pilot.app.screen).__name__ == "ChangesScreen", what="the changes")
        await pilot.pause(0.2)

    assert snap_compare(fixed_relay_app(fixed_queue_relay, monkeypatch), terminal_size=size, run_before=changes)
