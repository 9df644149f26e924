"""An asyncio Varlink client for the control socket: what the console uses, so nothing blocks its loop."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from . import errors
from .client import ControlError, PermissionDenied, Unreachable

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
        except (OSError, asyncio.TimeoutError) as error:
            raise Unreachable(f"{self.path}: {getattr(error, 'strerror', None) or 'no answer'}") from None

    @staticmethod
    async def _receive(reader: asyncio.StreamReader, timeout: float | None) -> dict:
        try:
            data = await asyncio.wait_for(reader.readuntil(b"\0"), timeout)
        except asyncio.TimeoutError:
            raise Unreachable("the relay did not answer in time") from None
        except (asyncio.IncompleteReadError, ConnectionError):
            raise Unreachable("the relay closed the connection") from None
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
        reader, writer = await self._open()
        try:
            writer.write(json.dumps({"method": method, "parameters": parameters, "more": True}).encode() + b"\0")
            await writer.drain()
            while True:
                reply = await self._receive(reader, None)
                yield reply.get("parameters", {})
                if not reply.get("continues"):
                    return
        finally:
            writer.close()
