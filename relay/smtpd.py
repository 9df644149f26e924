"""Receiving mail: aiosmtpd's protocol with Postern's policy.

`SmtpSession` is aiosmtpd's SMTP protocol with the limits a gateway needs (a
connection cap, a total session time, enhanced status codes on every reply).
`Receiver` is its handler: relay access like Postfix's `permit_mynetworks,
reject_unauth_destination`, the checks on addresses and content, and the hand-off
to the durable queue. It answers 250 only once the queue has the message on disk.

The gateway policies sit at the step they belong to: inbound TLS at MAIL; the
migration hold and recipient verification at RCPT; the loop marker and the
Microsoft 365 tenant check at the end of DATA, where the headers are known.
"""

from __future__ import annotations

import asyncio
import collections
import email.utils
import logging
import re
import ssl
import sys
import time
import types
from collections.abc import Awaitable, Callable, Coroutine, Mapping

import dns.asyncresolver
from aiosmtpd.smtp import BOGUS_LIMIT, MISSING, SMTP, Envelope as AiosmtpdEnvelope, Session, TLSSetupException, syntax

from . import addresses, arc, dkim_sign, esmtp, headers, mail_auth, replies, smtp_setup
from .anvil import Anvil
from .chunking import Chunking
from .config import MtaConfig
from .dkim_sign import SigningKey
from .m365 import check_tenant
from .names import UNKNOWN, PeerNames, client_name
from .printable import printable
from .queue.entry import Counters, Envelope, QueueEntry
from .queue.store import QueueFull, QueueStore, QueueWriteError
from .verify import DELIVERABLE, UNDELIVERABLE, Verdict

log = logging.getLogger("postern/smtpd")

# A CRLF, or a bare CR or LF with the dot that may start the line it begins.
_LINE_END = re.compile(rb"\r\n|[\r\n]\.?")
_BARE_LINE_END = re.compile(rb"\r\n|[\r\n]")
_RECEIVED = re.compile(rb"(?im)^received:")
_END_OF_DATA = b"\r\n.\r\n"
# Postfix's line_length_limit: a longer command line gets "command too long". A line of
# DATA may be of any length; message_size_limit bounds the whole message.
LINE_LENGTH_LIMIT = 2048
TRUSTED_IPS_KEPT = 10_000  # client addresses whose my_networks answer is remembered
_JUNK_COMMANDS = ("NOOP", "VRFY", "EXPN", "HELP", "ETRN")
_TOO_LONG = object()  # SmtpSession._take_line's "a command line too long came"
EAGER_TASKS = sys.version_info >= (3, 12)  # asyncio.Task(..., eager_start=True)
# RFC 8689 (REQUIRETLS): the parameter takes no value, is given once, and only inside TLS: asked for
# in plain text, the path the message came by already broke the promise. 5.7.10 is RFC 5248's
# "Encryption Needed".
REQUIRETLS_SYNTAX = "501 5.5.4 Bad REQUIRETLS parameter syntax"
REQUIRETLS_NEEDS_TLS = "530 5.7.10 REQUIRETLS needs a TLS session"


class ClientSession(Session):
    """aiosmtpd's session with the client's verified name and the refusal already logged."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        super().__init__(loop)
        self.peer_name = UNKNOWN  # until the lookup begun at connect ends
        self.logged_reply: str | None = None  # the refusal a check logged itself, so push does not again


class SmtpEnvelope(AiosmtpdEnvelope):
    """aiosmtpd's envelope with the ESMTP parameters to keep (relay/esmtp.py)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = ""
        self.ret = ""
        self.envid = ""
        self.notify: dict[str, str] = {}
        self.orcpt: dict[str, str] = {}
        self.requiretls = False  # MAIL's REQUIRETLS (RFC 8689): every onward hop must be verified TLS


def client_ip(session: Session) -> str:
    return session.peer[0] if isinstance(session.peer, tuple) else ""


class SmtpSession(Chunking, SMTP):
    """One client connection; BDAT comes from `Chunking`."""

    line_length_limit = LINE_LENGTH_LIMIT  # a longer command line is refused (_take_line)

    def __init__(self, receiver: Receiver, config: MtaConfig, tls_context: ssl.SSLContext | None,
                 implicit_tls: bool = False):
        smtp_setup.set_up(  # SMTP.__init__, its scans of the classes done once (relay/smtp_setup.py)
            self,
            receiver,
            hostname=config.hostname,
            ident=config.banner,
            data_size_limit=config.message_size_limit,
            decode_data=False,
            enable_SMTPUTF8=True,
            tls_context=tls_context,
            timeout=config.idle_timeout,
            command_call_limit=None,  # no per-command budgets: the junk commands share one (see _run)
        )
        self.receiver = receiver
        self.config = config
        self.implicit_tls = implicit_tls  # an SMTPS connection: TLS from the first byte
        self.service = "smtps" if implicit_tls else "smtp"
        self._counted = False
        self._anvil_key = ""  # the client's key in the per-client counts, once counted there
        self._session_timer: asyncio.TimerHandle | None = None
        self._in_greeting_reply = False
        self._junk_commands = 0
        self._errors = 0  # refused commands since the last message taken (Postfix's error count)
        self._bogus_budget = BOGUS_LIMIT  # unknown commands left before the session ends (aiosmtpd's)
        self._command: asyncio.Task | None = None  # the command line's task, while it waits for something
        self._skipping = False  # the rest of a command line too long is being skipped
        # aiosmtpd's per-command limits (512) are tighter than Postfix's: the reader's limit rules.
        self.command_size_limits = collections.defaultdict(lambda: LINE_LENGTH_LIMIT)
        self.stage = "CONNECT"  # the command being answered, for the reject log
        self.last_command = "CONNECT"  # for "timeout after ..."
        self.sender = ""  # the sender of the MAIL being answered, for the reject log
        self.rcpt = ""  # the recipient of the RCPT being answered, for the reject log
        self._peer_lookup: asyncio.Future[str] | None = None
        self._trusted: bool | None = None  # the client is in my_networks: see client_trusted
        self.sessions = None  # the receiving process's open sessions (relay/receiving.py), told when busy

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls._smtp_methods = _commands(cls)

    def _serve(self) -> None:
        """Answer the command lines buffered, in order, each in this call unless it has to wait.

        A command runs here, at once (no task, no turn of the event loop), until it waits for
        something: a name lookup, the message's data, the queue's fsync, a full socket buffer.
        Then a task goes on with it, and the lines after it wait until it is done
        (`_command_done`). A task and a wake-up per command line cost a receiving process
        about as much CPU again as answering the line."""
        while self._command is None and self.transport is not None and not self.transport.is_closing():
            line = self._take_line()
            if line is None:
                return
            self._command = _start(self._answer(line), self.loop)
            if self._command is not None:
                self._command.add_done_callback(self._command_done)

    def _command_done(self, task: asyncio.Task) -> None:
        self._command = None
        if not task.cancelled():
            task.exception()  # retrieved: _answer answers and logs its own errors
        self._serve()

    def _take_line(self) -> bytes | object | None:
        """The next command line buffered, its line end included; _TOO_LONG for one longer than
        line_length_limit, once its end has come (the rest of it is skipped, as Postfix does);
        None while no line has ended. Taken from the reader's buffer, where DATA and BDAT read too."""
        reader = self._reader
        buffer = reader._buffer
        end = buffer.find(b"\n")
        if end < 0:
            if len(buffer) > self.line_length_limit:  # too long already: what came is dropped
                buffer.clear()
                self._skipping = True
                reader._maybe_resume_transport()
            return None
        line = bytes(buffer[:end + 1])
        del buffer[:end + 1]
        reader._maybe_resume_transport()
        if self._skipping or end > self.line_length_limit:
            self._skipping = False
            return _TOO_LONG
        return line

    async def _answer(self, line: bytes | object) -> None:
        """One command line: answered here when it is too long, empty, not ASCII in its verb or
        unknown (the fifth unknown one ends the session: aiosmtpd's bogus-command budget), and
        refused before STARTTLS's handshake is done; else looked up in the class's table (made
        once, not per connection) and run."""
        try:
            if line is _TOO_LONG:
                await self.push("500 Command line too long")
                return
            line = line.rstrip(b"\r\n")
            if not line:
                await self.push("500 Error: bad syntax")
                return
            verb, _, arg_bytes = line.partition(b" ")
            try:
                command = verb.upper().decode("ascii")
            except UnicodeDecodeError:
                await self.push("500 Error: bad syntax")
                return
            # Not UTF-8, the argument keeps its bytes as surrogates (aiosmtpd's way): refused in _run.
            arg = str(arg_bytes.strip(), "utf-8", "surrogateescape") if arg_bytes else None
            limit = self.command_size_limits[command] if self.session.extended_smtp else self.command_size_limit
            if len(line) > limit:
                await self.push("500 Command line too long")
                return
            if not self._tls_handshake_okay and command != "QUIT":
                await self.push("554 Command refused due to lack of security")
                return
            function = self._smtp_methods.get(command)
            if function is None:
                self._bogus_budget -= 1
                if self._bogus_budget < 1:
                    await self.push("502 5.5.1 Too many unrecognized commands, goodbye.")
                    self.transport.close()
                    return
                await self.push(f'500 Error: command "{command}" not recognized')
                return
            self._reset_timeout()
            await self._run(command, function, arg)
        except asyncio.CancelledError:  # the connection ended
            self._writer.close()
            raise
        except ConnectionResetError:
            self._writer.close()
        except Exception as error:  # logged with its traceback, and answered 500 (aiosmtpd's way)
            status = await self.handle_exception(error)
            if isinstance(error, TLSSetupException):
                self.transport.close()
                self.connection_lost(error)
            else:
                await self.push(status)

    async def _run(self, command: str, function: Callable, arg: str | None) -> None:
        """One command: refused if its argument is not UTF-8 (Postfix's smtputf8_enable), counted
        if it is junk, and the session marked busy while it runs."""
        self.stage = self.last_command = command
        if arg and not _is_utf8(arg):
            await self.push(replies.BAD_UTF8)
            self.stage = "UNKNOWN"
            return
        if command in _JUNK_COMMANDS:
            self._junk_commands += 1
            if self._junk_commands > self.config.junk_command_limit:
                log.warning("junk command limit %d exceeded by %s", self.config.junk_command_limit,
                            client_name(self.session))
                await self.push(replies.TOO_MANY_JUNK_COMMANDS.format(hostname=self.config.hostname))
                self.transport.close()
                return
        sessions = self.sessions
        if sessions is not None:
            sessions.busy.add(self)
        try:
            await function(self, arg)
        finally:
            self.stage, self.sender, self.rcpt = "UNKNOWN", "", ""
            if sessions is not None:
                sessions.idle(self)

    def client_trusted(self) -> bool:
        """Is the client in my_networks? Its address and this session's configuration never change,
        so it is asked once (at connect) rather than for every RCPT and message."""
        if self._trusted is None:
            self._trusted = self.receiver.is_trusted(self.config, client_ip(self.session))
        return self._trusted

    @property
    def encrypted(self) -> bool:
        return self.implicit_tls or self._tls_protocol is not None

    def _create_session(self) -> ClientSession:
        session = ClientSession(self.loop)
        if self.session is not None:  # STARTTLS starts the session afresh; the client stays who it was
            session.peer_name = self.session.peer_name
        return session

    def _create_envelope(self) -> SmtpEnvelope:
        return SmtpEnvelope()

    async def peer_name(self) -> str:
        """The client's verified name (or unknown), waiting for the lookup begun at connect."""
        lookup = self._peer_lookup
        if lookup is not None:
            if not lookup.done():
                await asyncio.wait([lookup])
            if not lookup.cancelled():
                self.session.peer_name = lookup.result()
        return self.session.peer_name

    def data_received(self, data: bytes) -> None:
        # idle_timeout is per read, like Postfix's smtpd_timeout: a client still sending
        # a long message is not idle, though no command line has ended for a while.
        if self._counted:
            self._reset_timeout()
        super().data_received(data)
        if self._command is None:
            self._serve()

    def _reset_timeout(self, duration: float | None = None) -> None:
        """aiosmtpd's idle timer without a new timer per read and per command: each call moves the
        deadline, and the one timer, when it fires early, waits again for what is left. Cancelling
        and making a timer twice per command line cost 1.5-2 % of the daemon's CPU per message."""
        deadline = self.loop.time() + (duration or self._timeout_duration)
        self._idle_deadline = deadline
        timer = self._timeout_handle
        if timer is None or timer.cancelled() or deadline < timer.when():
            if timer is not None:
                timer.cancel()
            self._timeout_handle = self.loop.call_at(deadline, self._idle_timer)

    def _idle_timer(self) -> None:
        if self.loop.time() < self._idle_deadline:  # the client sent something since: wait for the rest
            self._timeout_handle = self.loop.call_at(self._idle_deadline, self._idle_timer)
        else:
            self._timeout_cb()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        first_call = self.transport is None  # STARTTLS calls this again with the TLS transport
        if first_call:
            peer = transport.get_extra_info("peername")
            ip = peer[0] if peer else "?"
            refusal = self._connection_refusal(ip)
            if refusal:
                transport.write(refusal.encode() + b"\r\n")
                transport.close()
                return
            self.receiver.connections += 1
            self._counted = True
            self._session_timer = asyncio.get_running_loop().call_later(
                self.config.session_timeout, self._session_expired
            )
            # The greeting goes out now, ahead of the set-up below: every client waits for it.
            greeting = "220 {} {}".format(self.hostname, self.__ident__)
            transport.write(printable(greeting).encode() + b"\r\n")
            # aiosmtpd's set-up, without the task of its command loop: _serve answers the commands.
            self._set_rset_state()
            self.session = self._create_session()
            self.session.peer = peer
            self._reset_timeout()
            asyncio.StreamReaderProtocol.connection_made(self, transport)
            self.transport = transport
        else:  # STARTTLS's TLS transport: aiosmtpd's set-up for it (the session afresh, plain text dropped)
            super().connection_made(transport)
        if first_call:
            known = self.receiver.known_peer_name(ip)
            if known is not None:  # a client seen before (the usual case): no lookup to wait for
                self.session.peer_name = known
                log.info("connect from %s", client_name(self.session))
            else:  # looked up while the client reads the greeting; awaited at MAIL
                self._peer_lookup = asyncio.ensure_future(self.receiver.peer_name(ip))
                self._peer_lookup.add_done_callback(self._connected)

    def _connected(self, lookup: asyncio.Future[str]) -> None:
        """Log the connection as Postfix does, with the client's name, once it is known."""
        if lookup.cancelled():
            return
        self.session.peer_name = lookup.result()
        log.info("connect from %s", client_name(self.session))

    def _connection_refusal(self, ip: str) -> str | None:
        """The 421 for a connection over max_connections or its client's limits; None lets it in.

        my_networks always get in and are not counted per client (Postfix's
        smtpd_client_event_limit_exceptions): a flood from outside must not lock out our own mail server.
        """
        config = self.config
        self._trusted = self.receiver.is_trusted(config, ip)
        if self._trusted:
            return None
        if self.receiver.connections >= config.max_connections:
            log.warning("connection limit %d reached: refused unknown[%s]", config.max_connections, ip)
            return replies.TOO_MANY_CONNECTIONS.format(hostname=config.hostname)
        key = f"{self.service}:{ip}"
        count, rate = self.receiver.anvil.connect(key)
        self._anvil_key = key
        limits = (("concurrency", count, config.client_connection_count_limit),
                  ("rate", rate, config.client_connection_rate_limit))
        for name, value, limit in limits:
            if limit and value > limit:
                log.warning("warning: Connection %s limit exceeded: %d from unknown[%s] for service %s",
                            name, value, ip, self.service)
                return replies.CLIENT_TOO_MANY_CONNECTIONS.format(hostname=config.hostname, ip=ip)
        return None

    def connection_lost(self, error: Exception | None) -> None:
        if self._anvil_key:
            self.receiver.anvil.disconnect(self._anvil_key)
            self._anvil_key = ""
        if not self._counted:
            return
        self._counted = False
        self.receiver.connections -= 1
        if self._peer_lookup is not None and not self._peer_lookup.done():
            self._peer_lookup.cancel()  # gone before its name was known
            log.info("connect from %s", client_name(self.session))
        if self._session_timer:
            self._session_timer.cancel()
        if self.session is not None:
            log.info("disconnect from %s", client_name(self.session))
        # aiosmtpd's end of a connection, with the command's task (if one waits) in place of its loop's
        self._timeout_handle.cancel()
        if self._original_transport is not None:  # after STARTTLS: the TCP transport under the TLS one
            self._original_transport.close()
        asyncio.StreamReaderProtocol.connection_lost(self, error)
        if self._command is not None:
            self._command.cancel()
        self.transport = None

    def eof_received(self) -> bool:
        """The client closed its side: the command waiting is cancelled and the connection closes (aiosmtpd's way)."""
        if self._command is not None:
            self._command.cancel()
        asyncio.StreamReaderProtocol.eof_received(self)  # a read waiting sees the end
        return False  # the transport closes itself

    def _timeout_cb(self) -> None:
        """idle_timeout passed (aiosmtpd's timer): say so before hanging up, as Postfix's smtpd does."""
        if self.transport is not None:
            self.transport.write(replies.IDLE_TIMEOUT.format(hostname=self.config.hostname).encode() + b"\r\n")
            log.info("timeout after %s from %s", self.last_command, client_name(self.session))
            self.transport.close()

    def _session_expired(self) -> None:
        if self.transport is not None:
            reply = replies.SESSION_TOO_LONG.format(hostname=self.config.hostname)
            self.transport.write(reply.encode() + b"\r\n")
            log.warning("session time limit exceeded for %s", client_name(self.session))
            self.transport.close()

    async def smtp_EHLO(self, hostname: str):
        """aiosmtpd's EHLO, its reply (the receiver's handle_EHLO) sent in one write: one line a write
        cost a system call and a TCP segment each, and woke the client for each of its lines."""
        self._in_greeting_reply = True  # its replies as aiosmtpd and Postfix word them: no enhanced code
        try:
            if not hostname:
                await self.push("501 Syntax: EHLO hostname")
                return
            self._set_rset_state()
            self.session.extended_smtp = True
            self.command_size_limits["MAIL"] += 36  # aiosmtpd's room for SIZE= (26) and SMTPUTF8 (10)
            lines = await self._call_handler_hook("EHLO", hostname, [])
            if len(lines) == 1:  # refused
                await self.push(lines[0])
                return
        finally:
            self._in_greeting_reply = False
        self._writer.write("".join(printable(line) + "\r\n" for line in lines).encode())
        if self._paused or self._connection_lost:
            await self._drain_helper()

    async def smtp_HELO(self, hostname: str):
        self._in_greeting_reply = True
        try:
            await super().smtp_HELO(hostname)
        finally:
            self._in_greeting_reply = False

    def protocol_name(self, smtputf8: bool) -> str:
        """The protocol for the Received: header and the queue, as Postfix names it (RFC 3848, RFC 6531).

        SMTP after HELO (or none), ESMTP after EHLO; UTF8SMTP for mail with SMTPUTF8. After
        EHLO, S marks TLS and A a login: ESMTPS, ESMTPSA, UTF8SMTPS, UTF8SMTPSA.
        """
        extended = self.session.extended_smtp
        name = "UTF8SMTP" if smtputf8 else "ESMTP" if extended else "SMTP"
        if extended:
            name += ("S" if self.encrypted else "") + ("A" if self.session.authenticated else "")
        return name

    async def check_helo_needed(self, helo: str = "HELO") -> bool:
        return False  # Postfix's smtpd_helo_required = no: MAIL may come first

    @syntax("MAIL FROM: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_MAIL(self, arg: str | None) -> None:
        """aiosmtpd's MAIL with Postfix's checks: SMTPUTF8, BODY, SIZE, RET and ENVID (relay/esmtp.py),
        and REQUIRETLS (RFC 8689), taken on a TLS session only."""
        if await self.check_auth_needed("MAIL"):
            return
        if self.in_bdat:
            await self.push(replies.MAIL_AFTER_BDAT)
            return
        await self.peer_name()
        if self.envelope.mail_from:
            await self.push(replies.NESTED_MAIL)
            return
        arg = self._strip_command_keyword("FROM:", arg or "")
        if not arg:
            await self.push(replies.MAIL_SYNTAX)
            return
        address, params, valid = self._path(arg)
        smtputf8 = esmtp.wants_smtputf8(params)
        self.sender = address if valid and address else _as_written(arg)
        if not valid or not address or not _valid_address(address, smtputf8):
            await self.push(replies.BAD_SENDER_SYNTAX)
            return
        try:
            others, requiretls = requiretls_param(params)
            found = esmtp.mail_params(others, self.data_size_limit)
        except esmtp.Refused as refused:
            await self.push(refused.reply)
            return
        if requiretls and not self.encrypted:
            await self.push(REQUIRETLS_NEEDS_TLS)
            return
        status = await self._call_handler_hook("MAIL", address, params)
        if status.startswith("250"):
            envelope = self.envelope
            envelope.smtp_utf8, envelope.body, envelope.ret, envelope.envid = (
                found.smtputf8, found.body, found.ret, found.envid)
            envelope.requiretls = requiretls
        await self.push(status)

    @syntax("RCPT TO: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_RCPT(self, arg: str | None) -> None:
        """aiosmtpd's RCPT with Postfix's checks: NOTIFY and ORCPT (relay/esmtp.py)."""
        if await self.check_auth_needed("RCPT"):
            return
        if self.in_bdat:
            await self.push(replies.RCPT_AFTER_BDAT)
            return
        if not self.envelope.mail_from:
            await self.push(replies.NEED_MAIL)
            return
        arg = self._strip_command_keyword("TO:", arg or "")
        if not arg:
            await self.push(replies.RCPT_SYNTAX)
            return
        address, params, valid = self._path(arg)
        self.rcpt = address if valid and address else _as_written(arg)
        if not valid or not address or not _valid_address(address, self.envelope.smtp_utf8):
            await self.push(replies.BAD_RECIPIENT_SYNTAX)
            return
        try:
            found = esmtp.rcpt_params(params)
        except esmtp.Refused as refused:
            await self.push(refused.reply)
            return
        status = await self._call_handler_hook("RCPT", address, params)
        if status.startswith("250"):
            if found.notify:
                self.envelope.notify.setdefault(address, found.notify)
            if found.orcpt:
                self.envelope.orcpt.setdefault(address, found.orcpt)
        await self.push(status)

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """aiosmtpd's reading of a path, with the usual ones read by one regular expression
        (addresses.simple_path: the same result, 1.5 µs instead of 130 µs)."""
        simple = addresses.simple_path(arg) if not self.local_part_limit else None
        return simple if simple is not None else super()._getaddr(arg)

    def _path(self, arg: str) -> tuple[str | None, list[str], bool]:
        """The address of MAIL FROM: or RCPT TO:, the parameters after it, and whether the two are well-formed."""
        address, rest = self._getaddr(arg)
        rest = rest or ""
        taken = arg[: len(arg) - len(rest)]
        separated = not rest.strip() or taken[-1:].isspace() or rest[:1].isspace()
        bracketed = taken.strip().startswith("<") == taken.strip().endswith(">")
        valid = address is not None and separated and bracketed and not addresses.has_control_chars(arg)
        return address, rest.split() if valid else [], valid

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        """aiosmtpd's DATA, reading the message in whole buffers instead of line by line.

        aiosmtpd's own loop costs several microseconds of Python per line and runs on
        through everything buffered without a pause: 2 MB of 4-byte lines held every
        other client for seconds. Here each step is a search of what has arrived.
        """
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        if self.in_bdat:
            await self.push(replies.DATA_AFTER_BDAT)
            return
        if not self.envelope.rcpt_tos:  # Postfix: 554 once MAIL was taken, since RCPT may have been pipelined
            await self.push(replies.NO_VALID_RECIPIENTS if self.envelope.mail_from else replies.NEED_RCPT)
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        try:
            received = await self._read_data()
        except asyncio.CancelledError:
            log.info("connection lost during DATA from %s", client_name(self.session))
            self._writer.close()
            raise
        if received is None:  # the client closed its side
            self.transport.close()
            return
        content, size = received
        await self._end_of_message(content, size)

    async def _end_of_message(self, content: bytes, size: int, dot_stuffed: bool = True) -> None:
        """The whole message is in, from DATA or from BDAT's chunks: check it, hand it on, reply."""
        self.stage = "END-OF-MESSAGE"
        if self.data_size_limit and size > self.data_size_limit:
            await self.push("552 Error: Too much mail data")
        else:
            if dot_stuffed:  # DATA's; BDAT content is sent as it is (RFC 3030)
                # RFC 5321 4.5.2: a line's leading dot was added by the client; take it off.
                content = content.replace(b"\r\n.", b"\r\n")
                content = content[1:] if content[:1] == b"." else content
            else:  # line ends made whole here, where a dot after a bare one is known to be the message's
                content = normalise_line_ends(content, stuffed=False)
            self.envelope.content = self.envelope.original_content = content
            status = await self._call_handler_hook("DATA")
            self._set_post_data_state()
            if isinstance(status, str) and status.startswith("250"):  # Postfix forgives what came before
                self._errors = self._junk_commands = 0
            await self.push("250 OK" if status is MISSING else status)
            return
        self._set_post_data_state()

    async def _read_data(self) -> tuple[bytes, int] | None:
        """The data up to the final dot, as sent, and its size; None if the client closed first.

        Past data_size_limit the data is counted, not kept. Whatever the client sent after
        the final dot (pipelined commands) goes back to the reader for the next command.
        """
        limit = self.data_size_limit
        buffer = bytearray(b"\r\n")  # as if a line had just ended: the data may begin with the final dot
        dropped = searched = 0
        while (end := buffer.find(_END_OF_DATA, searched)) < 0:
            searched = max(0, len(buffer) - len(_END_OF_DATA) + 1)
            if limit and dropped + searched - 2 > limit:  # too much already: keep only what may start the end
                dropped += searched
                del buffer[:searched]
                searched = 0
            chunk = await self._reader.read(1 << 30)  # all that is buffered, so nothing is left behind it
            if not chunk:
                return None
            buffer += chunk
        rest = bytes(buffer[end + len(_END_OF_DATA):])
        if rest and not self._reader.at_eof():
            self._reader.feed_data(rest)
        return (bytes(buffer[2:end + 2]) if not dropped else b""), dropped + end

    @syntax("QUIT")
    async def smtp_QUIT(self, arg: str):
        """aiosmtpd's QUIT, without a command loop's task to cancel: the connection closes after the reply."""
        if arg:
            await self.push("501 Syntax: QUIT")
            return
        status = await self._call_handler_hook("QUIT")
        await self.push("221 Bye" if status is MISSING else status)
        self.transport.close()

    @syntax("STARTTLS", when="tls_context")
    async def smtp_STARTTLS(self, arg: str):
        if self.encrypted and not arg:  # after STARTTLS, or on an SMTPS connection: as Postfix
            await self.push(replies.TLS_ALREADY_ACTIVE)
            return
        await super().smtp_STARTTLS(arg)

    async def push(self, status):
        """A reply, as Postfix's smtpd gives it: with an enhanced status code, printable, a refusal
        logged. A client with soft_error_limit errors waits error_sleep_time for every reply; the
        error that reaches hard_error_limit ends the session (Postfix's smtpd_soft_error_limit,
        smtpd_error_sleep_time and smtpd_hard_error_limit)."""
        original = status
        config = self.config
        if self._errors >= config.soft_error_limit and config.error_sleep_time:
            await asyncio.sleep(config.error_sleep_time)
        if isinstance(status, str) and status[:1] in ("4", "5"):
            await self.peer_name()  # for the log lines below
            if status != "500 Command line too long" and not status.startswith("421"):  # not one, in Postfix
                self._errors += 1
        if status == "500 Command line too long":  # aiosmtpd's reader skipped the rest of the line, as Postfix does
            log.warning("warning: %s: request longer than %d", client_name(self.session), LINE_LENGTH_LIMIT)
            status = replies.COMMAND_TOO_LONG.format(hostname=self.config.hostname)
        if isinstance(status, str) and not self._in_greeting_reply:
            status = replies.with_enhanced_code(status)
        if isinstance(status, str):  # aiosmtpd echoes an unknown command as it came: a bare CR would start a line
            status = printable(status)
            if status[:1] in ("4", "5") and self.session.logged_reply not in (original, status):
                self.receiver.refused(self, status)
            self.session.logged_reply = None
        self._writer.write((status.encode() if isinstance(status, str) else status) + b"\r\n")
        if self._errors >= config.hard_error_limit and self.transport is not None and not self.transport.is_closing():
            self._writer.write(replies.TOO_MANY_ERRORS.format(hostname=config.hostname).encode() + b"\r\n")
            log.info("too many errors after %s from %s", self.stage, client_name(self.session))
            self.transport.close()
        if self._paused or self._connection_lost:  # what StreamWriter.drain waits for, without its coroutines
            await self._drain_helper()


def _start(coroutine: Coroutine, loop: asyncio.AbstractEventLoop) -> asyncio.Task | None:
    """Run `coroutine` now, up to where it first waits; a task goes on with it from there.
    None when it ended without waiting (no task made)."""
    if EAGER_TASKS:  # Python 3.12 and later: the task runs eagerly, as the current task
        task = asyncio.Task(coroutine, loop=loop, eager_start=True)
        if not task.done():
            return task
        if not task.cancelled():
            task.exception()  # retrieved: _answer answers and logs its own errors
        return None
    try:
        awaited = coroutine.send(None)
    except (StopIteration, asyncio.CancelledError):  # it ended, or the connection did (_answer closed it)
        return None
    return loop.create_task(_go_on(coroutine, awaited))


@types.coroutine
def _go_on(coroutine: Coroutine, awaited: object):
    """The rest of a coroutine that `_start` began outside a task and that yielded `awaited` (the
    future it waits for): the task waits for it, then resumes the coroutine, passing it a cancellation."""
    try:
        yield awaited
    except BaseException as error:  # cancelled while it waited: the coroutine is told, as in a task
        try:
            awaited = coroutine.throw(error)
        except StopIteration as done:
            return done.value
        return (yield from _go_on(coroutine, awaited))
    return (yield from coroutine)


def _commands(cls: type) -> dict[str, Callable]:
    """A session class's commands: its smtp_* functions by verb, in aiosmtpd's order (HELP lists them)."""
    return {name[len("smtp_"):]: getattr(cls, name) for name in dir(cls) if name.startswith("smtp_")}


SmtpSession._smtp_methods = _commands(SmtpSession)


def requiretls_param(params: list[str]) -> tuple[list[str], bool]:
    """MAIL's parameters without REQUIRETLS, and whether it was given (RFC 8689, any case).

    It takes no value and comes once: REQUIRETLS=YES or a second REQUIRETLS is a syntax
    error (raised as esmtp.Refused), never read as a yes or a no.
    """
    others, given = [], False
    for param in params:
        keyword, eq, _ = param.partition("=")
        if keyword.upper() != "REQUIRETLS":
            others.append(param)
        elif eq or given:
            raise esmtp.Refused(REQUIRETLS_SYNTAX)
        else:
            given = True
    return others, given


def normalise_line_ends(data: bytes, stuffed: bool = True) -> bytes:
    """Bare CR and bare LF become CRLF, so nothing downstream can read them as line ends of its own.

    In DATA (`stuffed`) a line they begin loses a leading dot, as SMTP's transparency rule
    (RFC 5321 4.5.2) took it off every CRLF line: a smuggled <LF>.<LF> becomes an empty
    line, not a lone dot. BDAT's chunks are counted, not dot-stuffed: a dot there is the
    message's own and stays, as in Postfix (delivery dot-stuffs it like any other).
    """
    crlf = data.count(b"\r\n")
    if data.count(b"\r") == crlf and data.count(b"\n") == crlf:
        return data  # the usual case: every line already ends in CRLF
    return (_LINE_END if stuffed else _BARE_LINE_END).sub(b"\r\n", data)


_HEADER_PATTERNS: dict[bytes, re.Pattern] = {}  # header_value's, by header name (the few the queue lists)


def count_received(headers: bytes) -> int:
    return len(_RECEIVED.findall(headers))


def header_value(headers: bytes, name: bytes, limit: int = 200) -> str:
    """The first value of a header, unfolded, for queue listings."""
    pattern = _HEADER_PATTERNS.get(name)
    if pattern is None:
        pattern = _HEADER_PATTERNS[name] = re.compile(
            rb"(?im)^" + re.escape(name) + rb":[ \t]*([^\r\n]*(?:\r\n[ \t][^\r\n]*)*)")
    match = pattern.search(headers)
    if not match:
        return ""
    value = re.sub(rb"\r\n[ \t]+", b" ", match.group(1)).decode("ascii", "replace")
    return value[:limit]


def received_date() -> str:
    """Now as an RFC 5322 date in local time, for the Received: header.

    It changes once a second; formatting it (email.utils.formatdate) costs about 10 µs,
    so it is formatted once a second and reused by every message of that second."""
    global _date
    second = int(time.time())
    if _date[0] != second:
        _date = (second, email.utils.formatdate(second, localtime=True))
    return _date[1]


_date: tuple[int, str] = (0, "")


def _is_utf8(text: str) -> bool:
    """aiosmtpd decodes a command's argument with surrogateescape: bytes that were not UTF-8 show as surrogates."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _as_written(path: str) -> str:
    """A malformed address for the log: what stands between its angle brackets, else its first word."""
    text = path.strip()
    if text.startswith("<") and ">" in text:
        return text[1:text.index(">")]
    return text.split()[0] if text else ""


def _valid_address(address: str, smtputf8: bool) -> bool:
    """Without SMTPUTF8 a domain must be ASCII; a local part may be 8-bit anyway, as Postfix has always taken."""
    return smtputf8 or "@" not in address or addresses.domain_of(address).isascii()


def is_outside(config: MtaConfig, address: str) -> bool:
    """Does this recipient need relay permission: outside the relay domains, or routing beyond them?"""
    return addresses.is_routed(address) or not config.is_relay_domain(addresses.domain_of(address))


def paused_entry(config: MtaConfig, sender: str, recipient: str) -> str:
    """The paused_domains entry that puts mail from the sender's domain or to the recipient's on
    migration hold ("" for none)."""
    if not config.paused_domains:
        return ""
    domains = [addresses.domain_of(recipient)]
    if sender and sender != "<>" and "@" in sender:
        domains.append(addresses.domain_of(sender))
    return next((entry for entry in map(config.paused_entry, domains) if entry), "")


class Receiver:
    """aiosmtpd handler: the relay's receiving policy.

    It is given what it uses: `config`, `resolver` and `tls_context` return the ones in force
    (a reload replaces them), `verify` asks whether the internal mail server takes a recipient,
    and `enqueue` hands a message the store has on disk to the scheduler."""

    # Nothing but its sessions waits on this process's event loop (a receiving process): with one
    # session open, its message is committed on the loop's own thread (QueueStore.commit's `here`).
    alone_in_process = False

    def __init__(self, *, config: Callable[[], MtaConfig], store: QueueStore, counters: Counters,
                 verify: Callable[[str], Awaitable[Verdict]], enqueue: Callable[[QueueEntry, bytes], None],
                 resolver: Callable[[], dns.asyncresolver.Resolver],
                 tls_context: Callable[[], ssl.SSLContext | None],
                 dkim_keys: Callable[[], Mapping[str, SigningKey]] = dict):
        self.config = config
        self.dkim_keys = dkim_keys
        self.store = store
        self.counters = counters
        self.verify = verify
        self.enqueue = enqueue
        self.resolver = resolver
        self.tls_context = tls_context
        self.connections = 0
        self.anvil = Anvil()
        self.peer_names = PeerNames()
        self._trusted_in: MtaConfig | None = None  # the configuration _trusted_ips were asked of
        self._trusted_ips: dict[str, bool] = {}
        self.observe_refusal: Callable[[str, str], None] | None = None  # (stage, reply) of each refusal: the metrics

    def is_trusted(self, config: MtaConfig, ip: str) -> bool:
        """Is `ip` in config's my_networks? Remembered for each address while `config` is in force:
        reading the address and testing each network cost more than the rest of a refusal check."""
        if config is not self._trusted_in:
            self._trusted_in, self._trusted_ips = config, {}
        trusted = self._trusted_ips.get(ip)
        if trusted is None:
            if len(self._trusted_ips) >= TRUSTED_IPS_KEPT:  # a scan from many addresses: start afresh
                self._trusted_ips.clear()
            trusted = self._trusted_ips[ip] = config.is_trusted(ip)
        return trusted

    def turn_away(self, paused: str) -> None:
        """Count an RCPT refused by this paused_domains entry (the migration hold)."""
        self.counters.turned_away[paused] += 1

    def open_clients(self) -> int:
        """Client addresses with a session open now (my_networks are not counted)."""
        return sum(1 for client in self.anvil.clients.values() if client.count)

    def known_peer_name(self, ip: str) -> str | None:
        """The client's verified name if it is known without a lookup; None if one is needed."""
        if not self.config().peername_lookup or not ip:
            return UNKNOWN
        return self.peer_names.cached(ip)

    async def peer_name(self, ip: str) -> str:
        """The client's verified name; "unknown" without a lookup when mta.peername_lookup is off."""
        if not self.config().peername_lookup or not ip:
            return UNKNOWN
        return await self.peer_names.lookup(self.resolver(), ip)

    def protocol(self) -> SmtpSession:
        """Protocol factory for loop.create_server: each connection gets the config in force."""
        return SmtpSession(self, self.config(), self.tls_context())

    def smtps_protocol(self) -> SmtpSession:
        """For the SMTPS listeners, whose server already speaks TLS: no STARTTLS on top."""
        return SmtpSession(self, self.config(), None, implicit_tls=True)

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
        if server.tls_context and not server.encrypted:
            lines.append("STARTTLS")
        lines += ["ENHANCEDSTATUSCODES", "8BITMIME", "DSN", "SMTPUTF8"]  # Postfix's order
        if server.encrypted:  # RFC 8689: a promise of TLS onwards means something only over TLS
            lines.append("REQUIRETLS")
        lines.append("CHUNKING")
        return [f"250-{line}" for line in lines[:-1]] + [f"250 {lines[-1]}"]

    async def handle_MAIL(self, server, session, envelope: SmtpEnvelope, address: str, mail_options):
        if server.config.tls.inbound == "require" and not server.encrypted:
            self._reject(session, "MAIL", replies.TLS_REQUIRED, address, "")
            return replies.TLS_REQUIRED
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
        ip = client_ip(session)
        outside = is_outside(config, address)
        # Exchange Online's clients may name outside recipients; the tenant check at the
        # end of DATA decides. Its shared addresses never relay on my_networks alone.
        if outside and not config.m365.covers(ip) and not server.client_trusted():
            reply = replies.RELAY_DENIED.format(rcpt=address)
            self._reject(session, "RCPT", reply, envelope.mail_from, address)
            return reply
        paused = paused_entry(config, envelope.mail_from, address)
        if paused:
            self.turn_away(paused)
            self._reject(session, "RCPT", replies.DOMAIN_PAUSED, envelope.mail_from, address)
            return replies.DOMAIN_PAUSED
        if config.reject_unverified_recipient.enabled and not outside:
            reply = await self._verify(config, address)
            if reply:
                self._reject(session, "RCPT", reply, envelope.mail_from, address)
                return reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return replies.RECIPIENT_OK

    async def _verify(self, config: MtaConfig, address: str) -> str | None:
        """None when the internal mail server takes the address; else the reply refusing it."""
        verdict = await self.verify(address)
        if verdict.status == DELIVERABLE:
            return None
        reason = verdict.reply[:300]
        if verdict.status == UNDELIVERABLE:
            code = config.reject_unverified_recipient.code
            return replies.RECIPIENT_UNDELIVERABLE.format(code=code, dsn=f"{code // 100}.1.1", rcpt=address,
                                                          reason=reason)
        return replies.RECIPIENT_UNVERIFIED.format(rcpt=address, reason=reason)

    async def handle_DATA(self, server: SmtpSession, session, envelope: SmtpEnvelope):
        config = server.config
        body = headers.separated(normalise_line_ends(envelope.original_content or b""))
        if b"\0" in body:  # a next hop that drops NULs could read <CRLF>NUL.<CRLF> as the end of data
            self._reject(session, "END-OF-MESSAGE", replies.NUL_IN_MESSAGE, envelope.mail_from, envelope.rcpt_tos[0])
            return replies.NUL_IN_MESSAGE
        headers_in = headers.section(body)
        body, header_end, cut = headers.bound(body, len(headers_in), config.header_size_limit)
        if cut:  # Postfix drops the excess silently; the log says so here
            log.info("%d header(s) from %s cut to header_size_limit %d: message header length exceeds safety limit",
                     cut, client_name(session), config.header_size_limit)
            headers_in = body[:header_end]
        if count_received(headers_in) >= config.hopcount_limit:
            self._reject(session, "END-OF-MESSAGE", replies.TOO_MANY_HOPS, envelope.mail_from, envelope.rcpt_tos[0])
            return replies.TOO_MANY_HOPS
        marker = config.marker
        looping = self._loop_refusal(config, headers_in)
        if looping:
            self._reject(session, "END-OF-MESSAGE", looping, envelope.mail_from, envelope.rcpt_tos[0])
            return looping
        trusted, tenant = server.client_trusted(), ""
        if config.m365.covers(client_ip(session)):
            refusal, trusted, tenant = self._tenant_check(config, session, envelope, headers_in)
            if refusal:
                return refusal
        if marker.enabled and not trusted:
            # Nobody outside may forge the marker that Exchange's transport rules trust.
            body, removed = headers.strip(body, len(headers_in), marker.header)
            if removed:
                log.info("removed %d %s header(s) from %s", removed, marker.header, client_name(session))
        results = None
        if not trusted and config.authentication.check_inbound:
            body, results = await self._authenticate(config, session, envelope, body)
            refusal = self._dmarc_refusal(config, session, envelope, results)
            if refusal:
                return refusal

        store = self.store
        queue_id = store.new_id()
        protocol = server.protocol_name(envelope.smtp_utf8)
        received = self._received_header(config, session, server, protocol, queue_id, envelope.rcpt_tos)
        stamp = headers.field(marker.header, config.marker_value) if marker.enabled else b""
        message = received + stamp + body
        if len(message) > config.message_size_limit:
            return replies.MESSAGE_TOO_BIG
        keys = self.dkim_keys()
        if trusted and keys:  # our own mail, on its way out: signed on top of every header we added
            # in a thread: hashing the body and the key operation would hold the loop for a large message
            try:
                message = await asyncio.to_thread(dkim_sign.signed, message, keys, headers_in, queue_id)
            except Exception:  # a message that should be signed does not leave unsigned: the client retries
                log.exception("%s: DKIM signing failed", queue_id)
                return replies.SIGNING_ERROR
        if results is not None:  # mail from outside: our results on top, sealed when we seal (RFC 8617)
            seal_key = dkim_sign.sealing_key(config, keys)
            seal = await self._seal(config, seal_key, message, results, queue_id) if seal_key else b""
            message = seal + results.header + message
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
            subject=header_value(headers_in, b"subject"),
            message_id=header_value(headers_in, b"message-id"),
            body=envelope.body,
            smtputf8=envelope.smtp_utf8,
            ret=envelope.ret,
            envid=envelope.envid,
            notify=envelope.notify,
            orcpt=envelope.orcpt,
            requiretls=envelope.requiretls,
        )
        try:
            entry = await store.commit(queued, message, here=self.alone_in_process and self.connections == 1)
        except QueueFull as error:
            log.error("%s: queue file system full: %s", queue_id, error)
            return replies.INSUFFICIENT_STORAGE
        except QueueWriteError as error:
            log.error("%s: queue file write error: %s", queue_id, error)
            return replies.QUEUE_WRITE_ERROR
        log.info("%s: client=%s%s", queue_id, queued.client, f", m365 tenant={tenant}" if tenant else "")
        log.info(
            "%s: from=<%s>, size=%d, nrcpt=%d (queue active)", queue_id, sender, queued.size, len(queued.recipients)
        )
        if results is not None:
            log.info("%s: %s", queue_id, results.log_words())
            if results.dmarc == "fail" and results.policy == "quarantine" and \
                    config.authentication.dmarc_policy == "enforce":
                entry.hold = True  # quarantine: on hold until an admin releases or deletes it
                await store.save_state(entry)
                log.info("%s: held: dmarc=fail p=quarantine", queue_id)
        self.counters.received += 1
        self.enqueue(entry, message)
        return replies.QUEUED.format(id=queue_id)

    @staticmethod
    async def _seal(config: MtaConfig, key: SigningKey, message: bytes, results, queue_id: str) -> bytes:
        """Our ARC set for the message; none when sealing fails (the seal is advice too)."""
        try:
            sealed = await asyncio.to_thread(
                arc.seal, message, domain=key.domain, selector=key.selector, private_key=key.private_key,
                authserv_id=config.authserv_id, auth_results=results.value,
                txt=mail_auth.txt_lookup(mail_auth.make_resolver(config)))
        except Exception:
            log.exception("%s: ARC sealing failed; passed on unsealed", queue_id)
            return b""
        if sealed:
            log.info("%s: ARC-Seal field added (s=%s, d=%s)", queue_id, key.selector, key.domain)
        return sealed

    async def _authenticate(self, config: MtaConfig, session, envelope: SmtpEnvelope, body: bytes):
        """(body without forged results, our Results or None): SPF, DKIM, DMARC, within CHECK_SECONDS."""
        header_end = len(headers.section(body))
        body, forged = mail_auth.strip_forged(body, header_end, config.authserv_id)
        if forged:
            log.info("removed %d forged Authentication-Results header(s) from %s", forged, client_name(session))
        sender = "" if envelope.mail_from == "<>" else envelope.mail_from
        try:
            results = await asyncio.wait_for(asyncio.to_thread(
                mail_auth.check, body, authserv_id=config.authserv_id, ip=client_ip(session), mail_from=sender,
                helo=session.host_name or "", resolver=mail_auth.make_resolver(config)), mail_auth.CHECK_SECONDS)
        except asyncio.TimeoutError:
            log.warning("authentication checks for mail from %s took longer than %g s: no results added",
                        client_name(session), mail_auth.CHECK_SECONDS)
            return body, None
        except Exception:  # the checks are advice: a bug in them must not refuse mail
            log.exception("authentication checks for mail from %s failed", client_name(session))
            return body, None
        return body, results

    def _dmarc_refusal(self, config: MtaConfig, session, envelope: SmtpEnvelope, results) -> str | None:
        """With dmarc_policy: enforce, 550 5.7.1 for mail failing DMARC whose domain says p=reject."""
        if results is None or config.authentication.dmarc_policy != "enforce":
            return None
        if results.dmarc != "fail" or results.policy != "reject":
            return None
        domain = re.search(r"header\.from=([^\s;]+)", results.value)
        reply = replies.DMARC_REJECT.format(domain=domain.group(1) if domain else "the From: domain")
        log.info("dmarc=fail p=reject: %s", results.log_words())
        self._reject(session, "END-OF-MESSAGE", reply, envelope.mail_from, envelope.rcpt_tos[0])
        return reply

    @staticmethod
    def _loop_refusal(config: MtaConfig, headers_in: bytes) -> str | None:
        """The refusal for a message that carries our marker more than loop_limit times."""
        marker = config.marker
        if not marker.enabled:
            return None
        ours = [v for v in headers.values(headers_in, marker.header) if v.lower() == config.marker_value.lower()]
        if len(ours) <= marker.loop_limit:
            return None
        return replies.MAIL_LOOP.format(value=config.marker_value, count=len(ours), header=marker.header)

    def _tenant_check(self, config: MtaConfig, session, envelope: SmtpEnvelope, headers_in: bytes):
        """For a client in Exchange Online: (refusal or None, trusted, the tenant seen), the decision logged."""
        outside = [rcpt for rcpt in envelope.rcpt_tos if is_outside(config, rcpt)]
        check = check_tenant(config, headers_in)
        if outside and not check.allowed:
            reply = replies.TENANT_REFUSED.format(reason=check.reason)
            log.warning("m365: refused %s: tenant=%s, %d outside recipients: %s",
                        client_name(session), check.tenant, len(outside), check.reason)
            self._reject(session, "END-OF-MESSAGE", reply, envelope.mail_from, outside[0])
            return reply, False, check.tenant
        decision = "allowed to relay" if outside else "inbound to the relay domains"
        log.info("m365: %s from %s: tenant=%s (%s)", decision, client_name(session), check.tenant,
                 "one of ours" if check.allowed else "not ours")
        return None, check.allowed, check.tenant  # our own tenant's mail keeps its markers

    @staticmethod
    def _received_header(config: MtaConfig, session, server: SmtpSession, protocol: str, queue_id: str,
                         rcpts: list[str]) -> bytes:
        """Postfix's smtpd Received: header: "for" only with one recipient, the TLS session when there is one."""
        name = session.peer_name
        ip = client_ip(session)
        literal = f"IPv6:{ip}" if ":" in ip else ip
        lines = [f"Received: from {session.host_name or name} ({name} [{literal}])"]
        tls = server.transport.get_extra_info("ssl_object") if server.transport else None
        if tls is not None and tls.cipher():
            cipher, version, bits = tls.cipher()
            lines += [f"\t(using {tls.version() or version} with cipher {cipher} ({bits}/{bits} bits))",
                      "\t(No client certificate requested)"]
        by = f"\tby {config.hostname} (Postern) with {protocol} id {queue_id}"
        date = received_date()
        lines += [by, f"\tfor <{rcpts[0]}>; {date}"] if len(rcpts) == 1 else [f"{by};", f"\t{date}"]
        return "".join(line + "\r\n" for line in lines).encode("utf-8", "replace")

    def refused(self, server: SmtpSession, reply: str) -> None:
        """Log a refusal that no check logged itself: a syntax error, a bad parameter, a limit."""
        envelope = server.envelope
        sender = server.sender or (envelope.mail_from if envelope else "")
        self._reject(server.session, server.stage, reply, sender, server.rcpt)

    def _reject(self, session, stage: str, reply: str, sender: str | None, rcpt: str) -> None:
        """Log a refusal as Postfix does; from=, to= and helo= only when there is one."""
        self.counters.rejected += 1
        if self.observe_refusal is not None:
            self.observe_refusal(stage, reply)
        session.logged_reply = reply  # SmtpSession.push logs each reply once
        details = [f"from=<{'' if sender == '<>' else sender}>"] if sender else []
        if rcpt:
            details.append(f"to=<{rcpt}>")
        details.append(f"proto={'ESMTP' if session.extended_smtp else 'SMTP'}")
        if session.host_name:
            details.append(f"helo=<{session.host_name}>")
        log.info("NOQUEUE: reject: %s from %s: %s; %s", stage, client_name(session), reply, " ".join(details))
