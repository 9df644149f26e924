"""The probing SMTP client (appliance.diagnostics.smtp_probe and smtp_send) against real servers on loopback."""

import ssl

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from appliance.diagnostics.smtp_probe import FieldProblem, TelnetSession, wire_line
from appliance.diagnostics.smtp_send import TestMessage, body_lines, check, send_test_message
from tests.support.certs import self_signed
from tests.support.net import free_port


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
