"""The durable on-disk queue.

Layout under `<state-dir>/queue/`:

    tmp/         messages being written; never read by the scheduler
    msg/<ID>     one file per accepted message: a magic line, the envelope as one
                 JSON line, then the message exactly as it will be sent (CRLF lines)
    state/<ID>   delivery state (per-recipient status, attempts, hold), written
                 atomically whenever it changes; absent for a message never tried
    corrupt/     damaged files moved aside for an admin to look at

A message is acknowledged only after `commit` has written it to `tmp/`, renamed it
into `msg/` and fsynced it: the rename is the moment the message exists, and the
fsync makes the file and its new name durable together on the file systems where one
fsync does (ext4, XFS, btrfs: `relay.files.fsync_keeps_names`); on any other, `msg/`
is fsynced too. Listing reads the first two lines of each file, never bodies.

Commits are grouped: one worker thread at a time writes and renames every message
waiting, then fsyncs each, and only then is each of their clients answered. Under
load that is one thread hand-off and one journal commit for several messages instead
of one each; a lone message goes at once.

Removals after delivery are grouped by turn of the event loop (`remove_soon`): every
delivered message of one turn is unlinked at its end. A message whose files are not yet gone
when the daemon dies is delivered again after the restart, as one delivered just before
a crash always could be; one whose files are gone never is.
"""

from __future__ import annotations

import asyncio
import errno
import itertools
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from ..files import atomic_write, file_system_type, fsync_directory, fsync_keeps_names, write_renamed
from .entry import Envelope, QueueEntry

log = logging.getLogger("postern/queue")

MAGIC = b"POSTERN-QUEUE 1\n"
_ENVELOPE_LIMIT = 1 << 20


class QueueFull(Exception):
    """The queue's file system has no room: answer 452 4.3.1."""


class QueueWriteError(Exception):
    """Any other failure to make a message durable: answer 451 4.3.0."""


class DamagedFile(Exception):
    pass


def slot_of(queue_id: str) -> int:
    """The process that made a queue ID: 0 the daemon, 1 and up its receiving processes."""
    return int(queue_id[13], 16) if len(queue_id) == 16 else 0


class QueueStore:
    def __init__(self, state_dir: str | Path, slot: int = 0):
        self.slot = slot  # this process's digit in every ID it makes: no two processes make the same ID
        self.root = Path(state_dir) / "queue"
        self.tmp = self.root / "tmp"
        self.msg = self.root / "msg"
        self.state = self.root / "state"
        self.corrupt = self.root / "corrupt"
        # the paths of each message's files, made as strings: pathlib's joins were 2-3 % of a receiving
        # process's time per message
        self._tmp_prefix, self._msg_prefix, self._state_prefix = (
            f"{directory}{os.sep}" for directory in (self.tmp, self.msg, self.state))
        self._counter = itertools.count()
        self._state_locks: dict[str, asyncio.Lock] = {}
        self._waiting: list[tuple[str, list[bytes], asyncio.Future]] = []  # commits for the next group
        self._writing = False  # a group is being written
        self._fsync_directory: bool | None = None  # msg/ fsynced after its files: see _write_group_sync
        self._removals: list[tuple[str, Callable[[str, OSError | None], None]]] = []  # at the end of this turn

    def open(self) -> None:
        for directory in (self.root, self.tmp, self.msg, self.state, self.corrupt):
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)

    def new_id(self) -> str:
        """Queue IDs sort by arrival: microseconds since the epoch, the process's slot, then a counter."""
        return f"{time.time_ns() // 1000:013X}{self.slot:X}{next(self._counter) % 256:02X}"

    # --- writing -------------------------------------------------------------

    async def commit(self, envelope: Envelope, body: bytes, *, here: bool = False) -> QueueEntry:
        """Write the message durably (file and directory entry fsynced); only then return its entry.

        `here`: the caller knows that nothing else in this process waits on the event loop (a receiving
        process with one session open), so the message is written and fsynced on the loop's own thread,
        which holds the loop up for that fsync but saves the hand-off to a worker thread and back. A group
        already being written takes the message along instead, as always."""
        header = json.dumps(envelope.to_dict(), separators=(",", ":")).encode() + b"\n"
        chunks = [MAGIC, header, body]
        if here and not self._writing and not self._waiting:
            error = self._write_group_sync([(envelope.id, chunks, None)])[0]
        else:
            done = asyncio.get_running_loop().create_future()
            self._waiting.append((envelope.id, chunks, done))
            if not self._writing:
                self._write_group()
            try:
                await done
                error = None
            except OSError as raised:
                error = raised
        if error is not None:
            if error.errno in (errno.ENOSPC, errno.EDQUOT):
                raise QueueFull(str(error)) from error
            raise QueueWriteError(str(error)) from error
        return QueueEntry.new(envelope)

    def _write_group(self) -> None:
        """Hand every waiting commit to a worker thread; the next group starts when this one is done."""
        group, self._waiting = self._waiting, []
        self._writing = True
        written = asyncio.get_running_loop().run_in_executor(None, self._write_group_sync, group)
        written.add_done_callback(lambda written: self._group_written(group, written))

    def _group_written(self, group: list, written: asyncio.Future) -> None:
        """Answer each commit of the group; start the next group if commits are waiting."""
        self._writing = False
        for index, (_, _, done) in enumerate(group):
            if done.done():  # its client went away meanwhile
                continue
            if written.cancelled():  # the loop is closing down: nobody is acknowledged
                done.cancel()
            elif written.exception() is not None:  # not an OSError (those are per message): all of them fail
                done.set_exception(written.exception())
            elif written.result()[index] is not None:
                done.set_exception(written.result()[index])
            else:
                done.set_result(None)
        if self._waiting:
            self._write_group()

    def _write_group_sync(self, group: list) -> list[OSError | None]:
        """Write each message to tmp/ and rename it into msg/, then fsync each (and msg/ once, where the
        file system needs it): the error of each, or None."""
        errors: list[OSError | None] = [None] * len(group)
        renamed = []
        for index, (queue_id, chunks, _) in enumerate(group):
            try:
                renamed.append((index, write_renamed(self._tmp_prefix + queue_id, self._msg_prefix + queue_id, chunks)))
            except OSError as error:
                errors[index] = error
        for index, fd in renamed:  # the first fsync of a group commits the others' renames with its own
            try:
                os.fsync(fd)
            except OSError as error:  # never acknowledged: its client keeps the message
                errors[index] = error
                _unlink(self._msg_prefix + group[index][0])
            finally:
                os.close(fd)
        synced = [index for index, _ in renamed if errors[index] is None]
        if synced and self._fsyncs_directory():
            try:
                fsync_directory(self.msg)
            except OSError as error:  # their renames may not survive a crash: none of them is acknowledged
                for index in synced:
                    errors[index] = error
        return errors

    def _fsyncs_directory(self) -> bool:
        """Must msg/ be fsynced after its files (a file system not known to keep a name with its file)?"""
        if self._fsync_directory is None:
            self._fsync_directory = not fsync_keeps_names(self.msg)
        return self._fsync_directory

    def durability(self) -> str:
        """How a commit makes a message durable here, for the daemon's start line."""
        how = "msg/ fsynced after its files" if self._fsyncs_directory() else "one fsync a message"
        return f"queue on {file_system_type(self.msg) or 'an unknown file system'} ({how})"

    def _write_state_sync(self, queue_id: str, data: bytes) -> None:
        atomic_write(self.state / queue_id, data, 0o600, temporary=self.tmp / f"{queue_id}.{next(self._counter)}.state")

    async def save_state(self, entry: QueueEntry) -> None:
        """Write the entry's state as it is now, durably; one message's writes happen one after
        another, so an older state never lands after a newer one."""
        async with self._state_lock(entry.id):
            data = json.dumps(entry.state_dict(), separators=(",", ":")).encode()  # taken at its turn: the latest
            await asyncio.to_thread(self._write_state_sync, entry.id, data)

    def _state_lock(self, queue_id: str) -> asyncio.Lock:
        return self._state_locks.setdefault(queue_id, asyncio.Lock())

    def _remove_sync(self, queue_id: str) -> None:
        _unlink(self._msg_prefix + queue_id)
        _unlink(self._state_prefix + queue_id)

    async def remove(self, queue_id: str) -> None:
        """Remove the message's files now (an administrator's delete)."""
        async with self._state_lock(queue_id):
            await asyncio.to_thread(self._remove_sync, queue_id)
        self._state_locks.pop(queue_id, None)

    def remove_soon(self, queue_id: str, done: Callable[[str, OSError | None], None]) -> None:
        """Remove a delivered message's files at the end of this turn of the event loop;
        `done(queue_id, error)` follows the unlink.

        Every removal asked for in one turn is unlinked together, on the event loop's own thread,
        as Postfix's queue manager unlinks in its own process: a hand-off to a worker thread and
        back cost about 50 µs of CPU, more than the unlink itself on a journalled file system (on
        one mounted with `discard`, an unlink may wait 100-150 µs for the device: measured, a
        worker thread did not do better there either). The caller has forgotten the
        message already, so nothing in this process tries it again; until `done`, its file is
        still there for a restart to find. A state write of the message still under way (a hold
        while it was delivered) may land after the unlink: the next start removes that orphan."""
        self._state_locks.pop(queue_id, None)
        if not self._removals:
            asyncio.get_running_loop().call_soon(self._remove_batch)
        self._removals.append((queue_id, done))

    def _remove_batch(self) -> None:
        batch, self._removals = self._removals, []
        for queue_id, done in batch:
            try:
                self._remove_sync(queue_id)
            except OSError as error:
                done(queue_id, error)
            else:
                done(queue_id, None)

    def removals_pending(self) -> bool:
        return bool(self._removals)

    def being_removed(self) -> set[str]:
        """The messages whose files are still there but on their way out: delivered ones waiting for
        their unlink, and those an administrator's delete is removing (they hold their state lock)."""
        return {*self._state_locks, *(queue_id for queue_id, _ in self._removals)}

    async def flush_removals(self) -> None:
        """Every removal asked for, done now (at stop)."""
        if self._removals:
            self._remove_batch()

    # --- reading -------------------------------------------------------------

    @staticmethod
    def _read_envelope(f: BinaryIO, queue_id: str) -> tuple[Envelope, int]:
        """The envelope of the queue file open as `f`, and the offset where the message starts."""
        magic = f.readline(64)
        line = f.readline(_ENVELOPE_LIMIT)
        if magic != MAGIC:
            raise DamagedFile("not a Postern queue file")
        if not line.endswith(b"\n"):
            raise DamagedFile("truncated envelope")
        try:
            envelope = Envelope(**json.loads(line))
        except (ValueError, TypeError) as error:
            raise DamagedFile(f"unreadable envelope: {error}") from None
        if envelope.id != queue_id or not envelope.recipients:
            raise DamagedFile("envelope does not match its file")
        return envelope, len(magic) + len(line)

    def _read_message_sync(self, queue_id: str) -> bytes:
        with open(self._msg_prefix + queue_id, "rb") as f:
            envelope, _ = self._read_envelope(f, queue_id)
            body = f.read()
        if len(body) != envelope.size:
            raise DamagedFile(f"message is {len(body)} bytes, envelope says {envelope.size}")
        return body

    def _read_start_sync(self, queue_id: str, limit: int) -> tuple[bytes, bool]:
        with open(self._msg_prefix + queue_id, "rb") as f:
            envelope, _ = self._read_envelope(f, queue_id)
            start = f.read(limit)
        return start, len(start) >= envelope.size

    async def read_start(self, queue_id: str, limit: int) -> tuple[bytes, bool]:
        """The message's first `limit` bytes, and whether that is all of it (for showing, never sending)."""
        return await asyncio.to_thread(self._read_start_sync, queue_id, limit)

    async def read_message(self, queue_id: str) -> bytes:
        return await asyncio.to_thread(self._read_message_sync, queue_id)

    def move_aside(self, queue_id: str, reason: str) -> None:
        """Keep a damaged message for an admin; never delete it silently."""
        for directory, suffix in ((self.msg, ""), (self.state, ".state")):
            source = directory / queue_id
            if source.exists():
                os.replace(source, self.corrupt / f"{queue_id}{suffix}")
        log.error("%s: damaged queue file moved to %s: %s", queue_id, self.corrupt, reason)

    def load(self) -> list[QueueEntry]:
        """Read every queued message's envelope and state (not bodies), oldest first."""
        return self.load_entries(self.prepare_load())

    def prepare_load(self) -> list[str]:
        """The queued messages' IDs, oldest first, after removing what no message needs any more.

        Called before the daemon takes mail: a name in tmp/ then is a message never acknowledged
        (or, after a power cut on ext4 without a journal, the old name of one also in msg/, which
        keeps it), and a state file whose message is gone is an orphan. A message queued after this
        is not in the list, so loading the list while mail comes in never adds one twice."""
        for leftover in self.tmp.iterdir():
            # Never acknowledged (the client was not told 250 and will retry), or a second name.
            log.info("removing unfinished queue file %s", leftover.name)
            leftover.unlink(missing_ok=True)
        names = sorted(os.listdir(self.msg))
        for orphan in set(os.listdir(self.state)).difference(names):
            (self.state / orphan).unlink(missing_ok=True)
        return names

    def load_entries(self, names: list[str]) -> list[QueueEntry]:
        """The envelope and delivery state of these messages, in order; damaged ones are moved aside.

        Each message file is opened once (its first two lines and its size), and its state file once
        if it has one: at a restart this is the time until the queue's calls see the whole queue."""
        entries = []
        for name in names:
            try:
                with open(self._msg_prefix + name, "rb") as f:
                    envelope, offset = self._read_envelope(f, name)
                    if os.fstat(f.fileno()).st_size - offset != envelope.size:
                        raise DamagedFile("message is truncated")
                entry = QueueEntry.new(envelope)
                try:
                    with open(self._state_prefix + name, "rb") as f:
                        state = f.read()
                except FileNotFoundError:  # never tried yet
                    pass
                else:
                    try:
                        entry.apply_state(json.loads(state))
                    except (ValueError, TypeError, KeyError) as error:
                        raise DamagedFile(f"unreadable delivery state: {error}") from None
            except FileNotFoundError:  # gone since it was listed
                continue
            except DamagedFile as error:
                self.move_aside(name, str(error))
                continue
            entries.append(entry)
        return entries

    def corrupt_files(self) -> list[str]:
        return sorted(p.name for p in self.corrupt.iterdir())


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
