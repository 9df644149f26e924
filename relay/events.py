"""Change notices and the recent log, for control-API clients that watch the daemon.

`EventHub` tells each subscriber *that* something changed ("queue", "status",
"config"), coalescing bursts: a subscriber that is slow to read sees one pending
notice per kind, never an unbounded backlog. `LogBuffer` keeps the last log lines
and wakes followers; log records may come from worker threads. `PrintableFormatter`
makes every log line one line of printable text, whatever a client put in it.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import sys
import threading
import time
from collections.abc import Callable

from .printable import printable

_STAMP = "%(asctime)s "  # a format beginning with this is another format's line, stamped


class Subscription:
    def __init__(self, hub: EventHub):
        self._hub = hub
        self._pending: set[str] = set()
        self._ready = asyncio.Event()

    def _notify(self, kind: str) -> None:
        self._pending.add(kind)
        self._ready.set()

    async def next(self) -> set[str]:
        await self._ready.wait()
        self._ready.clear()
        kinds, self._pending = self._pending, set()
        return kinds

    def close(self) -> None:
        self._hub._subscribers.discard(self)


class EventHub:
    def __init__(self):
        self._subscribers: set[Subscription] = set()

    def subscribe(self) -> Subscription:
        subscription = Subscription(self)
        self._subscribers.add(subscription)
        return subscription

    def publish(self, kind: str) -> None:
        for subscription in self._subscribers:
            subscription._notify(kind)


class PrintableFormatter(logging.Formatter):
    """Control bytes and escapes in a message become "?", as in Postfix's log: a HELO name, address or
    reply cannot split a log line in two or reach the terminal of whoever reads the log.
    A traceback keeps its line ends, each of its lines made printable.

    Every line goes to stderr and to the control API's buffer: a record is formatted once per format
    and the result kept on the record for the other handler, and the date and time part of the time
    stamp is made once per second, not once per line (together about a quarter of the cost of a log
    line, with six lines per message relayed).

    A format that is the time stamp, a space, then a format without it (the buffer's, when stderr
    goes to journald, which stamps lines itself) makes that other format's line and puts the stamp
    in front: the two handlers share the formatting there too, and only the stamp is added."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._key = (type(self), self._fmt, self.datefmt)
        self._second: tuple[int, str] = (-1, "")  # replaced whole, so a worker thread's line reads it safely
        rest = self._fmt[len(_STAMP):] if self._fmt else ""
        self._stamped = (type(self._style) is logging.PercentStyle and self._fmt.startswith(_STAMP)
                         and "%(asctime)" not in rest)
        if self._stamped:  # the style makes the line without the stamp; format() puts it in front
            self._style = logging.PercentStyle(rest)
            self._unstamped_key = (type(self), rest, None)

    def format(self, record: logging.LogRecord) -> str:
        lines = record.__dict__.setdefault("_postern_lines", {})
        line = lines.get(self._key)
        if line is None:
            if self._stamped:
                unstamped = lines.get(self._unstamped_key)
                if unstamped is None:
                    unstamped = lines[self._unstamped_key] = super().format(record)
                line = self.formatTime(record, self.datefmt) + " " + unstamped
            else:
                line = super().format(record)
            lines[self._key] = line
        return line

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        if datefmt or self.converter is not time.localtime or not self.default_msec_format:
            return super().formatTime(record, datefmt)
        second = int(record.created)
        cached_second, text = self._second
        if cached_second != second:
            text = time.strftime(self.default_time_format, time.localtime(second))
            self._second = (second, text)
        return self.default_msec_format % (text, record.msecs)

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = printable(record.message)
        return super().formatMessage(record)

    def formatException(self, ei) -> str:
        return "\n".join(printable(line) for line in super().formatException(ei).split("\n"))

    def formatStack(self, stack_info: str) -> str:
        return "\n".join(printable(line) for line in super().formatStack(stack_info).split("\n"))


class LogBuffer:
    """The last `size` formatted log lines, numbered, with a wake-up for followers."""

    def __init__(self, size: int = 2000):
        self.lock = threading.Lock()
        self.lines: collections.deque[tuple[int, str]] = collections.deque(maxlen=size)
        self._next = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._changed: asyncio.Event | None = None

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._loop_thread = threading.get_ident()
        self._changed = asyncio.Event()

    def add(self, lines: list[str]) -> None:
        """Lines as formatted already: from this process, or from a receiving process."""
        with self.lock:
            for line in lines:
                self.lines.append((self._next, line))
                self._next += 1
        if self._loop is None or self._loop.is_closed():
            return
        if threading.get_ident() == self._loop_thread:
            self._changed.set()  # on the loop's own thread: no wake-up through its self-pipe needed
        else:
            self._loop.call_soon_threadsafe(self._changed.set)

    @property
    def next_number(self) -> int:
        return self._next

    def since(self, number: int) -> list[tuple[int, str]]:
        with self.lock:
            return [item for item in self.lines if item[0] >= number]

    def tail(self, count: int) -> list[tuple[int, str]]:
        with self.lock:
            return list(self.lines)[-count:] if count else []

    async def wait(self) -> None:
        await self._changed.wait()
        self._changed.clear()


class LogLines(logging.Handler):
    """Every log line to stderr and to `tail` (the daemon's buffer, or a receiving process's channel to
    it), written once per turn of the event loop.

    A message relayed logs five or six lines, nearly all on the event loop's thread; written one by
    one, each cost a system call on stderr and a frame to the daemon, and with the two handlers it
    took before, a fifth of the relay's CPU per message. Here each line is formatted once per format,
    and the lines of one turn go out together: one write to stderr and one call of `tail`. A line
    logged on another thread, or with no event loop running (at start and stop), goes out at once,
    after those waiting."""

    def __init__(self, stream_format: str, tail: Callable[[list[str]], None], tail_format: str):
        super().__init__()
        self._stream_formatter = PrintableFormatter(stream_format)
        self._tail_formatter = PrintableFormatter(tail_format)
        self.tail = tail
        self._waiting: list[tuple[str, str]] = []  # (stderr's line, tail's line)

    def emit(self, record: logging.LogRecord) -> None:  # called with self.lock held
        try:
            self._waiting.append((self._stream_formatter.format(record), self._tail_formatter.format(record)))
        except Exception:
            self.handleError(record)
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # a worker thread, or no loop yet
            self.flush()
            return
        if len(self._waiting) == 1:
            loop.call_soon(self.flush)

    def flush(self) -> None:
        with self.lock:
            lines, self._waiting = self._waiting, []
            if not lines:
                return
            try:
                sys.stderr.write("".join(line + "\n" for line, _ in lines))
                sys.stderr.flush()
                self.tail([line for _, line in lines])
            except Exception:
                self.handleError(logging.makeLogRecord({"msg": lines[0][1]}))


def log_to(tail: Callable[[list[str]], None], verbose: bool) -> LogLines:
    """Log lines go to stderr, and to `tail` as Log.Tail shows them: the daemon's buffer, or a
    receiving process's channel to it."""
    # journald adds its own time stamps; a terminal gets ours.
    fmt = "%(name)s: %(message)s" if os.environ.get("JOURNAL_STREAM") else "%(asctime)s %(name)s: %(message)s"
    handler = LogLines(fmt, tail, "%(asctime)s %(name)s: %(message)s")
    # No line says where in the code it was logged from, or which thread or process logged it: not
    # looking those up saves a fifth of each line's cost (the logging HOWTO's "Optimization").
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    logging.logAsyncioTasks = False  # Python 3.12 and later
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for noisy in ("mail.log", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return handler
