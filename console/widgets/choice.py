"""A one-line choice among a few values: `< STARTTLS >`, changed with space, enter or the arrows.

Textual's Checkbox, Switch and Select draw half and eighth blocks that the Linux
console font does not have; this draws only ASCII.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rich.text import Text
from textual.binding import Binding
from textual.message import Message
from textual.reactive import reactive
from textual.widget import Widget


class Choice(Widget, can_focus=True):
    BINDINGS = [
        Binding("space,enter,right", "step(1)", "Next", show=False),
        Binding("left", "step(-1)", "Previous", show=False),
    ]

    index: reactive[int] = reactive(0)

    @dataclass
    class Changed(Message):
        choice: Choice
        value: Any

        @property
        def control(self) -> Choice:
            return self.choice

    def __init__(self, options: list[tuple[Any, str]], value: Any = None, *, id: str | None = None,
                 classes: str | None = None):
        super().__init__(id=id, classes=classes)
        self.options = list(options)
        self.set_reactive(Choice.index, self._index_of(value))

    def _index_of(self, value: Any) -> int:
        for index, (option, _) in enumerate(self.options):
            if option == value and type(option) is type(value):
                return index
        return 0

    @property
    def value(self) -> Any:
        return self.options[self.index][0]

    @value.setter
    def value(self, value: Any) -> None:
        self.index = self._index_of(value)

    def render(self) -> Text:
        label = self.options[self.index][1]
        return Text(f"< {label} >")

    def watch_index(self) -> None:
        self.post_message(self.Changed(self, self.value))

    def action_step(self, delta: int) -> None:
        if not self.disabled:
            self.index = (self.index + delta) % len(self.options)

    def on_click(self) -> None:
        self.action_step(1)

    def on_focus(self) -> None:
        self.refresh()

    def on_blur(self) -> None:
        self.refresh()
