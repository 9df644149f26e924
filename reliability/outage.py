"""A next hop that is down: deferred, retried by backoff, delivered once it is back, or returned.

`recovery`: the next hop refuses connections, then answers 451 to every message, then
accepts. Every message is delivered exactly once, none before the hop accepts, each no
earlier than the retry its backoff had set (read from the control API the moment the
hop comes back) and in the order of those retries.

`expiry`: the next hop never comes back. Once older than the queue lifetime, each
message is returned to its sender: exactly one RFC 3464 report per message.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from dataclasses import dataclass

from relay.control.client import ControlClient
from tests.support.mail import read_dsn
from tests.support.net import free_port
from tests.support.relay import RelayProcess
from tests.support.sink import Sink

from .scenario import Outcome, listing, make_message, message_id_of, scratch, wait_for

TEMPORARY_FAILURE = "451 4.3.0 Try again later"


@dataclass
class Recovery:
    messages: int = 12
    spread: float = 1.5  # seconds over which they arrive, so their ages and backoffs differ
    refused_for: float = 3.0
    tempfail_for: float = 3.0
    minimal_backoff: int = 1
    maximal_backoff: int = 6


@dataclass
class Expiry:
    messages: int = 10
    lifetime: int = 3


def send_spread(relay: RelayProcess, message_ids: list[str], spread: float, outcome: Outcome) -> set[str]:
    """Send one message each, evenly over `spread` seconds; returns the acknowledged Message-IDs."""
    acknowledged = set()
    with relay.smtp() as client:
        for index, message_id in enumerate(message_ids):
            try:
                client.sendmail("alice@example.net", [f"rcpt{index}@example.com"], make_message(message_id))
                acknowledged.add(message_id)
            except Exception as error:  # counted, not fatal: the figures show it
                outcome.problems.append(f"{message_id} was not accepted: {error}")
            time.sleep(spread / max(1, len(message_ids)))
    return acknowledged


def deferrals(relay: RelayProcess) -> Counter:
    """status=deferred log lines by the kind of failure."""
    kinds: Counter = Counter()
    for line in re.findall(r"status=deferred \((.*)\)", relay.log()):
        if "Connection refused" in line or "temporarily suspended" in line:
            kinds["connection refused"] += 1
        elif TEMPORARY_FAILURE in line:
            kinds["451 at end of data"] += 1
        else:
            kinds["other"] += 1
    return kinds


def recovery(plan: Recovery | None = None) -> Outcome:
    plan = plan or Recovery()
    outcome = Outcome("next hop down, then 4xx, then back")
    hop_port = free_port()
    sink = Sink(port=hop_port)
    with scratch(outcome) as relays:
        relay = relays.make(hop_port, queue={"minimal_backoff_time": plan.minimal_backoff,
                                             "maximal_backoff_time": plan.maximal_backoff})
        run = f"{time.time_ns()}"
        message_ids = [f"down{n}.{run}@reliability.example" for n in range(plan.messages)]
        first = time.monotonic()
        acknowledged = send_spread(relay, message_ids, plan.spread, outcome)
        time.sleep(max(0.0, first + plan.refused_for - time.monotonic()))
        sink.data_reply = TEMPORARY_FAILURE
        sink.start()
        try:
            time.sleep(plan.tempfail_for)
            with ControlClient(str(relay.workdir / "control.sock")) as control:
                queued = control.call("io.postern.Queue.List", limit=10000)["messages"]
            sink.data_reply = None
            back = time.time()
            wait_for(lambda: len(sink.messages) >= len(acknowledged), plan.maximal_backoff * 1.1 + 10)
            wait_for(lambda: not listing(relay, "msg"), 5)
            time.sleep(0.5)
        finally:
            sink.stop()
        due = {m["message_id"].strip("<>"): m["next_attempt"] for m in queued}
        count_recovery(outcome, plan, acknowledged, due, back, sink, relay)
    return outcome


def count_recovery(outcome: Outcome, plan: Recovery, acknowledged: set[str], due: dict, back: float,
                   sink: Sink, relay: RelayProcess) -> None:
    arrivals = sorted(sink.messages, key=lambda m: m.at)
    copies = Counter(message_id_of(m.content) for m in arrivals)
    first_at = {}
    for message in arrivals:
        first_at.setdefault(message_id_of(message.content), message.at)
    # Messages already due when the hop came back (or being tried right then) go at once;
    # the others must wait for their own retry, and go in the order of those retries.
    waiting = sorted((due[mid], first_at[mid], mid) for mid in first_at if (due.get(mid) or 0) > back)
    early = [mid for retry, at, mid in waiting if at < retry - 0.05]
    late = max((at - max(retry, back) for retry, at, _ in waiting), default=0.0)
    out_of_order = sum(1 for (r1, a1, _), (r2, a2, _) in zip(waiting, waiting[1:]) if r2 - r1 > 0.3 and a2 < a1)
    kinds = deferrals(relay)
    outcome.figures.update({
        "sent": plan.messages,
        "acknowledged": len(acknowledged),
        "deferred: connection refused": kinds["connection refused"],
        "deferred: 451 at end of data": kinds["451 at end of data"],
        "deferred: other": kinds["other"],
        "delivered": len(set(copies) & acknowledged),
        "lost": len(acknowledged - set(copies)),
        "duplicated": sum(n - 1 for n in copies.values()),
        "delivered while the hop was down": sum(1 for m in arrivals if m.at < back),
        "waiting for their retry at recovery": len(waiting),
        "delivered before their retry was due": len(early),
        "delivered out of retry order": out_of_order,
        "longest wait past a retry's due time": f"{late:.2f} s",
    })
    outcome.check(not acknowledged - set(copies), f"lost: {sorted(acknowledged - set(copies))[:5]}")
    outcome.check(all(n == 1 for n in copies.values()), "a message was delivered more than once")
    outcome.check(kinds["connection refused"] > 0 and kinds["451 at end of data"] > 0,
                  f"the outage did not show both kinds of failure: {dict(kinds)}")
    outcome.check(kinds["other"] == 0, f"deferred for another reason: {dict(kinds)}")
    outcome.check(len(waiting) > 0, "no message was waiting for a retry when the hop came back")
    outcome.check(not early, f"delivered before the retry was due: {early[:5]}")
    outcome.check(out_of_order == 0, f"{out_of_order} messages were delivered out of retry order")
    outcome.check(late < 2.0, f"a message waited {late:.2f} s past its retry time")


def expiry(plan: Expiry | None = None) -> Outcome:
    plan = plan or Expiry()
    outcome = Outcome("next hop down past the queue lifetime")
    bounces_sink = Sink().start()  # the senders' side: their notifications go out via external_relay
    try:
        with scratch(outcome) as relays:
            dead_port = free_port()
            relay = relays.make(dead_port, external_relay={"host": "127.0.0.1", "port": bounces_sink.port, "mx": False},
                                queue={"minimal_backoff_time": 1, "maximal_backoff_time": 1,
                                       "maximal_queue_lifetime": plan.lifetime})
            run = f"{time.time_ns()}"
            message_ids = [f"expire{n}.{run}@reliability.example" for n in range(plan.messages)]
            acknowledged = send_spread(relay, message_ids, 0.5, outcome)
            drained = wait_for(lambda: not listing(relay, "msg"), plan.lifetime + 20)
            outcome.check(bool(drained), f"the queue did not drain: {len(listing(relay, 'msg'))} files left")
            time.sleep(2.0)  # a second notification, if one were coming, would come now
            count_expiry(outcome, plan, acknowledged, bounces_sink, relay)
    finally:
        bounces_sink.stop()
    return outcome


def count_expiry(outcome: Outcome, plan: Expiry, acknowledged: set[str], sink: Sink, relay: RelayProcess) -> None:
    notices = [m for m in sink.messages if m.sender == "<>"]
    others = [m for m in sink.messages if m.sender != "<>"]
    returned: Counter = Counter()
    statuses: Counter = Counter()
    for notice in notices:
        report = read_dsn(notice.content)
        returned[message_id_of(report.original_headers.encode())] += 1
        statuses.update(f"{block['Action']} {block['Status']}" for block in report.recipients)
        outcome.check(notice.recipients == ["alice@example.net"], f"a notice went to {notice.recipients}")
    deferred = len(re.findall(r"status=deferred", relay.log()))
    outcome.figures.update({
        "sent": plan.messages,
        "acknowledged": len(acknowledged),
        "queue lifetime": f"{plan.lifetime} s",
        "deferred attempts before expiry": deferred,
        "delivered": len(others),
        "returned to sender": len(set(returned) & acknowledged),
        "notices per message": ", ".join(f"{n}: {c}" for n, c in sorted(Counter(returned.values()).items())),
        "lost (neither delivered nor returned)": len(acknowledged - set(returned)),
        "duplicated notices": sum(n - 1 for n in returned.values()),
        "report status": ", ".join(f"{s} x{n}" for s, n in statuses.items()),
    })
    outcome.check(not others, "mail reached a next hop that was down")
    outcome.check(set(returned) == acknowledged, f"not returned: {sorted(acknowledged - set(returned))[:5]}")
    outcome.check(all(n == 1 for n in returned.values()), "a message was returned more than once")
    outcome.check(set(statuses) == {"failed 4.4.1"}, f"unexpected report status: {dict(statuses)}")
