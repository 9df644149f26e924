"""postern-relay: the daemon process.

    postern-relay --config /etc/postern/postern.yaml --state-dir /var/lib/postern \
                  --socket /run/postern/control.sock

Runs in the foreground and logs to stderr (the journal on the appliance). SIGHUP
reloads the configuration file; a file with problems is refused and the running
configuration stays. SIGTERM and SIGINT stop it gracefully: no new connections, idle
sessions told `421 4.3.2`, and up to SHUTDOWN_GRACE seconds for messages being received
or delivered to finish; queued mail stays on disk.

It runs on uvloop where uvloop is installed; POSTERN_EVENT_LOOP=asyncio in its environment
runs asyncio's own event loop instead. The startup line names the loop.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import os
import signal
import socket
import ssl
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil

from . import VERSION, headers, replies
from .config import ConfigError, MtaConfig, load_file
from .config_file import DEFAULT_CONFIG
from .control.client import DEFAULT_SOCKET
from .control.server import ControlServer
from .delivery import Delivery
from .dkim_sign import load_keys
from .event_loop import EVENT_LOOP_VARIABLE, choose_event_loop, loop_name
from .events import EventHub, LogBuffer, log_to
from .hold import PausedSince
from .metrics import Metrics
from .mta_sts import MtaSts
from .queue.entry import Counters, Envelope
from .queue.store import QueueStore, slot_of
from .receiving import SHUTDOWN_GRACE, CannotStart, ReceivingProcesses, Sessions
from .routing import Target, make_resolver
from .scheduler import Scheduler
from .smtpd import Receiver
from .tls import OutboundTls, load_cert_chain, server_context
from .tls_policy import Planner
from .tls_report import Reporter, TlsStats
from .verify import RecipientVerifier

log = logging.getLogger("postern/master")

DEFAULT_STATE_DIR = "/var/lib/postern"
DEFAULT_GROUP = "postern"
LISTEN_BACKLOG = 1024  # a burst of connections waits to be accepted (or told 421) instead of being dropped
QUEUE_LOAD_SLICE = 2000  # queued messages read per hand-off at start; the event loop adds one slice at a time
RECEIVERS_VARIABLE = "POSTERN_RECEIVERS"  # the default of --receivers
DEFAULT_RECEIVERS = "auto"
MAX_RECEIVERS = 8


def server_tls_context(config: MtaConfig) -> ssl.SSLContext | None:
    return server_context(config)


def local_addresses() -> set[str]:
    found = {"127.0.0.1", "::1"}
    for addrs in psutil.net_if_addrs().values():
        for addr in addrs:
            if addr.family in (socket.AF_INET, socket.AF_INET6):
                found.add(addr.address.split("%")[0])
    return found


def sd_notify(state: str) -> None:
    """Tell systemd (Type=notify) how we are doing; nothing without NOTIFY_SOCKET."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return
    if path.startswith("@"):
        path = "\0" + path[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.connect(path)
        sock.sendall(state.encode())


class Relay:
    """The daemon's long-lived objects and their wiring: each component is given what it uses,
    and only the control API sees the whole."""

    def __init__(self, config: MtaConfig, config_path: str, state_dir: str, socket_path: str,
                 socket_group: str = DEFAULT_GROUP, log_buffer: LogBuffer | None = None, receivers: int = 0):
        self.config = config
        self.config_path = config_path
        self.store = QueueStore(state_dir)
        self.paused_since = PausedSince(state_dir)
        self.counters = Counters()
        self.events = EventHub()
        self.log_buffer = log_buffer or LogBuffer()
        self.config_lock = asyncio.Lock()
        self.outbound_tls = OutboundTls(config)
        self.dkim_keys = load_keys(config)
        self.tls_context = server_tls_context(config)
        self.resolver = make_resolver(config)
        self.local_ips = local_addresses()
        # Each component gets what it uses; the getters return what is in force, since reload replaces it.
        def current() -> MtaConfig:
            return self.config

        def resolver():
            return self.resolver

        def verifying_context() -> ssl.SSLContext:  # MTA-STS and TLS reports: tls.ca_file, else the system's
            return self.outbound_tls.context(True)

        state = Path(state_dir)
        self.mta_sts = MtaSts(state / "mta-sts", resolver=resolver, context=verifying_context)
        self.tls_stats = TlsStats(state / "tls-stats")
        self.reporter = Reporter(self.tls_stats, resolver=resolver, hostname=lambda: self.config.hostname,
                                 send_mail=self.send_tls_report, context=verifying_context,
                                 directory=state / "tls-reports", enabled=lambda: self.config.tls_reports)
        self.delivery = Delivery(config=current, resolver=resolver, outbound_tls=lambda: self.outbound_tls,
                                 is_myself=self.is_myself, planner=Planner(resolver=resolver, mta_sts=self.mta_sts),
                                 stats=self.tls_stats)
        self.scheduler = Scheduler(config=current, store=self.store, events=self.events, counters=self.counters,
                                   delivery=self.delivery)
        self.verifier = RecipientVerifier(config=current, connect=self.delivery.connect)
        self.receiver = Receiver(config=current, store=self.store, counters=self.counters,
                                 verify=self.verifier.verify, enqueue=self.scheduler.add,
                                 resolver=lambda: self.resolver, tls_context=lambda: self.tls_context,
                                 dkim_keys=lambda: self.dkim_keys)
        self.metrics = Metrics(self)  # the Prometheus endpoint, and the two counts nothing else keeps
        self.delivery.observe, self.receiver.observe_refusal = self.metrics.settled, self.metrics.refused
        self.control = ControlServer(self, socket_path, socket_group)
        self.servers: dict = {}
        self.smtps_servers: dict = {}
        self.smtps_context: ssl.SSLContext | None = None
        self._tasks: list[asyncio.Task] = []
        self.loading: dict | None = None  # {"loaded", "total"} while the queue is read at start
        self.queue_loaded = asyncio.Event()
        self.sessions = Sessions()
        self._smtp_protocol = self.sessions.protocol(self.receiver.protocol)
        self._smtps_protocol = self.sessions.protocol(self.receiver.smtps_protocol)
        self.receiving = ReceivingProcesses(
            receivers, state_dir=state_dir, config=current, receiver=self.receiver,
            added=self.scheduler.add, recover=self.recover, log_buffer=self.log_buffer,
            verbose=logging.getLogger().level == logging.DEBUG) if receivers else None

    async def settle(self) -> None:
        """Before a control call is answered: every message acknowledged so far by a receiving
        process is known here (nothing to wait for without them)."""
        if self.receiving is not None:
            await self.receiving.settle()

    def listening(self) -> tuple[list, list]:
        """The SMTP and SMTPS addresses listened on now, by the daemon or its receiving processes."""
        if self.receiving is not None:
            return self.receiving.listening
        return list(self.servers), list(self.smtps_servers)

    def smtp_sessions(self) -> tuple[int, int]:
        """SMTP sessions open now, and client addresses with one (my_networks not counted): the
        daemon's, or the sum of its receiving processes' (a client on two counts twice there)."""
        if self.receiving is not None:
            return self.receiving.connections, self.receiving.clients
        return self.receiver.connections, self.receiver.open_clients()

    def recover(self, slot: int) -> int:
        """Add the messages of a receiving process that ended which the scheduler does not know yet:
        it committed them, and died before the daemon heard of them. Done in one go on the event
        loop, so that no message is delivered, removed and then found again in between."""
        known, leaving = self.scheduler.entries, self.store.being_removed()
        names = sorted(name for name in os.listdir(self.store.msg)
                       if slot_of(name) == slot and name not in known and name not in leaving)
        entries = self.store.load_entries(names)
        for entry in entries:
            log.info("%s: queued by receiving process %d, which ended before it said so", entry.id, slot)
            self.scheduler.add(entry)
        return len(entries)

    async def send_tls_report(self, sender: str, recipients: list[str], message: bytes) -> None:
        """Queue a TLS report (RFC 8460) for delivery like any message, marked so that its own
        deliveries are not counted in the next reports."""
        envelope = Envelope(id=self.store.new_id(), sender=sender, recipients=recipients, arrival=time.time(),
                            size=len(message), client="local", protocol="TLSRPT",
                            subject=next(iter(headers.values(headers.section(message), "Subject")), ""),
                            tls_report=True)
        entry = await self.store.commit(envelope, message)
        log.info("%s: TLS report queued for %s", envelope.id, ", ".join(recipients))
        self.scheduler.add(entry)

    def is_myself(self, target: Target) -> bool:
        """Would connecting to this target reach one of our own listeners?"""
        if target.name == self.config.hostname:
            return True
        for listen in self.config.listen:
            if listen.port != target.port:
                continue
            wildcard = ipaddress.ip_address(listen.host).is_unspecified
            if target.ip == listen.host or (wildcard and target.ip in self.local_ips):
                return True
        return False

    async def start(self) -> None:
        """Take mail first, then load the queue: a large queue (seconds for 100,000 messages) must not
        keep clients waiting. The control API opens before the load too: Status answers at once and
        says how far the load is (`loading`); the calls that read or change the queue wait for its end
        (`queue_loaded`), so that none of them sees or acts on part of the queue."""
        self.store.open()
        self.paused_since.load(self.config.paused_domains)
        queued = await asyncio.to_thread(self.store.prepare_load)  # taken before any new mail can arrive
        self.log_buffer.attach(asyncio.get_running_loop())
        loop = asyncio.get_running_loop()
        self._tasks += [loop.create_task(self.scheduler.run()), loop.create_task(self.mta_sts.run()),
                        loop.create_task(self.reporter.run())]
        try:
            await self._update_listeners()
        except CannotStart as error:  # the mail must still come in: the daemon receives it itself
            log.error("%s; receiving in the daemon itself", "; ".join(error.problems))
            self.receiving = None
            await self._update_listeners()
        self.loading = {"loaded": 0, "total": len(queued)}
        loading = loop.create_task(self._load_queue(queued))
        self._tasks.append(loading)
        await self.control.start()
        await loading
        self.loading = None
        self.queue_loaded.set()
        self.events.publish("queue")
        log.info("daemon started -- version %s, configuration %s, %s, event loop %s",
                 VERSION, self.config_path, self.store.durability(), loop_name(loop))

    async def _load_queue(self, names: list[str]) -> None:
        """Read the queued messages' envelopes and states in a worker thread, a slice at a time, and hand
        each slice to the scheduler as it comes: delivery of the oldest mail begins before the last is read."""
        loaded = 0
        for start in range(0, len(names), QUEUE_LOAD_SLICE):
            entries = await asyncio.to_thread(self.store.load_entries, names[start:start + QUEUE_LOAD_SLICE])
            for entry in entries:
                self.scheduler.add(entry)
            loaded += len(entries)
            self.loading["loaded"] = loaded
        log.info("queue loaded: %d messages", loaded)

    async def _update_listeners(self) -> None:
        """Open listeners the config names and close the others; open sessions carry on. With
        receiving processes, a new set of them with the configuration in force takes over."""
        if self.receiving is not None:
            await self.receiving.replace()
            await self.metrics.update()
            return
        loop = asyncio.get_running_loop()
        wanted = set(self.config.listen)
        for address in list(self.servers):
            if address not in wanted:
                self.servers.pop(address).close()
                log.info("stopped listening on %s", address)
        for address in self.config.listen:
            if address not in self.servers:
                try:
                    self.servers[address] = await loop.create_server(
                        self._smtp_protocol, address.host, address.port, reuse_address=True,
                        backlog=LISTEN_BACKLOG,
                    )
                except OSError as error:
                    raise ConfigError([f"mta.listen: cannot listen on {address}: {error.strerror or error}"]) from None
                log.info("listening on %s", address)
        await self._update_smtps_listeners()
        await self.metrics.update()

    async def _update_smtps_listeners(self) -> None:
        """SMTPS listeners share one server context, which a reload loads the certificate into again."""
        loop = asyncio.get_running_loop()
        tls = self.config.tls
        wanted = set(self.config.smtps_listen) if tls.enabled else set()
        for address in list(self.smtps_servers):
            if address not in wanted:
                self.smtps_servers.pop(address).close()
                log.info("stopped listening for SMTPS on %s", address)
        if not wanted:
            return
        try:
            if self.smtps_context is None:
                self.smtps_context = server_context(self.config)
            else:
                load_cert_chain(self.smtps_context, self.config)
        except (OSError, ssl.SSLError) as error:
            raise ConfigError([f"mta.tls: cannot load the certificate: {error}"]) from None
        for address in self.config.smtps_listen:
            if address not in self.smtps_servers:
                try:
                    self.smtps_servers[address] = await loop.create_server(
                        self._smtps_protocol, address.host, address.port, reuse_address=True,
                        backlog=LISTEN_BACKLOG, ssl=self.smtps_context,
                        ssl_handshake_timeout=min(self.config.idle_timeout, 60),
                    )
                except OSError as error:
                    raise ConfigError([f"mta.smtps_listen: cannot listen on {address}: {error.strerror or error}"]) from None
                log.info("listening for SMTPS on %s", address)

    async def reload(self, caller_uid: int | None = None) -> list[str]:
        """Read the file again and put it in force; returns the problems (none: it worked)."""
        who = "" if caller_uid is None else f" (by uid {caller_uid})"
        try:
            config = await asyncio.to_thread(load_file, self.config_path)
            tls_context = server_tls_context(config)
            outbound_tls = OutboundTls(config)
            dkim_keys = load_keys(config)
        except ConfigError as error:
            for problem in error.problems:
                log.error("reload refused%s: %s", who, problem)
            return error.problems
        except (OSError, ssl.SSLError) as error:
            problem = f"mta.tls: cannot load the certificate: {error}"
            log.error("reload refused%s: %s", who, problem)
            return [problem]
        previous = self.config
        previous_tls = (self.tls_context, self.outbound_tls, self.dkim_keys)
        self.config = config
        self.tls_context = tls_context
        self.outbound_tls = outbound_tls
        self.dkim_keys = dkim_keys
        self.resolver = make_resolver(config)
        self.local_ips = local_addresses()
        try:
            await self._update_listeners()
        except ConfigError as error:
            for problem in error.problems:
                log.error("reload refused%s: %s", who, problem)
            self.config = previous
            self.tls_context, self.outbound_tls, self.dkim_keys = previous_tls
            self.resolver = make_resolver(previous)
            if self.receiving is None:  # receiving processes: the running ones were left as they were
                await self._update_listeners()
            return error.problems
        log.info("reload%s -- configuration %s", who, self.config_path)
        self.paused_since.update(config.paused_domains)
        if (config.internal_relay, config.relay_domains) != (previous.internal_relay, previous.relay_domains):
            self.verifier.flush()  # the answers came from another server, or for other domains
        self.events.publish("config")
        return []

    async def stop(self, grace: float = SHUTDOWN_GRACE) -> None:
        """No new connections or delivery attempts; idle sessions are told 421; messages being
        received and deliveries under way get `grace` seconds to finish and record their state."""
        log.info("stopping: up to %g s for messages being received or delivered", grace)
        for server in [*self.servers.values(), *self.smtps_servers.values()]:
            server.close()
        for task in self._tasks:
            task.cancel()  # the scheduler starts nothing more; attempts under way go on
        self.sessions.stop(replies.SHUTTING_DOWN.format(hostname=self.config.hostname))
        await self.control.stop()
        await self.metrics.stop()
        receiving = asyncio.ensure_future(self.receiving.stop(grace)) if self.receiving is not None else None
        try:
            await asyncio.wait_for(asyncio.gather(self.sessions.wait_idle(), self.scheduler.drain()), grace)
        except asyncio.TimeoutError:
            cut = self.sessions.close_all()
            attempts = self.scheduler.cut()
            log.warning("stopping: grace of %g s over: cut %d sessions still receiving, %d delivery attempts "
                        "(their messages stay queued)", grace, cut, attempts)
        if receiving is not None:
            await receiving  # what they queued meanwhile is on disk: the next start delivers it
        self.receiver.anvil.log_statistics()
        self.tls_stats.flush()
        log.info("daemon stopped; %d messages stay queued", len(self.scheduler.entries))


def setup_logging(verbose: bool) -> LogBuffer:
    """Log lines go to stderr and to a buffer the control API's Log.Tail serves."""
    buffer = LogBuffer()
    log_to(buffer.add, verbose)
    return buffer


async def serve(relay: Relay) -> None:
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(relay.reload()))
    loop.add_signal_handler(signal.SIGTERM, stopping.set)
    loop.add_signal_handler(signal.SIGINT, stopping.set)
    await relay.start()
    sd_notify("READY=1")
    await stopping.wait()
    sd_notify("STOPPING=1")
    await relay.stop()


def receiver_count(setting: str) -> int:
    """--receivers: a number from 0 to 8, or auto (one per CPU where there are two or more, at most 8)."""
    if setting.strip().lower() == "auto":
        cpus = len(os.sched_getaffinity(0))
        return min(cpus, MAX_RECEIVERS) if cpus > 1 else 0
    if not setting.strip().isdigit() or not 0 <= int(setting) <= MAX_RECEIVERS:
        raise ConfigError([f"--receivers {setting}: expected auto or 0 to {MAX_RECEIVERS} receiving processes"])
    return int(setting)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="postern-relay", description="Postern's SMTP relay daemon")
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help=f"appliance YAML file (default {DEFAULT_CONFIG})")
    parser.add_argument("--state-dir", default=DEFAULT_STATE_DIR, help=f"queue and state (default {DEFAULT_STATE_DIR})")
    parser.add_argument("--socket", default=DEFAULT_SOCKET, help=f"control socket (default {DEFAULT_SOCKET})")
    parser.add_argument("--socket-group", default=DEFAULT_GROUP,
                        help=f"admin group allowed on the control socket (default {DEFAULT_GROUP})")
    parser.add_argument("--check", action="store_true", help="validate the configuration file and exit")
    parser.add_argument("--receivers", default=os.environ.get(RECEIVERS_VARIABLE) or DEFAULT_RECEIVERS, metavar="N",
                        help="receive SMTP in N processes beside the daemon (0: in the daemon itself; "
                             f"auto: one per CPU on a machine with more than one; default {DEFAULT_RECEIVERS})")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debugging detail")
    args = parser.parse_args(argv)
    log_buffer = setup_logging(args.verbose)
    try:
        _, loop_factory = choose_event_loop(os.environ.get(EVENT_LOOP_VARIABLE))
        receivers = receiver_count(args.receivers)
        config = load_file(args.config)
        # Building the relay loads the certificates: a bad one is a configuration problem too.
        relay = Relay(config, args.config, args.state_dir, args.socket, args.socket_group, log_buffer,
                      receivers=receivers)
    except ConfigError as error:
        return refuse(error.problems)
    except (OSError, ssl.SSLError) as error:
        return refuse([f"mta.tls: cannot load the certificate: {error}"])
    if args.check:
        print(f"postern-relay: {args.config}: configuration is valid")
        return 0
    try:
        # asyncio.Runner rather than asyncio.run: its loop_factory exists from Python 3.11 on.
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(serve(relay))
    except OSError as error:
        return refuse([f"cannot start: {error}"])
    except ConfigError as error:
        return refuse([f"cannot start: {problem}" for problem in error.problems])
    return 0


def refuse(problems: list[str]) -> int:
    for problem in problems:
        print(f"postern-relay: {problem}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
