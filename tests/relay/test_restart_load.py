"""A restart with a large queue: mail is taken while the old queue is still being read.

The daemon lists the queue, opens its SMTP listeners, and only then reads the queued
envelopes, a slice at a time. A message sent in that window must be queued and
delivered like any other, and every message of the old queue must stay queued or be
delivered, once.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

from relay.control.client import ControlClient
from relay.queue.entry import DEFERRED, Envelope, QueueEntry
from relay.queue.store import MAGIC, QueueStore
from tests.support.net import wait_until

DEFERRED_COUNT = 30_000  # about 2 s of loading: long enough to send a message in
DUE_COUNT = 5


def fill_queue(state_dir, deferred: int, due: int) -> tuple[list[str], list[str]]:
    """Queue files in the daemon's format: `deferred` ones tried a day from now, `due` ones never tried."""
    store = QueueStore(state_dir)
    store.open()
    deferred_ids, due_ids = [], []
    start = time.time() - 3600
    for n in range(deferred + due):
        queue_id = store.new_id()
        body = f"Subject: old {n}\r\nMessage-ID: <old{n}@example.net>\r\n\r\nold\r\n".encode()
        envelope = Envelope(id=queue_id, sender="alice@example.net", recipients=[f"user{n}@example.com"],
                            arrival=start + n * 0.001, size=len(body), client="unknown[127.0.0.1]")
        (store.msg / queue_id).write_bytes(MAGIC + json.dumps(envelope.to_dict()).encode() + b"\n" + body)
        if n < deferred:
            entry = QueueEntry.new(envelope)
            entry.attempts, entry.next_attempt, entry.last_reply = 1, time.time() + 86400, "451 try later"
            entry.recipients[0].status = DEFERRED
            (store.state / queue_id).write_text(json.dumps(entry.state_dict()))
            deferred_ids.append(queue_id)
        else:
            due_ids.append(queue_id)
    (store.tmp / "leftover").write_bytes(b"never acknowledged")
    return deferred_ids, due_ids


def message_ids(sink) -> list[str]:
    return [re.search(rb"Message-ID: <([^>]+)>", m.content).group(1).decode() for m in sink.messages]


def test_mail_is_taken_while_a_large_queue_loads_and_nothing_old_is_lost_or_doubled(make_relay, sink):
    relay = make_relay(sink.port, start=False)
    deferred_ids, due_ids = fill_queue(relay.state_dir, DEFERRED_COUNT, DUE_COUNT)

    began = time.monotonic()
    relay.start(wait=False)
    relay.wait_log(r"listening on", timeout=10)
    with relay.smtp() as client:
        refused = client.sendmail("carol@example.net", ["new@example.com"],
                                  "Subject: new\r\nMessage-ID: <new@example.net>\r\n\r\nnew\r\n")
        code, reply = client.noop()
    accepted_after = time.monotonic() - began
    assert refused == {} and code == 250
    assert accepted_after < 5, f"mail taken only {accepted_after:.1f} s after the start"

    relay.wait_log(r"daemon started", timeout=60)
    log = relay.log()
    queued = re.search(r"(\w+): from=<carol@example.net>", log)
    assert queued, log[-2000:]
    assert log.index(queued.group(0)) < log.index("queue loaded"), "the message came after the load: no proof"
    assert f"queue loaded: {DEFERRED_COUNT + DUE_COUNT} messages" in log
    assert "removing unfinished queue file leftover" in log

    sink.wait_for(DUE_COUNT + 1, timeout=30)
    wait_until(lambda: len(relay.queue_files()) == DEFERRED_COUNT, 30, what="the due messages to leave the queue")
    time.sleep(1)  # a message handed on twice would reach the sink by now
    delivered = message_ids(sink)
    assert sorted(delivered) == sorted([f"old{n}@example.net" for n in range(DEFERRED_COUNT, DEFERRED_COUNT + DUE_COUNT)]
                                       + ["new@example.net"])
    assert relay.queue_files() == sorted(deferred_ids)
    with ControlClient(str(relay.workdir / "control.sock")) as control:
        listed = control.call("io.postern.Queue.List", limit=1)
    assert listed["total"] == DEFERRED_COUNT
    assert not (relay.state_dir / "queue" / "tmp" / "leftover").exists()


def test_the_control_api_answers_during_the_load_and_queue_calls_see_the_whole_queue(make_relay, sink):
    """Status answers at once and says how far the load is; a queue call made meanwhile waits for the end
    of the load, so it never lists (or deletes, holds ...) part of the queue."""
    relay = make_relay(sink.port, start=False)
    fill_queue(relay.state_dir, DEFERRED_COUNT, 0)
    relay.start(wait=False)
    socket = str(relay.workdir / "control.sock")
    wait_until(lambda: (relay.workdir / "control.sock").exists(), 10, interval=0.01, what="the control socket")
    with ControlClient(socket) as control:
        status = control.call("io.postern.Status.Get")["status"]
        loaded_yet = "queue loaded" in relay.log()
        listed = control.call("io.postern.Queue.List", limit=1)
        after = control.call("io.postern.Status.Get")["status"]
    assert not loaded_yet, "the load was over before Status answered: no proof"
    assert status["loading"]["total"] == DEFERRED_COUNT and 0 <= status["loading"]["loaded"] < DEFERRED_COUNT
    assert listed["total"] == DEFERRED_COUNT
    assert after["loading"] is None and after["queue"]["total"] == DEFERRED_COUNT
    printed = subprocess.run([sys.executable, "-m", "relay.ctl", "--socket", socket, "status"],
                             capture_output=True, text=True, timeout=30).stdout
    assert f"queue: {DEFERRED_COUNT}" in printed and "loading" not in printed
