"""The console's access to the appliance's system layer, for one system: a root directory, its
configuration file and (in tests) a network namespace.

`ApplianceLink` holds the concerns of `console.system`, each in its own module: `commands` (power,
the shell), `diagnostics` and `certificates`; it reads the configuration file (`console.system.config`)
and makes the network change itself. Every method blocks (netlink, files, DNS, SMTP, subprocesses):
the screens call them only from thread workers. Nothing here imports Textual.

Where changes go depends on the root directory and the network namespace:

- root `/`, no namespace: the appliance itself. Network changes go through
  `appliance.network.trial` (files, then systemd-networkd or netlink, and the hostname).
- a namespace (tests): the same trial, on that namespace's kernel, with the files under the
  root; the hostname is left alone (the UTS namespace is shared).
- another root and no namespace (`make run`, a test): the files only; the running
  system is never touched. The countdown still runs, and restores the files when declined.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from relay.config_file import DEFAULT_CONFIG

from .system.certificates import Certificates
from .system.commands import Commands, Runner, run_command
from .system.config import read_document, read_settings
from .system.diagnostics import Diagnostics

if TYPE_CHECKING:
    from appliance.files import FileSnapshot
    from appliance.network import trial
    from appliance.network.live import LiveState
    from appliance.schema import ApplianceConfig

# The system layer (netlink, DNS, X.509) is imported where it is used: the console starts
# without it, and each screen's first worker pays for what it needs.

TRY_SECONDS = 60.0


# --- a network change waiting to be kept ---------------------------------------------------------


class PendingChange:
    """A network change in force until it is kept or rolled back (like `postern-appliance try`)."""

    deadline: float
    lines: list[str]

    def __init__(self):
        self._settling = threading.Lock()
        self.settled = False

    def settle(self, keep: bool) -> bool:
        """Keep or roll back, once: False when that was already done (the countdown and a closing console
        may both try)."""
        with self._settling:
            if self.settled:
                return False
            self.keep() if keep else self.roll_back()
            self.settled = True
            return True

    @property
    def confirmed(self) -> bool:  # by `postern-appliance confirm` from another shell
        return False

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.time())

    def keep(self) -> None:
        raise NotImplementedError

    def roll_back(self) -> None:
        raise NotImplementedError


class LiveChange(PendingChange):
    def __init__(self, pending: trial.Trial):
        super().__init__()
        self.trial = pending
        self.deadline = pending.deadline
        applied = pending.applied
        self.lines = [f"wrote /{relative}" for relative in applied.files.write]
        self.lines += [f"removed /{relative}" for relative in applied.files.remove]
        self.lines += [f"note: {note}" for note in applied.notes]
        self.lines.append(f"applied through {applied.backend}")

    @property
    def confirmed(self) -> bool:
        return self.trial.confirmed

    def keep(self) -> None:
        self.trial.keep()

    def roll_back(self) -> None:
        self.trial.roll_back()


class FilesChange(PendingChange):
    """Under a root other than /: the network files only, restored exactly when not kept."""

    def __init__(self, root: Path, snapshot: FileSnapshot, written: list[str], removed: list[str], timeout: float):
        super().__init__()
        self.snapshot = snapshot
        self.deadline = time.time() + timeout
        self.lines = [f"wrote {root / relative}" for relative in written]
        self.lines += [f"removed {root / relative}" for relative in removed]
        self.lines.append(f"files only: the running system is not changed under the root {root}")

    def keep(self) -> None:
        pass

    def roll_back(self) -> None:
        self.snapshot.restore()


# --- what the screens get back -------------------------------------------------------------------


@dataclass
class NetworkView:
    live: LiveState
    document: dict
    problems: list[str] = field(default_factory=list)  # the configuration file's own


class ApplianceLink:
    def __init__(self, config_path: Path | str | None = None, root: Path | str = "/", *, netns: str | None = None,
                 run_command: Runner = run_command, allow_shell: bool = True, shell_user: str | None = None,
                 try_seconds: float = TRY_SECONDS):
        self.config_path = Path(config_path or DEFAULT_CONFIG)
        self.root = Path(root).absolute()
        self.netns = netns
        self.try_seconds = try_seconds
        self.commands = Commands(run_command, allow_shell, shell_user)
        self.diagnostics = Diagnostics(self.settings, netns)
        self.certificates = Certificates(self.settings, self.root)

    @property
    def live(self) -> bool:
        """Do network changes reach a running kernel (this one, or the test's namespace)?"""
        return self.netns is not None or self.root.resolve() == Path("/")

    # --- the configuration file ---

    def document(self) -> dict:
        """The configuration file as a mapping ({} when there is none yet); ConfigError if it is not YAML."""
        return read_document(self.config_path)

    def settings(self) -> ApplianceConfig:
        """The validated configuration, or the defaults where the file is missing or wrong."""
        return read_settings(self.config_path)

    def save_network(self, document: dict) -> str:
        """Save the document's network section into the file as it is now (its other sections may have
        changed meanwhile: the relay saves the mta section itself)."""
        from appliance.store import ConfigStore

        current = self.document()
        if document.get("network"):
            current["network"] = document["network"]
        else:
            current.pop("network", None)
        version = ConfigStore(self.config_path).save(current)
        return f"saved to {self.config_path} (version {version.id})"

    # --- network ---

    def network_view(self) -> NetworkView:
        from appliance.network.live import read_live_state
        from appliance.schema import validate_document
        from relay.config import ConfigError

        live = read_live_state(self.netns, self.root)
        try:
            document = self.document()
        except ConfigError as error:
            return NetworkView(live, {}, error.problems)
        except OSError as error:
            return NetworkView(live, {}, [f"{self.config_path}: cannot read it: {error.strerror}"])
        _, problems = validate_document(document)
        return NetworkView(live, document, problems)

    def start_network_change(self, document: dict) -> PendingChange:
        """Apply the document's network section now; it stays only if kept before the deadline.

        ConfigError with every problem when the document is wrong or names a missing interface;
        ApplyError when the system refused (the previous state is back)."""
        from appliance.files import FileSnapshot
        from appliance.network import trial
        from appliance.network.apply import ApplyError, Target, missing_interfaces
        from appliance.network.kernel import read_kernel_state
        from appliance.network.render import plan, write_plan
        from appliance.schema import validate_document
        from relay.config import ConfigError

        config, problems = validate_document(document)
        if problems:
            raise ConfigError(problems)
        network = config.network
        missing = missing_interfaces(network, read_kernel_state(self.netns))
        if missing:
            raise ConfigError(missing)
        if self.live:
            target = Target(self.root, self.netns, set_hostname=self.netns is None)
            return LiveChange(trial.start(network, target, self.root / "run/postern", self.try_seconds))
        files = plan(network, self.root)
        snapshot = FileSnapshot.take(files.paths)
        try:
            write_plan(files)
        except OSError as error:
            snapshot.restore()
            raise ApplyError([f"{error.filename or self.root}: {error.strerror}: nothing was changed"]) from None
        return FilesChange(self.root, snapshot, list(files.write), list(files.remove), self.try_seconds)
