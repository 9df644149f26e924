"""The configuration store: the whole appliance's file, validated, with its history.

- The file and its kept versions are `relay.config_file.ConfigFile`, the one writer that
  the relay's `Config.Apply` uses too; this adds what the system layer needs on top.
- Saving validates every section first and changes nothing when any is wrong.
- Import is a save from a file the admin brings; export is the current text.
- `diff` lists the keys that differ between two versions (`diff_documents`, which the console's
  forms use too).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from relay.config import ConfigError
from relay.config_file import ConfigFile, Version

from .files import atomic_write
from .schema import ApplianceConfig, load_config_text, parse_text, validate_document

MISSING = object()


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
    """Every setting that differs, by its dotted key, in the documents' own order: the old one's keys,
    then those only the new one has. The one diff of configurations: versions of the file, and the
    console's forms against the running settings."""
    before, after = _flatten(old or {}, "", {}), _flatten(new or {}, "", {})
    changes = []
    for key in list(before) + [key for key in after if key not in before]:
        a, b = before.get(key, MISSING), after.get(key, MISSING)
        if a != b:
            changes.append(Change(key, a, b))
    return changes


class ConfigStore(ConfigFile):
    # --- reading ---

    def load(self) -> ApplianceConfig:
        text = self.current_text()
        return load_config_text(text or "", str(self.path))

    # --- writing ---

    def save_text(self, text: str, source: str = "the new configuration") -> Version:
        """Validate `text` as a whole appliance configuration, then make it the current one."""
        document = parse_text(text, source)
        _, problems = validate_document(document)
        if problems:
            raise ConfigError(problems)
        return self.write(text)

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
