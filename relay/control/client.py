"""A small blocking Varlink client for the control socket (posternctl, scripts, the console's workers)."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

from . import errors
from .errors import ControlError, NoAnswer, PermissionDenied, Unreachable

DEFAULT_SOCKET = "/run/postern/control.sock"
DEFAULT_TIMEOUT = 30.0


class ControlClient:
    def __init__(self, path: str, timeout: float | None = DEFAULT_TIMEOUT):
        self.path = path
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._buffer = b""

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path)
        except PermissionError as error:
            sock.close()
            raise PermissionDenied(f"{self.path}: {error.strerror}") from None
        except (FileNotFoundError, ConnectionRefusedError) as error:
            sock.close()
            raise Unreachable(f"{self.path}: {error.strerror}") from None
        except TimeoutError:
            sock.close()
            raise NoAnswer(self.path, self.timeout) from None
        except OSError as error:
            sock.close()
            raise Unreachable(f"{self.path}: {error.strerror or error}") from None
        self._sock = sock

    def close(self) -> None:
        if self._sock:
            self._sock.close()
            self._sock = None

    def _send(self, message: dict) -> None:
        if self._sock is None:
            self.connect()
        try:
            self._sock.sendall(json.dumps(message).encode() + b"\0")
        except TimeoutError:
            raise NoAnswer(self.path, self.timeout) from None
        except OSError as error:
            raise Unreachable(f"{self.path}: {error.strerror or error}") from None

    def _receive(self) -> dict:
        while b"\0" not in self._buffer:
            try:
                chunk = self._sock.recv(65536)
            except TimeoutError:
                raise NoAnswer(self.path, self.timeout) from None
            if not chunk:
                raise Unreachable(f"{self.path}: the daemon closed the connection")
            self._buffer += chunk
        data, _, self._buffer = self._buffer.partition(b"\0")
        reply = json.loads(data)
        if "error" in reply:
            if reply["error"] == errors.PERMISSION_DENIED:
                raise PermissionDenied(f"the daemon refused uid {reply.get('parameters', {}).get('uid')}: "
                                       f"not root or in group {reply.get('parameters', {}).get('group')}")
            raise ControlError(reply["error"], reply.get("parameters", {}))
        return reply

    def call(self, method: str, **parameters: Any) -> dict:
        self._send({"method": method, "parameters": parameters})
        return self._receive().get("parameters", {})

    def stream(self, method: str, **parameters: Any) -> Iterator[dict]:
        """Replies of a call made with "more", as they come; the connection serves nothing else after."""
        self._send({"method": method, "parameters": parameters, "more": True})
        while True:
            reply = self._receive()
            yield reply.get("parameters", {})
            if not reply.get("continues"):
                return
