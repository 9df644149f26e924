"""The Postern console: one Textual app, one mode per area of the appliance."""

from __future__ import annotations

import asyncio
import importlib
import signal
import sys
import termios
import time
from functools import partial

from rich.text import Text
from textual import events
from textual.app import App
from textual.binding import Binding
from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.css.query import NoMatches
from textual.reactive import reactive
from textual.worker import WorkerFailed

from appliance.relay_log import Journal, LogFile, RelayLog

from . import login
from .appliance_link import ApplianceLink
from .linux_console import CONSOLE_THEME, theme_for_terminal, use_console_safe_glyphs
from .messages import RelayStatus
from .queue_commands import QueueByDestination
from .relay_link import RelayLink
from .screens.confirm import ConfirmScreen
from .system.commands import Runner, run_command
from .wizard.launch import SetupWizardProvider, start_wizard

def lazy(path: str):
    """A mode's screen, imported the first time it opens: start-up loads only what the dashboard needs."""

    def build():
        module, _, name = path.rpartition(".")
        return getattr(importlib.import_module(module, __package__), name)()

    return build


AREAS = {
    "dashboard": ("Dashboard", "hostname, relay, queue, recent log", ".screens.dashboard.DashboardScreen"),
    "queue": ("Queue", "queued mail: inspect, hold, release, delete, flush", ".screens.queue.QueueScreen"),
    "mta": ("MTA settings", "hostname, relay domains, my networks, relay hosts, limits", ".screens.mta.MtaScreen"),
    "logs": ("Logs", "the relay log, live: search, filter", ".screens.logs.LogScreen"),
    "smtp": ("SMTP test", "talk SMTP to a server, or send a test email", ".screens.smtp_test.SmtpTestScreen"),
    "network": ("Network", "interfaces, addresses, gateway, hostname, DNS; apply with a countdown",
                ".screens.network.NetworkScreen"),
    "diagnostics": ("Diagnostics", "DNS lookup, HELO/PTR check, next-hop check", ".screens.diagnostics.DiagnosticsScreen"),
    "certificates": ("Certificates", "the TLS certificate: show, self-signed, CSR, import",
                     ".screens.certificates.CertificatesScreen"),
    "system": ("System", "restart the relay, reboot, power off, a shell", ".screens.system.SystemScreen"),
}


# Keys that move about rather than act: the palette leaves them out.
NOT_ACTIONS = frozenset({"escape", "up", "down", "tab", "shift+tab"})


def screen_actions(path: str) -> list[tuple[str, str, list[str]]]:
    """A screen's own actions as (action, description, keys), in the order its BINDINGS give them."""
    module, _, name = path.rpartition(".")
    screen = getattr(importlib.import_module(module, __package__), name)
    actions: dict[str, tuple[str, list[str]]] = {}
    for binding in Binding.make_bindings(vars(screen).get("BINDINGS", [])):  # its own, not Textual's
        if binding.key in NOT_ACTIONS or not binding.description:
            continue
        actions.setdefault(binding.action, (binding.description, []))[1].append(binding.key)
    return [(action, description, keys) for action, (description, keys) in actions.items()]


class ConsoleCommands(Provider):
    """The command palette (Ctrl+P): every area and every action of every area, each with its key."""

    def commands(self) -> list[tuple[Text, str, object]]:
        """(what the palette shows, help, what runs) for each area, each area's actions, then the app's own."""
        app = self.app
        area_keys = {b.action: b for b in app.BINDINGS if b.id and b.id.startswith("area.")}
        found = []
        for mode, (title, help_text, path) in AREAS.items():
            key = app.get_key_display(area_keys[f"switch_mode('{mode}')"])
            found.append((self.shown(title, key), help_text, partial(app.switch_mode, mode)))
            for action, description, keys in screen_actions(path):
                shown_keys = "/".join(app.get_key_display(Binding(k, action)) for k in keys)
                found.append((self.shown(f"{title}: {description}", shown_keys), f"{key} then {shown_keys}",
                              partial(self.run_in_area, mode, action)))
        for binding in app.BINDINGS:
            if (binding.id and binding.id.startswith("app.") and binding.action != "command_palette"
                    and app.check_action(binding.action, ())):
                keys = "/".join(app.get_key_display(Binding(k, binding.action)) for k in binding.key.split(","))
                found.append((self.shown(binding.description, keys), "", partial(app.run_action, binding.action)))
        return found

    @staticmethod
    def shown(title: str, keys: str) -> Text:
        text = Text(title)
        text.append(f"  {keys}", style="bold")
        return text

    async def run_in_area(self, mode: str, action: str) -> None:
        await self.app.switch_mode(mode)
        await self.app.screen.run_action(action)

    async def discover(self) -> Hits:
        for shown, help_text, command in self.commands():
            yield DiscoveryHit(shown, command, text=shown.plain, help=help_text or None)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for shown, help_text, command in self.commands():
            score = matcher.match(shown.plain)
            if score > 0:
                yield Hit(score, matcher.highlight(shown.plain), command, text=shown.plain, help=help_text or None)


class PosternConsole(App):
    CSS_PATH = "styles/postern.tcss"
    TITLE = "Postern"
    MODES = {mode: lazy(path) for mode, (_, _, path) in AREAS.items()}
    DEFAULT_MODE = "dashboard"
    COMMANDS = App.COMMANDS | {ConsoleCommands, QueueByDestination, SetupWizardProvider}
    BINDINGS = [
        Binding("f2", "switch_mode('dashboard')", "Dashboard", id="area.dashboard", show=False),
        Binding("f3", "switch_mode('queue')", "Queue", id="area.queue", show=False),
        Binding("f4", "switch_mode('mta')", "MTA", id="area.mta", show=False),
        Binding("f5", "switch_mode('logs')", "Logs", id="area.logs", show=False),
        Binding("f6", "switch_mode('smtp')", "SMTP test", id="area.smtp", show=False),
        Binding("f7", "switch_mode('network')", "Network", id="area.network", show=False),
        Binding("f8", "switch_mode('diagnostics')", "Diagnostics", id="area.diagnostics", show=False),
        Binding("f9", "switch_mode('certificates')", "Certificates", id="area.certificates", show=False),
        Binding("f11", "switch_mode('system')", "System", id="area.system", show=False),
        Binding("f12", "lock", "Lock", id="app.lock", show=False),
        Binding("f1,question_mark", "show_keys", "Keys", id="app.keys"),
        Binding("ctrl+p", "command_palette", "Palette", id="app.palette", show=False, priority=True),
        # Named on the dashboard's key line: a footer full of the screen's own keys has no room left.
        Binding("ctrl+q,f10", "quit", "Quit", id="app.quit", priority=True, show=False),
    ]

    relay_status: reactive[dict | None] = reactive(None, always_update=True)
    relay_problem: reactive[str] = reactive("Relay: connecting...")
    relay_status_at = 0.0  # time.monotonic() when the relay sent relay_status

    # While locked or in the first-boot wizard, these app actions are refused (the palette is off too).
    GATED_ACTIONS = frozenset({"switch_mode", "command_palette", "lock"})
    IDLE_CHECK = 15.0  # seconds between looks at the idle time

    def __init__(self, socket_path: str, config_path: str | None = None, first_boot: bool = False, root: str = "/",
                 appliance: ApplianceLink | None = None, login_user: str | None = None,
                 idle_lock: float = login.IDLE_LOCK_SECONDS, fail_delay: float = login.FAIL_DELAY,
                 relay_log: RelayLog | None = None):
        super().__init__()
        self.link = RelayLink(socket_path)
        self.relay_log = relay_log or Journal()  # what the Logs screen reads: the journal, or a file
        self.appliance = appliance or ApplianceLink(config_path, root)  # network, diagnostics, certificates, power
        self.config_path = config_path
        self.first_boot = first_boot
        self.root = root  # the system the setup wizard configures: / on the appliance, a directory in tests
        self.login_user = login_user  # whose password unlocks the console; None: no login on this console
        self.idle_lock = idle_lock
        self.fail_delay = fail_delay
        self.locked = False
        self.last_input = time.monotonic()
        self.unsaved: dict[str, str] = {}  # area -> the edits quitting would lose, in words ("MTA settings")
        use_console_safe_glyphs()

    def on_mount(self) -> None:
        self.register_theme(CONSOLE_THEME)
        self.theme = theme_for_terminal()
        self.run_worker(self.link.watch(self), name="relay-status", group="relay", exclusive=True)
        if self.first_boot:
            self.use_command_palette = False  # only the wizard: no palette, no area keys, no shell
            start_wizard(self, self.root)
        elif self.login_user:
            self.action_lock()
        if self.login_user:
            self.set_interval(self.IDLE_CHECK, self._lock_if_idle)
        if not self.is_headless and sys.__stdin__ is not None and sys.__stdin__.isatty():
            # A closed SSH session or console must end the console, not leave it spinning:
            # Textual's input thread keeps polling a hung-up terminal.
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self.exit)
            self.set_interval(2, self._exit_if_terminal_gone)

    async def action_quit(self) -> None:
        """Quit; with edits not yet applied on some screen, ask first."""
        if not self.unsaved or isinstance(self.screen, ConfirmScreen):
            self.exit()
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self.exit()

        lost = ", ".join(self.unsaved.values())
        self.push_screen(ConfirmScreen(f"Quit? Your edits in {lost} are not applied and will be lost."), answered)

    # --- the lock and the first-boot wizard --------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in self.GATED_ACTIONS and (self.locked or self.first_boot):
            return False
        if action == "lock" and not self.login_user:
            return False
        return super().check_action(action, parameters)

    async def on_event(self, event: events.Event) -> None:
        if isinstance(event, (events.Key, events.MouseDown)):
            self.last_input = time.monotonic()
        await super().on_event(event)

    def action_lock(self) -> None:
        """Show the locked status screen over whatever is open; the admin's password takes it away."""
        if self.locked or not self.login_user:
            return
        from .screens.locked import LockScreen

        self.locked = True
        self.use_command_palette = False
        self.push_screen(LockScreen(self.login_user, self.fail_delay), self._unlocked)

    def _unlocked(self, _=None) -> None:
        self.locked = False
        self.last_input = time.monotonic()
        self.use_command_palette = not self.first_boot

    def _lock_if_idle(self) -> None:
        if not self.first_boot and time.monotonic() - self.last_input >= self.idle_lock:
            self.action_lock()

    def _handle_exception(self, error: Exception) -> None:
        """Quitting takes each screen apart, its widgets before itself: a worker the relay answers
        in between finds its widgets gone (NoMatches). Nobody is left to tell, so the console ends
        quietly instead of with a traceback; while it runs, such an error is a bug and shows."""
        if not self._running and isinstance(error, WorkerFailed) and isinstance(error.error, NoMatches):
            return
        super()._handle_exception(error)

    def on_worker_state_changed(self, event) -> None:
        """First boot: the wizard is all there is until setup is complete; then the console locks."""
        worker = event.worker
        if worker.name != "setup-wizard" or not self.first_boot or not worker.is_finished:
            return
        wizard = getattr(worker, "postern_wizard", None)
        if wizard is not None and wizard.finished:
            self.first_boot = False
            self._unlocked()
            if self.login_user:
                self.action_lock()
        else:
            # Left or failed: back to where it was (its answers are kept).
            self.set_timer(0.5, partial(start_wizard, self, self.root))

    def _exit_if_terminal_gone(self) -> None:
        try:
            termios.tcgetattr(sys.__stdin__.fileno())
        except (termios.error, OSError, ValueError):
            self.exit()

    def on_relay_status(self, message: RelayStatus) -> None:
        self.relay_status_at = time.monotonic()
        self.relay_problem = message.problem
        self.relay_status = message.status
        # No screen to tell for a moment while one stack of screens gives way to another (the lock
        # screen's): the next status, a few seconds on, reaches the screen that is up by then.
        if message.target_is_app and self.screen_stack:
            self.screen.post_message(RelayStatus(message.status, message.changed, message.problem, target_is_app=False))

    def get_key_display(self, binding: Binding) -> str:
        """Function keys as the keyboard names them: F1, not f1."""
        shown = super().get_key_display(binding)
        return shown.upper() if shown[:1] == "f" and shown[1:].isdigit() else shown

    def get_system_commands(self, screen):
        """Textual's own palette entries, less those the console's commands offer with their keys."""
        for command in super().get_system_commands(screen):
            if command.title not in ("Keys", "Quit"):
                yield command

    def action_show_keys(self) -> None:
        if self.screen.query("KeyPanel"):
            self.action_hide_help_panel()
        else:
            self.action_show_help_panel()


def make_app(socket_path: str, config_path: str | None = None, first_boot: bool = False,
             root: str = "/", *, log_file: str | None = None, run_command: Runner = run_command,
             allow_shell: bool = True, netns: str | None = None, require_login: bool | None = None, login_user: str | None = None,
             idle_lock: float = login.IDLE_LOCK_SECONDS, fail_delay: float = login.FAIL_DELAY) -> PosternConsole:
    """The one factory: the command line and the tests build the same app.

    log_file is the relay's log file, where it is not in the journal (the sandbox, the tests).
    run_command runs reboot and power off (tests pass a recorder); allow_shell False never offers
    a shell; netns applies network changes in that namespace (tests only). require_login None
    asks for a password when the console runs as root or on the machine's own terminal
    (login.login_required); login_user is whose password (default login.login_user())."""
    user = login_user or login.login_user()
    appliance = ApplianceLink(config_path, root, netns=netns, run_command=run_command, allow_shell=allow_shell,
                              shell_user=user)
    if require_login is None:
        require_login = login.login_required()
    return PosternConsole(socket_path, config_path, first_boot, root, appliance,
                          login_user=user if require_login else None, idle_lock=idle_lock, fail_delay=fail_delay,
                          relay_log=LogFile(log_file) if log_file else Journal())
