"""The relay log, read where it lives (the journal, or the sandbox's file), following live.

The lines come from `appliance.relay_log`, not from the relay: they go back past the relay's
last restart and are there while the relay is down. Keys as in less: `/` and `?` search forward
and backward, `n` and `N` go to the next and previous match; `f` keeps only the lines that
contain a text; `w` switches between wrapping the lines and cutting them at the edge. At the
end the view follows new lines; scrolled away from it, it stays put until End.
"""

from __future__ import annotations

import collections
import contextlib
import re

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer, Input, Static

from appliance.relay_log import LogLine
from relay.printable import printable

from ..widgets.log_view import LogView, short_time
from ..widgets.status_line import StatusLine

KEEP_LINES = 5000
HISTORY = 1000  # lines read back when the screen opens (each is drawn then: more would keep it waiting)
HIGHLIGHTS = [
    (re.compile(r"status=sent|released from hold"), "green"),
    (re.compile(r"status=deferred|delivery temporarily suspended"), "yellow"),
    (re.compile(r"status=bounced|status=expired|reject:|refused|loops back to myself|damaged"), "bold red"),
    (re.compile(r"\b[0-9A-F]{16}\b"), "cyan"),
]
PROMPTS = {
    "search": "Search forward for (not case sensitive); Enter searches, n and N go on",
    "search-back": "Search backward for (not case sensitive); Enter searches, n and N go on",
    "filter": "Show only lines containing (queue ID, address, word); Enter applies",
}


def styled(line: str) -> Text:
    text = Text(printable(line))  # the daemon's log is printable already: whatever else wrote it, no escapes
    for pattern, style in HIGHLIGHTS:
        text.highlight_regex(pattern, style)
    return text


class LogScreen(Screen):
    BINDINGS = [
        Binding("slash", "prompt('search')", "Search", id="logs.search"),
        Binding("question_mark", "prompt('search-back')", "Search backward", show=False, id="logs.search-back"),
        Binding("n", "next_match(1)", "Next match", show=False, id="logs.next"),
        Binding("N", "next_match(-1)", "Previous match", show=False, id="logs.previous"),
        Binding("f,vertical_line", "prompt('filter')", "Filter", id="logs.filter"),
        Binding("w", "toggle_wrap", "Wrap", id="logs.wrap"),
        Binding("escape", "back_out", "Clear search, then filter", show=False),
    ]

    def __init__(self):
        super().__init__()
        self.lines: collections.deque[LogLine] = collections.deque(maxlen=KEEP_LINES)
        self.filter_text = ""
        self.search_text = ""
        self.direction = 1
        self.prompting = ""
        self.problem = ""
        self.notice = ""

    def compose(self) -> ComposeResult:
        yield StatusLine("Logs")
        yield Input(id="log-prompt")
        yield LogView(styled, KEEP_LINES, id="log")
        yield Static(id="log-info")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#log-prompt").display = False
        self.query_one(LogView).focus()
        self._show_info()
        self.run_worker(self._follow(), group="log-follow", exclusive=True)

    async def _follow(self) -> None:
        # aclosing: when the screen or the console closes, the reader stops its journalctl at once.
        async with contextlib.aclosing(self.app.relay_log.follow(HISTORY, self._failed)) as batches:
            async for batch in batches:
                self._add(batch)

    def _failed(self, words: str) -> None:
        self.problem = words
        self._show_info()

    def _add(self, batch: list[LogLine]) -> None:
        self.lines.extend(batch)
        self.query_one(LogView).append((short_time(line.when), line.text) for line in batch if self._shown(line))
        if self.problem:
            self.problem = ""
            self._show_info()

    def _shown(self, line: LogLine) -> bool:
        return not self.filter_text or self.filter_text.lower() in line.text.lower()

    def _show_info(self) -> None:
        """One line: a problem or a search's outcome first, then the filter, the search, the wrap, the source."""
        parts = [(self.problem, "bold red"), (self.notice, "yellow"),
                 (self.filter_text and f"filter: {self.filter_text}", "bold"),
                 (self.search_text and f"search: {self.search_text}", ""),
                 ("" if self.query_one(LogView).wrap else "cut at the edge (w wraps)", ""),
                 (f"Log: {self.app.relay_log.where}", "dim")]
        text = Text("  ").join(Text(words, style=style) for words, style in parts if words)
        self.query_one("#log-info", Static).update(text)

    # --- search, filter, wrap --------------------------------------------------------------------

    def show_filter(self, text: str) -> None:
        """Only the lines containing `text` (a queue ID from the message view, say)."""
        self.filter_text = text
        self._redraw()
        self._show_info()

    def action_prompt(self, kind: str) -> None:
        field = self.query_one("#log-prompt", Input)
        self.prompting = kind
        field.placeholder = PROMPTS[kind]
        field.value = self.filter_text if kind == "filter" else self.search_text
        field.display = True
        field.focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        value = event.value.strip()
        event.input.display = False
        self.query_one(LogView).focus()
        if self.prompting == "filter":
            self.filter_text = value
            self._redraw()
        elif value:
            self.search_text = value
            self.direction = 1 if self.prompting == "search" else -1
            self.query_one(LogView).current = None  # a new search starts from what is on screen
            self._find(self.direction)
        self.prompting = ""
        self._show_info()

    def action_next_match(self, direction: int) -> None:
        if self.search_text:
            self._find(direction * self.direction)
            self._show_info()

    def _find(self, direction: int) -> None:
        """The next line with the search text, from the current match or else from the screen's edge;
        past the end of the log it goes on from the other end, and says so."""
        view = self.query_one(LogView)
        pattern = re.compile(re.escape(self.search_text), re.IGNORECASE)
        count = len(view.texts)
        if view.current is not None:
            start = view.current + direction
        else:
            start = view.line_at_top() if direction > 0 else view.line_at_bottom()
        self.notice = ""
        for step in range(count):
            index = (start + step * direction) % count
            if pattern.search(view.texts[index]):
                if (index < start) if direction > 0 else (index > start):
                    self.notice = "search went on from the top" if direction > 0 else "search went on from the bottom"
                view.set_search(pattern, index)
                view.show_line(index)
                return
        view.set_search(pattern, None)
        self.notice = f"not found: {self.search_text}"

    def _redraw(self) -> None:
        view = self.query_one(LogView)
        view.set_lines((short_time(line.when), line.text) for line in self.lines if self._shown(line))
        if self.search_text:
            view.set_search(re.compile(re.escape(self.search_text), re.IGNORECASE), None)

    def action_toggle_wrap(self) -> None:
        view = self.query_one(LogView)
        view.set_wrap(not view.wrap)
        self._show_info()

    def action_back_out(self) -> None:
        """Esc: away from the prompt, else the search's marks off, else the filter off."""
        field = self.query_one("#log-prompt", Input)
        view = self.query_one(LogView)
        if field.display:
            field.display = False
            self.prompting = ""
        elif self.search_text:
            self.search_text = self.notice = ""
            view.set_search(None, None)
        elif self.filter_text:
            self.filter_text = ""
            self._redraw()
        view.focus()
        self._show_info()
