"""The relay's log where it lives: the journal on the appliance, a file in the sandbox.

The relay writes its log to stderr (`relay.daemon.setup_logging`). On the appliance systemd
hands that to the journal (unit `postern-relay.service`), where each line is stamped by
journald and the relay leaves out its own time stamp. Run by hand (`make run`, the tests),
stderr goes to a file and each line starts with the relay's time stamp
(`2026-12-06 11:21:58,123 postern/smtp: ...`); a traceback's lines have none.

Reading the log here, rather than asking the relay for it, keeps what came before the relay's
last restart or crash, and works while the relay is down, which is when the log is most
needed. `RelayLog.follow` yields the last lines first, then new lines as they come, for as
long as its caller iterates: a log file that is rotated or truncated is read again from its
start, and a journal reader that fails is started again.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

RELAY_UNIT = "postern-relay.service"
POLL_SECONDS = 0.25  # how often a log file is looked at for new lines
RETRY_SECONDS = 5.0  # before a journal reader that stopped is started again
TAIL_BYTES = 4 << 20  # at most this much of a log file is read for its last lines

FILE_STAMP = re.compile(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),\d{3} (.*)")


@dataclass(frozen=True)
class LogLine:
    """One line of the log: when it was written (None for a line without a time stamp, such as a
    traceback's) and the text after the time stamp."""

    when: datetime | None
    text: str


def parse_file_line(line: str) -> LogLine:
    match = FILE_STAMP.fullmatch(line)
    if match is None:
        return LogLine(None, line)
    return LogLine(datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S"), match[2])


def parse_journal_entry(raw: bytes | str) -> LogLine | None:
    """One line of `journalctl --output json`; None for what is not an entry."""
    entry = _journal_entry(raw)
    return None if entry is None else journal_line(entry)


def _journal_entry(raw: bytes | str) -> dict | None:
    try:
        entry = json.loads(raw)
        int(entry["__REALTIME_TIMESTAMP"])
    except (ValueError, KeyError, TypeError):
        return None
    return entry


def journal_line(entry: dict) -> LogLine:
    """MESSAGE is an array of byte values when it is not valid UTF-8, and null when it was too large to read."""
    when = datetime.fromtimestamp(int(entry["__REALTIME_TIMESTAMP"]) / 1_000_000)
    message = entry.get("MESSAGE")
    if isinstance(message, list):
        message = bytes(value & 0xFF for value in message if isinstance(value, int)).decode("utf-8", "replace")
    elif not isinstance(message, str):
        message = ""
    return LogLine(when, message.rstrip("\n"))


Failed = Callable[[str], object]


class RelayLog:
    """Where the relay's log is read from, and how it is followed."""

    where: str  # for the screen: "the journal (postern-relay.service)", "/path/relay.log"

    def follow(self, history: int, failed: Failed) -> AsyncIterator[list[LogLine]]:
        """The last `history` lines, then each batch of new lines, for as long as the caller iterates.
        A problem goes to `failed` in the admin's words; following goes on and tries again."""
        raise NotImplementedError


class LogFile(RelayLog):
    """The log file the relay's stderr goes to."""

    def __init__(self, path: str | Path, poll: float = POLL_SECONDS):
        self.path = Path(path)
        self.where = str(self.path)
        self.poll = poll

    async def follow(self, history: int, failed: Failed) -> AsyncIterator[list[LogLine]]:
        handle = None
        identity = None
        pending = b""
        started = False  # the history is read once, from the first file seen
        problem = ""
        try:
            while True:
                try:
                    status = self.path.stat()
                    if handle is None or (status.st_dev, status.st_ino) != identity or status.st_size < handle.tell():
                        # The first look, or the file was rotated (a new file under the name) or truncated:
                        # read it from its start.
                        if handle is not None:
                            handle.close()
                            handle = None
                        handle = open(self.path, "rb")
                        identity, pending = (status.st_dev, status.st_ino), b""
                        if not started:
                            started = True
                            lines = _last_lines(handle, history)
                            if lines:
                                yield lines
                    chunk = handle.read()
                    problem = ""
                except OSError as error:
                    words = (f"{self.path} does not exist (yet)" if isinstance(error, FileNotFoundError)
                             else f"cannot read {self.path}: {error.strerror}")
                    if words != problem:
                        problem = words
                        failed(words)
                    if handle is not None:
                        handle.close()
                        handle = None
                    await asyncio.sleep(self.poll)
                    continue
                if chunk:
                    complete, newline, pending = (pending + chunk).rpartition(b"\n")
                    if newline:
                        yield [parse_file_line(line) for line in complete.decode("utf-8", "replace").split("\n")]
                await asyncio.sleep(self.poll)
        finally:
            if handle is not None:
                handle.close()


def _last_lines(handle, count: int) -> list[LogLine]:
    """The last count complete lines of an open file; leaves it just after the last one."""
    size = os.fstat(handle.fileno()).st_size
    start = max(0, size - TAIL_BYTES)
    handle.seek(start)
    data = handle.read(size - start)
    if start:
        data = data.partition(b"\n")[2]  # the first line is cut
    end = data.rfind(b"\n") + 1
    handle.seek(size - (len(data) - end))
    lines = data[:end].decode("utf-8", "replace").split("\n")[:-1]
    return [parse_file_line(line) for line in lines[-count:]] if count else []


class Journal(RelayLog):
    """The relay unit's lines in the journal, read by journalctl (the admin is in group systemd-journal)."""

    def __init__(self, unit: str = RELAY_UNIT, command: tuple[str, ...] = ("journalctl",)):
        self.unit = unit
        self.command = command
        self.where = f"the journal ({unit})"

    def arguments(self, history: int, cursor: str | None) -> list[str]:
        place = ["--after-cursor", cursor] if cursor else ["--lines", str(history)]
        return [*self.command, "--unit", self.unit, "--output", "json", "--follow", "--no-pager", "--quiet", *place]

    async def follow(self, history: int, failed: Failed) -> AsyncIterator[list[LogLine]]:
        cursor = None  # where the last reader stopped: the next one goes on from there
        while True:
            try:
                process = await asyncio.create_subprocess_exec(
                    *self.arguments(history, cursor), stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            except OSError as error:
                failed(f"cannot run {self.command[0]}: {error.strerror}")
                await asyncio.sleep(RETRY_SECONDS)
                continue
            try:
                pending = b""
                while chunk := await process.stdout.read(1 << 16):
                    complete, newline, pending = (pending + chunk).rpartition(b"\n")
                    batch = []
                    for raw in complete.split(b"\n") if newline else ():
                        entry = _journal_entry(raw)
                        if entry is not None:
                            cursor = entry.get("__CURSOR", cursor)
                            batch.append(journal_line(entry))
                    if batch:
                        yield batch
                words = (await process.stderr.read()).decode("utf-8", "replace").strip()
                await process.wait()
            finally:
                if process.returncode is None:
                    process.kill()
                    await process.wait()
            failed(f"journalctl stopped: {words or f'exit status {process.returncode}'}")
            await asyncio.sleep(RETRY_SECONDS)
