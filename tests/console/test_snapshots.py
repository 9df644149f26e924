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
