"""The first-boot wizard: one worker that shows each step in turn and waits for Next or Back.

Progress (the answers and the step to resume at) is saved under the root after every step,
so a wizard interrupted by a reboot, a dropped SSH session or Ctrl+Q starts again at the
step it was on. The last step marks setup complete and the saved progress goes.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

from appliance.firstboot import Progress, SetupState
from appliance.network.live import LiveState

from ..screens.confirm import ConfirmScreen
from . import system
from .draft import Draft, initial_draft
from .step import BACK, NEXT, StepScreen
from .steps_apply import ApplyStep
from .steps_auth import AuthStep
from .steps_finish import AdminStep, SummaryStep, TlsStep
from .steps_mail import DomainsStep, ExternalStep, InternalStep, NetworksStep, TopologyStep
from .steps_system import DnsStep, HostnameStep, NetworkStep

if TYPE_CHECKING:
    from textual.app import App

STEPS: tuple[type[StepScreen], ...] = (
    NetworkStep, HostnameStep, DnsStep, TopologyStep, DomainsStep, InternalStep, ExternalStep,
    NetworksStep, TlsStep, AuthStep, AdminStep, SummaryStep, ApplyStep,
)
STEP_NAMES = tuple(step.NAME for step in STEPS)


class SetupWizard:
    def __init__(self, app: App, root: Path | str = "/"):
        self.app = app
        self.root = Path(root).resolve()  # the configuration names files by their absolute paths
        self.state = SetupState(self.root)
        progress = self.state.load_progress()
        if progress is not None and progress.step in STEP_NAMES:
            self.draft = Draft(progress.document)
            self.index = STEP_NAMES.index(progress.step)
        else:
            self.draft = initial_draft(self.state)
            self.index = 0
        self.finished = False
        self.live: LiveState | None = None  # the machine's interfaces and DNS, read once when the wizard starts

    def shown(self, text: str) -> str:
        """Paths as the appliance will have them: under a test root, without the root's own prefix."""
        if self.state.is_live:
            return text
        return text.replace(str(self.root).rstrip("/") + "/", "/")

    def save(self) -> None:
        try:
            self.state.save_progress(Progress(STEP_NAMES[self.index], self.draft.document))
        except OSError as error:  # e.g. not root: the wizard goes on, it only cannot resume later
            self.app.notify(f"The answers could not be saved for later: {error}", severity="warning")

    async def run(self) -> None:
        """Show the steps until the last is done or the admin leaves."""
        self.live = await asyncio.to_thread(system.live_state)
        while 0 <= self.index < len(STEPS):
            step = STEPS[self.index](self, self.index + 1, len(STEPS))
            answer = await self.app.push_screen_wait(step)
            if answer == NEXT:
                self.index += 1
            elif answer == BACK and self.index > 0:
                self.index -= 1
            elif answer == BACK and getattr(self.app, "first_boot", False):
                # First boot: the wizard is all the console offers until setup is complete.
                self.app.notify("This is the first step. The appliance is set up here first; the console's "
                                "other screens open once setup is complete.", title="Setup wizard", timeout=8)
            elif answer == BACK:
                leave = await self.app.push_screen_wait(ConfirmScreen(
                    "Leave the setup wizard?\n\nYour answers are kept: it starts again at this step "
                    "next time (Setup wizard in the command palette, or postern-console --first-boot)."))
                if leave:
                    self.save()
                    return
            if self.index < len(STEPS):
                self.save()
        try:
            self.state.mark_complete(self.draft.topology, by="the first-boot wizard")
        except OSError as error:
            self.app.notify(f"Setup could not be marked complete: {error}", severity="error", timeout=30)
            return
        self.finished = True
        self.app.notify("Setup is complete. The console shows the dashboard; the wizard can be run again "
                        "from the command palette.", title="Setup complete", timeout=10)
