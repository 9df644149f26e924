"""The system screen: reboot and power off only after a yes, through the command runner; a shell when allowed.

Nothing is ever rebooted: the app gets a recorder as its command runner. The shell is
opened for real in a terminal (tmux), with SHELL set to a script that leaves a mark.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pytest

from console.appliance_link import CommandResult, run_command
from tests.console.conftest import text_of, until
from tests.console.test_linux_console import Tmux

from .appliance_support import Recorder, console


async def system_screen(pilot):
    await pilot.press("f11")
    await until(pilot, lambda: type(pilot.app.screen).__name__ == "SystemScreen", what="the system screen")
    await until(pilot, lambda: "Hostname" in text_of(pilot.app, "#system-facts"), what="the facts")
    return pilot.app.screen


@pytest.mark.parametrize("key, verb", [("r", "reboot"), ("p", "poweroff")])
async def test_power_commands_run_only_after_a_yes(tmp_path, key, verb):
    recorder = Recorder()
    app = console(tmp_path, run_command=recorder, allow_shell=False)
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
        await until(pilot, lambda: "under way" in text_of(app, "#area-notice"), what="the command")
        assert recorder.calls == [(["systemctl", verb], False)]


async def test_a_refused_command_is_said_in_words(tmp_path):
    recorder = Recorder(CommandResult(1, "Failed to reboot system via logind: Access denied"))
    app = console(tmp_path, run_command=recorder, allow_shell=False)
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
        assert "Shell: not allowed" in text_of(app, "#system-actions")
        await pilot.press("s")
        await pilot.pause()
        assert "not allowed" in text_of(app, "#area-notice")
        assert recorder.calls == []
        await pilot.press("escape")
        await until(pilot, lambda: type(app.screen).__name__ == "DashboardScreen", what="Escape to go back")


def test_the_real_runner_reports_exit_codes_and_missing_programs():
    assert run_command(["true"]) == CommandResult(0, "")
    assert run_command([sys.executable, "-c", "import sys; sys.exit('no way')"]) == CommandResult(1, "no way")
    assert run_command(["/nonexistent/systemctl"]).returncode == 127


@pytest.mark.skipif(not shutil.which("tmux"), reason="needs tmux (scripts/install-test-packages installs it)")
def test_the_shell_gets_the_terminal_and_gives_it_back(tmp_path):
    mark = tmp_path / "shell-was-here"
    shell = tmp_path / "shell"
    shell.write_text(f"#!/bin/sh\necho \"$@\" > {mark}\nsleep 0.5\n")
    shell.chmod(0o755)
    tmux = Tmux()
    command = (f"SHELL={shell} TERM=linux {sys.executable} -m console --socket {tmp_path / 'none.sock'} "
               f"--config {tmp_path / 'postern.yaml'} --root {tmp_path} --allow-shell; sleep 60")
    tmux.run("new-session", "-d", "-s", "console", "-x", "80", "-y", "25", "-c", os.getcwd(), command)
    try:
        tmux.wait_for("Dashboard")
        tmux.run("send-keys", "-t", "console", "F11")
        tmux.wait_for("Shell: allowed (--allow-shell)")
        tmux.run("send-keys", "-t", "console", "s")
        deadline = time.monotonic() + 15
        while not mark.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert mark.exists(), tmux.screen()
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
