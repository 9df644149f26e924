"""MTA-STS (RFC 8461): discovery by TXT record, the policy over HTTPS, the cache on disk, refresh.

Real parts: an authoritative DNS server on loopback answers `_mta-sts.example.org` TXT and
`mta-sts.example.org` A (a spare 127.x.y.z, so only the relay's own resolver can find the
policy host), and a real HTTPS server on that address, port 443, presents a certificate from a
test authority that the MtaSts client context trusts. Time is a clock the tests move forward.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time

import dns.asyncresolver
import pytest

from relay.mta_sts import MtaSts, Policy, PolicyError, parse_policy, policy_domain
from tests.support.certs import Authority, self_signed
from tests.support.dns_server import DnsServer
from tests.support.https_server import HttpsServer, Response
from tests.support.net import spare_loopback_ip

DOMAIN = "example.org"
HOST = "mta-sts.example.org"
PATH = "/.well-known/mta-sts.txt"
ENFORCE = b"version: STSv1\r\nmode: enforce\r\nmx: mail.example.org\r\nmx: *.backup.example.org\r\nmax_age: 604800\r\n"


class Clock:
    def __init__(self):
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class World:
    """example.org with an MTA-STS TXT record, its policy host on a spare loopback address, and clients."""

    def __init__(self, tmp_path):
        self.tmp_path = tmp_path
        (tmp_path / "ca").mkdir()
        self.authority = Authority(tmp_path / "ca")
        try:
            self.ip = spare_loopback_ip(443)
        except PermissionError:
            pytest.skip("the policy host listens on port 443: binding it needs root")
        self.dns = DnsServer({
            (f"_mta-sts.{DOMAIN}", "TXT"): ['"v=STSv1; id=20260101"'],
            (HOST, "A"): [self.ip],
        }).start()
        self.https: HttpsServer | None = None
        self.clock = Clock()
        self.directory = tmp_path / "mta-sts"
        self.client_context = ssl.create_default_context(cafile=str(self.authority.cert_path))
        self.client_context.check_hostname = False  # as the relay's verify context: names are matched by relay.tls

    def serve(self, response: Response | bytes = ENFORCE, context: ssl.SSLContext | None = None) -> HttpsServer:
        if isinstance(response, bytes):
            response = Response(response)
        if self.https is not None:
            self.https.stop()
        self.https = HttpsServer(self.authority, HOST, {PATH: response}, host=self.ip, port=443,
                                 context=context).start()
        return self.https

    def txt(self, *records: str) -> None:
        key = (f"_mta-sts.{DOMAIN}", "TXT")
        if records:
            self.dns.records[key] = list(records)
        else:
            self.dns.records.pop(key, None)

    def resolver(self, lifetime: float = 2.0) -> dns.asyncresolver.Resolver:
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = [self.dns.host]
        resolver.port = self.dns.port
        resolver.lifetime = lifetime
        return resolver

    def sts(self, timeout: float = 5.0, resolver=None) -> MtaSts:
        resolver = resolver or self.resolver()
        return MtaSts(self.directory, lambda: resolver, lambda: self.client_context, port=443,
                      timeout=timeout, clock=self.clock)

    def txt_queries(self) -> int:
        return self.dns.queries.count((f"_mta-sts.{DOMAIN}", "TXT"))

    def stop(self) -> None:
        if self.https is not None:
            self.https.stop()
        self.dns.stop()


@pytest.fixture
def world(tmp_path):
    world = World(tmp_path)
    yield world
    world.stop()


# --- discovery and fetch ----------------------------------------------------------------------


async def test_enforce_policy_is_fetched_from_the_policy_host_found_by_the_relays_resolver(world):
    server = world.serve()
    policy = await world.sts().policy(DOMAIN)
    assert policy == Policy(DOMAIN, "20260101", "enforce", ("mail.example.org", "*.backup.example.org"), 604800,
                            world.clock.now, ENFORCE.decode())
    assert policy.expires == world.clock.now + 604800
    [request] = server.requests
    assert (request.method, request.path, request.headers["host"], request.sni) == ("GET", PATH, HOST, HOST)


async def test_matches_lists_exact_names_and_one_label_under_a_wildcard(world):
    world.serve()
    policy = await world.sts().policy(DOMAIN)
    assert policy.matches("mail.example.org")
    assert policy.matches("MAIL.Example.Org.")
    assert policy.matches("mx1.backup.example.org")
    assert not policy.matches("backup.example.org")          # the wildcard needs a label
    assert not policy.matches("a.b.backup.example.org")      # ... exactly one
    assert not policy.matches("mail.example.org.evil.net")
    assert not policy.matches("xmail.example.org")


async def test_testing_mode_and_lf_line_ends(world):
    world.serve(b"version: STSv1\nmode: testing\nmx: mail.example.org\nmax_age: 86400\n")
    policy = await world.sts().policy(DOMAIN)
    assert (policy.mode, policy.mx, policy.max_age) == ("testing", ("mail.example.org",), 86400)


async def test_a_txt_record_in_several_strings_is_one_record(world):
    world.txt('"v=STSv1; " "id=abc123;"')
    world.serve()
    assert (await world.sts().policy(DOMAIN)).id == "abc123"


async def test_no_txt_record_means_no_policy_and_no_https_request(world):
    world.txt()
    server = world.serve()
    sts = world.sts()
    assert await sts.policy(DOMAIN) is None
    assert server.requests == []
    assert sts.last_error(DOMAIN) is None


@pytest.mark.parametrize("records", [
    ['"v=STSv1; id=1"', '"v=STSv1; id=2"'],      # RFC 8461 3.1: not exactly one record
    ['"v=STSv1"'],                                # no id
    ['"v=STSv1; id=not-alphanumeric"'],
    ['"v=STSv10; id=1"'],
    ['"v=spf1 -all"'],
])
async def test_txt_records_that_announce_no_valid_policy_mean_none(world, records):
    world.txt(*records)
    server = world.serve()
    assert await world.sts().policy(DOMAIN) is None
    assert server.requests == []


async def test_unrelated_txt_records_beside_the_policy_are_ignored(world):
    world.txt('"v=spf1 -all"', '"v=STSv1; id=7"')
    world.serve()
    assert (await world.sts().policy(DOMAIN)).id == "7"


async def test_txt_outcomes_are_remembered_so_many_messages_cost_one_lookup(world):
    world.txt()
    world.serve()
    sts = world.sts()
    assert await sts.policy(DOMAIN) is None
    assert await sts.policy(DOMAIN) is None
    assert world.txt_queries() == 1
    world.txt('"v=STSv1; id=1"')
    world.clock.advance(301)  # a few minutes later the record is looked at again
    assert (await sts.policy(DOMAIN)).id == "1"
    assert world.txt_queries() == 2


async def test_positive_lookups_are_remembered_too(world):
    server = world.serve()
    sts = world.sts()
    for _ in range(5):
        assert (await sts.policy(DOMAIN)).mode == "enforce"
    assert world.txt_queries() == 1
    assert len(server.requests) == 1


async def test_concurrent_deliveries_share_one_lookup_and_one_fetch(world):
    server = world.serve(Response(ENFORCE, delay=0.2))
    sts = world.sts()
    policies = await asyncio.gather(*(sts.policy(DOMAIN) for _ in range(10)))
    assert {policy.id for policy in policies} == {"20260101"}
    assert world.txt_queries() == 1
    assert len(server.requests) == 1


async def test_a_domain_that_cannot_have_a_policy_costs_no_lookup(world):
    sts = world.sts()
    for domain in ("[192.0.2.1]", "localhost", "../../etc/passwd", "a/b.example", "", ".."):
        assert await sts.policy(domain) is None
        assert sts.cached(domain) is None
    assert world.dns.queries == []


# --- the cache ----------------------------------------------------------------------------------


async def test_a_policy_cached_on_disk_survives_a_restart_without_network(world):
    world.serve()
    await world.sts().policy(DOMAIN)
    [saved] = world.directory.iterdir()
    assert saved.name == "example.org.json"
    assert json.loads(saved.read_text())["id"] == "20260101"
    assert saved.stat().st_mode & 0o777 == 0o600
    world.https.stop()
    world.dns.stop()

    restarted = world.sts(resolver=world.resolver(lifetime=0.5))
    assert restarted.cached(DOMAIN).mode == "enforce"
    assert [policy.domain for policy in restarted.all_cached()] == [DOMAIN]
    policy = await restarted.policy(DOMAIN)  # DNS and HTTPS down: the cached policy stays in force
    assert policy.mx == ("mail.example.org", "*.backup.example.org")


async def test_a_damaged_cache_file_is_skipped(world):
    world.directory.mkdir()
    (world.directory / "example.org.json").write_text("{not json")
    (world.directory / "example.net.json").write_text(json.dumps(
        {"id": "1", "fetched": world.clock.now, "text": "version: STSv1\nmode: bogus\n"}))
    (world.directory / "example.com.json").write_text(json.dumps(
        {"id": "1", "fetched": world.clock.now, "text": ENFORCE.decode()}))
    sts = world.sts()
    assert sts.cached("example.org") is None
    assert sts.cached("example.net") is None
    assert sts.cached("EXAMPLE.com.").mode == "enforce"


async def test_a_changed_txt_id_means_a_new_fetch(world):
    server = world.serve()
    sts = world.sts()
    assert (await sts.policy(DOMAIN)).mode == "enforce"
    server.routes[PATH] = Response(b"version: STSv1\nmode: testing\nmx: mx.example.org\nmax_age: 86400\n")
    world.clock.advance(301)
    assert (await sts.policy(DOMAIN)).mode == "enforce"  # same id: the cached policy, no fetch
    assert len(server.requests) == 1
    world.txt('"v=STSv1; id=20260202"')
    world.clock.advance(301)
    policy = await sts.policy(DOMAIN)
    assert (policy.id, policy.mode, policy.mx) == ("20260202", "testing", ("mx.example.org",))
    assert len(server.requests) == 2
    assert world.sts().cached(DOMAIN).id == "20260202"  # and on disk


async def test_a_failed_fetch_keeps_the_unexpired_cached_policy(world):
    server = world.serve()
    sts = world.sts()
    await sts.policy(DOMAIN)
    server.routes[PATH] = Response(b"oops", status=500)
    world.txt('"v=STSv1; id=20260202"')
    world.clock.advance(301)
    policy = await sts.policy(DOMAIN)
    assert (policy.id, policy.mode) == ("20260101", "enforce")
    assert sts.last_error(DOMAIN).result_type == "sts-policy-fetch-error"
    assert "500" in sts.last_error(DOMAIN).text
    # the failure is remembered with the lookup: the next message does not wait for the server again
    await sts.policy(DOMAIN)
    assert len(server.requests) == 2


async def test_a_policy_gone_from_dns_stays_in_force_until_it_expires(world):
    world.serve()
    sts = world.sts()
    await sts.policy(DOMAIN)
    world.txt()
    world.clock.advance(301)
    assert (await sts.policy(DOMAIN)).mode == "enforce"  # an attacker who strips the TXT record gains nothing
    world.clock.advance(604800)
    assert await sts.policy(DOMAIN) is None


async def test_an_expired_policy_that_cannot_be_fetched_again_is_no_policy(world):
    server = world.serve(b"version: STSv1\nmode: enforce\nmx: mail.example.org\nmax_age: 86400\n")
    sts = world.sts()
    await sts.policy(DOMAIN)
    assert sts.last_error(DOMAIN) is None
    server.routes.clear()
    world.clock.advance(86401)
    assert await sts.policy(DOMAIN) is None
    error = sts.last_error(DOMAIN)
    assert isinstance(error, PolicyError)
    assert error.result_type == "sts-policy-fetch-error"
    assert "404" in error.text
    assert sts.cached(DOMAIN) is not None  # still shown, with its expiry in the past


# --- what the policy server may not do ------------------------------------------------------------


async def fetch_error(world, response: Response, timeout: float = 5.0) -> PolicyError:
    server = world.serve(response)
    sts = world.sts(timeout=timeout)
    assert await sts.policy(DOMAIN) is None
    assert len(server.requests) == 1
    return sts.last_error(DOMAIN)


async def test_a_redirect_is_not_followed(world):
    error = await fetch_error(world, Response(status=301, headers={"Location": "https://evil.example.net/p"}))
    assert error.result_type == "sts-policy-fetch-error"
    assert "301" in error.text and "redirect" in error.text
    assert [request.path for request in world.https.requests] == [PATH]


async def test_not_found_is_a_fetch_error(world):
    world.serve()
    world.https.routes.clear()
    sts = world.sts()
    assert await sts.policy(DOMAIN) is None
    assert sts.last_error(DOMAIN).result_type == "sts-policy-fetch-error"
    assert "404" in sts.last_error(DOMAIN).text


@pytest.mark.parametrize("content_type", ["text/html", "application/octet-stream", "text/plain-ish"])
async def test_a_policy_that_is_not_text_plain_is_refused(world, content_type):
    error = await fetch_error(world, Response(ENFORCE, content_type=content_type))
    assert error.result_type == "sts-policy-fetch-error"
    assert content_type in error.text


async def test_text_plain_with_a_charset_is_fine(world):
    world.serve(Response(ENFORCE, content_type="Text/Plain; charset=utf-8"))
    assert (await world.sts().policy(DOMAIN)).mode == "enforce"


async def test_an_oversized_policy_is_refused(world):
    body = ENFORCE + b"x-padding: " + b"x" * 70000 + b"\r\n"
    error = await fetch_error(world, Response(body))
    assert error.result_type == "sts-policy-fetch-error"
    assert "64 KiB" in error.text


async def test_an_endless_policy_without_length_is_cut_off(world):
    def endless():
        yield ENFORCE
        while True:
            yield b"x-padding: " + b"x" * 4000 + b"\n"

    started = time.monotonic()
    error = await fetch_error(world, Response(endless()))
    assert "64 KiB" in error.text
    assert time.monotonic() - started < 3


async def test_a_stalling_server_times_out_quickly(world):
    started = time.monotonic()
    error = await fetch_error(world, Response(stall=True), timeout=0.5)
    assert time.monotonic() - started < 2
    assert error.result_type == "sts-policy-fetch-error"
    assert "did not answer within 0.5 s" in error.text


async def test_a_policy_host_without_address_is_a_fetch_error(world):
    world.dns.records.pop((HOST, "A"))
    world.dns.records[(HOST, "TXT")] = ['"unrelated"']  # the name exists, with no address
    sts = world.sts()
    assert await sts.policy(DOMAIN) is None
    assert sts.last_error(DOMAIN).result_type == "sts-policy-fetch-error"
    assert f"{HOST} has no address" in sts.last_error(DOMAIN).text


async def test_nothing_listening_is_a_fetch_error(world):
    sts = world.sts()
    assert await sts.policy(DOMAIN) is None
    assert sts.last_error(DOMAIN).result_type == "sts-policy-fetch-error"
    assert "cannot connect" in sts.last_error(DOMAIN).text


async def test_a_certificate_for_another_name_is_webpki_invalid(world):
    server = world.serve(context=world.authority.server_context("www.example.org"))
    sts = world.sts()
    assert await sts.policy(DOMAIN) is None
    error = sts.last_error(DOMAIN)
    assert error.result_type == "sts-webpki-invalid"
    assert "www.example.org" in error.text
    assert server.requests == []  # nothing is asked of a host that is not the policy host


async def test_a_wildcard_certificate_for_the_domain_is_fine(world):
    world.serve(context=world.authority.server_context("*.example.org"))
    assert (await world.sts().policy(DOMAIN)).mode == "enforce"


async def test_a_certificate_from_an_untrusted_authority_is_webpki_invalid(world, tmp_path):
    (tmp_path / "other").mkdir()
    server = world.serve(context=Authority(tmp_path / "other", "Somebody Else").server_context(HOST))
    sts = world.sts()
    assert await sts.policy(DOMAIN) is None
    assert sts.last_error(DOMAIN).result_type == "sts-webpki-invalid"
    assert "does not verify" in sts.last_error(DOMAIN).text
    assert server.requests == []


async def test_a_self_signed_certificate_is_webpki_invalid(world, tmp_path):
    (tmp_path / "self").mkdir()
    cert, key = self_signed(tmp_path / "self", HOST)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    world.serve(context=context)
    sts = world.sts()
    assert await sts.policy(DOMAIN) is None
    assert sts.last_error(DOMAIN).result_type == "sts-webpki-invalid"


async def test_a_malformed_policy_is_policy_invalid(world):
    world.serve(b"version: STSv1\nmode: enforce\nmax_age: 86400\n")  # enforce without mx
    sts = world.sts()
    assert await sts.policy(DOMAIN) is None
    error = sts.last_error(DOMAIN)
    assert error.result_type == "sts-policy-invalid"
    assert "without any mx" in error.text


async def test_a_policy_that_is_not_utf8_is_policy_invalid(world):
    world.serve(b"version: STSv1\nmode: enforce\nmx: \xff\xfe\nmax_age: 86400\n")
    sts = world.sts()
    assert await sts.policy(DOMAIN) is None
    assert sts.last_error(DOMAIN).result_type == "sts-policy-invalid"


async def test_a_success_clears_the_last_error(world):
    server = world.serve(Response(b"", status=503))
    sts = world.sts()
    assert await sts.policy(DOMAIN) is None
    assert sts.last_error(DOMAIN) is not None
    server.routes[PATH] = Response(ENFORCE)
    world.clock.advance(301)
    assert (await sts.policy(DOMAIN)).mode == "enforce"
    assert sts.last_error(DOMAIN) is None


# --- refresh ------------------------------------------------------------------------------------


async def test_refresh_refetches_a_policy_close_to_expiry(world):
    server = world.serve(b"version: STSv1\nmode: enforce\nmx: mail.example.org\nmax_age: 172800\n")
    sts = world.sts()
    first = await sts.policy(DOMAIN)
    await sts.refresh()
    assert len(server.requests) == 1  # two days left: nothing to do
    world.clock.advance(100000)        # under a day left
    await sts.refresh()
    assert len(server.requests) == 2
    assert sts.cached(DOMAIN).fetched == world.clock.now > first.fetched
    assert world.sts().cached(DOMAIN).fetched == world.clock.now  # and on disk


async def test_refresh_refetches_when_the_id_changed(world):
    server = world.serve()
    sts = world.sts()
    await sts.policy(DOMAIN)
    world.txt('"v=STSv1; id=2"')
    server.routes[PATH] = Response(b"version: STSv1\nmode: none\nmax_age: 86400\n")
    await sts.refresh()
    assert (sts.cached(DOMAIN).id, sts.cached(DOMAIN).mode) == ("2", "none")
    assert (await sts.policy(DOMAIN)).mode == "none"  # the fresh lookup is used by deliveries too
    assert len(server.requests) == 2


async def test_refresh_drops_an_expired_policy_it_cannot_renew(world):
    server = world.serve(b"version: STSv1\nmode: enforce\nmx: mail.example.org\nmax_age: 3600\n")
    sts = world.sts()
    await sts.policy(DOMAIN)
    server.routes.clear()
    await sts.refresh()
    assert sts.cached(DOMAIN) is not None  # failed, but still valid for an hour
    assert sts.last_error(DOMAIN).result_type == "sts-policy-fetch-error"
    world.clock.advance(3601)
    await sts.refresh()
    assert sts.cached(DOMAIN) is None
    assert list(world.directory.iterdir()) == []


async def test_run_refreshes_until_cancelled(world):
    server = world.serve(b"version: STSv1\nmode: enforce\nmx: mail.example.org\nmax_age: 3600\n")
    sts = world.sts()
    await sts.policy(DOMAIN)
    task = asyncio.create_task(sts.run(interval=0.05))
    try:
        for _ in range(100):
            if len(server.requests) >= 3:
                break
            await asyncio.sleep(0.05)
        assert len(server.requests) >= 3
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_refresh_forgets_old_lookups_of_domains_without_a_policy(world):
    sts = world.sts()
    for number in range(20):
        assert await sts.policy(f"d{number}.example.net") is None
    await sts.refresh()
    assert len(sts._lookups) == 20  # still fresh
    world.clock.advance(301)
    await sts.refresh()
    assert sts._lookups == {} and sts._locks == {}


# --- parsing ------------------------------------------------------------------------------------


def test_parse_policy_ignores_unknown_keys_and_takes_the_first_of_a_repeated_one():
    policy = parse_policy(DOMAIN, "version: STSv1\nmode: testing\nmode: enforce\nfoo: bar\nmx:MX.Example.org.\n"
                                  "max_age:   600  \n\n", 1000.0, id="x")
    assert (policy.mode, policy.mx, policy.max_age, policy.id, policy.expires) == (
        "testing", ("mx.example.org",), 600, "x", 1600.0)


def test_mode_none_needs_no_mx():
    assert parse_policy(DOMAIN, "version: STSv1\nmode: none\nmax_age: 0\n", 0).mx == ()


@pytest.mark.parametrize("text, why", [
    ("mode: enforce\nmx: a.example.org\nmax_age: 60\n", "no version"),
    ("version: STSv2\nmode: enforce\nmx: a.example.org\nmax_age: 60\n", "not STSv1"),
    ("version: STSv1\nmode: strict\nmx: a.example.org\nmax_age: 60\n", "mode 'strict'"),
    ("version: STSv1\nmx: a.example.org\nmax_age: 60\n", "no mode"),
    ("version: STSv1\nmode: enforce\nmx: a.example.org\n", "no max_age"),
    ("version: STSv1\nmode: enforce\nmx: a.example.org\nmax_age: -1\n", "not a number"),
    ("version: STSv1\nmode: enforce\nmx: a.example.org\nmax_age: 31557601\n", "over the limit"),
    ("version: STSv1\nmode: testing\nmax_age: 60\n", "without any mx"),
    ("version: STSv1\nmode: enforce\nmx: a.*.example.org\nmax_age: 60\n", "not a host name"),
    ("version: STSv1\nmode: enforce\nmx: a.example.org\nmax_age: 60\n<html>\n", "line 5"),
    ("<html><body>Welcome</body></html>\n", "line 1"),
])
def test_malformed_policies(text, why):
    with pytest.raises(PolicyError) as caught:
        parse_policy(DOMAIN, text, 0)
    assert caught.value.result_type == "sts-policy-invalid"
    assert why in caught.value.text


def test_policy_domains_are_safe_file_names():
    assert policy_domain("Example.ORG.") == "example.org"
    assert policy_domain("bücher.example") == "xn--bcher-kva.example"
    for hostile in ("..", "../x.org", "x.org/..", "x..org", "-x.org", ".x.org", "x_y.org", "x.org\x00",
                    "[127.0.0.1]", "localhost", "a" * 64 + ".org"):
        assert policy_domain(hostile) is None, hostile

