"""The Logs screen (F5) against a real relay writing its real log file, at 80x25 as on the VM's console."""

import re
from console.app import make_app
from tests.console.conftest import until


def screen_rows(app) -> list[str]:
    """What the terminal shows, row by row."""
    return [strip.text for strip in app.screen._compositor.render_strips()]


def log_rows(app) -> list[str]:
    """The rows of the log itself: between the status line and prompt above, and the info line and footer below."""
    region = app.screen.query_one("#log").scrollable_content_region  # without the scroll bar
    return [row[region.x:region.right] for row in screen_rows(app)[region.y:region.bottom]]


def squeezed(text: str) -> str:
    return " ".join(text.split())


def log_line(relay, pattern: str) -> str:
    """The text of the relay's log line that matches, without its time stamp."""
    line = relay.wait_log(f"[^\n]*{pattern}[^\n]*")[0]
    return line.split(" ", 2)[2]


async def open_logs(pilot, app, shows: str):
    await pilot.press("f5")
    await until(pilot, lambda: type(app.screen).__name__ == "LogScreen", what="the Logs screen")
    view = app.screen.query_one("#log")
    await until(pilot, lambda: any(shows in text for text in view.texts), what=f"{shows!r} in the log")
    await pilot.pause()


async def test_a_delivery_line_is_whole_at_80_columns(relay, sink):
    relay.send("alice@example.net", ["bob@example.com"])
    sent = log_line(relay, "status=sent")
    assert len(sent) > 80 and "dsn=2.0.0" in sent and "(250 " in sent
    app = make_app(str(relay.workdir / "control.sock"), log_file=str(relay.log_path))
    async with app.run_test(size=(80, 25)) as pilot:
        await open_logs(pilot, app, "status=sent")
        shown = squeezed(" ".join(log_rows(app)))
        assert squeezed(sent) in shown  # the status, the DSN and the reply, wrapped onto the next rows
        row = next(row for row in log_rows(app) if "to=<bob@example.com>" in row)
        assert re.match(r"\d\d:\d\d:\d\d postern/", row)  # today's lines: the time only
        await pilot.press("w")  # cut at the edge: the reply is off screen, until scrolled to
        await pilot.pause()
        assert squeezed(sent) not in squeezed(" ".join(log_rows(app)))
        assert "cut at the edge" in screen_rows(app)[-2]
        await pilot.press("w")
        await pilot.pause()
        assert squeezed(sent) in squeezed(" ".join(log_rows(app)))


async def test_lines_from_before_a_restart_are_shown_with_older_dates(make_relay, sink):
    relay = make_relay(sink.port, start=False)
    relay.log_path.write_text("2025-03-01 08:09:10,111 postern/master: daemon stopped; 0 messages stay queued\n")
    relay.start()
    relay.send("alice@example.net", ["bob@example.com"], "Subject: before\r\n\r\nhi\r\n")
    relay.wait_log("status=sent")
    relay.stop()
    relay.start()
    app = make_app(str(relay.workdir / "control.sock"), log_file=str(relay.log_path))
    async with app.run_test(size=(80, 25)) as pilot:
        await open_logs(pilot, app, "status=sent")
        texts = app.screen.query_one("#log").texts
        assert sum("daemon started" in text for text in texts) == 2  # before the restart, and now
        assert sum("daemon stopped;" in text for text in texts) == 2  # long ago, and at the restart
        await pilot.press("home")
        await pilot.pause()
        rows = log_rows(app)
        assert rows[0].startswith("Mar 01 08:09:10 postern/master: daemon stopped")  # an older day: its date too
        assert re.match(r"\d\d:\d\d:\d\d postern/master: ", rows[1])  # today's: the time only


async def test_lines_are_shown_while_the_relay_is_down(make_relay, sink):
    relay = make_relay(sink.port)
    relay.send("alice@example.net", ["bob@example.com"])
    relay.wait_log("status=sent")
    relay.stop()
    app = make_app(str(relay.workdir / "control.sock"), log_file=str(relay.log_path))
    async with app.run_test(size=(80, 25)) as pilot:
        await until(pilot, lambda: "Relay: not running" in screen_rows(app)[0], what="the relay down")
        await open_logs(pilot, app, "daemon stopped")
        assert "status=sent" in squeezed(" ".join(log_rows(app)))
        assert screen_rows(app)[-2].strip().startswith(f"Log: {relay.log_path}"[:60])  # where it is read from


async def test_search_forward_and_backward_lands_on_the_matching_lines(queued_relay):
    """alice sent the first two messages, eve the third; the log is longer than the screen."""
    for n in range(30):
        queued_relay.send("filler@example.net", ["bob@example.com"], f"Subject: filler {n}\r\n\r\nx\r\n")
    queued_relay.wait_log("from=<filler@example.net>", count=30)
    app = make_app(str(queued_relay.socket), log_file=str(queued_relay.log_path))
    async with app.run_test(size=(80, 25)) as pilot:
        await open_logs(pilot, app, "filler@example.net")
        view = app.screen.query_one("#log")
        assert view.max_scroll_y > 0 and view.scroll_y == view.max_scroll_y  # following the end

        def current() -> str:
            return view.texts[view.current]

        await pilot.press("slash", *"FROM=<ALICE", "enter")  # from the top of the screen on: past the end, on top
        await pilot.pause()
        first = current()
        assert "from=<alice@example.net>" in first
        assert "search went on from the top" in screen_rows(app)[-2]
        assert any(first[:40] in squeezed(row) for row in log_rows(app)), "the match is on screen"
        await pilot.press("n")
        await pilot.pause()
        second = current()
        assert "from=<alice@example.net>" in second and view.current > view.texts.index(first)
        await pilot.press("N")
        await pilot.pause()
        assert view.current == view.texts.index(first)
        await pilot.press("escape")
        await pilot.press("end")
        await pilot.pause()
        await pilot.press("question_mark", *"from=<eve", "enter")  # backward from the bottom
        await pilot.pause()
        assert "from=<eve@example.net>" in current()
        assert any(current()[:40] in squeezed(row) for row in log_rows(app)), "the match is on screen"
        eve = view.current
        await pilot.press("n")  # on in the same direction, backward: eve sent one message, so round to it again
        await pilot.pause()
        assert view.current == eve and "search went on from the bottom" in screen_rows(app)[-2]
        await pilot.press("question_mark", *"from=<alice", "enter")  # backward from the bottom of the screen
        await pilot.pause()
        assert current() == second  # alice's second message, the last before eve's
        await pilot.press("slash", *"no such words", "enter")
        await pilot.pause()
        assert "not found: no such words" in screen_rows(app)[-2]


async def test_new_lines_are_followed_live_and_the_filter_keeps_matching_lines(queued_relay):
    app = make_app(str(queued_relay.socket), log_file=str(queued_relay.log_path))
    async with app.run_test(size=(80, 25)) as pilot:
        await open_logs(pilot, app, "status=deferred")
        queued_relay.send("zed@late.example", ["bob@example.com"])
        view = app.screen.query_one("#log")
        await until(pilot, lambda: any("from=<zed@late.example>" in text for text in view.texts), what="the new line")
        # Following: the newest line at the bottom of the screen.
        await until(pilot, lambda: view.scroll_y == view.max_scroll_y > 0
                    and squeezed(view.texts[-1])[-30:] in squeezed(" ".join(log_rows(app)[-4:])), what="the end")
        await pilot.press("f", *"zed@late", "enter")
        await pilot.pause()
        shown = "\n".join(log_rows(app))
        assert "zed@late.example" in shown and "carol@partner.org" not in shown
        assert "filter: zed@late" in screen_rows(app)[-2]
        await pilot.press("escape")
        await until(pilot, lambda: "carol@partner.org" in squeezed(" ".join(app.screen.query_one("#log").texts)),
                    what="every line again")
