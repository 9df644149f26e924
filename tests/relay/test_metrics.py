"""The Prometheus endpoint of a real daemon, scraped over real HTTP and checked against the control API."""

from __future__ import annotations

import base64
import gzip
import http.client
import os
import socket
import ssl
import subprocess
import sys
import time

import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from relay.control.client import ControlClient
from relay.metrics import refusal_reason
from tests.support.certs import self_signed
from tests.support.net import free_port, wait_until
from tests.support.relay import ROOT

# Deferred mail waits minutes: nothing moves between a scrape and the control API's answer.
SLOW_RETRIES = {"minimal_backoff_time": 300, "maximal_backoff_time": 600}


def get(port: int, path: str = "/metrics", auth: tuple[str, str] | None = None, method: str = "GET",
        headers: dict | None = None, context: ssl.SSLContext | None = None) -> http.client.HTTPResponse:
    connection = (http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=context) if context
                  else http.client.HTTPConnection("127.0.0.1", port, timeout=10))
    headers = dict(headers or {})
    if auth:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    connection.request(method, path, headers=headers)
    response = connection.getresponse()
    response.body = response.read()
    connection.close()
    return response


def scrape(port: int, **kwargs) -> dict:
    """{(sample name, frozenset of labels): value} of one scrape, after checking it answered 200."""
    response = get(port, **kwargs)
    assert response.status == 200, response.body
    assert response.getheader("Content-Type").startswith("text/plain; version=0.0.4")
    samples = {}
    for family in text_string_to_metric_families(response.body.decode()):
        assert family.documentation, f"{family.name} has no HELP line"
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: dict, name: str, **labels) -> float:
    return samples[(name, frozenset(labels.items()))]


def total(samples: dict, name: str, **labels) -> float:
    wanted = set(labels.items())
    return sum(v for (n, l), v in samples.items() if n == name and wanted <= l)


def control(relay, method: str, **parameters) -> dict:
    with ControlClient(str(relay.workdir / "control.sock")) as client:
        return client.call(method, **parameters)


def metrics_relay(make_relay, next_hop_port: int, **metrics):
    """A relay with its endpoint on a free port. Between choosing the port and binding it, another
    program's outgoing connection may take it (the ports come from the same range): then another port."""
    for attempt in range(3):
        port = free_port()
        try:
            relay = make_relay(next_hop_port, metrics={"listen": f"127.0.0.1:{port}", **metrics}, queue=SLOW_RETRIES)
        except AssertionError as error:
            if "address already in use" in str(error) and attempt < 2:
                continue
            raise
        relay.metrics_port = port
        return relay


def test_scrape_agrees_with_the_control_api(make_relay, sink):
    sink.rcpt_replies["later@example.com"] = "451 4.3.0 try again later"
    sink.rcpt_replies["gone@example.com"] = "550 5.1.1 no such user"
    relay = metrics_relay(make_relay, sink.port)
    relay.send("alice@example.net", ["ok@example.com", "later@example.com", "gone@example.com"])
    relay.send("bob@example.net", ["later@example.com"], "Subject: two\r\n\r\n2\r\n")
    # the first message's recipients, the second's deferral and the sender's non-delivery notice
    relay.wait_log(r"status=deferred", count=2)
    relay.wait_log(r"status=bounced")
    relay.wait_log(r"status=sent", count=2)
    wait_until(lambda: control(relay, "io.postern.Status.Get")["status"]["counters"]["delivered"] == 2, 10,
               what="the notice's delivery to be counted")

    samples = scrape(relay.metrics_port)
    status = control(relay, "io.postern.Status.Get")["status"]
    counters = status["counters"]
    assert counters == {"received": 2, "delivered": 2, "deferred": 2, "bounced": 1, "rejected": 0}
    assert value(samples, "postern_messages_received_total") == counters["received"]
    assert value(samples, "postern_recipients_delivered_total") == counters["delivered"]
    assert value(samples, "postern_recipients_deferred_total") == counters["deferred"]
    assert value(samples, "postern_recipients_bounced_total") == counters["bounced"]
    assert value(samples, "postern_start_time_seconds") == pytest.approx(status["started"])

    # queue sizes, by state and as qshape shows them
    for state in ("active", "deferred", "hold"):
        assert value(samples, "postern_queue_messages", state=state) == status["queue"][state]
    assert status["queue"]["deferred"] == 2
    assert total(samples, "postern_queue_recipients", state="deferred") == 2
    assert value(samples, "postern_queue_recipients", state="deferred", age_minutes="5") == 2
    assert value(samples, "postern_queue_oldest_message_age_seconds") == pytest.approx(status["oldest_age"], abs=2)
    summary = control(relay, "io.postern.Queue.Summary")
    assert [row["destination"] for row in summary["rows"]] == ["example.com"]
    for row in summary["rows"]:
        for bound, count in zip([*map(str, summary["bucket_minutes"]), f"{summary['bucket_minutes'][-1]}+"],
                                row["buckets"]):
            assert value(samples, "postern_queue_destination_recipients", destination=row["destination"],
                         age_minutes=bound) == count
    assert value(samples, "postern_queue_destinations") == len(summary["rows"])

    # per next hop: each recipient's delay, and the last error as the status shows it
    hop = f"127.0.0.1:{sink.port} (no MX)"
    for outcome in ("sent", "deferred", "bounced"):
        count = value(samples, "postern_delivery_delay_seconds_count", next_hop=hop, status=outcome)
        assert count == counters["delivered" if outcome == "sent" else outcome]
        assert value(samples, "postern_delivery_delay_seconds_bucket", next_hop=hop, status=outcome,
                     le="+Inf") == count
    assert value(samples, "postern_delivery_delay_seconds_bucket", next_hop=hop, status="sent", le="10.0") == 2
    [last] = status["last_errors"]
    assert last["destination"] == hop
    assert value(samples, "postern_next_hop_last_error_timestamp_seconds", next_hop=hop,
                 reply=last["reply"]) == pytest.approx(last["time"])

    # TLS outcomes as Tls.Summary counts them, and the file system under the queue
    tls = control(relay, "io.postern.Tls.Summary", hours=24)["domains"]
    assert [row["domain"] for row in tls] == ["127.0.0.1"]
    for kind in ("dane", "mta_sts", "verified", "unverified", "plain", "failed"):
        assert value(samples, "postern_tls_sessions_24h", destination="127.0.0.1", security=kind) == tls[0][kind]
    assert tls[0]["plain"] >= 1
    usage = os.statvfs(relay.state_dir)
    assert value(samples, "postern_queue_filesystem_size_bytes") == usage.f_blocks * usage.f_frsize
    assert 0 < value(samples, "postern_queue_filesystem_avail_bytes") <= usage.f_blocks * usage.f_frsize


def test_refusals_are_counted_by_reason(make_relay, sink):
    relay = metrics_relay(make_relay, sink.port)
    with relay.smtp(source="127.0.0.2") as client:  # not in my_networks: it may not relay out
        client.mail("alice@example.net")
        assert client.rcpt("someone@elsewhere.org")[0] == 554
        assert client.rcpt("<>")[0] == 501
        assert client.rcpt("other@elsewhere.org")[0] == 554
        assert client.docmd("XYZZY")[0] == 500
    relay.wait_log(r"NOQUEUE: reject: UNKNOWN")
    samples = scrape(relay.metrics_port)
    assert value(samples, "postern_smtp_refusals_total", stage="RCPT", reason="relay_denied", code="554") == 2
    assert value(samples, "postern_smtp_refusals_total", stage="RCPT", reason="bad_recipient_syntax", code="501") == 1
    assert value(samples, "postern_smtp_refusals_total", stage="UNKNOWN", reason="other", code="500") == 1
    rejected = control(relay, "io.postern.Status.Get")["status"]["counters"]["rejected"]
    assert total(samples, "postern_smtp_refusals_total") == rejected == 4


def test_refusal_reasons_are_the_relays_own_reply_names():
    assert refusal_reason("554 5.7.1 <x@elsewhere.org>: Relay access denied") == "relay_denied"
    assert refusal_reason("451 4.3.2 Service temporarily unavailable, try again later") == "domain_paused"
    assert refusal_reason("550 5.1.1 <a@example.com>: Recipient address rejected: undeliverable address: "
                          "550 no such user") == "recipient_undeliverable"
    assert refusal_reason("550 5.7.1 Relay access denied: Microsoft 365 tenant check failed: "
                          "Relay access denied") == "tenant_refused"
    assert refusal_reason("500 5.5.2 Error: command not recognized") == "other"


def password_file(tmp_path, text: str = "s3cret pass\n", mode: int = 0o640):
    path = tmp_path / "metrics.password"
    path.write_text(text)
    path.chmod(mode)
    return str(path)


def test_basic_auth_is_required_when_configured(make_relay, sink, tmp_path):
    relay = metrics_relay(make_relay, sink.port, username="prometheus", password_file=password_file(tmp_path))
    port = relay.metrics_port
    for auth in (None, ("prometheus", "wrong"), ("prometheus", "s3cret pass!"), ("root", "s3cret pass"),
                 ("prometheus", "")):
        response = get(port, auth=auth)
        assert response.status == 401, auth
        assert response.getheader("WWW-Authenticate").startswith("Basic realm=")
        assert b"postern_" not in response.body
    assert get(port, headers={"Authorization": "Basic !!!not-base64"}).status == 401
    assert get(port, headers={"Authorization": "Bearer s3cret pass"}).status == 401
    assert get(port, "/", auth=("prometheus", "wrong")).status == 401  # no path is told apart before the login
    assert get(port, "/", auth=("prometheus", "s3cret pass")).status == 404
    assert "postern_build_info" in str(scrape(port, auth=("prometheus", "s3cret pass")))


def test_a_reload_reads_the_password_again(make_relay, sink, tmp_path):
    path = password_file(tmp_path, "first\n")
    relay = metrics_relay(make_relay, sink.port, username="prometheus", password_file=path)
    assert get(relay.metrics_port, auth=("prometheus", "first")).status == 200
    with open(path, "w") as file:
        file.write("second\n")
    relay.reload()
    relay.wait_log(r"reload -- configuration")
    assert get(relay.metrics_port, auth=("prometheus", "first")).status == 401
    assert get(relay.metrics_port, auth=("prometheus", "second")).status == 200


def test_https_with_its_own_certificate(make_relay, sink, tmp_path):
    cert, key = self_signed(tmp_path, "metrics.example.com")
    relay = metrics_relay(make_relay, sink.port, cert_file=str(cert), key_file=str(key))
    context = ssl.create_default_context(cafile=str(cert))
    context.check_hostname = False
    samples = scrape(relay.metrics_port, context=context)
    expiry = value(samples, "postern_certificate_expiry_timestamp_seconds", certificate="mta.metrics.cert_file",
                   file=str(cert))
    assert time.time() < expiry < time.time() + 2 * 86400  # self_signed's certificates last a day
    with pytest.raises((ssl.SSLError, ConnectionError, http.client.HTTPException)):
        get(relay.metrics_port)  # plain HTTP to an HTTPS endpoint gets no metrics


def test_http_oddities(make_relay, sink):
    relay = metrics_relay(make_relay, sink.port)
    port = relay.metrics_port
    assert get(port, method="POST").status == 405
    head = get(port, method="HEAD")
    assert head.status == 200 and head.body == b"" and int(head.getheader("Content-Length")) > 0
    zipped = get(port, headers={"Accept-Encoding": "gzip"})
    assert zipped.getheader("Content-Encoding") == "gzip"
    assert b"postern_build_info" in gzip.decompress(zipped.body)
    assert get(port, "/metrics?x=1").status == 200
    # keep-alive: two requests on one connection
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    for _ in range(2):
        connection.request("GET", "/metrics")
        response = connection.getresponse()
        assert response.status == 200 and b"postern_queue_messages" in response.read()
    connection.close()
    # a request head beyond the limit, and garbage: answered 4xx or closed, and the endpoint still serves
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        raw.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Junk: " + b"a" * 20000 + b"\r\n\r\n")
        assert raw.recv(100).startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        raw.sendall(b"\x16\x03\x01 not http at all\r\n\r\n")  # a TLS hello to a plain endpoint, say
        assert raw.recv(100).startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert get(port).status == 200


def listening_ports(relay) -> set[int]:
    process = psutil.Process(relay.process.pid)
    return {c.laddr.port for c in process.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN}


def test_off_by_default(relay):
    assert relay.mta.get("metrics") is None
    assert listening_ports(relay) == {relay.port}
    assert "postern/metrics" not in relay.log()


def test_reload_turns_it_on_moves_it_and_turns_it_off(relay):
    port = free_port()
    relay.reload({**relay.mta, "metrics": {"listen": f"127.0.0.1:{port}"}})
    relay.wait_log(rf"metrics: serving /metrics on 127.0.0.1:{port}")
    assert get(port).status == 200
    other = free_port()
    relay.reload({**relay.mta, "metrics": {"listen": f"127.0.0.1:{other}"}})
    relay.wait_log(rf"metrics: serving /metrics on 127.0.0.1:{other}")
    assert get(other).status == 200
    assert listening_ports(relay) == {relay.port, other}
    # an address already taken: the reload is refused and the endpoint stays where it was
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        relay.reload({**relay.mta, "metrics": {"listen": f"127.0.0.1:{taken.getsockname()[1]}"}})
        relay.wait_log(r"reload refused: mta.metrics.listen: cannot listen on")
    assert get(other).status == 200
    relay.reload({**relay.mta, "metrics": {"listen": ""}})
    relay.wait_log(rf"metrics: stopped listening on 127.0.0.1:{other}")
    wait_until(lambda: listening_ports(relay) == {relay.port}, 10, what="the endpoint to close")


def check(tmp_path, metrics: dict) -> subprocess.CompletedProcess:
    import yaml
    path = tmp_path / "check.yaml"
    path.write_text(yaml.safe_dump({"mta": {"hostname": "gw.example.com", "metrics": metrics}}))
    return subprocess.run([sys.executable, "-m", "relay.daemon", "--config", str(path), "--check"],
                          cwd=ROOT, capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("metrics, problem", [
    ({"listen": "0.0.0.0:9325"}, "mta.metrics.listen: 0.0.0.0:9325 is not a loopback address"),
    ({"listen": "[::]:9325"}, "mta.metrics.listen: [::]:9325 is not a loopback address"),
    ({"listen": "localhost:9325"}, "mta.metrics.listen: 'localhost:9325' is not an address and port"),
    ({"listen": "127.0.0.1:0"}, "mta.metrics.listen: 0 is not a port number"),
    ({"listen": "127.0.0.1:9325", "username": "prometheus"}, "mta.metrics.password_file: required with username"),
    ({"listen": "127.0.0.1:9325", "cert_file": "/etc/ssl/x.pem"}, "mta.metrics.key_file: required with cert_file"),
    ({"listen": "127.0.0.1:9325", "port": 9325}, "mta.metrics.port: unknown key"),
    ("127.0.0.1:9325", "mta.metrics: must be a mapping"),
])
def test_a_bad_section_is_refused_by_its_field(tmp_path, metrics, problem):
    result = check(tmp_path, metrics)
    assert result.returncode == 1
    assert problem in result.stderr, result.stderr


def test_the_password_file_is_checked(tmp_path):
    result = check(tmp_path, {"listen": "192.0.2.1:9325", "username": "prometheus",
                              "password_file": password_file(tmp_path, mode=0o644)})
    assert "mta.metrics.password_file:" in result.stderr and "readable by every user" in result.stderr
    good = {"listen": "192.0.2.1:9325", "username": "prometheus", "password_file": password_file(tmp_path)}
    assert check(tmp_path, good).returncode == 0  # beyond loopback with a login is allowed


def test_an_empty_password_file_stops_the_start(make_relay, sink, tmp_path):
    relay = make_relay(sink.port, start=False,
                       metrics={"listen": f"127.0.0.1:{free_port()}", "username": "prometheus",
                                "password_file": password_file(tmp_path, text="\n")})
    with pytest.raises(AssertionError, match="must hold the password on one line"):
        relay.start()


async def test_a_scrape_of_a_large_queue_does_not_stall_the_loop(tmp_path):
    """The pass over 60,000 queued messages takes a good part of a second; SMTP sessions and deliveries
    on the same loop must go on meanwhile, not wait for the whole of it."""
    import asyncio

    from relay.config import parse_mta
    from relay.daemon import Relay
    from relay.queue.entry import Envelope, QueueEntry

    config, problems = parse_mta({"hostname": "gw.example.com", "authentication": {"check_inbound": False}})
    assert not problems
    relay = Relay(config, str(tmp_path / "postern.yaml"), str(tmp_path / "state"), str(tmp_path / "control.sock"))
    relay.store.open()
    now = time.time()
    for number in range(60000):
        envelope = Envelope(id=f"{number:016X}", sender="a@example.net", arrival=now - number * 5, size=1000,
                            recipients=[f"r{number % 7}@d{number % 3000}.example", f"s@d{number % 5}.org"])
        relay.scheduler.entries[envelope.id] = QueueEntry.new(envelope)

    gaps = []

    async def ticking():
        while True:
            before = time.perf_counter()
            await asyncio.sleep(0.005)
            gaps.append(time.perf_counter() - before)

    ticker = asyncio.get_running_loop().create_task(ticking())
    await asyncio.sleep(0.05)
    started = time.perf_counter()
    text = (await relay.metrics.render()).decode()
    took = time.perf_counter() - started
    await asyncio.sleep(0.05)  # the ticker notes the gap it is in
    ticker.cancel()
    assert 'postern_queue_messages{state="active"} 60000.0' in text
    assert 'postern_queue_destination_recipients{age_minutes="1280+",destination="(other)"}' in text
    assert took > 0.1, "too small a queue to show anything"
    assert max(gaps) < took / 2, f"the loop stood still for {max(gaps):.3f} s of a {took:.3f} s scrape"
