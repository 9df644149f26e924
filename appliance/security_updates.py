"""Debian's security updates on the appliance: are they installed automatically, how did the last run go,
and does a reboot wait.

Debian's unattended-upgrades does the work. The image limits it to the security suite
(/etc/apt/apt.conf.d/52postern-unattended-upgrades) and switches it on in the file apt reads for that,
/etc/apt/apt.conf.d/20auto-upgrades: `APT::Periodic::Update-Package-Lists` and
`APT::Periodic::Unattended-Upgrade`, "1" (every day) or "0" (never). apt's daily timer
(apt-daily-upgrade.timer) then runs it; it logs each run to
/var/log/unattended-upgrades/unattended-upgrades.log, one line per event
(`2026-12-06 06:25:12,345 INFO Packages that will be upgraded: libssl3 openssl`). It never reboots
(Debian's default, kept): a package that needs one (a kernel, libc) leaves /run/reboot-required, and
its name in /run/reboot-required.pkgs, for the admin to see and choose the moment.

Every function takes the root directory of the system it reads or changes: / on the appliance,
another directory in the tests and the console's sandbox. What is read from those files is shown on a
terminal, so it is read bounded (the log's tail only), never blocks (a FIFO in a file's place is
refused), and loses its control characters.
"""

from __future__ import annotations

import datetime
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

from relay.printable import printable

from .files import atomic_write

AUTO_UPGRADES = "etc/apt/apt.conf.d/20auto-upgrades"
PACKAGE_CONFIG = "etc/apt/apt.conf.d/50unattended-upgrades"  # the package's own: there when it is installed
LOG = "var/log/unattended-upgrades/unattended-upgrades.log"
REBOOT_REQUIRED = "run/reboot-required"
REBOOT_PACKAGES = "run/reboot-required.pkgs"

LOG_TAIL = 64 * 1024  # bytes of the log read from its end: a run writes a few hundred
SMALL_FILE = 16 * 1024  # the most read of any other file
MOST_PACKAGES = 50  # names kept from reboot-required.pkgs
OUTCOME_LENGTH = 100  # characters of a failure's message shown

# The file as Debian's package writes it (/usr/share/unattended-upgrades/20auto-upgrades and
# 20auto-upgrades-disabled), byte for byte: the package's own scripts then find nothing changed.
SWITCH_KEYS = ("APT::Periodic::Update-Package-Lists", "APT::Periodic::Unattended-Upgrade")

_SETTING = re.compile(r'^\s*(APT::Periodic::[A-Za-z-]+)\s+"([^"\n]*)"\s*;', re.MULTILINE)
_LOG_LINE = re.compile(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) (.*)")
_PACKAGE = re.compile(r"[a-z0-9][a-z0-9+.-]{0,99}(:[a-z0-9-]{1,20})?")  # Debian's package names, an architecture
START = "Starting unattended upgrades script"
NOTHING = "No packages found that can be upgraded unattended"
WILL_UPGRADE = "Packages that will be upgraded:"
ALL_INSTALLED = "All upgrades installed"


@dataclass
class SecurityUpdates:
    """What the appliance's security updates are doing, as read from its files."""

    enabled: bool  # 20auto-upgrades has both switches on (without the package, nothing runs all the same)
    installed: bool  # the unattended-upgrades package's configuration is there
    last_run: datetime.datetime | None = None  # when the last run started (local time, with its zone)
    last_outcome: str = ""  # "3 packages upgraded", "nothing to upgrade", "failed: ..."; "" when never run
    reboot_required: bool = False
    reboot_packages: list[str] = field(default_factory=list)  # the packages that asked for it


def auto_upgrades_text(on: bool) -> str:
    value = "1" if on else "0"
    return "".join(f'{key} "{value}";\n' for key in SWITCH_KEYS)


def _read(path: Path, limit: int, tail: bool = False) -> str | None:
    """At most `limit` bytes of a regular file (its last ones with `tail`), as text; None when it is
    absent, unreadable or not a regular file (a FIFO would block, a device never end)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return None
        if tail and info.st_size > limit:
            os.lseek(fd, info.st_size - limit, os.SEEK_SET)
        data = os.read(fd, limit)
    except OSError:
        return None
    finally:
        os.close(fd)
    return data.decode("utf-8", errors="replace")


def read_switch(text: str) -> bool:
    """On when apt's daily job is enabled and both the list update and the upgrade are asked for.
    The values are intervals in days (or with a unit, "12h"); "0" or empty is never."""
    values = dict(_SETTING.findall(text))
    if values.get("APT::Periodic::Enable", "1").strip() in ("0", ""):
        return False
    return all(values.get(key, "0").strip() not in ("0", "") for key in SWITCH_KEYS)


def parse_log(text: str) -> tuple[datetime.datetime | None, str]:
    """When the last run in a piece of the log started, and how it ended, in a few words.

    The piece is the log's tail: its first line may be cut, and a run that started before it is
    judged by what remains. Lines that are not the log's own (a message's second line, garbage)
    are skipped."""
    events: list[tuple[datetime.datetime | None, str, str]] = []
    for line in text.splitlines():
        match = _LOG_LINE.fullmatch(line.rstrip("\r"))
        if not match:
            continue
        try:
            when = datetime.datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S").astimezone()
        except (ValueError, OverflowError):
            continue
        if match.group(3).startswith(START):
            events = []
        events.append((when, match.group(2), match.group(3)))
    if not events:
        return None, ""
    started = events[0][0]
    errors = [message for _, level, message in events if level in ("ERROR", "CRITICAL")]
    if errors:
        return started, "failed: " + _short(errors[0])
    messages = [message for _, _, message in events]
    if any(message.startswith(NOTHING) for message in messages):
        return started, "nothing to upgrade"
    upgrading = [message[len(WILL_UPGRADE):].split() for message in messages if message.startswith(WILL_UPGRADE)]
    count = len(upgrading[-1]) if upgrading else 0
    if ALL_INSTALLED in messages:
        if not upgrading:  # the list was before the tail
            return started, "upgrades installed"
        if count == 0:
            return started, "nothing to upgrade"
        return started, f"{count} package{'s' if count != 1 else ''} upgraded"
    if count:
        return started, f"upgrading {count} package{'s' if count != 1 else ''}, no result yet"
    return started, "started, no result yet"


def _short(message: str) -> str:
    message = printable(message)
    return message if len(message) <= OUTCOME_LENGTH else message[:OUTCOME_LENGTH - 3] + "..."


def reboot_packages(text: str) -> list[str]:
    """The package names of /run/reboot-required.pkgs, each once, in order; anything else is left out."""
    names = [line.strip() for line in text.splitlines()]
    return list(dict.fromkeys(name for name in names if _PACKAGE.fullmatch(name)))[:MOST_PACKAGES]


def read_state(root: Path | str = "/", *, read_log: bool = True) -> SecurityUpdates:
    """The state of the security updates under `root`; without `read_log`, the last run is left out
    (for those that need only the switch). The log's last 64 KiB at most are read."""
    root = Path(root)
    switch = _read(root / AUTO_UPGRADES, SMALL_FILE)
    installed = (root / PACKAGE_CONFIG).exists()
    state = SecurityUpdates(enabled=switch is not None and read_switch(switch), installed=installed)
    if read_log:
        log = _read(root / LOG, LOG_TAIL, tail=True)
        if log is not None:
            state.last_run, state.last_outcome = parse_log(log)
    state.reboot_required = (root / REBOOT_REQUIRED).exists()
    if state.reboot_required:
        state.reboot_packages = reboot_packages(_read(root / REBOOT_PACKAGES, SMALL_FILE) or "")
    return state


def set_enabled(root: Path | str, on: bool) -> Path:
    """Switch the automatic security updates on or off: 20auto-upgrades replaced atomically
    (root:root 0644 as the package makes it). Returns the file's path."""
    path = Path(root) / AUTO_UPGRADES
    atomic_write(path, auto_upgrades_text(on), 0o644, (0, 0) if os.geteuid() == 0 else None)
    return path


def age_words(when: datetime.datetime, now: datetime.datetime | None = None) -> str:
    """'12 min ago', '3 h ago', '2 days ago'; a time ahead of the clock is said as it is."""
    now = now or datetime.datetime.now().astimezone()
    seconds = (now - when).total_seconds()
    if seconds < -60:
        return f"at {when:%Y-%m-%d %H:%M} (ahead of this clock)"
    seconds = max(seconds, 0)
    if seconds < 3600:
        return f"{int(seconds // 60)} min ago"
    if seconds < 2 * 86400:
        return f"{int(seconds // 3600)} h ago"
    return f"{int(seconds // 86400)} days ago"


def summary(state: SecurityUpdates, now: datetime.datetime | None = None) -> str:
    """One line for the console and the command line:
    'automatic, last run 3 h ago: nothing to upgrade; reboot needed (linux-image-amd64)'."""
    if not state.installed:
        words = f"unattended-upgrades is not installed (switched {'on' if state.enabled else 'off'})"
    else:
        words = "automatic" if state.enabled else "off"
        if state.last_run is not None:
            words += f", last run {age_words(state.last_run, now)}: {state.last_outcome}"
        elif state.enabled:
            words += ", not run yet"
    if state.reboot_required:
        names = ", ".join(state.reboot_packages[:3]) + (", ..." if len(state.reboot_packages) > 3 else "")
        words += f"; reboot needed{f' ({names})' if names else ''}"
    return words
