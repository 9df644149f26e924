"""A byte-exact SMTP client on a plain socket, for what smtplib would tidy up.

smtplib normalises line ends and dot-stuffs; this client sends exactly the bytes it
is given, so tests can play broken or hostile clients (bare LF, NUL bytes, pipelined
commands, silence).
"""

from __future__ import annotations

import socket
import ssl
import time


class RawSmtp:
    def __init__(self, port: int, source: str = "127.0.0.1", host: str = "127.0.0.1", timeout: float = 10.0):
        self.sock: socket.socket | ssl.SSLSocket = socket.create_connection(
            (host, port), timeout=timeout, source_address=(source, 0)
        )
        self.timeout = timeout
        self._buffer = b""

    def __enter__(self) -> RawSmtp:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes | str) -> None:
        self.sock.sendall(data.encode() if isinstance(data, str) else data)

    def _line(self) -> str:
        while b"\r\n" not in self._buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"connection closed; unanswered bytes: {self._buffer!r}")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\r\n")
        return line.decode("ascii", "replace")

    def reply(self) -> list[str]:
        """One whole (possibly multi-line) reply, as its lines."""
        lines = [self._line()]
        while lines[-1][3:4] == "-":
            lines.append(self._line())
        return lines

    def command(self, line: str | bytes) -> str:
        """Send one command line (CRLF added) and return the last line of the reply."""
        self.send((line.encode() if isinstance(line, str) else line) + b"\r\n")
        return self.reply()[-1]

    def greeting(self) -> str:
        return self.reply()[-1]

    def start_session(self, helo: str = "client.example.net") -> None:
        assert self.greeting().startswith("220 ")
        ehlo = self.command(f"EHLO {helo}")
        assert ehlo.startswith("250 "), ehlo

    def wait_closed(self, timeout: float) -> bytes:
        """Wait for the server to close the connection; returns what it sent before closing."""
        deadline = time.monotonic() + timeout
        received = self._buffer
        self._buffer = b""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"connection still open after {timeout}s; received {received!r}")
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                continue
            except ConnectionResetError:
                return received
            if not chunk:
                self.sock.settimeout(self.timeout)
                return received
            received += chunk

    def starttls(self, context: ssl.SSLContext) -> None:
        """Handshake on the current socket; unread plaintext must have been consumed."""
        assert not self._buffer, f"plaintext left before the TLS handshake: {self._buffer!r}"
        self.sock = context.wrap_socket(self.sock, server_hostname="gw.example.com")
