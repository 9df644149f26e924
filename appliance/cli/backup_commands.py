"""`backup` and `restore`: the whole appliance in one archive, and back (docs/backup.md).

    postern-appliance backup [--output FILE] [--queue] [--passphrase-file F | --encrypt] [--root DIR]
    postern-appliance restore ARCHIVE [--check] [--without-network] [--without-queue]
                              [--passphrase-file F] [--force] [--root DIR]
"""

from __future__ import annotations

import datetime
import getpass
import os
import sys
from pathlib import Path

from relay.control.client import DEFAULT_SOCKET, ControlClient, ControlError, NoAnswer, PermissionDenied, Unreachable

from .. import backup
from . import exit_codes
from .output import complain, say


def add_commands(commands) -> None:
    make = commands.add_parser("backup", help="write one archive of the appliance: configuration and its history, "
                                              "certificates and keys, admin SSH keys, network; optionally the queue")
    make.add_argument("--output", "-o", type=Path, metavar="FILE",
                      help="the archive to write (default postern-backup-HOSTNAME-TIME.tar.gz here; "
                           "- for standard output)")
    make.add_argument("--queue", action="store_true", help="include the queued messages with their delivery state")
    secret = make.add_mutually_exclusive_group()
    secret.add_argument("--passphrase-file", type=Path, metavar="F",
                        help="encrypt with the passphrase in this file (its first line)")
    secret.add_argument("--encrypt", action="store_true", help="encrypt with a passphrase asked for on the terminal")
    make.set_defaults(run=run_backup)

    back = commands.add_parser("restore", help="put an archive's files back (check it first, change nothing: --check)")
    back.add_argument("archive", type=Path, metavar="ARCHIVE")
    back.add_argument("--check", action="store_true", help="verify the archive and list what it would restore; "
                                                           "change nothing")
    back.add_argument("--without-network", action="store_true",
                      help="keep this machine's network settings (files and the configuration's network: section)")
    back.add_argument("--without-queue", action="store_true", help="leave the archive's queued messages out")
    back.add_argument("--passphrase-file", type=Path, metavar="F",
                      help="the passphrase of an encrypted archive (asked for on the terminal otherwise)")
    back.add_argument("--force", action="store_true", help="restore the queue even while the relay answers")
    back.add_argument("--socket", metavar="PATH",
                      help=f"the relay's control socket (default {DEFAULT_SOCKET} when ROOT is /)")
    back.set_defaults(run=run_restore)

    for command in (make, back):
        command.add_argument("--root", type=Path, default=Path("/"), metavar="DIR",
                             help="the system whose files these are (default /)")
        command.add_argument("--state-dir", type=Path, metavar="DIR",
                             help=f"the relay's state directory (default /{backup.STATE_DIR} under --root)")


def _read_passphrase(path: Path | None, ask: bool, twice: bool) -> bytes | None:
    """The passphrase from its file (first line), or typed at the terminal; ValueError with the reason."""
    if path is not None:
        try:
            lines = path.read_bytes().splitlines()
        except OSError as error:
            raise ValueError(f"--passphrase-file: {path}: {error.strerror}") from None
        if not lines or not lines[0]:
            raise ValueError(f"--passphrase-file: {path}: its first line is empty")
        return lines[0]
    if not ask:
        return None
    if not sys.stdin.isatty():
        raise ValueError("no terminal to ask for the passphrase on: give --passphrase-file FILE")
    typed = getpass.getpass("Passphrase: ")
    if not typed:
        raise ValueError("the passphrase is empty")
    if twice and getpass.getpass("Passphrase again: ") != typed:
        raise ValueError("the two passphrases differ; nothing was written")
    return typed.encode("utf-8")


def _size(count: int) -> str:
    for unit in ("bytes", "kB", "MB", "GB"):
        if count < 1000 or unit == "GB":
            return f"{count} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1000
    return ""


def _count(number: int, what: str) -> str:
    return f"{number} {what}{'' if number == 1 else 's'}"


def _contents(manifest: backup.Manifest) -> str:
    words = [f"configuration and history {_count(manifest.count('configuration'), 'file')}"]
    for part, name in (("certificates", "TLS"), ("dkim", "DKIM"), ("admin", "admin SSH"), ("network", "network")):
        words.append(f"{name} {_count(manifest.count(part), 'file')}")
    if manifest.queue:
        words.append(f"queue {_count(manifest.messages(), 'message')}")
    return ", ".join(words)


def run_backup(args) -> int:
    root = args.root.absolute()
    try:
        passphrase = _read_passphrase(args.passphrase_file, args.encrypt, twice=True)
    except ValueError as error:
        complain(str(error))
        return exit_codes.INVALID
    if args.output is None:
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        name = backup.hostname_of(root) or "appliance"
        args.output = Path(f"postern-backup-{name}-{stamp}.tar.gz{'.enc' if passphrase else ''}")
    try:
        if str(args.output) == "-":
            manifest, notes = backup.write_archive(sys.stdout.buffer, root, state_dir=args.state_dir,
                                                   queue=args.queue, passphrase=passphrase)
        else:
            manifest, notes = _write_file(args.output, root, args.state_dir, args.queue, passphrase)
    except backup.BackupError as error:
        complain(str(error))
        return exit_codes.FAILED
    except OSError as error:
        complain(f"{args.output}: cannot write the archive: {error.strerror or error}")
        return exit_codes.FAILED
    tell = complain if str(args.output) == "-" else say  # the archive itself is on standard output
    for note in notes:
        tell(f"note: {note}")
    to_file = str(args.output) != "-"
    where = f"{args.output} ({_size(args.output.stat().st_size)})" if to_file else "standard output"
    files = sum(1 for item in manifest.items if item.kind == "file")
    tell(f"{where}: {_count(files, 'file')}: {_contents(manifest)}")
    if passphrase is None:
        tell(f"note: the archive holds the private keys, unencrypted{': it is written 0600' if to_file else ''}; "
             "keep it where only you can read it, or encrypt it (--passphrase-file)")
    else:
        tell("encrypted: without the passphrase nobody can restore it, you neither")
    return exit_codes.OK


def _write_file(output: Path, root: Path, state_dir: Path | None, queue: bool, passphrase: bytes | None):
    """The archive under a temporary name (0600 from the start), renamed when complete: an archive with
    the final name is never half written."""
    temporary = output.with_name(f".{output.name}.partial")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # an old partial file may have had another mode
        with os.fdopen(fd, "wb") as out:
            result = backup.write_archive(out, root, state_dir=state_dir, queue=queue, passphrase=passphrase)
            out.flush()
            os.fsync(out.fileno())
        os.rename(temporary, output)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return result


def _relay_answers(socket: str) -> str:
    """Why restoring the queue now would be wrong ("" when no relay answers on the socket)."""
    try:
        with ControlClient(socket, timeout=5) as client:
            client.call("io.postern.Status.Get")
    except Unreachable:
        return ""
    except (PermissionDenied, NoAnswer, ControlError):
        pass
    return (f"the relay is running (its control socket {socket} answers): it would not see the restored "
            "messages and could overwrite their state; stop it first (systemctl stop postern-relay), "
            "or give --force")


def run_restore(args) -> int:
    root = args.root.absolute()
    try:
        encrypted = backup.is_encrypted(args.archive)
    except OSError as error:
        complain(f"{args.archive}: cannot read it: {error.strerror}")
        return exit_codes.INVALID
    try:
        passphrase = _read_passphrase(args.passphrase_file, encrypted, twice=False)
    except ValueError as error:
        complain(f"{args.archive}: encrypted: {error}; nothing was changed")
        return exit_codes.INVALID
    keys: dict = {}  # the passphrase's key, derived once (scrypt is slow on purpose)
    try:
        manifest = backup.verify(args.archive, passphrase, keys)
    except backup.BackupError as error:
        complain(f"{args.archive}: {error}; nothing was changed")
        return exit_codes.INVALID
    network, queue = not args.without_network, not args.without_queue
    socket = args.socket or (DEFAULT_SOCKET if root == Path("/") else None)
    if queue and manifest.messages() and socket and not args.force and not args.check:
        reason = _relay_answers(socket)
        if reason:
            complain(f"{args.archive}: {reason}; nothing was changed")
            return exit_codes.FAILED
    try:
        result = backup.restore(args.archive, root, state_dir=args.state_dir, passphrase=passphrase,
                                network=network, queue=queue, check_only=args.check, keys=keys,
                                verified=manifest)
    except backup.PartlyRestored as error:
        complain(f"{args.archive}: {error}")
        return exit_codes.FAILED
    except backup.BackupError as error:
        complain(f"{args.archive}: {error}; nothing was changed")
        return exit_codes.INVALID
    except OSError as error:
        complain(f"{args.archive}: cannot restore: {error.filename or ''}: {error.strerror or error}; "
                 "nothing was changed")
        return exit_codes.FAILED
    say(f"{args.archive}: a backup of {manifest.hostname or 'an appliance'} made {manifest.created} by Postern "
        f"{manifest.postern}{', encrypted' if encrypted else ''}; every file matches its checksum")
    if args.check:
        _list(manifest, root, args.state_dir, network, queue)
        say("nothing was changed (--check)")
        return exit_codes.OK
    for note in result.notes:
        say(f"note: {note}")
    say(f"restored under {root}: {len(result.written)} files ({_contents(manifest)})")
    for path in result.removed:
        say(f"removed {path}: an interface the restored appliance does not have")
    _say_network(manifest, root, network)
    if queue and manifest.messages():
        say(f"queue: {_count(manifest.messages(), 'message')} put back; the relay delivers them at its next start. A message "
            "delivered while the backup was made may be delivered once more")
    say("reboot (or restart systemd-networkd and postern-relay) to put it all in force" if root == Path("/")
        else f"the files are under {root}; nothing running was changed")
    return exit_codes.OK


def _say_network(manifest: backup.Manifest, root: Path, network: bool) -> None:
    interfaces = backup.interfaces_in(manifest)
    if not network:
        say("network: this machine's settings kept (--without-network), and its network: section in the "
            "configuration")
        return
    if not manifest.count("network"):
        return
    say(f"network: the settings of {manifest.hostname or 'the backed-up appliance'} restored "
        f"(interfaces {', '.join(interfaces) or 'none'}); to keep this machine's instead, restore with "
        "--without-network")
    if root == Path("/"):
        missing = [name for name in interfaces if not Path("/sys/class/net", name).exists()]
        if missing:
            say(f"note: this machine has no interface {', '.join(missing)}: after a reboot it is not reachable "
                "there; set the network from the console (or restore again with --without-network)")


def _list(manifest: backup.Manifest, root: Path, state_dir: Path | None, network: bool, queue: bool) -> None:
    state_dir = state_dir or root / backup.STATE_DIR
    for part in backup.PARTS:
        items = [item for item in manifest.items if item.part == part and item.kind == "file"]
        if not items:
            continue
        skipped = (part == "network" and not network) or (part == "queue" and not queue)
        say(f"{part}:{' (left out)' if skipped else ''}")
        if part == "queue":
            say(f"  {manifest.messages()} messages, {len(items) - manifest.messages()} state files "
                f"into {state_dir / 'queue'}")
            continue
        for item in items:
            owner = f"{item.user or item.uid}:{item.group or item.gid}"
            say(f"  {backup.target_of(item.path, root, state_dir)}  {item.mode:04o} {owner}  {_size(item.size)}")
