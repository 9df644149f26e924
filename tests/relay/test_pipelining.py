"""PIPELINING to a next hop that offers it (RFC 2920, as Postfix's smtp client): MAIL, every RCPT and
DATA in one write, then each reply in turn, whatever way they come back: together in one segment, one
by one, refusals in between, a hop that hangs up halfway or takes DATA with no recipient."""

from __future__ import annotations

import asyncio
import time

import pytest

from relay import delivery as delivery_module
from relay.config import parse_mta
from relay.daemon import Relay
from relay.delivery import Job
from relay.queue.entry import BOUNCED, DEFERRED, SENT, Envelope, QueueEntry
from relay.routing import NextHop
from tests.support.scripted_hop import DROP, Script, ScriptedHop

MESSAGE = b"From: alice@example.com\r\nSubject: test\r\n\r\n.dot line\r\nhello\r\n"
TWO = ("bob@example.org", "carol@example.org")


class Hops:
    """The relay's real delivery code in this process, delivering to one next hop on 127.0.0.1."""

    def __init__(self, tmp_path):
        config, problems = parse_mta({"hostname": "gw.example.com", "listen": ["127.0.0.1:1"],
                                      "delivery": {"command_timeout": 5, "data_init_timeout": 5,
                                                   "data_done_timeout": 5}})
        assert not problems, problems
        self.relay = Relay(config, str(tmp_path / "postern.yaml"), str(tmp_path / "state"),
                           str(tmp_path / "control.sock"))
        self.servers: list = []

    async def send(self, port: int, recipients=TWO, message: bytes = MESSAGE) -> dict[str, tuple[str, str, str]]:
        entry = QueueEntry.new(Envelope(id=f"T{time.monotonic_ns()}", sender="alice@example.com",
                                        recipients=list(recipients), arrival=time.time(), size=len(message)))
        job = Job(entry, entry.recipients, NextHop("127.0.0.1", port, mx=False, tls="none"), message)
        self.relay.delivery.submit(job)
        return {o.address: (o.status, o.dsn, o.reply) for o in await asyncio.wait_for(job.done, 30)}

    async def raw(self, converse) -> int:
        """A hand-written next hop on a free port: `converse(reader, writer)` after greeting and EHLO."""
        async def session(reader, writer):
            writer.write(b"220 raw.example.org ESMTP\r\n")
            await reader.readuntil(b"\r\n")  # EHLO
            writer.write(b"250-raw.example.org\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
            try:
                await converse(reader, writer)
            finally:
                writer.close()
        server = await asyncio.start_server(session, "127.0.0.1", 0)
        self.servers.append(server)
        return server.sockets[0].getsockname()[1]

    async def close(self):
        for server in self.servers:
            server.close()
        await asyncio.gather(*(asyncio.all_tasks() - {asyncio.current_task()}), return_exceptions=True)


@pytest.fixture
async def hops(tmp_path, monkeypatch):
    monkeypatch.setattr(delivery_module, "CONNECTION_CACHE_TIME", 0.3)
    made = Hops(tmp_path)
    yield made
    await made.close()


def scripted(**script) -> ScriptedHop:
    return ScriptedHop(Script(**script)).start()  # its default extensions offer PIPELINING


async def read_until(reader, marker: bytes, timeout: float = 5) -> bytes:
    return await asyncio.wait_for(reader.readuntil(marker), timeout)


async def test_mail_rcpt_and_data_come_before_any_reply_and_replies_may_come_in_one_segment(hops):
    seen = {}

    async def converse(reader, writer):
        # Nothing is answered until DATA has arrived: a client that waits for the MAIL reply times out here.
        seen["commands"] = await read_until(reader, b"DATA\r\n")
        writer.write(b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n354 go ahead\r\n")  # all in one write
        seen["data"] = await read_until(reader, b"\r\n.\r\n")
        writer.write(b"250 2.0.0 Ok: queued as RAW1\r\n")
        seen["after"] = await read_until(reader, b"\r\n", timeout=10)

    sent = await hops.send(await hops.raw(converse))
    assert {a: s[:2] for a, s in sent.items()} == {"bob@example.org": (SENT, "2.0.0"), "carol@example.org": (SENT, "2.0.0")}
    assert seen["commands"] == (b"MAIL FROM:<alice@example.com>\r\nRCPT TO:<bob@example.org>\r\n"
                                b"RCPT TO:<carol@example.org>\r\nDATA\r\n")
    assert seen["data"] == MESSAGE.replace(b"\r\n.dot", b"\r\n..dot") + b".\r\n"


async def test_replies_that_come_one_by_one_and_in_pieces_are_read_in_turn(hops):
    async def converse(reader, writer):
        await read_until(reader, b"DATA\r\n")
        for piece in (b"250 2.1.0 O", b"k\r\n250-2.1.5 first line\r\n", b"250 2.1.5 second\r\n",
                      b"550 5.1.1 no such user\r\n", b"354 go\r\n"):
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0.05)
        await read_until(reader, b"\r\n.\r\n")
        writer.write(b"250 2.0.0 Ok\r\n")
        await read_until(reader, b"\r\n", timeout=10)

    sent = await hops.send(await hops.raw(converse))
    assert sent["bob@example.org"][:2] == (SENT, "2.0.0")
    assert sent["carol@example.org"][:2] == (BOUNCED, "5.1.1")
    assert "550 5.1.1 no such user" in sent["carol@example.org"][2]


async def test_a_hop_that_takes_data_without_a_recipient_gets_an_empty_message_ended_at_once(hops):
    seen = {}

    async def converse(reader, writer):
        await read_until(reader, b"DATA\r\n")
        writer.write(b"250 2.1.0 Ok\r\n550 5.1.1 unknown\r\n550 5.1.1 unknown\r\n354 go\r\n")
        seen["end"] = await read_until(reader, b"\r\n")
        writer.write(b"250 2.0.0 Ok: queued, nothing\r\n")
        seen["next"] = await read_until(reader, b"\r\n")
        writer.write(b"250 2.0.0 Ok\r\n")
        await read_until(reader, b"\r\n", timeout=10)

    sent = await hops.send(await hops.raw(converse))
    assert {a: s[:2] for a, s in sent.items()} == {a: (BOUNCED, "5.1.1") for a in TWO}
    assert seen == {"end": b".\r\n", "next": b"RSET\r\n"}  # the message itself never went


async def test_a_refused_sender_defers_everyone_and_the_connection_carries_the_next_message(hops):
    hop = scripted(mail=["451 4.3.0 sender check failed, try later", "250 2.1.0 Ok"])
    try:
        first = await hops.send(hop.port)
        assert {a: s[:2] for a, s in first.items()} == {a: (DEFERRED, "4.3.0") for a in TWO}
        assert "451 4.3.0 sender check failed" in first["bob@example.org"][2]
        second = await hops.send(hop.port)
        assert {a: s[:2] for a, s in second.items()} == {a: (SENT, "2.0.0") for a in TWO}
        assert hop.connections == 1  # the 554 to DATA and the RSET were read: one connection did both
        assert hop.verbs() == ["EHLO", "MAIL", "RCPT", "RCPT", "DATA", "RSET", "MAIL", "RCPT", "RCPT", "DATA"]
        [message] = hop.messages()
        assert message.content == MESSAGE
    finally:
        hop.stop()


async def test_every_recipient_refused_ends_with_rset_and_the_next_message_goes(hops):
    hop = scripted(rcpt={"bob@example.org": "550 5.1.1 unknown", "carol@example.org": "452 4.2.2 mailbox full"})
    try:
        first = await hops.send(hop.port)
        assert {a: s[:2] for a, s in first.items()} == {"bob@example.org": (BOUNCED, "5.1.1"),
                                                          "carol@example.org": (DEFERRED, "4.2.2")}
        second = await hops.send(hop.port, recipients=("dave@example.org",))
        assert second["dave@example.org"][:2] == (SENT, "2.0.0")
        assert hop.connections == 1
    finally:
        hop.stop()


async def test_a_421_to_mail_closes_the_connection_and_defers(hops):
    hop = scripted(mail=["421 4.3.2 shutting down", "250 2.1.0 Ok"])
    try:
        first = await hops.send(hop.port)
        assert {a: s[:2] for a, s in first.items()} == {a: (DEFERRED, "4.3.2") for a in TWO}
        second = await hops.send(hop.port)
        assert {a: s[:2] for a, s in second.items()} == {a: (SENT, "2.0.0") for a in TWO}
        assert hop.connections == 2  # a new connection after the 421
    finally:
        hop.stop()


async def test_a_hop_that_hangs_up_among_the_replies_defers_and_nothing_is_sent(hops):
    hop = scripted(rcpt=["250 2.1.5 Ok", DROP])
    try:
        sent = await hops.send(hop.port)
        assert {a: s[:2] for a, s in sent.items()} == {a: (DEFERRED, "4.4.2") for a in TWO}
        assert "while sending RCPT TO" in sent["bob@example.org"][2]
        assert hop.messages() == []
    finally:
        hop.stop()


async def test_an_address_that_cannot_be_sent_goes_one_command_at_a_time_as_before(hops):
    hop = scripted()
    try:
        sent = await hops.send(hop.port, recipients=("bob@example.org", "eve>@example.org"))
        assert {a: s[:2] for a, s in sent.items()} == {"bob@example.org": (SENT, "2.0.0"),
                                                         "eve>@example.org": (BOUNCED, "5.1.3")}
        assert hop.verbs() == ["EHLO", "MAIL", "RCPT", "DATA"]
    finally:
        hop.stop()
