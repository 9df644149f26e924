"""The delivery client against next hops that misbehave the ways real ones do, as Postfix's smtp client copes.

Each test runs the relay's real delivery code in this process against scripted SMTP
servers on loopback addresses (127.0.0.x, one port for all, as MX hosts share port
25), found through an authoritative DNS server on loopback.
"""

from __future__ import annotations

import asyncio
import logging
import time

import aiosmtplib
import pytest

from relay import delivery as delivery_module
from relay import outbound
from relay.config import parse_mta
from relay.daemon import Relay
from relay.delivery import Delivery, Job, Outcome
from relay.pipelining import PipeliningProtocol
from relay.queue.entry import BOUNCED, DEFERRED, PENDING, SENT, Envelope, QueueEntry
from relay.routing import NextHop
from tests.support.dns_server import DnsServer
from tests.support.net import free_port
from tests.support.scripted_hop import DROP, Script, ScriptedHop

MESSAGE = b"From: alice@example.com\r\nTo: bob@example.org\r\nSubject: test\r\n\r\nhello\r\n"
EXTENSIONS = ("8BITMIME", "SIZE 10240000", "ENHANCEDSTATUSCODES")  # what a test's next hop offers unless it says


def scripted(**script) -> ScriptedHop:
    return ScriptedHop(Script(**{"extensions": EXTENSIONS, **script}))


class World:
    """Scripted MX hosts for example.org, a DNS server naming them, and a relay to deliver with."""

    def __init__(self, tmp_path):
        self.tmp_path = tmp_path
        self.port = free_port()
        self.hops: list[ScriptedHop] = []
        self.dns: DnsServer | None = None
        self.relay: Relay | None = None
        self.delivery: Delivery | None = None

    async def mx(self, *hops: ScriptedHop | str, settings: dict | None = None) -> list[ScriptedHop]:
        """MX hosts in preference order (10, 20, ...); the string "self" is the gateway itself."""
        records = {("example.org", "MX"): []}
        listen = "127.0.0.1:25"
        await self._start_on_one_port([(f"127.0.0.{n + 1}", hop) for n, hop in enumerate(hops, start=1)
                                       if isinstance(hop, ScriptedHop)])
        for number, hop in enumerate(hops, start=1):
            name = f"mx{number}.example.org"
            ip = f"127.0.0.{number + 1}"
            records[("example.org", "MX")].append(f"{number * 10} {name}.")
            if hop == "self":
                listen = f"{ip}:{self.port}"
            if hop is not None:
                records[(name, "A")] = [ip]
        self.dns = DnsServer(records).start()
        config, problems = parse_mta({
            "hostname": "gw.example.com", "listen": [listen],
            "dns_servers": [self.dns.address], "delivery": settings or {},
        })
        assert not problems, problems
        self.relay = Relay(config, str(self.tmp_path / "postern.yaml"), str(self.tmp_path / "state"),
                           str(self.tmp_path / "control.sock"))
        self.delivery = self.relay.delivery
        return self.hops

    async def _start_on_one_port(self, hops: list[tuple[str, ScriptedHop]]) -> None:
        """Start the hops on their addresses, all on one port (as MX hosts share 25): the first port free on all."""
        for _ in range(20):
            try:
                for ip, hop in hops:
                    hop.host, hop.port = ip, self.port
                    self.hops.append(hop.start())
                return
            except OSError:  # taken on one of the addresses: another port
                for hop in self.hops:
                    hop.stop()
                self.hops = []
                self.port = free_port()
        raise AssertionError("no port free on all the MX addresses")

    async def send(self, recipients=("bob@example.org",), message: bytes = MESSAGE,
                   sender: str = "alice@example.com", **envelope) -> list[Outcome]:
        """What one delivery attempt does with each recipient, in the recipients' order."""
        entry = QueueEntry.new(Envelope(id=f"T{time.monotonic_ns()}", sender=sender, recipients=list(recipients),
                                        arrival=time.time(), size=len(message), **envelope))
        job = Job(entry, entry.recipients, NextHop("example.org", self.port, mx=True), message)
        self.delivery.submit(job)
        return await asyncio.wait_for(job.done, 30)

    async def close(self) -> None:
        for hop in self.hops:
            hop.stop()
        tasks = asyncio.all_tasks() - {asyncio.current_task()}
        await asyncio.gather(*tasks, return_exceptions=True)  # cached connections close after their short wait
        if self.dns:
            self.dns.stop()


@pytest.fixture
async def world(tmp_path, monkeypatch):
    monkeypatch.setattr(delivery_module, "CONNECTION_CACHE_TIME", 0.3)
    made = World(tmp_path)
    yield made
    await made.close()


def outcome(sent: list[Outcome]) -> dict[str, tuple[str, str]]:
    return {o.address: (o.status, o.dsn) for o in sent}


# --- 1. HELO fallback ---------------------------------------------------------------

async def test_a_hop_that_refuses_ehlo_gets_helo_and_no_extensions(world):
    [hop] = await world.mx(scripted(ehlo="502 5.5.1 Error: command not implemented"))
    sent = await world.send(body="8BITMIME")
    assert outcome(sent) == {"bob@example.org": (SENT, "2.0.0")}
    assert hop.verbs()[:3] == ["EHLO", "HELO", "MAIL"]
    assert hop.transactions[0].mail == "MAIL FROM:<alice@example.com>"  # no BODY=, no SIZE=


async def test_delivery_returns_outcomes_and_leaves_the_queue_entry_to_the_scheduler(world):
    refuse = lambda line: "550 5.1.1 no such user" if "carol@" in line else "250 2.1.5 Ok"
    [hop] = await world.mx(scripted(rcpt=refuse, extensions=(*EXTENSIONS, "DSN")))
    entry = QueueEntry.new(Envelope(id="T1", sender="alice@example.com", arrival=time.time(), size=len(MESSAGE),
                                    recipients=["bob@example.org", "carol@example.org"]))
    job = Job(entry, entry.recipients, NextHop("example.org", world.port, mx=True), MESSAGE)
    world.delivery.submit(job)
    bob, carol = await asyncio.wait_for(job.done, 30)
    relay = f"mx1.example.org[127.0.0.2]:{world.port}"
    assert (bob.address, bob.status, bob.dsn, bob.relay, bob.dsn_passed) == \
        ("bob@example.org", SENT, "2.0.0", relay, True)
    assert bob.reply.startswith("250 2.0.0")
    assert carol == Outcome("carol@example.org", BOUNCED, "5.1.1", f"host {relay} said: 550 5.1.1 no such user", relay)
    assert [(r.status, r.attempts, r.last_reply, r.dsn_passed) for r in entry.recipients] == \
        [(PENDING, 0, "", False)] * 2  # the scheduler applies the outcomes, delivery does not


async def test_a_421_to_ehlo_is_not_answered_with_helo(world):
    [hop] = await world.mx(scripted(ehlo="421 4.3.2 shutting down"))
    sent = await world.send()
    assert outcome(sent) == {"bob@example.org": (DEFERRED, "4.4.1")}
    assert "HELO" not in hop.verbs()
    assert "refused to talk to me: 421 4.3.2 shutting down" in sent[0].reply


# --- 2. MX fallback within one attempt --------------------------------------------------

async def test_a_4xx_to_mail_at_the_primary_mx_is_delivered_by_the_backup_at_once(world):
    primary, backup = await world.mx(scripted(mail="451 4.3.0 try again later"), scripted())
    sent = await world.send()
    assert outcome(sent) == {"bob@example.org": (SENT, "2.0.0")}
    assert sent[0].relay.startswith("mx2.example.org[127.0.0.3]")
    assert len(primary.transactions) == 0 and len(backup.transactions) == 1


async def test_a_4xx_to_one_rcpt_sends_only_that_recipient_on_to_the_backup(world):
    greylist = lambda line: "450 4.2.0 greylisted" if "carol@" in line else "250 2.1.5 Ok"
    primary, backup = await world.mx(scripted(rcpt=greylist), scripted())
    sent = await world.send(["bob@example.org", "carol@example.org"])
    assert outcome(sent) == {"bob@example.org": (SENT, "2.0.0"), "carol@example.org": (SENT, "2.0.0")}
    assert [m.rcpts for m in primary.transactions] == [["RCPT TO:<bob@example.org>"]]
    assert [m.rcpts for m in backup.transactions] == [["RCPT TO:<carol@example.org>"]]


async def test_a_5xx_to_rcpt_is_final_and_not_tried_at_the_backup(world):
    refuse = lambda line: "550 5.1.1 no such user" if "carol@" in line else "250 2.1.5 Ok"
    primary, backup = await world.mx(scripted(rcpt=refuse), scripted())
    sent = await world.send(["bob@example.org", "carol@example.org"])
    assert outcome(sent) == {"bob@example.org": (SENT, "2.0.0"), "carol@example.org": (BOUNCED, "5.1.1")}
    assert backup.connections == 0


async def test_a_5xx_to_data_bounces_the_message_without_trying_the_backup(world):
    primary, backup = await world.mx(scripted(data="554 5.7.1 rejected"), scripted())
    sent = await world.send(["bob@example.org", "carol@example.org"])
    assert outcome(sent) == {"bob@example.org": (BOUNCED, "5.7.1"), "carol@example.org": (BOUNCED, "5.7.1")}
    assert backup.connections == 0


async def test_at_most_two_mx_sessions_per_attempt_and_the_last_reply_is_the_reason(world):
    busy = "451 4.3.0 busy"
    hops = await world.mx(scripted(mail=busy), scripted(mail="452 4.3.1 full"),
                          scripted(mail=busy))
    sent = await world.send()
    assert outcome(sent) == {"bob@example.org": (DEFERRED, "4.3.1")}
    assert "mx2.example.org[127.0.0.3]" in sent[0].reply
    assert [hop.connections for hop in hops] == [1, 1, 0]  # Postfix's smtp_mx_session_limit = 2


async def test_a_greeting_or_a_lost_connection_at_the_primary_moves_on_without_counting_a_session(world):
    hops = await world.mx(scripted(greeting="421 4.3.2 too busy"),
                          scripted(rcpt=DROP), scripted())
    sent = await world.send()
    assert outcome(sent) == {"bob@example.org": (SENT, "2.0.0")}
    assert [len(hop.transactions) for hop in hops] == [0, 0, 1]


async def test_a_hop_that_hangs_up_at_ehlo_is_a_lost_connection_and_the_backup_delivers(world):
    primary, backup = await world.mx(scripted(ehlo=DROP), scripted())
    sent = await world.send()
    assert outcome(sent) == {"bob@example.org": (SENT, "2.0.0")}
    assert primary.verbs() == ["EHLO"] and len(backup.transactions) == 1


async def test_a_lost_connection_at_ehlo_is_the_reason_when_no_mx_host_answers(world):
    [hop] = await world.mx(scripted(ehlo=DROP))
    sent = await world.send()
    assert outcome(sent) == {"bob@example.org": (DEFERRED, "4.4.1")}
    assert sent[0].reply == \
        "lost connection with mx1.example.org[127.0.0.2]:%d while performing the EHLO handshake" % world.port


# --- 3. The gateway among the MX hosts ---------------------------------------------------

async def test_mx_hosts_at_or_below_our_own_preference_are_dropped(world):
    primary, backup = await world.mx(scripted(mail="451 4.3.0 busy"), "self", scripted())
    sent = await world.send()
    # Only the better MX host is tried: the one below us would send it back to us some day.
    assert outcome(sent) == {"bob@example.org": (DEFERRED, "4.3.0")}
    assert primary.connections == 1 and backup.connections == 0


async def test_when_we_are_the_best_mx_the_mail_loops_back_and_is_returned(world):
    [backup] = await world.mx("self", scripted())
    sent = await world.send()
    assert outcome(sent) == {"bob@example.org": (BOUNCED, "5.4.6")}
    assert sent[0].reply == "mail for example.org loops back to myself"
    assert backup.connections == 0


async def test_when_a_better_mx_has_no_address_we_wait_for_it_as_its_backup(world):
    await world.mx(None, "self")
    sent = await world.send()
    assert outcome(sent) == {"bob@example.org": (DEFERRED, "4.4.4")}
    assert sent[0].reply == "unable to find primary relay for example.org"


# --- 4. Connection reuse ---------------------------------------------------------------

async def test_a_cached_connection_the_hop_closed_is_replaced_without_a_deferral(world, caplog):
    caplog.set_level(logging.INFO, logger="postern/smtp")
    [hop] = await world.mx(scripted())
    await world.send()
    await hop.drop_connections()  # the hop's idle timer closes the connection we keep for the next message
    second = await world.send(["carol@example.org"])
    assert outcome(second) == {"carol@example.org": (SENT, "2.0.0")}
    settled = [r.getMessage() for r in caplog.records if "to=<carol@example.org>" in r.getMessage()]
    assert len(settled) == 1 and ", status=sent (250 " in settled[0]  # no deferral logged first
    assert hop.connections == 2 and len(hop.transactions) == 2


async def test_a_connection_lost_after_the_final_dot_is_never_resent_in_the_same_attempt(world):
    primary, backup = await world.mx(scripted(dot=DROP), scripted())
    sent = await world.send()
    assert outcome(sent) == {"bob@example.org": (DEFERRED, "4.4.2")}
    assert "while sending end of data -- message may be sent more than once" in sent[0].reply
    assert len(primary.transactions) == 1 and backup.connections == 0


# --- 5. Timeouts per stage -------------------------------------------------------------

async def test_a_slow_reply_after_the_final_dot_waits_for_data_done_timeout(world):
    [hop] = await world.mx(scripted(delay={"dot": 1.5}),
                           settings={"command_timeout": 1, "data_done_timeout": 30})
    sent = await world.send()
    assert outcome(sent) == {"bob@example.org": (SENT, "2.0.0")}


async def test_a_slow_but_moving_transfer_finishes(world):
    [hop] = await world.mx(scripted(data_pause=(256 * 1024, 0.1)),
                           settings={"command_timeout": 1, "data_xfer_timeout": 30, "data_done_timeout": 30})
    body = b"".join(b"line %08d of a long message, moving slowly but surely\r\n" % n for n in range(60000))
    sent = await world.send(message=MESSAGE + body)
    assert outcome(sent) == {"bob@example.org": (SENT, "2.0.0")}
    assert hop.transactions[0].content == MESSAGE + body


async def test_a_transfer_that_stops_moving_times_out_at_data_xfer_timeout(world):
    [hop] = await world.mx(scripted(data_stall=True, extensions=("8BITMIME",)), settings={"data_xfer_timeout": 1})
    body = b"x" * 70 + b"\r\n"
    sent = await world.send(message=MESSAGE + body * 300_000)  # more than the socket buffers hold
    assert outcome(sent) == {"bob@example.org": (DEFERRED, "4.4.2")}
    assert sent[0].reply.endswith("timed out while sending message content")


async def test_a_hop_that_does_not_answer_data_times_out_at_data_init_timeout(world):
    [hop] = await world.mx(scripted(delay={"data": 3}), settings={"data_init_timeout": 1})
    sent = await world.send()
    assert outcome(sent) == {"bob@example.org": (DEFERRED, "4.4.2")}
    assert sent[0].reply == \
        "conversation with mx1.example.org[127.0.0.2]:%d timed out while sending DATA command" % world.port


# --- 6. 8-bit to a hop without 8BITMIME ------------------------------------------------

EIGHT_BIT = (
    "From: alice@example.com\r\nTo: bob@example.org\r\nSubject: Grüße\r\nMIME-Version: 1.0\r\n"
    "Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n"
    "--b1\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
    "Grüße aus Köln = schön\r\n"
    "--b1\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nplain part\r\n"
    "--b1--\r\n"
).encode()


async def test_8bit_text_is_sent_as_quoted_printable_to_a_hop_without_8bitmime(world):
    [hop] = await world.mx(scripted(extensions=("SIZE 10240000",)))
    sent = await world.send(message=EIGHT_BIT, body="8BITMIME")
    assert outcome(sent) == {"bob@example.org": (SENT, "2.0.0")}
    received = hop.transactions[0]
    assert received.mail == "MAIL FROM:<alice@example.com>"  # neither BODY= nor SIZE= (the size changes)
    content = received.content
    assert content.isascii() is False  # the header keeps its 8-bit text, as in Postfix
    body = content.split(b"\r\n\r\n", 1)[1]
    assert body.isascii()
    assert b"Content-Transfer-Encoding: quoted-printable\r\n\r\nGr=C3=BC=C3=9Fe aus K=C3=B6ln =3D sch=C3=B6n\r\n" in body
    assert b"Content-Type: text/plain; charset=us-ascii\r\n\r\nplain part\r\n" in body


async def test_a_message_that_needs_no_conversion_passes_byte_for_byte(world):
    [plain_hop] = await world.mx(scripted(extensions=("SIZE 10240000",)))
    ascii_body = b"From: a@example.com\r\nSubject: Gr\xc3\xbc\xc3\x9fe\r\nX-Odd:   spaced\r\n\tfolded\r\n\r\nplain\r\n"
    sent = await world.send(message=ascii_body, body="8BITMIME")
    assert outcome(sent) == {"bob@example.org": (SENT, "2.0.0")}
    assert plain_hop.transactions[0].content == ascii_body


async def test_a_hop_with_8bitmime_gets_the_body_as_it_is_with_body_and_size(world):
    [hop] = await world.mx(scripted())
    sent = await world.send(message=EIGHT_BIT, body="8BITMIME")
    assert outcome(sent) == {"bob@example.org": (SENT, "2.0.0")}
    assert hop.transactions[0].content == EIGHT_BIT
    assert hop.transactions[0].mail == f"MAIL FROM:<alice@example.com> SIZE={len(EIGHT_BIT)} BODY=8BITMIME"


# --- 7. SMTPUTF8 ---------------------------------------------------------------------

async def test_smtputf8_is_passed_on_to_a_hop_that_offers_it(world):
    [hop] = await world.mx(scripted(extensions=("8BITMIME", "SMTPUTF8")))
    sent = await world.send(["jörg@example.org"], sender="zoë@example.com", smtputf8=True)
    assert outcome(sent) == {"jörg@example.org": (SENT, "2.0.0")}
    assert hop.transactions[0].mail == "MAIL FROM:<zoë@example.com> SMTPUTF8"
    assert hop.transactions[0].rcpts == ["RCPT TO:<jörg@example.org>"]


async def test_a_utf8_address_to_a_hop_without_smtputf8_bounces_with_5_6_7(world):
    [hop] = await world.mx(scripted())
    sent = await world.send(["jörg@example.org"], smtputf8=True)
    assert outcome(sent) == {"jörg@example.org": (BOUNCED, "5.6.7")}
    assert "message requires SMTPUTF8" in sent[0].reply
    assert hop.transactions == []


async def test_a_utf8_address_goes_on_to_a_backup_mx_that_offers_smtputf8(world):
    primary, backup = await world.mx(scripted(), scripted(extensions=("8BITMIME", "SMTPUTF8")))
    sent = await world.send(["jörg@example.org"], smtputf8=True)
    assert outcome(sent) == {"jörg@example.org": (SENT, "2.0.0")}
    assert primary.transactions == [] and len(backup.transactions) == 1


async def test_an_ascii_envelope_with_smtputf8_is_delivered_to_a_hop_without_it(world):
    [hop] = await world.mx(scripted())
    sent = await world.send(smtputf8=True)
    assert outcome(sent) == {"bob@example.org": (SENT, "2.0.0")}
    assert "SMTPUTF8" not in hop.transactions[0].mail


async def test_a_message_larger_than_the_hops_size_limit_is_returned_without_sending(world):
    [hop] = await world.mx(scripted(extensions=("SIZE 100",)))
    sent = await world.send(message=MESSAGE + b"x" * 100 + b"\r\n")
    assert outcome(sent) == {"bob@example.org": (BOUNCED, "5.3.4")}
    assert sent[0].reply.startswith(f"message size {len(MESSAGE) + 102} exceeds size limit 100")
    assert "MAIL" not in hop.verbs()


# --- 8. DSN parameters -----------------------------------------------------------------

async def test_dsn_parameters_are_passed_on_to_a_hop_that_offers_dsn(world):
    [hop] = await world.mx(scripted(extensions=("DSN",)))
    sent = await world.send(["bob@example.org", "carol@example.org"], ret="HDRS", envid="id+1=x y",
                             notify={"bob@example.org": "SUCCESS,FAILURE"},
                             orcpt={"bob@example.org": "rfc822;Bob+Box@example.net"})
    assert outcome(sent) == {"bob@example.org": (SENT, "2.0.0"), "carol@example.org": (SENT, "2.0.0")}
    [message] = hop.transactions
    assert message.mail == "MAIL FROM:<alice@example.com> ENVID=id+2B1+3Dx+20y RET=HDRS"
    assert message.rcpts == ["RCPT TO:<bob@example.org> ORCPT=rfc822;Bob+2BBox@example.net NOTIFY=SUCCESS,FAILURE",
                             "RCPT TO:<carol@example.org> ORCPT=rfc822;carol@example.org"]
    assert all(o.dsn_passed for o in sent)


async def test_no_dsn_parameters_go_to_a_hop_without_dsn(world):
    [hop] = await world.mx(scripted())
    sent = await world.send(ret="FULL", envid="abc", notify={"bob@example.org": "NEVER"},
                             orcpt={"bob@example.org": "rfc822;bob@example.org"})
    assert outcome(sent) == {"bob@example.org": (SENT, "2.0.0")}
    assert hop.transactions[0].mail == f"MAIL FROM:<alice@example.com> SIZE={len(MESSAGE)}"
    assert hop.transactions[0].rcpts == ["RCPT TO:<bob@example.org>"]
    assert sent[0].dsn_passed is False


# --- 9. Long lines ---------------------------------------------------------------------

async def test_lines_longer_than_998_octets_are_broken_with_crlf_space(world):
    [hop] = await world.mx(scripted())
    long_header = b"X-Long: " + b"h" * 1500
    long_body = b"." + b"b" * 2500
    message = b"From: a@example.com\r\n" + long_header + b"\r\n\r\n" + long_body + b"\r\nend\r\n"
    sent = await world.send(message=message)
    assert outcome(sent) == {"bob@example.org": (SENT, "2.0.0")}
    raw = hop.transactions[0].raw
    assert max(len(line) for line in raw.split(b"\r\n")) <= 999  # 998, plus the stuffed dot of the body line
    assert hop.transactions[0].content.replace(b"\r\n ", b"") == message
    assert raw.split(b"\r\n")[4:7] == [b".." + b"b" * 997, b" " + b"b" * 997, b" " + b"b" * 506]


# --- 10. Addresses that cannot be sent ---------------------------------------------------

async def test_an_address_that_cannot_be_sent_bounces_alone(world):
    [hop] = await world.mx(scripted())
    sent = await world.send(["jörg@example.org", "bob@example.org"])  # non-ASCII, and no SMTPUTF8 asked
    assert outcome(sent) == {"jörg@example.org": (BOUNCED, "5.1.3"), "bob@example.org": (SENT, "2.0.0")}
    assert hop.transactions[0].rcpts == ["RCPT TO:<bob@example.org>"]


async def test_addresses_are_sent_as_the_client_gave_them(world):
    [hop] = await world.mx(scripted())
    sent = await world.send(["a;b@example.org", '"john doe"@example.org'], sender="")
    assert outcome(sent) == {"a;b@example.org": (SENT, "2.0.0"), '"john doe"@example.org': (SENT, "2.0.0")}
    assert hop.transactions[0].mail == f"MAIL FROM:<> SIZE={len(MESSAGE)}"
    assert hop.transactions[0].rcpts == ["RCPT TO:<a;b@example.org>", 'RCPT TO:<"john doe"@example.org>']


async def test_an_address_with_a_bracket_bounces_alone(world):
    [hop] = await world.mx(scripted())
    sent = await world.send(["bob@example.org", "eve>@example.org"])
    assert outcome(sent) == {"bob@example.org": (SENT, "2.0.0"), "eve>@example.org": (BOUNCED, "5.1.3")}


# --- 11. PIPELINING (RFC 2920), as Postfix's smtp sends ----------------------------------

PIPELINED = (*EXTENSIONS, "PIPELINING")


async def test_mail_every_rcpt_and_data_go_in_one_write_to_a_hop_that_offers_pipelining(world):
    [hop] = await world.mx(scripted(extensions=PIPELINED))
    sent = await world.send(["bob@example.org", "carol@example.org"])
    assert outcome(sent) == {"bob@example.org": (SENT, "2.0.0"), "carol@example.org": (SENT, "2.0.0")}
    [taken] = hop.transactions
    assert taken.after_mail == b"RCPT TO:<bob@example.org>\r\nRCPT TO:<carol@example.org>\r\nDATA\r\n"
    assert taken.content == MESSAGE


async def test_a_hop_without_pipelining_gets_each_command_after_the_reply_before_it(world):
    [hop] = await world.mx(scripted())
    await world.send(["bob@example.org", "carol@example.org"])
    assert hop.transactions[0].after_mail == b""
    assert hop.verbs() == ["EHLO", "MAIL", "RCPT", "RCPT", "DATA"]


@pytest.mark.parametrize("extensions", [EXTENSIONS, PIPELINED], ids=["one by one", "pipelined"])
async def test_a_refused_mail_refuses_every_recipient_and_the_connection_goes_on_in_step(world, extensions):
    [hop] = await world.mx(scripted(extensions=extensions, mail=["550 5.7.1 sender refused", "250 2.1.0 Ok"]))
    first = await world.send(["bob@example.org", "carol@example.org"])
    assert outcome(first) == {"bob@example.org": (BOUNCED, "5.7.1"), "carol@example.org": (BOUNCED, "5.7.1")}
    # pipelined, the hop answered the RCPTs after the refused MAIL with 250: none of them counts
    second = await world.send(["dave@example.org"])
    assert outcome(second) == {"dave@example.org": (SENT, "2.0.0")}
    assert hop.connections == 1 and [t.rcpt_addresses() for t in hop.messages()] == [["dave@example.org"]]
    assert "RSET" in hop.verbs()


@pytest.mark.parametrize("extensions", [EXTENSIONS, PIPELINED], ids=["one by one", "pipelined"])
async def test_some_recipients_refused_the_others_get_the_message(world, extensions):
    [hop] = await world.mx(scripted(extensions=extensions, rcpt={"carol@example.org": "550 5.1.1 no such user"}))
    sent = await world.send(["bob@example.org", "carol@example.org", "dave@example.org"])
    assert outcome(sent) == {"bob@example.org": (SENT, "2.0.0"), "carol@example.org": (BOUNCED, "5.1.1"),
                             "dave@example.org": (SENT, "2.0.0")}
    assert hop.messages()[0].rcpt_addresses() == ["bob@example.org", "dave@example.org"]


async def test_a_hop_that_takes_pipelined_data_with_no_recipient_gets_an_empty_dot_and_stays_in_step(world):
    """A broken hop answers 354 to the pipelined DATA though it refused every RCPT: the dot ends it
    without a message, RSET follows, and the next message on the connection pairs its replies right."""
    [hop] = await world.mx(scripted(extensions=PIPELINED, data_unwanted="354 go ahead",
                                    rcpt=["550 5.1.1 no such user", "250 2.1.5 Ok"]))
    first = await world.send()
    assert outcome(first) == {"bob@example.org": (BOUNCED, "5.1.1")}
    second = await world.send(["carol@example.org"])
    assert outcome(second) == {"carol@example.org": (SENT, "2.0.0")}
    assert hop.connections == 1 and len(hop.messages()) == 1
    assert hop.verbs() == ["EHLO", "MAIL", "RCPT", "DATA", "RSET", "MAIL", "RCPT", "DATA"]


async def test_a_pipelined_data_refused_defers_and_the_hop_that_hangs_up_mid_group_is_a_lost_connection(world):
    primary, backup = await world.mx(scripted(extensions=PIPELINED, data="451 4.3.0 busy"),
                                     scripted(extensions=PIPELINED, rcpt=DROP))
    sent = await world.send()
    assert outcome(sent) == {"bob@example.org": (DEFERRED, "4.4.2")}
    assert "while sending RCPT TO" in sent[0].reply and backup.connections == 1
    assert primary.verbs()[:5] == ["EHLO", "MAIL", "RCPT", "DATA", "RSET"] and not primary.messages()


async def test_replies_that_come_a_byte_at_a_time_are_each_read_whole():
    """A pipelined group's replies (one of several lines) that arrive in pieces, and data after the last of
    them that nobody asked for, which must never be read as the reply to a later command."""
    async def hop(reader, writer):
        async def dribble(text: bytes):
            for byte in text:
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(0.001)
        await dribble(b"220 hop\r\n")
        await reader.readuntil(b"\r\n")  # EHLO
        writer.write(b"250-hop\r\n250 PIPELINING\r\n")
        await reader.readuntil(b"DATA\r\n")
        await dribble(b"250-sender\r\n250 ok\r\n550 5.1.1 no\r\n354 go\r\n" + b"250 unasked\r\n")
        await reader.readuntil(b"NOOP\r\n")
        writer.write(b"252 noop reply\r\n")
        await reader.read()

    server = await asyncio.start_server(hop, "127.0.0.1", 0)
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=server.sockets[0].getsockname()[1], timeout=5,
                            start_tls=False)
    try:
        await client.connect()
        await client.ehlo()
        protocol = client.protocol
        assert isinstance(protocol, PipeliningProtocol)
        protocol.send(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n", 3)
        replies = [await protocol.reply(5) for _ in range(3)]
        assert [(r.code, r.message) for r in replies] == [(250, "sender\nok"), (550, "5.1.1 no"), (354, "go")]
        await asyncio.sleep(0.1)  # the unasked line comes meanwhile
        assert (await client.execute_command(b"NOOP")).code == 252
    finally:
        client.close()
        server.close()


# --- The wire format on its own --------------------------------------------------------

def test_an_attached_8bit_message_is_converted_inside_and_marked_7bit():
    inner = "From: c@example.net\r\nSubject: inner\r\n\r\nÄrger\r\n"
    message = (
        "From: a@example.com\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"o\"\r\n\r\n"
        "--o\r\nContent-Type: text/plain\r\n\r\nfirst, no encoding named\r\nnaïve\r\n"
        "--o\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" + inner +
        "--o--\r\n"
    ).encode()
    converted = outbound.downgrade_8bit(message)
    assert converted.isascii()
    assert b"Content-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n" \
           b"first, no encoding named\r\nna=C3=AFve\r\n" in converted
    assert b"Content-Type: message/rfc822\r\nContent-Transfer-Encoding: 7bit\r\n" in converted
    assert b"Subject: inner\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n=C3=84rger\r\n" in converted


def test_a_base64_part_is_left_alone_and_so_is_an_8bit_header_only_message():
    headers_only = "Subject: Grüße\r\n\r\nascii body\r\n".encode()
    assert outbound.downgrade_8bit(headers_only) is headers_only
    base64_part = (b"Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\nR3LDvMOfZQ==\r\n")
    assert outbound.downgrade_8bit(base64_part) is base64_part
    part_header_only = (b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain; "
                        b"name=\"Gr\xc3\xbc\xc3\x9fe.txt\"\r\n\r\nascii\r\n--b--\r\n")
    assert outbound.downgrade_8bit(part_header_only) is part_header_only


def test_a_single_line_of_megabytes_is_folded_in_one_pass():
    line = b"y" * 5_000_000
    out = b"".join(outbound.wire_chunks(line + b"\r\n"))
    pieces = out.split(b"\r\n")
    assert pieces[0] == line[:998] and all(p.startswith(b" ") and len(p) <= 998 for p in pieces[1:-1])
    assert b"".join(p[1:] for p in pieces[1:-1]) == line[998:]


def test_xtext_and_utf8_xtext():
    assert outbound.xtext("a+b=c d\x7fé") == "a+2Bb+3Dc+20d+7F+C3+A9"
    assert outbound.uxtext("jörg+x\\y") == "j\\x{F6}rg\\x{2B}x\\x{5C}y"
