"""bench.session: one SMTP conversation through the receiving side, in-process, its replies checked."""

import asyncio
import ipaddress
import re
import subprocess
import sys

import pytest

from bench.session import conversation, converse
from relay.config import MtaConfig
from relay.queue.entry import Counters
from relay.queue.store import QueueStore
from relay.smtpd import Receiver
from tests.support.relay import ROOT


def receiver(tmp_path, queued: list, **config) -> Receiver:
    store = QueueStore(tmp_path)
    store.open()
    settings = MtaConfig(hostname="gw.example.com", relay_domains=("example.com",),
                         my_networks=(ipaddress.ip_network("127.0.0.0/8"),), peername_lookup=False, **config)
    return Receiver(config=lambda: settings, store=store, counters=Counters(), verify=None,
                    enqueue=lambda entry, body: queued.append((entry.id, body)), resolver=None,
                    tls_context=lambda: None)


def test_a_conversation_queues_its_message(tmp_path):
    queued = []
    asyncio.run(converse(receiver(tmp_path, queued), conversation(2048)))
    [(queue_id, body)] = queued
    assert (tmp_path / "queue" / "msg" / queue_id).exists()
    assert body.startswith(b"Received: from client.example.net (unknown [127.0.0.1])") and b"Subject: session" in body


def test_a_reply_that_is_not_the_expected_one_stops_the_run(tmp_path):
    queued = []
    small = receiver(tmp_path, queued, message_size_limit=1000)  # the 2 KB message is refused
    with pytest.raises(RuntimeError, match=r"not '250 2\.0\.0 Ok: queued as '"):
        asyncio.run(converse(small, conversation(2048)))
    assert queued == []


def test_the_figure_is_printed(tmp_path):
    """Run as the command it is: it sets up logging as a receiving process does, for the whole process."""
    run = subprocess.run([sys.executable, "-m", "bench.session", "--conversations", "3", "--rounds", "2",
                          "--queue-dir", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    line = run.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"2048 octets a message, 3 conversations x 2 rounds, (uvloop|asyncio): "
                        r"CPU \d+ us a conversation \(least\), \d+ us \(median\)", line), line
    assert list(tmp_path.iterdir()) == []  # its queue is gone
