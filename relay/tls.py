"""TLS for both directions: the server context for STARTTLS and SMTPS, and one client
context per outbound policy level.

Outbound levels follow Postfix's smtp_tls_security_level; `tls_policy.py` says which
one a connection gets (DANE and MTA-STS decide per destination). Here there are three
kinds of client context: one that accepts any certificate (`may`, `encrypt`, and DANE,
whose TLSA records are matched afterwards by `dane.py`), and one per set of trusted
authorities (`verify`, `secure` and MTA-STS: `tls.ca_file` or the system's store, or a
`tls_policy` entry's own `ca_file`), whose names are matched by `certificate_matches`.

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
        self.by_ca: dict[str, ssl.SSLContext] = {}  # a tls_policy entry's ca_file -> its context
        for domain, policy in config.tls_policy.items():
            if policy.ca_file and policy.ca_file not in self.by_ca:
                try:
                    self.by_ca[policy.ca_file] = _client_context(True, policy.ca_file)
                except ConfigError:
                    raise ConfigError([f"mta.tls_policy.{domain}.ca_file: {policy.ca_file} is not a regular file: "
                                       "name the PEM file itself"]) from None
                except (OSError, ssl.SSLError) as error:
                    raise ConfigError([f"mta.tls_policy.{domain}.ca_file: cannot load {policy.ca_file}: "
                                       f"{_reason(error)}"]) from None
        if tls.client_cert_file:
            check_regular_file("client_cert_file", tls.client_cert_file)
            check_regular_file("client_key_file", tls.client_key_file)
            for context in [*self.contexts.values(), *self.by_ca.values()]:
                try:
                    context.load_cert_chain(tls.client_cert_file, tls.client_key_file)
                except (OSError, ssl.SSLError) as error:
                    raise ConfigError([
                        f"mta.tls.client_cert_file: cannot load {tls.client_cert_file} with its key "
                        f"{tls.client_key_file}: {_reason(error)}"
                    ]) from None

    def context(self, verified: bool, ca_file: str = "") -> ssl.SSLContext:
        """The context that checks the chain against `ca_file` (else tls.ca_file or the system's), or none."""
        if not verified:
            return self.contexts["encrypt"]
        return self.by_ca.get(ca_file) or self.contexts["verify"]


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
    """Does the certificate carry `wanted`? `*.domain` accepts any host directly in the domain,
    `.domain` any name below it (Postfix's match=.domain)."""
    if wanted.startswith(".") and len(wanted) > 1:
        return any(name.lower().rstrip(".").endswith(wanted.lower().rstrip(".")) for name in names)
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
