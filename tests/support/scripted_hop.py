"""A scripted next hop: an SMTP server on loopback whose every answer a test decides.

`sink.Sink` and `next_hop.NextHop` (aiosmtpd) are well-behaved servers; this one plays
the servers a delivery client must cope with: a 5xx to EHLO, a 4xx to MAIL, a greeting
that never comes, no 8BITMIME, a connection closed between two messages, a reader that
takes its time. It is written out line by line, runs on its own event loop and thread
(so a test on any loop, or one driving other processes, can use it), and records what
the client sent: the commands, the MAIL and RCPT lines with their parameters, and the
message bytes exactly as they came (`raw`) and dot-unstuffed (`content`).

    hop = ScriptedHop(Script(mail="451 4.3.0 try later")).start()

A `Script` says, per stage, what to answer: a reply ("451 4.3.0 try later"), `DROP` to
close the connection without a word, a list of either, used one per use of the stage
(the last one repeats), so "defer once, then accept" is ["451 4.3.0 busy", "250 2.0.0 Ok"],
or a function of the command line. `rcpt` may also map a recipient address to its reply.
`delay` holds a stage's answer back; `data_pause` makes the reading of the message slow but
moving, `data_stall` stops it altogether. Transactions from the null sender (the bounces a
server sends back) get the plain answers at MAIL, DATA and the dot, so that a refused
message's bounce arrives.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

DROP = "DROP"  # close the connection instead of answering
DEFAULT_EXTENSIONS = ("PIPELINING", "SIZE 10240000", "8BITMIME", "SMTPUTF8", "DSN", "ENHANCEDSTATUSCODES",
                      "CHUNKING")
Reply = str | list | Callable[[str], str]  # a reply, one per use, or a function of the command line


@dataclass
class Script:
    greeting: Reply = "220 hop.example.org ESMTP"
    ehlo: Reply = ""  # "" answers with `extensions`; a reply such as "502 5.5.2 Error" makes the client try HELO
    helo: Reply = "250 hop.example.org"
    extensions: tuple[str, ...] = DEFAULT_EXTENSIONS
    mail: Reply = "250 2.1.0 Ok"
    rcpt: Reply | dict[str, Reply] = "250 2.1.5 Ok"  # or recipient address -> reply; others get 250
    data: Reply = "354 End data with <CR><LF>.<CR><LF>"
    dot: Reply = "250 2.0.0 Ok: queued"  # after the final dot, or after BDAT LAST
    data_unwanted: str = "554 5.5.1 Error: no valid recipients"  # DATA after no accepted RCPT ("354 ..." if broken)
    delay: dict[str, float] = field(default_factory=dict)  # stage ("greeting", "ehlo", "mail", ...) -> seconds
    data_pause: tuple[int, float] | None = None  # read (bytes, then sleep seconds) while taking DATA
    data_stall: bool = False  # stop reading the message after its first bytes, until stopped
    close_after_message: bool = False  # hang up after the reply to a message, without waiting for QUIT

    def plain(self) -> bool:
        """Whether the script greets, answers EHLO and keeps connections as the default one does."""
        default = Script()
        return (self.greeting, self.ehlo, self.helo, self.extensions, self.close_after_message) == (
            default.greeting, default.ehlo, default.helo, default.extensions, default.close_after_message
        ) and not self.delay


@dataclass
class Transaction:
    connection: int  # which connection, counted from 1
    helo: str  # the EHLO or HELO line
    mail: str  # the MAIL FROM line, parameters included
    rcpts: list[str] = field(default_factory=list)  # the RCPT TO lines that got 250
    raw: bytes = b""  # the message as it came over the wire, dot-stuffing and all
    content: bytes = b""  # with the dot-stuffing undone
    accepted: bool = False  # the reply to the message was 2xx
    after_mail: bytes = b""  # what had come already, behind the MAIL line, when it was read: pipelined commands
    chunked: bool = False  # sent with BDAT

    def mail_params(self) -> dict[str, str]:
        return _params(self.mail)

    def rcpt_params(self) -> list[dict[str, str]]:
        return [_params(line) for line in self.rcpts]

    def rcpt_addresses(self) -> list[str]:
        return [_address(line) for line in self.rcpts]


def _params(line: str) -> dict[str, str]:
    rest = line.split(">", 1)[1] if ">" in line else ""
    found = {}
    for word in rest.split():
        key, _, value = word.partition("=")
        found[key.upper()] = value
    return found


def _address(line: str) -> str:
    return line.split("<", 1)[-1].split(">", 1)[0]


def _verb(line: str) -> str:
    return line.split(" ", 1)[0].split(":", 1)[0].upper()


def _unstuff(raw: bytes) -> bytes:
    return b"\n".join(line[1:] if line.startswith(b".") else line for line in raw.split(b"\n"))


class ScriptedHop:
    """The scripted next hop on `host` and `port` (0: a free one); `script` may be replaced between cases."""

    def __init__(self, script: Script | None = None, host: str = "127.0.0.1", port: int = 0):
        self.host = host
        self.port = port
        self.script = script or Script()
        self.transactions: list[Transaction] = []  # every message taken, accepted or not
        self.connections = 0
        self.commands: list[tuple[int, str]] = []  # (connection number, command line)
        self.lock = threading.Lock()
        self._uses: dict[str, int] = {}
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    def start(self) -> ScriptedHop:
        self._loop = asyncio.new_event_loop()
        self._stopping = asyncio.Event()
        self._thread = threading.Thread(target=self._loop.run_forever, name="scripted-hop", daemon=True)
        self._thread.start()
        try:
            self.listen()
        except OSError:
            self._end_thread()
            raise
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        async def close():
            self._stopping.set()
            self._server.close()
            for writer in list(self._writers):
                writer.close()
        self._call(close())
        self._end_thread()

    def listen(self) -> None:
        """Listen (again) on `host` and `port`."""
        self._server = self._call(asyncio.start_server(self._session, self.host, self.port, limit=1 << 26))

    def refuse_connections(self) -> None:
        """Stop listening (connections are refused) until `listen()`; none is left open."""
        self._wait_idle()

        async def close():
            self._server.close()
            await self._server.wait_closed()
        self._call(close())

    async def drop_connections(self) -> None:
        """Close every open connection, as a server does when its idle timer runs out."""
        self._hang_up()
        await asyncio.sleep(0.05)  # let the client's side, on the caller's loop, see the FIN

    def reset(self, script: Script | None = None) -> None:
        """A new script and empty records.

        A client keeps an idle connection a moment for more mail (Postern 2 s, Postfix's
        smtp_connection_cache_time_limit 2 s). When the old or the new script greets, answers
        EHLO or ends a session other than plainly, the next case must start on a fresh
        connection, so this waits for the client to close its idle ones (those still open
        after 5 s are closed here); otherwise the new case may go on over an old connection,
        which then answers by the new script."""
        script = script or Script()
        if not (self.script.plain() and script.plain()):
            self._wait_idle()
        with self.lock:
            self.script = script
            self.transactions = []
            self.commands = []
            self.connections = 0
            self._uses = {}

    def messages(self, sender: str | None = None) -> list[Transaction]:
        """Accepted transactions, optionally only those from one envelope sender ("" for bounces)."""
        with self.lock:
            found = [t for t in self.transactions if t.accepted]
        return found if sender is None else [t for t in found if _address(t.mail) == sender]

    def verbs(self, connection: int | None = None) -> list[str]:
        with self.lock:
            return [_verb(line) for n, line in self.commands if connection is None or n == connection]

    def _call(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(10)

    def _end_thread(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def _wait_idle(self) -> None:
        """Wait for clients to close their idle connections; close those still open after 5 s."""
        deadline = time.monotonic() + 5
        while self._writers and time.monotonic() < deadline:
            time.sleep(0.05)
        self._hang_up()

    def _hang_up(self) -> None:
        async def hang_up():
            for writer in list(self._writers):
                writer.close()
        self._call(hang_up())

    # The server side, on the hop's own loop.

    def _answer(self, stage: str, value: Reply, line: str) -> str:
        if callable(value):
            return value(line)
        if isinstance(value, (list, tuple)):
            with self.lock:
                index = self._uses.get(stage, 0)
                self._uses[stage] = index + 1
            return value[min(index, len(value) - 1)]
        return value

    async def _say(self, writer: asyncio.StreamWriter, stage: str, answer: str) -> bool:
        """Send `answer` after the stage's delay; False when it says to hang up."""
        await self._delay(stage)
        return await self._send(writer, answer)

    async def _delay(self, stage: str) -> None:
        if self.script.delay.get(stage):
            await asyncio.sleep(self.script.delay[stage])

    @staticmethod
    async def _send(writer: asyncio.StreamWriter, answer: str) -> bool:
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
            number = self.connections
        try:
            await self._converse(number, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _converse(self, number: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not await self._say(writer, "greeting", self._answer("greeting", self.script.greeting, "")):
            return
        helo = ""
        current: Transaction | None = None
        while True:
            line = (await reader.readuntil(b"\n")).rstrip(b"\r\n").decode("utf-8", "surrogateescape")
            script = self.script  # the case's script, also on a connection opened before it
            verb = _verb(line)
            with self.lock:
                self.commands.append((number, line))
            bounce = current is not None and _address(current.mail) == ""
            if verb == "EHLO":
                answer = self._answer("ehlo", script.ehlo, line)
                if answer:
                    if not await self._say(writer, "ehlo", answer):
                        return
                    continue
                helo = line
                lines = ["hop.example.org", *script.extensions]
                text = "".join(f"250{'-' if i < len(lines) - 1 else ' '}{item}\r\n" for i, item in enumerate(lines))
                writer.write(text.encode())
            elif verb == "HELO":
                helo = line
                if not await self._say(writer, "helo", self._answer("helo", script.helo, line)):
                    return
            elif verb == "MAIL":
                current = Transaction(number, helo, line, after_mail=bytes(reader._buffer))
                plain = Script() if _address(line) == "" else script
                answer = self._answer("mail", plain.mail, line)
                if not await self._say(writer, "mail", answer):
                    return
                if not answer.startswith("2"):
                    current = None
            elif verb == "RCPT":
                address = _address(line)
                stage, value = "rcpt", script.rcpt
                if isinstance(value, dict):
                    stage, value = "rcpt:" + address, value.get(address, "250 2.1.5 Ok")
                answer = self._answer(stage, value, line)
                if not await self._say(writer, "rcpt", answer):
                    return
                if current is not None and answer.startswith("2"):
                    current.rcpts.append(line)
            elif verb == "DATA" and (current is None or not current.rcpts):
                writer.write(script.data_unwanted.encode() + b"\r\n")
                if script.data_unwanted.startswith("3"):  # a broken server: the data comes, and goes nowhere
                    await self._read_data(reader, writer)
                    writer.write(b"554 5.5.1 Error: no valid recipients\r\n")
            elif verb == "DATA":
                answer = self._answer("data", (Script() if bounce else script).data, line)
                if not await self._say(writer, "data", answer):
                    return
                if not answer.startswith("3"):
                    continue
                current.raw = await self._read_data(reader, writer)
                if not await self._finish(writer, current, _unstuff(current.raw), False):
                    return
                current = None
            elif verb == "BDAT":
                words = line.split()
                size = int(words[1])
                chunk = await reader.readexactly(size)
                if current is not None:
                    current.raw += chunk
                if len(words) > 2 and words[2].upper() == "LAST":
                    if not await self._finish(writer, current, current.raw if current else chunk, True):
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

    async def _finish(self, writer, current: Transaction | None, content: bytes, chunked: bool) -> bool:
        script = Script() if current is not None and _address(current.mail) == "" else self.script
        answer = self._answer("dot", script.dot, "")
        await self._delay("dot")
        if current is not None:  # recorded before the reply goes out, for a test that looks once it has it
            current.content, current.chunked, current.accepted = content, chunked, answer.startswith("2")
            with self.lock:
                self.transactions.append(current)
        try:
            answered = await self._send(writer, answer)
        except ConnectionError:
            if current is not None:
                current.accepted = False
            raise
        if answered and self.script.close_after_message:
            await writer.drain()
            writer.close()
            return False
        return answered

    async def _read_data(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
        """The message up to the line with a single dot, as it came."""
        if self.script.data_stall:
            await reader.read(1024)
            writer.transport.pause_reading()  # the client's writes fill the socket buffers, then wait
            await self._stopping.wait()
            raise ConnectionError("stalled on purpose")
        if self.script.data_pause:
            size, pause = self.script.data_pause
            received = bytearray()
            while not received.endswith(b"\r\n.\r\n") and received != b".\r\n":
                chunk = await reader.read(size)
                if not chunk:
                    raise ConnectionError("client went away during DATA")
                received += chunk
                await asyncio.sleep(pause)
            return bytes(received[:-3])
        lines = []
        while (line := await reader.readuntil(b"\n")) not in (b".\r\n", b".\n"):
            lines.append(line)
        return b"".join(lines)
