"""Queued recipients by destination domain and age, like Postfix's qshape."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static


def summary_table(answer: dict, width: int = 78) -> Text:
    bounds = answer["bucket_minutes"]
    columns = [f"{b}m" for b in bounds] + [f">{bounds[-1]}m"]
    name_width = max(12, width - 7 - 6 * len(columns))
    text = Text(f"{'DESTINATION':{name_width}} {'TOTAL':>6}" + "".join(f"{c:>6}" for c in columns), style="bold")
    if not answer["rows"]:
        text.append("\nNothing queued.", style="dim")
    for row in answer["rows"]:
        name = row["destination"][:name_width]
        text.append(f"\n{name:{name_width}} {row['total']:>6}" + "".join(f"{n:>6}" for n in row["buckets"]))
    return text


class QueueSummaryScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,g", "dismiss", "Back")]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="summary"):
            yield Static("Recipients still to deliver, by domain and age", classes="title")
            yield Static("Loading...", id="summary-table")

    def on_mount(self) -> None:
        self.run_worker(self._load(), exclusive=True)

    async def _load(self) -> None:
        table = self.query_one("#summary-table", Static)
        answer = await self.app.link.attempt("io.postern.Queue.Summary", lambda words: table.update(Text(words, style="red")))
        if answer is None:
            return
        table.update(summary_table(answer, self.size.width - 4))
