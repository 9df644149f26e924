"""STARTTLS for clients, with a certificate from the tls: section."""

import smtplib
import ssl

import pytest

from tests.support.certs import self_signed
from tests.support.raw_smtp import RawSmtp


@pytest.fixture
def tls_relay(make_relay, sink, tmp_path):
    cert, key = self_signed(tmp_path)
    return make_relay(sink.port, tls={"cert_file": str(cert), "key_file": str(key)})


def client_context(tmp_path) -> ssl.SSLContext:
    """Trusts exactly the relay's self-signed certificate, so the handshake proves which one it served."""
    context = ssl.create_default_context(cafile=str(tmp_path / "cert.pem"))
    context.check_hostname = True
    return context


def test_starttls_is_offered_and_mail_arrives_over_it(tls_relay, sink, tmp_path):
    with tls_relay.smtp() as client:
        assert client.has_extn("starttls")
        code, _ = client.starttls(context=client_context(tmp_path))
        assert code == 220
        client.ehlo("client.example.net")
        assert not client.has_extn("starttls")  # not offered twice
        assert client.sock.version() in ("TLSv1.2", "TLSv1.3")
        assert client.sendmail("alice@example.net", ["bob@example.com"], b"Subject: secret\r\n\r\nsecret\r\n") == {}
    [message] = sink.wait_for(1)
    received = message.content.split(b"\r\n\t")[1:4]
    assert received[0].startswith(b"(using TLSv1.")  # as Postfix's smtpd_tls_received_header
    assert received[2].startswith(b"by gw.example.com (Postern) with ESMTPS id ")


def test_mail_without_starttls_is_marked_esmtp(tls_relay, sink):
    tls_relay.send("alice@example.net", ["bob@example.com"])
    [message] = sink.wait_for(1)
    assert b"(Postern) with ESMTP id " in message.content


def test_no_starttls_without_a_certificate(relay):
    with relay.smtp() as client:
        assert not client.has_extn("starttls")
        with pytest.raises(smtplib.SMTPNotSupportedError):
            client.starttls()
    with RawSmtp(relay.port) as raw:
        raw.start_session()
        reply = raw.command("STARTTLS")
        assert reply[:1] in "45", reply  # refused, whichever way
        assert raw.command("NOOP") == "250 2.0.0 Ok"  # and the session goes on in plaintext


def test_commands_pipelined_after_starttls_are_discarded(tls_relay, sink, tmp_path):
    """RFC 3207: plaintext sent after STARTTLS must not be executed inside the TLS session."""
    with RawSmtp(tls_relay.port) as client:
        client.start_session()
        client.send(b"STARTTLS\r\nRSET\r\n")
        assert client.reply()[-1].startswith("220 ")
        client.starttls(client_context(tmp_path))
        client.send(b"EHLO client.example.net\r\n")
        ehlo = client.reply()
        assert ehlo[0] == "250-gw.example.com", f"a reply to the plaintext RSET came first: {ehlo}"
        assert "250-STARTTLS" not in ehlo
        assert client.command("NOOP") == "250 2.0.0 Ok"  # replies stay in step: nothing extra was queued


def test_commands_pipelined_after_starttls_cannot_inject_a_transaction(tls_relay, sink, tmp_path):
    with RawSmtp(tls_relay.port) as client:
        client.start_session()
        client.send(b"STARTTLS\r\nMAIL FROM:<evil@example.net>\r\nRCPT TO:<victim@example.com>\r\n")
        assert client.reply()[-1].startswith("220 ")
        client.starttls(client_context(tmp_path))
        client.command("EHLO client.example.net")
        # Had the plaintext MAIL been kept, this would be a nested MAIL (503).
        assert client.command("MAIL FROM:<alice@example.net>") == "250 2.1.0 Ok"
        assert client.command("DATA") == "554 5.5.1 Error: no valid recipients"  # and no recipient was carried over


def test_a_second_starttls_inside_tls_is_refused_and_the_session_goes_on(tls_relay, sink, tmp_path):
    """As Postfix: STARTTLS inside TLS is a protocol error; the TLS session stays as it was."""
    with RawSmtp(tls_relay.port) as client:
        client.start_session()
        assert client.command("STARTTLS").startswith("220 ")
        client.starttls(client_context(tmp_path))
        client.command("EHLO client.example.net")
        assert client.command("STARTTLS") == "554 5.5.1 Error: TLS already active"
        assert client.command("STARTTLS now") == "501 5.5.4 Syntax: STARTTLS"
        # Still the same TLS session, in step: a whole transaction goes through.
        assert client.command("MAIL FROM:<alice@example.net>") == "250 2.1.0 Ok"
        assert client.command("RCPT TO:<bob@example.com>") == "250 2.1.5 Ok"
        assert client.command("DATA").startswith("354 ")
        assert client.command(b"Subject: twice\r\n\r\nonce\r\n.").startswith("250 2.0.0 Ok: queued as ")
        assert client.command("QUIT").startswith("221 ")
    [message] = sink.wait_for(1)
    assert b"(Postern) with ESMTPS id " in message.content
