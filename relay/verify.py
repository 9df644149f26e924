"""Reject unverified recipients: ask the internal mail server before accepting RCPT.

Like Postfix's `reject_unverified_recipient`: for a recipient in the relay domains
the receiver asks the next hop (MAIL FROM:<>, RCPT TO:<address>, RSET, QUIT)
whether it would take the address. Answers are cached, positive ones for
`positive_expire_time` (31 days) and negative ones for `negative_expire_time`
(3 days); a next hop that cannot be asked gives no answer and nothing is cached.
Concurrent sessions asking about the same address share one probe. The cache
lives in memory: a restart starts it empty.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import asdict, dataclass
from collections.abc import Awaitable, Callable

import aiosmtplib

from . import addresses
from .hop_replies import one_line, reason_of
from .config import MtaConfig
from .routing import NextHop, RouteError, next_hop

log = logging.getLogger("postern/verify")

DELIVERABLE, UNDELIVERABLE, UNKNOWN = "deliverable", "undeliverable", "unknown"
PROBE_TIMEOUT = 20.0
MAX_ENTRIES = 100_000


@dataclass
class Verdict:
    address: str
    status: str
    reply: str
    checked: float
    expires: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def cache_key(address: str) -> str:
    local, domain = addresses.split(address)
    return f"{local}@{domain}"


class RecipientVerifier:
    """The cache and the probes. `config` returns the configuration in force; `connect` opens a
    connection to a next hop (the delivery client's, greeting and TLS included): its `client`
    speaks SMTP, its `target` names the address, `close()` ends it. RouteError when none answers."""

    def __init__(self, *, config: Callable[[], MtaConfig], connect: Callable[[NextHop], Awaitable]):
        self.config = config
        self.connect = connect
        self.cache: dict[str, Verdict] = {}
        self.hits = 0
        self.misses = 0
        self.probes = 0
        self._pending: dict[str, asyncio.Future] = {}

    # --- the cache, as the control API sees it ---------------------------------------------

    def lookup(self, address: str) -> Verdict | None:
        key = cache_key(address)
        verdict = self.cache.get(key)
        if verdict is not None and verdict.expires <= time.time():
            del self.cache[key]
            return None
        return verdict

    def flush(self, address: str | None = None) -> int:
        if address is None:
            count = len(self.cache)
            self.cache.clear()
        else:
            count = 1 if self.cache.pop(cache_key(address), None) else 0
        log.info("verification cache flushed: %d %s", count, "entry" if count == 1 else "entries")
        return count

    def stats(self) -> dict:
        now = time.time()
        live = [v for v in self.cache.values() if v.expires > now]
        return {
            "enabled": self.config().reject_unverified_recipient.enabled,
            "size": len(live),
            "deliverable": sum(1 for v in live if v.status == DELIVERABLE),
            "undeliverable": sum(1 for v in live if v.status == UNDELIVERABLE),
            "hits": self.hits,
            "misses": self.misses,
            "probes": self.probes,
        }

    def _store(self, verdict: Verdict) -> None:
        settings = self.config().reject_unverified_recipient
        lifetime = settings.positive_expire_time if verdict.status == DELIVERABLE else settings.negative_expire_time
        verdict.expires = verdict.checked + lifetime
        key = cache_key(verdict.address)
        self.cache.pop(key, None)
        self.cache[key] = verdict  # dict order is age order: the oldest go first when full
        if len(self.cache) > MAX_ENTRIES:
            now = time.time()
            for old in [k for k, v in self.cache.items() if v.expires <= now]:
                del self.cache[old]
            while len(self.cache) > MAX_ENTRIES:
                del self.cache[next(iter(self.cache))]

    # --- what the receiver calls -----------------------------------------------------------

    async def verify(self, address: str) -> Verdict:
        cached = self.lookup(address)
        if cached is not None:
            self.hits += 1
            return cached
        self.misses += 1
        key = cache_key(address)
        pending = self._pending.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._probe(address))
            self._pending[key] = pending
            pending.add_done_callback(lambda _: self._pending.pop(key, None))
        return await asyncio.shield(pending)  # a client hanging up does not cancel the others' answer

    async def _probe(self, address: str) -> Verdict:
        self.probes += 1
        hop = next_hop(self.config(), addresses.domain_of(address))
        try:
            verdict = await asyncio.wait_for(self._ask(hop, address), PROBE_TIMEOUT)
        except asyncio.TimeoutError:
            verdict = Verdict(address, UNKNOWN, f"no answer from {hop.host} within {PROBE_TIMEOUT:g}s", time.time())
        except Exception as error:  # a bug must not turn into an answer: the client tries again later
            log.exception("<%s>: verification failed unexpectedly", address)
            verdict = Verdict(address, UNKNOWN, f"internal error: {error}", time.time())
        if verdict.status != UNKNOWN:
            self._store(verdict)
        log.info("<%s>: %s (%s)", address, verdict.status, verdict.reply)
        return verdict

    async def _ask(self, hop, address: str) -> Verdict:
        now = time.time()
        try:
            connection = await self.connect(hop)
        except RouteError as error:
            return Verdict(address, UNKNOWN, error.text, now)
        client, target = connection.client, connection.target
        try:
            try:
                await client.mail("")
            except aiosmtplib.SMTPResponseException as error:
                return Verdict(address, UNKNOWN, f"host {target} refused MAIL FROM:<>: "
                                                 f"{one_line(error.code, error.message)}", now)
            try:
                response = await client.rcpt(address)
            except aiosmtplib.SMTPResponseException as error:
                status = UNDELIVERABLE if 500 <= error.code < 600 else UNKNOWN
                return Verdict(address, status, f"host {target} said: {one_line(error.code, error.message)}", now)
            try:
                await client.rset()
            except aiosmtplib.SMTPException:
                pass
            return Verdict(address, DELIVERABLE, f"host {target} said: {one_line(response.code, response.message)}", now)
        except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError) as error:
            return Verdict(address, UNKNOWN, f"lost connection with {target}: {reason_of(error)}", now)
        finally:
            await connection.close()
