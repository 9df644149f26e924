"""`cert self-signed | csr | import | show`: the appliance's TLS certificate."""

from __future__ import annotations

from pathlib import Path

from relay.config import check_fqdn

from .. import certificates
from ..certificates import CertificateError, RelayCannotLoad
from ..files import atomic_write
from . import exit_codes
from .output import complain, say

DEFAULT_CERT = Path("/etc/postern/tls/postern.pem")
DEFAULT_KEY = Path("/etc/postern/tls/postern.key")


def add_commands(commands) -> None:
    cert = commands.add_parser("cert", help="make, request, import and inspect the TLS certificate")
    actions = cert.add_subparsers(dest="action", required=True, metavar="ACTION")

    made = actions.add_parser("self-signed", help="generate a key and a self-signed certificate for the hostname")
    _hostname(made)
    made.add_argument("--key-type", choices=certificates.KEY_TYPES, default="ecdsa")
    made.add_argument("--days", type=int, default=certificates.DEFAULT_DAYS)
    _destinations(made)
    made.set_defaults(run=run_self_signed)

    csr = actions.add_parser("csr", help="a certificate signing request for a CA (makes the key if it is missing)")
    _hostname(csr)
    csr.add_argument("--key-type", choices=certificates.KEY_TYPES, default="ecdsa")
    csr.add_argument("--key-file", type=Path, help=f"default {DEFAULT_KEY} (root:postern 0640)")
    _root(csr)
    csr.add_argument("--out", type=Path, required=True, metavar="FILE", help="where the CSR (PEM) goes")
    csr.set_defaults(run=run_csr)

    imported = actions.add_parser("import", help="check and install a certificate, its chain and its key")
    imported.add_argument("--cert", type=Path, required=True, metavar="FILE", help="the certificate (PEM)")
    imported.add_argument("--chain", type=Path, metavar="FILE", help="the intermediate certificates (PEM), in order")
    imported.add_argument("--key", type=Path, required=True, metavar="FILE", help="its private key (PEM)")
    imported.add_argument("--hostname", help="warn when this name is not among the SANs")
    _destinations(imported)
    imported.set_defaults(run=run_import)

    show = actions.add_parser("show", help="subject, SANs, issuer, validity and fingerprint of a certificate file")
    show.add_argument("file", type=Path, nargs="?", default=DEFAULT_CERT)
    show.add_argument("--hostname", help="warn when this name is not among the SANs")
    show.set_defaults(run=run_show)


def _hostname(command) -> None:
    command.add_argument("--hostname", required=True, help="the appliance's fully qualified name, e.g. gw.example.com")


def _destinations(command) -> None:
    command.add_argument("--cert-file", type=Path, help=f"default {DEFAULT_CERT} (mode 0644)")
    command.add_argument("--key-file", type=Path, help=f"default {DEFAULT_KEY} (root:postern 0640)")
    _root(command)


def _root(command) -> None:
    command.add_argument("--root", type=Path, default=Path("/"), metavar="DIR",
                         help="the system whose files these are (default /): the default paths and the relay's "
                              "user and group are taken under it")


def _paths(args) -> None:
    """The default files under --root; the relay's group from ROOT/etc/group."""
    args.root = args.root.absolute()
    for name, default in (("cert_file", DEFAULT_CERT), ("key_file", DEFAULT_KEY)):
        if getattr(args, name, "absent") is None:
            setattr(args, name, args.root / default.relative_to("/"))


def _install(bundle, args) -> None:
    for note in certificates.install(bundle, args.cert_file, args.key_file, args.root):
        say(f"note: {note}")


def _guarded(action):
    def run(args) -> int:
        try:
            if hasattr(args, "root"):
                _paths(args)
            return action(args)
        except RelayCannotLoad as error:
            complain(str(error))
            return exit_codes.FAILED
        except CertificateError as error:
            complain(str(error))
            return exit_codes.INVALID
        except ValueError as error:
            complain(f"--hostname: {error}")
            return exit_codes.INVALID
        except OSError as error:
            complain(f"{error.filename or ''}: {error.strerror or error}".lstrip(": "))
            return exit_codes.FAILED

    return run


def _read(path: Path) -> bytes:
    return path.read_bytes()


def _print_certificate(certificate, hostname: str | None) -> None:
    info = certificates.describe(certificate)
    for line in info.lines():
        say(line)
    for warning in certificates.warnings(info, hostname):
        say(f"warning: {warning}")


@_guarded
def run_self_signed(args) -> int:
    hostname = check_fqdn(args.hostname)
    certificate, key = certificates.self_signed(hostname, days=args.days, key_type=args.key_type)
    _install(certificates.Bundle(certificate, (), key), args)
    say(f"wrote {args.cert_file} and {args.key_file}; the relay loads them")
    _print_certificate(certificate, hostname)
    return exit_codes.OK


@_guarded
def run_csr(args) -> int:
    hostname = check_fqdn(args.hostname)
    if args.key_file.exists():
        key = certificates.load_key(_read(args.key_file), str(args.key_file))
        say(f"using the key in {args.key_file}")
    else:
        key = certificates.new_key(args.key_type)
        for note in certificates.write_key(args.key_file, key, args.root):
            say(f"note: {note}")
        say(f"wrote a new {args.key_type} key to {args.key_file}")
    request = certificates.signing_request(hostname, key)
    atomic_write(args.out, certificates.csr_pem(request), 0o644)
    say(f"wrote the certificate signing request for {hostname} to {args.out}: send it to your CA, "
        f"then install the answer with 'postern-appliance cert import --cert FILE --key {args.key_file}'")
    return exit_codes.OK


@_guarded
def run_import(args) -> int:
    bundle = certificates.check_bundle(_read(args.cert), _read(args.chain) if args.chain else None, _read(args.key))
    _install(bundle, args)
    say(f"installed {args.cert_file} (with {len(bundle.chain)} chain certificates) and {args.key_file}; "
        "the relay loads them")
    _print_certificate(bundle.certificate, args.hostname)
    return exit_codes.OK


@_guarded
def run_show(args) -> int:
    found = certificates.load_certificates(_read(args.file), str(args.file))
    _print_certificate(found[0], args.hostname)
    for index, extra in enumerate(found[1:], 1):
        say(f"chain {index}: {certificates.subject_text(extra)}, issued by {extra.issuer.rfc4514_string()}")
    return exit_codes.OK
