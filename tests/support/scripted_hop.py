"""A next hop whose every answer a test chooses: a plain asyncio SMTP server on loopback.

Unlike `sink.Sink` (aiosmtpd, a well-behaved server), this one plays the servers a
delivery client must cope with: a 5xx to EHLO, a 4xx to MAIL, a greeting that never
comes, a connection closed between two messages, a reader that takes its time.
It runs on the test's own event loop and records everything it receives.

    hop = await ScriptedHop(replies={"EHLO": "502 5.5.1 no ESMTP here"}).start()

`replies` maps a stage ("greeting", "EHLO", "HELO", "MAIL", "RCPT", "DATA", "dot"
(the reply after the final dot), "RSET", "QUIT") to a reply: a string, a list (one
per use, the last one kept), or a function of the command line. The reply `CLOSE`
closes the connection without a word. `delays` holds seconds to wait before a
stage's reply; `data_pause` makes the reading of the message slow but moving,
`data_stall` stops it altogether.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Callable

CLOSE = "CLOSE"
DEFAULTS = {
    "greeting": "220 hop.example.net ESMTP scripted",
    "HELO": "250 hop.example.net",
    "MAIL": "250 2.1.0 Ok",
    "RCPT": "250 2.1.5 Ok",
    "DATA": "354 End data with <CR><LF>.<CR><LF>",
    "dot": "250 2.0.0 Ok: queued",
    "RSET": "250 2.0.0 Ok",
    "NOOP": "250 2.0.0 Ok",
    "QUIT": "221 2.0.0 Bye",
}


@dataclass
class Message:
    connection: int
    mail: str  # the MAIL command line as received, parameters included
    rcpts: list[str]  # the RCPT command lines the hop accepted
    raw: bytes  # the DATA content as it came over the wire, dot-stuffing and all
    content: bytes  # with the dot-stuffing undone


@dataclass
class ScriptedHop:
    host: str = "127.0.0.1"
    port: int = 0
    extensions: tuple[str, ...] = ("8BITMIME", "SIZE 10240000", "ENHANCEDSTATUSCODES")
    replies: dict[str, object] = field(default_factory=dict)
    delays: dict[str, float] = field(default_factory=dict)
    data_pause: tuple[int, float] | None = None  # read (bytes, then sleep seconds) while taking DATA
    data_stall: bool = False  # stop reading the message after its first bytes, until stopped
    connections: int = 0
    commands: list[tuple[int, str]] = field(default_factory=list)  # (connection number, line)
    messages: list[Message] = field(default_factory=list)

    async def start(self) -> ScriptedHop:
        self._uses: dict[str, int] = {}
        self._writers: set[asyncio.StreamWriter] = set()
        self._stopping = asyncio.Event()
        self._server = await asyncio.start_server(self._session, self.host, self.port, limit=2**26)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        self._stopping.set()
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        await self._server.wait_closed()

    async def drop_connections(self) -> None:
        """Close every open connection, as a server does when its idle timer runs out."""
        for writer in list(self._writers):
            writer.close()
        await asyncio.sleep(0.05)  # let the client's side see the FIN

    def verbs(self, connection: int | None = None) -> list[str]:
        return [line.split(" ", 1)[0].split(":", 1)[0].upper() for n, line in self.commands
                if connection is None or n == connection]

    def _reply(self, stage: str, line: str) -> str:
        scripted = self.replies.get(stage)
        if scripted is None:
            if stage == "EHLO":
                lines = ["hop.example.net", *self.extensions]
                return "\r\n".join(f"250-{text}" for text in lines[:-1]) + ("\r\n" if len(lines) > 1 else "") \
                    + f"250 {lines[-1]}"
            return DEFAULTS.get(stage, "502 5.5.2 Error: command not recognized")
        if callable(scripted):
            return scripted(line)
        if isinstance(scripted, list):
            used = self._uses.get(stage, 0)
            self._uses[stage] = used + 1
            return scripted[min(used, len(scripted) - 1)]
        return str(scripted)

    async def _say(self, writer: asyncio.StreamWriter, stage: str, line: str = "") -> bool:
        if stage in self.delays:
            await asyncio.sleep(self.delays[stage])
        reply = self._reply(stage, line)
        if reply == CLOSE:
            writer.close()
            return False
        writer.write(reply.encode() + b"\r\n")
        await writer.drain()
        return True

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number = self.connections
        self._writers.add(writer)
        mail, rcpts = "", []
        try:
            if not await self._say(writer, "greeting"):
                return
            while line := (await reader.readline()).decode("utf-8", "surrogateescape").rstrip("\r\n"):
                self.commands.append((number, line))
                verb = line.split(" ", 1)[0].split(":", 1)[0].upper()
                if verb == "DATA":
                    reply = self._reply("DATA", line)
                    if "DATA" in self.delays:
                        await asyncio.sleep(self.delays["DATA"])
                    if reply == CLOSE:
                        return
                    writer.write(reply.encode() + b"\r\n")
                    if not reply.startswith("354"):
                        continue
                    raw = await self._read_data(reader, writer)
                    content = b"".join(l[1:] if l.startswith(b".") else l for l in raw.splitlines(keepends=True))
                    self.messages.append(Message(number, mail, rcpts, raw, content))
                    mail, rcpts = "", []
                    if not await self._say(writer, "dot", line):
                        return
                    continue
                stage = verb if verb in DEFAULTS or verb == "EHLO" else "other"
                reply = self._reply(stage, line)
                if stage in self.delays:
                    await asyncio.sleep(self.delays[stage])
                if reply == CLOSE:
                    return
                if verb == "MAIL" and reply.startswith("2"):
                    mail, rcpts = line, []
                elif verb == "RCPT" and reply.startswith("2"):
                    rcpts.append(line)
                elif verb == "RSET":
                    mail, rcpts = "", []
                writer.write(reply.encode() + b"\r\n")
                await writer.drain()
                if verb == "QUIT":
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _read_data(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
        if self.data_stall:
            await reader.read(1024)
            writer.transport.pause_reading()  # the client's writes fill the socket buffers, then wait
            await self._stopping.wait()
            raise ConnectionError("stalled on purpose")
        if self.data_pause:
            size, pause = self.data_pause
            received = bytearray()
            while not received.endswith(b"\r\n.\r\n") and received != b".\r\n":
                chunk = await reader.read(size)
                if not chunk:
                    raise ConnectionError("client went away during DATA")
                received += chunk
                await asyncio.sleep(pause)
            return bytes(received[:-3])
        return (await reader.readuntil(b"\r\n.\r\n"))[:-3]
