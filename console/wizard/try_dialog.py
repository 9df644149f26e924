"""Keep the new network settings? Asked after a safe apply; no answer in time restores the old ones."""

from __future__ import annotations

import time

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static


class TryScreen(ModalScreen[bool]):
    BINDINGS = [
        Binding("enter,y", "answer(True)", "Keep", id="wizard.try.keep"),
        Binding("escape,n", "answer(False)", "Restore", id="wizard.try.restore"),
    ]

    def __init__(self, deadline: float, summary: str):
        super().__init__()
        self.deadline = deadline
        self.summary = summary

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(self.summary, id="question")
            yield Static(id="countdown")
            yield Static("[b]Enter[/b] keep    [b]Esc[/b] restore the previous settings now", id="answer-keys")

    def on_mount(self) -> None:
        self.tick()
        self.set_interval(1, self.tick)

    def tick(self) -> None:
        left = self.deadline - time.time()
        if left <= 0:
            self.dismiss(False)
            return
        self.query_one("#countdown", Static).update(
            f"\nIf this console (or your SSH session) can no longer reach the appliance, do nothing: "
            f"the previous settings come back by themselves in {left:.0f} s.")

    def action_answer(self, keep: bool) -> None:
        self.dismiss(keep)
