"""The loop-prevention marker: every relayed message is stamped (an Exchange transport rule's exception),
nobody outside can forge it, and a message that keeps coming back is refused as a loop."""

import email
import smtplib

import pytest

from tests.support.mail import make_message

OUTSIDER = "127.0.0.2"
EXCHANGE = "127.0.0.3"
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
MARKER = b"X-Postern-Processed: gw.example.com\r\n"


def markers(content: bytes, name: str = "X-Postern-Processed") -> list[str]:
    return [" ".join(value.split()) for value in email.message_from_bytes(content).get_all(name, [])]


def test_every_relayed_message_is_stamped_below_our_received_header(relay, sink):
    relay.send("alice@example.net", ["bob@example.com"], make_message("inbound@x"))
    relay.send("alice@example.com", ["carol@partner.org"], make_message("outbound@x"))
    for message in sink.wait_for(2):
        assert email.message_from_bytes(message.content).keys()[:3] == ["Received", "X-Postern-Processed", "From"]
        assert message.content.count(MARKER) == 1


def test_the_header_and_its_value_are_configurable(make_relay, sink):
    relay = make_relay(sink.port, marker={"header": "X-EXO2GW", "value": "1"})
    relay.send("alice@example.com", ["carol@partner.org"], make_message("exo2gw@x"))
    [message] = sink.wait_for(1)
    assert markers(message.content, "X-EXO2GW") == ["1"]
    assert markers(message.content) == []


def test_a_forged_marker_from_an_untrusted_client_is_removed(relay, sink):
    forged = (b"X-Postern-Processed: gw.example.com\r\n"
              b"Subject: forged\r\n"
              b"x-postern-processed:\r\n gw.example.com\r\n"  # lower case and folded: the same header
              b"X-Postern-Processed-Not: kept\r\n"
              b"\r\n"
              b"X-Postern-Processed: in the body, kept\r\n")
    relay.send("mallory@example.net", ["bob@example.com"], forged, source=OUTSIDER)
    [message] = sink.wait_for(1)
    assert markers(message.content) == ["gw.example.com"], "only ours"
    assert message.content.count(MARKER) == 1
    assert b"Subject: forged\r\nX-Postern-Processed-Not: kept\r\n\r\n" in message.content
    assert message.content.endswith(b"\r\n\r\nX-Postern-Processed: in the body, kept\r\n")
    relay.wait_log(r"removed 2 X-Postern-Processed header\(s\) from unknown\[127\.0\.0\.2\]")


def test_a_trusted_client_keeps_the_markers_it_sends(relay, sink):
    relay.send("alice@example.com", ["carol@partner.org"], MARKER + make_message("trusted@x"))
    [message] = sink.wait_for(1)
    assert markers(message.content) == ["gw.example.com", "gw.example.com"]


def resend_until_refused(relay, sink, source: str, first: bytes, recipients: list[str]) -> tuple[int, int, str]:
    """Play a mail loop: whatever reaches the next hop is sent back in; returns (passes, code, text) of the refusal."""
    content = first
    for passes in range(1, 10):
        try:
            relay.send("alice@example.com", recipients, content, source=source)
        except smtplib.SMTPDataError as error:
            return passes, error.smtp_code, error.smtp_error.decode()
        content = sink.wait_for(passes)[-1].content
    raise AssertionError("the loop was never stopped")


def test_a_message_passing_more_than_the_loop_limit_is_refused(relay, sink):
    passes, code, text = resend_until_refused(relay, sink, "127.0.0.1", make_message("loop@x"), ["carol@partner.org"])
    assert passes == 4, "three passes are fine (loop_limit 2), the fourth arrives with three markers"
    assert (code, text) == (554, "5.4.6 Error: mail loop: the message passed gw.example.com 3 times already "
                                 "(X-Postern-Processed)")
    relay.wait_log(r"NOQUEUE: reject: END-OF-MESSAGE from unknown\[127\.0\.0\.1\]: 554 5\.4\.6 ")
    assert relay.queue_files() == []


def test_a_loop_through_exchange_online_is_caught(make_relay, sink):
    """The Exchange Online loop: our tenant's Exchange Online keeps sending the gateway's output back to it."""
    relay = make_relay(sink.port, m365={"tenant_ids": [TENANT], "networks": [f"{EXCHANGE}/32"]},
                       marker={"loop_limit": 1})
    first = f"X-MS-Exchange-CrossTenant-Id: {TENANT}\r\n".encode() + make_message("exo-loop@x")
    passes, code, _ = resend_until_refused(relay, sink, EXCHANGE, first, ["carol@partner.org"])
    assert (passes, code) == (3, 554)


def test_another_tenant_cannot_plant_our_marker(make_relay, sink):
    relay = make_relay(sink.port, m365={"tenant_ids": [TENANT], "networks": [f"{EXCHANGE}/32"]})
    planted = b"X-MS-Exchange-CrossTenant-Id: 0b5e0e8c-1234-4c1d-9f0e-0123456789ab\r\n" + MARKER
    relay.send("eve@example.net", ["bob@example.com"], planted + make_message("planted@x"), source=EXCHANGE)
    [message] = sink.wait_for(1)
    assert markers(message.content) == ["gw.example.com"]


@pytest.mark.parametrize("source", ["127.0.0.1", OUTSIDER])
def test_a_disabled_marker_is_neither_added_nor_removed(make_relay, sink, source):
    relay = make_relay(sink.port, marker={"enabled": False})
    relay.send("alice@example.com", ["bob@example.com"], MARKER + make_message("disabled@x"), source=source)
    [message] = sink.wait_for(1)
    assert markers(message.content) == ["gw.example.com"]
