"""Pieces every benchmark run uses: ports, waiting, Postfix's smtp-sink and
smtp-source, the CPU and memory of a server's whole process tree, and a sampler
for that memory."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable

import psutil

SMTP_SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
SMTP_SOURCE = shutil.which("smtp-source") or "/usr/sbin/smtp-source"
HOST = "127.0.0.1"  # every process of the benchmark listens and connects on loopback only

_MESSAGES = re.compile(rb"mesg=(\d+)")


class BenchError(Exception):
    """A run that could not be measured: the message says why."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def wait_until(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise BenchError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def accepts_connections(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=1):
            return True
    except OSError:
        return False


def tail(path: Path, limit: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-limit:]
    except OSError:
        return ""


def stop_process(process: subprocess.Popen | None, timeout: float = 15.0) -> None:
    """SIGTERM, then SIGKILL if it has not gone after `timeout` seconds."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout)


class Sink:
    """smtp-sink on a free loopback port, counting the messages it receives.

    smtp-sink -c prints `sess=N quit=N mesg=N` each time a message's final "."
    arrives; a reader thread follows that counter, so `wait_for(n)` knows the
    moment the n-th message has arrived."""

    def __init__(self, workdir: Path):
        self.port = free_port()
        self.stderr_path = workdir / f"smtp-sink-{self.port}.log"
        self.count = 0
        self._reached: dict[int, float] = {}
        self._changed = threading.Condition()
        self.process: subprocess.Popen | None = None
        self._reader: threading.Thread | None = None

    def start(self) -> Sink:
        command = [SMTP_SINK, "-c", f"{HOST}:{self.port}", "1024"]
        if os.geteuid() == 0:
            command[1:1] = ["-u", "nobody"]  # smtp-sink refuses to run as root without it
        with open(self.stderr_path, "wb") as stderr:
            self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, stdin=subprocess.DEVNULL)
        self._reader = threading.Thread(target=self._read, name="smtp-sink reader", daemon=True)
        self._reader.start()
        wait_until(lambda: self.process.poll() is not None or accepts_connections(self.port), 10, "smtp-sink to listen")
        if self.process.poll() is not None:
            raise BenchError(f"smtp-sink exited with {self.process.returncode}: {tail(self.stderr_path)}")
        return self

    def _read(self) -> None:
        pending = b""
        while chunk := self.process.stdout.read1(65536):
            now = time.monotonic()
            *complete, pending = (pending + chunk).split(b"\r")  # the last record may be cut in two
            found = _MESSAGES.findall(b"\r".join(complete))
            if not found:
                continue
            with self._changed:
                count = max(self.count, *(int(n) for n in found))
                if count != self.count:
                    self.count = count
                    for wanted in self._reached:
                        if self._reached[wanted] == 0.0 and count >= wanted:
                            self._reached[wanted] = now
                    self._changed.notify_all()

    def expect(self, count: int) -> None:
        """Start watching for `count` messages; call before sending them."""
        with self._changed:
            self._reached[count] = time.monotonic() if self.count >= count else 0.0

    def wait_for(self, count: int, timeout: float, abort: Callable[[], str] = lambda: "") -> float:
        """The monotonic time at which the count reached `count`.

        BenchError on timeout, or as soon as `abort()` returns a reason to give up."""
        deadline = time.monotonic() + timeout
        with self._changed:
            self._reached.setdefault(count, time.monotonic() if self.count >= count else 0.0)
            while self._reached[count] == 0.0:
                left = deadline - time.monotonic()
                reason = abort() or (f"smtp-sink exited with {self.process.returncode}" if self.process.poll() is not None else "")
                if reason or left <= 0:
                    raise BenchError(
                        f"the sink received {self.count} of the {count} messages expected"
                        + (f": {reason}" if reason else f" within {timeout:g}s")
                    )
                self._changed.wait(min(left, 0.5))
            return self._reached[count]

    def stop(self) -> None:
        stop_process(self.process, 5)
        if self._reader is not None:
            self._reader.join(5)


def start_source(
    port: int, messages: int, size: int, sessions: int, log_path: Path, reuse_connections: bool = False,
    recipients: int = 1,
) -> subprocess.Popen:
    """smtp-source: `sessions` parallel SMTP sessions sending `messages` of `size` payload bytes in all.

    With `reuse_connections` (-d) a session sends all its messages over one connection;
    `recipients` (-r) is the number of RCPT TO per message (1recipient@, 2recipient@, ...).
    smtp-source cannot pipeline: every command waits for its reply."""
    command = [
        SMTP_SOURCE, "-s", str(sessions), "-m", str(messages), "-l", str(size),
        "-M", "bench.example.net", "-f", "sender@bench.example.net", "-t", "recipient@example.com",
    ]
    if reuse_connections:
        command.append("-d")
    if recipients > 1:
        command += ["-r", str(recipients)]
    command.append(f"{HOST}:{port}")
    with open(log_path, "ab") as log:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def wait_source(process: subprocess.Popen, timeout: float, log_path: Path) -> None:
    try:
        process.wait(max(timeout, 0.1))
    except subprocess.TimeoutExpired:
        stop_process(process, 5)
        raise BenchError(f"smtp-source did not finish within {timeout:.0f}s: {tail(log_path, 500)}") from None
    if process.returncode != 0:
        raise BenchError(f"smtp-source exited with {process.returncode}: {tail(log_path, 500)}")


def process_tree(root: psutil.Process | None) -> list[psutil.Process]:
    """`root` and all its descendants alive now (zombies included: their times still count)."""
    if root is None:
        return []
    try:
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def tree_cpu_seconds(processes: list[psutil.Process]) -> tuple[float, float]:
    """User and system CPU seconds of a process tree, counting every process that ever ran in it.

    Each live process adds its own time and that of the children it has reaped (the
    kernel adds a reaped child's own and reaped-children times into its parent's), so
    a helper process that came and went is counted once its parent has waited for it;
    a live child is counted by itself, never twice."""
    user = system = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.Error:  # gone between listing and reading
            continue
        user += times.user + times.children_user
        system += times.system + times.children_system
    return user, system


def pss_bytes(pid: int) -> int | None:
    """Proportional set size of one process (shared pages divided among the processes using them).

    Read from /proc/PID/smaps_rollup, which is much cheaper than psutil's full smaps walk,
    so it can be sampled several times a second over a few hundred processes."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as rollup:
            for line in rollup:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def tree_memory(processes: list[psutil.Process]) -> dict[str, int] | None:
    """Summed RSS and summed PSS of the processes (bytes), and how many there were; None if none."""
    rss = pss = count = 0
    for process in processes:
        try:
            resident = process.memory_info().rss
        except psutil.Error:
            continue
        proportional = pss_bytes(process.pid)
        rss += resident
        pss += resident if proportional is None else proportional  # no smaps_rollup: RSS is the upper bound
        count += 1
    return {"rss": rss, "pss": pss, "processes": count} if count else None


class MemorySampler:
    """Samples `measure()` (a `tree_memory` dict, or None when nothing runs) every `interval`
    seconds; keeps the peak of each figure (peaks of RSS and PSS may come at different moments)."""

    def __init__(self, measure: Callable[[], dict[str, int] | None], interval: float = 0.2):
        self.measure = measure
        self.interval = interval
        self.peak: dict[str, int] = {}
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memory sampler", daemon=True)

    def _run(self) -> None:
        while True:
            self._sample()
            if self._stop.wait(self.interval):
                break

    def _sample(self) -> None:
        try:
            value = self.measure()
        except Exception:  # a process that exits between listing and reading it
            return
        if value:
            for key, figure in value.items():
                self.peak[key] = max(self.peak.get(key, 0), figure)
            self.samples += 1

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sample()


def raise_file_limit(wanted: int) -> int:
    """Raise this process's RLIMIT_NOFILE soft limit to `wanted` if it is lower; the servers
    started afterwards inherit it. Raising the hard limit too needs root; without it the
    soft limit goes as high as the hard one allows. Returns the soft limit now in force."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= wanted:
        return soft
    try:
        new_hard = hard if hard == resource.RLIM_INFINITY or hard >= wanted else wanted
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, new_hard))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def wait_for_quiet(max_wait: float, threshold: float = 15.0) -> float:
    """Wait (at most `max_wait` seconds) until the machine's CPUs are less than `threshold` % busy.

    Other work on the machine takes CPU from the servers under test; the figure
    returned (busy % over the last second) goes into the results either way."""
    deadline = time.monotonic() + max_wait
    while True:
        busy = psutil.cpu_percent(interval=1.0)
        if busy < threshold or time.monotonic() >= deadline:
            return busy
