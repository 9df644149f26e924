"""Talking to the control socket byte for byte, as a misbehaving client would."""

from __future__ import annotations

import socket
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
