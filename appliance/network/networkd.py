"""systemd-networkd and systemd-resolved: are they running here, and telling them to reload.

"Here" means in this process's network namespace: a networkd that runs on the host does
not manage a namespace created with `ip netns add`, so it is found by comparing the
namespace of each running networkd (psutil lists the processes) with our own.
"""

from __future__ import annotations

import os
import subprocess

import psutil


class ServiceError(Exception):
    """A systemd tool failed; the message has its own words."""


def _same_network_namespace(pid: int) -> bool:
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat("/proc/self/ns/net").st_ino
    except OSError:
        return False


def running_here(process_name: str) -> bool:
    """True when a process of that name runs in this network namespace."""
    for process in psutil.process_iter(["name"]):
        if process.info["name"] == process_name and _same_network_namespace(process.pid):
            return True
    return False


def networkd_running() -> bool:
    return running_here("systemd-networkd")


def resolved_running() -> bool:
    return running_here("systemd-resolved")


def _run(command: list[str]) -> None:
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise ServiceError(f"{' '.join(command)}: {error}") from None
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()
        raise ServiceError(f"{' '.join(command)}: {detail[-1] if detail else f'exit status {result.returncode}'}")


def reload_networkd(interfaces: list[str]) -> None:
    """Make networkd read its files again and reconfigure the named interfaces now."""
    _run(["networkctl", "reload"])
    if interfaces:
        _run(["networkctl", "reconfigure", *interfaces])


def reload_resolved() -> None:
    _run(["systemctl", "try-reload-or-restart", "systemd-resolved"])
