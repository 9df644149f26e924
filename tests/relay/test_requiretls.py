"""REQUIRETLS (RFC 8689): offered and taken only inside TLS, kept with the message, sent on.

A client that asks for REQUIRETLS is told where its mail may go: only over TLS. The
gateway offers the keyword only once the session is encrypted (after STARTTLS or on the
SMTPS port), refuses the parameter in plain text, and keeps it in the queue file so the
delivery side can hold every onward hop to it. Sending on, MAIL carries REQUIRETLS to a
next hop that offered it inside TLS.

One gateway serves the receiving tests: its next hop is down, so what it accepted stays
in the queue, where the envelope is read back.
"""

from __future__ import annotations

import json
import ssl

import aiosmtplib
import pytest

from relay import outbound
from relay.queue.entry import Envelope
from tests.support.certs import Authority
from tests.support.mail import make_message
from tests.support.net import free_port
from tests.support.raw_smtp import RawSmtp
from tests.support.relay import RelayProcess, base_mta
from tests.support.scripted_hop import DEFAULT_EXTENSIONS, Script, ScriptedHop

NEEDS_TLS = "530 5.7.10 REQUIRETLS needs a TLS session"
BAD_SYNTAX = "501 5.5.4 Bad REQUIRETLS parameter syntax"


@pytest.fixture(scope="module")
def authority(tmp_path_factory):
    return Authority(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, authority):
    """A gateway with a certificate from the test authority, an SMTPS port, and its next hop down."""
    workdir = tmp_path_factory.mktemp("gateway")
    cert, key = authority.issue("gw.example.com")
    port, smtps_port = free_port(), free_port()
    mta = {**base_mta(port, 1), "smtps_listen": [f"127.0.0.1:{smtps_port}"],
           "tls": {"cert_file": str(cert), "key_file": str(key)}}
    relay = RelayProcess(workdir, mta, port).start()
    relay.smtps_port = smtps_port
    relay.wait_log(rf"listening for SMTPS on 127\.0\.0\.1:{smtps_port}")
    yield relay
    relay.kill()


def trusting(authority) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(authority.cert_path))


def plain_session(relay) -> RawSmtp:
    raw = RawSmtp(relay.port)
    raw.start_session()
    return raw


def tls_session(relay, authority) -> RawSmtp:
    """A session after STARTTLS and a second EHLO; the certificate is checked against gw.example.com."""
    raw = plain_session(relay)
    assert raw.command("STARTTLS").startswith("220 ")
    raw.starttls(trusting(authority))
    assert raw.command("EHLO client.example.net").startswith("250 ")
    return raw


def ehlo_keywords(raw: RawSmtp) -> list[str]:
    raw.send(b"EHLO client.example.net\r\n")
    return [line[4:].split(" ")[0].upper() for line in raw.reply()[1:]]


def send(raw: RawSmtp, mail: str, message: bytes = b"Subject: hi\r\n\r\nhello\r\n") -> str:
    """One whole transaction; returns the queue ID."""
    assert raw.command(mail) == "250 2.1.0 Ok"
    assert raw.command("RCPT TO:<bob@example.com>") == "250 2.1.5 Ok"
    assert raw.command("DATA").startswith("354 ")
    reply = raw.command(message + b".")
    assert reply.startswith("250 2.0.0 Ok: queued as "), reply
    return reply.rsplit(" ", 1)[1]


def queued_envelope(relay, queue_id: str) -> dict:
    """The envelope as the queue file holds it: the JSON line after the magic line."""
    lines = (relay.state_dir / "queue" / "msg" / queue_id).read_bytes().split(b"\n", 2)
    return json.loads(lines[1])


# --- the EHLO keyword ----------------------------------------------------------------------


def test_plain_text_ehlo_does_not_offer_requiretls(gateway):
    with plain_session(gateway) as raw:
        keywords = ehlo_keywords(raw)
    assert "STARTTLS" in keywords and "REQUIRETLS" not in keywords


def test_ehlo_after_starttls_offers_requiretls(gateway, authority):
    with tls_session(gateway, authority) as raw:
        keywords = ehlo_keywords(raw)
    assert "REQUIRETLS" in keywords and "STARTTLS" not in keywords
    assert keywords[-1] == "CHUNKING"  # the keywords before it keep their place


def test_smtps_offers_requiretls_and_takes_it(gateway, authority):
    with RawSmtp(gateway.smtps_port) as raw:
        raw.starttls(trusting(authority))  # TLS from the first byte
        assert raw.greeting().startswith("220 ")
        assert "REQUIRETLS" in ehlo_keywords(raw)
        queue_id = send(raw, "MAIL FROM:<alice@example.net> REQUIRETLS")
    assert queued_envelope(gateway, queue_id)["requiretls"] is True


# --- MAIL FROM's parameter -----------------------------------------------------------------


def test_requiretls_in_plain_text_is_refused_and_the_session_goes_on(gateway):
    with plain_session(gateway) as raw:
        assert raw.command("MAIL FROM:<alice@example.net> REQUIRETLS") == NEEDS_TLS
        assert raw.command("RCPT TO:<bob@example.com>").startswith("503 ")  # no transaction was begun
        queue_id = send(raw, "MAIL FROM:<alice@example.net>")  # the same client, without the demand
    assert queued_envelope(gateway, queue_id)["requiretls"] is False
    gateway.wait_log(r"NOQUEUE: reject: MAIL from unknown\[127\.0\.0\.1\]: 530 5\.7\.10 REQUIRETLS needs a TLS "
                     r"session; from=<alice@example\.net>")


def test_requiretls_in_plain_text_is_refused_before_a_size_it_would_take(gateway):
    """The refusal does not depend on where the parameter stands among the others."""
    with plain_session(gateway) as raw:
        assert raw.command("MAIL FROM:<alice@example.net> SIZE=100 BODY=8BITMIME requiretls") == NEEDS_TLS


def test_requiretls_after_starttls_is_kept_with_the_message(gateway, authority):
    with tls_session(gateway, authority) as raw:
        queue_id = send(raw, "MAIL FROM:<alice@example.net> REQUIRETLS", make_message("secret@x"))
    envelope = queued_envelope(gateway, queue_id)
    assert envelope["requiretls"] is True
    assert envelope["protocol"] == "ESMTPS"


@pytest.mark.parametrize("keyword", ["requiretls", "RequireTLS"])
def test_the_keyword_is_case_insensitive(gateway, authority, keyword):
    with tls_session(gateway, authority) as raw:
        queue_id = send(raw, f"MAIL FROM:<alice@example.net> {keyword}")
    assert queued_envelope(gateway, queue_id)["requiretls"] is True


def test_requiretls_goes_with_the_other_parameters(gateway, authority):
    with tls_session(gateway, authority) as raw:
        queue_id = send(raw, "MAIL FROM:<alice@example.net> BODY=8BITMIME REQUIRETLS RET=HDRS ENVID=e1 SIZE=50")
    envelope = queued_envelope(gateway, queue_id)
    assert (envelope["requiretls"], envelope["body"], envelope["ret"], envelope["envid"]) == (
        True, "8BITMIME", "HDRS", "e1")


def test_only_the_transaction_that_asked_is_marked(gateway, authority):
    """A second message in the same session, and one after RSET, are not held to the first one's demand."""
    with tls_session(gateway, authority) as raw:
        first = send(raw, "MAIL FROM:<alice@example.net> REQUIRETLS")
        second = send(raw, "MAIL FROM:<alice@example.net>")
        assert raw.command("MAIL FROM:<alice@example.net> REQUIRETLS") == "250 2.1.0 Ok"
        assert raw.command("RSET").startswith("250 ")
        third = send(raw, "MAIL FROM:<alice@example.net>")
    assert [queued_envelope(gateway, i)["requiretls"] for i in (first, second, third)] == [True, False, False]


@pytest.mark.parametrize("parameters", [
    "REQUIRETLS=yes",
    "REQUIRETLS=",
    "REQUIRETLS=NO",  # not a way to ask for less
    "REQUIRETLS REQUIRETLS",
    "REQUIRETLS requiretls",
    "REQUIRETLS SIZE=10 REQUIRETLS",
])
def test_a_value_or_a_repeat_is_a_syntax_error(gateway, authority, parameters):
    with tls_session(gateway, authority) as raw:
        assert raw.command(f"MAIL FROM:<alice@example.net> {parameters}") == BAD_SYNTAX
        assert raw.command("RCPT TO:<bob@example.com>").startswith("503 ")
        assert raw.command("MAIL FROM:<alice@example.net> REQUIRETLS") == "250 2.1.0 Ok"  # a fresh try works


def test_a_value_is_a_syntax_error_in_plain_text_too(gateway):
    """A malformed parameter is a syntax error wherever it comes; the TLS question does not arise."""
    with plain_session(gateway) as raw:
        assert raw.command("MAIL FROM:<alice@example.net> REQUIRETLS=yes") == BAD_SYNTAX


def test_a_longer_keyword_is_not_requiretls(gateway, authority):
    with tls_session(gateway, authority) as raw:
        reply = raw.command("MAIL FROM:<alice@example.net> REQUIRETLSX")
    assert reply == "555 5.5.4 Unsupported option: REQUIRETLSX"


# --- sending it on -------------------------------------------------------------------------


def envelope(requiretls: bool) -> Envelope:
    return Envelope(id="X", sender="alice@example.net", recipients=["bob@example.com"], arrival=0.0, size=10,
                    requiretls=requiretls)


@pytest.mark.parametrize("asked, offered, sent", [
    (True, True, True),
    (True, False, False),  # such a hop is refused before MAIL; the parameter is never sent where unknown
    (False, True, False),
    (False, False, False),
])
def test_prepare_sends_requiretls_when_asked_and_offered(asked, offered, sent):
    _, options = outbound.prepare(b"Subject: x\r\n\r\nx\r\n", envelope(asked),
                                  outbound.Offers(eight_bit=True, requiretls=offered))
    assert ("REQUIRETLS" in options) is sent
    assert options.count("REQUIRETLS") <= 1


@pytest.fixture(scope="module")
def tls_hop(tmp_path_factory, authority):
    """A second gateway as the next hop: mx.example.com, with a certificate, offering REQUIRETLS inside TLS.

    What it accepts stays in its queue (its own next hop is down), so its envelope shows what it was sent.
    """
    workdir = tmp_path_factory.mktemp("hop")
    cert, key = authority.issue("mx.example.com")
    port = free_port()
    mta = {**base_mta(port, 1), "hostname": "mx.example.com",
           "tls": {"cert_file": str(cert), "key_file": str(key)}}
    hop = RelayProcess(workdir, mta, port).start()
    yield hop
    hop.kill()


async def test_offers_count_requiretls_only_inside_tls(tls_hop, authority):
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=tls_hop.port, start_tls=False, timeout=10)
    await client.connect()
    try:
        await client.ehlo()
        assert not outbound.Offers.of(client).requiretls
        await client.starttls(tls_context=trusting(authority), server_hostname="mx.example.com")
        await client.ehlo()
        assert outbound.Offers.of(client).requiretls
    finally:
        client.close()


async def test_a_requiretls_offer_in_plain_text_counts_for_nothing():
    """A hop (or someone in the path) that says REQUIRETLS without TLS is not taken at its word."""
    hop = ScriptedHop(Script(extensions=(*DEFAULT_EXTENSIONS, "REQUIRETLS"))).start()
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=hop.port, start_tls=False, timeout=10)
    try:
        await client.connect()
        await client.ehlo()
        assert client.supports_extension("requiretls")
        offers = outbound.Offers.of(client)
        assert not offers.requiretls
        assert offers.dsn and offers.smtputf8  # the other offers still count
        _, options = outbound.prepare(b"Subject: x\r\n\r\nx\r\n", envelope(True), offers)
        assert "REQUIRETLS" not in options
    finally:
        client.close()
        hop.stop()


def test_the_next_hop_over_verified_tls_is_sent_requiretls(make_relay, tls_hop, authority):
    """End to end: taken over STARTTLS with REQUIRETLS, delivered over verified TLS, and the hop was asked too."""
    cert, key = authority.issue("gw.example.com", stem="sender")
    relay = make_relay(tls_hop.port, tls={"cert_file": str(cert), "key_file": str(key),
                                          "ca_file": str(authority.cert_path)},
                       internal_relay={"host": "127.0.0.1", "port": tls_hop.port, "mx": False, "tls": "verify",
                                       "tls_name": "mx.example.com"})
    with tls_session(relay, authority) as raw:
        send(raw, "MAIL FROM:<alice@example.net> REQUIRETLS", make_message("onward@x"))
    [line] = relay.wait_log(r"to=<bob@example\.com>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:\d+, .*status=sent "
                            r"\(250 2\.0\.0 Ok: queued as (\w+)\)")
    hop_envelope = queued_envelope(tls_hop, line)
    assert hop_envelope["requiretls"] is True
    assert hop_envelope["protocol"] == "ESMTPS"
