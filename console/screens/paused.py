"""The migration hold: domains whose mail is answered 451 at RCPT while they move to another server.

The sending side keeps such mail in its own queue and retries, so nothing waits here. The
list shows since when each domain is paused and how many recipients were turned away; `a`
pauses another domain and `r` resumes the one under the cursor (io.postern.Config.Pause and
Resume, which write the configuration like any other change).
"""

from __future__ import annotations

import time

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Footer, Input, OptionList, Static
from textual.widgets.option_list import Option

from relay.queue.query import age_text

from ..messages import RelayStatus
from .confirm import ConfirmScreen

EXPLAIN = ("Mail from or to these domains is refused with 451 4.3.2 at RCPT: the sender keeps it and tries again "
           "later, so nothing piles up here. Resume a domain once its new server takes mail.")


def paused_line(row: dict, started: float, now: float) -> str:
    """'partner.org   paused 3d  turned away 12 since 09:14': counted since the pause, or since the
    daemon started if that was later (the count is not kept across restarts)."""
    counted_from = time.strftime("%H:%M", time.localtime(max(row["since"], started)))
    return (f"{row['domain']:24} paused {age_text(now - row['since']):>4}  "
            f"turned away {row['turned_away']} since {counted_from}")


class PausedScreen(ModalScreen[None]):
    BINDINGS = [
        Binding("escape,q", "dismiss", "Back"),
        Binding("a", "add", "Pause a domain"),
        Binding("r,delete", "resume", "Resume"),
    ]

    def compose(self) -> ComposeResult:
        with Vertical(id="paused-dialog"):
            yield Static("Paused domains (migration hold)", classes="title")
            yield Static(EXPLAIN, id="paused-explain")
            yield OptionList(id="paused-list")
            yield Input(placeholder="Domain to pause (Enter pauses it, Esc cancels)", id="paused-add")
            yield Static(id="paused-notice")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#paused-add").display = False
        self.run_worker(self._load(), group="paused-load", exclusive=True)

    async def _load(self) -> None:
        status = await self.app.link.attempt("io.postern.Status.Get", self.say)
        if status is not None:
            self.show(status["status"])

    def on_relay_status(self, message: RelayStatus) -> None:
        if message.status is not None:
            self.show(message.status)
        else:
            self.say(message.problem)

    def show(self, status: dict) -> None:
        rows = self.query_one("#paused-list", OptionList)
        highlighted = rows.highlighted
        now = time.time()
        rows.clear_options()
        rows.add_options([Option(Text(paused_line(row, status["started"], now), no_wrap=True), id=row["domain"])
                          for row in status.get("paused", [])])
        if rows.option_count:
            rows.highlighted = min(highlighted or 0, rows.option_count - 1)
            self.say("")
        else:
            self.say("No domain is paused: all mail is taken as usual. a pauses one.", "")
        if not self.query_one("#paused-add").has_focus:
            rows.focus()

    def say(self, words: str, style: str = "red") -> None:
        self.query_one("#paused-notice", Static).update(Text(words, style=style))

    def action_add(self) -> None:
        field = self.query_one("#paused-add", Input)
        field.display = True
        field.value = ""
        field.focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        domain = event.value.strip()
        event.input.display = False
        if domain:
            self.run_worker(self._change("Pause", domain), group="paused-change")

    async def action_dismiss(self, result: None = None) -> None:
        """Esc while typing a domain cancels the typing, not the screen."""
        field = self.query_one("#paused-add", Input)
        if field.display:
            field.display = False
            self.query_one("#paused-list").focus()
            return
        await super().action_dismiss(result)

    def action_resume(self) -> None:
        rows = self.query_one("#paused-list", OptionList)
        if rows.highlighted is None or not rows.option_count:
            return
        domain = rows.get_option_at_index(rows.highlighted).id

        def answered(yes: bool | None) -> None:
            if yes:
                self.run_worker(self._change("Resume", domain), group="paused-change")

        self.app.push_screen(ConfirmScreen(f"Resume {domain}? Its mail is taken again at once."), answered)

    async def _change(self, verb: str, domain: str) -> None:
        answer = await self.app.link.attempt(f"io.postern.Config.{verb}", self.say, domains=[domain])
        if answer is None:
            return
        self.notify(f"{domain} {'paused' if verb == 'Pause' else 'resumed'}", title="Migration hold")
        await self._load()
