"""What every scenario shares: its outcome, the relays it starts, mail it sends, queue files it reads."""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from tests.support.net import free_port
from tests.support.relay import RelayProcess, base_mta

MAGIC = b"POSTERN-QUEUE 1\n"
_MESSAGE_ID = re.compile(rb"(?im)^Message-ID:[ \t]*<([^>\r\n]+)>")


@dataclass
class Outcome:
    """One scenario's result: figures in the order they are shown, and what went wrong."""

    name: str
    figures: dict[str, object] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    skipped: str = ""

    @property
    def ok(self) -> bool:
        return not self.problems

    def check(self, condition: bool, problem: str) -> bool:
        if not condition:
            self.problems.append(problem)
        return condition

    def text(self) -> str:
        head = f"{self.name}: " + ("skipped: " + self.skipped if self.skipped else "held" if self.ok else "FAILED")
        lines = [f"{head} ({self.seconds:.1f} s)"]
        width = max((len(k) for k in self.figures), default=0)
        lines += [f"  {key:<{width}}  {value}" for key, value in self.figures.items()]
        lines += [f"  note: {note}" for note in self.notes]
        lines += [f"  PROBLEM: {problem}" for problem in self.problems]
        return "\n".join(lines)


def message_id_of(content: bytes) -> str:
    """The first Message-ID header's value without brackets; '' if there is none."""
    match = _MESSAGE_ID.search(content)
    return match.group(1).decode("ascii", "replace") if match else ""


def make_message(message_id: str, size: int = 1000, subject: str = "reliability") -> bytes:
    """A message of about `size` bytes with this Message-ID, in short CRLF lines no dot begins."""
    head = (f"From: load@example.net\r\nTo: rcpt@example.com\r\nSubject: {subject}\r\n"
            f"Message-ID: <{message_id}>\r\n\r\n").encode()
    line = (message_id.encode() * 80)[:76] + b"\r\n"
    return head + line * max(1, (size - len(head)) // len(line))


@dataclass
class QueueFile:
    name: str
    message_id: str
    intact: bool
    reason: str = ""


def read_queue_file(path: Path) -> QueueFile:
    """Check a msg/ file the way the daemon would: magic, envelope, and exactly the size it announces."""
    data = path.read_bytes()
    if not data.startswith(MAGIC):
        return QueueFile(path.name, "", False, "no magic line")
    line_end = data.find(b"\n", len(MAGIC))
    if line_end < 0:
        return QueueFile(path.name, "", False, "no envelope line")
    try:
        envelope = json.loads(data[len(MAGIC):line_end])
        size = int(envelope["size"])
    except (ValueError, KeyError, TypeError):
        return QueueFile(path.name, "", False, "envelope is not JSON")
    message_id = str(envelope.get("message_id", "")).strip("<>")
    body = data[line_end + 1:]
    if len(body) != size:
        return QueueFile(path.name, message_id, False, f"{len(body)} bytes, envelope says {size}")
    return QueueFile(path.name, message_id, True)


def queue_dir(relay: RelayProcess, name: str) -> Path:
    return relay.state_dir / "queue" / name


def listing(relay: RelayProcess, name: str) -> list[Path]:
    directory = queue_dir(relay, name)
    return sorted(directory.iterdir()) if directory.exists() else []


class Relays:
    """Relays started in one scratch directory; every one is killed and the directory removed at the end."""

    def __init__(self, root: Path):
        self.root = root
        self.started: list[RelayProcess] = []

    def make(self, next_hop_port: int, start: bool = True, args: tuple[str, ...] = (), **overrides) -> RelayProcess:
        port = free_port()
        workdir = self.root / f"relay{len(self.started)}"
        workdir.mkdir()
        relay = RelayProcess(workdir, {**base_mta(port, next_hop_port), **overrides}, port, args)
        self.started.append(relay)
        return relay.start() if start else relay

    def kill_all(self) -> None:
        for relay in self.started:
            relay.kill()


@contextmanager
def scratch(outcome: Outcome, keep: bool = False) -> Iterator[Relays]:
    """A directory for a scenario's relays; times the scenario into `outcome.seconds`."""
    root = Path(tempfile.mkdtemp(prefix=f"postern-{outcome.name.split()[0]}-"))
    relays = Relays(root)
    started = time.monotonic()
    try:
        yield relays
    finally:
        relays.kill_all()
        outcome.seconds = time.monotonic() - started
        if keep or not outcome.ok:
            outcome.notes.append(f"relay logs and queues kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def wait_for(predicate, timeout: float, interval: float = 0.05):
    """The predicate's first true value, or None once `timeout` seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)
