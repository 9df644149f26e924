"""One step of the wizard: a screen that edits part of the draft and is left with Next or Back.

A step shows its title and why it asks, its fields, and below them the problems found
when Next was pressed, each naming its field. Next stores the fields into a copy of the
draft, keeps the problems of this step's fields (the same checks provisioning runs), and
only when there are none runs the step's own checks that need the network (`leave`), in a
worker, before the wizard moves on. Back keeps what was typed when it is valid.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widget import Widget
from textual.content import Content
from textual.widgets import Checkbox, Footer, Input, RadioButton, Static

from ..widgets.status_line import StatusLine
from .draft import Draft, field_of, reason_of

if TYPE_CHECKING:
    from .flow import SetupWizard

NEXT, BACK = "next", "back"


class StepScreen(Screen[str]):
    CSS_PATH = "../styles/wizard.tcss"
    NAME = ""
    TITLE = ""
    HELP = ""
    # field path prefix -> (widget id, label): a problem with that field is shown at that widget
    FIELDS: dict[str, tuple[str, str]] = {}
    BINDINGS = [
        Binding("ctrl+n", "next", "Next", id="wizard.next"),
        Binding("escape", "back", "Back", id="wizard.back"),
    ]

    def __init__(self, wizard: SetupWizard, number: int, total: int):
        super().__init__()
        self.wizard = wizard
        self.number = number
        self.total = total
        self.busy = False

    @property
    def draft(self) -> Draft:
        return self.wizard.draft

    def compose(self) -> ComposeResult:
        yield StatusLine(f"Setup {self.number}/{self.total}: {self.TITLE}")
        yield Static(self.help_text(), id="step-help")
        with VerticalScroll(id="step-body", can_focus=False):
            yield from self.compose_fields()
        yield Static(id="step-problems")
        yield Footer(compact=True)

    def help_text(self) -> str:
        return self.HELP

    def compose_fields(self) -> ComposeResult:
        return iter(())

    def on_mount(self) -> None:
        self.load(self.draft)
        self.call_after_refresh(self.focus_first)

    def focus_first(self) -> None:
        for widget in self.query("#step-body Input, #step-body RadioSet, #step-body Checkbox").results(Widget):
            if widget.focusable:
                widget.focus()
                return

    # --- what a step fills in ---

    def load(self, draft: Draft) -> None:
        """Put the draft's values into the fields."""

    def store(self, draft: Draft) -> None:
        """Put the fields' values into the draft."""

    def own_problems(self, draft: Draft) -> list[str]:
        """Problems with answers that only the wizard has (not in the seed)."""
        return []

    async def leave(self, draft: Draft) -> bool:
        """Checks and changes that need the network or the system, run in a worker; False stays here."""
        return True

    # --- Next and Back ---

    def action_next(self) -> None:
        if self.busy:
            return
        candidate = self.draft.copy()
        self.store(candidate)
        problems = self.own_problems(candidate) + candidate.problems_for(tuple(self.FIELDS), self.wizard.root)
        if problems:
            self.show_problems(problems)
            return
        self.show_problems([])
        self.busy = True
        self.run_worker(self._leave(candidate), group="wizard-step", exclusive=True)

    async def _leave(self, candidate: Draft) -> None:
        try:
            if await self.leave(candidate):
                self.wizard.draft = candidate
                self.dismiss(NEXT)
        finally:
            self.busy = False

    def action_back(self) -> None:
        if self.busy:
            return
        candidate = self.draft.copy()
        self.store(candidate)
        if not candidate.problems_for(tuple(self.FIELDS), self.wizard.root) and not self.own_problems(candidate):
            self.wizard.draft = candidate
        self.dismiss(BACK)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        """Enter moves to the next field; on the last one it means Next."""
        event.stop()
        inputs = [widget for widget in self.query("#step-body Input").results(Input) if widget.display]
        if event.input in inputs and event.input is not inputs[-1]:
            self.focus_next()
        else:
            self.action_next()

    # --- telling the admin ---

    def label_of(self, field: str) -> tuple[str, str]:
        for prefix, (widget_id, label) in self.FIELDS.items():
            if field.startswith(prefix):
                return widget_id, label
        return "", field

    def show_problems(self, problems: list[str]) -> None:
        for widget in self.query(".-problem"):
            widget.remove_class("-problem")
        text = Text()
        first = None
        for problem in problems:
            widget_id, label = self.label_of(field_of(problem))
            if widget_id:
                found = self.query(f"#{widget_id}")
                if found:
                    found.first().add_class("-problem")
                    first = first or found.first()
            text.append(f"{label}: ", style="bold")
            text.append(reason_of(problem) + "\n")
        area = self.query_one("#step-problems", Static)
        area.remove_class("-busy")
        text.rstrip()
        area.update(text)
        if first is not None:
            first.focus()

    def show_busy(self, message: str) -> None:
        area = self.query_one("#step-problems", Static)
        area.add_class("-busy")
        area.update(message)


class Tick(Checkbox):
    """A checkbox whose mark shows only when it is on: [X] or [ ], readable without colour."""

    @property
    def _button(self) -> Content:
        self.BUTTON_INNER = "X" if self.value else " "
        return super()._button


class Pick(RadioButton):
    """A radio button whose dot shows only when it is chosen: [●] or [ ]."""

    @property
    def _button(self) -> Content:
        self.BUTTON_INNER = "●" if self.value else " "
        return super()._button


def field_input(widget_id: str, label: str, value: str = "", placeholder: str = "", password: bool = False,
                classes: str = "") -> Input:
    """An input whose label is its border title: one row fewer than a label above it."""
    widget = Input(value, placeholder=placeholder, id=widget_id, password=password, classes=classes)
    widget.border_title = label
    return widget


def value_of(screen: Screen, widget_id: str) -> str:
    return screen.query_one(f"#{widget_id}", Input).value.strip()
