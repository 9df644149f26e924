"""The system screens at the VM console's 80x25 and a larger SSH terminal, in the ansi theme the VM console uses.

Their content is made the same on every run: a network namespace with fixed MACs and
addresses, a DNS server with fixed records, an Ed25519 certificate (whose signature does
not vary) valid from 2025 to 2125, and fixed facts about the machine. What cannot be fixed
otherwise (the host's name, the DNS server's port, the seconds left) is replaced for the
snapshot only.
"""

from __future__ import annotations

import datetime
import socket

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import NameOID
from textual.widgets import Input

from appliance.network.change import Change
from console.host import HostFacts
from console.system.diagnostics import Diagnostics
from tests.console.conftest import until

from .appliance_support import console, dns_server, netns, root, write_config
from .test_diagnostics_screen import RECORDS

__all__ = ["netns", "root"]

SIZES = [(80, 25), (120, 40)]
size_ids = pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")


@pytest.fixture
def ansi(monkeypatch):
    monkeypatch.setenv("TERM", "linux")  # the VM console: 16 colours, console-safe glyphs
    monkeypatch.setattr(socket, "gethostname", lambda: "gw.example.com")
    monkeypatch.setattr(Input, "_toggle_cursor", lambda self: None)  # the cursor does not blink


def fixed_certificate(directory, hostname: str = "gw.example.com"):
    key = ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(20250101)
        .not_valid_before(datetime.datetime(2025, 1, 1, tzinfo=datetime.timezone.utc))
        .not_valid_after(datetime.datetime(2125, 1, 1, tzinfo=datetime.timezone.utc))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname), x509.DNSName("mx.example.com")]),
                       critical=False)
        .sign(key, None)
    )
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "postern.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (directory / "postern.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))


async def relay_down(pilot):
    await until(pilot, lambda: "not running" in pilot.app.relay_problem, what="the relay status")


NETWORK = {"network": {"hostname": "gw.example.com",
                       "interfaces": {"eth0": {"address": "198.51.100.5/24", "gateway": "198.51.100.1"}},
                       "dns": {"servers": ["198.51.100.53"], "search": ["example.net"]}}}


@size_ids
def test_network_screen_with_a_problem(snap_compare, ansi, tmp_path, root, netns, size):
    async def edit(pilot):
        await relay_down(pilot)
        await pilot.press("f7")
        await until(pilot, lambda: pilot.app.screen.view is not None, what="the network screen")
        pilot.app.screen.query_one("#net-gateway").value = "192.0.2.1"
        pilot.app.screen.query_one("#net-gateway").focus()
        await pilot.pause(0.2)

    app = console(tmp_path, write_config(tmp_path / "postern.yaml", NETWORK), root, netns=netns.name)
    assert snap_compare(app, terminal_size=size, run_before=edit)


@size_ids
def test_network_countdown(snap_compare, ansi, tmp_path, root, netns, monkeypatch, size):
    monkeypatch.setattr(Change, "remaining", lambda self: 57.0)

    async def apply(pilot):
        await relay_down(pilot)
        await pilot.press("f7")
        await until(pilot, lambda: pilot.app.screen.view is not None, what="the network screen")
        pilot.app.screen.query_one("#net-address").value = "192.0.2.10/24"
        pilot.app.screen.query_one("#net-gateway").value = "192.0.2.1"
        await pilot.pause()
        await pilot.press("ctrl+s", "y")
        await until(pilot, lambda: type(pilot.app.screen).__name__ == "KeepSettingsScreen", what="the countdown")
        await pilot.pause(0.6)

    app = console(tmp_path, write_config(tmp_path / "postern.yaml", NETWORK), root, netns=netns.name)
    assert snap_compare(app, terminal_size=size, run_before=apply)


@size_ids
def test_diagnostics_lookup_and_helo_check(snap_compare, ansi, tmp_path, monkeypatch, size):
    server = dns_server(RECORDS)
    real = Diagnostics.resolver
    monkeypatch.setattr(Diagnostics, "resolver", lambda self, text, timeout=3.0: (
        real(self, text, timeout)[0], "the test's DNS server"))
    config = write_config(tmp_path / "postern.yaml", {"mta": {"hostname": "gw.example.com",
                                                              "dns_servers": [server.address]}})

    async def run(pilot):
        await relay_down(pilot)
        await pilot.press("f8")
        screen = pilot.app.screen
        screen.query_one("#diag-name").value = "example.com"
        screen.query_one("#diag-name").focus()
        await pilot.press("enter")
        await until(pilot, lambda: "DMARC" in screen.result_text(), what="the lookup")
        screen.query_one("#diag-address").value = "192.0.2.20"
        screen.query_one("#diag-address").focus()
        await pilot.press("enter")
        await until(pilot, lambda: "FAIL" in screen.result_text(), what="the HELO check")
        await pilot.pause(0.2)

    try:
        assert snap_compare(console(tmp_path, config), terminal_size=size, run_before=run)
    finally:
        server.stop()


@size_ids
def test_certificates_screen(snap_compare, ansi, tmp_path, size):
    root = tmp_path / "root"
    fixed_certificate(root / "etc/postern/tls")
    config = write_config(tmp_path / "postern.yaml", {"mta": {"hostname": "gw.example.com", "tls": {
        "cert_file": "/etc/postern/tls/postern.pem", "key_file": "/etc/postern/tls/postern.key"}}})

    async def show(pilot):
        await relay_down(pilot)
        await pilot.press("f9")
        await until(pilot, lambda: pilot.app.screen.installed is not None, what="the certificate")
        await pilot.press("i")
        await pilot.pause(0.2)

    assert snap_compare(console(tmp_path, config, root), terminal_size=size, run_before=show)


@size_ids
def test_system_screen(snap_compare, ansi, tmp_path, monkeypatch, size):
    from console.screens import system

    monkeypatch.setattr(system, "read_facts", lambda: HostFacts(
        "gw.example.com", "Debian GNU/Linux 13 (trixie)", "6.12.48+deb13-amd64", 3 * 86400 + 4 * 3600 + 5 * 60, 1,
        ["eth0 192.0.2.10"], 20.0, 10.0, 30.0, 0.1))

    async def ask(pilot):
        await relay_down(pilot)
        await pilot.press("f11")
        await until(pilot, lambda: "trixie" in str(pilot.app.screen.query_one("#system-facts").render()),
                    what="the facts")

    app = console(tmp_path, run_command=lambda argv, interactive=False: None, allow_shell=False)
    assert snap_compare(app, terminal_size=size, run_before=ask)


@size_ids
def test_locked_screen(snap_compare, ansi, monkeypatch, tmp_path, size):
    """What the VM's screen shows after setup: the appliance, the relay (down here), the SSH host key, the prompt."""
    from console import host

    monkeypatch.setattr(host, "interface_addresses", lambda: ["eth0 192.0.2.10", "eth0 2001:db8::10"])
    key = ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(32))).public_key()
    (tmp_path / "etc/ssh").mkdir(parents=True)
    (tmp_path / "etc/ssh/ssh_host_ed25519_key.pub").write_bytes(
        key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH) + b" root@gw\n")

    async def locked(pilot):
        await relay_down(pilot)
        await until(pilot, lambda: "SHA256:" in str(pilot.app.screen.query_one("#lock-status").render()),
                    what="the host key")

    app = console(tmp_path, require_login=True, login_user="admin")
    assert snap_compare(app, terminal_size=size, run_before=locked)
