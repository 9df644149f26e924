"""Hostile header sections: megabytes of folded lines, and header_size_limit, seen from real clients.

A message's header is scanned at the end of DATA (hop count, loop marker, tenant check,
marker stripping) on the daemon's one event loop. Work that grows with the square of a
header's size stops every other client, the deliveries and the control API while it
runs: at 2 MB of folded header that was more than a minute. These tests send such
headers over SMTP and keep another client and the control API talking meanwhile.
"""

from __future__ import annotations

import re
import socket
import threading
import time

import pytest

from relay.control.client import ControlClient, Unreachable
from tests.support.raw_smtp import RawSmtp

# Far above what linear work on a few megabytes takes, even on a loaded machine, and
# far below what the quadratic scan took (about 70 s for the 2 MB header below).
PATIENCE = 20.0


def folded_field(name: bytes, size: int) -> bytes:
    """One header field of exactly `size` bytes: a first line, then 5-byte continuation lines."""
    first = name + b": start\r\n"
    lines = [b" ab\r\n"] * ((size - len(first)) // 5)
    lines[-1] = b" " + b"a" * ((size - len(first)) % 5 + 2) + b"\r\n"
    field = first + b"".join(lines)
    assert len(field) == size
    return field


class HostileSender(threading.Thread):
    """Sends one message over a raw session and records the reply to its final dot."""

    def __init__(self, port: int, message: bytes):
        super().__init__(daemon=True)
        self.port, self.message = port, message
        self.sent = threading.Event()
        self.reply: str | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with RawSmtp(self.port, source="127.0.0.2", timeout=600) as client:  # not in my_networks
                client.start_session("hostile.example.net")
                assert client.command("MAIL FROM:<mallory@example.net>").startswith("250")
                assert client.command("RCPT TO:<bob@example.com>").startswith("250")
                assert client.command("DATA").startswith("354")
                client.send(self.message + b".\r\n")
                self.sent.set()
                self.reply = client.reply()[-1]
        except BaseException as error:  # reported by the test
            self.error = error
            self.sent.set()


def others_served_while(relay, message: bytes) -> tuple[str, int, float]:
    """Send `message` from one client while another client and the control API keep asking.

    Returns the hostile client's reply, how many probes were answered and the longest
    wait for one; fails if any probe waits longer than PATIENCE.
    """
    with RawSmtp(relay.port, timeout=PATIENCE) as other, \
            ControlClient(str(relay.workdir / "control.sock"), timeout=PATIENCE) as control:
        other.start_session("other.example.net")
        hostile = HostileSender(relay.port, message)
        hostile.start()
        assert hostile.sent.wait(60), "the hostile message could not even be sent"
        answered, longest = 0, 0.0
        while hostile.is_alive() or answered == 0:
            started = time.monotonic()
            try:
                assert other.command("NOOP") == "250 2.0.0 Ok"
                assert control.call("io.postern.Status.Get")["status"]
            except (socket.timeout, TimeoutError, Unreachable) as error:
                pytest.fail(f"another client waited more than {PATIENCE:.0f} s while the relay processed a "
                            f"{len(message)}-byte message: {error!r}")
            longest = max(longest, time.monotonic() - started)
            answered += 1
            time.sleep(0.05)
        hostile.join()
    assert hostile.error is None, hostile.error
    return hostile.reply, answered, longest


def test_two_megabytes_of_folded_header_do_not_stop_other_clients(relay, sink):
    """Defaults: the 2 MB field is cut to header_size_limit, and nobody else waits meanwhile."""
    message = b"Subject: hostile\r\n" + folded_field(b"X-Flood", 2_000_000) + b"\r\nbody\r\n"
    reply, answered, longest = others_served_while(relay, message)
    assert reply.startswith("250 2.0.0 Ok: queued as "), reply
    assert answered >= 1
    [received] = sink.wait_for(1)
    assert received.content.endswith(b"\r\nbody\r\n")
    assert len(received.content) < 110_000  # the field was cut to 102400 bytes


def test_a_raised_header_size_limit_keeps_a_huge_header_whole_and_the_relay_responsive(make_relay, sink):
    """Even with no header limit to speak of, every scan of the header is linear in its size."""
    relay = make_relay(sink.port, header_size_limit=10240000)
    flood = folded_field(b"X-Flood", 2_000_000)
    message = b"Subject: hostile\r\nX-Postern-Processed: elsewhere.example\r\n" + flood + b"\r\nbody\r\n"
    reply, answered, longest = others_served_while(relay, message)
    assert reply.startswith("250 2.0.0 Ok: queued as "), reply
    [received] = sink.wait_for(1, timeout=60)
    assert flood in received.content  # whole, byte for byte
    assert b"X-Postern-Processed: elsewhere.example" not in received.content  # the marker scan ran over it
    assert received.content.endswith(b"\r\nbody\r\n")


def test_header_size_limit_cuts_a_long_field_at_a_line_end_and_keeps_the_rest(make_relay, sink):
    relay = make_relay(sink.port, header_size_limit=10000)
    long = folded_field(b"X-Long", 50_000)
    exact = folded_field(b"X-Exact", 10_000)  # at the limit: kept whole
    relay.send("alice@example.net", ["bob@example.com"],
               b"Subject: cut\r\n" + long + exact + b"X-After: still here\r\n\r\nX-Long: body text\r\n")
    [received] = sink.wait_for(1)
    head, _, body = received.content.partition(b"\r\n\r\n")
    assert body == b"X-Long: body text\r\n"
    fields = re.findall(rb"[^\r\n]+\r\n(?:[ \t][^\r\n]*\r\n)*", head + b"\r\n")
    names = [f.split(b":", 1)[0] for f in fields]
    assert names[-4:] == [b"Subject", b"X-Long", b"X-Exact", b"X-After"]
    cut = fields[-3]
    assert long.startswith(cut) and cut.endswith(b"\r\n")
    assert 9000 <= len(cut) <= 10000  # Postfix's "nice cut": at the last line end within the limit
    assert fields[-2] == exact
    assert fields[-1] == b"X-After: still here\r\n"
    relay.wait_log(r"1 header\(s\) from unknown\[127\.0\.0\.1\] cut to header_size_limit 10000")


def test_a_field_without_a_line_end_near_the_limit_is_cut_at_the_limit(make_relay, sink):
    """Postfix's "unkind cut": when the last line end within the limit keeps less than 90% of it."""
    relay = make_relay(sink.port, header_size_limit=2500)
    long = b"X-Long: a\r\n" + b"".join(b" " + letter * 990 + b"\r\n" for letter in (b"b", b"c", b"d"))
    relay.send("alice@example.net", ["bob@example.com"], b"Subject: cut\r\n" + long + b"X-After: x\r\n\r\nbody\r\n")
    [received] = sink.wait_for(1)
    assert b"\r\nSubject: cut\r\n" + long[:2498] + b"\r\nX-After: x\r\n\r\nbody\r\n" in received.content


# --- the message data, read in whole buffers ----------------------------------------


def start_data(client: RawSmtp) -> None:
    client.start_session()
    assert client.command("MAIL FROM:<alice@example.net>") == "250 2.1.0 Ok"
    assert client.command("RCPT TO:<bob@example.com>") == "250 2.1.5 Ok"
    assert client.command("DATA").startswith("354 ")


def test_commands_pipelined_after_the_final_dot_are_answered_in_order(relay, sink):
    with RawSmtp(relay.port) as client:
        start_data(client)
        client.send(b"Subject: one\r\n\r\n..starts with a dot\r\n.\r\n"
                    b"MAIL FROM:<alice@example.net>\r\nRCPT TO:<carol@example.com>\r\nDATA\r\n")
        assert client.reply()[-1].startswith("250 2.0.0 Ok: queued as ")
        assert client.reply()[-1] == "250 2.1.0 Ok"
        assert client.reply()[-1] == "250 2.1.5 Ok"
        assert client.reply()[-1].startswith("354 ")
        client.send(b".\r\nQUIT\r\n")  # an empty message, then QUIT, in one write
        assert client.reply()[-1].startswith("250 2.0.0 Ok: queued as ")
        assert client.reply()[-1].startswith("221 ")
    messages = sink.wait_for(2)
    first = next(m for m in messages if m.recipients == ["bob@example.com"])
    assert first.content.endswith(b"Subject: one\r\n\r\n.starts with a dot\r\n")  # one dot taken off


def test_the_final_dot_is_found_across_reads(relay, sink):
    with RawSmtp(relay.port) as client:
        client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        start_data(client)
        for piece in (b"Subject: split\r\n\r\nbody\r", b"\n.", b"\r", b"\n"):
            client.send(piece)
            time.sleep(0.2)  # each piece in a read of its own
        assert client.reply()[-1].startswith("250 2.0.0 Ok: queued as ")
        assert client.command("NOOP") == "250 2.0.0 Ok"
    [message] = sink.wait_for(1)
    assert message.content.endswith(b"Subject: split\r\n\r\nbody\r\n")


def test_data_past_the_size_limit_is_counted_not_kept(make_relay, sink):
    relay = make_relay(sink.port, message_size_limit=100_000)
    with RawSmtp(relay.port) as client:
        start_data(client)
        client.send(b"Subject: big\r\n\r\n" + (b"z" * 78 + b"\r\n") * 20_000 + b".\r\n")  # 1.6 MB
        assert client.reply()[-1] == "552 5.3.4 Message size exceeds fixed limit"
        assert client.command("NOOP") == "250 2.0.0 Ok"
    assert relay.queue_files() == []
