"""ARC sealing and chain verification, checked against verifiers this project did not write."""

from __future__ import annotations

import base64
import logging
import re

import authheaders
import dns.resolver
import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from relay import arc
from tests.support.dns_server import DnsServer

MESSAGE = (b"From: Alice <alice@example.org>\r\n"
           b"To: bob@example.net\r\n"
           b"Subject: the minutes\r\n"
           b"Date: Sun, 6 Dec 2026 15:00:00 +0000\r\n"
           b"Message-ID: <minutes-1@example.org>\r\n"
           b"\r\n"
           b"Here are the minutes.\r\n")


class Keys:
    """RSA keys published as DKIM key records, served through a TxtLookup."""

    def __init__(self) -> None:
        self.records: dict[str, list[bytes]] = {}
        self.asked: list[str] = []

    def add(self, selector: str, domain: str) -> bytes:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        public = key.public_key().public_bytes(serialization.Encoding.DER,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
        self.records[f"{selector}._domainkey.{domain}"] = [b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)]
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())

    def txt(self, name: str) -> list[bytes] | None:
        self.asked.append(name)
        return self.records.get(name)

    def dnsfunc(self, name: bytes, timeout: float = 5) -> bytes | None:
        """dkimpy's own lookup shape, for the verifiers that are not ours."""
        records = self.records.get(name.decode().rstrip("."))
        return records[0] if records else None


@pytest.fixture(scope="module")
def keys() -> Keys:
    keys = Keys()
    keys.pem_first = keys.add("s1", "first.example")
    keys.pem_second = keys.add("s2", "second.example")
    return keys


def seal_first(keys: Keys, message: bytes = MESSAGE) -> bytes:
    return arc.seal(message, domain="first.example", selector="s1", private_key=keys.pem_first,
                    authserv_id="mx.first.example",
                    auth_results="mx.first.example; spf=pass smtp.mailfrom=example.org; dkim=none",
                    txt=keys.txt, now=1796569200) + message


def seal_second(keys: Keys, message: bytes) -> bytes:
    return arc.seal(message, domain="second.example", selector="s2", private_key=keys.pem_second,
                    authserv_id="mx.second.example", auth_results="mx.second.example; spf=fail",
                    txt=keys.txt, now=1796569260) + message


def tag(message: bytes, header: str, name: str) -> list[str]:
    """Every value of tag `name` in the `header` fields, top first."""
    unfolded = re.sub(rb"\r\n[ \t]+", b" ", message).decode()
    return re.findall(rf"(?m)^{header}:.*?\b{name}=([^;\s]+)", unfolded)


def test_first_seal_verifies_with_dkimpy_and_says_cv_none(keys: Keys) -> None:
    sealed = seal_first(keys)
    assert tag(sealed, "ARC-Seal", "i") == ["1"]
    assert tag(sealed, "ARC-Seal", "cv") == ["none"]
    assert tag(sealed, "ARC-Seal", "d") == ["first.example"]
    # Our own results go into the set, with i= and the chain status as arc=.
    aar = re.sub(rb"\r\n[ \t]+", b" ", sealed).split(b"ARC-Authentication-Results: ")[1].split(b"\r\n")[0]
    assert aar.startswith(b"i=1; mx.first.example;")
    assert b"spf=pass smtp.mailfrom=example.org" in aar and b"arc=none" in aar
    cv, _, reason = dkim.arc_verify(sealed, dnsfunc=keys.dnsfunc)
    assert (cv, reason) == (dkim.CV_Pass, "success")
    assert arc.verify_chain(sealed, keys.txt) == arc.ChainResult("pass", 1, "1 ARC set(s) verified")
    assert "s1._domainkey.first.example" in keys.asked


def test_second_hop_seals_with_cv_pass(keys: Keys) -> None:
    twice = seal_second(keys, seal_first(keys))
    assert tag(twice, "ARC-Seal", "i") == ["2", "1"]
    assert tag(twice, "ARC-Seal", "cv") == ["pass", "none"]
    cv, results, _ = dkim.arc_verify(twice, dnsfunc=keys.dnsfunc)
    assert cv == dkim.CV_Pass and len(results) == 2
    chain = arc.verify_chain(twice, keys.txt)
    assert (chain.result, chain.instances) == ("pass", 2)


def test_authheaders_agrees(keys: Keys) -> None:
    """authheaders (over dkimpy, but its own handling of errors and results) gives the same answers."""
    once = seal_first(keys)
    twice = seal_second(keys, once)
    tampered = twice.replace(b"Here are the minutes.", b"Here are other minutes.")
    for message in (MESSAGE, once, twice, tampered):
        theirs = authheaders.check_arc(message, dnsfunc=keys.dnsfunc).result
        assert arc.verify_chain(message, keys.txt).result == theirs
    assert authheaders.check_arc(twice, dnsfunc=keys.dnsfunc).result == "pass"


def test_body_altered_after_sealing_fails(keys: Keys) -> None:
    sealed = seal_first(keys).replace(b"Here are the minutes.", b"Here are the minutes!")
    chain = arc.verify_chain(sealed, keys.txt)
    assert chain.result == "fail"
    assert "ARC-Message-Signature" in chain.detail


def test_signed_header_altered_fails(keys: Keys) -> None:
    sealed = seal_first(keys).replace(b"Subject: the minutes", b"Subject: pay this invoice")
    assert arc.verify_chain(sealed, keys.txt).result == "fail"


def test_an_instance_removed_fails(keys: Keys) -> None:
    twice = seal_second(keys, seal_first(keys))
    # Drop the whole first set: the chain then starts at i=2.
    without_first = re.sub(rb"(?m)^ARC-[A-Za-z-]+: i=1;.*\r\n(?:[ \t].*\r\n)*", b"", twice)
    assert without_first.count(b"i=1;") == 0 and without_first.count(b"i=2;") == 3
    chain = arc.verify_chain(without_first, keys.txt)
    assert chain.result == "fail" and chain.detail


def test_one_header_of_a_set_missing_fails(keys: Keys) -> None:
    twice = seal_second(keys, seal_first(keys))
    no_seal = re.sub(rb"(?m)^ARC-Seal: i=1;.*\r\n(?:[ \t].*\r\n)*", b"", twice)
    chain = arc.verify_chain(no_seal, keys.txt)
    assert chain.result == "fail" and chain.instances == 2 and chain.detail


def test_no_arc_is_none() -> None:
    def no_lookups(name: str) -> list[bytes] | None:
        raise AssertionError(f"a message without ARC needs no key, yet {name} was looked up")
    chain = arc.verify_chain(MESSAGE, no_lookups)
    assert chain == arc.ChainResult("none", 0, chain.detail) and chain.detail


def test_unknown_key_fails(keys: Keys) -> None:
    sealed = seal_first(keys)
    chain = arc.verify_chain(sealed, lambda name: None)
    assert chain.result == "fail" and chain.detail


def test_lookup_that_raises_fails_not_crashes(keys: Keys) -> None:
    def broken(name: str) -> list[bytes] | None:
        raise OSError("resolver unreachable")
    chain = arc.verify_chain(seal_first(keys), broken)
    assert chain.result == "fail" and chain.detail


def test_garbage_arc_headers_fail(keys: Keys) -> None:
    garbage = b"ARC-Seal: i=banana; cv=none\r\nARC-Message-Signature: nothing\r\n" + MESSAGE
    chain = arc.verify_chain(garbage, keys.txt)
    assert chain.result == "fail" and chain.detail


def test_sealing_a_broken_chain_says_cv_fail(keys: Keys) -> None:
    tampered = seal_first(keys).replace(b"Here are the minutes.", b"Here are the minutes!")
    resealed = seal_second(keys, tampered)
    assert tag(resealed, "ARC-Seal", "cv") == ["fail", "none"]
    # A chain once failed stays failed for everyone after.
    assert arc.verify_chain(resealed, keys.txt).result == "fail"
    assert authheaders.check_arc(resealed, dnsfunc=keys.dnsfunc).result != "pass"


def test_our_own_arc_result_is_replaced_by_the_chain_status(keys: Keys) -> None:
    once = seal_first(keys)
    sealed = arc.seal(once, domain="second.example", selector="s2", private_key=keys.pem_second,
                      authserv_id="mx.second.example", auth_results="mx.second.example; arc=fail; spf=pass",
                      txt=keys.txt, now=1796569260)
    assert sealed.count(b"arc=") == 1 and b"arc=pass" in sealed
    assert arc.verify_chain(sealed + once, keys.txt).result == "pass"


def test_results_of_another_server_are_refused(keys: Keys) -> None:
    with pytest.raises(ValueError):
        arc.seal(MESSAGE, domain="first.example", selector="s1", private_key=keys.pem_first,
                 authserv_id="mx.first.example", auth_results="mx.elsewhere.example; spf=pass",
                 txt=keys.txt)


def test_fifty_instances_is_the_limit(keys: Keys, caplog: pytest.LogCaptureFixture) -> None:
    message = MESSAGE
    for _ in range(arc.INSTANCE_LIMIT):
        message = seal_second(keys, message)
    chain = arc.verify_chain(message, keys.txt)
    assert (chain.result, chain.instances) == ("pass", 50)
    assert dkim.arc_verify(message, dnsfunc=keys.dnsfunc)[0] == dkim.CV_Pass
    with caplog.at_level(logging.WARNING, logger="relay.arc"):
        assert arc.seal(message, domain="second.example", selector="s2", private_key=keys.pem_second,
                        authserv_id="mx.second.example", auth_results="mx.second.example; spf=pass",
                        txt=keys.txt) == b""
    assert "50 ARC sets" in caplog.text


def dns_txt(server: DnsServer) -> arc.TxtLookup:
    """A TxtLookup over dnspython, asking the loopback DNS server as the relay asks its resolver."""
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers, resolver.port, resolver.lifetime = [server.host], server.port, 2

    def txt(name: str) -> list[bytes] | None:
        try:
            answer = resolver.resolve(name, "TXT")
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return None
        return [b"".join(record.strings) for record in answer]

    return txt


def zone_text(record: bytes) -> str:
    """A TXT record longer than 255 octets, as several quoted strings (RFC 6376 3.6.2.2)."""
    text = record.decode()
    return " ".join(f'"{text[at:at + 200]}"' for at in range(0, len(text), 200))


def test_keys_over_real_dns(keys: Keys) -> None:
    published = {(name, "TXT"): [zone_text(values[0])] for name, values in keys.records.items()}
    server = DnsServer(published, servfail=("second.example",)).start()
    try:
        txt = dns_txt(server)
        once = arc.seal(MESSAGE, domain="first.example", selector="s1", private_key=keys.pem_first,
                        authserv_id="mx.first.example", auth_results="mx.first.example; spf=pass",
                        txt=txt)
        assert arc.verify_chain(once + MESSAGE, txt).result == "pass"
        assert ("s1._domainkey.first.example", "TXT") in server.queries
        # The second sealer's zone answers SERVFAIL: its key cannot be had, the chain cannot pass.
        twice = seal_second(keys, once + MESSAGE)
        chain = arc.verify_chain(twice, txt)
        assert (chain.result, chain.instances) == ("fail", 2) and chain.detail
    finally:
        server.stop()
