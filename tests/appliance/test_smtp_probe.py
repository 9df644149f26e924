"""The probing SMTP client (appliance.diagnostics.smtp_probe and smtp_send) against real servers on loopback."""

import socket
import ssl

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from appliance.diagnostics.smtp_probe import (FieldProblem, SmtpChannel, SmtpFailure, TelnetSession, bare_host,
                                              ehlo_name, where, wire_line)
from appliance.diagnostics.smtp_send import TestMessage, body_lines, check, send_test_message
from tests.support.certs import self_signed
from tests.support.net import free_port
from tests.support.plain_text_tls import plain_text_tls_hop  # noqa: F401 (a fixture)
from tests.support.scripted_hop import Script, ScriptedHop


def test_wire_line_refuses_anything_that_would_start_another_line():
    assert wire_line("EHLO x") == b"EHLO x\r\n"
    for bad in ("EHLO x\r\nRSET", "EHLO x\nRSET", "EHLO x\r", "EHLO\0"):
        with pytest.raises(FieldProblem):
            wire_line(bad)


def test_body_line_ends_become_crlf_and_dots_are_stuffed():
    assert body_lines("a\r\n.\rb\n..c\n") == [b"a", b"..", b"b", b"...c"]
    # Non-ASCII text goes quoted-printable, still in short lines.
    assert body_lines("caf\u00e9") == [b"caf=C3=A9"]


def test_every_field_problem_is_named_before_anything_is_sent():
    message = TestMessage(server="", port="70000", tls="none", auth="plain", sender="not an address",
                          to="", subject="a\nb", headers="Bad header line")
    fields = {problem.field for problem in check(message)}
    assert fields == {"server", "port", "auth", "username", "sender", "to", "subject", "headers"}
    auth = next(p for p in check(message) if p.field == "auth")
    assert "only sent over TLS" in auth.reason


async def test_a_refused_connection_is_said_in_words():
    lines = []
    outcome = await send_test_message(TestMessage(server="127.0.0.1", port=free_port(), to="b@example.com"),
                                      lines.append)
    assert not outcome.ok and "connection refused" in outcome.summary
    assert lines[-1].kind == "error"


class _Recorder:
    def __init__(self):
        self.messages = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append((session.authenticated, envelope))
        return "250 2.0.0 Ok"


def _authenticator(server, session, envelope, mechanism, auth_data):
    good = auth_data.login == b"admin" and auth_data.password == b"s3cret"
    return AuthResult(success=good, handled=False)


@pytest.fixture
def auth_server(tmp_path):
    cert, key = self_signed(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    handler = _Recorder()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port(), tls_context=context,
                            authenticator=_authenticator, auth_require_tls=True)
    controller.start()
    yield controller, handler
    controller.stop()


@pytest.mark.parametrize("mechanism", ["plain", "login"])
async def test_auth_over_starttls_hides_the_password(auth_server, mechanism):
    controller, handler = auth_server
    lines = []
    message = TestMessage(server="127.0.0.1", port=controller.port, tls="starttls", auth=mechanism,
                          username="admin", password="s3cret", sender="a@example.net", to="b@example.com")
    outcome = await send_test_message(message, lines.append)
    assert outcome.ok, outcome.summary
    assert handler.messages and handler.messages[0][0] is True
    transcript = "\n".join(line.plain() for line in lines)
    assert "<- 235" in transcript and "s3cret" not in transcript and "czNjcmV0" not in transcript


async def test_wrong_password_is_reported(auth_server):
    controller, handler = auth_server
    lines = []
    message = TestMessage(server="127.0.0.1", port=controller.port, tls="starttls", auth="plain",
                          username="admin", password="wrong", sender="a@example.net", to="b@example.com")
    outcome = await send_test_message(message, lines.append)
    assert not outcome.ok and outcome.summary.startswith("AUTH refused: 535")
    assert not handler.messages


async def test_telnet_session_refuses_typed_line_breaks(sink):
    import asyncio

    lines = []
    session = TelnetSession(lines.append)
    task = asyncio.create_task(session.run("127.0.0.1", sink.port))
    for _ in range(100):
        if any(line.text.startswith("220") for line in lines):
            break
        await asyncio.sleep(0.02)
    with pytest.raises(FieldProblem):
        session.send("MAIL FROM:<a@example.net>\r\nRCPT TO:<victim@example.org>")
    session.send("QUIT")
    await asyncio.wait_for(task, 5)
    assert [line.text for line in lines if line.kind == "client"] == ["QUIT"]


# --- the rules the next-hop check and the SMTP test share (they once disagreed) ---


def test_the_ehlo_name_is_a_fully_qualified_name_or_an_address_literal():
    assert ehlo_name("client.example.com", "192.0.2.1", fqdn="vm") == "client.example.com"  # given: as given
    assert ehlo_name("", "192.0.2.1", fqdn="gw.example.com.") == "gw.example.com"
    assert ehlo_name("", "192.0.2.1", fqdn="vm") == "[192.0.2.1]"  # RFC 5321 4.1.4: no FQDN, an address literal
    assert ehlo_name("", "192.0.2.1", fqdn="localhost") == "[192.0.2.1]"
    assert ehlo_name("", "2001:db8::25", fqdn="localhost.localdomain") == "[IPv6:2001:db8::25]"


def test_hosts_may_be_ipv6_literals_with_or_without_brackets():
    assert [bare_host(h) for h in ("[2001:db8::25]", "2001:db8::25", "mx.example.com")] == [
        "2001:db8::25", "2001:db8::25", "mx.example.com"]
    assert where("[2001:db8::25]", 25) == where("2001:db8::25", 25) == "[2001:db8::25]:25"
    assert where("mx.example.com", 587) == "mx.example.com:587"


@pytest.fixture
def hop():
    hop = ScriptedHop().start()
    yield hop
    hop.stop()


async def test_without_a_helo_name_the_test_message_says_ehlo_with_one_servers_take(hop):
    outcome = await send_test_message(TestMessage(server="127.0.0.1", port=hop.port, tls="none",
                                                  sender="a@example.net", to="b@example.com"), [].append)
    assert outcome.ok, outcome.summary
    assert hop.messages()[0].helo == f"EHLO {ehlo_name('', '127.0.0.1')}"
    assert hop.messages()[0].helo in (f"EHLO {socket.getfqdn()}", "EHLO [127.0.0.1]")


async def test_a_test_message_to_an_ipv6_literal_in_brackets():
    hop = ScriptedHop(host="::1").start()
    try:
        lines = []
        outcome = await send_test_message(TestMessage(server="[::1]", port=hop.port, tls="none",
                                                      sender="a@example.net", to="b@example.com"), lines.append)
    finally:
        hop.stop()
    assert outcome.ok, outcome.summary
    assert lines[0].text == f"connecting to [::1]:{hop.port}"


async def test_a_refusing_greeting_is_quoted_and_answered_with_quit():
    hop = ScriptedHop(Script(greeting="554 5.7.1 no mail from you")).start()
    try:
        outcome = await send_test_message(TestMessage(server="127.0.0.1", port=hop.port, tls="none",
                                                      to="b@example.com"), [].append)
        assert hop.verbs() == ["QUIT"]
    finally:
        hop.stop()
    assert outcome.summary == f"127.0.0.1:{hop.port} takes no mail now: it greets with 554 5.7.1 no mail from you"


async def test_a_failed_tls_handshake_is_said_in_words(plain_text_tls_hop):
    outcome = await send_test_message(TestMessage(server="127.0.0.1", port=plain_text_tls_hop, tls="starttls",
                                                  to="b@example.com"), [].append)
    assert outcome.summary == f"the TLS handshake with 127.0.0.1:{plain_text_tls_hop} failed: wrong version number"


async def test_each_reply_must_come_within_the_reply_timeout():
    hop = ScriptedHop(Script(delay={"greeting": 5})).start()
    try:
        lines = []
        channel = SmtpChannel(lines.append, connect_timeout=2, reply_timeout=0.3)
        await channel.connect("127.0.0.1", hop.port)
        with pytest.raises(SmtpFailure, match=rf"^127\.0\.0\.1:{hop.port} did not answer within 0\.3 s$"):
            await channel.greeting()
        await channel.close()
    finally:
        hop.stop()
    assert [line.text for line in lines][1].startswith("connected to 127.0.0.1")


@pytest.fixture
def smtps_server(tmp_path):
    """TLS from the first byte (port 465 style), with a self-signed certificate."""
    cert, key = self_signed(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    handler = _Recorder()
    # aiosmtpd counts only STARTTLS as TLS for auth_require_tls; this connection is TLS from the start
    controller = Controller(handler, hostname="127.0.0.1", port=free_port(), ssl_context=context,
                            authenticator=_authenticator, auth_require_tls=False)
    controller.start()
    yield controller, handler
    controller.stop()


async def test_implicit_tls_reports_the_certificate_and_carries_auth(smtps_server):
    controller, handler = smtps_server
    lines = []
    message = TestMessage(server="127.0.0.1", port=controller.port, tls="tls", auth="login", username="admin",
                          password="s3cret", sender="a@example.net", to="b@example.com")
    outcome = await send_test_message(message, lines.append)
    assert outcome.ok, outcome.summary
    assert handler.messages and handler.messages[0][0] is True
    texts = [line.text for line in lines]
    assert texts[0] == f"connecting to 127.0.0.1:{controller.port} with TLS"
    assert texts[2].startswith("TLS started: TLSv1.") and texts[3].startswith("certificate subject ")
    assert "STARTTLS" not in [line.text for line in lines if line.kind == "client"]
    server_lines = [line for line in lines if line.kind == "server"]
    assert server_lines and all(line.elapsed is not None and line.elapsed >= 0 for line in server_lines)
