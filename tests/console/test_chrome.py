"""What every screen shares: the command palette, the dashboard's live figures, the status line, the
F-key line, the footer and the keys panel, at the VM console's 80x25 and in its 16 colours."""

from __future__ import annotations

from console.app import make_app
from relay.control.client import ControlClient
from tests.console.conftest import until


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
                         "Certificates: Request r", "System: Restart relay l", "System: Reboot r", "Logs: Follow end",
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
