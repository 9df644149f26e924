"""Talking to the control socket byte for byte, as a misbehaving client would."""

from __future__ import annotations

import socket
import threading
from pathlib import Path


def raw_exchange(path: Path | str, payload: bytes, timeout: float = 10.0) -> bytes:
    """Send bytes as they are, then end the input; return everything the daemon sent until it closed."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        try:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the daemon may hang up before it has read everything
        data = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
    return data


def replies(data: bytes) -> list[bytes]:
    """The NUL-terminated replies in what the daemon sent."""
    return [part for part in data.split(b"\0") if part]


class SilentSocket:
    """A Unix socket that takes every connection and reads what comes, but never answers: a stuck relay."""

    def __init__(self, path: Path | str):
        self.path = str(path)
        self.connections: list[socket.socket] = []
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(self.path)
        self._listener.listen(16)
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> SilentSocket:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._thread.join(5)
        for connection in self.connections:
            connection.close()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            self.connections.append(connection)
