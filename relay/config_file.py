"""The configuration file and its history: the one writer of `/etc/postern/postern.yaml`.

Everything that changes the file comes through `ConfigFile.write`: the relay's `Config.Apply`,
`Pause` and `Resume`, and the system layer's store (`appliance.store.ConfigStore`, which
validates the whole appliance first), so the console, the wizard and provisioning too.

- Every write is also kept as `history/postern-<UTC time>.yaml` beside the file (mode 0600),
  the newest `keep` of them; a current file written by other means (an editor, the image)
  is recorded as a version before it is replaced.
- The current file is written 0640, and when root writes it, root's in the configuration
  directory's group (the relay's, so it can read it); the relay writes it as its own user.
- `history/` is made with the mode of the directory it is in (`root:postern 2770` on the
  appliance), so the relay and root both keep versions there.
- Versions are named by their time; `0` is the latest, `1` the one before; `current` is
  the file as it is now.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from .config import ConfigError
from .files import atomic_write

DEFAULT_CONFIG = Path("/etc/postern/postern.yaml")
DEFAULT_KEEP = 10
_PREFIX = "postern-"
_TIME_FORMAT = "%Y%m%dT%H%M%S.%fZ"


@dataclass(frozen=True)
class Version:
    id: str  # the UTC time it was saved: 20251123T175401.123456Z
    path: Path

    @property
    def saved_at(self) -> datetime.datetime:
        return datetime.datetime.strptime(self.id, _TIME_FORMAT).replace(tzinfo=datetime.timezone.utc)


class ConfigFile:
    def __init__(self, path: Path | str = DEFAULT_CONFIG, keep: int = DEFAULT_KEEP, history: Path | str | None = None):
        self.path = Path(path)
        self.history = Path(history) if history else self.path.parent / "history"
        self.keep = max(1, keep)

    # --- reading ---

    def current_text(self) -> str | None:
        try:
            return self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None

    def read_mta(self) -> dict:
        """The file's own mta section, as written (without the defaults)."""
        document = yaml.safe_load(self.path.read_text(encoding="utf-8")) or {}
        mta = document.get("mta") if isinstance(document, dict) else None
        return dict(mta) if isinstance(mta, dict) else {}

    def versions(self) -> list[Version]:
        """Saved versions, newest first."""
        if not self.history.is_dir():
            return []
        found = []
        for path in self.history.glob(f"{_PREFIX}*.yaml"):
            version_id = path.name[len(_PREFIX):-len(".yaml")]
            try:
                datetime.datetime.strptime(version_id, _TIME_FORMAT)
            except ValueError:
                continue
            found.append(Version(version_id, path))
        return sorted(found, key=lambda version: version.id, reverse=True)

    def resolve(self, ref: str | int) -> Version:
        """A version by id, by how many saves ago it was (0 is the latest), or "current" (the file as it is)."""
        versions = self.versions()
        text = str(ref)
        if text == "current":
            return Version("current", self.path)
        if text.isdigit():
            index = int(text)
            if index < len(versions):
                return versions[index]
            raise ConfigError([f"version {index}: only {len(versions)} versions are kept (0 to {len(versions) - 1})"])
        for version in versions:
            if version.id == text:
                return version
        raise ConfigError([f"version {text}: no such version; 'postern-appliance config versions' lists them"])

    def version_text(self, ref: str | int) -> str:
        return self.resolve(ref).path.read_text(encoding="utf-8")

    # --- writing ---

    def write(self, text: str) -> Version:
        """Make `text` the current file and its newest version; the caller has validated it."""
        self._record_unversioned_current()
        version = self._new_version()
        atomic_write(version.path, text, 0o600)
        atomic_write(self.path, text, 0o640, self._owner())
        self._prune()
        return version

    def replace_mta(self, mta: dict) -> tuple[Version, str]:
        """Swap in a new mta section, keeping the other sections; returns the version and the old text."""
        old = self.path.read_text(encoding="utf-8")
        document = yaml.safe_load(old) or {}
        document["mta"] = mta
        return self.write(yaml.safe_dump(document, sort_keys=False, allow_unicode=True)), old

    def take_back(self, version: Version, old: str) -> None:
        """Undo a write that could not be put in force: the old file again, and the version forgotten."""
        atomic_write(self.path, old, 0o640, self._owner())
        version.path.unlink(missing_ok=True)

    def _owner(self) -> tuple[int, int] | None:
        """Root's file in the configuration directory's group (the relay's on the appliance: root:postern).

        Never the current file's owner: anyone who may write in the directory could have put
        a file of their own there, and it must not stay theirs.
        """
        if os.geteuid() != 0:
            return None
        return 0, self.path.parent.stat().st_gid

    # --- history ---

    def _new_version(self) -> Version:
        if not self.history.is_dir():
            self.history.mkdir(parents=True, exist_ok=True)
            # The directory's permissions (group write on the appliance), never a set-ID bit: the relay's
            # unit refuses those (RestrictSUIDSGID). Its group came from the setgid parent already.
            os.chmod(self.history, self.history.parent.stat().st_mode & 0o777)
        now = datetime.datetime.now(datetime.timezone.utc)
        latest = self.versions()[:1]
        if latest and latest[0].saved_at >= now:  # clocks that step back, or two saves in one microsecond
            now = latest[0].saved_at + datetime.timedelta(microseconds=1)
        version_id = now.strftime(_TIME_FORMAT)
        return Version(version_id, self.history / f"{_PREFIX}{version_id}.yaml")

    def _record_unversioned_current(self) -> None:
        """A current file written by other means (an image, an editor) becomes a version first.

        A version the writer may not read (root's, read by the relay) counts as different."""
        text = self.current_text()
        if text is None:
            return
        latest = self.versions()[:1]
        try:
            if latest and latest[0].path.read_text(encoding="utf-8") == text:
                return
        except PermissionError:
            pass
        version = self._new_version()
        atomic_write(version.path, text, 0o600)

    def _prune(self) -> None:
        for version in self.versions()[self.keep:]:
            version.path.unlink(missing_ok=True)
