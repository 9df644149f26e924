"""The configuration store: one YAML file for the whole appliance, with its history.

- The current file is `/etc/postern/postern.yaml`; every saved version is also kept as
  `history/postern-<UTC time>.yaml` beside it, the newest `keep` of them.
- Saving validates every section first and changes nothing when any is wrong; writes are
  atomic (temporary file, fsync, rename, fsync of the directory).
- Import is a save from a file the admin brings; export is the current text.
- Versions are named by their timestamp; `0` is the current one, `1` the one before, and
  so on. `diff` lists the keys that differ between two versions.
"""

from __future__ import annotations

import datetime
import difflib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from relay.config import ConfigError

from .files import atomic_write
from .schema import DEFAULT_CONFIG, ApplianceConfig, load_config_text, parse_text, validate_document

DEFAULT_KEEP = 10
_PREFIX = "postern-"
_TIME_FORMAT = "%Y%m%dT%H%M%S.%fZ"
MISSING = object()


@dataclass(frozen=True)
class Version:
    id: str  # the UTC time it was saved: 20251123T175401.123456Z
    path: Path

    @property
    def saved_at(self) -> datetime.datetime:
        return datetime.datetime.strptime(self.id, _TIME_FORMAT).replace(tzinfo=datetime.timezone.utc)


@dataclass(frozen=True)
class Change:
    key: str  # network.interfaces.eth0.address
    old: Any  # MISSING when the key was added
    new: Any  # MISSING when the key was removed

    def __str__(self) -> str:
        if self.old is MISSING:
            return f"+ {self.key}: {_show(self.new)}"
        if self.new is MISSING:
            return f"- {self.key}: {_show(self.old)}"
        return f"~ {self.key}: {_show(self.old)} -> {_show(self.new)}"


def _show(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=10**6).strip().removesuffix("\n...").strip()


def _flatten(value: Any, prefix: str, out: dict) -> dict:
    if isinstance(value, dict) and (value or not prefix):
        for key, item in value.items():
            _flatten(item, f"{prefix}.{key}" if prefix else str(key), out)
    else:
        out[prefix] = value
    return out


def diff_documents(old: dict, new: dict) -> list[Change]:
    before, after = _flatten(old or {}, "", {}), _flatten(new or {}, "", {})
    changes = []
    for key in sorted(set(before) | set(after)):
        a, b = before.get(key, MISSING), after.get(key, MISSING)
        if a != b:
            changes.append(Change(key, a, b))
    return changes


class ConfigStore:
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

    def load(self) -> ApplianceConfig:
        text = self.current_text()
        return load_config_text(text or "", str(self.path))

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

    def save_text(self, text: str, source: str = "the new configuration") -> Version:
        """Validate `text` as a whole appliance configuration, then make it the current one."""
        document = parse_text(text, source)
        _, problems = validate_document(document)
        if problems:
            raise ConfigError(problems)
        self._record_unversioned_current()
        version = self._new_version()
        atomic_write(version.path, text, 0o600)
        atomic_write(self.path, text, 0o640, self._owner())
        self._prune()
        return version

    def save(self, document: dict) -> Version:
        return self.save_text(yaml.safe_dump(document, sort_keys=False, default_flow_style=False))

    def import_file(self, source: Path | str) -> Version:
        try:
            text = Path(source).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            reason = error.strerror if isinstance(error, OSError) else "not UTF-8 text"
            raise ConfigError([f"{source}: cannot read it: {reason}"]) from None
        return self.save_text(text, str(source))

    def export(self, destination: Path | str) -> None:
        text = self.current_text()
        if text is None:
            raise ConfigError([f"{self.path}: there is no configuration yet to export"])
        atomic_write(Path(destination), text, 0o600)

    def restore(self, ref: str | int) -> Version:
        """Make an older version the current one again (as a new version)."""
        return self.save_text(self.version_text(ref), f"version {ref}")

    def diff(self, old_ref: str | int, new_ref: str | int) -> list[Change]:
        return diff_documents(parse_text(self.version_text(old_ref)), parse_text(self.version_text(new_ref)))

    def unified_diff(self, old_ref: str | int, new_ref: str | int) -> str:
        old, new = self.resolve(old_ref), self.resolve(new_ref)
        lines = difflib.unified_diff(
            old.path.read_text(encoding="utf-8").splitlines(keepends=True),
            new.path.read_text(encoding="utf-8").splitlines(keepends=True),
            fromfile=old.id, tofile=new.id,
        )
        return "".join(lines)

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
        now = datetime.datetime.now(datetime.timezone.utc)
        latest = self.versions()[:1]
        if latest and latest[0].saved_at >= now:  # clocks that step back, or two saves in one microsecond
            now = latest[0].saved_at + datetime.timedelta(microseconds=1)
        version_id = now.strftime(_TIME_FORMAT)
        return Version(version_id, self.history / f"{_PREFIX}{version_id}.yaml")

    def _record_unversioned_current(self) -> None:
        """A current file written by other means (an image, an editor) becomes a version first."""
        text = self.current_text()
        if text is None:
            return
        latest = self.versions()[:1]
        if latest and latest[0].path.read_text(encoding="utf-8") == text:
            return
        version = self._new_version()
        atomic_write(version.path, text, 0o600)

    def _prune(self) -> None:
        for version in self.versions()[self.keep:]:
            version.path.unlink(missing_ok=True)
