"""Durable writes: the one way Postern puts a file on disk.

`atomic_write` creates a temporary file with a random name in the target's own directory
(`mkstemp`: `O_CREAT | O_EXCL | O_NOFOLLOW`, so nothing planted there, file or symbolic link,
is ever opened), gives it exactly the mode asked for (the umask changes nothing) and the
owner when one is given, writes, fsyncs, renames it over the target and fsyncs the
directory. A reader, or a crash, sees the old file or the new one, never half of either;
on any error the temporary file is removed and the target is untouched.

The queue passes its own temporary name (`temporary=`): its `tmp/` directory belongs to the
relay's user alone (mode 0700), the name is the message's unique queue ID, and the file is
still opened with `O_EXCL | O_NOFOLLOW`; that path skips the random name and the `fchmod`
(the file is created 0600, and only the relay's own umask could narrow it).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

_PRIVATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def fsync_directory(directory: Path | str) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, chunks: Iterable[bytes]) -> None:
    for chunk in chunks:
        view = memoryview(chunk)
        while view:
            view = view[os.write(fd, view):]


def write_renamed(temporary: str, path: str, chunks: Iterable[bytes]) -> int:
    """Create `temporary` (mode 0600, `O_EXCL | O_NOFOLLOW`), write `chunks` and rename it to `path`:
    the open descriptor, for the caller to fsync (and close). Nothing is left on any error.

    For a directory only the relay's user can write (the queue's `tmp/`). The rename comes before the
    fsync so that one fsync makes the content and the new name durable where `fsync_keeps_names` says so."""
    fd = os.open(temporary, _PRIVATE_FLAGS, 0o600)
    try:
        _write_all(fd, chunks)
        os.rename(temporary, path)
    except BaseException:
        os.close(fd)
        Path(temporary).unlink(missing_ok=True)
        raise
    return fd


# ext4 with a journal, XFS and btrfs commit a file's inode with every change logged before it (the
# rename that gave it its name changes its ctime, so it is among them), and ext4 without a journal
# writes the directory of a file just added to one (ext4_sync_parent): an fsync of the file is
# enough. Postfix's queue relies on the same and never fsyncs a directory.
_FSYNC_KEEPS_NAMES = frozenset({"ext4", "xfs", "btrfs"})


def file_system_type(path: Path | str) -> str | None:
    """The type of the file system `path` is on (as in /proc/self/mountinfo), or None if unknown."""
    device = os.stat(path).st_dev
    wanted = f"{os.major(device)}:{os.minor(device)}"
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as mounts:
            for line in mounts:
                fields = line.split()
                if len(fields) > 2 and fields[2] == wanted and "-" in fields:
                    return fields[fields.index("-") + 1]
    except OSError:
        pass
    return None


def fsync_keeps_names(directory: Path | str) -> bool:
    """Does an fsync of a file in `directory` also make durable the name it was last given there?
    Where it is not known to, the caller fsyncs the directory as well."""
    return file_system_type(directory) in _FSYNC_KEEPS_NAMES


def atomic_write(path: Path | str, data: bytes | str | list[bytes], mode: int = 0o644,
                 owner: tuple[int, int] | None = None, *, temporary: Path | None = None) -> None:
    """Replace `path` with `data`: exactly `mode` (and `owner`), durable once this returns.

    `temporary` is only for a directory no other user can write (the queue's `tmp/`)."""
    path = Path(path)
    if isinstance(data, str):
        data = data.encode("utf-8")
    chunks = data if isinstance(data, list) else [data]
    if temporary is None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        temporary = Path(name)
    else:
        fd = os.open(temporary, _PRIVATE_FLAGS, mode)
        mode = -1
    try:
        try:
            if mode >= 0:
                os.fchmod(fd, mode)  # mkstemp made it 0600; the umask neither loosens nor tightens what was asked
            if owner is not None:
                os.fchown(fd, *owner)
            _write_all(fd, chunks)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)
