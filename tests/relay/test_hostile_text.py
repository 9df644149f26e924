"""Control bytes and terminal escapes from clients and next hops never reach the log or posternctl raw.

A stranger and a trusted client send ESC sequences (retitle the terminal, clear the screen),
BEL, C1 controls and bare CR in every field they choose; a next hop answers with them too.
What the admin reads (the log file, `posternctl log`, `posternctl queue list` and
`queue show`) carries "?" in their place, as Postfix's logs do.
"""

import re
import subprocess
import sys

from tests.support.raw_smtp import RawSmtp

CTL = [sys.executable, "-m", "relay.ctl"]
TITLE, CLEAR = "\x1b]0;pwned\x07", "\x1b[2J"
# Anything a terminal acts on: C0 controls (LF aside), DEL, C1 controls, bidirectional overrides.
RAW = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def ctl(relay, *args: str) -> str:
    result = subprocess.run(CTL + ["--socket", str(relay.workdir / "control.sock"), *args],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return result.stdout


def assert_clean(text: str, where: str, allowed: str = "") -> None:
    found = {ch for ch in RAW.findall(text) if ch not in allowed}
    assert not found, f"{where} carries raw {sorted(found)!r}"


def test_escapes_from_clients_and_next_hops_are_neutralised(make_relay, sink):
    sink.rcpt_replies["bob@example.com"] = f"450 4.2.0 {TITLE}busy{CLEAR}\x9b31m"  # a hostile next hop
    relay = make_relay(sink.port)
    with RawSmtp(relay.port, source="127.0.0.2") as stranger:
        stranger.start_session()
        assert stranger.command(f"EHLO {TITLE}").startswith("501 ")
        stranger.command("EHLO client.example.net")
        # aiosmtpd refuses the bare forms; quoted local parts reach the relay's own checks and its log.
        assert stranger.command(f"MAIL FROM:<x{CLEAR}@example.net>").startswith("501 ")
        assert stranger.command(f'MAIL FROM:<"x{CLEAR}"@example.net>').startswith("501 ")
        assert stranger.command("MAIL FROM:<ok@example.net>").startswith("250 ")
        assert stranger.command(f'RCPT TO:<"y{TITLE}\r"@example.com>').startswith("501 ")
        reply = stranger.command(f"{CLEAR}XYZZY\x07\x9b")
        assert reply.startswith("500 ") and "\x1b" not in reply
    body = (f"Subject: {TITLE}hello{CLEAR} \u202eevil\r\nMessage-ID: <{CLEAR}@x>\r\n"
            f"X-Odd: one\rtwo\r\n\r\nbody\r\n").encode()
    relay.send("alice@example.net", ["bob@example.com"], body)
    relay.wait_log(r"status=deferred")

    log = relay.log()
    assert 'NOQUEUE: reject: MAIL from unknown[127.0.0.2]: 501 5.1.7 Bad sender address syntax; from=<"x?[2J"@example.net>' in log
    assert 'to=<"y?]0;pwned??"@example.com>' in log
    assert "?]0;pwned?busy?[2J?31m" in log
    assert_clean(log, "the log file")
    assert_clean(ctl(relay, "log", "-n", "500"), "posternctl log")

    listing = ctl(relay, "queue", "list")
    assert "?]0;pwned?busy?[2J?31m" in listing
    assert_clean(listing, "posternctl queue list")
    assert_clean(ctl(relay, "queue", "list", "--format", "mailq"), "posternctl queue list --format mailq")
    [queue_id] = re.findall(r"^([0-9A-F]{16}) ", listing, re.M)
    shown = ctl(relay, "queue", "show", queue_id)
    assert "Subject: ?]0;pwned?hello?[2J ?evil" in shown
    assert_clean(shown, "posternctl queue show", allowed="\t")
