"""New messages' bodies kept in memory for their first attempt: what goes out is the file's message byte
for byte, the budget is never exceeded, and whatever is not kept is read from the queue file as before."""

from __future__ import annotations

import asyncio
import time

import pytest

from relay.config import parse_mta
from relay.daemon import Relay
from relay.queue.entry import Envelope
from relay.queue.fresh import FreshBodies
from tests.support.relay import base_mta
from tests.support.sink import Sink


def test_the_budget_is_never_exceeded_and_a_body_is_handed_out_once():
    fresh = FreshBodies(limit=100)
    assert fresh.keep("A", b"a" * 60)
    assert not fresh.keep("B", b"b" * 41)  # 101 bytes: over the budget, not held at all
    assert fresh.keep("C", b"c" * 40)
    assert fresh.size == 100 and len(fresh) == 2
    assert not fresh.keep("A", b"x")  # the same message twice: the first body stays
    assert fresh.take("A") == b"a" * 60 and fresh.take("A") is None
    assert fresh.take("B") is None
    assert fresh.size == 40
    assert fresh.keep("D", b"d" * 60)
    assert fresh.size == 100


class Gateway:
    """The relay's real scheduler, store and delivery in this process, relaying to a recording sink."""

    def __init__(self, tmp_path, sink: Sink):
        config, problems = parse_mta(base_mta(1, sink.port))
        assert not problems, problems
        self.relay = Relay(config, str(tmp_path / "postern.yaml"), str(tmp_path / "state"),
                           str(tmp_path / "control.sock"))
        self.store, self.scheduler, self.sink = self.relay.store, self.relay.scheduler, sink
        self.store.open()
        self.reads: list[str] = []
        read = self.store.read_message

        async def counted(queue_id: str) -> bytes:  # the real read, counted
            self.reads.append(queue_id)
            return await read(queue_id)

        self.store.read_message = counted
        self.task = asyncio.get_running_loop().create_task(self.scheduler.run())

    def pause(self) -> None:
        """Stop the scheduler's loop, so that queued messages wait."""
        self.task.cancel()

    def resume(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self.scheduler.run())

    async def queue(self, body: bytes, recipient: str = "bob@example.com", pass_body: bool = True):
        envelope = Envelope(id=self.store.new_id(), sender="alice@example.net", recipients=[recipient],
                            arrival=time.time(), size=len(body))
        entry = await self.store.commit(envelope, body)
        self.scheduler.add(entry, body if pass_body else None)
        return entry

    async def delivered(self, count: int, timeout: float = 20.0) -> list:
        deadline = time.monotonic() + timeout
        while len(self.sink.messages) < count or self.scheduler.busy():
            assert time.monotonic() < deadline, f"{len(self.sink.messages)} of {count} messages delivered"
            await asyncio.sleep(0.02)
        return list(self.sink.messages)

    async def close(self) -> None:
        self.task.cancel()
        await self.scheduler.drain()
        await asyncio.gather(*(asyncio.all_tasks() - {asyncio.current_task()}), return_exceptions=True)


@pytest.fixture
async def gateway(tmp_path, sink):
    made = Gateway(tmp_path, sink)
    yield made
    await made.close()


def message(number: int, size: int) -> bytes:
    line = f"line of message {number} ".encode().ljust(70, b"x") + b"\r\n"
    return b"Subject: m%d\r\n\r\n.leading dot\r\n" % number + line * (size // len(line))


async def test_a_new_message_goes_out_from_memory_exactly_as_its_file_has_it(gateway):
    body = message(1, 50_000)
    entry = await gateway.queue(body)
    [received] = await gateway.delivered(1)
    assert received.content == body  # the sink undoes the dot stuffing
    assert gateway.reads == []  # not read back
    assert entry.id not in gateway.scheduler.entries and gateway.store.msg.exists()
    assert list(gateway.store.msg.iterdir()) == [] and gateway.scheduler.fresh.size == 0


async def test_past_the_budget_bodies_are_read_from_their_files(gateway):
    gateway.scheduler.fresh.limit = 120_000  # room for two of the five 50 KB messages
    gateway.pause()  # all five arrive before the first is tried, as in a burst
    bodies = [message(n, 50_000) for n in range(5)]
    sizes = []
    for body in bodies:
        await gateway.queue(body)
        sizes.append(gateway.scheduler.fresh.size)
    two = len(bodies[0]) + len(bodies[1])
    assert sizes == [len(bodies[0]), two, two, two, two] and two <= 120_000
    assert len(gateway.scheduler.fresh) == 2
    gateway.resume()
    received = await gateway.delivered(5)
    assert sorted(m.content for m in received) == sorted(bodies)
    assert len(gateway.reads) == 3
    assert gateway.scheduler.fresh.size == 0 and len(gateway.scheduler.fresh) == 0


async def test_a_message_queued_without_its_body_is_read_back(gateway):
    body = message(7, 2000)
    entry = await gateway.queue(body, pass_body=False)
    [received] = await gateway.delivered(1)
    assert received.content == body and gateway.reads == [entry.id]


async def test_a_held_message_lets_go_of_its_body_and_is_read_from_its_file_when_released(gateway):
    gateway.pause()
    body = message(3, 2000)
    entry = await gateway.queue(body)
    assert gateway.scheduler.fresh.size == len(body)
    assert await gateway.scheduler.hold([entry.id]) == [entry.id]
    assert gateway.scheduler.fresh.size == 0
    gateway.resume()
    await gateway.scheduler.release([entry.id])
    [received] = await gateway.delivered(1)
    assert received.content == body and gateway.reads == [entry.id]


async def test_a_message_deleted_before_its_attempt_lets_go_of_its_body(gateway):
    gateway.pause()
    entry = await gateway.queue(message(4, 2000))
    assert await gateway.scheduler.delete([entry.id]) == [entry.id]
    assert gateway.scheduler.fresh.size == 0 and len(gateway.scheduler.fresh) == 0


async def test_a_deferred_message_is_read_from_its_file_at_its_next_attempt(gateway):
    gateway.sink.data_reply = "451 4.3.0 try later"
    body = message(5, 2000)
    entry = await gateway.queue(body)
    deadline = time.monotonic() + 15
    while not entry.attempts:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    assert gateway.reads == [] and gateway.scheduler.fresh.size == 0
    gateway.sink.data_reply = None
    gateway.scheduler.flush()
    [received] = await gateway.delivered(1)
    assert received.content == body and gateway.reads == [entry.id]
