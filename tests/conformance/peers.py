"""The two servers under comparison, behind one interface.

Each `Peer` is an MTA listening on loopback and relaying everything to its own scripted
next hop (tests/support/scripted_hop.py): Postfix 3.x as a private instance
(bench/postfix.py) and Postern as a real `postern-relay` process (tests/support/relay.py).
Both run for the whole test session; a case changes settings for itself and puts them back
afterwards.

Both use short timers so that retries and timeouts happen within seconds: retries after
1-2 s, 3 s to wait for a next hop's reply.
"""

from __future__ import annotations

import contextlib
import re
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.postfix import PostfixInstance
from tests.support.certs import self_signed
from tests.support.dns_server import DnsServer
from tests.support.net import free_port, spare_loopback_ip, wait_until
from tests.support.relay import RelayProcess, base_mta
from tests.support.scripted_hop import ScriptedHop

REPLY_TIMEOUT = 3  # seconds either server waits for a next hop's reply

# Postfix's defaults, except what the comparison needs (docs/conformance.md lists them).
POSTFIX_SETTINGS = {
    "myhostname": "postfix.example.net",
    "smtpd_banner": "$myhostname ESMTP",
    "mynetworks": "127.0.0.1/32",  # as Postern's my_networks: a client on 127.0.0.2 is an outsider
    # Clients on loopback are "local" to a Postfix listening there, which would let it rewrite
    # headers and add missing ones; a gateway's clients are remote: treat ours as remote.
    "local_header_rewrite_clients": "",
    "smtpd_error_sleep_time": "0s",
    "queue_run_delay": "1s",
    "minimal_backoff_time": "1s",
    "maximal_backoff_time": "2s",
    "smtp_connect_timeout": f"{REPLY_TIMEOUT}s",
    "smtp_helo_timeout": f"{REPLY_TIMEOUT}s",
    "smtp_mail_timeout": f"{REPLY_TIMEOUT}s",
    "smtp_rcpt_timeout": f"{REPLY_TIMEOUT}s",
    "smtp_data_init_timeout": f"{REPLY_TIMEOUT}s",
    "smtp_data_xfer_timeout": f"{REPLY_TIMEOUT}s",
    "smtp_data_done_timeout": f"{REPLY_TIMEOUT}s",
}

POSTERN_SETTINGS = {
    "error_sleep_time": 0,  # as Postfix's smtpd_error_sleep_time above: a client past the soft error limit is not slowed
    "queue": {"minimal_backoff_time": 1, "maximal_backoff_time": 2},
    "delivery": {"connect_timeout": REPLY_TIMEOUT, "command_timeout": REPLY_TIMEOUT,
                 "data_init_timeout": REPLY_TIMEOUT, "data_xfer_timeout": REPLY_TIMEOUT,
                 "data_done_timeout": REPLY_TIMEOUT},
}

_DELIVERY = re.compile(r"to=<([^>]*)>,.*? dsn=([0-9.]+), status=(\w+)")


class Peer:
    name = ""
    hostname = ""

    def __init__(self, hop: ScriptedHop):
        self.hop = hop
        self.port = 0
        self.dns: DnsServer | None = None

    @property
    def mx_domain(self) -> str:
        """A domain of this peer's own whose mail goes to its MX hosts (cases_mx.py sets the records)."""
        return f"{self.name}-mx.example.org"

    def log(self) -> str:
        raise NotImplementedError

    def mark(self) -> int:
        return len(self.log())

    def log_since(self, mark: int) -> str:
        return self.log()[mark:]

    def wait_log(self, pattern: str, mark: int, count: int = 1, timeout: float = 20) -> list:
        regex = re.compile(pattern)
        return wait_until(lambda: (found := regex.findall(self.log_since(mark))) and len(found) >= count and found,
                          timeout, what=f"{self.name} log line {pattern!r}:\n{self.log_since(mark)[-3000:]}")

    def deliveries(self, mark: int) -> list[tuple[str, str, str]]:
        """(recipient, dsn, status) for each delivery attempt logged since `mark`."""
        return _DELIVERY.findall(self.log_since(mark))

    def configure(self, settings: dict) -> None:
        raise NotImplementedError

    def restore(self, settings: dict) -> None:
        raise NotImplementedError

    def flush(self) -> None:
        raise NotImplementedError

    def clear_queue(self) -> None:
        raise NotImplementedError

    def restart(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError


class PostfixPeer(Peer):
    name = "postfix"
    hostname = POSTFIX_SETTINGS["myhostname"]

    def __init__(self, hop: ScriptedHop, parent: Path, dns: DnsServer):
        super().__init__(hop)
        self.dns = dns
        resolv_conf = parent / "resolv.conf"
        resolv_conf.write_text(f"nameserver {dns.host}\noptions attempts:1 timeout:2\n")
        resolv_conf.chmod(0o644)
        cert, key = self_signed(_private_dir(parent, "postfix-tls"), self.hostname)
        settings = {
            **POSTFIX_SETTINGS,
            # Mail for mx_domain goes by MX, as a relayhost written without brackets would.
            "transport_maps": f"inline:{{{self.mx_domain}=smtp:{self.mx_domain}}}",
            # STARTTLS offered, as Postern offers it with a certificate.
            "smtpd_tls_security_level": "may", "smtpd_tls_cert_file": cert, "smtpd_tls_key_file": key,
        }
        # under /tmp itself: the postfix user must reach the instance, which pytest's private directories forbid
        self.instance = PostfixInstance(hop.port, None, settings=settings, resolv_conf=resolv_conf)
        self.instance.start(free_port())
        self.port = self.instance.port

    def log(self) -> str:
        return self.instance.log()

    def configure(self, settings: dict) -> None:
        if settings:
            self._defaults = {key: self.instance.settings.get(key, _default(key)) for key in settings}
            self.instance.postconf(settings)
            self.instance.reload()

    def restore(self, settings: dict) -> None:
        if settings:
            self.instance.postconf(self._defaults)
            self.instance.reload()

    def flush(self) -> None:
        self.instance.flush()

    def clear_queue(self) -> None:
        self.instance.delete_queue()

    def restart(self) -> None:
        self.instance.restart()

    def stop(self) -> None:
        self.instance.stop()


def _default(key: str) -> str:
    out = subprocess.run(["postconf", "-d", "-h", key], capture_output=True, text=True, timeout=10)
    return out.stdout.strip()


class PosternPeer(Peer):
    name = "postern"
    hostname = "gw.example.com"

    def __init__(self, hop: ScriptedHop, parent: Path, dns: DnsServer):
        super().__init__(hop)
        self.dns = dns
        self.port = free_port()
        workdir = Path(tempfile.mkdtemp(prefix="postern-conformance-", dir=parent))
        cert, key = self_signed(_private_dir(parent, "postern-tls"), self.hostname)
        self.mta = {**base_mta(self.port, hop.port), **POSTERN_SETTINGS, "dns_servers": [dns.address],
                    "tls": {"cert_file": str(cert), "key_file": str(key)}}
        # As on the appliance: SMTP received in processes of their own beside the daemon
        self.relay = RelayProcess(workdir, self.mta, self.port, ("--receivers", "2")).start()

    def log(self) -> str:
        return self.relay.log()

    def configure(self, settings: dict) -> None:
        if settings:
            self._reload({**self.mta, **settings})

    def restore(self, settings: dict) -> None:
        if settings:
            self._reload(self.mta)

    def _reload(self, mta: dict) -> None:
        before = self.log().count("reload -- configuration")
        self.relay.write_config(mta)
        self.relay.reload()
        wait_until(lambda: self.log().count("reload -- configuration") > before, 15, what="Postern to reload")
        self.relay.mta = self.mta

    def _ctl(self, *args: str) -> None:
        subprocess.run([sys.executable, "-m", "relay.ctl", "--socket", str(self.relay.workdir / "control.sock"),
                        *args], capture_output=True, timeout=30, check=True, cwd=Path(__file__).resolve().parents[2])

    def flush(self) -> None:
        self._ctl("queue", "flush")

    def clear_queue(self) -> None:
        self._ctl("queue", "delete", "--all")

    def restart(self) -> None:
        self.relay.stop()
        self.relay.start()

    def stop(self) -> None:
        self.relay.kill()


def _private_dir(parent: Path, name: str) -> Path:
    directory = parent / name
    directory.mkdir(mode=0o700)
    return directory


class _DnsServer53(DnsServer):
    """The test DNS server on port 53, where resolv.conf (which names no port) sends Postfix."""

    def __init__(self, host: str):
        super().__init__({}, host)
        self._sock.close()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind((host, 53))
        self.port = 53


@contextlib.contextmanager
def running_peers(parent: Path):
    """Postfix and Postern, each with its own scripted next hop, and one DNS server for both
    (no records until a case sets them), until the block ends."""
    started: list = []
    try:
        dns = _DnsServer53(spare_loopback_ip(53)).start()
        started.append(dns)
        for kind in (PostfixPeer, PosternPeer):
            hop = ScriptedHop().start()
            started.append(hop)
            started.append(kind(hop, parent, dns))
        yield {peer.name: peer for peer in started if isinstance(peer, Peer)}
    finally:
        for item in reversed(started):
            item.stop()
