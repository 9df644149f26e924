"""The Microsoft 365 tenant check: a client bound to 127.0.0.3 plays Exchange Online.

Exchange Online's addresses are shared by every tenant, so mail from them may go to
outside domains only with our tenant's X-MS-Exchange-CrossTenant-Id header.
"""

import smtplib

import pytest

from tests.support.mail import message_id

OURS = "72f988bf-86f1-41af-91ab-2d7cd011db47"
THEIRS = "0b5e0e8c-1234-4c1d-9f0e-0123456789ab"
EXCHANGE = "127.0.0.3"


def message(mid: str, *tenants: str) -> bytes:
    lines = [f"X-MS-Exchange-CrossTenant-Id: {tenant}" for tenant in tenants]
    lines += ["From: alice@example.com", "Subject: tenant test", f"Message-ID: <{mid}>", "", "hello"]
    return ("\r\n".join(lines) + "\r\n").encode()


def transaction(relay, source: str, recipients: list[str], content: bytes) -> tuple[int, str]:
    """MAIL, RCPT and DATA one by one; the first refusal's code and text, or DATA's answer."""
    with relay.smtp(source) as client:
        code, text = client.mail("alice@example.com")
        assert code == 250, text
        for rcpt in recipients:
            code, text = client.rcpt(rcpt)
            if code != 250:
                return code, text.decode()
        code, text = client.data(content)
        return code, text.decode()


@pytest.fixture
def m365_relay(make_relay, sink):
    return make_relay(sink.port, m365={"tenant_ids": [OURS.upper()], "networks": [f"{EXCHANGE}/32"]})


def test_our_tenant_may_relay_to_outside_domains(m365_relay, sink):
    code, text = transaction(m365_relay, EXCHANGE, ["carol@partner.org"], message("ours@example.com", OURS))
    assert code == 250, text
    [delivered] = sink.wait_for(1)
    assert delivered.recipients == ["carol@partner.org"]
    assert message_id(delivered.content) == "ours@example.com"
    m365_relay.wait_log(rf"m365: allowed to relay from unknown\[{EXCHANGE}\]: tenant={OURS} \(one of ours\)")
    m365_relay.wait_log(rf"client=unknown\[{EXCHANGE}\], m365 tenant={OURS}")


@pytest.mark.parametrize("tenants, seen", [((THEIRS,), THEIRS), ((), "none"), ((OURS, THEIRS), f"{OURS},{THEIRS}")],
                         ids=["another tenant", "no tenant header", "conflicting headers"])
def test_any_other_tenant_is_refused_at_the_end_of_data_and_nothing_is_queued(m365_relay, sink, tenants, seen):
    code, text = transaction(m365_relay, EXCHANGE, ["carol@partner.org"], message("theirs@example.com", *tenants))
    assert code == 550
    assert text.startswith("5.7.1 Relay access denied: Microsoft 365 tenant check failed"), text
    assert m365_relay.queue_files() == []
    m365_relay.wait_log(rf"m365: refused unknown\[{EXCHANGE}\]: tenant={seen}, 1 outside recipients")
    m365_relay.wait_log(r"NOQUEUE: reject: END-OF-MESSAGE from unknown\[127\.0\.0\.3\]: 550 5\.7\.1 .*to=<carol@partner\.org>")
    assert sink.messages == []


def test_one_outside_recipient_refuses_the_whole_message(m365_relay, sink):
    code, _ = transaction(m365_relay, EXCHANGE, ["bob@example.com", "carol@partner.org"], message("mixed@x", THEIRS))
    assert code == 550
    assert m365_relay.queue_files() == []


@pytest.mark.parametrize("tenants", [(), (THEIRS,)], ids=["no tenant header", "another tenant"])
def test_mail_from_exchange_online_to_the_relay_domains_is_accepted_as_usual(m365_relay, sink, tenants):
    code, text = transaction(m365_relay, EXCHANGE, ["bob@example.com"], message("inbound@example.net", *tenants))
    assert code == 250, text
    [delivered] = sink.wait_for(1)
    assert delivered.recipients == ["bob@example.com"]
    seen = tenants[0] if tenants else "none"
    m365_relay.wait_log(rf"m365: inbound to the relay domains from unknown\[{EXCHANGE}\]: tenant={seen} \(not ours\)")


def test_the_tenant_header_means_nothing_from_outside_exchange_online(make_relay, sink):
    """Anyone can write the header; only Exchange Online's own addresses are asked for it."""
    relay = make_relay(sink.port, m365={"tenant_ids": [OURS], "networks": [f"{EXCHANGE}/32"]})
    with relay.smtp("127.0.0.4") as client:
        client.mail("alice@example.com")
        code, text = client.rcpt("carol@partner.org")
    assert (code, text.decode()) == (554, "5.7.1 <carol@partner.org>: Relay access denied")


def test_exchange_online_in_my_networks_still_needs_the_tenant(make_relay, sink):
    """Listing Exchange Online's ranges as trusted must not make an open relay for every tenant."""
    relay = make_relay(sink.port, my_networks=["127.0.0.1/32", f"{EXCHANGE}/32"],
                       m365={"tenant_ids": [OURS], "networks": [f"{EXCHANGE}/32"]})
    code, _ = transaction(relay, EXCHANGE, ["carol@partner.org"], message("trusted@x", THEIRS))
    assert code == 550
    assert relay.queue_files() == []


def test_without_tenant_ids_exchange_online_is_an_ordinary_client(make_relay, sink):
    relay = make_relay(sink.port, m365={"networks": [f"{EXCHANGE}/32"]})
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        relay.send("alice@example.com", ["carol@partner.org"], message("off@x", OURS), source=EXCHANGE)
    assert relay.send("alice@example.net", ["bob@example.com"], message("in@x"), source=EXCHANGE) == {}
