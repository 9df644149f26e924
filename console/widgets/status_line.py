"""The line at the top of every screen: where you are, and whether the relay is running.

Its colours are bright on the dark blue of the line (the Linux console has no bright backgrounds):
a relay that is not running is white on red."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static


def relay_summary(status: dict | None, problem: str, short: bool = False) -> Text:
    """The relay in a line; `short` leaves out the reason it cannot be reached, and its hostname."""
    if status is None:
        problem = problem or "Relay: not running"
        return Text(problem.split(" (")[0] if short else problem, style="bold bright_white on red")
    queue = status["queue"]
    text = Text()
    text.append("Relay: running", style="bold bright_green")
    text.append(f"  queue {queue['total']}" if short else f"  {status['hostname']}  queue {queue['total']}")
    if queue["deferred"]:
        text.append(f"  deferred {queue['deferred']}", style="bright_yellow")
    if queue["hold"]:
        text.append(f"  hold {queue['hold']}", style="bright_magenta")
    return text


class StatusLine(Static):
    def __init__(self, title: str):
        super().__init__(id="status-line")
        self.title_text = title

    def on_mount(self) -> None:
        self.watch(self.app, "relay_status", self._refresh_line)
        self.watch(self.app, "relay_problem", self._refresh_line)

    def _refresh_line(self, _=None) -> None:
        self.refresh()

    def line(self, short: bool = False) -> Text:
        text = Text(f" Postern | {self.title_text} | ", style="bold")
        text.append_text(relay_summary(self.app.relay_status, self.app.relay_problem, short))
        return text

    def render(self) -> Text:
        """The whole line where it fits (80 columns hold most); the short one where it would be cut."""
        text = self.line()
        width = self.content_size.width
        return self.line(short=True) if width and text.cell_len > width else text
