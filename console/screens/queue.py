"""The queue: every queued message, live, with Postfix's verbs (hold, release, delete, requeue, flush)."""

from __future__ import annotations

from functools import partial

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer, Input, Static

from relay.printable import printable
from relay.queue.query import age_text

from ..messages import RelayStatus
from ..relay_link import tell
from ..widgets.queue_list import QueueList
from ..widgets.status_line import StatusLine
from .confirm import QUESTIONS, ConfirmScreen
from .message_detail import MessageScreen
from .paused import PausedScreen
from .queue_summary import QueueSummaryScreen

SORTS = ("arrival", "age", "size", "sender", "recipient")
FILTER_KEYS = {"state": "state", "from": "sender", "sender": "sender", "to": "recipient",
               "rcpt": "recipient", "recipient": "recipient", "domain": "domain"}
FILTER_HELP = "Filter: to:ADDR from:ADDR domain:NAME state:deferred|hold|active (Enter applies, Esc clears)"


def parse_filter(text: str) -> dict:
    """'state:deferred domain:example.org bob' -> a Queue.List filter; bare words match recipients."""
    selection: dict = {}
    for word in text.split():
        key, sep, value = word.partition(":")
        if sep and key.lower() in FILTER_KEYS:
            selection[FILTER_KEYS[key.lower()]] = value
        else:
            selection["recipient"] = word
    return selection


class QueueScreen(Screen):
    BINDINGS = [
        Binding("slash", "edit_filter", "Filter", id="queue.filter"),
        Binding("s", "cycle_sort", "Sort", id="queue.sort"),
        Binding("h", "act('Hold')", "Hold", id="queue.hold"),
        Binding("u", "act('Release')", "Release", id="queue.release"),
        Binding("r", "act('Requeue')", "Requeue", id="queue.requeue", show=False),
        Binding("delete,d", "act('Delete')", "Delete", id="queue.delete"),
        Binding("a", "select_all", "All", id="queue.select_all"),
        Binding("f", "flush", "Flush", id="queue.flush"),
        Binding("g", "summary", "By domain", id="queue.summary", show=False),
        Binding("p", "paused", "Paused domains", id="queue.paused", show=False),
        Binding("escape", "clear", "Clear", show=False),
    ]

    def __init__(self):
        super().__init__()
        self.selection: dict = {}
        self.sort = "arrival"
        self.showing_summary = False

    def compose(self) -> ComposeResult:
        yield StatusLine("Queue")
        yield Input(placeholder=FILTER_HELP, id="queue-filter")
        yield QueueList(id="queue-list")
        yield Static(id="queue-detail")
        yield Footer(compact=True)

    @property
    def queue_list(self) -> QueueList:
        return self.query_one(QueueList)

    def on_mount(self) -> None:
        self.query_one("#queue-filter").display = False
        self.queue_list.focus()
        self.watch(self.queue_list, "cursor", lambda _: self._describe_current(), init=False)

    def on_screen_resume(self) -> None:
        self.queue_list.request_window()

    # --- loading -------------------------------------------------------------------------

    def on_queue_list_window_needed(self, message: QueueList.WindowNeeded) -> None:
        self._load(message.offset, message.count)

    def on_relay_status(self, message: RelayStatus) -> None:
        # the list is gone while the console quits (its widgets go before the screen): nothing to refresh
        if ("queue" in message.changed or message.status is None) and self.query(QueueList):
            self.queue_list.request_window()

    @work(group="queue-page", exclusive=True)
    async def _load(self, offset: int, count: int) -> None:
        answer = await self.app.link.attempt(
            "io.postern.Queue.List", self._list_failed, filter=self.selection, sort=self.sort, offset=offset,
            limit=count + 1)
        if answer is not None:
            tell(partial(self._show_page, offset), answer)  # the screen may have closed while the relay answered

    def _show_page(self, offset: int, answer: dict) -> None:
        self.queue_list.empty_text = ("No queued message matches the filter (Esc clears it)." if self.selection
                                      else "The queue is empty.")
        self.queue_list.show(offset, answer["messages"], answer["total"])
        self._describe_current()

    def _list_failed(self, words: str) -> None:
        self.queue_list.empty_text = "The queue cannot be read: the relay does not answer."
        self.queue_list.show(0, [], 0)
        self.query_one("#queue-detail", Static).update(Text(words, style="red"))

    def on_queue_list_opened(self, message: QueueList.Opened) -> None:
        self.app.push_screen(MessageScreen(message.message["id"]))

    def _describe_current(self) -> None:
        queue_list = self.queue_list
        current = queue_list.current()
        text = Text()
        where = f"{queue_list.cursor + 1 if queue_list.total else 0} of {queue_list.total}"
        text.append(f"{where}  sort: {self.sort}", style="bold")
        if self.selection:
            text.append("  filter: " + " ".join(f"{k}:{v}" for k, v in self.selection.items()))
        if queue_list.all_matching:
            text.append(f"  selected: all {queue_list.total:,}", style="bold")
        elif queue_list.selected:
            text.append(f"  selected: {len(queue_list.selected)}", style="bold")
        if current:
            text.append(f"\n{current['id']} from <{printable(current['sender'])}> {age_text(current['age'])} ago, "
                        f"attempts {current['attempts']}")
            if current["last_reply"]:
                text.append(f"\n{printable(current['last_reply'])}", style="yellow")
        self.query_one("#queue-detail", Static).update(text)

    # --- filter and sort ---------------------------------------------------------------------

    def action_edit_filter(self) -> None:
        field = self.query_one("#queue-filter", Input)
        field.display = True
        field.focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.selection = parse_filter(event.value)
        event.input.display = bool(self.selection)
        self._restart()

    def action_clear(self) -> None:
        field = self.query_one("#queue-filter", Input)
        if field.has_focus or self.selection:
            field.value = ""
            field.display = False
            self.selection = {}
        self.queue_list.clear_selection()
        self._restart()

    def action_cycle_sort(self) -> None:
        self.sort = SORTS[(SORTS.index(self.sort) + 1) % len(SORTS)]
        self._restart()

    def show_domain(self, domain: str | None) -> None:
        """The queue filtered to one destination domain (from the by-domain summary)."""
        if domain:
            self.show_filter({"domain": domain})

    def show_filter(self, selection: dict) -> None:
        """The queue filtered as `selection` (a Queue.List filter), shown in the filter field as typed."""
        words = {"domain": "domain", "sender": "from", "recipient": "to", "state": "state"}
        self.selection = selection
        field = self.query_one("#queue-filter", Input)
        field.value = " ".join(f"{words[key]}:{value}" for key, value in selection.items())
        field.display = True
        self.queue_list.clear_selection()
        self._restart()

    def _restart(self) -> None:
        self.queue_list.cursor = 0
        self.queue_list.focus()
        self.queue_list.request_window()

    # --- actions ------------------------------------------------------------------------------

    def action_select_all(self) -> None:
        """Every message the filter matches (all of the queue without one), like `postsuper -d ALL`;
        pressed again, nothing is selected."""
        queue_list = self.queue_list
        queue_list.selected.clear()
        queue_list.all_matching = not queue_list.all_matching and queue_list.total > 0
        queue_list.refresh()
        self._describe_current()

    def action_act(self, verb: str) -> None:
        queue_list = self.queue_list
        if queue_list.all_matching:
            ids = None
            words = " ".join(f"{k}:{v}" for k, v in self.selection.items())
            what = (f"all {queue_list.total:,} messages matching {words}" if words
                    else f"all {queue_list.total:,} queued messages")
        else:
            ids = queue_list.targets()
            if not ids:
                return
            what = f"{len(ids)} messages" if len(ids) > 1 else f"message {ids[0]}"
        def answered(yes: bool | None) -> None:
            if yes:
                self.run_worker(self._act(verb, ids), group="queue-action")

        self.app.push_screen(ConfirmScreen(QUESTIONS[verb].format(what=what)), answered)

    async def _act(self, verb: str, ids: list[str] | None) -> None:
        """On the given IDs, or (None) on whatever matches the filter when the relay acts."""
        which = {"ids": ids} if ids is not None else {"filter": self.selection}
        answer = await self.app.link.attempt(
            f"io.postern.Queue.{verb}", lambda words: self.notify(words, title=verb, severity="error"), **which)
        if answer is None:
            return
        done = len(answer["ids"])
        self.notify(f"{verb}: {done:,} message{'s' if done != 1 else ''}", title="Queue")
        tell(self._after_action, None)  # the screen may have closed while the relay acted

    def _after_action(self, _: None) -> None:
        self.queue_list.clear_selection()
        self.queue_list.request_window()

    def action_flush(self) -> None:
        self.run_worker(self._flush(), group="queue-action")

    async def _flush(self) -> None:
        answer = await self.app.link.attempt(
            "io.postern.Queue.Flush", lambda words: self.notify(words, title="Flush", severity="error"))
        if answer is None:
            return
        self.notify(f"Trying {answer['count']} messages now", title="Flush")

    def action_paused(self) -> None:
        self.app.push_screen(PausedScreen())

    def action_summary(self) -> None:
        self.app.push_screen(QueueSummaryScreen(), self.show_domain)
