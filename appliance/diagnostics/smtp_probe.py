"""Postern's one SMTP client for probing a mail server, without any user interface.

The next-hop check (`next_hop`), the console's SMTP test screen and the guided test message
(`smtp_send`) all talk to a server through `SmtpChannel`: one TCP connection, every line both
ways reported as a `Line` of the transcript with its timing, STARTTLS or TLS on connect, and the
server's certificate (`TlsInfo`). `TelnetSession` is the admin typing each command, as with telnet
in the CipherMail guide (appendix C); after a 220 answer to STARTTLS the connection is upgraded in
place. (The relay's own deliveries have their own client, in `relay.delivery`.)

Every line bound for the server goes through `wire_line`, which refuses carriage returns, line
feeds and NUL: what the admin types never reaches the wire as an extra command or header.

The rules every use shares:

- A host may be a name, an IPv4 address, or an IPv6 address with or without brackets
  (`[2001:db8::25]`); `where` writes it back with brackets before the port.
- Connecting and the TLS handshake must finish within the connect timeout, each reply within the
  reply timeout; the failure says which ("no connection within", "did not answer within").
- A greeting other than 220 (421, 554) means the server takes no mail now: the client says QUIT,
  as RFC 5321 3.1 asks, and the failure quotes the greeting.
- A TLS failure is said in words (the certificate's verification message, or OpenSSL's reason),
  never as OpenSSL's bracketed code.
- The EHLO name, when none is given, is this machine's fully qualified name, or, when it has none,
  the address literal of the connection's own end (RFC 5321 4.1.4): never a bare host name.

Certificates are not verified unless a context that verifies is given (this is a diagnostic
tool), but their subject, issuer and expiry are always reported.
"""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
import time
from dataclasses import dataclass, field
from typing import Callable

from ..topology import ip_or_none

CONNECT_TIMEOUT = 15.0  # to connect, and for a TLS handshake
REPLY_TIMEOUT = 60.0  # for each reply
MAX_LINE = 8192
REPLY = object()  # read_line's and read_reply's timeout: the channel's reply timeout

_REPLY = re.compile(r"^(\d{3})([ -])?(.*)$")
_FORBIDDEN = ("\r", "\n", "\0")


class FieldProblem(ValueError):
    """A value that cannot go to the server; `field` names the form field."""

    def __init__(self, field_name: str, reason: str):
        super().__init__(f"{field_name}: {reason}")
        self.field = field_name
        self.reason = reason


def wire_line(text: str, field_name: str = "command") -> bytes:
    """One protocol line, CRLF-terminated; refuses anything that would start another line."""
    if any(char in text for char in _FORBIDDEN):
        raise FieldProblem(field_name, "line breaks and NUL characters are not allowed")
    data = text.encode("utf-8")
    if len(data) > MAX_LINE:
        raise FieldProblem(field_name, f"longer than {MAX_LINE} bytes")
    return data + b"\r\n"


def bare_host(host: str) -> str:
    """The host to connect to: an IPv6 address loses its brackets ("[::1]" is "::1")."""
    host = host.strip()
    if host.startswith("[") and host.endswith("]"):
        return host[1:-1]
    return host


def where(host: str, port: int) -> str:
    """host:port, an IPv6 address in brackets so the port stands apart."""
    host = bare_host(host)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def ehlo_name(given: str = "", local_address: str | None = None, fqdn: str | None = None) -> str:
    """The name to say EHLO with: the one given; else this machine's fully qualified name; else (a name
    without a dot is no FQDN, and servers refuse it) the address literal of our end of the connection."""
    if given:
        return given
    fqdn = socket.getfqdn() if fqdn is None else fqdn
    if "." in fqdn.strip(".") and not fqdn.startswith("localhost"):
        return fqdn.rstrip(".")
    address = ip_or_none(bare_host(local_address or "")) or "127.0.0.1"
    return f"[IPv6:{address}]" if ":" in address else f"[{address}]"


# --- the transcript ---------------------------------------------------------------------


@dataclass(frozen=True)
class Line:
    """One line of a transcript: client, server, info (what the client did) or error."""

    kind: str
    text: str
    at: float  # seconds since the conversation started
    elapsed: float | None = None  # for server lines: seconds since the last client line

    @property
    def code(self) -> int | None:
        match = _REPLY.match(self.text) if self.kind == "server" else None
        return int(match.group(1)) if match else None

    def plain(self) -> str:
        """The line as the saved transcript shows it (swaks-like arrows, timing in ms)."""
        timing = f"{self.elapsed * 1000:6.0f}ms" if self.elapsed is not None else " " * 8
        arrow = {"client": "->", "server": "<-", "info": "==", "error": "**"}.get(self.kind, "  ")
        return f"{timing} {arrow} {self.text}"


@dataclass(frozen=True)
class Reply:
    code: int
    lines: tuple[str, ...]  # the text after the code, one entry per line

    @property
    def text(self) -> str:
        return " / ".join(self.lines)

    def __str__(self) -> str:
        return f"{self.code} {self.text}".strip()


@dataclass(frozen=True)
class TlsInfo:
    version: str
    cipher: str
    subject: str
    issuer: str
    expires: str
    der: bytes = field(default=b"", repr=False)  # the server's certificate, for a closer look

    def describe(self) -> list[str]:
        lines = [f"TLS started: {self.version}, {self.cipher}"]
        if self.subject:
            self_signed = " (self-signed)" if self.subject == self.issuer else ""
            lines.append(f"certificate subject {self.subject}, issuer {self.issuer}{self_signed}")
            lines.append(f"certificate expires {self.expires}; not verified")
        else:
            lines.append("the server sent no certificate")
        return lines


class SmtpFailure(Exception):
    """The conversation cannot go on: connection, TLS or protocol trouble, in words; `cause` is what failed."""

    def __init__(self, text: str, cause: BaseException | None = None):
        super().__init__(text)
        self.cause = cause


def describe_error(error: BaseException, host: str = "", port: int = 0, timeout: float | None = None,
                   connecting: bool = False) -> str:
    place = where(host, port) if host else "the server"
    within = f" within {timeout:g} s" if timeout else ""
    if isinstance(error, ConnectionRefusedError):
        return f"connection refused: nothing listens on {place}, or a firewall rejects it"
    if isinstance(error, socket.gaierror):
        return f"cannot find the address of {host}: {error.strerror}"
    if isinstance(error, (asyncio.TimeoutError, TimeoutError)):
        if connecting:
            return f"no connection to {place}{within}: a firewall may drop the traffic"
        return f"{place} did not answer{within}"
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"the certificate of {place} is not trusted: {error.verify_message or error.reason}"
    if isinstance(error, ssl.SSLError):
        reason = (error.reason or "").lower().replace("_", " ") or str(error)
        return f"the TLS handshake with {place} failed: {reason}"
    if isinstance(error, (asyncio.IncompleteReadError, ConnectionResetError, BrokenPipeError)):
        return f"{place} closed the connection"
    if isinstance(error, asyncio.LimitOverrunError):
        return f"{place} sent a line longer than {MAX_LINE} bytes"
    if isinstance(error, OSError):
        return f"cannot reach {place}: {error.strerror or error}"
    return str(error)


def insecure_context() -> ssl.SSLContext:
    """TLS for diagnosis: any certificate is accepted (and then described)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def certificate_info(ssl_object) -> TlsInfo:
    cipher = ssl_object.cipher()
    der = ssl_object.getpeercert(binary_form=True)
    subject = issuer = expires = ""
    if der:
        try:
            from cryptography import x509

            cert = x509.load_der_x509_certificate(der)
            subject, issuer = cert.subject.rfc4514_string(), cert.issuer.rfc4514_string()
            expires = cert.not_valid_after_utc.strftime("%Y-%m-%d %H:%M UTC")
        except Exception as error:  # an odd certificate must not end the conversation
            subject = issuer = f"({len(der)} bytes, not readable: {error})"
    return TlsInfo(ssl_object.version() or "", cipher[0] if cipher else "", subject, issuer, expires, der or b"")


def tls_name(host: str) -> str | None:
    """The name TLS checks and sends (SNI) for a host: none for an address (RFC 6066 allows only host names)."""
    host = bare_host(host)
    return None if ip_or_none(host) else host


# --- one connection --------------------------------------------------------------------------


class SmtpChannel:
    """A TCP connection to an SMTP server: lines both ways, each one reported, and STARTTLS."""

    def __init__(self, on_line: Callable[[Line], None], connect_timeout: float = CONNECT_TIMEOUT,
                 reply_timeout: float = REPLY_TIMEOUT):
        self.on_line = on_line
        self.connect_timeout = connect_timeout
        self.reply_timeout = reply_timeout
        self.started = time.monotonic()
        self.last_sent = self.started
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.host = ""
        self.port = 0
        self.server_name: str | None = None
        self.tls: TlsInfo | None = None
        self.quit_sent = False
        self.banner: Reply | None = None  # the greeting, once read

    @property
    def where(self) -> str:
        return where(self.host, self.port)

    @property
    def local_address(self) -> str | None:
        name = self.writer.get_extra_info("sockname") if self.writer else None
        return name[0] if name else None

    def report(self, kind: str, text: str, elapsed: float | None = None) -> None:
        self.on_line(Line(kind, text, time.monotonic() - self.started, elapsed))

    def _failure(self, error: BaseException, timeout: float | None, connecting: bool = False) -> SmtpFailure:
        return SmtpFailure(describe_error(error, self.host, self.port, timeout, connecting), error)

    async def connect(self, host: str, port: int, tls: bool = False, server_name: str | None = None) -> None:
        """Connect to host (a name or an address, IPv6 with or without brackets); `server_name` is the name
        TLS checks and sends when host is an address the name resolved to."""
        self.host, self.port = bare_host(host), port
        self.server_name = server_name if server_name is not None else tls_name(self.host)
        self.report("info", f"connecting to {self.where}{' with TLS' if tls else ''}")
        try:
            self.reader, self.writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, port, ssl=insecure_context() if tls else None,
                                        server_hostname=self.server_name if tls else None, limit=MAX_LINE),
                self.connect_timeout)
        except (OSError, asyncio.TimeoutError, ssl.SSLError) as error:
            raise self._failure(error, self.connect_timeout, connecting=True) from None
        peer = self.writer.get_extra_info("peername")
        self.report("info", f"connected to {peer[0]} port {peer[1]}" if peer else "connected")
        self.last_sent = time.monotonic()
        if tls:
            self._tls_started()

    def _tls_started(self) -> None:
        self.tls = certificate_info(self.writer.get_extra_info("ssl_object"))
        for text in self.tls.describe():
            self.report("info", text)

    def send(self, text: str, field_name: str = "command", shown: str | None = None) -> None:
        """Queue one line for the server (checked by `wire_line`); `shown` hides secrets in the transcript."""
        data = wire_line(text, field_name)
        if self.writer is None or self.writer.is_closing():
            raise SmtpFailure("not connected")
        self.writer.write(data)
        self.last_sent = time.monotonic()
        self.report("client", text if shown is None else shown)

    def send_raw_lines(self, lines: list[bytes]) -> None:
        """Message content: lines already checked and dot-stuffed, each shown in the transcript."""
        self.writer.write(b"".join(line + b"\r\n" for line in lines))
        self.last_sent = time.monotonic()
        for line in lines:
            self.report("client", line.decode("utf-8", "replace"))

    async def read_line(self, timeout: float | None | object = REPLY) -> str | None:
        """One line from the server (reported), or None once it has closed the connection. The channel's
        reply timeout applies unless another is given (None: wait for as long as it takes)."""
        timeout = self.reply_timeout if timeout is REPLY else timeout
        try:
            await self.writer.drain()
            data = await asyncio.wait_for(self.reader.readuntil(b"\n"), timeout)
        except asyncio.IncompleteReadError as error:
            if error.partial:
                self.report("server", error.partial.decode("utf-8", "replace").rstrip("\r\n"),
                            time.monotonic() - self.last_sent)
            return None
        except (OSError, asyncio.TimeoutError, asyncio.LimitOverrunError, ssl.SSLError) as error:
            raise self._failure(error, timeout) from None
        text = data.decode("utf-8", "replace").rstrip("\r\n")
        self.report("server", text, time.monotonic() - self.last_sent)
        return text

    async def read_reply(self, timeout: float | None | object = REPLY) -> Reply:
        """A whole reply, continuation lines included."""
        lines: list[str] = []
        while True:
            text = await self.read_line(timeout)
            if text is None:
                raise SmtpFailure(f"{self.where} closed the connection")
            match = _REPLY.match(text)
            if not match:
                raise SmtpFailure(f"the answer is not SMTP: {text[:80]!r}")
            lines.append(match.group(3))
            if match.group(2) != "-":
                return Reply(int(match.group(1)), tuple(lines))

    async def greeting(self) -> Reply:
        """The server's greeting; a server that greets with anything but 220 takes no mail now: QUIT and fail."""
        reply = self.banner = await self.read_reply()
        if reply.code != 220:
            await self.quit()
            raise SmtpFailure(f"{self.where} takes no mail now: it greets with {reply}")
        return reply

    async def ehlo(self, name: str = "") -> Reply:
        """EHLO with `name` (or `ehlo_name`'s choice); the reply, whatever its code."""
        self.send(f"EHLO {ehlo_name(name, self.local_address)}", "helo")
        return await self.read_reply()

    async def start_tls(self, context: ssl.SSLContext | None = None) -> TlsInfo:
        """Upgrade the connection after the server said 220 to STARTTLS; without a context, any certificate
        is accepted. The handshake must finish within the connect timeout."""
        try:
            await self.writer.drain()
            await asyncio.wait_for(
                self.writer.start_tls(context or insecure_context(), server_hostname=self.server_name),
                self.connect_timeout)
        except (OSError, asyncio.TimeoutError, ssl.SSLError) as error:
            raise self._failure(error, self.connect_timeout) from None
        self._tls_started()
        return self.tls

    async def quit(self, timeout: float = 2) -> None:
        """QUIT and its answer, once, if the connection still serves; nothing goes wrong here."""
        if self.writer is None or self.writer.is_closing() or self.quit_sent:
            return
        self.quit_sent = True
        try:
            self.send("QUIT")
            await self.read_reply(timeout)
        except (SmtpFailure, OSError):
            pass

    async def close(self) -> None:
        if self.writer is not None and not self.writer.is_closing():
            self.writer.close()
            try:
                await asyncio.wait_for(self.writer.wait_closed(), 2)
            except (OSError, asyncio.TimeoutError, ssl.SSLError):
                pass


def features(reply: Reply) -> set[str]:
    """The extensions an EHLO reply offers, upper case; AUTH also as AUTH=MECHANISM for each mechanism."""
    offered = set()
    for line in reply.lines[1:]:
        words = line.upper().split()
        if words:
            offered.add(words[0])
            if words[0] == "AUTH":
                offered.update(f"AUTH={mechanism}" for mechanism in words[1:])
    return offered


# --- the telnet-style session -------------------------------------------------------------------


class TelnetSession:
    """The admin types; the server's lines are reported as they come, until either side closes."""

    def __init__(self, on_line: Callable[[Line], None]):
        self.channel = SmtpChannel(on_line)
        self.connected = False
        self._starttls_sent = False
        self._in_data = False
        self._upgrading = False

    async def run(self, host: str, port: int, tls: bool = False) -> None:
        """Connect, then read and report server lines until the connection ends."""
        channel = self.channel
        try:
            await channel.connect(host, port, tls)
            self.connected = True
            while True:
                text = await channel.read_line(timeout=None)
                if text is None:
                    channel.report("info", "the server closed the connection")
                    return
                match = _REPLY.match(text)
                if not match or match.group(2) == "-":
                    continue
                code = int(match.group(1))
                if code == 354:
                    self._in_data = True
                if self._starttls_sent:
                    self._starttls_sent = False
                    if code == 220:
                        self._upgrading = True
                        try:
                            await channel.start_tls()
                        finally:
                            self._upgrading = False
                        channel.report("info", "send EHLO again: the server forgets what it knew before TLS")
        except SmtpFailure as error:
            channel.report("error", str(error))
        finally:
            self.connected = False
            await channel.close()

    def send(self, text: str) -> None:
        """One typed line; raises FieldProblem for line breaks, SmtpFailure when it cannot go."""
        if not self.connected:
            raise SmtpFailure("not connected")
        if self._upgrading:
            raise SmtpFailure("TLS is being negotiated: wait for it")
        self.channel.send(text)
        if self._in_data:
            self._in_data = text != "."
        elif text.strip().upper() == "STARTTLS":
            self._starttls_sent = True

    async def close(self) -> None:
        await self.channel.close()
