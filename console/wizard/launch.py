"""Opening the wizard: at start with `postern-console --first-boot`, or from the command palette.

Light to import: the console starts without loading the wizard's steps and the system layer."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from textual.app import App
from textual.command import DiscoveryHit, Hit, Hits, Provider

if TYPE_CHECKING:
    from .flow import SetupWizard

TITLE = "Setup wizard"
HELP = "set the appliance up step by step: network, hostname, topology, relay hosts, TLS"


def start_wizard(app: App, root: Path | str = "/") -> SetupWizard | None:
    """Run the wizard in its worker; its steps go on top of whatever the console shows."""
    if any(worker.name == "setup-wizard" and worker.is_running for worker in app.workers):
        app.notify("The setup wizard is already open, in the area it was started from.", title="Setup wizard")
        return None
    from .flow import SetupWizard  # the steps load the system layer: only when the wizard opens

    wizard = SetupWizard(app, root)
    worker = app.run_worker(wizard.run(), name="setup-wizard", group="setup-wizard")
    worker.postern_wizard = wizard  # the console's first-boot mode asks it whether setup finished
    return wizard


class SetupWizardProvider(Provider):
    """The wizard by name in the command palette: it can always be run again."""

    def _start(self) -> None:
        start_wizard(self.app, getattr(self.app, "root", "/"))

    async def discover(self) -> Hits:
        yield DiscoveryHit(TITLE, self._start, help=HELP)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        score = matcher.match(TITLE)
        if score > 0:
            yield Hit(score, matcher.highlight(TITLE), self._start, help=HELP)
