"""What every screen shares: the command palette, the dashboard's live figures, the status line, the
F-key line, the footer and the keys panel, at the VM console's 80x25 and in its 16 colours."""

from __future__ import annotations

from console.app import make_app
from console.screens.dashboard import TrafficRate
from relay.control.client import ControlClient
from tests.console.conftest import text_of, until


def palette_prompts(app) -> list[str]:
    command_list = app.screen.query_one("CommandList")
    return [str(command_list.get_option_at_index(i).prompt) for i in range(command_list.option_count)]


async def test_every_action_is_in_the_palette_with_its_key(tmp_path):
    app = make_app(str(tmp_path / "no-relay.sock"), str(tmp_path / "postern.yaml"), root=str(tmp_path))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("ctrl+p")
        await until(pilot, lambda: any("Queue: Hold" in p for p in palette_prompts(app)), what="the actions")
        prompts = [" ".join(p.split()) for p in palette_prompts(app)]
        for expected in ("Queue F3", "Queue: Hold h", "Queue: Release u", "Queue: Requeue r", "Queue: Delete del/d",
                         "Queue: Flush f", "Queue: By domain g", "MTA settings: Apply ^s", "Network: Apply ^s",
                         "Certificates: Request r", "System: Restart relay l", "System: Reboot r", "Logs: Search /",
                         "Keys F1/?", "Quit ^q/F10"):
            assert any(p.startswith(expected) for p in prompts), f"{expected!r} not in {prompts}"
        assert not any("Back" in p for p in prompts)  # Escape is not an action


async def test_hold_from_the_palette_holds_the_message_under_the_cursor(queued_relay):
    app = make_app(str(queued_relay.socket))
    async with app.run_test(size=(80, 25)) as pilot:
        await pilot.press("f3")
        queue_list = app.screen.query_one("#queue-list")
        await until(pilot, lambda: queue_list.total == 3, what="three queued messages")
        await pilot.press("ctrl+p", *"hold")
        await until(pilot, lambda: palette_prompts(app)[:1] and "Queue: Hold" in palette_prompts(app)[0],
                    what="Hold first in the palette")
        await pilot.press("enter")
        await until(pilot, lambda: type(app.screen).__name__ == "ConfirmScreen", what="the question")
        await pilot.press("y")

        def held() -> int:
            with ControlClient(str(queued_relay.socket)) as client:
                return sum(m["state"] == "hold" for m in client.call("io.postern.Queue.List")["messages"])

        await until(pilot, lambda: held() == 1, what="one message held")


async def test_an_area_action_from_the_palette_opens_its_area_first(tmp_path):
    app = make_app(str(tmp_path / "no-relay.sock"), str(tmp_path / "postern.yaml"), root=str(tmp_path))
    async with app.run_test(size=(80, 25)) as pilot:
        await pilot.press("ctrl+p", *"restart relay")
        await until(pilot, lambda: palette_prompts(app)[:1] and "System: Restart relay" in palette_prompts(app)[0],
                    what="Restart relay first in the palette")
        await pilot.press("enter")
        await until(pilot, lambda: type(app.screen).__name__ == "SystemScreen", what="the system screen")
        await until(pilot, lambda: "refused in the sandbox" in str(app.screen.query_one("#area-notice").render()),
                    what="the refusal")


async def test_uptime_and_the_oldest_age_move_on_between_relay_events(make_relay):
    """A relay with one deferred message, not retried for an hour: nothing happens, but time goes on."""
    relay = make_relay(1, queue={"minimal_backoff_time": 3600, "maximal_backoff_time": 7200})
    relay.send("alice@example.net", ["bob@example.com"], "Subject: one\r\n\r\n1\r\n")
    relay.wait_log(r"status=deferred")
    app = make_app(str(relay.workdir / "control.sock"))
    async with app.run_test(size=(80, 25)) as pilot:
        await until(pilot, lambda: app.relay_status is not None and app.relay_status["queue"]["deferred"] == 1,
                    what="the relay's status")
        received_at = app.relay_status_at
        relay_before, queue_before = text_of(app, "#relay"), text_of(app, "#queue")
        await until(pilot, lambda: text_of(app, "#relay") != relay_before and text_of(app, "#queue") != queue_before,
                    timeout=5, what="the uptime and the oldest age to move on")
        assert app.relay_status_at == received_at  # nothing new came from the relay meanwhile


def status(uptime: float, received: int, delivered: int) -> dict:
    return {"uptime": uptime, "counters": {"received": received, "delivered": delivered}}


def test_rates_start_again_after_a_relay_restart_never_below_zero():
    rate = TrafficRate()
    assert rate.add(status(100, 40, 30), now=1000.0) == (0.0, 0.0)
    assert rate.add(status(120, 52, 36), now=1020.0) == (12.0, 6.0)
    assert rate.add(status(2, 3, 1), now=1030.0) == (0.0, 0.0)  # restarted: counters from zero
    assert rate.add(status(12, 8, 4), now=1040.0) == (5.0, 3.0)
    # A restart that counted past the old figures already: its uptime says so.
    assert rate.add(status(1, 9, 5), now=1041.0) == (0.0, 0.0)
    assert rate.add(status(61, 9, 5), now=1101.0) == (0.0, 0.0)  # a minute without mail


def legible(segment) -> bool:
    """On the Linux console's 16 colours: on a coloured background, only bright or white text."""
    fg, bg = segment.style.color, segment.style.bgcolor
    if bg is None or bg.is_default or bg.number == 0:
        return True
    return fg is None or fg.is_default or fg.number in (7, *range(8, 16))


async def test_the_status_line_and_the_borders_are_legible_in_16_colours(tmp_path, monkeypatch):
    monkeypatch.setenv("TERM", "linux")
    app = make_app(str(tmp_path / "no-relay.sock"), str(tmp_path / "postern.yaml"), root=str(tmp_path))
    async with app.run_test(size=(80, 25)) as pilot:
        await until(pilot, lambda: "not running" in str(app.screen.query_one("#status-line").render()),
                    what="the relay's absence")
        segments = [s for s in app.screen.query_one("#status-line").render_line(0) if s.text.strip()]
        assert segments and all(legible(s) for s in segments), [(s.text, s.style) for s in segments]
        for panel in app.screen.query(".panel"):
            _, color = panel.styles.border_top
            assert color.ansi is not None and color.ansi >= 8, f"{panel.id}'s border is ANSI colour {color.ansi}"


async def test_the_key_line_breaks_between_keys_never_inside_one(tmp_path):
    app = make_app(str(tmp_path / "no-relay.sock"), str(tmp_path / "postern.yaml"), root=str(tmp_path))
    async with app.run_test(size=(80, 25)) as pilot:
        await pilot.pause()
        lines = str(app.screen.query_one("#areas").render()).splitlines()
        assert len(lines) == 2
        entries = [entry for line in lines for entry in line.strip().split("  ")]
        assert entries[:3] == ["F2 Dashboard", "F3 Queue", "F4 MTA"]
        assert "F8 Diagnostics" in entries and "F11 System" in entries and "^p Palette" in entries
        assert all(" " in entry for entry in entries)  # a key, then what it does, on one line


async def test_the_queue_footer_keys_stand_side_by_side_within_80_columns(fixed_queue_relay):
    app = make_app(str(fixed_queue_relay.socket))
    async with app.run_test(size=(80, 25)) as pilot:
        await pilot.press("f3")
        queue_list = app.screen.query_one("#queue-list")
        await until(pilot, lambda: queue_list.total == 3, what="the queue")
        keys = [key for key in app.screen.query("FooterKey") if key.display and key.region.width]
        assert {key.description for key in keys} >= {"Hold", "Flush", "Keys"}
        spans = sorted((key.region.x, key.region.right) for key in keys)
        assert spans[-1][1] <= 80
        assert all(end <= start for (_, end), (start, _) in zip(spans, spans[1:])), spans


async def test_the_keys_panel_lies_over_the_screen_without_squeezing_it(fixed_queue_relay):
    app = make_app(str(fixed_queue_relay.socket))
    async with app.run_test(size=(80, 25)) as pilot:
        await pilot.press("f3")
        queue_list = app.screen.query_one("#queue-list")
        await until(pilot, lambda: queue_list.total == 3, what="the queue")
        width = queue_list.size.width
        await pilot.press("f1")
        await until(pilot, lambda: app.screen.query("KeyPanel"), what="the keys panel")
        await pilot.pause()
        assert queue_list.size.width == width == 80
        await pilot.press("f1")
        await until(pilot, lambda: not app.screen.query("KeyPanel"), what="the keys panel to go")
