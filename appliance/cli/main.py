"""`postern-appliance`: network, hostname and DNS; the configuration store; certificates; diagnostics.

    postern-appliance show
    postern-appliance apply --config FILE [--root DIR]
    postern-appliance try --config FILE [--root DIR] [--timeout S]
    postern-appliance confirm
    postern-appliance provision --seed FILE [--root DIR]

Every error is one line on stderr, `postern-appliance: <field or file>: <what and the fix>`;
the exit codes are in `exit_codes`.
"""

from __future__ import annotations

import argparse
import sys

from . import backup_commands, cert_commands, config_commands, diag_commands, dkim_commands, exit_codes, network_commands, provision_commands, update_commands
from . import security_updates_commands
from .output import PROGRAM


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROGRAM,
        description="The Postern appliance's system layer: network, configuration, certificates, DKIM keys, diagnostics, security updates.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    network_commands.add_commands(commands)
    config_commands.add_commands(commands)
    cert_commands.add_commands(commands)
    dkim_commands.add_commands(commands)
    diag_commands.add_commands(commands)
    provision_commands.add_commands(commands)
    backup_commands.add_commands(commands)
    update_commands.add_commands(commands)
    security_updates_commands.add_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except KeyboardInterrupt:
        return exit_codes.FAILED


if __name__ == "__main__":
    sys.exit(main())
