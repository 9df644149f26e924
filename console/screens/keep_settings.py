"""The safe-apply countdown: "Keep these settings? Reverting in N s".

The one keep-or-revert dialog, of the Network screen and of the wizard's network step. Shown
while a network change (`appliance.network.change`) is in force but not yet kept. Enter keeps
it; any other key, or the deadline, restores the previous settings: an admin whose session the
new address cut off does nothing and gets the old one back. `postern-appliance confirm` from
another shell keeps it too (the screen sees the change as confirmed and closes). Anything that
covers the countdown (the command palette) counts as another key: the settings are restored.
"""

from __future__ import annotations

import asyncio
import signal
from typing import TYPE_CHECKING, Callable

from rich.text import Text

from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static

if TYPE_CHECKING:
    from appliance.network.change import Change


def listen_for_confirm() -> None:
    """`postern-appliance confirm` wakes the process that started the change with SIGUSR1, whose default
    action ends a process: from the first change on, the console takes it (and does nothing: the
    countdown sees the change as confirmed). It stays taken, as a confirm may come just after the answer."""
    try:
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, lambda: None)
    except (NotImplementedError, RuntimeError, ValueError):
        pass


class KeepSettingsScreen(ModalScreen[None]):
    BINDINGS = [Binding("enter", "keep", "Keep", id="network.keep")]

    def __init__(self, pending: Change, summary: list[str], decided: Callable[[bool], None]):
        super().__init__()
        self.pending = pending
        self.summary = summary
        self.decided = decided  # called once: True keeps the change, False restores the previous settings
        self.answered = False
        self.closed = False

    def compose(self) -> ComposeResult:
        with Vertical(id="keep-dialog"):
            yield Static(Text("\n".join(self.summary)), id="keep-summary")
            yield Static(id="keep-countdown")
            yield Static("[b]Enter[/b] keeps them    any other key restores the previous settings now",
                         id="keep-keys")

    def on_mount(self) -> None:
        listen_for_confirm()
        self.tick()
        self.set_interval(0.5, self.tick)

    def tick(self) -> None:
        if self.answered:
            return
        if self.pending.confirmed:
            self.answer(True)
            return
        left = self.pending.remaining()
        if left <= 0:
            self.answer(False)
            return
        self.query_one("#keep-countdown", Static).update(
            Text(f"Keep these settings? Reverting in {left:.0f} s", style="bold"))

    def answer(self, keep: bool) -> None:
        if self.answered:
            return
        self.answered = True
        self.decided(keep or self.pending.confirmed)
        if self.app.screen is self:  # not while the palette covers it: dismiss() closes the top screen
            self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.dismiss()

    def on_screen_suspend(self) -> None:
        self.answer(False)

    def on_screen_resume(self) -> None:
        if self.answered:
            self.close()

    def action_keep(self) -> None:
        self.answer(True)

    def on_key(self, event: events.Key) -> None:
        event.stop()
        event.prevent_default()
        if event.key == "enter":
            self.answer(True)
        else:
            self.answer(False)
