"""A network change waiting to be kept: the one path of the Network screen, the wizard and `try`.

`start` puts a NetworkConfig in force through `trial.start`, so the change is recorded under
the state directory (`<root>/run/postern`) and `postern-appliance confirm` or `rollback` from
another shell reaches it. Where it goes is answered once, by `reaches_system`:

- root `/`, or a network namespace: the running system (files, then systemd-networkd or
  netlink, and the hostname unless the namespace shares the UTS namespace of a test);
- another root and no namespace (`make run`, a test): the files under that root only. The
  countdown still runs, and the files are restored exactly when the change is not kept.

`postern-appliance try` always puts the change in force (its `--root` only says where the files
go), so it says `live=True`.

The holder of a `Change` waits for an answer: `confirmed` (from another shell), the admin's,
or the deadline (`remaining()` reaches 0), then `settle`s it once: kept, or rolled back.
"""

from __future__ import annotations

import threading
from pathlib import Path

from . import trial
from .apply import FILES, ApplyError, Target
from .kernel import KernelError
from .model import NetworkConfig, Problems, parse_interface
from .networkd import ServiceError
from .render import plan

AlreadyPending = trial.AlreadyPending
DEFAULT_TIMEOUT = trial.DEFAULT_TIMEOUT
# What starting or settling a change can raise besides ApplyError and AlreadyPending (the system refused).
SYSTEM_ERRORS = (KernelError, ServiceError, OSError)

# The console reaches the network's internals only through this module: what it needs of them is here.
__all__ = ["AlreadyPending", "ApplyError", "Change", "DEFAULT_TIMEOUT", "KernelError", "NetworkConfig",
           "SYSTEM_ERRORS", "ServiceError", "interfaces_config", "reaches_system", "start", "state_dir_of", "unchanged"]


def reaches_system(root: Path | str, netns: str | None = None) -> bool:
    """Does a change under this root reach a running kernel: the appliance itself (root /) or a namespace?"""
    return netns is not None or Path(root).resolve() == Path("/")


def state_dir_of(root: Path | str) -> Path:
    """Where a change under this root is recorded for `confirm` and `rollback`."""
    return Path(root).absolute() / "run/postern"


def unchanged(config: NetworkConfig, root: Path | str) -> bool:
    """The network files under root already say exactly this: there is nothing to change or to keep."""
    return not plan(config, root).changed


def interfaces_config(interfaces: dict) -> NetworkConfig:
    """Only the interfaces of a network section, as a configuration of their own (the wizard's first step:
    the hostname and DNS come later, and the section as a whole was checked where it was typed)."""
    parsed = [parse_interface(name, settings, Problems()) for name, settings in interfaces.items()]
    return NetworkConfig(interfaces=tuple(interface for interface in parsed if interface))


class Change:
    """A network change in force until it is kept or rolled back."""

    def __init__(self, pending: trial.Trial):
        self.trial = pending
        self.deadline = pending.deadline
        self._settling = threading.Lock()
        self.settled = False
        applied = pending.applied
        root = Path(applied.files.root)
        self.live = applied.backend != FILES
        shown = (lambda relative: f"/{relative}") if self.live else (lambda relative: str(root / relative))
        self.lines = [f"wrote {shown(relative)}" for relative in applied.files.write]
        self.lines += [f"removed {shown(relative)}" for relative in applied.files.remove]
        if not applied.files.changed:
            self.lines.append("the files are already up to date")
        self.lines += [f"note: {note}" for note in applied.notes]
        if self.live:
            self.lines.append(f"applied through {applied.backend}")
        else:
            self.lines.append(f"files only: the running system is not changed under the root {root}")

    @property
    def confirmed(self) -> bool:
        """Kept by `postern-appliance confirm` from another shell."""
        return self.trial.confirmed

    def remaining(self) -> float:
        return self.trial.remaining()

    def settle(self, keep: bool) -> bool:
        """Keep or roll back, once: False when that was already done (the countdown and a closing console
        may both try). Blocks (netlink, networkd): call it from a thread, never on an event loop."""
        with self._settling:
            if self.settled:
                return False
            self.trial.keep() if keep else self.trial.roll_back()
            self.settled = True
            return True

    def settle_before_exit(self, timeout: float = 60.0) -> bool:
        """The program is closing while the change waits: keep it if it was confirmed, else roll it back,
        in a thread of its own (netlink must not run on the event loop's thread). True when it was kept;
        failures leave the record for `postern-appliance rollback`."""
        outcome: list[bool] = []

        def settle() -> None:
            keep = self.confirmed
            try:
                if self.settle(keep):
                    outcome.append(keep)
            except SYSTEM_ERRORS:
                pass

        done = threading.Thread(target=settle, name="network-settle")
        done.start()
        done.join(timeout)
        return bool(outcome and outcome[0])


def start(config: NetworkConfig, root: Path | str = "/", netns: str | None = None, *,
          timeout: float = DEFAULT_TIMEOUT, state_dir: Path | str | None = None, live: bool | None = None) -> Change:
    """Put the configuration in force now; it stays only if kept before the deadline.

    `live` None: as `reaches_system` says. ApplyError when the system refused (a missing interface,
    a failed step: the previous state is back); AlreadyPending when another change is waiting."""
    root = Path(root).absolute()
    if live is None:
        live = reaches_system(root, netns)
    target = Target(root, netns, set_hostname=live and netns is None, files_only=not live)
    return Change(trial.start(config, target, Path(state_dir) if state_dir else state_dir_of(root), timeout))
