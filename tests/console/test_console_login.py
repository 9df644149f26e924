"""The console's login: locked status screen, the admin's password through real PAM, first boot.

The console runs as root here, as on the VM's screen. The login tests run their console in a
private mount namespace (tests/console/login_support.py) whose /etc has an `admin` with a
known password and the image's /etc/pam.d/postern-console: PAM, pam_unix and runuser are
the real ones, and the host's /etc is left alone. Each scenario below is an ordinary async
function that the test runs in that namespace.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from console.app import make_app
from console.login import ssh_host_keys
from tests.console.conftest import until
from tests.console.login_support import ADMIN_PASSWORD, PamWorld, usable

pytestmark = pytest.mark.console_login
WHY_NOT = usable()
needs_namespace = pytest.mark.skipif(bool(WHY_NOT), reason=WHY_NOT)


def screen_name(app) -> str:
    return type(app.screen).__name__


def text(app, selector: str) -> str:
    return str(app.screen.query_one(selector).render())


async def type_password(pilot, password: str) -> None:
    await until(pilot, lambda: not pilot.app.screen.query_one("#lock-password").disabled, what="the prompt")
    pilot.app.screen.query_one("#lock-password").value = password
    await pilot.press("enter")


# --- the scenarios, run in the namespace ---------------------------------------------------------


async def locked_then_unlocked(socket: str, root: str, fingerprint: str) -> None:
    app = make_app(socket, os.path.join(root, "postern.yaml"), root=root, run_command=lambda *a, **k: None,
                   fail_delay=1.0)
    async with app.run_test(size=(80, 25)) as pilot:
        await until(pilot, lambda: screen_name(app) == "LockScreen", what="the locked screen")
        await until(pilot, lambda: fingerprint in text(app, "#lock-status"), what="the SSH fingerprint")
        status = text(app, "#lock-status")
        assert os.uname().nodename in status, status
        await until(pilot, lambda: "queue 3" in text(app, "#lock-status"), what="the relay's queue")
        assert "Password for admin" in text(app, "#lock-prompt")
        # Nothing gets past it: area keys, the palette, Escape.
        for key in ("f11", "f2", "ctrl+p", "escape", "f12"):
            await pilot.press(key)
            await pilot.pause()
            assert screen_name(app) == "LockScreen", f"{key} left the locked screen"
        started = time.monotonic()
        await type_password(pilot, "not the password")
        await until(pilot, lambda: "Wrong password" in text(app, "#lock-notice"), what="the refusal")
        assert time.monotonic() - started >= 1.0  # the wait after a wrong password
        assert screen_name(app) == "LockScreen"
        await type_password(pilot, "")  # an empty password is wrong too, even to a nullok PAM stack
        await until(pilot, lambda: "Wrong password" in text(app, "#lock-notice"), what="the refusal")
        await type_password(pilot, ADMIN_PASSWORD)
        await until(pilot, lambda: screen_name(app) == "DashboardScreen", what="the dashboard")
        await pilot.press("f11")
        await until(pilot, lambda: screen_name(app) == "SystemScreen", what="the system screen")
        assert "press s for admin's own login shell" in text(app, "#system-actions")
        await pilot.press("f12")  # Lock
        await until(pilot, lambda: screen_name(app) == "LockScreen", what="locked again")
        await pilot.press("f2")
        await pilot.pause()
        assert screen_name(app) == "LockScreen"


async def locks_itself_when_idle(socket: str, root: str) -> None:
    app = make_app(socket, os.path.join(root, "postern.yaml"), root=root, idle_lock=1.0)
    app.IDLE_CHECK = 0.2
    async with app.run_test(size=(80, 25)) as pilot:
        await type_password(pilot, ADMIN_PASSWORD)
        await until(pilot, lambda: screen_name(app) == "DashboardScreen", what="the dashboard")
        await until(pilot, lambda: screen_name(app) == "LockScreen", timeout=30, what="the lock after idle time")


async def the_shell_is_the_admins(socket: str, root: str) -> None:
    app = make_app(socket, os.path.join(root, "postern.yaml"), root=root)
    command = app.appliance.commands.shell()
    assert command[0] == "runuser" and command[-1] == "admin", command
    done = subprocess.run(command, input="id -un; id -u; echo $HOME\n", capture_output=True, text=True, timeout=30)
    user, uid, home = done.stdout.split()[:3]
    assert (user, home) == ("admin", os.path.expanduser("~admin")) and uid != "0", done


# --- the tests -----------------------------------------------------------------------------------


@pytest.fixture
def world(tmp_path):
    return PamWorld(tmp_path / "world")


def host_key(root) -> str:
    (root / "etc/ssh").mkdir(parents=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(root / "etc/ssh/ssh_host_ed25519_key")],
                   check=True)
    listed = subprocess.run(["ssh-keygen", "-l", "-f", str(root / "etc/ssh/ssh_host_ed25519_key.pub")],
                            capture_output=True, text=True, check=True).stdout.split()
    return listed[1]


def test_host_key_fingerprints_are_those_ssh_keygen_prints(tmp_path):
    (tmp_path / "etc/ssh").mkdir(parents=True)
    for kind, bits in (("ed25519", []), ("ecdsa", ["-b", "384"]), ("rsa", ["-b", "2048"])):
        subprocess.run(["ssh-keygen", "-q", "-t", kind, *bits, "-N", "", "-f",
                        str(tmp_path / f"etc/ssh/ssh_host_{kind}_key")], check=True)
    (tmp_path / "etc/ssh/ssh_host_bogus_key.pub").write_text("ssh-ed25519 not-base64!\n")
    expected = sorted(subprocess.run(["ssh-keygen", "-l", "-f", str(path)], capture_output=True, text=True,
                                     check=True).stdout.split(maxsplit=2)[1]
                      for path in (tmp_path / "etc/ssh").glob("ssh_host_*_key.pub") if "bogus" not in path.name)
    keys = ssh_host_keys(tmp_path)
    assert sorted(key.fingerprint for key in keys) == expected
    assert {(key.kind, key.bits) for key in keys} == {("ED25519", 256), ("ECDSA", 384), ("RSA", 2048)}


@needs_namespace
def test_the_console_is_locked_until_the_admins_password(world, queued_relay, tmp_path):
    root = tmp_path / "root"
    fingerprint = host_key(root)
    world.run_scenario(__name__, "locked_then_unlocked", str(queued_relay.socket), str(root), fingerprint)


@needs_namespace
def test_the_locked_screen_with_the_relay_down(world, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    world.run_scenario(__name__, "relay_down", str(tmp_path / "nobody.sock"), str(root))


async def relay_down(socket: str, root: str) -> None:
    app = make_app(socket, os.path.join(root, "postern.yaml"), root=root)
    async with app.run_test(size=(80, 25)) as pilot:
        await until(pilot, lambda: screen_name(app) == "LockScreen", what="the locked screen")
        await until(pilot, lambda: "not running" in text(app, "#lock-status"), what="the relay's state")
        assert "no host keys yet" in text(app, "#lock-status")
        await type_password(pilot, ADMIN_PASSWORD)
        await until(pilot, lambda: screen_name(app) == "DashboardScreen", what="the dashboard")


@needs_namespace
def test_it_locks_itself_after_idle_time(world, tmp_path):
    world.run_scenario(__name__, "locks_itself_when_idle", str(tmp_path / "nobody.sock"), str(tmp_path))


@needs_namespace
def test_the_shell_runs_as_the_admin_not_root(world, tmp_path):
    world.run_scenario(__name__, "the_shell_is_the_admins", str(tmp_path / "nobody.sock"), str(tmp_path))


def test_a_console_that_is_not_root_on_a_pseudo_terminal_asks_nothing(tmp_path):
    """An SSH login or `make run`: the user has logged in already, the console gives only what they have."""
    if os.geteuid() != 0:
        pytest.skip("needs root to start a process as nobody")
    code = ("import os, sys; from console import login; "
            "print(login.login_required(), login.login_user(), login.on_real_terminal())")
    done = subprocess.run(["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups",
                           sys.executable, "-c", code], capture_output=True, text=True, cwd=os.getcwd(),
                          stdin=subprocess.DEVNULL)
    assert done.stdout.split() == ["False", "nobody", "False"], done.stderr
