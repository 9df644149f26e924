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
from tests.support.mail import make_message, message_id, read_dsn
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


# --- what the sender asked for (NOTIFY, RET, ENVID, ORCPT) ---------------------------------------------------

def test_notify_never_or_without_failure_means_no_bounce_for_that_recipient(make_relay, sink):
    relay = make_relay(sink.port, start=False)
    refused = ["never@example.com", "success@example.com", "delay@example.com", "plain@example.com"]
    sink.rcpt_replies = {address: "550 5.1.1 User unknown" for address in refused}
    queue(relay, refused, make_message("notify@example.net"),
          notify={"never@example.com": "NEVER", "success@example.com": "SUCCESS", "delay@example.com": "DELAY"})
    relay.start()
    sink.wait_for(1)  # the notice, delivered after the message itself has left the queue
    [notice] = notices(sink)
    assert [b["Final-Recipient"] for b in read_dsn(notice.content).recipients] == ["rfc822; plain@example.com"]
    for quiet, notify in (("never", "NEVER"), ("success", "SUCCESS"), ("delay", "DELAY")):
        relay.wait_log(rf"to=<{quiet}@example\.com>: no non-delivery notice: NOTIFY={notify}")


def test_notify_success_at_a_next_hop_without_dsn_gets_a_relayed_notice(make_relay, sink):
    relay = make_relay(sink.port, start=False)
    recipients = ["ok@example.com", "quiet@example.com"]
    message = make_message("relayed@example.net", body="the body")
    # (A next hop that offers DSN takes the notices over: tests/relay/test_delivery_client.py.)
    queue_id = queue(relay, recipients, message, envid="QQ314159", ret="HDRS",
                     notify={"ok@example.com": "SUCCESS,FAILURE"},
                     orcpt={"ok@example.com": "rfc822;Original@Example.com"})
    relay.start()
    relay.wait_log(rf"{queue_id}: sender delivery status notification: \w+")
    relay.wait_log(rf"{queue_id}: removed")
    [notice] = wait_until(lambda: notices(sink), what="the relayed notice")
    assert sorted(r for m in deliveries(sink) for r in m.recipients) == sorted(recipients)

    report = read_dsn(notice.content)
    assert report.message["Subject"] == "Successful Mail Delivery Report"
    assert "Your message was successfully delivered to the destination(s)" in report.human
    # Postfix's fields, in Postfix's order
    assert list(report.per_message.keys()) == ["Reporting-MTA", "Original-Envelope-Id", "X-Postern-Queue-ID",
                                               "X-Postern-Sender", "Arrival-Date"]
    assert report.per_message["Original-Envelope-Id"] == "QQ314159"
    assert report.per_message["X-Postern-Sender"] == "rfc822; alice@example.net"
    [block] = report.recipients
    assert list(block.keys()) == ["Final-Recipient", "Original-Recipient", "Action", "Status", "Remote-MTA",
                                  "Diagnostic-Code"]
    assert block["Final-Recipient"] == "rfc822; ok@example.com"
    assert block["Original-Recipient"] == "rfc822;Original@Example.com"
    assert block["Action"] == "relayed" and block["Status"] == "2.0.0"
    assert block["Diagnostic-Code"].startswith("smtp; 250 2.0.0 Ok: recorded")
    # RET=HDRS: the header only
    assert re.search(rb"\r\nContent-Description: Message Headers\r\nContent-Type: text/rfc822-headers\r\n",
                     notice.content)
    assert b"Message-ID: <relayed@example.net>" in report.original and b"the body" not in report.original


def test_the_original_comes_back_whole_up_to_bounce_size_limit(make_relay, sink):
    sink.rcpt_replies = {"gone@example.com": "550 5.1.1 User unknown"}
    relay = make_relay(sink.port)
    small = make_message("small@example.net", body=("s" * 70 + "\r\n") * 100)
    large = make_message("large@example.net", body=("l" * 70 + "\r\n") * 800)  # 57 kB
    relay.send("alice@example.net", ["gone@example.com"], small)
    relay.send("alice@example.net", ["gone@example.com"], large)
    wait_until(lambda: len(notices(sink)) == 2, what="both bounces")
    returned = {message_id(read_dsn(n.content).original_headers.encode()): n for n in notices(sink)}
    full = read_dsn(returned["small@example.net"].content)
    assert full.original.endswith(small)
    assert b"Content-Type: message/rfc822\r\n" in returned["small@example.net"].content
    headers = read_dsn(returned["large@example.net"].content)
    assert b"Content-Type: text/rfc822-headers\r\n" in returned["large@example.net"].content
    assert b"Message-ID: <large@example.net>" in headers.original and b"lllll" not in headers.original


def test_one_delay_warning_per_message_after_delay_warning_time(make_relay, sink):
    relay = make_relay(sink.port, start=False, queue={"minimal_backoff_time": 1, "maximal_backoff_time": 1,
                                                      "delay_warning_time": "1s"})
    sink.rcpt_replies = {"busy@example.com": "450 4.2.0 Mailbox busy", "failonly@example.com": "450 4.2.0 Busy"}
    queue_id = queue(relay, ["busy@example.com", "failonly@example.com"], make_message("slow@example.net"),
                     notify={"failonly@example.com": "FAILURE"})
    relay.start()
    relay.wait_log(rf"{queue_id}: sender delay notification: \w+", timeout=10)
    [notice] = wait_until(lambda: notices(sink), what="the delay warning")
    report = read_dsn(notice.content)
    assert report.message["Subject"] == "Delayed Mail (still being retried)"
    assert "THIS IS A WARNING ONLY" in report.human
    [block] = report.recipients  # failonly@ asked for failures only
    assert block["Final-Recipient"] == "rfc822; busy@example.com"
    assert block["Action"] == "delayed" and block["Status"] == "4.2.0"
    assert block["Will-Retry-Until"]
    state = json.loads((relay.state_dir / "queue" / "state" / queue_id).read_bytes())
    assert state["delay_warned"] is True

    relay.wait_log(r"to=<busy@example\.com>, .*status=deferred", count=4)  # retried, and warned no more
    relay.kill()
    relay.start()  # remembered across a restart too
    relay.wait_log(r"to=<busy@example\.com>, .*status=deferred", count=5)
    sink.rcpt_replies = {}
    relay.wait_log(rf"{queue_id}: removed")
    assert len(notices(sink)) == 1
    assert relay.log().count("sender delay notification") == 1


def test_delay_warning_time_takes_a_duration_or_0_for_off():
    from relay.config import parse_mta
    for value, seconds in ((0, 0), ("0", 0), ("0h", 0), ("4h", 14400), (3600, 3600)):
        config, problems = parse_mta({"queue": {"delay_warning_time": value}})
        assert problems == [] and config.queue.delay_warning_time == seconds
    assert parse_mta({})[0].queue.delay_warning_time == 0  # Postfix's default: off
    _, problems = parse_mta({"queue": {"delay_warning_time": "soon"}})
    assert [p for p in problems if p.startswith("mta.queue.delay_warning_time:")]
