"""`show`, `check`, `render`, `apply`, `try`, `confirm` and `rollback`."""

from __future__ import annotations

import dataclasses
import json
import select
import signal
import sys
from contextlib import contextmanager
from pathlib import Path

from relay.config import ConfigError

from ..network import change, trial
from ..network.apply import ApplyError, Applied, Target, apply_network
from ..network.kernel import KernelError
from ..network.live import LiveState, read_live_state
from ..network.networkd import ServiceError
from ..network.render import plan, write_plan
from ..schema import load_config_file
from . import exit_codes
from .output import complain, say, table


def add_commands(commands) -> None:
    show = commands.add_parser("show", help="the live network state: interfaces, addresses, gateways, DNS, hostname")
    show.add_argument("--json", action="store_true", help="print it as JSON")
    show.add_argument("--netns", metavar="NAME", help="read the state of this network namespace")
    show.set_defaults(run=run_show)

    check = commands.add_parser("check", help="validate a configuration file; changes nothing")
    check.add_argument("--config", required=True, metavar="FILE")
    check.set_defaults(run=run_check)

    render = commands.add_parser("render", help="write the network files under a root directory; applies nothing")
    render.add_argument("--config", required=True, metavar="FILE")
    render.add_argument("--root", required=True, type=Path, metavar="DIR")
    render.set_defaults(run=run_render)

    for name, helptext in (("apply", "apply a configuration's network section now"),
                           ("try", "apply it, and restore the previous state unless confirmed in time")):
        command = commands.add_parser(name, help=helptext)
        command.add_argument("--config", required=True, metavar="FILE")
        command.add_argument("--root", type=Path, default=Path("/"), metavar="DIR",
                             help="where the files go (default /)")
        if name == "try":
            command.add_argument("--timeout", type=float, default=trial.DEFAULT_TIMEOUT, metavar="S",
                                 help=f"seconds to wait for confirmation (default {trial.DEFAULT_TIMEOUT:g})")
            _state_dir_option(command)
        command.set_defaults(run=run_apply if name == "apply" else run_try)

    confirm = commands.add_parser("confirm", help="keep the network change a running 'try' is waiting on")
    _state_dir_option(confirm)
    confirm.set_defaults(run=run_confirm)
    rollback = commands.add_parser("rollback", help="restore the state from before a pending 'try' now")
    _state_dir_option(rollback)
    rollback.set_defaults(run=run_rollback)


def _state_dir_option(command) -> None:
    command.add_argument("--state-dir", type=Path, metavar="DIR",
                         help="where a pending try is recorded (default ROOT/run/postern)")
    if "--root" not in command._option_string_actions:
        command.add_argument("--root", type=Path, default=Path("/"), metavar="DIR")


def _state_dir(args) -> Path:
    return Path(args.state_dir).absolute() if args.state_dir else change.state_dir_of(args.root)


# --- show ---


def show_lines(state: LiveState) -> list[str]:
    lines = [f"hostname: {state.hostname}"]
    rows = [["interface", "MAC", "link", "MTU", "DHCP", "address", "broadcast", "netmask", "gateway"]]
    for interface in state.interfaces:
        addresses = list(interface.addresses) or [None]
        gateways = list(interface.gateways)
        for index, address in enumerate(addresses):
            first = index == 0
            rows.append([
                interface.name if first else "",
                interface.mac if first else "",
                interface.link if first else "",
                str(interface.mtu) if first else "",
                ("yes" if interface.dhcp else "no") if first else "",
                address.address if address else "-",
                (address.broadcast or "") if address else "",
                (address.netmask or "") if address else "",
                gateways[index] if index < len(gateways) else "",
            ])
    lines += table(rows)
    lines.append(f"default gateway: {', '.join(state.default_gateways) or '(none)'}")
    lines.append(f"DNS servers: {', '.join(state.dns_servers) or '(none)'}")
    lines.append(f"search domains: {', '.join(state.search_domains) or '(none)'}")
    return lines


def run_show(args) -> int:
    try:
        state = read_live_state(args.netns)
    except KernelError as error:
        complain(str(error))
        return exit_codes.FAILED
    if args.json:
        say(json.dumps(dataclasses.asdict(state), indent=2))
    else:
        for line in show_lines(state):
            say(line)
    return exit_codes.OK


# --- check, render, apply ---


def _load(path: str):
    try:
        return load_config_file(path)
    except ConfigError as error:
        complain(error.problems)
        return None


def run_check(args) -> int:
    config = _load(args.config)
    if config is None:
        return exit_codes.INVALID
    say(f"{args.config}: the configuration is valid")
    return exit_codes.OK


def run_render(args) -> int:
    config = _load(args.config)
    if config is None:
        return exit_codes.INVALID
    file_plan = plan(config.network, args.root)
    try:
        write_plan(file_plan)
    except OSError as error:
        complain(f"{args.root}: {error}")
        return exit_codes.FAILED
    _report_files(file_plan)
    return exit_codes.OK


def _report_files(file_plan) -> None:
    for relative in file_plan.write:
        say(f"wrote /{relative}")
    for relative in file_plan.remove:
        say(f"removed /{relative}")
    if not file_plan.changed:
        say("the files are already up to date")


def _report_applied(applied: Applied) -> None:
    _report_files(applied.files)
    for note in applied.notes:
        say(f"note: {note}")
    say(f"applied through {applied.backend}")


def _report_change(pending: change.Change) -> None:
    for line in pending.lines:
        say(line)


def _apply(args, start):
    config = _load(args.config)
    if config is None:
        return None, exit_codes.INVALID
    try:
        return start(config.network), exit_codes.OK
    except ApplyError as error:
        complain(error.problems)
        refused = any(problem.startswith("network.") for problem in error.problems)
        return None, exit_codes.INVALID if refused else exit_codes.FAILED
    except (KernelError, ServiceError, OSError) as error:
        complain(str(error))
        return None, exit_codes.FAILED


def run_apply(args) -> int:
    applied, code = _apply(args, lambda network: apply_network(network, Target(args.root.absolute())))
    if applied:
        _report_applied(applied)
    return code


# --- try, confirm, rollback ---


@contextmanager
def trial_signals():
    """While a try is under way: Ctrl-C and SIGTERM mean "roll back", a hang-up means nothing.

    Installed before anything changes, so that an interrupt can never leave a change behind
    without its rollback. Yields the list an interrupt appends to."""
    interrupted: list[bool] = []
    previous = {
        signal.SIGINT: signal.signal(signal.SIGINT, lambda *_: interrupted.append(True)),
        signal.SIGTERM: signal.signal(signal.SIGTERM, lambda *_: interrupted.append(True)),
        signal.SIGUSR1: signal.signal(signal.SIGUSR1, lambda *_: None),  # `confirm` wakes us
        # The SSH session that started us may drop (that is what `try` is for): keep waiting.
        signal.SIGHUP: signal.signal(signal.SIGHUP, signal.SIG_IGN),
    }
    try:
        yield interrupted
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def run_try(args) -> int:
    with trial_signals() as interrupted:
        return _run_try(args, interrupted)


def _run_try(args, interrupted: list) -> int:
    state_dir = _state_dir(args)

    def start(network):
        # Always in force: --root says only where the files go.
        return change.start(network, args.root, timeout=args.timeout, state_dir=state_dir, live=True)

    try:
        pending, code = _apply(args, start)
    except change.AlreadyPending as error:
        complain(str(error))
        return exit_codes.FAILED
    if pending is None:
        return code
    _report_change(pending)
    say(f"Keep this network configuration? Press Enter here, or run 'postern-appliance confirm', "
        f"within {args.timeout:g} s; otherwise the previous one comes back.")
    if wait_for_decision(pending, interrupted):
        pending.settle(True)
        say("confirmed: the new network configuration stays")
        return exit_codes.OK
    try:
        pending.settle(False)
    except (KernelError, ServiceError, OSError) as error:
        complain(f"restoring the previous state failed: {error}; the record stays in {state_dir}: "
                 "run 'postern-appliance rollback' to try again")
        return exit_codes.FAILED
    say("not confirmed: the previous network configuration is restored")
    return exit_codes.ROLLED_BACK


def wait_for_decision(pending: change.Change, interrupted: list) -> bool:
    """Wait for Enter on the terminal or `confirm`; False on the deadline, an interrupt or 'n'."""
    terminal = [sys.stdin] if sys.stdin is not None and sys.stdin.isatty() else []
    while True:
        if pending.confirmed:
            return True
        if interrupted or pending.remaining() <= 0:
            return pending.confirmed
        try:
            ready, _, _ = select.select(terminal, [], [], min(0.2, pending.remaining()))
        except (OSError, ValueError):
            ready, terminal = [], []
        if ready:
            answer = _read_answer(terminal)
            if answer is not None:
                return answer


def _read_answer(terminal: list) -> bool | None:
    try:
        line = terminal[0].readline()
    except (OSError, ValueError):
        line = ""
    if line == "":  # the terminal has gone: only `confirm` or the deadline decide now
        terminal.clear()
        return None
    word = line.strip().lower()
    if word in ("", "y", "yes"):
        return True
    if word in ("n", "no"):
        return False
    return None


def run_confirm(args) -> int:
    try:
        outcome = trial.confirm(_state_dir(args))
    except trial.NotPending as error:
        complain(str(error))
        return exit_codes.NOT_PENDING
    if outcome == trial.KEPT:
        say("confirmed: the new network configuration stays")
        return exit_codes.OK
    complain("too late: the change had already been rolled back")
    return exit_codes.ROLLED_BACK


def run_rollback(args) -> int:
    try:
        trial.roll_back_recorded(_state_dir(args))
    except trial.NotPending as error:
        complain(str(error))
        return exit_codes.NOT_PENDING
    except (KernelError, ServiceError, OSError) as error:
        complain(f"restoring the previous state failed: {error}")
        return exit_codes.FAILED
    say("the previous network configuration is restored")
    return exit_codes.OK
