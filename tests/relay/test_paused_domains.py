"""Migration hold: mail from or to a paused domain is answered 451 4.3.2 at RCPT, so the sending side
keeps it in its own queue; the control API pauses and resumes with one call."""

import smtplib
import subprocess
import sys

import pytest
import yaml

from relay.control.client import ControlClient, ControlError
from tests.support.mail import make_message

OUTSIDER = "127.0.0.2"
HOLD = "4.3.2 Service temporarily unavailable, try again later"


def rcpt(relay, sender: str, recipient: str, source: str = OUTSIDER) -> tuple[int, str]:
    with relay.smtp(source) as client:
        client.mail(sender)
        code, text = client.rcpt(recipient)
        return code, text.decode()


@pytest.fixture
def migrating(make_relay, sink):
    return make_relay(sink.port, relay_domains=["example.com", "example.org"], paused_domains=["example.org"])


def test_mail_to_a_paused_domain_is_held_back_at_rcpt(migrating, sink):
    assert rcpt(migrating, "someone@example.net", "dave@example.org") == (451, HOLD)
    assert rcpt(migrating, "someone@example.net", "dave@EXAMPLE.org") == (451, HOLD)
    assert rcpt(migrating, "someone@example.net", "bob@example.com") == (250, "2.1.5 Ok")
    migrating.wait_log(r"NOQUEUE: reject: RCPT from unknown\[127\.0\.0\.2\]: 451 4\.3\.2 Service temporarily "
                       r"unavailable, try again later; from=<someone@example\.net> to=<dave@example\.org>")


def test_mail_from_a_paused_domain_is_held_back_too(migrating, sink):
    assert rcpt(migrating, "dave@example.org", "bob@example.com", source="127.0.0.1") == (451, HOLD)
    assert rcpt(migrating, "", "bob@example.com") == (250, "2.1.5 Ok")  # the null sender has no domain


def test_only_the_held_recipients_wait(migrating, sink):
    refused = migrating.send("someone@example.net", ["bob@example.com", "dave@example.org"],
                             make_message("partly@x"), source=OUTSIDER)
    assert refused == {"dave@example.org": (451, HOLD.encode())}
    [message] = sink.wait_for(1)
    assert message.recipients == ["bob@example.com"]


def test_pause_and_resume_through_the_control_api(make_relay, sink):
    relay = make_relay(sink.port)
    socket = str(relay.workdir / "control.sock")
    with ControlClient(socket) as client:
        assert client.call("io.postern.Status.Get")["status"]["paused_domains"] == []
        assert client.call("io.postern.Config.Pause", domains=["Example.COM"]) == {"paused_domains": ["example.com"]}
        assert client.call("io.postern.Config.Pause", domains=["example.com"]) == {"paused_domains": ["example.com"]}
        assert client.call("io.postern.Status.Get")["status"]["paused_domains"] == ["example.com"]
        assert yaml.safe_load(relay.config_path.read_text())["mta"]["paused_domains"] == ["example.com"]

        with pytest.raises(smtplib.SMTPRecipientsRefused):
            relay.send("someone@example.net", ["bob@example.com"], make_message("held@x"), source=OUTSIDER)
        assert relay.queue_files() == []

        assert client.call("io.postern.Config.Resume", domains=["example.com"]) == {"paused_domains": []}
        assert client.call("io.postern.Status.Get")["status"]["paused_domains"] == []
        relay.send("someone@example.net", ["bob@example.com"], make_message("resumed@x"), source=OUTSIDER)
        sink.wait_for(1)

        with pytest.raises(ControlError) as error:
            client.call("io.postern.Config.Pause", domains=["not a domain"])
        assert error.value.name == "io.postern.Config.InvalidConfig"
        assert error.value.parameters["problems"][0].startswith("domains[0]: 'not a domain' is not a domain name")
    relay.wait_log(r"migration hold: paused example\.com \(by uid \d+\); paused now: example\.com")
    relay.wait_log(r"migration hold: resumed example\.com \(by uid \d+\); paused now: none")


def test_the_hold_applies_to_outside_domains_of_trusted_clients(make_relay, sink):
    relay = make_relay(sink.port, paused_domains=["partner.org"])
    assert rcpt(relay, "alice@example.com", "carol@partner.org", source="127.0.0.1") == (451, HOLD)
    assert rcpt(relay, "alice@example.com", "dan@other.example", source="127.0.0.1") == (250, "2.1.5 Ok")


def test_posternctl_pauses_lists_and_resumes(make_relay, sink):
    relay = make_relay(sink.port)

    def ctl(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "relay.ctl", "--socket", str(relay.workdir / "control.sock"),
                               *args], capture_output=True, text=True, timeout=30)

    assert ctl("domains", "pause", "example.com", "example.org").stdout == \
        "on migration hold: example.com, example.org\n"
    assert ctl("domains").stdout == "on migration hold: example.com, example.org\n"
    assert "on migration hold (451 4.3.2): example.com, example.org" in ctl("status").stdout
    assert rcpt(relay, "someone@example.net", "bob@example.com") == (451, HOLD)
    assert ctl("domains", "resume", "example.com").stdout == "on migration hold: example.org\n"
    assert rcpt(relay, "someone@example.net", "bob@example.com") == (250, "2.1.5 Ok")
    assert ctl("domains", "pause").returncode == 2


def test_a_domain_with_a_line_end_is_refused_by_the_control_api_and_never_reaches_the_file_or_the_log(make_relay, sink):
    relay = make_relay(sink.port)
    before = relay.config_path.read_text()
    with ControlClient(str(relay.workdir / "control.sock")) as client:
        for hostile in ("example.org\n", "example.org\r", "example.org\x85"):
            with pytest.raises(ControlError) as error:
                client.call("io.postern.Config.Pause", domains=["example.com", hostile])
            assert error.value.name == "io.postern.Config.InvalidConfig"
            assert error.value.parameters["problems"] == [f"domains[1]: {hostile!r} is not a domain name: write it like example.com"]
        assert client.call("io.postern.Status.Get")["status"]["paused_domains"] == []
    assert relay.config_path.read_text() == before
    assert "migration hold" not in relay.log()


def test_status_says_since_when_each_domain_is_paused_and_how_often_it_turned_mail_away(make_relay, sink):
    import json
    import time

    relay = make_relay(sink.port, relay_domains=["example.com", "example.org"])
    socket = str(relay.workdir / "control.sock")

    def paused() -> list[dict]:
        with ControlClient(socket) as client:
            return client.call("io.postern.Status.Get")["status"]["paused"]

    assert paused() == []
    before = time.time()
    with ControlClient(socket) as client:
        client.call("io.postern.Config.Pause", domains=["example.org"])
    assert rcpt(relay, "someone@example.net", "dave@example.org")[0] == 451
    assert rcpt(relay, "dave@example.org", "bob@example.com", source="127.0.0.1")[0] == 451
    [held] = paused()
    assert held["domain"] == "example.org" and held["turned_away"] == 2
    assert before - 1 <= held["since"] <= time.time()
    # After a restart the pause is as old as it was; the count starts again with the daemon.
    relay.stop()
    time.sleep(1.1)
    relay.start()
    [again] = paused()
    assert again["since"] == held["since"] and again["turned_away"] == 0
    # A domain paused by editing the file and reloading counts from that reload.
    relay.reload({**relay.mta, "paused_domains": ["example.org", "example.com"]})
    relay.wait_log("reload")
    deadline = time.time() + 10
    while len(paused()) < 2 and time.time() < deadline:
        time.sleep(0.1)
    org, com = paused()
    assert org["since"] == held["since"] and com["since"] > held["since"] + 1
    with ControlClient(socket) as client:
        client.call("io.postern.Config.Resume", domains=["example.org", "example.com"])
    assert paused() == []
    assert json.loads((relay.state_dir / "paused.json").read_text()) == {}
