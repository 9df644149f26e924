"""SMTP conversations for the console's test client, without any user interface.

Two ways to talk to a mail server:

- `TelnetSession`: the admin types each command, as with telnet in the CipherMail
  guide (appendix C), and sees every reply line as it arrives, with its timing.
  After a 220 answer to STARTTLS the connection is upgraded in place.
- `send_test_message`: a guided test message like swaks: EHLO, optional STARTTLS,
  optional AUTH (only over TLS), MAIL, RCPT, DATA, QUIT.

Every line bound for the server goes through `wire_line`, which refuses carriage
returns, line feeds and NUL: what the admin types never reaches the wire as an
extra command or header. The message body is the one multi-line field: its line
ends are made CRLF and lines starting with "." are dot-stuffed (RFC 5321 4.5.2),
so no line of it can end DATA early.

Certificates are not verified (this is a diagnostic tool), but their subject,
issuer and expiry are reported.
"""

from __future__ import annotations

import asyncio
import base64
import email.header
import email.utils
import quopri
import re
import socket
import ssl
import time
from dataclasses import dataclass, field
from typing import Callable

CONNECT_TIMEOUT = 15.0
REPLY_TIMEOUT = 60.0
TLS_MODES = ("none", "starttls", "tls")
TLS_MODE_NAMES = {"none": "none", "starttls": "STARTTLS", "tls": "TLS on connect"}
AUTH_MECHANISMS = ("none", "plain", "login")
MAX_LINE = 8192

_REPLY = re.compile(r"^(\d{3})([ -])?(.*)$")
_HEADER_NAME = re.compile(r"[!-9;-~]+")  # RFC 5322: printable ASCII except the colon
_ADDRESS = re.compile(r"[^\s<>()\[\],;:\"@]+@[^\s<>()\[\],;:\"@]+")  # used whole (fullmatch)
_FORBIDDEN = ("\r", "\n", "\0")
# Headers the test message writes itself; an extra header of the same name replaces it.
_OWN_HEADERS = ("Date", "From", "To", "Subject", "Message-ID", "MIME-Version", "Content-Type",
                "Content-Transfer-Encoding", "X-Mailer")


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


# --- the transcript ---------------------------------------------------------------------


@dataclass(frozen=True)
class Line:
    """One line of a transcript: client, server, info (what the console did) or error."""

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
    """The conversation cannot go on: connection, TLS or protocol trouble, in words."""


def describe_error(error: BaseException, host: str = "", port: int = 0) -> str:
    where = f"{host}:{port}" if host else "the server"
    if isinstance(error, ConnectionRefusedError):
        return f"connection refused: nothing listens on {where}"
    if isinstance(error, socket.gaierror):
        return f"cannot find the address of {host}: {error.strerror}"
    if isinstance(error, (asyncio.TimeoutError, TimeoutError)):
        return f"{where} did not answer in time"
    if isinstance(error, ssl.SSLError):
        return f"TLS failed: {error.reason or error}"
    if isinstance(error, (asyncio.IncompleteReadError, ConnectionResetError, BrokenPipeError)):
        return f"{where} closed the connection"
    if isinstance(error, asyncio.LimitOverrunError):
        return f"{where} sent a line longer than {MAX_LINE} bytes"
    if isinstance(error, OSError):
        return f"cannot reach {where}: {error.strerror or error}"
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
    return TlsInfo(ssl_object.version() or "", cipher[0] if cipher else "", subject, issuer, expires)


# --- one connection --------------------------------------------------------------------------


class SmtpChannel:
    """A TCP connection to an SMTP server: lines both ways, each one reported, and STARTTLS."""

    def __init__(self, on_line: Callable[[Line], None]):
        self.on_line = on_line
        self.started = time.monotonic()
        self.last_sent = self.started
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.host = ""
        self.port = 0
        self.tls: TlsInfo | None = None

    def report(self, kind: str, text: str, elapsed: float | None = None) -> None:
        self.on_line(Line(kind, text, time.monotonic() - self.started, elapsed))

    async def connect(self, host: str, port: int, tls: bool = False, timeout: float = CONNECT_TIMEOUT) -> None:
        self.host, self.port = host, port
        self.report("info", f"connecting to {host}:{port}{' with TLS' if tls else ''}")
        try:
            self.reader, self.writer = await asyncio.wait_for(
                asyncio.open_connection(host, port, ssl=insecure_context() if tls else None,
                                        server_hostname=_sni(host) if tls else None, limit=MAX_LINE),
                timeout)
        except (OSError, asyncio.TimeoutError, ssl.SSLError) as error:
            raise SmtpFailure(describe_error(error, host, port)) from None
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

    async def read_line(self, timeout: float | None = REPLY_TIMEOUT) -> str | None:
        """One line from the server (reported), or None once it has closed the connection."""
        try:
            await self.writer.drain()
            data = await asyncio.wait_for(self.reader.readuntil(b"\n"), timeout)
        except asyncio.IncompleteReadError as error:
            if error.partial:
                self.report("server", error.partial.decode("utf-8", "replace").rstrip("\r\n"),
                            time.monotonic() - self.last_sent)
            return None
        except (OSError, asyncio.TimeoutError, asyncio.LimitOverrunError, ssl.SSLError) as error:
            raise SmtpFailure(describe_error(error, self.host, self.port)) from None
        text = data.decode("utf-8", "replace").rstrip("\r\n")
        self.report("server", text, time.monotonic() - self.last_sent)
        return text

    async def read_reply(self, timeout: float = REPLY_TIMEOUT) -> Reply:
        """A whole reply, continuation lines included."""
        lines: list[str] = []
        while True:
            text = await self.read_line(timeout)
            if text is None:
                raise SmtpFailure(f"{self.host}:{self.port} closed the connection")
            match = _REPLY.match(text)
            if not match:
                raise SmtpFailure(f"the answer is not SMTP: {text[:80]!r}")
            lines.append(match.group(3))
            if match.group(2) != "-":
                return Reply(int(match.group(1)), tuple(lines))

    async def start_tls(self) -> TlsInfo:
        """Upgrade the connection after the server said 220 to STARTTLS."""
        try:
            await self.writer.drain()
            await asyncio.wait_for(
                self.writer.start_tls(insecure_context(), server_hostname=_sni(self.host)), CONNECT_TIMEOUT)
        except (OSError, asyncio.TimeoutError, ssl.SSLError) as error:
            raise SmtpFailure(describe_error(error, self.host, self.port)) from None
        self._tls_started()
        return self.tls

    async def close(self) -> None:
        if self.writer is not None and not self.writer.is_closing():
            self.writer.close()
            try:
                await asyncio.wait_for(self.writer.wait_closed(), 2)
            except (OSError, asyncio.TimeoutError, ssl.SSLError):
                pass


def _sni(host: str) -> str | None:
    """No server name indication for an address (RFC 6066 allows only host names)."""
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
        return None
    except OSError:
        return host


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


# --- the guided test message --------------------------------------------------------------------


@dataclass
class TestMessage:
    server: str = ""
    port: int | str = 25
    tls: str = "starttls"
    auth: str = "none"
    username: str = ""
    password: str = ""
    helo: str = ""
    sender: str = ""
    to: str = ""
    subject: str = "Test from Postern"
    body: str = "This is a test message."
    headers: str = ""  # extra header lines, "Name: value", one per line
    now: float | None = field(default=None, repr=False)

    __test__ = False  # not a pytest class

    @property
    def recipients(self) -> list[str]:
        return [part.strip() for part in re.split(r"[,;\s]+", self.to) if part.strip()]

    def extra_headers(self) -> list[tuple[str, str]]:
        """The extra headers as (name, value); FieldProblem for a line that is not one header."""
        headers = []
        for number, line in enumerate(self.headers.splitlines(), 1):
            if not line.strip():
                continue
            name, colon, value = line.partition(":")
            if not colon or not _HEADER_NAME.fullmatch(name):
                raise FieldProblem("headers", f"line {number} is not a header: write it like X-Test: yes")
            value = value.strip()
            if any(char in value for char in _FORBIDDEN) or not value.isprintable():
                raise FieldProblem("headers", f"line {number}: the value must be printable text")
            headers.append((name, value))
        return headers


def check(message: TestMessage) -> list[FieldProblem]:
    """Every problem with the form, each naming its field; nothing is sent while there is one."""
    problems: list[FieldProblem] = []
    single_line = {"server": message.server, "port": str(message.port), "username": message.username,
                   "password": message.password, "helo": message.helo, "sender": message.sender,
                   "to": message.to, "subject": message.subject}
    for name, value in single_line.items():
        if any(char in value for char in _FORBIDDEN):
            problems.append(FieldProblem(name, "line breaks are not allowed here"))
    broken = {p.field for p in problems}
    if "server" not in broken and (not message.server.strip() or " " in message.server.strip()):
        problems.append(FieldProblem("server", "name the server: a host name or IP address"))
    try:
        port = int(message.port)
        if not 1 <= port <= 65535:
            raise ValueError
    except ValueError:
        if "port" not in broken:
            problems.append(FieldProblem("port", f"{message.port!r} is not a port number: use 1 to 65535"))
    if message.tls not in TLS_MODES:
        problems.append(FieldProblem("tls", f"choose one of {', '.join(TLS_MODE_NAMES.values())}"))
    if message.auth not in AUTH_MECHANISMS:
        problems.append(FieldProblem("auth", "choose none, PLAIN or LOGIN"))
    elif message.auth != "none":
        if message.tls == "none":
            problems.append(FieldProblem("auth", "AUTH is only sent over TLS: choose STARTTLS or TLS on connect"))
        if not message.username and "username" not in broken:
            problems.append(FieldProblem("username", "needed for AUTH"))
    if message.helo and "helo" not in broken and not re.fullmatch(r"[A-Za-z0-9.\-\[\]:]+", message.helo):
        problems.append(FieldProblem("helo", "use a host name such as client.example.com"))
    if "sender" not in broken and message.sender and not _ADDRESS.fullmatch(message.sender):
        problems.append(FieldProblem("sender", f"{message.sender!r} is not an address like alice@example.com"))
    if "to" not in broken:
        if not message.recipients:
            problems.append(FieldProblem("to", "name at least one recipient"))
        for address in message.recipients:
            if not _ADDRESS.fullmatch(address):
                problems.append(FieldProblem("to", f"{address!r} is not an address like bob@example.com"))
    try:
        message.extra_headers()
    except FieldProblem as problem:
        problems.append(problem)
    if "\0" in message.body:
        problems.append(FieldProblem("body", "NUL characters are not allowed"))
    return problems


def body_lines(body: str) -> list[bytes]:
    """The body as wire lines: any line end becomes a line break, then RFC 5321 dot-stuffing."""
    data = body.encode("utf-8")
    if not data.isascii():
        data = quopri.encodestring(data.replace(b"\r\n", b"\n").replace(b"\r", b"\n"))
    lines = re.split(rb"\r\n|\r|\n", data)
    if lines and lines[-1] == b"":
        lines.pop()
    return [b"." + line if line.startswith(b".") else line for line in lines]


def message_headers(message: TestMessage) -> list[tuple[str, str]]:
    """The header fields in order; an extra header replaces the message's own of the same name."""
    domain = (message.sender.rpartition("@")[2] or message.helo or "postern.invalid").strip("[]")
    subject = message.subject
    if not subject.isascii():
        subject = email.header.Header(subject, "utf-8", header_name="Subject").encode(linesep="\r\n")
    own = {
        "Date": email.utils.formatdate(message.now, localtime=True),
        "From": message.sender or "<>",
        "To": ", ".join(message.recipients),
        "Subject": subject,
        "Message-ID": email.utils.make_msgid("postern-test", domain=domain),
        "MIME-Version": "1.0",
        "Content-Type": "text/plain; charset=utf-8",
        "Content-Transfer-Encoding": "7bit" if message.body.isascii() else "quoted-printable",
        "X-Mailer": "Postern console SMTP test",
    }
    extra = message.extra_headers()
    replaced = {name.lower() for name, _ in extra}
    return [(name, value) for name, value in own.items() if name.lower() not in replaced] + extra


def message_lines(message: TestMessage) -> list[bytes]:
    """Headers, a blank line and the dot-stuffed body, without the final "."."""
    lines = []
    for name, value in message_headers(message):
        for part in f"{name}: {value}".split("\r\n"):  # only a folded Subject has CRLF in it
            lines.append(part.encode("utf-8"))
    return lines + [b""] + body_lines(message.body)


@dataclass(frozen=True)
class Outcome:
    ok: bool
    summary: str


async def send_test_message(message: TestMessage, on_line: Callable[[Line], None]) -> Outcome:
    """Send one test message, reporting every line; the outcome says how it went, in words."""
    problems = check(message)
    if problems:
        return Outcome(False, "; ".join(str(p) for p in problems))
    channel = SmtpChannel(on_line)
    port = int(message.port)
    helo = message.helo or socket.gethostname() or "localhost"
    try:
        await channel.connect(message.server.strip(), port, tls=message.tls == "tls")
        _expect(await channel.read_reply(), (220,), "the greeting")
        features = await _ehlo(channel, helo)
        if message.tls == "starttls":
            if "STARTTLS" not in features:
                raise SmtpFailure("the server does not offer STARTTLS: choose TLS none or TLS on connect")
            channel.send("STARTTLS")
            _expect(await channel.read_reply(), (220,), "STARTTLS")
            await channel.start_tls()
            features = await _ehlo(channel, helo)
        if message.auth != "none":
            await _authenticate(channel, message, features)
        sender = message.sender.strip()
        channel.send(f"MAIL FROM:<{sender}>", "sender")
        _expect(await channel.read_reply(), (250,), "MAIL FROM")
        accepted = []
        refused = []
        for address in message.recipients:
            channel.send(f"RCPT TO:<{address}>", "to")
            reply = await channel.read_reply()
            (accepted if reply.code in (250, 251) else refused).append((address, reply))
        if not accepted:
            raise SmtpFailure("every recipient was refused: " + "; ".join(f"{a}: {r}" for a, r in refused))
        channel.send("DATA")
        _expect(await channel.read_reply(), (354,), "DATA")
        channel.send_raw_lines(message_lines(message))
        channel.send(".")
        reply = _expect(await channel.read_reply(), (250,), "the message")
        channel.send("QUIT")
        try:
            await channel.read_reply(timeout=5)
        except SmtpFailure:
            pass
        summary = f"sent: the server answered {reply}"
        if refused:
            summary += "; refused: " + ", ".join(a for a, _ in refused)
        channel.report("info", summary)
        return Outcome(True, summary)
    except (SmtpFailure, FieldProblem) as error:
        channel.report("error", str(error))
        if channel.writer is not None and not channel.writer.is_closing():
            try:
                channel.send("QUIT")
                await channel.read_reply(timeout=2)
            except (SmtpFailure, OSError):
                pass
        return Outcome(False, str(error))
    finally:
        await channel.close()


def _expect(reply: Reply, codes: tuple[int, ...], what: str) -> Reply:
    if reply.code not in codes:
        raise SmtpFailure(f"{what} refused: {reply}")
    return reply


async def _ehlo(channel: SmtpChannel, helo: str) -> set[str]:
    """EHLO (HELO if the server does not know it); the extensions offered, upper case, AUTH with its mechanisms."""
    channel.send(f"EHLO {helo}", "helo")
    reply = await channel.read_reply()
    if reply.code == 250:
        features = set()
        for line in reply.lines[1:]:
            words = line.upper().split()
            if words:
                features.add(words[0])
                if words[0] == "AUTH":
                    features.update(f"AUTH={mechanism}" for mechanism in words[1:])
        return features
    channel.send(f"HELO {helo}", "helo")
    _expect(await channel.read_reply(), (250,), "HELO")
    return set()


async def _authenticate(channel: SmtpChannel, message: TestMessage, features: set[str]) -> None:
    if channel.tls is None:
        raise SmtpFailure("AUTH is only sent over TLS")
    mechanism = message.auth.upper()
    if f"AUTH={mechanism}" not in features:
        offered = sorted(f.split("=", 1)[1] for f in features if f.startswith("AUTH="))
        raise SmtpFailure(f"the server does not offer AUTH {mechanism}"
                          + (f" (it offers {', '.join(offered)})" if offered else " (it offers no AUTH)"))
    user, password = message.username.encode(), message.password.encode()
    if mechanism == "PLAIN":
        token = base64.b64encode(b"\0" + user + b"\0" + password).decode()
        channel.send(f"AUTH PLAIN {token}", "username", shown="AUTH PLAIN (credentials hidden)")
    else:
        channel.send("AUTH LOGIN")
        _expect(await channel.read_reply(), (334,), "AUTH LOGIN")
        channel.send(base64.b64encode(user).decode(), "username", shown=f"(user name {message.username})")
        _expect(await channel.read_reply(), (334,), "the user name")
        channel.send(base64.b64encode(password).decode(), "password", shown="(password hidden)")
    _expect(await channel.read_reply(), (235,), "AUTH")
