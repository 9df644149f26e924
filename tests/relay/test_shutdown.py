"""SIGTERM: no new connections, idle sessions told 421, mail being received or delivered allowed to finish."""

import signal
import threading

import pytest

from tests.support.mail import make_message, message_id
from tests.support.net import wait_until
from tests.support.raw_smtp import RawSmtp


@pytest.fixture
def held_next_hop(sink):
    """The next hop has the message but holds its 250 until the test lets it go."""
    release = threading.Event()
    sink.on_message = lambda received: release.wait(30)
    yield release
    release.set()


def test_a_delivery_under_way_at_sigterm_finishes_and_is_recorded(relay, sink, held_next_hop):
    relay.send("alice@example.net", ["bob@example.com"], make_message("slow-hop@example.net"))
    sink.wait_for(1)  # the next hop has it and has not answered yet
    relay.process.send_signal(signal.SIGTERM)
    relay.wait_log(r"stopping: up to 10 s for messages being received or delivered")
    assert relay.process.poll() is None  # still waiting for the next hop's answer

    held_next_hop.set()
    assert relay.process.wait(15) == 0
    assert "to=<bob@example.com>" in relay.log() and "status=sent" in relay.log()
    assert relay.queue_files() == []  # recorded as delivered: it will not be sent again

    relay.start()
    relay.wait_log(r"queue loaded: 0 messages")
    assert [message_id(m.content) for m in sink.messages] == ["slow-hop@example.net"]


def test_sigterm_tells_idle_sessions_421_and_lets_data_in_flight_finish(relay):
    idle = RawSmtp(relay.port)
    idle.start_session()
    assert "DATA" in idle.command("HELP")  # the commands, watched for the stop, keep what aiosmtpd reads of them
    sending = RawSmtp(relay.port)
    sending.start_session()
    assert sending.command("MAIL FROM:<alice@example.net>").startswith("250")
    assert sending.command("RCPT TO:<carol@example.com>").startswith("250")
    assert sending.command("DATA").startswith("354")
    data = make_message("in-flight@example.net")
    sending.send(data[:20])

    relay.process.send_signal(signal.SIGTERM)
    assert idle.wait_closed(10) == b"421 4.3.2 gw.example.com Service shutting down\r\n"
    with pytest.raises(ConnectionRefusedError):
        RawSmtp(relay.port)  # no longer listening

    sending.send(data[20:] + b".\r\n")
    assert sending.reply()[-1].startswith("250 2.0.0 Ok: queued as ")
    assert sending.wait_closed(10) == b"421 4.3.2 gw.example.com Service shutting down\r\n"
    assert relay.process.wait(15) == 0
    assert len(relay.queue_files()) == 1  # acknowledged, so kept for the next start
    idle.close()
    sending.close()


def test_a_next_hop_that_never_answers_holds_the_stop_for_the_grace_only(relay, sink, held_next_hop):
    relay.send("alice@example.net", ["bob@example.com"], make_message("never-answered@example.net"))
    sink.wait_for(1)
    relay.process.send_signal(signal.SIGTERM)
    assert relay.process.wait(30) == 0  # the grace is 10 s
    relay.wait_log(r"stopping: grace of 10 s over: cut 0 sessions still receiving, 1 delivery attempts "
                   r"\(their messages stay queued\)")
    assert len(relay.queue_files()) == 1  # not recorded as delivered: it is tried again at the next start
