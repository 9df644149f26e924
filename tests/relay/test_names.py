"""The banner and HELO names against the PTR record of the appliance's address."""

import subprocess
import sys

import pytest

from relay.control.client import ControlClient, ControlError
from relay.names import name_warnings, ptr_verdict
from tests.support.dns_server import DnsServer


def test_names_that_match_a_forward_confirmed_ptr_need_nothing():
    assert name_warnings("gw.example.com", ptr_verdict("gw.example.com", "192.0.2.10", {"gw.example.com": ["192.0.2.10"]})) == []
    assert name_warnings("GW.example.com", ptr_verdict("gw.example.com.", "2001:db8::10", {"gw.example.com": ["2001:db8:0::10"]})) == []


def test_a_helo_name_that_is_not_the_ptr_name_says_what_to_set():
    [warning] = name_warnings("gw.example.com", ptr_verdict("gw.example.com", "192.0.2.10", {"mail.provider.net": ["192.0.2.10"]}))
    assert warning == ("the HELO name gw.example.com is not the PTR name of 192.0.2.10 (mail.provider.net): "
                       "set mta.helo_name to mail.provider.net, or have the PTR record changed to gw.example.com")


def test_a_banner_name_other_than_the_helo_name_is_checked_too():
    [warning] = name_warnings("postern.localdomain", ptr_verdict("gw.example.com", "192.0.2.10", {"gw.example.com": ["192.0.2.10"]}))
    assert warning.startswith("the banner name postern.localdomain is not the PTR name of 192.0.2.10")
    assert warning.endswith("set mta.hostname to gw.example.com")


def test_no_ptr_record_and_no_forward_confirmation_are_named():
    [missing] = name_warnings("gw.example.com", ptr_verdict("gw.example.com", "192.0.2.10", {}))
    assert missing.startswith("192.0.2.10 has no PTR record: ask whoever runs the address")
    [unconfirmed] = name_warnings("gw.example.com", ptr_verdict("gw.example.com", "192.0.2.10", {"gw.example.com": ["192.0.2.99"]}))
    assert unconfirmed == ("the PTR name gw.example.com does not resolve back to 192.0.2.10 (it has 192.0.2.99): "
                           "add an A record for gw.example.com pointing to 192.0.2.10")


@pytest.fixture
def dns():
    server = DnsServer({
        ("10.0.0.127.in-addr.arpa", "PTR"): ["gw.example.com."],
        ("gw.example.com", "A"): ["127.0.0.10"],
        ("11.0.0.127.in-addr.arpa", "PTR"): ["host-127-0-0-11.provider.example."],
        ("host-127-0-0-11.provider.example", "A"): ["127.0.0.11"],
    }).start()
    yield server
    server.stop()


def test_check_names_through_the_control_api(make_relay, sink, dns):
    relay = make_relay(sink.port, dns_servers=[dns.address])
    with ControlClient(str(relay.workdir / "control.sock")) as client:
        good = client.call("io.postern.Status.CheckNames", address="127.0.0.10")["check"]
        bad = client.call("io.postern.Status.CheckNames", address="127.0.0.11")["check"]
        none = client.call("io.postern.Status.CheckNames", address="127.0.0.12")["check"]
        with pytest.raises(ControlError) as error:
            client.call("io.postern.Status.CheckNames", address="gw.example.com")
    assert good == {"address": "127.0.0.10", "banner_name": "gw.example.com", "helo_name": "gw.example.com",
                    "ptr": ["gw.example.com"], "forward": ["127.0.0.10"], "warnings": []}
    assert bad["ptr"] == ["host-127-0-0-11.provider.example"]
    assert [w.split(":")[0] for w in bad["warnings"]] == [
        "the HELO name gw.example.com is not the PTR name of 127.0.0.11 (host-127-0-0-11.provider.example)"]
    assert none["ptr"] == [] and none["warnings"][0].startswith("127.0.0.12 has no PTR record")
    assert error.value.name == "io.postern.Status.InvalidAddress"


def test_posternctl_names(make_relay, sink, dns):
    relay = make_relay(sink.port, dns_servers=[dns.address], helo_name="host-127-0-0-11.provider.example")
    result = subprocess.run([sys.executable, "-m", "relay.ctl", "--socket", str(relay.workdir / "control.sock"),
                             "names", "127.0.0.11"], capture_output=True, text=True, timeout=30)
    assert result.stdout.splitlines() == [
        "127.0.0.11: PTR host-127-0-0-11.provider.example; banner name gw.example.com, "
        "HELO name host-127-0-0-11.provider.example",
        "warning: the banner name gw.example.com is not the PTR name of 127.0.0.11 "
        "(host-127-0-0-11.provider.example): set mta.hostname to host-127-0-0-11.provider.example",
    ]
