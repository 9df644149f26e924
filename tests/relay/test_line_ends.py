"""Bare CR and bare LF in DATA, and SMTP smuggling built on them.

Only <CRLF>.<CRLF> ends a message. Lone CRs and LFs are taken as line ends and sent on
as CRLF, so a next hop that is lax about line ends sees no end-of-data of its own in
what the relay forwards. These tests send exact bytes: smtplib would tidy them up.
"""

import re

import pytest

from tests.support.net import wait_until
from tests.support.raw_smtp import RawSmtp


def send_data(relay, data: bytes, source: str = "127.0.0.1") -> list[str]:
    """One transaction whose DATA is `data` verbatim (it must end the message itself); returns every reply after DATA."""
    with RawSmtp(relay.port, source=source) as client:
        client.start_session()
        assert client.command("MAIL FROM:<alice@example.net>").startswith("250 ")
        assert client.command("RCPT TO:<bob@example.com>").startswith("250 ")
        assert client.command("DATA").startswith("354 ")
        client.send(data)
        replies = [client.reply()[-1]]
        # Anything the relay took for further commands would be answered before QUIT's 221.
        client.send(b"QUIT\r\n")
        while not replies[-1].startswith("221 "):
            replies.append(client.reply()[-1])
        return replies


def assert_crlf_only(content: bytes) -> None:
    assert re.search(rb"\r(?!\n)|(?<!\r)\n", content) is None, content


def lines_of(content: bytes) -> list[bytes]:
    return content.split(b"\r\n")


@pytest.mark.parametrize("eol", [b"\n", b"\r"], ids=["bare LF", "bare CR"])
def test_bare_line_ends_are_accepted_and_forwarded_as_crlf(relay, sink, eol):
    data = eol.join([b"Subject: bare", b"X-Test: yes", b"", b"first", b"second", b"third"]) + b"\r\n.\r\n"
    replies = send_data(relay, data)
    assert replies[0].startswith("250 2.0.0 Ok: queued as ")
    assert replies[1:] == ["221 2.0.0 Bye"]
    [message] = sink.wait_for(1)
    assert_crlf_only(message.content)
    assert message.content.endswith(b"\r\nSubject: bare\r\nX-Test: yes\r\n\r\nfirst\r\nsecond\r\nthird\r\n")


def test_crlf_in_the_body_comes_through_unchanged(relay, sink):
    body = b"Subject: plain\r\n\r\n.leading dot kept\r\n\r\nlast\r\n"
    stuffed = body.replace(b"\r\n.", b"\r\n..")
    send_data(relay, stuffed + b".\r\n")
    [message] = sink.wait_for(1)
    assert message.content.endswith(body)


SMUGGLED = b"MAIL FROM:<evil@example.net>\r\nRCPT TO:<victim@example.com>\r\nDATA\r\nSubject: smuggled\r\n\r\nsmuggled\r\n"

END_OF_DATA_LOOKALIKES = {
    "LF.LF": b"\n.\n",
    "CR.CR": b"\r.\r",
    "LF.CRLF": b"\n.\r\n",
    "CR.CRLF": b"\r.\r\n",
    "CRLF.LF": b"\r\n.\n",
    "CRLF.CR": b"\r\n.\r",
    "LF.CR": b"\n.\r",
    "CR.LF": b"\r.\n",
}


@pytest.mark.parametrize("lookalike", END_OF_DATA_LOOKALIKES.values(), ids=END_OF_DATA_LOOKALIKES.keys())
def test_smuggled_message_stays_inside_the_first(relay, sink, lookalike):
    data = b"Subject: carrier\r\n\r\nhello" + lookalike + SMUGGLED + b"\r\n.\r\n"
    replies = send_data(relay, data)
    assert replies[0].startswith("250 2.0.0 Ok: queued as "), replies
    assert replies[1:] == ["221 2.0.0 Bye"], "the relay answered text inside DATA as commands"

    relay.send("alice@example.net", ["marker@example.com"])
    sink.wait_for(2)
    wait_until(lambda: relay.queue_files() == [], what="an empty queue")
    messages = list(sink.messages)
    assert sorted(m.recipients for m in messages) == [["bob@example.com"], ["marker@example.com"]]
    [carrier] = [m for m in messages if m.recipients == ["bob@example.com"]]
    assert b"Subject: carrier\r\n" in carrier.content
    assert b"MAIL FROM:<evil@example.net>\r\n" in carrier.content  # text, not a command
    assert_crlf_only(carrier.content)
    assert b"." not in lines_of(carrier.content), carrier.content
