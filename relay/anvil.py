"""Per-client connection count and rate, kept as Postfix's anvil server keeps them for smtpd.

Each client is keyed by service and address (`smtp:192.0.2.7`). The count is its
sessions open now; the rate is its connection attempts (refused ones included) in
the current time unit, which starts at its first attempt after the previous unit
ended, as in anvil. The peaks are logged in anvil's words at shutdown and with the
first connection ten minutes or more after the last report:

    statistics: max connection rate 12/60s for (smtp:192.0.2.7) at Dec  6 04:21:07
    statistics: max connection count 5 for (smtp:192.0.2.7) at Dec  6 04:21:03
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

log = logging.getLogger("postern/anvil")

RATE_TIME_UNIT = 60  # Postfix's anvil_rate_time_unit
STATUS_UPDATE_TIME = 600  # Postfix's anvil_status_update_time


@dataclass
class _Client:
    count: int = 0
    rate: int = 0
    start: float = 0.0  # when the current rate time unit began


@dataclass
class _Peak:
    value: int = 0
    key: str = ""
    when: float = 0.0

    def update(self, value: int, key: str) -> None:
        if value > self.value:
            self.value, self.key, self.when = value, key, time.time()


class Anvil:
    def __init__(self, clock=time.monotonic):
        self.clients: dict[str, _Client] = {}
        self._clock = clock
        self._max_count = _Peak()
        self._max_rate = _Peak()
        self._last_sweep = self._last_report = clock()

    def connect(self, key: str) -> tuple[int, int]:
        """Count a new connection; returns the client's (count, rate) including it."""
        now = self._clock()
        self._sweep(now)
        if now - self._last_report >= STATUS_UPDATE_TIME:
            self.log_statistics()
        client = self.clients.setdefault(key, _Client(start=now))
        if now - client.start >= RATE_TIME_UNIT:
            client.start, client.rate = now, 0
        client.count += 1
        client.rate += 1
        self._max_count.update(client.count, key)
        self._max_rate.update(client.rate, key)
        return client.count, client.rate

    def disconnect(self, key: str) -> None:
        client = self.clients.get(key)
        if client is None or client.count == 0:
            return
        client.count -= 1
        if client.count == 0 and self._clock() - client.start >= RATE_TIME_UNIT:
            del self.clients[key]

    def _sweep(self, now: float) -> None:
        """Forget idle clients whose time unit is over (once a time unit: linear in the clients kept)."""
        if now - self._last_sweep < RATE_TIME_UNIT:
            return
        self._last_sweep = now
        self.clients = {key: client for key, client in self.clients.items()
                        if client.count or now - client.start < RATE_TIME_UNIT}

    def log_statistics(self) -> None:
        """Log the peaks since the last report, as anvil does, and start again."""
        for name, peak in (("rate", self._max_rate), ("count", self._max_count)):
            if peak.value <= 0:
                continue
            when = time.strftime("%b %e %H:%M:%S", time.localtime(peak.when))
            value = f"{peak.value}/{RATE_TIME_UNIT}s" if name == "rate" else str(peak.value)
            log.info("statistics: max connection %s %s for (%s) at %s", name, value, peak.key, when)
        self._max_count, self._max_rate = _Peak(), _Peak()
        self._last_report = self._clock()
