"""Outbound TLS policy end to end: DANE, MTA-STS, tls_policy entries, STARTTLS stripped, TLS reports.

Mail for partner.org goes to its MX host, a recording next hop on 127.x.y.z:25 (needs root) with a
certificate from a test authority. A DNS server on loopback answers MX, A, TLSA and TXT records and,
for the names it is told are signed, sets the AD bit as a validating resolver would. MTA-STS policies
are served over HTTPS on the policy host's own loopback address, port 443.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import subprocess
import sys
from email import message_from_bytes, policy

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from relay.control.client import ControlClient
from tests.support.certs import Authority
from tests.support.dns_server import DnsServer
from tests.support.https_server import HttpsServer, Response
from tests.support.mail import make_message, message_id
from tests.support.net import spare_loopback_ip
from tests.support.next_hop import NextHop

MX = "mx.partner.org"


@pytest.fixture
def started():
    things = []
    yield things
    for thing in reversed(things):
        thing.stop()


@pytest.fixture
def mx_hop(authority, started):
    """mx_hop(name) -> a recording next hop on port 25 of a spare loopback address, with a certificate
    for `name` (None: no STARTTLS)."""

    def make(name: str | None = MX) -> NextHop:
        try:
            ip = spare_loopback_ip(25)
        except PermissionError:
            pytest.skip("MX delivery goes to port 25: binding it needs root")
        hop = NextHop(host=ip, port=25, tls_context=authority.server_context(name) if name else None).start()
        started.append(hop)
        return hop

    return make


def spki_sha256(authority, name: str) -> str:
    """The TLSA 3 1 1 data of the certificate `authority` last issued for `name`."""
    cert = x509.load_pem_x509_certificate((authority.directory / f"{name}-cert.pem").read_bytes())
    spki = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).hexdigest()


def ca_sha256(authority) -> str:
    """The TLSA 2 0 1 data of the authority's own certificate."""
    return hashlib.sha256(authority.cert.public_bytes(serialization.Encoding.DER)).hexdigest()


@pytest.fixture
def partner(make_relay, sink, authority, started):
    """partner(hop, records, secure=True, **mta) -> the relay, delivering partner.org's mail by MX to `hop`."""

    def make(hop: NextHop, records: dict | None = None, secure: bool = True, **mta):
        dns = DnsServer({("partner.org", "MX"): [f"10 {MX}."], (MX, "A"): [hop.host], **(records or {})},
                        secure=("partner.org",) if secure else ()).start()
        started.append(dns)
        relay = make_relay(sink.port, external_relay={"host": ""}, dns_servers=[dns.address],
                           tls={"ca_file": str(authority.cert_path)}, **mta)
        return relay

    return make


def send(relay, name: str) -> None:
    relay.send("alice@example.com", ["dave@partner.org"], make_message(f"{name}@example.com"))


def tls_summary(relay) -> dict:
    with ControlClient(str(relay.workdir / "control.sock")) as client:
        return {row["domain"]: row for row in client.call("io.postern.Tls.Summary")["domains"]}


def deferred_reply(relay) -> str:
    with ControlClient(str(relay.workdir / "control.sock")) as client:
        [message] = client.call("io.postern.Queue.List")["messages"]
    return message["last_reply"]


# --- DANE ------------------------------------------------------------------------------------


def test_dane_ee_match_delivers_verified_and_is_counted(partner, mx_hop, authority):
    hop = mx_hop()
    relay = partner(hop, {(f"_25._tcp.{MX}", "TLSA"): [f"3 1 1 {spki_sha256(authority, MX)}"]})
    send(relay, "dane-ee")
    [message] = hop.wait_for(1)
    assert message.tls and message_id(message.content) == "dane-ee@example.com"
    relay.wait_log(rf"Verified TLS connection established to {MX}\[{hop.host}\]:25: TLSv1\.[23] with cipher "
                   r".* \(DANE: .*3 1 1 .*matched")
    row = tls_summary(relay)["partner.org"]
    assert (row["dane"], row["failed"], row["unverified"]) == (1, 0, 0)


def test_dane_ta_match_needs_the_mx_name_in_the_certificate(partner, mx_hop, authority):
    good = mx_hop()
    relay = partner(good, {(f"_25._tcp.{MX}", "TLSA"): [f"2 0 1 {ca_sha256(authority)}"]})
    send(relay, "dane-ta")
    good.wait_for(1)
    relay.wait_log(r"Verified TLS connection established .*\(DANE: ")


def test_dane_ta_with_a_certificate_for_another_name_defers(partner, mx_hop, authority):
    wrong = mx_hop("mitm.example.net")
    relay = partner(wrong, {(f"_25._tcp.{MX}", "TLSA"): [f"2 0 1 {ca_sha256(authority)}"]})
    send(relay, "dane-ta-name")
    relay.wait_log(r"to=<dave@partner\.org>, .*dsn=4\.7\.5, status=deferred \(DANE: host mx\.partner\.org")
    assert wrong.messages == []
    [failure] = tls_summary(relay)["partner.org"]["failures"]
    assert failure["result_type"] == "certificate-host-mismatch" and failure["mx_host"] == MX


def test_a_tlsa_record_that_does_not_match_defers_and_never_falls_back_to_plain_text(partner, mx_hop):
    hop = mx_hop()
    relay = partner(hop, {(f"_25._tcp.{MX}", "TLSA"): ["3 1 1 " + "ab" * 32]})
    send(relay, "dane-mismatch")
    relay.wait_log(r"status=deferred \(DANE: host mx\.partner\.org.*not delivering without a matching certificate")
    assert hop.messages == []
    assert deferred_reply(relay).startswith("DANE: host mx.partner.org")
    row = tls_summary(relay)["partner.org"]
    assert row["failed"] >= 1 and row["failures"][0]["result_type"] == "validation-failure"


def test_starttls_stripped_under_dane_defers(partner, mx_hop, authority):
    stripped = mx_hop(None)  # a machine on the path that answers without STARTTLS
    relay = partner(stripped, {(f"_25._tcp.{MX}", "TLSA"): ["3 1 1 " + "ab" * 32]})
    send(relay, "stripped")
    relay.wait_log(r"dsn=4\.7\.4, status=deferred \(TLS is required, but was not offered by host mx\.partner\.org")
    assert stripped.messages == []
    assert tls_summary(relay)["partner.org"]["failures"][0]["result_type"] == "starttls-not-supported"


@pytest.mark.parametrize("level", ["encrypt", "verify", "secure", "dane-only"])
def test_starttls_stripped_under_a_required_level_defers(partner, mx_hop, level):
    stripped = mx_hop(None)
    tlsa = {(f"_25._tcp.{MX}", "TLSA"): ["3 1 1 " + "ab" * 32]} if level == "dane-only" else {}
    relay = partner(stripped, tlsa, tls_policy={"partner.org": level})
    send(relay, f"stripped-{level}")
    relay.wait_log(r"dsn=4\.7\.4, status=deferred \(TLS is required, but was not offered by host mx\.partner\.org")
    assert stripped.messages == []


def test_without_tlsa_records_dane_is_opportunistic(partner, mx_hop):
    hop = mx_hop()
    relay = partner(hop)  # signed zone, no TLSA: the level below, may
    send(relay, "no-tlsa")
    [message] = hop.wait_for(1)
    assert message.tls
    relay.wait_log(rf"Untrusted TLS connection established to {MX}\[{hop.host}\]:25")
    assert tls_summary(relay)["partner.org"]["unverified"] == 1


def test_tlsa_records_in_an_unsigned_zone_are_not_trusted(partner, mx_hop):
    hop = mx_hop()
    # A forged record without DNSSEC must not be believed: no DANE, so this non-matching record changes nothing.
    relay = partner(hop, {(f"_25._tcp.{MX}", "TLSA"): ["3 1 1 " + "ab" * 32]}, secure=False)
    send(relay, "insecure")
    hop.wait_for(1)
    relay.wait_log(r"Untrusted TLS connection established")


def test_starttls_stripped_without_a_policy_goes_in_plain_text_as_postfix_does(partner, mx_hop):
    hop = mx_hop(None)
    relay = partner(hop)
    send(relay, "plain")
    [message] = hop.wait_for(1)
    assert not message.tls
    assert tls_summary(relay)["partner.org"]["plain"] == 1


def test_dane_only_without_tlsa_defers(partner, mx_hop):
    hop = mx_hop()
    relay = partner(hop, tls_policy={"partner.org": "dane-only"})
    send(relay, "dane-only")
    relay.wait_log(r"status=deferred \(.*has no DNSSEC-validated TLSA records, and the level is dane-only")
    assert hop.messages == []


# --- tls_policy entries -----------------------------------------------------------------------


def test_secure_accepts_a_name_below_the_domain_and_refuses_another(partner, mx_hop, make_relay):
    hop = mx_hop()
    relay = partner(hop, tls_policy={".org": "may", "partner.org": "secure"})
    send(relay, "secure")
    hop.wait_for(1)
    relay.wait_log(rf"Verified TLS connection established to {MX}")

    forged = mx_hop("mx.attacker.example")
    relay2 = partner(forged, tls_policy={"partner.org": "secure"})
    send(relay2, "secure-forged")
    relay2.wait_log(r"dsn=4\.7\.5, status=deferred \(server certificate not verified: host mx\.partner\.org.* "
                    r"presented a certificate for mx\.attacker\.example, not partner\.org or \.partner\.org")
    assert forged.messages == []


def test_a_policy_entry_with_its_own_ca_and_names(partner, mx_hop, tmp_path):
    other = Authority(tmp_path, name="Partner CA")
    hop = NextHop(host=spare_loopback_ip(25), port=25, tls_context=other.server_context("smtp-in.partner.org")).start()
    try:
        relay = partner(hop, tls_policy={"partner.org": {"level": "verify", "match": ["smtp-in.partner.org"],
                                                         "ca_file": str(other.cert_path)}})
        send(relay, "own-ca")
        hop.wait_for(1)
        relay.wait_log(r"Verified TLS connection established")
    finally:
        hop.stop()


# --- MTA-STS ----------------------------------------------------------------------------------


@pytest.fixture
def sts(authority, started):
    """sts(mode, mx) -> the records publishing an MTA-STS policy for partner.org, served over HTTPS."""

    def make(mode: str, mx: str = MX) -> dict:
        ip = spare_loopback_ip(443)
        policy = f"version: STSv1\r\nmode: {mode}\r\nmx: {mx}\r\nmax_age: 86400\r\n"
        server = HttpsServer(authority, "mta-sts.partner.org", host=ip, port=443,
                             routes={"/.well-known/mta-sts.txt": Response(policy.encode())}).start()
        started.append(server)
        return {("_mta-sts.partner.org", "TXT"): ['"v=STSv1; id=20261206T1"'], ("mta-sts.partner.org", "A"): [ip]}

    return make


def test_mta_sts_enforce_delivers_to_a_listed_mx_with_a_verified_certificate(partner, mx_hop, sts):
    hop = mx_hop()
    relay = partner(hop, sts("enforce"), secure=False)
    send(relay, "sts")
    hop.wait_for(1)
    relay.wait_log(rf"Verified TLS connection established to {MX}.*\(MTA-STS \(enforce\)\)")
    assert tls_summary(relay)["partner.org"]["mta_sts"] == 1


def test_mta_sts_enforce_defers_an_mx_not_in_the_policy(partner, mx_hop, sts):
    hop = mx_hop()
    relay = partner(hop, sts("enforce", mx="mx.elsewhere.example"), secure=False)
    send(relay, "sts-mx")
    relay.wait_log(r"status=deferred \(MX host mx\.partner\.org is not in the MTA-STS policy of partner\.org")
    assert hop.messages == []


def test_mta_sts_enforce_defers_a_certificate_that_does_not_verify(partner, mx_hop, sts, tmp_path):
    rogue = Authority(tmp_path, name="Rogue CA")
    hop = NextHop(host=spare_loopback_ip(25), port=25, tls_context=rogue.server_context(MX)).start()
    try:
        relay = partner(hop, sts("enforce"), secure=False)
        send(relay, "sts-untrusted")
        relay.wait_log(r"dsn=4\.7\.5, status=deferred \(server certificate not verified")
        assert hop.messages == []
        assert tls_summary(relay)["partner.org"]["failures"][0]["result_type"] == "certificate-not-trusted"
    finally:
        hop.stop()


def test_mta_sts_testing_delivers_and_reports_the_failure(partner, mx_hop, sts):
    hop = mx_hop()
    relay = partner(hop, sts("testing", mx="mx.elsewhere.example"), secure=False)
    send(relay, "sts-testing")
    hop.wait_for(1)
    row = tls_summary(relay)["partner.org"]
    assert row["failed"] == 0 and row["failures"][0]["result_type"] == "validation-failure"


def test_dane_wins_over_mta_sts(partner, mx_hop, sts, authority):
    hop = mx_hop()
    # The STS policy lists another MX: were it applied, the mail would wait. DANE applies instead.
    records = {**sts("enforce", mx="mx.elsewhere.example"),
               (f"_25._tcp.{MX}", "TLSA"): [f"3 1 1 {spki_sha256(authority, MX)}"]}
    relay = partner(hop, records)
    send(relay, "dane-wins")
    hop.wait_for(1)
    relay.wait_log(r"\(DANE: ")


# --- the live check and the reports ------------------------------------------------------------


def test_the_check_says_what_delivery_would_do_without_sending_mail(partner, mx_hop):
    hop = mx_hop()
    relay = partner(hop, {(f"_25._tcp.{MX}", "TLSA"): ["3 1 1 " + "ab" * 32]})
    with ControlClient(str(relay.workdir / "control.sock")) as client:
        answer = client.call("io.postern.Tls.Check", domain="partner.org")
    [host] = answer["hosts"]
    assert host["verdict"] == "refuse" and host["detail"].startswith("DANE: host mx.partner.org")
    assert host["tlsa"] == ["3 1 1 " + "ab" * 32]
    assert answer["policy"]["level"] == "dane" and answer["policy"]["source"] == "external_relay.tls"
    ctl = subprocess.run([sys.executable, "-m", "relay.ctl", "--socket", str(relay.workdir / "control.sock"),
                          "tls", "check", "partner.org"], capture_output=True, text=True, timeout=60)
    assert ctl.returncode == 1, ctl.stderr
    assert ctl.stdout.startswith("partner.org: level dane (external_relay.tls)")
    assert f"{MX}[{hop.host}]:25: would defer: DANE: host" in ctl.stdout
    assert "    TLSA 3 1 1 abab" in ctl.stdout
    assert hop.messages == []


def test_a_tls_report_reaches_the_domain_and_is_not_counted_itself(partner, mx_hop, authority):
    hop = mx_hop()
    relay = partner(hop, {(f"_25._tcp.{MX}", "TLSA"): [f"3 1 1 {spki_sha256(authority, MX)}"],
                          ("_smtp._tls.partner.org", "TXT"): ['"v=TLSRPTv1; rua=mailto:tlsrpt@partner.org"']})
    send(relay, "before-report")
    hop.wait_for(1)
    with ControlClient(str(relay.workdir / "control.sock")) as client:
        lines = client.call("io.postern.Tls.SendReports")["lines"]
    assert any("tlsrpt@partner.org" in line for line in lines), lines
    [_, report_mail] = hop.wait_for(2)
    assert report_mail.recipients == ["tlsrpt@partner.org"] and report_mail.sender in ("", "<>")
    parsed = message_from_bytes(report_mail.content, policy=policy.default)
    assert parsed.get_content_type() == "multipart/report" and parsed["TLS-Report-Domain"] == "partner.org"
    [attachment] = [part for part in parsed.walk() if part.get_content_type() == "application/tlsrpt+gzip"]
    report = json.loads(gzip.decompress(attachment.get_content()))
    [entry] = report["policies"]
    assert entry["policy"]["policy-type"] == "tlsa" and entry["policy"]["policy-domain"] == "partner.org"
    assert entry["summary"] == {"total-successful-session-count": 1, "total-failure-session-count": 0}
    # the report's own delivery is not in the counts
    assert tls_summary(relay)["partner.org"]["dane"] == 1
