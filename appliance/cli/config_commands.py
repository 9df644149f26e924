"""`config versions | show | export | import | diff | restore`: the configuration store."""

from __future__ import annotations

from pathlib import Path

from relay.config import ConfigError
from relay.config_file import DEFAULT_CONFIG, DEFAULT_KEEP

from ..store import ConfigStore
from . import exit_codes
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
    export = actions.add_parser("export", help="copy the current configuration to a file")
    export.add_argument("destination", type=Path)
    export.set_defaults(run=run_export)
    imported = actions.add_parser("import", help="validate a file and make it the current configuration")
    imported.add_argument("source", type=Path)
    imported.set_defaults(run=run_import)
    diff = actions.add_parser("diff", help="what changed between two versions (default: 1 and 0)")
    diff.add_argument("old", nargs="?", default="1")
    diff.add_argument("new", nargs="?", default="0")
    diff.add_argument("--text", action="store_true", help="a line-by-line diff of the files instead")
    diff.set_defaults(run=run_diff)
    restore = actions.add_parser("restore", help="make an older version current again")
    restore.add_argument("version")
    restore.set_defaults(run=run_restore)


def _store(args) -> ConfigStore:
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
    store.export(args.destination)
    say(f"exported {store.path} to {args.destination}")
    return exit_codes.OK


@_guarded
def run_import(store: ConfigStore, args) -> int:
    version = store.import_file(args.source)
    say(f"imported {args.source}: version {version.id} is now the current configuration")
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
