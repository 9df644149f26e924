"""The console's access to the appliance's system layer, for one system: a root directory, its
configuration file and (in tests) a network namespace.

`ApplianceLink` holds the concerns of `console.system`, each in its own module: `commands` (power,
the shell), `diagnostics` and `certificates`; it reads the configuration file (`console.system.config`)
and starts the network change. Every method blocks (netlink, files, DNS, SMTP, subprocesses):
the screens call them only from thread workers. Nothing here imports Textual.

Network changes go through `appliance.network.change`, which says where they go: the running
system for root `/` or a namespace (tests), else the files under the root only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from relay.config_file import DEFAULT_CONFIG

from .system.certificates import Certificates
from .system.commands import Commands, Runner, run_command
from .system.config import read_document, read_settings
from .system.diagnostics import Diagnostics

if TYPE_CHECKING:
    from appliance.network.change import Change
    from appliance.network.live import LiveState
    from appliance.schema import ApplianceConfig

# The system layer (netlink, DNS, X.509) is imported where it is used: the console starts
# without it, and each screen's first worker pays for what it needs.

TRY_SECONDS = 60.0


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
        self.diagnostics = Diagnostics(self.settings, netns, self.root)
        self.certificates = Certificates(self.settings, self.root)

    @property
    def live(self) -> bool:
        """Do network changes reach a running kernel (this one, or the test's namespace)?"""
        from appliance.network.change import reaches_system

        return reaches_system(self.root, self.netns)

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

    def start_network_change(self, document: dict) -> Change:
        """Apply the document's network section now; it stays only if kept before the deadline.

        ConfigError with every problem when the document is wrong; ApplyError when the system refused
        (a missing interface, a failed step: the previous state is back)."""
        from appliance.network import change
        from appliance.schema import validate_document
        from relay.config import ConfigError

        config, problems = validate_document(document)
        if problems:
            raise ConfigError(problems)
        return change.start(config.network, self.root, self.netns, timeout=self.try_seconds)
