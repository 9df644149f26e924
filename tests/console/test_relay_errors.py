"""A failed control call reads the same in posternctl and on every console screen: relay.control.errors.explain.

A relay that takes the connection but does not answer reads as such, not as one that is not running."""

import asyncio
import subprocess
import sys

import pytest

from console.app import make_app
from console.messages import RelayStatus
from console.relay_link import RelayLink
from console.screens.message_detail import MessageScreen
from relay.control.client import ControlClient, ControlError
from relay.control.errors import NoAnswer, explain
from tests.console.conftest import text_of, until
from tests.support.control_socket import SilentSocket

NO_SUCH_ID = "0000000000000000"


def posternctl(relay, *args: str) -> str:
    """What posternctl prints about its failure, without its own name in front."""
    result = subprocess.run([sys.executable, "-m", "relay.ctl", "--socket", str(relay.socket), *args],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 1, result
    return result.stderr.strip().removeprefix("posternctl: ")


async def test_a_relay_error_reads_as_posternctl_says_it_on_the_queue_and_message_screens(queued_relay):
    not_found = posternctl(queued_relay, "queue", "show", NO_SUCH_ID)
    with ControlClient(str(queued_relay.socket)) as client, pytest.raises(ControlError) as refused:
        client.call("io.postern.Queue.List", filter={"state": "lost"})  # posternctl's own choices stop this one
    bad_filter = explain(refused.value)
    assert not_found == f"no message {NO_SUCH_ID} in the queue" and bad_filter.startswith("state: ")
    app = make_app(str(queued_relay.socket))
    async with app.run_test(size=(80, 25)) as pilot:
        await pilot.press("f3")
        await until(pilot, lambda: app.screen.query_one("#queue-list").total == 3, what="the queue")
        await pilot.press("slash", *"state:lost", "enter")
        await until(pilot, lambda: bad_filter in text_of(app, "#queue-detail"), what="the filter's refusal")
        app.push_screen(MessageScreen(NO_SUCH_ID))
        await until(pilot, lambda: not_found in text_of(app, "#message-text"), what="the message's absence")


async def test_an_address_that_is_not_one_reads_alike_in_posternctl_and_the_console(queued_relay):
    words = []
    answer = await RelayLink(str(queued_relay.socket)).attempt("io.postern.Status.CheckNames", words.append,
                                                               address="gw.example.com")
    assert answer is None
    assert words == [posternctl(queued_relay, "names", "gw.example.com")] == ["'gw.example.com' is not an IP address"]


async def test_a_relay_that_takes_the_connection_but_never_answers_reads_as_slow_not_as_not_running(tmp_path):
    path = str(tmp_path / "control.sock")
    slow = explain(NoAnswer(path, 0.5))
    assert slow == "Relay: did not answer within 0.5 s (it is running, but busy or stuck)"
    with SilentSocket(path) as silent:
        words = []
        assert await RelayLink(path, timeout=0.5).attempt("io.postern.Status.Get", words.append) is None
        assert words == [slow] and silent.connections
        app = make_app(path)
        app.link = RelayLink(path, timeout=0.5)  # the status stream's first answer is due within this
        async with app.run_test(size=(100, 25)) as pilot:
            await until(pilot, lambda: slow in text_of(app, "#status-line"), what="the relay's silence")
            assert "not running" not in text_of(app, "#status-line")


async def test_an_answer_for_a_screen_that_is_gone_ends_the_follow_quietly(tmp_path):
    """The console quitting while a screen's worker hears from the relay must not end in a crash."""
    from textual.css.query import NoMatches

    from console.relay_link import RelayLink

    told = []

    def gone(words: str) -> None:
        told.append(words)
        raise NoMatches("#recent")  # what query_one says once the screen's widgets are removed

    link = RelayLink(str(tmp_path / "nobody.sock"))
    await asyncio.wait_for(link.follow("io.postern.Log.Tail", lambda answer: None, gone, lines=6), timeout=5)
    assert told == ["Relay: not running (no answer on the control socket)"]
    assert await link.attempt("io.postern.Status.Get", gone) is None


async def test_the_queue_screen_closing_while_the_relay_answers_is_no_crash(queued_relay):
    """A page or an action answered after the queue screen's widgets are gone (the console quitting) is
    dropped: it once ended a test run with 'No nodes match QueueList'."""
    from console.widgets.queue_list import QueueList

    app = make_app(str(queued_relay.socket))
    async with app.run_test(size=(80, 25)) as pilot:
        await app.switch_mode("queue")
        screen = app.screen
        await until(pilot, lambda: "of 3" in text_of(app, "#queue-detail"), what="the queue")
        await screen.query_one(QueueList).remove()  # as the console's shutdown removes it, screen last
        page = screen._load(0, 16)
        action = screen.run_worker(screen._act("Hold", []), group="queue-action")
        screen.post_message(RelayStatus(app.relay_status, changed=frozenset({"queue"})))  # "the queue changed"
        await page.wait()
        await action.wait()
        await pilot.pause()
        assert app._exception is None


async def test_any_screen_answered_while_the_console_quits_ends_without_a_crash(tmp_path):
    """The console quitting removes a screen's widgets before the screen: a worker that the relay
    answers in between finds them gone. Whatever the screen, the console ends without an error."""
    from textual import work
    from textual.screen import Screen
    from textual.widgets import Static

    answered = asyncio.Event()

    class Answering(Static):
        def on_unmount(self) -> None:
            answered.set()  # the relay's answer comes just as the console takes the screen apart

    class Waiting(Screen):
        def compose(self):
            yield Answering(id="answer")

        @work(group="late")
        async def ask(self) -> None:
            await answered.wait()
            self.query_one("#answer", Static).update("too late")

    app = make_app(str(tmp_path / "nobody.sock"))
    async with app.run_test(size=(80, 25)) as pilot:
        screen = Waiting()
        await app.push_screen(screen)
        await pilot.pause()
        screen.ask()
        await pilot.pause()
    assert app._exception is None

    # While the console runs, the same error is a bug, and it still shows.
    from textual.worker import WorkerFailed

    answered.clear()
    app = make_app(str(tmp_path / "nobody.sock"))
    with pytest.raises(WorkerFailed):
        async with app.run_test(size=(80, 25)) as pilot:
            screen = Waiting()
            await app.push_screen(screen)
            await pilot.pause()
            screen.ask()
            await screen.query_one("#answer").remove()  # sets `answered` while the console runs
            await pilot.pause(0.2)


def test_a_relay_status_that_comes_while_no_screen_is_up_is_not_a_crash(tmp_path):
    """The status watcher starts with the console; its first word can come before the first screen
    is up (or while the lock screen takes over): it waits for the next one instead of failing."""
    app = make_app(str(tmp_path / "nobody.sock"))
    assert not app.screen_stack
    app.on_relay_status(RelayStatus(None, problem="the relay is not running"))
    assert app.relay_problem == "the relay is not running"
