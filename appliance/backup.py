"""Backup and restore of the whole appliance: one archive, checked before anything is written.

What an archive holds (paths relative to the root, `/` on the appliance):

- `etc/postern/`, all of it: the configuration and its history, the TLS certificate and key,
  the DKIM keys, the smart host's password, `setup-complete` (part names `configuration`,
  `certificates`, `dkim`);
- `home/admin/.ssh/authorized_keys`, the admin's SSH keys (`admin`);
- `etc/apt/apt.conf.d/20auto-upgrades`, whether Debian's security updates install themselves
  (`appliance.security_updates`; `configuration`);
- the files `appliance/network/render.py` writes: `etc/systemd/network/10-postern-*.network`,
  `etc/hostname`, `etc/hosts`, `etc/resolv.conf` (when it is a file of ours, not
  systemd-resolved's link) or resolved's drop-in (`network`);
- with `queue=True`, the relay's queue: `var/lib/postern/queue/msg/*` with each message's
  `state/*`, and `paused.json` (since when each domain is on migration hold) (`queue`).

The archive is a gzip-compressed tar whose last member is `manifest.json`: the format
version, the Postern version that made it, when, the appliance's hostname, and every file
and directory with its mode, owner (as names and numbers) and, for files, size and SHA-256.
It is last because each file is hashed as it is copied, from one open file, so the hash is
the hash of exactly what went in even while the relay writes beside it.

The queue is copied while the relay runs. A message file is written once and renamed into
`msg/`, and a state file is replaced by rename too, so every file opened is complete; each
message's state is opened before its message, and a message gone by then (delivered) is
left out with its state. What the copy cannot know is what happens after it read a file: a
recipient delivered during the copy may still be `pending` in the archive and is delivered
again after a restore. Nothing queued before the copy started is lost.

With a passphrase the archive is encrypted (`encrypt`): scrypt (n=2^17, r=8, p=1) turns
the passphrase into an AES-256-GCM key, and the gzip stream is cut into chunks of 1 MiB,
each sealed on its own with a nonce made of a random prefix, the chunk's number and a
"last chunk" flag (the STREAM construction): memory stays at two chunks whatever the size
of the queue, and a chunk that is changed, moved, dropped or cut off fails its check.

Restore reads the archive twice: once to check every hash against the manifest (and the
manifest's own hash), the format, and that the configuration is one this version reads;
only then a second time to write. Each file is written beside its target under a
temporary name and checked again; only when every file is in place are they renamed over
the old ones, so a failure leaves the system as it was.
"""

from __future__ import annotations

import datetime
import errno
import gzip
import hashlib
import hmac
import importlib.metadata
import io
import json
import os
import re
import secrets
import socket
import stat
import struct
import tarfile
import tempfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import BinaryIO

import yaml
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from .files import fsync_directory
from . import security_updates
from .network import render

FORMAT = 1  # the archive's layout; restore refuses a newer one
MANIFEST = "manifest.json"
CONFIG_DIR = "etc/postern"
CONFIG_FILE = "etc/postern/postern.yaml"
AUTO_UPGRADES = security_updates.AUTO_UPGRADES
ADMIN_SSH = "home/admin/.ssh"
AUTHORIZED_KEYS = "home/admin/.ssh/authorized_keys"
STATE_DIR = "var/lib/postern"
QUEUE_DIRS = ("queue", "queue/msg", "queue/state", "queue/tmp", "queue/corrupt")
PAUSED = "paused.json"
PARTS = ("configuration", "certificates", "dkim", "admin", "network", "queue")

_NETWORK_FILES = (render.HOSTNAME, render.HOSTS, render.RESOLV_CONF, render.RESOLVED_DROPIN)
_NETWORK_FILE = re.compile(rf"{re.escape(render.NETWORKD_DIR)}/{render.NETWORK_FILE_PREFIX}[^/]+\.network")
_QUEUE_FILE = re.compile(rf"{STATE_DIR}/queue/(msg|state)/[0-9A-F]+")
_BLOCK = 1 << 16
_READ_WHOLE = 1 << 28  # the manifest and the configuration are read whole: never more than this


class BackupError(Exception):
    """One line for the admin: what is wrong with the archive or the system, and what to do."""


# --- what goes in ---------------------------------------------------------------------


def part_of(relative: str) -> str | None:
    """Which part of the appliance an archive path belongs to; None for a path no archive may hold.

    Restore writes only paths this names, so a hostile archive cannot reach any other file."""
    pieces = relative.split("/")
    if not relative or relative.startswith("/") or any(piece in ("", ".", "..") for piece in pieces):
        return None
    if relative == CONFIG_DIR or relative.startswith(CONFIG_DIR + "/"):
        sub = pieces[2] if len(pieces) > 3 else ""
        return {"tls": "certificates", "dkim": "dkim"}.get(sub, "configuration")
    if relative in (ADMIN_SSH, AUTHORIZED_KEYS):
        return "admin"
    if relative == AUTO_UPGRADES:
        return "configuration"
    if relative in _NETWORK_FILES or _NETWORK_FILE.fullmatch(relative):
        return "network"
    if (relative in [f"{STATE_DIR}/{name}" for name in (*QUEUE_DIRS, PAUSED)]
            or _QUEUE_FILE.fullmatch(relative)):
        return "queue"
    return None


@dataclass
class Item:
    """One file or directory of the archive, as the manifest describes it."""

    path: str  # relative to the root, as on the appliance (var/lib/postern/... whatever --state-dir was)
    kind: str  # "file" or "dir"
    part: str
    mode: int
    uid: int
    gid: int
    user: str = ""
    group: str = ""
    mtime: float = 0.0
    size: int = 0
    sha256: str = ""

    @classmethod
    def from_json(cls, data: dict) -> Item:
        known = {name: data[name] for name in cls.__dataclass_fields__ if name in data}
        return cls(**known)


@dataclass
class Manifest:
    format: int
    postern: str
    created: str
    hostname: str
    queue: bool
    items: list[Item] = field(default_factory=list)
    configuration: str | None = field(default=None, repr=False)  # the archived postern.yaml, as read back

    def to_json(self) -> bytes:
        body = {"format": self.format, "postern": self.postern, "created": self.created,
                "hostname": self.hostname, "queue": self.queue, "files": [asdict(item) for item in self.items]}
        return json.dumps({"manifest": body, "sha256": _digest(body)}, indent=1).encode() + b"\n"

    def count(self, part: str) -> int:
        return sum(1 for item in self.items if item.part == part and item.kind == "file")

    def messages(self) -> int:
        return sum(1 for item in self.items if "/queue/msg/" in item.path)


def _digest(body: dict) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def postern_version() -> str:
    try:
        return importlib.metadata.version("postern")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _names(root: Path, file: str) -> dict[int, str]:
    """id -> name from root's etc/passwd or etc/group (empty when there is none)."""
    try:
        lines = (root / file).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return {}
    found = {}
    for line in lines:
        fields = line.split(":")
        if len(fields) > 2 and fields[2].isdigit():
            found.setdefault(int(fields[2]), fields[0])
    return found


def hostname_of(root: Path) -> str:
    try:
        name = (root / render.HOSTNAME).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        name = ""
    if not name:
        try:
            document = yaml.safe_load((root / CONFIG_FILE).read_text(encoding="utf-8"))
            name = str(document["mta"]["hostname"])
        except (OSError, ValueError, yaml.YAMLError, KeyError, TypeError):
            name = socket.gethostname() if root == Path("/") else ""
    return name


def _sources(root: Path, state_dir: Path, queue: bool, notes: list[str]) -> Iterator[list[tuple[str, Path]]]:
    """What to copy, as groups of (archive path, file on disk), directories before what they hold.

    A group is one file or directory, or a queued message: its state first, then its message
    file (see the module's docstring for why that order)."""
    def tree(relative: str) -> Iterator[list[tuple[str, Path]]]:
        top = root / relative
        for directory, subdirectories, files in os.walk(top):
            here = Path(directory)
            for name in [name for name in subdirectories if (here / name).is_symlink()]:
                notes.append(f"{here / name}: a symbolic link, not saved")
                subdirectories.remove(name)
            subdirectories.sort()
            yield [(str(here.relative_to(root)), here)]
            for name in sorted(files):
                if name.startswith(".") and name.endswith(".tmp"):
                    continue  # an atomic write under way; its result is the file itself
                yield [(str((here / name).relative_to(root)), here / name)]

    yield from tree(CONFIG_DIR)
    if (root / ADMIN_SSH).is_dir():
        yield [(ADMIN_SSH, root / ADMIN_SSH)]
        yield [(AUTHORIZED_KEYS, root / AUTHORIZED_KEYS)]
    if (root / AUTO_UPGRADES).is_file():
        yield [(AUTO_UPGRADES, root / AUTO_UPGRADES)]
    networkd = root / render.NETWORKD_DIR
    if networkd.is_dir():
        for path in sorted(networkd.glob(f"{render.NETWORK_FILE_PREFIX}*.network")):
            yield [(str(path.relative_to(root)), path)]
    for relative in _NETWORK_FILES:
        path = root / relative
        if path.is_symlink():
            notes.append(f"{path}: systemd-resolved's link, not saved (a fresh image has the same)")
        else:
            yield [(relative, path)]
    if not queue:
        return
    queue_dir = state_dir / "queue"
    if not (queue_dir / "msg").is_dir():
        notes.append(f"{queue_dir}: no queue there; the archive holds no messages")
        return
    for name in QUEUE_DIRS:
        yield [(f"{STATE_DIR}/{name}", state_dir / name)]
    yield [(f"{STATE_DIR}/{PAUSED}", state_dir / PAUSED)]
    for message in sorted(os.listdir(queue_dir / "msg")):
        if re.fullmatch(r"[0-9A-F]+", message):
            yield [(f"{STATE_DIR}/queue/state/{message}", queue_dir / "state" / message),
                   (f"{STATE_DIR}/queue/msg/{message}", queue_dir / "msg" / message)]


class _Hashing:
    """A reader that hashes what passes through it (tarfile reads the file through this)."""

    def __init__(self, source: BinaryIO):
        self.source = source
        self.hash = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.source.read(size)
        self.hash.update(data)
        return data


def _open(path: Path, notes: list[str]) -> int | None:
    """The file or directory opened for copying, never through a symbolic link; None when it is not there."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as error:
        if error.errno == errno.ELOOP:
            notes.append(f"{path}: a symbolic link, not saved")
            return None
        raise BackupError(f"{path}: cannot read it: {error.strerror}") from None
    return fd


def write_archive(out: BinaryIO, root: Path | str = "/", *, state_dir: Path | str | None = None,
                  queue: bool = False, passphrase: bytes | None = None) -> tuple[Manifest, list[str]]:
    """Write the archive of the appliance under `root` to `out`; returns its manifest and notes.

    Raises BackupError when there is nothing to back up (no configuration file) or a file
    cannot be read."""
    root = Path(root)
    state_dir = Path(state_dir) if state_dir else root / STATE_DIR
    if not (root / CONFIG_FILE).is_file():
        raise BackupError(f"{root / CONFIG_FILE}: no configuration there: nothing to back up")
    users, groups = _names(root, "etc/passwd"), _names(root, "etc/group")
    manifest = Manifest(FORMAT, postern_version(),
                        datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                        hostname_of(root), queue)
    notes: list[str] = []
    sink = Encryptor(out, passphrase) if passphrase is not None else _Unclosable(out)
    with sink, gzip.GzipFile(fileobj=sink, mode="wb", compresslevel=6, mtime=0) as compressed, \
            tarfile.open(fileobj=compressed, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for group in _sources(root, state_dir, queue, notes):
            opened = [(relative, path, _open(path, notes)) for relative, path in group]
            try:
                if len(opened) == 2 and opened[1][2] is None:
                    notes.append(f"{opened[1][1].name}: delivered during the copy, not in the archive")
                    continue
                for relative, path, source in opened:
                    if source is not None:
                        item = _add(tar, relative, path, source, users, groups, notes)
                        if item:
                            manifest.items.append(item)
            finally:
                for _, _, source in opened:
                    if source is not None:
                        os.close(source)
        data = manifest.to_json()
        member = tarfile.TarInfo(MANIFEST)
        member.size, member.mode, member.mtime = len(data), 0o600, int(datetime.datetime.now().timestamp())
        tar.addfile(member, io.BytesIO(data))
    return manifest, notes


def _add(tar: tarfile.TarFile, relative: str, path: Path, fd: int, users: dict, groups: dict,
         notes: list[str]) -> Item | None:
    """Copy one open file or directory into the archive; its manifest entry (None when skipped)."""
    info = os.fstat(fd)
    kind = "dir" if stat.S_ISDIR(info.st_mode) else "file" if stat.S_ISREG(info.st_mode) else ""
    part = part_of(relative)
    if not kind or not part:
        notes.append(f"{path}: not a regular file, not saved")
        return None
    item = Item(relative, kind, part, stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid,
                users.get(info.st_uid, ""), groups.get(info.st_gid, ""), info.st_mtime)
    member = tarfile.TarInfo(relative)
    member.mode, member.uid, member.gid = item.mode, item.uid, item.gid
    member.uname, member.gname, member.mtime = item.user, item.group, int(item.mtime)
    if kind == "dir":
        member.type = tarfile.DIRTYPE
        tar.addfile(member)
        return item
    member.size = item.size = info.st_size  # the file is never rewritten in place: this is its size
    with os.fdopen(fd, "rb", closefd=False) as source:
        reader = _Hashing(source)
        tar.addfile(member, reader)
    item.sha256 = reader.hash.hexdigest()
    return item


class _Unclosable:
    """`out` as the compressor's file, left open when the archive is done (the caller owns it)."""

    def __init__(self, out: BinaryIO):
        self.out = out

    def write(self, data) -> int:
        return self.out.write(data)

    def flush(self) -> None:
        self.out.flush()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.out.flush()


# --- encryption ------------------------------------------------------------------------

ENCRYPTED_MAGIC = b"POSTERN-BACKUP-AES256GCM\n"
CHUNK = 1 << 20
_TAG = 16
_HEADER = struct.Struct(">BBBB16s7s16s")  # version, log2(n), r, p, salt, nonce prefix, passphrase check
_SCRYPT = (17, 8, 1)


def _derive(passphrase: bytes, salt: bytes, log_n: int, r: int, p: int) -> tuple[bytes, bytes]:
    """(the AES key, a check value kept in the header to tell a wrong passphrase from damage)."""
    material = Scrypt(salt=salt, length=48, n=1 << log_n, r=r, p=p).derive(passphrase)
    return material[:32], material[32:]


def _nonce(prefix: bytes, number: int, last: bool) -> bytes:
    return prefix + number.to_bytes(4, "big") + (b"\1" if last else b"\0")


class Encryptor:
    """A write-only stream that seals what is written in chunks of CHUNK bytes (see the module)."""

    def __init__(self, out: BinaryIO, passphrase: bytes):
        self.out = out
        salt, prefix = secrets.token_bytes(16), secrets.token_bytes(7)
        key, check = _derive(passphrase, salt, *_SCRYPT)
        self.header = ENCRYPTED_MAGIC + _HEADER.pack(1, *_SCRYPT, salt, prefix, check)
        self.aead, self.prefix = AESGCM(key), prefix
        self.buffer = bytearray()
        self.number = 0
        out.write(self.header)

    def write(self, data) -> int:
        self.buffer += data
        while len(self.buffer) > CHUNK:  # strictly more: the last chunk is never an empty one by surprise
            self._seal(bytes(self.buffer[:CHUNK]), last=False)
            del self.buffer[:CHUNK]
        return len(data)

    def _seal(self, plain: bytes, last: bool) -> None:
        self.out.write(self.aead.encrypt(_nonce(self.prefix, self.number, last), plain, self.header))
        self.number += 1

    def flush(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, kind, *exc) -> None:
        if kind is None:
            self._seal(bytes(self.buffer), last=True)
            self.out.flush()


class Decryptor:
    """A read-only stream of the plain gzip data of an encrypted archive; BackupError on any fault."""

    def __init__(self, source: BinaryIO, passphrase: bytes, keys: dict):
        header = source.read(len(ENCRYPTED_MAGIC) + _HEADER.size)
        if len(header) < len(ENCRYPTED_MAGIC) + _HEADER.size:
            raise BackupError("damaged or truncated archive: its header is cut short")
        version, log_n, r, p, salt, prefix, check = _HEADER.unpack(header[len(ENCRYPTED_MAGIC):])
        if version != 1:
            raise BackupError(f"encrypted with a newer scheme ({version}) than this version reads: "
                              "restore it with a newer Postern")
        if not (10 <= log_n <= 18 and 1 <= r <= 16 and 1 <= p <= 4):
            raise BackupError("damaged archive: its encryption header is not one Postern writes")
        cache_key = (passphrase, header)
        if cache_key not in keys:  # scrypt is slow on purpose: once per archive, not once per reading
            keys[cache_key] = _derive(passphrase, salt, log_n, r, p)
        key, expected = keys[cache_key]
        if not hmac.compare_digest(check, expected):
            raise BackupError("wrong passphrase, or the archive is damaged")
        self.source, self.header, self.prefix = source, header, prefix
        self.aead = AESGCM(key)
        self.number = 0
        self.plain = b""
        self.done = False
        self.following = source.read(CHUNK + _TAG)

    def read(self, size: int = -1) -> bytes:
        while not self.done and (size < 0 or len(self.plain) < size):
            self._open_next()
        if size < 0:
            size = len(self.plain)
        data, self.plain = self.plain[:size], self.plain[size:]
        return data

    def _open_next(self) -> None:
        sealed = self.following
        self.following = self.source.read(CHUNK + _TAG) if sealed else b""
        last = not self.following  # the stream's end says which chunk is the last; its nonce must agree
        try:
            self.plain += self.aead.decrypt(_nonce(self.prefix, self.number, last), sealed, self.header)
        except InvalidTag:
            at = "cut short" if last else f"chunk {self.number + 1} fails its check"
            raise BackupError(f"damaged or truncated archive: {at} (the passphrase is right)") from None
        self.number += 1
        self.done = last


# --- reading ---------------------------------------------------------------------------


def is_encrypted(path: Path | str) -> bool:
    with open(path, "rb") as source:
        return source.read(len(ENCRYPTED_MAGIC)) == ENCRYPTED_MAGIC


@contextmanager
def _members(path: Path, passphrase: bytes | None, keys: dict) -> Iterator[Iterator[tuple[tarfile.TarInfo, tarfile.TarFile]]]:
    """The archive's members in order, with any fault in the file as one BackupError."""
    try:
        source = open(path, "rb")
    except OSError as error:
        raise BackupError(f"{path}: cannot read it: {error.strerror}") from None
    with source:
        start = source.read(len(ENCRYPTED_MAGIC))
        source.seek(0)
        if start == ENCRYPTED_MAGIC:
            if passphrase is None:
                raise BackupError("the archive is encrypted: give its passphrase (--passphrase-file FILE)")
            stream = Decryptor(source, passphrase, keys)
        elif start[:2] == b"\x1f\x8b":
            stream = source
        else:
            raise BackupError("not a Postern backup (neither a gzip archive nor an encrypted one)")

        def walk() -> Iterator[tuple[tarfile.TarInfo, tarfile.TarFile]]:
            with gzip.GzipFile(fileobj=stream, mode="rb") as plain, tarfile.open(fileobj=plain, mode="r|") as tar:
                for member in tar:
                    yield member, tar
                while plain.read(_BLOCK):  # to the end: the gzip check sum, the last sealed chunk
                    pass

        try:
            yield walk()  # the caller reads members' data too: its faults are the archive's
        except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as error:
            reason = str(error) or type(error).__name__
            raise BackupError(f"damaged or truncated archive ({reason})") from None


def _read_manifest(data: bytes) -> Manifest:
    try:
        document = json.loads(data)
        body = document["manifest"] if isinstance(document, dict) and "manifest" in document else document
        found_format = body["format"]
    except (ValueError, KeyError, TypeError):
        raise BackupError("damaged archive: its manifest is unreadable") from None
    if not isinstance(found_format, int) or found_format > FORMAT:
        raise BackupError(f"made by a newer Postern (backup format {found_format}; this Postern "
                          f"{postern_version()} reads format {FORMAT}): update this appliance's image first")
    if document.get("sha256") != _digest(body):
        raise BackupError("damaged archive: its manifest does not match its own checksum")
    try:
        items = [Item.from_json(entry) for entry in body["files"]]
        return Manifest(body["format"], body["postern"], body["created"], body["hostname"], body["queue"], items)
    except (KeyError, TypeError):
        raise BackupError("damaged archive: its manifest is incomplete") from None


def _hash_member(tar: tarfile.TarFile, member: tarfile.TarInfo) -> str:
    digest = hashlib.sha256()
    data = tar.extractfile(member)
    while block := data.read(_BLOCK):
        digest.update(block)
    return digest.hexdigest()


def verify(path: Path | str, passphrase: bytes | None = None, keys: dict | None = None) -> Manifest:
    """Read the whole archive and check it against its manifest, and that this version can use the
    configuration in it; BackupError names the first fault."""
    path, keys = Path(path), {} if keys is None else keys
    seen: dict[str, tuple[str, int, str]] = {}
    manifest, config = None, None
    with _members(path, passphrase, keys) as members:
        for member, tar in members:
            if manifest is not None:
                raise BackupError(f"damaged archive: {member.name} after the manifest")
            if member.name in (MANIFEST, CONFIG_FILE) and member.size > _READ_WHOLE:
                raise BackupError(f"damaged archive: {member.name} is {member.size} bytes, not one Postern writes")
            if member.name == MANIFEST and member.isfile():
                manifest = _read_manifest(tar.extractfile(member).read())
            elif member.name == CONFIG_FILE and member.isfile():
                data = tar.extractfile(member).read()
                seen[member.name] = ("file", member.size, hashlib.sha256(data).hexdigest())
                config = data
            elif member.isfile():
                seen[member.name] = ("file", member.size, _hash_member(tar, member))
            elif member.isdir():
                seen[member.name] = ("dir", 0, "")
            else:
                raise BackupError(f"damaged archive: {member.name} is neither a file nor a directory")
    if manifest is None:
        raise BackupError("damaged or truncated archive: it ends before its manifest")
    listed = {item.path for item in manifest.items}
    for item in manifest.items:
        if item.part != part_of(item.path) or item.part not in PARTS:
            raise BackupError(f"damaged archive: {item.path!r} is not a file a backup holds")
        if item.path not in seen:
            raise BackupError(f"damaged or truncated archive: {item.path} is missing")
        if seen[item.path] != (item.kind, item.size, item.sha256):
            raise BackupError(f"damaged archive: {item.path} does not match its checksum")
    for name in seen:
        if name not in listed:
            raise BackupError(f"damaged archive: {name} is not in the manifest")
    if config is not None:
        try:
            problems = incompatible_configuration(config.decode("utf-8"))
        except UnicodeDecodeError:
            problems = ["the configuration file is not UTF-8 text"]
        if problems:
            raise BackupError(f"made by Postern {manifest.postern}, whose configuration this Postern "
                              f"{postern_version()} cannot use ({problems[0]}): update this appliance's image first")
        manifest.configuration = config.decode("utf-8")
    return manifest


def incompatible_configuration(text: str) -> list[str]:
    """Why this version cannot use an archived configuration (empty when it can).

    The smart host's password file comes with the archive and is not on this system yet:
    the check of that file (it exists, only root and the relay may read it) is made on a
    stand-in, so what is checked is what this version reads, not what is installed."""
    from relay.config import ConfigError

    from .schema import parse_text, validate_document

    try:
        document = parse_text(text, "the configuration")
    except ConfigError as error:
        return error.problems
    with tempfile.NamedTemporaryFile(prefix="postern-restore-") as stand_in:  # created 0600

        def swap(value):
            if isinstance(value, dict):
                return {key: stand_in.name if key == "password_file" and value[key] else swap(item)
                        for key, item in value.items()}
            return [swap(item) for item in value] if isinstance(value, list) else value

        return validate_document(swap(document))[1]


# --- restoring -------------------------------------------------------------------------


@dataclass
class Restored:
    manifest: Manifest
    written: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _ids(root: Path, file: str) -> dict[str, int]:
    return {name: number for number, name in _names(root, file).items()}


def target_of(relative: str, root: Path, state_dir: Path) -> Path:
    if relative.startswith(STATE_DIR + "/"):
        return state_dir / relative[len(STATE_DIR) + 1:]
    return root / relative


def _with_network_of(text: str, current: Path) -> str:
    """The archived configuration with this machine's network: section instead of the archived one."""
    document = yaml.safe_load(text) or {}
    try:
        mine = (yaml.safe_load(current.read_text(encoding="utf-8")) or {}).get("network")
    except (OSError, yaml.YAMLError, UnicodeDecodeError, AttributeError):
        mine = None
    document.pop("network", None)
    if mine is not None:
        document = {"network": mine, **document}
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True)


class PartlyRestored(BackupError):
    """Renaming the checked files into place failed part way (a file system error): some are back."""


def restore(path: Path | str, root: Path | str = "/", *, state_dir: Path | str | None = None,
            passphrase: bytes | None = None, network: bool = True, queue: bool = True,
            check_only: bool = False, keys: dict | None = None, verified: Manifest | None = None) -> Restored:
    """Check the archive, then put its files back under `root` (the queue under `state_dir`).

    Nothing is written before the whole archive has been checked (BackupError otherwise);
    `verified` is the manifest `verify` returned for it just before, when the caller has it.
    `keys` keeps the key derived from the passphrase between readings of the same archive.
    Every file is checked against its hash again as it is written."""
    path, root = Path(path), Path(root)
    state_dir = Path(state_dir) if state_dir else root / STATE_DIR
    keys = {} if keys is None else keys
    manifest = verified or verify(path, passphrase, keys)
    result = Restored(manifest)
    wanted = [item for item in manifest.items
              if (network or item.part != "network") and (queue or item.part != "queue")]
    if check_only:
        return result
    users, groups = _ids(root, "etc/passwd"), _ids(root, "etc/group")
    can_chown = os.geteuid() == 0
    if not can_chown:
        result.notes.append("not root: the files keep this user as owner, not their owners in the archive")
    created: list[Path] = []
    staged: list[tuple[Path, Path]] = []
    try:
        for item in wanted:
            if item.kind == "dir":
                _make_directories(target_of(item.path, root, state_dir), created)
        by_path = {item.path: item for item in wanted if item.kind == "file"}
        with _members(path, passphrase, keys) as members:
            for member, tar in members:
                item = by_path.pop(member.name, None)
                if item is None:
                    continue
                target = target_of(item.path, root, state_dir)
                _make_directories(target.parent, created)
                owner = (users.get(item.user, item.uid), groups.get(item.group, item.gid)) if can_chown else None
                transform = (lambda text: _with_network_of(text, target)) if (
                    item.path == CONFIG_FILE and not network) else None
                staged.append((_stage(tar, member, item, target, owner, transform), target))
        if by_path:
            raise BackupError(f"the archive changed while it was read: {next(iter(by_path))} is gone")
        for done, (temporary, target) in enumerate(staged):
            try:
                os.rename(temporary, target)
            except OSError as error:
                if not done:
                    raise
                raise PartlyRestored(f"{target}: {error.strerror}: {done} of {len(staged)} files were "
                                     "restored already; fix this and restore again") from None
        staged_dirs = {target.parent for _, target in staged}
        for directory in staged_dirs:
            fsync_directory(directory)
    except BaseException:
        for temporary, _ in staged:
            Path(temporary).unlink(missing_ok=True)
        for directory in reversed(created):
            try:
                directory.rmdir()
            except OSError:
                pass
        raise
    for item in wanted:
        if item.kind == "dir":
            target = target_of(item.path, root, state_dir)
            os.chmod(target, item.mode)
            if can_chown:
                os.chown(target, users.get(item.user, item.uid), groups.get(item.group, item.gid))
    result.written = [str(target) for _, target in staged]
    if network and manifest.count("network"):
        result.removed = _remove_stale_network_files(root, {item.path for item in wanted})
    return result


def _make_directories(directory: Path, created: list[Path]) -> None:
    missing = []
    while not directory.exists():
        missing.append(directory)
        directory = directory.parent
    for directory in reversed(missing):
        directory.mkdir(mode=0o755)
        created.append(directory)


def _stage(tar: tarfile.TarFile, member: tarfile.TarInfo, item: Item, target: Path,
           owner: tuple[int, int] | None, transform) -> Path:
    """Write a member beside its target under a temporary name, with its mode and owner; check its hash."""
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".restore", dir=target.parent)
    try:
        os.fchmod(fd, item.mode)
        if owner:
            os.fchown(fd, *owner)
        digest = hashlib.sha256()
        data = tar.extractfile(member)
        if transform:
            content = data.read()
            digest.update(content)
            os.write(fd, transform(content.decode("utf-8")).encode("utf-8"))
        else:
            while block := data.read(_BLOCK):
                digest.update(block)
                view = memoryview(block)
                while view:
                    view = view[os.write(fd, view):]
        if digest.hexdigest() != item.sha256:
            raise BackupError(f"the archive changed while it was read: {item.path} no longer matches its checksum")
        os.utime(fd, (item.mtime, item.mtime))
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(name)
        raise
    os.close(fd)
    return Path(name)


def _remove_stale_network_files(root: Path, restored: set[str]) -> list[str]:
    """Our networkd files for interfaces the restored appliance does not have."""
    removed = []
    directory = root / render.NETWORKD_DIR
    for path in sorted(directory.glob(f"{render.NETWORK_FILE_PREFIX}*.network")) if directory.is_dir() else []:
        if str(path.relative_to(root)) not in restored:
            path.unlink()
            removed.append(str(path))
    return removed


def interfaces_in(manifest: Manifest) -> list[str]:
    """The interfaces the archived network files configure (from their names)."""
    prefix = f"{render.NETWORKD_DIR}/{render.NETWORK_FILE_PREFIX}"
    return [item.path[len(prefix):-len(".network")] for item in manifest.items
            if item.part == "network" and item.path.startswith(prefix)]
