"""Debian's security updates in the console: the System screen's line and its U switch (after a yes), the
dashboard's host panel saying that a reboot waits or that they are off. The files are under the test's
root, as in `make run`'s sandbox."""

from __future__ import annotations

import datetime
from pathlib import Path

from rich.text import Text

from appliance.security_updates import (AUTO_UPGRADES, LOG, PACKAGE_CONFIG, REBOOT_PACKAGES, REBOOT_REQUIRED,
                                        SecurityUpdates)
from console.host import HostFacts
from console.screens.dashboard import host_text
from tests.console.conftest import text_of, until

from .appliance_support import Recorder, console

ON = 'APT::Periodic::Update-Package-Lists "1";\nAPT::Periodic::Unattended-Upgrade "1";\n'
LOG_TEXT = """\
2026-12-06 06:12:44,018 INFO Starting unattended upgrades script
2026-12-06 06:12:44,019 INFO Allowed origins are: origin=Debian,codename=trixie-security,label=Debian-Security
2026-12-06 06:12:47,101 INFO Packages that will be upgraded: libc6 linux-image-amd64
2026-12-06 06:13:32,553 INFO All upgrades installed
"""


def appliance_root(tmp_path: Path, reboot: str | None = "linux-image-amd64\nlibc6\n") -> Path:
    root = tmp_path / "root"
    files = {AUTO_UPGRADES: ON, PACKAGE_CONFIG: "// the package's own\n", LOG: LOG_TEXT}
    if reboot is not None:
        files.update({REBOOT_REQUIRED: "*** System restart required ***\n", REBOOT_PACKAGES: reboot})
    for relative, content in files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(content)
    return root


def security_line(app) -> str:
    lines = [line for line in text_of(app, "#system-facts").splitlines() if line.startswith("Security")]
    return " ".join(" ".join(lines).split())


async def test_the_system_screen_says_the_last_run_and_u_switches_after_a_yes(tmp_path):
    root = appliance_root(tmp_path)
    app = console(tmp_path, root=root, run_command=Recorder(), allow_shell=False)
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.press("f11")
        await until(pilot, lambda: "Security" in text_of(app, "#system-facts"), what="the security line")
        line = security_line(app)
        assert line.startswith("Security automatic, last run ") and line.endswith(
            "ago: 2 packages upgraded; reboot needed (linux-image-amd64, libc6)")
        assert "u Security updates: switch" in text_of(app, "#system-actions")

        await pilot.press("u")
        await until(pilot, lambda: type(app.screen).__name__ == "ConfirmScreen", what="the question")
        assert "Stop installing Debian's security updates automatically?" in " ".join(
            str(app.screen.query_one("#question").render()).split())
        await pilot.press("n")
        await until(pilot, lambda: "cancelled" in text_of(app, "#area-notice"), what="the answer")
        assert (root / AUTO_UPGRADES).read_text() == ON

        await pilot.press("u", "y")
        await until(pilot, lambda: "Security off, last run" in security_line(app), what="the line read again")
        assert text_of(app, "#area-notice").startswith("Security updates: off (")
        assert (root / AUTO_UPGRADES).read_text() == ON.replace('"1"', '"0"')

        await pilot.press("u")
        await until(pilot, lambda: type(app.screen).__name__ == "ConfirmScreen", what="the question")
        assert "Install Debian's security updates automatically?" in " ".join(
            str(app.screen.query_one("#question").render()).split())
        await pilot.press("y")
        await until(pilot, lambda: "Security automatic" in security_line(app), what="on again")
        assert (root / AUTO_UPGRADES).read_text() == ON


async def test_without_the_package_the_switch_says_nothing_runs(tmp_path):
    """`make run`'s sandbox: no unattended-upgrades under its root; the switch is still only a file there."""
    root = tmp_path / "sandbox"
    root.mkdir()
    host = Path("/") / AUTO_UPGRADES
    before = host.read_bytes() if host.exists() else None
    app = console(tmp_path, root=root, run_command=Recorder(), allow_shell=False)
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.press("f11")
        await until(pilot, lambda: "Security" in text_of(app, "#system-facts"), what="the security line")
        assert security_line(app) == "Security unattended-upgrades is not installed (switched off)"
        await pilot.press("u")
        await until(pilot, lambda: type(app.screen).__name__ == "ConfirmScreen", what="the question")
        assert "not installed on this system" in " ".join(str(app.screen.query_one("#question").render()).split())
        await pilot.press("y")
        await until(pilot, lambda: "(switched on)" in security_line(app), what="the switch written")
    assert (root / AUTO_UPGRADES).read_text() == ON
    assert (host.read_bytes() if host.exists() else None) == before  # this host's own switch is left alone


async def test_hostile_log_text_never_reaches_the_screen(tmp_path):
    root = appliance_root(tmp_path, reboot=None)
    (root / LOG).write_text("2026-12-06 06:12:44,018 INFO Starting unattended upgrades script\n"
                            "2026-12-06 06:12:45,000 ERROR \x1b]2;owned\x07\x1b[2Jboom\n")
    app = console(tmp_path, root=root, run_command=Recorder(), allow_shell=False)
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.press("f11")
        await until(pilot, lambda: "Security" in text_of(app, "#system-facts"), what="the security line")
        assert security_line(app).endswith("ago: failed: ?]2;owned??[2Jboom")


async def test_the_dashboard_says_a_reboot_waits(tmp_path):
    root = appliance_root(tmp_path)
    app = console(tmp_path, root=root, run_command=Recorder(), allow_shell=False)
    async with app.run_test(size=(80, 25)) as pilot:
        await until(pilot, lambda: "Reboot needed (2 security updates)" in text_of(app, "#system"),
                    what="the reboot line")
        assert "Security updates ran " in text_of(app, "#system")  # the last run
        assert "Security updates off" not in text_of(app, "#system")
        (root / REBOOT_REQUIRED).unlink()
        (root / AUTO_UPGRADES).write_text(ON.replace('"1"', '"0"'))
        app.screen.refresh_host()
        await until(pilot, lambda: "Security updates off" in text_of(app, "#system"), what="the off line")
        assert "Reboot needed" not in text_of(app, "#system")


def facts(updates: SecurityUpdates | None) -> HostFacts:
    return HostFacts("gw.example.com", "Debian GNU/Linux 13 (trixie)", "6.12.9-amd64", 3600.0, 1,
                     ["eth0 192.0.2.10"], 20.0, 10.0, 30.0, 0.1, updates)


def yellow_lines(text: Text) -> list[str]:
    return [text.plain[span.start:span.end].strip() for span in text.spans if "yellow" in str(span.style)]


def test_the_host_panel_lines():
    assert yellow_lines(host_text(facts(None))) == []
    assert yellow_lines(host_text(facts(SecurityUpdates(True, True)))) == []
    assert yellow_lines(host_text(facts(SecurityUpdates(True, True, reboot_required=True,
                                                        reboot_packages=["linux-image-amd64"])))) == [
        "Reboot needed (1 security update)"]
    assert yellow_lines(host_text(facts(SecurityUpdates(False, True, reboot_required=True)))) == [
        "Reboot needed", "Security updates off"]
    failed = SecurityUpdates(True, True, last_outcome="failed: E:dpkg was interrupted")
    failed.last_run = datetime.datetime.now().astimezone()
    assert yellow_lines(host_text(facts(failed))) == ["Security updates failed 0 min ago"]
    assert "Security updates not run yet" in host_text(facts(SecurityUpdates(True, True))).plain
    # Not installed at all (a development machine, the sandbox): nothing to say on the dashboard.
    assert yellow_lines(host_text(facts(SecurityUpdates(False, False)))) == []
