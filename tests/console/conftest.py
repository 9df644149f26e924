import asyncio
import time

import pytest


@pytest.fixture
def queued_relay(make_relay):
    """A relay whose next hop is down, with three messages queued over SMTP."""
    relay = make_relay(1)  # nothing listens on port 1: every delivery defers
    relay.send("alice@example.net", ["bob@example.com"], "Subject: one\r\n\r\n1\r\n")
    relay.send("alice@example.net", ["carol@partner.org", "dave@partner.org"], "Subject: two\r\n\r\n2\r\n")
    relay.send("eve@example.net", ["frank@example.com"], "Subject: three\r\n\r\n3\r\n")
    relay.wait_log(r"status=deferred", count=4)
    relay.socket = relay.workdir / "control.sock"
    return relay


async def until(pilot, condition, timeout: float = 10.0, what: str = "the console to show it"):
    """Let the app run until condition() is true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await pilot.pause()
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def text_of(app, selector: str) -> str:
    """What a Static shows, as plain text."""
    widget = app.screen.query_one(selector)
    return str(widget.render())
