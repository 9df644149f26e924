"""SIGHUP reloads the configuration file; a file with problems is refused and the old one stays in force."""

import dataclasses
import ipaddress
import subprocess
import sys

import yaml

from relay.config import MtaConfig
from relay.queue.entry import Counters
from relay.smtpd import Receiver
from tests.support.mail import make_message
from tests.support.relay import ROOT

OUTSIDER = "127.0.0.2"  # not in my_networks: may only send to the relay domains


def rcpt_code(relay, recipient: str) -> int:
    with relay.smtp(source=OUTSIDER) as client:
        client.mail("someone@example.net")
        code, _ = client.rcpt(recipient)
        return code


def test_a_new_relay_domain_is_accepted_by_sessions_opened_after_sighup(relay, sink):
    assert rcpt_code(relay, "dave@example.org") == 554
    before = relay.smtp(source=OUTSIDER)  # opened under the old configuration

    relay.reload({**relay.mta, "relay_domains": ["example.com", "example.org"]})
    relay.wait_log(r"reload -- configuration ")

    assert rcpt_code(relay, "dave@example.org") == 250
    relay.send("someone@example.net", ["dave@example.org"], make_message("after-reload@example.net"), source=OUTSIDER)
    [message] = sink.wait_for(1)
    assert message.recipients == ["dave@example.org"]

    before.mail("someone@example.net")
    code, text = before.rcpt("dave@example.org")
    assert (code, text) == (554, b"5.7.1 <dave@example.org>: Relay access denied")
    before.quit()


def test_my_networks_changed_by_sighup_rule_the_next_session_of_an_address_seen_before(relay, sink):
    assert rcpt_code(relay, "carol@example.net") == 554  # an outside recipient from outside: relay denied
    relay.reload({**relay.mta, "my_networks": ["127.0.0.1/32", f"{OUTSIDER}/32"]})
    relay.wait_log(r"reload -- configuration ")
    assert rcpt_code(relay, "carol@example.net") == 250
    relay.reload({**relay.mta, "my_networks": ["127.0.0.1/32"]})
    relay.wait_log(r"reload -- configuration ", count=2)
    assert rcpt_code(relay, "carol@example.net") == 554


def test_the_receiver_asks_my_networks_again_once_the_configuration_is_replaced():
    """The answer for an address is remembered only while the configuration that gave it is in force."""
    before = MtaConfig(my_networks=(ipaddress.ip_network("127.0.0.1/32"),))
    after = dataclasses.replace(before, my_networks=before.my_networks + (ipaddress.ip_network("127.0.0.2/32"),))
    receiver = Receiver(config=lambda: before, store=None, counters=Counters(), verify=None, enqueue=None,
                        resolver=None, tls_context=lambda: None)
    assert [receiver.is_trusted(before, ip) for ip in ("127.0.0.1", "127.0.0.2", "127.0.0.2")] == [True, False, False]
    assert [receiver.is_trusted(after, ip) for ip in ("127.0.0.1", "127.0.0.2")] == [True, True]
    assert receiver.is_trusted(before, "127.0.0.2") is False


def test_a_reload_with_problems_is_refused_and_the_old_configuration_stays(relay, sink):
    bad = {**relay.mta, "relay_domains": ["example.org"],
           "my_networks": ["127.0.0.1/32", "10.0.0.300/8"], "hopcount_limit": 0}
    relay.reload(bad)
    lines = relay.wait_log(r"reload refused: (.*)", count=2)
    assert sorted(lines) == [
        "mta.hopcount_limit: 0 is not a whole number of at least 1",
        "mta.my_networks[1]: '10.0.0.300/8' is not an IP network: write it like 192.168.1.10/32 or 10.0.0.0/8",
    ]
    assert "reload -- configuration" not in relay.log()
    assert relay.process.poll() is None

    # Still the old relay domains, and still relaying for the old networks.
    assert rcpt_code(relay, "dave@example.org") == 554
    assert rcpt_code(relay, "bob@example.com") == 250
    relay.send("alice@example.net", ["bob@example.com"], make_message("still-serving@example.net"))
    sink.wait_for(1)

    # Fixing the file and reloading again works.
    relay.reload({**bad, "my_networks": ["127.0.0.1/32"], "hopcount_limit": 50})
    relay.wait_log(r"reload -- configuration ")
    assert rcpt_code(relay, "dave@example.org") == 250


def test_a_reload_of_a_file_that_is_not_yaml_is_refused(relay, sink):
    relay.config_path.write_text("mta:\n  hostname: [unclosed\n")
    relay.reload()
    [line] = relay.wait_log(r"reload refused: .*")
    assert "not valid YAML" in line
    relay.send("alice@example.net", ["bob@example.com"], make_message("yaml@example.net"))
    sink.wait_for(1)


def test_an_invalid_configuration_at_start_is_refused_with_one_line_per_problem(tmp_path):
    config = tmp_path / "postern.yaml"
    config.write_text(yaml.safe_dump({"mta": {
        "hostname": "gw.example.com",
        "listen": ["127.0.0.1:99999"],
        "my_networks": ["127.0.0.1/32", "10.0.0.300/8"],
        "queue": {"minimal_backoff_time": "soon"},
        "relay_domain": ["example.com"],
    }}))
    result = subprocess.run(
        [sys.executable, "-m", "relay.daemon", "--config", str(config), "--state-dir", str(tmp_path / "state"),
         "--socket", str(tmp_path / "control.sock")],
        cwd=ROOT, capture_output=True, text=True, timeout=30,
    )
    assert result.returncode != 0
    lines = result.stderr.splitlines()
    unknown = [line for line in lines if line.startswith("postern-relay: mta.relay_domain: unknown key; ")]
    assert len(unknown) == 1 and "relay_domains" in unknown[0], result.stderr  # names the key meant
    assert sorted(set(lines) - set(unknown)) == [
        "postern-relay: mta.listen[0]: 99999 is not a port number: use 1 to 65535",
        "postern-relay: mta.my_networks[1]: '10.0.0.300/8' is not an IP network: "
        "write it like 192.168.1.10/32 or 10.0.0.0/8",
        "postern-relay: mta.queue.minimal_backoff_time: 'soon' is not a duration: "
        "use seconds or a number with s, m, h, d or w, such as 5d",
    ], result.stderr
    assert len(lines) == 4, result.stderr
    assert not (tmp_path / "state").exists()


def test_check_validates_without_starting(tmp_path):
    config = tmp_path / "postern.yaml"
    config.write_text(yaml.safe_dump({"mta": {"hostname": "gw", "listen": ["127.0.0.1:2525"]}}))
    result = subprocess.run([sys.executable, "-m", "relay.daemon", "--config", str(config), "--check"],
                            cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "postern-relay: mta.hostname: 'gw' is not a fully qualified host name: use letters, digits and "
        "hyphens in dot-separated labels, such as gw.example.com",
    ]

    config.write_text(yaml.safe_dump({"mta": {"hostname": "gw.example.com", "listen": ["127.0.0.1:2525"]}}))
    result = subprocess.run([sys.executable, "-m", "relay.daemon", "--config", str(config), "--check"],
                            cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert (result.returncode, result.stdout) == (0, f"postern-relay: {config}: configuration is valid\n")
