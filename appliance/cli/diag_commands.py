"""`diag dns | helo | next-hop`: the checks an admin runs while setting up the gateway."""

from __future__ import annotations

import socket

from relay.config import ConfigError
from relay.names import canonical_address

from ..diagnostics.dns_lookup import LookupFailed, lookup, make_resolver
from ..diagnostics.helo import PASS, check_helo
from ..diagnostics.next_hop import check_next_hop, configured_hops, local_addresses, parse_target
from ..schema import load_config_file
from . import exit_codes
from .output import complain, say


def add_commands(commands) -> None:
    diag = commands.add_parser("diag", help="DNS lookups, the HELO/PTR check and the next-hop check")
    actions = diag.add_subparsers(dest="action", required=True, metavar="ACTION")

    dns = actions.add_parser("dns", help="A, AAAA, MX and TXT (SPF, DMARC) of a name, or the PTR of an address")
    dns.add_argument("name")
    _common(dns)
    dns.set_defaults(run=run_dns)

    helo = actions.add_parser("helo", help="does the HELO name match the PTR record of the public address?")
    helo.add_argument("--ip", required=True, help="the public address mail leaves from")
    helo.add_argument("--helo", help="the HELO name (default: the configuration's mta.helo_name or mta.hostname)")
    _common(helo)
    helo.set_defaults(run=run_helo)

    hop = actions.add_parser("next-hop", help="connect to a relay host: banner, EHLO, STARTTLS, certificate, loops")
    hop.add_argument("target", nargs="?", metavar="HOST[:PORT]",
                     help="default: the configuration's internal and external relay hosts")
    hop.add_argument("--cafile", help="trust the CAs in this PEM file instead of the system's")
    hop.add_argument("--timeout", type=float, default=10.0)
    _common(hop)
    hop.set_defaults(run=run_next_hop)


def _common(command) -> None:
    command.add_argument("--server", action="append", metavar="IP[:PORT]",
                         help="DNS server to ask (repeatable; default: the configuration's, else the system's)")
    command.add_argument("--config", metavar="FILE", help="the appliance configuration (for names, servers, relays)")


def _context(args):
    """(config or None, resolver); ConfigError when --config is wrong."""
    config = load_config_file(args.config) if args.config else None
    servers = args.server
    if not servers and config:
        servers = list(config.mta.dns_servers) or [str(s) for s in config.network.dns.servers]
    return config, make_resolver(servers)


def _guarded(action):
    def run(args) -> int:
        try:
            return action(args)
        except ConfigError as error:
            complain(error.problems)
            return exit_codes.INVALID
        except ValueError as error:
            complain(f"--server: {error}: write it like 192.0.2.53 or 127.0.0.1:5353")
            return exit_codes.INVALID
        except LookupFailed as error:
            complain(str(error))
            return exit_codes.CHECK_FAILED

    return run


@_guarded
def run_dns(args) -> int:
    _, resolver = _context(args)
    report = lookup(resolver, args.name)
    for line in report.lines():
        say(line)
    found = any(answer.records for answer in report.answers)
    return exit_codes.OK if found else exit_codes.CHECK_FAILED


@_guarded
def run_helo(args) -> int:
    try:
        canonical_address(args.ip)
    except ValueError:
        complain(f"--ip: {args.ip!r} is not an IP address: give the public address mail leaves from")
        return exit_codes.INVALID
    config, resolver = _context(args)
    helo_name = args.helo or (config.mta.outgoing_helo if config else None)
    if not helo_name:
        complain("--helo: name the HELO name, or give --config with mta.hostname")
        return exit_codes.INVALID
    verdict = check_helo(resolver, helo_name, args.ip)
    for line in verdict.lines:
        say(line)
    return exit_codes.OK if verdict.verdict == PASS else exit_codes.CHECK_FAILED


@_guarded
def run_next_hop(args) -> int:
    config, resolver = _context(args)
    configured = configured_hops(config.mta) if config else []
    if args.target:
        try:
            targets = [parse_target(args.target, configured)]
        except ValueError as error:
            complain(f"HOST[:PORT]: {error}")
            return exit_codes.INVALID
    else:
        targets = configured
    if not targets:
        complain("name a HOST[:PORT], or give --config with mta.internal_relay or mta.external_relay set")
        return exit_codes.INVALID
    own = [socket.gethostname()]
    listen_ports = set()
    helo_name = socket.getfqdn()
    if config:
        own += [config.mta.hostname, config.mta.helo_name, config.network.hostname or ""]
        listen_ports = {listen.port for listen in config.mta.listen}
        helo_name = config.mta.outgoing_helo
    code = exit_codes.OK
    for hop in targets:
        report = check_next_hop(hop.host, hop.port, resolver=resolver, helo_name=helo_name, own_names=tuple(own),
                                local_addresses=local_addresses(), listen_ports=listen_ports,
                                cafile=args.cafile, timeout=args.timeout, tls_policy=hop.tls)
        say(hop.title)
        for line in report.lines + [f"  {line}" for line in report.certificate]:
            say(f"  {line}")
        for warning in report.warnings:
            say(f"  warning: {warning}")
        for error in report.errors:
            complain(f"{hop.host}:{hop.port}: {error}")
        if not report.ok:
            code = exit_codes.CHECK_FAILED
    return code
