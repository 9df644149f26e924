"""postern-appliance dkim: make a DKIM key, print the DNS record to publish, check that it is published."""

from __future__ import annotations

import asyncio
from pathlib import Path

import dns.asyncresolver

from .. import dkim
from .cert_commands import guarded_call
from . import exit_codes
from .output import complain, say


def add_commands(commands) -> None:
    parser = commands.add_parser("dkim", help="DKIM keys: make one, the DNS record to publish, is it published")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    new = actions.add_parser("new", help="make a key for a domain and print its DNS record and settings")
    new.add_argument("domain")
    new.add_argument("--algorithm", choices=dkim.ALGORITHMS, default="rsa", help="rsa (2048 bits, default) or ed25519")
    new.set_defaults(run=_guarded(run_new))
    show = actions.add_parser("show", help="the DNS record to publish for a domain's key")
    show.add_argument("domain")
    show.set_defaults(run=_guarded(run_show))
    check = actions.add_parser("check", help="is the key's DNS record published, and does it match?")
    check.add_argument("domain")
    check.add_argument("--dns-server", action="append", default=[], metavar="IP",
                       help="ask this DNS server (default: the system's)")
    check.set_defaults(run=_guarded(run_check))
    for command in (new, show, check):
        command.add_argument("--selector", default=None,
                             help="the DNS label before ._domainkey (new: default sYYYYMM, this month)")
        command.add_argument("--directory", type=Path, default=None, metavar="DIR",
                             help=f"where the keys are (default {dkim.DEFAULT_DIRECTORY} under --root)")
        command.add_argument("--root", type=Path, default=Path("/"), metavar="DIR",
                             help="the system whose files these are (default /)")


def _guarded(action):
    def run(args) -> int:
        args.root = args.root.absolute()
        args.directory = args.directory or args.root / dkim.DEFAULT_DIRECTORY.relative_to("/")
        if args.selector is None:
            if args.action != "new":
                complain(f"--selector: name the key's selector (the files in {args.directory} are "
                         f"{args.domain}.SELECTOR.key)")
                return exit_codes.INVALID
            args.selector = dkim.default_selector()
        return guarded_call(lambda: action(args), lambda error: (
            f"--{error.field}: {error}" if error.field != "domain" else f"{args.domain}: {error}"))

    return run


def _record(args, path: Path) -> None:
    name, value, zone = dkim.dns_record(path, args.domain, args.selector)
    say(f"Publish this TXT record for {args.domain}:")
    say(f"  name:  {name}")
    say(f"  value: {value}")
    say(f"  zone file: {zone}")


def run_new(args) -> int:
    path, notes = dkim.create_key(args.directory, args.domain, args.selector, args.algorithm, args.root)
    say(f"{path}: new {args.algorithm} key for {args.domain}, selector {args.selector}")
    for note in notes:
        say(f"note: {note}")
    _record(args, path)
    on_system = Path("/") / path.relative_to(args.root.absolute()) if path.is_relative_to(args.root.absolute()) else path
    say("Then sign with it: add to the configuration's mta section")
    say(f"  authentication: {{dkim_keys: {{{args.domain}: {{selector: {args.selector}, key_file: {on_system}}}}}}}")
    say(f"and check with: postern-appliance dkim check {args.domain} --selector {args.selector}")
    return exit_codes.OK


def run_show(args) -> int:
    domain, selector = args.domain, args.selector
    _record(args, dkim.key_path(args.directory, domain, selector))
    return exit_codes.OK


def run_check(args) -> int:
    resolver = dns.asyncresolver.Resolver(configure=not args.dns_server)
    if args.dns_server:
        resolver.nameservers = args.dns_server
    path = dkim.key_path(args.directory, args.domain, args.selector)
    good, words = asyncio.run(dkim.check_published(resolver, path, args.domain, args.selector))
    (say if good else complain)(words)
    return exit_codes.OK if good else exit_codes.FAILED
