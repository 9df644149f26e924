"""The dashboard's Warnings panel with Textual's pilot, against a real relay on its real control socket."""

import datetime

import pytest
from cryptography import x509

from console.app import make_app
from console.screens.dashboard import WarningsPanel
from console.warnings import CRITICAL, WARNING, Warning
from tests.console.conftest import text_of, until
from tests.console.test_snapshots import fixed_clock, fixed_relay_app, fixed_status, recent_log  # noqa: F401
from tests.support.certs import self_signed


def warnings_panel(app):
    return app.screen.query_one("#warnings")


def shown_in(rows: int, count: int) -> list[str]:
    panel = WarningsPanel()
    panel.found = [Warning(CRITICAL if n == 0 else WARNING, f"warning {n}", f"fix {n}") for n in range(count)]
    return [line.plain for line in panel.lines(rows)]


def test_when_rows_run_short_fixes_go_first_then_the_rest_are_counted():
    assert shown_in(4, 2) == ["warning 0", "fix 0", "warning 1", "fix 1"]
    assert shown_in(4, 3) == ["warning 0", "fix 0", "warning 1", "warning 2"]
    assert shown_in(4, 4) == ["warning 0", "warning 1", "warning 2", "warning 3"]
    assert shown_in(4, 6) == ["warning 0", "warning 1", "warning 2", "and 3 more"]
    assert shown_in(12, 6) == [line for n in range(6) for line in (f"warning {n}", f"fix {n}")]


async def test_a_certificate_that_expires_in_five_days_is_a_yellow_warning(make_relay, sink, tmp_path, monkeypatch):
    monkeypatch.setenv("TERM", "linux")
    cert, key = self_signed(tmp_path, days=5)
    relay = make_relay(sink.port, tls={"cert_file": str(cert), "key_file": str(key)})
    app = make_app(str(relay.workdir / "control.sock"))
    async with app.run_test(size=(80, 25)) as pilot:
        await until(pilot, lambda: warnings_panel(app).display, what="the warnings panel")
        shown = text_of(app, "#warnings")
        assert "Certificate mta.tls.cert_file expires in 4d 23h" in shown
        assert f"Renew {cert} and reload the relay" in shown
        panel = warnings_panel(app)
        assert not panel.has_class("critical")
        assert panel.lines(2)[0].style == "yellow"  # the warning's own colour, not the critical red
        assert panel.region.bottom <= app.screen.query_one("#areas").region.y  # all of it on screen, keys below
        assert not app.screen.query_one("#recent").display  # at 25 rows the warnings take the log's place
        await pilot.resize_terminal(120, 40)
        await pilot.pause(0.2)
        recent = app.screen.query_one("#recent")
        assert recent.display and panel.region.bottom <= recent.region.y  # room for both: above the log
        assert recent.region.bottom <= app.screen.query_one("#areas").region.y
        app.save_screenshot("/tmp/w.svg")


async def test_an_expired_certificate_is_red(make_relay, sink, tmp_path):
    cert, key = self_signed(tmp_path, days=1)
    relay = make_relay(sink.port, tls={"cert_file": str(cert), "key_file": str(key)})
    app = make_app(str(relay.workdir / "control.sock"))
    async with app.run_test(size=(80, 25)) as pilot:
        await until(pilot, lambda: warnings_panel(app).display, what="the warnings panel")
        assert "expires in 23h" in text_of(app, "#warnings")
        assert warnings_panel(app).has_class("critical")
        assert warnings_panel(app).lines(2)[0].style == "bold red"


async def test_mail_deferred_by_a_next_hop_that_refuses_is_a_warning(make_relay):
    relay = make_relay(1)  # nothing listens on port 1: every delivery attempt is deferred
    for number in range(11):
        relay.send("alice@example.net", [f"user{number}@example.com"], f"Subject: {number}\r\n\r\nbody\r\n")
    relay.wait_log(r"status=deferred", count=11)
    app = make_app(str(relay.workdir / "control.sock"))
    async with app.run_test(size=(80, 25)) as pilot:
        await until(pilot, lambda: "of delivery attempts deferred" in text_of(app, "#warnings"),
                    what="the deferred share's warning")
        shown = text_of(app, "#warnings")
        assert "100% of delivery attempts deferred in " in shown
        assert "Last deferred by 127.0.0.1:1" in shown
        assert warnings_panel(app).display and not warnings_panel(app).has_class("critical")


async def test_a_healthy_relay_shows_no_warnings(make_relay, sink, tmp_path):
    cert, key = self_signed(tmp_path, days=90)
    relay = make_relay(sink.port, tls={"cert_file": str(cert), "key_file": str(key)})
    for number in range(12):
        relay.send("alice@example.net", [f"user{number}@example.com"], f"Subject: {number}\r\n\r\nbody\r\n")
    relay.wait_log(r"status=sent", count=12)
    app = make_app(str(relay.workdir / "control.sock"))
    async with app.run_test(size=(80, 25)) as pilot:
        await until(pilot, lambda: "Delivered      12" in text_of(app, "#traffic"), what="the traffic panel")
        await pilot.pause(1.2)  # a tick or two of the dashboard's clock
        assert not warnings_panel(app).display
        assert text_of(app, "#warnings") == ""
        assert x509.load_pem_x509_certificate(cert.read_bytes()).not_valid_after_utc > (
            datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=14))


# --- what it looks like, at the VM console's 80x25 and an SSH terminal's 120x40 ----------------------------

@pytest.mark.parametrize("size", [(80, 25), (120, 40)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_dashboard_with_warnings(snap_compare, fixed_queue_relay, fixed_clock, monkeypatch, size):
    """A certificate that expires in 5 days (yellow) and a queue file system nearly full (red)."""
    def warned(status: dict) -> dict:
        status = fixed_status(status)
        now = status["started"] + status["uptime"]
        return {**status, "certificates": [{"certificate": "mta.tls.cert_file", "file": "/etc/postern/tls/postern.pem",
                                            "expires": now + 5 * 86400 + 1800}],
                "disk": {"free": 4 * 10**9, "size": 100 * 10**9, "files_free": 6_000_000}}

    async def shown(pilot):
        await until(pilot, lambda: "gw.example.com" in text_of(pilot.app, "#system")
                    and "Certificate" in text_of(pilot.app, "#warnings")
                    and "connect from" in text_of(pilot.app, "#recent"), what="the dashboard")

    app = fixed_relay_app(fixed_queue_relay, monkeypatch, **{
        "io.postern.Log.Tail": recent_log(),
        "io.postern.Status.Watch": lambda answer: {**answer, "status": warned(answer["status"])},
        "io.postern.Status.Get": lambda answer: {**answer, "status": warned(answer["status"])}})
    assert snap_compare(app, terminal_size=size, run_before=shown)


async def test_a_certificate_replaced_while_the_relay_is_idle_is_read_again(make_relay, sink, tmp_path, monkeypatch):
    """The relay sends its status when the queue or the configuration changes; the dashboard asks again for the
    disk and the certificates once a minute (here every half second), so an idle relay's are not left stale."""
    from console.screens import dashboard

    monkeypatch.setattr(dashboard, "SAMPLE_INTERVAL", 0.5)
    cert, key = self_signed(tmp_path, days=90)
    relay = make_relay(sink.port, tls={"cert_file": str(cert), "key_file": str(key)})
    app = make_app(str(relay.workdir / "control.sock"))
    async with app.run_test(size=(80, 25)) as pilot:
        await until(pilot, lambda: app.relay_status is not None, what="the relay's status")
        await pilot.pause(1)
        assert not warnings_panel(app).display
        self_signed(tmp_path, days=10)  # the same files, no reload, nothing queued
        await until(pilot, lambda: "expires in 9d 23h" in text_of(app, "#warnings"), what="the new certificate")
        assert warnings_panel(app).display
