"""Twin bundles: what a second gateway needs from the first to behave the same (docs/ha.md).

Two gateways named as smart hosts in one Exchange Online connector, or as two MX records of
equal preference, must take the same mail the same way and sign it with the same DKIM key,
while each keeps its own name and addresses. A twin bundle carries exactly that:

- carried: the `mta:` section, minus what names this machine; the files it names under
  /etc/postern, embedded: the DKIM keys (the other gateway must sign with the published
  key), the smart hosts' password files, the CA files of `tls.ca_file` and of `tls_policy`;
- kept by each appliance: `network:` and every other section, `mta.hostname`,
  `mta.helo_name`, `mta.dns_servers` (the resolvers of its site, like `network.dns`),
  `mta.listen` and `mta.smtps_listen` when they name addresses rather than 0.0.0.0 or ::,
  and the certificates it shows (`mta.tls.cert_file`, `key_file`, `client_cert_file`,
  `client_key_file`): a certificate names its host. With `with_certificate` they are
  carried too, for two gateways that share one certificate whose names cover both.
  The administrator's login is not in the configuration: it never travels.

A bundle is one YAML document (`twin:` says its format and where it comes from, `mta:`,
`files:` by their path on the appliance), written 0600 since it holds private keys and a
password; with a passphrase it is sealed as `appliance.backup` seals an archive.

Importing trusts nothing in it: every file must be one an `mta:` field names, under
/etc/postern and not one of Postern's own files there; its content must be what the field
wants (a private key, certificates, a password on one line); modes are this appliance's
(keys and passwords root:postern 0640, certificates 0644), never the bundle's. Every
problem is named by its field before anything is written, and a failure part way puts the
old files back.
"""

from __future__ import annotations

import copy
import datetime
import io
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Iterator

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from relay.addresses import control_char_problem
from relay.config import ConfigError, check_fqdn, refuse_control_chars

from . import backup, certificates
from .files import FileSnapshot, atomic_write
from .schema import parse_text, validate_document
from .store import ConfigStore, diff_documents

FORMAT = 1  # the bundle's layout; import refuses any other
ETC = PurePosixPath("/etc/postern")
# Postern's own files in /etc/postern: a bundle never writes them.
RESERVED = ("postern.yaml", "history", "setup-complete", "tls/postern.csr")
MAX_BUNDLE = 8 << 20
MAX_FILE = 1 << 20
SECTIONS = ("twin", "mta", "files")
# `mta:` keys that name this machine or its site: each appliance keeps its own.
KEPT = ("hostname", "helo_name", "dns_servers")
BOUND = ("listen", "smtps_listen")  # kept when they name addresses, carried when only wildcards
WILDCARDS = ("0.0.0.0", "::", "[::]")
CERTIFICATE = ("cert_file", "key_file", "client_cert_file", "client_key_file")  # in mta.tls


@dataclass(frozen=True)
class FileField:
    """An `mta:` field that names a file: where it is, and what the file must hold."""

    name: str  # mta.authentication.dkim_keys.example.com.key_file
    keys: tuple[str, ...]  # its path of keys inside mta
    kind: str  # "key" (a private key), "password", "certificates"
    value: str

    @property
    def secret(self) -> bool:
        return self.kind in ("key", "password")

    @property
    def certificate(self) -> bool:
        return len(self.keys) == 2 and self.keys[0] == "tls" and self.keys[1] in CERTIFICATE


def file_fields(mta: Any) -> Iterator[FileField]:
    """Every field of a raw `mta:` mapping that names a file, with a value (relay/config.py has them all)."""
    if not isinstance(mta, dict):
        return
    candidates: list[tuple[tuple[str, ...], str]] = [
        (("tls", "cert_file"), "certificates"), (("tls", "key_file"), "key"), (("tls", "ca_file"), "certificates"),
        (("tls", "client_cert_file"), "certificates"), (("tls", "client_key_file"), "key"),
        (("internal_relay", "password_file"), "password"), (("external_relay", "password_file"), "password"),
    ]
    policy = mta.get("tls_policy")
    for domain, entry in (policy.items() if isinstance(policy, dict) else ()):
        if isinstance(entry, dict):
            candidates.append((("tls_policy", str(domain), "ca_file"), "certificates"))
    auth = mta.get("authentication")
    keys = auth.get("dkim_keys") if isinstance(auth, dict) else None
    for domain, entry in (keys.items() if isinstance(keys, dict) else ()):
        if isinstance(entry, dict):
            candidates.append((("authentication", "dkim_keys", str(domain), "key_file"), "key"))
    for path, kind in candidates:
        value = _get(mta, path)
        if value not in (None, ""):
            yield FileField("mta." + ".".join(path), path, kind, value)


def _get(data: dict, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def _set(data: dict, path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        data = data[key]
    data[path[-1]] = value


def _bound(addresses: Any) -> bool:
    """Do these listen addresses name this machine's own addresses (not only 0.0.0.0 or ::)?"""
    if not isinstance(addresses, list):
        return False
    return any(not isinstance(item, str) or item.rpartition(":")[0] not in WILDCARDS for item in addresses)


def on_appliance(path: str, root: Path) -> str:
    """A path of a configuration under `root` as the appliance names it: DIR/etc/postern/x -> /etc/postern/x."""
    try:
        return "/" + str(Path(path).relative_to(root)) if root != Path("/") else path
    except ValueError:
        return path


def on_this_machine(path: str, root: Path) -> Path:
    return root / path.lstrip("/")


# --- export ----------------------------------------------------------------------------------


@dataclass
class Export:
    """A bundle made from one appliance, and what it says about what it carried and what it left."""

    bundle: dict
    carried: list[str] = field(default_factory=list)
    left: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def make_bundle(store: ConfigStore, root: Path | str = "/", with_certificate: bool = False) -> Export:
    """The bundle of the appliance whose configuration `store` holds (its files under `root`).

    ConfigError when there is no valid configuration or a file it names cannot be read."""
    root = Path(root)
    text = store.current_text()
    if text is None:
        raise ConfigError([f"{store.path}: there is no configuration yet to export"])
    config = store.load()  # a bundle is made only of a configuration this appliance runs
    document = parse_text(text, str(store.path))
    mta = copy.deepcopy(document.get("mta") or {})
    result = Export({})
    hostname = config.mta.hostname
    for key in KEPT:
        if key in mta:
            result.left.append(f"mta.{key} ({_plain(mta.pop(key))})")
    for key in BOUND:
        if _bound(mta.get(key)):
            result.left.append(f"mta.{key} ({', '.join(map(str, mta.pop(key)))}: this appliance's addresses)")
    files: dict[str, str | bytes] = {}
    outside: list[str] = []
    for found in list(file_fields(mta)):
        if found.certificate and not with_certificate:
            _get(mta, found.keys[:-1]).pop(found.keys[-1])
            result.left.append(f"{found.name} ({found.value}: --with-certificate carries it)")
            continue
        path = on_appliance(found.value, root)
        _set(mta, found.keys, path)
        if not _under_etc(path) and found.secret:
            outside.append(f"{found.name}: {path} is outside {ETC}: a bundle carries keys and passwords only from "
                           f"there: move the file under {ETC} and name it there")
            continue
        if not _under_etc(path):
            result.notes.append(f"{found.name}: {path} is outside {ETC}: not carried; the other appliance "
                                "needs its own copy there (the image's system files are the same on both)")
            continue
        if path not in files:
            data = _read_file(found)
            files[path] = _text_or_bytes(data)
            result.carried.append(f"{path} ({_describe(found)})")
    if outside:
        raise ConfigError(outside)
    if config.mta.marker.enabled and not config.mta.marker.value:
        result.notes.append(f"mta.marker.value is empty: each gateway stamps {config.mta.marker.header} with its own "
                            "hostname; set one value for both (such as your domain) before exporting, so that one "
                            "transport rule exception and the loop count cover both gateways")
    if isinstance(mta.get("tls"), dict) and not mta["tls"]:
        mta.pop("tls")
    for name in document:
        if name != "mta":
            result.left.append(f"{name}: (the whole section)")
    result.bundle = {
        "twin": {"format": FORMAT, "postern": backup.postern_version(), "from": hostname,
                 "created": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                 "with_certificate": with_certificate},
        "mta": mta,
        "files": files,
    }
    result.carried.insert(0, "mta: the relay settings and policies (" + ", ".join(mta) + ")")
    result.left.append("the administrator's login (never in the configuration)")
    return result


def _read_file(found: FileField) -> bytes:
    """A file the configuration names, if it is a regular file no larger than any key or CA file is."""
    path = Path(found.value)
    try:
        if not path.is_file() or path.stat().st_size > MAX_FILE:
            raise ConfigError([f"{found.name}: {found.value} is not a regular file of at most {MAX_FILE >> 10} KiB"])
        return path.read_bytes()
    except OSError as error:
        raise ConfigError([f"{found.name}: cannot read {found.value}: {error.strerror}"]) from None


def _plain(value: Any) -> str:
    return ", ".join(map(str, value)) if isinstance(value, list) else str(value)


def _text_or_bytes(data: bytes) -> str | bytes:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data  # a DER file: YAML keeps it as !!binary


def _describe(found: FileField) -> str:
    if found.keys[:2] == ("authentication", "dkim_keys"):
        return f"the DKIM key of {found.keys[2]}"
    if found.kind == "password":
        return f"the {found.keys[0].replace('_', ' ')}'s password"
    if found.keys[0] == "tls_policy":
        return f"the CAs trusted for {found.keys[1]}"
    return found.name.removeprefix("mta.")


HEADER = ("# A Postern twin bundle (docs/ha.md): `postern-appliance config import` on another gateway.\n"
          "# It holds private keys and passwords: keep it where only you can read it; delete it once imported.\n")


def write_bundle(bundle: dict, destination: Path | str, passphrase: bytes | None = None) -> None:
    """The bundle as a file, 0600 from the start; sealed with the passphrase when there is one."""
    text = (HEADER + yaml.safe_dump(bundle, sort_keys=False, allow_unicode=True)).encode("utf-8")
    if passphrase is not None:
        out = io.BytesIO()
        with backup.Encryptor(out, passphrase) as sealed:
            sealed.write(text)
        text = out.getvalue()
    atomic_write(Path(destination), text, 0o600, (0, 0) if os.geteuid() == 0 else None)


# --- import ----------------------------------------------------------------------------------


def is_encrypted(path: Path | str) -> bool:
    return backup.is_encrypted(path)


def read_bundle_text(path: Path | str, passphrase: bytes | None = None) -> str:
    """The bundle's YAML text, opened with the passphrase when sealed; ConfigError with one line."""
    path = Path(path)
    try:
        with open(path, "rb") as source:
            data = source.read(MAX_BUNDLE + 1)
    except OSError as error:
        raise ConfigError([f"{path}: cannot read it: {error.strerror}"]) from None
    if len(data) > MAX_BUNDLE:
        raise ConfigError([f"{path}: larger than {MAX_BUNDLE >> 20} MiB: not a twin bundle"])
    if data.startswith(backup.ENCRYPTED_MAGIC):
        if passphrase is None:
            raise ConfigError([f"{path}: encrypted: give its passphrase (--passphrase-file FILE)"])
        try:
            data = backup.Decryptor(io.BytesIO(data), passphrase, {}).read()
        except backup.BackupError as error:
            words = str(error).replace("archive", "bundle")
            raise ConfigError([f"{path}: {words}"]) from None
        if data.startswith(b"\x1f\x8b"):
            raise ConfigError([f"{path}: an encrypted backup archive, not a twin bundle: postern-appliance restore reads it"])
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError([f"{path}: not UTF-8 text"]) from None


def is_bundle(document: Any) -> bool:
    """A twin bundle, rather than a whole configuration file (which has no `twin:` section)?"""
    return isinstance(document, dict) and "twin" in document


@dataclass
class Twin:
    """A checked bundle: the `mta:` it carries and its files as bytes, by their path on the appliance."""

    source: str  # the hostname of the appliance it comes from
    postern: str
    with_certificate: bool
    mta: dict
    files: dict[str, bytes]
    kinds: dict[str, str]  # path -> "key", "password", "certificates"


def check_bundle(document: Any) -> tuple[Twin | None, list[str]]:
    """Check a bundle's shape, version, paths and files; (twin, []) or (None, every problem by its field).

    The `mta:` settings themselves are checked with this appliance's own kept on top, by `plan_import`."""
    if not is_bundle(document):
        return None, ["not a twin bundle: it has no twin: section (postern-appliance config export --for-another makes one)"]
    meta = document["twin"]
    if not isinstance(meta, dict):
        return None, ["twin: must be a mapping with format, postern and from"]
    version = meta.get("format")
    if version != FORMAT or isinstance(version, bool):
        said = "missing" if "format" not in meta else repr(version)[:20]
        return None, [f"twin.format: {said}: this Postern ({backup.postern_version()}) reads bundles of format "
                      f"{FORMAT}; the bundle comes from Postern {str(meta.get('postern', 'unknown'))[:40]}: "
                      "run the same Postern image on both gateways"]
    problems = [f"{key}: unknown section of a twin bundle; known sections are {', '.join(SECTIONS)}"
                for key in document if key not in SECTIONS]
    files = document.get("files") or {}
    problems = refuse_control_chars("", {key: document[key] for key in document if key in ("twin", "mta")}, problems)
    if not isinstance(files, dict):
        problems.append("files: must be a mapping of /etc/postern paths to their content")
        files = {}
    problems = refuse_control_chars("", {"files": dict.fromkeys(files)}, problems)  # the paths; contents have lines
    source = meta.get("from")
    try:
        source = check_fqdn(source)
    except ValueError as error:
        if not any(line.startswith("twin.from:") for line in problems):
            problems.append(f"twin.from: {error}")
    with_certificate = meta.get("with_certificate", False)
    if not isinstance(with_certificate, bool):
        problems.append(f"twin.with_certificate: {with_certificate!r} is not true or false")
    mta = document.get("mta")
    if not isinstance(mta, dict):
        problems.append("mta: must be a mapping: the relay settings the bundle carries")
        return None, problems
    for key in (*KEPT, *(key for key in BOUND if _bound(mta.get(key)))):
        if key in mta:
            problems.append(f"mta.{key}: names one gateway: each keeps its own; remove it from the bundle")
    contents: dict[str, bytes] = {}
    kinds: dict[str, str] = {}
    for path, content in files.items():
        where = f"files.{path}"
        if control_char_problem(str(path)):
            continue  # said already
        reason = path_problem(path)
        if reason:
            problems.append(f"{where}: {reason}")
            continue
        if isinstance(content, str):
            content = content.encode("utf-8")
        if not isinstance(content, bytes):
            problems.append(f"{where}: must be the file's content (text, or !!binary)")
            continue
        if len(content) > MAX_FILE:
            problems.append(f"{where}: is {len(content)} bytes: no key, password or CA file is that long")
            continue
        contents[path] = content
    named = set()
    for found in file_fields(mta):
        if not isinstance(found.value, str):
            continue  # the configuration's own check names it
        if found.certificate and not with_certificate:
            problems.append(f"{found.name}: the bundle says it carries no certificate (with_certificate: false)")
            continue
        if not _under_etc(found.value):
            if found.secret:
                problems.append(f"{found.name}: {found.value} is outside {ETC}: a key or password comes "
                                f"in the bundle, under {ETC}")
            continue  # a system file the image has (a CA bundle): read where it is
        reason = path_problem(found.value)
        if reason:
            problems.append(f"{found.name}: {reason}")
            continue
        named.add(found.value)
        if found.value not in contents:
            if found.value not in files:
                problems.append(f"{found.name}: {found.value} is not in the bundle's files")
            continue
        if kinds.get(found.value, found.kind) != found.kind:
            problems.append(f"{found.name}: {found.value} is named as a {kinds[found.value]} file too")
            continue
        kinds[found.value] = found.kind
        reason = content_problem(found.kind, contents[found.value])
        if reason:
            problems.append(f"files.{found.value}: {reason} ({found.name} names it)")
    for path in contents:
        if path not in named and not any(line.startswith(f"files.{path}:") for line in problems):
            problems.append(f"files.{path}: no mta: field names it: a bundle carries only the files its settings use")
    if problems:
        return None, problems
    return Twin(source, str(meta.get("postern", "unknown")), with_certificate, mta, contents, kinds), []


def _under_etc(path: Any) -> bool:
    return isinstance(path, str) and path.startswith(str(ETC) + "/")


def path_problem(path: Any) -> str | None:
    """Why a bundle may not write this path (None when it may): only files under /etc/postern, by a
    plain absolute path, and none of Postern's own."""
    if not isinstance(path, str) or not path.startswith("/"):
        return f"{path!r} is not an absolute path under {ETC}"
    pieces = path.split("/")[1:]
    if any(piece in ("", ".", "..") or piece.startswith(".") for piece in pieces):
        return f"{path} is not a plain path (no '..', '.', empty or hidden parts)"
    if not _under_etc(path):
        return f"{path} is outside {ETC}: a bundle writes only there"
    relative = path[len(str(ETC)) + 1:]
    if any(relative == name or relative.startswith(name + "/") for name in RESERVED):
        return f"{path} is Postern's own file: a bundle never writes it"
    if len(path) > 1024:
        return "the path is too long"
    return None


def content_problem(kind: str, content: bytes) -> str | None:
    """Why this content cannot be the file a field of this kind names (None when it can)."""
    if kind == "password":
        try:
            password = content.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError:
            return "the password is not UTF-8 text"
        reason = control_char_problem(password)
        if reason or not password:  # the reason names the character and its place, never the password
            return f"must hold the password on one line{': ' + reason if reason else ''}"
        return None
    if kind == "key":
        try:
            serialization.load_pem_private_key(content, password=None)
        except (ValueError, TypeError):
            return "not a PEM private key (without a passphrase)"
        return None
    try:
        x509.load_pem_x509_certificates(content)
    except ValueError:
        return "no PEM certificate in it"
    return None


@dataclass
class ImportPlan:
    """What importing a bundle changes: the new configuration and the files, each with its mode."""

    document: dict
    writes: list[tuple[Path, bytes, str]]  # (where, content, kind)
    carried: list[str]
    kept: list[str]
    notes: list[str] = field(default_factory=list)
    changed: int = 0  # settings of mta: that differ from this appliance's before

    def certificate(self) -> tuple[str, str] | None:
        """The certificate and key files the bundle brings (with_certificate), to be loaded as the relay would."""
        tls = self.document["mta"].get("tls") or {}
        written = {str(target) for target, _, _ in self.writes}
        if tls.get("cert_file") in written and tls.get("key_file") in written:
            return tls["cert_file"], tls["key_file"]
        return None


def plan_import(twin: Twin, store: ConfigStore, root: Path | str = "/") -> tuple[ImportPlan | None, list[str]]:
    """This appliance's configuration with the bundle's `mta:` in place of its own, but for what it keeps;
    (plan, []) or (None, every problem). Changes nothing."""
    root = Path(root)
    text = store.current_text()
    if text is None:
        return None, [f"{store.path}: this appliance has no configuration yet: provision it first (its own hostname, "
                      "network and certificate: postern-appliance provision), then import the bundle"]
    document = parse_text(text, str(store.path))
    document = document if isinstance(document, dict) else {}
    own = document.get("mta") if isinstance(document.get("mta"), dict) else {}
    network = document.get("network") if isinstance(document.get("network"), dict) else {}
    hostname = own.get("hostname") or network.get("hostname")
    if not hostname:
        return None, ["mta.hostname: this appliance has no name of its own yet: provision it first, then import"]
    if str(hostname).lower().rstrip(".") == twin.source:
        return None, [f"mta.hostname: this appliance is {hostname} too, the gateway the bundle comes from: "
                      "give it a name of its own first (each greets and signs Received: with its own)"]
    mta = copy.deepcopy(twin.mta)
    kept = [f"mta.hostname ({hostname})"]
    mine = {"hostname": hostname}
    for key in KEPT[1:] + BOUND:
        if key in own and key not in mta:
            mine[key] = own[key]
            kept.append(f"mta.{key} ({_plain(own[key])})")
    mta = {**mine, **mta}
    own_tls = own.get("tls") if isinstance(own.get("tls"), dict) else {}
    if not twin.with_certificate:
        certificate = {key: own_tls[key] for key in CERTIFICATE if own_tls.get(key)}
        if certificate:
            tls = mta.get("tls") if isinstance(mta.get("tls"), dict) else {}
            mta["tls"] = {**tls, **certificate}
            kept += [f"mta.tls.{key} ({value})" for key, value in certificate.items()]
    writes, carried, replaced = [], [f"mta: the relay settings and policies of {twin.source}"], []
    for found in file_fields(twin.mta):
        if found.value in twin.files:
            target = on_this_machine(found.value, root)
            _set(mta, found.keys, str(target))
            if all(target != write[0] for write in writes):
                writes.append((target, twin.files[found.value], twin.kinds[found.value]))
                carried.append(f"{target} ({_describe(found)})")
                if target.is_file() and target.read_bytes() != twin.files[found.value]:
                    replaced.append(str(target))
    kept += [f"{name}: (the whole section)" for name in document if name != "mta"]
    new_document = {**document, "mta": mta}
    problems = _validate(new_document, writes)
    if problems:
        return None, problems
    plan = ImportPlan(new_document, writes, carried, kept, changed=len(diff_documents(own, mta)))
    plan.notes += [f"{path}: replaced: this appliance's own file there differed" for path in replaced]
    if twin.postern != backup.postern_version():
        plan.notes.append(f"the bundle was made by Postern {twin.postern}, this is {backup.postern_version()}: "
                          "run the same image on both gateways")
    if twin.with_certificate:
        plan.notes += _certificate_notes(twin, str(hostname))
    return plan, []


def _validate(document: dict, writes: list[tuple[Path, bytes, str]]) -> list[str]:
    """The new configuration as this appliance's validators see it, with stand-ins for the password files
    (the relay checks that they exist with a safe mode, and they are not written yet)."""
    with tempfile.TemporaryDirectory(prefix="postern-twin-") as scratch:
        stand_in = Path(scratch) / "password"
        atomic_write(stand_in, "stand-in\n", 0o600)
        checked = copy.deepcopy(document)
        passwords = {str(target) for target, _, kind in writes if kind == "password"}
        for found in list(file_fields(checked.get("mta"))):
            if found.kind == "password" and found.value in passwords:
                _set(checked["mta"], found.keys, str(stand_in))
        return validate_document(checked)[1]


def _certificate_notes(twin: Twin, hostname: str) -> list[str]:
    cert = next((content for path, content in twin.files.items()
                 if twin.kinds.get(path) == "certificates" and path.endswith(".pem") and "/tls/" in path), None)
    if cert is None:
        return []
    try:
        info = certificates.describe(x509.load_pem_x509_certificates(cert)[0])
    except ValueError:
        return []
    return [f"certificate: {warning}" for warning in certificates.warnings(info, hostname)]


def carry_out_import(plan: ImportPlan, store: ConfigStore, root: Path | str = "/") -> list[str]:
    """Write the files (keys and passwords root:postern 0640, certificates 0644), then the configuration;
    any failure puts the files back as they were. Returns what was done, one line each."""
    mode, owner, note = certificates.key_access(root)
    snapshot = FileSnapshot.take([target for target, _, _ in plan.writes])
    try:
        for target, content, kind in plan.writes:
            target.parent.mkdir(parents=True, exist_ok=True)
            if kind == "certificates":
                atomic_write(target, content, 0o644)
            else:
                atomic_write(target, content, mode, owner)
        pair = plan.certificate()
        problem = certificates.relay_check(*pair, root) if pair else ""
        if problem:
            raise ConfigError([f"mta.tls.cert_file: the relay cannot load the bundle's certificate and key: {problem}: "
                               "this appliance's files are kept"])
        version = store.save(plan.document)
    except BaseException:
        snapshot.restore()
        raise
    lines = [f"carried: {line}" for line in plan.carried]
    lines += [f"kept: {line}" for line in plan.kept]
    lines.append(f"changed: {plan.changed} setting{'' if plan.changed == 1 else 's'} of mta: "
                 "(postern-appliance config diff lists each)")
    lines += [f"note: {line}" for line in plan.notes + ([note] if note and plan.writes else [])]
    lines.append(f"configuration: version {version.id} of {store.path} is now the current one")
    return lines
