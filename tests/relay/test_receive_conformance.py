"""The receiving side speaks SMTP as Postfix's smtpd does: long lines, SMTPUTF8, BODY and
DSN parameters, MAIL before HELO, reject logging and the Received: header.

One relay serves most tests: its next hop is down, so what it accepted stays in the
queue to be read back; its DNS server gives 127.0.0.1 a forward-confirmed name.
"""

from __future__ import annotations

import json
import re
import socket
import ssl
import time

import dns.message as dns_message
import dns.rcode as dns_rcode
import pytest

from relay import esmtp
from tests.support.certs import self_signed
from tests.support.dns_server import DnsServer
from tests.support.net import free_port
from tests.support.raw_smtp import RawSmtp
from tests.support.relay import RelayProcess, base_mta

GOOD = ("Subject: hi\r\n\r\nhello\r\n").encode()


@pytest.fixture(scope="module")
def dns():
    server = DnsServer({
        ("1.0.0.127.in-addr.arpa", "PTR"): ["client.example.net."],
        ("client.example.net", "A"): ["127.0.0.1"],
        ("2.0.0.127.in-addr.arpa", "PTR"): ["liar.example.net."],  # its name points elsewhere
        ("liar.example.net", "A"): ["192.0.2.1"],
        ("4.0.0.127.in-addr.arpa", "PTR"): ["evil\\013x.example.net."],  # a CR in the name
        ("evil\\013x.example.net", "A"): ["127.0.0.4"],
    }).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, dns):
    workdir = tmp_path_factory.mktemp("gateway")
    port = free_port()
    cert, key = self_signed(workdir)
    mta = {**base_mta(port, 1), "peername_lookup": True, "dns_servers": [dns.address],
           "message_size_limit": 200000, "tls": {"cert_file": str(cert), "key_file": str(key)}}
    relay = RelayProcess(workdir, mta, port).start()
    yield relay
    relay.kill()


def session(relay, source: str = "127.0.0.1", helo: str | None = "client.example.net") -> RawSmtp:
    raw = RawSmtp(relay.port, source=source)
    assert raw.greeting().startswith("220 ")
    if helo:
        assert raw.command(f"EHLO {helo}").startswith("250 ")
    return raw


def send(raw: RawSmtp, data: bytes, mail: str = "MAIL FROM:<alice@example.net>",
         rcpts: tuple[str, ...] = ("RCPT TO:<bob@example.com>",)) -> str:
    """One transaction; the queue id."""
    assert raw.command(mail).startswith("250 "), mail
    for rcpt in rcpts:
        assert raw.command(rcpt).startswith("250 "), rcpt
    assert raw.command("DATA").startswith("354 ")
    reply = raw.command(data + b".")
    match = re.fullmatch(r"250 2\.0\.0 Ok: queued as (\S+)", reply)
    assert match, reply
    return match.group(1)


def queued(relay, queue_id: str) -> tuple[dict, bytes]:
    """The envelope and the message exactly as the queue file holds them."""
    data = (relay.state_dir / "queue" / "msg" / queue_id).read_bytes()
    _magic, envelope, message = data.split(b"\n", 2)
    return json.loads(envelope), message


# --- long lines ---------------------------------------------------------------------


def test_a_data_line_longer_than_1000_octets_is_accepted_whole(gateway):
    line = b"x" * 5000
    with session(gateway) as raw:
        queue_id = send(raw, b"Subject: long\r\n\r\n" + line + b"\r\nend\r\n")
    _, message = queued(gateway, queue_id)
    assert message.endswith(b"\r\n\r\n" + line + b"\r\nend\r\n")
    assert "Line too long" not in gateway.log()


def test_a_long_header_line_is_kept_below_header_size_limit(gateway):
    subject = b"Subject: " + b"s" * 3000 + b"\r\n"
    with session(gateway) as raw:
        queue_id = send(raw, subject + b"\r\nbody\r\n")
    _, message = queued(gateway, queue_id)
    assert subject in message


def test_a_command_longer_than_postfix_line_limit_is_refused_and_the_session_goes_on(gateway):
    with session(gateway) as raw:
        assert raw.command("NOOP " + "x" * 3000) == "500 5.5.2 gw.example.com Error: command too long"
        assert raw.command("NOOP") == "250 2.0.0 Ok"
        # Longer than aiosmtpd's 512 octets, within Postfix's 2048: taken.
        orcpt = "ORCPT=rfc822;" + "o" * 1200 + "@example.com"
        assert raw.command("MAIL FROM:<alice@example.net>").startswith("250 ")
        assert raw.command(f"RCPT TO:<bob@example.com> {orcpt}").startswith("250 ")
    gateway.wait_log(r"warning: client\.example\.net\[127\.0\.0\.1\]: request longer than 2048")


def test_lines_that_are_no_command_are_refused_and_the_fifth_unknown_command_ends_the_session(gateway):
    with session(gateway) as raw:
        assert raw.command("") == "500 5.5.2 Error: bad syntax"
        assert raw.command(b"N\xd6OP") == "500 5.5.2 Error: bad syntax"  # a verb is ASCII
        for verb in ("FOO", "BAR", "BAZ", "QUX"):
            assert raw.command(verb) == f'500 5.5.2 Error: command "{verb}" not recognized'
        assert raw.command("noop") == "250 2.0.0 Ok"  # the verb in any case; the session goes on
        assert raw.command("ZAP") == "502 5.5.1 Too many unrecognized commands, goodbye."
        assert raw.wait_closed(5) == b""


def test_a_command_line_that_comes_in_pieces_is_answered_once_whole(gateway):
    with session(gateway) as raw:
        for piece in (b"MAIL FROM:<ali", b"ce@exam", b"ple.net>\r", b"\n"):
            raw.send(piece)
            time.sleep(0.05)  # each piece its own read on the relay's side
        assert raw.reply() == ["250 2.1.0 Ok"]
        for _ in range(3):  # too long, in pieces: refused once, when its end has come
            raw.send(b"NOOP " + b"x" * 1000)
            time.sleep(0.05)
        raw.send(b"\r\nRSET\r\n")
        assert raw.reply() == ["500 5.5.2 gw.example.com Error: command too long"]
        assert raw.reply() == ["250 2.0.0 Ok"]
        assert raw.command("NOOP") == "250 2.0.0 Ok"


def test_commands_pipelined_in_one_write_are_answered_in_order_each_once(gateway):
    with session(gateway, source="127.0.0.3") as raw:  # outside my_networks: the second RCPT is refused
        raw.send(b"NOOP\r\nRSET\r\nMAIL FROM:<alice@example.net>\r\nRCPT TO:<bob@example.com>\r\n"
                 b"RCPT TO:<nobody@elsewhere.example.org>\r\nDATA\r\n")
        assert [raw.reply()[-1] for _ in range(6)] == [
            "250 2.0.0 Ok", "250 2.0.0 Ok", "250 2.1.0 Ok", "250 2.1.5 Ok",
            "554 5.7.1 <nobody@elsewhere.example.org>: Relay access denied",
            "354 End data with <CR><LF>.<CR><LF>"]
        assert raw.command(GOOD + b".").startswith("250 2.0.0 Ok: queued as ")
        assert raw.command("QUIT") == "221 2.0.0 Bye"
        assert raw.wait_closed(5) == b""


def test_a_client_that_closes_its_side_between_commands_is_disconnected(gateway):
    with session(gateway) as raw:
        raw.sock.shutdown(socket.SHUT_WR)
        assert raw.wait_closed(5) == b""


# --- SMTPUTF8 -----------------------------------------------------------------------


def test_smtputf8_and_dsn_are_offered(gateway):
    with session(gateway, helo=None) as raw:
        raw.send(b"EHLO client.example.net\r\n")
        lines = [line[4:] for line in raw.reply()]
    assert lines[1:] == ["PIPELINING", "SIZE 200000", "STARTTLS", "ENHANCEDSTATUSCODES", "8BITMIME", "DSN",
                         "SMTPUTF8", "CHUNKING"]


def test_utf8_addresses_with_smtputf8_are_queued_as_such(gateway):
    with session(gateway) as raw:
        queue_id = send(raw, GOOD, mail="MAIL FROM:<jörg@bücher.example> SMTPUTF8",
                        rcpts=("RCPT TO:<zoë@example.com>",))
    envelope, message = queued(gateway, queue_id)
    assert (envelope["sender"], envelope["recipients"], envelope["smtputf8"]) == (
        "jörg@bücher.example", ["zoë@example.com"], True)
    assert envelope["protocol"] == "UTF8SMTP"
    assert "with UTF8SMTP id".encode() in message and "for <zoë@example.com>".encode() in message


def test_without_smtputf8_a_utf8_domain_is_refused_but_a_utf8_local_part_is_taken(gateway):
    with session(gateway) as raw:
        assert raw.command("MAIL FROM:<a@bücher.example>") == "501 5.1.7 Bad sender address syntax"
        assert raw.command("MAIL FROM:<jörg@example.net>").startswith("250 ")
        assert raw.command("RCPT TO:<b@bücher.example.com>") == "501 5.1.3 Bad recipient address syntax"
        assert raw.command("RCPT TO:<zoë@example.com>").startswith("250 ")
    gateway.wait_log(r"NOQUEUE: reject: MAIL from client\.example\.net\[127\.0\.0\.1\]: 501 5\.1\.7 Bad sender "
                     r"address syntax; from=<a@bücher\.example> proto=ESMTP helo=<client\.example\.net>")
    gateway.wait_log(r"NOQUEUE: reject: RCPT from client\.example\.net\[127\.0\.0\.1\]: 501 5\.1\.3 Bad recipient "
                     r"address syntax; from=<jörg@example\.net> to=<b@bücher\.example\.com> proto=ESMTP")


def test_a_command_that_is_not_utf8_is_refused(gateway):
    with session(gateway) as raw:
        assert raw.command(b"MAIL FROM:<j\xf6rg@example.net>") == "500 5.5.2 Error: bad UTF-8 syntax"
        assert raw.command("MAIL FROM:<alice@example.net>").startswith("250 ")
    gateway.wait_log(r"NOQUEUE: reject: MAIL from client\.example\.net\[127\.0\.0\.1\]: 500 5\.5\.2 Error: bad UTF-8")


# --- BODY, SIZE and DSN parameters ----------------------------------------------------


def test_body_and_dsn_parameters_are_kept_in_the_envelope(gateway):
    with session(gateway) as raw:
        queue_id = send(raw, GOOD, mail="MAIL FROM:<alice@example.net> BODY=8bitmime RET=hdrs ENVID=Q+2BId-7",
                        rcpts=("RCPT TO:<bob@example.com> NOTIFY=delay,success ORCPT=rfc822;Bob+2Bx@example.com",
                               "RCPT TO:<carol@example.com> NOTIFY=NEVER",
                               "RCPT TO:<dave@example.com>"))
    envelope, _ = queued(gateway, queue_id)
    assert (envelope["body"], envelope["ret"], envelope["envid"]) == ("8BITMIME", "HDRS", "Q+Id-7")
    assert envelope["notify"] == {"bob@example.com": "SUCCESS,DELAY", "carol@example.com": "NEVER"}
    assert envelope["orcpt"] == {"bob@example.com": "rfc822;Bob+x@example.com"}


@pytest.mark.parametrize(("mail", "reply"), [
    ("BODY=BINARYMIME", "555 5.5.4 Unsupported option: BODY=BINARYMIME"),
    ("SIZE=12k", "501 5.5.4 Bad message size syntax"),
    ("SIZE=200001", "552 5.3.4 Message size exceeds fixed limit"),
    ("RET=FULL RET=HDRS", "501 5.5.4 Bad RET parameter syntax"),
    ("RET=ALL", "501 5.5.4 Bad RET parameter syntax"),
    ("ENVID=a+zz", "501 5.5.4 Bad ENVID parameter syntax"),
    ("ENVID=a ENVID=b", "501 5.5.4 Bad ENVID parameter syntax"),
    ("XFOO=1", "555 5.5.4 Unsupported option: XFOO=1"),
])
def test_bad_mail_parameters_get_postfix_replies_and_are_logged(gateway, mail, reply):
    with session(gateway) as raw:
        assert raw.command(f"MAIL FROM:<alice@example.net> {mail}") == reply
        assert raw.command("RCPT TO:<bob@example.com>") == "503 5.5.1 Error: need MAIL command"
    gateway.wait_log(re.escape(f"NOQUEUE: reject: MAIL from client.example.net[127.0.0.1]: {reply}; "
                               "from=<alice@example.net> proto=ESMTP helo=<client.example.net>"))


@pytest.mark.parametrize(("rcpt", "reply"), [
    ("NOTIFY=NEVER,SUCCESS", "501 5.5.4 Error: Bad NOTIFY parameter syntax"),
    ("NOTIFY=SOMETIMES", "501 5.5.4 Error: Bad NOTIFY parameter syntax"),
    ("NOTIFY=DELAY NOTIFY=FAILURE", "501 5.5.4 Error: Bad NOTIFY parameter syntax"),
    ("ORCPT=bob@example.com", "501 5.5.4 Error: Bad ORCPT parameter syntax"),
    ("ORCPT=;bob@example.com", "501 5.5.4 Error: Bad ORCPT parameter syntax"),
    ("ORCPT=rfc822;a+2 ORCPT=rfc822;b", "501 5.5.4 Error: Bad ORCPT parameter syntax"),
    ("BODY=7BIT", "555 5.5.4 Unsupported option: BODY=7BIT"),
])
def test_bad_rcpt_parameters_get_postfix_replies_and_are_logged(gateway, rcpt, reply):
    with session(gateway) as raw:
        assert raw.command("MAIL FROM:<alice@example.net>").startswith("250 ")
        assert raw.command(f"RCPT TO:<bob@example.com> {rcpt}") == reply
    gateway.wait_log(re.escape(f"NOQUEUE: reject: RCPT from client.example.net[127.0.0.1]: {reply}; "
                               "from=<alice@example.net> to=<bob@example.com> proto=ESMTP"))


def test_xtext_and_notify_decoding():
    assert esmtp.xtext_decode("a+2Bb+3dc") == "a+b=c"
    assert esmtp.xtext_decode("a+2") is None
    assert esmtp.uxtext_decode("j\\x{F6}rg@example.com") == "jörg@example.com"
    assert esmtp.notify_value("failure , Success") == "SUCCESS,FAILURE"
    assert esmtp.notify_value("never") == "NEVER"
    assert esmtp.rcpt_params(["ORCPT=utf-8;z\\x{F6}@example.com"]).orcpt == "utf-8;zö@example.com"


# --- reject logging ------------------------------------------------------------------


def test_refusals_at_the_end_of_data_are_logged_with_their_stage(gateway):
    with session(gateway) as raw:
        assert raw.command("MAIL FROM:<alice@example.net>").startswith("250 ")
        assert raw.command("RCPT TO:<bob@example.com>").startswith("250 ")
        assert raw.command("DATA").startswith("354 ")
        reply = raw.command(b"Subject: big\r\n\r\n" + (b"y" * 998 + b"\r\n") * 210 + b".")
        assert reply == "552 5.3.4 Message size exceeds fixed limit"
        assert raw.command("FOO") == '500 5.5.2 Error: command "FOO" not recognized'
    gateway.wait_log(r"NOQUEUE: reject: END-OF-MESSAGE from client\.example\.net\[127\.0\.0\.1\]: 552 5\.3\.4 Message "
                     r"size exceeds fixed limit; from=<alice@example\.net> proto=ESMTP helo=<client\.example\.net>")
    gateway.wait_log(r"NOQUEUE: reject: UNKNOWN from client\.example\.net\[127\.0\.0\.1\]: 500 5\.5\.2 Error: "
                     r"command \"FOO\" not recognized; proto=ESMTP helo=<client\.example\.net>")


def test_a_policy_refusal_is_logged_once(gateway):
    with session(gateway, source="127.0.0.2") as raw:  # not in my_networks
        assert raw.command("MAIL FROM:<spammer@example.net>").startswith("250 ")
        assert raw.command("RCPT TO:<victim@elsewhere.org>").startswith("554 5.7.1 ")
        raw.command("QUIT")
    gateway.wait_log(r"disconnect from unknown\[127\.0\.0\.2\]")
    assert gateway.log().count("to=<victim@elsewhere.org>") == 1


def test_data_after_only_refused_recipients_is_554_as_postfix(gateway):
    with session(gateway, source="127.0.0.2") as raw:  # not in my_networks
        assert raw.command("DATA") == "503 5.5.1 Error: need RCPT command"
        assert raw.command("MAIL FROM:<spammer@example.net>").startswith("250 ")
        assert raw.command("RCPT TO:<victim@elsewhere.org>").startswith("554 5.7.1 ")
        assert raw.command("DATA") == "554 5.5.1 Error: no valid recipients"
        raw.command("QUIT")
    gateway.wait_log(r"NOQUEUE: reject: DATA from unknown\[127\.0\.0\.2\]: 554 5\.5\.1 Error: no valid recipients; "
                     r"from=<spammer@example\.net>")


# --- MAIL before HELO; a message without headers ---------------------------------------


def test_mail_before_helo_is_accepted_and_a_headerless_body_stays_body(gateway):
    with session(gateway, helo=None) as raw:
        queue_id = send(raw, b"just a line of text: it looks like a header\r\nsecond line\r\n")
    envelope, message = queued(gateway, queue_id)
    assert envelope["protocol"] == "SMTP"
    assert message.startswith(b"Received: from client.example.net (client.example.net [127.0.0.1])\r\n"
                              b"\tby gw.example.com (Postern) with SMTP id ")
    assert message.endswith(b"\r\n\r\njust a line of text: it looks like a header\r\nsecond line\r\n")


def test_text_in_the_header_section_starts_the_body(gateway):
    with session(gateway) as raw:
        queue_id = send(raw, b"Subject: hi\r\n folded\r\nnot a header\r\nmore\r\n")
    _, message = queued(gateway, queue_id)
    assert message.endswith(b"Subject: hi\r\n folded\r\n\r\nnot a header\r\nmore\r\n")


# --- the Received: header ---------------------------------------------------------------


def test_received_header_names_the_verified_client_and_the_one_recipient(gateway):
    with session(gateway, helo="helo.example.net") as raw:
        queue_id = send(raw, GOOD)
    envelope, message = queued(gateway, queue_id)
    assert re.match(
        rb"Received: from helo\.example\.net \(client\.example\.net \[127\.0\.0\.1\]\)\r\n"
        rb"\tby gw\.example\.com \(Postern\) with ESMTP id " + queue_id.encode() + rb"\r\n"
        rb"\tfor <bob@example\.com>; \w{3}, \d{1,2} \w{3} \d{4} \d\d:\d\d:\d\d [+-]\d{4}\r\n", message)
    assert envelope["client"] == "client.example.net[127.0.0.1]"


def test_received_header_without_for_when_there_are_several_recipients(gateway):
    with session(gateway) as raw:
        queue_id = send(raw, GOOD, rcpts=("RCPT TO:<bob@example.com>", "RCPT TO:<carol@example.com>"))
    _, message = queued(gateway, queue_id)
    assert re.match(rb"Received: from [^\r\n]+\r\n\tby gw\.example\.com \(Postern\) with ESMTP id \w+;\r\n"
                    rb"\t\w{3}, \d{1,2} \w{3} \d{4} [\d:]{8} [+-]\d{4}\r\n", message)


# A name that points elsewhere; no PTR at all; a name that is no host name (it would reach the header).
@pytest.mark.parametrize("source", ["127.0.0.2", "127.0.0.3", "127.0.0.4"])
def test_a_client_without_a_forward_confirmed_name_is_unknown(gateway, source):
    with session(gateway, source=source) as raw:
        queue_id = send(raw, GOOD)
    _, message = queued(gateway, queue_id)
    assert message.startswith(f"Received: from client.example.net (unknown [{source}])\r\n".encode())


def test_received_header_describes_the_tls_session(gateway):
    with session(gateway) as raw:
        assert raw.command("STARTTLS").startswith("220 ")
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        raw.starttls(context)
        version, cipher = raw.sock.version(), raw.sock.cipher()
        assert raw.command("EHLO client.example.net").startswith("250 ")
        queue_id = send(raw, GOOD)
    _, message = queued(gateway, queue_id)
    assert message.startswith(
        f"Received: from client.example.net (client.example.net [127.0.0.1])\r\n"
        f"\t(using {version} with cipher {cipher[0]} ({cipher[2]}/{cipher[2]} bits))\r\n"
        f"\t(No client certificate requested)\r\n"
        f"\tby gw.example.com (Postern) with ESMTPS id {queue_id}\r\n".encode())


def test_without_peername_lookup_the_client_is_unknown_and_dns_is_not_asked(make_relay, dns):
    dns.queries.clear()
    relay = make_relay(1, dns_servers=[dns.address], peername_lookup=False)
    with session(relay) as raw:
        queue_id = send(raw, GOOD)
    _, message = queued(relay, queue_id)
    assert message.startswith(b"Received: from client.example.net (unknown [127.0.0.1])\r\n")
    assert not [query for query in dns.queries if query[1] == "PTR"]


def test_a_name_is_looked_up_once_then_remembered(gateway, dns):
    ptr = ("1.0.0.127.in-addr.arpa", "PTR")
    with session(gateway) as raw:
        send(raw, GOOD)
    asked = dns.queries.count(ptr)
    with session(gateway) as raw:
        send(raw, GOOD)
    assert dns.queries.count(ptr) == asked


def test_a_silent_dns_server_delays_neither_the_greeting_nor_ehlo_and_the_client_is_unknown(make_relay):
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # takes the queries, never answers
    silent.bind(("127.0.0.1", 0))
    try:
        relay = make_relay(1, dns_servers=[f"127.0.0.1:{silent.getsockname()[1]}"], peername_lookup=True)
        with session(relay) as raw:  # greeting and EHLO answered while the lookup is pending
            silent.settimeout(10)
            assert silent.recvfrom(512)  # the PTR query did go out
            assert "connect from" not in relay.log()  # logged with the name, once the lookup ends
            queue_id = send(raw, GOOD)  # MAIL waits for the lookup's 5 s limit
        _, message = queued(relay, queue_id)
        assert message.startswith(b"Received: from client.example.net (unknown [127.0.0.1])\r\n")
    finally:
        silent.close()


def test_clients_that_come_and_go_during_the_lookup_cost_one_query_and_its_answer_is_kept(make_relay):
    """Five clients from one address that read the greeting and QUIT while the PTR lookup is pending
    (a monitoring probe, a scanner): one query goes out, and its answer serves the next client."""
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # answers only when the test says so
    silent.bind(("127.0.0.1", 0))
    silent.settimeout(10)
    try:
        relay = make_relay(1, dns_servers=[f"127.0.0.1:{silent.getsockname()[1]}"], peername_lookup=True)
        for _ in range(5):
            with session(relay, source="127.0.0.5", helo=None) as raw:
                assert raw.command("QUIT").startswith("221 ")
        relay.wait_log(r"disconnect from unknown\[127\.0\.0\.5\]", count=5)
        query, client = silent.recvfrom(512)
        silent.settimeout(0.5)
        with pytest.raises(TimeoutError):  # one query, not one a connection
            silent.recvfrom(512)
        answer = dns_message.make_response(dns_message.from_wire(query))
        answer.set_rcode(dns_rcode.NXDOMAIN)
        silent.sendto(answer.to_wire(), client)
        silent.settimeout(2)
        with session(relay, source="127.0.0.5") as raw:
            queue_id = send(raw, GOOD)
        _, message = queued(relay, queue_id)
        assert message.startswith(b"Received: from client.example.net (unknown [127.0.0.5])\r\n")
        with pytest.raises(TimeoutError):  # the answer was kept: no query for the sixth client
            silent.recvfrom(512)
    finally:
        silent.close()


def test_the_greeting_comes_once_at_connect_and_nothing_before_the_first_reply(gateway):
    """The 220 is written as the connection is taken, not from the session's first step; aiosmtpd's
    own greeting must then not follow it (a client would read it as the reply to its EHLO)."""
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        sock.settimeout(10)
        first = sock.recv(4096)
        sock.settimeout(0.5)
        with pytest.raises(TimeoutError):  # nothing more until the client speaks
            sock.recv(4096)
        assert re.fullmatch(rb"220 gw\.example\.com [^\r\n]*\r\n", first), first
        sock.settimeout(10)
        sock.sendall(b"EHLO client.example.net\r\n")
        assert sock.recv(4096).startswith(b"250-gw.example.com")
