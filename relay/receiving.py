"""Receiving processes: SMTP sessions on more than one core, one queue.

With `--receivers N` (N > 0; `auto`, the default, is one per CPU on a machine with two or more)
the daemon listens through N receiving processes instead of itself, as Postfix's smtpd
processes receive beside its qmgr. Each receiving process

- is handed the configuration in force by the daemon (never the file, which may have changed
  since or be one a reload refused), and accepts on listening sockets the daemon opened with
  SO_REUSEPORT and keeps, so the kernel spreads new connections over the processes and a
  process that ends leaves no waiting connection behind;
- runs the same sessions as the daemon would (`relay.smtpd.Receiver`), and writes each
  message into the one queue directory with the same fsynced commit, under queue IDs of
  its own (the slot digit: `relay.queue.store.slot_of`);
- tells the daemon of each message it queued over its channel (a socket pair), body
  included, before the client hears 250, and sends its refusals and open sessions the same
  way, and its log lines as Log.Tail shows them (the journal gets them from the process
  itself); recipient verification is asked of the daemon, so there is one cache.

The daemon keeps the queue manager's part: the scheduler, delivery, the control API and the
metrics. Before it answers a control call it hears each process out (`settle`), so a message
whose client has its 250 is in the answer. Nothing accepted is lost when a receiving process
dies, however it dies: what it committed is in `msg/`, and the daemon, once it has read the
channel to its end, adds every message of that process's slot it does not know yet, then
starts a new process in the slot. A receiving process dies with the daemon
(PR_SET_PDEATHSIG), so a restarted daemon never loads the queue while an old receiver still
writes to it.

Limits per client (`client_connection_count_limit`, `client_connection_rate_limit`) and
`max_connections` are shared out: each process allows its part, rounded up. A limit that
the number of processes divides (the defaults, with two) is never passed; another may be
passed by less than the number of processes (7 with two processes: 4 each). A client whose
connections mostly land on one process may be told 421 a little before the limit.

A reload starts new receiving processes with the new configuration and retires the old ones:
they stop accepting at once and exit once their open sessions end. A stop sends them SIGTERM:
as the daemon does, they tell idle sessions 421 and give busy ones the grace to finish.
docs/queue.md, "Receiving processes", says how each promise of the queue holds.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import dataclasses
import itertools
import json
import logging
import math
import os
import pickle
import signal
import socket
import ssl
import struct
import sys
import threading
import weakref
from collections.abc import AsyncIterator, Callable

from . import replies
from .config import ConfigError, MtaConfig
from .dkim_sign import load_keys
from .event_loop import EVENT_LOOP_VARIABLE, choose_event_loop
from .events import LogBuffer, log_to
from .queue.entry import Counters, Envelope, QueueEntry
from .queue.store import QueueStore
from .routing import make_resolver
from .smtpd import Receiver
from .tls import server_context
from .verify import Verdict

log = logging.getLogger("postern/master")

FRAME = struct.Struct("!II")  # the JSON header's length, then the body's
SHUTDOWN_GRACE = 10.0  # seconds a stop waits for DATA being read and deliveries under way
BODY_BY_CHANNEL = 1 << 20  # bytes of a message's body handed to the daemon with its word
SETTLE_SECONDS = 2.0  # settle() waits no longer for a process that does not answer (stopped, or stuck)
PR_SET_PDEATHSIG = 1


class Sessions:
    """The open SMTP sessions, so that a stop can tell the idle ones 421 and wait for the busy ones.

    A session is busy while one of its commands runs (DATA being read and queued, above all),
    idle while it waits for the next command line. It wraps the receiver's protocol factory,
    so the SMTP protocol itself knows nothing of it."""

    def __init__(self):
        self.open: weakref.WeakSet = weakref.WeakSet()
        self.busy: set = set()
        self.stopping = ""  # the 421 reply, once the daemon is stopping
        self._settled = asyncio.Event()

    def protocol(self, factory):
        def make():
            session = factory()
            session.sessions = self  # its command loop calls busy.add and idle around each command
            self.open.add(session)
            return session

        return make

    def idle(self, session) -> None:
        """A command of `session` has ended: a stop waiting for it may go on."""
        self.busy.discard(session)
        self._settled.set()
        if self.stopping:
            self._close(session)

    def _close(self, session) -> None:
        transport = session.transport
        if transport is not None and not transport.is_closing():
            transport.write(self.stopping.encode() + b"\r\n")
            transport.close()

    def stop(self, reply: str) -> None:
        """From now on a session is told `reply` and closed as soon as it is idle; the idle ones at once."""
        self.stopping = reply
        for session in list(self.open):
            if session not in self.busy:
                self._close(session)

    async def wait_idle(self) -> None:
        while self.busy:
            self._settled.clear()
            await self._settled.wait()

    async def wait_closed(self) -> None:
        """Until every session has ended (a retired receiving process)."""
        while any(s.transport is not None and not s.transport.is_closing() for s in self.open):
            await asyncio.sleep(0.5)

    def close_all(self) -> int:
        """Close what is still busy after the grace: it was told nothing, so its client keeps its mail."""
        left = [s for s in self.busy if s.transport is not None and not s.transport.is_closing()]
        for session in left:
            session.transport.close()
        return len(left)


# --- the channel ---------------------------------------------------------------------


def frame(header: dict, body: bytes = b"") -> bytes:
    data = json.dumps(header, separators=(",", ":")).encode()
    return FRAME.pack(len(data), len(body)) + data + body


async def frames(reader: asyncio.StreamReader) -> AsyncIterator[tuple[dict, bytes]]:
    """Each frame as it comes, until the end of the channel (the other side is gone).

    All that has arrived is read at once and every whole frame in it taken: one read for
    a turn's frames of the other side, not three awaits for each."""
    buffer = bytearray()
    while True:
        try:
            chunk = await reader.read(1 << 20)
        except ConnectionError:
            return
        if not chunk:
            return
        buffer += chunk
        start = 0
        while len(buffer) - start >= FRAME.size:
            header_size, body_size = FRAME.unpack_from(buffer, start)
            body_start = start + FRAME.size + header_size
            end = body_start + body_size
            if len(buffer) < end:
                break
            yield json.loads(buffer[start + FRAME.size:body_start].decode()), bytes(buffer[body_start:end])
            start = end
        del buffer[:start]


def shared_limit(limit: int, processes: int) -> int:
    """One process's part of a limit shared by `processes` (0 stays no limit)."""
    return math.ceil(limit / processes) if limit else 0


def listening_socket(host: str, port: int) -> socket.socket:
    """A listening socket in the port's SO_REUSEPORT group: one per receiving process."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.listen(1024)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


# --- the daemon's side -----------------------------------------------------------------


Listener = tuple[str, object]  # ("smtp" or "smtps", the address)


class CannotStart(ConfigError):
    """A receiving process could not be started (its interpreter cannot be run, no memory)."""


@dataclasses.dataclass(eq=False)
class Child:
    slot: int  # the digit in its queue IDs
    seat: int  # which set of listening sockets it accepts on
    process: asyncio.subprocess.Process
    writer: asyncio.StreamWriter
    connections: int = 0
    clients: int = 0
    retiring: bool = False
    closed: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)  # its listeners closed
    syncs: dict[int, asyncio.Future] = dataclasses.field(default_factory=dict)  # settle() waiting for it
    task: asyncio.Task | None = None


class ReceivingProcesses:
    """The daemon's receiving processes: started, heard, replaced, retired and stopped here.

    The daemon keeps each seat's listening sockets, as Postfix's master keeps smtpd's: a
    process that ends, or is retired by a reload, leaves them open to its successor, so no
    connection waiting in a socket's accept queue is reset on the way.

    `added(entry, body)` takes each message a receiving process queued, `recover(slot)` the
    messages of a process that died; `receiver` is the daemon's own, whose counters, refusal
    metric and recipient verification the processes share."""

    def __init__(self, count: int, *, state_dir: str, config: Callable[[], MtaConfig],
                 receiver: Receiver, added: Callable[[QueueEntry, bytes | None], None],
                 recover: Callable[[int], int], log_buffer: LogBuffer, verbose: bool = False):
        self.count = count
        self.state_dir = state_dir
        self.config = config
        self.receiver = receiver
        self.added = added
        self.recover = recover
        self.log_buffer = log_buffer
        self.verbose = verbose
        self.children: list[Child] = []
        # This release's interpreter, its directory's links resolved: on the appliance /opt/postern/bin
        # leads through `current`, which an update switches; a process started later runs this code.
        self.python = os.path.join(os.path.realpath(os.path.dirname(sys.executable)), os.path.basename(sys.executable))
        self.seats: list[dict[Listener, socket.socket]] = [{} for _ in range(count)]
        self._numbers = itertools.count()
        self.stopping = False
        self.listening: tuple[list, list] = ([], [])  # the addresses of the processes taking new sessions

    @property
    def connections(self) -> int:
        return sum(child.connections for child in self.children)

    @property
    def clients(self) -> int:
        return sum(child.clients for child in self.children)

    def pids(self) -> list[int]:
        """The process IDs of those taking new sessions (not the retired ones finishing theirs)."""
        return [child.process.pid for child in self.children if not child.retiring]

    def _free_slots(self) -> list[int]:
        used = {child.slot for child in self.children}
        return [slot for slot in range(1, 16) if slot not in used]

    def _wanted(self) -> list[tuple[Listener, str]]:
        config = self.config()
        smtps = config.smtps_listen if config.tls.enabled else []
        return ([(("smtp", address), "mta.listen") for address in config.listen]
                + [(("smtps", address), "mta.smtps_listen") for address in smtps])

    def _seat_sockets(self, seat: dict[Listener, socket.socket]) -> dict[Listener, socket.socket]:
        """A seat's sockets for the configuration in force: those it has, and new ones; ConfigError
        naming the field when one cannot be opened (and nothing new left open)."""
        sockets: dict[Listener, socket.socket] = {}
        for listener, field in self._wanted():
            if listener in seat:
                sockets[listener] = seat[listener]
                continue
            address = listener[1]
            try:
                sockets[listener] = listening_socket(address.host, address.port)
            except OSError as error:
                for key, sock in sockets.items():
                    if key not in seat:
                        sock.close()
                raise ConfigError([f"{field}: cannot listen on {address}: {error.strerror or error}"]) from None
        return sockets

    async def replace(self) -> None:
        """Start a full set of processes with the configuration in force and retire the ones running;
        returns once the retired ones take no new session. ConfigError, and the running processes
        left as they were, when a listener cannot be opened."""
        slots = self._free_slots()[:self.count]
        if len(slots) < self.count:
            raise ConfigError(["receiving processes: no free slot (retired ones are still finishing sessions)"])
        seats: list[dict[Listener, socket.socket]] = []
        old = [child for child in self.children if not child.retiring]
        started: list[Child] = []
        try:
            for seat in self.seats:
                seats.append(self._seat_sockets(seat))
            for seat, (slot, sockets) in enumerate(zip(slots, seats)):
                try:
                    started.append(await self._start(slot, seat, sockets))
                except OSError as error:
                    raise CannotStart([f"receiving processes: cannot start one: {error}"]) from None
        except ConfigError:
            for child in started:
                self._retire(child)
            for seat, sockets in zip(self.seats, seats):
                for key, sock in sockets.items():
                    if key not in seat:
                        sock.close()
            raise
        for child in old:
            self._retire(child)
        if old:
            await asyncio.wait([asyncio.ensure_future(child.closed.wait()) for child in old], timeout=10)
        for seat, sockets in zip(self.seats, seats):
            for key, sock in seat.items():
                if key not in sockets:
                    sock.close()  # an address no longer listened on
        self.seats = seats
        config = self.config()
        listening = (list(config.listen), list(config.smtps_listen) if config.tls.enabled else [])
        for before, now, words in zip(self.listening, listening, ("", " for SMTPS")):
            for address in before:
                if address not in now:
                    log.info("stopped listening%s on %s", words, address)
            for address in now:
                if address not in before:
                    log.info("listening%s on %s", words, address)
        self.listening = listening

    async def _start(self, slot: int, seat: int, sockets: dict[Listener, socket.socket]) -> Child:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        # The configuration in force, not the file: the file may have changed since, or be one a reload refused
        ours.sendall(frame({"t": "config"}, pickle.dumps(self.config())))
        fds = [theirs.fileno(), *(sock.fileno() for sock in sockets.values())]
        listeners = [f"{kind}:{sock.fileno()}" for (kind, _), sock in sockets.items()]
        try:
            process = await asyncio.create_subprocess_exec(
                self.python, "-m", "relay.receiving", "--state-dir", self.state_dir,
                "--slot", str(slot), "--processes", str(self.count), "--channel", str(theirs.fileno()),
                *(["--verbose"] if self.verbose else []), *listeners, pass_fds=fds, stdin=asyncio.subprocess.DEVNULL)
        finally:
            theirs.close()
        reader, writer = await asyncio.open_unix_connection(sock=ours)
        child = Child(slot, seat, process, writer)
        self.children.append(child)
        child.task = asyncio.get_running_loop().create_task(self._hear(child, reader))
        log.info("receiving process %d started (pid %d)", slot, process.pid)
        return child

    def _retire(self, child: Child) -> None:
        """Stop accepting; exit once the open sessions end (a reload)."""
        child.retiring = True
        if child.process.returncode is None:
            child.process.send_signal(signal.SIGHUP)

    async def _hear(self, child: Child, reader: asyncio.StreamReader) -> None:
        """Everything the process says, until its end; then what it left behind, and a new process."""
        async for header, body in frames(reader):
            kind = header["t"]
            if kind == "queued":
                entry = QueueEntry.new(Envelope(**header["envelope"]))
                entry.hold = header.get("hold", False)
                self.receiver.counters.received += 1
                self.added(entry, body or None)  # none: read from the file when delivered
            elif kind == "log":
                self.log_buffer.add(header["lines"])
            elif kind == "connections":
                child.connections, child.clients = header["n"], header["clients"]
            elif kind == "turned_away":
                self.receiver.counters.turned_away[header["entry"]] += 1
            elif kind == "refused":
                self.receiver.counters.rejected += 1
                if self.receiver.observe_refusal is not None:
                    self.receiver.observe_refusal(header["stage"], header["reply"])
            elif kind == "verify":
                asyncio.get_running_loop().create_task(self._verify(child, header))
            elif kind == "closed":
                child.closed.set()
            elif kind == "synced":
                waiting = child.syncs.pop(header["n"], None)
                if waiting is not None and not waiting.done():
                    waiting.set_result(None)
        child.closed.set()
        code = await child.process.wait()
        child.writer.close()
        self.children.remove(child)
        recovered = self.recover(child.slot)
        for waiting in child.syncs.values():  # settled: what it queued is known now, told or recovered
            if not waiting.done():
                waiting.set_result(None)
        if recovered:
            log.warning("receiving process %d: %d message(s) it had queued recovered", child.slot, recovered)
        if child.retiring or self.stopping:
            log.info("receiving process %d ended", child.slot)
            return
        log.error("receiving process %d (pid %d) exited with status %s; starting another",
                  child.slot, child.process.pid, code)
        await asyncio.sleep(1)  # a process that dies at once must not be restarted in a tight loop
        if not self.stopping:
            try:
                await self._start(child.slot, child.seat, self.seats[child.seat])
            except OSError as error:
                log.error("receiving process %d could not be started again: %s", child.slot, error)

    async def settle(self) -> None:
        """Until the daemon has heard everything each process said before now: a message whose client
        has its 250 is in the queue for the control API's next answer."""
        loop = asyncio.get_running_loop()
        waiting = []
        for child in self.children:
            if child.writer.is_closing():
                continue
            number = next(self._numbers)
            child.syncs[number] = loop.create_future()
            waiting.append(child.syncs[number])
            child.writer.write(frame({"t": "sync", "n": number}))
        if waiting:
            await asyncio.wait(waiting, timeout=SETTLE_SECONDS)

    async def _verify(self, child: Child, header: dict) -> None:
        verdict = await self.receiver.verify(header["address"])
        if not child.writer.is_closing():
            child.writer.write(frame({"t": "verdict", "n": header["n"], "verdict": verdict.to_dict()}))

    async def stop(self, grace: float) -> None:
        """SIGTERM to every process; wait for them and what they say until they end (grace + 5 s at most)."""
        self.stopping = True
        for seat in self.seats:  # new connections are refused from now on, as without receiving processes:
            for sock in seat.values():  # shutdown() ends the listening for every process that holds the socket
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()
        for child in self.children:
            if child.process.returncode is None:
                child.process.send_signal(signal.SIGTERM)
        tasks = [child.task for child in self.children if child.task is not None]
        if not tasks:
            return
        done, pending = await asyncio.wait(tasks, timeout=grace + 5)
        for child in list(self.children):
            if child.process.returncode is None:
                child.process.kill()
        if pending:
            await asyncio.wait(pending, timeout=5)


# --- the receiving process's side ------------------------------------------------------


class Channel:
    """The receiving process's end of the channel to the daemon."""

    def __init__(self, writer: asyncio.StreamWriter):
        self.writer = writer
        self.loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._asked: dict[int, asyncio.Future] = {}
        self._numbers = iter(range(1 << 62))
        self._waiting: list[bytes] = []

    def send(self, header: dict, body: bytes = b"") -> None:
        """Frames go out together once per turn of the event loop: one write for a message's log
        lines and its word to the daemon, not one each. Order is kept, which is all `settle` needs."""
        if threading.get_ident() != self._loop_thread:  # a log line from a worker thread
            self.loop.call_soon_threadsafe(self.send, header, body)
            return
        if not self._waiting:
            self.loop.call_soon(self.flush)
        self._waiting.append(frame(header, body))

    def flush(self) -> None:
        waiting, self._waiting = self._waiting, []
        if not self.writer.is_closing():
            self.writer.write(b"".join(waiting))

    def queued(self, entry: QueueEntry, body: bytes) -> None:
        """The daemon's word of a message on disk; a body of at most BODY_BY_CHANNEL comes along, for
        its first attempt without reading the file back (a larger one is not copied three times)."""
        self.send({"t": "queued", "envelope": entry.envelope.to_dict(), "hold": entry.hold},
                  body if len(body) <= BODY_BY_CHANNEL else b"")

    async def verify(self, address: str) -> Verdict:
        number = next(self._numbers)
        answer = self._asked[number] = asyncio.get_running_loop().create_future()
        self.send({"t": "verify", "n": number, "address": address})
        try:
            return Verdict(**await answer)
        finally:
            self._asked.pop(number, None)

    async def hear(self, reader: asyncio.StreamReader) -> None:
        """The daemon's answers, until it is gone."""
        async for header, _ in frames(reader):
            if header["t"] == "verdict" and header["n"] in self._asked:
                self._asked[header["n"]].set_result(header["verdict"])
            elif header["t"] == "sync":  # after everything said before it
                self.send({"t": "synced", "n": header["n"]})


class SharedReceiver(Receiver):
    """The receiver of a receiving process: its refusals told to the daemon, and its open
    sessions, once a second when their number changed."""

    alone_in_process = True

    def __init__(self, *, channel: Channel, **kwargs):
        super().__init__(**kwargs)
        self.channel = channel
        self._told = (0, 0)
        self.observe_refusal = lambda stage, reply: channel.send({"t": "refused", "stage": stage, "reply": reply})

    def turn_away(self, paused: str) -> None:
        self.channel.send({"t": "turned_away", "entry": paused})

    def tell_connections(self) -> None:
        figures = (self.connections, self.open_clients())
        if figures != self._told:
            self._told = figures
            self.channel.send({"t": "connections", "n": figures[0], "clients": figures[1]})
        asyncio.get_running_loop().call_later(1, self.tell_connections)


def die_with_parent() -> None:
    """SIGKILL when the daemon dies (Linux), so that no receiver outlives it."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def first_frame(sock: socket.socket) -> tuple[dict, bytes]:
    """The daemon's first word, read before the event loop starts: the configuration."""
    def exactly(size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = sock.recv(size - len(data))
            if not chunk:
                raise ConnectionError("the daemon closed the channel")
            data += chunk
        return data

    header_size, body_size = FRAME.unpack(exactly(FRAME.size))
    return json.loads(exactly(header_size)), exactly(body_size)


async def receive(args: argparse.Namespace, channel_socket: socket.socket, config: MtaConfig) -> None:
    loop = asyncio.get_running_loop()
    reader, writer = await asyncio.open_unix_connection(sock=channel_socket)
    channel = Channel(writer)
    log_to(lambda lines: channel.send({"t": "log", "lines": lines}), args.verbose)
    listening = asyncio.get_running_loop().create_task(channel.hear(reader))

    shared = dataclasses.replace(
        config, max_connections=shared_limit(config.max_connections, args.processes),
        client_connection_count_limit=shared_limit(config.client_connection_count_limit, args.processes),
        client_connection_rate_limit=shared_limit(config.client_connection_rate_limit, args.processes))
    store = QueueStore(args.state_dir, slot=args.slot)
    tls_context = server_context(config)
    dkim_keys = load_keys(config)
    resolver = make_resolver(config)
    receiver = SharedReceiver(
        channel=channel, config=lambda: shared, store=store, counters=Counters(), verify=channel.verify,
        enqueue=channel.queued, resolver=lambda: resolver, tls_context=lambda: tls_context,
        dkim_keys=lambda: dkim_keys)
    receiver.tell_connections()
    sessions = Sessions()

    servers = []
    smtps_context = server_context(config) if any(kind == "smtps" for kind, _ in args.listeners) else None
    for kind, fd in args.listeners:
        sock = socket.socket(fileno=fd)
        if kind == "smtp":
            servers.append(await loop.create_server(sessions.protocol(receiver.protocol), sock=sock))
        else:
            servers.append(await loop.create_server(
                sessions.protocol(receiver.smtps_protocol), sock=sock, ssl=smtps_context,
                ssl_handshake_timeout=min(config.idle_timeout, 60)))

    retired, stopped = asyncio.Event(), asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stopped.set)
    loop.add_signal_handler(signal.SIGINT, stopped.set)
    loop.add_signal_handler(signal.SIGHUP, retired.set)
    listening.add_done_callback(lambda _: stopped.set())  # the daemon is gone
    await asyncio.wait([loop.create_task(retired.wait()), loop.create_task(stopped.wait())],
                       return_when=asyncio.FIRST_COMPLETED)
    for server in servers:
        server.close()
    channel.send({"t": "closed"})  # no new session here from now on
    if not stopped.is_set():  # retired by a reload: the open sessions end as their clients end them
        await asyncio.wait([loop.create_task(sessions.wait_closed()), loop.create_task(stopped.wait())],
                           timeout=config.session_timeout, return_when=asyncio.FIRST_COMPLETED)
    # Stopped, or sessions still open after session_timeout: as the daemon stops (none left: nothing to do)
    sessions.stop(replies.SHUTTING_DOWN.format(hostname=config.hostname))
    try:
        await asyncio.wait_for(sessions.wait_idle(), SHUTDOWN_GRACE)
    except asyncio.TimeoutError:
        sessions.close_all()
    receiver.anvil.log_statistics()
    await store.flush_removals()
    channel.flush()
    await writer.drain()
    writer.close()


def listener(text: str) -> tuple[str, int]:
    kind, _, fd = text.partition(":")
    if kind not in ("smtp", "smtps") or not fd.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: expected smtp:FD or smtps:FD")
    return kind, int(fd)


def main(argv: list[str] | None = None) -> int:
    die_with_parent()
    parser = argparse.ArgumentParser(prog="postern-relay receiving process",
                                     description="A receiving process of postern-relay; the daemon starts it.")
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--slot", type=int, required=True)
    parser.add_argument("--processes", type=int, required=True)
    parser.add_argument("--channel", type=int, required=True)
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("listeners", type=listener, nargs="*")
    args = parser.parse_args(argv)
    if os.getppid() == 1:  # the daemon died before we could ask to die with it
        return 1
    channel = socket.socket(fileno=args.channel)
    try:
        header, body = first_frame(channel)
    except (ConnectionError, ValueError) as error:
        print(f"receiving process: no configuration from the daemon: {error}", file=sys.stderr)
        return 1
    config: MtaConfig = pickle.loads(body)  # from the daemon that started this process, over a socket pair
    _, loop_factory = choose_event_loop(os.environ.get(EVENT_LOOP_VARIABLE))
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(receive(args, channel, config))
    except (OSError, ssl.SSLError) as error:
        print(f"receiving process: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
