"""Receiving mail: aiosmtpd's protocol with Postern's policy.

`SmtpSession` is aiosmtpd's SMTP protocol with the limits a gateway needs (a
connection cap, a total session time, enhanced status codes on every reply).
`Receiver` is its handler: relay access like Postfix's `permit_mynetworks,
reject_unauth_destination`, the checks on addresses and content, and the hand-off
to the durable queue. It answers 250 only once the queue has the message on disk.
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import logging
import re
import ssl
import time
from typing import TYPE_CHECKING

from aiosmtpd.smtp import SMTP, Envelope as SmtpEnvelope, Session

from . import addresses, replies
from .config import MtaConfig
from .queue.entry import Envelope
from .queue.store import QueueFull, QueueWriteError

if TYPE_CHECKING:
    from .daemon import Relay

log = logging.getLogger("postern/smtpd")

# A CRLF, or a bare CR or LF with the dot that may start the line it begins.
_LINE_END = re.compile(rb"\r\n|[\r\n]\.?")
_JUNK_COMMANDS = ("NOOP", "VRFY", "EXPN", "HELP", "ETRN")
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f]")  # in a reply, a bare CR would start a line of its own


def client_name(session: Session) -> str:
    peer = session.peer
    ip = peer[0] if isinstance(peer, tuple) else str(peer)
    return f"unknown[{ip}]"


def client_ip(session: Session) -> str:
    return session.peer[0] if isinstance(session.peer, tuple) else ""


class SmtpSession(SMTP):
    """One client connection."""

    def __init__(self, receiver: Receiver, config: MtaConfig, tls_context: ssl.SSLContext | None):
        limits = {"*": 1_000_000}  # junk commands share one budget: see _counted_as_junk
        super().__init__(
            receiver,
            hostname=config.hostname,
            ident=config.banner,
            data_size_limit=config.message_size_limit,
            decode_data=False,
            enable_SMTPUTF8=False,
            tls_context=tls_context,
            timeout=config.idle_timeout,
            command_call_limit=limits,
        )
        self.receiver = receiver
        self.config = config
        self._counted = False
        self._session_timer: asyncio.TimerHandle | None = None
        self._in_greeting_reply = False
        self._junk_commands = 0
        for command in _JUNK_COMMANDS:
            if command in self._smtp_methods:
                self._smtp_methods[command] = self._counted_as_junk(self._smtp_methods[command])

    def _counted_as_junk(self, method):
        """NOOP, VRFY, EXPN and HELP count against one junk_command_limit per session, as in Postfix."""

        @functools.wraps(method)
        async def counted(arg):
            self._junk_commands += 1
            if self._junk_commands > self.config.junk_command_limit:
                log.warning("junk command limit %d exceeded by %s", self.config.junk_command_limit,
                            client_name(self.session))
                await self.push(replies.TOO_MANY_JUNK_COMMANDS.format(hostname=self.config.hostname))
                self.transport.close()
                return
            await method(arg)

        return counted

    def data_received(self, data: bytes) -> None:
        # idle_timeout is per read, like Postfix's smtpd_timeout: a client still sending
        # a long message is not idle, though no command line has ended for a while.
        if self._counted:
            self._reset_timeout()
        super().data_received(data)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        first_call = self.transport is None  # STARTTLS calls this again with the TLS transport
        if first_call:
            peer = transport.get_extra_info("peername")
            # my_networks always get in: a flood from outside must not lock out our own mail server.
            trusted = bool(peer) and self.config.is_trusted(peer[0])
            if self.receiver.connections >= self.config.max_connections and not trusted:
                log.warning("connection limit %d reached: refused %s", self.config.max_connections, peer)
                reply = replies.TOO_MANY_CONNECTIONS.format(hostname=self.config.hostname)
                transport.write(reply.encode() + b"\r\n")
                transport.close()
                return
            self.receiver.connections += 1
            self._counted = True
            self._session_timer = asyncio.get_running_loop().call_later(
                self.config.session_timeout, self._session_expired
            )
            log.info("connect from unknown[%s]", peer[0] if peer else "?")
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        if not self._counted:
            return
        self._counted = False
        self.receiver.connections -= 1
        if self._session_timer:
            self._session_timer.cancel()
        if self.session is not None:
            log.info("disconnect from %s", client_name(self.session))
        super().connection_lost(error)

    def _session_expired(self) -> None:
        if self.transport is not None:
            reply = replies.SESSION_TOO_LONG.format(hostname=self.config.hostname)
            self.transport.write(reply.encode() + b"\r\n")
            log.warning("session time limit exceeded for %s", client_name(self.session))
            self.transport.close()

    async def smtp_EHLO(self, hostname: str):
        self._in_greeting_reply = True
        try:
            await super().smtp_EHLO(hostname)
        finally:
            self._in_greeting_reply = False

    async def smtp_HELO(self, hostname: str):
        self._in_greeting_reply = True
        try:
            await super().smtp_HELO(hostname)
        finally:
            self._in_greeting_reply = False

    async def push(self, status):
        if isinstance(status, str) and not self._in_greeting_reply:
            status = replies.with_enhanced_code(status)
        if isinstance(status, str):  # aiosmtpd echoes an unknown command as it came
            status = _UNPRINTABLE.sub("?", status)
        await super().push(status)


def normalise_line_ends(data: bytes) -> bytes:
    """Bare CR and bare LF become CRLF, so nothing downstream can read them as line ends of its own.

    A line they begin loses a leading dot, as SMTP's transparency rule (RFC 5321 4.5.2)
    took it off every CRLF line: a smuggled <LF>.<LF> becomes an empty line, not a lone dot.
    """
    return _LINE_END.sub(b"\r\n", data)


def header_block(message: bytes) -> bytes:
    end = message.find(b"\r\n\r\n")
    return message if end < 0 else message[: end + 2]


def count_received(headers: bytes) -> int:
    return sum(1 for line in headers.split(b"\r\n") if line[:9].lower() == b"received:")


def header_value(headers: bytes, name: bytes, limit: int = 200) -> str:
    """The first value of a header, unfolded, for queue listings."""
    match = re.search(rb"(?im)^" + re.escape(name) + rb":[ \t]*([^\r\n]*(?:\r\n[ \t][^\r\n]*)*)", headers)
    if not match:
        return ""
    value = re.sub(rb"\r\n[ \t]+", b" ", match.group(1)).decode("ascii", "replace")
    return value[:limit]


class Receiver:
    """aiosmtpd handler: the relay's receiving policy."""

    def __init__(self, relay: Relay):
        self.relay = relay
        self.connections = 0

    def protocol(self) -> SmtpSession:
        """Protocol factory for loop.create_server: each connection gets the config in force."""
        return SmtpSession(self, self.relay.config, self.relay.tls_context)

    async def handle_HELO(self, server: SmtpSession, session, envelope, hostname):
        if addresses.has_control_chars(hostname):  # it would end up in our Received: header
            session.host_name = None
            return replies.BAD_HELO
        session.host_name = hostname
        return f"250 {server.config.hostname}"

    async def handle_EHLO(self, server: SmtpSession, session, envelope, hostname, responses):
        if addresses.has_control_chars(hostname):
            session.host_name = None
            return [replies.BAD_HELO]
        session.host_name = hostname
        lines = [server.config.hostname, "PIPELINING", f"SIZE {server.config.message_size_limit}"]
        if server.tls_context and not server._tls_protocol:
            lines.append("STARTTLS")
        lines += ["ENHANCEDSTATUSCODES", "8BITMIME"]
        return [f"250-{line}" for line in lines[:-1]] + [f"250 {lines[-1]}"]

    async def handle_MAIL(self, server, session, envelope: SmtpEnvelope, address: str, mail_options):
        if addresses.has_control_chars(address):
            self._reject(session, "MAIL", replies.BAD_SENDER_SYNTAX, address, "")
            return replies.BAD_SENDER_SYNTAX
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return replies.SENDER_OK

    async def handle_RCPT(self, server: SmtpSession, session, envelope: SmtpEnvelope, address: str, rcpt_options):
        config = server.config
        if len(envelope.rcpt_tos) >= config.recipient_limit:
            return replies.TOO_MANY_RECIPIENTS
        if address == "<>" or addresses.has_control_chars(address) or "@" not in address:
            self._reject(session, "RCPT", replies.BAD_RECIPIENT_SYNTAX, envelope.mail_from, address)
            return replies.BAD_RECIPIENT_SYNTAX
        if not config.is_trusted(client_ip(session)):
            local, domain = addresses.split(address)
            if addresses.is_routed(address) or not config.is_relay_domain(domain):
                reply = replies.RELAY_DENIED.format(rcpt=address)
                self._reject(session, "RCPT", reply, envelope.mail_from, address)
                return reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return replies.RECIPIENT_OK

    async def handle_DATA(self, server: SmtpSession, session, envelope: SmtpEnvelope):
        config = server.config
        body = normalise_line_ends(envelope.original_content or b"")
        if b"\0" in body:  # a next hop that drops NULs could read <CRLF>NUL.<CRLF> as the end of data
            self._reject(session, "DATA", replies.NUL_IN_MESSAGE, envelope.mail_from, envelope.rcpt_tos[0])
            return replies.NUL_IN_MESSAGE
        headers = header_block(body)
        if count_received(headers) >= config.hopcount_limit:
            self._reject(session, "DATA", replies.TOO_MANY_HOPS, envelope.mail_from, envelope.rcpt_tos[0])
            return replies.TOO_MANY_HOPS

        store = self.relay.store
        queue_id = store.new_id()
        protocol = ("ESMTPS" if server._tls_protocol else "ESMTP") if session.extended_smtp else "SMTP"
        received = self._received_header(config, session, protocol, queue_id, envelope.rcpt_tos)
        message = received + body
        if len(message) > config.message_size_limit:
            return replies.MESSAGE_TOO_BIG
        sender = "" if envelope.mail_from == "<>" else envelope.mail_from
        queued = Envelope(
            id=queue_id,
            sender=sender,
            recipients=list(dict.fromkeys(envelope.rcpt_tos)),
            arrival=time.time(),
            size=len(message),
            client=client_name(session),
            helo=session.host_name or "",
            protocol=protocol,
            subject=header_value(headers, b"subject"),
            message_id=header_value(headers, b"message-id"),
        )
        try:
            entry = await store.commit(queued, message)
        except QueueFull as error:
            log.error("%s: queue file system full: %s", queue_id, error)
            return replies.INSUFFICIENT_STORAGE
        except QueueWriteError as error:
            log.error("%s: queue file write error: %s", queue_id, error)
            return replies.QUEUE_WRITE_ERROR
        log.info("%s: client=%s", queue_id, queued.client)
        log.info(
            "%s: from=<%s>, size=%d, nrcpt=%d (queue active)", queue_id, sender, queued.size, len(queued.recipients)
        )
        self.relay.counters.received += 1
        self.relay.scheduler.add(entry)
        return replies.QUEUED.format(id=queue_id)

    @staticmethod
    def _received_header(config: MtaConfig, session, protocol: str, queue_id: str, rcpts: list[str]) -> bytes:
        helo = session.host_name or "unknown"
        ip = client_ip(session)
        literal = f"IPv6:{ip}" if ":" in ip else ip
        text = f"Received: from {helo} (unknown [{literal}])\r\n\tby {config.hostname} (Postern) with {protocol} id {queue_id}"
        if len(rcpts) == 1:
            text += f"\r\n\tfor <{rcpts[0]}>"
        text += f"; {email.utils.formatdate(localtime=True)}\r\n"
        return text.encode("ascii", "replace")

    def _reject(self, session, stage: str, reply: str, sender: str, rcpt: str) -> None:
        self.relay.counters.rejected += 1
        sender = "" if sender in (None, "<>") else sender
        log.info(
            "NOQUEUE: reject: %s from %s: %s; from=<%s> to=<%s> proto=%s helo=<%s>",
            stage, client_name(session), reply, sender, rcpt,
            "ESMTP" if session.extended_smtp else "SMTP", session.host_name or "",
        )
