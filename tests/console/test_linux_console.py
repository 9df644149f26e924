"""The console in a real terminal as the VM's console login sees it: TERM=linux, 80x25.

tmux runs the console against a real relay; every screen is captured, and each
character drawn must be one the kernel console font (Uni2-Fixed16) has.
"""

import os
import shutil
import subprocess
import sys
import time
import uuid

import pytest

from tests.console.login_support import ADMIN_PASSWORD, PamWorld, usable
from tests.support.console_font import UNI2_FIXED16, font_glyphs

pytestmark = pytest.mark.skipif(
    not shutil.which("tmux") or not UNI2_FIXED16.exists(),
    reason="needs tmux and console-setup-linux (scripts/install-test-packages installs them)",
)

# key presses, and what the screen must show once they have taken effect
VISITS = [
    ([], "Password for admin"),
    (["literal:not it", "Enter"], "Wrong password"),
    (["literal:" + ADMIN_PASSWORD, "Enter"], "Dashboard"),
    (["F3"], "QUEUE ID"),
    (["Enter"], "Recipients"),
    (["Escape"], "QUEUE ID"),
    (["g"], "DESTINATION"),
    (["Escape"], "QUEUE ID"),
    (["p"], "Paused domains (migration hold)"),
    (["a"], "Domain to pause"),
    (["Escape", "Escape"], "QUEUE ID"),
    (["d"], "cannot be undone"),
    (["n"], "QUEUE ID"),
    (["s"], "sort: age"),
    (["F1"], "Paused domains"),
    (["F1"], "QUEUE ID"),
    (["F5"], "postern/"),
    (["literal:/", "literal:deferred", "Enter"], "search: deferred"),
    (["w"], "cut at the edge"),
    (["F4"], "ctrl+s shows the changes"),  # the form is loaded and its first field has the focus
    (["literal:x", "C-s"], "Apply 1 change to the running relay?"),
    (["n"], "your edits are kept"),
    (["C-q"], "Your edits in MTA settings are not applied"),
    (["n", "C-r"], "Load the running settings again?"),
    (["y"], "My hostname"),
    (["Escape"], "Dashboard"),
    (["F6"], "SMTP command"),
    (["C-t"], "recipients, comma-separated"),
    (["Escape"], None),
    (["F7"], "Interfaces (Enter edits one)"),
    (["Escape"], "Dashboard"),
    (["F8"], "Results (Enter in a row runs its check)"),
    (["F9"], "Installed certificate"),
    (["s"], "Self-signed certificate"),
    (["Escape"], "Installed certificate"),
    (["F11"], "This appliance"),
    (["r"], "Restart the appliance now?"),
    (["n"], "cancelled"),
    (["F1"], None),
    (["F2"], "Dashboard"),
    (["C-p", "literal:hold"], "Queue: Hold"),
    (["Escape"], "Dashboard"),
    (["F12"], "Password for admin"),
]


class Tmux:
    def __init__(self):
        self.socket = f"postern-test-{uuid.uuid4().hex[:8]}"

    def run(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True,
                              timeout=10, check=True).stdout

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", "console")

    def wait_for(self, text: str, timeout: float = 15.0) -> str:
        deadline = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < deadline:
            screen = self.screen()
            if text in screen:
                return screen
            time.sleep(0.2)
        raise AssertionError(f"{text!r} never appeared; the screen shows:\n{screen}")


@pytest.mark.console_login
@pytest.mark.skipif(bool(usable()), reason=usable() or "")
def test_every_screen_draws_only_what_the_console_font_has(queued_relay, tmp_path):
    """As root, as on the VM's screen: the locked screen first, the admin's password (real PAM, in a
    private mount namespace with its own admin), then every screen."""
    glyphs = font_glyphs() | {chr(c) for c in range(32, 127)}
    tmux = Tmux()
    world = PamWorld(tmp_path / "world")
    # Textual draws on stderr; after a crash, the pane keeps showing what it printed.
    command = (f"TERM=linux {sys.executable} -m console --socket {queued_relay.socket} "
               f"--log {queued_relay.log_path}; sleep 60")
    subprocess.run(world.command(["tmux", "-L", tmux.socket, "new-session", "-d", "-s", "console", "-x", "80",
                                  "-y", "25", "-c", os.getcwd(), command]), check=True, timeout=20)
    try:
        strays: dict[str, str] = {}
        for keys, expected in VISITS:
            for key in keys:
                if key.startswith("literal:"):
                    tmux.run("send-keys", "-t", "console", "-l", key.removeprefix("literal:"))
                else:
                    tmux.run("send-keys", "-t", "console", key)
                time.sleep(0.3)
            screen = tmux.wait_for(expected) if expected else (time.sleep(1.0) or tmux.screen())
            assert "Traceback" not in screen, screen
            for char in set(screen) - glyphs - {"\n"}:
                strays.setdefault(char, f"after {keys or 'start'}:\n{screen}")
        assert not strays, "characters the console font cannot draw: " + ", ".join(
            f"{c!r} (U+{ord(c):04X}) {where}" for c, where in strays.items())
    finally:
        subprocess.run(["tmux", "-L", tmux.socket, "kill-server"], capture_output=True)


# The first-boot wizard, resumed from saved answers at its first step: Next through every step,
# every topology's diagram on the way, the summary scrolled, then apply, the test message, finish.
WIZARD_VISITS = [
    ([], "Setup 1/13"),
    (["Escape"], "This is the first step"),  # the first boot's wizard cannot be left: a notice says so
    (["C-n"], "Keep these settings?"),  # the network files change under the root: kept with Enter
    (["Enter"], "Setup 2/13"),
    (["C-n"], "Setup 3/13"),
    (["C-n"], "Setup 4/13"),
    (["Down"], "Via relay (smart host)"),
    (["Down"], "scanner"),
    (["Down"], "relay server"),
    (["Down"], "connector To Postern"),
    (["Up", "Up", "Up", "Up"], "MX hosts of each domain"),
    (["F1"], None),
    (["F1"], None),
    (["C-n"], "Setup 5/13"),
    (["C-n"], "Setup 6/13"),
    (["C-n"], "Setup 7/13"),
    (["C-n"], "Setup 8/13"),
    (["C-n"], "Setup 9/13"),
    (["C-n"], "Setup 10/13"),
    (["C-n"], "Setup 11/13"),
    (["C-n"], "Setup 12/13"),
    (["PageDown"], None),
    (["C-n"], "Setup 13/13"),
    (["C-n"], "status=sent"),
    (["C-n"], "Password for admin"),  # setup is complete: the console locks (it runs as root)
]


def test_every_wizard_step_draws_only_what_the_console_font_has(make_relay, sink, tmp_path):
    from tests.console.wizard_support import complete_draft, make_root, save_progress

    relay = make_relay(sink.port)
    listen = relay.mta["listen"][0]
    root = make_root(tmp_path, {**relay.mta, "relay_domains": [], "my_networks": [],
                                "internal_relay": {"host": "", "port": 25}})
    draft = complete_draft("direct", listen=listen)
    draft["mta"]["internal_relay"] = {"host": "127.0.0.1", "port": sink.port, "mx": False}
    save_progress(root, "network", draft)
    glyphs = font_glyphs() | {chr(c) for c in range(32, 127)}
    tmux = Tmux()
    command = (f"TERM=linux {sys.executable} -m console --first-boot --root {root} "
               f"--socket {relay.workdir / 'control.sock'}; sleep 60")
    tmux.run("new-session", "-d", "-s", "console", "-x", "80", "-y", "25", "-c", os.getcwd(), command)
    try:
        strays: dict[str, str] = {}
        for keys, expected in WIZARD_VISITS:
            for key in keys:
                tmux.run("send-keys", "-t", "console", key)
                time.sleep(0.3)
            screen = tmux.wait_for(expected, timeout=30) if expected else (time.sleep(1.0) or tmux.screen())
            assert "Traceback" not in screen, screen
            for char in set(screen) - glyphs - {"\n"}:
                strays.setdefault(char, f"after {keys or 'start'}:\n{screen}")
        assert not strays, "characters the console font cannot draw: " + ", ".join(
            f"{c!r} (U+{ord(c):04X}) {where}" for c, where in strays.items())
    finally:
        subprocess.run(["tmux", "-L", tmux.socket, "kill-server"], capture_output=True)
    assert (root / "etc/postern/setup-complete").exists()
    assert sink.messages and sink.messages[0].recipients == ["postmaster@example.com"]
