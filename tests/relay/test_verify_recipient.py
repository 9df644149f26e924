"""Reject unverified recipients: the internal mail server is asked before RCPT is accepted, and its
answers are remembered (deliverable 31 days, undeliverable 3 days) where the control API can see them."""

import subprocess
import sys
import time

import pytest
import varlink

from relay.control.client import ControlClient
from relay.control.methods import INTERFACES, METHODS, interface_description
from tests.support.mail import make_message, message_id
from tests.support.net import free_port, wait_until
from tests.support.next_hop import NextHop

OUTSIDER = "127.0.0.2"
UNKNOWN_USER = "550 5.1.1 <nobody@example.com>: Recipient address rejected: User unknown in virtual mailbox table"


@pytest.fixture
def internal():
    hop = NextHop(refuse={"nobody@example.com": UNKNOWN_USER, "busy@example.com": "450 4.2.1 Mailbox busy"}).start()
    yield hop
    hop.stop()


def verifying(make_relay, port: int, **settings):
    return make_relay(port, internal_relay={"host": "127.0.0.1", "port": port, "mx": False},
                      reject_unverified_recipient={"enabled": True, **settings})


def rcpt(relay, address: str, source: str = OUTSIDER) -> tuple[int, str]:
    with relay.smtp(source) as client:
        client.mail("someone@example.net")
        code, text = client.rcpt(address)
        return code, text.decode()


def control(relay) -> ControlClient:
    return ControlClient(str(relay.workdir / "control.sock"))


def test_a_known_recipient_is_asked_about_once_then_accepted(make_relay, internal):
    relay = verifying(make_relay, internal.port)
    assert relay.send("someone@example.net", ["bob@example.com"], make_message("known@x"), source=OUTSIDER) == {}
    [delivered] = internal.wait_for(1)
    assert message_id(delivered.content) == "known@x"
    assert internal.probes() == ["bob@example.com"], "asked with MAIL FROM:<> before the message itself"
    relay.wait_log(r"postern/verify: <bob@example\.com>: deliverable \(host 127\.0\.0\.1\[127\.0\.0\.1\]:\d+ said: 250")


def test_an_unknown_recipient_gets_the_configured_code_with_the_servers_words(make_relay, internal):
    relay = verifying(make_relay, internal.port, code=550)
    code, text = rcpt(relay, "nobody@example.com")
    assert code == 550
    assert text.startswith("5.1.1 <nobody@example.com>: Recipient address rejected: undeliverable address: "
                           "host 127.0.0.1[127.0.0.1]:"), text
    assert text.endswith(UNKNOWN_USER), text
    assert relay.queue_files() == []


def test_with_code_450_an_unknown_recipient_is_refused_for_now(make_relay, internal):
    relay = verifying(make_relay, internal.port, code=450)
    code, text = rcpt(relay, "nobody@example.com")
    assert code == 450 and text.startswith("4.1.1 <nobody@example.com>: Recipient address rejected: undeliverable")


def test_answers_are_cached_visible_and_flushable(make_relay, internal):
    relay = verifying(make_relay, internal.port, code=550)
    for _ in range(3):
        assert rcpt(relay, "bob@example.com")[0] == 250
        assert rcpt(relay, "nobody@example.com")[0] == 550
    assert sorted(internal.probes()) == ["bob@example.com", "nobody@example.com"], "one probe each, then the cache"

    with control(relay) as client:
        stats = client.call("io.postern.Verify.Status")
        assert stats == {"enabled": True, "size": 2, "deliverable": 1, "undeliverable": 1,
                         "hits": 4, "misses": 2, "probes": 2}
        good = client.call("io.postern.Verify.Lookup", address="bob@EXAMPLE.com")["entry"]
        bad = client.call("io.postern.Verify.Lookup", address="nobody@example.com")["entry"]
        assert client.call("io.postern.Verify.Lookup", address="carol@example.com")["entry"] is None
        assert good["status"] == "deliverable" and good["address"] == "bob@example.com"
        assert good["expires"] - good["checked"] == 31 * 86400
        assert bad["status"] == "undeliverable" and bad["expires"] - bad["checked"] == 3 * 86400
        assert bad["reply"].endswith(UNKNOWN_USER)

        assert client.call("io.postern.Verify.Flush", address="nobody@example.com")["count"] == 1
        assert client.call("io.postern.Verify.Lookup", address="nobody@example.com")["entry"] is None
        assert rcpt(relay, "nobody@example.com")[0] == 550
        assert internal.probes().count("nobody@example.com") == 2, "asked again after the flush"

        assert client.call("io.postern.Verify.Flush")["count"] == 2
        assert client.call("io.postern.Verify.Status")["size"] == 0


def test_an_unreachable_internal_server_gives_a_temporary_refusal_and_nothing_is_cached(make_relay):
    port = free_port()  # nothing listens
    relay = verifying(make_relay, port, code=550)
    code, text = rcpt(relay, "bob@example.com")
    assert code == 450
    assert text.startswith("4.1.1 <bob@example.com>: Recipient address rejected: unverified address: connect to "
                           f"127.0.0.1[127.0.0.1]:{port}: Connection refused"), text
    with control(relay) as client:
        assert client.call("io.postern.Verify.Lookup", address="bob@example.com")["entry"] is None
    hop = NextHop(port=port).start()  # the server comes back: the next RCPT asks again
    try:
        assert rcpt(relay, "bob@example.com")[0] == 250
        assert hop.probes() == ["bob@example.com"]
    finally:
        hop.stop()


def test_a_temporary_answer_is_passed_on_as_450_and_not_cached(make_relay, internal):
    relay = verifying(make_relay, internal.port, code=550)
    for _ in range(2):
        code, text = rcpt(relay, "busy@example.com")
        assert code == 450 and "unverified address: host 127.0.0.1" in text and text.endswith("450 4.2.1 Mailbox busy")
    assert internal.probes() == ["busy@example.com", "busy@example.com"]


def test_a_negative_answer_expires_after_negative_expire_time(make_relay, internal):
    relay = verifying(make_relay, internal.port, code=550, negative_expire_time="1s")
    assert rcpt(relay, "nobody@example.com")[0] == 550
    assert rcpt(relay, "nobody@example.com")[0] == 550
    assert internal.probes() == ["nobody@example.com"]
    time.sleep(1.2)
    assert rcpt(relay, "nobody@example.com")[0] == 550
    assert internal.probes() == ["nobody@example.com", "nobody@example.com"]


def test_outside_recipients_of_trusted_clients_are_not_verified(make_relay, internal, sink):
    relay = make_relay(sink.port, internal_relay={"host": "127.0.0.1", "port": internal.port, "mx": False},
                       reject_unverified_recipient={"enabled": True})
    assert relay.send("alice@example.com", ["carol@partner.org"], make_message("out@x")) == {}
    sink.wait_for(1)
    assert internal.probes() == []


def test_sessions_asking_at_once_share_one_probe(make_relay, internal):
    relay = verifying(make_relay, internal.port)
    clients = [relay.smtp(OUTSIDER) for _ in range(5)]
    try:
        for client in clients:
            client.mail("someone@example.net")
        for client in clients:  # all five RCPTs go out before any answer is read
            client.putcmd("rcpt", "TO:<carol@example.com>")
        assert [client.getreply()[0] for client in clients] == [250] * 5
    finally:
        for client in clients:
            client.close()
    wait_until(lambda: internal.probes(), what="the probe")
    assert internal.probes() == ["carol@example.com"]


def test_a_third_party_varlink_client_reads_the_verify_interface_and_calls_it(make_relay, internal):
    relay = verifying(make_relay, internal.port)
    assert rcpt(relay, "bob@example.com")[0] == 250
    with varlink.Client(address=f"unix:{relay.workdir / 'control.sock'}") as client:
        with client.open("io.postern.Verify") as verify:  # parses our interface description
            assert verify.Lookup(address="bob@example.com")["entry"]["status"] == "deliverable"
            assert verify.Status()["size"] == 1
            assert verify.Flush()["count"] == 1


def test_every_method_is_declared_in_its_interface_and_every_declared_method_exists():
    declared = set()
    for name in INTERFACES:
        interface = varlink.Interface(interface_description(name))
        declared |= {f"{name}.{member}" for member, kind in interface.members.items()
                     if isinstance(kind, varlink.scanner._Method)}
    assert declared == set(METHODS)


def test_posternctl_shows_and_flushes_the_cache(make_relay, internal):
    relay = verifying(make_relay, internal.port, code=550)
    assert rcpt(relay, "nobody@example.com")[0] == 550

    def ctl(*args: str) -> str:
        result = subprocess.run([sys.executable, "-m", "relay.ctl", "--socket", str(relay.workdir / "control.sock"),
                                 *args], capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
        return result.stdout

    assert ctl("verify", "status").startswith("enabled True, size 1, deliverable 0, undeliverable 1")
    shown = ctl("verify", "lookup", "nobody@example.com")
    assert shown.startswith("<nobody@example.com>: undeliverable, checked 0s ago, until ")
    assert UNKNOWN_USER in shown
    assert ctl("verify", "lookup", "bob@example.com") == "<bob@example.com>: not in the cache\n"
    assert ctl("verify", "flush") == "forgot 1 answer\n"


def test_a_new_internal_server_starts_a_fresh_cache(make_relay, internal):
    relay = verifying(make_relay, internal.port, code=550)
    assert rcpt(relay, "nobody@example.com")[0] == 550
    other = NextHop().start()  # knows nobody@example.com
    try:
        relay.reload({**relay.mta, "internal_relay": {"host": "127.0.0.1", "port": other.port, "mx": False}})
        relay.wait_log(r"verification cache flushed: 1 entry")
        assert rcpt(relay, "nobody@example.com")[0] == 250
        assert other.probes() == ["nobody@example.com"]
    finally:
        other.stop()
