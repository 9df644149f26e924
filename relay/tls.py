"""TLS for both directions: the server context for STARTTLS and SMTPS, and one client
context per outbound policy level.

Outbound levels follow Postfix's smtp_tls_security_level:

- `none`: never STARTTLS;
- `may`: STARTTLS when offered, any certificate, plain text when it fails;
- `encrypt`: STARTTLS or no delivery, any certificate;
- `verify`: STARTTLS or no delivery, a certificate from a trusted authority
  (`tls.ca_file`, or the system's store) carrying the expected name.

The contexts are built when the configuration is loaded, never per connection.
Each presents the optional client certificate (`tls.client_cert_file`) to next
hops that ask for one; Microsoft 365 attributes mail from a partner organisation
to a tenant by that certificate's name.

Every file of the `tls:` section must be a regular file: each is opened without
blocking and checked before OpenSSL reads it, so a FIFO, a device or a directory
named by mistake is refused at once instead of stalling the daemon.
"""

from __future__ import annotations

import ipaddress
import os
import ssl
import stat

from .config import ConfigError, MtaConfig

ENCRYPTING_LEVELS = ("encrypt", "verify")


_FILE_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a device"),
               (stat.S_ISBLK, "a device"), (stat.S_ISSOCK, "a socket"))


def check_regular_file(field: str, path: str) -> None:
    """Refuse (ConfigError naming mta.tls.<field>) a path that is not a regular file, without blocking.

    Opened with O_NONBLOCK (a FIFO opens at once) and checked with fstat on what was
    opened; a missing or unreadable file is left to OpenSSL's own error.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except IsADirectoryError:
        mode = stat.S_IFDIR
    except OSError:
        return
    else:
        try:
            mode = os.fstat(fd).st_mode
        finally:
            os.close(fd)
    if stat.S_ISREG(mode):
        return
    kind = next((name for test, name in _FILE_KINDS if test(mode)), "not a file")
    raise ConfigError([f"mta.tls.{field}: {path} is {kind}, not a regular file: name the PEM file itself"])


def load_cert_chain(context: ssl.SSLContext, config: MtaConfig) -> None:
    """The server certificate and key into the context, each checked first."""
    check_regular_file("cert_file", config.tls.cert_file)
    check_regular_file("key_file", config.tls.key_file)
    context.load_cert_chain(config.tls.cert_file, config.tls.key_file)


def server_context(config: MtaConfig) -> ssl.SSLContext | None:
    """For inbound STARTTLS and the SMTPS listeners; None without a certificate."""
    if not config.tls.enabled:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    load_cert_chain(context, config)
    return context


def _client_context(verify: bool, ca_file: str = "") -> ssl.SSLContext:
    if ca_file:
        check_regular_file("ca_file", ca_file)
    context = ssl.create_default_context(cafile=ca_file or None) if verify else ssl.create_default_context()
    # Names are matched by certificate_matches, which knows tls_name's "*.domain" form.
    context.check_hostname = False
    context.verify_mode = ssl.CERT_REQUIRED if verify else ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


class OutboundTls:
    """The client SSLContext of each outbound level, built once per configuration."""

    def __init__(self, config: MtaConfig):
        tls = config.tls
        try:
            self.contexts = {"may": _client_context(False), "encrypt": _client_context(False)}
        except (OSError, ssl.SSLError) as error:  # pragma: no cover - the defaults always load
            raise ConfigError([f"mta.tls: cannot set up outbound TLS: {error}"]) from None
        try:
            self.contexts["verify"] = _client_context(True, tls.ca_file)
        except (OSError, ssl.SSLError) as error:
            raise ConfigError([f"mta.tls.ca_file: cannot load {tls.ca_file}: {_reason(error)}"]) from None
        if tls.client_cert_file:
            check_regular_file("client_cert_file", tls.client_cert_file)
            check_regular_file("client_key_file", tls.client_key_file)
            for context in self.contexts.values():
                try:
                    context.load_cert_chain(tls.client_cert_file, tls.client_key_file)
                except (OSError, ssl.SSLError) as error:
                    raise ConfigError([
                        f"mta.tls.client_cert_file: cannot load {tls.client_cert_file} with its key "
                        f"{tls.client_key_file}: {_reason(error)}"
                    ]) from None

    def context(self, level: str) -> ssl.SSLContext:
        return self.contexts[level]


def _reason(error: BaseException) -> str:
    if isinstance(error, ssl.SSLError):
        return error.reason or str(error)
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error)


def certificate_names(peercert: dict | None) -> list[str]:
    """DNS names and IP addresses of a verified peer certificate (its CN only when it has no SAN)."""
    if not peercert:
        return []
    names = [value for kind, value in peercert.get("subjectAltName", ()) if kind in ("DNS", "IP Address")]
    if names:
        return names
    return [value for rdn in peercert.get("subject", ()) for key, value in rdn if key == "commonName"]


def _name_matches(wanted: str, name: str) -> bool:
    wanted, name = wanted.lower().rstrip("."), name.lower().rstrip(".")
    if wanted == name:
        return True
    try:
        return ipaddress.ip_address(wanted) == ipaddress.ip_address(name)
    except ValueError:
        pass
    if name.startswith("*."):  # the certificate's wildcard covers one label
        head, _, rest = wanted.partition(".")
        return bool(head) and head != "*" and rest == name[2:]
    if wanted.startswith("*."):  # tls_name *.domain accepts any host directly in that domain
        head, _, rest = name.partition(".")
        return bool(head) and rest == wanted[2:]
    return False


def certificate_matches(wanted: str, names: list[str]) -> bool:
    return any(_name_matches(wanted, name) for name in names)


def sni_name(wanted: str) -> str | None:
    """The name to send in SNI: a host name, not a wildcard or an address."""
    if wanted.startswith("*."):
        return None
    try:
        ipaddress.ip_address(wanted)
        return None
    except ValueError:
        return wanted
