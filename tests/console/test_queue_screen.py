"""The queue screen as an admin uses it on the day mail to one partner is stuck: what the list says, acting
on everything a filter matches, the last reply beside each message, and the by-domain summary's drill-down.
Pilot tests against a real relay on its real control socket."""

from console.app import make_app
from console.screens.queue_summary import summary_lines
from console.widgets.queue_list import size_text
from relay.control.client import ControlClient
from tests.console.conftest import text_of, until


def queue_states(relay) -> dict[str, str]:
    with ControlClient(str(relay.socket)) as client:
        return {m["subject"]: m["state"] for m in client.call("io.postern.Queue.List")["messages"]}


def drawn(widget) -> str:
    return str(widget.render())


def test_sizes_are_rounded_not_cut_down():
    assert size_text(2_024) == "2.0k"  # was "1k"
    assert size_text(48_000) == "47k"
    assert size_text(980) == "980"
    assert size_text(1_572_864) == "1.5M"


async def test_a_filter_without_matches_does_not_say_the_queue_is_empty(queued_relay):
    app = make_app(str(queued_relay.socket))
    async with app.run_test(size=(80, 25)) as pilot:
        await pilot.press("f3")
        queue_list = app.screen.query_one("#queue-list")
        await until(pilot, lambda: queue_list.total == 3, what="three queued messages")
        await pilot.press("slash", *"domain:nowhere.example", "enter")
        await until(pilot, lambda: queue_list.total == 0, what="the empty result")
        assert "No queued message matches the filter" in drawn(queue_list)
        assert "The queue is empty" not in drawn(queue_list)


async def test_a_relay_that_is_down_is_not_an_empty_queue(make_relay, sink):
    relay = make_relay(sink.port, start=False)
    app = make_app(str(relay.workdir / "control.sock"))
    async with app.run_test(size=(80, 25)) as pilot:
        await pilot.press("f3")
        await until(pilot, lambda: "not running" in text_of(app, "#queue-detail"), what="the queue screen's notice")
        listed = drawn(app.screen.query_one("#queue-list"))
        assert "The queue is empty" not in listed and "cannot be read" in listed


async def test_hold_everything_the_filter_matches_with_the_count_in_the_question(queued_relay):
    app = make_app(str(queued_relay.socket))
    async with app.run_test(size=(80, 25)) as pilot:
        await pilot.press("f3")
        queue_list = app.screen.query_one("#queue-list")
        await until(pilot, lambda: queue_list.total == 3, what="three queued messages")
        await pilot.press("slash", *"domain:example.com", "enter")
        await until(pilot, lambda: queue_list.total == 2, what="the two messages to example.com")
        await pilot.press("a")
        assert "selected: all 2" in text_of(app, "#queue-detail")
        await pilot.press("h")
        await until(pilot, lambda: type(app.screen).__name__ == "ConfirmScreen", what="the question")
        assert "all 2 messages matching domain:example.com" in text_of(app, "#question")
        await pilot.press("y")
        # ("two" is tried again every second or so here: deferred or, for a moment, active; never held.)
        await until(pilot, lambda: (lambda s: s["one"] == s["three"] == "hold" != s["two"])(queue_states(queued_relay)),
                    what="both messages to example.com held, the other untouched")
        await until(pilot, lambda: "selected" not in text_of(app, "#queue-detail"), what="the selection cleared")


async def test_select_all_without_a_filter_is_the_whole_queue_and_a_second_press_undoes_it(queued_relay):
    app = make_app(str(queued_relay.socket))
    async with app.run_test(size=(80, 25)) as pilot:
        await pilot.press("f3")
        queue_list = app.screen.query_one("#queue-list")
        await until(pilot, lambda: queue_list.total == 3, what="three queued messages")
        await pilot.press("a", "a")
        assert "selected" not in text_of(app, "#queue-detail")
        await pilot.press("a", "d")
        await until(pilot, lambda: type(app.screen).__name__ == "ConfirmScreen", what="the question")
        assert "Delete all 3 queued messages?" in text_of(app, "#question")
        await pilot.press("y")
        await until(pilot, lambda: queue_states(queued_relay) == {}, what="the queue emptied")
        await until(pilot, lambda: "The queue is empty." in drawn(queue_list), what="the list to follow")


async def test_the_last_reply_is_a_column_on_a_wide_screen(fixed_queue_relay):
    app = make_app(str(fixed_queue_relay.socket))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("f3")
        queue_list = app.screen.query_one("#queue-list")
        await until(pilot, lambda: queue_list.total == 3, what="three queued messages")
        lines = drawn(queue_list).splitlines()
        assert "LAST REPLY" in lines[0]
        assert all("451 4.7.1 Greylisted" in line for line in lines[1:4])
        assert all(len(line) <= 120 for line in lines)


async def test_the_summary_fits_has_a_total_and_enter_shows_that_domains_mail(queued_relay):
    for size in ((80, 25), (120, 40)):
        app = make_app(str(queued_relay.socket))
        async with app.run_test(size=size) as pilot:
            await pilot.press("f3")
            queue_list = app.screen.query_one("#queue-list")
            await until(pilot, lambda: queue_list.total == 3, what="the queue")
            await pilot.press("g")
            await until(pilot, lambda: "TOTAL" in text_of(app, "#summary-total"), what="the summary")
            rows = app.screen.query_one("#summary-rows")
            lines = [str(rows.get_option_at_index(i).prompt) for i in range(rows.option_count)]
            width = rows.scrollable_content_region.width
            header = text_of(app, "#summary-header")
            assert len(header) <= width and all(len(line) <= width for line in lines), size
            # Busiest first: example.com and partner.org have two recipients each, alphabetical between equals.
            assert [line.split()[0] for line in lines] == ["example.com", "partner.org"]
            assert text_of(app, "#summary-total").split()[:2] == ["TOTAL", "4"]
            await pilot.press("down", "enter")
            await until(pilot, lambda: queue_list.total == 1, what="the queue filtered to partner.org")
            assert "filter: domain:partner.org" in text_of(app, "#queue-detail")


def test_summary_cuts_a_long_domain_name_and_keeps_every_column():
    answer = {"bucket_minutes": [5, 10, 20, 40, 80, 160, 320, 640, 1280],
              "rows": [{"destination": "a-very-long-subdomain.of-a-partner-organisation.example", "total": 12345,
                        "buckets": [12345, 0, 0, 0, 0, 0, 0, 0, 0, 0]}]}
    for width in (76, 116):
        header, rows, total = summary_lines(answer, width)
        assert len(header) <= width and len(rows[0][1]) <= width and len(total) <= width
        assert rows[0][1].startswith("a-very-long-sub") and header.split()[-1] == "older"
        assert total.split()[1] == "12k" and rows[0][1].split()[1] == "12k"
    # At 80 columns neighbouring age columns are merged: the counts still add up.
    narrow = summary_lines(answer, 76)[0].split()
    wide = summary_lines(answer, 116)[0].split()
    assert narrow[2:] == ["10m", "40m", "160m", "640m", "1280m", "older"] and len(wide) == 12


async def test_the_message_view_shows_the_decoded_text_and_acts_on_the_message(queued_relay):
    queued_relay.send("mallory@example.net", ["gus@partner.org"],
                      "Subject: four\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: "
                      "quoted-printable\r\n\r\nSehr geehrte Gr=C3=BC=C3=9Fe\r\n=1B[2J=1B]0;owned=07 end\r\n")
    app = make_app(str(queued_relay.socket))
    async with app.run_test(size=(80, 25)) as pilot:
        await pilot.press("f3")
        queue_list = app.screen.query_one("#queue-list")
        await until(pilot, lambda: queue_list.total == 4, what="four queued messages")
        await pilot.press("end", "enter")
        await until(pilot, lambda: "Text" in text_of(app, "#message-text"), what="the message's text")
        shown = text_of(app, "#message-text")
        assert "Sehr geehrte Grüße" in shown
        assert "\x1b" not in shown and "\x07" not in shown and "?[2J" in shown, "control characters made harmless"
        await pilot.press("h")
        await until(pilot, lambda: type(app.screen).__name__ == "ConfirmScreen", what="the question")
        assert "Hold message" in text_of(app, "#question")
        await pilot.press("y")
        await until(pilot, lambda: queue_states(queued_relay)["four"] == "hold", what="the message held")
        await until(pilot, lambda: "State      hold" in text_of(app, "#message-text"), what="the view to follow")
        await pilot.press("d", "y")
        await until(pilot, lambda: "four" not in queue_states(queued_relay), what="the message deleted")
        await until(pilot, lambda: type(app.screen).__name__ == "QueueScreen", what="back at the list")


async def test_the_message_view_shows_each_recipients_attempts(make_relay, sink):
    # A next hop that greylists, and a backoff long enough that only the flush below tries again.
    sink.rcpt_replies = {"bob@example.com": "451 4.7.1 Greylisted, try again later"}
    relay = make_relay(sink.port, queue={"minimal_backoff_time": 3600, "maximal_backoff_time": 7200})
    relay.send("alice@example.net", ["bob@example.com"], "Subject: one\r\n\r\n1\r\n")
    relay.wait_log(r"to=<bob@example.com>.*status=deferred")
    with ControlClient(str(relay.workdir / "control.sock")) as client:
        client.call("io.postern.Queue.Flush")  # a second attempt, with the same answer as the first
    relay.wait_log(r"to=<bob@example.com>.*status=deferred", count=2)
    app = make_app(str(relay.workdir / "control.sock"))
    async with app.run_test(size=(80, 25)) as pilot:
        await pilot.press("f3")
        queue_list = app.screen.query_one("#queue-list")
        await until(pilot, lambda: queue_list.total == 1, what="the queued message")
        await pilot.press("enter")
        await until(pilot, lambda: "x2, last" in text_of(app, "#message-text"), what="the attempts, as one run")
        lines = text_of(app, "#message-text").splitlines()
        run = next(i for i, line in enumerate(lines) if "x2, last" in line)
        reply = " ".join(line.strip() for line in lines[run + 1:run + 4])  # the reply wraps under itself
        assert "deferred 4.7.1" in lines[run] and "said: 451 4.7.1 Greylisted, try again later" in reply


async def test_the_migration_hold_is_shown_paused_and_resumed_from_the_queue_screen(queued_relay):
    with ControlClient(str(queued_relay.socket)) as client:
        client.call("io.postern.Config.Pause", domains=["partner.org"])
    with queued_relay.smtp("127.0.0.1") as smtp:
        smtp.mail("someone@elsewhere.example")
        assert smtp.rcpt("carol@partner.org")[0] == 451
    app = make_app(str(queued_relay.socket))
    async with app.run_test(size=(80, 25)) as pilot:
        await pilot.press("f3", "p")
        await until(pilot, lambda: type(app.screen).__name__ == "PausedScreen", what="the paused domains")
        rows = app.screen.query_one("#paused-list")
        await until(pilot, lambda: rows.option_count == 1, what="the paused domain")
        line = str(rows.get_option_at_index(0).prompt)
        assert line.split()[:2] == ["partner.org", "paused"] and line.split()[3:6] == ["turned", "away", "1"]
        assert "451" in text_of(app, "#paused-explain")
        await pilot.press("a", *"example.net", "enter")
        await until(pilot, lambda: rows.option_count == 2, what="the second paused domain")
        with ControlClient(str(queued_relay.socket)) as client:
            assert client.call("io.postern.Status.Get")["status"]["paused_domains"] == ["partner.org", "example.net"]
        await pilot.press("home", "r")
        await until(pilot, lambda: type(app.screen).__name__ == "ConfirmScreen", what="the question")
        assert "Resume partner.org?" in text_of(app, "#question")
        await pilot.press("y")
        await until(pilot, lambda: rows.option_count == 1, what="partner.org resumed")
        with ControlClient(str(queued_relay.socket)) as client:
            assert client.call("io.postern.Status.Get")["status"]["paused_domains"] == ["example.net"]
        await pilot.press("a", "escape")  # Esc cancels the typing, and the screen stays
        assert type(app.screen).__name__ == "PausedScreen"
        await pilot.press("escape")
        await until(pilot, lambda: type(app.screen).__name__ == "QueueScreen", what="back at the queue")


async def test_show_in_log_opens_the_log_on_that_message(queued_relay):
    app = make_app(str(queued_relay.socket), log_file=str(queued_relay.log_path))
    async with app.run_test(size=(80, 25)) as pilot:
        await pilot.press("f3")
        queue_list = app.screen.query_one("#queue-list")
        await until(pilot, lambda: queue_list.total == 3, what="three queued messages")
        queue_id = queue_list.current()["id"]
        await pilot.press("enter")
        await until(pilot, lambda: "Recipients" in text_of(app, "#message-text"), what="the message view")
        await pilot.press("l")
        await until(pilot, lambda: type(app.screen).__name__ == "LogScreen", what="the log")
        await until(pilot, lambda: f"filter: {queue_id}" in text_of(app, "#log-info"), what="the filter")
        log = app.screen
        await until(pilot, lambda: len([line for line in log.lines if queue_id in line.text]) >= 3,
                    what="the message's lines")
        view = app.screen.query_one("#log")
        await until(pilot, lambda: len(view.texts) >= 3, what="the lines drawn")
        assert all(queue_id in text for text in view.texts), "only that message's lines"


async def test_the_stuck_partner_walk(make_relay):
    """docs/console.md's walk, key for key: mail to partner.org is stuck; find it, read the partner's reply,
    retry everything to partner.org once the partner is back, and watch the log say it went."""
    from tests.support.net import free_port
    from tests.support.sink import Sink

    partner = free_port()  # nothing listens yet: every delivery defers
    relay = make_relay(partner)
    relay.send("alice@example.net", ["carol@partner.org"], "Subject: one\r\n\r\n1\r\n")
    relay.send("bob@example.net", ["dave@partner.org"], "Subject: two\r\n\r\n2\r\n")
    relay.wait_log(r"status=deferred", count=2)
    app = make_app(str(relay.workdir / "control.sock"), log_file=str(relay.log_path))
    keys = []

    async def press(*pressed):
        keys.extend(pressed)
        await pilot.press(*pressed)

    async with app.run_test(size=(80, 25)) as pilot:
        await press("f3", "g")  # the queue, by destination: partner.org at the top
        await until(pilot, lambda: "TOTAL" in text_of(app, "#summary-total"), what="the summary")
        await press("enter")  # that domain's mail
        queue_list = app.screen.query_one("#queue-list")
        await until(pilot, lambda: queue_list.total == 2 and "domain:partner.org" in text_of(app, "#queue-detail"),
                    what="partner.org's two messages")
        await press("enter")  # the first message: each attempt with the partner's reply
        await until(pilot, lambda: "Connection refused" in text_of(app, "#message-text"), what="the reply")
        await press("escape")
        sink = Sink(port=partner).start()  # the partner is back
        try:
            await press("a", "r", "y")  # everything the filter matches, requeued, after the question
            await until(pilot, lambda: len(sink.messages) == 2, what="both delivered")
            await press("f5")  # and the log says so
            await until(pilot, lambda: len([t for t in app.screen.query_one("#log").texts if "status=sent" in t]) == 2,
                        what="two status=sent lines in the log")
        finally:
            sink.stop()
    assert keys == ["f3", "g", "enter", "enter", "escape", "a", "r", "y", "f5"]


async def test_the_message_view_says_what_the_checks_found_on_a_message_dmarc_held(make_relay, sink):
    from tests.support.dns_server import DnsServer

    dns = DnsServer({("sender.example", "TXT"): ['"v=spf1 -all"'],
                     ("_dmarc.sender.example", "TXT"): ['"v=DMARC1; p=quarantine"']}).start()
    try:
        relay = make_relay(sink.port, dns_servers=[dns.address],
                           authentication={"check_inbound": True, "dmarc_policy": "enforce"})
        relay.send("carol@sender.example", ["bob@example.com"],
                   "From: carol@sender.example\r\nSubject: forged\r\n\r\nhello\r\n", source="127.0.0.2")
        relay.wait_log(r"held: dmarc=fail p=quarantine")
        app = make_app(str(relay.workdir / "control.sock"))
        async with app.run_test(size=(80, 25)) as pilot:
            await pilot.press("f3")
            queue_list = app.screen.query_one("#queue-list")
            await until(pilot, lambda: queue_list.total == 1, what="the held message")
            await pilot.press("enter")
            await until(pilot, lambda: "Checks" in text_of(app, "#message-text"), what="the checks' results")
            shown = text_of(app, "#message-text")
            assert "State      hold" in shown
            assert "Checks     dkim=none spf=fail arc=none dmarc=fail (p=quarantine)" in shown
            assert "Signed" not in shown  # mail from outside is not ours to sign
    finally:
        dns.stop()
