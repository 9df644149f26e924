"""A scripted next hop: an SMTP server on loopback whose every answer a case decides.

aiosmtpd answers most commands itself; the conformance cases need to play a mail
server that refuses at the greeting, stalls after the dot, offers no 8BITMIME, forgets
EHLO or hangs up half-way, so this one is written out: one asyncio server on its own
thread, speaking line by line, and recording what the client sent (the MAIL and RCPT
lines with their parameters, the message bytes exactly as they came, dot-unstuffed).

A `Script` says, per stage, what to answer: a reply line ("451 4.3.0 try later"),
`DROP` to close the connection without a word, or a list of either, used one per
connection attempt (the last one repeats), so "defer once, then accept" is
["451 4.3.0 busy", "250 2.0.0 Ok"]. `delay` holds the answer of a stage back.
Transactions from the null sender (the bounces the servers send back) get the plain
answers at MAIL, DATA and the dot, so that a refused message's bounce arrives.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field

DROP = "DROP"  # close the connection instead of answering
DEFAULT_EXTENSIONS = ("PIPELINING", "SIZE 10240000", "8BITMIME", "SMTPUTF8", "DSN", "ENHANCEDSTATUSCODES",
                      "CHUNKING")


@dataclass
class Script:
    greeting: object = "220 hop.example.org ESMTP"
    ehlo: object = ""  # "" answers with `extensions`; a reply such as "502 5.5.2 Error" makes the client try HELO
    helo: object = "250 hop.example.org"
    extensions: tuple[str, ...] = DEFAULT_EXTENSIONS
    mail: object = "250 2.1.0 Ok"
    rcpt: dict[str, object] = field(default_factory=dict)  # recipient address -> answer; others get 250
    data: object = "354 End data with <CR><LF>.<CR><LF>"
    dot: object = "250 2.0.0 Ok: queued"  # after the final dot, or after BDAT LAST
    delay: dict[str, float] = field(default_factory=dict)  # stage -> seconds before answering
    close_after_message: bool = False  # hang up after the reply to a message, without waiting for QUIT


@dataclass
class Transaction:
    helo: str  # the EHLO or HELO line
    mail: str  # the MAIL FROM line, parameters included
    rcpts: list[str] = field(default_factory=list)  # the RCPT TO lines that got 250
    content: bytes = b""
    accepted: bool = False  # the reply to the message was 2xx
    chunked: bool = False  # sent with BDAT

    def mail_params(self) -> dict[str, str]:
        return _params(self.mail)

    def rcpt_params(self) -> list[dict[str, str]]:
        return [_params(line) for line in self.rcpts]

    def rcpt_addresses(self) -> list[str]:
        return [line.split("<", 1)[1].split(">", 1)[0] for line in self.rcpts]


def _plain(script: Script) -> bool:
    """Whether the script greets, answers EHLO and keeps connections as the default one does."""
    default = Script()
    return (script.greeting, script.ehlo, script.helo, script.extensions, script.close_after_message) == (
        default.greeting, default.ehlo, default.helo, default.extensions, default.close_after_message
    ) and not script.delay


def _params(line: str) -> dict[str, str]:
    rest = line.split(">", 1)[1] if ">" in line else ""
    found = {}
    for word in rest.split():
        key, _, value = word.partition("=")
        found[key.upper()] = value
    return found


class Hop:
    """The scripted next hop on `host` and `port` (0: a free one); `script` may be replaced between cases."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, script: Script | None = None):
        self.host = host
        self.port = port
        self.script = script or Script()
        self.transactions: list[Transaction] = []
        self.connections = 0
        self.commands: list[str] = []
        self.lock = threading.Lock()
        self._attempts: dict[str, int] = {}
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._thread = threading.Thread(target=self._loop.run_forever, name="conformance-hop", daemon=True)

    def start(self) -> Hop:
        self._thread.start()
        self.listen()
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        async def close():
            self._server.close()
            for writer in list(self._writers):
                writer.close()
        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def reset(self, script: Script | None = None) -> None:
        """A new script and empty records.

        A client keeps an idle connection a moment for more mail (Postern 2 s, Postfix's
        smtp_connection_cache_time_limit 2 s). When the old or the new script greets, answers
        EHLO or ends a session other than plainly, the next case must start on a fresh
        connection, so this waits for the client to close its idle ones (those still open
        after 5 s are closed here); otherwise the new case may go on over an old connection,
        which then answers by the new script."""
        script = script or Script()
        if not (_plain(self.script) and _plain(script)):
            self._wait_idle()
        with self.lock:
            self.script = script
            self.transactions = []
            self.commands = []
            self.connections = 0
            self._attempts = {}

    def _wait_idle(self) -> None:
        """Wait for clients to close their idle connections; close those still open after 5 s."""
        deadline = time.monotonic() + 5
        while self._writers and time.monotonic() < deadline:
            time.sleep(0.05)

        async def hang_up():
            for writer in list(self._writers):
                writer.close()
        asyncio.run_coroutine_threadsafe(hang_up(), self._loop).result(10)

    def refuse_connections(self) -> None:
        """Stop listening (connections are refused) until `listen()`; none is left open."""
        self._wait_idle()

        async def close():
            self._server.close()
            await self._server.wait_closed()
        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)

    def listen(self) -> None:
        """Listen again on the same port."""
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._session, self.host, self.port, limit=1 << 22), self._loop).result(10)

    def messages(self, sender: str | None = None) -> list[Transaction]:
        """Accepted transactions, optionally only those from one envelope sender ("" for bounces)."""
        with self.lock:
            found = [t for t in self.transactions if t.accepted]
        if sender is None:
            return found
        return [t for t in found if t.mail.split("<", 1)[1].split(">", 1)[0] == sender]

    # The server side.

    def _answer(self, stage: str, value: object) -> str:
        if isinstance(value, (list, tuple)):
            with self.lock:
                index = self._attempts.get(stage, 0)
                self._attempts[stage] = index + 1
            return value[min(index, len(value) - 1)]
        return value

    async def _reply(self, writer: asyncio.StreamWriter, stage: str, value: object) -> bool:
        """Send the scripted answer; False when the script says to hang up."""
        answer = self._answer(stage, value)
        if self.script.delay.get(stage):
            await asyncio.sleep(self.script.delay[stage])
        if answer == DROP:
            writer.close()
            return False
        writer.write(answer.encode("utf-8") + b"\r\n")
        await writer.drain()
        return True

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        with self.lock:
            self.connections += 1
        try:
            await self._converse(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _converse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        script = self.script
        if not await self._reply(writer, "greeting", script.greeting):
            return
        helo = ""
        current: Transaction | None = None
        while True:
            raw = await reader.readuntil(b"\n")
            script = self.script  # the case's script, also on a connection opened before it
            line = raw.rstrip(b"\r\n").decode("utf-8", "replace")
            verb = line.split(" ", 1)[0].upper()
            with self.lock:
                self.commands.append(line)
            if verb == "EHLO":
                answer = self._answer("ehlo", script.ehlo)
                if answer:
                    if not await self._reply(writer, "ehlo-refused", answer):
                        return
                    continue
                helo = line
                lines = ["hop.example.org", *script.extensions]
                text = "".join(f"250{'-' if i < len(lines) - 1 else ' '}{item}\r\n" for i, item in enumerate(lines))
                writer.write(text.encode())
            elif verb == "HELO":
                helo = line
                if not await self._reply(writer, "helo", script.helo):
                    return
            elif verb == "MAIL":
                current = Transaction(helo, line)
                plain = Script() if "<>" in line else script
                if not await self._reply(writer, "mail", plain.mail):
                    return
                if not self._last_ok(plain.mail, "mail"):
                    current = None
            elif verb == "RCPT":
                address = line.split("<", 1)[-1].split(">", 1)[0]
                answer = script.rcpt.get(address, "250 2.1.5 Ok")
                if not await self._reply(writer, "rcpt:" + address, answer):
                    return
                if current is not None and self._last_ok(answer, "rcpt:" + address):
                    current.rcpts.append(line)
            elif verb == "DATA" and (current is None or not current.rcpts):
                writer.write(b"554 5.5.1 Error: no valid recipients\r\n")
            elif verb == "DATA":
                plain = Script() if current is not None and "<>" in current.mail else script
                if not await self._reply(writer, "data", plain.data):
                    return
                if not self._last_ok(plain.data, "data"):
                    continue
                content = await self._read_data(reader)
                if not await self._finish(writer, current, content, False):
                    return
                current = None
            elif verb == "BDAT":
                words = line.split()
                size = int(words[1])
                chunk = await reader.readexactly(size)
                if current is not None:
                    current.content += chunk
                if len(words) > 2 and words[2].upper() == "LAST":
                    content = current.content if current else chunk
                    if not await self._finish(writer, current, content, True):
                        return
                    current = None
                else:
                    writer.write(f"250 2.0.0 {size} octets received\r\n".encode())
            elif verb == "RSET":
                current = None
                writer.write(b"250 2.0.0 Ok\r\n")
            elif verb == "QUIT":
                writer.write(b"221 2.0.0 Bye\r\n")
                await writer.drain()
                return
            elif verb == "NOOP":
                writer.write(b"250 2.0.0 Ok\r\n")
            else:
                writer.write(b"502 5.5.2 Error: command not recognized\r\n")
            await writer.drain()

    def _last_ok(self, value: object, stage: str) -> bool:
        """Whether the answer just given for `stage` was a success (for lists: the one used last)."""
        if isinstance(value, (list, tuple)):
            with self.lock:
                used = self._attempts.get(stage, 1) - 1
            value = value[min(used, len(value) - 1)]
        return str(value)[:1] in ("2", "3")

    async def _finish(self, writer, current: Transaction | None, content: bytes, chunked: bool) -> bool:
        script = Script() if current is not None and "<>" in current.mail else self.script
        if current is not None:
            current.content = content
            current.chunked = chunked
        answered = await self._reply(writer, "dot", script.dot)
        if current is not None:
            current.accepted = answered and self._last_ok(script.dot, "dot")
            with self.lock:
                self.transactions.append(current)
        if answered and self.script.close_after_message:
            await writer.drain()
            writer.close()
            return False
        return answered

    @staticmethod
    async def _read_data(reader: asyncio.StreamReader) -> bytes:
        lines = []
        while True:
            line = await reader.readuntil(b"\n")
            if line in (b".\r\n", b".\n"):
                return b"".join(lines)
            lines.append(line[1:] if line.startswith(b".") else line)
