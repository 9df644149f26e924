"""DKIM signing on its own (relay.dkim_sign): what dkimpy's verifier accepts and refuses, the keys it will
not load, and messages a relay really carries (8-bit, several megabytes)."""

from __future__ import annotations

import time

import dkim
import pytest

from appliance import dkim as keys
from relay.dkim_sign import SIGNED_HEADERS, from_domain, load_key, sign
from tests.support.certs import self_signed

MESSAGE = (b"From: Alice <alice@example.com>\r\nTo: dave@example.org\r\nSubject: test\r\n"
           b"Date: Sun, 6 Dec 2026 10:00:00 +0000\r\nMessage-ID: <m1@example.com>\r\n\r\nhello\r\n")


def signing_key(tmp_path, algorithm: str):
    path, _ = keys.create_key(tmp_path / algorithm, "example.com", "s1", algorithm)
    name, value, _ = keys.dns_record(path, "example.com", "s1")

    def dnsfunc(query: bytes, timeout: int = 5) -> bytes | None:
        return value.encode() if query.decode().rstrip(".") == name else None

    return load_key("example.com", "s1", str(path)), dnsfunc


def tags(signature: bytes) -> dict[bytes, bytes]:
    value = b"".join(signature.split(b":", 1)[1].split())
    return dict(part.split(b"=", 1) for part in value.split(b";") if part)


@pytest.mark.parametrize("algorithm", ["rsa", "ed25519"])
def test_a_signature_verifies_and_breaks_as_a_verifier_downstream_sees_it(tmp_path, algorithm):
    key, dnsfunc = signing_key(tmp_path, algorithm)
    signature = sign(MESSAGE, key)
    assert signature.startswith(b"DKIM-Signature: ") and signature.endswith(b"\r\n")
    assert all(len(line) <= 80 for line in signature.split(b"\r\n")), "folded"
    signed = signature + MESSAGE
    assert dkim.verify(signed, dnsfunc=dnsfunc)
    found = tags(signature)
    assert found[b"a"] == key.algorithm.encode() and found[b"d"] == b"example.com" and found[b"s"] == b"s1"
    assert b"t" in found and b"x" not in found, "t= set, no expiry (OpenDKIM's default)"
    assert found[b"h"].split(b":").count(b"from") == 2, "From oversigned"
    assert set(found[b"h"].split(b":")) <= set(SIGNED_HEADERS)
    assert b"x-mailer" not in found[b"h"]
    assert not dkim.verify(signed.replace(b"hello", b"hullo"), dnsfunc=dnsfunc), "body altered"
    assert not dkim.verify(signed.replace(b"To: dave@", b"To: eve@"), dnsfunc=dnsfunc), "signed header altered"
    assert dkim.verify(signed.replace(b"\r\n\r\n", b"\r\nX-Scanned: clean\r\n\r\n", 1), dnsfunc=dnsfunc)
    assert not dkim.verify(signed.replace(b"\r\n\r\n", b"\r\nFrom: mallory@example.net\r\n\r\n", 1),
                           dnsfunc=dnsfunc), "a second From:"


def test_two_signatures_on_top_both_verify(tmp_path):
    rsa_key, rsa_dns = signing_key(tmp_path, "rsa")
    ed_key, ed_dns = signing_key(tmp_path, "ed25519")
    signed = sign(MESSAGE, rsa_key) + MESSAGE
    signed = sign(signed, ed_key) + signed
    assert dkim.verify(signed, dnsfunc=ed_dns)  # the topmost one
    assert dkim.DKIM(signed).verify(idx=1, dnsfunc=rsa_dns)


def test_an_8bit_message_signs_and_verifies(tmp_path):
    key, dnsfunc = signing_key(tmp_path, "rsa")
    message = MESSAGE.replace(b"Subject: test", "Subject: Grüße".encode()).replace(
        b"hello\r\n", "Grüße aus Köln, naïve café\r\n".encode("latin-1") + "— ok\r\n".encode())
    assert dkim.verify(sign(message, key) + message, dnsfunc=dnsfunc)


def test_signing_time_grows_linearly_with_the_message(tmp_path):
    key, dnsfunc = signing_key(tmp_path, "ed25519")

    def timed(megabytes: int) -> tuple[float, bytes]:
        body = b"".join(b"line %08d of a long attachment, base64-like AAAAAAAAAAAAAAAAAAAAAAAAAAAA\r\n" % i
                        for i in range(megabytes * 1024 * 1024 // 76))
        started = time.perf_counter()
        signature = sign(MESSAGE + body, key)
        return time.perf_counter() - started, signature + MESSAGE + body

    one, _ = timed(1)
    four, _ = timed(4)
    assert four < max(one, 0.02) * 4 * 3, f"1 MB took {one:.3f}s, 4 MB took {four:.3f}s"
    _, ten = timed(10)
    assert dkim.verify(ten, dnsfunc=dnsfunc)


def test_a_missing_file_says_which_and_how_to_make_one(tmp_path):
    missing = tmp_path / "nope.key"
    with pytest.raises(ValueError) as raised:
        load_key("example.com", "s1", str(missing))
    assert str(missing) in str(raised.value)
    assert "postern-appliance dkim new example.com --selector s1" in str(raised.value)


def test_a_certificate_is_not_a_key(tmp_path):
    cert, _ = self_signed(tmp_path)
    cert.chmod(0o640)
    with pytest.raises(ValueError, match=f"{cert} is not a PEM private key: make one with"):
        load_key("example.com", "s1", str(cert))


def test_a_key_of_another_kind_is_refused(tmp_path):
    _, ec_key = self_signed(tmp_path)
    ec_key.chmod(0o640)
    with pytest.raises(ValueError, match="neither an RSA nor an Ed25519 key"):
        load_key("example.com", "s1", str(ec_key))


def test_an_unreadable_file_says_why(tmp_path):
    directory = tmp_path / "example.com.s1.key"  # root reads any file; a directory it cannot read as one
    directory.mkdir(mode=0o750)
    with pytest.raises(ValueError, match=f"cannot read {directory}: "):
        load_key("example.com", "s1", str(directory))


def test_a_key_readable_by_everyone_is_refused_with_the_fix(tmp_path):
    path, _ = keys.create_key(tmp_path, "example.com", "s1")
    path.chmod(0o644)
    with pytest.raises(ValueError, match="chmod 640"):
        load_key("example.com", "s1", str(path))


@pytest.mark.parametrize("section, domain", [
    (b"From: Alice <alice@Example.COM>\r\n", "example.com"),
    (b"From: alice@example.com\r\n", "example.com"),
    (b"From: \"Doe, <Jane>\" <jane@example.com.>\r\n", "example.com"),
    (b"From: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n <alice@example.com>\r\n", "example.com"),
    (b"From: \"alice@example.com\" <mallory@evil.example>\r\n", "evil.example"),
    (b"From: mallory@evil.example (alice@example.com)\r\n", "evil.example"),
    (b"To: dave@example.org\r\n", None),
    (b"From: a@example.com\r\nFrom: b@example.net\r\n", None),
    (b"From: a@example.com, b@example.net\r\n", None),
    (b"From: undisclosed\r\n", None),
])
def test_the_from_domain(section, domain):
    assert from_domain(section + b"\r\n") == domain
