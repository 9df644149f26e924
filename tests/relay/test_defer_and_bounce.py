"""Temporary failures are retried, permanent ones are returned to the sender as an RFC 3464 report.

The relays here use a minimal backoff of 1s, so a retry comes a second or two after a failure.
"""

import re

import pytest

from tests.support.mail import make_message, message_id, read_dsn
from tests.support.net import free_port, wait_until
from tests.support.sink import Sink


def deliveries(sink: Sink) -> list:
    """What the sink got apart from delivery status notifications."""
    return [m for m in sink.messages if m.sender != "<>"]


def bounces(sink: Sink) -> list:
    return [m for m in sink.messages if m.sender == "<>"]


def test_mail_for_a_next_hop_that_is_down_is_deferred_and_delivered_once_it_is_up(make_relay):
    port = free_port()
    relay = make_relay(port)
    relay.send("alice@example.net", ["bob@example.com"], make_message("later@example.net"))
    [line] = relay.wait_log(r"to=<bob@example\.com>, relay=none, .*status=deferred \(.*\)")
    assert "Connection refused" in line
    assert len(relay.queue_files()) == 1

    sink = Sink(port=port).start()
    try:
        [message] = sink.wait_for(1, timeout=10)
        assert message_id(message.content) == "later@example.net"
        relay.wait_log(r"to=<bob@example\.com>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:\d+, .*status=sent")
        relay.wait_log(r": removed")
        assert relay.queue_files() == []
    finally:
        sink.stop()


def test_each_recipient_keeps_its_own_fate_250_450_550(relay, sink):
    sink.rcpt_replies = {
        "later@example.com": "450 4.2.0 <later@example.com>: Mailbox busy",
        "gone@example.com": "550 5.1.1 <gone@example.com>: Recipient address rejected: User unknown",
    }
    relay.send("alice@example.net", ["now@example.com", "later@example.com", "gone@example.com"],
               make_message("three@example.net"))
    relay.wait_log(r"to=<now@example\.com>, .*dsn=2\.0\.0, status=sent")
    relay.wait_log(r"to=<later@example\.com>, .*dsn=4\.2\.0, status=deferred")
    relay.wait_log(r"to=<gone@example\.com>, .*dsn=5\.1\.1, status=bounced")
    wait_until(lambda: bounces(sink), what="the bounce for gone@example.com")

    # The busy mailbox is retried (and still deferred) while the others are left alone.
    relay.wait_log(r"to=<later@example\.com>, .*status=deferred", count=2)
    sink.rcpt_replies = {}
    wait_until(lambda: "later@example.com" in [r for m in deliveries(sink) for r in m.recipients],
               what="the retried recipient")
    wait_until(lambda: relay.queue_files() == [], what="an empty queue")

    delivered = [r for m in deliveries(sink) for r in m.recipients]
    assert sorted(delivered) == ["later@example.com", "now@example.com"]  # each exactly once
    assert all(message_id(m.content) == "three@example.net" for m in deliveries(sink))
    [dsn] = bounces(sink)
    assert dsn.recipients == ["alice@example.net"]
    report = read_dsn(dsn.content)
    assert [b["Final-Recipient"] for b in report.recipients] == ["rfc822; gone@example.com"]
    assert relay.log().count("to=<now@example.com>") == 1


def test_the_bounce_is_an_rfc3464_report_to_the_envelope_sender(relay, sink):
    sink.rcpt_replies = {"gone@example.com": "550 5.1.1 <gone@example.com>: Recipient address rejected: User unknown"}
    relay.send("alice@example.net", ["gone@example.com"],
               "From: Alice <alice@example.net>\r\nTo: gone@example.com\r\nSubject: quarterly figures\r\n"
               "Message-ID: <q3@example.net>\r\n\r\nthe figures\r\n")
    [dsn] = sink.wait_for(1)
    assert dsn.sender == "<>"
    assert dsn.recipients == ["alice@example.net"]

    report = read_dsn(dsn.content)
    assert report.message["To"] == "alice@example.net"
    assert report.message["From"].startswith("MAILER-DAEMON@gw.example.com")
    assert report.message["Auto-Submitted"] == "auto-replied"
    assert report.per_message["Reporting-MTA"] == "dns; gw.example.com"
    [block] = report.recipients
    assert block["Final-Recipient"] == "rfc822; gone@example.com"
    assert block["Action"] == "failed"
    assert block["Status"] == "5.1.1"
    # As Postfix: the next hop's reply itself, the host it came from in Remote-MTA
    assert block["Diagnostic-Code"] == "smtp; 550 5.1.1 <gone@example.com>: Recipient address rejected: User unknown"
    assert block["Remote-MTA"] == "dns; 127.0.0.1"
    assert "<gone@example.com>: host 127.0.0.1" in report.human
    # The original comes back whole (no RET, and small: Postfix returns it all), so the sender knows which it was.
    assert "Subject: quarterly figures" in report.original_headers
    assert "Message-ID: <q3@example.net>" in report.original_headers
    assert report.original.endswith(b"\r\n\r\nthe figures\r\n")
    relay.wait_log(r"sender non-delivery notification: \w+")


def test_a_rejection_at_end_of_data_bounces_every_recipient_of_that_transaction(make_relay, sink):
    senders_side = Sink().start()  # the bounce goes to example.net, outside, past the rejecting next hop
    try:
        relay = make_relay(sink.port, external_relay={"host": "127.0.0.1", "port": senders_side.port, "mx": False})
        sink.data_reply = "554 5.7.1 Message rejected: spam"
        relay.send("alice@example.net", ["bob@example.com", "carol@example.com"], make_message("spam@example.net"))
        relay.wait_log(r"to=<(bob|carol)@example\.com>, .*dsn=5\.7\.1, status=bounced", count=2)
        [dsn] = senders_side.wait_for(1)
        assert dsn.sender == "<>" and dsn.recipients == ["alice@example.net"]
        report = read_dsn(dsn.content)
        assert sorted(b["Final-Recipient"] for b in report.recipients) == ["rfc822; bob@example.com",
                                                                           "rfc822; carol@example.com"]
        assert {b["Status"] for b in report.recipients} == {"5.7.1"}
        assert sink.messages == []
    finally:
        senders_side.stop()


def test_a_bounce_of_mail_from_the_null_sender_notifies_nobody(relay, sink):
    sink.rcpt_replies = {"gone@example.com": "550 5.1.1 User unknown"}
    relay.send("<>", ["gone@example.com"], make_message("from-null@example.net"))
    relay.wait_log(r"to=<gone@example\.com>, .*status=bounced")
    relay.wait_log(r"not notifying: the sender is the null address <>")
    relay.wait_log(r": removed")
    assert "sender non-delivery notification" not in relay.log()
    assert relay.queue_files() == []
    assert sink.messages == []


def test_mail_still_deferred_at_the_end_of_the_queue_lifetime_is_returned_as_expired(make_relay, sink):
    relay = make_relay(sink.port, queue={"minimal_backoff_time": 1, "maximal_backoff_time": 1,
                                         "maximal_queue_lifetime": 2})
    sink.rcpt_replies = {"busy@example.com": "451 4.3.0 Try again later"}
    relay.send("alice@example.net", ["busy@example.com"], make_message("old@example.net"))
    relay.wait_log(r"to=<busy@example\.com>, .*status=deferred")
    relay.wait_log(r"to=<busy@example\.com>, status=expired, returned to sender", timeout=10)
    [dsn] = wait_until(lambda: bounces(sink), what="the expiry notice")
    [block] = read_dsn(dsn.content).recipients
    assert block["Action"] == "failed"
    # Postfix's: the last reply and its status, not a status of the relay's own
    assert block["Status"] == "4.3.0"
    assert block["Diagnostic-Code"] == "smtp; 451 4.3.0 Try again later"
    wait_until(lambda: relay.queue_files() == [], what="an empty queue")
    assert deliveries(sink) == []
