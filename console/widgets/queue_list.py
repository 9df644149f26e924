"""A list of queued messages that draws only the rows on screen.

The widget never holds the whole queue: it shows a window of rows, and when the
cursor leaves the loaded window it asks for another (`WindowNeeded`); the screen
fetches that page from the relay and hands it back with `show`. So 100,000 queued
messages cost what 25 do.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.binding import Binding
from textual.message import Message
from textual.reactive import reactive
from textual.widget import Widget

from relay.printable import printable
from relay.queue.query import age_text

STATE_STYLES = {"active": "green", "deferred": "yellow", "hold": "magenta"}
REPLY_COLUMN_FROM = 110  # screen width from which the last reply gets a column of its own


def size_text(size: int) -> str:
    """Bytes as `ls -sh` would say them: 980, 2.0k, 48k, 1.5M (rounded, never truncated)."""
    for unit, scale in (("M", 1 << 20), ("k", 1 << 10)):
        if size >= scale:
            value = size / scale
            return f"{value:.1f}{unit}" if value < 9.95 else f"{round(value)}{unit}"
    return str(size)


def reply_text(reply: str) -> str:
    """The server's own words from a last reply: 'host mx[..]:25 said: 451 ...' -> '451 ...'."""
    return reply.partition(" said: ")[2] or reply


def fit(text: str, width: int) -> str:
    if width <= 0:
        return ""
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"


class QueueList(Widget, can_focus=True):
    BINDINGS = [
        Binding("up,k", "move(-1)", "Up", show=False),
        Binding("down,j", "move(1)", "Down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("home", "jump(0)", "First", show=False),
        Binding("end", "jump(-1)", "Last", show=False),
        Binding("space", "toggle_select", "Select", id="queue.select", show=False),
        Binding("enter", "open", "Open", id="queue.open", key_display="Enter"),
    ]

    cursor: reactive[int] = reactive(0)

    @dataclass
    class WindowNeeded(Message):
        offset: int
        count: int

    @dataclass
    class Opened(Message):
        message: dict

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.top = 0  # index of the first row on screen
        self.loaded_offset = 0
        self.rows: list[dict] = []
        self.total = 0
        self.selected: set[str] = set()
        self.all_matching = False  # every message the filter matches, not only the rows loaded
        self.empty_text = "The queue is empty."

    # --- what the screen calls --------------------------------------------------------

    @property
    def visible_rows(self) -> int:
        return max(1, self.size.height - 1)

    def show(self, offset: int, rows: list[dict], total: int) -> None:
        self.loaded_offset, self.rows, self.total = offset, rows, total
        if self.cursor >= total:
            self.cursor = max(0, total - 1)
        self.refresh()

    def current(self) -> dict | None:
        index = self.cursor - self.loaded_offset
        return self.rows[index] if 0 <= index < len(self.rows) else None

    def targets(self) -> list[str]:
        """The selected messages, or the one under the cursor (see `all_matching` for the rest)."""
        if self.selected:
            return sorted(self.selected)
        current = self.current()
        return [current["id"]] if current else []

    def request_window(self) -> None:
        self.post_message(self.WindowNeeded(self.top, self.visible_rows))

    # --- keys ---------------------------------------------------------------------------------

    def action_move(self, delta: int) -> None:
        self.cursor = max(0, min(self.total - 1, self.cursor + delta))

    def action_page(self, direction: int) -> None:
        self.action_move(direction * self.visible_rows)

    def action_jump(self, where: int) -> None:
        self.cursor = max(0, self.total - 1) if where < 0 else 0

    def clear_selection(self) -> None:
        self.selected.clear()
        self.all_matching = False
        self.refresh()

    def action_toggle_select(self) -> None:
        current = self.current()
        if current:
            self.all_matching = False
            self.selected ^= {current["id"]}
            self.action_move(1)
            self.refresh()

    def action_open(self) -> None:
        current = self.current()
        if current:
            self.post_message(self.Opened(current))

    def watch_cursor(self, cursor: int) -> None:
        if cursor < self.top:
            self.top = cursor
        elif cursor >= self.top + self.visible_rows:
            self.top = cursor - self.visible_rows + 1
        loaded_end = self.loaded_offset + len(self.rows)
        if self.top < self.loaded_offset or min(self.top + self.visible_rows, self.total) > loaded_end:
            self.request_window()
        self.refresh()

    def on_resize(self) -> None:
        self.request_window()

    # --- drawing --------------------------------------------------------------------------------

    def _columns(self) -> tuple[int, int, int]:
        """Widths of the sender, recipients and last-reply columns (0: no reply column)."""
        rest = self.size.width - 43
        reply = 0
        if self.size.width >= REPLY_COLUMN_FROM:
            reply = rest * 2 // 5
            rest -= reply + 1
        sender = max(8, rest * 2 // 5)
        return sender, max(8, rest - sender - 1), reply

    def render(self) -> Text:
        sender_width, rcpt_width, reply_width = self._columns()
        text = Text(no_wrap=True, overflow="crop")
        heading = f"  {'QUEUE ID':16} {'STATE':8} {'AGE':>5} {'SIZE':>6}  {'SENDER':{sender_width}} "
        heading += f"{'RECIPIENTS':{rcpt_width}} LAST REPLY" if reply_width else "RECIPIENTS"
        text.append(f"{heading:{self.size.width}}", style="bold reverse")
        if not self.total:
            text.append(f"\n  {self.empty_text}")
            return text
        for index in range(self.top, min(self.top + self.visible_rows, self.total)):
            text.append("\n")
            row_index = index - self.loaded_offset
            if not 0 <= row_index < len(self.rows):
                text.append("  ...", style="dim")
                continue
            m = self.rows[row_index]
            recipients = [printable(r["address"]) for r in m["recipients"]]
            shown = recipients[0] + (f" +{len(recipients) - 1}" if len(recipients) > 1 else "")
            mark = "*" if self.all_matching or m["id"] in self.selected else " "
            line = Text(f"{mark} {m['id']:16} ")
            line.append(f"{m['state']:8}", style=STATE_STYLES.get(m["state"], ""))
            line.append(f" {age_text(m['age']):>5} {size_text(m['size']):>6}  "
                        f"{fit(printable(m['sender']) or '<>', sender_width):{sender_width}} ")
            if reply_width:
                line.append(f"{fit(shown, rcpt_width):{rcpt_width}} ")
                line.append(fit(printable(reply_text(m["last_reply"])), reply_width), style="yellow")
            else:
                line.append(fit(shown, rcpt_width))
            if index == self.cursor:
                line.stylize("reverse" if self.has_focus else "underline")
            text.append_text(line)
        return text
