"""Delivering mail to a next hop with aiosmtplib, as Postfix's smtp client does.

A `Destination` holds the jobs (a message and its recipients for that next hop)
waiting for one next hop, and runs up to `destination_concurrency_limit`
connections to it. Each connection delivers job after job and stays open for a
moment when it runs out of work, so a burst reuses it; if the next hop closed it
meanwhile, a new one is made without a deferral. A next hop that cannot be
reached is marked dead for the minimal backoff time: its other jobs defer at once
instead of each waiting for their own connection timeout, as Postfix does.

One attempt (`Attempt`) walks the next hop's addresses: a temporary failure moves
the recipients it concerns on to the next MX host, for at most MX_SESSION_LIMIT
sessions; a 5xx is final (Postfix's smtp_trouble.c; see `transaction.py`). What goes on the wire after
MAIL, RCPT and DATA (parameters, 8-bit downgrade, long lines) is `outbound.py`'s.

Delivery changes nothing in the queue: a job's `done` resolves to an `Outcome` per
recipient (sent, deferred or bounced, with the reply and its DSN status), and the
scheduler applies them to the queue entry.

Each next hop has a TLS level (see `tls.py`): `encrypt` and `verify` never fall
back to plain text, and a smart host with a username gets AUTH PLAIN or LOGIN,
only once the connection is encrypted.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiosmtplib
import dns.asyncresolver

from .config import MtaConfig, is_ip
from .hop_replies import lost_text, one_line, reason_of
from .queue.entry import BOUNCED, DEFERRED, FINAL, QueueEntry, Recipient
from .routing import NextHop, RouteError, Target, resolve
from .transaction import Attempt, Lost
from .tls import ENCRYPTING_LEVELS, OutboundTls, certificate_matches, certificate_names, sni_name

log = logging.getLogger("postern/smtp")

CONNECTION_CACHE_TIME = 2.0


@dataclass(frozen=True)
class Outcome:
    """What one attempt did with one recipient: SENT, DEFERRED or BOUNCED, with the reply and its DSN status."""

    address: str
    status: str
    dsn: str
    reply: str
    relay: str = ""  # the next hop's address that said so, "" when none was reached
    dsn_passed: bool = False  # sent with its NOTIFY and ORCPT to a hop that offered DSN: notices are its job now


@dataclass
class Job:
    """A message and its recipients for one next hop. Delivery reads them and changes neither:
    `done` resolves to an `Outcome` per recipient (in the recipients' order), for the scheduler to apply."""

    entry: QueueEntry
    recipients: list[Recipient]
    hop: NextHop
    message: bytes
    outcomes: dict[str, Outcome] = field(default_factory=dict)  # by address, as each recipient is settled
    done: asyncio.Future[list[Outcome]] = field(default_factory=lambda: asyncio.get_running_loop().create_future())

    def settle(self, recipient: Recipient, status: str, dsn: str, reply: str, relay: str = "",
               dsn_passed: bool = False) -> None:
        self.outcomes[recipient.address] = Outcome(recipient.address, status, dsn, reply, relay, dsn_passed)
        delay = time.time() - self.entry.envelope.arrival
        log.info(
            "%s: to=<%s>, relay=%s, delay=%.2f, dsn=%s, status=%s (%s)",
            self.entry.id, recipient.address, relay or "none", delay, dsn, status, reply,
        )

    def unsettled(self) -> list[Recipient]:
        """The recipients neither sent nor bounced yet in this attempt (a deferred one may still be)."""
        return [r for r in self.recipients
                if r.address not in self.outcomes or self.outcomes[r.address].status not in FINAL]

    def results(self) -> list[Outcome]:
        return [self.outcomes[r.address] for r in self.recipients if r.address in self.outcomes]

    def finish(self) -> None:
        if not self.done.done():
            self.done.set_result(self.results())


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
    """All destinations, and the settings every connection uses.

    `config`, `resolver` and `outbound_tls` return the ones in force (a reload replaces them);
    `is_myself` says whether a target is one of this gateway's own listeners."""

    def __init__(self, *, config: Callable[[], MtaConfig], resolver: Callable[[], dns.asyncresolver.Resolver],
                 outbound_tls: Callable[[], OutboundTls], is_myself: Callable[[Target], bool]):
        self.config = config
        self.resolver = resolver
        self.outbound_tls = outbound_tls
        self.is_myself = is_myself
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
        if hop.mx and not is_ip(hop.host):
            return await resolve(self.resolver(), hop, is_myself=self.is_myself)
        targets = await resolve(self.resolver(), hop)
        if any(self.is_myself(target) for target in targets):
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
        config = self.config()
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
        level = hop.tls_level
        required = level in ENCRYPTING_LEVELS
        if level == "none":
            return _Connection(client, target, encrypted=False)
        if not client.supports_extension("starttls"):
            if required:
                client.close()
                if hop.login:
                    raise ConnectionFailed(f"not sending the login for {config.external_relay.username} to {target} "
                                           "without TLS: the smart host did not offer STARTTLS", "4.7.4")
                raise ConnectionFailed(f"TLS is required, but was not offered by host {target}", "4.7.4")
            return _Connection(client, target, encrypted=False)
        wanted = hop.tls_name or target.name
        try:
            await client.starttls(tls_context=self.outbound_tls().context(level),
                                  server_hostname=sni_name(wanted) or sni_name(target.name))
            if level == "verify":
                names = certificate_names(client.get_transport_info("peercert"))
                if not certificate_matches(wanted, names):
                    client.close()
                    raise ConnectionFailed(
                        f"server certificate not verified: host {target} presented a certificate for "
                        f"{', '.join(names) or 'no name'}, not {wanted}" + (LOGIN_NEEDS_VERIFIED if hop.login else ""),
                        "4.7.5",
                    )
            await _greet(client)
            return _Connection(client, target, encrypted=True)
        except (aiosmtplib.SMTPException, OSError, ssl.SSLError, asyncio.TimeoutError) as error:
            client.close()
            if level == "verify" and _is_verify_failure(error):
                raise ConnectionFailed(f"server certificate not verified: host {target}: {reason_of(error)}"
                                       + (LOGIN_NEEDS_VERIFIED if hop.login else ""), "4.7.5") from None
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


# Said after a verification failure at a smart host we log in to (NextHop.tls_level).
LOGIN_NEEDS_VERIFIED = ("; the login is sent only to a verified server: trust its CA with mta.tls.ca_file, "
                        "or set external_relay.tls_name to the name in its certificate")


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
        return self.delivery.config().delivery.destination_concurrency_limit

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
                    failed = [o for o in job.results() if o.status in (DEFERRED, BOUNCED)]
                    if failed:
                        self.last_error = (failed[-1].reply, time.time())
                except Exception as error:  # a bug must not lose the job: defer it
                    log.exception("%s: delivery failed unexpectedly", job.entry.id)
                    self._defer_all(job, "4.3.0", f"internal error: {error}")
                    connection = None
                finally:
                    job.finish()
        finally:
            self.workers -= 1
            if connection is not None:
                await connection.close()

    def _defer_all(self, job: Job, dsn: str, reason: str, relay: str = "") -> None:
        for recipient in job.unsettled():
            job.settle(recipient, DEFERRED, dsn, reason, relay)

    async def _deliver(self, job: Job, connection: _Connection | None) -> _Connection | None:
        """Send one job; returns the connection if it can carry the next one."""
        if self.dead_until > time.time():
            self._defer_all(job, "4.4.1", f"delivery temporarily suspended: {self.dead_reason}")
            return connection
        attempt = Attempt(job, self.delivery.config())
        recipients = list(job.recipients)
        if connection is not None:
            attempt.final = True
            try:
                await attempt.transaction(connection, recipients)
                return connection if connection.client.is_connected else None
            except Lost as lost:
                if not lost.before_mail:
                    attempt.defer(lost.retry)
                    return None
                # The next hop closed the cached connection while it waited: nothing was sent, so
                # this is no failure of the message; it takes a new connection (Postfix's smtp_reuse).
                log.info("%s: cached connection to %s was closed; reconnecting", job.entry.id, connection.target)
                attempt.final = False
        return await self._deliver_fresh(job, attempt, recipients)

    async def _deliver_fresh(self, job: Job, attempt: Attempt, recipients: list[Recipient]) -> _Connection | None:
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
            except Lost as lost:
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
            for recipient in job.unsettled():
                job.settle(recipient, BOUNCED, error.dsn, error.text)
            return
        dsn = error.dsn if error.dsn.startswith("4") else "4" + error.dsn[1:]
        self.dead_until = time.time() + self.delivery.config().queue.minimal_backoff_time
        self.dead_reason = error.text
        self._defer_all(job, dsn, error.text)

    def _is_configured_relay(self) -> bool:
        config = self.delivery.config()
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
