"""Pilot tests of the dashboard, queue and log screens against a real relay on its real control socket."""

import socket
import threading
import time

from console.app import make_app
from relay.control.client import ControlClient
from tests.console.conftest import text_of, until


def queue_states(relay) -> dict[str, str]:
    with ControlClient(str(relay.socket)) as client:
        return {m["subject"]: m["state"] for m in client.call("io.postern.Queue.List")["messages"]}


async def test_dashboard_shows_the_relay_and_its_queue(queued_relay):
    app = make_app(str(queued_relay.socket))
    async with app.run_test(size=(80, 25)) as pilot:
        await until(pilot, lambda: "Total           3" in text_of(app, "#queue"), what="the queue panel")
        assert "Deferred        3" in text_of(app, "#queue")
        relay_panel = text_of(app, "#relay")
        assert "running" in relay_panel and f"127.0.0.1:{queued_relay.port}" in relay_panel
        assert "Received        3" in text_of(app, "#traffic")
        await until(pilot, lambda: "status=deferred" in text_of(app, "#recent"), what="recent log lines")
        assert "Relay: running" in text_of(app, "#status-line")


async def test_dashboard_answers_keys_while_the_resolver_keeps_the_host_name_waiting(queued_relay, monkeypatch):
    """A fresh appliance's resolver may not answer: socket.getfqdn() waits on it, off the UI's loop."""
    answered, resolve = threading.Event(), socket.getfqdn
    monkeypatch.setattr(socket, "getfqdn", lambda name="": answered.wait(30) and resolve(name))
    started = time.monotonic()
    app = make_app(str(queued_relay.socket))
    try:
        async with app.run_test(size=(80, 25)) as pilot:
            await until(pilot, lambda: "Total           3" in text_of(app, "#queue"), what="the queue panel")
            assert "Reading..." in text_of(app, "#system")
            await pilot.press("f3")
            await until(pilot, lambda: type(app.screen).__name__ == "QueueScreen", what="the queue screen")
            await pilot.press("f2")
            await until(pilot, lambda: type(app.screen).__name__ == "DashboardScreen", what="the dashboard again")
            assert time.monotonic() - started < 10, "the keys waited for the resolver"
            answered.set()
            await until(pilot, lambda: resolve() in text_of(app, "#system"), what="the host name")
            assert "Disk" in text_of(app, "#system") and "Memory" in text_of(app, "#system")
    finally:
        answered.set()


async def test_console_says_when_the_relay_is_down_and_reconnects_by_itself(make_relay, sink):
    relay = make_relay(sink.port, start=False)
    app = make_app(str(relay.workdir / "control.sock"))
    async with app.run_test(size=(80, 25)) as pilot:
        await until(pilot, lambda: "Relay: not running" in text_of(app, "#status-line"), what="the relay down")
        await pilot.press("f3")  # the queue screen too copes with no relay
        await until(pilot, lambda: "not running" in text_of(app, "#queue-detail"), what="the queue screen's notice")
        await pilot.press("f2")
        relay.start()
        await until(pilot, lambda: "Relay: running" in text_of(app, "#status-line"), timeout=15, what="reconnection")
        assert "running" in text_of(app, "#relay")


async def test_queue_lists_filters_and_opens_a_message(queued_relay):
    app = make_app(str(queued_relay.socket))
    async with app.run_test(size=(80, 25)) as pilot:
        await pilot.press("f3")
        queue_list = app.screen.query_one("#queue-list")
        await until(pilot, lambda: queue_list.total == 3, what="three queued messages")
        listed = str(queue_list.render())
        assert "carol@partner.org +1" in listed and "deferred" in listed
        await pilot.press("slash", *"domain:partner.org", "enter")
        await until(pilot, lambda: queue_list.total == 1, what="the filtered list")
        assert "filter: domain:partner.org" in text_of(app, "#queue-detail")
        await pilot.press("enter")
        await until(pilot, lambda: "Recipients" in text_of(app, "#message-text"), what="the message details")
        details = text_of(app, "#message-text")
        assert "<carol@partner.org>  deferred" in details and "Subject: two" in details
        await pilot.press("escape")
        await pilot.press("escape")  # clears the filter
        await until(pilot, lambda: queue_list.total == 3, what="the whole queue again")


async def test_queue_actions_ask_first_then_act_through_the_relay(queued_relay):
    app = make_app(str(queued_relay.socket))
    async with app.run_test(size=(80, 25)) as pilot:
        await pilot.press("f3")
        queue_list = app.screen.query_one("#queue-list")
        await until(pilot, lambda: queue_list.total == 3, what="three queued messages")
        await pilot.press("h")
        await until(pilot, lambda: app.screen.__class__.__name__ == "ConfirmScreen", what="the question")
        await pilot.press("n")  # no: nothing happens
        await pilot.pause()
        assert queue_states(queued_relay)["one"] != "hold"
        await pilot.press("h", "y")
        await until(pilot, lambda: queue_states(queued_relay)["one"] == "hold", what="the message held")
        await until(pilot, lambda: "hold" in str(queue_list.render()), what="the list to show it")
        await pilot.press("u", "y")
        await until(pilot, lambda: queue_states(queued_relay)["one"] != "hold", what="the message released")
        # Select two messages with space, then delete both.
        await pilot.press("home", "space", "space", "d")
        await until(pilot, lambda: "2 messages" in str(app.screen.query_one("#question").render()), what="the question")
        await pilot.press("y")
        await until(pilot, lambda: list(queue_states(queued_relay)) == ["three"], what="two messages deleted")
        await until(pilot, lambda: queue_list.total == 1, what="the list to follow")


async def test_queue_summary_by_domain(queued_relay):
    app = make_app(str(queued_relay.socket))
    async with app.run_test(size=(80, 25)) as pilot:
        await pilot.press("f3")
        await until(pilot, lambda: app.screen.query_one("#queue-list").total == 3, what="the queue")
        await pilot.press("g")
        await until(pilot, lambda: "TOTAL" in text_of(app, "#summary-total"), what="the summary")
        assert "DESTINATION" in text_of(app, "#summary-header")


async def test_escapes_from_clients_and_next_hops_never_reach_the_screen(make_relay, sink):
    """A next hop's reply and a client's Subject carry terminal escapes; every screen that shows them shows '?'."""
    import re

    hostile = "\x1b]0;pwned\x07busy\x1b[2J\x9b31m"
    sink.rcpt_replies["bob@example.com"] = f"450 4.2.0 {hostile}"
    relay = make_relay(sink.port)
    relay.send("alice@example.net", ["bob@example.com"], f"Subject: {hostile} \u202eevil\r\n\r\nhi\r\n".encode())
    relay.wait_log(r"status=deferred")
    raw = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e]")  # a tab or line end moves the cursor, no more
    neutral = "?]0;pwned?busy?[2J?31m"
    app = make_app(str(relay.workdir / "control.sock"), log_file=str(relay.log_path))
    async with app.run_test(size=(80, 25)) as pilot:
        await until(pilot, lambda: neutral in text_of(app, "#relay"), what="the last error")
        await until(pilot, lambda: "status=deferred" in text_of(app, "#recent"), what="recent log lines")
        seen = [text_of(app, "#relay"), text_of(app, "#recent")]
        await pilot.press("f3")
        queue_list = app.screen.query_one("#queue-list")
        await until(pilot, lambda: queue_list.total == 1, what="the queued message")
        await until(pilot, lambda: neutral in text_of(app, "#queue-detail"), what="the message's last reply")
        seen += [str(queue_list.render()), text_of(app, "#queue-detail")]
        await pilot.press("enter")
        await until(pilot, lambda: "Recipients" in text_of(app, "#message-text"), what="the message details")
        details = text_of(app, "#message-text")
        assert f"Subject: {neutral} ?evil" in details
        seen.append(details)
        await pilot.press("escape")
        await pilot.press("f5")
        screen = app.screen
        view = screen.query_one("#log")
        await until(pilot, lambda: any(neutral in text for text in view.texts), what="the log line")
        await pilot.pause()
        seen.append("\n".join(view.render_line(y).text for y in range(view.size.height)))
        assert neutral in seen[-1]
    for text in seen:
        assert not raw.findall(text), text


def test_the_relay_panel_says_how_far_the_queue_load_is():
    """At start the relay answers Status before its queue is read: the panel says so, then stops saying it."""
    from console.screens.dashboard import relay_text

    status = {"version": "0.1.0", "uptime": 2.0, "listeners": ["0.0.0.0:25"], "tls": True, "last_errors": [],
              "loading": {"loaded": 12000, "total": 100000}}
    assert "Loading the queue: 12,000 of 100,000" in relay_text(status, "").plain
    assert "Loading" not in relay_text({**status, "loading": None}, "").plain


def test_the_relay_panel_shows_the_two_latest_errors_one_per_destination():
    """Newest first, whatever order the relay lists its next hops in; two next hops on one host and
    port (both relays pointed at one server) make one line, not the same line twice."""
    from console.screens.dashboard import relay_text

    errors = [{"destination": "mx.partner.org:25", "reply": "old reply", "time": 100.0},
              {"destination": "10.0.0.5:25 (no MX)", "reply": "refused, internal", "time": 300.0},
              {"destination": "10.0.0.5:25 (no MX)", "reply": "refused, external", "time": 200.0},
              {"destination": "smtp.example.net:587 (no MX)", "reply": "newest reply", "time": 400.0}]
    status = {"version": "0.1.0", "uptime": 2.0, "listeners": ["0.0.0.0:25"], "tls": True, "last_errors": errors}
    shown = relay_text(status, "").plain
    assert shown.count("Last error") == 2
    assert shown.index("smtp.example.net:587") < shown.index("10.0.0.5:25") and "refused, internal" in shown
    assert "refused, external" not in shown and "mx.partner.org" not in shown
