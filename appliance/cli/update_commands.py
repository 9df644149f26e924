"""postern-appliance update: install a signed update bundle, return to the previous release, say which runs.

    postern-appliance update BUNDLE          verify, install beside the running release, switch, check, or switch back
    postern-appliance update --check BUNDLE  verify the bundle only
    postern-appliance update --rollback      return to the previous release (checked the same way)
    postern-appliance update --status        the releases installed, and which runs

Exit codes: 0 done; 1 the bundle or the request was refused (nothing changed); 3 the new release was
not healthy and the previous one runs again (the lines before say whether it is healthy).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from relay.control.client import DEFAULT_SOCKET

from .. import bundle as bundles
from .. import update
from . import exit_codes
from .output import complain, say, table


def add_commands(commands) -> None:
    parser = commands.add_parser("update", help="update Postern from a signed bundle, or return to the previous release")
    parser.add_argument("bundle", type=Path, nargs="?", help="the bundle (postern-VERSION.update)")
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--check", action="store_true", help="verify the bundle's signature and wheels only")
    what.add_argument("--rollback", action="store_true", help="return to the previous release")
    what.add_argument("--status", action="store_true", help="the installed releases and which one runs")
    what.add_argument("--finish", action="store_true", help=argparse.SUPPRESS)  # at boot: postern-update-check.service
    parser.add_argument("--timeout", type=float, default=update.HEALTH_TIMEOUT, metavar="S",
                        help=f"how long the relay has to become healthy (default {update.HEALTH_TIMEOUT:.0f} s)")
    parser.add_argument("--socket", default=DEFAULT_SOCKET, help=f"the relay's control socket (default {DEFAULT_SOCKET})")
    parser.add_argument("--root", type=Path, default=Path("/"), metavar="DIR",
                        help="the system whose releases these are (default /)")
    parser.set_defaults(run=run_update)


def run_update(args) -> int:
    root = args.root.absolute()
    if args.status:
        return _status(root)
    if args.check:
        if not args.bundle:
            complain("--check: name the bundle to check")
            return exit_codes.INVALID
        try:
            manifest = bundles.verify(args.bundle, root)
        except bundles.BundleError as error:
            complain(str(error))
            return exit_codes.INVALID
        say(f"{args.bundle}: signature good; Postern {manifest.version} for {manifest.python}, "
            f"{len(manifest.wheels)} wheels, release {manifest.release}")
        return exit_codes.OK
    if (args.rollback or args.finish) == bool(args.bundle):
        complain("name a bundle to install, or give --rollback, --status or --check BUNDLE")
        return exit_codes.USAGE
    if root != Path("/"):
        complain("--root: an update or rollback acts on the running system (it restarts its relay); "
                 "--root goes with --status and --check only")
        return exit_codes.INVALID
    if os.geteuid() != 0:
        complain("updating needs root: sudo postern-appliance update ...")
        return exit_codes.INVALID
    updater = update.Updater(socket_path=args.socket, timeout=args.timeout, say=lambda line: say(f"  {line}"))
    try:
        if args.finish:
            outcome = updater.finish_pending()
            if outcome is None:
                return exit_codes.OK
        elif args.rollback:
            outcome = updater.rollback()
        else:
            outcome = updater.update(args.bundle)
    except (update.UpdateError, bundles.BundleError) as error:
        complain(str(error))
        return exit_codes.INVALID
    except update.UpdateFailed as failed:
        complain(f"the new release was not healthy ({failed}); release {failed.outcome.current} runs again")
        return exit_codes.FAILED
    say(f"release {outcome.current} runs; the previous one, {outcome.previous or 'none'}, is kept for --rollback")
    return exit_codes.OK


def _status(root: Path) -> int:
    current, previous, releases = update.status(root)
    if not releases:
        say(f"no releases under {update.Layout(root).releases}: this system was not installed from an image "
            "with update bundles")
        return exit_codes.OK
    rows = [["", "RELEASE", "VERSION", "SCHEMA", "INSTALLED"]]
    for release in releases:
        mark = "current" if release.name == current else "previous" if release.name == previous else ""
        rows.append([mark, release.name, release.version, str(release.schema), release.installed])
    for line in table(rows):
        say(line)
    return exit_codes.OK
