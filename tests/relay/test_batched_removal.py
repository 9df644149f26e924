"""Delivered messages' files are removed in batches: those asked for in one turn of the event loop
together at its end, every file gone before it is reported removed, and none left behind by a stop."""

import asyncio
import time

from relay.queue.entry import Envelope
from relay.queue.store import QueueStore


async def queued(store: QueueStore, count: int) -> list[str]:
    ids = []
    for _ in range(count):
        envelope = Envelope(id=store.new_id(), sender="a@example.net", recipients=["b@example.com"],
                            arrival=time.time(), size=4)
        await store.commit(envelope, b"hi\r\n")
        ids.append(envelope.id)
    return ids


def opened(tmp_path) -> QueueStore:
    store = QueueStore(tmp_path)
    store.open()
    return store


async def test_removals_of_one_turn_go_together_and_each_file_is_gone_when_reported(tmp_path):
    store = opened(tmp_path)
    ids = await queued(store, 250)
    (store.state / ids[0]).write_bytes(b"{}")  # a message tried before has a state file too
    reported = []

    def done(queue_id, error):
        assert error is None
        assert not (store.msg / queue_id).exists() and not (store.state / queue_id).exists()
        reported.append(queue_id)

    for queue_id in ids[:200]:
        store.remove_soon(queue_id, done)
    assert store.removals_pending() and store.being_removed() == set(ids[:200])
    assert len(list(store.msg.iterdir())) == 250  # nothing unlinked before the turn ends
    await asyncio.sleep(0)
    assert reported == ids[:200] and not store.removals_pending() and store.being_removed() == set()
    for queue_id in ids[200:]:  # a later turn: its own batch
        store.remove_soon(queue_id, done)
    await asyncio.sleep(0)
    assert reported == ids
    assert list(store.msg.iterdir()) == [] and list(store.state.iterdir()) == []


async def test_a_lone_removal_goes_at_once(tmp_path):
    store = opened(tmp_path)
    [queue_id] = await queued(store, 1)
    gone = asyncio.get_running_loop().create_future()
    store.remove_soon(queue_id, lambda i, error: gone.set_result(error))
    assert await asyncio.wait_for(gone, 5) is None
    assert not (store.msg / queue_id).exists()


async def test_a_stop_waits_for_every_removal_asked_for(tmp_path):
    store = opened(tmp_path)
    ids = await queued(store, 5)
    reported = []
    for queue_id in ids:
        store.remove_soon(queue_id, lambda i, error: reported.append((i, error)))
    await store.flush_removals()
    assert list(store.msg.iterdir()) == [] and not store.removals_pending()
    assert reported == [(i, None) for i in ids]


async def test_a_file_that_cannot_be_removed_is_reported_and_the_others_go(tmp_path):
    store = opened(tmp_path)
    ids = await queued(store, 3)
    stuck = store.msg / ids[1]
    stuck.unlink()
    stuck.mkdir()  # unlink fails on a directory: IsADirectoryError (or EPERM)
    reported = {}
    for queue_id in ids:
        store.remove_soon(queue_id, lambda i, error: reported.__setitem__(i, error))
    await store.flush_removals()
    assert reported[ids[0]] is None and reported[ids[2]] is None
    assert isinstance(reported[ids[1]], OSError)
    assert [p.name for p in store.msg.iterdir()] == [ids[1]]
