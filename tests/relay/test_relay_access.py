"""Who may relay: anyone to relay_domains, only my_networks anywhere else.

The untrusted client is 127.0.0.2; my_networks is 127.0.0.1/32. Both next hops
are the recording sink, so anything the relay lets through shows up there.
"""

import re

import pytest

from tests.support.net import wait_until
from tests.support.raw_smtp import RawSmtp

UNTRUSTED = "127.0.0.2"
MESSAGE = b"Subject: test\r\n\r\nhello\r\n.\r\n"


def send_raw(relay, sender: str, recipients: list[str], source: str = UNTRUSTED) -> tuple[list[str], str]:
    """One transaction with exact bytes; returns the RCPT replies and the final reply (or DATA's refusal)."""
    with RawSmtp(relay.port, source=source) as client:
        client.start_session()
        assert client.command(f"MAIL FROM:<{sender}>" if sender != "<>" else "MAIL FROM:<>").startswith("250 ")
        rcpt_replies = [client.command(f"RCPT TO:{rcpt}") for rcpt in recipients]
        data = client.command("DATA")
        if not data.startswith("354 "):
            return rcpt_replies, data
        client.send(MESSAGE)
        final = client.reply()[-1]
        client.command("QUIT")
        return rcpt_replies, final


def test_untrusted_client_may_send_to_a_relay_domain(relay, sink):
    rcpt_replies, final = send_raw(relay, "alice@example.net", ["<bob@example.com>"])
    assert rcpt_replies == ["250 2.1.5 Ok"]
    assert final.startswith("250 2.0.0 Ok: queued as ")
    [message] = sink.wait_for(1)
    assert message.recipients == ["bob@example.com"]
    assert message.content.startswith(b"Received: from client.example.net (unknown [127.0.0.2])")


def test_untrusted_client_is_denied_other_domains_and_nothing_is_relayed(relay, sink):
    rcpt_replies, final = send_raw(relay, "spammer@example.net", ["<victim@elsewhere.org>"])
    assert rcpt_replies == ["554 5.7.1 <victim@elsewhere.org>: Relay access denied"]
    assert final == "554 5.5.1 Error: no valid recipients"  # DATA refused
    relay.wait_log(
        r"NOQUEUE: reject: RCPT from unknown\[127\.0\.0\.2\]: 554 5\.7\.1 <victim@elsewhere\.org>: "
        r"Relay access denied; from=<spammer@example\.net> to=<victim@elsewhere\.org> proto=ESMTP "
        r"helo=<client\.example\.net>"
    )
    # A later message does arrive; the refused one never did.
    relay.send("alice@example.net", ["marker@example.com"])
    sink.wait_for(1)
    assert sink.recipients() == ["marker@example.com"]
    assert relay.queue_files() == []


ROUTING_TRICKS = {
    "percent hack": "<user%evil.org@example.com>",
    "bang path": "<evil.org!user@example.com>",
    "quoted local part": '<"user@evil.org"@example.com>',
    "source route": "<@example.com:user@evil.org>",
    "address literal": "<user@[127.0.0.9]>",
    "second at sign": "<user@example.com@evil.org>",
    "relay domain as a label": "<user@example.com.evil.org>",
    "look-alike domain": "<user@badexample.com>",
    "trailing dot outside": "<user@evil.org.>",
}


@pytest.mark.parametrize("rcpt", ROUTING_TRICKS.values(), ids=ROUTING_TRICKS.keys())
def test_routing_tricks_are_refused_and_never_relayed(relay, sink, rcpt):
    rcpt_replies, final = send_raw(relay, "spammer@example.net", [rcpt, "<good@example.com>"])
    assert re.match(r"5\d\d ", rcpt_replies[0]), rcpt_replies[0]
    assert rcpt_replies[1] == "250 2.1.5 Ok"
    assert final.startswith("250 2.0.0 Ok: queued as ")
    [message] = sink.wait_for(1)
    assert message.recipients == ["good@example.com"]


@pytest.mark.parametrize(
    "rcpt, denied",
    [
        ("<user%evil.org@example.com>", "user%evil.org@example.com"),
        ("<evil.org!user@example.com>", "evil.org!user@example.com"),
        ('<"user@evil.org"@example.com>', '"user@evil.org"@example.com'),
        ("<@example.com:user@evil.org>", "user@evil.org"),
        ("<user@[127.0.0.9]>", "user@[127.0.0.9]"),
    ],
    ids=["percent hack", "bang path", "quoted local part", "source route", "address literal"],
)
def test_routing_tricks_get_relay_access_denied(relay, rcpt, denied):
    rcpt_replies, _ = send_raw(relay, "spammer@example.net", [rcpt])
    assert rcpt_replies == [f"554 5.7.1 <{denied}>: Relay access denied"]


def test_relay_domain_matches_without_regard_to_case(relay, sink):
    rcpt_replies, final = send_raw(relay, "alice@example.net", ["<USER@EXAMPLE.COM>"])
    assert rcpt_replies == ["250 2.1.5 Ok"]
    assert final.startswith("250 ")
    [message] = sink.wait_for(1)
    assert message.recipients == ["USER@EXAMPLE.COM"]


def test_subdomains_are_not_relay_domains_by_default(relay, sink):
    rcpt_replies, _ = send_raw(relay, "alice@example.net", ["<bob@sales.example.com>"])
    assert rcpt_replies == ["554 5.7.1 <bob@sales.example.com>: Relay access denied"]


def test_match_subdomains_accepts_subdomains_but_not_look_alikes(make_relay, sink):
    relay = make_relay(sink.port, match_subdomains=True)
    rcpt_replies, final = send_raw(
        relay, "alice@example.net",
        ["<bob@sales.example.com>", "<carol@a.b.example.com>", "<x@badexample.com>", "<x@example.com.evil.org>"],
    )
    assert rcpt_replies[:2] == ["250 2.1.5 Ok", "250 2.1.5 Ok"]
    assert rcpt_replies[2:] == [
        "554 5.7.1 <x@badexample.com>: Relay access denied",
        "554 5.7.1 <x@example.com.evil.org>: Relay access denied",
    ]
    assert final.startswith("250 ")
    sink.wait_for(1)
    assert sorted(sink.recipients()) == ["bob@sales.example.com", "carol@a.b.example.com"]


@pytest.mark.parametrize("sender", ["<>", "postmaster@example.com"], ids=["null sender", "own-domain sender"])
def test_sender_does_not_grant_relaying(relay, sink, sender):
    rcpt_replies, final = send_raw(relay, sender, ["<victim@elsewhere.org>"])
    assert rcpt_replies == ["554 5.7.1 <victim@elsewhere.org>: Relay access denied"]
    assert not final.startswith("250 ")
    relay.send("alice@example.net", ["marker@example.com"])
    sink.wait_for(1)
    assert sink.recipients() == ["marker@example.com"]


def test_trusted_client_may_send_anywhere(relay, sink):
    assert relay.send("alice@example.com", ["bob@elsewhere.org", "carol@example.com"]) == {}
    wait_until(lambda: sorted(sink.recipients()) == ["bob@elsewhere.org", "carol@example.com"],
               what="both recipients at the sink")
    assert "Relay access denied" not in relay.log()
