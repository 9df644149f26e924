"""The queue manager: decides when each message is tried and what happens after.

The on-disk queue is the truth; the scheduler keeps every entry's envelope and
state in memory, a heap of due times, and a bounded window of messages being
delivered. Bodies stay on disk, except those of new messages waiting for their
first attempt, within a byte budget (`queue/fresh.py`). A message's state is saved as each of its next hops
settles, so a stop or crash while another hop is busy never repeats a finished one.
After an attempt a message is removed (every recipient sent or bounced), or deferred
with Postfix's backoff: the message's age, kept between the minimal and maximal
backoff time, plus a little jitter. Past the queue lifetime its deferred recipients
bounce. A recipient that failed for good stays `bouncing`, and its message queued,
until the sender's notice is queued (`bounce.py` builds it); delay warnings and
"relayed" notices go the same way.
"""

from __future__ import annotations

import asyncio
import bisect
import heapq
import itertools
import logging
import random
import time
from collections.abc import Callable

from . import addresses, bounce
from .delivery import Delivery, Job, Outcome
from .bounce import DELAYED, FAILED, RELAYED
from .config import MtaConfig
from .events import EventHub
from .queue.entry import BOUNCED, BOUNCING, DEFERRED, PENDING, SENT, Counters, Envelope, QueueEntry
from .queue.fresh import FreshBodies
from .queue.store import DamagedFile, QueueFull, QueueStore, QueueWriteError
from .routing import next_hop

log = logging.getLogger("postern/qmgr")

# The active window: messages being delivered at once, and their bodies' bytes in memory.
ACTIVE_LIMIT = 1000
ACTIVE_BYTES_LIMIT = 256 * 2**20
# What the log calls each notice, in Postfix's words.
_NOTICE_NAMES = {FAILED: "non-delivery notification", DELAYED: "delay notification",
                 RELAYED: "delivery status notification"}


def backoff_delay(age: float, minimal: int, maximal: int) -> float:
    return min(max(age, minimal), maximal) * random.uniform(1.0, 1.1)


class Scheduler:
    """`config` returns the configuration in force (a reload replaces it); `delivery` takes the jobs."""

    def __init__(self, *, config: Callable[[], MtaConfig], store: QueueStore, events: EventHub,
                 counters: Counters, delivery: Delivery):
        self.config = config
        self.store = store
        self.events = events
        self.counters = counters
        self.delivery = delivery
        self.entries: dict[str, QueueEntry] = {}
        self.order: list[str] = []  # every queued ID, sorted: arrival order
        self._due: list[tuple[float, int, str]] = []
        self._seq = itertools.count()
        self._wake = asyncio.Event()
        self._in_flight: set[str] = set()
        self._in_flight_bytes = 0
        self._room = asyncio.Condition()
        self._tasks: set[asyncio.Task] = set()
        self.fresh = FreshBodies()  # new messages' bodies for their first attempt, within a byte budget

    # --- what the receiver and the control API call -----------------------------

    def add(self, entry: QueueEntry, body: bytes | None = None) -> None:
        """A message now on disk; `body`, the message as written, spares reading it back for its first attempt."""
        if body is not None and not entry.hold and not entry.attempts:
            self.fresh.keep(entry.id, body)
        self.entries[entry.id] = entry
        bisect.insort(self.order, entry.id)
        if not entry.hold:
            self._schedule(entry, entry.next_attempt if entry.attempts else 0.0)
        self.events.publish("queue")

    def flush(self) -> int:
        """Try every deferred message now (postqueue -f)."""
        self.delivery.revive_all()
        count = 0
        for entry in self.entries.values():
            if not entry.hold and entry.id not in self._in_flight:
                entry.next_attempt = 0.0
                self._schedule(entry, 0.0)
                count += 1
        self.events.publish("queue")
        return count

    def busy(self) -> bool:
        """Messages being delivered, or delivered and not yet removed."""
        return bool(self._in_flight) or self.store.removals_pending()

    async def drain(self) -> None:
        """Wait for the delivery attempts under way (each saves its state as it ends), and for the
        removal of the messages delivered."""
        while self._tasks:
            await asyncio.wait(list(self._tasks))
        await self.store.flush_removals()  # those delivered are not delivered again after the restart

    def cut(self) -> int:
        """Stop the attempts still under way: their recipients stay as last saved, to be tried again."""
        for task in self._tasks:
            task.cancel()
        return len(self._tasks)

    async def delete(self, ids: list[str]) -> list[str]:
        """postsuper -d: gone from the queue, without notifying anyone."""
        done = []
        for queue_id in ids:
            if self._drop(queue_id):
                await self.store.remove(queue_id)
                log.info("%s: removed by the administrator", queue_id)
                done.append(queue_id)
        self._changed(done)
        return done

    async def hold(self, ids: list[str]) -> list[str]:
        """postsuper -h: never tried until released."""
        done = [e for e in self._found(ids) if not e.hold]
        for entry in done:
            entry.hold = True
            self.fresh.take(entry.id)  # held maybe for days: its file has it
            await self.store.save_state(entry)
            log.info("%s: placed on hold", entry.id)
        return self._changed([e.id for e in done])

    async def release(self, ids: list[str]) -> list[str]:
        """postsuper -H: back in the queue, tried at once."""
        done = [e for e in self._found(ids) if e.hold]
        for entry in done:
            entry.hold = False
            entry.next_attempt = 0.0
            await self.store.save_state(entry)
            self._schedule(entry, 0.0)
            log.info("%s: released from hold", entry.id)
        return self._changed([e.id for e in done])

    async def requeue(self, ids: list[str]) -> list[str]:
        """postsuper -r: deferred recipients start afresh and are tried at once (held mail stays held)."""
        self.delivery.revive_all()
        done = self._found(ids)
        for entry in done:
            entry.next_attempt = 0.0
            for recipient in entry.open_recipients():
                if recipient.status != BOUNCING:  # failed for good: only its notice is still due
                    recipient.status = PENDING
            await self.store.save_state(entry)
            if not entry.hold:
                self._schedule(entry, 0.0)
            log.info("%s: requeued", entry.id)
        return self._changed([e.id for e in done])

    def _drop(self, queue_id: str) -> bool:
        """Forget a message (its files are the caller's business); False if it was not queued."""
        self.fresh.take(queue_id)
        if self.entries.pop(queue_id, None) is None:
            return False
        index = bisect.bisect_left(self.order, queue_id)
        if index < len(self.order) and self.order[index] == queue_id:
            del self.order[index]
        return True

    def _found(self, ids: list[str]) -> list[QueueEntry]:
        return [self.entries[i] for i in ids if i in self.entries]

    def _changed(self, ids: list[str]) -> list[str]:
        if ids:
            self.events.publish("queue")
        return ids

    # --- the loop -------------------------------------------------------------------

    def _schedule(self, entry: QueueEntry, due: float) -> None:
        heapq.heappush(self._due, (due, next(self._seq), entry.id))
        self._wake.set()

    async def run(self) -> None:
        while True:
            now = time.time()
            while self._due and self._due[0][0] <= now:
                _, _, queue_id = heapq.heappop(self._due)
                entry = self.entries.get(queue_id)
                if entry is None or entry.hold or queue_id in self._in_flight:
                    continue
                if entry.attempts and entry.next_attempt > now:
                    continue  # rescheduled since this heap item was pushed
                await self._reserve(entry.envelope.size)
                self._in_flight.add(queue_id)
                task = asyncio.get_running_loop().create_task(self._attempt(entry))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            timeout = max(0.0, self._due[0][0] - time.time()) if self._due else None
            self._wake.clear()
            try:
                # asyncio.timeout, not wait_for: wait_for makes a task each time, and this wakes per message
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def _reserve(self, size: int) -> None:
        """Wait for room in the active window; one message always fits, however large."""
        def room() -> bool:
            if not self._in_flight:
                return True
            return len(self._in_flight) < ACTIVE_LIMIT and self._in_flight_bytes + size <= ACTIVE_BYTES_LIMIT

        async with self._room:
            await self._room.wait_for(room)
            self._in_flight_bytes += size

    async def _attempt(self, entry: QueueEntry) -> None:
        try:
            message = self.fresh.take(entry.id)
            try:
                if message is None:
                    message = await self.store.read_message(entry.id)
            except DamagedFile as error:
                self.store.move_aside(entry.id, str(error))
                self._drop(entry.id)
                return
            except FileNotFoundError:
                self._drop(entry.id)  # deleted by an admin meanwhile
                return
            tried = [r for r in entry.open_recipients() if r.status != BOUNCING]  # for those only the notice is due
            by_hop: dict = {}
            for recipient in tried:
                hop = next_hop(self.config(), addresses.domain_of(recipient.address))
                by_hop.setdefault(hop, []).append(recipient)
            jobs = [Job(entry, recipients, hop, message) for hop, recipients in by_hop.items()]
            for job in jobs:
                self.delivery.submit(job)
            if len(jobs) == 1:  # nearly always: no task of its own (gather would make one)
                await self._settled(jobs[0], jobs)
            else:
                await asyncio.gather(*(self._settled(job, jobs) for job in jobs))
            await self._after_attempt(entry, tried, message)
        except Exception:
            log.exception("%s: could not finish a delivery attempt; it stays queued", entry.id)
            self._reschedule(entry, "4.3.0 internal error while delivering")
        finally:
            self._in_flight.discard(entry.id)
            async with self._room:
                self._in_flight_bytes -= entry.envelope.size
                self._room.notify_all()

    async def _settled(self, job: Job, jobs: list[Job]) -> None:
        """Apply what one next hop did with its recipients, and save the message's state at once
        while another next hop is still busy, so that a stop or a crash meanwhile does not send this
        one's recipients again. (The last to finish needs no write of its own: the end of the attempt
        saves or removes the message.)"""
        self._apply(job, await job.done)
        others_busy = any(not other.done.done() for other in jobs)
        if others_busy and self.entries.get(job.entry.id) is job.entry:
            await self.store.save_state(job.entry)

    @staticmethod
    def _apply(job: Job, outcomes: list[Outcome]) -> None:
        """Each recipient as the attempt left it; a bounced one is `bouncing` until its sender's notice is queued."""
        recipients = {r.address: r for r in job.recipients}
        now = time.time()
        for outcome in outcomes:
            recipient = recipients[outcome.address]
            recipient.record(outcome.status, outcome.dsn, outcome.reply, outcome.relay, now)
            if outcome.status == BOUNCED:
                recipient.status = BOUNCING
            if outcome.status == SENT:
                recipient.dsn_passed = outcome.dsn_passed

    async def _after_attempt(self, entry: QueueEntry, tried: list, message: bytes) -> None:
        self.events.publish("queue")
        if self.entries.get(entry.id) is not entry:
            return  # deleted by an administrator while it was being delivered
        now = time.time()
        counters = self.counters
        queue = self.config().queue
        expired = now - entry.envelope.arrival >= queue.maximal_queue_lifetime
        for recipient in tried:
            if recipient.status == DEFERRED and expired:
                recipient.status = BOUNCING  # with its last reply and status, as Postfix returns it
                log.info("%s: to=<%s>, status=expired, returned to sender", entry.id, recipient.address)
        bouncing = [r for r in entry.recipients if r.status == BOUNCING]
        if bouncing:
            await self._return_failed(entry, bouncing, message)
        relayed = [r for r in tried
                   if r.status == SENT and not r.dsn_passed and bounce.wants(entry, r.address, RELAYED)]
        if relayed:
            await self._queue_notice(entry, RELAYED, relayed, message)
        counters.delivered += sum(1 for r in tried if r.status == SENT)
        counters.bounced += sum(1 for r in bouncing if r.status == BOUNCED)
        counters.deferred += sum(1 for r in tried if r.status == DEFERRED)
        if not entry.open_recipients():
            self._drop(entry.id)
            self.store.remove_soon(entry.id, self._removed)
            return
        deferred = [r for r in entry.recipients if r.status == DEFERRED]
        if deferred:
            await self._warn_of_delay(entry, deferred, message, now)
        self._reschedule(entry, deferred[-1].last_reply if deferred else entry.last_reply)
        await self.store.save_state(entry)

    @staticmethod
    def _removed(queue_id: str, error: OSError | None) -> None:
        """A finished message's files are gone (or could not be removed: it is sent again after a restart)."""
        if error is None:
            log.info("%s: removed", queue_id)
        else:
            log.error("%s: cannot remove the delivered message's queue file: %s; it will be delivered again "
                      "after a restart", queue_id, error)

    def _reschedule(self, entry: QueueEntry, reply: str) -> None:
        queue = self.config().queue
        now = time.time()
        entry.attempts += 1
        entry.last_reply = reply
        delay = backoff_delay(now - entry.envelope.arrival, queue.minimal_backoff_time, queue.maximal_backoff_time)
        entry.next_attempt = now + delay
        if not entry.hold:
            self._schedule(entry, entry.next_attempt)

    async def _return_failed(self, entry: QueueEntry, bouncing: list, message: bytes) -> None:
        """The sender's non-delivery notice for these recipients; they stay bouncing (and the message
        queued) until it is queued itself. NOTIFY=NEVER, or without FAILURE, asks for none."""
        unwanted = [r for r in bouncing if not bounce.wants(entry, r.address, FAILED)]
        for recipient in unwanted:
            log.info("%s: to=<%s>: no non-delivery notice: NOTIFY=%s", entry.id, recipient.address,
                     entry.envelope.notify.get(recipient.address, ""))
            recipient.status = BOUNCED
        wanted = [r for r in bouncing if r not in unwanted]
        if wanted and await self._queue_notice(entry, FAILED, wanted, message):
            for recipient in wanted:
                recipient.status = BOUNCED

    async def _warn_of_delay(self, entry: QueueEntry, deferred: list, message: bytes, now: float) -> None:
        """One "delayed" notice per message once it is older than delay_warning_time (0: never)."""
        warn_after = self.config().queue.delay_warning_time
        if not warn_after or entry.delay_warned or now - entry.envelope.arrival < warn_after:
            return
        wanted = [r for r in deferred if bounce.wants(entry, r.address, DELAYED)]
        if not wanted or await self._queue_notice(entry, DELAYED, wanted, message):
            entry.delay_warned = True

    async def _queue_notice(self, entry: QueueEntry, action: str, recipients: list, message: bytes) -> bool:
        """Queue a notice (RFC 3464) to the sender; False if it could not be built or queued (try again later).

        Never to the null sender: that is a notice itself, or mail that asked for none."""
        kind = _NOTICE_NAMES[action]
        if not entry.envelope.sender:
            log.info("%s: not notifying: the sender is the null address <>", entry.id)
            return True
        store = self.store
        try:
            # in a thread: linear, but a header of megabytes would hold the loop for a while
            body = await asyncio.to_thread(bounce.build_notice, self.config(), entry, action, recipients, message)
            envelope = Envelope(
                id=store.new_id(),
                sender="",
                recipients=[entry.envelope.sender],
                arrival=time.time(),
                size=len(body),
                client="local",
                protocol="DSN",
                subject=bounce.subject(action),
                smtputf8=entry.envelope.smtputf8,
                body="8BITMIME" if not body.isascii() else "",
            )
            notice = await store.commit(envelope, body)
        except Exception as error:  # whatever it is, the message stays: a lost notice is lost mail
            unexpected = not isinstance(error, (QueueFull, QueueWriteError))  # a bug: its traceback too
            log.error("%s: cannot queue the sender's %s: %s; the message stays queued and the notice is "
                      "tried again later", entry.id, kind, error, exc_info=unexpected)
            return False
        log.info("%s: sender %s: %s", entry.id, kind, envelope.id)
        self.add(notice, body)
        return True
