"""The relay daemon as a real process, configured through a real YAML file."""

from __future__ import annotations

import os
import re
import signal
import smtplib
import subprocess
import sys
from pathlib import Path

import yaml

from .net import free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]
# The daemon receives SMTP itself unless a test asks for receiving processes (`args`), or the whole
# run does (POSTERN_RECEIVERS=2 make test): the same sessions, in one process, for a quicker start.
RECEIVING_IN_THE_DAEMON = {"POSTERN_RECEIVERS": "0"}


def base_mta(port: int, next_hop_port: int) -> dict:
    return {
        "hostname": "gw.example.com",
        "listen": [f"127.0.0.1:{port}"],
        "relay_domains": ["example.com"],
        "my_networks": ["127.0.0.1/32"],
        "internal_relay": {"host": "127.0.0.1", "port": next_hop_port, "mx": False},
        # the same next hop and level as the internal relay: one delivery carries both recipients
        "external_relay": {"host": "127.0.0.1", "port": next_hop_port, "mx": False, "tls": "may"},
        "queue": {"minimal_backoff_time": 1, "maximal_backoff_time": 2},
        # Client names come from this machine's DNS otherwise; tests that need them run a DNS server.
        "peername_lookup": False,
        # SPF, DKIM and DMARC would ask this machine's DNS too: tests of them run a DNS server.
        "authentication": {"check_inbound": False},
    }


class RelayProcess:
    def __init__(self, workdir: Path, mta: dict, port: int, args: tuple[str, ...] = ()):
        self.workdir = workdir
        self.port = port
        self.args = list(args)  # more of the daemon's options, e.g. --receivers 2
        self.config_path = workdir / "postern.yaml"
        self.state_dir = workdir / "state"
        self.log_path = workdir / "relay.log"
        self.process: subprocess.Popen | None = None
        self.write_config(mta)

    def write_config(self, mta: dict) -> None:
        self.mta = mta
        self.config_path.write_text(yaml.safe_dump({"mta": mta}))

    def start(self, wait: bool = True) -> RelayProcess:
        """Start (or restart) the daemon; waits for this run's "daemon started" line."""
        log = open(self.log_path, "ab")
        offset = log.tell()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "relay.daemon", "--config", str(self.config_path),
             "--state-dir", str(self.state_dir), "--socket", str(self.workdir / "control.sock"), *self.args],
            cwd=ROOT, stdout=log, stderr=log, env={**RECEIVING_IN_THE_DAEMON, **os.environ, "PYTHONUNBUFFERED": "1"},
        )
        log.close()
        if wait:
            wait_until(lambda: self.process.poll() is not None or "daemon started" in self.log()[offset:],
                       15, what="the relay to start")
            if self.process.poll() is not None:
                raise AssertionError(f"relay exited with {self.process.returncode}:\n{self.log()}")
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_log(self, pattern: str, timeout: float = 15.0, count: int = 1) -> list[str]:
        regex = re.compile(pattern)
        return wait_until(lambda: (m := regex.findall(self.log())) and len(m) >= count and m,
                          timeout, what=f"log line matching {pattern!r}:\n{self.log()[-3000:]}")

    def smtp(self, source: str = "127.0.0.1", helo: str = "client.example.net") -> smtplib.SMTP:
        client = smtplib.SMTP("127.0.0.1", self.port, source_address=(source, 0), timeout=10)
        client.ehlo(helo)
        return client

    def send(self, sender: str, recipients: list[str], body: str | bytes = "Subject: test\r\n\r\nhello\r\n",
             source: str = "127.0.0.1"):
        with self.smtp(source) as client:
            return client.sendmail(sender, recipients, body)

    def reload(self, mta: dict | None = None) -> None:
        if mta is not None:
            self.write_config(mta)
        self.process.send_signal(signal.SIGHUP)

    def stop(self) -> int:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(15)
        return self.process.returncode if self.process else 0

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(15)

    def queue_files(self) -> list[str]:
        directory = self.state_dir / "queue" / "msg"
        return sorted(p.name for p in directory.iterdir()) if directory.exists() else []
