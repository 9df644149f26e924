"""Status.Get's certificates and disk: the figures the console warns on, read as the Prometheus endpoint reads them."""

import os
import shutil
import ssl
import subprocess
import sys
import time

import varlink
from cryptography import x509

from relay.control.client import ControlClient
from tests.relay.test_metrics import scrape, value
from tests.support.certs import self_signed
from tests.support.net import free_port


def status_of(relay) -> dict:
    with ControlClient(str(relay.workdir / "control.sock")) as client:
        return client.call("io.postern.Status.Get")["status"]


def test_certificates_and_disk_agree_with_the_metrics(make_relay, sink, tmp_path):
    (tmp_path / "smtp").mkdir()
    (tmp_path / "metrics").mkdir()
    smtp_cert, smtp_key = self_signed(tmp_path / "smtp", days=5)
    metrics_cert, metrics_key = self_signed(tmp_path / "metrics", "metrics.example.com", days=200)
    port = free_port()
    relay = make_relay(sink.port, tls={"cert_file": str(smtp_cert), "key_file": str(smtp_key)},
                       metrics={"listen": f"127.0.0.1:{port}", "cert_file": str(metrics_cert),
                                "key_file": str(metrics_key)})
    status = status_of(relay)
    not_after = x509.load_pem_x509_certificate(smtp_cert.read_bytes()).not_valid_after_utc.timestamp()
    assert status["certificates"] == [
        {"certificate": "mta.tls.cert_file", "file": str(smtp_cert), "expires": not_after},
        {"certificate": "mta.metrics.cert_file", "file": str(metrics_cert),
         "expires": x509.load_pem_x509_certificate(metrics_cert.read_bytes()).not_valid_after_utc.timestamp()}]
    assert 4.9 * 86400 < not_after - time.time() < 5 * 86400

    context = ssl.create_default_context(cafile=str(metrics_cert))
    context.check_hostname = False
    samples = scrape(port, context=context)
    assert value(samples, "postern_certificate_expiry_timestamp_seconds", certificate="mta.tls.cert_file",
                 file=str(smtp_cert)) == not_after
    disk = status["disk"]
    usage = shutil.disk_usage(relay.state_dir)
    assert disk["size"] == usage.total == value(samples, "postern_queue_filesystem_size_bytes")
    assert abs(disk["free"] - usage.free) < 64 * 2**20  # other tests write meanwhile
    assert abs(disk["files_free"] - os.statvfs(relay.state_dir).f_favail) < 10000

    printed = subprocess.run([sys.executable, "-m", "relay.ctl", "--socket", str(relay.workdir / "control.sock"),
                              "status"], capture_output=True, text=True, timeout=30).stdout
    assert f"certificate mta.tls.cert_file ({smtp_cert}): expires in 4d" in printed
    assert "GiB free of" in printed


def test_a_renewed_certificate_is_read_again(make_relay, sink, tmp_path):
    cert, key = self_signed(tmp_path, days=2)
    relay = make_relay(sink.port, tls={"cert_file": str(cert), "key_file": str(key)})
    [before] = status_of(relay)["certificates"]
    assert before["expires"] - time.time() < 2 * 86400
    time.sleep(0.01)
    self_signed(tmp_path, days=365)  # written over the same files, without a reload
    [after] = status_of(relay)["certificates"]
    assert after["expires"] - time.time() > 364 * 86400


def test_no_certificate_and_an_unreadable_one_are_left_out(make_relay, sink, tmp_path):
    relay = make_relay(sink.port)
    status = status_of(relay)
    assert status["certificates"] == [] and status["disk"]["size"] > 0
    cert, key = self_signed(tmp_path, days=30)
    relay.reload({**relay.mta, "tls": {"cert_file": str(cert), "key_file": str(key)}})
    relay.wait_log(r"reload -- configuration")
    assert len(status_of(relay)["certificates"]) == 1
    cert.write_text("not a certificate")  # damaged after the relay loaded it
    assert status_of(relay)["certificates"] == []


def test_a_third_party_varlink_client_reads_them_by_the_interface(make_relay, sink, tmp_path):
    cert, key = self_signed(tmp_path, days=5)
    relay = make_relay(sink.port, tls={"cert_file": str(cert), "key_file": str(key)})
    with varlink.Client(address=f"unix:{relay.workdir / 'control.sock'}") as client:
        with client.open("io.postern.Status") as interface:  # parses io.postern.Status.varlink
            status = interface.Get()["status"]
    assert [row["certificate"] for row in status["certificates"]] == ["mta.tls.cert_file"]
    assert set(status["disk"]) == {"free", "size", "files_free"}
