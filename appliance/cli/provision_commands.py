"""`provision --seed FILE [--root DIR]`: set the appliance up from a seed, without a keyboard."""

from __future__ import annotations

from pathlib import Path

from relay.config import ConfigError
from relay.control.client import DEFAULT_SOCKET, ControlClient, ControlError, PermissionDenied, Unreachable

from .. import topology
from ..certificates import CertificateError
from ..firstboot import SetupState
from ..network.apply import ApplyError
from ..network.kernel import KernelError
from ..network.networkd import ServiceError
from ..provision import carry_out, check_seed, read_seed, relay_outcome, scrub_seed
from . import exit_codes
from .output import complain, say


def add_commands(commands) -> None:
    command = commands.add_parser(
        "provision", help="set the appliance up from a seed file (what the first-boot wizard asks), unattended")
    command.add_argument("--seed", required=True, type=Path, metavar="FILE", help="the seed (YAML, docs/provisioning.md)")
    command.add_argument("--root", type=Path, default=Path("/"), metavar="DIR",
                         help="the system to set up (default /; any other root only gets files)")
    command.add_argument("--socket", metavar="PATH",
                         help=f"relay control socket to reload through (default {DEFAULT_SOCKET} when ROOT is /)")
    command.add_argument("--check", action="store_true", help="only validate the seed; change nothing")
    command.add_argument("--keep-seed", action="store_true",
                         help="leave the seed as it is after success (by default it is replaced by a copy "
                              "without its passwords, FILE.provisioned)")
    command.set_defaults(run=run_provision)


def run_provision(args) -> int:
    args.root = args.root.resolve()  # the configuration names files by their absolute paths
    try:
        seed = read_seed(args.seed)
    except ConfigError as error:
        complain(error.problems)
        return exit_codes.INVALID
    plan, problems = check_seed(seed, args.root, base_dir=args.seed.parent)
    if problems:
        complain(problems)
        complain(f"{args.seed}: {len(problems)} problem{'s' if len(problems) > 1 else ''}; nothing was changed")
        return exit_codes.INVALID
    for note in plan.notes:
        say(f"note: {note}")
    if args.check:
        say(f"{args.seed}: the seed is valid (topology {plan.topology})")
        return exit_codes.OK
    try:
        lines = carry_out(plan, args.root)
    except ApplyError as error:
        complain(error.problems)
        return exit_codes.FAILED
    except ConfigError as error:
        complain(error.problems)
        return exit_codes.FAILED
    except (CertificateError, KernelError, ServiceError, OSError, RuntimeError) as error:
        complain(str(error))
        return exit_codes.FAILED
    for line in lines:
        say(line)
    state = SetupState(args.root)
    say(_reload(args, plan.document["mta"], state.is_live))
    state.mark_complete(plan.topology, by=f"provision --seed {args.seed}")
    say(f"setup is complete (topology {plan.topology}); the console's wizard will not start by itself")
    if not args.keep_seed:
        for line in scrub_seed(args.seed, args.root):
            say(line)
    say("")
    say("On the other side:")
    for side in topology.other_side(plan.topology, plan.config.mta, plan.public_address,
                                      {key.domain: key.algorithm for key in plan.dkim_keys}):
        say(f"  {side.title}")
        for step in side.steps:
            say(f"    - {step}")
    return exit_codes.OK


def _reload(args, mta: dict, live: bool) -> str:
    socket = args.socket or (DEFAULT_SOCKET if live else None)
    if socket is None:
        return "relay: not reloaded (a root other than / has no running relay)"
    try:
        with ControlClient(socket, timeout=30) as client:
            client.call("io.postern.Config.Apply", mta=mta)
    except (Unreachable, PermissionDenied, ControlError) as error:
        return relay_outcome(error)
    return relay_outcome(None)
