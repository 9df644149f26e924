"""A queued message as the scheduler and the control API see it: envelope and state, never the body."""

from __future__ import annotations

import collections
import time
from dataclasses import asdict, dataclass, field, fields

# Per-recipient statuses. A message leaves the queue once no recipient is pending or deferred.
PENDING = "pending"
DEFERRED = "deferred"
SENT = "sent"
BOUNCED = "bounced"
FINAL = (SENT, BOUNCED)
# Failed for good, but the sender's notice is not yet queued: the message stays until it is.
BOUNCING = "bouncing"

# A recipient's delivery history keeps this many runs of attempts, the latest ones (see Recipient.record).
HISTORY_RUNS = 20

# Message states shown to admins (Postfix's queue names).
ACTIVE = "active"
HOLD = "hold"


@dataclass(slots=True)
class Recipient:
    address: str
    status: str = PENDING
    attempts: int = 0
    last_reply: str = ""
    dsn: str = ""
    relay: str = ""
    # The next hop offered DSN and was given this recipient's NOTIFY/ORCPT: notices are its job now.
    dsn_passed: bool = False
    # Every attempt, as runs: attempts in a row with the same status, DSN status, reply and server are one
    # run {"first", "last", "count", "status", "dsn", "reply", "relay"}. A partner answering "451 try later"
    # for five days is one run, so the history stays small however long the mail waits.
    history: list[dict] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return self.status in FINAL

    def record(self, status: str, dsn: str, reply: str, relay: str, when: float) -> None:
        """One delivery attempt's result for this recipient."""
        self.status, self.dsn, self.last_reply, self.relay = status, dsn, reply, relay
        self.attempts += 1
        last = self.history[-1] if self.history else None
        if last and (last["status"], last["dsn"], last["reply"], last["relay"]) == (status, dsn, reply, relay):
            last["last"] = when
            last["count"] += 1
            return
        self.history.append({"first": when, "last": when, "count": 1, "status": status, "dsn": dsn,
                             "reply": reply, "relay": relay})
        del self.history[:-HISTORY_RUNS]


@dataclass(slots=True)
class Envelope:
    """What was said in the SMTP session; written once, with the message."""

    id: str
    sender: str
    recipients: list[str]
    arrival: float
    size: int
    client: str = ""
    helo: str = ""
    protocol: str = "ESMTP"
    subject: str = ""
    message_id: str = ""
    # ESMTP parameters kept to pass on (RFC 6152, 6531, 3461). body: "", "7BIT" or "8BITMIME";
    # ret: "", "FULL" or "HDRS"; envid: the decoded ENVID. notify and orcpt are keyed by recipient
    # address: notify is "NEVER" or a comma list of SUCCESS, FAILURE, DELAY (absent: the default,
    # FAILURE and DELAY); orcpt is the decoded "type;address".
    body: str = ""
    smtputf8: bool = False
    ret: str = ""
    envid: str = ""
    notify: dict[str, str] = field(default_factory=dict)
    orcpt: dict[str, str] = field(default_factory=dict)
    # RFC 8689: MAIL FROM's REQUIRETLS. Every hop must then be TLS with a verified certificate
    # (DANE or PKIX) that offers REQUIRETLS itself, or the message is returned, never downgraded.
    requiretls: bool = False
    # A TLS report this gateway sent (RFC 8460): its own deliveries are left out of the reports.
    tls_report: bool = False

    def to_dict(self) -> dict:
        """Every field, in order, lists and dicts copied: what asdict gives, for this envelope's flat fields
        (lists and dicts of strings), without asdict's recursive walk, a sixth of a queue commit's Python time."""
        data = {}
        for name in _ENVELOPE_FIELDS:
            value = getattr(self, name)
            data[name] = value.copy() if isinstance(value, (list, dict)) else value
        return data


_ENVELOPE_FIELDS = tuple(f.name for f in fields(Envelope))


@dataclass(slots=True)
class QueueEntry:
    envelope: Envelope
    recipients: list[Recipient]
    hold: bool = False
    attempts: int = 0
    next_attempt: float = 0.0
    last_reply: str = ""
    delay_warned: bool = False  # the sender has had its "delayed" notice (delay_warning_time)

    @classmethod
    def new(cls, envelope: Envelope) -> QueueEntry:
        return cls(envelope, [Recipient(address) for address in envelope.recipients])

    @property
    def id(self) -> str:
        return self.envelope.id

    @property
    def state(self) -> str:
        return self.state_at(time.time())

    def state_at(self, now: float) -> str:
        if self.hold:
            return HOLD
        if self.attempts and self.next_attempt > now:
            return DEFERRED
        return ACTIVE

    def open_recipients(self) -> list[Recipient]:
        return [r for r in self.recipients if not r.done]

    def state_dict(self) -> dict:
        return {
            "hold": self.hold,
            "attempts": self.attempts,
            "next_attempt": self.next_attempt,
            "last_reply": self.last_reply,
            "delay_warned": self.delay_warned,
            "recipients": [asdict(r) for r in self.recipients],
        }

    def apply_state(self, data: dict) -> None:
        self.hold = bool(data.get("hold", False))
        self.attempts = int(data.get("attempts", 0))
        self.next_attempt = float(data.get("next_attempt", 0.0))
        self.last_reply = str(data.get("last_reply", ""))
        self.delay_warned = bool(data.get("delay_warned", False))
        saved = {r["address"]: r for r in data.get("recipients", [])}
        for recipient in self.recipients:
            if recipient.address in saved:
                known = saved[recipient.address]
                recipient.status = known.get("status", PENDING)
                recipient.attempts = int(known.get("attempts", 0))
                recipient.last_reply = known.get("last_reply", "")
                recipient.dsn = known.get("dsn", "")
                recipient.relay = known.get("relay", "")
                recipient.dsn_passed = bool(known.get("dsn_passed", False))
                recipient.history = [run for run in known.get("history", []) if isinstance(run, dict)]


@dataclass
class Counters:
    received: int = 0
    delivered: int = 0
    deferred: int = 0
    bounced: int = 0
    rejected: int = 0
    started: float = field(default_factory=time.time)
    # RCPTs refused with 451 per paused_domains entry (the migration hold), since the daemon started.
    turned_away: collections.Counter = field(default_factory=collections.Counter)
