"""One entry of the TLS policy table (mta.tls_policy): add, change or remove it.

A change goes the way of every change of the MTA settings: the running section
(io.postern.Config.Get) with the entry put in, checked by the relay
(io.postern.Config.Validate), then applied with io.postern.Config.Apply as the MTA
screen applies it (console.mta_form.payload). The relay's own problem lines are shown
under the field they name; a refused change changes nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, Static

from relay.config import MTA_FIELDS, TLS_LEVELS, check_policy_domain
from relay.control.errors import explain

from .. import mta_form
from ..relay_link import RELAY_ERRORS, RelayLink
from ..tls_words import LEVELS
from ..widgets.choice import Choice

ENTRY_FIELDS = {spec.name: spec for spec in next(f for f in MTA_FIELDS if f.name == "tls_policy").entry.fields}
FORM_FIELDS = ("domain", "level", "match", "ca_file")
DOMAIN_HELP = "a domain (partner.org), or .partner.org for every domain below it"


@dataclass
class Outcome:
    """What became of a change: `applied` says where it was saved; else `problems` (the relay's lines,
    each naming its field) and `words` (the refusal, or why the relay could not be asked)."""

    applied: str = ""
    problems: list[str] = field(default_factory=list)
    words: str = ""


def entry_value(level: str, match: list[str], ca_file: str) -> Any:
    """As an admin writes it in the file: the level alone (`partner.org: secure`) when that is all."""
    if not match and not ca_file:
        return level
    value: dict = {"level": level}
    if match:
        value["match"] = match
    if ca_file:
        value["ca_file"] = ca_file
    return value


def entry_fields(value: Any) -> tuple[str, list[str], str]:
    """(level, match, ca_file) of an entry as Config.Get or the file has it."""
    if isinstance(value, str):
        return value, [], ""
    if isinstance(value, dict):
        return value.get("level", "may"), list(value.get("match") or []), value.get("ca_file") or ""
    return "may", [], ""


async def put_entry(link: RelayLink, key: str, entry: Any, replaces: str = "") -> Outcome:
    """Put the entry for `key` in force (entry None: take it out; `replaces`: the key it had before)."""
    return await apply_change(link, lambda running: mta_form.with_tls_policy(running, key, entry, replaces))


async def apply_change(link: RelayLink, change: Callable[[dict], dict]) -> Outcome:
    """Put `change(running mta section)` in force: checked by the relay (Config.Validate), then applied
    (Config.Apply) as the MTA screen applies it; refused, nothing changes. Other screens' entries go this way too."""
    try:
        running = (await link.call("io.postern.Config.Get"))["mta"]
        section = change(running)
        problems = (await link.call("io.postern.Config.Validate", mta=section))["problems"]
        if problems:
            return Outcome(problems=problems, words="the relay found problems")
        config, problems = mta_form.validate(section)
        if problems:  # the relay took it: a console older than its relay would see this
            return Outcome(problems=problems, words="this console cannot read the result")
        if section == running:
            return Outcome(applied="nothing to change: the relay runs with it already")
        answer = await link.call("io.postern.Config.Apply", mta=mta_form.payload(section, config))
    except RELAY_ERRORS as error:
        return Outcome(problems=mta_form.refused_problems(error), words=explain(error))
    return Outcome(applied=f"saved to {answer['path']} (version {answer['version']})")


def place(problem: str, key: str) -> tuple[str, str]:
    """(form field, words) of a relay problem line about the entry `key`: 'mta.tls_policy.partner.org.match[1]:
    ...' -> ('match', 'name 2: ...'); a line about anything else -> ('', the line)."""
    prefix = f"mta.tls_policy.{key}"
    if not problem.startswith(prefix):
        return "", problem
    found = re.fullmatch(r"(?:\.(level|match|ca_file))?(?:\[(\d+)\])?\s*:\s*(.*)", problem[len(prefix):], re.S)
    if not found:
        return "", problem
    name, index, words = found.groups()
    if index is not None:
        words = f"name {int(index) + 1}: {words}"
    return name or "level", words


class EntryScreen(ModalScreen[str | None]):
    """The form for one entry; dismissed with the destination once the relay runs with the change, else None."""

    BINDINGS = [
        Binding("ctrl+s", "apply", "Apply", id="tls.entry.apply"),
        Binding("escape", "cancel", "Cancel", id="tls.entry.cancel"),
        Binding("down", "app.focus_next", "Next field", show=False),
        Binding("up", "app.focus_previous", "Previous field", show=False),
    ]
    CSS_PATH = "../styles/transport.tcss"

    def __init__(self, key: str = "", value: Any = None):
        super().__init__()
        self.key = key  # "" for a new entry
        self.level, self.match, self.ca_file = entry_fields(value) if value is not None else ("verify", [], "")
        self.problems: dict[str, list[str]] = {}
        self.busy = False

    def compose(self) -> ComposeResult:
        with Vertical(id="entry-dialog"):
            title = f"TLS policy entry for {self.key}" if self.key else "A new TLS policy entry"
            yield Static(title, classes="title")
            yield Horizontal(Label("Destination", classes="entry-label"),
                             Input(self.key, id="entry-domain", compact=True, placeholder="partner.org"),
                             classes="entry-line")
            yield Static(id="note-domain", classes="entry-note")
            yield Horizontal(Label("Level", classes="entry-label"),
                             Choice([(level, level) for level in TLS_LEVELS], self.level, id="entry-level"),
                             classes="entry-line")
            yield Static(id="note-level", classes="entry-note")
            yield Horizontal(Label("Match", classes="entry-label"),
                             Input(", ".join(self.match), id="entry-match", compact=True,
                                   placeholder="mx.partner.org, .partner.org"), classes="entry-line")
            yield Static(id="note-match", classes="entry-note")
            yield Horizontal(Label("CA file", classes="entry-label"),
                             Input(self.ca_file, id="entry-ca_file", compact=True,
                                   placeholder="/etc/postern/partner-ca.pem"), classes="entry-line")
            yield Static(id="note-ca_file", classes="entry-note")
            yield Static(id="entry-notice")
            yield Static("[b]ctrl+s[/b] apply    [b]Esc[/b] cancel    [b]space[/b] next level", id="entry-keys")

    def on_mount(self) -> None:
        self.show_notes()
        self.query_one("#entry-level" if self.key else "#entry-domain").focus()

    def help_of(self, name: str) -> str:
        if name == "domain":
            return DOMAIN_HELP
        if name == "level":
            return LEVELS.get(self.query_one("#entry-level", Choice).value, "")
        if name == "match":
            return "names the certificate may carry (verify, secure), separated by commas; empty: see the level"
        return ENTRY_FIELDS[name].help

    def show_notes(self) -> None:
        for name in FORM_FIELDS:
            text = Text(self.help_of(name), style="dim")
            for words in self.problems.get(name, []):
                text.append("\n" + words, style="bold red")
            self.query_one(f"#note-{name}", Static).update(text)
            self.query_one(f"#entry-{name}").set_class(bool(self.problems.get(name)), "-invalid")

    def on_choice_changed(self, event: Choice.Changed) -> None:
        self.show_notes()

    def notice(self, text: str, style: str = "") -> None:
        self.query_one("#entry-notice", Static).update(Text(text, style=style))

    def problem_text(self, name: str) -> str:
        """The problems shown under a field (for tests)."""
        return "\n".join(self.problems.get(name, []))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_apply()

    def action_cancel(self) -> None:
        self.workers.cancel_all()
        self.dismiss(None)

    def action_apply(self) -> None:
        if self.busy:
            return
        text = self.query_one("#entry-domain", Input).value.strip()
        try:
            key = check_policy_domain(text) if text else ""
        except ValueError as error:
            self.show({"domain": [str(error)]}, "Not applied: correct the destination.")
            return
        if not key:
            self.show({"domain": ["required: the domain this entry is for"]}, "Not applied: name the destination.")
            return
        level = self.query_one("#entry-level", Choice).value
        match = [name for name in re.split(r"[\s,]+", self.query_one("#entry-match", Input).value) if name]
        ca_file = self.query_one("#entry-ca_file", Input).value.strip()
        self.apply(key, entry_value(level, match, ca_file))

    def show(self, problems: dict[str, list[str]], words: str) -> None:
        self.problems = problems
        self.show_notes()
        self.notice(words, "bold red")
        for name in FORM_FIELDS:
            if problems.get(name):
                self.query_one(f"#entry-{name}").focus()
                break

    @work(group="tls-entry", exclusive=True)
    async def apply(self, key: str, entry: Any) -> None:
        self.busy = True
        self.notice("Checking with the relay, then applying...")
        try:
            outcome = await put_entry(self.app.link, key, entry, replaces=self.key)
        finally:
            self.busy = False
        if outcome.applied:
            self.app.notify(f"TLS policy for {key}: {outcome.applied}.", title="Transport security")
            self.dismiss(key)
            return
        placed: dict[str, list[str]] = {}
        elsewhere = []
        for problem in outcome.problems:
            name, words = place(problem, key)
            if name:
                placed.setdefault(name, []).append(words)
            else:
                elsewhere.append(words)
        words = "Not applied, nothing changed"
        if placed:
            words += ": see the problems in red at the fields"
        else:
            words += f": {outcome.words}"
        if elsewhere:
            words += ". Also: " + "; ".join(elsewhere)
        self.show(placed, words)
