"""The control API on its real Unix socket, against a real daemon whose queue was built over SMTP."""

import json
import re
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import varlink
import yaml

from relay.config_file import ConfigFile
from relay.control.client import ControlClient, ControlError
from relay.ctl import main as ctl_main
from tests.support.control_socket import raw_exchange, replies
from tests.support.net import wait_until

CTL = [sys.executable, "-m", "relay.ctl"]


@pytest.fixture
def down_relay(queued_relay):
    return queued_relay


def ctl(relay, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(CTL + ["--socket", str(relay.socket), *args], capture_output=True, text=True, timeout=30)


def queue_ids(relay) -> list[str]:
    with ControlClient(str(relay.socket)) as client:
        return [m["id"] for m in client.call("io.postern.Queue.List")["messages"]]


def test_status_reports_counters_queue_and_last_error(down_relay):
    with ControlClient(str(down_relay.socket)) as client:
        status = client.call("io.postern.Status.Get")["status"]
    assert status["counters"]["received"] == 3
    assert status["queue"]["total"] == 3
    assert status["queue"]["deferred"] + status["queue"]["active"] == 3
    assert status["listeners"] == [f"127.0.0.1:{down_relay.port}"]
    assert status["receiving_processes"] == []  # the tests' daemons receive in themselves
    assert status["tls"] is False
    assert status["oldest_age"] >= 0
    assert any("Connection refused" in e["reply"] for e in status["last_errors"])


def test_list_filters_sorts_and_pages_without_losing_messages(down_relay):
    with ControlClient(str(down_relay.socket)) as client:
        everything = client.call("io.postern.Queue.List")
        assert everything["total"] == 3 and everything["cursor"] is None
        partner = client.call("io.postern.Queue.List", filter={"domain": "partner.org"})
        assert [m["subject"] for m in partner["messages"]] == ["two"]
        eve = client.call("io.postern.Queue.List", filter={"sender": "EVE@"})
        assert [m["sender"] for m in eve["messages"]] == ["eve@example.net"]
        by_size = client.call("io.postern.Queue.List", sort="size", reverse=True)
        sizes = [m["size"] for m in by_size["messages"]]
        assert sizes == sorted(sizes, reverse=True)
        seen, cursor = [], None
        while True:
            page = client.call("io.postern.Queue.List", limit=1, cursor=cursor)
            assert len(page["messages"]) == 1
            seen += [m["id"] for m in page["messages"]]
            cursor = page["cursor"]
            if cursor is None:
                break
        assert seen == [m["id"] for m in everything["messages"]]
        with pytest.raises(ControlError) as error:
            client.call("io.postern.Queue.List", filter={"state": "frozen"})
        assert error.value.name == "io.postern.Queue.InvalidFilter"
        assert error.value.parameters["field"] == "state"


def test_show_gives_envelope_headers_and_per_recipient_state(down_relay):
    with ControlClient(str(down_relay.socket)) as client:
        [message] = client.call("io.postern.Queue.List", filter={"domain": "partner.org"})["messages"]
        shown = client.call("io.postern.Queue.Show", id=message["id"])
        with pytest.raises(ControlError) as error:
            client.call("io.postern.Queue.Show", id="0000000000000000")
    assert error.value.name == "io.postern.Queue.MessageNotFound"
    assert "Subject: two" in shown["headers"] and "Received: from" in shown["headers"]
    assert "\r\n\r\n" not in shown["headers"], "only the header section, never the body"
    recipients = shown["message"]["recipients"]
    assert [r["address"] for r in recipients] == ["carol@partner.org", "dave@partner.org"]
    assert all(r["status"] == "deferred" and r["attempts"] >= 1 and r["dsn"].startswith("4.") for r in recipients)


def test_show_with_body_gives_the_decoded_text_and_reads_only_the_start_of_a_big_message(down_relay):
    mime = ("Subject: report\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
            "--b\r\nContent-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
            "Gr=FC=DFe aus Z=FCrich\r\n--b\r\nContent-Type: application/pdf\r\n"
            "Content-Disposition: attachment; filename=q3.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            + "QUFBQUFB\r\n" * 400_000 + "--b--\r\n")  # 4 MB of attachment
    down_relay.send("alice@example.net", ["big@partner.org"], mime)
    with ControlClient(str(down_relay.socket)) as client:
        [message] = client.call("io.postern.Queue.List", filter={"recipient": "big@"})["messages"]
        plain = client.call("io.postern.Queue.Show", id=message["id"])
        shown = client.call("io.postern.Queue.Show", id=message["id"], body=True)
    assert "body" not in plain, "the text only when asked for"
    assert shown["body"].startswith("Grüße aus Zürich")
    assert '[part: application/pdf "q3.pdf"]' in shown["body"]
    assert "only its first 256 KiB" in shown["body"]
    assert "Subject: report" in shown["headers"] and "Grüße" not in shown["headers"]


def test_hold_release_delete_requeue_and_flush(down_relay, sink):
    ids = queue_ids(down_relay)
    with ControlClient(str(down_relay.socket)) as client:
        assert client.call("io.postern.Queue.Hold", ids=ids[:1])["ids"] == ids[:1]
        held = client.call("io.postern.Queue.List", filter={"state": "hold"})["messages"]
        assert [m["id"] for m in held] == ids[:1]
        assert client.call("io.postern.Queue.Delete", filter={"sender": "eve@"})["ids"] == [ids[2]]
        assert ids[2] not in queue_ids(down_relay)
        assert not (down_relay.state_dir / "queue" / "msg" / ids[2]).exists()
        # The next hop comes back: flush delivers what is not held; held mail stays.
        mta = dict(down_relay.mta)
        mta["internal_relay"] = mta["external_relay"] = {"host": "127.0.0.1", "port": sink.port, "mx": False}
        down_relay.write_config(mta)
        client.call("io.postern.Config.Apply", mta=mta)
        assert client.call("io.postern.Queue.Flush")["count"] >= 1
        sink.wait_for(1)
        wait_until(lambda: queue_ids(down_relay) == ids[:1], what="only the held message left")
        assert client.call("io.postern.Queue.Requeue", ids=ids[:1])["ids"] == ids[:1]
        time.sleep(0.5)
        assert queue_ids(down_relay) == ids[:1], "held mail must stay held through a requeue"
        assert client.call("io.postern.Queue.Release", ids=ids[:1])["ids"] == ids[:1]
    sink.wait_for(2)
    wait_until(lambda: queue_ids(down_relay) == [], what="an empty queue")
    assert sorted(sink.recipients()) == ["bob@example.com", "carol@partner.org", "dave@partner.org"]


def test_summary_counts_recipients_by_domain(down_relay):
    with ControlClient(str(down_relay.socket)) as client:
        summary = client.call("io.postern.Queue.Summary")
    rows = {row["destination"]: row for row in summary["rows"]}
    assert rows["partner.org"]["total"] == 2 and rows["example.com"]["total"] == 2
    assert rows["partner.org"]["buckets"][0] == 2  # younger than 5 minutes
    assert summary["bucket_minutes"][0] == 5


def test_config_apply_validates_writes_keeps_previous_and_reloads(down_relay):
    config_path = down_relay.config_path
    before = config_path.read_text()
    with ControlClient(str(down_relay.socket)) as client:
        running = client.call("io.postern.Config.Get")
        assert running["mta"]["hostname"] == "gw.example.com"
        bad = dict(running["mta"], my_networks=["127.0.0.1/32", "10.0.0.300/8"], hostname="nodots")
        problems = client.call("io.postern.Config.Validate", mta=bad)["problems"]
        assert any(p.startswith("mta.my_networks[1]: '10.0.0.300/8' is not an IP network") for p in problems)
        assert any(p.startswith("mta.hostname:") for p in problems)
        with pytest.raises(ControlError) as error:
            client.call("io.postern.Config.Apply", mta=bad)
        assert error.value.name == "io.postern.Config.InvalidConfig"
        assert config_path.read_text() == before, "a refused config must not touch the file"
        # A session in progress when the new config lands finishes normally.
        session = down_relay.smtp()
        session.mail("alice@example.net")
        good = dict(running["mta"], banner="ESMTP Postern reloaded", relay_domains=["example.com", "example.org"])
        answer = client.call("io.postern.Config.Apply", mta=good)
        session.rcpt("bob@example.com")
        code, _ = session.data(b"Subject: during reload\r\n\r\nx\r\n")
        session.quit()
        assert code == 250
        assert ConfigFile(config_path).version_text(1) == before
        assert yaml.safe_load(config_path.read_text())["mta"]["banner"] == "ESMTP Postern reloaded"
        assert client.call("io.postern.Config.Get")["mta"]["relay_domains"] == ["example.com", "example.org"]
    new_session = down_relay.smtp()
    assert new_session.sock is not None
    new_session.quit()
    down_relay.wait_log(r"reload \(by uid 0\)")


def test_log_follow_stream_survives_a_config_reload(down_relay):
    lines: list[str] = []

    def follow():
        with ControlClient(str(down_relay.socket), timeout=20) as client:
            for answer in client.stream("io.postern.Log.Tail", lines=0):
                lines.extend(line["text"] for line in answer["lines"])
                if any("after-reload.example" in text for text in lines):
                    return

    follower = threading.Thread(target=follow, daemon=True)
    follower.start()
    time.sleep(0.3)
    down_relay.reload()
    down_relay.wait_log(r"reload -- configuration")
    down_relay.send("x@after-reload.example", ["bob@example.com"])
    follower.join(20)
    assert not follower.is_alive()
    assert any("reload -- configuration" in text for text in lines)
    assert any("from=<x@after-reload.example>" in text for text in lines)


def test_watch_reports_a_new_message_without_polling(down_relay):
    with ControlClient(str(down_relay.socket), timeout=10) as client:
        updates = client.stream("io.postern.Status.Watch")
        first = next(updates)
        assert first["status"]["queue"]["total"] == 3
        down_relay.send("alice@example.net", ["bob@example.com"])
        for update in updates:
            if update["status"]["queue"]["total"] == 4:
                assert "queue" in update["changed"]
                break


def test_bad_requests_get_an_error_and_the_daemon_carries_on(down_relay, sink):
    path = down_relay.socket
    [reply] = replies(raw_exchange(path, b"this is not json\0"))
    assert json.loads(reply)["error"] == "io.postern.Control.MalformedRequest"
    [reply] = replies(raw_exchange(path, b'{"method": "io.postern.Nope.Do"}\0'))
    assert json.loads(reply)["error"] == "org.varlink.service.InterfaceNotFound"
    [reply] = replies(raw_exchange(path, b'{"method": "io.postern.Queue.Explode"}\0'))
    assert json.loads(reply)["error"] == "org.varlink.service.MethodNotFound"
    [reply] = replies(raw_exchange(path, b'{"method": "io.postern.Queue.Show", "parameters": {"id": 42}}\0'))
    assert json.loads(reply) == {"error": "org.varlink.service.InvalidParameter", "parameters": {"parameter": "id"}}
    [reply] = replies(raw_exchange(path, b'{"method": "io.postern.Status.Get", "param'))  # partial, then end of input
    assert json.loads(reply)["parameters"] == {"reason": "connection closed mid-request"}
    huge = b'{"method": "io.postern.Status.Get", "parameters": {"x": "' + b"A" * (10 << 20) + b'"}}\0'
    [reply] = replies(raw_exchange(path, huge))
    assert json.loads(reply)["error"] == "io.postern.Control.RequestTooLarge"
    # Still serving: SMTP and the control API.
    assert down_relay.send("alice@example.net", ["bob@example.com"]) == {}
    with ControlClient(str(path)) as client:
        assert client.call("io.postern.Status.Get")["status"]["counters"]["received"] == 4


def test_two_clients_at_once(down_relay):
    with ControlClient(str(down_relay.socket)) as one, ControlClient(str(down_relay.socket)) as two:
        stream = one.stream("io.postern.Log.Tail", lines=1)
        next(stream)
        assert two.call("io.postern.Queue.List")["total"] == 3
        assert two.call("io.postern.Control.GetVersion")["api"] == 1


def test_a_third_party_varlink_client_introspects_and_calls(down_relay):
    with varlink.Client(address=f"unix:{down_relay.socket}") as client:
        with client.open("org.varlink.service") as service:
            info = service.GetInfo()
            assert "io.postern.Queue" in info["interfaces"]
        with client.open("io.postern.Queue") as queue:  # parses our interface description
            answer = queue.List(limit=2)
            assert answer["total"] == 3 and len(answer["messages"]) == 2
        with client.open("io.postern.Status") as status:
            assert status.Get()["status"]["counters"]["received"] == 3


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("runuser"), reason="needs root and runuser")
def test_an_unprivileged_user_is_refused(make_relay):
    directory = Path(tempfile.mkdtemp(prefix="postern-ctl-", dir="/tmp"))
    try:
        directory.chmod(0o755)
        relay = make_relay(1)
        relay.stop()
        relay.socket = directory / "control.sock"
        relay.process = subprocess.Popen(
            [sys.executable, "-m", "relay.daemon", "--config", str(relay.config_path), "--state-dir",
             str(relay.state_dir), "--socket", str(relay.socket), "--socket-group", "postern-test-nogroup"],
            cwd=Path(__file__).resolve().parents[2], stdout=open(relay.log_path, "ab"), stderr=subprocess.STDOUT,
        )
        wait_until(lambda: relay.socket.exists(), what="the control socket")
        assert relay.socket.stat().st_mode & 0o777 == 0o660
        probe = ("import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); "
                 "s.sendall(b'{\"method\":\"io.postern.Status.Get\"}\\0'); print(s.recv(4096).decode())")
        # The socket's mode keeps others out before the daemon sees them...
        denied = subprocess.run(["runuser", "-u", "nobody", "--", "/usr/bin/python3", "-c", probe, str(relay.socket)],
                                capture_output=True, text=True, timeout=30)
        assert denied.returncode != 0 and "PermissionError" in denied.stderr
        # ...and if the mode is loosened by mistake, the peer-credential check still refuses them.
        relay.socket.chmod(0o666)
        refused = subprocess.run(["runuser", "-u", "nobody", "--", "/usr/bin/python3", "-c", probe, str(relay.socket)],
                                 capture_output=True, text=True, timeout=30)
        reply = json.loads(refused.stdout.strip("\0\n"))
        assert reply["error"] == "io.postern.Control.PermissionDenied"
        assert reply["parameters"]["uid"] == int(subprocess.check_output(["id", "-u", "nobody"]))
        relay.wait_log(r"control: refused uid=\d+")
        with ControlClient(str(relay.socket)) as client:  # root still gets in
            assert client.call("io.postern.Control.GetVersion")["api"] == 1
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_posternctl_human_json_mailq_and_exit_codes(down_relay):
    status = ctl(down_relay, "status")
    assert status.returncode == 0 and "queue: 3" in status.stdout
    disk = os.statvfs(down_relay.state_dir)
    assert re.search(rf"^disk: [0-9.]+ GiB free of {disk.f_blocks * disk.f_frsize / 2**30:.1f} GiB", status.stdout, re.M)
    mailq = ctl(down_relay, "queue", "list", "--format", "mailq")
    assert mailq.returncode == 0
    assert mailq.stdout.startswith("-Queue ID-")
    assert "(connect to 127.0.0.1[127.0.0.1]:1: Connection refused)" in mailq.stdout \
        or "delivery temporarily suspended" in mailq.stdout
    assert mailq.stdout.rstrip().endswith("in 3 Requests.")
    listed = json.loads(ctl(down_relay, "--json", "queue", "list").stdout)
    assert listed["total"] == 3
    assert ctl(down_relay, "queue", "show", "0000000000000000").returncode == 1
    assert ctl(down_relay, "queue", "delete").returncode == 2  # neither IDs nor a selection
    assert ctl(down_relay, "frobnicate").returncode == 2
    gone = subprocess.run(CTL + ["--socket", str(down_relay.workdir / "nothing.sock"), "status"],
                          capture_output=True, text=True, timeout=30)
    assert gone.returncode == 3 and "Relay: not running" in gone.stderr
    bad = down_relay.workdir / "bad.yaml"
    bad.write_text("mta:\n  hostname: gw.example.com\n  listen: ['127.0.0.1:99999']\n")
    validated = ctl(down_relay, "config", "validate", str(bad))
    assert validated.returncode == 1 and "mta.listen[0]:" in validated.stderr
    summary = ctl(down_relay, "queue", "summary")
    assert "partner.org" in summary.stdout and "TOTAL" in summary.stdout


def test_posternctl_takes_its_global_options_before_after_and_between_the_words(down_relay, capsys):
    socket, nowhere = str(down_relay.socket), str(down_relay.workdir / "nothing.sock")
    for line in (["--json", "--socket", socket, "queue", "list"],
                 ["queue", "list", "--json", "--socket", socket],
                 ["queue", "--socket", socket, "list", "--json"],
                 ["--socket", nowhere, "queue", "list", "--socket", socket, "--json"],
                 ["--json", "queue", "list", "--socket", socket]):
        assert ctl_main(line) == 0, line
        assert json.loads(capsys.readouterr().out)["total"] == 3, line
    for line in (["status"], ["queue", "summary"], ["config", "get"], ["domains"], ["verify", "status"]):
        assert ctl_main([*line, "--json", "--socket", socket]) == 0, line
        assert isinstance(json.loads(capsys.readouterr().out), dict), line
    assert ctl_main(["queue", "list", "--socket", nowhere]) == 3


def test_list_offset_jumps_into_the_list_in_every_order(down_relay):
    with ControlClient(str(down_relay.socket)) as client:
        for sort in ("arrival", "age", "size", "sender"):
            full = [m["id"] for m in client.call("io.postern.Queue.List", sort=sort)["messages"]]
            jumped = client.call("io.postern.Queue.List", sort=sort, offset=1, limit=1)
            assert [m["id"] for m in jumped["messages"]] == full[1:2], sort
            assert jumped["total"] == 3
        partner_first = client.call("io.postern.Queue.List", filter={"sender": "alice"}, offset=1)
        assert [m["subject"] for m in partner_first["messages"]] == ["two"]


def test_deeply_nested_json_gets_an_error_reply_and_the_daemon_carries_on(down_relay):
    path = down_relay.socket
    well_formed = b'{"method": "io.postern.Status.Get", "parameters": {"x": ' + b"[" * 30_000 + b"]" * 30_000 + b"}}"
    for request in (b"[" * 60_000, well_formed):  # each within the 64 KiB a request may have
        [reply] = replies(raw_exchange(path, request + b"\0"))
        assert json.loads(reply) == {"error": "io.postern.Control.MalformedRequest",
                                     "parameters": {"reason": "not JSON: nested too deeply"}}
    with ControlClient(str(path)) as client:
        assert client.call("io.postern.Status.Get")["status"]["counters"]["received"] == 3
    assert "Traceback" not in down_relay.log()
