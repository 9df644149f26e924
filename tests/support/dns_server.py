"""An authoritative DNS server on loopback, built on dnspython, for MX, A, TXT and TLSA lookups in tests.

It can also stand in for a local validating resolver: names under `secure` get the AD bit
(RFC 4035 3.2.3: "authentic data"), as DNSSEC-validated answers would; names under `servfail`
get SERVFAIL (a bogus signature, to a validating resolver); names under `silent` get no answer.
A name is "under" an entry when it is the entry or ends with "." + the entry.
"""

from __future__ import annotations

import socket
import threading

import dns.flags
import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset



class DnsServer:
    """records: {("example.org", "MX"): ["10 mx1.example.org."], ("mx1.example.org", "A"): ["127.0.0.1"]}"""

    def __init__(self, records: dict[tuple[str, str], list[str]], host: str = "127.0.0.1", port: int = 0,
                 secure: tuple[str, ...] = (), servfail: tuple[str, ...] = (), silent: tuple[str, ...] = ()):
        self.records = {(name.lower().rstrip("."), rdtype): values for (name, rdtype), values in records.items()}
        self.secure, self.servfail, self.silent = secure, servfail, silent
        self.host = host
        self.queries: list[tuple[str, str]] = []
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind((host, port))  # port 0: the kernel picks a UDP port that is really free
        self.port = self._sock.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._running = True

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> DnsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._running = False
        self._sock.close()

    def _answer(self, query: dns.message.Message) -> dns.message.Message:
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        question = query.question[0]
        name = question.name.to_text().lower().rstrip(".")
        rdtype = dns.rdatatype.to_text(question.rdtype)
        self.queries.append((name, rdtype))
        if _under(name, self.servfail):
            response.set_rcode(dns.rcode.SERVFAIL)
            return response
        if _under(name, self.secure):
            response.flags |= dns.flags.AD
        if not any(known == name for known, _ in self.records):
            response.set_rcode(dns.rcode.NXDOMAIN)
            return response
        values = self.records.get((name, rdtype), [])
        if values:
            response.answer.append(
                dns.rrset.from_text_list(question.name, 60, dns.rdataclass.IN, question.rdtype, values)
            )
        return response

    def _serve(self) -> None:
        while self._running:
            try:
                data, client = self._sock.recvfrom(4096)
            except OSError:
                return
            try:
                query = dns.message.from_wire(data)
                if _under(query.question[0].name.to_text().lower().rstrip("."), self.silent):
                    continue
                self._sock.sendto(self._answer(query).to_wire(), client)
            except Exception:  # a malformed query gets no answer, as from a real server
                continue


def _under(name: str, zones: tuple[str, ...]) -> bool:
    return any(name == zone or name.endswith("." + zone) for zone in zones)
