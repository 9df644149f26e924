"""Questions asked of the queue: filter, sort, page, and the age-by-destination table.

All of it works on the in-memory entries (envelopes and state), never on bodies,
so a page of a 100,000-message queue costs one pass over the entries.
"""

from __future__ import annotations

import base64
import bisect
import heapq
import json
import time
from dataclasses import dataclass
from typing import Iterable

from .. import addresses
from .entry import ACTIVE, DEFERRED, HOLD, QueueEntry

STATES = (ACTIVE, DEFERRED, HOLD)
SORTS = ("arrival", "age", "size", "sender", "recipient")
# qshape's columns: upper bounds in minutes; a last column holds anything older.
BUCKET_MINUTES = [5, 10, 20, 40, 80, 160, 320, 640, 1280]


class QueryError(ValueError):
    def __init__(self, field: str, reason: str):
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True)
class Filter:
    state: str | None = None
    sender: str | None = None
    recipient: str | None = None
    domain: str | None = None
    min_age: float | None = None
    max_age: float | None = None

    @classmethod
    def from_dict(cls, data: dict | None) -> Filter:
        data = data or {}
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise QueryError(sorted(unknown)[0], f"not a filter field; use {', '.join(cls.__dataclass_fields__)}")
        for name in ("sender", "recipient", "domain", "state"):
            if data.get(name) is not None and not isinstance(data[name], str):
                raise QueryError(name, "must be text")
        for name in ("min_age", "max_age"):
            value = data.get(name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0):
                raise QueryError(name, "must be a number of seconds, 0 or more")
        if data.get("state") is not None and data["state"] not in STATES:
            raise QueryError("state", f"must be one of {', '.join(STATES)}")
        return cls(
            state=data.get("state"),
            sender=(data.get("sender") or "").lower() or None,
            recipient=(data.get("recipient") or "").lower() or None,
            domain=(data.get("domain") or "").lower().rstrip(".") or None,
            min_age=data.get("min_age"),
            max_age=data.get("max_age"),
        )

    def matches(self, entry: QueueEntry, now: float) -> bool:
        if self.state and entry.state_at(now) != self.state:
            return False
        age = now - entry.envelope.arrival
        if self.min_age is not None and age < self.min_age:
            return False
        if self.max_age is not None and age > self.max_age:
            return False
        if self.sender and self.sender not in entry.envelope.sender.lower():
            return False
        if self.recipient and not any(self.recipient in r.address.lower() for r in entry.recipients):
            return False
        if self.domain and not any(addresses.domain_of(r.address) == self.domain for r in entry.recipients):
            return False
        return True

    @property
    def empty(self) -> bool:
        return self == Filter()


def _sort_key(sort: str):
    if sort == "size":
        return lambda e: (e.envelope.size, e.id)
    if sort == "sender":
        return lambda e: (e.envelope.sender.lower(), e.id)
    return lambda e: (e.recipients[0].address.lower(), e.id)


def _encode_cursor(key: tuple) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(key)).encode()).decode()


def _decode_cursor(cursor: str) -> tuple:
    try:
        return tuple(json.loads(base64.urlsafe_b64decode(cursor.encode())))
    except (ValueError, TypeError):
        raise QueryError("cursor", "not a cursor this daemon gave out") from None


def page(
    entries: dict[str, QueueEntry],
    order: list[str],
    filter: Filter,
    sort: str = "arrival",
    reverse: bool = False,
    limit: int = 100,
    cursor: str | None = None,
    offset: int = 0,
) -> tuple[list[QueueEntry], int, str | None]:
    """One page of matching entries, the number matching, and the cursor of the next page.

    `order` is every queue ID in arrival order (queue IDs sort by arrival): paging in
    arrival or age order walks it from the cursor and stops after one page. Other
    orders take one pass over the entries. `offset` skips that many matches first
    (a screen that jumps to row 50,000 uses it; scripts page with the cursor).
    """
    if sort not in SORTS:
        raise QueryError("sort", f"must be one of {', '.join(SORTS)}")
    now = time.time()
    after = _decode_cursor(cursor) if cursor else None
    total = len(entries) if filter.empty else sum(1 for e in entries.values() if filter.matches(e, now))
    if sort in ("arrival", "age"):
        backwards = reverse != (sort == "age")  # youngest first is latest arrival first
        if after is None and filter.empty:
            ids = reversed(order[: max(0, len(order) - offset)]) if backwards else iter(order[offset:])
            offset = 0
        elif after is None:
            ids = reversed(order) if backwards else iter(order)
        elif backwards:
            ids = reversed(order[: bisect.bisect_left(order, str(after[0]))])
        else:
            ids = iter(order[bisect.bisect_right(order, str(after[0])):])
        chosen = []
        for queue_id in ids:
            entry = entries.get(queue_id)
            if entry is not None and filter.matches(entry, now):
                if offset:
                    offset -= 1
                    continue
                chosen.append(entry)
                if len(chosen) > limit:
                    break
        next_cursor = _encode_cursor((chosen[limit - 1].id,)) if len(chosen) > limit else None
        return chosen[:limit], total, next_cursor
    key = _sort_key(sort)
    candidates = entries.values() if filter.empty else [e for e in entries.values() if filter.matches(e, now)]
    if after is not None:
        try:
            candidates = [e for e in candidates if (key(e) < after if reverse else key(e) > after)]
        except TypeError:
            raise QueryError("cursor", "does not belong to this sort order") from None
    pick = heapq.nlargest if reverse else heapq.nsmallest
    chosen = pick(offset + limit + 1, candidates, key=key)[offset:]
    next_cursor = _encode_cursor(key(chosen[limit - 1])) if len(chosen) > limit else None
    return chosen[:limit], total, next_cursor


def summary(entries: Iterable[QueueEntry], state: str | None = None) -> list[dict]:
    """Recipients still to deliver, per destination domain and age bucket, busiest first."""
    now = time.time()
    rows: dict[str, list[int]] = {}
    for entry in entries:
        if state and entry.state_at(now) != state:
            continue
        minutes = (now - entry.envelope.arrival) / 60
        column = next((i for i, bound in enumerate(BUCKET_MINUTES) if minutes <= bound), len(BUCKET_MINUTES))
        for recipient in entry.open_recipients():
            domain = addresses.domain_of(recipient.address)
            row = rows.setdefault(domain, [0] * (len(BUCKET_MINUTES) + 1))
            row[column] += 1
    ordered = sorted(rows.items(), key=lambda item: (-sum(item[1]), item[0]))
    return [{"destination": domain, "total": sum(row), "buckets": row} for domain, row in ordered]


def age_text(seconds: float | None) -> str:
    """A short age for listings: 45s, 12m, 3h, 2d."""
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def message_dict(entry: QueueEntry, now: float | None = None, history: bool = False) -> dict:
    """A message for the control API; with `history`, each recipient's runs of attempts too."""
    now = now or time.time()
    envelope = entry.envelope
    shown = {
        "id": entry.id,
        "state": entry.state_at(now),
        "arrival": envelope.arrival,
        "age": round(now - envelope.arrival, 3),
        "size": envelope.size,
        "sender": envelope.sender,
        "recipients": [
            {"address": r.address, "status": r.status, "attempts": r.attempts,
             "last_reply": r.last_reply, "dsn": r.dsn, "relay": r.relay}
            for r in entry.recipients
        ],
        "attempts": entry.attempts,
        "next_attempt": entry.next_attempt if entry.attempts and not entry.hold else None,
        "last_reply": entry.last_reply,
        "subject": envelope.subject,
        "message_id": envelope.message_id,
        "client": envelope.client,
    }
    if history:
        for recipient, answer in zip(entry.recipients, shown["recipients"]):
            answer["history"] = [dict(run) for run in recipient.history]
    return shown
