"""The Postern console: one Textual app, one mode per area of the appliance."""

from __future__ import annotations

import asyncio
import importlib
import signal
import sys
import termios
from functools import partial

from textual.app import App
from textual.binding import Binding
from textual.command import Hit, Hits, Provider
from textual.reactive import reactive

from .appliance_link import ApplianceLink, Runner, run_command
from .linux_console import theme_for_terminal, use_console_safe_glyphs
from .messages import RelayStatus
from .relay_link import RelayLink
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
    "logs": ("Logs", "the relay log, live", ".screens.logs.LogScreen"),
    "smtp": ("SMTP test", "talk SMTP to a server, or send a test email", ".screens.smtp_test.SmtpTestScreen"),
    "network": ("Network", "interfaces, addresses, gateway, hostname, DNS; apply with a countdown",
                ".screens.network.NetworkScreen"),
    "diagnostics": ("Diagnostics", "DNS lookup, HELO/PTR check, next-hop check", ".screens.diagnostics.DiagnosticsScreen"),
    "certificates": ("Certificates", "the TLS certificate: show, self-signed, CSR, import",
                     ".screens.certificates.CertificatesScreen"),
    "system": ("System", "reboot, power off, a shell", ".screens.system.SystemScreen"),
}


class AreasProvider(Provider):
    """Every area by name in the command palette."""

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for mode, (title, help_text, _) in AREAS.items():
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title), partial(self.app.switch_mode, mode), help=help_text)


class PosternConsole(App):
    CSS_PATH = "styles/postern.tcss"
    TITLE = "Postern"
    MODES = {mode: lazy(path) for mode, (_, _, path) in AREAS.items()}
    DEFAULT_MODE = "dashboard"
    COMMANDS = App.COMMANDS | {AreasProvider, SetupWizardProvider}
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
        Binding("f1,question_mark", "show_keys", "Keys", id="app.keys"),
        Binding("ctrl+q,f10", "quit", "Quit", id="app.quit", priority=True),
    ]

    relay_status: reactive[dict | None] = reactive(None, always_update=True)
    relay_problem: reactive[str] = reactive("Relay: connecting...")

    def __init__(self, socket_path: str, config_path: str | None = None, first_boot: bool = False, root: str = "/",
                 appliance: ApplianceLink | None = None):
        super().__init__()
        self.link = RelayLink(socket_path)
        self.appliance = appliance or ApplianceLink(config_path, root)  # network, diagnostics, certificates, power
        self.config_path = config_path
        self.first_boot = first_boot
        self.root = root  # the system the setup wizard configures: / on the appliance, a directory in tests
        use_console_safe_glyphs()

    def on_mount(self) -> None:
        self.theme = theme_for_terminal()
        self.run_worker(self.link.watch(self), name="relay-status", group="relay", exclusive=True)
        if self.first_boot:
            start_wizard(self, self.root)
        if not self.is_headless and sys.__stdin__ is not None and sys.__stdin__.isatty():
            # A closed SSH session or console must end the console, not leave it spinning:
            # Textual's input thread keeps polling a hung-up terminal.
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self.exit)
            self.set_interval(2, self._exit_if_terminal_gone)

    def _exit_if_terminal_gone(self) -> None:
        try:
            termios.tcgetattr(sys.__stdin__.fileno())
        except (termios.error, OSError, ValueError):
            self.exit()

    def on_relay_status(self, message: RelayStatus) -> None:
        self.relay_problem = message.problem
        self.relay_status = message.status
        if message.target_is_app:
            self.screen.post_message(RelayStatus(message.status, message.changed, message.problem, target_is_app=False))

    def action_show_keys(self) -> None:
        if self.screen.query("KeyPanel"):
            self.action_hide_help_panel()
        else:
            self.action_show_help_panel()


AREA_KEYS = [(b.key.split(",")[0].upper(), b.description) for b in PosternConsole.BINDINGS
             if b.id and b.id.startswith("area.")]


def make_app(socket_path: str, config_path: str | None = None, first_boot: bool = False,
             root: str = "/", *, run_command: Runner = run_command, allow_shell: bool | None = None,
             netns: str | None = None) -> PosternConsole:
    """The one factory: the command line and the tests build the same app.

    run_command runs reboot and power off (tests pass a recorder); allow_shell None offers a
    shell only to root; netns applies network changes in that namespace (tests only)."""
    appliance = ApplianceLink(config_path, root, netns=netns, run_command=run_command, allow_shell=allow_shell)
    return PosternConsole(socket_path, config_path, first_boot, root, appliance)
