"""kill -9 of the daemon, or of one of its receiving processes, at chosen moments under load,
restart, drain: nothing acknowledged is lost.

Clients (threads, one connection each) send messages with unique Message-IDs; a message
that did not get its 250 is sent again, as a real client would. Kills come at a moment
of one kind, in turn:

    mid-DATA      a client has sent half of a message's data
    after-250     a client has just read its 250
    mid-delivery  the next hop has the whole message and has not yet answered
    random        whenever the timer says

After each kill of the daemon the queue is read as it lies on disk (every file must be
whole), then the daemon starts again; a receiving process killed (`target="receiver"`,
with `receivers` of them) is replaced by the daemon itself, which takes over what it had
queued. At the end the queue must drain. A message delivered twice
must have been in flight at a kill: an attempt of it cut by that kill (the relay may
have kept it before the client could hear the 250), or queued at the kill and already
at the next hop (delivered, not yet recorded as delivered).
"""

from __future__ import annotations

import os
import queue
import random
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import psutil

from tests.support.net import free_port
from tests.support.raw_smtp import RawSmtp
from tests.support.relay import RelayProcess
from tests.support.sink import Received, Sink

from .scenario import Outcome, listing, make_message, message_id_of, read_queue_file, scratch, wait_for

KINDS = ("mid-DATA", "after-250", "mid-delivery", "random")


@dataclass
class CrashLoad:
    messages: int = 300
    clients: int = 10
    kills: int = 3
    size: int = 3000
    seed: int | None = None
    time_limit: float = 150.0  # for the whole run, load and drain
    receivers: int = 0  # the daemon's --receivers
    target: str = "daemon"  # what is killed: the daemon, or one of its receiving processes ("receiver")


@dataclass
class Attempt:
    number: int
    start: float
    end: float
    acknowledged: bool


@dataclass
class Kill:
    kind: str
    at: float
    restarted: float = 0.0
    queued: set[str] = field(default_factory=set)  # Message-IDs in msg/ while the daemon was dead
    damaged: list[str] = field(default_factory=list)
    unfinished: int = 0  # files in tmp/: never acknowledged


class Killer:
    """Kills the daemon from whichever thread reaches the armed moment first."""

    def __init__(self, relay: RelayProcess, target: str = "daemon", rng: random.Random | None = None):
        self.relay = relay
        self.target = target
        self.rng = rng or random.Random()
        self.lock = threading.Lock()
        self.armed: str | None = None
        self.fired = threading.Event()
        self.kills: list[Kill] = []

    def arm(self, kind: str) -> None:
        with self.lock:
            self.fired.clear()
            self.armed = kind

    def fire_if(self, kind: str) -> None:
        if self.armed != kind:
            return
        with self.lock:
            if self.armed == kind:
                self._fire(kind)

    def fire_now(self, kind: str) -> None:
        with self.lock:
            self._fire(kind)

    def _fire(self, kind: str) -> None:
        self.armed = None
        self.kills.append(Kill(kind, time.time()))
        if self.target == "receiver":
            receivers = psutil.Process(self.relay.process.pid).children()
            if receivers:
                self.rng.choice(receivers).kill()
        else:
            os.kill(self.relay.process.pid, signal.SIGKILL)  # still ours: only the main thread reaps it
        self.fired.set()


class Load:
    """The clients' shared book: what is left to send, every attempt, every acknowledgement."""

    def __init__(self, plan: CrashLoad, run: str):
        self.plan = plan
        self.run = run
        self.todo: queue.Queue[int] = queue.Queue()
        for number in range(plan.messages):
            self.todo.put(number)
        self.lock = threading.Lock()
        self.attempts: list[Attempt] = []
        self.acknowledged: dict[int, str] = {}  # number -> queue ID
        self.stop = threading.Event()

    def message_id(self, number: int) -> str:
        return f"{number}.{self.run}@reliability.example"

    def record(self, attempt: Attempt, queue_id: str = "") -> None:
        with self.lock:
            self.attempts.append(attempt)
            if attempt.acknowledged:
                self.acknowledged.setdefault(attempt.number, queue_id)

    @property
    def acknowledged_count(self) -> int:
        with self.lock:
            return len(self.acknowledged)


class Refused(Exception):
    pass


def client(load: Load, killer: Killer, port: int) -> None:
    connection: RawSmtp | None = None
    while not load.stop.is_set():
        try:
            number = load.todo.get(timeout=0.2)
        except queue.Empty:
            if load.acknowledged_count >= load.plan.messages:
                break
            continue
        data = make_message(load.message_id(number), load.plan.size, subject=f"load {number}")
        half = len(data) // 2
        start = time.time()
        queue_id = ""
        try:
            if connection is None:
                connection = RawSmtp(port, timeout=15)
                expect(connection.greeting(), "220")
                expect(connection.command("EHLO load.example.net"), "250")
            expect(connection.command("MAIL FROM:<load@example.net>"), "250")
            expect(connection.command("RCPT TO:<rcpt@example.com>"), "250")
            expect(connection.command("DATA"), "354")
            connection.send(data[:half])
            killer.fire_if("mid-DATA")
            connection.send(data[half:] + b".\r\n")
            reply = connection.reply()[-1]
            expect(reply, "250")
            queue_id = reply.rsplit(" ", 1)[-1]
            load.record(Attempt(number, start, time.time(), True), queue_id)
            killer.fire_if("after-250")
        except (OSError, ConnectionError, Refused):
            load.record(Attempt(number, start, time.time(), False))
            load.todo.put(number)
            if connection is not None:
                connection.close()
                connection = None
            time.sleep(0.1)
    if connection is not None:
        connection.close()


def expect(reply: str, code: str) -> None:
    if not reply.startswith(code):
        raise Refused(reply)


def snapshot(relay: RelayProcess, kill: Kill) -> None:
    """What the dead daemon left on disk."""
    for path in listing(relay, "msg"):
        found = read_queue_file(path)
        kill.queued.add(found.message_id)
        if not found.intact:
            kill.damaged.append(f"{path.name}: {found.reason}")
    kill.unfinished = len(listing(relay, "tmp"))


def restart(relay: RelayProcess, outcome: Outcome) -> bool:
    try:
        relay.start()
        return True
    except AssertionError as error:
        outcome.problems.append("the daemon did not start again: " + str(error)[-2000:])
        return False


def kill_in_turn(plan: CrashLoad, load: Load, killer: Killer, relay: RelayProcess, outcome: Outcome,
                 rng: random.Random, deadline: float) -> bool:
    """Kill and restart the daemon `plan.kills` times, spread over the load; False if it stayed down."""
    for index in range(plan.kills):
        threshold = plan.messages * (index + 1) // (plan.kills + 1)
        if not wait_for(lambda: load.acknowledged_count >= threshold, deadline - time.monotonic()):
            outcome.problems.append(f"only {load.acknowledged_count} of {threshold} acknowledged "
                                    f"before kill {index + 1}: the load stalled")
            return True
        kind = KINDS[index % len(KINDS)]
        if kind == "random":
            time.sleep(rng.uniform(0.0, 0.3))
            killer.fire_now(kind)
        else:
            killer.arm(kind)
            if not killer.fired.wait(5.0):
                killer.fire_now(f"{kind} (not reached in 5 s: on a timer)")
        if plan.target == "receiver":  # the daemon starts another in its place; the queue is live meanwhile
            killer.kills[-1].restarted = time.time()
            continue
        relay.process.wait(15)
        snapshot(relay, killer.kills[-1])
        time.sleep(rng.uniform(0.0, 0.5))  # clients meet a closed port for a while
        if not restart(relay, outcome):
            return False
        killer.kills[-1].restarted = time.time()
    return True


def run(plan: CrashLoad | None = None) -> Outcome:
    plan = plan or CrashLoad()
    rng = random.Random(plan.seed)
    outcome = Outcome("crash (kill -9 under load)" if plan.target == "daemon"
                      else "crash (kill -9 of receiving processes under load)")
    run_id = f"{int(time.time())}{rng.randrange(1000):03d}"
    sink_port = free_port()
    sink = Sink(port=sink_port)
    with scratch(outcome) as relays:
        relay = relays.make(sink_port, start=False, args=("--receivers", str(plan.receivers)))
        load = Load(plan, run_id)
        killer = Killer(relay, plan.target, rng)
        sink.on_message = lambda received: killer.fire_if("mid-delivery")
        sink.start()
        try:
            relay.start()
            deadline = time.monotonic() + plan.time_limit
            threads = [threading.Thread(target=client, args=(load, killer, relay.port), daemon=True)
                       for _ in range(plan.clients)]
            for thread in threads:
                thread.start()
            if kill_in_turn(plan, load, killer, relay, outcome, rng, deadline):
                all_acknowledged = wait_for(lambda: load.acknowledged_count >= plan.messages,
                                            max(0.0, deadline - time.monotonic()))
                outcome.check(bool(all_acknowledged), f"{plan.messages - load.acknowledged_count} messages were "
                              f"never acknowledged within {plan.time_limit:g} s")
                drained = wait_for(lambda: not listing(relay, "msg"), max(5.0, deadline - time.monotonic()))
                time.sleep(0.5)  # a duplicate still on its way would arrive now
                outcome.check(bool(drained), f"the queue did not drain: {len(listing(relay, 'msg'))} files left")
            load.stop.set()
            for thread in threads:
                thread.join(20)
            relay.stop()
        finally:
            load.stop.set()
            sink.stop()
        count(outcome, plan, load, killer, sink.messages, relay)
    return outcome


def count(outcome: Outcome, plan: CrashLoad, load: Load, killer: Killer, delivered: list[Received],
          relay: RelayProcess) -> None:
    copies = Counter(message_id_of(m.content) for m in delivered)
    first_seen: dict[str, float] = {}
    for message in delivered:
        first_seen.setdefault(message_id_of(message.content), message.at)
    acknowledged = {load.message_id(n) for n in load.acknowledged}
    lost = sorted(acknowledged - set(copies))
    duplicated = {mid: n - 1 for mid, n in copies.items() if n > 1}

    # In flight at a kill: an attempt the kill cut, or queued at the kill and already at the next hop.
    cut = {load.message_id(a.number) for a in load.attempts if not a.acknowledged
           and any(a.start <= k.at <= a.end for k in killer.kills)}
    mid_delivery = {mid for k in killer.kills for mid in k.queued
                    if mid in first_seen and first_seen[mid] < k.restarted}
    in_flight = cut | mid_delivery
    unexplained = sorted(set(duplicated) - in_flight)
    damaged = [d for k in killer.kills for d in k.damaged]
    strangers = sorted(set(copies) - {load.message_id(n) for n in range(plan.messages)})

    outcome.figures.update({
        "sent": plan.messages,
        "clients": plan.clients,
        "SMTP attempts, retries included": len(load.attempts),
        "acknowledged": len(acknowledged),
        "delivered": len(set(copies) & acknowledged),
        "lost": len(lost),
        "duplicated": sum(duplicated.values()),
        "  of which cut before the client read 250": sum(n for mid, n in duplicated.items() if mid in cut),
        "  of which at the next hop, not yet recorded": sum(n for mid, n in duplicated.items()
                                                            if mid in mid_delivery - cut),
        "in flight at a kill": len(in_flight),
        "duplicates not in flight": len(unexplained),
        "kills": ", ".join(f"{kind} x{n}" for kind, n in Counter(k.kind for k in killer.kills).items()),
        "queued at kills": sum(len(k.queued) for k in killer.kills),
        "damaged queue files after kills": len(damaged),
        "unacknowledged files in tmp/ after kills": sum(k.unfinished for k in killer.kills),
    })
    outcome.check(not lost, f"lost {len(lost)} acknowledged messages, e.g. {lost[:5]}")
    outcome.check(not unexplained, f"{len(unexplained)} duplicates were not in flight at a kill: {unexplained[:5]}")
    outcome.check(not damaged, f"damaged queue files after a kill: {damaged[:5]}")
    outcome.check(not strangers, f"the next hop got messages nobody sent: {strangers[:5]}")
    outcome.check(len(killer.kills) == plan.kills, f"{len(killer.kills)} kills of {plan.kills} planned")
    outcome.check(not listing(relay, "corrupt"), "files were moved to corrupt/ after the kills")
