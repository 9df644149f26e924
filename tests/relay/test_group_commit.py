"""The queue's grouped commits: several messages written together, each acknowledged only once durable.

Real files in a real queue directory; the fsyncs are watched (and, to play a failing
disk, made to fail) by wrapping the functions the store calls, which still do their work.
Where one fsync of a file keeps its new name too (ext4, XFS, btrfs: this machine's queue), each
file is fsynced under its name in msg/; elsewhere (a tmpfs here) msg/ is fsynced as well.
"""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
import subprocess
import tempfile
import threading
import time

import pytest

from relay.files import file_system_type, fsync_keeps_names
from relay.queue import store as store_module
from relay.queue.entry import Envelope
from relay.queue.store import QueueFull, QueueStore, QueueWriteError


def envelope(store: QueueStore, size: int) -> Envelope:
    return Envelope(id=store.new_id(), sender="alice@example.net", recipients=["bob@example.com"],
                    arrival=time.time(), size=size)


@pytest.fixture
def store(tmp_path):
    queue = QueueStore(tmp_path)
    queue.open()
    return queue


@pytest.fixture
def watched_fsyncs(store, monkeypatch):
    """The path of each file fsynced; a slow disk (each group of commits takes 20 ms more), so that
    commits pile up. The number of groups written is in `groups`."""
    synced: list[str] = []
    groups: list[int] = []
    real_fsync, real_group = os.fsync, store._write_group_sync

    def fsync(fd):
        real_fsync(fd)
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))

    def write_group(group):
        time.sleep(0.02)
        errors = real_group(group)
        groups.append(len(group))
        return errors

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(store, "_write_group_sync", write_group)
    return synced, groups


async def test_concurrent_commits_are_grouped_and_each_waits_for_its_own_fsync(store, watched_fsyncs):
    synced, groups = watched_fsyncs
    acknowledged: dict[str, int] = {}  # queue ID -> files fsynced when its commit returned

    async def commit(number: int) -> None:
        body = b"Subject: %d\r\n\r\n" % number + b"x" * 1000 + b"\r\n"
        entry = await store.commit(envelope(store, len(body)), body)
        acknowledged[entry.id] = len(synced)

    await asyncio.gather(*(commit(number) for number in range(40)))
    assert len(acknowledged) == 40
    assert 1 < len(groups) < 40  # grouped, in more than one group
    for queue_id, fsyncs_done in acknowledged.items():  # fsynced under its name in msg/, before its answer
        assert os.path.realpath(store.msg / queue_id) in synced[:fsyncs_done], queue_id
    loaded = store.load()
    assert sorted(entry.id for entry in loaded) == sorted(acknowledged)
    assert list(store.tmp.iterdir()) == []


async def test_a_lone_commit_is_written_at_once(store, watched_fsyncs):
    synced, groups = watched_fsyncs
    body = b"Subject: one\r\n\r\nbody\r\n"
    entry = await store.commit(envelope(store, len(body)), body)
    assert groups == [1]
    assert synced == [os.path.realpath(store.msg / entry.id)]
    assert await store.read_message(entry.id) == body


async def test_the_envelope_line_is_the_same_json_as_before(store):
    """What `Envelope.to_dict` (dataclasses.asdict) gives: the queue format does not change."""
    import json

    body = b"Subject: x\r\n\r\nx\r\n"
    queued = envelope(store, len(body))
    queued.notify = {"bob@example.com": "NEVER"}
    queued.orcpt = {"bob@example.com": "rfc822;bob@example.com"}
    await store.commit(queued, body)
    lines = (store.msg / queued.id).read_bytes().split(b"\n", 2)
    assert lines[1] == json.dumps(queued.to_dict(), separators=(",", ":")).encode()


async def test_one_failed_write_refuses_only_its_message(store, monkeypatch):
    """A message the disk has no room for gets 452; the others of its group are kept and acknowledged."""
    real = store_module.write_renamed
    gate = threading.Event()
    too_big = []

    def write_renamed(temporary, path, chunks):
        gate.wait(5)  # hold the first group until every commit is waiting
        if sum(len(chunk) for chunk in chunks) > 50_000:
            too_big.append(os.path.basename(path))
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(temporary, path, chunks)

    monkeypatch.setattr(store_module, "write_renamed", write_renamed)

    async def commit(size: int):
        body = b"x" * size
        try:
            return await store.commit(envelope(store, size), body)
        except QueueFull as error:
            return error

    tasks = [asyncio.ensure_future(commit(size)) for size in (100, 100_000, 100, 200, 100_000, 300)]
    await asyncio.sleep(0.05)
    gate.set()
    results = await asyncio.gather(*tasks)
    assert [isinstance(result, QueueFull) for result in results] == [False, True, False, False, True, False]
    kept = sorted(entry.id for entry in store.load())
    assert kept == sorted(result.id for result in results if not isinstance(result, QueueFull))
    assert not set(too_big) & set(kept)
    assert list(store.tmp.iterdir()) == []


async def test_a_failed_fsync_refuses_only_its_message_and_leaves_no_file(store, monkeypatch):
    """A disk error on one file's fsync: 451 for it, its file gone from msg/ (its client keeps the
    message and sends it again), the rest of the group acknowledged."""
    real = os.fsync

    def fsync(fd):
        if os.fstat(fd).st_size > 50_000:
            raise OSError(errno.EIO, "Input/output error")
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)

    async def commit(size: int):
        try:
            return await store.commit(envelope(store, size), b"x" * size)
        except QueueWriteError as error:
            return error

    results = await asyncio.gather(*(commit(size) for size in (100, 100_000, 200)))
    assert [type(result).__name__ for result in results] == ["QueueEntry", "QueueWriteError", "QueueEntry"]
    assert "Input/output error" in str(results[1])
    assert sorted(os.listdir(store.msg)) == sorted([results[0].id, results[2].id])
    assert list(store.tmp.iterdir()) == []


def test_one_fsync_is_trusted_with_the_name_only_on_the_file_systems_known_for_it(tmp_path):
    """Checked against util-linux's findmnt: the queue's own file system here, and a tmpfs."""
    for directory in (tmp_path, "/dev/shm"):
        found = subprocess.run(["findmnt", "-n", "-o", "FSTYPE", "--target", str(directory)],
                               capture_output=True, text=True, check=True).stdout.split()[0]
        assert file_system_type(directory) == found
        assert fsync_keeps_names(directory) == (found in ("ext4", "xfs", "btrfs"))
    assert not fsync_keeps_names("/dev/shm")


def test_the_start_line_says_how_a_message_is_made_durable(store, store_fsyncing_msg):
    found = subprocess.run(["findmnt", "-n", "-o", "FSTYPE", "--target", str(store.msg)],
                           capture_output=True, text=True, check=True).stdout.split()[0]
    how = "one fsync a message" if found in ("ext4", "xfs", "btrfs") else "msg/ fsynced after its files"
    assert store.durability() == f"queue on {found} ({how})"
    assert store_fsyncing_msg.durability() == "queue on tmpfs (msg/ fsynced after its files)"


@pytest.fixture
def store_fsyncing_msg():
    """A queue on a file system where an fsync of a file is not known to keep its name (a tmpfs)."""
    directory = tempfile.mkdtemp(dir="/dev/shm")
    queue = QueueStore(directory)
    queue.open()
    yield queue
    shutil.rmtree(directory)


async def test_elsewhere_msg_is_fsynced_once_per_group_before_any_answer(store_fsyncing_msg, monkeypatch):
    store = store_fsyncing_msg
    synced: list[set[str]] = []
    real = store_module.fsync_directory

    def fsync_directory(directory):
        time.sleep(0.02)
        real(directory)
        synced.append(set(os.listdir(directory)))

    monkeypatch.setattr(store_module, "fsync_directory", fsync_directory)
    acknowledged: dict[str, int] = {}

    async def commit(number: int) -> None:
        entry = await store.commit(envelope(store, 3), b"abc")
        acknowledged[entry.id] = len(synced)

    await asyncio.gather(*(commit(number) for number in range(20)))
    assert 1 < len(synced) < 20
    for queue_id, fsyncs_done in acknowledged.items():
        assert any(queue_id in found for found in synced[:fsyncs_done]), queue_id


async def test_elsewhere_a_failed_directory_fsync_acknowledges_none_of_its_group(store_fsyncing_msg, monkeypatch):
    def fsync_directory(directory):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(store_module, "fsync_directory", fsync_directory)

    async def commit():
        try:
            await store_fsyncing_msg.commit(envelope(store_fsyncing_msg, 3), b"abc")
        except QueueWriteError as error:
            return str(error)
        return "acknowledged"

    results = await asyncio.gather(*(commit() for _ in range(5)))
    assert all("Input/output error" in result for result in results), results


async def test_a_client_gone_during_its_commit_does_not_stop_the_others(store, watched_fsyncs):
    async def commit(number: int):
        return await store.commit(envelope(store, 3), b"abc")

    first = asyncio.ensure_future(commit(0))
    await asyncio.sleep(0)
    others = [asyncio.ensure_future(commit(number)) for number in range(1, 6)]
    await asyncio.sleep(0)
    others[0].cancel()  # its connection was lost while it waited for the group
    done = await asyncio.gather(first, *others[1:])
    assert len(done) == 5
    after = await store.commit(envelope(store, 3), b"abc")  # the store goes on
    assert after.id in {entry.id for entry in store.load()}


def finished_without_waiting(coroutine):
    """Run `coroutine` without an event loop turning: its result if it never waited on the loop."""
    try:
        coroutine.send(None)
    except StopIteration as stop:
        return stop.value
    coroutine.close()
    raise AssertionError("the commit waited on the event loop")


async def test_a_commit_here_is_durable_before_it_returns_without_the_loop_turning(store, monkeypatch):
    """A receiving process with one session: the file is written and fsynced on the loop's own thread."""
    fsynced: list[tuple[str, int]] = []
    real = os.fsync

    def fsync(fd):
        real(fd)
        fsynced.append((os.readlink(f"/proc/self/fd/{fd}"), threading.get_ident()))

    monkeypatch.setattr(os, "fsync", fsync)
    body = b"Subject: here\r\n\r\nbody\r\n"
    entry = finished_without_waiting(store.commit(envelope(store, len(body)), body, here=True))
    assert fsynced == [(os.path.realpath(store.msg / entry.id), threading.get_ident())]
    assert await store.read_message(entry.id) == body
    assert list(store.tmp.iterdir()) == []


async def test_a_commit_here_refuses_as_a_grouped_one_does(store, monkeypatch):
    def full(temporary, path, chunks):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store_module, "write_renamed", full)
    with pytest.raises(QueueFull, match="No space left"):
        finished_without_waiting(store.commit(envelope(store, 3), b"abc", here=True))

    def failing(fd):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.undo()
    monkeypatch.setattr(os, "fsync", failing)
    with pytest.raises(QueueWriteError, match="Input/output error"):
        finished_without_waiting(store.commit(envelope(store, 3), b"abc", here=True))
    assert os.listdir(store.msg) == [] and list(store.tmp.iterdir()) == []


async def test_a_commit_here_joins_a_group_being_written(store, monkeypatch):
    """A group in a worker thread is not waited for on the loop's thread: the message goes in the
    next group, written by a worker thread too."""
    threads: dict[str, int] = {}
    real = os.fsync

    def fsync(fd):
        time.sleep(0.02)
        real(fd)
        threads[os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))] = threading.get_ident()

    monkeypatch.setattr(os, "fsync", fsync)
    first = asyncio.ensure_future(store.commit(envelope(store, 3), b"abc"))
    await asyncio.sleep(0)  # the first group is being written
    second = await store.commit(envelope(store, 3), b"def", here=True)
    first = await first
    assert set(threads) == {first.id, second.id} and threading.get_ident() not in threads.values()
    assert await store.read_message(second.id) == b"def"
