"""The system screen: reboot and power off only after a yes, through the command runner; a shell when allowed.

Nothing is ever rebooted: the app gets a recorder as its command runner. The shell is
opened for real in a terminal (tmux), after the admin's password, as the admin.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from console.system.commands import CommandResult, run_command
from tests.console.conftest import text_of, until
from tests.console.test_linux_console import Tmux

from . import login_support
from .appliance_support import Recorder, console


async def system_screen(pilot):
    await pilot.press("f11")
    await until(pilot, lambda: type(pilot.app.screen).__name__ == "SystemScreen", what="the system screen")
    await until(pilot, lambda: "Hostname" in text_of(pilot.app, "#system-facts"), what="the facts")
    return pilot.app.screen


async def test_the_system_screen_and_the_dashboard_name_the_host_alike(tmp_path, monkeypatch):
    """Both read the one set of host facts: the name the resolver gives, not the kernel's short one."""
    monkeypatch.setattr(socket, "getfqdn", lambda name="": "gw.mail.example.com")
    app = console(tmp_path, run_command=Recorder(), allow_shell=False)
    async with app.run_test(size=(80, 25)) as pilot:
        await until(pilot, lambda: "gw.mail.example.com" in text_of(app, "#system"), what="the dashboard's host name")
        await system_screen(pilot)
        assert "Hostname   gw.mail.example.com" in text_of(app, "#system-facts")


@pytest.mark.parametrize("key, command", [("r", ["systemctl", "reboot"]), ("p", ["systemctl", "poweroff"]),
                                          ("l", ["systemctl", "restart", "postern-relay.service"])])
async def test_power_commands_run_only_after_a_yes(tmp_path, key, command):
    """On the appliance itself (root /): the recorder stands in for the real runner."""
    recorder = Recorder()
    app = console(tmp_path, root=Path("/"), run_command=recorder, allow_shell=False)
    async with app.run_test(size=(80, 25)) as pilot:
        await system_screen(pilot)
        await pilot.press(key)
        await until(pilot, lambda: type(app.screen).__name__ == "ConfirmScreen", what="the question")
        await pilot.press("n")
        await until(pilot, lambda: "cancelled" in text_of(app, "#area-notice"), what="the answer")
        assert recorder.calls == []
        await pilot.press(key)
        await until(pilot, lambda: type(app.screen).__name__ == "ConfirmScreen", what="the question")
        await pilot.press("escape")  # Escape is no too
        await pilot.pause()
        assert recorder.calls == []
        await pilot.press(key, "y")
        await until(pilot, lambda: "..." not in text_of(app, "#area-notice"), what="the command")
        assert recorder.calls == [(command, False)]
        assert any(words in text_of(app, "#area-notice") for words in ("under way", "reconnects"))


@pytest.mark.parametrize("key", ["r", "p", "l"])
async def test_the_sandbox_never_reboots_powers_off_or_restarts_anything(tmp_path, key):
    """Under another root (make run, --root), the commands would act on the host: refused, no question asked."""
    recorder = Recorder()
    app = console(tmp_path, run_command=recorder, allow_shell=False)
    async with app.run_test(size=(80, 25)) as pilot:
        await system_screen(pilot)
        assert text_of(app, "#system-actions").count("not in the sandbox") == 3
        await pilot.press(key)
        await until(pilot, lambda: "refused in the sandbox" in text_of(app, "#area-notice"), what="the refusal")
        await pilot.press("y")
        await pilot.pause()
        assert type(app.screen).__name__ == "SystemScreen"
        assert recorder.calls == []


async def test_a_refused_command_is_said_in_words(tmp_path):
    recorder = Recorder(CommandResult(1, "Failed to reboot system via logind: Access denied"))
    app = console(tmp_path, root=Path("/"), run_command=recorder, allow_shell=False)
    async with app.run_test(size=(80, 25)) as pilot:
        await system_screen(pilot)
        await pilot.press("r", "y")
        await until(pilot, lambda: "failed" in text_of(app, "#area-notice"), what="the failure")
        assert text_of(app, "#area-notice") == ("Reboot failed (exit code 1): Failed to reboot system via logind: "
                                                "Access denied")


async def test_no_shell_unless_allowed(tmp_path):
    recorder = Recorder()
    app = console(tmp_path, run_command=recorder, allow_shell=False)
    async with app.run_test(size=(80, 25)) as pilot:
        await system_screen(pilot)
        assert "Shell: not offered on this console" in text_of(app, "#system-actions")
        await pilot.press("s")
        await pilot.pause()
        assert "not offered" in text_of(app, "#area-notice")
        assert recorder.calls == []
        await pilot.press("escape")
        await until(pilot, lambda: type(app.screen).__name__ == "DashboardScreen", what="Escape to go back")


def test_the_real_runner_reports_exit_codes_and_missing_programs():
    assert run_command(["true"]) == CommandResult(0, "")
    assert run_command([sys.executable, "-c", "import sys; sys.exit('no way')"]) == CommandResult(1, "no way")
    assert run_command(["/nonexistent/systemctl"]).returncode == 127


@pytest.mark.console_login
@pytest.mark.skipif(not shutil.which("tmux"), reason="needs tmux (scripts/install-test-packages installs it)")
@pytest.mark.skipif(bool(login_support.usable()), reason=login_support.usable() or "")
def test_after_the_login_the_shell_is_the_admins_and_gives_the_terminal_back(tmp_path):
    """As on the VM's screen: the console runs as root, asks for the admin's password (real PAM, in a
    private mount namespace with its own admin), and S on System opens the admin's shell, not root's."""
    world = login_support.PamWorld(tmp_path / "world")
    tmux = Tmux()
    command = (f"TERM=linux {sys.executable} -m console --socket {tmp_path / 'none.sock'} "
               f"--config {tmp_path / 'postern.yaml'} --root {tmp_path}; sleep 60")
    subprocess.run(world.command(["tmux", "-L", tmux.socket, "new-session", "-d", "-s", "console", "-x", "80",
                                  "-y", "25", "-c", os.getcwd(), command]), check=True, timeout=20)
    try:
        screen = tmux.wait_for("Password for admin")
        assert "Dashboard" not in screen and "Relay: not running" in screen
        tmux.run("send-keys", "-t", "console", "F11")  # refused while locked
        tmux.run("send-keys", "-t", "console", "-l", "guess")
        tmux.run("send-keys", "-t", "console", "Enter")
        screen = tmux.wait_for("Wrong password")
        assert "guess" not in screen  # not echoed
        tmux.run("send-keys", "-t", "console", "-l", login_support.ADMIN_PASSWORD)
        tmux.run("send-keys", "-t", "console", "Enter")
        tmux.wait_for("| Dashboard |")
        tmux.run("send-keys", "-t", "console", "F11")
        tmux.wait_for("press s for admin's own login shell")
        tmux.run("send-keys", "-t", "console", "s")
        tmux.wait_for("type exit to return to the console")
        time.sleep(1)
        tmux.run("send-keys", "-t", "console", "-l", "echo I am $(id -un) uid $(id -u)")
        tmux.run("send-keys", "-t", "console", "Enter")
        screen = tmux.wait_for(f"I am admin uid {world.uid}")
        tmux.run("send-keys", "-t", "console", "-l", "exit")
        tmux.run("send-keys", "-t", "console", "Enter")
        screen = tmux.wait_for("Back from the shell")
        assert "exit code 0)" in " ".join(screen.split()) and "Traceback" not in screen
    finally:
        subprocess.run(["tmux", "-L", tmux.socket, "kill-server"], capture_output=True)


async def test_each_system_area_is_found_by_name_in_the_palette_and_escape_goes_back(tmp_path):
    app = console(tmp_path, run_command=Recorder(), allow_shell=False)
    async with app.run_test(size=(80, 25)) as pilot:
        for name, screen in (("Network", "NetworkScreen"), ("Diagnostics", "DiagnosticsScreen"),
                             ("Certificates", "CertificatesScreen"), ("System", "SystemScreen")):
            await pilot.press("ctrl+p", *name)
            await until(pilot, lambda: name in str(app.screen.query_one("CommandList").get_option_at_index(0).prompt),
                        what=f"{name} in the palette")
            await pilot.press("enter")
            await until(pilot, lambda: type(app.screen).__name__ == screen, what=f"the {name} screen")
            await pilot.press("escape")
            await until(pilot, lambda: type(app.screen).__name__ == "DashboardScreen", what="the dashboard again")
