"""What a conformance case is, and the observations cases make.

A case is a function that plays one client conversation against a `Peer` and returns
what a user would notice, normalised so that the two servers' answers compare equal
when they behave alike: reply classes or codes, the message bytes the next hop got
below the trace headers, the parameters passed on, the log lines an admin greps for,
the fields of a bounce. The runner (test_conformance.py) calls it once for Postfix and
once for Postern and compares.

Every case says what it compares and how it stands:
- agrees: Postern's observation equals Postfix's;
- `xfail`: a known difference being fixed; the case expects Postfix's behaviour and is
  marked xfail(strict=True), so it fails the moment the fix lands and the mark must go;
- `why`: a difference kept on purpose; `postern` then checks Postern's own behaviour.
"""

from __future__ import annotations

import email
import email.policy
import re
import socket
import ssl
from dataclasses import dataclass, field
from typing import Callable

from tests.support.net import wait_until
from tests.support.raw_smtp import RawSmtp
from tests.support.scripted_hop import Script, Transaction

from .peers import Peer

SENDER = "alice@example.net"
RCPT = "bob@example.com"
MARKER = "X-Postern-Processed"  # Postern's loop marker, a difference kept on purpose


@dataclass
class Case:
    name: str
    area: str
    compares: str
    run: Callable[[Peer], dict]
    script: Callable[[], Script] = Script
    xfail: str = ""
    why: str = ""
    postern: Callable[[dict, dict], None] | None = None  # (postern, postfix) observations, for a `why`
    postfix: Callable[[dict], bool] | None = None  # true when Postfix shows what the case is about
    postfix_settings: dict = field(default_factory=dict)
    postern_settings: dict = field(default_factory=dict)

    @property
    def standing(self) -> str:
        if self.why:
            return f"differs on purpose: {self.why}"
        if self.xfail:
            return f"known difference: {self.xfail}"
        return "agrees"


CASES: list[Case] = []


def case(area: str, compares: str, **options):
    """Register the decorated function as a case named after it."""
    def register(function: Callable[[Peer], dict]) -> Callable[[Peer], dict]:
        CASES.append(Case(function.__name__, area, compares, function, **options))
        return function
    return register


# The client side.

class Session:
    """A byte-exact client session (RawSmtp) that keeps every reply it got."""

    def __init__(self, peer: Peer, helo: str | None = "client.example.net", verb: str = "EHLO",
                 source: str = "127.0.0.1"):
        self.peer = peer
        self.smtp = RawSmtp(peer.port, source=source)
        self.replies: list[str] = [self.smtp.reply()[-1]]
        self.ehlo_lines: list[str] = []
        if helo is not None:
            lines = self.ask(f"{verb} {helo}", all_lines=True)
            self.ehlo_lines = lines

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.smtp.send(b"QUIT\r\n")
        except OSError:
            pass
        self.smtp.close()

    def starttls(self) -> str:
        """STARTTLS, the handshake (no certificate check) and EHLO again; returns the STARTTLS reply."""
        reply = self.ask("STARTTLS")
        if reply.startswith("220"):
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            self.smtp.starttls(context)
            self.ehlo_lines = self.ask("EHLO client.example.net", all_lines=True)
        return reply

    def ask(self, line: str | bytes, all_lines: bool = False):
        try:
            self.smtp.send((line.encode() if isinstance(line, str) else line) + b"\r\n")
            lines = self.smtp.reply()
        except (ConnectionError, socket.timeout) as error:
            lines = [f"closed ({type(error).__name__})"]
        self.replies.append(lines[-1])
        return lines if all_lines else lines[-1]

    def send_raw(self, data: bytes, replies: int = 1) -> list[str]:
        """Send bytes as they are, then read `replies` replies (pipelining)."""
        got = []
        try:
            self.smtp.send(data)
            for _ in range(replies):
                got.append(self.smtp.reply()[-1])
        except (ConnectionError, socket.timeout) as error:
            got.append(f"closed ({type(error).__name__})")
        self.replies.extend(got)
        return got

    def data(self, content: bytes) -> str:
        """DATA, then the content (line ends as given, dot-stuffed by the caller) and the final dot."""
        reply = self.ask("DATA")
        if not reply.startswith("354"):
            return reply
        if not content.endswith(b"\n"):
            content += b"\r\n"
        return self.send_raw(content + b".\r\n")[0]

    def mail(self, sender: str = SENDER, rcpts: tuple[str, ...] = (RCPT,), content: bytes | None = None,
             mail_params: str = "", rcpt_params: str = "") -> list[str]:
        """A whole transaction; returns the replies to MAIL, each RCPT and (if any was taken) DATA."""
        got = [self.ask(f"MAIL FROM:<{sender}>{' ' + mail_params if mail_params else ''}")]
        for rcpt in rcpts:
            got.append(self.ask(f"RCPT TO:<{rcpt}>{' ' + rcpt_params if rcpt_params else ''}"))
        if content is not None and any(r.startswith("250") for r in got[1:]):
            got.append(self.data(content))
        return got


def cls(reply: str) -> str:
    """A reply's class: "2", "4", "5", or "closed"."""
    return "closed" if reply.startswith("closed") else reply[:1]


def code(reply: str) -> str:
    """A reply's code and enhanced code: "550 5.1.1"."""
    match = re.match(r"(\d{3})[ -](\d\.\d{1,3}\.\d{1,3})?", reply)
    if not match:
        return cls(reply)
    return " ".join(part for part in match.groups() if part)


def message(subject: str = "conformance", body: bytes = b"hello\r\n", headers: bytes = b"") -> bytes:
    return (b"From: <alice@example.net>\r\nTo: <bob@example.com>\r\nSubject: " + subject.encode() + b"\r\n"
            + b"Message-ID: <conformance@example.net>\r\nDate: Sun, 06 Dec 2026 08:00:00 +0000\r\n"
            + headers + b"\r\n" + body)


# What the next hop got.

def below_trace(content: bytes, peer: Peer) -> str:
    """The message as the next hop got it, without the Received: headers on top and
    without Postern's loop marker; the servers' own names replaced by <me>."""
    lines = content.split(b"\r\n") if b"\r\n" in content else content.split(b"\n")
    index = 0
    while index < len(lines) and lines[index][:9].lower() == b"received:":
        index += 1
        while index < len(lines) and lines[index][:1] in (b" ", b"\t"):
            index += 1
    kept = [line for line in lines[index:] if not line.lower().startswith(MARKER.lower().encode() + b":")]
    text = b"\r\n".join(kept).decode("utf-8", "backslashreplace")
    return text.replace(peer.hostname, "<me>")


def trace_headers(content: bytes) -> list[str]:
    parsed = email.message_from_bytes(content, policy=email.policy.compat32)
    return [" ".join(value.split()) for value in parsed.get_all("Received", [])]


def relayed(peer: Peer, count: int = 1, sender: str = SENDER, timeout: float = 20) -> list[Transaction]:
    """Wait for `count` messages from `sender` at the peer's next hop."""
    return wait_until(lambda: (found := peer.hop.messages(sender)) and len(found) >= count and found, timeout,
                      what=f"{count} message(s) from <{sender}> at {peer.name}'s next hop; log:\n"
                      f"{peer.log()[-2500:]}")


def outcome(peer: Peer, mark: int, rcpts: tuple[str, ...] = (RCPT,), final: bool = True) -> dict[str, str]:
    """The first logged result for each recipient: "sent 2.0.0", "deferred 4.3.0", "bounced 5.1.1".
    With `final`, waits for sent or bounced (deferred mail is flushed until then)."""
    wanted = ("sent", "bounced") if final else ("sent", "bounced", "deferred")

    def settled():
        found = {}
        for rcpt, dsn, status in peer.deliveries(mark):
            if rcpt in rcpts and rcpt not in found and status in wanted:
                found[rcpt] = f"{status} {dsn}"
        return found if len(found) == len(rcpts) else None
    return wait_until(settled, 25, what=f"{peer.name} to settle {rcpts}:\n{peer.log_since(mark)[-3000:]}")


def first_attempts(peer: Peer, mark: int, rcpts: tuple[str, ...] = (RCPT,)) -> dict[str, str]:
    """The status and DSN class of the first logged attempt for each recipient."""
    found = outcome(peer, mark, rcpts, final=False)
    return {rcpt: f"{text.split()[0]} {text.split()[1][:1]}" for rcpt, text in found.items()}


def rejects(peer: Peer, mark: int) -> list[str]:
    """The `NOQUEUE: reject: STAGE from` lines of a session that has ended since `mark`, as
    "STAGE CODE". Once a transaction has a queue ID, Postfix writes that in place of NOQUEUE.
    Postfix's log is written by another process, a moment later: the session's `disconnect
    from` line, written after its rejects, says it is all there."""
    peer.wait_log(r"disconnect from", mark)
    found = re.findall(r"(?:NOQUEUE|[0-9A-Za-z]+): reject: (\w+) from [^:]*: (\d{3})", peer.log_since(mark))
    return [f"{stage} {reply}" for stage, reply in found]


def _address_type(value) -> str:
    """ "rfc822; a@b" and "rfc822;a@b" are the same field value."""
    return re.sub(r";\s*", ";", " ".join(str(value).split())) if value else None


def dsn_report(transaction: Transaction, returned: bool = False) -> dict:
    """The fields of a bounce that matter: per-message and per-recipient DSN fields; with
    `returned`, what part of the original message comes back."""
    parsed = email.message_from_bytes(transaction.content, policy=email.policy.compat32)
    report: dict = {"content-type": parsed.get_content_type(), "report-type": parsed.get_param("report-type"),
                    "recipients": [], "returned": None}
    for part in parsed.walk():
        kind = part.get_content_type()
        if kind == "message/delivery-status":
            blocks = part.get_payload()
            first, rest = blocks[0], blocks[1:]
            report["envid"] = first.get("Original-Envelope-Id")
            for block in rest:
                report["recipients"].append({
                    "final": _address_type(block.get("Final-Recipient")),
                    "original": _address_type(block.get("Original-Recipient")),
                    "action": str(block.get("Action", "")).strip(),
                    "status": str(block.get("Status", "")).strip(),
                    "diagnostic": str(block.get("Diagnostic-Code", "")).split(";")[0].strip() or None,
                })
        elif kind in ("message/rfc822", "text/rfc822-headers", "message/global", "message/global-headers"):
            report["returned"] = kind
    if not returned:
        del report["returned"]
    return report


def bounce(peer: Peer, returned: bool = False) -> dict:
    return dsn_report(relayed(peer, sender="")[0], returned)


def all_done(peer: Peer, mark: int) -> None:
    """Wait until the client has gone and every message it left has been removed from the queue."""
    peer.wait_log(r"disconnect from", mark)
    log = lambda: peer.log_since(mark)  # noqa: E731
    wait_until(lambda: log().count(": removed") >= log().count(": client="), 20,
               what=f"{peer.name} to finish every message:\n{log()[-3000:]}")


def passed_on(transaction: Transaction) -> dict:
    """The MAIL and RCPT parameters the next hop was given (SIZE only as present: the trace
    headers each server adds make the sizes differ)."""
    mail = transaction.mail_params()
    if "SIZE" in mail:
        mail["SIZE"] = "present"
    return {"mail": mail, "rcpt": transaction.rcpt_params()}


def relay_one(peer: Peer, content: bytes, mail_params: str = "", rcpt_params: str = "", sender: str = SENDER,
              rcpts: tuple[str, ...] = (RCPT,), parameters: bool = False) -> dict:
    """Send one message; the replies, and once it is delivered what the next hop got."""
    mark = peer.mark()
    with Session(peer) as session:
        replies = session.mail(sender, rcpts, content, mail_params, rcpt_params)
    seen = {"replies": [code(r) for r in replies]}
    if cls(replies[-1]) != "2":
        return seen
    seen["log"] = outcome(peer, mark, rcpts)
    got = relayed(peer, sender=sender)[0]
    seen["content"] = below_trace(got.content, peer)
    if parameters:
        seen["passed on"] = passed_on(got)
    return seen
