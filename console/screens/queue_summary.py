"""Queued recipients by destination domain and age, like Postfix's qshape.

The busiest domain comes first and a TOTAL row closes the table. Enter on a domain
returns it, so the queue screen can show only that domain's mail (PMG's drill-down).
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

COUNT_WIDTH = 5  # one column: counts up to 9999, then "10k"
NAME_MIN = 24  # below this, neighbouring age columns are merged (qshape's -b, by hand)


def count_text(n: int) -> str:
    return str(n) if n < 10000 else f"{n // 1000}k"


def name_width(columns: int, width: int) -> int:
    """What is left for the domain after TOTAL and `columns` age columns, each with a space before it."""
    return width - (columns + 1) * (COUNT_WIDTH + 1)


def merged(bounds: list[int], width: int) -> list[list[int]]:
    """Groups of age-bucket indexes, one per column: single buckets when they fit, pairs when not.
    The last bucket (older than every bound) always stays a column of its own."""
    groups = [[i] for i in range(len(bounds))]
    while name_width(len(groups) + 1, width) < NAME_MIN and len(groups) > 2:
        groups = [sum(groups[i:i + 2], []) for i in range(0, len(groups), 2)]
    return groups + [[len(bounds)]]


def summary_row(name: str, cells: list[int], name_cols: int) -> str:
    shown = name if len(name) <= name_cols else name[: name_cols - 1] + "…"
    return f"{shown:{name_cols}}" + "".join(f" {count_text(c):>{COUNT_WIDTH}}" for c in cells)


def summary_lines(answer: dict, width: int) -> tuple[str, list[tuple[str, str]], str]:
    """(header, [(domain, line)], TOTAL line) for a Queue.Summary answer, each at most `width` wide."""
    bounds = answer["bucket_minutes"]
    groups = merged(bounds, width)
    labels = [f"{bounds[g[-1]]}m" for g in groups[:-1]] + ["older"]
    name_cols = max(NAME_MIN // 2, name_width(len(groups), width))

    def cells(buckets: list[int]) -> list[int]:
        return [sum(buckets)] + [sum(buckets[i] for i in g) for g in groups]

    header = f"{'DESTINATION':{name_cols}}" + "".join(f" {c:>{COUNT_WIDTH}}" for c in ["TOTAL"] + labels)
    rows = [(row["destination"], summary_row(row["destination"], cells(row["buckets"]), name_cols))
            for row in answer["rows"]]
    totals = [sum(row["buckets"][i] for row in answer["rows"]) for i in range(len(bounds) + 1)]
    return header, rows, summary_row("TOTAL", cells(totals), name_cols)


class QueueSummaryScreen(ModalScreen[str | None]):
    """Dismissed with the chosen domain, or None."""

    BINDINGS = [Binding("escape,q,g", "dismiss", "Back")]

    def __init__(self):
        super().__init__()
        self.answer: dict | None = None

    def compose(self) -> ComposeResult:
        with Vertical(id="summary"):
            yield Static("Recipients still to deliver, by domain and age. Enter: its mail, Esc: back",
                         classes="title", id="summary-title")
            yield Static("", id="summary-header")
            yield OptionList(id="summary-rows")
            yield Static("Loading...", id="summary-total")

    def on_mount(self) -> None:
        self.run_worker(self._load(), exclusive=True)

    async def _load(self) -> None:
        total = self.query_one("#summary-total", Static)
        answer = await self.app.link.attempt("io.postern.Queue.Summary", lambda words: total.update(Text(words, style="red")))
        if answer is None:
            return
        self.answer = answer
        self.draw()

    def on_resize(self) -> None:
        self.draw()

    def draw(self) -> None:
        if self.answer is None:
            return
        rows = self.query_one("#summary-rows", OptionList)
        width = rows.scrollable_content_region.width - 1 or self.size.width - 6
        header, lines, total = summary_lines(self.answer, width)
        self.query_one("#summary-header", Static).update(Text(header, style="bold"))
        highlighted = rows.highlighted
        rows.clear_options()
        rows.add_options([Option(Text(line, no_wrap=True), id=domain) for domain, line in lines])
        if lines:
            rows.highlighted = min(highlighted or 0, len(lines) - 1)
            self.query_one("#summary-total", Static).update(Text(total, style="bold"))
        else:
            self.query_one("#summary-total", Static).update(Text("Nothing queued.", style="dim"))
        rows.focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)
