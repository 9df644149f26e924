"""Certificate and key files that are not regular files: a FIFO, a directory, a device.

OpenSSL would wait forever on a FIFO nobody writes to, with the daemon's event loop (or
`--check`) stuck behind it. Each is refused at once, naming the field.
"""

import os
import subprocess
import sys

import pytest

from relay.control.client import ControlClient
from tests.support.certs import self_signed
from tests.support.relay import ROOT


def check(tmp_path, tls: dict) -> subprocess.CompletedProcess:
    import yaml

    path = tmp_path / "postern.yaml"
    path.write_text(yaml.safe_dump({"mta": {"hostname": "gw.example.com", "tls": tls}}))
    return subprocess.run(
        [sys.executable, "-m", "relay.daemon", "--config", str(path), "--check",
         "--state-dir", str(tmp_path / "state"), "--socket", str(tmp_path / "control.sock")],
        cwd=ROOT, capture_output=True, text=True, timeout=30,  # a FIFO opened for reading would never return
    )


@pytest.fixture
def pem(tmp_path):
    cert, key = self_signed(tmp_path)
    fifo = tmp_path / "fifo.pem"
    os.mkfifo(fifo)
    return {"cert": str(cert), "key": str(key), "fifo": str(fifo), "dir": str(tmp_path), "device": "/dev/zero"}


@pytest.mark.parametrize("field, kind, tls", [
    ("cert_file", "a FIFO", {"cert_file": "fifo", "key_file": "key"}),
    ("key_file", "a FIFO", {"cert_file": "cert", "key_file": "fifo"}),
    ("cert_file", "a directory", {"cert_file": "dir", "key_file": "key"}),
    ("key_file", "a device", {"cert_file": "cert", "key_file": "device"}),
    ("client_cert_file", "a FIFO", {"client_cert_file": "fifo", "client_key_file": "key"}),
    ("client_key_file", "a FIFO", {"client_cert_file": "cert", "client_key_file": "fifo"}),
    ("ca_file", "a FIFO", {"ca_file": "fifo"}),
])
def test_check_refuses_a_file_that_is_not_a_regular_file(tmp_path, pem, field, kind, tls):
    tls = {name: pem[value] for name, value in tls.items()}
    result = check(tmp_path, tls)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"postern-relay: mta.tls.{field}: {tls[field]} is {kind}, not a regular file: name the PEM file itself"
    ]


def test_check_still_accepts_the_regular_files(tmp_path, pem):
    result = check(tmp_path, {"cert_file": pem["cert"], "key_file": pem["key"], "ca_file": pem["cert"]})
    assert result.returncode == 0, result.stderr


def test_a_reload_naming_a_fifo_is_refused_and_the_daemon_keeps_serving(make_relay, sink, pem):
    relay = make_relay(sink.port, tls={"cert_file": pem["cert"], "key_file": pem["key"]})
    relay.reload({**relay.mta, "tls": {"cert_file": pem["fifo"], "key_file": pem["key"]}})
    [line] = relay.wait_log(r"reload refused: (.*)")
    assert line == f"mta.tls.cert_file: {pem['fifo']} is a FIFO, not a regular file: name the PEM file itself"
    with ControlClient(str(relay.workdir / "control.sock")) as client:
        assert client.call("io.postern.Status.Get")["status"]["tls"]
    with relay.smtp() as client:
        assert client.has_extn("starttls")  # the certificate in force stays
    relay.send("alice@example.net", ["bob@example.com"])
    sink.wait_for(1)
