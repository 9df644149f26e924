"""A yes/no question before anything that cannot be undone."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static


# Each queue action asks first; `what` is "message ID", "3 messages" or "all 12 messages matching ...".
QUESTIONS = {
    "Delete": "Delete {what}? Nobody is notified and it cannot be undone.",
    "Hold": "Hold {what}? Held mail is not delivered until released.",
    "Release": "Release {what} from hold and try delivery now?",
    "Requeue": "Requeue {what} and try delivery now?",
}


class ConfirmScreen(ModalScreen[bool]):
    BINDINGS = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n,escape", "answer(False)", "No"),
    ]

    def __init__(self, question: str):
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(self.question, id="question")
            yield Static("[b]y[/b] yes    [b]n[/b] / [b]Esc[/b] no", id="answer-keys")

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)
