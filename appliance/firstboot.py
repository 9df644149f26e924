"""First-boot setup state under a root directory: the wizard's progress, and "setup complete".

- `var/lib/postern/firstboot.yaml` (root only, 0600): the wizard's answers so far, in the shape
  of a provisioning seed (`topology:`, `network:`, `mta:`, `tls:`), plus the step to resume at
  and the answers that have no place in the configuration (`wizard:`). Saved after every
  step, so a wizard that a reboot interrupts picks up where it was. The admin's password is
  kept only as its hash (`admin.password_hash`); the repeated one is not kept at all.
- `etc/postern/setup-complete`: setup is done (by the wizard or by `provision`); the console
  no longer opens the wizard by itself. It records the topology, which the configuration
  file itself has no key for, so that running the wizard again starts from it.

The root is `/` on the appliance and a temporary directory in tests.
"""

from __future__ import annotations

import copy
import datetime
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from relay.config_file import DEFAULT_CONFIG

from .admin_login import hash_password
from .files import atomic_write, remove_file

PROGRESS = "var/lib/postern/firstboot.yaml"
COMPLETE = "etc/postern/setup-complete"
CONFIG = str(DEFAULT_CONFIG.relative_to("/"))
SMARTHOST_PASSWORD = "etc/postern/smarthost.password"
TRY_STATE = "run/postern"


@dataclass
class Progress:
    step: str
    document: dict = field(default_factory=dict)


def resumable(document: dict) -> dict:
    """What the resume file may keep: the admin's password as its hash, the repeated one not at all."""
    document = copy.deepcopy(document)
    admin = document.get("admin")
    if isinstance(admin, dict) and isinstance(admin.get("password"), str) and admin["password"]:
        admin["password_hash"] = hash_password(admin.pop("password"))
    wizard = document.get("wizard")
    if isinstance(wizard, dict):
        wizard.pop("password2", None)
    return document


class SetupState:
    def __init__(self, root: Path | str = "/"):
        self.root = Path(root)

    def path(self, relative: str) -> Path:
        return self.root / relative

    @property
    def is_live(self) -> bool:
        """True on the appliance itself (root /): changes reach the running system."""
        from .network.change import reaches_system

        return reaches_system(self.root)

    # --- progress ---

    def load_progress(self) -> Progress | None:
        try:
            data = yaml.safe_load(self.path(PROGRESS).read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError, UnicodeDecodeError):
            return None
        if not isinstance(data, dict) or not isinstance(data.get("step"), str):
            return None
        document = data.get("answers")
        return Progress(data["step"], document if isinstance(document, dict) else {})

    def save_progress(self, progress: Progress) -> None:
        text = yaml.safe_dump({"step": progress.step, "answers": resumable(progress.document)}, sort_keys=False)
        atomic_write(self.path(PROGRESS), "# The first-boot wizard's answers so far; it resumes from here.\n" + text,
                     0o600, (0, 0) if os.geteuid() == 0 else None)

    def forget_progress(self) -> None:
        remove_file(self.path(PROGRESS))

    # --- complete ---

    def is_complete(self) -> bool:
        return self.path(COMPLETE).exists()

    def mark_complete(self, topology: str, by: str) -> None:
        now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        record = {"topology": topology, "by": by, "at": now}
        atomic_write(self.path(COMPLETE), yaml.safe_dump(record, sort_keys=False), 0o644)
        self.forget_progress()

    def completed_topology(self) -> str | None:
        try:
            record = yaml.safe_load(self.path(COMPLETE).read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError, UnicodeDecodeError):
            return None
        return record.get("topology") if isinstance(record, dict) else None

    # --- the configuration as it is ---

    def current_document(self) -> dict:
        """The configuration file under the root as a mapping (empty when missing or unreadable)."""
        try:
            data = yaml.safe_load(self.path(CONFIG).read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError, UnicodeDecodeError):
            return {}
        return data if isinstance(data, dict) else {}
