"""Where mail goes next: relay domains inside, the rest outside or straight to the MX hosts.

Mail routed by MX goes to port 25, as on the Internet: the MX hosts here are sinks
on 127.x.y.z:25 (needs root), found through an authoritative DNS server on loopback.
"""

import socket

import pytest

from tests.support.dns_server import DnsServer
from tests.support.mail import make_message, message_id, read_dsn
from tests.support.net import free_port, spare_loopback_ip, wait_until
from tests.support.sink import Sink


@pytest.fixture
def dns_server():
    started = []

    def start(records: dict) -> DnsServer:
        server = DnsServer(records).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def mx_host():
    """mx_host() -> an unused loopback address; mx_host(listen=True) -> a Sink listening on it, port 25."""
    started = []

    def make(listen: bool = True):
        try:
            ip = spare_loopback_ip(25)
        except PermissionError:
            pytest.skip("MX delivery goes to port 25: binding it needs root")
        if not listen:
            return ip
        server = Sink(host=ip, port=25).start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture
def mx_relay(make_relay, sink, dns_server):
    """A relay with no external relay host: outside mail goes to the recipient domain's MX hosts.
    Mail for example.com (the sender's domain, so also every bounce) goes to `sink`."""

    def make(records: dict, **overrides):
        dns = dns_server(records)
        return make_relay(sink.port, external_relay={"host": ""}, dns_servers=[dns.address], **overrides), dns

    return make


def test_relay_domain_recipients_go_to_the_internal_relay_and_the_rest_to_the_external_relay(make_relay):
    internal, external = Sink().start(), Sink().start()
    try:
        relay = make_relay(internal.port, external_relay={"host": "127.0.0.1", "port": external.port, "mx": False})
        relay.send("alice@example.net", ["bob@example.com", "dave@example.org", "erin@EXAMPLE.COM"],
                   make_message("split@example.net"))
        [inside] = internal.wait_for(1)
        [outside] = external.wait_for(1)
        assert sorted(inside.recipients) == ["bob@example.com", "erin@EXAMPLE.COM"]
        assert outside.recipients == ["dave@example.org"]
        assert message_id(inside.content) == message_id(outside.content) == "split@example.net"
        relay.wait_log(r": removed")
    finally:
        internal.stop()
        external.stop()


def test_mx_hosts_are_tried_lowest_preference_first(mx_relay, mx_host):
    best, backup = mx_host(), mx_host()
    relay, dns = mx_relay({
        # the backup is listed first: order must come from the preference, not the answer
        ("example.org", "MX"): ["20 mx2.example.org.", "10 mx1.example.org."],
        ("mx1.example.org", "A"): [best.host],
        ("mx2.example.org", "A"): [backup.host],
    })
    for n in range(3):
        relay.send("alice@example.com", ["dave@example.org"], make_message(f"pref{n}@example.com"))
    best.wait_for(3)
    relay.wait_log(rf"to=<dave@example\.org>, relay=mx1\.example\.org\[{best.host}\]:25, .*status=sent", count=3)
    assert backup.messages == [] and backup.connections == 0
    assert ("example.org", "MX") in dns.queries


def test_a_refused_connection_to_the_first_mx_falls_back_to_the_next(mx_relay, mx_host):
    down = mx_host(listen=False)
    backup = mx_host()
    relay, _ = mx_relay({
        ("example.org", "MX"): ["10 mx1.example.org.", "20 mx2.example.org."],
        ("mx1.example.org", "A"): [down],
        ("mx2.example.org", "A"): [backup.host],
    })
    relay.send("alice@example.com", ["dave@example.org"], make_message("fallback@example.com"))
    [message] = backup.wait_for(1)
    assert message.recipients == ["dave@example.org"]
    relay.wait_log(rf"to=<dave@example\.org>, relay=mx2\.example\.org\[{backup.host}\]:25, .*status=sent")
    assert "status=deferred" not in relay.log()


def test_a_domain_without_mx_records_gets_mail_at_its_address_record(mx_relay, mx_host):
    host = mx_host()
    relay, dns = mx_relay({("example.org", "A"): [host.host]})
    relay.send("alice@example.com", ["dave@example.org"], make_message("no-mx@example.com"))
    [message] = host.wait_for(1)
    assert message_id(message.content) == "no-mx@example.com"
    relay.wait_log(rf"relay=example\.org\[{host.host}\]:25, .*status=sent")
    assert ("example.org", "MX") in dns.queries and ("example.org", "A") in dns.queries


def _bounce_for(relay, sink, recipient: str):
    """The one DSN the sender got, after the message left the queue."""
    relay.wait_log(r": removed")
    [dsn] = sink.wait_for(1)
    assert dsn.sender == "<>" and dsn.recipients == ["alice@example.com"]
    report = read_dsn(dsn.content)
    [block] = report.recipients
    assert block["Final-Recipient"] == f"rfc822; {recipient}"
    assert block["Action"] == "failed"
    return block


def test_a_null_mx_domain_bounces_at_once_without_a_connection(mx_relay, sink):
    relay, _ = mx_relay({("example.org", "MX"): ["0 ."]})
    relay.send("alice@example.com", ["dave@example.org"], make_message("nullmx@example.com"))
    block = _bounce_for(relay, sink, "dave@example.org")
    assert block["Status"] == "5.1.10"
    assert "null MX" in block["Diagnostic-Code"]
    relay.wait_log(r"to=<dave@example\.org>, relay=none, .*dsn=5\.1\.10, status=bounced")
    relay.wait_log(r"\w+: removed", count=2)  # the message, then its notification
    assert relay.queue_files() == []


def test_a_domain_that_does_not_exist_bounces(mx_relay, sink):
    relay, dns = mx_relay({("example.net", "A"): ["127.0.0.1"]})
    relay.send("alice@example.com", ["dave@no-such-domain.example"], make_message("nxdomain@example.com"))
    block = _bounce_for(relay, sink, "dave@no-such-domain.example")
    assert block["Status"] == "5.4.4"
    assert "Host or domain name not found" in block["Diagnostic-Code"]
    assert ("no-such-domain.example", "MX") in dns.queries


def test_a_dns_server_that_does_not_answer_defers_the_mail(make_relay, sink):
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))  # takes queries, answers none
    try:
        relay = make_relay(sink.port, external_relay={"host": ""},
                           dns_servers=[f"127.0.0.1:{silent.getsockname()[1]}"])
        relay.send("alice@example.com", ["dave@example.org"], make_message("dns-down@example.com"))
        relay.wait_log(r"to=<dave@example\.org>, relay=none, .*dsn=4\.4\.3, status=deferred "
                       r"\(Host or domain name not found", timeout=30)
        assert len(relay.queue_files()) == 1
        assert sink.messages == []  # no bounce for a temporary failure
    finally:
        silent.close()


def test_a_relay_host_with_mx_true_is_looked_up_by_mx_and_reached_on_its_configured_port(make_relay, sink, dns_server):
    dns = dns_server({
        ("smarthost.example.net", "MX"): ["10 out1.example.net."],
        ("out1.example.net", "A"): ["127.0.0.1"],
    })
    relay = make_relay(sink.port, dns_servers=[dns.address],
                       external_relay={"host": "smarthost.example.net", "port": sink.port, "mx": True})
    relay.send("alice@example.com", ["dave@example.org"], make_message("smarthost@example.com"))
    [message] = sink.wait_for(1)
    assert message.recipients == ["dave@example.org"]
    relay.wait_log(rf"relay=out1\.example\.net\[127\.0\.0\.1\]:{sink.port}, .*status=sent")


def test_a_relay_host_that_is_not_in_dns_defers_rather_than_bounces(make_relay, sink, dns_server):
    """A misspelt relay host is the admin's mistake to fix, not a reason to return the sender's mail."""
    dns = dns_server({("example.net", "A"): ["127.0.0.1"]})
    relay = make_relay(sink.port, dns_servers=[dns.address],
                       external_relay={"host": "smarthost.example.net", "port": sink.port, "mx": True})
    relay.send("alice@example.com", ["dave@example.org"], make_message("typo@example.com"))
    relay.wait_log(r"to=<dave@example\.org>, relay=none, .*dsn=4\.4\.4, status=deferred")
    assert relay.queue_files() and sink.messages == []


def test_a_next_hop_that_is_the_relay_itself_is_refused_and_the_mail_stays_queued(make_relay, sink):
    relay = make_relay(sink.port, start=False)
    relay.write_config({**relay.mta, "internal_relay": {"host": "127.0.0.1", "port": relay.port, "mx": False}})
    relay.start()
    relay.send("alice@example.net", ["bob@example.com"], make_message("loop@example.net"))
    [line] = relay.wait_log(r"to=<bob@example\.com>.*status=deferred \(.*\)")
    assert "loops back to myself" in line
    assert "dsn=4.4.6" in line
    assert len(relay.queue_files()) == 1
    # It did not deliver to itself: only the one message ever arrived.
    assert relay.log().count(": client=") == 1
    assert sink.messages == []
