"""The Postern relay daemon as a real process with a temporary configuration and queue.

CPU and memory are those of the daemon and every process under it, recursively:
the relay may hand work to child processes, and they must be counted as its own."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import yaml

from .tools import (
    HOST, BenchError, accepts_connections, process_tree, stop_process, tail, tree_cpu_seconds, tree_memory,
    wait_until,
)

ROOT = Path(__file__).resolve().parents[1]


def postern_python() -> str:
    """The daemon runs on the interpreter running the benchmark (`make bench`: .venv/bin/python)."""
    return sys.executable


class PosternInstance:
    receivers = "auto"  # the daemon's --receivers: SMTP received in that many processes beside it

    def __init__(self, sink_port: int, parent: Path | None = None):
        self.sink_port = sink_port
        self.port = 0
        self.root = Path(tempfile.mkdtemp(prefix="postern-bench-", dir=parent))
        self.config_path = self.root / "postern.yaml"
        self.state_dir = self.root / "state"
        self.log_path = self.root / "relay.log"
        self.process: subprocess.Popen | None = None
        self._ps: psutil.Process | None = None

    def _write_config(self) -> None:
        next_hop = {"host": HOST, "port": self.sink_port, "mx": False}
        mta = {
            "hostname": "postern-bench.example.net",
            "listen": [f"{HOST}:{self.port}"],
            "relay_domains": ["example.com"],
            "my_networks": ["127.0.0.0/8"],
            "internal_relay": next_hop,
            "external_relay": next_hop,
        }
        self.config_path.write_text(yaml.safe_dump({"mta": mta}))

    def launch(self, port: int) -> float:
        """Start the daemon listening on `port` without waiting for it; returns the monotonic
        time just before the process was created."""
        self.port = port
        self._write_config()
        command = [
            postern_python(), "-m", "relay.daemon", "--config", str(self.config_path),
            "--state-dir", str(self.state_dir), "--socket", str(self.root / "control.sock"),
            "--receivers", str(self.receivers),
        ]
        with open(self.log_path, "ab") as log:
            began = time.monotonic()
            self.process = subprocess.Popen(
                command, cwd=ROOT, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        self._ps = psutil.Process(self.process.pid)
        return began

    def start(self, port: int) -> PosternInstance:
        """Start the daemon and return once it has logged that it started and accepts connections."""
        self.launch(port)
        wait_until(lambda: self.process.poll() is not None or "daemon started" in tail(self.log_path, 100_000),
                   30, "the relay daemon to start")
        if self.process.poll() is not None:
            raise BenchError(f"the relay daemon exited with {self.process.returncode}: {tail(self.log_path)}")
        wait_until(lambda: accepts_connections(self.port), 15, f"the relay daemon to listen on port {self.port}")
        return self

    @property
    def pid(self) -> int:
        return self.process.pid if self.process else 0

    def processes(self) -> list[psutil.Process]:
        """The daemon and all its descendants."""
        if self._ps is None or self.process.poll() is not None:
            return []
        return process_tree(self._ps)

    def memory(self) -> dict[str, int] | None:
        """RSS and PSS summed over the daemon and its descendants (see tools.tree_memory)."""
        return tree_memory(self.processes())

    def rss(self) -> int | None:
        found = self.memory()
        return found["rss"] if found else None

    def pss(self) -> int | None:
        found = self.memory()
        return found["pss"] if found else None

    def cpu_seconds(self) -> tuple[float, float]:
        """User and system CPU seconds used so far by the daemon and every process under it."""
        return tree_cpu_seconds(self.processes())

    def queue_size(self) -> int:
        directory = self.state_dir / "queue" / "msg"
        return sum(1 for _ in directory.iterdir()) if directory.exists() else 0

    def stop(self, keep: bool = False) -> None:
        try:
            stop_process(self.process, 15)
        finally:
            if not keep:
                shutil.rmtree(self.root, ignore_errors=True)
