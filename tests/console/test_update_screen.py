"""System > Update: the releases and the bundles of a root, checked for real; installing and rolling back
only after a yes, through the command runner (a recorder: nothing is installed here; the update itself
is tested in tests/appliance/test_update.py and on the image)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from appliance import bundle as bundles
from console.screens.update import UpdateScreen
from tests.console.conftest import text_of, until
from tests.support.bundles import make_bundle, trust

from .appliance_support import Recorder, console


def release(root: Path, name: str, installed: str) -> None:
    directory = root / "opt/postern/releases" / name
    directory.mkdir(parents=True)
    (directory / "postern-release.json").write_text(json.dumps({"version": "0.1.0", "schema": 1, "installed": installed}))


@pytest.fixture
def root(tmp_path) -> Path:
    """Two releases (one running, one kept), a trusted key, a good bundle in the admin's home and a
    foreign one in /var/tmp."""
    root = tmp_path / "root"
    release(root, "0.1.0-aaaaaaaaaaaa", "2026-11-01T10:00:00Z")
    release(root, "0.1.0-bbbbbbbbbbbb", "2026-12-01T10:00:00Z")
    os.symlink("releases/0.1.0-bbbbbbbbbbbb", root / "opt/postern/current")
    os.symlink("releases/0.1.0-aaaaaaaaaaaa", root / "opt/postern/previous")
    key = bundles.new_key()
    trust(root, key)
    (root / "home/admin").mkdir(parents=True)
    (root / "var/tmp").mkdir(parents=True)
    make_bundle(tmp_path, "good", key).rename(root / "home/admin/postern-next.update")
    make_bundle(tmp_path, "foreign", bundles.new_key()).rename(root / "var/tmp/postern-foreign.update")
    return root


async def update_screen(pilot):
    await pilot.press("f11")
    await until(pilot, lambda: type(pilot.app.screen).__name__ == "SystemScreen", what="the system screen")
    await pilot.press("i")
    await until(pilot, lambda: isinstance(pilot.app.screen, UpdateScreen), what="the update screen")
    await until(pilot, lambda: "running" in text_of(pilot.app, "#update-releases"), what="the releases")
    return pilot.app.screen


def listed(screen) -> list[tuple[str, str]]:
    """(the path shown, the option's id) of each bundle listed."""
    options = screen.query_one("#update-bundles")
    return [(str(option.prompt), option.id) for option in
            (options.get_option_at_index(index) for index in range(options.option_count))]


async def choose(pilot, index: int) -> str:
    options = pilot.app.screen.query_one("#update-bundles")
    options.focus()
    options.highlighted = index
    await pilot.press("enter")
    await until(pilot, lambda: "Checking" not in text_of(pilot.app, "#update-verdict"), what="the check")
    return text_of(pilot.app, "#update-verdict")


async def test_the_releases_and_bundles_are_listed_and_checked(tmp_path, root):
    recorder = Recorder()
    app = console(tmp_path, root=root, run_command=recorder, allow_shell=False)
    async with app.run_test(size=(80, 25)) as pilot:
        screen = await update_screen(pilot)
        releases = text_of(app, "#update-releases")
        assert "running  0.1.0-bbbbbbbbbbbb" in releases and "previous 0.1.0-aaaaaaaaaaaa" in releases
        shown = [prompt for prompt, _ in listed(screen)]
        assert sorted(shown) == ["home/admin/postern-next.update", "var/tmp/postern-foreign.update"]
        order = [option for _, option in listed(screen)]
        good = order.index(str(root / "home/admin/postern-next.update"))
        verdict = await choose(pilot, good)
        assert "Signature good" in verdict and "Press i to install" in verdict
        # The sandbox never installs: the power actions' rule.
        await pilot.press("i")
        await until(pilot, lambda: "refused in the sandbox" in text_of(app, "#area-notice"), what="the refusal")
        verdict = await choose(pilot, 1 - good)
        assert "signature does not verify" in verdict
        await pilot.press("i")
        await until(pilot, lambda: "check a bundle first" in text_of(app, "#area-notice"), what="the refusal")
        # A path typed in: refused when it is not a bundle, in words.
        (root / "tmp").mkdir()
        (root / "tmp/notes.txt").write_text("not a bundle\n")
        screen.query_one("#update-path").focus()
        await pilot.press(*"/tmp/notes.txt", "enter")
        await until(pilot, lambda: "not an update bundle" in text_of(app, "#update-verdict"), what="the check")
        assert recorder.calls == []


async def test_install_and_roll_back_run_the_update_after_a_yes(tmp_path, root, monkeypatch):
    """As on the appliance itself (root /), with a recorder for the runner."""
    monkeypatch.setattr(UpdateScreen, "on_the_appliance", lambda self: True)
    recorder = Recorder()
    app = console(tmp_path, root=root, run_command=recorder, allow_shell=False)
    async with app.run_test(size=(80, 25)) as pilot:
        screen = await update_screen(pilot)
        order = [option for _, option in listed(screen)]
        await choose(pilot, order.index(str(root / "home/admin/postern-next.update")))
        await pilot.press("i")
        await until(pilot, lambda: type(app.screen).__name__ == "ConfirmScreen", what="the question")
        await pilot.press("n")
        await until(pilot, lambda: "cancelled" in text_of(app, "#area-notice"), what="the answer")
        assert recorder.calls == []
        await pilot.press("i", "y")
        await until(pilot, lambda: recorder.calls, what="the update")
        await until(pilot, lambda: "done" in text_of(app, "#area-notice"), what="the result")
        argv, interactive = recorder.calls[-1]
        assert argv[:2] == ["systemd-run", "--quiet"] and argv[-3:] == [
            argv[-3], "update", str(root / "home/admin/postern-next.update")]
        assert argv[-3].endswith("postern-appliance")
        await pilot.press("b")
        await until(pilot, lambda: type(app.screen).__name__ == "ConfirmScreen", what="the question")
        assert "Return to release 0.1.0-aaaaaaaaaaaa" in app.screen.question
        await pilot.press("y")
        await until(pilot, lambda: len(recorder.calls) == 2, what="the rollback")
        assert recorder.calls[-1][0][-2:] == ["update", "--rollback"]
