"""`config versions | show | export | import | diff | restore | migrate`: the configuration store.

    postern-appliance config export FILE
    postern-appliance config export --for-another FILE [--with-certificate] [--passphrase-file F | --encrypt]
    postern-appliance config import FILE [--passphrase-file F] [--check]

`--for-another` writes a twin bundle for a second gateway (`appliance.twin`, docs/ha.md); `import`
knows one from a whole configuration file by itself.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from relay.config import ConfigError
from relay.config_file import DEFAULT_CONFIG, DEFAULT_KEEP

from .. import migrations, twin
from ..schema import parse_text
from ..store import ConfigStore
from . import exit_codes
from .backup_commands import _read_passphrase
from .output import complain, say


def add_commands(commands) -> None:
    config = commands.add_parser("config", help="the appliance configuration file and its saved versions")
    config.add_argument("--file", type=Path, default=DEFAULT_CONFIG, metavar="FILE",
                        help=f"the configuration file (default {DEFAULT_CONFIG})")
    config.add_argument("--keep", type=int, default=DEFAULT_KEEP, metavar="N",
                        help=f"versions to keep (default {DEFAULT_KEEP})")
    actions = config.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("versions", help="list the saved versions, newest first").set_defaults(run=run_versions)
    show = actions.add_parser("show", help="print a version (default: the current file)")
    show.add_argument("version", nargs="?", default="current")
    show.set_defaults(run=run_show)
    export = actions.add_parser("export", help="copy the current configuration to a file, or make a twin bundle "
                                               "for a second gateway (--for-another)")
    export.add_argument("destination", type=Path, nargs="?")
    export.add_argument("--for-another", type=Path, metavar="FILE",
                        help="write what another gateway needs to behave as this one (relay settings, policies, "
                             "DKIM keys, smart host password), not what names this one (hostname, addresses, network)")
    export.add_argument("--with-certificate", action="store_true",
                        help="carry the TLS certificates too (for gateways sharing one whose names cover both)")
    secret = export.add_mutually_exclusive_group()
    secret.add_argument("--passphrase-file", type=Path, metavar="F", help="encrypt the bundle with this passphrase")
    secret.add_argument("--encrypt", action="store_true", help="encrypt the bundle with a passphrase typed in")
    export.set_defaults(run=run_export)
    imported = actions.add_parser("import", help="validate a file and make it the current configuration "
                                                 "(a twin bundle: its settings and files, keeping this gateway's own)")
    imported.add_argument("source", type=Path)
    imported.add_argument("--passphrase-file", type=Path, metavar="F", help="the passphrase of an encrypted bundle")
    imported.add_argument("--check", action="store_true", help="a twin bundle: check it and say what it would do")
    imported.set_defaults(run=run_import)
    for command in (export, imported):
        command.add_argument("--root", type=Path, metavar="DIR",
                             help="the appliance whose files these are (default /; --file defaults to its "
                                  "etc/postern/postern.yaml)")
    diff = actions.add_parser("diff", help="what changed between two versions (default: 1 and 0)")
    diff.add_argument("old", nargs="?", default="1")
    diff.add_argument("new", nargs="?", default="0")
    diff.add_argument("--text", action="store_true", help="a line-by-line diff of the files instead")
    diff.set_defaults(run=run_diff)
    restore = actions.add_parser("restore", help="make an older version current again")
    restore.add_argument("version")
    restore.set_defaults(run=run_restore)
    migrate = actions.add_parser("migrate", help="convert the file between configuration schemas (run by updates)")
    migrate.add_argument("--from", dest="source", type=int, required=True, metavar="N")
    migrate.add_argument("--to", dest="target", type=int, required=True, metavar="N")
    migrate.set_defaults(run=run_migrate)


def _root(args) -> Path:
    root = getattr(args, "root", None)
    return root.absolute() if root else Path("/")


def _store(args) -> ConfigStore:
    root = _root(args)
    if root != Path("/") and args.file == DEFAULT_CONFIG:
        args.file = root / DEFAULT_CONFIG.relative_to("/")
    return ConfigStore(args.file, keep=args.keep)


def _guarded(action):
    def run(args) -> int:
        try:
            return action(_store(args), args)
        except ConfigError as error:
            complain(error.problems)
            return exit_codes.INVALID
        except OSError as error:
            complain(f"{getattr(error, 'filename', None) or args.file}: {error.strerror or error}")
            return exit_codes.FAILED

    return run


@_guarded
def run_versions(store: ConfigStore, args) -> int:
    versions = store.versions()
    if not versions:
        say(f"no saved versions of {store.path} yet")
    for index, version in enumerate(versions):
        say(f"{index:>3}  {version.id}  {version.saved_at:%Y-%m-%d %H:%M:%S} UTC")
    return exit_codes.OK


@_guarded
def run_show(store: ConfigStore, args) -> int:
    text = store.version_text(args.version)
    say(text.rstrip("\n"))
    return exit_codes.OK


@_guarded
def run_export(store: ConfigStore, args) -> int:
    if (args.destination is None) == (args.for_another is None):
        complain("name one file: config export FILE (this configuration) or --for-another FILE (a twin bundle)")
        return exit_codes.USAGE
    if args.destination is not None:
        if args.with_certificate or args.passphrase_file or args.encrypt:
            complain("--with-certificate, --passphrase-file and --encrypt go with --for-another")
            return exit_codes.USAGE
        store.export(args.destination)
        say(f"exported {store.path} to {args.destination}")
        return exit_codes.OK
    try:
        passphrase = _read_passphrase(args.passphrase_file, args.encrypt, twice=True)
    except ValueError as error:
        complain(str(error))
        return exit_codes.INVALID
    made = twin.make_bundle(store, _root(args), args.with_certificate)
    twin.write_bundle(made.bundle, args.for_another, passphrase)
    say(f"{args.for_another}: a twin bundle of {made.bundle['twin']['from']} for another gateway")
    for line in made.carried:
        say(f"carried: {line}")
    for line in made.left:
        say(f"left out (each gateway keeps its own): {line}")
    for note in made.notes:
        say(f"note: {note}")
    if passphrase is None:
        say(f"note: the bundle holds private keys and passwords, unencrypted: it is written 0600; "
            "delete it once imported, or encrypt it (--passphrase-file)")
    say(f"next: postern-appliance config import {args.for_another.name} on the other gateway")
    return exit_codes.OK


@_guarded
def run_import(store: ConfigStore, args) -> int:
    if twin.is_encrypted(args.source) or _is_bundle_file(args.source):
        return _import_twin(store, args)
    if args.passphrase_file or args.check:
        complain(f"{args.source}: not a twin bundle: --passphrase-file and --check go with one")
        return exit_codes.USAGE
    version = store.import_file(args.source)
    say(f"imported {args.source}: version {version.id} is now the current configuration")
    return exit_codes.OK


def _is_bundle_file(source: Path) -> bool:
    try:
        return twin.is_bundle(parse_text(twin.read_bundle_text(source), str(source)))
    except ConfigError:
        return False  # the configuration's own import says what is wrong with it


def _import_twin(store: ConfigStore, args) -> int:
    try:
        passphrase = _read_passphrase(args.passphrase_file, twin.is_encrypted(args.source), twice=False)
    except ValueError as error:
        complain(f"{args.source}: encrypted: {error}; nothing was changed")
        return exit_codes.INVALID
    document = parse_text(twin.read_bundle_text(args.source, passphrase), str(args.source))
    found, problems = twin.check_bundle(document)
    plan = None
    if found is not None:
        plan, problems = twin.plan_import(found, store, _root(args))
    if problems:
        complain(problems)
        complain(f"{args.source}: {len(problems)} problem{'s' if len(problems) > 1 else ''}; nothing was changed")
        return exit_codes.INVALID
    if args.check:
        for line in plan.carried:
            say(f"would carry: {line}")
        for line in plan.kept:
            say(f"would keep: {line}")
        for note in plan.notes:
            say(f"note: {note}")
        say(f"{args.source}: the bundle is valid for this gateway; nothing was changed")
        return exit_codes.OK
    for line in twin.carry_out_import(plan, store, _root(args)):
        say(line)
    say("relay: systemctl reload postern-relay puts it in force")
    return exit_codes.OK


@_guarded
def run_diff(store: ConfigStore, args) -> int:
    if args.text:
        say(store.unified_diff(args.old, args.new).rstrip("\n") or "no differences")
        return exit_codes.OK
    changes = store.diff(args.old, args.new)
    for change in changes:
        say(str(change))
    if not changes:
        say("no differences")
    return exit_codes.OK


@_guarded
def run_restore(store: ConfigStore, args) -> int:
    version = store.restore(args.version)
    say(f"version {args.version} is the current configuration again (saved as {version.id})")
    return exit_codes.OK


@_guarded
def run_migrate(store: ConfigStore, args) -> int:
    """Forward, the result must be valid for this version (whose schema it is); backward, it is for an older
    release, which checks it when it starts, so it is written as it is."""
    text = store.current_text()
    if text is None:
        say(f"{store.path}: no configuration yet; nothing to migrate")
        return exit_codes.OK
    try:
        document = migrations.migrate(parse_text(text, str(store.path)), args.source, args.target)
    except migrations.MigrationError as error:
        complain(f"--from/--to: {error}")
        return exit_codes.INVALID
    if args.target >= migrations.SCHEMA:
        version = store.save(document)
    else:
        version = store.write(yaml.safe_dump(document, sort_keys=False, default_flow_style=False))
    say(f"migrated from schema {args.source} to {args.target} (saved as {version.id})")
    return exit_codes.OK
