"""Damaged queue files: set aside in corrupt/, reported, and the rest of the queue delivers.

With the next hop down, messages wait in the queue. The daemon is killed, queue files
are damaged in every way we can think of, and a stray file is dropped in msg/; it starts
again, one more file is damaged while it runs, then the next hop comes up. Every damaged
file must end up in corrupt/ byte for byte (never deleted, never delivered), with a log
line naming the reason and a count in the control API's status; every other message is
delivered exactly once.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from dataclasses import dataclass
from typing import Callable

from relay.control.client import ControlClient
from tests.support.net import free_port
from tests.support.relay import RelayProcess
from tests.support.sink import Sink

from .scenario import (MAGIC, Outcome, listing, make_message, message_id_of, queue_dir, read_queue_file, scratch,
                       wait_for)


def _envelope_of_another(data: bytes) -> bytes:
    end = data.index(b"\n", len(MAGIC))
    envelope = json.loads(data[len(MAGIC):end])
    envelope["id"] = "0" * 16
    return MAGIC + json.dumps(envelope).encode() + data[end:]


# How a message file is damaged at rest (the daemon is down).
DAMAGE: dict[str, Callable[[bytes], bytes]] = {
    "cut short": lambda data: data[:-300],
    "cut inside the envelope": lambda data: data[:len(MAGIC) + 20],
    "random bytes": lambda data: random.Random(len(data)).randbytes(len(data)),
    "empty": lambda data: b"",
    "another magic line": lambda data: b"POSTERN-QUEUE 9\n" + data[len(MAGIC):],
    "envelope not JSON": lambda data: MAGIC + b"{\"id\": not json\n" + data.split(b"\n", 2)[2],
    "envelope of another message": _envelope_of_another,
    "longer than its envelope says": lambda data: data + b"appended\r\n",
}
STATE_DAMAGE = "delivery state is garbage"
RUNNING_DAMAGE = "cut short while queued"
STRAY = "stray file in msg/"


@dataclass
class Damaged:
    messages: int = 16
    size: int = 2000


def run(plan: Damaged | None = None) -> Outcome:
    plan = plan or Damaged()
    outcome = Outcome("damaged queue files")
    hop_port = free_port()
    run_id = f"{time.time_ns()}"
    with scratch(outcome) as relays:
        relay = relays.make(hop_port)
        message_ids = [f"dmg{n}.{run_id}@reliability.example" for n in range(plan.messages)]
        with relay.smtp() as client:
            for message_id in message_ids:
                client.sendmail("alice@example.net", ["bob@example.com"], make_message(message_id, plan.size))
        relay.wait_log(r"status=deferred", count=plan.messages)
        relay.kill()

        files = {found.message_id: path for path in listing(relay, "msg") if (found := read_queue_file(path)).intact}
        kinds = [*DAMAGE, STATE_DAMAGE]
        damaged: dict[str, tuple[str, str, bytes]] = {}  # Message-ID -> (kind, file name, damaged bytes)
        for kind, message_id in zip(kinds, message_ids):
            path = files[message_id]
            if kind == STATE_DAMAGE:
                target = queue_dir(relay, "state") / path.name
                target.write_bytes(b"\x00{garbage")
                damaged[message_id] = (kind, path.name, path.read_bytes())
            else:
                path.write_bytes(DAMAGE[kind](path.read_bytes()))
                damaged[message_id] = (kind, path.name, path.read_bytes())
        stray = queue_dir(relay, "msg") / "not-a-queue-id"
        stray.write_bytes(b"left here by someone\n")

        relay.start()
        relay.wait_log(r"queue loaded")
        victim = message_ids[len(kinds)]
        path = files[victim]
        path.write_bytes(path.read_bytes()[:-500])
        damaged[victim] = (RUNNING_DAMAGE, path.name, path.read_bytes())

        sink = Sink(port=hop_port).start()
        try:
            with ControlClient(str(relay.workdir / "control.sock")) as control:
                control.call("io.postern.Queue.Flush")
                intact = set(message_ids) - set(damaged)
                wait_for(lambda: len(sink.messages) >= len(intact) and not listing(relay, "msg"), 20)
                time.sleep(0.5)
                status = control.call("io.postern.Status.Get")["status"]
        finally:
            sink.stop()
        count(outcome, relay, message_ids, damaged, stray.name, sink, status)
    return outcome


def count(outcome: Outcome, relay: RelayProcess, message_ids: list[str], damaged: dict, stray: str, sink: Sink,
          status: dict) -> None:
    corrupt = {path.name: path.read_bytes() for path in listing(relay, "corrupt")}
    log = relay.log()
    set_aside = [mid for mid, (_, name, data) in damaged.items() if corrupt.get(name) == data]
    logged = [mid for mid, (_, name, _) in damaged.items() if f"{name}: damaged queue file moved to" in log]
    copies = Counter(message_id_of(m.content) for m in sink.messages)
    intact = set(message_ids) - set(damaged)
    outcome.figures.update({
        "queued": len(message_ids),
        "damaged at rest": f"{len(damaged) - 1}: " + ", ".join(kind for kind, _, _ in list(damaged.values())[:-1]),
        "damaged while the daemon ran": f"1: {RUNNING_DAMAGE}",
        "stray file": STRAY,
        "moved to corrupt/ unchanged": f"{len(set_aside)} of {len(damaged)}"
                                       + (", and the stray file" if corrupt.get(stray) is not None else ""),
        "log lines naming the reason": f"{len(logged)} of {len(damaged)}",
        "corrupt files in Status.Get": status["queue"]["corrupt"],
        "delivered": len(set(copies) & intact),
        "lost": len(intact - set(copies)),
        "duplicated": sum(n - 1 for n in copies.values()),
        "damaged messages delivered": len(set(copies) & set(damaged)),
    })
    outcome.check(len(set_aside) == len(damaged), f"not set aside unchanged: {sorted(set(damaged) - set(set_aside))}")
    outcome.check(stray in corrupt, "the stray file was not set aside")
    outcome.check(len(logged) == len(damaged), f"no log line for {sorted(set(damaged) - set(logged))}")
    outcome.check(status["queue"]["corrupt"] >= len(damaged) + 1, "the control API does not report them all")
    outcome.check(intact <= set(copies), f"lost: {sorted(intact - set(copies))}")
    outcome.check(all(n == 1 for n in copies.values()), "a message was delivered more than once")
    outcome.check(not set(copies) & set(damaged), "a damaged message was delivered")
