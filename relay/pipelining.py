"""Commands sent together to a next hop that offers PIPELINING (RFC 2920), as Postfix's smtp does.

aiosmtplib writes one command and reads its one reply; what the server sends beyond that reply
is dropped, so it cannot read the replies of commands written together. `PipeliningProtocol` is
its protocol with one addition: `send(data, replies)` writes data that asks for several replies
(MAIL, every RCPT and DATA in one write; the message and its final dot in another), and each of
those replies is kept, in order, for `reply()`. Everything else (the greeting, EHLO, STARTTLS,
AUTH, RSET, QUIT) is aiosmtplib's own, unchanged: outside such a group this protocol is
aiosmtplib's. As there, data the server sends beyond the replies asked for is dropped, so it can
never be taken for the reply to a later command.

aiosmtplib makes its protocol by the name `SMTPProtocol` in its `smtp` module, which is where
this one is put (`install`), so every aiosmtplib client of the relay uses it.
"""

from __future__ import annotations

import asyncio
import collections

import aiosmtplib.smtp
from aiosmtplib.errors import SMTPReadTimeoutError, SMTPResponseException, SMTPServerDisconnected
from aiosmtplib.protocol import COMMAND_INJECTION_REGEX, MAX_RESPONSE_LENGTH, SMTPProtocol
from aiosmtplib.response import SMTPResponse
from aiosmtplib.typing import SMTPStatus


class PipeliningProtocol(SMTPProtocol):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._replies: collections.deque[SMTPResponse] = collections.deque()
        self._awaited = 0  # replies asked for by `send` and not arrived yet
        self._error: BaseException | None = None  # what ended the group: the connection, a bad reply
        self._arrived: asyncio.Future[None] | None = None

    def send(self, data: bytes, replies: int) -> None:
        """Write `data`, whose commands (or message and final dot) ask for `replies` replies."""
        if self._awaited or self._replies:
            raise RuntimeError("the replies of the commands sent before are not all read")
        self._awaited, self._error = replies, None
        self.write(data)

    async def reply(self, timeout: float | None) -> SMTPResponse:
        """The next reply to what `send` wrote, waiting at most `timeout` seconds for it."""
        timer = None
        try:
            while not self._replies:
                if self._error is not None:
                    raise self._error
                if not self._awaited:
                    raise RuntimeError("no reply was asked for")
                if timer is None and timeout is not None:  # one timer, not asyncio.wait_for's task per reply
                    timer = self._loop.call_later(timeout, self._end, SMTPReadTimeoutError(
                        "Timed out waiting for server response"))
                self._arrived = self._loop.create_future()
                try:
                    await self._arrived
                finally:
                    self._arrived = None
        finally:
            if timer is not None:
                timer.cancel()
        return self._replies.popleft()

    def data_received(self, data: bytes) -> None:
        if not self._awaited:  # no group is being read: aiosmtplib's way
            super().data_received(data)
            return
        self._buffer.extend(data)
        try:
            while self._awaited and (response := self._read_response_from_buffer()) is not None:
                self._replies.append(response)
                self._awaited -= 1
            if self._awaited and len(self._buffer) > MAX_RESPONSE_LENGTH:
                raise SMTPResponseException(SMTPStatus.invalid_response.value, "Response too long")
        except SMTPResponseException as error:
            self._end(error)
        if not self._awaited:
            del self._buffer[:]  # nothing was asked for beyond the group's last reply
        self._wake()

    def eof_received(self) -> bool:
        if self._awaited:
            self._end(SMTPServerDisconnected("Unexpected EOF received"))
        return super().eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._awaited:
            self._end(SMTPServerDisconnected("Connection lost"))
        super().connection_lost(exc)

    def _end(self, error: BaseException) -> None:
        self._error, self._awaited = error, 0
        self._wake()

    def _wake(self) -> None:
        if self._arrived is not None and not self._arrived.done():
            self._arrived.set_result(None)


def command(*parts: bytes) -> bytes:
    """One command line, refused (ValueError) if a part holds a control character, as aiosmtplib does."""
    for part in parts:
        if COMMAND_INJECTION_REGEX.search(part):
            raise ValueError("Command arg contains a prohibited control character")
    return b" ".join(parts) + b"\r\n"


def install() -> None:
    aiosmtplib.smtp.SMTPProtocol = PipeliningProtocol


install()
