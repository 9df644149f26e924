"""How fast the control API lists a large queue.

    .venv/bin/python -m bench.queue_list [--messages 100000]

Writes N queued messages (deferred, next hop down) straight into a fresh state
directory in the daemon's own format, starts the real daemon on it, and times
over its control socket: the first page of Queue.List, a page further on, a
filtered list, Status.Get, and Queue.Summary. Prints the figures and the
daemon's start-up time and resident memory.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import yaml

from relay.control.client import ControlClient
from relay.queue.entry import DEFERRED, Envelope, QueueEntry
from relay.queue.store import MAGIC, QueueStore

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fill_queue(state_dir: Path, count: int) -> None:
    """Queue files as the daemon writes them (without fsync: this is set-up, not the measurement)."""
    store = QueueStore(state_dir)
    store.open()
    body = b"Subject: benchmark\r\n\r\n" + b"x" * 2000 + b"\r\n"
    start = time.time() - 3600
    for n in range(count):
        queue_id = store.new_id()
        envelope = Envelope(
            id=queue_id, sender=f"sender{n % 97}@example.net",
            recipients=[f"user{n}@partner{n % 50}.example"], arrival=start + n * 0.01,
            size=len(body), client="unknown[127.0.0.1]", subject=f"message {n}",
        )
        (store.msg / queue_id).write_bytes(MAGIC + json.dumps(envelope.to_dict()).encode() + b"\n" + body)
        entry = QueueEntry.new(envelope)
        entry.attempts, entry.next_attempt, entry.last_reply = 1, time.time() + 86400, "connect to ...: Connection refused"
        entry.recipients[0].status = DEFERRED
        (store.state / queue_id).write_text(json.dumps(entry.state_dict()))


@contextlib.contextmanager
def relay_with_queue(messages: int):
    """A real relay daemon on a fresh state directory holding `messages` deferred messages;
    yields the process, its control socket and how long it took to start."""
    with tempfile.TemporaryDirectory(prefix="postern-bench-") as work:
        work = Path(work)
        print(f"writing {messages} queue files...", flush=True)
        fill_queue(work / "state", messages)
        config = work / "postern.yaml"
        config.write_text(yaml.safe_dump({"mta": {
            "hostname": "bench.example.com", "listen": [f"127.0.0.1:{free_port()}"], "my_networks": ["127.0.0.1/32"],
            "external_relay": {"host": "127.0.0.1", "port": 1, "mx": False},
        }}))
        socket_path = work / "control.sock"
        began = time.perf_counter()
        with open(work / "relay.log", "wb") as log:
            daemon = subprocess.Popen(
                [sys.executable, "-m", "relay.daemon", "--config", str(config), "--state-dir", str(work / "state"),
                 "--socket", str(socket_path)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log)
        try:
            while not socket_path.exists():
                if daemon.poll() is not None or time.perf_counter() - began > 300:
                    raise SystemExit("the daemon did not start:\n" + (work / "relay.log").read_text()[-2000:])
                time.sleep(0.05)
            yield daemon, socket_path, time.perf_counter() - began
        finally:
            daemon.terminate()
            daemon.wait(30)


def timed(client: ControlClient, method: str, repeat: int = 10, **parameters) -> tuple[float, dict]:
    answer, samples = {}, []
    for _ in range(repeat):
        began = time.perf_counter()
        answer = client.call(method, **parameters)
        samples.append((time.perf_counter() - began) * 1000)
    return statistics.median(samples), answer


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    args = parser.parse_args()
    with relay_with_queue(args.messages) as (daemon, socket_path, startup):
        started = time.perf_counter() - startup  # when the daemon was started
        with ControlClient(str(socket_path)) as client:
            while client.call("io.postern.Status.Get")["status"].get("loading"):  # the daemon listens first, then loads
                time.sleep(0.1)
            loaded = time.perf_counter() - started
            first_ms, first = timed(client, "io.postern.Queue.List", limit=100)
            assert first["total"] == args.messages, first["total"]
            later_ms, _ = timed(client, "io.postern.Queue.List", limit=100, cursor=first["cursor"])
            filtered_ms, filtered = timed(client, "io.postern.Queue.List", limit=100,
                                          filter={"domain": "partner7.example"})
            oldest_ms, _ = timed(client, "io.postern.Queue.List", limit=100, sort="age", reverse=True)
            status_ms, _ = timed(client, "io.postern.Status.Get")
            summary_ms, _ = timed(client, "io.postern.Queue.Summary", repeat=3)
        rss = psutil.Process(daemon.pid).memory_info().rss / 2**20
    print(f"\nqueue of {args.messages} messages (median of 10 calls over the control socket)")
    print(f"  daemon start to control socket  {startup:8.2f} s")
    print(f"  daemon start to queue loaded    {loaded:8.2f} s")
    print(f"  daemon resident memory          {rss:8.0f} MiB")
    print(f"  Queue.List first page (100)     {first_ms:8.1f} ms")
    print(f"  Queue.List next page            {later_ms:8.1f} ms")
    print(f"  Queue.List oldest first         {oldest_ms:8.1f} ms")
    print(f"  Queue.List by domain ({filtered['total']} hits) {filtered_ms:6.1f} ms")
    print(f"  Status.Get                      {status_ms:8.1f} ms")
    print(f"  Queue.Summary (qshape)          {summary_ms:8.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
