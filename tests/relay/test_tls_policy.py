"""TLS policy: required STARTTLS and SMTPS inbound; none, may, encrypt and verify per next hop outbound,
with a client certificate for next hops that ask for one."""

import smtplib
import ssl

import pytest

from relay.config import ConfigError, parse_mta
from relay.control.client import ControlClient
from relay.tls import OutboundTls, certificate_matches
from tests.support.certs import self_signed
from tests.support.mail import make_message, message_id
from tests.support.net import free_port
from tests.support.next_hop import NextHop
from tests.support.raw_smtp import RawSmtp


@pytest.fixture
def hops():
    started = []

    def start(**options) -> NextHop:
        hop = NextHop(**options).start()
        started.append(hop)
        return hop

    yield start
    for hop in started:
        hop.stop()


def to_hop(port: int, **tls) -> dict:
    return {"host": "127.0.0.1", "port": port, "mx": False, **tls}


def queued_reply(relay) -> str:
    with ControlClient(str(relay.workdir / "control.sock")) as client:
        [message] = client.call("io.postern.Queue.List")["messages"]
    return message["last_reply"]


# --- inbound ----------------------------------------------------------------------------------


@pytest.fixture
def server_files(authority):
    return authority.issue("gw.example.com")


def trusting(authority) -> ssl.SSLContext:
    """Verifies the relay's certificate chain (smtplib's STARTTLS would check the name 127.0.0.1)."""
    context = ssl.create_default_context(cafile=str(authority.cert_path))
    context.check_hostname = False
    return context


def test_required_starttls_refuses_mail_before_it_and_accepts_it_after(make_relay, sink, server_files, authority):
    cert, key = server_files
    relay = make_relay(sink.port, tls={"cert_file": str(cert), "key_file": str(key), "inbound": "require"})
    with RawSmtp(relay.port) as raw:
        raw.start_session()
        assert raw.command("MAIL FROM:<alice@example.net>") == "530 5.7.0 Must issue a STARTTLS command first"
        assert raw.command("RCPT TO:<bob@example.com>").startswith("503 ")
    relay.wait_log(r"NOQUEUE: reject: MAIL from unknown\[127\.0\.0\.1\]: 530 5\.7\.0 ")
    with relay.smtp() as client:
        client.starttls(context=trusting(authority))
        client.ehlo("client.example.net")
        assert client.sendmail("alice@example.net", ["bob@example.com"], make_message("after-tls@x")) == {}
    [message] = sink.wait_for(1)
    assert b"(Postern) with ESMTPS id " in message.content


def test_smtps_listener_speaks_tls_from_the_first_byte(make_relay, sink, server_files, authority):
    cert, key = server_files
    smtps_port = free_port()
    relay = make_relay(sink.port, smtps_listen=[f"127.0.0.1:{smtps_port}"],
                       tls={"cert_file": str(cert), "key_file": str(key), "inbound": "require"})
    relay.wait_log(rf"listening for SMTPS on 127\.0\.0\.1:{smtps_port}")
    with smtplib.SMTP_SSL("127.0.0.1", smtps_port, context=trusting(authority), timeout=10) as client:
        client.ehlo("client.example.net")
        assert not client.has_extn("starttls")  # already encrypted
        assert client.sock.version() in ("TLSv1.2", "TLSv1.3")
        assert client.sendmail("alice@example.net", ["bob@example.com"], make_message("smtps@x")) == {}
    [message] = sink.wait_for(1)
    assert b"(Postern) with ESMTPS id " in message.content
    with ControlClient(str(relay.workdir / "control.sock")) as control:
        status = control.call("io.postern.Status.Get")["status"]
    assert status["smtps_listeners"] == [f"127.0.0.1:{smtps_port}"]
    assert status["listeners"] == [f"127.0.0.1:{relay.port}"]


def test_a_plain_text_client_on_the_smtps_port_gets_nothing(make_relay, sink, server_files):
    cert, key = server_files
    smtps_port = free_port()
    relay = make_relay(sink.port, smtps_listen=[f"127.0.0.1:{smtps_port}"],
                       tls={"cert_file": str(cert), "key_file": str(key)})
    with RawSmtp(smtps_port) as raw:
        raw.send(b"EHLO client.example.net\r\n")
        assert b"250" not in raw.wait_closed(10)
    assert relay.send("alice@example.net", ["bob@example.com"]) == {}  # the SMTP port still works


# --- outbound ----------------------------------------------------------------------------------


def test_encrypt_defers_when_the_next_hop_offers_no_starttls(make_relay, hops):
    plain = hops()
    relay = make_relay(plain.port, internal_relay=to_hop(plain.port, tls="encrypt"))
    relay.send("alice@example.net", ["bob@example.com"], make_message("needs-tls@x"))
    relay.wait_log(r"to=<bob@example\.com>, relay=none, .*dsn=4\.7\.4, status=deferred \(TLS is required, but was "
                   rf"not offered by host 127\.0\.0\.1\[127\.0\.0\.1\]:{plain.port}\)")
    assert plain.messages == [], "never in plain text"
    assert "TLS is required, but was not offered" in queued_reply(relay)


def test_encrypt_delivers_over_tls_without_checking_the_certificate(make_relay, hops, tmp_path):
    cert, key = self_signed(tmp_path, "anything.example.net")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    hop = hops(tls_context=context)
    relay = make_relay(hop.port, internal_relay=to_hop(hop.port, tls="encrypt"))
    relay.send("alice@example.net", ["bob@example.com"], make_message("encrypted@x"))
    [message] = hop.wait_for(1)
    assert message.tls and message_id(message.content) == "encrypted@x"


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
def test_encrypt_never_falls_back_to_plain_text_when_the_handshake_fails(make_relay, hops, tmp_path):
    cert, key = self_signed(tmp_path, "old.example.com")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.minimum_version = context.maximum_version = ssl.TLSVersion.TLSv1_1
    old = hops(tls_context=context)
    relay = make_relay(old.port, internal_relay=to_hop(old.port, tls="encrypt"))
    relay.send("alice@example.net", ["bob@example.com"], make_message("no-fallback@x"))
    relay.wait_log(r"dsn=4\.7\.5, status=deferred \(TLS failed with host .*; TLS is required, so not trying plain text\)")
    assert old.messages == []
    assert "trying again without TLS" not in relay.log()


def test_verify_defers_when_the_certificate_is_for_another_name(make_relay, hops, authority):
    hop = hops(tls_context=authority.server_context("other.example.org"))
    relay = make_relay(hop.port, tls={"ca_file": str(authority.cert_path)},
                       internal_relay=to_hop(hop.port, tls="verify", tls_name="mx.example.com"))
    relay.send("alice@example.net", ["bob@example.com"], make_message("wrong-name@x"))
    relay.wait_log(r"dsn=4\.7\.5, status=deferred \(server certificate not verified: host 127\.0\.0\.1\[127\.0\.0\.1\]:"
                   r"\d+ presented a certificate for other\.example\.org, not mx\.example\.com\)")
    assert hop.messages == []
    assert "not mx.example.com" in queued_reply(relay)


def test_verify_defers_when_the_certificate_is_not_from_a_trusted_authority(make_relay, hops, tmp_path):
    cert, key = self_signed(tmp_path, "mx.example.com")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    hop = hops(tls_context=context)
    relay = make_relay(hop.port, internal_relay=to_hop(hop.port, tls="verify", tls_name="mx.example.com"))
    relay.send("alice@example.net", ["bob@example.com"], make_message("untrusted@x"))
    relay.wait_log(r"dsn=4\.7\.5, status=deferred \(server certificate not verified: host .*: "
                   r"certificate verify failed: self.signed certificate\)")
    assert hop.messages == []


@pytest.mark.parametrize("tls_name", ["mx.example.com", "*.example.com"])
def test_verify_delivers_to_a_trusted_certificate_with_the_expected_name(make_relay, hops, authority, tls_name):
    hop = hops(tls_context=authority.server_context("mx.example.com"))
    relay = make_relay(hop.port, tls={"ca_file": str(authority.cert_path)},
                       internal_relay=to_hop(hop.port, tls="verify", tls_name=tls_name))
    relay.send("alice@example.net", ["bob@example.com"], make_message("verified@x"))
    [message] = hop.wait_for(1)
    assert message.tls and message_id(message.content) == "verified@x"


def test_none_never_starts_tls(make_relay, hops, authority):
    hop = hops(tls_context=authority.server_context("mx.example.com"))
    relay = make_relay(hop.port, internal_relay=to_hop(hop.port, tls="none"))
    relay.send("alice@example.net", ["bob@example.com"], make_message("plain@x"))
    [message] = hop.wait_for(1)
    assert not message.tls


def test_outside_mail_follows_the_external_relay_policy(make_relay, hops, authority, sink):
    """Relay domains go to the internal relay under its policy; everything else under the external one."""
    plain = hops()
    relay = make_relay(sink.port, internal_relay=to_hop(sink.port),
                       external_relay=to_hop(plain.port, tls="encrypt"))
    relay.send("alice@example.net", ["bob@example.com", "carol@partner.org"], make_message("split@x"))
    [inside] = sink.wait_for(1)
    assert inside.recipients == ["bob@example.com"]
    relay.wait_log(r"to=<carol@partner\.org>, .*dsn=4\.7\.4, status=deferred \(TLS is required")
    assert plain.messages == []


def test_the_client_certificate_is_shown_to_a_next_hop_that_asks(make_relay, hops, authority):
    client_cert, client_key = authority.issue("gw.example.com", stem="client")
    hop = hops(tls_context=authority.server_context("mx.example.com", require_client_cert=True))
    relay = make_relay(hop.port, internal_relay=to_hop(hop.port, tls="encrypt"),
                       tls={"client_cert_file": str(client_cert), "client_key_file": str(client_key)})
    relay.send("alice@example.net", ["bob@example.com"], make_message("with-cert@x"))
    [message] = hop.wait_for(1)
    assert message.tls and message.client_cert == "gw.example.com"


def test_a_client_certificate_that_cannot_be_loaded_stops_the_daemon_with_its_field(make_relay, sink, tmp_path):
    relay = make_relay(sink.port, start=False, tls={"client_cert_file": str(tmp_path / "missing.pem"),
                                                    "client_key_file": str(tmp_path / "missing-key.pem")})
    relay.start(wait=False)
    assert relay.process.wait(15) == 1
    assert f"postern-relay: mta.tls.client_cert_file: cannot load {tmp_path}/missing.pem" in relay.log()


# --- the policy's parts -----------------------------------------------------------------------


def test_one_context_per_kind_of_trust_built_once(authority):
    config, _ = parse_mta({"internal_relay": {"host": "mx.example.com", "tls": "verify"},
                           "tls_policy": {"partner.org": {"level": "secure", "ca_file": str(authority.cert_path)},
                                          ".partner.org": {"level": "verify", "ca_file": str(authority.cert_path)}}})
    outbound = OutboundTls(config)
    assert outbound.context(True) is outbound.context(True)
    partner = outbound.context(True, str(authority.cert_path))
    assert len({id(outbound.context(False)), id(outbound.context(True)), id(partner)}) == 3
    assert len(outbound.by_ca) == 1, "one context per CA file, however many entries name it"
    assert outbound.context(True).verify_mode == partner.verify_mode == ssl.CERT_REQUIRED
    assert outbound.context(False).verify_mode == ssl.CERT_NONE
    assert outbound.context(False).minimum_version == ssl.TLSVersion.TLSv1_2


def test_a_policy_ca_file_that_cannot_be_loaded_is_named_by_its_entry(tmp_path):
    bad = tmp_path / "partner-ca.pem"
    bad.write_text("not a certificate\n")
    config, _ = parse_mta({"tls_policy": {"partner.org": {"level": "secure", "ca_file": str(bad)}}})
    with pytest.raises(ConfigError) as raised:
        OutboundTls(config)
    [problem] = raised.value.problems
    assert problem.startswith(f"mta.tls_policy.partner.org.ca_file: cannot load {bad}")


@pytest.mark.parametrize("wanted, names, matches", [
    ("mx.example.com", ["mx.example.com"], True),
    ("MX.example.com.", ["mx.example.com"], True),
    ("mx.example.com", ["*.example.com"], True),
    ("a.mx.example.com", ["*.example.com"], False),
    ("mx.example.com", ["other.example.org"], False),
    ("*.mail.protection.outlook.com", ["*.mail.protection.outlook.com"], True),
    ("*.mail.protection.outlook.com", ["contoso-com.mail.protection.outlook.com"], True),
    ("*.mail.protection.outlook.com", ["mail.protection.outlook.com"], False),
    ("*.mail.protection.outlook.com", ["evil.outlook.com.example.net"], False),
    ("192.0.2.7", ["192.0.2.7"], True),
    ("mx.example.com", [], False),
])
def test_certificate_names_match_like_postfix(wanted, names, matches):
    assert certificate_matches(wanted, names) is matches


def test_starttls_on_the_smtps_port_is_refused_as_tls_is_already_active(make_relay, sink, server_files, authority):
    cert, key = server_files
    smtps_port = free_port()
    relay = make_relay(sink.port, smtps_listen=[f"127.0.0.1:{smtps_port}"],
                       tls={"cert_file": str(cert), "key_file": str(key)})
    relay.wait_log(rf"listening for SMTPS on 127\.0\.0\.1:{smtps_port}")
    with RawSmtp(smtps_port) as raw:
        raw.sock = trusting(authority).wrap_socket(raw.sock, server_hostname="gw.example.com")
        raw.start_session()
        assert raw.command("STARTTLS") == "554 5.5.1 Error: TLS already active"
        assert raw.command("NOOP") == "250 2.0.0 Ok"  # the session goes on, encrypted as before
        assert raw.sock.version() in ("TLSv1.2", "TLSv1.3")
