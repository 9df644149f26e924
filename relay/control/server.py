"""The Varlink server on the control socket.

Varlink: JSON objects, each ended by a NUL byte, over a Unix stream socket. A call
is `{"method": "io.postern.Queue.List", "parameters": {...}}`; the reply is
`{"parameters": {...}}` or `{"error": "<interface>.<Name>", "parameters": {...}}`;
a call with `"more": true` gets replies with `"continues": true` until the last.
systemd's `varlinkctl` speaks it, so `varlinkctl call unix:/run/postern/control.sock
io.postern.Status.Get {}` works on the appliance.

Only root, the daemon's own user and members of the admin group get in: the
socket is 0660 in a directory only they can enter, and each connection's peer
credentials (SO_PEERCRED) are checked again. Requests are bounded in size and
time, and a bad request costs its client the connection, nothing more.
"""

from __future__ import annotations

import asyncio
import grp
import json
import logging
import os
import pwd
import socket
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from . import errors
from .methods import METHODS, Call, VarlinkError

if TYPE_CHECKING:
    from ..daemon import Relay

log = logging.getLogger("postern/control")

MAX_REQUEST = 64 * 1024
IDLE_TIMEOUT = 300.0
REQUEST_TIMEOUT = 5.0  # once a request has begun, the rest must come within this: no slot held by half a request
MAX_CLIENTS = 32
# While the queue is read at start, these interfaces answer at once (Status says how far the load is);
# every other call waits for the end of the load.
ANSWERED_WHILE_LOADING = {"org.varlink.service", "io.postern.Control", "io.postern.Status", "io.postern.Log"}


@dataclass(frozen=True)
class Peer:
    pid: int
    uid: int
    gid: int


def peer_of(writer: asyncio.StreamWriter) -> Peer:
    sock = writer.get_extra_info("socket")
    data = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return Peer(*struct.unpack("3i", data))


def group_allows(group: str, peer: Peer) -> bool:
    try:
        entry = grp.getgrnam(group)
    except KeyError:
        return False
    if peer.gid == entry.gr_gid:
        return True
    try:
        user = pwd.getpwuid(peer.uid)
    except KeyError:
        return False
    return user.pw_gid == entry.gr_gid or user.pw_name in entry.gr_mem


def encode(message: dict) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\0"


class ControlServer:
    def __init__(self, relay: Relay, path: str, group: str):
        self.relay = relay
        self.path = Path(path)
        self.group = group
        self.clients = 0
        self.stopping = False
        self._server: asyncio.AbstractServer | None = None

    def allowed(self, peer: Peer) -> bool:
        return peer.uid == 0 or peer.uid == os.geteuid() or group_allows(self.group, peer)

    def _group_id(self) -> int | None:
        try:
            return grp.getgrnam(self.group).gr_gid
        except KeyError:
            return None

    async def start(self) -> None:
        directory = self.path.parent
        gid = self._group_id()
        if not directory.exists():
            directory.mkdir(mode=0o750, parents=True)
            if gid is not None:
                os.chown(directory, -1, gid)
        self.path.unlink(missing_ok=True)
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.path), limit=MAX_REQUEST)
        os.chmod(self.path, 0o660)
        if gid is not None:
            os.chown(self.path, -1, gid)
        log.info("control socket %s (group %s)", self.path, self.group if gid is not None else "none")

    async def stop(self) -> None:
        self.stopping = True
        if self._server:
            self._server.close()
        self.path.unlink(missing_ok=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = peer_of(writer)
        try:
            if not self.allowed(peer):
                log.warning("control: refused uid=%d pid=%d: not root, the daemon's user or in group %s",
                            peer.uid, peer.pid, self.group)
                writer.write(encode(VarlinkError(errors.PERMISSION_DENIED, uid=peer.uid, group=self.group).reply()))
                return
            if self.clients >= MAX_CLIENTS:
                writer.write(encode(VarlinkError(errors.BUSY, limit=MAX_CLIENTS).reply()))
                return
            self.clients += 1
            try:
                await self._session(reader, writer, peer)
            finally:
                self.clients -= 1
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            try:
                await writer.drain()
                await self._discard_unread(reader)
            except ConnectionError:
                pass
            writer.close()

    @staticmethod
    async def _discard_unread(reader: asyncio.StreamReader, limit: int = 1 << 20, wait: float = 1.0) -> None:
        """Read what the client still sends (briefly, boundedly) before closing, so that closing with
        unread data does not reset the connection and destroy the error reply on its way to the client."""
        try:
            async with asyncio.timeout(wait):
                while limit > 0 and not reader.at_eof():
                    chunk = await reader.read(65536)
                    if not chunk:
                        return
                    limit -= len(chunk)
        except (TimeoutError, ConnectionError):
            pass

    async def _read_request(self, reader: asyncio.StreamReader) -> dict | None:
        """The next request; None at end of stream. Raises VarlinkError for a bad one."""
        started = False
        try:
            data = await asyncio.wait_for(reader.readexactly(1), IDLE_TIMEOUT)
            started = True
            if data != b"\0":
                data += await asyncio.wait_for(reader.readuntil(b"\0"), REQUEST_TIMEOUT)
        except asyncio.IncompleteReadError as error:
            if started or error.partial:
                raise VarlinkError(errors.MALFORMED_REQUEST, reason="connection closed mid-request")
            return None
        except asyncio.LimitOverrunError:
            raise VarlinkError(errors.REQUEST_TOO_LARGE, limit=MAX_REQUEST) from None
        except asyncio.TimeoutError:
            if started:
                raise VarlinkError(errors.MALFORMED_REQUEST,
                                   reason=f"request not finished within {REQUEST_TIMEOUT:g} s") from None
            return None
        try:
            request = json.loads(data[:-1])
        except (UnicodeDecodeError, ValueError) as error:
            raise VarlinkError(errors.MALFORMED_REQUEST, reason=f"not JSON: {error}") from None
        except RecursionError:  # Python's parser recurses once per level: [[[[... within 64 KiB is too deep
            raise VarlinkError(errors.MALFORMED_REQUEST, reason="not JSON: nested too deeply") from None
        if not isinstance(request, dict) or not isinstance(request.get("method"), str):
            raise VarlinkError(errors.MALFORMED_REQUEST, reason="expected an object with a method")
        if not isinstance(request.get("parameters", {}), dict):
            raise VarlinkError(errors.INVALID_PARAMETER, parameter="parameters")
        return request

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: Peer) -> None:
        while True:
            try:
                request = await self._read_request(reader)
            except VarlinkError as error:
                writer.write(encode(error.reply()))
                return  # the stream cannot be trusted after a bad request
            if request is None:
                return
            if self.stopping:
                writer.write(encode(VarlinkError(errors.SHUTTING_DOWN).reply()))
                return
            if not await self._dispatch(request, reader, writer, peer):
                return

    async def _dispatch(self, request: dict, reader, writer: asyncio.StreamWriter, peer: Peer) -> bool:
        """Run one call; False when the connection should close."""
        name = request["method"]
        method = METHODS.get(name)
        call = Call(self.relay, request.get("parameters", {}), peer.uid, bool(request.get("more")))
        oneway = bool(request.get("oneway"))
        try:
            if method is None:
                interface = name.rpartition(".")[0]
                if not any(known.rpartition(".")[0] == interface for known in METHODS):
                    raise VarlinkError(errors.INTERFACE_NOT_FOUND, interface=interface)
                raise VarlinkError(errors.METHOD_NOT_FOUND, method=name)
            if not self.relay.queue_loaded.is_set() and name.rpartition(".")[0] not in ANSWERED_WHILE_LOADING:
                await self.relay.queue_loaded.wait()  # no call reads or changes part of the queue
            if name.rpartition(".")[0] != "org.varlink.service" and not method.streams:
                await self.relay.settle()  # what a client was told 250 for before this call is in the answer
            if method.streams and call.more:
                return await self._stream(method, call, reader, writer)
            if method.streams:
                updates = method.handler(call)
                try:
                    result = await updates.__anext__()
                finally:
                    await updates.aclose()
            else:
                result = await method.handler(call)
        except VarlinkError as error:
            writer.write(encode(error.reply()))
            await writer.drain()
            return not error.fatal
        if not oneway:
            writer.write(encode({"parameters": result}))
            await writer.drain()
        return True

    async def _stream(self, method, call: Call, reader, writer: asyncio.StreamWriter) -> bool:
        """Send replies with "continues" until the client goes away or the daemon stops."""
        hangup = asyncio.ensure_future(reader.read(1))  # any byte or EOF from the client ends the stream
        updates = method.handler(call)
        try:
            while True:
                update = asyncio.ensure_future(updates.__anext__())
                await asyncio.wait({update, hangup}, return_when=asyncio.FIRST_COMPLETED)
                if not update.done():
                    update.cancel()
                    await asyncio.gather(update, return_exceptions=True)
                    return False
                try:
                    parameters = update.result()
                except StopAsyncIteration:
                    return False
                except VarlinkError as error:
                    writer.write(encode(error.reply()))
                    return False
                writer.write(encode({"parameters": parameters, "continues": True}))
                await writer.drain()
        finally:
            hangup.cancel()
            await asyncio.gather(hangup, return_exceptions=True)  # until then the reader is not free to read again
            await updates.aclose()
