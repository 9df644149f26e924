"""The appliance's TLS certificate: make one, ask a CA for one, import one, describe one.

- `self_signed`: an ECDSA P-256 (or RSA 2048) key and a certificate whose subject and only
  SAN is the hostname.
- `signing_request`: a CSR with the same subject and SAN, for a CA.
- `check_bundle`: a PEM certificate, its chain and its key, checked before use: the key
  belongs to the certificate, and each chain certificate issued the one before it.
- `describe` and `warnings`: subject, SANs, issuer, validity, SHA-256 fingerprint; and
  what an admin must hear about (hostname not among the SANs, expiry within 30 days).
- `install`: certificate plus chain in one file (as the relay reads it, mode 0644) and the
  key in another (`root:postern 0640`: the relay runs as its own user), written atomically;
  then the relay's own TLS loading (`relay.tls.server_context`), run as the relay's user,
  must accept the new files, or the old ones are put back and CertificateError says why.

The workflow on top, for `postern-appliance cert` and the console's Certificates screen alike:
`make_self_signed`, `make_request` (the installed key, or a new one written as `write_key`
writes it; the request 0644; what to do next), `read_bundle` and `install_bundle`, and
`description`. Their inputs are checked first (`check_hostname`, `check_key_type`,
`check_days`, where an empty validity is the default, two years); a bad one is an `InputError`
whose `field` names it.
"""

from __future__ import annotations

import datetime
import os
import select
import signal
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from relay.config import MtaConfig, TlsFiles, check_fqdn
from relay.tls import server_context

from .files import FileSnapshot, atomic_write

KEY_TYPES = ("ecdsa", "rsa")
EXPIRY_WARNING_DAYS = 30
DEFAULT_DAYS = 730
MAX_DAYS = 3650
DEFAULT_CERT = Path("/etc/postern/tls/postern.pem")  # as the appliance names them (under its root)
DEFAULT_KEY = Path("/etc/postern/tls/postern.key")


class CertificateError(Exception):
    """A certificate, chain or key that cannot be used; the message says why and what to do. `field` names
    the input it is about (cert, chain, key), when it is about one."""

    def __init__(self, message: str, field: str = ""):
        super().__init__(message)
        self.field = field


class InputError(CertificateError):
    """A value given for the certificate that cannot be used: `field` is its name (hostname, key_type, days,
    out, cert, chain, key, as the command line's options), the message says what to give instead."""


class RelayCannotLoad(CertificateError):
    """Installed files the relay could not load: the previous files are back in place."""


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def new_key(key_type: str = "ecdsa"):
    if check_key_type(key_type) == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def _name(hostname: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])


def _san(hostname: str) -> x509.SubjectAlternativeName:
    return x509.SubjectAlternativeName([x509.DNSName(hostname)])


def self_signed(hostname: str, key=None, days: int = DEFAULT_DAYS, key_type: str = "ecdsa"):
    """A self-signed certificate for `hostname`; returns (certificate, key)."""
    key = key or new_key(key_type)
    now = _now()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name(hostname))
        .issuer_name(_name(hostname))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(_san(hostname), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return certificate, key


def signing_request(hostname: str, key) -> x509.CertificateSigningRequest:
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(_name(hostname))
        .add_extension(_san(hostname), critical=False)
        .sign(key, hashes.SHA256())
    )


# --- reading PEM ---


def load_certificates(pem: bytes, what: str, field: str = "cert") -> list[x509.Certificate]:
    try:
        certificates = x509.load_pem_x509_certificates(pem)
    except ValueError:
        certificates = []
    if not certificates:
        raise CertificateError(f"{what}: no PEM certificate found (expected -----BEGIN CERTIFICATE-----)", field)
    return certificates


def load_key(pem: bytes, what: str = "key"):
    try:
        return serialization.load_pem_private_key(pem, password=None)
    except TypeError:
        raise CertificateError(f"{what}: the key is encrypted: export it without a passphrase", "key") from None
    except ValueError:
        raise CertificateError(f"{what}: not a PEM private key (expected -----BEGIN PRIVATE KEY-----)", "key") from None


def _public_bytes(key) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _issued(certificate: x509.Certificate, issuer: x509.Certificate) -> bool:
    if certificate.issuer != issuer.subject:
        return False
    try:
        certificate.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


@dataclass(frozen=True)
class Bundle:
    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...]
    key: object


def check_bundle(certificate_pem: bytes, chain_pem: bytes | None, key_pem: bytes) -> Bundle:
    """Check that key and certificate belong together and the chain is in order."""
    certificates = load_certificates(certificate_pem, "certificate")
    certificate, chain = certificates[0], certificates[1:]
    if chain_pem and chain_pem.strip():
        chain += load_certificates(chain_pem, "chain", "chain")
    key = load_key(key_pem)
    if _public_bytes(key.public_key()) != _public_bytes(certificate.public_key()):
        raise CertificateError(
            f"key: does not belong to the certificate for {subject_text(certificate)}: "
            "use the key the certificate signing request was made with", "key"
        )
    for position, issuer in enumerate(chain):
        subject = certificate if position == 0 else chain[position - 1]
        if not _issued(subject, issuer):
            expected = subject.issuer.rfc4514_string()
            found = next((i + 1 for i, c in enumerate(chain) if _issued(subject, c)), None)
            hint = f"it is chain certificate {found}: " if found else ""
            raise CertificateError(
                f"chain: certificate {position + 1} ({issuer.subject.rfc4514_string()}) did not issue "
                f"{subject_text(subject)}, whose issuer is {expected}: {hint}"
                "put the chain in order, each certificate followed by the one that issued it", "chain"
            )
    return Bundle(certificate, tuple(chain), key)


# --- describing ---


def subject_text(certificate: x509.Certificate) -> str:
    return certificate.subject.rfc4514_string() or "(empty subject)"


def issued_text(certificate: x509.Certificate) -> str:
    """A chain certificate in one line: its subject and its issuer."""
    return f"{subject_text(certificate)}, issued by {certificate.issuer.rfc4514_string()}"


def sans_of(certificate: x509.Certificate) -> list[str]:
    try:
        extension = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    names = extension.value.get_values_for_type(x509.DNSName)
    addresses = [str(a) for a in extension.value.get_values_for_type(x509.IPAddress)]
    return list(names) + addresses


@dataclass(frozen=True)
class CertificateInfo:
    subject: str
    sans: tuple[str, ...]
    issuer: str
    not_before: datetime.datetime
    not_after: datetime.datetime
    sha256: str
    self_signed: bool

    def lines(self) -> list[str]:
        return [
            f"subject:     {self.subject}",
            f"SANs:        {', '.join(self.sans) or '(none)'}",
            f"issuer:      {self.issuer}{' (self-signed)' if self.self_signed else ''}",
            f"valid from:  {self.not_before:%Y-%m-%d %H:%M} UTC",
            f"valid until: {self.not_after:%Y-%m-%d %H:%M} UTC",
            f"SHA-256:     {self.sha256}",
        ]


def describe(certificate: x509.Certificate) -> CertificateInfo:
    fingerprint = certificate.fingerprint(hashes.SHA256()).hex().upper()
    return CertificateInfo(
        subject=subject_text(certificate),
        sans=tuple(sans_of(certificate)),
        issuer=certificate.issuer.rfc4514_string(),
        not_before=certificate.not_valid_before_utc,
        not_after=certificate.not_valid_after_utc,
        sha256=":".join(fingerprint[i:i + 2] for i in range(0, len(fingerprint), 2)),
        self_signed=certificate.issuer == certificate.subject,
    )


def name_matches(hostname: str, pattern: str) -> bool:
    """A DNS name against a SAN, with a wildcard in the leftmost label only (RFC 6125)."""
    hostname, pattern = hostname.lower().rstrip("."), pattern.lower().rstrip(".")
    if pattern.startswith("*."):
        head, _, rest = hostname.partition(".")
        return bool(head) and rest == pattern[2:]
    return hostname == pattern


def warnings(info: CertificateInfo, hostname: str | None, now: datetime.datetime | None = None) -> list[str]:
    now = now or _now()
    found = []
    if hostname and not any(name_matches(hostname, san) for san in info.sans):
        found.append(
            f"the hostname {hostname} is not among the SANs ({', '.join(info.sans) or 'none'}): "
            "servers that check names will refuse it; make a new certificate or CSR for this hostname"
        )
    if info.not_after <= now:
        found.append(f"expired on {info.not_after:%Y-%m-%d}: replace it")
    elif info.not_after - now <= datetime.timedelta(days=EXPIRY_WARNING_DAYS):
        days = (info.not_after - now).days
        found.append(f"expires in {days} days, on {info.not_after:%Y-%m-%d}: renew it soon")
    if info.not_before > now:
        found.append(f"not valid before {info.not_before:%Y-%m-%d %H:%M} UTC: check the clock")
    return found


# --- writing ---


def pem_of(*certificates: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates)


def csr_pem(request: x509.CertificateSigningRequest) -> bytes:
    return request.public_bytes(serialization.Encoding.PEM)


def key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


RELAY_USER = "postern"  # the relay's user and group on the appliance
_CHECK_SECONDS = 30


def _account_id(file: Path, name: str, field: int) -> int | None:
    """A numeric field of `name`'s line in a passwd or group file (None when there is none)."""
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    for line in lines:
        fields = line.split(":")
        if fields[0] == name and len(fields) > field and fields[field].isdigit():
            return int(fields[field])
    return None


def relay_group(root: Path | str = "/") -> int | None:
    """The relay's group under the root (DIR/etc/group under --root DIR)."""
    return _account_id(Path(root) / "etc/group", RELAY_USER, 2)


def relay_user(root: Path | str = "/") -> tuple[int, int] | None:
    """The relay's user id and group id under the root, when both exist there."""
    uid, gid = _account_id(Path(root) / "etc/passwd", RELAY_USER, 2), relay_group(root)
    return (uid, gid) if uid is not None and gid is not None else None


def key_access(root: Path | str = "/") -> tuple[int, tuple[int, int] | None, str]:
    """(mode, owner, note) for a private key: root:postern 0640 when the group exists and we are root."""
    gid = relay_group(root)
    if gid is None:
        return 0o600, None, (f"no {RELAY_USER} group in {Path(root) / 'etc/group'}: the key is readable by "
                             f"its owner only (0600); a relay running as {RELAY_USER} could not read it")
    if os.geteuid() != 0:
        return 0o600, None, f"not root: the key is readable by its owner only (0600), not by the group {RELAY_USER}"
    return 0o640, (0, gid), ""


def write_key(path: Path | str, key, root: Path | str = "/") -> list[str]:
    """The key as the relay reads it: root:postern 0640 (owner-only 0600 without that group)."""
    mode, owner, note = key_access(root)
    atomic_write(Path(path), key_pem(key), mode, owner)
    return [note] if note else []


def _load(cert_file: Path | str, key_file: Path | str) -> str:
    """The relay's own loading of its server certificate; '' when it works, else why not."""
    try:
        server_context(MtaConfig(tls=TlsFiles(cert_file=str(cert_file), key_file=str(key_file))))
    except (OSError, ssl.SSLError) as error:
        return str(error)
    return ""


def _load_as(account: tuple[int, int], cert_file: Path | str, key_file: Path | str) -> str:
    """`_load` in a child process with the relay's user, group and no other groups: what the relay sees.
    (A fork, not a new interpreter: the relay's user may not be able to start this one, e.g. a venv
    under /root; the child only loads two files and exits.)"""
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into the caller's code
        status = 1
        try:
            os.close(reader)
            try:
                os.setgroups([])
                os.setgid(account[1])
                os.setuid(account[0])
                problem = _load(cert_file, key_file)
            except Exception as error:  # whatever it is, the parent reports it
                problem = f"the check failed: {error}"
            os.write(writer, problem.encode("utf-8", "replace")[:4000])
            status = 0
        finally:
            os._exit(status)
    os.close(writer)
    ready: list = []
    try:
        ready, _, _ = select.select([reader], [], [], _CHECK_SECONDS)
        problem = os.read(reader, 4096).decode("utf-8", "replace") if ready else None
    finally:
        os.close(reader)
        if not ready:
            os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
    if problem is None:
        return f"the check did not finish within {_CHECK_SECONDS} s"
    return problem if problem or status == 0 else "the check ended without an answer"


def relay_check(cert_file: Path | str, key_file: Path | str, root: Path | str = "/") -> str:
    """Load the files as the relay does, as the relay's user when there is one and we are root; '' when
    they load, else why not."""
    account = relay_user(root) if os.geteuid() == 0 else None
    if account is None:
        return _load(cert_file, key_file)
    problem = _load_as(account, cert_file, key_file)
    return f"as user {RELAY_USER}: {problem}" if problem else ""


def install(bundle: Bundle, cert_file: Path | str, key_file: Path | str, root: Path | str = "/") -> list[str]:
    """Write the certificate with its chain (0644) and the key (root:postern 0640), the key first, so a
    reader never finds a certificate whose key is not there yet; then the relay must load them.

    Returns notes worth telling; CertificateError (with the old files put back) when the relay cannot."""
    snapshot = FileSnapshot.take([cert_file, key_file])
    try:
        notes = write_key(key_file, bundle.key, root)
        atomic_write(Path(cert_file), pem_of(bundle.certificate, *bundle.chain), 0o644)
    except BaseException:
        snapshot.restore()
        raise
    problem = relay_check(cert_file, key_file, root)
    if problem:
        snapshot.restore()
        raise RelayCannotLoad(f"the relay cannot load the new certificate and key: {problem}: "
                               f"the previous files are kept (check the directories and modes of {cert_file} and "
                               f"{key_file}, and that the {RELAY_USER} group may read the key)")
    return notes


# --- the workflow: what the command line and the console do with these ---


def check_hostname(hostname: str) -> str:
    try:
        return check_fqdn(hostname.strip())
    except ValueError as error:
        raise InputError(str(error), "hostname") from None


def check_key_type(key_type: str) -> str:
    if key_type not in KEY_TYPES:
        raise InputError(f"{key_type!r}: use ecdsa (P-256) or rsa (2048 bits)", "key_type")
    return key_type


def check_days(days: int | str | None) -> int:
    """A validity in days, 1 to MAX_DAYS; none given (empty): DEFAULT_DAYS."""
    if days is None or str(days).strip() == "":
        return DEFAULT_DAYS
    try:
        days = int(str(days).strip())
    except ValueError:
        days = 0
    if not 1 <= days <= MAX_DAYS:
        raise InputError(f"the validity is a number of days from 1 to {MAX_DAYS} (two years: {DEFAULT_DAYS})", "days")
    return days


def _notes(notes: list[str]) -> list[str]:
    return [f"note: {note}" for note in notes]


def make_self_signed(hostname: str, key_type: str, days: int | str, cert_file: Path, key_file: Path,
                     root: Path | str = "/") -> tuple[x509.Certificate, list[str]]:
    """A new key and a self-signed certificate for the hostname, installed; (the certificate, what was done).
    InputError for a bad hostname, key type or validity, before anything is made."""
    hostname, key_type, days = check_hostname(hostname), check_key_type(key_type), check_days(days)
    certificate, key = self_signed(hostname, days=days, key_type=key_type)
    notes = install(Bundle(certificate, (), key), cert_file, key_file, root)
    return certificate, [f"wrote {cert_file} and {key_file} (a new {key_type} key); the relay loads them",
                         *_notes(notes)]


def make_request(hostname: str, key_type: str, key_file: Path, out: Path,
                 root: Path | str = "/") -> tuple[str, list[str]]:
    """A certificate signing request for the hostname, saved to `out` (0644), signed with the key in
    `key_file`, or with a new key written there (as `write_key` writes it) when there is none;
    (the request as PEM, what was done and what to do next)."""
    hostname, key_type = check_hostname(hostname), check_key_type(key_type)
    if key_file.exists():
        key = load_key(key_file.read_bytes(), str(key_file))
        done = [f"used the installed key {key_file}"]
    else:
        key = new_key(key_type)
        done = [f"wrote a new {key_type} key to {key_file}", *_notes(write_key(key_file, key, root))]
    pem = csr_pem(signing_request(hostname, key)).decode("ascii")
    try:
        atomic_write(out, pem, 0o644)
    except (OSError, ValueError) as error:
        raise InputError(f"{out}: cannot write it: {getattr(error, 'strerror', None) or error}", "out") from None
    done.append(f"saved the request for {hostname} to {out}: send it to your CA, then import its answer "
                f"with the key {key_file}")
    return pem, done


def read_bundle(cert: Path, chain: Path | None, key: Path) -> Bundle:
    """`check_bundle` on the files; InputError for a file that cannot be read."""
    texts = {}
    for name, path in (("cert", cert), ("chain", chain), ("key", key)):
        if path is None:
            continue
        try:
            texts[name] = path.read_bytes()
        except (OSError, ValueError) as error:
            raise InputError(f"{path}: cannot read it: {getattr(error, 'strerror', None) or error}", name) from None
    return check_bundle(texts["cert"], texts.get("chain"), texts["key"])


def install_bundle(bundle: Bundle, cert_file: Path, key_file: Path, root: Path | str = "/") -> list[str]:
    """`install`, and what was done."""
    notes = install(bundle, cert_file, key_file, root)
    return [f"installed {cert_file} (with {len(bundle.chain)} chain certificates) and {key_file}; "
            "the relay loads them", *_notes(notes)]


def description(found: list[x509.Certificate], hostname: str | None) -> list[str]:
    """A certificate and the chain after it, as an admin reads them, with the warnings."""
    info = describe(found[0])
    lines = info.lines()
    lines += [f"chain {index}: {issued_text(c)}" for index, c in enumerate(found[1:], 1)]
    return lines + [f"warning: {w}" for w in warnings(info, hostname)]
