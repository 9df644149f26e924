"""Cases on the receiving side: what a client sends, what it is answered, what goes on."""

import re
import subprocess

from .cases import (RCPT, SENDER, Session, below_trace, case, cls, code, message, outcome, rejects, relay_one,
                    relayed, trace_headers)

LONG = b"x" * 1500
OUTSIDER = "127.0.0.2"  # not in either server's trusted networks


@case("receive", "replies; message below the trace headers")
def plain_message(peer):
    return relay_one(peer, message())


@case("receive", "a 998-octet body line relayed unchanged")
def line_of_998_octets(peer):
    return relay_one(peer, message(body=b"y" * 998 + b"\r\n"))


@case("receive", "a 1500-octet body line: accepted, and how the next hop gets it")
def line_over_1000_octets(peer):
    return relay_one(peer, message(body=LONG + b"\r\n"))


@case("receive", "a 5000-octet body line, past Postfix's line_length_limit of 2048")
def line_over_line_length_limit(peer):
    return relay_one(peer, message(body=b"z" * 5000 + b"\r\n"))


@case("receive", "a 1500-octet header line: accepted, and how the next hop gets it")
def long_header_line(peer):
    return relay_one(peer, message(headers=b"X-Long: " + LONG + b"\r\n"))


MAIL_KEYWORDS = ("8BITMIME", "CHUNKING", "DSN", "ENHANCEDSTATUSCODES", "PIPELINING", "SIZE", "SMTPUTF8")


def ehlo_keywords_of(peer) -> list[str]:
    with Session(peer) as session:
        return sorted(line[4:].upper() for line in session.ehlo_lines[1:])


@case("receive", "the EHLO keywords that change how mail is sent (SIZE with its value); "
      "docs/conformance.md shows both whole replies")
def ehlo_keywords(peer):
    return {"keywords": [k for k in ehlo_keywords_of(peer) if k.split()[0] in MAIL_KEYWORDS]}


def _no_vrfy_or_etrn(postern: dict, postfix: dict) -> None:
    assert postfix["keywords"] and not any(k.split()[0] in ("VRFY", "ETRN") for k in postern["keywords"])


@case("receive", "the EHLO keywords VRFY and ETRN (Postfix's defaults announce both)",
      postern=_no_vrfy_or_etrn,
      why="Postern offers no VRFY, which tells a stranger which addresses exist (Postfix's own advice is "
          "disable_vrfy_command = yes), and no ETRN: a gateway's queue is flushed by its admin "
          "(posternctl flush, the console's queue screen), not by a remote site")
def ehlo_vrfy_and_etrn(peer):
    return {"keywords": [k for k in ehlo_keywords_of(peer) if k.split()[0] not in MAIL_KEYWORDS]}


@case("receive", "8-bit body without BODY=8BITMIME: accepted and relayed; MAIL parameters passed on")
def eight_bit_without_body_parameter(peer):
    return relay_one(peer, message(body="Grüße aus Köln\r\n".encode()), parameters=True)


@case("receive", "8-bit body with BODY=8BITMIME: BODY passed on to an 8BITMIME next hop")
def eight_bit_with_body_8bitmime(peer):
    return relay_one(peer, message(body="Grüße\r\n".encode()), mail_params="BODY=8BITMIME", parameters=True)


@case("receive", "BODY=7BIT: accepted; BODY passed on")
def body_7bit(peer):
    return relay_one(peer, message(), mail_params="BODY=7BIT", parameters=True)


@case("receive", "SIZE declared below the limit: SIZE passed on to a next hop offering SIZE")
def size_declared(peer):
    return relay_one(peer, message(), mail_params="SIZE=300", parameters=True)


@case("receive", "SIZE declared over message_size_limit: reply code at MAIL")
def size_declared_over_limit(peer):
    with Session(peer) as session:
        return {"mail": code(session.ask(f"MAIL FROM:<{SENDER}> SIZE=20000000"))}


@case("receive", "a message over message_size_limit (10000 for this case): reply code after the dot",
      postfix_settings={"message_size_limit": "10000"}, postern_settings={"message_size_limit": 10000})
def message_over_size_limit(peer):
    with Session(peer) as session:
        replies = session.mail(content=message(body=(b"a" * 70 + b"\r\n") * 200))
    return {"replies": [code(r) for r in replies]}


@case("receive", "SMTPUTF8 with a non-ASCII sender: replies; SMTPUTF8 passed on")
def smtputf8_sender(peer):
    return relay_one(peer, message(subject="Grüße"), sender="jörg@example.net", mail_params="SMTPUTF8",
                     parameters=True)


@case("receive", "SMTPUTF8 with a non-ASCII recipient: replies; SMTPUTF8 passed on")
def smtputf8_recipient(peer):
    return relay_one(peer, message(), rcpts=("björn@example.com",), mail_params="SMTPUTF8", parameters=True)


@case("receive", "a non-ASCII address without SMTPUTF8: reply classes (Postfix takes it)")
def utf8_address_without_smtputf8(peer):
    with Session(peer) as session:
        return {"replies": [cls(r) for r in session.mail(sender="jörg@example.net")]}


@case("receive", "BDAT in one chunk: replies; message relayed")
def bdat_one_chunk(peer):
    content = message()
    mark = peer.mark()
    with Session(peer) as session:
        replies = session.mail()
        replies += session.send_raw(f"BDAT {len(content)} LAST\r\n".encode() + content)
    seen = {"replies": [code(r) for r in replies]}
    if cls(replies[-1]) == "2":
        outcome(peer, mark)
        seen["content"] = below_trace(relayed(peer)[0].content, peer)
    return seen


@case("receive", "BDAT in three chunks, pipelined: replies; message relayed")
def bdat_chunks(peer):
    content = message(body=b"one\r\ntwo\r\nthree\r\n")
    parts = [content[:40], content[40:90], content[90:]]
    data = b"".join(f"BDAT {len(part)}{' LAST' if i == 2 else ''}\r\n".encode() + part for i, part in enumerate(parts))
    mark = peer.mark()
    with Session(peer) as session:
        replies = session.mail()
        replies += session.send_raw(data, replies=3)
    seen = {"replies": [code(r) for r in replies]}
    if cls(replies[-1]) == "2":
        outcome(peer, mark)
        seen["content"] = below_trace(relayed(peer)[0].content, peer)
    return seen


@case("receive", "BDAT content with bare LF line ends: what the next hop gets")
def bdat_bare_lf(peer):
    content = message().replace(b"\r\n", b"\n") + b".\nstill the body\n"
    mark = peer.mark()
    with Session(peer) as session:
        replies = session.mail()
        replies += session.send_raw(f"BDAT {len(content)} LAST\r\n".encode() + content)
    seen = {"replies": [code(r) for r in replies]}
    if cls(replies[-1]) == "2":
        outcome(peer, mark)
        seen["content"] = below_trace(relayed(peer)[0].content, peer)
    return seen


@case("receive", "NOTIFY=SUCCESS,FAILURE and ORCPT: accepted and passed on to a DSN next hop")
def dsn_notify_and_orcpt(peer):
    return relay_one(peer, message(), rcpt_params="NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;bob@example.com",
                     parameters=True)


@case("receive", "NOTIFY=NEVER: accepted and passed on")
def dsn_notify_never(peer):
    return relay_one(peer, message(), rcpt_params="NOTIFY=NEVER", parameters=True)


@case("receive", "RET=HDRS and ENVID (xtext): accepted and passed on")
def dsn_ret_and_envid(peer):
    return relay_one(peer, message(), mail_params="RET=HDRS ENVID=QQ+2B123", parameters=True)


@case("receive", "NOTIFY with an unknown keyword: reply class at RCPT")
def dsn_notify_invalid(peer):
    with Session(peer) as session:
        return {"replies": [cls(r) for r in session.mail(rcpt_params="NOTIFY=SOMETIMES")]}


@case("receive", "MAIL, two RCPTs, DATA and the message in one packet (PIPELINING): every reply",)
def pipelining_whole_transaction(peer):
    content = message()
    data = (f"MAIL FROM:<{SENDER}>\r\nRCPT TO:<{RCPT}>\r\nRCPT TO:<carol@example.com>\r\nDATA\r\n".encode())
    mark = peer.mark()
    with Session(peer) as session:
        replies = session.send_raw(data, replies=4)
        replies += session.send_raw(content + b".\r\n")
    outcome(peer, mark, (RCPT, "carol@example.com"))
    return {"replies": [code(r) for r in replies], "content": below_trace(relayed(peer)[0].content, peer),
            "recipients": sorted(relayed(peer)[0].rcpt_addresses())}


@case("receive", "pipelined RCPTs from an outside client, one refused: replies; NOQUEUE reject log line",
      postfix=lambda seen: seen["log"] == ["RCPT 554"])
def pipelining_with_refused_recipient(peer):
    data = f"MAIL FROM:<{SENDER}>\r\nRCPT TO:<{RCPT}>\r\nRCPT TO:<eve@elsewhere.org>\r\nDATA\r\n".encode()
    mark = peer.mark()
    with Session(peer, source=OUTSIDER) as session:
        replies = session.send_raw(data, replies=4)
        replies += session.send_raw(message() + b".\r\n")
    outcome(peer, mark)
    return {"replies": [code(r) for r in replies], "log": rejects(peer, mark),
            "recipients": relayed(peer)[0].rcpt_addresses()}


@case("receive", "relaying denied to an outside client: reply code; NOQUEUE reject log line",
      postfix=lambda seen: seen["log"] == ["RCPT 554"])
def relay_access_denied(peer):
    mark = peer.mark()
    with Session(peer, source=OUTSIDER) as session:
        replies = session.mail(rcpts=("eve@elsewhere.org",))
    return {"replies": [code(r) for r in replies], "log": rejects(peer, mark)}


@case("receive", "a dictionary attack from an outside client, RCPT after refused RCPT: the replies until the "
      "server hangs up (smtpd_hard_error_limit, 20 by default); its log line")
def too_many_errors(peer):
    mark = peer.mark()
    with Session(peer, source=OUTSIDER) as session:
        replies = [session.ask(f"MAIL FROM:<{SENDER}>")]
        for n in range(25):
            replies.append(session.ask(f"RCPT TO:<guess{n}@elsewhere.org>"))
            if not replies[-1].startswith("554"):
                break
    logged = peer.wait_log(r"too many errors after (\w+) from", mark)
    return {"replies": [code(r) for r in replies], "log": logged}


def _every_refusal_logged(postern: dict, postfix: dict) -> None:
    assert postern["replies"] == postfix["replies"]
    assert postfix["log"] == ["RCPT 554"] and postern["log"] == ["DATA 503", "RCPT 554", "DATA 554"]


@case("receive", "DATA after every RCPT was refused (a pipelining client sends it anyway): reply codes; "
      "reject log lines", postern=_every_refusal_logged,
      why="Postern logs every refusal in the `NOQUEUE: reject:` shape, protocol errors such as "
          "`503 need RCPT command` included, where Postfix logs only its restrictions' refusals: "
          "an admin who greps the log for a client sees each command it was refused")
def data_without_valid_recipients(peer):
    mark = peer.mark()
    with Session(peer, source=OUTSIDER) as session:
        replies = [session.ask("DATA"), session.ask(f"MAIL FROM:<{SENDER}>"),
                   session.ask("RCPT TO:<eve@elsewhere.org>"), session.ask("DATA")]
    return {"replies": [r[:9] for r in replies], "log": rejects(peer, mark)}


@case("receive", "MAIL before HELO/EHLO: accepted as Postfix does by default (smtpd_helo_required = no)")
def mail_before_helo(peer):
    mark = peer.mark()
    with Session(peer, helo=None) as session:
        replies = session.mail(content=message())
    seen = {"replies": [code(r) for r in replies]}
    if cls(replies[-1]) == "2":
        outcome(peer, mark)
    return seen


@case("receive", "HELO instead of EHLO: a whole transaction")
def helo_session(peer):
    mark = peer.mark()
    with Session(peer, verb="HELO") as session:
        replies = session.mail(content=message())
    outcome(peer, mark)
    return {"replies": [code(r) for r in replies], "content": below_trace(relayed(peer)[0].content, peer)}


@case("receive", "RCPT before MAIL: reply class")
def rcpt_before_mail(peer):
    with Session(peer) as session:
        return {"rcpt": cls(session.ask(f"RCPT TO:<{RCPT}>"))}


@case("receive", "DATA before RCPT: reply class")
def data_before_rcpt(peer):
    with Session(peer) as session:
        return {"replies": [cls(session.ask(f"MAIL FROM:<{SENDER}>")), cls(session.ask("DATA"))]}


@case("receive", "a message with no header section at all: what the next hop gets")
def message_without_headers(peer):
    return relay_one(peer, b"just a body line\r\nand another\r\n")


@case("receive", "an empty message (DATA, then the dot at once): what the next hop gets")
def empty_message(peer):
    mark = peer.mark()
    with Session(peer) as session:
        replies = session.mail()
        replies.append(session.ask("DATA"))
        replies += session.send_raw(b".\r\n")
    outcome(peer, mark)
    return {"replies": [code(r) for r in replies], "content": below_trace(relayed(peer)[0].content, peer)}


@case("receive", "headers and no body: what the next hop gets")
def headers_without_body(peer):
    return relay_one(peer, message(body=b"").rstrip(b"\r\n") + b"\r\n")


@case("receive", "the null sender MAIL FROM:<>: accepted and relayed with the null sender")
def null_sender(peer):
    seen = relay_one(peer, message(), sender="")
    seen["sender"] = relayed(peer, sender="")[0].mail.split(":", 1)[1].split()[0]
    return seen


@case("receive", "commands in lower case: a whole transaction")
def lower_case_commands(peer):
    mark = peer.mark()
    with Session(peer, verb="ehlo") as session:
        replies = [session.ask(f"mail from:<{SENDER}>"), session.ask(f"rcpt to:<{RCPT}>")]
        replies.append(session.data(message()))
    outcome(peer, mark)
    return {"replies": [code(r) for r in replies]}


@case("receive", "a space after the colon, MAIL FROM: <addr> (Postfix's non-strict default): accepted")
def space_after_colon(peer):
    with Session(peer) as session:
        return {"replies": [cls(session.ask(f"MAIL FROM: <{SENDER}>")), cls(session.ask(f"RCPT TO: <{RCPT}>"))]}


@case("receive", "an address without angle brackets: reply classes")
def address_without_brackets(peer):
    with Session(peer) as session:
        return {"replies": [cls(session.ask(f"MAIL FROM:{SENDER}")), cls(session.ask(f"RCPT TO:{RCPT}"))]}


@case("receive", "a source route <@hop.example:bob@example.com>: accepted; the route is dropped on relay")
def source_route(peer):
    mark = peer.mark()
    with Session(peer) as session:
        replies = session.mail(rcpts=("@hop.example.org:bob@example.com",), content=message())
    seen = {"replies": [cls(r) for r in replies]}
    if cls(replies[-1]) == "2":
        outcome(peer, mark)
        seen["recipients"] = relayed(peer)[0].rcpt_addresses()
    return seen


@case("receive", 'a quoted local part "john doe"@example.com: relayed with the quotes')
def quoted_local_part(peer):
    seen = relay_one(peer, message(), rcpts=('"john doe"@example.com',))
    seen["recipients"] = relayed(peer)[0].rcpt_addresses()
    return seen


@case("receive", "a body line starting with a dot (dot-stuffed): relayed with its dot")
def dot_stuffed_line(peer):
    return relay_one(peer, message(body=b"..leading dot\r\n.\x20\r\nend\r\n"))


@case("receive", "an unknown command: reply code")
def unknown_command(peer):
    with Session(peer) as session:
        return {"reply": code(session.ask("FROBNICATE now"))}


@case("receive", "VRFY: reply class")
def vrfy(peer):
    with Session(peer) as session:
        return {"reply": cls(session.ask(f"VRFY {RCPT}"))}


@case("receive", "RSET in the middle, then a second transaction: replies; one message relayed")
def rset_then_transaction(peer):
    mark = peer.mark()
    with Session(peer) as session:
        replies = [session.ask(f"MAIL FROM:<{SENDER}>"), session.ask("RCPT TO:<carol@example.com>"),
                   session.ask("RSET")]
        replies += session.mail(content=message())
    outcome(peer, mark)
    return {"replies": [code(r) for r in replies], "recipients": relayed(peer)[0].rcpt_addresses()}


@case("receive", "two messages in one session: both relayed")
def two_messages_one_session(peer):
    mark = peer.mark()
    with Session(peer) as session:
        replies = session.mail(content=message(subject="one")) + session.mail(content=message(subject="two"))
    outcome(peer, mark)
    relayed(peer, count=2)
    return {"replies": [code(r) for r in replies], "subjects": sorted(
        line for t in peer.hop.messages(SENDER) for line in below_trace(t.content, peer).splitlines()
        if line.startswith("Subject:"))}


@case("receive", "a command line over 2000 octets: reply class",)
def command_line_too_long(peer):
    with Session(peer) as session:
        return {"reply": cls(session.ask(f"MAIL FROM:<{'a' * 2100}@example.net>")),
                "then": cls(session.ask("NOOP"))}


@case("receive", "swaks with a MIME attachment: what the next hop gets (another client's framing)")
def swaks_attachment(peer):
    mark = peer.mark()
    result = subprocess.run(
        ["swaks", "--server", f"127.0.0.1:{peer.port}", "--from", SENDER, "--to", RCPT, "--helo",
         "client.example.net", "--header", "Subject: attached", "--header", "Date: Sun, 06 Dec 2026 08:00:00 +0000",
         "--header", "Message-Id: <swaks@example.net>", "--body", "see attached", "--attach-type", "text/plain",
         "--attach-name", "notes.txt", "--attach", "@/etc/hostname", "--pipeline", "--silent", "2"],
        capture_output=True, text=True, timeout=30)
    outcome(peer, mark)
    content = below_trace(relayed(peer)[0].content, peer)
    boundary = content.split('boundary="', 1)[1].split('"', 1)[0] if 'boundary="' in content else ""
    return {"exit": result.returncode, "content": content.replace(boundary, "BOUNDARY") if boundary else content}


@case("receive", "swaks sending an 8-bit message without BODY=8BITMIME, pipelined: what the next hop gets")
def swaks_eight_bit(peer):
    mark = peer.mark()
    result = subprocess.run(
        ["swaks", "--server", f"127.0.0.1:{peer.port}", "--from", SENDER, "--to", RCPT, "--helo",
         "client.example.net", "--data", "Subject: 8bit\nMessage-Id: <s8@example.net>\n\nK\u00f6ln\n",
         "--pipeline", "--silent", "2"], capture_output=True, text=True, timeout=30)
    outcome(peer, mark)
    return {"exit": result.returncode, "content": below_trace(relayed(peer)[0].content, peer)}


def _received(peer, tls: bool) -> str:
    """The Received: header the server wrote, with the parts that differ by nature replaced:
    its name, its product name, the queue ID, the date, the client's reverse name."""
    mark = peer.mark()
    with Session(peer) as session:
        if tls:
            session.starttls()
        session.mail(content=message())
    outcome(peer, mark)
    header = trace_headers(relayed(peer)[0].content)[0]
    header = header.replace(peer.hostname, "<me>")
    header = re.sub(r"\((Postfix|Postern)\)", "(<product>)", header)
    header = re.sub(r" id \w+", " id <id>", header)
    header = re.sub(r"; .*$", "; <date>", header)
    # Postfix 3.7 adds the key exchange and signature after the cipher; Python's ssl cannot tell them
    header = re.sub(r"(\(\d+/\d+ bits\)) key-exchange [^()]*(?:\([^()]*\)[^()]*)*(?=\))", r"\1", header)
    return re.sub(r"\(\S+ \[127\.0\.0\.1\]\)", "(<name> [127.0.0.1])", header)


@case("receive", "the Received: header, its parts in order (names, ID and date replaced)")
def received_header(peer):
    return {"received": _received(peer, tls=False)}


@case("receive", "the Received: header after STARTTLS, Postfix set to add the TLS details as Postern "
      "always does (smtpd_tls_received_header = yes): with ESMTPS and a '(using TLS... with cipher ...)' part",
      postfix_settings={"smtpd_tls_received_header": "yes"})
def received_header_after_starttls(peer):
    return {"received": _received(peer, tls=True)}


def _tls_details_always(postern: dict, postfix: dict) -> None:
    assert postern["tls details"] and not postfix["tls details"]


@case("receive", "the Received: header after STARTTLS with Postfix's defaults: the TLS details",
      postern=_tls_details_always,
      why="Postern always records the TLS protocol and cipher of the client's session in its Received: "
          "header (Postfix only with smtpd_tls_received_header = yes, off by default), so a message shows "
          "whether its way into the gateway was encrypted")
def received_tls_details(peer):
    return {"tls details": "(using TLS" in _received(peer, tls=True)}


@case("receive", "SIZE over message_size_limit: the reject log line (`reject: MAIL` with its code)",
      postfix=lambda seen: seen["log"] == ["MAIL 552"])
def size_over_limit_logged(peer):
    mark = peer.mark()
    with Session(peer) as session:
        session.ask(f"MAIL FROM:<{SENDER}> SIZE=20000000")
    return {"log": rejects(peer, mark)}


@case("receive", "EHLO with an address literal, EHLO [127.0.0.1]: a whole transaction")
def ehlo_address_literal(peer):
    mark = peer.mark()
    with Session(peer, helo="[127.0.0.1]") as session:
        replies = session.mail(content=message())
    outcome(peer, mark)
    return {"replies": [code(r) for r in replies]}


@case("receive", "HELO without a name: reply code")
def helo_without_name(peer):
    with Session(peer, helo=None) as session:
        return {"helo": code(session.ask("HELO")), "ehlo": code(session.ask("EHLO"))}


@case("receive", "trailing spaces after the address, MAIL FROM:<addr>   : reply classes")
def trailing_spaces_after_address(peer):
    with Session(peer) as session:
        return {"replies": [cls(session.ask(f"MAIL FROM:<{SENDER}>   ")), cls(session.ask(f"RCPT TO:<{RCPT}>  "))]}
