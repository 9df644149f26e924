"""The Prometheus endpoint: `GET /metrics` over HTTP/1.1 (h11), on the relay's own loop.

Off unless `mta.metrics.listen` names an address. Beyond loopback the configuration
refuses it without a login (basic auth); with a certificate it speaks HTTPS.

Nearly every value is read when Prometheus asks, from the objects the control API reads
for `Status.Get`, `Queue.Summary` and `Tls.Summary`: no count is kept twice, so a scrape
and `posternctl status` never disagree. Only two families are kept here, because nothing
else keeps them: each recipient's delivery delay per next hop (a histogram, recorded where
the `status=sent/deferred/bounced` line is logged) and the refusals by reason (recorded
where the `NOQUEUE: reject:` line is logged).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import gzip
import hmac
import http
import logging
import os
import re
import shutil
import ssl
import string
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import h11
from cryptography import x509
from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from . import VERSION, replies
from .config import ConfigError, MetricsSettings, MtaConfig
from .queue import query
from .queue.entry import ACTIVE, DEFERRED, HOLD, QueueEntry
from .queue.store import QueueStore

if TYPE_CHECKING:
    from .daemon import Relay

log = logging.getLogger("postern/metrics")

PATH = "/metrics"
# The text format every Prometheus reads (the names here are all plain ASCII, so generate_latest writes it).
CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"
# Seconds from arrival to a recipient's outcome: a first attempt takes well under a second,
# deferred mail is tried for up to maximal_queue_lifetime (5 days).
DELAY_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 86400, 5 * 86400)
# qshape's columns as label values: the upper bound in minutes, and the last one for anything older.
AGE_LABELS = [str(bound) for bound in query.BUCKET_MINUTES] + [f"{query.BUCKET_MINUTES[-1]}+"]
MAX_NEXT_HOPS = 50  # next hops with a delay histogram of their own; later ones share OTHERS
TOP_DESTINATIONS = 20  # destinations shown one by one in the qshape and TLS families; the rest are summed
OTHERS = "(other)"
TLS_HOURS = 24  # the TLS families cover what `Tls.Summary` shows by default
REPLY_LABEL_LIMIT = 200  # characters of a next hop's last error kept in its label

# The HTTP side: a scraper sends one small request at a time.
MAX_REQUEST = 8192  # bytes of request line and headers
MAX_CONNECTIONS = 16
IDLE_TIMEOUT = 30.0  # seconds a connection may wait between requests
REALM = "postern"


# --- refusal reasons ---------------------------------------------------------------------------


def _reply_patterns() -> list[tuple[re.Pattern, str]]:
    """Each refusal the relay words itself (relay/replies.py), as a pattern and its name in lower case:
    RELAY_DENIED -> relay_denied. The most specific (longest fixed text) first."""
    found = []
    for name, template in vars(replies).items():
        if not (name.isupper() and isinstance(template, str)):
            continue
        if not (template[:1] in "45" or template.startswith("{code}")):
            continue
        parts = string.Formatter().parse(template)
        regex = "".join(re.escape(text) + (".*?" if field is not None else "") for text, field, _, _ in parts)
        fixed = len(re.sub(r"\{[^}]*\}", "", template))
        found.append((fixed, re.compile(regex, re.S), name.lower()))
    found.sort(key=lambda item: -item[0])
    return [(pattern, reason) for _, pattern, reason in found]


_PATTERNS = _reply_patterns()


@functools.lru_cache(maxsize=1024)
def refusal_reason(reply: str) -> str:
    """The name of the relay's reply this refusal is (`relay_denied`, `domain_paused`...); `other` for
    replies the relay does not word itself (aiosmtpd's syntax errors, a verifier's own text)."""
    for pattern, reason in _PATTERNS:
        if pattern.fullmatch(reply):
            return reason
    return "other"


def _stage(stage: str) -> str:
    """The SMTP command a refusal answered; only command names become label values."""
    return stage if re.fullmatch(r"[A-Z][A-Z-]{0,19}", stage or "") else "UNKNOWN"


# --- what is read at scrape time ---------------------------------------------------------------


@dataclass
class QueueView:
    """The queue's numbers for one scrape: what Status.Get and Queue.Summary show, and its file system."""

    now: float
    messages: dict[str, int]  # by state
    recipients: dict[str, list[int]]  # open recipients by state, one count per qshape column
    oldest: float | None  # the oldest arrival
    destinations: list[dict]  # Queue.Summary's rows, busiest first
    corrupt: int
    disk: tuple[int, int, int] | None  # bytes free, bytes in all, inodes free


def queue_view(entries: list[QueueEntry], store: QueueStore) -> QueueView:
    """One pass over the entries (a list taken on the loop: this may run in a thread, since the
    entries' fields it reads are each replaced whole), plus qshape's table and the file system."""
    now = time.time()
    messages = {ACTIVE: 0, DEFERRED: 0, HOLD: 0}
    recipients = {state: [0] * len(AGE_LABELS) for state in messages}
    oldest = None
    for entry in entries:
        state = entry.state_at(now)
        messages[state] += 1
        arrival = entry.envelope.arrival
        if oldest is None or arrival < oldest:
            oldest = arrival
        minutes = (now - arrival) / 60
        column = next((i for i, bound in enumerate(query.BUCKET_MINUTES) if minutes <= bound),
                      len(query.BUCKET_MINUTES))
        recipients[state][column] += len(entry.open_recipients())
    disk = filesystem(store.root)
    try:
        corrupt = len(store.corrupt_files())
    except OSError:
        corrupt = 0
    return QueueView(now, messages, recipients, oldest, query.summary(entries), corrupt, disk)


def filesystem(root: str | os.PathLike) -> tuple[int, int, int] | None:
    """The queue's file system: bytes free for the daemon, bytes in all, inodes free for the daemon;
    None when it cannot be read. The endpoint's postern_queue_filesystem_* and Status.Get's `disk`."""
    try:
        usage = shutil.disk_usage(root)
        return usage.free, usage.total, os.statvfs(root).f_favail
    except OSError:
        return None


class CertificateExpiry:
    """When each configured certificate expires (its notAfter), each file read again only when it changed:
    the endpoint's postern_certificate_expiry_timestamp_seconds and Status.Get's `certificates`."""

    def __init__(self):
        self._known: dict[str, tuple[tuple, float | None]] = {}  # path: (stat key, expiry)

    def read(self, config: MtaConfig) -> list[tuple[str, str, float]]:
        """(setting, file, expiry) for each certificate configured and readable."""
        found = []
        for name, path in (("mta.tls.cert_file", config.tls.cert_file),
                           ("mta.tls.client_cert_file", config.tls.client_cert_file),
                           ("mta.metrics.cert_file", config.metrics.cert_file)):
            expiry = self.expiry(path) if path else None
            if expiry is not None:
                found.append((name, path, expiry))
        return found

    def expiry(self, path: str) -> float | None:
        """The first certificate's notAfter, read again only when the file changed."""
        try:
            info = os.stat(path)
            key = (info.st_ino, info.st_mtime_ns, info.st_size)
            known = self._known.get(path)
            if known and known[0] == key:
                return known[1]
            certificate = x509.load_pem_x509_certificate(Path(path).read_bytes())
            expiry = certificate.not_valid_after_utc.timestamp()
        except (OSError, ValueError):
            return None
        self._known[path] = (key, expiry)
        return expiry


class _RelayCollector:
    """Reads the relay's state when Prometheus asks (prometheus_client's custom collector)."""

    def __init__(self, relay: Relay):
        self.relay = relay
        self.certificates = CertificateExpiry()
        self.view: QueueView | None = None  # the queue, as Metrics.render had it read in a thread

    def collect(self) -> Iterator:
        yield from self._general()
        yield from self._queue()
        yield from self._next_hops()
        yield from self._tls()
        yield from self._certificate_expiry()

    def _general(self) -> Iterator:
        relay = self.relay
        counters = relay.counters
        info = GaugeMetricFamily("postern_build_info", "The relay's version (always 1).", labels=["version"])
        info.add_metric([VERSION], 1)
        yield info
        yield GaugeMetricFamily("postern_start_time_seconds", "When the relay daemon started (Unix time).",
                                value=counters.started)
        for name, value, words in (
                ("postern_messages_received", counters.received, "Messages accepted and queued"),
                ("postern_recipients_delivered", counters.delivered, "Recipients delivered (status=sent)"),
                ("postern_recipients_deferred", counters.deferred,
                 "Recipients' delivery attempts that failed for now (status=deferred)"),
                ("postern_recipients_bounced", counters.bounced, "Recipients returned to their sender")):
            yield CounterMetricFamily(name, f"{words} since the daemon started.", value=value)
        paused = CounterMetricFamily("postern_paused_refusals", "RCPTs refused with 451 by the migration hold, "
                                     "per paused_domains entry, since the daemon started.", labels=["domain"])
        for domain, count in sorted(counters.turned_away.items()):
            paused.add_metric([domain], count)
        yield paused
        connections, clients = relay.smtp_sessions()
        yield GaugeMetricFamily("postern_smtp_connections", "SMTP sessions open now.", value=connections)
        yield GaugeMetricFamily("postern_smtp_clients", "Client addresses with an SMTP session open now "
                                "(my_networks are not counted).", value=clients)

    def _queue(self) -> Iterator:
        """Status.Get's queue sizes, and qshape's table: by state and age, and per destination."""
        view = self.view or queue_view(list(self.relay.scheduler.entries.values()), self.relay.store)
        family = GaugeMetricFamily("postern_queue_messages", "Messages in the queue, by state.", labels=["state"])
        for state, count in view.messages.items():
            family.add_metric([state], count)
        yield family
        yield GaugeMetricFamily("postern_queue_corrupt_messages", "Queue files set aside as damaged.",
                                value=view.corrupt)
        yield GaugeMetricFamily("postern_queue_oldest_message_age_seconds",
                                "Age of the oldest queued message; 0 when the queue is empty.",
                                value=round(view.now - view.oldest, 3) if view.oldest is not None else 0)
        family = GaugeMetricFamily("postern_queue_recipients", "Recipients still to deliver, by message state and "
                                   "age (qshape's columns: up to that many minutes old).",
                                   labels=["state", "age_minutes"])
        for state, row in view.recipients.items():
            for label, count in zip(AGE_LABELS, row):
                family.add_metric([state, label], count)
        yield family
        family = GaugeMetricFamily("postern_queue_destination_recipients",
                                   f"Recipients still to deliver per destination domain and age (qshape): the "
                                   f"{TOP_DESTINATIONS} busiest destinations, the others summed as {OTHERS}.",
                                   labels=["destination", "age_minutes"])
        others = [0] * len(AGE_LABELS)
        for index, row in enumerate(view.destinations):
            if index < TOP_DESTINATIONS:
                for label, count in zip(AGE_LABELS, row["buckets"]):
                    family.add_metric([row["destination"], label], count)
            else:
                others = [a + b for a, b in zip(others, row["buckets"])]
        if len(view.destinations) > TOP_DESTINATIONS:
            for label, count in zip(AGE_LABELS, others):
                family.add_metric([OTHERS, label], count)
        yield family
        yield GaugeMetricFamily("postern_queue_destinations", "Destination domains with mail in the queue.",
                                value=len(view.destinations))
        if view.disk is not None:
            free, size, files_free = view.disk
            yield GaugeMetricFamily("postern_queue_filesystem_avail_bytes",
                                    "Bytes free for the daemon on the queue's file system.", value=free)
            yield GaugeMetricFamily("postern_queue_filesystem_size_bytes", "Size of the queue's file system in bytes.",
                                    value=size)
            yield GaugeMetricFamily("postern_queue_filesystem_files_free",
                                    "Inodes (files) free for the daemon on the queue's file system.", value=files_free)

    def _next_hops(self) -> Iterator:
        family = GaugeMetricFamily("postern_next_hop_last_error_timestamp_seconds",
                                   f"When a next hop last deferred or refused a recipient (Unix time), with its reply "
                                   f"(Status.Get's last_errors, the {TOP_DESTINATIONS} latest).",
                                   labels=["next_hop", "reply"])
        errors = sorted(self.relay.delivery.last_errors().items(), key=lambda item: -item[1][1])
        for hop, (reply, when) in errors[:TOP_DESTINATIONS]:
            family.add_metric([str(hop), reply[:REPLY_LABEL_LIMIT]], when)
        yield family

    def _tls(self) -> Iterator:
        """Tls.Summary's counts over the last TLS_HOURS hours: per destination, what each session achieved."""
        rows = self.relay.tls_stats.summary(time.time() - TLS_HOURS * 3600)
        kinds = ("dane", "mta_sts", "verified", "unverified", "plain", "failed")
        shown = rows[:TOP_DESTINATIONS]
        shown += [row for row in rows[TOP_DESTINATIONS:] if row["failed"]][:TOP_DESTINATIONS]
        names = {row["domain"] for row in shown}
        others = {kind: sum(row[kind] for row in rows if row["domain"] not in names) for kind in kinds}
        family = GaugeMetricFamily(
            "postern_tls_sessions_24h",
            f"Delivery sessions over the last {TLS_HOURS} hours (whole hours, as Tls.Summary) by the TLS they got: "
            f"dane, mta_sts, verified, unverified, plain, or failed (did not go ahead); the {TOP_DESTINATIONS} "
            f"busiest destinations and those with failures, the rest summed as {OTHERS}.",
            labels=["destination", "security"])
        for row in shown:
            for kind in kinds:
                family.add_metric([row["domain"], kind], row[kind])
        if len(shown) < len(rows):
            for kind in kinds:
                family.add_metric([OTHERS, kind], others[kind])
        yield family

    def _certificate_expiry(self) -> Iterator:
        family = GaugeMetricFamily("postern_certificate_expiry_timestamp_seconds",
                                   "When a configured certificate expires (Unix time, its notAfter).",
                                   labels=["certificate", "file"])
        for name, path, expiry in self.certificates.read(self.relay.config):
            family.add_metric([name, path], expiry)
        yield family


# --- the endpoint ------------------------------------------------------------------------------


class Metrics:
    """The registry the endpoint serves, the two families kept here, and the HTTP server.

    `settled` and `refused` are the hooks the daemon gives delivery and the SMTP server;
    `update` puts the configuration in force (start, reload), `stop` closes the server."""

    def __init__(self, relay: Relay):
        disable_created_metrics()  # no `_created` series beside each counter: half the lines, nothing lost
        self.relay = relay
        self.registry = CollectorRegistry(auto_describe=False)
        self._collector = _RelayCollector(relay)
        self.registry.register(self._collector)
        self.delay = Histogram(
            "postern_delivery_delay_seconds",
            "Seconds from a message's arrival to a recipient's outcome at a next hop (the log's delay=), by "
            "next hop and status: sent, deferred, bounced.",
            ["next_hop", "status"], buckets=DELAY_BUCKETS, registry=self.registry)
        self.refusals = Counter(
            "postern_smtp_refusals",
            "Refusals sent to SMTP clients (each NOQUEUE: reject line) by stage, reason (the reply's name in "
            "relay/replies.py, or other) and reply code, since the daemon started.",
            ["stage", "reason", "code"], registry=self.registry)
        self.settings: MetricsSettings = MetricsSettings()
        self._server: asyncio.Server | None = None
        self._context: ssl.SSLContext | None = None
        self._password = b""
        self._writers: set[asyncio.StreamWriter] = set()
        self._hops: set[str] = set()

    # -- hooks

    def settled(self, hop: object, status: str, seconds: float) -> None:
        """One recipient's outcome at a next hop, `seconds` after the message arrived. Delivering by MX,
        each domain is a next hop: past MAX_NEXT_HOPS they share one histogram, so that the series stay few."""
        name = str(hop)
        if name not in self._hops:
            if len(self._hops) >= MAX_NEXT_HOPS:
                name = OTHERS
            else:
                self._hops.add(name)
        self.delay.labels(name, status).observe(max(0.0, seconds))

    def refused(self, stage: str, reply: str) -> None:
        """One refusal as the SMTP server logs it."""
        code = reply[:3] if reply[:3].isdigit() else ""
        self.refusals.labels(_stage(stage), refusal_reason(reply), code).inc()

    def certificates(self) -> list[tuple[str, str, float]]:
        """(setting, file, expiry) of each configured certificate, as the endpoint shows them."""
        return self._collector.certificates.read(self.relay.config)

    def disk(self) -> tuple[int, int, int] | None:
        """The queue's file system as the endpoint shows it: bytes free, bytes in all, inodes free."""
        return filesystem(self.relay.store.root)

    async def render(self) -> bytes:
        """The text Prometheus reads. The pass over the queue runs in a thread, on a list of the entries
        taken here: scraping a queue of 100,000 messages (half a second of work) does not stop the SMTP
        sessions and deliveries meanwhile, which only wait their turns for the interpreter."""
        entries = list(self.relay.scheduler.entries.values())
        view = await asyncio.to_thread(queue_view, entries, self.relay.store)
        self._collector.view = view  # no await from here to the end: no other scrape sees it
        try:
            return generate_latest(self.registry)
        finally:
            self._collector.view = None

    # -- the server

    async def update(self) -> None:
        """Listen as `mta.metrics` says: open, close or move the server, load the certificate and password
        again. Raises ConfigError (the running endpoint unchanged) when the file or the address cannot be used."""
        settings = self.relay.config.metrics
        password = self._read_password(settings)
        context = self._load_context(settings)
        if not settings.listen:
            await self.stop()
            context = None
        elif self._server is None or settings.listen != self.settings.listen or (context is None) != (
                self._context is None):
            if settings.listen == self.settings.listen:
                await self.stop()  # the same address: it must be free before it is bound again
            server = await self._listen(settings, context)
            await self.stop()
            self._server = server
            log.info("serving %s on %s%s", PATH, settings.listen, " (HTTPS)" if context else "")
        elif context is not None:
            self._context.load_cert_chain(settings.cert_file, settings.key_file)  # the server's own context
            context = self._context
        self.settings, self._password, self._context = settings, password, context

    async def _listen(self, settings: MetricsSettings, context: ssl.SSLContext | None) -> asyncio.Server:
        address = settings.listen
        try:
            return await asyncio.start_server(self._serve, address.host, address.port, ssl=context,
                                              reuse_address=True, limit=MAX_REQUEST,
                                              ssl_handshake_timeout=IDLE_TIMEOUT if context else None)
        except OSError as error:
            raise ConfigError([f"mta.metrics.listen: cannot listen on {address}: {error.strerror or error}"]) from None

    @staticmethod
    def _read_password(settings: MetricsSettings) -> bytes:
        if not settings.listen or not settings.password_file:
            return b""
        try:
            text = Path(settings.password_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            reason = error.strerror if isinstance(error, OSError) else "not UTF-8 text"
            raise ConfigError([f"mta.metrics.password_file: cannot read {settings.password_file}: {reason}: "
                               "let the daemon's group read it (chown root:postern, chmod 640)"]) from None
        password = text.rstrip("\r\n")
        if not password or "\n" in password:
            raise ConfigError([f"mta.metrics.password_file: {settings.password_file} must hold the password on one line"])
        return password.encode()

    @staticmethod
    def _load_context(settings: MetricsSettings) -> ssl.SSLContext | None:
        if not settings.listen or not settings.cert_file:
            return None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_cert_chain(settings.cert_file, settings.key_file)
        except (OSError, ssl.SSLError) as error:
            raise ConfigError([f"mta.metrics.cert_file: cannot load the certificate: {error}"]) from None
        return context

    async def stop(self) -> None:
        """Close the listener and any scrape connection still open."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for writer in list(self._writers):
            writer.close()
        log.info("stopped listening on %s", self.settings.listen)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One connection: requests one after the other (keep-alive), each answered in full."""
        if len(self._writers) >= MAX_CONNECTIONS:
            writer.close()
            return
        self._writers.add(writer)
        connection = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST)
        try:
            while True:
                request = await self._next_request(connection, reader)
                if request is None:
                    break
                writer.write(await self._respond(connection, request))
                await writer.drain()
                if connection.our_state is not h11.DONE or connection.their_state is not h11.DONE:
                    break
                connection.start_next_cycle()
        except h11.RemoteProtocolError as error:  # 400, or 431 for a request head over MAX_REQUEST
            if connection.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                try:
                    writer.write(self._send(connection, error.error_status_hint, b"bad request\n", close=True))
                except h11.LocalProtocolError:
                    pass
        except (OSError, TimeoutError, ssl.SSLError, h11.LocalProtocolError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    @staticmethod
    async def _next_request(connection: h11.Connection, reader: asyncio.StreamReader) -> h11.Request | None:
        """The next request with its (ignored) body read, or None when the client closed or waited too long."""
        request = None
        async with asyncio.timeout(IDLE_TIMEOUT):
            while True:
                event = connection.next_event()
                if event is h11.NEED_DATA:
                    connection.receive_data(await reader.read(MAX_REQUEST))
                elif isinstance(event, h11.Request):
                    request = event
                elif isinstance(event, h11.EndOfMessage):
                    return request
                elif event is h11.PAUSED or isinstance(event, h11.ConnectionClosed):
                    return None

    async def _respond(self, connection: h11.Connection, request: h11.Request) -> bytes:
        target = request.target.decode("ascii", "replace").partition("?")[0]
        if request.method not in (b"GET", b"HEAD"):
            return self._send(connection, 405, b"only GET\n", [(b"Allow", b"GET, HEAD")], head=False)
        head = request.method == b"HEAD"
        if self.settings.username and not self._authorized(request):
            return self._send(connection, 401, b"authentication required\n",
                              [(b"WWW-Authenticate", f'Basic realm="{REALM}", charset="UTF-8"'.encode())], head=head)
        if target != PATH:
            return self._send(connection, 404, f"not found: try {PATH}\n".encode(), head=head)
        body = await self.render()
        extra = [(b"Content-Type", CONTENT_TYPE)]
        accepted = b",".join(value for name, value in request.headers if name == b"accept-encoding")
        if b"gzip" in accepted.lower():
            body = gzip.compress(body, compresslevel=5)
            extra.append((b"Content-Encoding", b"gzip"))
        return self._send(connection, 200, body, extra, head=head)

    def _authorized(self, request: h11.Request) -> bool:
        """HTTP basic auth (RFC 7617) with the configured login, compared in constant time."""
        value = next((v for name, v in request.headers if name == b"authorization"), b"")
        scheme, _, token = value.partition(b" ")
        if scheme.lower() != b"basic":
            return False
        try:
            decoded = base64.b64decode(token.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        username, colon, password = decoded.partition(b":")
        expected = self.settings.username.encode()
        good_name = hmac.compare_digest(username, expected)
        good_password = hmac.compare_digest(password, self._password)
        return bool(colon) and good_name and good_password

    @staticmethod
    def _send(connection: h11.Connection, status: int, body: bytes, extra: list | None = None, head: bool = False,
              close: bool = False) -> bytes:
        headers = [(b"Content-Length", str(len(body)).encode()), (b"Cache-Control", b"no-store"), *(extra or [])]
        if not extra or not any(name == b"Content-Type" for name, _ in extra):
            headers.append((b"Content-Type", b"text/plain; charset=utf-8"))
        if close:
            headers.append((b"Connection", b"close"))
        data = connection.send(h11.Response(status_code=status, headers=headers,
                                            reason=http.HTTPStatus(status).phrase.encode()))
        if not head:
            data += connection.send(h11.Data(data=body))
        return data + connection.send(h11.EndOfMessage())
