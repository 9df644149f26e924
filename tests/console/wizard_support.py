"""What the wizard's tests share: a fixed machine, a root with the image's configuration, and drafts.

The wizard reads the machine's interfaces and DNS servers once (console.wizard.system.live_state);
the tests give it the same machine everywhere: eth0 with 192.0.2.10/24 and a gateway, eth1 with
no carrier, and a DNS server on loopback whose PTR record of 192.0.2.10 is gw.example.com.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
import yaml

from appliance.firstboot import Progress, SetupState
from appliance.network.live import LiveAddress, LiveInterface, LiveState
from tests.support.dns_server import DnsServer

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
# An administrator's public key, as in ~/.ssh/id_ed25519.pub (fixed, so that snapshots are too).
SSH_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAOhB7/zzhC+HXDdGOdLwJln5NYwm6UNXx3chmQSVTG4 admin@laptop"


def fixed_machine(dns_address: str) -> LiveState:
    return LiveState(
        hostname="localhost",
        interfaces=(
            LiveInterface("eth0", "52:54:00:12:34:56", "up", 1500,
                          (LiveAddress("192.0.2.10/24", "192.0.2.255", "255.255.255.0", False),), ("192.0.2.1",), False),
            LiveInterface("eth1", "52:54:00:12:34:57", "no carrier", 1500, (), (), True),
        ),
        default_gateways=("192.0.2.1 (eth0)",),
        dns_servers=(dns_address,),
        search_domains=("example.com",),
    )


@pytest.fixture
def dns():
    server = DnsServer({
        ("10.2.0.192.in-addr.arpa", "PTR"): ["gw.example.com."],
        ("gw.example.com", "A"): ["192.0.2.10"],
    }).start()
    yield server
    server.stop()


@pytest.fixture
def machine(monkeypatch, dns):
    """The wizard sees the fixed machine, not the one the tests run on."""
    state = fixed_machine(dns.address)
    monkeypatch.setattr("console.wizard.system.live_state", lambda: state)
    return state


def make_root(tmp_path: Path, mta: dict | None = None) -> Path:
    """A root directory with the configuration an image ships (or the test relay's own)."""
    root = tmp_path / "root"
    (root / "etc/postern").mkdir(parents=True)
    shipped = mta or {"hostname": "postern.localdomain", "listen": ["0.0.0.0:25"], "relay_domains": [],
                      "my_networks": [], "internal_relay": {"host": "", "port": 25, "mx": False},
                      "external_relay": {"host": "", "port": 25, "mx": False}}
    (root / "etc/postern/postern.yaml").write_text(yaml.safe_dump({"mta": shipped}, sort_keys=False))
    return root


def complete_draft(topology: str = "direct", internal_port: int = 25, listen: str = "0.0.0.0:25") -> dict:
    """Answers to every step, as the progress file keeps them."""
    draft = {
        "topology": topology,
        "network": {
            "interfaces": {"eth0": {"dhcp": False, "address": "192.0.2.10/24", "gateway": "192.0.2.1"}},
            "hostname": "gw.example.com",
            "dns": {"servers": ["192.0.2.53"], "search": ["example.com"]},
        },
        "mta": {
            "hostname": "gw.example.com",
            "listen": [listen],
            "relay_domains": ["example.com"],
            "match_subdomains": False,
            "internal_relay": {"host": "192.168.1.10", "port": internal_port, "mx": False},
            "external_relay": {"host": "", "port": 25, "mx": False},
            "my_networks": ["192.168.1.10/32"],
        },
        "tls": {"mode": "self-signed"},
        "admin": {"ssh_keys": [SSH_KEY]},
        "wizard": {"interface": "eth0", "public_address": "192.0.2.10"},
    }
    if topology in ("via-relay", "virus-scanner-via-relay"):
        draft["mta"]["external_relay"] = {"host": "smtp.provider.example", "port": 587, "mx": False}
    if topology == "m365":
        draft["mta"]["internal_relay"] = {"host": "example-com.mail.protection.outlook.com", "port": 25, "mx": False}
        draft["mta"]["external_relay"] = {"host": "example-com.mail.protection.outlook.com", "port": 25, "mx": False}
        draft["mta"]["m365"] = {"tenant_ids": [TENANT]}
        draft["mta"]["my_networks"] = []
    return draft


def save_progress(root: Path, step: str, draft: dict) -> None:
    SetupState(root).save_progress(Progress(step, draft))


async def until(pilot, condition, timeout: float = 15.0, what: str = "the wizard to show it"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await pilot.pause()
        try:
            if condition():
                return
        except Exception:  # the screen may be between two steps
            pass
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}; the screen is {pilot.app.screen!r}")


def step_title(app) -> str:
    from console.wizard.step import StepScreen

    screen = app.screen
    return f"{screen.number}/{screen.total} {screen.TITLE}" if isinstance(screen, StepScreen) else ""


async def at_step(pilot, number: int) -> None:
    await until(pilot, lambda: step_title(pilot.app).startswith(f"{number}/"), what=f"step {number}")


def text_of(app, selector: str) -> str:
    return str(app.screen.query_one(selector).render())
