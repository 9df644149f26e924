"""Notices to the sender (RFC 3461, 3464): what the sender asked for, built from any bytes, and never lost.

Some messages here are put in the queue directly, with the DSN parameters a client gave
(NOTIFY, RET, ENVID, ORCPT), as the receiving side stores them in the envelope; the relay
process then loads and delivers them as it would after a restart.
"""

import asyncio
import json
import os
import re
import time

import pytest

from relay.queue.entry import Envelope
from relay.queue.store import QueueStore
from tests.relay.test_queue_full import mount_small_tmpfs, unmount
from tests.support.mail import make_message, read_dsn
from tests.support.net import wait_until


def notices(sink) -> list:
    return [m for m in sink.messages if m.sender == "<>"]


def deliveries(sink) -> list:
    return [m for m in sink.messages if m.sender != "<>"]


def queue(relay, recipients: list[str], message: bytes, sender: str = "alice@example.net", **dsn) -> str:
    """Put a message in the stopped relay's queue, with these envelope fields; returns its queue ID."""
    store = QueueStore(relay.state_dir)
    store.open()
    envelope = Envelope(id=store.new_id(), sender=sender, recipients=recipients, arrival=time.time(),
                        size=len(message), client="client.example.net[127.0.0.1]", **dsn)
    asyncio.run(store.commit(envelope, message))
    return envelope.id


# --- a bounce is built from any bytes ------------------------------------------------------------------------

def test_raw_8bit_header_text_and_a_non_ascii_refusal_still_bounce(relay, sink):
    # Latin-1 from the next hop: not even UTF-8. The relay passes the bytes on as they came.
    sink.rcpt_replies = {"muller@example.com": "550 5.1.1 <muller@example.com>: Benutzer M\xfcller unbekannt"
                         .encode("latin-1")}
    original = (b"From: J\xc3\xb6rg <joerg@example.net>\r\nSubject: Gr\xfc\xdfe aus K\xc3\xb6ln\r\n"
                b"Message-ID: <raw8@example.net>\r\n\r\nK\xc3\xa4se\r\n")
    relay.send("alice@example.net", ["muller@example.com"], original)
    [notice] = wait_until(lambda: notices(sink), what="the bounce")
    report = read_dsn(notice.content)
    [block] = report.recipients
    assert block["Action"] == "failed" and block["Status"] == "5.1.1"
    assert block["Diagnostic-Code"].endswith("550 5.1.1 <muller@example.com>: Benutzer M?ller unbekannt")
    assert "Benutzer M?ller unbekannt" in report.human
    # The original comes back byte for byte, marked 8bit, as Postfix returns it.
    assert report.message["Content-Transfer-Encoding"] == "8bit"
    assert report.original.startswith(b"Return-Path: <alice@example.net>\r\nReceived: from ")
    assert report.original.endswith(original)
    assert re.search(rb"Content-Type: message/rfc822\r\nContent-Transfer-Encoding: 8bit\r\n", notice.content)
    relay.wait_log(r": removed")
    assert relay.queue_files() == []


def test_a_bounce_that_cannot_be_queued_keeps_the_message_until_it_can(make_relay, sink):
    """The queue's file system is full when the bounce is due: the message stays, and once there is
    room the bounce goes out and only then does the message leave."""
    relay = make_relay(sink.port, start=False)
    mount_small_tmpfs(relay.state_dir)
    ballast = relay.state_dir / "ballast"
    try:
        relay.start()
        sink.rcpt_replies = {"gone@example.com": "550 5.1.1 <gone@example.com>: User unknown"}
        message = make_message("no-room@example.net", body=("x" * 78 + "\r\n") * 250)
        # Room for the message and its state file, not for the bounce that returns it.
        stat = os.statvfs(relay.state_dir)
        ballast.write_bytes(b"b" * (stat.f_bavail * stat.f_frsize - 32 * 1024))
        relay.send("alice@example.net", ["gone@example.com"], message)
        [line] = relay.wait_log(r"\w+: cannot queue the sender's non-delivery notification: .*")
        assert "the message stays queued" in line
        [queue_id] = relay.queue_files()
        relay.wait_log(rf"{queue_id}: cannot queue the sender's non-delivery notification", count=2)  # tried again
        assert notices(sink) == [] and f"{queue_id}: removed" not in relay.log()
        state = json.loads((relay.state_dir / "queue" / "state" / queue_id).read_bytes())
        assert [r["status"] for r in state["recipients"]] == ["bouncing"]

        ballast.unlink()
        [notice] = wait_until(lambda: notices(sink), timeout=15, what="the bounce once there is room")
        [block] = read_dsn(notice.content).recipients
        assert block["Final-Recipient"] == "rfc822; gone@example.com"
        relay.wait_log(rf"{queue_id}: removed")
        assert len(sink.messages) == 1  # the message itself never went to the next hop a second time
        assert relay.log().count("to=<gone@example.com>") == 1
    finally:
        relay.kill()
        unmount(relay.state_dir)
