"""`cert self-signed | csr | import | show`: the appliance's TLS certificate."""

from __future__ import annotations

from pathlib import Path

from .. import certificates
from ..certificates import DEFAULT_CERT, DEFAULT_KEY, CertificateError, InputError, RelayCannotLoad
from . import exit_codes
from .output import complain, say


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


def _guarded(action):
    def run(args) -> int:
        def call() -> int:
            if hasattr(args, "root"):
                _paths(args)
            return action(args)

        return guarded_call(call)

    return run


def guarded_call(call, input_words=lambda error: f"--{error.field.replace('_', '-')}: {error}") -> int:
    """`call()`'s exit code, or a key or certificate command's failure said in one line with its exit
    code; `input_words` words an InputError (by default as the option it names)."""
    try:
        return call()
    except RelayCannotLoad as error:
        complain(str(error))
        return exit_codes.FAILED
    except InputError as error:
        complain(input_words(error))
        return exit_codes.INVALID
    except CertificateError as error:
        complain(str(error))
        return exit_codes.INVALID
    except OSError as error:
        complain(f"{error.filename or ''}: {error.strerror or error}".lstrip(": "))
        return exit_codes.FAILED


def _say(lines: list[str]) -> None:
    for line in lines:
        say(line)


@_guarded
def run_self_signed(args) -> int:
    certificate, done = certificates.make_self_signed(args.hostname, args.key_type, args.days, args.cert_file,
                                                      args.key_file, args.root)
    _say(done)
    _say(certificates.description([certificate], None))  # its one SAN is the hostname
    return exit_codes.OK


@_guarded
def run_csr(args) -> int:
    _, done = certificates.make_request(args.hostname, args.key_type, args.key_file, args.out, args.root)
    _say(done)
    return exit_codes.OK


@_guarded
def run_import(args) -> int:
    bundle = certificates.read_bundle(args.cert, args.chain, args.key)
    _say(certificates.install_bundle(bundle, args.cert_file, args.key_file, args.root))
    _say(certificates.description([bundle.certificate, *bundle.chain], args.hostname))
    return exit_codes.OK


@_guarded
def run_show(args) -> int:
    _say(certificates.description(certificates.load_certificates(args.file.read_bytes(), str(args.file)),
                                  args.hostname))
    return exit_codes.OK
