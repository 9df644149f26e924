"""The Certificates screen's work: the installed certificate, a new self-signed one, a request for a
CA and an import, through `appliance.certificates`'s workflow (as `postern-appliance cert` does), on
the files the configuration names (`mta.tls`), under the root directory; and the change of the relay's
settings that makes STARTTLS offer the installed certificate (`starttls_change`)."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from . import FieldError

if TYPE_CHECKING:
    from appliance.certificates import Bundle, CertificateInfo
    from appliance.schema import ApplianceConfig


@dataclass
class InstalledCertificate:
    path: Path
    key_path: Path
    info: CertificateInfo | None = None
    warnings: list[str] = field(default_factory=list)
    chain: list[str] = field(default_factory=list)
    problem: str = ""  # why there is nothing to show
    hostname: str = ""
    in_use: bool = False  # the configuration's mta.tls.cert_file names it
    shown_path: str = ""  # as the appliance names it (the root left out)


def _field_error(error) -> FieldError:
    """A CertificateError about an input, at its field (the form's fields are named as the inputs)."""
    return FieldError(error.field or "cert", str(error))


class Certificates:
    """`settings` reads the configuration in force; `root` is the directory the appliance's paths are under."""

    def __init__(self, settings: Callable[[], ApplianceConfig], root: Path):
        self.settings = settings
        self.root = root

    def rooted(self, path: Path | str) -> Path:
        """An appliance path (/etc/postern/...) under the root; a path already under the root is kept (the
        relay, running on this machine, is given the files where they really are: see starttls_change)."""
        path = Path(path)
        if path.is_absolute() and path.is_relative_to(self.root):
            return path
        return self.root / path.relative_to("/") if path.is_absolute() else self.root / path

    def unrooted(self, path: Path) -> str:
        """A path under the root as the appliance names it: /etc/postern/tls/postern.pem."""
        try:
            return "/" + str(path.relative_to(self.root))
        except ValueError:
            return str(path)

    def paths(self) -> tuple[Path, Path, bool]:
        """Where the certificate and key are (under the root), and whether the configuration uses them."""
        from appliance.certificates import DEFAULT_CERT, DEFAULT_KEY

        tls = self.settings().mta.tls
        cert = Path(tls.cert_file) if tls.cert_file else DEFAULT_CERT
        key = Path(tls.key_file) if tls.key_file else DEFAULT_KEY
        return self.rooted(cert), self.rooted(key), bool(tls.cert_file)

    def starttls_change(self, running: dict) -> tuple[dict, list[str]]:
        """What `io.postern.Config.Apply` is sent so that STARTTLS offers the installed certificate at once:
        the running `mta` section (as `Config.Get` gives it) with `tls.cert_file` and `tls.key_file` naming
        the installed files, without the values that are only defaults (as the MTA screen sends it); and
        the changes in words, `mta.tls.cert_file: (empty) -> /etc/postern/tls/postern.pem` (none when the
        settings name them already: applying still reloads the relay, which loads the files again)."""
        from appliance.store import diff_documents

        from .. import mta_form

        cert_path, key_path, _ = self.paths()
        section = {**running, "tls": {**(running.get("tls") or {}), "cert_file": str(cert_path),
                                      "key_file": str(key_path)}}
        config, _ = mta_form.validate(section)
        payload = mta_form.payload(section, config) if config is not None else section
        lines = [f"mta.{line}" for change in diff_documents(running, section) for line in mta_form.describe(change)]
        return payload, lines

    def hostname(self) -> str:
        settings = self.settings()
        if settings.network.hostname:
            return settings.network.hostname
        if settings.mta.hostname != "postern.localdomain":
            return settings.mta.hostname
        return socket.getfqdn()

    def installed(self) -> InstalledCertificate:
        from appliance import certificates
        from appliance.certificates import CertificateError

        cert_path, key_path, in_use = self.paths()
        hostname = self.hostname()
        found = InstalledCertificate(cert_path, key_path, hostname=hostname, in_use=in_use,
                                     shown_path=self.unrooted(cert_path))
        try:
            pem = cert_path.read_bytes()
        except FileNotFoundError:
            found.problem = f"no certificate is installed at {cert_path}"
            return found
        except OSError as error:
            found.problem = f"{cert_path}: cannot read it: {error.strerror}"
            return found
        try:
            chain = certificates.load_certificates(pem, str(cert_path))
        except CertificateError as error:
            found.problem = str(error)
            return found
        found.info = certificates.describe(chain[0])
        found.warnings = certificates.warnings(found.info, hostname)
        found.chain = [certificates.issued_text(c) for c in chain[1:]]
        return found

    def make_self_signed(self, hostname: str, key_type: str, days: str | int) -> list[str]:
        from appliance import certificates
        from appliance.certificates import InputError

        cert_path, key_path, _ = self.paths()
        try:
            _, done = certificates.make_self_signed(hostname, key_type, days, cert_path, key_path, self.root)
        except InputError as error:
            raise _field_error(error) from None
        return done

    def make_request(self, hostname: str, key_type: str, out: str) -> tuple[str, list[str]]:
        """A CSR for the hostname, with the installed key (a new one if there is none); (PEM, what was done)."""
        from appliance import certificates
        from appliance.certificates import CertificateError

        if not out.strip():
            raise FieldError("out", "name the file the request is saved to, such as /root/request.pem")
        _, key_path, _ = self.paths()
        try:
            return certificates.make_request(hostname, key_type, key_path, Path(out.strip()).expanduser(), self.root)
        except CertificateError as error:  # an installed key that cannot be used is said at the key type
            raise FieldError("key_type" if error.field == "key" else error.field, str(error)) from None

    def check_import(self, cert: str, chain: str, key: str) -> tuple[Bundle, list[str]]:
        """Read and check a certificate, its chain and its key; (bundle, what it is) or FieldError."""
        from appliance import certificates
        from appliance.certificates import CertificateError

        paths = {}
        for name, value, required in (("cert", cert, True), ("chain", chain, False), ("key", key, True)):
            value = value.strip()
            if not value and required:
                raise FieldError(name, f"name the {'certificate' if name == 'cert' else 'key'} file (PEM)")
            paths[name] = Path(value).expanduser() if value else None
        try:
            bundle = certificates.read_bundle(paths["cert"], paths["chain"], paths["key"])
        except CertificateError as error:
            raise _field_error(error) from None
        return bundle, certificates.description([bundle.certificate, *bundle.chain], self.hostname())

    def install(self, bundle: Bundle) -> list[str]:
        from appliance import certificates

        cert_path, key_path, _ = self.paths()
        return certificates.install_bundle(bundle, cert_path, key_path, self.root)
