"""MTA settings: every field of the relay's mta section, checked as you type, applied after a diff.

The form comes from data (console.mta_form): the running section from
io.postern.Config.Get and relay.config.MTA_FIELDS, so keys added to the relay
appear by themselves. Each field has a line of help, and the problems
relay.config.parse_mta finds are shown under the field they name. Ctrl+S shows
what will change (old -> new) and, once confirmed, applies it with
io.postern.Config.Apply; the relay's own refusals are shown at the fields too.
"""

from __future__ import annotations

import asyncio
from typing import Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.timer import Timer
from textual.widget import Widget
from textual.widgets import Footer, Input, Label, Static

from appliance.store import Change, diff_documents
from relay.control import errors

from .. import mta_form
from ..messages import RelayStatus
from ..relay_link import RELAY_ERRORS
from ..widgets.choice import Choice
from ..widgets.status_line import StatusLine
from ..widgets.text_box import TextBox
from .confirm import ConfirmScreen

CHECK_DELAY = 0.25  # seconds of quiet typing before the form is checked again
MAX_LIST_LINES = 6
MAX_YAML_LINES = 8


class ChangesScreen(ModalScreen[bool]):
    """What Apply will change, old -> new, and the question."""

    BINDINGS = [
        Binding("y", "answer(True)", "Apply", id="mta.changes.apply"),
        Binding("n,escape", "answer(False)", "Cancel", id="mta.changes.cancel"),
    ]

    def __init__(self, lines: list[str]):
        super().__init__()
        self.lines = lines

    def compose(self) -> ComposeResult:
        count = sum(1 for line in self.lines if not line.startswith("  "))
        with Vertical(id="changes-dialog"):
            yield Static(f"Apply {count} change{'s' if count != 1 else ''} to the running relay?", classes="title")
            with VerticalScroll(id="changes-list"):
                yield Static(Text("\n".join(self.lines)), id="changes-text")
            yield Static("[b]y[/b] apply    [b]n[/b] / [b]Esc[/b] keep editing", id="answer-keys")

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)


class FormScroll(VerticalScroll):
    """The form: Up and Down go from field to field (a list field keeps them for its lines)."""

    BINDINGS = [
        Binding("down", "app.focus_next", "Next field", id="mta.next", show=False),
        Binding("up", "app.focus_previous", "Previous field", id="mta.previous", show=False),
    ]


def editor(field: mta_form.FormField) -> Widget:
    if field.kind == "bool":
        return Choice([(False, "no"), (True, "yes")], id=field.dom_id)
    if field.kind == "choice":
        return Choice([(choice, str(choice)) for choice in field.choices], id=field.dom_id)
    if field.kind in ("list", "yaml"):
        return TextBox(id=field.dom_id, compact=True, classes=f"mta-{field.kind}", soft_wrap=False)
    return Input(id=field.dom_id, compact=True, select_on_focus=False)  # a key typed after Tab adds, never replaces


def field_lines(field: mta_form.FormField) -> list[Widget]:
    """A line with the label and the editor; under it the help (and the problem, if any)."""
    return [Horizontal(Label(f"  {field.label}", id=f"label-{field.dom_id}", classes="mta-label"), editor(field),
                       classes="mta-line"),
            Static(field.help, id=f"note-{field.dom_id}", classes="mta-note")]


def note(help_text: str, problems: list[str]) -> Text:
    text = Text(help_text, style="dim")
    for words in problems:
        text.append("\n" + words, style="bold red")
    return text


class MtaScreen(Screen):
    BINDINGS = [
        Binding("ctrl+s", "apply", "Apply", id="mta.apply"),
        Binding("ctrl+r", "reload", "Reload", id="mta.reload"),
        Binding("escape", "back", "Back", id="mta.back"),
    ]

    def __init__(self):
        super().__init__()
        self.running: dict | None = None
        self.path = ""
        self.groups: list[mta_form.Group] = []
        self.fields: dict[str, mta_form.FormField] = {}
        self.problems: list[str] = []
        self.changes: list[Change] = []
        self.section: dict = {}
        self.config = None
        self._check_timer: Timer | None = None
        self._filling = False
        self.unplaced: list[str] = []
        self.errors: dict[str, list[str]] = {}
        self._load_lock = asyncio.Lock()
        self.applying = False

    def compose(self) -> ComposeResult:
        yield StatusLine("MTA settings")
        yield Static("Loading the running settings...", id="mta-notice")
        yield FormScroll(id="mta-form")
        yield Footer(compact=True)

    def on_screen_resume(self) -> None:
        if self.running is None:
            self.load()

    def on_relay_status(self, message: RelayStatus) -> None:
        if message.status is not None and self.running is None:
            self.load()
        elif "config" in message.changed and self.running is not None and not self.applying:
            if self.changes or self.problems:
                self.notice("The relay's settings were changed elsewhere since you loaded them: "
                            "ctrl+r loads them (your edits are lost).", "yellow")
            else:
                self.load()

    def notice(self, text: str | Text, style: str = "") -> None:
        self.query_one("#mta-notice", Static).update(Text(text, style=style) if isinstance(text, str) else text)

    # --- loading ---------------------------------------------------------------------------------

    @work(group="mta-load")
    async def load(self, force: bool = False) -> None:
        """Get the running settings; unless forced, a form showing them already is left alone."""
        async with self._load_lock:  # one load at a time: a form half rebuilt is never seen
            await self._load(force)

    async def _load(self, force: bool) -> None:
        answer = await self.app.link.attempt("io.postern.Config.Get", self._load_failed)
        if answer is None:
            return
        if not force and answer["mta"] == self.running and answer.get("path", "") == self.path:
            return  # nothing new: the form and what it says stay as they are
        await self.show_running(answer["mta"], answer.get("path", ""))

    def _load_failed(self, words: str) -> None:
        if self.running is None:
            self.notice(f"{words}. The settings appear here once the relay answers.", "red")
        else:
            self.notice(f"Could not load the settings again: {words}", "red")

    async def show_running(self, running: dict, path: str) -> None:
        groups = mta_form.build(running)
        form = self.query_one("#mta-form", VerticalScroll)
        if mta_form.shape(groups) != mta_form.shape(self.groups):
            await form.remove_children()
            await form.mount_all(self._compose_form(groups))
            self.errors = {}  # the new widgets show no problem yet
        self.running, self.path, self.groups = running, path, groups
        self.fields = {field.key: field for field in mta_form.fields_of(groups)}
        self._filling = True
        for field in self.fields.values():
            self._set_widget(field, mta_form.shown(field, self._running_value(field)))
        self._filling = False
        self.check()
        self.notice(f"The running settings ({path}). Edit, then ctrl+s shows the changes and applies them.")
        if not any(widget.has_focus for widget in form.query("*")) and self.fields:
            self.query_one(f"#{next(iter(self.fields.values())).dom_id}").focus()

    def _compose_form(self, groups: list[mta_form.Group]) -> list[Widget]:
        widgets: list[Widget] = []
        for group in groups:
            cells = [cell for field in group.fields for cell in field_lines(field)]
            if group.path:
                heading = Static(self._heading(group, []), id=f"note-{mta_form.dom_id(group.key)}",
                                 classes="mta-heading")
                widgets.append(Vertical(heading, *cells, classes="mta-group mta-section"))
            else:
                widgets.extend(cells)
        return widgets

    @staticmethod
    def _heading(group: mta_form.Group, problems: list[str]) -> Text:
        text = Text(group.title, style="bold")
        text.append("\n")
        text.append_text(note(group.help, problems))
        return text

    def _running_value(self, field: mta_form.FormField) -> Any:
        value: Any = self.running
        for part in field.path:
            value = value.get(part) if isinstance(value, dict) else None
        return value

    def _set_widget(self, field: mta_form.FormField, value: Any) -> None:
        widget = self.query_one(f"#{field.dom_id}")
        if isinstance(widget, TextBox):
            widget.load_text(value)
            self._fit(widget, field)
        else:
            widget.value = value

    def _fit(self, area: TextBox, field: mta_form.FormField) -> None:
        most = MAX_YAML_LINES if field.kind == "yaml" else MAX_LIST_LINES
        area.styles.height = max(1, min(area.document.line_count, most))

    def raw_values(self) -> dict[str, Any]:
        raws = {}
        for key, field in self.fields.items():
            widget = self.query_one(f"#{field.dom_id}")
            raws[key] = widget.text if isinstance(widget, TextBox) else widget.value
        return raws

    # --- checking as you type ----------------------------------------------------------------------

    def on_input_changed(self, event: Input.Changed) -> None:
        self._edited(event.input)

    def on_text_area_changed(self, event: TextBox.Changed) -> None:
        field = self._field_of(event.text_area)
        if field:
            self._fit(event.text_area, field)
        self._edited(event.text_area)

    def on_choice_changed(self, event: Choice.Changed) -> None:
        self._edited(event.choice)

    def _field_of(self, widget: Widget) -> mta_form.FormField | None:
        return next((f for f in self.fields.values() if f.dom_id == widget.id), None)

    def _edited(self, widget: Widget) -> None:
        if self._filling or self.running is None or self._field_of(widget) is None:
            return
        if self._check_timer is not None:
            self._check_timer.stop()
        self._check_timer = self.set_timer(CHECK_DELAY, self.check)

    def check(self) -> None:
        """Check the whole form with relay.config.parse_mta; show each problem at its field."""
        if self.running is None:
            return
        settled_before = not self.problems and not self.changes
        section, unreadable = mta_form.proposed(self.running, self.groups, self.raw_values())
        config, problems = mta_form.validate(section)
        self.section, self.config = section, config
        self.problems = unreadable + problems
        self.show_problems(self.problems)
        if self.problems:
            self.changes = []
            count = len(self.problems)
            elsewhere = f" Also: {'; '.join(self.unplaced)}" if self.unplaced else ""
            self.notice(f"{count} problem{'s' if count != 1 else ''}, shown in red at the fields: "
                        f"nothing can be applied until they are fixed.{elsewhere}", "red")
        else:
            self.changes = diff_documents(self.running, mta_form.normalized(section, config))
            count = len(self.changes)
            if count or not settled_before:  # a form that stays as it was keeps its notice ("Applied ...")
                self.notice(f"{count} change{'s' if count != 1 else ''}: ctrl+s shows them and applies." if count
                            else f"No changes to the running settings ({self.path}).", "bold" if count else "")
        if self.changes or self.problems:
            self.app.unsaved["mta"] = "MTA settings"
        else:
            self.app.unsaved.pop("mta", None)
        changed = {change.key for change in self.changes}
        for field in self.fields.values():
            mark = "*" if field.key in changed or any(c.startswith(field.key + ".") for c in changed) else " "
            self.query_one(f"#label-{field.dom_id}", Label).update(f"{mark} {field.label}")

    def show_problems(self, problems: list[str]) -> None:
        keys = set(self.fields) | {group.key for group in self.groups if group.path}
        placed: dict[str, list[str]] = {}
        for problem in problems:
            key, words = mta_form.place(problem, keys)
            placed.setdefault(key, []).append(words)
        for field in self.fields.values():
            words = placed.get(field.key, [])
            if words != self.errors.get(field.key, []):
                self.query_one(f"#note-{field.dom_id}", Static).update(note(field.help, words))
            self.query_one(f"#{field.dom_id}").set_class(bool(words), "-invalid")
        for group in self.groups:
            words = placed.get(group.key, [])
            if group.path and words != self.errors.get(group.key, []):
                self.query_one(f"#note-{mta_form.dom_id(group.key)}", Static).update(self._heading(group, words))
        self.errors = placed
        self.unplaced = placed.get("", [])

    def error_text(self, key: str) -> str:
        """The problem shown under a field or section (for tests and screen readers)."""
        return "\n".join(self.errors.get(key, []))

    # --- applying --------------------------------------------------------------------------------

    def action_apply(self) -> None:
        if self.running is None:
            self.notice("Nothing to apply: the settings are not loaded (is the relay running?).", "red")
            return
        if self._check_timer is not None:
            self._check_timer.stop()
        self.check()
        if self.problems:
            self._focus_first_problem()
            self.notice(f"Not applied: fix the {len(self.problems)} problem(s) shown in red first.", "red")
            return
        if not self.changes:
            self.notice("No changes to apply.")
            return
        lines = [line for change in self.changes
                 for line in mta_form.describe(change, self._kind(change.key))]
        payload = mta_form.payload(self.section, self.config)

        def answered(yes: bool | None) -> None:
            if yes:
                self.apply(payload)
            else:
                self.notice("Not applied: your edits are kept.")

        self.app.push_screen(ChangesScreen(lines), answered)

    def _kind(self, key: str) -> str:
        field = self.fields.get(key)
        return field.kind if field else ""

    def _focus_first_problem(self) -> None:
        keys = set(self.fields)
        for problem in self.problems:
            key, _ = mta_form.place(problem, keys | {g.key for g in self.groups if g.path})
            field = self.fields.get(key) or next((f for f in self.fields.values() if f.key.startswith(key + ".")),
                                                 None) if key else None
            if field:
                widget = self.query_one(f"#{field.dom_id}")
                widget.focus()
                widget.scroll_visible()
                return

    @work(group="mta-apply", exclusive=True)
    async def apply(self, payload: dict) -> None:
        self.applying = True
        try:
            await self._apply(payload)
        finally:
            self.applying = False

    async def _apply(self, payload: dict) -> None:
        self.notice("Applying...")
        try:
            answer = await self.app.link.call("io.postern.Config.Apply", mta=payload)
        except RELAY_ERRORS as error:  # the one call that needs the error itself: problems go to their fields
            self.refused(error)
            return
        fresh = await self.app.link.attempt("io.postern.Config.Get", lambda words: None)
        if fresh is not None:
            async with self._load_lock:
                await self.show_running(fresh["mta"], fresh.get("path", ""))
        self.notice(f"Applied and in force. Saved to {answer['path']} (version {answer['version']}).", "green")
        self.notify("The relay runs with the new settings.", title="MTA settings")

    def refused(self, error: Exception) -> None:
        if isinstance(error, errors.ControlError) and error.name == errors.INVALID_CONFIG:
            self.problems = mta_form.refused_problems(error)
            self.show_problems(self.problems)
            self._focus_first_problem()
            self.notice("Not applied: the relay found problems, shown in red at the fields"
                        + (f": {'; '.join(self.unplaced)}" if self.unplaced else "."), "red")
            return
        words = errors.explain(error)
        if isinstance(error, errors.ControlError) and error.name == errors.APPLY_FAILED:
            # A reload refusal names its field: "mta.listen: cannot listen on ...".
            words = error.parameters.get("reason", "")
            self.show_problems(mta_form.refused_problems(error))
        self.notice(f"Not applied, nothing changed: {words}", "red")

    # --- other keys --------------------------------------------------------------------------------

    def action_reload(self) -> None:
        if self.changes or self.problems:
            def answered(yes: bool | None) -> None:
                if yes:
                    self.load(force=True)

            self.app.push_screen(ConfirmScreen("Load the running settings again? Your edits are lost."), answered)
        else:
            self.load(force=True)

    def action_back(self) -> None:
        self.app.switch_mode("dashboard")
