"""CHUNKING (RFC 3030): messages sent with BDAT, as Exchange Online sends them.

The relay answers BDAT as Postfix's smtpd does. Chunks are read by their size, never
as lines: text in a chunk that looks like a command or an end of data is message.
The joined message goes through DATA's end of message, so bare CR and LF become CRLF
there too, across chunk boundaries, and the next hop gets what DATA would give it.
"""

import re

import pytest

from tests.support.exchange_client import bdat, chunks_of, send_like_exchange
from tests.support.net import wait_until
from tests.support.raw_smtp import RawSmtp

QUEUED = re.compile(r"250 2\.0\.0 Ok: queued as \w+")
# What the relay puts above the message: its Received: header (folded) and its loop marker.
TRACE = re.compile(rb"(?:(?:Received|X-Postern-Processed):[^\r\n]*\r\n(?:[ \t][^\r\n]*\r\n)*)+")


def below_trace(content: bytes) -> bytes:
    trace = TRACE.match(content)
    assert trace, content[:300]
    return content[trace.end():]


def session(relay, data: bytes) -> list[str]:
    """Greeting, EHLO, then `data` in one write and QUIT: the last line of every reply after EHLO."""
    with RawSmtp(relay.port) as client:
        client.start_session()
        client.send(data + b"QUIT\r\n")
        replies = [client.reply()[-1]]
        while not replies[-1].startswith("221 "):
            replies.append(client.reply()[-1])
        return replies


def envelope(rcpt: str = "bob@example.com") -> bytes:
    return b"MAIL FROM:<alice@example.net>\r\nRCPT TO:<%s>\r\n" % rcpt.encode()


def transaction(chunks: list[bytes], rcpt: str = "bob@example.com") -> bytes:
    return envelope(rcpt) + bdat(chunks)


def test_exchange_sends_a_message_with_bare_line_feeds_in_chunks(relay, sink):
    message = b"From: alice@example.net\nSubject: from Exchange\n\nfirst line\nsecond line\r\nthird\n" * 40
    result = send_like_exchange(relay.port, ["bob@example.com", "carol@example.com"], message, chunk_size=1000)

    assert result.ehlo[-1] == "250 CHUNKING"
    assert "BINARYMIME" not in result.extensions
    assert result.mail == "250 2.1.0 Ok"
    assert result.rcpts == ["250 2.1.5 Ok"] * 2
    assert result.chunks[:-1] == ["250 2.0.0 Ok: 1000 bytes"] * 3
    assert QUEUED.fullmatch(result.chunks[-1]), result.chunks
    assert result.quit == "221 2.0.0 Bye"
    [received] = sink.wait_for(1)
    assert received.sender == "<>"
    assert received.recipients == ["bob@example.com", "carol@example.com"]
    assert below_trace(received.content) == re.sub(rb"(?<!\r)\n", b"\r\n", message)


def test_the_message_may_end_with_an_empty_last_chunk(relay, sink):
    message = b"Subject: empty last\r\n\r\nbody\r\n"
    result = send_like_exchange(relay.port, ["bob@example.com"], message, chunk_size=10, empty_last=True)
    assert result.chunks[:-1] == ["250 2.0.0 Ok: 10 bytes", "250 2.0.0 Ok: 10 bytes", "250 2.0.0 Ok: 9 bytes"]
    assert QUEUED.fullmatch(result.chunks[-1]), result.chunks
    [received] = sink.wait_for(1)
    assert below_trace(received.content) == message


def test_commands_and_a_lone_dot_inside_a_chunk_are_message_text(relay, sink):
    message = (b"Subject: carrier\r\n\r\nbefore\r\n.\r\nMAIL FROM:<evil@example.net>\r\n"
               b"RCPT TO:<victim@example.com>\r\nDATA\r\nSubject: smuggled\r\n\r\n..two dots stay two\r\n.\r\nQUIT\r\n")
    replies = session(relay, transaction([message]))
    assert replies[:2] == ["250 2.1.0 Ok", "250 2.1.5 Ok"]
    assert QUEUED.fullmatch(replies[2]), replies
    assert replies[3:] == ["221 2.0.0 Bye"], "text inside the chunk was answered as commands"

    relay.send("alice@example.net", ["marker@example.com"])
    messages = sink.wait_for(2)
    wait_until(lambda: relay.queue_files() == [], what="an empty queue")
    assert sorted(m.recipients for m in sink.messages) == [["bob@example.com"], ["marker@example.com"]]
    [carrier] = [m for m in messages if m.recipients == ["bob@example.com"]]
    assert below_trace(carrier.content) == message  # not dot-unstuffed: BDAT content is sent as it is


SMUGGLING = {
    # What a lax next hop might read as an end of data, cut across the chunk boundary.
    "LF | .LF": (b"hello\n", b".\n"),
    "CR | LF.CRLF": (b"hello\r", b"\n.\r\n"),
    "LF. | CR": (b"hello\n.", b"\r"),
    "CRLF. | LF": (b"hello\r\n.", b"\n"),
    "CR.CR | ": (b"hello\r.\r", b""),
}


@pytest.mark.parametrize("halves", SMUGGLING.values(), ids=SMUGGLING.keys())
def test_bare_line_ends_are_normalised_across_chunk_boundaries(relay, sink, halves):
    first, second = halves
    smuggled = b"MAIL FROM:<evil@example.net>\r\nRCPT TO:<victim@example.com>\r\nDATA\r\nsmuggled\r\n"
    head = b"Subject: carrier\r\n\r\n" + first
    replies = session(relay, transaction([head, second + smuggled]))
    assert replies[2] == f"250 2.0.0 Ok: {len(head)} bytes"
    assert QUEUED.fullmatch(replies[3]), replies
    assert replies[4:] == ["221 2.0.0 Bye"]

    relay.send("alice@example.net", ["marker@example.com"])
    sink.wait_for(2)
    wait_until(lambda: relay.queue_files() == [], what="an empty queue")
    assert sorted(m.recipients for m in sink.messages) == [["bob@example.com"], ["marker@example.com"]]
    [carrier] = [m for m in sink.messages if m.recipients == ["bob@example.com"]]
    body = below_trace(carrier.content)
    assert re.search(rb"\r(?!\n)|(?<!\r)\n", body) is None, body
    # A line holding a lone dot is message text here, as any in BDAT content: it was dot-stuffed
    # on the way to the next hop, which found the smuggled commands inside the one message.
    assert b"\r\nMAIL FROM:<evil@example.net>\r\n" in body


def test_a_cr_and_lf_split_between_chunks_are_one_line_end(relay, sink):
    message = b"Subject: split\r\n\r\none\r\ntwo\r\n"
    cut = message.index(b"\ntwo")
    replies = session(relay, transaction([message[:cut], message[cut:]]))  # ...one<CR> | <LF>two...
    assert QUEUED.fullmatch(replies[3]), replies
    [received] = sink.wait_for(1)
    assert below_trace(received.content) == message


def test_chunks_past_the_size_limit_are_read_and_refused(make_relay, sink):
    relay = make_relay(sink.port, message_size_limit=2048)
    too_much = b"MAIL FROM:<evil@example.net>\r\nRCPT TO:<victim@example.com>\r\n".ljust(1000, b"x")
    replies = session(relay, transaction([b"Subject: big\r\n\r\n".ljust(1500, b"y"), too_much, b"end\r\n"])
                      + transaction([b"Subject: small\r\n\r\nfits\r\n"]))
    assert replies[:3] == ["250 2.1.0 Ok", "250 2.1.5 Ok", "250 2.0.0 Ok: 1500 bytes"]
    assert replies[3:5] == ["552 5.3.4 Chunk exceeds message size limit",
                            "551 5.0.0 Discarded 5 bytes after earlier error"]
    assert replies[5:7] == ["250 2.1.0 Ok", "250 2.1.5 Ok"]  # in step: the next transaction goes through
    assert QUEUED.fullmatch(replies[7]), replies
    assert replies[8:] == ["221 2.0.0 Bye"]
    [received] = sink.wait_for(1)
    assert below_trace(received.content) == b"Subject: small\r\n\r\nfits\r\n"
    assert ("NOQUEUE: reject: BDAT from unknown[127.0.0.1]: 552 5.3.4 Chunk exceeds message size limit; "
            "from=<alice@example.net> to=<bob@example.com> proto=ESMTP helo=<client.example.net>") in relay.log()


def test_a_client_sending_far_past_the_size_limit_is_cut_off(make_relay, sink):
    relay = make_relay(sink.port, message_size_limit=2048)
    with RawSmtp(relay.port) as client:
        client.start_session()
        client.send(envelope() + b"BDAT 4000\r\n")
        assert client.reply()[-1] == "250 2.1.0 Ok"
        assert client.reply()[-1] == "250 2.1.5 Ok"
        assert client.reply()[-1] == "552 5.3.4 Chunk exceeds message size limit"
        assert client.wait_closed(10) == b""
    relay.wait_log(r"NOQUEUE: too much BDAT content -- disabling further input from unknown\[127\.0\.0\.1\]")
    assert relay.queue_files() == []


def test_bdat_outside_a_transaction_is_refused_and_its_chunk_skipped(relay, sink):
    replies = session(relay, b"BDAT 6\r\nNOOP\r\nBDAT 6 LAST\r\nNOOP\r\nNOOP\r\n"
                             b"MAIL FROM:<alice@example.net>\r\nRCPT TO:<>\r\nBDAT 6 LAST\r\nNOOP\r\n")
    assert replies == [
        "503 5.5.1 Error: need RCPT command",
        "551 5.0.0 Discarded 6 bytes after earlier error",
        "250 2.0.0 Ok",  # the one NOOP outside the chunks
        "250 2.1.0 Ok",
        "501 5.1.3 Bad recipient address syntax",
        "554 5.5.1 Error: no valid recipients",
        "221 2.0.0 Bye",
    ]
    # (the session's replies, pipelined, may all be out before the end of the turn that writes its log lines)
    relay.wait_log(re.escape("NOQUEUE: reject: BDAT from unknown[127.0.0.1]: 503 5.5.1 Error: need RCPT command;"))
    relay.wait_log(re.escape("NOQUEUE: reject: BDAT from unknown[127.0.0.1]: 554 5.5.1 Error: no valid recipients;"))
    assert relay.queue_files() == []


def test_commands_that_cannot_follow_bdat(relay, sink):
    replies = session(relay, envelope() + b"BDAT 3\r\nabc"
                      + b"DATA\r\nMAIL FROM:<alice@example.net>\r\nRCPT TO:<carol@example.com>\r\nBDAT 0\r\n"
                      + b"BDAT 5 LAST\r\nlast\n")
    assert replies == [
        "250 2.1.0 Ok",
        "250 2.1.5 Ok",
        "250 2.0.0 Ok: 3 bytes",
        "503 5.5.1 Error: DATA after BDAT",
        "503 5.5.1 Error: MAIL after BDAT",
        "503 5.5.1 Error: RCPT after BDAT",
        "551 5.7.1 Null BDAT request",
        "551 5.0.0 Discarded 5 bytes after earlier error",
        "221 2.0.0 Bye",
    ]
    assert relay.queue_files() == []


def test_rset_discards_the_chunks_taken(relay, sink):
    replies = session(relay, envelope() + b"BDAT 20\r\nSubject: dropped\r\n\r\n" + b"RSET\r\n"
                      + transaction([b"Subject: kept\r\n\r\nbody\r\n"]))
    assert replies[2:4] == ["250 2.0.0 Ok: 20 bytes", "250 2.0.0 Ok"]
    assert QUEUED.fullmatch(replies[6]), replies
    [received] = sink.wait_for(1)
    assert below_trace(received.content) == b"Subject: kept\r\n\r\nbody\r\n"


def test_pipelined_transactions_with_several_chunks_each(relay, sink):
    first = b"Subject: one\r\n\r\n" + b"line of the first message\r\n" * 100
    second = b"Subject: two\r\n\r\n" + b"line of the second\n" * 100
    replies = session(relay, transaction(chunks_of(first, 700))
                      + transaction(chunks_of(second, 333), "carol@example.com"))
    assert replies[:6] == ["250 2.1.0 Ok", "250 2.1.5 Ok"] + ["250 2.0.0 Ok: 700 bytes"] * 3 + [replies[5]]
    assert QUEUED.fullmatch(replies[5]) and QUEUED.fullmatch(replies[-2]), replies
    assert len(replies) == 6 + 8 + 1
    received = {m.recipients[0]: m for m in sink.wait_for(2)}
    assert below_trace(received["bob@example.com"].content) == first
    assert below_trace(received["carol@example.com"].content) == re.sub(rb"(?<!\r)\n", b"\r\n", second)


def test_a_client_gone_inside_a_chunk_leaves_nothing_queued(relay, sink):
    with RawSmtp(relay.port) as client:
        client.start_session()
        client.send(envelope() + b"BDAT 100 LAST\r\nSubject: cut\r\n\r\nhalf")
        assert client.reply()[-1] == "250 2.1.0 Ok"
        assert client.reply()[-1] == "250 2.1.5 Ok"
    relay.wait_log(r"lost connection after BDAT \(\d+ bytes\) from unknown\[127\.0\.0\.1\]")
    relay.send("alice@example.net", ["marker@example.com"])
    [received] = sink.wait_for(1)
    assert received.recipients == ["marker@example.com"]
    wait_until(lambda: relay.queue_files() == [], what="an empty queue")
    assert list((relay.state_dir / "queue" / "tmp").iterdir()) == []


@pytest.mark.parametrize("command", [b"BDAT", b"BDAT ten", b"BDAT 10 LATER", b"BDAT -1", b"BDAT 1 LAST x"])
def test_malformed_bdat_hangs_up(relay, command):
    with RawSmtp(relay.port) as client:
        client.start_session()
        assert client.command(command) == "521 5.5.4 Syntax: BDAT count [LAST]"
        assert client.wait_closed(10) == b""
    relay.wait_log(re.escape("NOQUEUE: reject: BDAT from unknown[127.0.0.1]: 521 5.5.4 Syntax: BDAT count [LAST];"))


def test_binarymime_is_not_offered(relay):
    with RawSmtp(relay.port) as client:
        client.start_session()
        assert client.command("MAIL FROM:<alice@example.net> BODY=BINARYMIME") == \
            "555 5.5.4 Unsupported option: BODY=BINARYMIME"
        assert client.command("MAIL FROM:<alice@example.net> BODY=8BITMIME") == "250 2.1.0 Ok"


@pytest.mark.parametrize("message, reply", [
    (b"Subject: nul\r\n\r\nnul \0 here\r\n", "554 5.6.0 Error: message content contains NUL characters"),
    (b"Received: from a\r\n" * 50 + b"Subject: hops\r\n\r\nbody\r\n", "554 5.4.0 Error: too many hops"),
], ids=["NUL", "hop count"])
def test_the_checks_at_the_end_of_data_apply(relay, sink, message, reply):
    replies = session(relay, transaction(chunks_of(message, 16)))
    assert replies[-2:] == [reply, "221 2.0.0 Bye"]
    relay.wait_log(re.escape("NOQUEUE: reject: END-OF-MESSAGE from unknown[127.0.0.1]: " + reply))
    assert relay.queue_files() == []


OUR_TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
EXCHANGE_ONLINE = "127.0.0.3"


@pytest.mark.parametrize("tenant, relayed", [(OUR_TENANT, True), ("0b5e0e8c-1234-4c1d-9f0e-0123456789ab", False)],
                         ids=["our tenant", "another tenant"])
def test_the_tenant_check_decides_outbound_mail_sent_in_chunks(make_relay, sink, tenant, relayed):
    relay = make_relay(sink.port, m365={"tenant_ids": [OUR_TENANT], "networks": [f"{EXCHANGE_ONLINE}/32"]})
    message = f"X-MS-Exchange-CrossTenant-Id: {tenant}\nSubject: outbound\n\nbare\nline feeds\n".encode()
    result = send_like_exchange(relay.port, ["carol@partner.org"], message, chunk_size=32, source=EXCHANGE_ONLINE)
    assert result.rcpts == ["250 2.1.5 Ok"]
    assert result.chunks[:-1] == ["250 2.0.0 Ok: 32 bytes"] * (len(message) // 32)
    if relayed:
        assert QUEUED.fullmatch(result.chunks[-1]), result.chunks
        [received] = sink.wait_for(1)
        assert below_trace(received.content) == message.replace(b"\n", b"\r\n")
    else:
        assert result.chunks[-1].startswith("550 5.7.1 Relay access denied: Microsoft 365 tenant check failed")
        assert relay.queue_files() == []
        relay.wait_log(r"NOQUEUE: reject: END-OF-MESSAGE from unknown\[127\.0\.0\.3\]: 550 5\.7\.1 .*to=<carol@partner\.org>")
