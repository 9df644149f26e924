"""Queue actions by destination or sender from anywhere, through the command palette, against a real relay."""

from console.app import make_app
from console.queue_commands import parse
from relay.control.client import ControlClient
from tests.console.conftest import text_of, until


def states(relay) -> dict[str, str]:
    with ControlClient(str(relay.socket)) as client:
        return {m["subject"]: m["state"] for m in client.call("io.postern.Queue.List")["messages"]}


def test_what_reads_as_a_queue_action():
    assert parse("retry partner.org") == ("Requeue", "domain", "partner.org")
    assert parse("Hold to @Partner.org.") == ("Hold", "domain", "partner.org")
    assert parse("delete from <Alice@Example.net>") == ("Delete", "sender", "alice@example.net")
    assert parse("release to bob@partner.org") == ("Release", "recipient", "bob@partner.org")
    for other in ("hold", "queue", "hold partner.org now", "delete beside x.org", "retry @", "hello partner.org"):
        assert parse(other) is None, other


async def palette(pilot, words: str) -> None:
    await pilot.press("ctrl+p")
    await until(pilot, lambda: type(pilot.app.screen).__name__ == "CommandPalette", what="the palette")
    await pilot.press(*words)
    await pilot.pause(0.5)
    await pilot.press("enter")


async def test_hold_everything_to_a_domain_from_the_dashboard(queued_relay):
    app = make_app(str(queued_relay.socket))
    async with app.run_test(size=(80, 25)) as pilot:
        await palette(pilot, "hold partner.org")
        await until(pilot, lambda: type(app.screen).__name__ == "ConfirmScreen", what="the question")
        assert "Hold the one message to partner.org" in text_of(app, "#question")
        await pilot.press("y")
        await until(pilot, lambda: states(queued_relay)["two"] == "hold", what="the message held")
        assert "hold" not in (states(queued_relay)["one"], states(queued_relay)["three"])
        await until(pilot, lambda: type(app.screen).__name__ == "QueueScreen", what="the queue, filtered")
        assert "filter: domain:partner.org" in text_of(app, "#queue-detail")


async def test_delete_everything_from_one_sender_and_nobody_else(queued_relay):
    queued_relay.send("malice@example.net", ["bob@example.com"], "Subject: four\r\n\r\n4\r\n")
    queued_relay.wait_log(r"to=<bob@example.com>.*status=deferred", count=2)
    app = make_app(str(queued_relay.socket))
    async with app.run_test(size=(80, 25)) as pilot:
        await palette(pilot, "delete from alice@example.net")
        await until(pilot, lambda: type(app.screen).__name__ == "ConfirmScreen", what="the question")
        assert "Delete all 2 messages from alice@example.net?" in text_of(app, "#question")
        await pilot.press("y")
        await until(pilot, lambda: set(states(queued_relay)) == {"three", "four"},
                    what="alice's two deleted, malice's kept")
