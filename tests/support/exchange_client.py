"""A client that sends as Exchange Online does, on a plain socket: BDAT chunks after EHLO.

Exchange Online sends a message that has bare line feeds only with CHUNKING:
`MAIL FROM:<> SIZE=n BODY=8BITMIME` (with RET, ENVID, NOTIFY and ORCPT when the
server offers DSN), the RCPTs, then the message in `BDAT <size>` chunks, the last
one marked LAST, all pipelined. The chunks carry the message's bytes exactly as
given: no line ends are changed, nothing is dot-stuffed.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from .raw_smtp import RawSmtp


@dataclass
class ExchangeSession:
    greeting: str
    ehlo: list[str]  # every line of the EHLO reply
    mail: str  # the last line of each reply from here on
    rcpts: list[str]
    chunks: list[str]  # one reply per BDAT, the LAST one's included
    quit: str

    @property
    def extensions(self) -> set[str]:
        return extensions(self.ehlo)


def extensions(ehlo: list[str]) -> set[str]:
    """The keywords an EHLO reply offers."""
    return {line[4:].split(" ")[0].upper() for line in ehlo[1:]}


def chunks_of(message: bytes, size: int) -> list[bytes]:
    """The message cut in chunks of `size` octets (the last may be shorter); one empty chunk if it is empty."""
    return [message[i:i + size] for i in range(0, len(message), size)] or [b""]


def bdat(chunks: list[bytes], empty_last: bool = False) -> bytes:
    """The BDAT commands with their chunks; the last marked LAST, or followed by `BDAT 0 LAST`."""
    final = len(chunks) - 1 if not empty_last else None
    commands = [b"BDAT %d%s\r\n%s" % (len(chunk), b" LAST" if number == final else b"", chunk)
                for number, chunk in enumerate(chunks)]
    return b"".join(commands) + (b"BDAT 0 LAST\r\n" if empty_last else b"")


def send_like_exchange(port: int, recipients: list[str], message: bytes, chunk_size: int = 4096,
                       sender: str = "", empty_last: bool = False, source: str = "127.0.0.1",
                       helo: str = "mail-db5eur03on2100.outbound.protection.outlook.com") -> ExchangeSession:
    """One transaction from greeting to QUIT, everything after EHLO in one pipelined write."""
    with RawSmtp(port, source=source) as client:
        greeting = client.greeting()
        client.send(f"EHLO {helo}\r\n")
        ehlo = client.reply()
        dsn = "DSN" in extensions(ehlo)
        mail = f"MAIL FROM:<{sender}> SIZE={len(message)} BODY=8BITMIME"
        if dsn:
            mail += " RET=HDRS ENVID=exchange-test+2B1"
        commands = [mail] + [f"RCPT TO:<{rcpt}>" + (f" NOTIFY=FAILURE ORCPT=rfc822;{rcpt}" if dsn else "")
                             for rcpt in recipients]
        chunks = chunks_of(message, chunk_size)
        data = "".join(f"{command}\r\n" for command in commands).encode() + bdat(chunks, empty_last) + b"QUIT\r\n"
        # Replies are read while the rest is still being sent, as RFC 2920 asks of a pipelining
        # client: one that reads nothing until it has sent all fills its receive buffer and stalls.
        sending = threading.Thread(target=_send, args=(client, data), daemon=True)
        sending.start()
        mail_reply = client.reply()[-1]
        rcpt_replies = [client.reply()[-1] for _ in recipients]
        chunk_replies = [client.reply()[-1] for _ in range(len(chunks) + empty_last)]
        quit_reply = client.reply()[-1]
        sending.join()
        return ExchangeSession(greeting, ehlo, mail_reply, rcpt_replies, chunk_replies, quit_reply)


def _send(client: RawSmtp, data: bytes) -> None:
    try:
        client.send(data)
    except OSError:  # the server hung up: the replies read so far tell why
        pass
