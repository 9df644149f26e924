"""A view of log lines: wrapped to the width (or cut, scrolled sideways), each after its short time
stamp, with the matches of a search marked.

Each line is drawn once and kept: the scroll bar needs every line's height. A new width or the
wrap switched draws them all again, a search only the lines it marks or unmarks. Only the rows
on screen are put together for the terminal.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Iterable
from datetime import date, datetime

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.strip import Strip

MATCH = Style(reverse=True)
CURRENT = Style(color="black", bgcolor="yellow", bold=True)


def short_time(when: datetime | None, today: date | None = None) -> str:
    """HH:MM:SS for today, with the month and day before it for an older line, nothing without a time."""
    if when is None:
        return ""
    if when.date() == (today or date.today()):
        return when.strftime("%H:%M:%S")
    return when.strftime("%b %d %H:%M:%S")


class LogView(ScrollView, can_focus=True):
    """Lines as (time stamp, text) pairs; `styled` turns a line's text into a rich Text."""

    def __init__(self, styled: Callable[[str], Text], max_lines: int, **kwargs):
        super().__init__(**kwargs)
        self.styled = styled
        self.max_lines = max_lines
        self.wrap = True
        self.stamps: list[str] = []
        self.texts: list[str] = []
        self._strips: list[list[Strip] | None] = []
        self._starts: list[int] = [0]  # the first screen row of each line, and the total at the end
        self._width = 0
        self.search: re.Pattern | None = None
        self.current: int | None = None  # the line of the search's current match
        self.following = True  # kept at the end as lines come, until scrolled away from it

    # --- the lines -------------------------------------------------------------------------------

    def set_lines(self, lines: Iterable[tuple[str, str]]) -> None:
        self.stamps, self.texts = [], []
        self._strips = []
        self.current = None
        self.append(lines)

    def append(self, lines: Iterable[tuple[str, str]]) -> None:
        for stamp, text in lines:
            self.stamps.append(stamp)
            self.texts.append(text)
            self._strips.append(None)
        extra = len(self.texts) - self.max_lines
        if extra > 0:
            del self.stamps[:extra], self.texts[:extra], self._strips[:extra]
            if self.current is not None:
                self.current = self.current - extra if self.current >= extra else None
        before = self._starts[extra] if 0 < extra < len(self._starts) else 0
        self._layout()
        if before and not self.following:
            self.scroll_to(y=max(0, self.scroll_y - before), animate=False, immediate=True, force=True)

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        self.following = round(new_value) >= self.max_scroll_y

    def line_at_top(self) -> int:
        return self._line_of(round(self.scroll_y))

    def line_at_bottom(self) -> int:
        return self._line_of(round(self.scroll_y) + self.scrollable_content_region.height - 1)

    def _line_of(self, row: int) -> int:
        return max(0, min(len(self.texts) - 1, bisect.bisect_right(self._starts, row) - 1))

    def show_line(self, index: int) -> None:
        """Scroll so the line is on screen, a third of the way down."""
        row = self._starts[index]
        top = max(0, row - self.scrollable_content_region.height // 3)
        self.scroll_to(y=top, animate=False, immediate=True, force=True)
        self.refresh()

    def set_search(self, pattern: re.Pattern | None, current: int | None) -> None:
        changed = {self.current, current}
        if (pattern.pattern if pattern else None) != (self.search.pattern if self.search else None):
            changed |= {i for i, text in enumerate(self.texts)
                        if any(p is not None and p.search(text) for p in (pattern, self.search))}
        self.search, self.current = pattern, current
        for index in changed - {None}:
            self._strips[index] = None
        self._layout()
        self.refresh()

    def set_wrap(self, wrap: bool) -> None:
        self.wrap = wrap
        self._strips = [None] * len(self.texts)
        self.scroll_to(x=0, animate=False, immediate=True, force=True)
        self._layout()
        self.refresh()

    # --- drawing ---------------------------------------------------------------------------------

    def on_resize(self) -> None:
        width = self.scrollable_content_region.width
        if width != self._width and self.wrap:
            self._strips = [None] * len(self.texts)
        self._layout()

    def _layout(self) -> None:
        self._width = self.scrollable_content_region.width
        if not self._width:
            return
        starts, row, widest = [0], 0, 0
        for index in range(len(self.texts)):
            strips = self._draw(index)
            row += len(strips)
            starts.append(row)
            widest = max(widest, strips[0].cell_length)
        self._starts = starts
        self.virtual_size = Size(self._width if self.wrap else widest, row)
        if self.following:
            self.scroll_to(y=self.max_scroll_y, animate=False, immediate=True, force=True)
        self.refresh()

    def _draw(self, index: int) -> list[Strip]:
        strips = self._strips[index]
        if strips is not None:
            return strips
        stamp, text = self.stamps[index], self.styled(self.texts[index])
        if self.search is not None:
            text.highlight_regex(self.search, CURRENT if index == self.current else MATCH)
        indent = len(stamp) + 1 if stamp else 0
        console = self.app.console
        options = console.options
        if self.wrap:
            options = options.update_width(max(10, self._width - indent))
        else:
            options = options.update(no_wrap=True, overflow="ignore").update_width(max(1, text.cell_len))
        lines = Segment.split_lines(console.render(text, options)) if text.plain else [[]]
        head = [Segment(stamp + " ", Style(dim=True))] if stamp else []
        strips = []
        for number, line in enumerate(lines):
            segments = head if number == 0 else ([Segment(" " * indent)] if indent else [])
            strips.append(Strip([*segments, *line]))
        strips = strips or [Strip(head)]
        self._strips[index] = strips
        return strips

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        row = scroll_y + y
        width = self.scrollable_content_region.width
        if row >= self._starts[-1] or not self.texts:
            return Strip.blank(width, self.rich_style)
        index = bisect.bisect_right(self._starts, row) - 1
        strip = self._draw(index)[row - self._starts[index]]
        return strip.crop_extend(scroll_x, scroll_x + width, self.rich_style).apply_style(self.rich_style)
