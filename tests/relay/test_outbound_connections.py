"""How the relay talks to its next hop: a backlog goes over few connections, and STARTTLS is used when offered."""

import ssl

import pytest

from tests.support.certs import self_signed
from tests.support.mail import make_message, message_id
from tests.support.net import free_port, wait_until
from tests.support.sink import Sink


def test_a_backlog_for_one_next_hop_is_flushed_over_fewer_connections_than_messages(make_relay):
    port = free_port()
    relay = make_relay(port)
    sent = [f"backlog{n}@example.net" for n in range(20)]
    with relay.smtp() as client:
        for mid in sent:
            client.sendmail("alice@example.net", ["bob@example.com"], make_message(mid))
    relay.wait_log(r"status=deferred", count=20)

    sink = Sink(port=port).start()
    try:
        sink.wait_for(20)
        assert sorted(message_id(m.content) for m in sink.messages) == sorted(sent)
        wait_until(lambda: relay.queue_files() == [], what="an empty queue")
        assert 1 <= sink.connections < len(sent) // 2, f"{sink.connections} connections for {len(sent)} messages"
    finally:
        sink.stop()


@pytest.fixture
def tls_sink(tmp_path):
    cert, key = self_signed(tmp_path, "mx.example.com")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server = Sink(tls_context=context).start()
    yield server
    server.stop()


def test_mail_goes_over_starttls_when_the_next_hop_offers_it(make_relay, tls_sink):
    """Opportunistic TLS, as Postfix's 'may': a self-signed certificate is good enough to encrypt."""
    relay = make_relay(tls_sink.port)
    relay.send("alice@example.net", ["bob@example.com"], make_message("secret@example.net"))
    [message] = tls_sink.wait_for(1)
    assert message.tls
    assert message_id(message.content) == "secret@example.net"
    relay.wait_log(r"to=<bob@example\.com>, .*status=sent")
    assert "TLS failed" not in relay.log()


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
def test_a_next_hop_whose_tls_handshake_fails_still_gets_the_mail_in_plain_text(make_relay, tmp_path):
    """Opportunistic means a broken TLS offer must not stop the mail (the relay insists on TLS 1.2 or later)."""
    cert, key = self_signed(tmp_path, "old.example.com")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.minimum_version = context.maximum_version = ssl.TLSVersion.TLSv1_1
    old = Sink(tls_context=context).start()
    try:
        relay = make_relay(old.port)
        relay.send("alice@example.net", ["bob@example.com"], make_message("fallback@example.net"))
        [message] = old.wait_for(1)
        assert not message.tls
        assert message_id(message.content) == "fallback@example.net"
        relay.wait_log(r"TLS failed \(.*\); trying again without TLS")
        relay.wait_log(r"to=<bob@example\.com>, .*status=sent")
    finally:
        old.stop()


def test_mail_goes_in_plain_text_to_a_next_hop_without_starttls(relay, sink):
    relay.send("alice@example.net", ["bob@example.com"], make_message("plain@example.net"))
    [message] = sink.wait_for(1)
    assert not message.tls
