"""A full queue file system: the relay says 452 4.3.1 and never acknowledges mail it did not keep."""

import json
import os
import subprocess

import pytest

from tests.support.net import free_port

MESSAGE = b"Subject: filler\r\n\r\n" + (b"f" * 78 + b"\r\n") * 250  # 20 kB


def mount_small_tmpfs(directory) -> None:
    """A 256 kB file system for the relay's queue; skips the test where that cannot be had."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs for the queue needs root")
    directory.mkdir(parents=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", str(directory)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {result.stderr.strip()}")


def unmount(directory) -> None:
    if subprocess.run(["umount", str(directory)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(directory)], check=True)


def intact(path) -> bool:
    """The queue file holds the whole message its envelope announces."""
    data = path.read_bytes()
    magic, _, rest = data.partition(b"\n")
    header, _, body = rest.partition(b"\n")
    return magic == b"POSTERN-QUEUE 1" and len(body) == json.loads(header)["size"]


def test_full_queue_file_system_defers_and_acknowledges_only_what_is_on_disk(make_relay):
    relay = make_relay(free_port(), start=False)  # nothing listens at the next hop: mail stays queued
    mount_small_tmpfs(relay.state_dir)
    try:
        relay.start()
        queued_ids, replies = [], []
        with relay.smtp() as client:
            for _ in range(40):
                client.mail("alice@example.net")
                client.rcpt("bob@example.com")
                code, text = client.data(MESSAGE)
                replies.append((code, text.decode()))
                if code == 250:
                    queued_ids.append(text.decode().rsplit(" ", 1)[1])
                else:
                    break
            assert replies[-1] == (452, "4.3.1 Insufficient system storage"), replies
            assert len(queued_ids) >= 3, "the file system was full before the first messages"
            assert client.noop()[0] == 250  # the session, and the relay, carry on

        relay.wait_log(r"queue file system full")
        queue = relay.state_dir / "queue"
        assert sorted(p.name for p in (queue / "msg").iterdir()) == sorted(queued_ids)
        assert all(intact(queue / "msg" / queue_id) for queue_id in queued_ids)
        assert list((queue / "tmp").iterdir()) == []
        assert relay.process.poll() is None
    finally:
        relay.kill()
        unmount(relay.state_dir)
