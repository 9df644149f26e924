"""postern-appliance security-updates: are Debian's security updates installed automatically; switch them on or off."""

from __future__ import annotations

from pathlib import Path

from .. import security_updates
from . import exit_codes
from .output import complain, say


def add_commands(commands) -> None:
    parser = commands.add_parser("security-updates",
                                 help="Debian's security updates (unattended-upgrades): status, on, off")
    parser.add_argument("action", nargs="?", choices=("status", "on", "off"), default="status",
                        help="status (default): the switch, the last run, a reboot waiting; on or off: switch the "
                             "daily installation")
    parser.add_argument("--root", type=Path, default=Path("/"), metavar="DIR",
                        help="the system whose files these are (default /)")
    parser.set_defaults(run=run)


def run(args) -> int:
    root = args.root.absolute()
    if args.action == "status":
        return status(root)
    try:
        path = security_updates.set_enabled(root, args.action == "on")
    except OSError as error:
        complain(f"{error.filename or security_updates.AUTO_UPGRADES}: {error.strerror or error}")
        return exit_codes.FAILED
    state = security_updates.read_state(root, read_log=False)
    say(f"{path}: security updates {'installed automatically, daily' if state.enabled else 'off'}")
    if not state.installed:
        say("note: unattended-upgrades is not installed on this system: nothing runs until it is")
    return exit_codes.OK


def status(root: Path) -> int:
    state = security_updates.read_state(root)
    say(f"Security updates: {security_updates.summary(state)}")
    if state.last_run is not None:
        say(f"Last run: {state.last_run:%Y-%m-%d %H:%M %Z}: {state.last_outcome}")
    if state.reboot_required:
        names = ", ".join(state.reboot_packages) or "no package named"
        say(f"Reboot needed: {names}")
    say(f"Log: {root / security_updates.LOG}")
    return exit_codes.OK
