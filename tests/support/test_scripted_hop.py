"""The scripted next hop where its two former copies answered differently: it answers as a mail server does."""

from __future__ import annotations

import pytest

from tests.support.raw_smtp import RawSmtp
from tests.support.scripted_hop import Script, ScriptedHop


@pytest.fixture
def hop():
    started = ScriptedHop(Script(rcpt={"nobody@example.org": "550 5.1.1 user unknown"})).start()
    yield started
    started.stop()


def test_data_after_every_recipient_was_refused_gets_554_and_no_message_is_taken(hop):
    with RawSmtp(hop.port) as client:
        client.start_session()
        assert client.command("MAIL FROM:<alice@example.com>").startswith("250")
        assert client.command("RCPT TO:<nobody@example.org>").startswith("550")
        assert client.command("DATA") == "554 5.5.1 Error: no valid recipients"
    assert hop.transactions == []


def test_a_dot_after_a_bare_carriage_return_is_message_content(hop):
    with RawSmtp(hop.port) as client:
        client.start_session()
        client.command("MAIL FROM:<alice@example.com>")
        client.command("RCPT TO:<bob@example.org>")
        assert client.command("DATA").startswith("354")
        assert client.command(b"Subject: x\r\n\r\nbefore\r.after\r\n..stuffed\r\n.").startswith("250")
    [message] = hop.messages()
    assert message.raw == b"Subject: x\r\n\r\nbefore\r.after\r\n..stuffed\r\n"
    assert message.content == b"Subject: x\r\n\r\nbefore\r.after\r\n.stuffed\r\n"


def test_an_empty_command_line_is_answered_and_the_session_goes_on(hop):
    with RawSmtp(hop.port) as client:
        client.start_session()
        assert client.command("") == "502 5.5.2 Error: command not recognized"
        assert client.command("NOOP") == "250 2.0.0 Ok"
