"""SPF, DKIM and DMARC on mail from outside: one Authentication-Results header, forged ones removed,
DMARC's p=reject and p=quarantine acted on under dmarc_policy: enforce. DNS is a server on loopback."""

from __future__ import annotations

import base64

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from relay.control.client import ControlClient
from tests.support.dns_server import DnsServer

OUTSIDE = "127.0.0.2"  # not in my_networks


@pytest.fixture(scope="module")
def sender_key():
    key = rsa.generate_private_key(65537, 2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                            serialization.NoEncryption())
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return pem, f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}"


@pytest.fixture
def checking_relay(make_relay, sink, sender_key):
    started = []

    def make(spf: str = f"v=spf1 ip4:{OUTSIDE} -all", dmarc: str = "v=DMARC1; p=reject", **authentication):
        _, record = sender_key
        dns = DnsServer({("sender.example", "TXT"): [f'"{spf}"'],
                         ("s1._domainkey.sender.example", "TXT"): [f'"{record[:200]}" "{record[200:]}"'],
                         ("_dmarc.sender.example", "TXT"): [f'"{dmarc}"']}).start()
        started.append(dns)
        return make_relay(sink.port, dns_servers=[dns.address],
                          authentication={"check_inbound": True, **authentication})

    yield make
    for dns in started:
        dns.stop()


def message(sender_key, signed: bool = True, extra: bytes = b"") -> bytes:
    body = (b"From: Carol <carol@sender.example>\r\nTo: bob@example.com\r\nSubject: hello\r\n"
            b"Message-ID: <auth@sender.example>\r\n" + extra + b"\r\nhello\r\n")
    if not signed:
        return body
    pem, _ = sender_key
    return dkim.sign(body, b"s1", b"sender.example", pem, include_headers=[b"from", b"to", b"subject"]) + body


def authentication_results(content: bytes) -> list[str]:
    return [line.decode() for line in content.replace(b"\r\n\t", b" ").split(b"\r\n")
            if line.lower().startswith(b"authentication-results:")]


def test_mail_from_outside_gets_one_header_with_spf_dkim_and_dmarc(checking_relay, sink, sender_key):
    relay = checking_relay()
    forged = b"Authentication-Results: gw.example.com; dkim=pass; dmarc=pass\r\n"
    relay.send("carol@sender.example", ["bob@example.com"], message(sender_key, extra=forged), source=OUTSIDE)
    [got] = sink.wait_for(1)
    [header] = authentication_results(got.content)  # the forged one with our name is gone
    assert header.startswith("Authentication-Results: gw.example.com;")
    assert "spf=pass" in header and "dkim=pass" in header and "dmarc=pass" in header
    relay.wait_log(r"removed 1 forged Authentication-Results header")
    relay.wait_log(r": spf=pass, dkim=pass, arc=none, dmarc=pass")


def test_an_unsigned_message_is_dkim_none_not_fail(checking_relay, sink, sender_key):
    """RFC 8601 2.7.1: none means not signed; fail would tell a filter that a signature was broken."""
    relay = checking_relay()
    relay.send("carol@sender.example", ["bob@example.com"], message(sender_key, signed=False), source=OUTSIDE)
    [got] = sink.wait_for(1)
    [header] = authentication_results(got.content)
    assert "dkim=none" in header and "dkim=fail" not in header
    assert "spf=pass" in header and "dmarc=pass" in header  # aligned through SPF alone
    relay.wait_log(r": dkim=none, spf=pass, arc=none, dmarc=pass")


def test_an_altered_message_fails_dkim_and_dmarc_but_is_only_annotated_by_default(checking_relay, sink, sender_key):
    relay = checking_relay(spf="v=spf1 -all")
    tampered = message(sender_key).replace(b"hello\r\n", b"HELLO\r\n")
    relay.send("carol@sender.example", ["bob@example.com"], tampered, source=OUTSIDE)
    [got] = sink.wait_for(1)
    [header] = authentication_results(got.content)
    assert "spf=fail" in header and "dkim=fail" in header and "dmarc=fail" in header


def test_enforce_refuses_a_dmarc_failure_whose_domain_says_reject(checking_relay, sink, sender_key):
    import smtplib
    relay = checking_relay(spf="v=spf1 -all", dmarc_policy="enforce")
    with pytest.raises(smtplib.SMTPDataError) as refused:
        relay.send("carol@sender.example", ["bob@example.com"], message(sender_key, signed=False), source=OUTSIDE)
    assert refused.value.smtp_code == 550
    assert refused.value.smtp_error.decode() == "5.7.1 Email rejected per DMARC policy for sender.example"
    assert sink.messages == []


def test_enforce_holds_a_dmarc_failure_whose_domain_says_quarantine(checking_relay, sink, sender_key):
    relay = checking_relay(spf="v=spf1 -all", dmarc="v=DMARC1; p=quarantine", dmarc_policy="enforce")
    relay.send("carol@sender.example", ["bob@example.com"], message(sender_key, signed=False), source=OUTSIDE)
    relay.wait_log(r"held: dmarc=fail p=quarantine")
    with ControlClient(str(relay.workdir / "control.sock")) as client:
        [held] = client.call("io.postern.Queue.List")["messages"]
    assert held["state"] == "hold" and sink.messages == []


def test_our_own_mail_is_not_checked(checking_relay, sink, sender_key):
    relay = checking_relay()
    relay.send("carol@sender.example", ["dave@example.org"], message(sender_key))  # from my_networks
    [got] = sink.wait_for(1)
    assert authentication_results(got.content) == []


def test_mail_from_outside_is_sealed_with_our_results_and_the_seal_verifies(make_relay, sink, sender_key, tmp_path):
    from appliance import dkim as keys
    from authheaders import authenticate_message

    _, sender_record = sender_key
    path, _ = keys.create_key(tmp_path / "dkim", "example.com", "arc1")
    _, our_record, _ = keys.dns_record(path, "example.com", "arc1")
    dns = DnsServer({("sender.example", "TXT"): [f'"v=spf1 ip4:{OUTSIDE} -all"'],
                     ("s1._domainkey.sender.example", "TXT"): [f'"{sender_record[:200]}" "{sender_record[200:]}"'],
                     ("_dmarc.sender.example", "TXT"): ['"v=DMARC1; p=reject"']}).start()
    try:
        relay = make_relay(sink.port, dns_servers=[dns.address], authentication={
            "check_inbound": True, "dkim_keys": {"example.com": {"selector": "arc1", "key_file": str(path)}}})
        relay.send("carol@sender.example", ["bob@example.com"], message(sender_key), source=OUTSIDE)
        [got] = sink.wait_for(1)
    finally:
        dns.stop()
    assert got.content.startswith(b"ARC-Seal: i=1; cv=none; a=rsa-sha256; d=example.com; s=arc1;")
    assert b"ARC-Authentication-Results: i=1; gw.example.com;" in got.content
    relay.wait_log(r"ARC-Seal field added \(s=arc1, d=example\.com\)")

    def txt(name, timeout=5):
        text = name.decode() if isinstance(name, bytes) else name
        records = {"arc1._domainkey.example.com": our_record, "s1._domainkey.sender.example": sender_record}
        value = records.get(text.rstrip("."))
        return None if value is None else (value.encode() if isinstance(name, bytes) else value)

    # dkimpy's own verifier, and authheaders' as Microsoft 365 would check the chain at the next hop
    result, _, reason = dkim.arc_verify(got.content, dnsfunc=txt)
    assert result == dkim.CV_Pass, reason
    assert "arc=pass" in authenticate_message(got.content, "mx.next.example", spf=False, dkim=False, dmarc=False,
                                              arc=True, dnsfunc=txt)


def checked(make_relay, sink, records: dict, content: bytes, mail_from: str = "carol@sender.example",
            silent: tuple[str, ...] = ()) -> str:
    """The Authentication-Results header a relay checking inbound mail adds, with this DNS."""
    dns = DnsServer(records, silent=silent).start()
    try:
        relay = make_relay(sink.port, dns_servers=[dns.address], authentication={"check_inbound": True})
        relay.send(mail_from, ["bob@example.com"], content, source=OUTSIDE)
        [got] = sink.wait_for(1, timeout=40)
    finally:
        dns.stop()
    [header] = authentication_results(got.content)
    return header


def test_spf_whose_dns_does_not_answer_is_a_temperror_and_the_mail_still_goes(make_relay, sink, sender_key):
    header = checked(make_relay, sink, {("sender.example", "TXT"): ['"v=spf1 -all"']},
                     message(sender_key, signed=False), mail_from="carol@slow.example", silent=("slow.example",))
    assert "spf=temperror" in header


def test_spf_with_more_than_ten_lookups_is_a_permerror(make_relay, sink, sender_key):
    value = "v=spf1 " + " ".join(f"include:i{n}.sender.example" for n in range(11)) + " -all"
    records = {("sender.example", "TXT"): [f'"{value[:200]}" "{value[200:]}"'],  # a TXT string holds 255 octets
               **{(f"i{n}.sender.example", "TXT"): ['"v=spf1 -all"'] for n in range(11)}}
    assert "spf=permerror" in checked(make_relay, sink, records, message(sender_key, signed=False))


@pytest.mark.parametrize("alignment, expected", [("", "dmarc=pass"), ("adkim=s; ", "dmarc=fail")])
def test_dmarc_alignment_relaxed_and_strict_for_a_subdomain(make_relay, sink, sender_key, alignment, expected):
    # a real public suffix (.org): the organisational domain comes from the public suffix list
    pem, record = sender_key
    body = (b"From: Carol <carol@mail.sender.org>\r\nTo: bob@example.com\r\nSubject: hello\r\n"
            b"Message-ID: <sub@sender.org>\r\n\r\nhello\r\n")
    signed = dkim.sign(body, b"s1", b"sender.org", pem, include_headers=[b"from", b"to", b"subject"]) + body
    records = {("s1._domainkey.sender.org", "TXT"): [f'"{record[:200]}" "{record[200:]}"'],
               ("_dmarc.sender.org", "TXT"): [f'"v=DMARC1; p=reject; {alignment}sp=quarantine"'],
               ("sender.org", "A"): ["192.0.2.1"]}
    header = checked(make_relay, sink, records, signed, mail_from="carol@mail.sender.org")
    assert "dkim=pass header.d=sender.org" in header and expected in header
    assert "policy.dmarc=quarantine" in header  # the organisational domain's sp= for its subdomains


class ExpiredDkim(dkim.DKIM):
    """dkimpy signs without x=: this signer dates its signature in 2001, expired an hour later."""

    def gen_header(self, fields, *args, **kwargs):
        fields = [field for field in fields if field[0] != b"t"]
        fields[-2:-2] = [(b"t", b"1000000000"), (b"x", b"1000003600")]  # before bh= and b=, which come last
        return super().gen_header(fields, *args, **kwargs)


def signed_variant(kind: str, sender_key) -> tuple[bytes, str]:
    """(the message, the s1 selector's TXT record) for each way a signature arrives."""
    pem, record = sender_key
    body = (b"From: Carol <carol@sender.example>\r\nTo: bob@example.com\r\nSubject: hello\r\n"
            b"Message-ID: <variant@sender.example>\r\n\r\nhello\r\n")
    headers = [b"from", b"to", b"subject"]
    if kind == "ed25519":
        from cryptography.hazmat.primitives.asymmetric import ed25519

        key = ed25519.Ed25519PrivateKey.generate()
        seed = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                 serialization.NoEncryption())
        public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        signature = dkim.sign(body, b"s1", b"sender.example", base64.b64encode(seed), include_headers=headers,
                              signature_algorithm=b"ed25519-sha256")
        return signature + body, f"v=DKIM1; k=ed25519; p={base64.b64encode(public).decode()}"
    if kind == "expired":
        return ExpiredDkim(body).sign(b"s1", b"sender.example", pem, include_headers=headers) + body, record
    signature = dkim.sign(body, b"s1", b"sender.example", pem, include_headers=headers)
    if kind == "header altered":
        return signature + body.replace(b"Subject: hello", b"Subject: HELLO"), record
    if kind == "wrong key":  # DNS publishes another key under the selector
        other = rsa.generate_private_key(65537, 2048).public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        return signature + body, f"v=DKIM1; k=rsa; p={base64.b64encode(other).decode()}"
    return signature + body, record


@pytest.mark.parametrize("kind, dkim_result", [
    ("good", "dkim=pass"), ("ed25519", "dkim=pass"), ("header altered", "dkim=fail"),
    ("expired", "dkim=fail"), ("wrong key", "dkim=fail"),
])
def test_each_way_a_signature_arrives(make_relay, sink, sender_key, kind, dkim_result):
    content, record = signed_variant(kind, sender_key)
    records = {("sender.example", "TXT"): ['"v=spf1 -all"'],  # SPF fails: DMARC rests on the signature alone
               ("s1._domainkey.sender.example", "TXT"): [" ".join(f'"{record[i:i + 200]}"'
                                                                 for i in range(0, len(record), 200))],
               ("_dmarc.sender.example", "TXT"): ['"v=DMARC1; p=reject"']}
    header = checked(make_relay, sink, records, content)
    assert dkim_result in header
    assert ("dmarc=pass" if dkim_result == "dkim=pass" else "dmarc=fail") in header


def test_spf_softfail_is_said_and_the_mail_goes(make_relay, sink, sender_key):
    records = {("sender.example", "TXT"): ['"v=spf1 ip4:192.0.2.1 ~all"']}
    assert "spf=softfail" in checked(make_relay, sink, records, message(sender_key, signed=False))
