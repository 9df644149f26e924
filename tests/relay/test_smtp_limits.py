"""The limits a mail admin sets on the receiving side, seen from real clients."""

import socket
import time

import psutil
import pytest

from tests.support.net import wait_until
from tests.support.raw_smtp import RawSmtp


def marker_arrives(relay, sink) -> None:
    """Send a good message and wait for it: whatever was refused before it never reached the sink."""
    relay.send("alice@example.net", ["marker@example.com"])
    sink.wait_for(1)
    assert sink.recipients() == ["marker@example.com"]
    wait_until(lambda: relay.queue_files() == [], what="an empty queue")


def body_of_size(size: int) -> bytes:
    """A message of exactly `size` bytes in short CRLF lines."""
    head = b"Subject: sized\r\n\r\n"
    lines, rest = divmod(size - len(head), 80)
    body = head + (b"z" * 78 + b"\r\n") * lines
    if rest:
        body += b"z" * max(rest - 2, 0) + b"\r\n"[: rest]
    assert len(body) == size and body.endswith(b"\n")
    return body


# --- message size -----------------------------------------------------------------


def test_size_above_the_limit_is_refused_at_mail(make_relay, sink):
    relay = make_relay(sink.port, message_size_limit=10000)
    with relay.smtp() as client:
        assert "SIZE 10000" in client.ehlo_resp.decode().splitlines()
        code, text = client.mail("alice@example.net", ["SIZE=10001"])
        assert (code, text.decode()) == (552, "5.3.4 Message size exceeds fixed limit")
        code, _ = client.rcpt("bob@example.com")
        assert code == 503  # no transaction was started
        client.rset()
        assert client.mail("alice@example.net", ["SIZE=9000"])[0] == 250


def test_body_over_the_limit_without_size_is_refused_and_not_queued(make_relay, sink):
    relay = make_relay(sink.port, message_size_limit=10000)
    body = b"Subject: big\r\n\r\n" + (b"x" * 70 + b"\r\n") * 200  # ~14 kB
    with relay.smtp() as client:
        client.mail("alice@example.net")
        client.rcpt("bob@example.com")
        code, text = client.data(body)
        assert (code, text.decode()) == (552, "5.3.4 Message size exceeds fixed limit")
        # The session goes on: the next, smaller message is taken.
        client.mail("alice@example.net")
        client.rcpt("small@example.com")
        assert client.data(b"Subject: small\r\n\r\nsmall\r\n")[0] == 250
    sink.wait_for(1)
    assert sink.recipients() == ["small@example.com"]
    assert relay.queue_files() == []
    assert list((relay.state_dir / "queue" / "tmp").iterdir()) == []


def test_our_received_header_counts_towards_the_limit(make_relay, sink):
    """A body just under the limit that the added Received: header pushes over is refused, not sent oversize."""
    relay = make_relay(sink.port, message_size_limit=10000)
    body = body_of_size(9950)
    with relay.smtp() as client:
        client.mail("alice@example.net")
        client.rcpt("bob@example.com")
        code, text = client.data(body)
    assert (code, text.decode()) == (552, "5.3.4 Message size exceeds fixed limit")
    marker_arrives(relay, sink)


# --- recipients and hops ----------------------------------------------------------


def test_recipient_limit_defers_the_extra_recipient(make_relay, sink):
    relay = make_relay(sink.port, recipient_limit=3)
    with relay.smtp() as client:
        client.mail("alice@example.net")
        for n in range(3):
            assert client.rcpt(f"r{n}@example.com")[0] == 250
        code, text = client.rcpt("r3@example.com")
        assert (code, text.decode()) == (452, "4.5.3 Error: too many recipients")
        assert client.data(b"Subject: three\r\n\r\nthree\r\n")[0] == 250
    sink.wait_for(1)
    assert sorted(sink.recipients()) == ["r0@example.com", "r1@example.com", "r2@example.com"]


def received_headers(count: int) -> bytes:
    return b"".join(
        b"Received: from hop%d.example.net by hop%d.example.net; Mon, 1 Jan 2024 00:00:00 +0000\r\n" % (n, n + 1)
        for n in range(count)
    )


def test_too_many_received_headers_is_a_mail_loop(make_relay, sink):
    relay = make_relay(sink.port, hopcount_limit=5)
    with relay.smtp() as client:
        client.mail("alice@example.net")
        client.rcpt("bob@example.com")
        code, text = client.data(received_headers(6) + b"Subject: loop\r\n\r\nloop\r\n")
    assert (code, text.decode()) == (554, "5.4.0 Error: too many hops")
    relay.wait_log(r"NOQUEUE: reject: END-OF-MESSAGE from unknown\[127\.0\.0\.1\]: 554 5\.4\.0 Error: too many hops")
    marker_arrives(relay, sink)


def test_received_headers_below_the_hop_limit_pass(make_relay, sink):
    relay = make_relay(sink.port, hopcount_limit=5)
    relay.send("alice@example.net", ["bob@example.com"], received_headers(4) + b"Subject: ok\r\n\r\nok\r\n")
    [message] = sink.wait_for(1)
    assert message.content.count(b"Received: ") == 5  # theirs and ours


# --- addresses ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        b"MAIL FROM:<ali\x00ce@example.net>",
        b"MAIL FROM:<ali\x07ce@example.net>",
        b"MAIL FROM:<alice@exa\x1bmple.net>",
        b"MAIL FROM:<ali\x7fce@example.net>",
        b"MAIL FROM:<ali\rce@example.net>",
    ],
    ids=["NUL", "BEL", "ESC", "DEL", "bare CR"],
)
def test_control_bytes_in_the_sender_are_refused(relay, sink, command):
    with RawSmtp(relay.port) as client:
        client.start_session()
        reply = client.command(command)
        assert reply[:1] == "5", reply
        client.command("RCPT TO:<bob@example.com>")
        assert client.command("DATA")[:3] != "354"
    marker_arrives(relay, sink)


@pytest.mark.parametrize(
    "rcpt",
    [b"<b\x00ob@example.com>", b"<bob@example.com\x00.evil.org>", b"<b\x01ob@example.com>", b"<bob\x7f@example.com>"],
    ids=["NUL", "NUL in domain", "SOH", "DEL"],
)
def test_control_bytes_in_a_recipient_are_refused(relay, sink, rcpt):
    with RawSmtp(relay.port) as client:
        client.start_session()
        assert client.command("MAIL FROM:<alice@example.net>").startswith("250 ")
        reply = client.command(b"RCPT TO:" + rcpt)
        assert reply[:1] == "5", reply
        assert client.command("DATA") == "554 5.5.1 Error: no valid recipients"
    marker_arrives(relay, sink)


# --- timeouts ---------------------------------------------------------------------


def test_idle_timeout_disconnects_a_silent_client(make_relay, sink):
    relay = make_relay(sink.port, idle_timeout="1s")
    with RawSmtp(relay.port) as client:
        client.start_session()
        started = time.monotonic()
        said = client.wait_closed(timeout=5)
        assert 0.8 < time.monotonic() - started < 5
    assert said == b"421 4.4.2 gw.example.com Error: timeout exceeded\r\n"  # Postfix's words
    relay.wait_log(r"timeout after EHLO from unknown\[127\.0\.0\.1\]")


def test_idle_timeout_spares_a_client_that_keeps_talking(make_relay, sink):
    relay = make_relay(sink.port, idle_timeout="1s")
    with RawSmtp(relay.port) as client:
        client.start_session()
        for _ in range(5):  # 2 s in all, never more than 0.4 s silent
            time.sleep(0.4)
            assert client.command("NOOP").startswith("250 ")


def test_idle_timeout_spares_a_client_sending_a_long_message_slowly(make_relay, sink):
    """Postfix's smtpd_timeout is per read: a slow but steady DATA transfer is not cut off."""
    relay = make_relay(sink.port, idle_timeout="1s")
    with RawSmtp(relay.port) as client:
        client.start_session()
        client.command("MAIL FROM:<alice@example.net>")
        client.command("RCPT TO:<bob@example.com>")
        assert client.command("DATA").startswith("354 ")
        client.send(b"Subject: slow\r\n\r\n")
        for n in range(5):  # 2 s in all
            time.sleep(0.4)
            client.send(b"line %d\r\n" % n)
        client.send(b".\r\n")
        assert client.reply()[-1].startswith("250 2.0.0 Ok: queued as ")
    [message] = sink.wait_for(1)
    assert message.content.endswith(b"line 4\r\n")


def test_session_timeout_cuts_a_client_that_keeps_sending_noops(make_relay, sink):
    relay = make_relay(sink.port, session_timeout="2s")  # idle_timeout stays 300 s
    with RawSmtp(relay.port) as client:
        started = time.monotonic()
        client.start_session()
        while time.monotonic() - started < 1.5:  # busy: a NOOP every 0.3 s
            time.sleep(0.3)
            assert client.command("NOOP") == "250 2.0.0 Ok"
        # No more commands, so none crosses the close; only the session limit can end it this soon.
        assert client.wait_closed(timeout=4) == b"421 4.4.2 gw.example.com Error: session time limit exceeded\r\n"
        elapsed = time.monotonic() - started
    assert 1.8 < elapsed < 4, elapsed
    relay.wait_log(r"session time limit exceeded for unknown\[127\.0\.0\.1\]")


# --- junk commands and connections --------------------------------------------------


def test_junk_command_limit_closes_a_noop_loop(make_relay, sink):
    relay = make_relay(sink.port, junk_command_limit=5)
    with RawSmtp(relay.port) as client:
        client.start_session()
        for _ in range(5):
            assert client.command("NOOP").startswith("250 ")
        reply = client.command("NOOP")
        assert reply == "421 4.7.0 gw.example.com Error: too many junk commands"
        client.wait_closed(timeout=5)


def test_junk_command_limit_counts_all_junk_commands_together(make_relay, sink):
    """The limit is on junk per session, not per command name: alternating them does not help."""
    relay = make_relay(sink.port, junk_command_limit=5)
    with RawSmtp(relay.port) as client:
        client.start_session()
        replies = [client.command(command) for command in ("NOOP", "HELP", "VRFY bob", "NOOP", "HELP")]
        assert all(reply[:1] in "25" for reply in replies), replies
        reply = client.command("VRFY bob")
        assert reply == "421 4.7.0 gw.example.com Error: too many junk commands"
        client.wait_closed(timeout=5)


# --- errors: Postfix's smtpd_soft_error_limit, smtpd_error_sleep_time, smtpd_hard_error_limit ---------


def test_the_error_that_reaches_hard_error_limit_ends_the_session(make_relay, sink):
    """A dictionary attack from outside: every RCPT refused, until the relay hangs up."""
    relay = make_relay(sink.port, hard_error_limit=4, error_sleep_time=0)
    with RawSmtp(relay.port, source="127.0.0.2") as client:  # not in my_networks
        client.start_session()
        assert client.command("MAIL FROM:<spammer@example.net>").startswith("250 ")
        for n in range(3):
            assert client.command(f"RCPT TO:<guess{n}@elsewhere.example.org>").startswith("554 5.7.1 ")
        client.send(b"RCPT TO:<guess3@elsewhere.example.org>\r\nRCPT TO:<guess4@elsewhere.example.org>\r\n")
        assert client.reply() == ["554 5.7.1 <guess3@elsewhere.example.org>: Relay access denied"]
        # the 421 follows the fourth refusal at once; the RCPT pipelined behind it is not answered
        assert client.wait_closed(timeout=5) == b"421 4.7.0 gw.example.com Error: too many errors\r\n"
    relay.wait_log(r"too many errors after RCPT from unknown\[127\.0\.0\.2\]")
    assert "guess4" not in relay.log()


def test_a_message_taken_forgives_the_errors_before_it(make_relay, sink):
    relay = make_relay(sink.port, hard_error_limit=4, error_sleep_time=0)
    with RawSmtp(relay.port) as client:
        client.start_session()
        for _ in range(2):
            for _ in range(3):
                assert client.command("MAIL FROM:<not an address").startswith("501 ")
            assert client.command("MAIL FROM:<alice@example.net>").startswith("250 ")
            assert client.command("RCPT TO:<bob@example.com>").startswith("250 ")
            assert client.command("DATA").startswith("354 ")
            assert client.command(b"Subject: hi\r\n\r\nhello\r\n.").startswith("250 2.0.0 Ok: queued as ")
        assert client.command("NOOP") == "250 2.0.0 Ok"  # six errors in the session, never four in a row


def test_past_soft_error_limit_every_reply_waits_error_sleep_time(make_relay, sink):
    relay = make_relay(sink.port, soft_error_limit=2, error_sleep_time="1s")
    with RawSmtp(relay.port) as client:
        client.start_session()
        started = time.monotonic()
        for _ in range(2):
            assert client.command("RCPT TO:<bob@example.com>").startswith("503 ")  # no MAIL yet
        before = time.monotonic() - started
        started = time.monotonic()
        assert client.command("NOOP") == "250 2.0.0 Ok"  # a good command is slowed down too
        slowed = time.monotonic() - started
    assert slowed >= 0.95, slowed
    assert before < slowed, (before, slowed)


def relay_rss(relay) -> int:
    """The resident memory of the daemon and its receiving processes, in bytes."""
    daemon = psutil.Process(relay.process.pid)
    return sum(p.memory_info().rss for p in [daemon, *daemon.children(recursive=True)])


def test_a_client_that_never_reads_its_replies_does_not_fill_the_relays_memory(make_relay, sink):
    """EHLO after EHLO, pipelined by a client that reads no reply (each short line asks for a long
    answer): once the replies fill the socket, the relay stops taking its commands instead of keeping
    every answer in memory; other clients are served meanwhile."""
    relay = make_relay(sink.port)
    before = relay_rss(relay)
    client = socket.create_connection(("127.0.0.1", relay.port))
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client.setblocking(False)
    commands = b"EHLO x\r\n" * 8192
    try:
        deadline = time.monotonic() + 8  # long enough for 30 MB or more of replies, were they kept
        while time.monotonic() < deadline:
            try:
                client.send(commands)
            except BlockingIOError:
                time.sleep(0.01)
        grown = relay_rss(relay) - before
        assert grown < 16 * 1024 * 1024, f"the relay grew by {grown // 1024} KiB"
        relay.send("alice@example.net", ["bob@example.com"])
        sink.wait_for(1)
    finally:
        client.close()


def test_max_connections_refuses_one_more_and_the_others_still_work(make_relay, sink):
    relay = make_relay(sink.port, max_connections=3)
    clients = [RawSmtp(relay.port) for _ in range(3)]
    try:
        for client in clients:
            assert client.greeting().startswith("220 gw.example.com ")
        with RawSmtp(relay.port, source="127.0.0.2") as extra:  # outside my_networks: they always get in
            assert extra.wait_closed(timeout=5) == (
                b"421 4.7.0 gw.example.com Error: too many connections, try again later\r\n"
            )
        for n, client in enumerate(clients):
            client.command("EHLO client.example.net")
            assert client.command("MAIL FROM:<alice@example.net>").startswith("250 ")
            assert client.command(f"RCPT TO:<r{n}@example.com>").startswith("250 ")
            assert client.command("DATA").startswith("354 ")
            client.send(b"Subject: busy\r\n\r\nbusy\r\n.\r\n")
            assert client.reply()[-1].startswith("250 2.0.0 Ok: queued as ")
        relay.wait_log(r"connection limit 3 reached")
    finally:
        for client in clients:
            client.close()
    sink.wait_for(3)
    # The slots come back once those clients are gone.
    wait_until(lambda: _greets(relay.port), what="a free connection slot")


def _greets(port: int) -> bool:
    try:
        with RawSmtp(port) as client:
            return client.greeting().startswith("220 ")
    except (ConnectionError, socket.timeout):
        return False


def test_the_longest_hostname_and_banner_the_configuration_takes_keep_each_reply_line_within_512_octets(make_relay, sink):
    from relay.config import MAX_BANNER, MAX_NAME

    hostname = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 61])
    assert len(hostname) == MAX_NAME
    relay = make_relay(sink.port, hostname=hostname, banner="B" * MAX_BANNER)
    with RawSmtp(relay.port) as client:
        greeting = client.reply()
        client.send(b"EHLO client.example.net\r\n")
        ehlo = client.reply()
    assert greeting == [f"220 {hostname} {'B' * MAX_BANNER}"]
    assert ehlo[0] == f"250-{hostname}"
    assert max(len(line) + 2 for line in greeting + ehlo) <= 512  # RFC 5321 4.5.3.1.5, CRLF included
