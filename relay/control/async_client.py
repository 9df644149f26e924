"""An asyncio Varlink client for the control socket: what the console uses, so nothing blocks its loop."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from . import errors
from .errors import ControlError, NoAnswer, PermissionDenied, Unreachable

CALL_TIMEOUT = 10.0
READ_LIMIT = 64 << 20


class AsyncControlClient:
    """One connection per call or stream: a slow stream never holds up a call."""

    def __init__(self, path: str, timeout: float = CALL_TIMEOUT):
        self.path = path
        self.timeout = timeout

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        try:
            return await asyncio.wait_for(asyncio.open_unix_connection(self.path, limit=READ_LIMIT), self.timeout)
        except PermissionError as error:
            raise PermissionDenied(f"{self.path}: {error.strerror}") from None
        except (FileNotFoundError, ConnectionRefusedError) as error:
            raise Unreachable(f"{self.path}: {error.strerror}") from None
        except (asyncio.TimeoutError, TimeoutError):
            raise NoAnswer(self.path, self.timeout) from None
        except OSError as error:
            raise Unreachable(f"{self.path}: {error.strerror or error}") from None

    async def _receive(self, reader: asyncio.StreamReader, timeout: float | None) -> dict:
        try:
            data = await asyncio.wait_for(reader.readuntil(b"\0"), timeout)
        except (asyncio.TimeoutError, TimeoutError):
            raise NoAnswer(self.path, timeout) from None
        except (asyncio.IncompleteReadError, ConnectionError):
            raise Unreachable(f"{self.path}: the relay closed the connection") from None
        reply = json.loads(data[:-1])
        if "error" in reply:
            if reply["error"] == errors.PERMISSION_DENIED:
                raise PermissionDenied("the relay refused this user")
            raise ControlError(reply["error"], reply.get("parameters", {}))
        return reply

    async def call(self, method: str, **parameters: Any) -> dict:
        reader, writer = await self._open()
        try:
            writer.write(json.dumps({"method": method, "parameters": parameters}).encode() + b"\0")
            await writer.drain()
            return (await self._receive(reader, self.timeout)).get("parameters", {})
        finally:
            writer.close()

    async def stream(self, method: str, **parameters: Any) -> AsyncIterator[dict]:
        """The replies as they come: the first within the timeout (the relay answers a stream at once), the
        others whenever there is news."""
        reader, writer = await self._open()
        try:
            writer.write(json.dumps({"method": method, "parameters": parameters, "more": True}).encode() + b"\0")
            await writer.drain()
            timeout = self.timeout
            while True:
                reply = await self._receive(reader, timeout)
                timeout = None
                yield reply.get("parameters", {})
                if not reply.get("continues"):
                    return
        finally:
            writer.close()
