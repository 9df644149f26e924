"""The queue's file system fills up: 452 4.3.1, never a 250 without a whole queue file, then recovery.

The state directory is a small tmpfs (root only) holding some ballast. With the next hop
down, mail is sent until the relay answers 452 4.3.1, and a few more times after that.
Every 250 must name a whole file in msg/, and tmp/ must hold nothing half-written, also
after the relay has tried (and failed) to record delivery state on the full disk. Then
the ballast goes: new mail is taken again, the next hop comes up, the queue is flushed
through the control API and every acknowledged message arrives exactly once.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections import Counter
from dataclasses import dataclass

from relay.control.client import ControlClient
from tests.support.net import free_port
from tests.support.relay import RelayProcess
from tests.support.sink import Sink

from .scenario import Outcome, listing, make_message, message_id_of, read_queue_file, scratch, wait_for


@dataclass
class DiskFull:
    filesystem_kb: int = 512
    ballast_kb: int = 96
    message_size: int = 16000
    after_full: int = 5  # attempts once the first 452 came


def mount_tmpfs(directory, size_kb: int) -> str:
    """'' once mounted, else why not."""
    if os.geteuid() != 0:
        return "a tmpfs for the queue needs root"
    directory.mkdir(parents=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k,mode=0700", "tmpfs", str(directory)],
                            capture_output=True, text=True)
    return "" if result.returncode == 0 else f"cannot mount a tmpfs: {result.stderr.strip()}"


def unmount(directory) -> None:
    if subprocess.run(["umount", str(directory)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(directory)], capture_output=True)


def transaction(relay: RelayProcess, message_id: str, size: int) -> tuple[int, str]:
    with relay.smtp() as client:
        client.mail("alice@example.net")
        client.rcpt("bob@example.com")
        code, text = client.data(make_message(message_id, size))
        return code, text.decode()


def run(plan: DiskFull | None = None) -> Outcome:
    plan = plan or DiskFull()
    outcome = Outcome("queue file system full")
    hop_port = free_port()
    with scratch(outcome) as relays:
        relay = relays.make(hop_port, start=False)
        why_not = mount_tmpfs(relay.state_dir, plan.filesystem_kb)
        if why_not:
            outcome.skipped = why_not
            return outcome
        try:
            fill_and_recover(plan, relay, hop_port, outcome)
        finally:
            relay.kill()
            unmount(relay.state_dir)
    return outcome


def fill_and_recover(plan: DiskFull, relay: RelayProcess, hop_port: int, outcome: Outcome) -> None:
    ballast = relay.state_dir / "ballast"
    ballast.write_bytes(b"\0" * plan.ballast_kb * 1024)
    relay.start()
    replies: Counter = Counter()
    acknowledged: dict[str, str] = {}  # queue ID -> Message-ID
    refused_after_full = 0
    run = f"{time.time_ns()}"
    limit = plan.filesystem_kb * 1024 // plan.message_size + 10
    for n in range(limit):
        code, text = transaction(relay, f"full{n}.{run}@reliability.example", plan.message_size)
        replies[f"{code} {text}" if code != 250 else "250 queued"] += 1
        if code == 250:
            acknowledged[text.rsplit(" ", 1)[-1]] = f"full{n}.{run}@reliability.example"
        elif refused_after_full >= plan.after_full:
            break
        else:
            refused_after_full += 1
    time.sleep(2.5)  # the relay tries the dead hop and writes (or fails to write) delivery state
    files = {path.name: read_queue_file(path) for path in listing(relay, "msg")}
    half_written = [p.name for p in listing(relay, "tmp")]
    whole = [name for name, found in files.items() if found.intact]
    alive = relay.process.poll() is None
    full_logged = "queue file system full" in relay.log()

    while_full = set(acknowledged)
    ballast.unlink()
    code, text = transaction(relay, f"after.{run}@reliability.example", 1000)
    if code == 250:
        acknowledged[text.rsplit(" ", 1)[-1]] = f"after.{run}@reliability.example"
    sink = Sink(port=hop_port).start()
    try:
        with ControlClient(str(relay.workdir / "control.sock")) as control:
            control.call("io.postern.Queue.Flush")
        wait_for(lambda: len(sink.messages) >= len(acknowledged), 30)
        wait_for(lambda: not listing(relay, "msg"), 10)
        time.sleep(0.5)
    finally:
        sink.stop()
    copies = Counter(message_id_of(m.content) for m in sink.messages)
    wanted = set(acknowledged.values())
    outcome.figures.update({
        "file system": f"tmpfs, {plan.filesystem_kb} kB, {plan.ballast_kb} kB of it ballast",
        "sent": sum(replies.values()) + 1,
        "replies while filling": ", ".join(f"{reply} x{n}" for reply, n in replies.items()),
        "acknowledged": len(acknowledged),
        "250 without a whole queue file": len(while_full - set(whole)),
        "queue files nobody was told 250 for": len(set(files) - while_full),
        "half-written files in tmp/": len(half_written),
        "after freeing space": f"{code} {text}",
        "delivered": len(set(copies) & wanted),
        "lost": len(wanted - set(copies)),
        "duplicated": sum(n - 1 for n in copies.values()),
        "queue after flush": f"{len(listing(relay, 'msg'))} files, {len(listing(relay, 'tmp'))} in tmp/",
    })
    outcome.check(replies["452 4.3.1 Insufficient system storage"] > 0, "the file system never filled up")
    outcome.check(set(replies) <= {"250 queued", "452 4.3.1 Insufficient system storage"},
                  f"other replies than 250 and 452 4.3.1: {dict(replies)}")
    outcome.check(while_full <= set(whole), "a 250 without a whole queue file")
    outcome.check(set(files) <= while_full, "a queue file nobody was told 250 for")
    outcome.check(not half_written, f"half-written files left in tmp/: {half_written}")
    outcome.check(alive and full_logged, "the relay died or did not log the full file system")
    outcome.check(code == 250, f"mail was still refused once space was freed: {code} {text}")
    outcome.check(wanted <= set(copies), f"lost: {sorted(wanted - set(copies))[:5]}")
    outcome.check(all(n == 1 for n in copies.values()), "a message was delivered more than once")
    outcome.check(not listing(relay, "msg") and not listing(relay, "tmp"), "the queue did not drain")
