"""A message crosses the relay: real SMTP client in, real SMTP server out."""

import smtplib
import subprocess

import pytest


def test_trusted_client_mail_reaches_the_next_hop_with_a_received_header(relay, sink):
    reply = relay.send("alice@example.net", ["bob@example.com"],
                       "Subject: hello\r\nMessage-ID: <m1@example.net>\r\n\r\nbody line\r\n")
    assert reply == {}
    [message] = sink.wait_for(1)
    assert message.sender == "alice@example.net"
    assert message.recipients == ["bob@example.com"]
    assert message.content.startswith(b"Received: from client.example.net (unknown [127.0.0.1])\r\n\tby gw.example.com")
    assert b"body line\r\n" in message.content
    assert message.helo == "gw.example.com"
    relay.wait_log(r"to=<bob@example\.com>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:\d+, delay=[\d.]+, dsn=2\.0\.0, status=sent")
    relay.wait_log(r": removed")
    assert relay.queue_files() == []


def test_greeting_and_ehlo_advertise_what_a_gateway_offers(relay):
    client = smtplib.SMTP()
    code, banner = client.connect("127.0.0.1", relay.port)
    assert (code, banner) == (220, b"gw.example.com ESMTP Postern")
    code, text = client.ehlo("client.example.net")
    lines = text.decode().splitlines()
    assert lines[0] == "gw.example.com"
    assert {"PIPELINING", "SIZE 10240000", "8BITMIME", "ENHANCEDSTATUSCODES"} <= set(lines[1:])
    assert "STARTTLS" not in lines  # no certificate configured
    client.quit()


def test_queued_reply_names_the_queue_id(relay):
    with relay.smtp() as client:
        client.mail("alice@example.net")
        client.rcpt("bob@example.com")
        code, text = client.data(b"Subject: x\r\n\r\nx\r\n")
    assert code == 250
    assert text.decode().startswith("2.0.0 Ok: queued as ")


def test_swaks_sends_through_the_relay(relay, sink):
    result = subprocess.run(
        ["swaks", "--server", f"127.0.0.1:{relay.port}", "--from", "alice@example.net",
         "--to", "carol@example.com", "--helo", "swaks.example.net", "--header", "Subject: via swaks"],
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "<-  250 2.0.0 Ok: queued as" in result.stdout
    [message] = sink.wait_for(1)
    assert b"Subject: via swaks" in message.content
