"""A next hop that records what it receives: an aiosmtpd server on loopback.

Its answers can be scripted per recipient (`rcpt_replies`) or for DATA
(`data_reply`), to play a mail server that defers or rejects. With a
`tls_context` it offers STARTTLS; `connections` counts the TCP connections made.
`on_message`, if set, is called with each message once it is recorded, before the
250 goes back (a test can act at the moment a delivery is under way).
"""

from __future__ import annotations

import ssl
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from aiosmtpd.controller import Controller

from .net import free_port, wait_until


@dataclass
class Received:
    sender: str
    recipients: list[str]
    content: bytes
    peer: str
    helo: str
    tls: bool = False
    at: float = field(default_factory=time.time)


class _Handler:
    def __init__(self, sink: Sink):
        self.sink = sink

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        reply = self.sink.rcpt_replies.get(address)
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server, session, envelope):
        if self.sink.data_reply:
            return self.sink.data_reply
        received = Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content,
                            session.peer[0], session.host_name or "", session.ssl is not None)
        with self.sink.lock:
            self.sink.messages.append(received)
        if self.sink.on_message:
            self.sink.on_message(received)
        return "250 2.0.0 Ok: recorded"


class _Controller(Controller):
    def __init__(self, sink: Sink, **kwargs):
        super().__init__(_Handler(sink), **kwargs)
        self.sink = sink

    def factory(self):
        with self.sink.lock:
            self.sink.connections += 1
        return super().factory()


class Sink:
    def __init__(self, host: str = "127.0.0.1", port: int | None = None, tls_context: ssl.SSLContext | None = None):
        self.host = host
        self.port = port or free_port(host)
        self.tls_context = tls_context
        self.connections = 0
        self.messages: list[Received] = []
        self.rcpt_replies: dict[str, str] = {}
        self.data_reply: str | None = None
        self.on_message: Callable[[Received], None] | None = None
        self.lock = threading.Lock()
        self._controller: Controller | None = None

    def start(self) -> Sink:
        self._controller = _Controller(self, hostname=self.host, port=self.port, ready_timeout=10,
                                       tls_context=self.tls_context)
        self._controller.start()
        self.connections = 0  # not the controller's own readiness probe
        return self

    def stop(self) -> None:
        if self._controller:
            self._controller.stop()
            self._controller = None

    def wait_for(self, count: int, timeout: float = 15.0) -> list[Received]:
        wait_until(lambda: len(self.messages) >= count, timeout, what=f"{count} messages at the sink")
        return list(self.messages)

    def recipients(self) -> list[str]:
        return [r for m in self.messages for r in m.recipients]
