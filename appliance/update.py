"""Updating Postern from a signed bundle, with a health check and an automatic way back.

Each release lives in its own directory and the running one is chosen by a symbolic link:

    /opt/postern/releases/VERSION-DIGEST/   a virtual environment per release (DIGEST names the bundle)
    /opt/postern/current  -> releases/...    what runs
    /opt/postern/previous -> releases/...    what `update --rollback` returns to
    /opt/postern/bin      -> current/bin     the path the units, /usr/local/bin and scripts use
    /opt/postern/lib      -> current/lib

Versioned directories rather than A/B root partitions: an update replaces Postern and its Python
dependencies only (Debian's packages have their own updates), so it needs a few dozen MiB rather than
a second root file system, and switching is one `rename` of a symbolic link, which is atomic: after a
crash at any point `current` names one whole release, never a mixture. The queue
(/var/lib/postern) and the configuration (/etc/postern) are outside the releases and are shared by all
of them.

`update(bundle)`:
1. verifies the bundle (`appliance.bundle`: signature, every wheel's sha256), installs it into a new
   release directory with pip from its wheels only (no index), and checks the configuration with the
   new release (`postern-relay --check`), after migrating it when the schema changes
   (`appliance.migrations`). Nothing running has changed yet; a failure here leaves all as it was.
2. switches `current` to the new release (`previous` to the old), restarts the relay and waits for
   it to be healthy: a relay process started after the switch answers its control API (which opens
   once the queue is loaded), reports the bundle's version, and greets with 220 on every address it
   listens on.
3. if it is not healthy in time, switches back by itself (the reverse migration first), restarts the
   relay again and checks it; the result says what failed.
4. when healthy: the consoles restart on the new release, and releases other than current and
   previous are removed.

A marker (`/opt/postern/update-pending.json`) is written before the switch and removed after the
check; if the machine stops in between, `finish_pending` (run at boot by postern-update-check.service)
runs the check and switches back when it fails.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from relay.config_file import DEFAULT_CONFIG
from relay.control.client import DEFAULT_SOCKET, ControlClient, ControlError, NoAnswer, PermissionDenied, Unreachable

from . import bundle as bundles
from .files import atomic_symlink, atomic_write, remove_file
from .migrations import SCHEMA

OPT = Path("opt/postern")
RELEASE_FILE = "postern-release.json"
PENDING = "update-pending.json"
RELAY_UNIT = "postern-relay.service"
CONSOLE_UNITS = "postern-console@*.service"
HEALTH_TIMEOUT = 120.0  # the relay's start with a large queue on a slow virtual machine


class UpdateError(Exception):
    """The update was refused before anything running changed."""


@dataclass(frozen=True)
class Release:
    name: str
    version: str
    schema: int
    installed: str


@dataclass(frozen=True)
class Outcome:
    current: str
    previous: str | None
    lines: tuple[str, ...]  # what happened, in order, for the admin


class Layout:
    """The release directories and links under a root ("/" on the appliance)."""

    def __init__(self, root: Path):
        self.root = root
        self.opt = root / OPT
        self.releases = self.opt / "releases"
        self.current_link = self.opt / "current"
        self.previous_link = self.opt / "previous"
        self.pending = self.opt / PENDING
        self.config = root / DEFAULT_CONFIG.relative_to("/")

    def linked(self, link: Path) -> str | None:
        """The release a link names, when it names an installed one."""
        if not link.is_symlink():
            return None
        name = Path(os.readlink(link)).name
        return name if (self.releases / name / RELEASE_FILE).is_file() else None

    @property
    def current(self) -> str | None:
        return self.linked(self.current_link)

    @property
    def previous(self) -> str | None:
        return self.linked(self.previous_link)

    def release(self, name: str) -> Release:
        data = json.loads((self.releases / name / RELEASE_FILE).read_text())
        return Release(name, data["version"], data["schema"], data.get("installed", ""))

    def installed(self) -> list[Release]:
        if not self.releases.is_dir():
            return []
        return [self.release(path.name) for path in sorted(self.releases.iterdir())
                if (path / RELEASE_FILE).is_file()]

    def program(self, release: str, name: str) -> str:
        return str(self.releases / release / "bin" / name)


class UpdateFailed(Exception):
    """The new release was switched to, was not healthy, and was switched back."""

    def __init__(self, outcome: Outcome, problem: str):
        super().__init__(problem)
        self.outcome = outcome


# --- what the update acts on: the service manager, and the relay's health -------------------------------


class Services:
    """systemd on the appliance. Tests pass their own, which start the relay as systemd would."""

    def __init__(self):
        self.restarts = 0

    def restart_relay(self) -> None:
        self.restarts = self._restarts()
        subprocess.run(["systemctl", "restart", RELAY_UNIT], capture_output=True, timeout=300)

    def relay_failure(self) -> str:
        """Why the relay restarted will not become healthy ("" while it may): it exited since."""
        if self._restarts() > self.restarts:
            return f"the relay exited after the restart (see journalctl -u {RELAY_UNIT})"
        return ""

    @staticmethod
    def _restarts() -> int:
        done = subprocess.run(["systemctl", "show", "--property=NRestarts", "--value", RELAY_UNIT],
                              capture_output=True, text=True, timeout=60)
        return int(done.stdout.strip() or 0) if done.stdout.strip().isdigit() else 0

    def restart_consoles(self) -> None:
        # --no-block: the console that asked for this update may be one of them.
        subprocess.run(["systemctl", "--no-block", "try-restart", CONSOLE_UNITS], capture_output=True, timeout=60)


def check_health(socket_path: str, started: float, version: str, timeout: float,
                 failure: Callable[[], str] = str) -> str:
    """"" once a relay started after `started` answers its control API with `version` and greets on
    every listening address; else the last reason it was not healthy, after `timeout` seconds, or at
    once when `failure` says it exited."""
    deadline = time.monotonic() + timeout
    problem = "no answer yet"
    while time.monotonic() < deadline:
        problem = _health(socket_path, started, version)
        if not problem:
            return ""
        exited = failure()
        if exited:
            return f"{exited}; {problem}"
        time.sleep(1.0)
    return problem


def _health(socket_path: str, started: float, version: str) -> str:
    try:
        with ControlClient(socket_path, timeout=10) as client:
            status = client.call("io.postern.Status.Get")["status"]
    except (Unreachable, NoAnswer, PermissionDenied, ControlError) as error:
        return f"the control API at {socket_path} does not answer ({error})"
    if status["started"] < started - 2:
        return "the relay answering was started before the switch: it has not restarted"
    if status.get("loading"):
        return f"the relay is still loading its queue ({status['loading']['loaded']} of {status['loading']['total']})"
    if status["version"] != version:
        return f"the relay reports version {status['version']}, not {version}"
    if not status["listeners"]:
        return "the relay listens nowhere"
    for listener in status["listeners"]:
        problem = _greets(listener)
        if problem:
            return problem
    return ""


def _greets(listener: str) -> str:
    host, _, port = listener.rpartition(":")
    host = host.strip("[]")
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    try:
        with socket.create_connection((host, int(port)), timeout=10) as connection:
            connection.settimeout(30)
            greeting = connection.recv(512)
            connection.sendall(b"QUIT\r\n")
    except OSError as error:
        return f"{listener}: no greeting ({error.strerror or error})"
    if not greeting.startswith(b"220"):
        return f"{listener}: greets with {greeting[:80]!r}, not 220"
    return ""


# --- the steps -----------------------------------------------------------------------------------------


class Updater:
    def __init__(self, root: Path = Path("/"), services: Services | None = None, socket_path: str = DEFAULT_SOCKET,
                 timeout: float = HEALTH_TIMEOUT, python: str | None = None, say: Callable[[str], None] = print):
        self.layout = Layout(root)
        self.services = services or Services()
        self.socket_path = socket_path
        self.timeout = timeout
        # The interpreter each release's virtual environment is made with: the system's (this program
        # runs in a release's environment, whose python is a link to it).
        self.python = python or os.path.realpath(sys.executable)
        self.say = say
        self.lines: list[str] = []

    def _say(self, line: str) -> None:
        self.lines.append(line)
        self.say(line)

    # -- update --

    def update(self, bundle: Path) -> Outcome:
        layout = self.layout
        old = layout.current
        if old is None:
            raise UpdateError(f"{layout.current_link}: no current release; this system was not installed from a "
                              "release (an image built before update bundles): deploy a new image instead")
        manifest = self._install(bundle)
        if manifest.release == old:
            raise UpdateError(f"release {old} is the one running already; nothing to do")
        new = manifest.release
        self._migrate(old, new)
        problem = self._check_config(new)
        if problem:
            self._migrate(new, old)
            raise UpdateError(f"release {new} refuses this configuration, so nothing was switched: {problem}")
        return self._switch(old, new, action="update")

    def rollback(self) -> Outcome:
        layout = self.layout
        old, target = layout.current, layout.previous
        if old is None or target is None:
            raise UpdateError("there is no previous release to return to (none was kept, or this is the first one)")
        self._migrate(old, target)
        return self._switch(old, target, action="rollback")

    def finish_pending(self) -> Outcome | None:
        """After a restart in the middle of an update: check the release the marker names, and switch
        back when it is not healthy. None when no update was pending."""
        layout = self.layout
        if not layout.pending.exists():
            return None
        pending = json.loads(layout.pending.read_text())
        new, old = pending["to"], pending["from"]
        if layout.current != new:  # the switch itself did not happen: nothing runs the new release
            remove_file(layout.pending)
            return Outcome(layout.current or "", layout.previous, ("no switch had happened; nothing to do",))
        version = layout.release(new).version
        problem = check_health(self.socket_path, pending["started"], version, self.timeout, self.services.relay_failure)
        if not problem:
            self._finish(new, old)
            return Outcome(new, old, tuple(self.lines))
        self._say(f"release {new} is not healthy after the restart: {problem}")
        return self._back(pending, problem)

    # -- pieces --

    def _install(self, bundle: Path) -> bundles.Manifest:
        layout = self.layout
        layout.releases.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".bundle-", dir=layout.opt) as scratch:
            self._say(f"checking {bundle}")
            manifest = bundles.verify(bundle, layout.root, Path(scratch))
            if manifest.python != bundles.python_tag():
                raise UpdateError(f"{bundle}: its wheels are for Python {manifest.python}, and this appliance runs "
                                  f"{bundles.python_tag()}; use the bundle built for this image's Debian release")
            self._say(f"signature and {len(manifest.wheels)} wheels verified: Postern {manifest.version}")
            target = layout.releases / manifest.release
            if (target / RELEASE_FILE).is_file():
                self._say(f"release {manifest.release} is installed already")
                return manifest
            shutil.rmtree(target, ignore_errors=True)  # a release an interrupted update left half-made
            self._say(f"installing release {manifest.release}")
            try:
                self._run([self.python, "-m", "venv", str(target)])
                self._run([str(target / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-index",
                           "--no-cache-dir", "--disable-pip-version-check", "--find-links", scratch,
                           f"postern=={manifest.version}"])
            except UpdateError:
                shutil.rmtree(target, ignore_errors=True)
                raise
        atomic_write(target / RELEASE_FILE, json.dumps({
            "version": manifest.version, "schema": manifest.schema, "bundle": manifest.digest,
            "built": manifest.built, "installed": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }, indent=1) + "\n", 0o644)
        return manifest

    def _run(self, argv: list[str], timeout: float = 600) -> str:
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        except (OSError, subprocess.TimeoutExpired) as error:
            raise UpdateError(f"{Path(argv[0]).name}: {error}") from None
        if done.returncode != 0:
            output = (done.stderr or done.stdout).strip().splitlines()
            raise UpdateError(f"{Path(argv[0]).name}: {output[-1] if output else f'exit {done.returncode}'}")
        return done.stdout

    def _check_config(self, release: str) -> str:
        program = self.layout.program(release, "postern-relay")
        try:
            self._run([program, "--check", "--config", str(self.layout.config)], timeout=120)
        except UpdateError as error:
            return str(error)
        return ""

    def _migrate(self, source: str, target: str) -> None:
        """Bring the configuration file from source's schema to target's, with the newer one's code."""
        layout = self.layout
        a, b = layout.release(source).schema, layout.release(target).schema
        if a == b or not layout.config.exists():
            return
        newer = source if a > b else target
        self._say(f"migrating the configuration from schema {a} to {b}")
        self._run([layout.program(newer, "postern-appliance"), "config", "--file", str(layout.config),
                   "migrate", "--from", str(a), "--to", str(b)])

    def _point(self, current: str, previous: str | None) -> None:
        layout = self.layout
        if previous:
            atomic_symlink(layout.previous_link, f"releases/{previous}")
        else:
            remove_file(layout.previous_link)
        atomic_symlink(layout.current_link, f"releases/{current}")

    def _switch(self, old: str, new: str, action: str) -> Outcome:
        layout = self.layout
        started = time.time()
        pending = {"from": old, "to": new, "previous": layout.previous, "action": action, "started": started}
        atomic_write(layout.pending, json.dumps(pending) + "\n", 0o644)
        self._point(new, old)
        self._say(f"switched to {new}; restarting the relay")
        self.services.restart_relay()
        problem = check_health(self.socket_path, started, layout.release(new).version, self.timeout,
                               self.services.relay_failure)
        if problem:
            self._say(f"release {new} is not healthy: {problem}")
            return self._back(pending, problem)
        self._finish(new, old)
        return Outcome(new, old, tuple(self.lines))

    def _finish(self, new: str, old: str) -> None:
        layout = self.layout
        self._say(f"the relay is healthy on {new}: it answers its control API and greets with 220")
        remove_file(layout.pending)
        for release in layout.installed():
            if release.name not in (new, old):
                shutil.rmtree(layout.releases / release.name, ignore_errors=True)
                self._say(f"removed the older release {release.name}")
        self.services.restart_consoles()

    def _back(self, pending: dict, problem: str) -> Outcome:
        """Put the links back as they were before the switch the marker describes. A release that
        failed as an update is removed; one that failed as a rollback stays the previous release."""
        layout = self.layout
        bad, good = pending["to"], pending["from"]
        self._migrate(bad, good)
        started = time.time()
        self._point(good, pending["previous"])
        self._say(f"switched back to {good}; restarting the relay")
        self.services.restart_relay()
        again = check_health(self.socket_path, started, layout.release(good).version, self.timeout,
                             self.services.relay_failure)
        remove_file(layout.pending)
        if pending["action"] == "update" and bad != pending["previous"]:
            shutil.rmtree(layout.releases / bad, ignore_errors=True)
            self._say(f"removed the failed release {bad}")
        if again:
            self._say(f"release {good} is not healthy either: {again}; see journalctl -u {RELAY_UNIT}")
        else:
            self._say(f"the relay is healthy again on {good}")
        raise UpdateFailed(Outcome(good, layout.previous, tuple(self.lines)), problem)

def status(root: Path = Path("/")) -> tuple[str | None, str | None, list[Release]]:
    layout = Layout(root)
    return layout.current, layout.previous, layout.installed()


__all__ = ["Layout", "Outcome", "Release", "SCHEMA", "Services", "UpdateError", "UpdateFailed", "Updater", "check_health", "status"]
