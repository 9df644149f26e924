"""Per-client connection limits, as Postfix's smtpd with anvil: a count and a rate per client address.

Clients are real loopback connections bound to 127.0.0.x source addresses; 127.0.0.1 is in
my_networks (exempt), the others are strangers.
"""

import re
import socket
import struct

from tests.support.net import wait_until
from tests.support.raw_smtp import RawSmtp

TOO_MANY = "421 4.7.0 gw.example.com Error: too many connections from {ip}"


def greeted(port: int, source: str) -> RawSmtp:
    client = RawSmtp(port, source=source)
    greeting = client.greeting()
    assert greeting.startswith("220 gw.example.com "), greeting
    return client


def refused(port: int, source: str) -> str:
    with RawSmtp(port, source=source) as client:
        return client.wait_closed(timeout=5).decode().rstrip("\r\n")


def reset(client: RawSmtp) -> None:
    """Close with an RST instead of a FIN, as a client that crashed or was killed would."""
    client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()


def test_one_address_at_its_limit_is_refused_while_others_get_in(make_relay, sink):
    relay = make_relay(sink.port, client_connection_count_limit=3)
    held = [greeted(relay.port, "127.0.0.2") for _ in range(3)]
    try:
        assert refused(relay.port, "127.0.0.2") == TOO_MANY.format(ip="127.0.0.2")
        relay.wait_log(r"warning: Connection concurrency limit exceeded: 4 from unknown\[127\.0\.0\.2\] "
                       r"for service smtp")
        with greeted(relay.port, "127.0.0.3") as other:  # another stranger is not locked out
            other.command("EHLO other.example.net")
            assert other.command("MAIL FROM:<carol@example.net>").startswith("250 ")
            assert other.command("RCPT TO:<dave@example.com>").startswith("250 ")
        # Those held sessions still work.
        held[0].command("EHLO client.example.net")
        assert held[0].command("MAIL FROM:<alice@example.net>").startswith("250 ")
        for client in [greeted(relay.port, "127.0.0.1") for _ in range(4)]:  # my_networks: exempt
            client.close()
    finally:
        for client in held:
            client.close()


def released(relay, ip: str) -> None:
    """Until every session the relay took from `ip` has ended there: a connection counts until the relay
    has seen it end (its "disconnect from" line), which may be a moment after the client closed it."""
    def all_ended() -> bool:
        log = relay.log()
        taken = len(re.findall(rf"(?<!dis)connect from unknown\[{re.escape(ip)}\]", log))
        return taken > 0 and taken == log.count(f"disconnect from unknown[{ip}]")

    wait_until(all_ended, what=f"the sessions from {ip} to end")


def test_the_count_goes_down_when_clients_leave_or_reset(make_relay, sink):
    relay = make_relay(sink.port, client_connection_count_limit=2)
    for _ in range(3):  # leaving in every way gives the slot back, again and again
        one, two = greeted(relay.port, "127.0.0.2"), greeted(relay.port, "127.0.0.2")
        assert refused(relay.port, "127.0.0.2").startswith("421 4.7.0 ")
        reset(one)
        two.command("QUIT")
        two.close()
        released(relay, "127.0.0.2")
        third, fourth = greeted(relay.port, "127.0.0.2"), greeted(relay.port, "127.0.0.2")
        reset(third)
        reset(fourth)
        released(relay, "127.0.0.2")


def test_max_connections_still_holds_across_addresses(make_relay, sink):
    relay = make_relay(sink.port, max_connections=3, client_connection_count_limit=2)
    held = [greeted(relay.port, source) for source in ("127.0.0.2", "127.0.0.2", "127.0.0.3")]
    try:
        assert refused(relay.port, "127.0.0.4") == "421 4.7.0 gw.example.com Error: too many connections, try again later"
        assert refused(relay.port, "127.0.0.2") == "421 4.7.0 gw.example.com Error: too many connections, try again later"
    finally:
        for client in held:
            client.close()
    # Refusals by the overall cap took nothing from the per-client count: 127.0.0.2 gets its two again.
    released(relay, "127.0.0.2")
    released(relay, "127.0.0.3")
    again = [greeted(relay.port, "127.0.0.2") for _ in range(2)]
    for client in again:
        client.close()


def test_the_connection_rate_limit_counts_every_attempt_in_a_minute(make_relay, sink):
    relay = make_relay(sink.port, client_connection_rate_limit=3)
    for _ in range(3):
        with greeted(relay.port, "127.0.0.2") as client:
            client.command("QUIT")
    # Gone, yet a fourth connection within the minute is one too many; and every further try counts too.
    assert refused(relay.port, "127.0.0.2") == TOO_MANY.format(ip="127.0.0.2")
    assert refused(relay.port, "127.0.0.2") == TOO_MANY.format(ip="127.0.0.2")
    relay.wait_log(r"warning: Connection rate limit exceeded: 5 from unknown\[127\.0\.0\.2\] for service smtp")
    greeted(relay.port, "127.0.0.3").close()  # another stranger still gets in
    for _ in range(5):  # my_networks: exempt
        greeted(relay.port, "127.0.0.1").close()


def test_anvil_statistics_are_logged_at_shutdown(make_relay, sink):
    relay = make_relay(sink.port, client_connection_count_limit=5)
    held = [greeted(relay.port, "127.0.0.2") for _ in range(3)] + [greeted(relay.port, "127.0.0.3")]
    for client in held:
        client.close()
    assert relay.stop() == 0
    log = relay.log()
    assert "statistics: max connection count 3 for (smtp:127.0.0.2) at " in log
    assert "statistics: max connection rate 4/60s for (smtp:127.0.0.2) at " not in log
    assert "statistics: max connection rate 3/60s for (smtp:127.0.0.2) at " in log


def test_the_rate_starts_again_each_time_unit_and_idle_clients_are_forgotten():
    """anvil's bookkeeping on its own clock: a minute later the rate starts from one; the table does not grow."""
    from relay.anvil import RATE_TIME_UNIT, Anvil

    now = [1000.0]
    anvil = Anvil(clock=lambda: now[0])
    assert [anvil.connect("smtp:192.0.2.7") for _ in range(3)] == [(1, 1), (2, 2), (3, 3)]
    for _ in range(3):
        anvil.disconnect("smtp:192.0.2.7")
    now[0] += RATE_TIME_UNIT - 1
    assert anvil.connect("smtp:192.0.2.7") == (1, 4)  # still the same minute
    anvil.disconnect("smtp:192.0.2.7")
    now[0] += 1
    assert anvil.connect("smtp:192.0.2.7") == (1, 1)
    anvil.disconnect("smtp:192.0.2.7")
    for n in range(1000):
        anvil.connect(f"smtp:198.51.100.{n}")
        anvil.disconnect(f"smtp:198.51.100.{n}")
    now[0] += RATE_TIME_UNIT
    anvil.connect("smtp:203.0.113.1")
    assert list(anvil.clients) == ["smtp:203.0.113.1"]
    anvil.disconnect("smtp:203.0.113.1")
    anvil.disconnect("smtp:203.0.113.1")  # one disconnect too many changes nothing
    assert anvil.connect("smtp:203.0.113.1") == (1, 2)
