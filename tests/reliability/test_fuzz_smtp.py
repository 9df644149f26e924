"""Property-based tests of the SMTP session: random commands and bytes from an untrusted client.

Each example is one connection from 127.0.0.2 (outside my_networks) that sends a random
mix of commands, addresses with routing tricks, parameters, line ends, DATA with
smuggling look-alikes, and raw bytes, all at once, then ends any open DATA and says
QUIT. Whatever it sent:

- the daemon lives, and answers only well-formed SMTP replies;
- the queue counts exactly as many new messages as the client was told 250 for, each a
  whole queue file, and nothing is left half-written in tmp/;
- once the queue drains, the next hop (it takes every domain) has exactly those
  messages, each for relay-domain recipients only, in CRLF lines without NUL bytes.
"""

import re
import socket
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from relay.addresses import is_routed, split
from relay.control.client import ControlClient
from reliability.scenario import listing, read_queue_file
from tests.reliability.effort import examples
from tests.support.net import wait_until

UNTRUSTED = "127.0.0.2"
REPLY_LINE = re.compile(rb"^[2-5]\d\d[ -][\x20-\x7e]*$")
QUEUED = re.compile(rb"^250 2\.0\.0 Ok: queued as (\w+)$")

LOCAL_PARTS = st.sampled_from(["bob", "BOB", "user%evil.org", "evil.org!user", '"user@evil.org"', "", "a.b",
                               "x" * 70, "user\\@evil.org", "postmaster"]) \
    | st.text(st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="<>"), max_size=10)
DOMAINS = st.sampled_from(["example.com", "EXAMPLE.COM", "example.com.", "sub.example.com", "evil.org", "EVIL.ORG.",
                           "[127.0.0.1]", "[IPv6:::1]", "example.com.evil.org", "badexample.com", "localhost", ""])
ADDRESSES = st.one_of(
    st.builds("<{}@{}>".format, LOCAL_PARTS, DOMAINS),
    st.builds("{}@{}".format, LOCAL_PARTS, DOMAINS),
    st.builds("<@example.com:{}@{}>".format, LOCAL_PARTS, DOMAINS),
    st.just("<>"),
    st.builds("<{}>".format, LOCAL_PARTS),
)
PARAMETERS = st.sampled_from(["", "", " SIZE=100", " SIZE=99999999999", " BODY=8BITMIME", " SMTPUTF8", " RET=FULL",
                              " NOTIFY=NEVER", " XYZ=1", " SIZE=-1", " SIZE=abc", " AUTH=<>"])
COMMANDS = st.one_of(
    st.just("EHLO client.example.net"),
    st.builds("EHLO {}".format, st.text(max_size=20)),
    st.builds("HELO {}".format, st.text(max_size=20)),
    st.builds("MAIL FROM:{}{}".format, ADDRESSES, PARAMETERS),
    st.builds("RCPT TO:{}{}".format, ADDRESSES, PARAMETERS),
    st.sampled_from(["RSET", "NOOP", "VRFY bob", "EXPN staff", "HELP", "STARTTLS", "AUTH PLAIN dGVzdAB0ZXN0AHRlc3Q=",
                     "BDAT 10 LAST", "ETRN example.com", "QUIT", "DATA", "TURN", "", "mail from:<a@example.net>",
                     "MAIL FROM: <a@example.net>", "RCPT TO:<bob@example.com>", "RCPT TO:<carol@example.com>"]),
).map(lambda text: text.encode("utf-8", "surrogateescape"))
LINE_ENDS = st.sampled_from([b"\r\n", b"\r\n", b"\r\n", b"\r\n", b"\n", b"\r", b""])
SMUGGLING = st.sampled_from([b"\n.\n", b"\r.\r", b"\r.\n", b"\n.\r", b"\n.\r\n", b"\r\n.\n", b"\r.\r\n", b"\r\n.\r",
                             b"\r\n\0.\r\n", b"\r\n.\0\r\n", b"\r\n..\r\n",
                             b"\r\n.\r\nMAIL FROM:<evil@example.net>\r\n"])
BODY = st.lists(st.one_of(SMUGGLING, st.binary(max_size=120), st.just(b"Subject: fuzz\r\n\r\n"),
                          st.just(b"Received: from a by b; Mon, 1 Jan 2024 00:00:00 +0000\r\n")), max_size=6)
TRANSACTION = st.tuples(st.sampled_from([b"<alice@example.net>", b"<>", b"<postmaster@example.com>"]),
                        st.lists(st.sampled_from([b"<bob@example.com>", b"<BOB@EXAMPLE.COM.>", b"<carol@example.com>"]),
                                 min_size=1, max_size=3), BODY).map(
    lambda t: b"MAIL FROM:" + t[0] + b"\r\n" + b"".join(b"RCPT TO:" + r + b"\r\n" for r in t[1])
    + b"DATA\r\n" + b"".join(t[2]) + b"\r\n.\r\n")
CHUNKS = st.lists(BODY.map(b"".join), min_size=1, max_size=4).map(
    lambda chunks: b"".join(b"BDAT %d\r\n" % len(c) + c for c in chunks[:-1])
    + b"BDAT %d LAST\r\n" % len(chunks[-1]) + chunks[-1])  # chunk boundaries wherever the parts fall
CHUNKED = st.tuples(st.sampled_from([b"<alice@example.net>", b"<>", b""]), CHUNKS).map(
    lambda t: (b"MAIL FROM:" + t[0] + b"\r\nRCPT TO:<bob@example.com>\r\n" if t[0] else b"") + t[1])
ITEMS = st.one_of(
    st.tuples(COMMANDS, LINE_ENDS).map(b"".join),
    BODY.map(lambda parts: b"DATA\r\n" + b"".join(parts)),
    TRANSACTION,
    CHUNKED,
    st.binary(max_size=200),
)
GREETINGS = st.sampled_from([b"EHLO client.example.net\r\n", b"HELO client.example.net\r\n", b""])
SESSIONS = st.tuples(GREETINGS, st.lists(ITEMS, min_size=1, max_size=10)).map(lambda s: s[0] + b"".join(s[1]))


def converse(port: int, payload: bytes) -> tuple[bytes, bool]:
    """Send everything at once, end any DATA, QUIT; return what the relay said and whether it closed in time."""
    with socket.create_connection(("127.0.0.1", port), timeout=15, source_address=(UNTRUSTED, 0)) as sock:
        received = b""
        try:
            sock.sendall(payload + b"\r\n.\r\nQUIT\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                return received, True
            except socket.timeout:
                break
            if not chunk:
                return received, True
            received += chunk
        return received, False


def received_count(path: str) -> int:
    with ControlClient(path, timeout=10) as client:
        return client.call("io.postern.Status.Get")["status"]["counters"]["received"]


def test_random_sessions_never_crash_relay_or_queue_partial_data(make_relay, sink):
    relay = make_relay(sink.port, idle_timeout="5s", message_size_limit=20000, recipient_limit=5, junk_command_limit=10)
    control = str(relay.workdir / "control.sock")
    told_queued: list[bytes] = []

    @settings(max_examples=examples(60, 10_000))
    @given(payload=SESSIONS)
    def one_session(payload):
        before = received_count(control)
        said, closed = converse(relay.port, payload)
        assert closed, f"the session was still open after QUIT: {said[-300:]!r}"
        assert relay.process.poll() is None, relay.log()[-3000:]
        lines = said.split(b"\r\n")
        assert lines[-1] == b"", f"a reply without CRLF: {said[-200:]!r}"
        for line in lines[:-1]:
            assert REPLY_LINE.match(line), line
        queued = [m.group(1) for m in map(QUEUED.match, lines) if m]
        assert received_count(control) - before == len(queued)
        for queue_id in queued:
            path = relay.state_dir / "queue" / "msg" / queue_id.decode()
            try:
                assert read_queue_file(path).intact, queue_id
            except FileNotFoundError:
                pass  # delivered already
        # Nothing of a refused or cut-off message stays in tmp/ (a state file on its way in may pass through).
        wait_until(lambda: listing(relay, "tmp") == [], 5, what="an empty tmp/")
        told_queued.extend(queued)

    one_session()
    assert told_queued, "no example got a message through: the sessions are too random to prove anything"
    sink.wait_for(len(told_queued), timeout=30)
    time.sleep(0.3)
    assert len(sink.messages) == len(told_queued)
    for message in sink.messages:
        for recipient in message.recipients:
            local, domain = split(recipient)
            assert domain == "example.com" and not is_routed(recipient), f"relayed for an outsider: {recipient}"
        assert re.search(rb"\r(?!\n)|(?<!\r)\n", message.content) is None, message.content
        assert b"\0" not in message.content
    log = relay.log()
    assert "Traceback" not in log, log[max(0, log.find("Traceback") - 1000):][:5000]
