"""`apply` and `try` for real, inside a network namespace with veth pairs, checked with `ip -n NS -j`.

The commands run as the admin runs them (`postern-appliance ...` as a process), through
netlink since no systemd-networkd runs in the namespace.
"""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import socket
import subprocess
import time

import pytest

from appliance.network.apply import Previous, Target, apply_network, rollback
from appliance.network.model import parse_network

from .conftest import COMMAND, ROOT, files_under, write_config

NEW = {
    "network": {
        "hostname": "gw.example.com",
        "interfaces": {"eth0": {"address": ["192.0.2.10/24", "2001:db8::10/64"],
                                "gateway": ["192.0.2.1", "2001:db8::1"], "mtu": 1400}},
        "dns": {"servers": ["192.0.2.53"], "search": ["example.com"]},
    }
}
NEW_ETH0 = {
    "mtu": 1400, "up": True,
    "addresses": [("inet", "192.0.2.10", 24, "192.0.2.255", "permanent"),
                  ("inet6", "2001:db8::10", 64, None, "permanent")],
}


@pytest.fixture
def root(tmp_path):
    """A root directory as an admin left it: a hostname, hosts with its own mode, resolv.conf a link."""
    root = tmp_path / "root"
    (root / "etc/systemd/network").mkdir(parents=True)
    (root / "etc/hostname").write_text("old.example.com\n")
    (root / "etc/hosts").write_text("127.0.0.1 localhost\n198.51.100.5 old.example.com old\n")
    os.chmod(root / "etc/hosts", 0o640)
    os.symlink("/run/resolvconf/resolv.conf", root / "etc/resolv.conf")
    (root / "etc/systemd/network/10-postern-eth1.network").write_text("[Match]\nName=eth1\n[Network]\nDHCP=ipv4\n")
    return root


@pytest.fixture
def config(tmp_path):
    return write_config(tmp_path / "postern.yaml", NEW)


def new_routes(routes):
    return {(r[1], r[2], r[3]) for r in routes}


def test_apply_sets_addresses_routes_mtu_files_and_hostname(old_network, root, config):
    result = subprocess.run(
        old_network.command("apply", "--config", str(config), "--root", str(root), then="cat /proc/sys/kernel/hostname"),
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert "applied through netlink" in result.stdout
    assert result.stdout.strip().splitlines()[-1] == "gw.example.com"  # the kernel's hostname, in that UTS namespace

    state = old_network.state()
    assert state["links"]["eth0"] == NEW_ETH0
    routes = new_routes(state["routes"])
    assert ("default", "192.0.2.1", "eth0") in routes and ("default", "2001:db8::1", "eth0") in routes
    assert ("192.0.2.0/24", None, "eth0") in routes
    assert not any("198.51.100" in str(r) or "203.0.113" in str(r) for r in routes)  # the old ones are gone
    assert (root / "etc/hostname").read_text() == "gw.example.com\n"
    assert (root / "etc/resolv.conf").read_text().endswith("nameserver 192.0.2.53\nsearch example.com\n")
    assert not (root / "etc/systemd/network/10-postern-eth1.network").exists()  # eth1 is no longer configured

    again = old_network.run("apply", "--config", str(config), "--root", str(root))
    assert again.returncode == 0 and "the files are already up to date" in again.stdout
    assert old_network.state() == state


def test_try_without_confirmation_restores_addresses_routes_files_and_hostname(old_network, root, config):
    old_network.ip("addr", "add", "198.51.100.9/24", "dev", "eth0", "valid_lft", "600", "preferred_lft", "600")
    kernel_before, files_before = old_network.state(), files_under(root)
    started = time.monotonic()
    result = subprocess.run(
        old_network.command("try", "--config", str(config), "--root", str(root), "--timeout", "1", then="cat /proc/sys/kernel/hostname"),
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )
    assert result.returncode == 4, result.stderr
    assert time.monotonic() - started < 10
    assert "not confirmed: the previous network configuration is restored" in result.stdout
    assert old_network.state() == kernel_before  # the lease is back as a lease, the routes as they were
    after = {k: v for k, v in files_under(root).items() if not k.startswith("run/")}  # run/: the try's record
    assert after == files_before  # bytes, modes, the link and the removed file, exactly
    assert result.stdout.strip().splitlines()[-1] == socket.gethostname()
    assert not (root / "run/postern/network-try.json").exists()


def _wait_for_line(process, text: str, timeout: float = 20) -> str:
    seen = ""
    deadline = time.monotonic() + timeout
    while text not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], 0.1)
        if ready:
            chunk = os.read(process.stdout.fileno(), 4096).decode()
            if not chunk:
                break
            seen += chunk
    assert text in seen, seen
    return seen


def _start_try(namespace, config, root, timeout="30", stdin=subprocess.DEVNULL):
    process = subprocess.Popen(
        namespace.command("try", "--config", str(config), "--root", str(root), "--timeout", timeout),
        stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT,
    )
    _wait_for_line(process, "Keep this network configuration?")
    return process


def test_confirm_keeps_the_new_state_even_after_the_terminal_hung_up(old_network, root, config):
    process = _start_try(old_network, config, root)
    try:
        os.kill(process.pid, signal.SIGHUP)  # the SSH session that started it dropped
        time.sleep(0.3)
        assert process.poll() is None
        confirm = subprocess.run([COMMAND, "confirm", "--root", str(root)], capture_output=True, text=True, timeout=30)
        assert confirm.returncode == 0, confirm.stderr
        assert confirm.stdout.strip() == "confirmed: the new network configuration stays"
        assert process.wait(timeout=10) == 0
    finally:
        process.kill()
    assert old_network.state()["links"]["eth0"] == NEW_ETH0
    assert (root / "etc/hostname").read_text() == "gw.example.com\n"
    again = subprocess.run([COMMAND, "confirm", "--root", str(root)], capture_output=True, text=True, timeout=30)
    assert again.returncode == 5
    assert again.stderr.strip() == "postern-appliance: no network change is waiting for confirmation"


def test_enter_on_the_terminal_confirms(old_network, root, config):
    controller, terminal = pty.openpty()
    try:
        process = _start_try(old_network, config, root, stdin=terminal)
        os.write(controller, b"\n")
        assert process.wait(timeout=10) == 0
    finally:
        os.close(controller)
        os.close(terminal)
    assert old_network.state()["links"]["eth0"] == NEW_ETH0


def test_ctrl_c_rolls_back_at_once(old_network, root, config):
    before = old_network.state()
    process = _start_try(old_network, config, root, timeout="60")
    os.kill(process.pid, signal.SIGINT)
    assert process.wait(timeout=10) == 4
    assert old_network.state() == before


def test_rollback_undoes_a_try_whose_process_was_killed(old_network, root, config):
    kernel_before, files_before = old_network.state(), files_under(root)
    process = _start_try(old_network, config, root, timeout="60")
    process.kill()
    process.wait(timeout=10)
    assert old_network.state()["links"]["eth0"] == NEW_ETH0
    again = old_network.run("try", "--config", str(config), "--root", str(root))
    assert again.returncode == 3 and "run 'postern-appliance rollback'" in again.stderr
    result = old_network.run("rollback", "--root", str(root))
    assert result.returncode == 0, result.stderr
    assert old_network.state() == kernel_before
    assert {k: v for k, v in files_under(root).items() if not k.startswith("run/")} == files_before


def test_a_change_the_kernel_refuses_halfway_is_undone(old_network, root, config):
    subprocess.run(["ip", "netns", "exec", old_network.name, "sysctl", "-qw", "net.ipv6.conf.eth0.disable_ipv6=1"], check=True)
    kernel_before, files_before = old_network.state(), files_under(root)
    result = old_network.run("apply", "--config", str(config), "--root", str(root))
    assert result.returncode == 3
    assert result.stderr.startswith("postern-appliance: eth0: adding 2001:db8::10/64: ")
    assert "nothing was changed (the previous files and addresses are restored)" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert old_network.state() == kernel_before
    assert files_under(root) == files_before


def test_apply_and_rollback_in_process_through_a_saved_record(old_network, tmp_path):
    config, _ = parse_network({"interfaces": {"eth0": {"address": "192.0.2.10/24", "gateway": "192.0.2.1"},
                                              "eth1": {"address": "198.51.100.20/24"}},
                               "dns": {"servers": ["192.0.2.53"]}})
    before = old_network.state()
    applied = apply_network(config, Target(tmp_path, old_network.name, set_hostname=False))
    assert [a[1] for a in old_network.state()["links"]["eth1"]["addresses"]] == ["198.51.100.20"]
    record = json.loads(json.dumps(applied.previous.to_json()))
    rollback(Previous.from_json(record))
    assert old_network.state() == before
    assert not (tmp_path / "etc").exists() or not any((tmp_path / "etc").rglob("*.network"))
