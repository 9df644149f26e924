"""System: the machine itself. Restart the relay, reboot and power off (each after a yes), the admin's shell,
and Debian's security updates: how the last run went, whether a reboot waits, U to switch them on or off.

Commands go through the appliance link's command runner (`systemctl restart postern-relay.service`,
`systemctl reboot`, `systemctl poweroff`), which the factory takes as an argument: the tests give it a
recorder. They act on the machine the console runs on, so they are refused when the console
works on another root directory (`make run`'s sandbox, `--root`): that machine is not the appliance. A shell suspends the console and gives the terminal to the admin's own login shell
(as root: through runuser, never root's shell; otherwise the user's $SHELL) until it exits.
The screen is reached only after the login, and never during first boot; --no-allow-shell
takes the shell away. The security updates' switch is a file (appliance.security_updates), so it acts
under the console's root: in the sandbox, on the sandbox's copy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.text import Text
from textual import work
from textual.app import ComposeResult, SuspendNotSupported
from textual.binding import Binding
from textual.message import Message
from textual.widgets import Footer, Static

from appliance import security_updates

from ..host import HostFacts, read_facts, uptime_text
from ..messages import HostFactsRead
from ..system.commands import CommandResult
from ..widgets.status_line import StatusLine
from .area import AreaScreen
from .confirm import ConfirmScreen

RELAY_UNIT = "postern-relay.service"

# verb: (key, title, command, question)
POWER = {
    "restart-relay": ("l", "Restart relay", ["systemctl", "restart", RELAY_UNIT],
                      "Restart the relay now? Mail in the queue is kept; connections in progress are cut, and "
                      "their clients send again later."),
    "reboot": ("r", "Reboot", ["systemctl", "reboot"],
               "Restart the appliance now? Mail in the queue is kept and delivered after the restart; "
               "this console and SSH sessions close for a minute or two."),
    "poweroff": ("p", "Power off", ["systemctl", "poweroff"],
                 "Power the appliance off now? No mail is received or delivered until someone "
                 "starts the virtual machine again."),
}


@dataclass
class CommandDone(Message):
    what: str
    result: CommandResult


@dataclass
class UpdatesSwitched(Message):
    on: bool
    path: str


def facts_text(facts: HostFacts) -> Text:
    text = Text()
    for label, value in (("Hostname", facts.hostname), ("System", facts.os_name), ("Kernel", facts.kernel),
                         ("Up", uptime_text(facts.uptime)), ("Logged in", str(facts.users))):
        text.append(f"{label:<11}", style="dim")
        text.append(f"{value}\n")
    updates = facts.security_updates
    if updates is not None:
        text.append(f"{'Security':<11}", style="dim")
        worrying = updates.reboot_required or not updates.enabled or updates.last_outcome.startswith("failed")
        text.append(security_updates.summary(updates), style="yellow" if worrying else "")
    text.rstrip()
    return text


class SystemScreen(AreaScreen):
    BINDINGS = [
        *(Binding(key, f"power('{verb}')", title, id=f"system.{verb}") for verb, (key, title, _, _) in POWER.items()),
        Binding("s", "shell", "Shell", id="system.shell"),
        Binding("u", "security_updates", "Security updates", id="system.security-updates", show=False),
        Binding("a", "authentication", "Mail authentication", id="system.authentication", show=False),
        Binding("i", "update", "Update", id="system.update", show=False),
        Binding("escape", "back", "Back", id="system.back"),
    ]
    updates: security_updates.SecurityUpdates | None = None  # as last read, for U to know which way to switch

    def compose(self) -> ComposeResult:
        yield StatusLine("System")
        facts = Static("Reading...", id="system-facts")
        facts.border_title = "This appliance"
        yield facts
        actions = Static(id="system-actions")
        actions.border_title = "Actions"
        yield actions
        yield Static(id="system-spacer")
        yield Static("", id=self.NOTICE_ID)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.show_actions()
        self.read_host()

    def on_screen_resume(self) -> None:
        self.read_host()

    def on_the_appliance(self) -> bool:
        """Whether this console runs on the appliance itself, not on a sandbox's root directory."""
        return self.appliance.root.resolve() == Path("/")

    def show_actions(self) -> None:
        allowed, why = self.appliance.commands.shell_permission()
        live = self.on_the_appliance()
        text = Text()
        for key, title, command, _ in POWER.values():
            text.append(f"{key} ", style="bold" if live else "dim")
            text.append(f"{title}: {' '.join(command) if live else 'not in the sandbox (--root)'}\n",
                        style="" if live else "dim")
        text.append("s ", style="bold" if allowed else "dim")
        text.append(f"Shell: {why}\n", style="" if allowed else "dim")
        text.append("u ", style="bold")
        text.append("Security updates: switch Debian's automatic security updates on or off\n")
        text.append("a ", style="bold")
        text.append("Mail authentication: DKIM keys, DNS records, inbound checks, Microsoft 365\n")
        text.append("i ", style="bold")
        text.append("Update Postern: install a signed bundle, or return to the previous release")
        self.query_one("#system-actions", Static).update(text)

    @work(thread=True, exclusive=True, group="system-facts", name="Reading the system", exit_on_error=False)
    def read_host(self) -> None:
        facts = read_facts()
        facts.security_updates = security_updates.read_state(self.appliance.root)
        self.post_message(HostFactsRead(facts))

    def on_host_facts_read(self, message: HostFactsRead) -> None:
        self.updates = message.facts.security_updates
        self.query_one("#system-facts", Static).update(facts_text(message.facts))

    # --- security updates ---------------------------------------------------------------------------------

    def action_security_updates(self) -> None:
        state = self.updates
        if state is None:
            self.notice("Security updates: still reading the system; try again in a moment.")
            return
        on = not state.enabled
        if on:
            question = ("Install Debian's security updates automatically? unattended-upgrades installs them "
                        "daily; the appliance never restarts by itself: the dashboard says when a restart "
                        "is needed.")
        else:
            question = ("Stop installing Debian's security updates automatically? Security fixes then wait "
                        "until someone installs them (apt), or switches this on again.")
        if not state.installed:
            question += "\n\nunattended-upgrades is not installed on this system: the switch is written, but nothing runs."

        def answered(yes: bool | None) -> None:
            if yes:
                self.switch_updates(on)
            else:
                self.notice("Security updates: cancelled, nothing was changed.")

        self.app.push_screen(ConfirmScreen(question), answered)

    @work(thread=True, exclusive=True, group="system-updates", name="Switching the security updates",
          exit_on_error=False)
    def switch_updates(self, on: bool) -> None:
        path = security_updates.set_enabled(self.appliance.root, on)
        self.post_message(UpdatesSwitched(on, str(path)))

    def on_updates_switched(self, message: UpdatesSwitched) -> None:
        self.notice(f"Security updates: {'on, installed daily' if message.on else 'off'} ({message.path}).",
                    "bold green" if message.on else "bold yellow")
        self.read_host()

    # --- restart the relay, reboot, power off ---------------------------------------------------------------

    def action_power(self, verb: str) -> None:
        _, title, command, question = POWER[verb]
        if not self.on_the_appliance():
            self.notice(f"{title}: refused in the sandbox (--root {self.appliance.root}): it would act on this "
                        f"host, not on an appliance.", "bold red")
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self.notice(f"{title}: {' '.join(command)}...", "bold yellow")
                self.run_power(verb)
            else:
                self.notice(f"{title}: cancelled, nothing was done.")

        self.app.push_screen(ConfirmScreen(question), answered)

    @work(thread=True, exclusive=True, group="system-power", name="The command", exit_on_error=False)
    def run_power(self, verb: str) -> None:
        _, title, command, _ = POWER[verb]
        self.post_message(CommandDone(title, self.appliance.commands.run(command)))

    def on_command_done(self, message: CommandDone) -> None:
        result = message.result
        if result.returncode == 0 and message.what == POWER["restart-relay"][1]:
            self.notice(f"{message.what}: done. The console reconnects by itself.", "bold yellow")
        elif result.returncode == 0:
            self.notice(f"{message.what}: under way. The console closes when the system goes down.", "bold yellow")
        else:
            self.notice(f"{message.what} failed (exit code {result.returncode}): {result.output or 'no message'}",
                        "bold red")

    def action_authentication(self) -> None:
        from .authentication import AuthenticationScreen

        self.app.push_screen(AuthenticationScreen())

    def action_update(self) -> None:
        from .update import UpdateScreen

        self.app.push_screen(UpdateScreen())

    # --- a shell --------------------------------------------------------------------------------------

    def action_shell(self) -> None:
        allowed, why = self.appliance.commands.shell_permission()
        if not allowed:
            self.notice(f"Shell: {why}.", "bold red")
            return
        command = self.appliance.commands.shell()
        try:
            with self.app.suspend():
                print(f"Postern: {command[0]}; type exit to return to the console.", flush=True)
                # The console is suspended: this blocks it on purpose, as the terminal belongs to the shell.
                result = self.appliance.commands.run(command, interactive=True)
        except SuspendNotSupported:
            self.notice("Shell: this terminal cannot hand the screen over to a shell.", "bold red")
            return
        self.notice(f"Back from the shell ({command[0]}, exit code {result.returncode}).")
        self.read_host()
