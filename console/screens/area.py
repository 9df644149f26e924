"""What the system screens (network, diagnostics, certificates, system) share.

A status line on top, a notice line for what just happened, the footer; Escape goes back
to the dashboard. Their blocking calls to the appliance layer run in thread workers that
post a result message back; a worker that fails anyway ends up in `on_worker_state_changed`,
the one place that turns the failure into words on the notice line (never a crash).
"""

from __future__ import annotations

from rich.text import Text
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Static
from textual.worker import Worker, WorkerState

from appliance.diagnostics.dns_lookup import LookupFailed
from appliance.network.change import ApplyError, KernelError, ServiceError
from relay.config import ConfigError

from ..appliance_link import ApplianceLink
from ..system import FieldError


def explain(error: BaseException) -> str:
    """A failure of the system layer in words a mail admin understands."""
    if isinstance(error, (ConfigError, ApplyError)):
        return "; ".join(error.problems)
    if isinstance(error, FieldError):
        return error.message
    if isinstance(error, PermissionError):
        return f"{error.filename + ': ' if error.filename else ''}permission denied (this needs root)"
    if isinstance(error, OSError):
        where = f"{error.filename}: " if error.filename else ""
        return f"{where}{error.strerror or error}"
    if isinstance(error, (KernelError, ServiceError, LookupFailed)):
        return str(error)
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


class AreaScreen(Screen):
    CSS_PATH = "../styles/appliance.tcss"
    BINDINGS = [Binding("escape", "back", "Back", id="area.back")]
    NOTICE_ID = "area-notice"

    @property
    def appliance(self) -> ApplianceLink:
        return self.app.appliance

    def notice(self, text: str | Text, style: str = "") -> None:
        self.query_one(f"#{self.NOTICE_ID}", Static).update(Text(text, style=style) if isinstance(text, str) else text)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR and event.worker.error is not None:
            self.failed(event.worker, event.worker.error)

    def failed(self, worker: Worker, error: BaseException) -> None:
        """A worker's unexpected failure: said on the notice line. Screens add what else to undo."""
        what = worker.name or "That"
        self.notice(f"{what} failed: {explain(error)}", "bold red")

    def action_back(self) -> None:
        self.app.switch_mode("dashboard")
