"""Next-hop check: can this appliance talk SMTP to its relay host, and what does it offer?

Connects to host:port (a name, an address, or an IPv6 address in brackets), reads the banner,
sends EHLO, tries STARTTLS and reports the server's certificate (subject, SANs, validity, whether
the chain verifies against the trusted CAs and matches the host name). It warns when the hop is
this appliance itself: mail sent there would loop ("mail for X loops back to myself" in the
relay's words). It speaks SMTP through `smtp_probe`, the client the console's SMTP test uses too.
"""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
from dataclasses import dataclass, field

from cryptography import x509

from ..certificates import describe, warnings
from ..topology import ip_or_none
from .dns_lookup import LookupFailed, addresses_of
from .smtp_probe import Line, SmtpChannel, SmtpFailure, TlsInfo, bare_host, features, tls_name

DEFAULT_TIMEOUT = 10.0
# Policies under which a hop without STARTTLS (or, for verify, without a trusted certificate) gets no mail.
NEEDS_TLS = ("encrypt", "verify")
UNTRUSTED = "certificate: not trusted"
TARGET_FORMAT = "write the next hop as HOST:PORT, such as mail.example.com:25 or [2001:db8::25]:25"


@dataclass(frozen=True)
class Hop:
    """A next hop to check, and where it comes from: the configuration's relay hosts carry their role
    and their TLS policy, and the check judges the hop against that policy."""

    host: str
    port: int = 25
    role: str = ""  # "internal relay host" or "external relay host"; "" for a hop typed by hand
    tls: str = ""  # the configured policy (relay.config.TLS_LEVELS); "" when none is known

    @property
    def title(self) -> str:
        where = f"{self.host}:{self.port}"
        if not self.role:
            return f"next hop {where}"
        return f"{self.role} {where} (tls: {self.tls})"


def configured_hops(mta) -> list[Hop]:
    """The relay hosts an `MtaConfig` names: where mail for the relay domains goes, and where the rest goes."""
    roles = (("internal relay host (mail for the relay domains)", mta.internal_relay),
             ("external relay host (all other mail)", mta.external_relay))
    # A hop with a login is held to verify: the relay sends the password to a verified server only.
    return [Hop(relay.host, relay.port, role, "verify" if relay.username else relay.tls)
            for role, relay in roles if relay.host]


def parse_target(text: str, configured: list[Hop] = ()) -> Hop:
    """`HOST`, `HOST:PORT`, `[IPV6]` or `[IPV6]:PORT` as a Hop; a configured hop keeps its role and policy.
    ValueError, saying how to write it, for anything else."""
    text = text.strip()
    host, port = text, "25"
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ("25" if not rest else "")
    elif text.count(":") == 1:
        host, port = text.split(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r}: {TARGET_FORMAT}")
    hop = Hop(host, int(port))
    same = [h for h in configured if (h.host.lower(), h.port) == (host.lower(), hop.port)]
    return same[0] if same else hop


def local_addresses(netns: str | None = None) -> set[str]:
    """This machine's addresses (in `netns`), to tell a hop that is the appliance itself; none if unknown."""
    from ..network.kernel import KernelError, read_kernel_state

    try:
        state = read_kernel_state(netns)
    except (KernelError, OSError, RuntimeError):
        return set()
    return {address.address for link in state.links for address in link.addresses}


@dataclass
class NextHopReport:
    host: str
    port: int
    tls_policy: str = ""
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
    address = ip_or_none(host)
    return [address] if address else addresses_of(resolver, host)


def check_next_hop(
    host: str,
    port: int = 25,
    *,
    resolver=None,
    helo_name: str = "",  # none: smtp_probe.ehlo_name's choice
    own_names: tuple[str, ...] = (),
    local_addresses: set[str] = frozenset(),
    listen_ports: set[int] = frozenset(),  # the relay's (none known: 25, its default)
    cafile: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    tls_policy: str = "",  # the hop's configured policy: a hop that cannot meet it gets no mail
) -> NextHopReport:
    """The check, start to end; `timeout` bounds connecting, each reply and each TLS handshake.

    It blocks: call it from a thread (or the command line), never on a running event loop."""
    report = asyncio.run(_check(host, port, resolver, helo_name, own_names, set(local_addresses), listen_ports,
                                cafile, timeout))
    report.tls_policy = tls_policy
    _judge_policy(report)
    return report


def _judge_policy(report: NextHopReport) -> None:
    """What the relay will do with this hop under its configured TLS policy, as the relay's delivery does."""
    policy = report.tls_policy
    if policy and policy != "verify":  # an untrusted certificate is what this policy accepts: no warning
        report.warnings = [w for w in report.warnings if not w.startswith(UNTRUSTED)]
    if report.errors or report.address is None or policy not in NEEDS_TLS:
        return
    if not report.starttls:
        report.errors.append(f"its policy is tls: {policy} and it offers no STARTTLS: every message to it is "
                             "deferred; turn STARTTLS on at that server, or lower the policy to may")
    elif policy == "verify" and report.verified is False:
        report.errors.append("its policy is tls: verify and its certificate is not trusted: every message to it "
                             "is deferred; give it a certificate from a trusted CA, or lower the policy to encrypt")


async def _check(host, port, resolver, helo_name, own_names, local_addresses, listen_ports, cafile,
                 timeout) -> NextHopReport:
    report = NextHopReport(host, port)
    own = {name.lower().rstrip(".") for name in own_names if name}
    if host.lower().rstrip(".") in own:
        report.warnings.append(f"{host} is this appliance's own name: mail sent there loops back to itself")
    try:
        addresses = _resolve(bare_host(host), resolver)
    except LookupFailed as error:
        report.errors.append(str(error))
        return report
    if not addresses:
        report.errors.append(f"{host} has no A or AAAA record: check the name, or use its IP address")
        return report
    for address in addresses:
        if is_local(address, local_addresses) and port in (listen_ports or {25}):
            report.warnings.append(
                f"{host}:{port} is this appliance itself ({address} is one of its addresses and it listens on "
                f"port {port}): mail sent there loops back to itself; name the next mail server instead"
            )
            break
    channel = await _connect(report, addresses, port, timeout)
    if channel is None:
        return report
    try:
        await _converse(report, channel, own, helo_name, cafile, timeout)
    except SmtpFailure as failure:
        report.errors.append(str(failure))
    finally:
        await channel.quit()
        await channel.close()
    return report


def _unheard(line: Line) -> None:
    """The check keeps its own account (`NextHopReport.lines`), not the line-by-line transcript."""


async def _connect(report: NextHopReport, addresses: list[str], port: int, timeout: float) -> SmtpChannel | None:
    """A connection to the first address that takes one; None, with the reasons, if none does."""
    failures = []
    for address in addresses:
        channel = SmtpChannel(_unheard, connect_timeout=timeout, reply_timeout=timeout)
        try:
            await channel.connect(address, port, server_name=tls_name(report.host))
        except SmtpFailure as failure:
            failures.append(str(failure))
            continue
        report.address = address
        report.lines.append(f"connected to {address} port {port}")
        return channel
    report.errors.append(f"cannot connect to {report.host} port {port}: {'; '.join(failures)}")
    return None


async def _converse(report: NextHopReport, channel: SmtpChannel, own: set, helo_name: str, cafile,
                    timeout: float) -> None:
    try:
        await channel.greeting()
    finally:
        if channel.banner is not None:
            report.banner = str(channel.banner)
            report.lines.append(f"banner: {report.banner}")
    reply = await channel.ehlo(helo_name)
    report.ehlo = list(reply.lines)
    report.lines.append(f"EHLO: {reply.code} {' | '.join(reply.lines)}")
    if reply.code != 250:
        report.errors.append(f"EHLO refused with {reply.code}: {' '.join(reply.lines)}")
        return
    greeting = _greeting_name(reply.lines[0]) if reply.lines else ""
    if greeting and greeting in own:
        report.warnings.append(f"the server calls itself {greeting}, this appliance's own name: a mail loop")
    if "STARTTLS" not in features(reply):
        report.lines.append("STARTTLS: not offered (mail to this hop travels unencrypted)")
        return
    report.starttls = True
    tls = await _start_tls(channel, None)  # a refusal or a failed handshake: an error, in _check
    report.tls_version = tls.version
    report.lines.append(f"STARTTLS: {tls.version}, {tls.cipher}")
    if not tls.der:
        report.warnings.append("certificate: the server sent none")
        return
    info = describe(x509.load_der_x509_certificate(tls.der))
    report.certificate = info.lines()
    report.warnings += [f"certificate: {w}" for w in warnings(info, tls_name(report.host))]
    report.verified, reason = await _verify(report, helo_name, cafile, timeout)
    report.lines.append(f"certificate chain: {'verified' if report.verified else 'NOT verified: ' + reason}")
    if not report.verified:
        report.warnings.append(f"{UNTRUSTED} ({reason}): fine for opportunistic TLS, "
                               "but a hop that requires verified TLS will fail")


async def _start_tls(channel: SmtpChannel, context: ssl.SSLContext | None) -> TlsInfo:
    """STARTTLS on a connection that has said EHLO; without a context, any certificate is accepted."""
    channel.send("STARTTLS")
    reply = await channel.read_reply()
    if reply.code != 220:
        raise SmtpFailure(f"STARTTLS refused: {reply}")
    return await channel.start_tls(context)


async def _verify(report: NextHopReport, helo_name: str, cafile, timeout: float) -> tuple[bool, str]:
    """A second connection whose STARTTLS checks the chain and the name, as a strict sender would."""
    context = ssl.create_default_context(cafile=cafile) if cafile else ssl.create_default_context()
    # Python 3.13 adds strict X.509 checks that OpenSSL, and so Postfix or Exchange, do not make by default.
    context.verify_flags &= ~getattr(ssl, "VERIFY_X509_STRICT", 0)
    channel = SmtpChannel(_unheard, connect_timeout=timeout, reply_timeout=timeout)
    try:
        await channel.connect(report.address, report.port, server_name=bare_host(report.host))
        await channel.greeting()
        await channel.ehlo(helo_name)
        await _start_tls(channel, context)
        return True, ""
    except SmtpFailure as failure:
        if isinstance(failure.cause, ssl.SSLCertVerificationError):
            return False, failure.cause.verify_message or str(failure.cause)
        return False, str(failure)
    finally:
        await channel.quit()
        await channel.close()
