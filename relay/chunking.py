"""CHUNKING (RFC 3030): the BDAT command, answered as Postfix's smtpd answers it.

`BDAT <size> [LAST]` is followed by exactly <size> octets of message, read as they
come: a line in a chunk that looks like a command, or a lone dot, is data, and
nothing is dot-unstuffed. The chunks of a transaction are joined in one buffer that
never grows past the message size limit; the LAST chunk hands the whole message to
the session's end of message, the one DATA uses too, so line ends are normalised
over the joined message (a CR that ends one chunk and the LF that starts the next
are one CRLF) and every check, the queue and the reply are the same.

A refused chunk is still read and dropped, so client and relay stay in step; after
one, every further chunk of the transaction is dropped as well, until BDAT ... LAST
or RSET (Postfix's skip_bdat). Only a client that sends more than 1.5 times the
message size limit in one transaction is cut off, as Postfix does. BODY=BINARYMIME
is not offered, as in Postfix.
"""

from __future__ import annotations

import asyncio
import logging
import re

from aiosmtpd.smtp import SMTP, syntax

from . import replies
from .names import client_name
from .printable import printable

log = logging.getLogger("postern/smtpd")

_BDAT_ARGS = re.compile(r"(\d+)(?:[ \t]+(LAST))?", re.IGNORECASE)
_PIECE = 1 << 20  # a chunk is read this much at a time


class Chunking(SMTP):
    """BDAT for an SMTP session; the session has `receiver` (for reject logging) and `_end_of_message`."""

    _chunks: bytearray | None = None  # the transaction's message so far; None: no chunk taken
    _chunks_refused = False  # a chunk was refused: drop the others until LAST or RSET
    _chunk_octets = 0  # every chunk octet of the transaction, taken or dropped

    @property
    def in_bdat(self) -> bool:
        """Has this transaction begun sending its message with BDAT (Postfix's SMTPD_PROCESSING_BDAT)?"""
        return self._chunks is not None or self._chunks_refused

    def _set_post_data_state(self):
        super()._set_post_data_state()  # also RSET's, HELO's and EHLO's reset
        self._chunks, self._chunks_refused, self._chunk_octets = None, False, 0

    @syntax("BDAT count [LAST]")
    async def smtp_BDAT(self, arg: str | None) -> None:
        args = _BDAT_ARGS.fullmatch(arg or "")
        if not args:  # what follows would be message data read as commands: hang up, as Postfix does
            log.warning("NOQUEUE: malformed BDAT command syntax from %s: BDAT %s", self._client(),
                        printable(arg or "")[:100])
            self._reject(replies.BDAT_SYNTAX)
            await self.push(replies.BDAT_SYNTAX)
            self.transport.close()
            return
        size, last = int(args[1]), args[2] is not None
        try:
            await self._chunk(size, last)
        except asyncio.CancelledError:
            log.info("lost connection after BDAT (%d bytes) from %s", self._chunk_octets, self._client())
            self._writer.close()
            raise
        except ConnectionError:  # the client closed its side inside a chunk
            log.info("lost connection after BDAT (%d bytes) from %s", self._chunk_octets, self._client())
            if self.transport is not None:
                self.transport.close()

    async def _chunk(self, size: int, last: bool) -> None:
        if size == 0 and not last:
            await self._refuse(size, last, replies.NULL_BDAT)
        elif self._chunks_refused:
            await self._refuse(size, last, replies.BDAT_DISCARDED.format(size=size), logged=False)
        elif self._chunks is None and not self.envelope.rcpt_tos:
            # Every RCPT refused while BDAT was pipelined behind them: not a protocol error, as in Postfix.
            await self._refuse(size, last, replies.NO_VALID_RECIPIENTS if self.envelope.mail_from
                               else replies.NEED_RCPT)
        elif self.data_size_limit and len(self._chunks or b"") + size > self.data_size_limit:
            await self._refuse(size, last, replies.CHUNK_TOO_BIG)
        else:
            if self._chunks is None:
                self._chunks = bytearray()
            await self._read(size, self._chunks)
            if last:
                message = bytes(self._chunks)
                self._chunks = None  # freed before the checks make their copies
                await self._end_of_message(message, len(message), dot_stuffed=False)
            else:
                await self.push(replies.CHUNK_OK.format(size=size))

    async def _refuse(self, size: int, last: bool, reply: str, logged: bool = True) -> None:
        """Read and drop the chunk, then refuse it; past 1.5 times the size limit, hang up instead."""
        if logged:
            self._reject(reply)
        limit = self.data_size_limit
        if limit and self._chunk_octets + size > 1.5 * limit:
            log.warning("NOQUEUE: too much BDAT content -- disabling further input from %s", self._client())
            await self.push(reply)
            self.transport.close()
            return
        await self._read(size, None)
        await self.push(reply)
        if last:
            self._set_post_data_state()
        else:
            self._chunks, self._chunks_refused = None, True

    async def _read(self, size: int, into: bytearray | None) -> None:
        """Read `size` octets of chunk, appended to `into`, or dropped when it is None."""
        while size:
            piece = await self._reader.read(min(size, _PIECE))
            if not piece:
                raise ConnectionResetError("connection closed inside a BDAT chunk")
            self._chunk_octets += len(piece)
            size -= len(piece)
            if into is not None:
                into += piece

    def _client(self) -> str:
        return client_name(self.session)

    def _reject(self, reply: str) -> None:
        envelope = self.envelope
        self.receiver._reject(self.session, "BDAT", reply, envelope.mail_from,
                              envelope.rcpt_tos[0] if envelope.rcpt_tos else "")
