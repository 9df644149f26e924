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

Each connection has a TLS requirement (`tls_policy.py`: the level, DANE's TLSA records,
a domain's MTA-STS policy): only `may` falls back to plain text, a certificate that
does not meet the requirement defers the mail (4.7.5), and every connection's TLS is
logged as Postfix logs it and counted for the console and the TLS reports. A smart host
with a username gets AUTH PLAIN or LOGIN only over a connection whose certificate was
checked; a message sent with REQUIRETLS (RFC 8689) only over a verified one.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import aiosmtplib
import dns.asyncresolver

from .config import MtaConfig, is_ip
from .hop_replies import lost_text, one_line, reason_of
from .queue.entry import BOUNCED, DEFERRED, FINAL, QueueEntry, Recipient
from .routing import NextHop, RouteError, Target, resolve
from .transaction import Attempt, Lost
from . import dane
from .mta_sts import Policy
from .outbound import Offers
from .tls import OutboundTls, certificate_matches, certificate_names, sni_name
from .tls_policy import Planner, Refused, Requirement
from .tls_report import Session, TlsStats

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
    observe: Callable[[NextHop, str, float], None] | None = None  # the metrics: (next hop, status, delay)

    def settle(self, recipient: Recipient, status: str, dsn: str, reply: str, relay: str = "",
               dsn_passed: bool = False) -> None:
        self.outcomes[recipient.address] = Outcome(recipient.address, status, dsn, reply, relay, dsn_passed)
        delay = time.time() - self.entry.envelope.arrival
        log.info(
            "%s: to=<%s>, relay=%s, delay=%.2f, dsn=%s, status=%s (%s)",
            self.entry.id, recipient.address, relay or "none", delay, dsn, status, reply,
        )
        if self.observe is not None:
            self.observe(self.hop, status, delay)

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
    """An open session with one address of a next hop, and the TLS it got.

    `security`: plain, unverified, verified, mta-sts or dane; `failure`: the (result type,
    detail) of a check an MTA-STS policy in testing mode reports without enforcing it."""

    def __init__(self, client: aiosmtplib.SMTP, target: Target, need: Requirement, security: str,
                 failure: tuple[str, str] = ("", "")):
        self.client = client
        self.target = target
        self.need = need
        self.security = security
        self.failure = failure
        sockname = client.transport.get_extra_info("sockname") if client.transport else None
        self.sending_ip = sockname[0] if sockname else ""  # ours, for TLS reports; read now, while connected
        self._offers: Offers | None = None

    @property
    def offers(self) -> Offers:
        """What the next hop's EHLO offered: read once, for every transaction on this connection."""
        if self._offers is None:
            self._offers = Offers.of(self.client)
        return self._offers

    @property
    def encrypted(self) -> bool:
        return self.security != "plain"

    async def close(self) -> None:
        try:
            await self.client.quit(timeout=5)
        except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError):
            self.client.close()


class ConnectionFailed(Exception):
    """This address of the next hop cannot take mail now; `dsn` says what kind of failure, and
    `result_type` (RFC 8460) what TLS or its policy had to do with it."""

    def __init__(self, text: str, dsn: str = "4.4.1", result_type: str = "", need: Requirement | None = None):
        super().__init__(text)
        self.dsn = dsn
        self.result_type = result_type
        self.need = need


class Delivery:
    """All destinations, and the settings every connection uses.

    `config`, `resolver` and `outbound_tls` return the ones in force (a reload replaces them);
    `is_myself` says whether a target is one of this gateway's own listeners; `planner` turns
    a next hop's TLS level into each connection's requirement (DANE, MTA-STS); `stats`
    counts each delivery's TLS for the console and the TLS reports."""

    def __init__(self, *, config: Callable[[], MtaConfig], resolver: Callable[[], dns.asyncresolver.Resolver],
                 outbound_tls: Callable[[], OutboundTls], is_myself: Callable[[Target], bool],
                 planner: Planner, stats: TlsStats | None = None):
        self.config = config
        self.resolver = resolver
        self.outbound_tls = outbound_tls
        self.is_myself = is_myself
        self.planner = planner
        self.stats = stats
        self.destinations: dict[NextHop, Destination] = {}
        self.observe: Callable[[NextHop, str, float], None] | None = None  # each recipient's outcome, for the metrics

    def submit(self, job: Job) -> None:
        job.observe = self.observe
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
        sts = await self.planner.sts_policy(hop)
        for target in await self.targets(hop):
            try:
                return await self.open(hop, target, sts)
            except ConnectionFailed as error:
                errors.append(error)
        if not errors:
            raise RouteError("4.4.1", f"no address for {hop.host}")
        raise RouteError(errors[-1].dsn, str(errors[-1]))

    async def check(self, hop: NextHop) -> list[dict]:
        """What delivery to this next hop would do now, host by host, without sending mail: connect
        with the TLS policy in force, report what the connection got, and QUIT. For the console's and
        posternctl's next-hop check: it runs the same code as delivery, so it cannot disagree with it.
        `tlsa` lists the host's DNSSEC-signed TLSA records when DANE applies to it."""
        try:
            targets = await self.targets(hop)
            sts = await self.planner.sts_policy(hop)
        except RouteError as error:
            return [_checked(hop.host, "", "bounce" if error.permanent else "defer", detail=error.text)]
        found = []
        for target in targets:
            try:
                connection = await self.open(hop, target, sts)
            except ConnectionFailed as error:
                found.append(_checked(target.name, str(target), "refuse" if error.need is not None else "unreachable",
                                      detail=str(error), need=error.need))
                continue
            except RouteError as error:
                found.append(_checked(target.name, str(target), "refuse", detail=error.text))
                continue
            await connection.close()
            need = connection.need
            detail = ", ".join(part for part in (need.source, connection.failure[1]) if part)
            found.append(_checked(target.name, str(target), "deliver", connection.security, detail, need))
        return found

    async def open(self, hop: NextHop, target: Target, sts: Policy | None = None) -> _Connection:
        """Connect, greet (EHLO, else HELO), STARTTLS as the TLS policy says, log in to a smart host."""
        config = self.config()
        try:
            need = await self.planner.requirement(hop, target, sts)
        except Refused as refused:
            log.warning("%s: %s", target, refused.text)
            raise ConnectionFailed(refused.text, refused.dsn, refused.result_type, refused.requirement) from None
        connection = await self._open(hop, target, config, need)
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

    async def _open(self, hop: NextHop, target: Target, config, need: Requirement) -> _Connection:
        client = await self._plain(target, config)
        if need.level == "none":
            return _Connection(client, target, need, "plain")
        if not client.supports_extension("starttls"):
            if need.required:
                client.close()
                if hop.login:
                    raise ConnectionFailed(f"not sending the login for {config.external_relay.username} to {target} "
                                           "without TLS: the smart host did not offer STARTTLS", "4.7.4",
                                           "starttls-not-supported", need)
                raise ConnectionFailed(f"TLS is required, but was not offered by host {target}", "4.7.4",
                                       "starttls-not-supported", need)
            failure = need.testing_failure
            if need.policy_type != "no-policy-found":  # a published policy wants TLS: report its absence
                failure = ("starttls-not-supported", f"{target} did not offer STARTTLS")
            return _Connection(client, target, need, "plain", failure)
        checked = need.level == "verify"
        wanted = need.names[0] if need.names else target.name
        try:
            await client.starttls(tls_context=self.outbound_tls().context(checked, need.ca_file),
                                  server_hostname=sni_name(wanted) or sni_name(target.name))
        except (aiosmtplib.SMTPException, OSError, ssl.SSLError, asyncio.TimeoutError) as error:
            client.close()
            if checked and _is_verify_failure(error):
                text = f"server certificate not verified: host {target}: {reason_of(error)}"
                if need.enforce:
                    raise ConnectionFailed(text + (LOGIN_NEEDS_VERIFIED if hop.login else ""), "4.7.5",
                                           _verify_result(error), need) from None
                # MTA-STS in testing mode: reported, and delivered as `may` would
                log.warning("%s: %s (MTA-STS policy in testing mode: delivering anyway)", target, text)
                failure = (_verify_result(error), text)
                return await self._open(hop, target, config, replace(need, level="may", testing_failure=failure))
            if need.required:
                raise ConnectionFailed(f"TLS failed with host {target}: {reason_of(error)}; TLS is required, "
                                       "so not trying plain text", "4.7.5", "validation-failure", need) from None
            # Opportunistic TLS: a broken handshake falls back to plain text, as Postfix's 'may' level does.
            log.warning("%s: TLS failed (%s); trying again without TLS", target, error)
            return _Connection(await self._plain(target, config), target, need, "plain", need.testing_failure)
        security, failure, detail = self._check_peer(client, target, need, hop)
        try:
            await _greet(client)
        except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError) as error:
            client.close()
            raise ConnectionFailed(lost_text(error, str(target), "performing the EHLO handshake")) from None
        _log_established(client, target, security, detail)
        return _Connection(client, target, need, security, failure)

    def _check_peer(self, client: aiosmtplib.SMTP, target: Target, need: Requirement,
                    hop: NextHop) -> tuple[str, tuple[str, str], str]:
        """(security, testing failure, detail) of an established TLS session; ConnectionFailed when it
        does not meet the requirement."""
        if need.level == "dane":
            result = dane.verify(need.tlsa, dane.peer_chain(client.get_transport_info("ssl_object")), need.names)
            if not result.ok:
                client.close()
                text = f"DANE: host {target}: {result.detail}; not delivering without a matching certificate"
                log.warning("%s", text)
                raise ConnectionFailed(text, "4.7.5", result.result_type, need)
            return "dane", ("", ""), result.detail
        if need.level != "verify":
            return "unverified", need.testing_failure, ""
        names = certificate_names(client.get_transport_info("peercert"))
        if any(certificate_matches(wanted, names) for wanted in need.names):
            sts = need.policy_type == "sts"
            return ("mta-sts" if sts and need.enforce else "verified"), ("", ""), need.source
        text = (f"server certificate not verified: host {target} presented a certificate for "
                f"{', '.join(names) or 'no name'}, not {' or '.join(need.names)}")
        if need.enforce:
            client.close()
            raise ConnectionFailed(text + (LOGIN_NEEDS_VERIFIED if hop.login else ""), "4.7.5",
                                   "certificate-host-mismatch", need)
        log.warning("%s: %s (MTA-STS policy in testing mode: delivering anyway)", target, text)
        return "unverified", ("certificate-host-mismatch", text), ""

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


def _checked(host: str, address: str, verdict: str, security: str = "", detail: str = "",
             need: Requirement | None = None) -> dict:
    """One host of `Delivery.check`."""
    tlsa = list(need.policy_strings) if need is not None and need.policy_type == "tlsa" else []
    return {"host": host, "address": address, "verdict": verdict, "security": security, "detail": detail,
            "tlsa": tlsa}


# Said after a verification failure at a smart host we log in to (NextHop.tls_level).
LOGIN_NEEDS_VERIFIED = ("; the login is sent only to a verified server: trust its CA with mta.tls.ca_file, "
                        "or set external_relay.tls_name to the name in its certificate")


def _verify_error(error: BaseException) -> ssl.SSLCertVerificationError | None:
    return next((e for e in (error, error.__cause__, error.__context__)
                 if isinstance(e, ssl.SSLCertVerificationError)), None)


def _is_verify_failure(error: BaseException) -> bool:
    return _verify_error(error) is not None


_EXPIRED = (9, 10)  # X509_V_ERR_CERT_NOT_YET_VALID, X509_V_ERR_CERT_HAS_EXPIRED


def _verify_result(error: BaseException) -> str:
    """The RFC 8460 result type of a failed certificate check."""
    found = _verify_error(error)
    return "certificate-expired" if found is not None and found.verify_code in _EXPIRED else "certificate-not-trusted"


_SECURITY_WORDS = {"dane": "Verified", "mta-sts": "Verified", "verified": "Verified", "unverified": "Untrusted"}


def _log_established(client: aiosmtplib.SMTP, target: Target, security: str, detail: str) -> None:
    """Postfix's line, so that admins' greps keep working:
    `Verified TLS connection established to mx.example.org[192.0.2.1]:25: TLSv1.3 with cipher ... (256/256 bits)`."""
    ssl_object = client.get_transport_info("ssl_object")
    cipher = ssl_object.cipher() if ssl_object is not None else None
    how = f"{cipher[1]} with cipher {cipher[0]} ({cipher[2]}/{cipher[2]} bits)" if cipher else "TLS"
    log.info("%s TLS connection established to %s: %s%s", _SECURITY_WORDS[security], target, how,
             f" ({'DANE: ' if security == 'dane' else ''}{detail})" if detail else "")


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
            # asyncio.timeout, not wait_for: wait_for makes a task per job, a cost on every message
            async with asyncio.timeout(CONNECTION_CACHE_TIME):
                return await self.jobs.get()
        except TimeoutError:
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
            if not self._requiretls_met(job, connection):
                return connection
            try:
                await attempt.transaction(connection, recipients)
                self._record(job, connection)
                return connection if connection.client.is_connected else None
            except Lost as lost:
                if not lost.before_mail:
                    self._record(job, connection)
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
            sts = await self.delivery.planner.sts_policy(self.hop)
        except RouteError as error:
            self._route_failed(job, error)
            return None
        sessions = 0
        for index, target in enumerate(targets):
            try:
                connection = await self.delivery.open(self.hop, target, sts)
            except ConnectionFailed as error:
                attempt.error = (error.dsn, str(error), "")
                if error.need is not None:
                    self._record_failure(job, target, error)
                continue
            except RouteError as error:  # the smart host refused our login
                self._route_failed(job, error)
                return None
            sessions += 1
            attempt.final = index == len(targets) - 1 or sessions >= MX_SESSION_LIMIT
            self._record(job, connection)
            if not self._requiretls_met(job, connection):
                await connection.close()
                return None
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

    def _record(self, job: Job, connection: _Connection) -> None:
        """Count this delivery's TLS (not for our own TLS reports, which must not cause reports)."""
        if self.delivery.stats is None or job.entry.envelope.tls_report:
            return
        need, target = connection.need, connection.target
        failure, detail = connection.failure
        self.delivery.stats.record(Session(
            domain=self.hop.host, policy_type=need.policy_type, policy_strings=need.policy_strings,
            mx_host=target.name, mx_ip=target.ip, sending_ip=connection.sending_ip,
            security=connection.security, failure=failure, detail=detail))

    def _record_failure(self, job: Job, target: Target, error: ConnectionFailed) -> None:
        if self.delivery.stats is None or job.entry.envelope.tls_report:
            return
        self.delivery.stats.record(Session(
            domain=self.hop.host, policy_type=error.need.policy_type, policy_strings=error.need.policy_strings,
            mx_host=target.name, mx_ip=target.ip, failure=error.result_type or "validation-failure",
            detail=str(error)))

    def _requiretls_met(self, job: Job, connection: _Connection) -> bool:
        """RFC 8689: a message sent with REQUIRETLS goes only over a verified connection (DANE, MTA-STS
        enforce, or a checked certificate whose name came from DNSSEC or this configuration) to a next hop
        that offers REQUIRETLS itself; otherwise it is returned to its sender, never sent with less."""
        if not job.entry.envelope.requiretls:
            return True
        security, hop = connection.security, self.hop
        trusted_name = not hop.direct or hop.listed or connection.target.secure
        if security in ("dane", "mta-sts") or (security == "verified" and trusted_name):
            if connection.client.supports_extension("requiretls"):
                return True
            why = f"{connection.target} does not offer REQUIRETLS"
        else:
            why = (f"the connection to {connection.target} is {'not encrypted' if security == 'plain' else 'not verified'}"
                   " (REQUIRETLS needs DANE, MTA-STS or a verified certificate)")
        for recipient in job.unsettled():
            job.settle(recipient, BOUNCED, "5.7.10", f"REQUIRETLS support required: {why}", str(connection.target))
        return False

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
