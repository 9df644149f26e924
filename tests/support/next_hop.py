"""A next hop for the gateway-policy tests: an aiosmtpd server on loopback that records
every RCPT it is asked (recipient verification probes included), can refuse some
addresses, can demand AUTH over STARTTLS like a smart host, and notes the client
certificate it was shown.
"""

from __future__ import annotations

import ssl
import threading
from dataclasses import dataclass, field

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from .net import free_port, wait_until


@dataclass
class Delivered:
    sender: str
    recipients: list[str]
    content: bytes
    tls: bool
    login: str
    client_cert: str  # the client certificate's common name, "" when none was shown


@dataclass
class Asked:
    sender: str
    recipient: str
    reply: str


@dataclass
class NextHop:
    host: str = "127.0.0.1"
    tls_context: ssl.SSLContext | None = None
    users: dict[str, str] | None = None  # login -> password; set: AUTH is required, over TLS only
    refuse: dict[str, str] = field(default_factory=dict)  # recipient -> reply
    auth_exclude: tuple[str, ...] = ()  # AUTH mechanisms not to offer, such as ("PLAIN",)
    port: int = 0
    messages: list[Delivered] = field(default_factory=list)
    asked: list[Asked] = field(default_factory=list)
    logins: list[tuple[str, str, bool]] = field(default_factory=list)  # (mechanism, login, accepted)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self):
        self.port = self.port or free_port(self.host)
        self._controller: Controller | None = None

    def start(self) -> NextHop:
        options = {}
        if self.users is not None:
            options = {"authenticator": self._authenticate, "auth_required": True, "auth_require_tls": True,
                       "auth_exclude_mechanism": list(self.auth_exclude)}
        self._controller = Controller(_Handler(self), hostname=self.host, port=self.port, ready_timeout=10,
                                      tls_context=self.tls_context, **options)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller:
            self._controller.stop()
            self._controller = None

    def _authenticate(self, server, session, envelope, mechanism, auth_data) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login, password = auth_data.login.decode(), auth_data.password.decode()
        good = self.users.get(login) == password
        with self.lock:
            self.logins.append((mechanism, login, good))
        return AuthResult(success=good, handled=False, auth_data=login if good else None)

    def wait_for(self, count: int, timeout: float = 15.0) -> list[Delivered]:
        wait_until(lambda: len(self.messages) >= count, timeout, what=f"{count} messages at the next hop")
        return list(self.messages)

    def probes(self) -> list[str]:
        """Recipients asked about with the null sender and no message following: verification probes."""
        with self.lock:
            return [a.recipient for a in self.asked if a.sender in ("<>", "")]


def _common_name(peercert: dict | None) -> str:
    for rdn in (peercert or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return value
    return ""


class _Handler:
    def __init__(self, hop: NextHop):
        self.hop = hop

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        reply = self.hop.refuse.get(address, "250 2.1.5 Ok")
        with self.hop.lock:
            self.hop.asked.append(Asked(envelope.mail_from or "", address, reply))
        if reply.startswith("250"):
            envelope.rcpt_tos.append(address)
        return reply

    async def handle_DATA(self, server, session, envelope):
        peercert = session.ssl.get("peercert") if session.ssl else None
        login = session.auth_data if isinstance(session.auth_data, str) else ""
        with self.hop.lock:
            self.hop.messages.append(Delivered(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content,
                                               session.ssl is not None, login, _common_name(peercert)))
        return "250 2.0.0 Ok: recorded"
