"""The relay log, following live, filterable by queue ID or address."""

from __future__ import annotations

import collections
import re

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer, Input, RichLog

from relay.printable import printable

from ..widgets.status_line import StatusLine

KEEP_LINES = 5000
HIGHLIGHTS = [
    (re.compile(r"status=sent|released from hold"), "green"),
    (re.compile(r"status=deferred|delivery temporarily suspended"), "yellow"),
    (re.compile(r"status=bounced|status=expired|reject:|refused|loops back to myself|damaged"), "bold red"),
    (re.compile(r"\b[0-9A-F]{16}\b"), "cyan"),
]


def styled(line: str) -> Text:
    text = Text(printable(line))  # the daemon's log is printable already: whatever else sent it, no escapes
    for pattern, style in HIGHLIGHTS:
        text.highlight_regex(pattern, style)
    return text


class LogScreen(Screen):
    BINDINGS = [
        Binding("slash", "edit_filter", "Filter", id="logs.filter"),
        Binding("escape", "clear_filter", "Clear filter", show=False),
        Binding("end", "follow", "Follow", id="logs.follow"),
    ]

    def __init__(self):
        super().__init__()
        self.lines: collections.deque[str] = collections.deque(maxlen=KEEP_LINES)
        self.filter_text = ""

    def compose(self) -> ComposeResult:
        yield StatusLine("Logs")
        yield Input(placeholder="Show only lines containing (queue ID, address, word); Enter applies", id="log-filter")
        yield RichLog(id="log", max_lines=KEEP_LINES, wrap=False, auto_scroll=True)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#log-filter").display = False
        log = self.query_one(RichLog)
        log.focus()
        self.run_worker(self.app.link.follow(
            "io.postern.Log.Tail", self._add,
            lambda words: log.write(Text(f"-- {words}; trying again --", style="red")), lines=500),
            group="log-follow", exclusive=True)

    def _add(self, answer: dict) -> None:
        log = self.query_one(RichLog)
        for line in answer["lines"]:
            self.lines.append(line["text"])
            if self._shown(line["text"]):
                log.write(styled(line["text"]))

    def _shown(self, line: str) -> bool:
        return not self.filter_text or self.filter_text.lower() in line.lower()

    def _redraw(self) -> None:
        log = self.query_one(RichLog)
        log.clear()
        for line in self.lines:
            if self._shown(line):
                log.write(styled(line))

    def action_edit_filter(self) -> None:
        field = self.query_one("#log-filter", Input)
        field.display = True
        field.focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.filter_text = event.value.strip()
        event.input.display = bool(self.filter_text)
        self.query_one(RichLog).focus()
        self._redraw()

    def action_clear_filter(self) -> None:
        field = self.query_one("#log-filter", Input)
        field.value = ""
        field.display = False
        self.filter_text = ""
        self.query_one(RichLog).focus()
        self._redraw()

    def action_follow(self) -> None:
        self.query_one(RichLog).scroll_end(animate=False)
