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


def write_synced(path: Path | str, chunks: Iterable[bytes]) -> None:
    """Create `path` (mode 0600, `O_EXCL | O_NOFOLLOW`), write `chunks` and fsync it; removed on any error.

    For a directory only the relay's user can write (the queue's `tmp/`); the caller renames it."""
    fd = os.open(path, _PRIVATE_FLAGS, 0o600)
    try:
        try:
            _write_all(fd, chunks)
            os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        Path(path).unlink(missing_ok=True)
        raise


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
