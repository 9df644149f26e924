"""An SMTP server that offers STARTTLS, says 220 to it, then answers the TLS handshake in plain text:
the client's handshake fails, as it does against a middlebox that breaks TLS.

    def test_x(plain_text_tls_hop): ...  # the fixture gives the port on 127.0.0.1
"""

from __future__ import annotations

import socket
import threading

import pytest


def _serve(listener: socket.socket) -> None:
    while True:
        try:
            connection, _ = listener.accept()
        except OSError:
            return
        with connection, connection.makefile("rb") as lines:
            connection.sendall(b"220 hop.example.org ESMTP\r\n")
            for line in lines:
                verb = line.split()[0].upper() if line.split() else b""
                if verb == b"EHLO":
                    connection.sendall(b"250-hop.example.org\r\n250 STARTTLS\r\n")
                elif verb == b"STARTTLS":
                    connection.sendall(b"220 2.0.0 Ready to start TLS\r\n")
                    connection.recv(65536)  # the ClientHello
                    connection.sendall(b"554 5.5.1 this is not TLS\r\n")
                    break
                else:
                    connection.sendall(b"221 2.0.0 Bye\r\n" if verb == b"QUIT" else b"502 5.5.2 Error\r\n")
                    if verb == b"QUIT":
                        break


@pytest.fixture
def plain_text_tls_hop():
    listener = socket.create_server(("127.0.0.1", 0))
    thread = threading.Thread(target=_serve, args=(listener,), daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    listener.shutdown(socket.SHUT_RDWR)
    listener.close()
    thread.join(5)
