"""The locked console: what the appliance is and how it is doing, and the admin's password.

Shown on the VM's screen and serial port after setup, at start, after F12 (Lock) and after
15 minutes without a key. It reads only what needs no password (the name, the addresses, the
relay's state and queue from the control socket, the SSH host key fingerprints) and changes
nothing. The password goes to PAM in a thread worker; after a wrong one the prompt waits
(FAIL_DELAY) before the next try, says only "wrong password", and the failure is logged with
the terminal's name.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Input, Static

from .. import login
from ..widgets.status_line import relay_summary


@dataclass
class FactsRead(Message):
    facts: login.LockFacts


@dataclass
class PasswordChecked(Message):
    ok: bool
    started: float


class LockScreen(Screen[None]):
    """Dismissed (with None) once the password is right."""

    AUTO_FOCUS = "#lock-password"
    BINDINGS = []
    facts: login.LockFacts | None = None

    def __init__(self, user: str, fail_delay: float = login.FAIL_DELAY):
        super().__init__()
        self.user = user
        self.fail_delay = fail_delay

    def compose(self) -> ComposeResult:
        yield Static(Text(" Postern mail gateway | locked", style="bold"), id="status-line")
        status = Static("Reading...", id="lock-status", classes="panel")
        status.border_title = "This appliance"
        yield status
        yield Static(f"Password for {self.user} (to manage the appliance; then F11 System, s for a shell):",
                     id="lock-prompt")
        yield Input(password=True, id="lock-password", compact=True)
        yield Static("", id="lock-notice")

    def on_mount(self) -> None:
        self.watch(self.app, "relay_status", self.show_status)
        self.watch(self.app, "relay_problem", self.show_status)
        self.read_facts()
        self.set_interval(30, self.read_facts)

    @work(thread=True, exclusive=True, group="lock-facts", name="Reading the appliance", exit_on_error=False)
    def read_facts(self) -> None:
        self.post_message(FactsRead(login.lock_facts(getattr(self.app, "root", "/"))))

    def on_facts_read(self, message: FactsRead) -> None:
        self.facts = message.facts
        self.show_status()

    def show_status(self, _=None) -> None:
        text = Text()
        facts = self.facts
        rows = [("Name", facts.name if facts else "...")]
        addresses = facts.addresses if facts else []
        rows += [("Address", address) for address in addresses] or [("Address", "none" if facts else "...")]
        for label, value in rows:
            text.append(f"{label:<10}", style="dim")
            text.append(f"{value}\n")
        text.append_text(relay_summary(self.app.relay_status, self.app.relay_problem))
        text.append("\n")
        keys = facts.host_keys if facts else []
        if keys:
            text.append("SSH host keys\n", style="dim")
            for key in keys:
                text.append(f"  {key}\n")
        else:
            text.append(f"{'SSH':<10}", style="dim")
            text.append("no host keys yet\n" if facts else "...\n")
        text.rstrip()
        self.query_one("#lock-status", Static).update(text)

    # --- the password ---------------------------------------------------------------------------

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        field = self.query_one("#lock-password", Input)
        password = field.value
        field.value = ""
        field.disabled = True
        self.query_one("#lock-notice", Static).update("Checking...")
        self.check(password, time.monotonic())

    @work(thread=True, exclusive=True, group="lock-check", name="Checking the password", exit_on_error=False)
    def check(self, password: str, started: float) -> None:
        try:
            ok = login.check_password(self.user, password)
        except Exception:  # noqa: BLE001 -- PAM missing or broken: the console stays locked, said in words
            ok = False
        self.post_message(PasswordChecked(ok, started))

    def on_password_checked(self, message: PasswordChecked) -> None:
        if message.ok:
            self.dismiss(None)
            return
        wait = max(0.0, self.fail_delay - (time.monotonic() - message.started))
        self.set_timer(max(wait, 0.05), self.try_again)  # (a timer of 0 s is refused)

    def try_again(self) -> None:
        self.query_one("#lock-notice", Static).update(Text("Wrong password. Try again.", style="bold red"))
        field = self.query_one("#lock-password", Input)
        field.disabled = False
        field.focus()
