"""The dashboard's warnings: the Prometheus alert rules (docs/monitoring/alerts.yml), read from what the
console knows.

The console has the relay's Status.Get (or Watch) answer and a short history of its own readings of it;
`warnings` turns them into a list of Warning(severity, text, fix), the critical ones first. The rules,
their thresholds and their severities are those of alerts.yml, one for one, so that the dashboard and an
alert never disagree on what is wrong: change a threshold here, change it there (each names the other).

What differs, and why:
- An alert fires only once its condition has held for its `for:` duration; the console shows the
  condition as it stands, as it shows the queue.
- Prometheus keeps weeks of samples; the console keeps its own, from when it started (History). A rule
  that looks back (the queue growing, the deferred share, the disk's trend) waits until the console has
  seen enough, except that counters which began at zero when the relay started need no earlier sample.
- PosternNextHopDeferring counts outcomes per next hop, which only the endpoint keeps: the deferred
  share's warning names the next hop that failed last instead.
- PosternDown is not among them: when the relay does not answer, the Relay panel and the top line
  say so in red, and why.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

from relay.printable import printable
from relay.queue.query import age_text

CRITICAL = "critical"
WARNING = "warning"

# The thresholds of docs/monitoring/alerts.yml (tests/console/test_warnings.py reads the file and checks them).
QUEUE_GROWING_MESSAGES = 100  # PosternQueueGrowing: more than this many messages wait (hold not counted)
QUEUE_GROWING_WINDOW = 30 * 60  # ... and their number has been rising over this many seconds
OLD_MAIL_AGE = 4 * 3600  # PosternOldMail: the oldest message has waited longer than this
DEFERRED_SHARE = 0.2  # PosternDeferredShare: more than this share of the recipients tried were deferred
DEFERRED_MINIMUM = 10  # ... and more than this many of them
DEFERRED_WINDOW = 15 * 60  # ... over this many seconds
CERTIFICATE_WARNING = 14 * 86400  # PosternCertificateExpiresSoon: a certificate expires within this (warning)
CERTIFICATE_CRITICAL = 3 * 86400  # ... or within this (critical)
DISK_WARNING = 0.10  # PosternQueueDiskLow: under this share free under the queue (warning)
DISK_CRITICAL = 0.05  # ... under this share free (critical)
FILES_CRITICAL = 10000  # ... or under this many files free (critical)
DISK_FULL_WITHIN = 4 * 3600  # ... or full within this many seconds
DISK_TREND_WINDOW = 6 * 3600  # ... at the rate of this many seconds

# The console's own: its readings are kept one a minute (as the alert's [30m:1m] subquery), as long as the
# longest rule looks back, and a trend is drawn only from half an hour of them at least.
SAMPLE_INTERVAL = 60.0
TREND_MINIMUM = 30 * 60


@dataclass(frozen=True)
class Warning:
    """Something the user should look at: what is wrong (`text`) and where to start (`fix`)."""

    severity: str  # CRITICAL or WARNING, as the alert rule's label
    text: str
    fix: str


@dataclass(frozen=True)
class Sample:
    """One reading of the relay's status, at `at` (Unix time)."""

    at: float
    queued: int  # messages waiting, hold not counted
    deferred: int  # counters since the relay started
    delivered: int
    disk_free: int | None


class History:
    """The readings the rules look back on: one a minute at most, for as long as the longest rule needs.
    A relay that restarted began its counters again: what was read before is forgotten."""

    def __init__(self, interval: float = SAMPLE_INTERVAL, keep: float = DISK_TREND_WINDOW):
        self.interval = interval
        self.keep = keep
        self.samples: collections.deque[Sample] = collections.deque()
        self.started: float | None = None

    def add(self, status: dict, now: float) -> None:
        queue, counters = status["queue"], status["counters"]
        disk = status.get("disk")
        sample = Sample(now, queue["total"] - queue["hold"], counters["deferred"], counters["delivered"],
                        disk["free"] if disk else None)
        last = self.samples[-1] if self.samples else None
        if last and (status["started"] != self.started or sample.deferred < last.deferred
                     or sample.delivered < last.delivered):
            self.samples.clear()
        self.started = status["started"]
        if self.samples and now - self.samples[-1].at < self.interval:
            return
        self.samples.append(sample)
        while now - self.samples[0].at > self.keep:
            self.samples.popleft()


def warnings(status: dict | None, history: History | None = None, now: float | None = None) -> list[Warning]:
    """What the alert rules would say about this relay now, the critical warnings first; [] when all is
    well. `status` is Status.Get's answer (None when the relay does not answer),
    `history` the console's earlier readings, `now` the relay's clock (its start plus its uptime)."""
    if status is None:
        return []  # PosternDown's: the dashboard's Relay panel and the top line say so, in red, and why
    if now is None:
        now = status["started"] + status["uptime"]
    samples = list(history.samples) if history else []
    found = [*_queue_growing(status, samples, now), *_old_mail(status), *_deferred_share(status, samples, now),
             *_certificates(status, now), *_disk(status, samples, now), *_corrupt(status)]
    return sorted(found, key=lambda warning: warning.severity != CRITICAL)


def _queue_growing(status: dict, samples: list[Sample], now: float) -> list[Warning]:
    """PosternQueueGrowing: over 100 messages and rising (a positive slope) over 30 minutes."""
    queue = status["queue"]
    queued = queue["total"] - queue["hold"]
    window = [(s.at, s.queued) for s in samples if now - s.at <= QUEUE_GROWING_WINDOW] + [(now, queued)]
    if queued <= QUEUE_GROWING_MESSAGES or not _covers(samples, now, QUEUE_GROWING_WINDOW):
        return []
    if _slope(window) <= 0:
        return []
    grown, span = queued - window[0][1], _span(now - window[0][0])
    text = (f"Queue grew by {grown:,} in {span} (now {queued:,})" if grown > 0
            else f"Queue rising over {span} (now {queued:,})")
    return [Warning(WARNING, text,
                    "Queue (F3): by domain (g) shows where it goes; the deferred messages' last replies say why")]


def _old_mail(status: dict) -> list[Warning]:
    """PosternOldMail: the oldest message has waited over 4 hours."""
    age = status.get("oldest_age")
    if age is None or age <= OLD_MAIL_AGE:
        return []
    return [Warning(WARNING, f"The oldest message has waited {_duration(age)}",
                    "Queue (F3): its last reply says why; it is returned to its sender after 5 days")]


def _deferred_share(status: dict, samples: list[Sample], now: float) -> list[Warning]:
    """PosternDeferredShare: over a fifth of the recipients tried in 15 minutes deferred, and over 10 of them."""
    counters = status["counters"]
    if status["uptime"] <= DEFERRED_WINDOW:
        base_deferred, base_delivered, since = 0, 0, status["uptime"]  # the counters began at zero
    else:
        earlier = [s for s in samples if s.at <= now - DEFERRED_WINDOW + SAMPLE_INTERVAL / 2]
        if not earlier:
            return []
        base = earlier[-1]
        base_deferred, base_delivered, since = base.deferred, base.delivered, now - base.at
    deferred = counters["deferred"] - base_deferred
    delivered = counters["delivered"] - base_delivered
    if deferred <= DEFERRED_MINIMUM or deferred / (deferred + delivered) <= DEFERRED_SHARE:
        return []
    share = round(100 * deferred / (deferred + delivered))
    errors = sorted(status.get("last_errors") or [], key=lambda error: error["time"])
    fix = (f"Last deferred by {printable(errors[-1]['destination'])}: see its reply in the Relay panel"
           if errors else "Queue (F3): the deferred messages' last replies say which next hop, and why")
    return [Warning(WARNING, f"{share}% of delivery attempts deferred in {_span(since)} "
                             f"({deferred:,} of {deferred + delivered:,})", fix)]


def _certificates(status: dict, now: float) -> list[Warning]:
    """PosternCertificateExpiresSoon: within 14 days (warning), 3 days (critical)."""
    found = []
    for certificate in status.get("certificates") or []:
        left = certificate["expires"] - now
        if left >= CERTIFICATE_WARNING:
            continue
        severity = CRITICAL if left < CERTIFICATE_CRITICAL else WARNING
        when = f"expired {_duration(-left)} ago" if left <= 0 else f"expires in {_duration(left)}"
        found.append(Warning(severity, f"Certificate {certificate['certificate']} {when}",
                             f"Renew {printable(certificate['file'])} and reload the relay (Certificates, F9)"))
    return found


def _disk(status: dict, samples: list[Sample], now: float) -> list[Warning]:
    """PosternQueueDiskLow: under 10% free (warning); under 5%, under 10,000 files, or full within 4 hours
    at the last 6 hours' rate (critical)."""
    disk = status.get("disk")
    if not disk or not disk["size"]:
        return []
    fix = "Free space under the queue, or find what fills it (Queue, F3)"
    share = disk["free"] / disk["size"]
    free = f"{_size(disk['free'])} free of {_size(disk['size'])}"
    if share < DISK_CRITICAL:
        return [Warning(CRITICAL, f"Queue disk under {DISK_CRITICAL:.0%} free ({free}): mail will be refused",
                        fix)]
    if disk["files_free"] < FILES_CRITICAL:
        return [Warning(CRITICAL, f"Queue disk has {disk['files_free']:,} files free: mail will be refused", fix)]
    points = [(s.at, s.disk_free) for s in samples if s.disk_free is not None and now - s.at <= DISK_TREND_WINDOW]
    if points and now - points[0][0] >= TREND_MINIMUM:
        points.append((now, disk["free"]))
        slope = _slope(points)
        if disk["free"] + slope * DISK_FULL_WITHIN < 0:
            return [Warning(CRITICAL, f"Queue disk full in about {_duration(disk['free'] / -slope)} "
                                      f"at this rate ({free})", fix)]
    if share < DISK_WARNING:
        return [Warning(WARNING, f"Queue disk under {DISK_WARNING:.0%} free ({free})", fix)]
    return []


def _corrupt(status: dict) -> list[Warning]:
    """PosternCorruptQueueFiles: damaged queue files were set aside."""
    count = status["queue"].get("corrupt", 0)
    if not count:
        return []
    return [Warning(WARNING, f"{count:,} damaged queue file{'s' if count > 1 else ''} set aside",
                    "They are in the queue's corrupt directory: see docs/queue.md")]


# --- helpers ------------------------------------------------------------------------------------


def _covers(samples: list[Sample], now: float, seconds: float) -> bool:
    """Whether the readings go back `seconds` (give or take half a reading's interval)."""
    return bool(samples) and now - samples[0].at >= seconds - SAMPLE_INTERVAL / 2


def _slope(points: list[tuple[float, float]]) -> float:
    """The least-squares slope per second, as Prometheus's deriv() and predict_linear() draw it."""
    if len(points) < 2:
        return 0.0
    mean_t = sum(t for t, _ in points) / len(points)
    mean_v = sum(v for _, v in points) / len(points)
    spread = sum((t - mean_t) ** 2 for t, _ in points)
    if not spread:
        return 0.0
    return sum((t - mean_t) * (v - mean_v) for t, v in points) / spread


def _duration(seconds: float) -> str:
    """4h 10m, 5d 3h, 12m: two units, for a warning's words."""
    seconds = max(0, int(seconds))
    days, hours, minutes = seconds // 86400, seconds % 86400 // 3600, seconds % 3600 // 60
    if days:
        return f"{days}d {hours}h" if hours else f"{days}d"
    if hours:
        return f"{hours}h {minutes}m" if minutes else f"{hours}h"
    return f"{minutes}m" if minutes else age_text(seconds)


def _span(seconds: float) -> str:
    """How far back a rule looked: 15 min, or 40s when the relay started since."""
    return f"{int(seconds)}s" if seconds < 60 else f"{round(seconds / 60)} min"


def _size(size: int) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} bytes"
