"""TLS reporting (RFC 8460): per-domain counts by the hour, the daily report as JSON, as mail
and as an HTTPS POST, sent once a day to the domains whose `_smtp._tls` TXT record asks."""

from __future__ import annotations

import asyncio
import datetime
import email
import email.policy
import gzip
import json
import logging
import os
import ssl
import time
import types

import dns.asyncresolver
import h11
import pytest

from relay import tls_report
from relay.tls_report import (RESULT_TYPES, SECURITY, Reporter, Session, TlsStats, parse_rua, report,
                              report_message)
from tests.support.certs import Authority
from tests.support.dns_server import DnsServer
from tests.support.net import spare_loopback_ip

NOW = time.time()
HOUR = 3600
TODAY = datetime.datetime.fromtimestamp(NOW, datetime.timezone.utc).date()
YESTERDAY = TODAY - datetime.timedelta(days=1)
YESTERDAY_NOON = datetime.datetime.combine(YESTERDAY, datetime.time(12), datetime.timezone.utc).timestamp()

STS_POLICY = ("version: STSv1", "mode: enforce", "mx: *.mail.example.org", "max_age: 86400")
TLSA = ("3 1 1 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",)


def sts(domain="example.org", **fields) -> Session:
    return Session(domain, "sts", STS_POLICY, mx_host="mx1.mail.example.org", mx_ip="192.0.2.25",
                   sending_ip="198.51.100.1", **fields)


def tlsa(domain="dane.example", **fields) -> Session:
    return Session(domain, "tlsa", TLSA, mx_host="mx.dane.example", mx_ip="192.0.2.53",
                   sending_ip="198.51.100.1", **fields)


def plain(domain="old.example") -> Session:
    return Session(domain, "no-policy-found", mx_host="mx.old.example", security="plain")


# --- counting -------------------------------------------------------------------------------


def test_summary_counts_each_security_and_failure_per_domain_busiest_first(tmp_path):
    stats = TlsStats(tmp_path)
    for _ in range(3):
        stats.record(sts(security="mta-sts"), now=NOW)
    stats.record(sts(failure="certificate-expired", detail="expired on 2026-01-01"), now=NOW)
    stats.record(sts(failure="certificate-expired", detail="expired on 2026-01-01"), now=NOW)
    stats.record(tlsa(security="dane"), now=NOW)
    stats.record(tlsa(security="verified", failure="tlsa-invalid", detail="no TLSA record matches"), now=NOW)
    stats.record(plain(), now=NOW)
    stats.record(Session("Old.Example.", "no-policy-found", security="unverified"), now=NOW)

    rows = stats.summary(since=NOW - HOUR, now=NOW)

    assert [row["domain"] for row in rows] == ["example.org", "dane.example", "old.example"]
    org, dane, old = rows
    assert (org["mta_sts"], org["failed"], org["dane"], org["plain"]) == (3, 2, 0, 0)
    assert org["policy_type"] == "sts"
    assert org["failures"] == [{"result_type": "certificate-expired", "detail": "expired on 2026-01-01",
                                "mx_host": "mx1.mail.example.org", "count": 2}]
    # a testing policy's failure: the session went ahead (verified), and its failure is listed
    assert (dane["dane"], dane["verified"], dane["failed"]) == (1, 1, 0)
    assert dane["failures"][0]["result_type"] == "tlsa-invalid"
    assert (old["plain"], old["unverified"], old["failures"]) == (1, 1, [])
    assert set(org) == {"domain", "dane", "mta_sts", "verified", "unverified", "plain", "failed", "failures",
                        "policy_type"}


def test_summary_covers_only_the_hours_asked_for(tmp_path):
    stats = TlsStats(tmp_path)
    stats.record(plain(), now=NOW - 5 * HOUR)
    stats.record(plain(), now=NOW - 5 * HOUR)
    stats.record(plain(), now=NOW)

    assert stats.summary(since=NOW - 6 * HOUR, now=NOW)[0]["plain"] == 3
    assert stats.summary(since=NOW - HOUR, now=NOW)[0]["plain"] == 1
    assert stats.summary(since=NOW - 5 * HOUR, now=NOW - 4 * HOUR)[0]["plain"] == 2


def test_hours_older_than_48_are_dropped(tmp_path):
    stats = TlsStats(tmp_path)
    stats.record(plain("first.example"), now=NOW - 49 * HOUR)
    stats.record(plain("second.example"), now=NOW - 47 * HOUR)
    stats.record(plain("third.example"), now=NOW)

    domains = [row["domain"] for row in stats.summary(since=0, now=NOW)]
    assert domains == ["second.example", "third.example"]
    stats.flush(now=NOW)
    saved = json.loads((tmp_path / "tls-stats.json").read_text())
    assert len(saved["hours"]) == 2


def test_day_gathers_that_utc_day_per_policy(tmp_path):
    stats = TlsStats(tmp_path)
    midnight = datetime.datetime.combine(YESTERDAY, datetime.time(0), datetime.timezone.utc).timestamp()
    stats.record(sts(security="mta-sts"), now=midnight)              # the day's first second
    stats.record(sts(security="mta-sts"), now=midnight + 86399)      # its last
    stats.record(sts(security="mta-sts"), now=midnight - 1)          # the day before: not in it
    stats.record(sts(security="mta-sts"), now=midnight + 86400)      # today: not in it
    stats.record(sts(failure="sts-webpki-invalid", detail="unknown CA"), now=YESTERDAY_NOON)
    stats.record(Session("example.org", "no-policy-found", mx_host="mx1.mail.example.org",
                         failure="starttls-not-supported"), now=YESTERDAY_NOON)

    day = stats.day(YESTERDAY)

    assert list(day) == ["example.org"]
    by_type = {policy["policy_type"]: policy for policy in day["example.org"]["policies"]}
    assert by_type["sts"]["successful"] == 2 and by_type["sts"]["failed"] == 1
    assert by_type["sts"]["policy_strings"] == list(STS_POLICY)
    assert by_type["sts"]["failures"] == [{"result_type": "sts-webpki-invalid", "sending_ip": "198.51.100.1",
                                           "mx_host": "mx1.mail.example.org", "mx_ip": "192.0.2.25",
                                           "detail": "unknown CA", "count": 1}]
    assert by_type["no-policy-found"]["failed"] == 1
    assert stats.day(YESTERDAY - datetime.timedelta(days=5)) == {}


def test_counts_survive_a_restart(tmp_path):
    stats = TlsStats(tmp_path)
    stats.record(sts(security="mta-sts"), now=YESTERDAY_NOON)
    stats.record(sts(failure="certificate-expired"), now=NOW)
    stats.flush()

    path = tmp_path / "tls-stats.json"
    assert path.stat().st_mode & 0o777 == 0o600
    assert sorted(os.listdir(tmp_path)) == ["tls-stats.json"]  # no temporary file left behind
    again = TlsStats(tmp_path)
    assert again.summary(since=0, now=NOW) == stats.summary(since=0, now=NOW)
    assert again.day(YESTERDAY) == stats.day(YESTERDAY)
    again.record(sts(security="mta-sts"), now=NOW)
    assert again.summary(since=NOW - HOUR, now=NOW)[0]["mta_sts"] == 1


def test_flush_writes_nothing_when_nothing_changed(tmp_path):
    stats = TlsStats(tmp_path)
    stats.flush()
    assert not (tmp_path / "tls-stats.json").exists()
    stats.record(plain(), now=NOW)
    stats.flush()
    before = (tmp_path / "tls-stats.json").stat().st_mtime_ns
    time.sleep(0.01)
    stats.flush()
    assert (tmp_path / "tls-stats.json").stat().st_mtime_ns == before


@pytest.mark.parametrize("content", [
    b"\x00\xff not json",
    b'{"version": 1, "hours": {"abc": {}}}',
    b'{"version": 1, "hours": {"1": {"dropped": 0, "domains": {"x": {"counts": {"plain": -4}, '
    b'"policy_type": "sts", "policies": []}}}}}',
    b'{"version": 99, "hours": {}}',
    b"[1, 2, 3]",
    b"",
])
def test_a_corrupted_stats_file_is_set_aside_with_a_warning(tmp_path, caplog, content):
    (tmp_path / "tls-stats.json").write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="postern/tlsrpt"):
        stats = TlsStats(tmp_path)
    assert "set aside" in caplog.text
    assert stats.summary(since=0, now=NOW) == []
    [aside] = [name for name in os.listdir(tmp_path) if name.startswith("tls-stats.json.corrupt-")]
    assert (tmp_path / aside).read_bytes() == content  # kept for a look, not overwritten
    stats.record(plain(), now=NOW)
    stats.flush()
    assert TlsStats(tmp_path).summary(since=0, now=NOW)[0]["plain"] == 1


def test_the_domain_limit_bounds_each_hour(tmp_path, caplog):
    stats = TlsStats(tmp_path, limit_domains=3)
    with caplog.at_level(logging.WARNING, logger="postern/tlsrpt"):
        for number in range(10):
            stats.record(plain(f"d{number}.example"), now=NOW)
    stats.record(plain("d0.example"), now=NOW)  # a domain already counted still is

    rows = stats.summary(since=NOW - HOUR, now=NOW)
    assert {row["domain"] for row in rows} == {"d0.example", "d1.example", "d2.example"}
    assert rows[0] == {**rows[0], "domain": "d0.example", "plain": 2}
    assert caplog.text.count("more than 3 domains") == 1
    next_hour = (NOW // HOUR + 1) * HOUR
    stats.record(plain("d9.example"), now=next_hour)  # a new hour, room again
    assert [row["domain"] for row in stats.summary(since=next_hour, now=next_hour)] == ["d9.example"]


def test_hostile_text_is_bounded_and_kept_on_one_line(tmp_path):
    stats = TlsStats(tmp_path)
    for number in range(500):
        stats.record(sts(failure="validation-failure", detail=f"bad\r\nInjected: {number}" + "x" * 5000),
                     now=NOW)
    stats.record(Session("big.example", "sts", tuple(f"mx: m{n}.example" for n in range(1000)),
                         security="mta-sts"), now=NOW)

    row = next(row for row in stats.summary(since=NOW - HOUR, now=NOW) if row["domain"] == "example.org")
    assert row["failed"] == 500  # every session counted, even beyond the details kept
    assert len(row["failures"]) <= 32
    assert all(len(f["detail"]) <= 255 and "\n" not in f["detail"] and "\r" not in f["detail"]
               for f in row["failures"])
    [policy] = stats.day(TODAY)["big.example"]["policies"]
    assert len(policy["policy_strings"]) <= 32


def test_a_session_must_say_what_happened():
    with pytest.raises(ValueError):
        Session("example.org", "sts")  # neither went ahead nor failed
    with pytest.raises(ValueError):
        Session("example.org", "dmarc", security="plain")
    with pytest.raises(ValueError):
        Session("example.org", "sts", failure="it broke")
    with pytest.raises(ValueError):
        Session("example.org", "sts", security="excellent")
    assert len(SECURITY) == 5 and len(RESULT_TYPES) == 11


# --- the report -----------------------------------------------------------------------------


def check_rfc8460(document: dict) -> None:
    """The structure RFC 8460 4.4 requires, field by field."""
    assert set(document) >= {"organization-name", "date-range", "contact-info", "report-id", "policies"}
    for key in ("organization-name", "contact-info", "report-id"):
        assert isinstance(document[key], str) and document[key]
    assert set(document["date-range"]) == {"start-datetime", "end-datetime"}
    for value in document["date-range"].values():
        datetime.datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ")
    assert isinstance(document["policies"], list)
    for item in document["policies"]:
        policy = item["policy"]
        assert policy["policy-type"] in ("tlsa", "sts", "no-policy-found")
        assert isinstance(policy["policy-domain"], str)
        for key in ("policy-string", "mx-host"):
            if key in policy:
                assert isinstance(policy[key], list) and all(isinstance(s, str) for s in policy[key])
        summary = item["summary"]
        assert set(summary) == {"total-successful-session-count", "total-failure-session-count"}
        assert all(type(count) is int and count >= 0 for count in summary.values())
        details = item.get("failure-details", [])
        assert sum(d["failed-session-count"] for d in details) <= summary["total-failure-session-count"]
        for detail in details:
            assert detail["result-type"] in RESULT_TYPES
            assert type(detail["failed-session-count"]) is int
            assert set(detail) <= {"result-type", "sending-mta-ip", "receiving-mx-hostname", "receiving-mx-helo",
                                   "receiving-ip", "failed-session-count", "additional-information",
                                   "failure-reason-code"}


def day_of_traffic(tmp_path) -> dict:
    stats = TlsStats(tmp_path)
    for _ in range(4):
        stats.record(sts(security="mta-sts"), now=YESTERDAY_NOON)
    stats.record(sts(failure="certificate-host-mismatch", detail="the certificate names mx.other.example"),
                 now=YESTERDAY_NOON)
    stats.record(tlsa("example.org", security="dane"), now=YESTERDAY_NOON)
    return stats.day(YESTERDAY)


def test_report_has_every_field_of_rfc8460_and_the_right_counts(tmp_path):
    document = report(day_of_traffic(tmp_path), "example.org", organization="gw.example.com",
                      contact="postmaster@gw.example.com", report_id="r1@gw.example.com", date=YESTERDAY)

    check_rfc8460(document)
    assert document["organization-name"] == "gw.example.com"
    assert document["date-range"] == {"start-datetime": f"{YESTERDAY}T00:00:00Z",
                                      "end-datetime": f"{YESTERDAY}T23:59:59Z"}
    by_type = {item["policy"]["policy-type"]: item for item in document["policies"]}
    assert by_type["sts"]["policy"] == {"policy-type": "sts", "policy-string": list(STS_POLICY),
                                        "policy-domain": "example.org", "mx-host": ["*.mail.example.org"]}
    assert by_type["sts"]["summary"] == {"total-successful-session-count": 4, "total-failure-session-count": 1}
    assert by_type["sts"]["failure-details"] == [{
        "result-type": "certificate-host-mismatch", "sending-mta-ip": "198.51.100.1",
        "receiving-mx-hostname": "mx1.mail.example.org", "receiving-ip": "192.0.2.25",
        "failed-session-count": 1, "additional-information": "the certificate names mx.other.example"}]
    assert by_type["tlsa"]["policy"]["mx-host"] == ["mx.dane.example"]
    assert "failure-details" not in by_type["tlsa"]
    json.dumps(document)  # plain JSON all through


def test_report_of_a_domain_without_traffic_has_no_policies(tmp_path):
    document = report(day_of_traffic(tmp_path), "quiet.example", organization="o", contact="c",
                      report_id="r", date=YESTERDAY)
    check_rfc8460(document)
    assert document["policies"] == []


def test_report_message_parses_back_as_rfc8460_describes(tmp_path):
    document = report(day_of_traffic(tmp_path), "example.org", organization="gw.example.com",
                      contact="postmaster@gw.example.com", report_id="20261205.abc@gw.example.com",
                      date=YESTERDAY)
    raw = report_message(document, submitter="gw.example.com", domain="example.org",
                         rua_address="tlsrpt@example.org", sender="postmaster@gw.example.com")

    assert b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")  # CRLF only, ready for SMTP
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert message.get_content_type() == "multipart/report"
    assert message.get_param("report-type") == "tlsrpt"
    assert message["Subject"] == ("Report Domain: example.org Submitter: gw.example.com "
                                  "Report-ID: <20261205.abc@gw.example.com>")
    assert message["TLS-Report-Domain"] == "example.org"
    assert message["TLS-Report-Submitter"] == "gw.example.com"
    assert message["From"] == "postmaster@gw.example.com"
    assert message["To"] == "tlsrpt@example.org"
    assert message["Date"].datetime is not None
    assert message["Message-ID"].startswith("<") and message["Message-ID"].endswith("@gw.example.com>")
    text, attachment = message.iter_parts()
    assert text.get_content_type() == "text/plain" and "example.org" in text.get_content()
    assert attachment.get_content_type() == "application/tlsrpt+gzip"
    begin = int(datetime.datetime.combine(YESTERDAY, datetime.time(0), datetime.timezone.utc).timestamp())
    assert attachment.get_filename() == (
        f"gw.example.com!example.org!{begin}!{begin + 86399}!20261205.abc@gw.example.com.json.gz")
    assert json.loads(gzip.decompress(attachment.get_content())) == document


@pytest.mark.parametrize("txt, expected", [
    ("v=TLSRPTv1; rua=mailto:a@x.example,https://r.x.example/path",
     ["mailto:a@x.example", "https://r.x.example/path"]),
    ("v=TLSRPTv1;rua=mailto:reports@example.org", ["mailto:reports@example.org"]),
    ("v=TLSRPTv1; rua=mailto:a@x.example , mailto:b@x.example;", ["mailto:a@x.example", "mailto:b@x.example"]),
    ("v=TLSRPTv1; future=yes; rua=https://r.example/", ["https://r.example/"]),  # unknown fields ignored
    ("v=TLSRPTv1;", []),
    ("v=TLSRPTv1; rua=", []),
    ("v=TLSRPTv1; rua=http://plain.example/", []),   # only mailto: and https:
    ("v=TLSRPTv1; rua=ftp://x.example/", []),
    ("v=TLSRPTv2; rua=mailto:a@x.example", []),
    ("v=spf1 -all", []),
    ("rua=mailto:a@x.example; v=TLSRPTv1", []),     # the version comes first
    ("v=TLSRPTv1; rua=mailto:a@x.example; rua=mailto:b@x.example", []),
    ("v=TLSRPTv1; garbage; rua=mailto:a@x.example", []),
    ("", []),
])
def test_parse_rua(txt, expected):
    assert parse_rua(txt) == expected


# --- sending --------------------------------------------------------------------------------


class ReportServer:
    """An HTTPS server on loopback port 443 that takes POSTs (h11), as a report collector would."""

    def __init__(self, context: ssl.SSLContext, status: int = 200):
        self.context, self.status = context, status
        self.requests: list[tuple[h11.Request, bytes]] = []
        self.ip = spare_loopback_ip(443)
        self.server = None

    async def start(self) -> ReportServer:
        self.server = await asyncio.start_server(self._serve, self.ip, 443, ssl=self.context)
        return self

    async def stop(self) -> None:
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader, writer) -> None:
        connection = h11.Connection(h11.SERVER)
        request, body = None, b""
        try:
            while True:
                event = connection.next_event()
                if event is h11.NEED_DATA:
                    connection.receive_data(await reader.read(65536))
                elif isinstance(event, h11.Request):
                    request = event
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    break
                elif isinstance(event, h11.ConnectionClosed):
                    return
            self.requests.append((request, body))
            writer.write(connection.send(h11.Response(status_code=self.status, headers=[("Content-Length", "0")]))
                         + connection.send(h11.EndOfMessage()))
            await writer.drain()
        except (OSError, ssl.SSLError, h11.ProtocolError):
            pass  # the client went away, or refused our certificate
        finally:
            writer.close()


@pytest.fixture
def client_context(authority):
    context = ssl.create_default_context(cafile=str(authority.cert_path))
    context.check_hostname = False  # as the relay's own contexts: names are matched by certificate_matches
    return context


@pytest.fixture
async def collector(authority):
    server = await ReportServer(authority.server_context("reports.example.net")).start()
    yield server
    await server.stop()


class Mailer:
    """send_mail as the relay's queue would take it: records what it was given."""

    def __init__(self, fail: bool = False):
        self.sent: list[tuple[str, list[str], bytes]] = []
        self.fail = fail

    async def __call__(self, sender: str, recipients: list[str], message: bytes) -> None:
        await asyncio.sleep(0)
        if self.fail:
            raise OSError("the queue is full")
        self.sent.append((sender, recipients, message))


@pytest.fixture
def make_dns():
    started = []

    def make(records, **options) -> DnsServer:
        server = DnsServer(records, **options).start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


def resolver_for(server: DnsServer) -> dns.asyncresolver.Resolver:
    resolver = dns.asyncresolver.Resolver(configure=False)
    resolver.nameservers = [server.host]
    resolver.port = server.port
    resolver.lifetime = 2.0
    return resolver


def traffic(tmp_path, *domains: str) -> TlsStats:
    stats = TlsStats(tmp_path / "stats")
    for domain in domains:
        stats.record(sts(domain, security="mta-sts"), now=YESTERDAY_NOON)
        stats.record(sts(domain, failure="sts-policy-fetch-error", detail="no answer"), now=YESTERDAY_NOON)
    return stats


def reporter(tmp_path, stats, dns_server, mailer, context) -> Reporter:
    resolver = resolver_for(dns_server)
    return Reporter(stats, resolver=lambda: resolver, hostname=lambda: "gw.example.com", send_mail=mailer,
                    context=lambda: context, directory=tmp_path / "reports")


async def test_a_report_by_mail_goes_with_a_null_sender(tmp_path, make_dns, client_context):
    dns_server = make_dns({("_smtp._tls.example.org", "TXT"): ['"v=TLSRPTv1; rua=mailto:tls-reports@example.org"']})
    mailer = Mailer()
    sender = reporter(tmp_path, traffic(tmp_path, "example.org"), dns_server, mailer, client_context)

    lines = await sender.send_day(YESTERDAY)

    [(envelope_sender, recipients, raw)] = mailer.sent
    assert envelope_sender == "" and recipients == ["tls-reports@example.org"]
    assert lines == [f"TLS report for example.org of {YESTERDAY} queued to <tls-reports@example.org>"]
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert message["To"] == "tls-reports@example.org"
    assert message["TLS-Report-Domain"] == "example.org"
    document = json.loads(gzip.decompress(list(message.iter_parts())[1].get_content()))
    check_rfc8460(document)
    assert document["policies"][0]["summary"] == {"total-successful-session-count": 1,
                                                  "total-failure-session-count": 1}


async def test_a_report_by_https_is_posted_gzipped_to_a_verified_server(tmp_path, make_dns, collector,
                                                                        client_context):
    dns_server = make_dns({
        ("_smtp._tls.example.org", "TXT"): ['"v=TLSRPTv1; rua=https://reports.example.net/v1/tlsrpt?k=1"'],
        ("reports.example.net", "A"): [collector.ip],
    })
    mailer = Mailer()
    sender = reporter(tmp_path, traffic(tmp_path, "example.org"), dns_server, mailer, client_context)

    lines = await sender.send_day(YESTERDAY)

    assert lines == [f"TLS report for example.org of {YESTERDAY} posted to "
                     "https://reports.example.net/v1/tlsrpt?k=1: HTTP 200"]
    [(request, body)] = collector.requests
    assert request.method == b"POST" and request.target == b"/v1/tlsrpt?k=1"
    headers = dict(request.headers)
    assert headers[b"content-type"] == b"application/tlsrpt+gzip"
    assert headers[b"host"] == b"reports.example.net"
    document = json.loads(gzip.decompress(body))
    check_rfc8460(document)
    assert document["policies"][0]["policy"]["policy-domain"] == "example.org"
    assert mailer.sent == []


async def test_mail_and_https_both_get_the_report(tmp_path, make_dns, collector, client_context):
    dns_server = make_dns({
        ("_smtp._tls.example.org", "TXT"): [
            '"v=TLSRPTv1; rua=mailto:a@example.org," "https://reports.example.net/"'],  # two strings, one record
        ("reports.example.net", "A"): [collector.ip],
    })
    mailer = Mailer()
    sender = reporter(tmp_path, traffic(tmp_path, "example.org"), dns_server, mailer, client_context)
    await sender.send_day(YESTERDAY)
    assert len(mailer.sent) == 1 and len(collector.requests) == 1


async def test_no_tlsrpt_record_no_report(tmp_path, make_dns, client_context):
    dns_server = make_dns({
        ("_smtp._tls.spf.example", "TXT"): ['"v=spf1 -all"'],
        ("_smtp._tls.twice.example", "TXT"): ['"v=TLSRPTv1; rua=mailto:a@twice.example"',
                                              '"v=TLSRPTv1; rua=mailto:b@twice.example"'],  # RFC 8460 3: none
    })
    mailer = Mailer()
    sender = reporter(tmp_path, traffic(tmp_path, "none.example", "spf.example", "twice.example"), dns_server,
                      mailer, client_context)

    assert await sender.send_day(YESTERDAY) == []
    assert mailer.sent == []
    assert ("_smtp._tls.none.example", "TXT") in dns_server.queries


async def test_a_day_is_sent_once_even_across_a_restart(tmp_path, make_dns, client_context):
    dns_server = make_dns({("_smtp._tls.example.org", "TXT"): ['"v=TLSRPTv1; rua=mailto:r@example.org"']})
    mailer = Mailer()
    stats = traffic(tmp_path, "example.org")
    sender = reporter(tmp_path, stats, dns_server, mailer, client_context)

    assert len(await sender.send_day(YESTERDAY)) == 1
    assert await sender.send_day(YESTERDAY) == []
    restarted = reporter(tmp_path, stats, dns_server, mailer, client_context)
    assert restarted.finished(YESTERDAY)
    assert await restarted.send_day(YESTERDAY) == []
    assert len(mailer.sent) == 1


async def test_a_server_that_is_down_is_logged_and_the_other_domains_still_get_theirs(
        tmp_path, make_dns, authority, client_context):
    down_ip = spare_loopback_ip(443)  # nothing listens there
    dns_server = make_dns({
        ("_smtp._tls.a.example", "TXT"): ['"v=TLSRPTv1; rua=https://reports.a.example/"'],
        ("reports.a.example", "A"): [down_ip],
        ("_smtp._tls.b.example", "TXT"): ['"v=TLSRPTv1; rua=mailto:r@b.example"'],
    })
    mailer = Mailer()
    sender = reporter(tmp_path, traffic(tmp_path, "a.example", "b.example"), dns_server, mailer, client_context)

    lines = await sender.send_day(YESTERDAY)

    assert [recipients for _, recipients, _ in mailer.sent] == [["r@b.example"]]
    [failure] = [line for line in lines if "a.example" in line]
    assert "cannot connect to reports.a.example port 443" in failure and "will try again" in failure
    assert not sender.finished(YESTERDAY)

    # an hour later the collector is up: a.example gets its report, b.example is not sent a second one
    server = ReportServer(authority.server_context("reports.a.example"))
    server.ip = down_ip
    await server.start()
    try:
        lines = await sender.send_day(YESTERDAY)
    finally:
        await server.stop()
    assert lines == [f"TLS report for a.example of {YESTERDAY} posted to https://reports.a.example/: HTTP 200"]
    assert len(server.requests) == 1 and len(mailer.sent) == 1
    assert sender.finished(YESTERDAY)


async def test_a_server_down_for_good_is_given_up_after_a_few_tries(tmp_path, make_dns, client_context):
    dns_server = make_dns({
        ("_smtp._tls.a.example", "TXT"): ['"v=TLSRPTv1; rua=https://reports.a.example/"'],
        ("reports.a.example", "A"): [spare_loopback_ip(443)],
    })
    sender = reporter(tmp_path, traffic(tmp_path, "a.example"), dns_server, Mailer(), client_context)
    outcomes = [await sender.send_day(YESTERDAY) for _ in range(4)]
    assert "will try again" in outcomes[0][0] and "given up" in outcomes[2][0]
    assert outcomes[3] == [] and sender.finished(YESTERDAY)


async def test_a_collector_whose_certificate_names_another_host_is_not_sent_the_report(
        tmp_path, make_dns, authority, client_context):
    server = await ReportServer(authority.server_context("impostor.example")).start()
    try:
        dns_server = make_dns({
            ("_smtp._tls.example.org", "TXT"): ['"v=TLSRPTv1; rua=https://reports.example.net/"'],
            ("reports.example.net", "A"): [server.ip],
        })
        sender = reporter(tmp_path, traffic(tmp_path, "example.org"), dns_server, Mailer(), client_context)
        [line] = await sender.send_day(YESTERDAY)
    finally:
        await server.stop()
    assert "not verified for that name" in line and "impostor.example" in line
    assert server.requests == []


async def test_a_collector_signed_by_an_unknown_authority_is_not_sent_the_report(
        tmp_path, make_dns, client_context):
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    server = await ReportServer(Authority(stranger).server_context("reports.example.net")).start()
    try:
        dns_server = make_dns({
            ("_smtp._tls.example.org", "TXT"): ['"v=TLSRPTv1; rua=https://reports.example.net/"'],
            ("reports.example.net", "A"): [server.ip],
        })
        sender = reporter(tmp_path, traffic(tmp_path, "example.org"), dns_server, Mailer(), client_context)
        [line] = await sender.send_day(YESTERDAY)
    finally:
        await server.stop()
    assert "not sent" in line and server.requests == []


async def test_a_collector_that_refuses_is_logged(tmp_path, make_dns, authority, client_context):
    server = await ReportServer(authority.server_context("reports.example.net"), status=403).start()
    try:
        dns_server = make_dns({
            ("_smtp._tls.example.org", "TXT"): ['"v=TLSRPTv1; rua=https://reports.example.net/"'],
            ("reports.example.net", "A"): [server.ip],
        })
        sender = reporter(tmp_path, traffic(tmp_path, "example.org"), dns_server, Mailer(), client_context)
        [line] = await sender.send_day(YESTERDAY)
    finally:
        await server.stop()
    assert "HTTP 403" in line and "not sent" in line
    assert sender.finished(YESTERDAY)  # refused for good: not tried again


async def test_a_full_queue_is_tried_again_later(tmp_path, make_dns, client_context):
    dns_server = make_dns({("_smtp._tls.example.org", "TXT"): ['"v=TLSRPTv1; rua=mailto:r@example.org"']})
    mailer = Mailer(fail=True)
    sender = reporter(tmp_path, traffic(tmp_path, "example.org"), dns_server, mailer, client_context)
    [line] = await sender.send_day(YESTERDAY)
    assert "the queue is full" in line and "will try again" in line
    mailer.fail = False
    await sender.send_day(YESTERDAY)
    assert len(mailer.sent) == 1


async def test_a_silent_dns_server_is_tried_again_later(tmp_path, make_dns, client_context):
    dns_server = make_dns({("_smtp._tls.example.org", "TXT"): ['"v=TLSRPTv1; rua=mailto:r@example.org"']},
                          silent=("example.org",))
    mailer = Mailer()
    sender = reporter(tmp_path, traffic(tmp_path, "example.org"), dns_server, mailer, client_context)
    [line] = await sender.send_day(YESTERDAY)
    assert "cannot look up _smtp._tls.example.org" in line and "will try again" in line
    dns_server.silent = ()
    await sender.send_day(YESTERDAY)
    assert len(mailer.sent) == 1


async def test_a_hostile_record_cannot_fan_one_report_out_to_many(tmp_path, make_dns, client_context):
    many = "v=TLSRPTv1; rua=" + ",".join(f"mailto:r{n}@example.org" for n in range(50))
    strings = " ".join(f'"{many[i:i + 200]}"' for i in range(0, len(many), 200))  # one record, many strings
    dns_server = make_dns({("_smtp._tls.example.org", "TXT"): [strings]})
    mailer = Mailer()
    sender = reporter(tmp_path, traffic(tmp_path, "example.org"), dns_server, mailer, client_context)
    await sender.send_day(YESTERDAY)
    assert 1 <= len(mailer.sent) <= 4


async def test_run_sends_the_day_before_and_flushes_the_counts(tmp_path, make_dns, client_context, monkeypatch):
    # the first round at once, the next a day later (in real life: after midnight plus up to an hour)
    monkeypatch.setattr(tls_report, "_next_send", lambda now, first=False: now if first else now + 86400)
    # The reporter's clock runs from this module's NOW, so "the day before" stays YESTERDAY even when
    # the run crosses midnight UTC between loading this module and this test.
    started = time.time()
    monkeypatch.setattr(tls_report, "time", types.SimpleNamespace(**{**vars(time), "time": lambda: NOW + time.time() - started}))
    dns_server = make_dns({("_smtp._tls.example.org", "TXT"): ['"v=TLSRPTv1; rua=mailto:r@example.org"']})
    mailer = Mailer()
    stats = traffic(tmp_path, "example.org")
    sender = reporter(tmp_path, stats, dns_server, mailer, client_context)

    task = asyncio.create_task(sender.run(flush_every=0.05))
    try:
        for _ in range(100):
            if mailer.sent and (tmp_path / "stats" / "tls-stats.json").exists():
                break
            await asyncio.sleep(0.05)
        stats.record(plain("later.example"))
        await asyncio.sleep(0.2)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert len(mailer.sent) == 1 and sender.finished(YESTERDAY)
    saved = TlsStats(tmp_path / "stats")
    assert "later.example" in {row["domain"] for row in saved.summary(since=NOW - HOUR)}
    assert saved.day(YESTERDAY) == stats.day(YESTERDAY)
