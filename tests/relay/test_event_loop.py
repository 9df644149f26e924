"""The event loop the daemon runs on: uvloop where it is installed, asyncio's own on request.

POSTERN_EVENT_LOOP=asyncio must really give the standard loop (it is how the two are
compared), the startup line must name the loop that runs, and a misspelt setting must be
refused rather than quietly run the other loop. On uvloop, the parts that reach below
the loop's public surface must still work: aiosmtpd's STARTTLS swaps the transport's
protocol, and the control API reads the Unix socket's peer credentials."""

from __future__ import annotations

import re
import ssl
import subprocess
import sys

import pytest

from relay.config import ConfigError
from relay.control.client import ControlClient
from relay.event_loop import choose_event_loop
from tests.support.certs import self_signed
from tests.support.relay import ROOT

uvloop = pytest.importorskip("uvloop")


def started_line(relay) -> str:
    [line] = re.findall(r"daemon started -- .*", relay.log())
    return line


def test_the_daemon_runs_on_uvloop_by_default_and_says_so(monkeypatch, make_relay, sink):
    monkeypatch.delenv("POSTERN_EVENT_LOOP", raising=False)
    relay = make_relay(sink.port)
    assert started_line(relay).endswith(", event loop uvloop")
    assert re.search(r", queue on \S+ \((one fsync a message|msg/ fsynced after its files)\), ", started_line(relay))
    relay.send("alice@example.net", ["bob@example.com"])
    [message] = sink.wait_for(1)
    assert message.recipients == ["bob@example.com"]


@pytest.mark.parametrize("setting", ["asyncio", " AsyncIO "])
def test_postern_event_loop_asyncio_gives_the_standard_loop(monkeypatch, make_relay, sink, setting):
    monkeypatch.setenv("POSTERN_EVENT_LOOP", setting)
    relay = make_relay(sink.port)
    assert started_line(relay).endswith(", event loop asyncio")
    relay.send("alice@example.net", ["bob@example.com"])
    assert len(sink.wait_for(1)) == 1


def test_postern_event_loop_uvloop_insists_on_it(monkeypatch, make_relay, sink):
    monkeypatch.setenv("POSTERN_EVENT_LOOP", "uvloop")
    relay = make_relay(sink.port)
    assert started_line(relay).endswith(", event loop uvloop")


def test_a_misspelt_setting_is_refused_before_anything_starts(tmp_path):
    daemon = subprocess.run(
        [sys.executable, "-m", "relay.daemon", "--config", str(tmp_path / "absent.yaml"),
         "--state-dir", str(tmp_path / "state"), "--socket", str(tmp_path / "control.sock")],
        cwd=ROOT, env={"POSTERN_EVENT_LOOP": "uvlop", "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=30,
    )
    assert daemon.returncode == 1
    assert "POSTERN_EVENT_LOOP='uvlop': expected asyncio or uvloop" in daemon.stderr
    assert not (tmp_path / "state").exists()


def test_without_uvloop_the_default_falls_back_and_insisting_is_refused(monkeypatch):
    monkeypatch.setitem(sys.modules, "uvloop", None)  # as if not installed: importing it raises ImportError
    assert choose_event_loop(None) == ("asyncio", None)
    assert choose_event_loop("") == ("asyncio", None)
    with pytest.raises(ConfigError, match="uvloop is not installed"):
        choose_event_loop("uvloop")


def test_starttls_and_the_control_api_work_on_uvloop(monkeypatch, make_relay, sink, tmp_path):
    """aiosmtpd's STARTTLS hands the TCP transport to asyncio's TLS protocol, and the control API
    asks the socket who is calling: both go below the loop's documented surface."""
    monkeypatch.setenv("POSTERN_EVENT_LOOP", "uvloop")
    cert, key = self_signed(tmp_path)
    relay = make_relay(sink.port, tls={"cert_file": str(cert), "key_file": str(key)})
    assert started_line(relay).endswith(", event loop uvloop")
    context = ssl.create_default_context(cafile=str(cert))
    with relay.smtp() as client:
        assert client.starttls(context=context)[0] == 220
        client.ehlo("client.example.net")
        assert client.sock.version() in ("TLSv1.2", "TLSv1.3")
        assert client.sendmail("alice@example.net", ["bob@example.com"], b"Subject: s\r\n\r\nsecret\r\n") == {}
    [message] = sink.wait_for(1)
    assert b"(using TLSv1." in message.content
    with ControlClient(str(relay.workdir / "control.sock")) as control:
        assert control.call("io.postern.Queue.List")["messages"] == []
