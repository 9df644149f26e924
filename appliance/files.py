"""Files the system layer writes: atomic replacement, and snapshots that restore files exactly.

Every file is written the same way, by `relay.files.atomic_write` (the one durable-write
helper of the project): a temporary file with a random name made with O_EXCL in the same
directory, the mode and owner set on it, fsync, rename over the old name, fsync of the
directory. A reader (or a crash) sees the old file or the new one, never half of either.

A `FileSnapshot` remembers, for a set of paths, whether each was a regular file (its
bytes, mode and owner), a symbolic link (its target) or absent, so that a change can be
undone to the byte.
"""

from __future__ import annotations

import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from relay.files import atomic_write, fsync_directory

__all__ = ["FileSnapshot", "FileState", "atomic_symlink", "atomic_write", "fsync_directory", "remove_file"]


def atomic_symlink(path: Path, target: str) -> None:
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    os.symlink(target, temporary)  # fails rather than follows when the name is taken
    try:
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def remove_file(path: Path) -> None:
    if path.is_symlink() or path.exists():
        path.unlink()
        fsync_directory(path.parent)


@dataclass(frozen=True)
class FileState:
    """What one path was: a regular file, a symbolic link, or nothing."""

    kind: str  # "file", "symlink" or "absent"
    content: bytes = b""
    mode: int = 0
    uid: int = 0
    gid: int = 0
    target: str = ""

    @classmethod
    def of(cls, path: Path) -> FileState:
        try:
            info = path.lstat()
        except FileNotFoundError:
            return cls("absent")
        if stat.S_ISLNK(info.st_mode):
            return cls("symlink", target=os.readlink(path))
        if not stat.S_ISREG(info.st_mode):
            raise IsADirectoryError(f"{path} is not a regular file")
        return cls("file", path.read_bytes(), stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid)

    def restore(self, path: Path) -> None:
        if self.kind == "absent":
            remove_file(path)
        elif self.kind == "symlink":
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_symlink(path, self.target)
        else:
            atomic_write(path, self.content, self.mode, (self.uid, self.gid))

    def to_json(self) -> dict:
        return {"kind": self.kind, "content": self.content.hex(), "mode": self.mode,
                "uid": self.uid, "gid": self.gid, "target": self.target}

    @classmethod
    def from_json(cls, data: dict) -> FileState:
        return cls(data["kind"], bytes.fromhex(data["content"]), data["mode"], data["uid"], data["gid"], data["target"])


@dataclass(frozen=True)
class FileSnapshot:
    """The state of several paths at one moment."""

    states: dict[str, FileState]

    @classmethod
    def take(cls, paths) -> FileSnapshot:
        return cls({str(path): FileState.of(Path(path)) for path in paths})

    def restore(self) -> None:
        for path, state in self.states.items():
            state.restore(Path(path))

    def to_json(self) -> dict:
        return {path: state.to_json() for path, state in self.states.items()}

    @classmethod
    def from_json(cls, data: dict) -> FileSnapshot:
        return cls({path: FileState.from_json(state) for path, state in data.items()})
