"""kill -9 while one next hop is done and another still busy: the done one gets nothing twice.

Every message has two recipients: one in example.com, for the internal relay (a next hop
that answers at once), one in example.org, for the external relay (a next hop that takes
the connection and never greets, so that delivery waits for its connect timeout). Once
the fast hop has every message, the daemon is killed with SIGKILL; then the slow hop is
replaced by one that answers and the daemon starts again. The fast hop must get no
message a second time: the state of each message was saved when its fast hop settled,
not when the whole attempt ended.
"""

from __future__ import annotations

import json
import re
import socket
import time
from collections import Counter
from dataclasses import dataclass

from tests.support.net import free_port
from tests.support.sink import Sink

from .scenario import Outcome, listing, make_message, message_id_of, scratch, wait_for


@dataclass
class TwoHops:
    messages: int = 20
    connect_timeout: int = 120  # the slow hop's: far longer than the scenario


def fast_recorded(relay) -> int:
    """Recipients for the fast hop that the queue's state files record as sent."""
    recorded = 0
    for path in listing(relay, "state"):
        try:
            state = json.loads(path.read_bytes())
        except (OSError, ValueError):
            continue  # replaced while being read
        recorded += sum(1 for r in state["recipients"] if r["address"].endswith("@example.com")
                        and r["status"] == "sent")
    return recorded


def run(plan: TwoHops | None = None) -> Outcome:
    plan = plan or TwoHops()
    outcome = Outcome("kill -9 with one next hop done and one busy")
    fast = Sink().start()
    slow_port = free_port()
    silent = socket.create_server(("127.0.0.1", slow_port))  # takes connections, never says a word
    slow = Sink(port=slow_port)
    try:
        with scratch(outcome) as relays:
            relay = relays.make(fast.port, external_relay={"host": "127.0.0.1", "port": slow_port, "mx": False},
                                delivery={"connect_timeout": plan.connect_timeout})
            run_id = f"{time.time_ns()}"
            sent = [f"two{n}.{run_id}@reliability.example" for n in range(plan.messages)]
            with relay.smtp() as client:
                for n, message_id in enumerate(sent):
                    client.sendmail("alice@example.net", [f"fast{n}@example.com", f"slow{n}@example.org"],
                                    make_message(message_id))
            wait_for(lambda: len(fast.messages) >= plan.messages, 15)
            before = len(fast.messages)
            outcome.check(before == plan.messages, f"the fast hop got {before} of {plan.messages} before the kill")
            wait_for(lambda: fast_recorded(relay) >= plan.messages, 5)
            recorded = fast_recorded(relay)
            slow_busy = len(re.findall(r"to=<slow\d+@example\.org>", relay.log()))
            relay.kill()
            queued = len(listing(relay, "msg"))

            silent.close()
            slow.start()
            relay.start()
            drained = wait_for(lambda: not listing(relay, "msg"), 20)
            time.sleep(0.5)  # a duplicate on its way would arrive now
            outcome.check(bool(drained), f"the queue did not drain: {len(listing(relay, 'msg'))} files left")
            fast_copies = Counter(message_id_of(m.content) for m in fast.messages)
            slow_copies = Counter(message_id_of(m.content) for m in slow.messages)
            outcome.figures.update({
                "sent": plan.messages,
                "recipients per message": "1 at the fast hop, 1 at the slow hop",
                "fast hop deliveries before the kill": before,
                "fast recipients saved as sent at the kill": recorded,
                "slow hop recipients settled at the kill": slow_busy,
                "queued at the kill": queued,
                "fast hop: delivered": len(fast_copies),
                "fast hop: duplicated": sum(n - 1 for n in fast_copies.values()),
                "slow hop: delivered": len(slow_copies),
                "slow hop: duplicated": sum(n - 1 for n in slow_copies.values()),
                "lost": len(set(sent) - set(fast_copies)) + len(set(sent) - set(slow_copies)),
                "queue files left": len(listing(relay, "msg")) + len(listing(relay, "state")),
            })
            outcome.check(queued == plan.messages, f"{queued} of {plan.messages} messages queued at the kill")
            outcome.check(all(n == 1 for n in fast_copies.values()),
                          "the fast hop got messages again after the restart")
            outcome.check(set(fast_copies) == set(sent) and set(slow_copies) == set(sent), "a recipient was lost")
            outcome.check(all(n == 1 for n in slow_copies.values()), "the slow hop got a message twice")
            outcome.check(not listing(relay, "state"), "state files were left behind")
            relay.stop()
    finally:
        silent.close()
        fast.stop()
        slow.stop()
    return outcome
