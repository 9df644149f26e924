"""Safe apply, like `netplan try`: keep a new network state only if someone confirms it.

`start` applies the configuration and records what it replaced in a state file
(`<state dir>/network-try.json`, `/run/postern` on the appliance). Until the deadline,
`confirm` (from any shell: the `confirm` subcommand) or the waiting process itself (a
keypress) keeps the new state; at the deadline, or on Ctrl-C, `Trial.roll_back` restores
the previous files, addresses, routes and hostname exactly.

The record lives in a file, not only in the waiting process, so that `rollback` can still
undo a trial whose process was killed.
"""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from ..files import atomic_write
from .apply import Applied, Previous, Target, apply_network, rollback
from .model import NetworkConfig

STATE_FILE = "network-try.json"
CONFIRMED_MARK = "network-try.confirmed"
OUTCOME_FILE = "network-try.outcome"
KEPT, ROLLED_BACK = "kept", "rolled back"
DEFAULT_TIMEOUT = 120.0


class NotPending(Exception):
    """No trial is waiting for confirmation."""


class AlreadyPending(Exception):
    """A trial is already waiting; the message names its process."""


def state_path(state_dir: Path) -> Path:
    return Path(state_dir) / STATE_FILE


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def pending(state_dir: Path) -> dict | None:
    try:
        return json.loads(state_path(state_dir).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None


@dataclass
class Trial:
    state_dir: Path
    applied: Applied
    deadline: float

    @property
    def confirmed(self) -> bool:
        return (self.state_dir / CONFIRMED_MARK).exists()

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.time())

    def keep(self) -> None:
        """Keep the new state: forget what it replaced."""
        _finish(self.state_dir, KEPT)

    def roll_back(self) -> None:
        rollback(self.applied.previous)
        _finish(self.state_dir, ROLLED_BACK)


def _finish(state_dir: Path, outcome: str) -> None:
    atomic_write(state_dir / OUTCOME_FILE, json.dumps({"pid": os.getpid(), "outcome": outcome}), 0o600)
    (state_dir / CONFIRMED_MARK).unlink(missing_ok=True)
    state_path(state_dir).unlink(missing_ok=True)


def last_outcome(state_dir: Path, pid: int) -> str | None:
    try:
        record = json.loads((Path(state_dir) / OUTCOME_FILE).read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None
    return record["outcome"] if record.get("pid") == pid else None


def start(config: NetworkConfig, target: Target, state_dir: Path, timeout: float = DEFAULT_TIMEOUT) -> Trial:
    state_dir = Path(state_dir)
    current = pending(state_dir)
    if current is not None:
        if _alive(current["pid"]):
            raise AlreadyPending(
                f"a try is already waiting for confirmation (process {current['pid']}): "
                "run 'postern-appliance confirm', or wait for it to roll back"
            )
        raise AlreadyPending(
            f"an unfinished try from process {current['pid']} is recorded in {state_path(state_dir)}: "
            "run 'postern-appliance rollback' to restore the state before it, or 'confirm' to keep it"
        )
    (state_dir / CONFIRMED_MARK).unlink(missing_ok=True)
    applied = apply_network(config, target)
    deadline = time.time() + timeout
    record = {"pid": os.getpid(), "deadline": deadline, "previous": applied.previous.to_json()}
    try:
        atomic_write(state_path(state_dir), json.dumps(record), 0o600)
    except OSError:
        rollback(applied.previous)
        raise
    return Trial(state_dir, applied, deadline)


def confirm(state_dir: Path, wait: float = 10.0) -> str:
    """Confirm the waiting trial; returns what became of it: KEPT, or ROLLED_BACK when it was too late."""
    state_dir = Path(state_dir)
    record = pending(state_dir)
    if record is None:
        raise NotPending("no network change is waiting for confirmation")
    pid = record["pid"]
    if not _alive(pid):
        # Its process is gone but the new state is in place: confirming keeps it.
        _finish(state_dir, KEPT)
        return KEPT
    atomic_write(state_dir / CONFIRMED_MARK, b"", 0o600)
    try:
        os.kill(pid, signal.SIGUSR1)  # wakes the waiting process at once
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + wait
    while state_path(state_dir).exists() and time.monotonic() < deadline and _alive(pid):
        time.sleep(0.05)
    return last_outcome(state_dir, pid) or KEPT


def roll_back_recorded(state_dir: Path) -> None:
    """Undo a trial from its record, when the process that started it is gone."""
    state_dir = Path(state_dir)
    record = pending(state_dir)
    if record is None:
        raise NotPending("no network change is waiting for confirmation")
    if _alive(record["pid"]) and record["pid"] != os.getpid():
        os.kill(record["pid"], signal.SIGINT)  # the waiting process rolls back itself
        deadline = time.monotonic() + 30
        while state_path(state_dir).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        return
    rollback(Previous.from_json(record["previous"]))
    _finish(state_dir, ROLLED_BACK)
