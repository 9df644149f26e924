"""Fixtures for the system layer: network namespaces with a veth pair, and the command as a process.

Everything that touches the kernel happens inside a namespace the test creates (and always
deletes), with addresses only from the documentation ranges inside it; commands that set
the hostname run in their own UTS namespace (`unshare --uts`), so the machine running the
tests keeps its name.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMMAND = str(Path(sys.executable).parent / "postern-appliance")


def _can_make_namespaces() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    for tool in ("ip", "unshare"):
        if not shutil.which(tool):
            return f"needs {tool} (scripts/install-test-packages installs it)"
    return None


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


@dataclass
class Namespace:
    name: str

    def ip(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return ip("-n", self.name, *args, check=check)

    def state(self) -> dict:
        """The kernel's state as `ip -n NS -j` reports it: links (MTU, up), global addresses, main-table routes."""
        links = {}
        for link in json.loads(self.ip("-j", "addr").stdout):
            addresses = sorted(
                (a["family"], a["local"], a["prefixlen"], a.get("broadcast"), "dynamic" if a.get("dynamic") else "permanent")
                for a in link.get("addr_info", []) if a.get("scope") == "global"
            )
            links[link["ifname"]] = {"mtu": link["mtu"], "up": "UP" in link["flags"], "addresses": addresses}
        routes = []
        for family in ("-4", "-6"):
            for route in json.loads(self.ip(family, "-j", "route").stdout):
                if route["dst"].startswith(("fe80", "ff00", "multicast")):
                    continue
                routes.append((family, route["dst"], route.get("gateway"), route.get("dev"),
                               route.get("protocol", "boot"), route.get("metric")))
        return {"links": links, "routes": sorted(routes, key=str)}

    def run(self, *args: str, stdin=subprocess.DEVNULL, timeout: float = 60) -> subprocess.CompletedProcess:
        """postern-appliance inside this namespace, in a UTS namespace of its own."""
        return subprocess.run(self.command(*args), capture_output=True, text=True, stdin=stdin,
                              timeout=timeout, cwd=ROOT)

    def command(self, *args: str, then: str | None = None) -> list[str]:
        inner = ["ip", "netns", "exec", self.name, COMMAND, *args]
        if then:  # a shell command run after it in the same UTS namespace (to read the hostname it set)
            script = " ".join(_quote(word) for word in inner) + f"; code=$?; {then}; exit $code"
            return ["unshare", "--uts", "sh", "-c", script]
        return ["unshare", "--uts", *inner]


def _quote(word: str) -> str:
    return "'" + word.replace("'", "'\\''") + "'"


@pytest.fixture
def netns():
    """A network namespace with lo up and two veth pairs, eth0 <-> peer0 and eth1 <-> peer1, all inside it."""
    reason = _can_make_namespaces()
    if reason:
        pytest.skip(reason)
    name = f"postern-{uuid.uuid4().hex[:8]}"
    ip("netns", "add", name)
    try:
        namespace = Namespace(name)
        namespace.ip("link", "set", "lo", "up")
        for index in (0, 1):
            namespace.ip("link", "add", f"eth{index}", "type", "veth", "peer", "name", f"peer{index}")
            namespace.ip("link", "set", f"peer{index}", "up")
        yield namespace
    finally:
        ip("netns", "del", name, check=False)


@pytest.fixture
def old_network(netns):
    """The namespace's eth0 as an admin left it: 198.51.100.5/24, default route, a static route, MTU 1500."""
    netns.ip("addr", "add", "198.51.100.5/24", "dev", "eth0")
    netns.ip("link", "set", "eth0", "up")
    netns.ip("route", "add", "default", "via", "198.51.100.1")
    netns.ip("route", "add", "203.0.113.0/24", "via", "198.51.100.7")
    return netns


def write_config(path: Path, document: dict) -> Path:
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


def files_under(root: Path) -> dict[str, tuple[bytes | str, int]]:
    """Every file and link under root: (content or link target, mode)."""
    found = {}
    for path in sorted(root.rglob("*")):
        if path.is_symlink():
            found[str(path.relative_to(root))] = ("-> " + os.readlink(path), 0)
        elif path.is_file():
            found[str(path.relative_to(root))] = (path.read_bytes(), path.stat().st_mode & 0o7777)
    return found
