"""Cases on the delivering side: what the next hop answers and what becomes of the mail."""

import re

from tests.support.scripted_hop import DEFAULT_EXTENSIONS, DROP, Script

from .cases import (CASES, MARKER, RCPT, SENDER, Case, Session, all_done, below_trace, bounce, case, cls, code,
                    first_attempts, message, outcome, passed_on, relayed)

CAROL = "carol@example.com"


def send(peer, content: bytes | None = None, rcpts: tuple[str, ...] = (RCPT,), mail_params: str = "",
         rcpt_params: str = "") -> int:
    """Send one message (it must be accepted); returns the log mark from before it."""
    mark = peer.mark()
    with Session(peer) as session:
        replies = session.mail(SENDER, rcpts, message() if content is None else content, mail_params, rcpt_params)
    assert cls(replies[-1]) == "2", f"{peer.name} did not take the message: {replies}"
    return mark


def settled(peer, mark: int, rcpts: tuple[str, ...] = (RCPT,)) -> dict:
    """The first attempt's status for each recipient; for mail that bounced, the bounce's fields."""
    first = first_attempts(peer, mark, rcpts)
    seen = {"first attempt": first}
    if any(text.startswith("bounced") for text in first.values()):
        seen["log"] = outcome(peer, mark, rcpts)
        seen["bounce"] = bounce(peer)
    return seen


def _hop_answers(name: str, compares: str, script, status: str) -> None:
    """A case where the next hop answers as `script` says and the message waits or bounces (`status`,
    what Postfix does)."""
    def run(peer):
        return settled(peer, send(peer))

    def postfix(seen: dict) -> bool:
        return seen["first attempt"][RCPT].startswith(status)
    CASES.append(Case(name, "delivery", compares, run, script=script, postfix=postfix))


_STAGES = [
    ("greeting_dropped", "the next hop closes the connection before its greeting", lambda: Script(greeting=DROP)),
    ("greeting_421", "421 greeting", lambda: Script(greeting="421 4.3.2 hop.example.org busy")),
    ("greeting_554", "554 greeting", lambda: Script(greeting="554 5.3.2 hop.example.org no service")),
    ("ehlo_421", "421 to EHLO", lambda: Script(ehlo="421 4.3.2 closing")),
    ("mail_451", "451 to MAIL", lambda: Script(mail="451 4.3.0 try again later")),
    ("mail_550", "550 to MAIL", lambda: Script(mail="550 5.7.1 sender refused")),
    ("rcpt_450", "450 to RCPT", lambda: Script(rcpt={RCPT: "450 4.2.0 mailbox busy"})),
    ("rcpt_550", "550 to RCPT", lambda: Script(rcpt={RCPT: "550 5.1.1 <bob@example.com>: user unknown"})),
    ("rcpt_550_without_enhanced_code", "550 to RCPT without an enhanced status code",
     lambda: Script(rcpt={RCPT: "550 no such user"})),
    ("rcpt_dropped", "the connection dropped in reply to RCPT", lambda: Script(rcpt={RCPT: DROP})),
    ("data_451", "451 to DATA", lambda: Script(data="451 4.3.0 not now")),
    ("data_554", "554 to DATA", lambda: Script(data="554 5.6.0 no data for you")),
    ("dot_451", "451 after the final dot", lambda: Script(dot="451 4.3.0 queue full")),
    ("dot_554", "554 after the final dot", lambda: Script(dot="554 5.7.1 message refused")),
    ("dot_dropped", "the connection dropped after the final dot", lambda: Script(dot=DROP)),
    ("greeting_timeout", "a greeting slower than the reply timeout",
     lambda: Script(delay={"greeting": 6})),
    ("dot_timeout", "a reply to the final dot slower than the reply timeout",
     lambda: Script(delay={"dot": 6})),
]
_BOUNCED = ("mail_550", "rcpt_550", "rcpt_550_without_enhanced_code", "data_554", "dot_554")
for _name, _what, _script in _STAGES:
    _status = "bounced" if _name in _BOUNCED else "deferred"
    _hop_answers(f"next_hop_{_name}", f"{_what}: first attempt {_status} (DSN class); "
                 f"{'full DSN code and bounce fields' if _status == 'bounced' else 'nothing sent'}",
                 _script, _status)


@case("delivery", "the next hop refuses the connection: deferred; once it listens again, delivered once",
      postfix=lambda seen: seen["first attempt"][RCPT].startswith("deferred"))
def next_hop_refuses_connection(peer):
    peer.hop.refuse_connections()
    try:
        mark = send(peer)
        first = first_attempts(peer, mark)
    finally:
        peer.hop.listen()
    peer.flush()
    final = outcome(peer, mark)
    relayed(peer)
    return {"first attempt": first, "final": final, "copies": len(peer.hop.messages(SENDER))}


@case("delivery", "EHLO refused with 502: the client falls back to HELO and delivers",
      script=lambda: Script(ehlo="502 5.5.2 Error: command not recognized"))
def next_hop_ehlo_502_helo_fallback(peer):
    seen = settled(peer, send(peer))
    seen["greeted with"] = [t.helo.split()[0] for t in peer.hop.messages(SENDER)]
    return seen


def _deferred_then_delivered(peer) -> dict:
    """One message: its first attempt, then a flush, its final result, and how many copies arrived."""
    mark = send(peer)
    first = first_attempts(peer, mark)
    peer.flush()
    final = outcome(peer, mark)
    relayed(peer)
    return {"first attempt": first, "final": final, "copies": len(peer.hop.messages(SENDER))}


@case("delivery", "450 to RCPT once, then 250: deferred, retried, delivered exactly once",
      script=lambda: Script(rcpt={RCPT: ["450 4.2.0 mailbox busy", "250 2.1.5 Ok"]}))
def retried_after_rcpt_450(peer):
    return _deferred_then_delivered(peer)


@case("delivery", "451 after the dot once, then 250: deferred, retried, delivered exactly once",
      script=lambda: Script(dot=["451 4.3.0 queue full", "250 2.0.0 Ok"]))
def retried_after_dot_451(peer):
    return _deferred_then_delivered(peer)


@case("delivery", "two recipients, one refused with 550: one delivered, one bounced, bounce names only that one",
      script=lambda: Script(rcpt={CAROL: "550 5.1.1 <carol@example.com>: user unknown"}))
def one_of_two_recipients_refused(peer):
    mark = send(peer, rcpts=(RCPT, CAROL))
    seen = {"log": outcome(peer, mark, (RCPT, CAROL)), "bounce": bounce(peer)}
    seen["delivered to"] = relayed(peer)[0].rcpt_addresses()
    return seen


@case("delivery", "next hop closes the connection after each message (no QUIT): both messages delivered",
      script=lambda: Script(close_after_message=True))
def connection_closed_by_next_hop(peer):
    marks = [send(peer, message(subject="one")), send(peer, message(subject="two"))]
    relayed(peer, count=2)
    statuses = [status for _, _, status in peer.deliveries(marks[0])]
    return {"deferred": statuses.count("deferred"), "sent": statuses.count("sent"),
            "copies": len(peer.hop.messages(SENDER))}


@case("delivery", "a restart while the message waits for a retry: delivered once after the restart",
      script=lambda: Script(rcpt={RCPT: "450 4.2.0 mailbox busy"}))
def restart_while_deferred(peer):
    mark = send(peer)
    first = first_attempts(peer, mark)
    peer.restart()
    peer.hop.script.rcpt = {}
    peer.flush()
    final = outcome(peer, mark)
    relayed(peer)
    return {"first attempt": first, "final": final, "copies": len(peer.hop.messages(SENDER))}


EIGHT_BIT_MIME = message(headers=b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
                         b"Content-Transfer-Encoding: 8bit\r\n", body="Grüße aus Köln\r\n".encode())


def _eight_bit_delivery(peer):
    mark = send(peer, EIGHT_BIT_MIME, mail_params="BODY=8BITMIME")
    seen = {"log": outcome(peer, mark)}
    got = relayed(peer)[0]
    seen.update(content=below_trace(got.content, peer), body=got.mail_params().get("BODY"))
    return seen


@case("delivery", "8-bit message to a next hop without 8BITMIME: converted to quoted-printable",
      script=lambda: Script(extensions=tuple(e for e in DEFAULT_EXTENSIONS if e not in ("8BITMIME", "SMTPUTF8"))),
      postfix=lambda seen: "Content-Transfer-Encoding: quoted-printable" in seen["content"])
def eight_bit_to_seven_bit_next_hop(peer):
    return _eight_bit_delivery(peer)


@case("delivery", "a next hop offering SMTPUTF8 but not 8BITMIME: taken as 8BITMIME (no conversion), as Postfix does",
      script=lambda: Script(extensions=tuple(e for e in DEFAULT_EXTENSIONS if e != "8BITMIME")))
def smtputf8_implies_8bitmime(peer):
    return _eight_bit_delivery(peer)


@case("delivery", "a next hop without SIZE, DSN and PIPELINING: which parameters are passed on; commands in order",
      script=lambda: Script(extensions=("8BITMIME", "ENHANCEDSTATUSCODES")))
def plain_next_hop(peer):
    mark = send(peer, mail_params="BODY=8BITMIME")
    outcome(peer, mark)
    got = relayed(peer)[0]
    return {"passed on": passed_on(got),
            "commands": peer.hop.verbs()[:4]}


@case("delivery", "a next hop with PIPELINING: MAIL, each RCPT and DATA sent together, the message after the 354")
def pipelined_next_hop(peer):
    rcpts = (RCPT, "carol@example.com")
    mark = send(peer, rcpts=rcpts)
    outcome(peer, mark, rcpts)
    got = relayed(peer)[0]
    return {"sent with MAIL": [line.split(b":")[0].decode() for line in got.after_mail.split(b"\r\n") if line],
            "recipients": got.rcpt_addresses()}


@case("delivery", "SMTPUTF8 mail to a next hop without SMTPUTF8: bounced with 5.6.7 as Postfix does",
      script=lambda: Script(extensions=tuple(e for e in DEFAULT_EXTENSIONS if e != "SMTPUTF8")))
def smtputf8_to_next_hop_without_it(peer):
    mark = peer.mark()
    with Session(peer) as session:
        replies = session.mail("jörg@example.net", ("björn@example.com",), message(), "SMTPUTF8")
    seen = {"replies": [code(r) for r in replies]}
    if cls(replies[-1]) == "2":
        seen["log"] = outcome(peer, mark, ("björn@example.com",))
    return seen


@case("delivery", "a 1500-octet line to the next hop: folded at 998 octets as Postfix's smtp_line_length_limit")
def long_line_folded_on_delivery(peer):
    mark = send(peer, message(body=b"w" * 1500 + b"\r\n"))
    outcome(peer, mark)
    body = relayed(peer)[0].content.split(b"\r\n\r\n", 1)[1]
    return {"body lines": body.split(b"\r\n")}


# Bounces and their DSN fields.

@case("bounce", "a bounce: report type, per-recipient fields (Final-Recipient, Action, Status, Diagnostic-Code)",
      script=lambda: Script(rcpt={RCPT: "550 5.1.1 <bob@example.com>: user unknown"}))
def bounce_fields(peer):
    outcome(peer, send(peer))
    return bounce(peer)


@case("bounce", "without RET: the bounce returns the whole message, as Postfix does by default",
      script=lambda: Script(rcpt={RCPT: "550 5.1.1 user unknown"}))
def bounce_returns_whole_message(peer):
    outcome(peer, send(peer))
    return bounce(peer, returned=True)


@case("bounce", "a message deferred past maximal_queue_lifetime (4 s for this case): returned, and the bounce's fields",
      script=lambda: Script(rcpt={RCPT: "450 4.2.0 mailbox busy"}),
      postfix_settings={"maximal_queue_lifetime": "4s", "bounce_queue_lifetime": "4s"},
      postern_settings={"queue": {"minimal_backoff_time": 1, "maximal_backoff_time": 2, "maximal_queue_lifetime": 4}})
def expired_after_queue_lifetime(peer):
    mark = send(peer)
    peer.wait_log(r"status=expired", mark, timeout=90)  # both retry on their own clocks; a busy machine is slower
    report = bounce(peer)
    return {"expired": len(re.findall(r"status=expired", peer.log_since(mark))), "bounce": report}


@case("bounce", "the bounce's own envelope: null sender, to the original sender",
      script=lambda: Script(rcpt={RCPT: "550 5.1.1 user unknown"}))
def bounce_envelope(peer):
    outcome(peer, send(peer))
    got = relayed(peer, sender="")[0]
    return {"mail": got.mail.split()[1], "rcpts": got.rcpt_addresses()}


@case("bounce", "RET=HDRS: the bounce returns the headers only",
      script=lambda: Script(rcpt={RCPT: "550 5.1.1 user unknown"}))
def bounce_ret_hdrs(peer):
    outcome(peer, send(peer, mail_params="RET=HDRS"))
    return bounce(peer, returned=True)


@case("bounce", "ENVID: the bounce carries Original-Envelope-Id",
      script=lambda: Script(rcpt={RCPT: "550 5.1.1 user unknown"}))
def bounce_envid(peer):
    outcome(peer, send(peer, mail_params="ENVID=conformance-42"))
    return bounce(peer)


@case("bounce", "ORCPT: the bounce carries Original-Recipient",
      script=lambda: Script(rcpt={RCPT: "550 5.1.1 user unknown"}))
def bounce_orcpt(peer):
    outcome(peer, send(peer, rcpt_params="ORCPT=rfc822;first@example.org"))
    return bounce(peer)


@case("bounce", "NOTIFY=NEVER and a 550: no bounce is sent",
      script=lambda: Script(rcpt={RCPT: "550 5.1.1 user unknown"}))
def bounce_notify_never(peer):
    mark = send(peer, rcpt_params="NOTIFY=NEVER")
    log = outcome(peer, mark)
    peer.wait_log(r": removed", mark)
    return {"log": log, "notified": "sender non-delivery notification" in peer.log_since(mark)}


@case("bounce", "NOTIFY=SUCCESS to a next hop without DSN: the sender gets a 'relayed' notice",
      script=lambda: Script(extensions=tuple(e for e in DEFAULT_EXTENSIONS if e != "DSN")))
def notify_success_to_hop_without_dsn(peer):
    outcome(peer, send(peer, rcpt_params="NOTIFY=SUCCESS"))
    return bounce(peer)


@case("bounce", "NOTIFY=SUCCESS to a DSN next hop: passed on, no notice from the relay itself")
def notify_success_to_dsn_hop(peer):
    mark = send(peer, rcpt_params="NOTIFY=SUCCESS")
    log = outcome(peer, mark)
    peer.wait_log(r": removed", mark)
    got = relayed(peer)[0]
    return {"log": log, "passed on": passed_on(got)["rcpt"],
            "notices": len(peer.hop.messages(""))}


@case("bounce", "a next hop's refusal in UTF-8: the bounce still goes out, with the diagnostic",
      script=lambda: Script(rcpt={RCPT: "550 5.1.1 Empfänger unbekannt: Müller"}))
def bounce_non_ascii_reply(peer):
    outcome(peer, send(peer))
    report = bounce(peer)
    got = relayed(peer, sender="")[0]
    report["diagnostic mentions the user"] = "ller" in got.content.decode("utf-8", "replace")
    return report


@case("bounce", "a bounced message with 8-bit headers: the returned headers keep them",
      script=lambda: Script(rcpt={RCPT: "550 5.1.1 user unknown"}))
def bounce_eight_bit_headers(peer):
    content = message(subject="Grüße aus Köln", body="Grüße\r\n".encode())
    outcome(peer, send(peer, content, mail_params="BODY=8BITMIME"))
    report = bounce(peer)
    got = relayed(peer, sender="")[0]
    report["subject returned"] = "Grüße aus Köln".encode() in got.content
    return report


# Differences kept on purpose.

def _marker_present(postern: dict, postfix: dict) -> None:
    assert postern["marker"] == 1 and postfix["marker"] == 0
    assert postern["rest"] == postfix["rest"]


@case("delivery", "the loop marker header on relayed mail", postern=_marker_present,
      why="Postern stamps its loop marker (X-Postern-Processed) on every relayed message, for the "
          "internal server's transport rule; Postfix has no such header")
def loop_marker(peer):
    mark = send(peer)
    outcome(peer, mark)
    content = relayed(peer)[0].content
    count = len(re.findall(rb"(?im)^" + MARKER.encode() + rb":", content))
    return {"marker": count, "rest": below_trace(content, peer)}


def _smuggling_neutralised(postern: dict, postfix: dict) -> None:
    assert postfix["messages"] == 2, postfix  # Postfix 3.7's default takes "\n.\n" as the end of DATA
    assert postern["messages"] == 1, postern
    assert "mallory" not in postern["commands"], postern


@case("receive", "bare LF dot bare LF inside DATA (SMTP smuggling): how many messages come out",
      postern=_smuggling_neutralised,
      why="Postfix 3.7's defaults (smtpd_forbid_bare_newline = no) end DATA at `<LF>.<LF>` and run what follows "
          "as commands, which lets one message smuggle a second; Postern never ends DATA there")
def bare_lf_smuggling(peer):
    smuggled = (b"Subject: outer\r\n\r\nouter body\n.\nMAIL FROM:<mallory@example.net>\r\nRCPT TO:<bob@example.com>"
                b"\r\nDATA\r\nSubject: smuggled\r\n\r\ninner\r\n")
    mark = peer.mark()
    with Session(peer) as session:
        session.mail(content=smuggled)
    all_done(peer, mark)
    messages = peer.hop.messages()
    return {"messages": len(messages), "commands": " ".join(t.mail for t in messages)}
