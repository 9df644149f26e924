"""One queued message: envelope, every recipient's state, its headers and the start of its text,
with the queue's actions on it."""

from __future__ import annotations

import re
import textwrap
import time
from email.parser import HeaderParser

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Footer, Static

from relay.printable import printable
from relay.queue.query import age_text

from ..widgets.queue_list import STATE_STYLES
from .confirm import QUESTIONS, ConfirmScreen

RECIPIENT_STYLES = {"sent": "green", "deferred": "yellow", "bouncing": "red", "bounced": "red", "pending": ""}


def when(seconds: float) -> str:
    """A time in the local zone: the clock for today, the date too before."""
    moment = time.localtime(seconds)
    same_day = moment[:3] == time.localtime()[:3]
    return time.strftime("%H:%M:%S" if same_day else "%b %d %H:%M", moment)


def indented(reply: str, indent: int, width: int | None) -> str:
    """A next hop's reply under what it answers, its continuation lines indented as much as its first."""
    if not width or width <= indent + 20:
        return " " * indent + reply
    return textwrap.fill(reply, width, initial_indent=" " * indent, subsequent_indent=" " * indent,
                         break_long_words=True, break_on_hyphens=False)


def attempts_line(run: dict, width: int | None = None) -> Text:
    """One run of attempts with the same result: '  10:02:11  deferred 4.7.1  451 ... (x12 until 14:02:11)'."""
    text = Text(f"    {when(run['first'])}  ")
    text.append(run["status"], style=RECIPIENT_STYLES.get(run["status"], ""))
    text.append(f" {run['dsn']}" if run["dsn"] else "")
    if run["count"] > 1:
        text.append(f"  x{run['count']}, last {when(run['last'])}")
    text.append(f"\n{indented(printable(run['reply']), 6, width)}\n", style="dim")
    return text


def authentication(headers: str) -> tuple[str, str]:
    """(the checks' results, the DKIM signature) from the top Authentication-Results and DKIM-Signature fields:
    'spf=pass dkim=fail dmarc=fail (p=reject) arc=none', 'd=example.com s=s202612'; '' where there is none.

    The top field is this gateway's: the relay adds it above every other and removes forged ones
    with its name (docs/authentication.md)."""
    import authres
    import dkim.util

    fields = HeaderParser().parsestr(headers.replace("\r\n", "\n"), headersonly=True)
    checks = signature = ""
    if (value := fields.get("Authentication-Results")) is not None:
        try:
            parsed = authres.AuthenticationResultsHeader.parse_value(" ".join(str(value).split()))
        except Exception:  # a field the parser cannot read is shown as it is below, under Headers
            parsed = None
        if parsed is not None:
            policy = re.search(r"\bpolicy\.dmarc=(\w+)", str(value))
            checks = " ".join(f"{r.method}={r.result}" + (f" (p={policy.group(1)})" if r.method == "dmarc" and policy
                                                          else "") for r in parsed.results)
    if (value := fields.get("DKIM-Signature")) is not None:
        try:
            tags = dkim.util.parse_tag_value(" ".join(str(value).split()).encode("utf-8", "replace"))
        except Exception:
            tags = {}
        if b"d" in tags:
            signature = f"d={tags[b'd'].decode('ascii', 'replace')} s={tags.get(b's', b'?').decode('ascii', 'replace')}"
    return checks, signature


def describe(message: dict, headers: str, body: str = "", width: int | None = None) -> Text:
    """The message as the view shows it; with `width`, the replies wrap under themselves, not at the edge."""
    text = Text()
    text.append(f"Message {message['id']}\n", style="bold")
    text.append("State      ")
    text.append(f"{message['state']}\n", style=STATE_STYLES.get(message["state"], ""))
    text.append(f"Arrived    {time.ctime(message['arrival'])} ({age_text(message['age'])} ago)\n")
    text.append(f"From       <{printable(message['sender'])}>\n")  # clients chose these: no escapes
    text.append(f"Client     {printable(message['client'])}\n")
    text.append(f"Size       {message['size']} bytes\n")
    checks, signature = authentication(headers)
    if checks:
        text.append(f"Checks     {printable(checks)}\n")
    if signature:
        text.append(f"Signed     DKIM {printable(signature)}\n")
    text.append(f"Attempts   {message['attempts']}")
    if message.get("next_attempt"):
        text.append(f", next at {time.strftime('%H:%M:%S', time.localtime(message['next_attempt']))}")
    text.append("\n\nRecipients\n", style="bold")
    for r in message["recipients"]:
        text.append(f"  <{printable(r['address'])}>  ")
        text.append(r["status"], style=RECIPIENT_STYLES.get(r["status"], ""))
        text.append(f"  attempts {r['attempts']}" + (f"  dsn {r['dsn']}" if r["dsn"] else "") + "\n")
        runs = r.get("history") or []
        if not runs and r["last_reply"]:
            text.append(f"{indented(printable(r['last_reply']), 4, width)}\n", style="dim")
        for run in runs:
            text.append_text(attempts_line(run, width))
    text.append("\nHeaders\n", style="bold")
    text.append(printable(headers.replace("\r\n", "\n").rstrip("\n"), keep="\n\t"))
    if body:
        text.append("\n\nText\n", style="bold")
        text.append(printable(body, keep="\n\t"))
    return text


class MessageScreen(ModalScreen[None]):
    BINDINGS = [
        Binding("escape,q", "dismiss", "Back"),
        Binding("h", "act('Hold')", "Hold"),
        Binding("u", "act('Release')", "Release"),
        Binding("r", "act('Requeue')", "Requeue"),
        Binding("delete,d", "act('Delete')", "Delete"),
        Binding("l", "show_in_log", "Show in log"),
    ]

    def __init__(self, queue_id: str):
        super().__init__()
        self.queue_id = queue_id
        self.answer: dict | None = None

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="message-detail"):
            yield Static(f"Loading {self.queue_id}...", id="message-text")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.run_worker(self._load(), exclusive=True)

    async def _load(self) -> None:
        body = self.query_one("#message-text", Static)
        answer = await self.app.link.attempt("io.postern.Queue.Show", lambda words: body.update(Text(words, style="red")),
                                             id=self.queue_id, body=True)
        if answer is None:
            return
        self.answer = answer
        self.show()

    def show(self) -> None:
        body = self.query_one("#message-text", Static)
        answer = self.answer
        body.update(describe(answer["message"], answer["headers"], answer.get("body") or "", body.content_size.width))

    def on_resize(self) -> None:
        if self.answer is not None:
            self.call_after_refresh(self.show)

    async def action_show_in_log(self) -> None:
        """The log's lines about this message: the Logs screen filtered to its queue ID."""
        self.dismiss(None)
        await self.app.switch_mode("logs")
        self.app.screen.show_filter(self.queue_id)

    def action_act(self, verb: str) -> None:
        def answered(yes: bool | None) -> None:
            if yes:
                self.run_worker(self._act(verb), group="message-action")

        self.app.push_screen(ConfirmScreen(QUESTIONS[verb].format(what=f"message {self.queue_id}")), answered)

    async def _act(self, verb: str) -> None:
        answer = await self.app.link.attempt(
            f"io.postern.Queue.{verb}", lambda words: self.notify(words, title=verb, severity="error"), ids=[self.queue_id])
        if answer is None:
            return
        self.notify(f"{verb}: message {self.queue_id}", title="Queue")
        if verb == "Delete":
            self.dismiss(None)
        else:
            await self._load()
