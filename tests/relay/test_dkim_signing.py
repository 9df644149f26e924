"""DKIM signing of outbound mail, end to end: a relay with a key signs mail from its own domain and
the next hop receives a signature that dkimpy verifies against the published record."""

from __future__ import annotations

import dkim
import pytest

from appliance import dkim as keys


def make_message(message_id: str, sender: str) -> bytes:
    return (f"From: Alice <{sender}>\r\nTo: dave@example.org\r\nSubject: test\r\nDate: Sun, 6 Dec 2026 10:00:00 +0000\r\n"
            f"Message-ID: <{message_id}>\r\n\r\nhello\r\n").encode()


def published(key_file, domain: str, selector: str):
    """A dnsfunc for dkimpy serving the key's DNS record, as a DNS server would."""
    name, value, _ = keys.dns_record(key_file, domain, selector)

    def txt(query: bytes, timeout: int = 5) -> bytes | None:
        return value.encode() if query.decode().rstrip(".") == name else None

    return txt


@pytest.fixture
def signing_relay(make_relay, sink, tmp_path):
    def make(algorithm: str = "rsa"):
        path, _ = keys.create_key(tmp_path / "dkim", "example.com", "s1", algorithm)
        relay = make_relay(sink.port, authentication={"dkim_keys": {"example.com": {"selector": "s1",
                                                                                     "key_file": str(path)}}})
        return relay, published(path, "example.com", "s1")

    return make


@pytest.mark.parametrize("algorithm", ["rsa", "ed25519"])
def test_mail_from_our_domain_leaves_signed_and_verifies(signing_relay, sink, algorithm):
    relay, dnsfunc = signing_relay(algorithm)
    relay.send("alice@example.com", ["dave@example.org"], make_message("signed@example.com", sender="alice@example.com"))
    [message] = sink.wait_for(1)
    assert message.content.startswith(b"DKIM-Signature: v=1; a=" + (b"rsa-sha256" if algorithm == "rsa"
                                                                    else b"ed25519-sha256"))
    assert dkim.verify(message.content, dnsfunc=dnsfunc)
    relay.wait_log(r"DKIM-Signature field added \(s=s1, d=example\.com\)")
    # what a verifier downstream would notice
    assert not dkim.verify(message.content.replace(b"hello", b"HELLO"), dnsfunc=dnsfunc), "body altered"
    assert not dkim.verify(message.content.replace(b"Subject: ", b"Subject: Re: "), dnsfunc=dnsfunc)
    assert dkim.verify(b"X-Added-Later: yes\r\n" + message.content, dnsfunc=dnsfunc), "unsigned header"
    second_from = message.content.replace(b"\r\n\r\n", b"\r\nFrom: mallory@example.net\r\n\r\n", 1)
    assert not dkim.verify(second_from, dnsfunc=dnsfunc), "From is oversigned"


def test_mail_from_other_domains_and_from_outside_passes_unsigned(signing_relay, sink):
    relay, _ = signing_relay()
    relay.send("bob@example.net", ["dave@example.org"], make_message("other@example.net", sender="bob@example.net"))
    relay.send("alice@example.com", ["bob@example.com"], make_message("outside@example.com", sender="alice@example.com"),
               source="127.0.0.2")  # not in my_networks: mail from outside is never signed with our key
    messages = sink.wait_for(2)
    assert all(b"DKIM-Signature" not in m.content for m in messages)


def test_a_key_that_cannot_be_used_refuses_the_configuration_by_its_field(make_relay, sink, tmp_path):
    path, _ = keys.create_key(tmp_path / "dkim", "example.com", "s1")
    path.chmod(0o644)
    relay = make_relay(sink.port, start=False,
                       authentication={"dkim_keys": {"example.com": {"selector": "s1", "key_file": str(path)}}})
    relay.start(wait=False)
    assert relay.process.wait(15) == 1
    assert (f"mta.authentication.dkim_keys.example.com.key_file: {path} is readable by every user: "
            f"chown root:postern {path} && chmod 640 {path}") in relay.log()
