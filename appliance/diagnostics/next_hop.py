"""Next-hop check: can this appliance talk SMTP to its relay host, and what does it offer?

Connects to host:port, reads the banner, sends EHLO, tries STARTTLS and reports the
server's certificate (subject, SANs, validity, whether the chain verifies against the
trusted CAs and matches the host name). It warns when the hop is this appliance itself:
mail sent there would loop ("mail for X loops back to myself" in the relay's words).
"""

from __future__ import annotations

import ipaddress
import smtplib
import socket
import ssl
from dataclasses import dataclass, field

from cryptography import x509

from ..certificates import describe, warnings
from .dns_lookup import LookupFailed, addresses_of

DEFAULT_TIMEOUT = 10.0


@dataclass
class NextHopReport:
    host: str
    port: int
    address: str | None = None
    banner: str = ""
    ehlo: list[str] = field(default_factory=list)
    starttls: bool = False
    tls_version: str = ""
    certificate: list[str] = field(default_factory=list)
    verified: bool | None = None
    lines: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors and not self.warnings


def is_local(address: str, local_addresses: set[str]) -> bool:
    ip = ipaddress.ip_address(address)
    return ip.is_loopback or str(ip) in local_addresses


def _greeting_name(reply: str) -> str:
    return reply.split()[0].lower().rstrip(".") if reply.split() else ""


def _resolve(host: str, resolver) -> list[str]:
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        return addresses_of(resolver, host)


def check_next_hop(
    host: str,
    port: int = 25,
    *,
    resolver=None,
    helo_name: str = "postern.localdomain",
    own_names: tuple[str, ...] = (),
    local_addresses: set[str] = frozenset(),
    listen_ports: set[int] = frozenset(),  # the relay's (none known: 25, its default)
    cafile: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> NextHopReport:
    report = NextHopReport(host, port)
    own = {name.lower().rstrip(".") for name in own_names if name}
    if host.lower().rstrip(".") in own:
        report.warnings.append(f"{host} is this appliance's own name: mail sent there loops back to itself")
    try:
        addresses = _resolve(host, resolver)
    except LookupFailed as error:
        report.errors.append(str(error))
        return report
    if not addresses:
        report.errors.append(f"{host} has no A or AAAA record: check the name, or use its IP address")
        return report
    for address in addresses:
        if is_local(address, set(local_addresses)) and port in (listen_ports or {25}):
            report.warnings.append(
                f"{host}:{port} is this appliance itself ({address} is one of its addresses and it listens on "
                f"port {port}): mail sent there loops back to itself; name the next mail server instead"
            )
            break
    client = _connect(report, addresses, port, helo_name, timeout)
    if client is None:
        return report
    try:
        _converse(report, client, host, own, cafile, timeout)
    finally:
        try:
            client.quit()
        except (smtplib.SMTPException, OSError):
            client.close()
    return report


def _connect(report: NextHopReport, addresses: list[str], port: int, helo_name: str, timeout: float):
    failures = []
    for address in addresses:
        client = smtplib.SMTP(local_hostname=helo_name, timeout=timeout)
        try:
            code, message = client.connect(address, port)
        except (OSError, smtplib.SMTPException) as error:
            client.close()
            failures.append(f"{address}: {_error_text(error)}")
            continue
        report.address = address
        report.banner = f"{code} {message.decode('utf-8', 'replace')}"
        report.lines.append(f"connected to {address} port {port}")
        report.lines.append(f"banner: {report.banner}")
        if code != 220:
            report.errors.append(f"the server greets with {code}, not 220: it does not accept mail now")
            client.close()
            return None
        return client
    report.errors.append(f"cannot connect to {report.host} port {port}: {'; '.join(failures)}")
    return None


def _error_text(error: Exception) -> str:
    if isinstance(error, ConnectionRefusedError):
        return "connection refused (nothing listens there, or a firewall rejects it)"
    if isinstance(error, (socket.timeout, TimeoutError)):
        return "timed out (a firewall may drop the traffic)"
    return str(error) or type(error).__name__


def _converse(report: NextHopReport, client: smtplib.SMTP, host: str, own: set, cafile, timeout) -> None:
    code, message = client.ehlo()
    lines = message.decode("utf-8", "replace").splitlines()
    report.ehlo = lines
    report.lines.append(f"EHLO: {code} {' | '.join(lines)}")
    if code != 250:
        report.errors.append(f"EHLO refused with {code}: {' '.join(lines)}")
        return
    greeting = _greeting_name(lines[0]) if lines else ""
    if greeting and greeting in own:
        report.warnings.append(f"the server calls itself {greeting}, this appliance's own name: a mail loop")
    if not client.has_extn("starttls"):
        report.lines.append("STARTTLS: not offered (mail to this hop travels unencrypted)")
        return
    report.starttls = True
    try:
        _start_tls(client, _unverified_context(), None)
    except (ssl.SSLError, smtplib.SMTPException, OSError) as error:
        report.errors.append(f"STARTTLS failed: {error}")
        return
    report.tls_version = client.sock.version() or ""
    der = client.sock.getpeercert(binary_form=True)
    certificate = x509.load_der_x509_certificate(der)
    info = describe(certificate)
    report.lines.append(f"STARTTLS: {report.tls_version}, {client.sock.cipher()[0]}")
    report.certificate = info.lines()
    hostname = None if _is_ip(host) else host
    report.warnings += [f"certificate: {w}" for w in warnings(info, hostname)]
    report.verified, reason = _verify(report.address, report.port, host, client.local_hostname, cafile, timeout)
    report.lines.append(f"certificate chain: {'verified' if report.verified else 'NOT verified: ' + reason}")
    if not report.verified:
        report.warnings.append(f"certificate: not trusted ({reason}): fine for opportunistic TLS, "
                               "but a hop that requires verified TLS will fail")


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _unverified_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _start_tls(client: smtplib.SMTP, context: ssl.SSLContext, server_hostname: str | None) -> None:
    """STARTTLS on an open connection, checking the certificate against `server_hostname` if the context does."""
    code, message = client.docmd("STARTTLS")
    if code != 220:
        raise smtplib.SMTPResponseException(code, message)
    client.sock = context.wrap_socket(client.sock, server_hostname=server_hostname)
    client.file = None  # smtplib reads replies through a file made from the (new) socket


def _verify(address: str, port: int, host: str, helo_name: str, cafile, timeout) -> tuple[bool, str]:
    """A second connection whose STARTTLS checks the chain and the name, as a strict sender would."""
    context = ssl.create_default_context(cafile=cafile) if cafile else ssl.create_default_context()
    # Python 3.13 adds strict X.509 checks that OpenSSL, and so Postfix or Exchange, do not make by default.
    context.verify_flags &= ~getattr(ssl, "VERIFY_X509_STRICT", 0)
    client = smtplib.SMTP(local_hostname=helo_name, timeout=timeout)
    try:
        client.connect(address, port)
        client.ehlo()
        _start_tls(client, context, host)
        return True, ""
    except ssl.SSLCertVerificationError as error:
        return False, error.verify_message or str(error)
    except (ssl.SSLError, smtplib.SMTPException, OSError) as error:
        return False, str(error)
    finally:
        client.close()
