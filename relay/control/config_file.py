"""Writing the appliance YAML file safely when the control API applies a new mta section."""

from __future__ import annotations

from pathlib import Path

import yaml

from ..files import atomic_write


def _write_atomically(path: Path, data: bytes) -> None:
    atomic_write(path, data, 0o640)


def read_mta(path: str) -> dict:
    """The file's own mta section, as written (without the defaults)."""
    document = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    mta = document.get("mta") if isinstance(document, dict) else None
    return dict(mta) if isinstance(mta, dict) else {}


def replace_mta(path: str, mta: dict) -> str:
    """Swap in a new mta section, keeping the other sections and the old file as <file>.prev."""
    current = Path(path)
    old = current.read_bytes()
    document = yaml.safe_load(old) or {}
    document["mta"] = mta
    previous = current.with_name(current.name + ".prev")
    _write_atomically(previous, old)
    _write_atomically(current, yaml.safe_dump(document, sort_keys=False, allow_unicode=True).encode())
    return str(previous)


def restore(path: str, previous: str) -> None:
    _write_atomically(Path(path), Path(previous).read_bytes())
