"""The guided test message, like swaks: EHLO, optional STARTTLS, optional AUTH (only over TLS), MAIL,
RCPT, DATA, QUIT, through `smtp_probe.SmtpChannel`, every line reported.

Sent by the console's SMTP test screen and by the first-boot wizard. Every problem with the form is
named, with its field, before anything is sent (`check`). The message body is the one multi-line
field: its line ends are made CRLF and lines starting with "." are dot-stuffed (RFC 5321 4.5.2), so
no line of it can end DATA early; every other value goes through `smtp_probe.wire_line`.
"""

from __future__ import annotations

import base64
import email.header
import email.utils
import quopri
import re
from dataclasses import dataclass, field
from typing import Callable

from .smtp_probe import FieldProblem, Line, Reply, SmtpChannel, SmtpFailure, ehlo_name, features

TLS_MODES = ("none", "starttls", "tls")
TLS_MODE_NAMES = {"none": "none", "starttls": "STARTTLS", "tls": "TLS on connect"}
AUTH_MECHANISMS = ("none", "plain", "login")

_HEADER_NAME = re.compile(r"[!-9;-~]+")  # RFC 5322: printable ASCII except the colon
_ADDRESS = re.compile(r"[^\s<>()\[\],;:\"@]+@[^\s<>()\[\],;:\"@]+")  # used whole (fullmatch)
_FORBIDDEN = ("\r", "\n", "\0")


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
    try:
        await channel.connect(message.server.strip(), port, tls=message.tls == "tls")
        await channel.greeting()
        offered = await _ehlo(channel, message.helo)
        if message.tls == "starttls":
            if "STARTTLS" not in offered:
                raise SmtpFailure("the server does not offer STARTTLS: choose TLS none or TLS on connect")
            channel.send("STARTTLS")
            _expect(await channel.read_reply(), (220,), "STARTTLS")
            await channel.start_tls()
            offered = await _ehlo(channel, message.helo)
        if message.auth != "none":
            await _authenticate(channel, message, offered)
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
        await channel.quit(timeout=5)
        summary = f"sent: the server answered {reply}"
        if refused:
            summary += "; refused: " + ", ".join(a for a, _ in refused)
        channel.report("info", summary)
        return Outcome(True, summary)
    except (SmtpFailure, FieldProblem) as error:
        channel.report("error", str(error))
        await channel.quit()
        return Outcome(False, str(error))
    finally:
        await channel.close()


def _expect(reply: Reply, codes: tuple[int, ...], what: str) -> Reply:
    if reply.code not in codes:
        raise SmtpFailure(f"{what} refused: {reply}")
    return reply


async def _ehlo(channel: SmtpChannel, helo: str) -> set[str]:
    """EHLO (HELO if the server does not know it); the extensions offered (`smtp_probe.features`)."""
    reply = await channel.ehlo(helo)
    if reply.code == 250:
        return features(reply)
    channel.send(f"HELO {ehlo_name(helo, channel.local_address)}", "helo")
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
