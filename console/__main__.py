"""postern-console [--socket PATH] [--config FILE] [--log FILE] [--first-boot] [--root DIR] [--[no-]allow-shell]"""

from __future__ import annotations

import argparse
import sys

from appliance.relay_log import RELAY_UNIT
from relay.config_file import DEFAULT_CONFIG
from relay.control.client import DEFAULT_SOCKET

from .app import make_app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="postern-console", description="The Postern appliance console.")
    parser.add_argument("--socket", default=DEFAULT_SOCKET, help=f"relay control socket (default {DEFAULT_SOCKET})")
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help=f"appliance configuration file (default {DEFAULT_CONFIG})")
    parser.add_argument("--log", metavar="FILE",
                        help="the relay's log file, where the relay's output goes to a file "
                             f"(default: the journal of {RELAY_UNIT})")
    parser.add_argument("--first-boot", action="store_true",
                        help="open the setup wizard (it resumes where it was left)")
    parser.add_argument("--root", default="/", metavar="DIR",
                        help="the system the wizard sets up (default /; any other root only gets files)")
    parser.add_argument("--allow-shell", action=argparse.BooleanOptionalAction, default=True,
                        help="offer a shell on the System screen after the login (default); as root it is the "
                             "admin's own shell, never root's")
    args = parser.parse_args(argv)
    make_app(args.socket, args.config, first_boot=args.first_boot, root=args.root, log_file=args.log,
             allow_shell=args.allow_shell).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
