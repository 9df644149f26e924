"""Delivering mail to a next hop with aiosmtplib, as Postfix's smtp client does.

A `Destination` holds the jobs (a message and its recipients for that next hop)
waiting for one next hop, and runs up to `destination_concurrency_limit`
connections to it. Each connection delivers job after job and stays open for a
moment when it runs out of work, so a burst reuses it; if the next hop closed it
meanwhile, a new one is made without a deferral. A next hop that cannot be
reached is marked dead for the minimal backoff time: its other jobs defer at once
instead of each waiting for their own connection timeout, as Postfix does.

One attempt (`_Attempt`) walks the next hop's addresses: a temporary failure moves
the recipients it concerns on to the next MX host, for at most MX_SESSION_LIMIT
sessions; a 5xx is final (Postfix's smtp_trouble.c). What goes on the wire after
MAIL, RCPT and DATA (parameters, 8-bit downgrade, long lines) is `outbound.py`'s.

Each next hop has a TLS level (see `tls.py`): `encrypt` and `verify` never fall
back to plain text, and a smart host with a username gets AUTH PLAIN or LOGIN,
only once the connection is encrypted.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import ssl
import time
from dataclasses import dataclass, field

import aiosmtplib

from .queue.entry import BOUNCED, DEFERRED, SENT, QueueEntry, Recipient
from . import outbound
from .config import is_ip
from .routing import NextHop, RouteError, Target, resolve
from .tls import ENCRYPTING_LEVELS, certificate_matches, certificate_names, sni_name

log = logging.getLogger("postern/smtp")

CONNECTION_CACHE_TIME = 2.0
_DSN = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})\b")


def dsn_of(code: int, message: str) -> str:
    match = _DSN.match(message)
    if match and match.group(1) == str(code)[0]:
        return match.group(0)
    return f"{str(code)[0]}.0.0"


def reason_of(error: BaseException) -> str:
    """Postfix-style short reason: 'Connection refused' rather than a wrapped exception's text."""
    for candidate in (error, error.__cause__, error.__context__):  # an SSLError's errno is OpenSSL's, not the OS's
        if isinstance(candidate, ssl.SSLCertVerificationError):
            return f"certificate verify failed: {candidate.verify_message or candidate}"
        if isinstance(candidate, ssl.SSLError):
            return candidate.reason or str(candidate)
    for candidate in (error.__cause__, error.__context__, error):
        if isinstance(candidate, OSError) and candidate.errno:
            return os.strerror(candidate.errno)
    if isinstance(error, (asyncio.TimeoutError, aiosmtplib.SMTPTimeoutError)):
        return "Connection timed out"
    return str(error) or error.__class__.__name__


def one_line(code: int, message: str) -> str:
    return f"{code} {' '.join(message.split())}"


@dataclass
class Job:
    entry: QueueEntry
    recipients: list[Recipient]
    hop: NextHop
    message: bytes
    done: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())

    def settle(self, recipient: Recipient, status: str, dsn: str, reply: str, relay: str = "") -> None:
        recipient.status = status
        recipient.dsn = dsn
        recipient.last_reply = reply
        recipient.relay = relay
        recipient.attempts += 1
        delay = time.time() - self.entry.envelope.arrival
        log.info(
            "%s: to=<%s>, relay=%s, delay=%.2f, dsn=%s, status=%s (%s)",
            self.entry.id, recipient.address, relay or "none", delay, dsn, status, reply,
        )


class _Connection:
    def __init__(self, client: aiosmtplib.SMTP, target: Target, encrypted: bool):
        self.client = client
        self.target = target
        self.encrypted = encrypted

    async def close(self) -> None:
        try:
            await self.client.quit(timeout=5)
        except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError):
            self.client.close()


class ConnectionFailed(Exception):
    """This address of the next hop cannot take mail now; `dsn` says what kind of failure."""

    def __init__(self, text: str, dsn: str = "4.4.1"):
        super().__init__(text)
        self.dsn = dsn


class Delivery:
    """All destinations, and the settings every connection uses."""

    def __init__(self, relay):
        self.relay = relay
        self.destinations: dict[NextHop, Destination] = {}

    def submit(self, job: Job) -> None:
        destination = self.destinations.get(job.hop)
        if destination is None:
            destination = self.destinations[job.hop] = Destination(self, job.hop)
        destination.submit(job)

    def last_errors(self) -> dict[NextHop, tuple[str, float]]:
        """The latest failure per next hop, for the status page."""
        return {hop: d.last_error for hop, d in self.destinations.items() if d.last_error}

    def revive_all(self) -> None:
        for destination in self.destinations.values():
            destination.dead_until = 0.0

    async def targets(self, hop: NextHop) -> list[Target]:
        """The addresses to try, best first; MX hosts that are this gateway left out (RFC 5321 5.1)."""
        relay = self.relay
        if hop.mx and not is_ip(hop.host):
            return await resolve(relay.resolver, hop, is_myself=relay.is_myself)
        targets = await resolve(relay.resolver, hop)
        if any(relay.is_myself(target) for target in targets):
            raise RouteError("5.4.6", f"mail for {hop.host} loops back to myself")
        return targets

    async def connect(self, hop: NextHop) -> _Connection:
        """A connection to the first address of the next hop that answers (for recipient verification)."""
        errors: list[ConnectionFailed] = []
        for target in await self.targets(hop):
            try:
                return await self.open(hop, target)
            except ConnectionFailed as error:
                errors.append(error)
        if not errors:
            raise RouteError("4.4.1", f"no address for {hop.host}")
        raise RouteError(errors[-1].dsn, str(errors[-1]))

    async def open(self, hop: NextHop, target: Target) -> _Connection:
        """Connect, greet (EHLO, else HELO), STARTTLS as the TLS level says, log in to a smart host."""
        config = self.relay.config
        connection = await self._open(hop, target, config)
        if hop.login:
            await self._login(connection, config)
        return connection

    async def _plain(self, target: Target, config) -> aiosmtplib.SMTP:
        client = aiosmtplib.SMTP(
            hostname=target.ip,
            port=target.port,
            local_hostname=config.outgoing_helo,
            timeout=config.delivery.command_timeout,
            start_tls=False,
            validate_certs=False,
        )
        stage = "receiving the initial server greeting"
        try:
            await client.connect(timeout=config.delivery.connect_timeout)
            stage = "performing the EHLO handshake"
            await _greet(client)
        except aiosmtplib.SMTPResponseException as error:
            client.close()
            raise ConnectionFailed(f"host {target} refused to talk to me: "
                                   f"{one_line(error.code, error.message)}") from None
        except aiosmtplib.SMTPConnectError as error:
            client.close()
            raise ConnectionFailed(f"connect to {target}: {reason_of(error)}") from None
        except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError) as error:
            client.close()
            raise ConnectionFailed(lost_text(error, str(target), stage)) from None
        return client

    async def _open(self, hop: NextHop, target: Target, config) -> _Connection:
        client = await self._plain(target, config)
        required = hop.tls in ENCRYPTING_LEVELS
        if hop.tls == "none":
            return _Connection(client, target, encrypted=False)
        if not client.supports_extension("starttls"):
            if required:
                client.close()
                raise ConnectionFailed(f"TLS is required, but was not offered by host {target}", "4.7.4")
            return _Connection(client, target, encrypted=False)
        wanted = hop.tls_name or target.name
        try:
            await client.starttls(tls_context=self.relay.outbound_tls.context(hop.tls),
                                  server_hostname=sni_name(wanted) or sni_name(target.name))
            if hop.tls == "verify":
                names = certificate_names(client.get_transport_info("peercert"))
                if not certificate_matches(wanted, names):
                    client.close()
                    raise ConnectionFailed(
                        f"server certificate not verified: host {target} presented a certificate for "
                        f"{', '.join(names) or 'no name'}, not {wanted}", "4.7.5",
                    )
            await _greet(client)
            return _Connection(client, target, encrypted=True)
        except (aiosmtplib.SMTPException, OSError, ssl.SSLError, asyncio.TimeoutError) as error:
            client.close()
            if hop.tls == "verify" and _is_verify_failure(error):
                raise ConnectionFailed(f"server certificate not verified: host {target}: {reason_of(error)}",
                                       "4.7.5") from None
            if required:
                raise ConnectionFailed(f"TLS failed with host {target}: {reason_of(error)}; TLS is required, "
                                       "so not trying plain text", "4.7.5") from None
            # Opportunistic TLS: a broken handshake falls back to plain text, as Postfix's 'may' level does.
            log.warning("%s: TLS failed (%s); trying again without TLS", target, error)
        return _Connection(await self._plain(target, config), target, encrypted=False)

    async def _login(self, connection: _Connection, config) -> None:
        """AUTH PLAIN or LOGIN at the smart host, only over TLS; a refusal defers with the server's words."""
        client, target = connection.client, connection.target
        relay = config.external_relay
        if not connection.encrypted:
            client.close()
            text = (f"not sending the login for {relay.username} to {target} without TLS: "
                    "the smart host did not offer STARTTLS, or TLS failed")
            log.error("%s", text)
            raise RouteError("4.7.0", text)
        if not client.supports_extension("auth"):
            log.info("%s does not offer AUTH: sending without logging in", target)
            return
        methods = client.server_auth_methods
        try:
            if "plain" in methods:
                await client.auth_plain(relay.username, relay.password)
            elif "login" in methods:
                await client.auth_login(relay.username, relay.password)
            else:
                client.close()
                text = (f"SASL authentication with {target} impossible: it offers {' '.join(methods).upper()}, "
                        "Postern sends PLAIN or LOGIN")
                log.error("%s", text)
                raise RouteError("4.7.0", text)
        except aiosmtplib.SMTPResponseException as error:
            client.close()
            text = f"SASL authentication failed; server {target} said: {one_line(error.code, error.message)}"
            log.error("%s (username %s)", text, relay.username)
            raise RouteError("4.7.0", text) from None
        except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError) as error:
            client.close()
            raise RouteError("4.4.2", f"lost connection with {target} while logging in: {reason_of(error)}") from None


def _is_verify_failure(error: BaseException) -> bool:
    return any(isinstance(e, ssl.SSLCertVerificationError) for e in (error, error.__cause__, error.__context__))


class Destination:
    def __init__(self, delivery: Delivery, hop: NextHop):
        self.delivery = delivery
        self.hop = hop
        self.jobs: asyncio.Queue[Job] = asyncio.Queue()
        self.workers = 0
        self.idle_workers = 0
        self.dead_until = 0.0
        self.dead_reason = ""
        self.last_error: tuple[str, float] | None = None

    @property
    def limit(self) -> int:
        return self.delivery.relay.config.delivery.destination_concurrency_limit

    def submit(self, job: Job) -> None:
        self.jobs.put_nowait(job)
        if self.idle_workers < self.jobs.qsize() and self.workers < self.limit:
            self.workers += 1
            asyncio.get_running_loop().create_task(self._work())

    async def _next_job(self, connected: bool) -> Job | None:
        if not self.jobs.empty():
            return self.jobs.get_nowait()
        if not connected:
            return None
        self.idle_workers += 1
        try:
            return await asyncio.wait_for(self.jobs.get(), CONNECTION_CACHE_TIME)
        except asyncio.TimeoutError:
            return None
        finally:
            self.idle_workers -= 1

    async def _work(self) -> None:
        connection: _Connection | None = None
        try:
            while (job := await self._next_job(connection is not None)) is not None:
                try:
                    connection = await self._deliver(job, connection)
                    failed = [r for r in job.recipients if r.status in (DEFERRED, BOUNCED)]
                    if failed:
                        self.last_error = (failed[-1].last_reply, time.time())
                except Exception as error:  # a bug must not lose the job: defer it
                    log.exception("%s: delivery failed unexpectedly", job.entry.id)
                    self._defer_all(job, "4.3.0", f"internal error: {error}")
                    connection = None
                finally:
                    if not job.done.done():
                        job.done.set_result(None)
        finally:
            self.workers -= 1
            if connection is not None:
                await connection.close()

    def _defer_all(self, job: Job, dsn: str, reason: str, relay: str = "") -> None:
        for recipient in job.recipients:
            if recipient.status not in (SENT, BOUNCED):
                job.settle(recipient, DEFERRED, dsn, reason, relay)

    async def _deliver(self, job: Job, connection: _Connection | None) -> _Connection | None:
        """Send one job; returns the connection if it can carry the next one."""
        if self.dead_until > time.time():
            self._defer_all(job, "4.4.1", f"delivery temporarily suspended: {self.dead_reason}")
            return connection
        attempt = _Attempt(job, self.delivery.relay.config)
        recipients = list(job.recipients)
        if connection is not None:
            attempt.final = True
            try:
                await attempt.transaction(connection, recipients)
                return connection if connection.client.is_connected else None
            except _Lost as lost:
                if not lost.before_mail:
                    attempt.defer(lost.retry)
                    return None
                # The next hop closed the cached connection while it waited: nothing was sent, so
                # this is no failure of the message; it takes a new connection (Postfix's smtp_reuse).
                log.info("%s: cached connection to %s was closed; reconnecting", job.entry.id, connection.target)
                attempt.final = False
        return await self._deliver_fresh(job, attempt, recipients)

    async def _deliver_fresh(self, job: Job, attempt: _Attempt, recipients: list[Recipient]) -> _Connection | None:
        """Postfix's MX fallback: a temporary failure at one address moves on to the next, for at most
        MX_SESSION_LIMIT sessions (smtp_mx_session_limit); the last session's failures are the final ones."""
        try:
            targets = await self.delivery.targets(self.hop)
        except RouteError as error:
            self._route_failed(job, error)
            return None
        sessions = 0
        for index, target in enumerate(targets):
            try:
                connection = await self.delivery.open(self.hop, target)
            except ConnectionFailed as error:
                attempt.error = (error.dsn, str(error), "")
                continue
            except RouteError as error:  # the smart host refused our login
                self._route_failed(job, error)
                return None
            sessions += 1
            attempt.final = index == len(targets) - 1 or sessions >= MX_SESSION_LIMIT
            try:
                recipients = await attempt.transaction(connection, recipients)
            except _Lost as lost:
                recipients = lost.retry
            else:
                if not recipients and connection.client.is_connected:
                    return connection
                await connection.close()
            if not recipients or attempt.final:
                break
        if sessions == 0:
            dsn, text, _ = attempt.error
            self._route_failed(job, RouteError(dsn, text))
            return None
        attempt.defer(recipients)
        return None

    def _route_failed(self, job: Job, error: RouteError) -> None:
        """No session with the next hop: bounce (a domain that cannot take mail) or defer and mark it dead."""
        permanent = error.permanent and self.hop.mx and not self._is_configured_relay()
        if permanent:
            for recipient in job.recipients:
                if not recipient.done:
                    job.settle(recipient, BOUNCED, error.dsn, error.text)
            return
        dsn = error.dsn if error.dsn.startswith("4") else "4" + error.dsn[1:]
        self.dead_until = time.time() + self.delivery.relay.config.queue.minimal_backoff_time
        self.dead_reason = error.text
        self._defer_all(job, dsn, error.text)

    def _is_configured_relay(self) -> bool:
        config = self.delivery.relay.config
        hops = {config.internal_relay, config.external_relay}
        return any(self.hop.host == relay.host and self.hop.port == relay.port for relay in hops if relay.host)


MX_SESSION_LIMIT = 2  # Postfix's smtp_mx_session_limit


async def _greet(client: aiosmtplib.SMTP) -> None:
    """EHLO; a refusal other than 421 falls back to HELO, without extensions then (Postfix's smtp_helo)."""
    try:
        await client.ehlo()
    except aiosmtplib.SMTPHeloError as error:
        if error.code == 421 or not client.is_connected:
            raise
        await client.helo()


def lost_text(error: BaseException, relay: str, stage: str) -> str:
    """Postfix's words for a connection that broke in the middle of a conversation."""
    if isinstance(error, (asyncio.TimeoutError, aiosmtplib.SMTPTimeoutError)):
        return f"conversation with {relay} timed out while {stage}"
    return f"lost connection with {relay} while {stage}"


class _Lost(Exception):
    """The connection broke; `retry` are the recipients still to send, `before_mail` if nothing was accepted."""

    def __init__(self, retry: list[Recipient], before_mail: bool):
        super().__init__("lost connection")
        self.retry = retry
        self.before_mail = before_mail


class _Attempt:
    """One delivery attempt of a job over the next hop's addresses, and what each failure means
    (Postfix's smtp_trouble.c): a 5xx reply is final; a 4xx reply or a broken connection is final
    only in the last session, before that its recipients go on to the next MX host."""

    def __init__(self, job: Job, config):
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

    async def transaction(self, connection: _Connection, recipients: list[Recipient]) -> list[Recipient]:
        """MAIL, RCPT, DATA for the recipients; returns those to try at the next MX host.

        Raises _Lost when the connection breaks before the final dot. Once the dot is sent,
        a broken connection defers the recipients: the message is never sent twice in one attempt."""
        client, job = connection.client, self.job
        relay = str(connection.target)
        envelope = job.entry.envelope
        offers = outbound.Offers.of(client)
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
        message, mail_options = outbound.prepare(job.message, envelope, offers)
        encoding = "utf-8" if "SMTPUTF8" in mail_options else "ascii"
        open_, accepted, retry = list(recipients), [], []
        stage, before_mail = "sending MAIL FROM", True
        try:
            try:
                await _command(client, b"MAIL FROM:", envelope.sender, mail_options, encoding,
                               self.timeouts.command_timeout)
            except aiosmtplib.SMTPResponseException as error:
                retry = self.refused(open_, error, relay)
                await _rset(client)
                return retry
            except (ValueError, UnicodeError):
                return self.settle_failure(open_, "5.1.7", f"bad sender address syntax: <{envelope.sender}>", relay)
            before_mail, stage = False, "sending RCPT TO"
            for recipient in recipients:
                try:
                    await _command(client, b"RCPT TO:", recipient.address,
                                   outbound.rcpt_options(envelope, recipient, offers), encoding,
                                   self.timeouts.command_timeout)
                    accepted.append(recipient)
                except aiosmtplib.SMTPResponseException as error:
                    retry += self.refused([recipient], error, relay)
                    open_.remove(recipient)
                except (ValueError, UnicodeError):
                    self.settle_failure([recipient], "5.1.3", f"bad address syntax: <{recipient.address}>", relay)
                    open_.remove(recipient)
            if not accepted:
                await _rset(client)
                return retry
            stage = "sending DATA command"
            reply = await client.execute_command(b"DATA", timeout=self.timeouts.data_init_timeout)
            if reply.code != 354:
                retry += self.refused(accepted, aiosmtplib.SMTPDataError(reply.code, reply.message), relay)
                await _rset(client)
                return retry
            stage = "sending message content"
            for chunk in outbound.wire_chunks(message):
                client.protocol.write(chunk)
                # One timeout per write, not one for the whole message: a slow link that moves finishes.
                # aiosmtplib's protocol has StreamWriter's flow control; _drain_helper is its drain().
                await asyncio.wait_for(client.protocol._drain_helper(), self.timeouts.data_xfer_timeout)
            stage = "sending end of data -- message may be sent more than once"
            open_ = []
            reply = await client.execute_command(b".", timeout=self.timeouts.data_done_timeout)
        except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError, OSError, asyncio.TimeoutError) as error:
            client.close()
            text = lost_text(error, relay, stage)
            if not open_:  # the final dot went out: whatever happened, not again now
                self.error = ("4.4.2", text, relay)
                self.defer(accepted)
                raise _Lost([], before_mail) from None
            self.error = ("4.4.2", text, relay)
            raise _Lost(retry + open_, before_mail) from None
        if reply.code != 250:
            return retry + self.refused(accepted, aiosmtplib.SMTPDataError(reply.code, reply.message), relay)
        for recipient in accepted:
            recipient.dsn_passed = offers.dsn
            job.settle(recipient, SENT, dsn_of(reply.code, reply.message), one_line(reply.code, reply.message), relay)
        return retry


_QUOTED_LOCAL_PART = re.compile(r'^"(?:[^"\\\r\n]|\\.)*"')
_NOT_IN_A_PATH = re.compile(r'[\s<>"]')


async def _command(client: aiosmtplib.SMTP, verb: bytes, address: str, options: list[str], encoding: str,
                   timeout: float) -> None:
    """MAIL FROM or RCPT TO with the address exactly as the client gave it to us.

    (aiosmtplib's mail() and rcpt() pass the address through email.utils.parseaddr, which
    rewrites some: "a;b@example.org" would go out as <a>.) ValueError or UnicodeError when
    the address cannot go on an SMTP command line; SMTPResponseException for a refusal.
    """
    if _NOT_IN_A_PATH.search(_QUOTED_LOCAL_PART.sub("", address, count=1)):
        raise ValueError(f"address {address!r} cannot be sent")
    path = b"<" + address.encode(encoding) + b">"
    reply = await client.execute_command(verb + path, *(option.encode("ascii") for option in options),
                                         timeout=timeout)
    if reply.code not in (250, 251):
        raise aiosmtplib.SMTPResponseException(reply.code, reply.message)


async def _rset(client: aiosmtplib.SMTP) -> None:
    """End a failed transaction; a connection that cannot is closed (and not reused)."""
    try:
        await client.rset()
    except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError):
        client.close()
