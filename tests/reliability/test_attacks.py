"""Attacks and bad input that tests/relay does not already cover; docs/reliability.md lists them all.

Already proven elsewhere, and only referenced here: eight bare-CR/LF smuggling variants
(tests/relay/test_line_ends.py), commands pipelined behind STARTTLS (test_inbound_tls.py),
the classic open-relay tricks (test_relay_access.py), control bytes in MAIL and RCPT,
SIZE, body size, recipient and hop limits (test_smtp_limits.py), a next hop that is this
host (test_routing_mx.py), and garbage, 10 MB and cut-short requests and a foreign user
on the control socket (test_control_api.py).
"""

import json
import socket
import time

import pytest

from relay.control.client import ControlClient
from tests.support.net import wait_until
from tests.support.raw_smtp import RawSmtp

UNTRUSTED = "127.0.0.2"
SMUGGLED = (b"MAIL FROM:<evil@example.net>\r\nRCPT TO:<victim@example.com>\r\nDATA\r\n"
            b"Subject: smuggled\r\n\r\nsmuggled\r\n")


def only_the_marker_arrives(relay, sink) -> None:
    """Send a good message and wait for it: whatever was refused before it never reached the next hop."""
    relay.send("alice@example.net", ["marker@example.com"])
    sink.wait_for(1)
    wait_until(lambda: relay.queue_files() == [], what="an empty queue")
    time.sleep(0.2)
    assert [m.recipients for m in sink.messages] == [["marker@example.com"]]


def transaction(relay, data: bytes, helo: bytes = b"EHLO client.example.net", rcpt: bytes = b"<bob@example.com>",
                source: str = UNTRUSTED) -> list[str]:
    """One transaction with exact bytes after DATA, then QUIT; every reply's last line, in order."""
    with RawSmtp(relay.port, source=source) as client:
        replies = [client.greeting(), client.command(helo)]
        replies.append(client.command(b"MAIL FROM:<alice@example.net>"))
        replies.append(client.command(b"RCPT TO:" + rcpt))
        replies.append(client.command(b"DATA"))
        if replies[-1].startswith("354"):
            client.send(data)
            replies.append(client.reply()[-1])
        client.send(b"QUIT\r\n")
        while not replies[-1].startswith("221 "):
            replies.append(client.reply()[-1])
        return replies


# --- SMTP smuggling with NUL bytes ---------------------------------------------------------


@pytest.mark.parametrize("lookalike", [b"\r\n\0.\r\n", b"\r\n.\0\r\n"], ids=["CRLF NUL . CRLF", "CRLF . NUL CRLF"])
def test_an_end_of_data_disguised_by_a_nul_byte_is_refused_whole(relay, sink, lookalike):
    """A next hop that drops NUL bytes would read <CRLF>.<CRLF> and then the smuggled commands."""
    replies = transaction(relay, b"Subject: carrier\r\n\r\nhello" + lookalike + SMUGGLED + b"\r\n.\r\n")
    assert replies[5] == "554 5.6.0 Error: message content contains NUL characters", replies
    assert replies[6:] == ["221 2.0.0 Bye"], "the relay answered text inside DATA as commands"
    only_the_marker_arrives(relay, sink)


def test_nul_anywhere_in_the_message_is_refused_and_the_session_goes_on(relay, sink):
    with RawSmtp(relay.port, source=UNTRUSTED) as client:
        client.start_session()
        client.command("MAIL FROM:<alice@example.net>")
        client.command("RCPT TO:<bob@example.com>")
        client.command("DATA")
        client.send(b"Subject: nul\r\n\r\nbinary \0 data\r\n.\r\n")
        assert client.reply()[-1].startswith("554 5.6.0 ")
        assert client.command("MAIL FROM:<alice@example.net>") == "250 2.1.0 Ok"
        assert client.command("RCPT TO:<marker@example.com>") == "250 2.1.5 Ok"
        assert client.command("DATA").startswith("354 ")
        client.send(b"Subject: clean\r\n\r\nclean\r\n.\r\n")
        assert client.reply()[-1].startswith("250 2.0.0 Ok: queued as ")
    [message] = sink.wait_for(1)
    assert message.recipients == ["marker@example.com"] and b"\0" not in message.content


# --- the HELO name goes into our Received: header --------------------------------------------


@pytest.mark.parametrize("command", [b"EHLO evil\rX-Injected: yes", b"HELO evil\rX-Injected: yes",
                                     b"EHLO a\x00b", b"EHLO \x1b[31mred", b"EHLO tab\x7f"],
                         ids=["EHLO with bare CR", "HELO with bare CR", "NUL", "ESC", "DEL"])
def test_control_bytes_in_the_helo_name_are_refused_and_never_reach_a_header(relay, sink, command):
    """MAIL may follow (as Postfix's smtpd_helo_required = no); the refused name is not taken."""
    replies = transaction(relay, b"Subject: x\r\n\r\nx\r\n.\r\n", helo=command)
    assert replies[1] == "501 5.5.2 Helo command rejected: Invalid name"
    assert replies[5].startswith("250 ")
    [message] = sink.wait_for(1)
    assert message.content.startswith(f"Received: from unknown (unknown [{UNTRUSTED}])\r\n".encode())
    assert b"X-Injected" not in message.content


def test_a_refused_helo_name_leaves_no_header_even_after_a_good_one(relay, sink):
    """A bad second EHLO must not keep the first name nor take its own."""
    replies = transaction(relay, b"Subject: x\r\n\r\nx\r\n.\r\n", helo=b"EHLO good.example.net")
    assert replies[5].startswith("250 ")
    with RawSmtp(relay.port, source=UNTRUSTED) as client:
        client.start_session()
        assert client.command(b"EHLO evil\rX-Injected: yes").startswith("501 ")
        assert client.command("MAIL FROM:<alice@example.net>").startswith("250 ")
        assert client.command("RCPT TO:<carol@example.com>").startswith("250 ")
        assert client.command("DATA").startswith("354 ")
        assert client.command(b"Subject: y\r\n\r\ny\r\n.").startswith("250 ")
    messages = sink.wait_for(2)
    assert all(b"X-Injected" not in m.content for m in messages)
    [second] = [m for m in messages if m.recipients == ["carol@example.com"]]
    assert second.content.startswith(f"Received: from unknown (unknown [{UNTRUSTED}])\r\n".encode())


# --- over-long input, non-ASCII input without SMTPUTF8 ---------------------------------------------
# (A DATA line of any length is taken, as Postfix takes it: tests/relay/test_receive_conformance.py.)


@pytest.mark.parametrize("length", [3000, 100_000], ids=["3 kB", "100 kB"])
def test_an_over_long_command_line_is_refused_and_the_session_goes_on(relay, sink, length):
    with RawSmtp(relay.port, source=UNTRUSTED) as client:
        client.start_session()
        reply = client.command(b"RCPT TO:<" + b"a" * length + b"@example.com>")
        assert reply == "500 5.5.2 gw.example.com Error: command too long"
        assert client.command("NOOP") == "250 2.0.0 Ok"
    only_the_marker_arrives(relay, sink)


@pytest.mark.parametrize(("command", "reply"), [
    ("MAIL FROM:<alice@exämple.net>".encode(), "501 5.1.7 Bad sender address syntax"),
    (b"MAIL FROM:<j\xf6rg@example.net>", "500 5.5.2 Error: bad UTF-8 syntax"),
    (b"EHLO ex\xe4mple.net", "500 5.5.2 Error: bad UTF-8 syntax"),
], ids=["domain", "Latin-1 local part", "Latin-1 EHLO"])
def test_non_ascii_that_postfix_refuses_without_smtputf8_is_refused(relay, sink, command, reply):
    with RawSmtp(relay.port, source=UNTRUSTED) as client:
        client.start_session()
        assert client.command(command) == reply
    only_the_marker_arrives(relay, sink)


def test_non_ascii_recipient_domain_is_refused(relay, sink):
    with RawSmtp(relay.port, source=UNTRUSTED) as client:
        client.start_session()
        assert client.command("MAIL FROM:<alice@example.net>") == "250 2.1.0 Ok"
        assert client.command("RCPT TO:<bob@exämple.com>".encode()) == "501 5.1.3 Bad recipient address syntax"
        assert client.command("DATA") == "554 5.5.1 Error: no valid recipients"
    only_the_marker_arrives(relay, sink)


def test_8bit_body_is_taken_as_8bitmime_and_passed_on_unchanged(relay, sink):
    body = "Subject: =?utf-8?q?gr=C3=BC=C3=9Fe?=\r\n\r\nGrüße aus Köln\r\n".encode()
    assert transaction(relay, body + b".\r\n")[5].startswith("250 ")
    [message] = sink.wait_for(1)
    assert message.content.endswith(body)


# --- a mail loop at the default hop count -------------------------------------------------------------


def received_lines(count: int) -> bytes:
    return b"".join(b"Received: from h%d.example.net by h%d.example.net; Mon, 1 Jan 2024 00:00:00 +0000\r\n"
                    % (n, n + 1) for n in range(count))


def test_fifty_received_headers_is_a_loop_at_the_default_limit(relay, sink):
    replies = transaction(relay, received_lines(50) + b"Subject: loop\r\n\r\nloop\r\n.\r\n")
    assert replies[5] == "554 5.4.0 Error: too many hops"
    assert transaction(relay, received_lines(49) + b"Subject: ok\r\n\r\nok\r\n.\r\n",
                       rcpt=b"<marker@example.com>")[5].startswith("250 ")
    [message] = sink.wait_for(1)
    assert message.content.count(b"Received: ") == 50  # theirs and ours


# --- open relay: tricks beyond the classic ones in test_relay_access.py ----------------------------------

MORE_ROUTING_TRICKS = {
    "upper-case percent hack": "<USER%EVIL.ORG@EXAMPLE.COM>",
    "upper-case outside domain": "<user@EVIL.ORG>",
    "upper-case with trailing dot": "<user@EVIL.ORG.>",
    "relay domain as a label, trailing dot": "<user@EXAMPLE.COM.evil.org.>",
    "source route of two hops": "<@example.com,@evil.org:user@evil.org>",
    "address literal of this host": "<postmaster@[127.0.0.1]>",
    "IPv6 address literal": "<user@[IPv6:::1]>",
    "escaped at sign": "<user\\@evil.org@example.com>",
    "percent in the domain": "<user@evil.org%example.com>",
    "no angle brackets": "user@evil.org",
    "with a DSN parameter": "<user@evil.org> NOTIFY=NEVER",
    "empty local part": "<@example.com>",
}


@pytest.mark.parametrize("rcpt", MORE_ROUTING_TRICKS.values(), ids=MORE_ROUTING_TRICKS.keys())
def test_more_routing_tricks_are_refused_and_never_relayed(relay, sink, rcpt):
    with RawSmtp(relay.port, source=UNTRUSTED) as client:
        client.start_session()
        assert client.command("MAIL FROM:<postmaster@example.com>") == "250 2.1.0 Ok"
        reply = client.command(f"RCPT TO:{rcpt}")
        assert reply[:1] == "5", reply
        assert client.command("DATA") == "554 5.5.1 Error: no valid recipients"
    only_the_marker_arrives(relay, sink)


# --- control socket: half a request, then silence ------------------------------------------------------------


def test_half_a_control_request_then_silence_is_cut_and_others_are_served_meanwhile(relay):
    path = str(relay.workdir / "control.sock")
    stalled = []
    try:
        for _ in range(5):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(path)
            sock.sendall(b'{"method": "io.postern.Status.Get", "param')
            stalled.append(sock)
        started = time.monotonic()
        with ControlClient(path, timeout=5) as client:  # others are served meanwhile
            assert client.call("io.postern.Control.GetVersion")["api"] == 1
        assert relay.send("alice@example.net", ["bob@example.com"]) == {}
        stalled[0].sendall(b'eters": {}}\0')  # the rest, a little late: the request is served
        stalled[0].settimeout(5)
        assert "status" in json.loads(stalled[0].recv(65536).rstrip(b"\0"))["parameters"]
        stalled[1].settimeout(10)
        reply = json.loads(stalled[1].recv(65536).rstrip(b"\0"))  # the others are told, and cut
        assert reply == {"error": "io.postern.Control.MalformedRequest",
                         "parameters": {"reason": "request not finished within 5 s"}}
        assert 4.5 < time.monotonic() - started < 8
        assert stalled[1].recv(1) == b""
    finally:
        for sock in stalled:
            sock.close()
    with ControlClient(path, timeout=5) as client:
        assert client.call("io.postern.Status.Get")["status"]["counters"]["received"] == 1


def test_a_stream_call_refused_at_once_is_answered_and_closed(relay):
    """The fuzzing found it: the stream's pending hang-up read made the tidy-up read fail, and the
    connection was never closed (RuntimeError in the server task)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(str(relay.workdir / "control.sock"))
        sock.sendall(b'{"method": "io.postern.Log.Tail", "parameters": {"lines": -1}, "more": true}\0')
        reply = b""
        while chunk := sock.recv(65536):  # until the daemon closes
            reply += chunk
    assert json.loads(reply.rstrip(b"\0")) == {"error": "org.varlink.service.InvalidParameter",
                                               "parameters": {"parameter": "lines"}}
    time.sleep(0.3)
    assert "Traceback" not in relay.log()


# --- connection cap ----------------------------------------------------------------------------------------


def test_a_flood_from_outside_does_not_lock_out_my_networks(make_relay, sink):
    """The hostile-clients scenario does this with hundreds of connections; here the rule itself."""
    relay = make_relay(sink.port, max_connections=3)
    flood = [RawSmtp(relay.port, source=f"127.0.0.{10 + n}") for n in range(3)]
    try:
        assert all(client.greeting().startswith("220 ") for client in flood)
        with RawSmtp(relay.port, source="127.0.0.20") as extra:
            assert extra.wait_closed(timeout=5).startswith(b"421 4.7.0 ")
        assert relay.send("alice@example.com", ["bob@example.org"]) == {}  # 127.0.0.1 is in my_networks
    finally:
        for client in flood:
            client.close()
    [message] = sink.wait_for(1)
    assert message.recipients == ["bob@example.org"]


# --- what the relay says back ------------------------------------------------------------------------------


def test_an_unknown_command_is_not_echoed_with_its_control_bytes(relay):
    """aiosmtpd repeats an unknown command in its 500; a bare CR in it would split the reply in two."""
    with RawSmtp(relay.port, source=UNTRUSTED) as client:
        client.start_session()
        client.send(b"X\r250 2.0.0 Ok\x00\x1b\r\n")
        assert client.reply() == ['500 5.5.2 Error: command "X?250" not recognized']
        assert client.command("NOOP") == "250 2.0.0 Ok"
