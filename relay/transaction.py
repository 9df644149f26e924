"""One SMTP transaction with a next hop, and what each of its failures means.

MAIL, RCPT and DATA for a job's recipients over an open connection, with Postfix's
smtp_trouble.c rules: a 5xx reply is final; a 4xx reply or a broken connection is
final only in the last session of an attempt, before that the recipients it concerns
go on to the next MX host. The message is never sent twice in one attempt: once the
final dot is out, a broken connection defers. Each recipient settled is recorded on the
job (`Job.settle`, an `Outcome`); the queue entry is left for the scheduler to update.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

import aiosmtplib
from aiosmtplib.response import SMTPResponse

from . import outbound
from .hop_replies import dsn_of, lost_text, one_line
from .pipelining import PipeliningProtocol, command
from .queue.entry import BOUNCED, DEFERRED, SENT, Recipient

class Lost(Exception):
    """The connection broke; `retry` are the recipients still to send, `before_mail` if nothing was accepted."""

    def __init__(self, retry: list[Recipient], before_mail: bool):
        super().__init__("lost connection")
        self.retry = retry
        self.before_mail = before_mail


class Attempt:
    """One delivery attempt of a job over the next hop's addresses, and what each failure means
    (Postfix's smtp_trouble.c): a 5xx reply is final; a 4xx reply or a broken connection is final
    only in the last session, before that its recipients go on to the next MX host."""

    def __init__(self, job, config):
        self.job = job
        self.timeouts = config.delivery
        self.final = False
        self.error = ("4.4.1", "no address to deliver to", "")  # the last temporary failure

    def settle_failure(self, recipients: list[Recipient], dsn: str, text: str, relay: str) -> list[Recipient]:
        """Bounce (5.x.x) or defer the recipients; returns those to try at the next MX host instead."""
        if dsn.startswith("5"):
            for recipient in recipients:
                self.job.settle(recipient, BOUNCED, dsn, text, relay)
            return []
        self.error = (dsn, text, relay)
        if not self.final:
            return list(recipients)
        self.defer(recipients)
        return []

    def refused(self, recipients: list[Recipient], error: aiosmtplib.SMTPResponseException, relay: str) -> list[Recipient]:
        dsn = dsn_of(error.code, error.message)
        if not 400 <= error.code < 600:  # a reply that makes no sense here: try later
            dsn = "4.5.0"
        return self.settle_failure(recipients, dsn, f"host {relay} said: {one_line(error.code, error.message)}", relay)

    def defer(self, recipients: list[Recipient]) -> None:
        dsn, text, relay = self.error
        for recipient in recipients:
            self.job.settle(recipient, DEFERRED, dsn, text, relay)

    async def transaction(self, connection, recipients: list[Recipient]) -> list[Recipient]:
        """MAIL, RCPT, DATA for the recipients over an open connection (its `client`, `target` and `offers`);
        returns those to try at the next MX host.

        Raises Lost when the connection breaks before the final dot. Once the dot is sent,
        a broken connection defers the recipients: the message is never sent twice in one attempt."""
        client, job = connection.client, self.job
        relay = str(connection.target)
        envelope = job.entry.envelope
        offers = connection.offers
        needs_utf8 = envelope.smtputf8 and not all(
            a.isascii() for a in (envelope.sender, *(r.address for r in recipients)))
        if needs_utf8 and not offers.smtputf8:
            text = ("message requires SMTPUTF8, but no server was found that supports SMTPUTF8. "
                    f"The last attempted server was {relay}")
            if not self.final:  # another MX host may offer it (Postfix tries them before giving up)
                self.error = ("4.6.7", text, relay)
                await _rset(client)
                return list(recipients)
            return self.settle_failure(recipients, "5.6.7", text, relay)
        if 0 < offers.size_limit < envelope.size:
            return self.settle_failure(recipients, "5.3.4", f"message size {envelope.size} exceeds size limit "
                                       f"{offers.size_limit} of server {relay}", relay)
        message, mail_options = outbound.prepare(job.message, envelope, offers)
        encoding = "utf-8" if "SMTPUTF8" in mail_options else "ascii"
        try:
            mail = _command(b"MAIL FROM:", envelope.sender, mail_options, encoding)
        except (ValueError, UnicodeError):
            return self.settle_failure(recipients, "5.1.7", f"bad sender address syntax: <{envelope.sender}>", relay)
        rcpts = []
        for recipient in recipients:
            try:
                rcpts.append((recipient, _command(b"RCPT TO:", recipient.address,
                                                  outbound.rcpt_options(envelope, recipient, offers), encoding)))
            except (ValueError, UnicodeError):
                self.settle_failure([recipient], "5.1.3", f"bad address syntax: <{recipient.address}>", relay)
        if not rcpts:
            return []
        protocol: PipeliningProtocol | None = client.protocol
        open_, accepted, retry = [recipient for recipient, _ in rcpts], [], []
        stage, before_mail, dot_sent = "sending MAIL FROM", True, False
        try:
            if protocol is None:  # a cached connection the next hop has closed
                raise aiosmtplib.SMTPServerDisconnected("Server not connected")
            replies = self._envelope(protocol, mail, rcpts, offers.pipelining)
            reply = await anext(replies)
            if reply.code not in (250, 251):
                retry = self.refused(open_, aiosmtplib.SMTPResponseException(reply.code, reply.message), relay)
                await self._abandon(client, replies)
                return retry
            before_mail, stage = False, "sending RCPT TO"
            for recipient, _ in rcpts:
                reply = await anext(replies)
                if reply.code in (250, 251):
                    accepted.append(recipient)
                else:
                    retry += self.refused([recipient], aiosmtplib.SMTPResponseException(reply.code, reply.message),
                                          relay)
                    open_.remove(recipient)
            stage = "sending DATA command"
            reply = await anext(replies, None)  # None: DATA was not sent (no recipient was accepted)
            if not accepted or reply is None or reply.code != 354:
                if accepted:
                    retry += self.refused(accepted, aiosmtplib.SMTPDataError(reply.code, reply.message), relay)
                await self._abandon(client, replies, reply)
                return retry
            stage = "sending message content"
            chunks = outbound.wire_chunks(message)
            last = next(chunks, b"")
            for chunk in chunks:  # every chunk but the last, each when the socket takes it
                protocol.write(last)
                await _drain(protocol, self.timeouts.data_xfer_timeout)
                last = chunk
            stage, dot_sent = "sending end of data -- message may be sent more than once", True
            protocol.send(last + b".\r\n", 1)  # the end of the message and its dot in one write
            reply = await protocol.reply(self.timeouts.data_done_timeout)
        except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError, OSError, asyncio.TimeoutError) as error:
            client.close()
            self.error = ("4.4.2", lost_text(error, relay, stage), relay)
            if dot_sent:  # whatever happened to the message, it is not sent again now
                self.defer(accepted)
                raise Lost([], before_mail) from None
            raise Lost(retry + open_, before_mail) from None
        if reply.code != 250:
            return retry + self.refused(accepted, aiosmtplib.SMTPDataError(reply.code, reply.message), relay)
        for recipient in accepted:
            job.settle(recipient, SENT, dsn_of(reply.code, reply.message), one_line(reply.code, reply.message), relay,
                       dsn_passed=offers.dsn)
        return retry

    async def _envelope(self, protocol: PipeliningProtocol, mail: bytes, rcpts: list[tuple[Recipient, bytes]],
                        pipelining: bool) -> AsyncIterator[SMTPResponse]:
        """The replies to MAIL, to each RCPT and to DATA, in that order.

        To a next hop that offers PIPELINING they go in one write, DATA last (RFC 2920), as
        Postfix's smtp sends them. Otherwise each waits for the reply before it: nothing follows a
        refused MAIL, and DATA is sent only when a recipient was accepted."""
        timeout = self.timeouts.command_timeout
        if pipelining:
            protocol.send(mail + b"".join(line for _, line in rcpts) + b"DATA\r\n", len(rcpts) + 2)
            for _ in range(len(rcpts) + 1):
                yield await protocol.reply(timeout)
            yield await protocol.reply(self.timeouts.data_init_timeout)
            return
        protocol.send(mail, 1)
        yield (reply := await protocol.reply(timeout))
        if reply.code not in (250, 251):
            return
        accepted = False
        for _, line in rcpts:
            protocol.send(line, 1)
            yield (reply := await protocol.reply(timeout))
            accepted = accepted or reply.code in (250, 251)
        if accepted:
            protocol.send(b"DATA\r\n", 1)
            yield await protocol.reply(self.timeouts.data_init_timeout)

    async def _abandon(self, client: aiosmtplib.SMTP, replies: AsyncIterator[SMTPResponse],
                       data_reply: SMTPResponse | None = None) -> None:
        """End a transaction that sends no message: read the pipelined replies still to come, end a DATA
        the next hop took though it accepted no recipient with an empty message's dot, then RSET.
        A connection that cannot is closed (and not reused)."""
        try:
            async for reply in replies:
                data_reply = reply  # the last is DATA's
            if data_reply is not None and data_reply.code == 354:
                if client.protocol is None:
                    raise aiosmtplib.SMTPServerDisconnected("Connection lost")
                client.protocol.send(b".\r\n", 1)
                await client.protocol.reply(self.timeouts.data_done_timeout)
        except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError):
            client.close()
            return
        await _rset(client)


_QUOTED_LOCAL_PART = re.compile(r'^"(?:[^"\\\r\n]|\\.)*"')
_NOT_IN_A_PATH = re.compile(r'[\s<>"]')


def _command(verb: bytes, address: str, options: list[str], encoding: str) -> bytes:
    """The MAIL FROM or RCPT TO line with the address exactly as the client gave it to us.

    (aiosmtplib's mail() and rcpt() pass the address through email.utils.parseaddr, which
    rewrites some: "a;b@example.org" would go out as <a>.) ValueError or UnicodeError when
    the address cannot go on an SMTP command line.
    """
    if _NOT_IN_A_PATH.search(_QUOTED_LOCAL_PART.sub("", address, count=1)):
        raise ValueError(f"address {address!r} cannot be sent")
    path = b"<" + address.encode(encoding) + b">"
    return command(verb + path, *(option.encode("ascii") for option in options))


async def _drain(protocol, timeout: float) -> None:
    """Wait until the socket takes more of the message, for at most `timeout`: one timeout per write,
    not one for the whole message, so a slow link that moves finishes.

    aiosmtplib's protocol has StreamWriter's flow control (_drain_helper is its drain()). It is
    waited for only while the protocol is paused: asyncio.wait_for makes a task and takes a turn of
    the event loop even when there is nothing to wait for, which is nearly always."""
    if protocol._paused:
        await asyncio.wait_for(protocol._drain_helper(), timeout)


async def _rset(client: aiosmtplib.SMTP) -> None:
    """End a failed transaction; a connection that cannot is closed (and not reused)."""
    try:
        await client.rset()
    except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError):
        client.close()
