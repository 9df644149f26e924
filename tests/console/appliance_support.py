"""What the tests of the system screens (network, diagnostics, certificates, system) share.

The console runs with a relay socket nobody listens on (these screens do not need the
relay), a configuration file and a root directory under tmp_path, and, to apply network
changes for real, a network namespace the test creates with a veth pair inside it.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import pytest
import yaml

from console.app import make_app
from console.system.commands import CommandResult
from tests.appliance.conftest import Namespace, ip
from tests.support.dns_server import DnsServer

ETH0_MAC = "02:00:00:00:00:10"


def dns_server(records: dict) -> DnsServer:
    """A started DnsServer; its port is free for TCP when chosen, so UDP may be taken by a parallel run: retry."""
    for _ in range(5):
        try:
            return DnsServer(records).start()
        except OSError:
            continue
    return DnsServer(records).start()


def write_config(path: Path, document: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


def read_config(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


@pytest.fixture
def root(tmp_path) -> Path:
    """A root directory with a resolv.conf, as the live state reads it."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/resolv.conf").write_text("nameserver 198.51.100.53\nsearch example.net\n")
    return root


def console(tmp_path: Path, config: Path | None = None, root: Path | None = None, **options):
    return make_app(str(tmp_path / "no-relay.sock"), str(config or tmp_path / "postern.yaml"),
                    root=str(root or tmp_path), **options)


class Recorder:
    """A command runner that runs nothing and remembers what it was asked."""

    def __init__(self, result: CommandResult = CommandResult(0, "")):
        self.calls: list[tuple[list[str], bool]] = []
        self.result = result

    def __call__(self, argv: list[str], interactive: bool = False, timeout: float = 120) -> CommandResult:
        self.calls.append((list(argv), interactive))
        return self.result


@pytest.fixture
def netns():
    """A network namespace holding eth0 <-> peer0 (both ends inside), eth0 at 198.51.100.5/24 with a default route."""
    if os.geteuid() != 0 or not shutil.which("ip"):
        pytest.skip("needs root and ip to create a network namespace")
    name = f"postern-console-{uuid.uuid4().hex[:6]}"
    ip("netns", "add", name)
    try:
        namespace = Namespace(name)
        namespace.ip("link", "set", "lo", "up")
        namespace.ip("link", "add", "eth0", "address", ETH0_MAC, "type", "veth", "peer", "name", "peer0",
                     "address", "02:00:00:00:00:11")
        namespace.ip("link", "set", "peer0", "up")
        namespace.ip("link", "set", "eth0", "up")
        namespace.ip("addr", "add", "198.51.100.5/24", "dev", "eth0")
        namespace.ip("route", "add", "default", "via", "198.51.100.1")
        yield namespace
    finally:
        ip("netns", "del", name, check=False)


def addresses(namespace: Namespace, link: str = "eth0") -> list[str]:
    """The global addresses of a link, as 192.0.2.10/24 (state() lists (family, address, prefix, ...))."""
    return sorted(f"{a[1]}/{a[2]}" for a in namespace.state()["links"][link]["addresses"])


def default_gateways(namespace: Namespace) -> list[str]:
    return sorted(r[2] for r in namespace.state()["routes"] if r[1] == "default")
