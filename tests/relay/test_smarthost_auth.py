"""SASL to the smart host: AUTH PLAIN or LOGIN over TLS only, with a password from a file that only
root and the daemon may read, and a clear error in the log and the queue when the login is refused."""

import subprocess
import sys

import pytest
import yaml

from relay.control.client import ControlClient
from tests.support.mail import make_message, message_id
from tests.support.next_hop import NextHop
from tests.support.relay import ROOT

LOGIN, PASSWORD = "gateway@example.com", "correct horse battery staple"


@pytest.fixture
def password_file(tmp_path):
    path = tmp_path / "smarthost.password"
    path.write_text(PASSWORD + "\n")
    path.chmod(0o640)
    return path


@pytest.fixture
def smart_host(authority):
    hops = []

    def start(**options) -> NextHop:
        hop = NextHop(users={LOGIN: PASSWORD}, **options).start()
        hops.append(hop)
        return hop

    yield start
    for hop in hops:
        hop.stop()


def smart_host_section(port: int, password_file, tls: str | None = None) -> dict:
    """The smart host on loopback, known by the name in its certificate (smtp.example.net); with a
    login the level is verify unless written."""
    return {"host": "127.0.0.1", "port": port, "mx": False, "tls_name": "smtp.example.net",
            "username": LOGIN, "password_file": str(password_file), **({"tls": tls} if tls else {})}


def trusting(authority) -> dict:
    """The relay's tls section that trusts the test CA (as an admin trusts a private CA)."""
    return {"tls": {"ca_file": str(authority.cert_path)}}


def control(relay) -> ControlClient:
    return ControlClient(str(relay.workdir / "control.sock"))


@pytest.mark.parametrize("exclude, mechanism", [((), "PLAIN"), (("PLAIN",), "LOGIN")])
def test_the_relay_logs_in_over_starttls_and_delivers(make_relay, sink, smart_host, authority, password_file,
                                                      exclude, mechanism):
    host = smart_host(tls_context=authority.server_context("smtp.example.net"), auth_exclude=exclude)
    relay = make_relay(sink.port, external_relay=smart_host_section(host.port, password_file), **trusting(authority))
    relay.send("alice@example.com", ["carol@partner.org"], make_message("authenticated@x"))
    [message] = host.wait_for(1)
    assert message.tls and message.login == LOGIN
    assert message_id(message.content) == "authenticated@x"
    assert host.logins == [(mechanism, LOGIN, True)]
    assert PASSWORD not in relay.log()


def test_a_refused_login_defers_with_the_smart_hosts_words_in_log_and_queue(make_relay, sink, smart_host,
                                                                             authority, password_file):
    host = smart_host(tls_context=authority.server_context("smtp.example.net"))
    password_file.write_text("wrong password\n")
    relay = make_relay(sink.port, external_relay=smart_host_section(host.port, password_file), **trusting(authority))
    relay.send("alice@example.com", ["carol@partner.org"], make_message("refused-login@x"))
    said = rf"SASL authentication failed; server 127\.0\.0\.1\[127\.0\.0\.1\]:{host.port} said: 535 5\.7\.8 "
    relay.wait_log(said + r".* \(username gateway@example\.com\)")
    relay.wait_log(r"to=<carol@partner\.org>, .*dsn=4\.7\.0, status=deferred \(" + said)
    assert host.messages == []
    with control(relay) as client:
        [queued] = client.call("io.postern.Queue.List")["messages"]
        assert queued["last_reply"].startswith("SASL authentication failed; server 127.0.0.1")
        assert "535 5.7.8" in queued["last_reply"]

        # The admin fixes the password file and reloads: the deferred mail goes out.
        password_file.write_text(PASSWORD + "\n")
        relay.reload()
        relay.wait_log(r"reload -- configuration")
        client.call("io.postern.Queue.Flush")
    [message] = host.wait_for(1)
    assert message.login == LOGIN


@pytest.mark.parametrize("tls", [None, "secure"])
@pytest.mark.parametrize("why, certificate, trusted", [
    ("an untrusted certificate", "smtp.example.net", False),  # anyone on the path can make one
    ("a certificate for another name", "mitm.example.org", True),
])
def test_no_login_is_sent_to_a_server_whose_certificate_does_not_verify(make_relay, sink, smart_host, authority,
                                                                       password_file, tls, why, certificate, trusted):
    host = smart_host(tls_context=authority.server_context(certificate))
    relay = make_relay(sink.port, external_relay=smart_host_section(host.port, password_file, tls=tls),
                       **(trusting(authority) if trusted else {}))
    relay.send("alice@example.com", ["carol@partner.org"], make_message("unverified@x"))
    relay.wait_log(r"to=<carol@partner\.org>, .*dsn=4\.7\.5, status=deferred \(server certificate not verified.*"
                   r"the login is sent only to a verified server: trust its CA with mta\.tls\.ca_file")
    assert host.logins == [] and host.messages == []


@pytest.mark.parametrize("tls", ["none", "may", "encrypt", "dane"])
def test_a_login_over_an_unchecked_certificate_is_refused_with_the_fix(make_relay, sink, password_file, tls):
    relay = make_relay(sink.port, start=False, external_relay={
        **smart_host_section(25, password_file, tls=tls), "tls_name": ""})
    relay.start(wait=False)
    assert relay.process.wait(15) == 1
    assert (f"mta.external_relay.tls: {tls} would send the password to a server whose certificate is not "
            "checked: set tls: verify (trust its CA with tls.ca_file if it is not a public one), secure or "
            "dane-only") in relay.log()


def test_no_login_is_sent_without_tls(make_relay, sink, smart_host, password_file):
    host = smart_host()  # no certificate: no STARTTLS
    relay = make_relay(sink.port, external_relay=smart_host_section(host.port, password_file))
    relay.send("alice@example.com", ["carol@partner.org"], make_message("no-tls-login@x"))
    relay.wait_log(r"status=deferred \(not sending the login for gateway@example\.com to 127\.0\.0\.1\[127\.0\.0\.1\]"
                   r":\d+ without TLS")
    assert host.logins == [] and host.messages == []


def test_a_password_file_everyone_can_read_is_refused_with_the_fix(make_relay, sink, password_file, tmp_path):
    password_file.chmod(0o644)
    mta_file = tmp_path / "postern.yaml"
    mta_file.write_text(yaml.safe_dump({"mta": {
        "hostname": "gw.example.com", "external_relay": smart_host_section(2525, password_file)}}))
    result = subprocess.run([sys.executable, "-m", "relay.daemon", "--config", str(mta_file), "--check"],
                            cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"postern-relay: mta.external_relay.password_file: {password_file} is readable by every user (mode 0644): "
        f"let only root and the daemon read it: chown root:postern {password_file} && chmod 640 {password_file}"
    )
    relay = make_relay(sink.port, start=False, external_relay=smart_host_section(2525, password_file))
    relay.start(wait=False)
    assert relay.process.wait(15) == 1
    assert "mta.external_relay.password_file:" in relay.log() and "readable by every user" in relay.log()


def test_the_password_is_never_shown_by_the_control_api(make_relay, sink, smart_host, authority, password_file):
    host = smart_host(tls_context=authority.server_context("smtp.example.net"))
    relay = make_relay(sink.port, external_relay=smart_host_section(host.port, password_file))
    with control(relay) as client:
        running = client.call("io.postern.Config.Get")["mta"]
    assert running["external_relay"]["username"] == LOGIN
    assert running["external_relay"]["password_file"] == str(password_file)
    assert PASSWORD not in repr(running)
    assert "username" not in running["internal_relay"]
