"""Apply a NetworkConfig to the running system, all or nothing.

Applying writes the rendered files under the target's root, then brings the live system
in line: through systemd-networkd when it runs in this network namespace and the root is
`/` (it reads those files), otherwise directly through netlink, which works anywhere,
including a network namespace without any systemd. Then it sets the kernel's hostname.
A files-only target (a sandbox root: `make run`, a test) stops after the files.

Before changing anything it checks that every configured interface exists, and it takes
a `Previous`: the files it will replace (bytes, mode, owner, or that they were absent),
the kernel's links, addresses and routes, and the hostname. If any step fails, that
snapshot is restored and the error reported; `rollback` restores it on request, which is
how `try` undoes a change nobody confirmed.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path

from ..files import FileSnapshot
from . import networkd
from .kernel import KernelError, KernelState, apply_interface, netlink, read_state, restore_links
from .model import NetworkConfig
from .render import RESOLVED_DROPIN, FilePlan, plan, write_plan

NETWORKD = "systemd-networkd"
NETLINK = "netlink"
FILES = "files only"


class ApplyError(Exception):
    """Applying failed or was refused; `problems` has one line each."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Target:
    """Where to apply: files under `root`; the kernel of namespace `netns` (None: our own), unless
    `files_only`, when the running system is left alone."""

    root: Path = Path("/")
    netns: str | None = None
    set_hostname: bool = True  # a caller in a shared UTS namespace (a test) turns this off
    files_only: bool = False

    def backend(self) -> str:
        if self.files_only:
            return FILES
        if Path(self.root).resolve() == Path("/") and self.netns is None and networkd.networkd_running():
            return NETWORKD
        return NETLINK


@dataclass
class Previous:
    """What an apply replaced: enough to put every file, address, route and the hostname back."""

    target: Target
    backend: str
    files: FileSnapshot
    kernel: KernelState
    interfaces: list[str]
    hostname: str | None = None

    def to_json(self) -> dict:
        return {
            "root": str(self.target.root), "netns": self.target.netns, "set_hostname": self.target.set_hostname,
            "files_only": self.target.files_only,
            "backend": self.backend, "files": self.files.to_json(), "kernel": self.kernel.to_json(),
            "interfaces": self.interfaces, "hostname": self.hostname,
        }

    @classmethod
    def from_json(cls, data: dict) -> Previous:
        target = Target(Path(data["root"]), data["netns"], data["set_hostname"], data.get("files_only", False))
        return cls(target, data["backend"], FileSnapshot.from_json(data["files"]),
                   KernelState.from_json(data["kernel"]), data["interfaces"], data["hostname"])


@dataclass
class Applied:
    previous: Previous
    files: FilePlan
    notes: list[str] = field(default_factory=list)

    @property
    def backend(self) -> str:
        return self.previous.backend


def missing_interfaces(config: NetworkConfig, state: KernelState) -> list[str]:
    present = [link.name for link in state.links]
    return [
        f"network.interfaces.{interface.name}: no interface {interface.name} on this system "
        f"(it has {', '.join(present)}): use one of those names"
        for interface in config.interfaces if interface.name not in present
    ]


def apply_network(config: NetworkConfig, target: Target) -> Applied:
    """Write the files and change the live system; on any failure restore everything and raise."""
    with netlink(target.netns) as ipr:
        state = read_state(ipr)
    problems = missing_interfaces(config, state)
    if problems:
        raise ApplyError(problems)
    file_plan = plan(config, target.root)
    backend = target.backend()
    names = [interface.name for interface in config.interfaces]
    hostname = socket.gethostname() if target.set_hostname and config.hostname and backend != FILES else None
    previous = Previous(target, backend, FileSnapshot.take(file_plan.paths), state, names, hostname)
    applied = Applied(previous, file_plan)
    try:
        write_plan(file_plan)
        if backend == NETWORKD:
            networkd.reload_networkd(names)
            if (Path(target.root) / RESOLVED_DROPIN) in file_plan.paths and networkd.resolved_running():
                networkd.reload_resolved()
        elif backend == NETLINK:
            with netlink(target.netns) as ipr:
                for interface in config.interfaces:
                    applied.notes += apply_interface(ipr, interface)
        if hostname is not None and hostname != config.hostname:
            _set_hostname(config.hostname)
    except (KernelError, networkd.ServiceError, OSError) as error:
        failure = str(error)
        try:
            rollback(previous)
        except (KernelError, networkd.ServiceError, OSError) as second:
            raise ApplyError([failure, f"restoring the previous state failed too: {second}"]) from None
        raise ApplyError([f"{failure}: nothing was changed (the previous files and addresses are restored)"]) from None
    return applied


def _set_hostname(name: str) -> None:
    try:
        socket.sethostname(name)
    except OSError as error:
        raise OSError(f"setting the hostname to {name}: {error.strerror}") from None


def rollback(previous: Previous) -> None:
    """Restore the files, the kernel's state of the touched links, and the hostname."""
    previous.files.restore()
    if previous.backend == FILES:
        return
    if previous.backend == NETWORKD:
        networkd.reload_networkd(previous.interfaces)
        if networkd.resolved_running():
            networkd.reload_resolved()
    with netlink(previous.target.netns) as ipr:
        restore_links(ipr, previous.kernel, previous.interfaces)
    if previous.hostname and previous.hostname != socket.gethostname():
        _set_hostname(previous.hostname)
