"""One queued message: envelope, every recipient's state, and its headers."""

from __future__ import annotations

import time

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from relay.printable import printable
from relay.queue.query import age_text

from ..widgets.queue_list import STATE_STYLES

RECIPIENT_STYLES = {"sent": "green", "deferred": "yellow", "bouncing": "red", "bounced": "red", "pending": ""}


def describe(message: dict, headers: str) -> Text:
    text = Text()
    text.append(f"Message {message['id']}\n", style="bold")
    text.append("State      ")
    text.append(f"{message['state']}\n", style=STATE_STYLES.get(message["state"], ""))
    text.append(f"Arrived    {time.ctime(message['arrival'])} ({age_text(message['age'])} ago)\n")
    text.append(f"From       <{printable(message['sender'])}>\n")  # clients chose these: no escapes
    text.append(f"Client     {printable(message['client'])}\n")
    text.append(f"Size       {message['size']} bytes\n")
    text.append(f"Attempts   {message['attempts']}")
    if message.get("next_attempt"):
        text.append(f", next at {time.strftime('%H:%M:%S', time.localtime(message['next_attempt']))}")
    text.append("\n\nRecipients\n", style="bold")
    for r in message["recipients"]:
        text.append(f"  <{printable(r['address'])}>  ")
        text.append(r["status"], style=RECIPIENT_STYLES.get(r["status"], ""))
        text.append(f"  attempts {r['attempts']}" + (f"  dsn {r['dsn']}" if r["dsn"] else "") + "\n")
        if r["last_reply"]:
            text.append(f"    {printable(r['last_reply'])}\n", style="dim")
    text.append("\nHeaders\n", style="bold")
    text.append(printable(headers.replace("\r\n", "\n").rstrip("\n"), keep="\n\t"))
    return text


class MessageScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q", "dismiss", "Back")]

    def __init__(self, queue_id: str):
        super().__init__()
        self.queue_id = queue_id

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="message-detail"):
            yield Static(f"Loading {self.queue_id}...", id="message-text")

    def on_mount(self) -> None:
        self.run_worker(self._load(), exclusive=True)

    async def _load(self) -> None:
        body = self.query_one("#message-text", Static)
        answer = await self.app.link.attempt("io.postern.Queue.Show", lambda words: body.update(Text(words, style="red")),
                                             id=self.queue_id)
        if answer is None:
            return
        body.update(describe(answer["message"], answer["headers"]))
