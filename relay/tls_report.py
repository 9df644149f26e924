"""SMTP TLS reporting (RFC 8460): what each delivery connection's TLS achieved, per policy
domain, and the daily aggregate report to the domains that ask for one.

Delivery hands every connection's outcome to `TlsStats.record` as a `Session`: the policy
that applied (DANE TLSA, MTA-STS, or none), and either the security the session went
ahead with or the RFC 8460 result type of its failure (an MTA-STS policy in `testing`
mode can have both: the mail went, the policy failed). The counts are kept per UTC hour,
for 48 hours, and written to disk once a minute, so a restart loses at most a minute.

They serve two readers:

- the console and the control API, through `summary`: per domain, how many sessions had
  DANE, MTA-STS, a verified or an unverified certificate, plain text, or failed, and why;
- the daily report: after each UTC midnight `Reporter` looks up `_smtp._tls.<domain>` for
  every domain it delivered to the day before, and sends each that publishes a TLSRPT
  record its `report` (RFC 8460 4.4 JSON, gzip'ed), by mail (5.3) and/or by HTTPS POST
  (5.2). Reports by mail go with a null envelope sender, so one that cannot be delivered
  never causes a bounce; the relay does not count their own deliveries.

Memory is bounded however hostile the traffic: at most `limit_domains` domains an hour,
a few policies a domain and a few dozen distinct failures a policy; text from the
network (policy lines, failure details) is cut to length.
"""

from __future__ import annotations

import asyncio
import calendar
import datetime
import email.policy
import email.utils
import gzip
import hashlib
import ipaddress
import json
import logging
import random
import re
import ssl
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path

import dns.asyncresolver
import dns.exception
import dns.name
import dns.resolver
import h11

from .files import atomic_write
from .routing import RouteError, host_addresses
from .tls import certificate_matches, certificate_names, sni_name

log = logging.getLogger("postern/tlsrpt")

RESULT_TYPES = ("starttls-not-supported", "certificate-host-mismatch", "certificate-expired",
                "certificate-not-trusted", "validation-failure", "tlsa-invalid", "dnssec-invalid",
                "dane-required", "sts-policy-fetch-error", "sts-policy-invalid", "sts-webpki-invalid")
SECURITY = ("dane", "mta-sts", "verified", "unverified", "plain")  # what a successful session achieved
POLICY_TYPES = ("tlsa", "sts", "no-policy-found")

KEEP_HOURS = 48
STATS_FILE = "tls-stats.json"
SENT_FILE = "tls-reports-sent.json"

# Bounds on what one hour keeps, whatever the traffic.
POLICIES_PER_DOMAIN = 8
FAILURES_PER_POLICY = 32
MX_HOSTS_PER_POLICY = 16
POLICY_LINES = 32
TEXT_LIMIT = 255  # a policy line, a detail sentence, a host name

RUA_LIMIT = 4  # report destinations honoured per domain: a TXT record cannot turn one report into many
HTTPS_TIMEOUT = 60.0
MAX_TRIES = 3  # a domain whose report could not be sent is tried again, once an hour, this often


@dataclass(frozen=True)
class Session:
    """One delivery connection's TLS outcome."""

    domain: str                   # policy domain: the recipient domain (MX delivery) or the next hop's host
    policy_type: str              # "tlsa" | "sts" | "no-policy-found"
    policy_strings: tuple[str, ...] = ()   # TLSA records as text, or the MTA-STS policy's lines
    mx_host: str = ""
    mx_ip: str = ""
    sending_ip: str = ""
    security: str = ""            # one of SECURITY when the session went ahead
    failure: str = ""             # one of RESULT_TYPES when it did not (or when an MTA-STS testing policy failed)
    detail: str = ""              # additional-information: a sentence for admins

    def __post_init__(self):
        if self.policy_type not in POLICY_TYPES:
            raise ValueError(f"policy_type {self.policy_type!r} is not one of {POLICY_TYPES}")
        if self.security and self.security not in SECURITY:
            raise ValueError(f"security {self.security!r} is not one of {SECURITY}")
        if self.failure and self.failure not in RESULT_TYPES:
            raise ValueError(f"failure {self.failure!r} is not an RFC 8460 result type")
        if not self.security and not self.failure:
            raise ValueError("a session either went ahead (security) or failed (failure)")


def _text(value: str) -> str:
    """Network text made safe to keep and to show: printable, one line, bounded."""
    return "".join(c if c.isprintable() else " " for c in str(value)[:TEXT_LIMIT])


def _domain_key(domain: str) -> str:
    return _text(domain.strip().lower().rstrip("."))


# ---------------------------------------------------------------------------------------------
# Counting

@dataclass
class _Policy:
    """One applied policy's sessions within an hour."""

    successful: int = 0
    failed: int = 0
    mx_hosts: dict[str, None] = field(default_factory=dict)  # an ordered set
    # (result_type, sending_ip, mx_host, mx_ip, detail) -> sessions
    failures: dict[tuple[str, str, str, str, str], int] = field(default_factory=dict)


@dataclass
class _Domain:
    """One policy domain's sessions within an hour."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys((*SECURITY, "failed"), 0))
    policy_type: str = "no-policy-found"  # the latest session's
    policies: dict[tuple[str, tuple[str, ...]], _Policy] = field(default_factory=dict)
    over: int = 0  # sessions counted but whose policy or failure was beyond the bounds


class TlsStats:
    """Per-hour counts of delivery sessions' TLS outcomes, per policy domain; 48 hours kept."""

    def __init__(self, directory: Path, limit_domains: int = 10000):
        self.directory = Path(directory)
        self.path = self.directory / STATS_FILE
        self.limit_domains = limit_domains
        self._hours: dict[int, dict[str, _Domain]] = {}
        self._dropped: dict[int, int] = {}  # sessions of domains beyond the limit, per hour
        self._dirty = False
        self.load()

    # -- recording

    def record(self, session: Session, now: float | None = None) -> None:
        """Count one session into the current UTC hour: constant time, no I/O."""
        hour = int((time.time() if now is None else now) // 3600)
        bucket = self._hours.get(hour)
        if bucket is None:
            bucket = self._hours[hour] = {}
            self._prune(hour)
        self._dirty = True
        key = _domain_key(session.domain)
        if not key:
            return
        domain = bucket.get(key)
        if domain is None:
            if len(bucket) >= self.limit_domains:
                dropped = self._dropped.get(hour, 0)
                if not dropped:
                    log.warning("TLS statistics: more than %d domains this hour; further domains are not "
                                "counted until the next hour", self.limit_domains)
                self._dropped[hour] = dropped + 1
                return
            domain = bucket[key] = _Domain()
        domain.counts[session.security or "failed"] += 1
        domain.policy_type = session.policy_type
        policy_key = (session.policy_type, tuple(_text(line) for line in session.policy_strings[:POLICY_LINES]))
        policy = domain.policies.get(policy_key)
        if policy is None:
            if len(domain.policies) >= POLICIES_PER_DOMAIN:
                domain.over += 1
                return
            policy = domain.policies[policy_key] = _Policy()
        if session.mx_host and len(policy.mx_hosts) < MX_HOSTS_PER_POLICY:
            policy.mx_hosts[_domain_key(session.mx_host)] = None
        if not session.failure:
            policy.successful += 1
            return
        policy.failed += 1
        failure_key = (session.failure, _text(session.sending_ip), _domain_key(session.mx_host),
                       _text(session.mx_ip), _text(session.detail))
        if failure_key in policy.failures:
            policy.failures[failure_key] += 1
        elif len(policy.failures) < FAILURES_PER_POLICY:
            policy.failures[failure_key] = 1
        else:
            domain.over += 1

    def _prune(self, hour: int) -> None:
        """Drop the hours KEEP_HOURS or more before `hour`, and as far after it (counted while the clock
        was wrong: they would otherwise stay for as long)."""
        for old in [h for h in self._hours if abs(h - hour) >= KEEP_HOURS]:
            del self._hours[old]
            self._dropped.pop(old, None)
            self._dirty = True

    # -- reading

    def summary(self, since: float, now: float | None = None) -> list[dict]:
        """Per domain since `since` (epoch seconds), for the console and the control API; busiest first.

        "failed" counts the sessions that did not go ahead; "failures" lists why sessions failed,
        including those of MTA-STS testing policies whose mail still went."""
        now = time.time() if now is None else now
        first, last = int(since // 3600), int(now // 3600)
        totals: dict[str, dict] = {}
        failures: dict[str, dict[tuple[str, str, str], int]] = {}
        for hour in sorted(h for h in self._hours if first <= h <= last):
            for name, domain in self._hours[hour].items():
                row = totals.setdefault(name, {"domain": name, **{s.replace("-", "_"): 0 for s in SECURITY},
                                               "failed": 0, "failures": [], "policy_type": ""})
                for kind, count in domain.counts.items():
                    row[kind.replace("-", "_")] += count
                row["policy_type"] = domain.policy_type
                seen = failures.setdefault(name, {})
                for policy in domain.policies.values():
                    for (result_type, _ip, mx_host, _mx_ip, detail), count in policy.failures.items():
                        key = (result_type, detail, mx_host)
                        seen[key] = seen.get(key, 0) + count
        for name, row in totals.items():
            row["failures"] = [{"result_type": r, "detail": d, "mx_host": m, "count": c}
                               for (r, d, m), c in sorted(failures[name].items(), key=lambda i: (-i[1], i[0]))]
        return sorted(totals.values(), key=lambda row: (-_traffic(row), row["domain"]))

    def day(self, date: datetime.date) -> dict[str, dict]:
        """What the reports for that UTC day need: per domain, its policies with their counts.

        {domain: {"policies": [{"policy_type", "policy_strings", "mx_hosts", "successful",
        "failed", "failures": [{"result_type", "sending_ip", "mx_host", "mx_ip", "detail",
        "count"}]}]}}"""
        first = calendar.timegm(date.timetuple()) // 3600
        merged: dict[str, dict[tuple[str, tuple[str, ...]], _Policy]] = {}
        for hour in range(first, first + 24):
            for name, domain in self._hours.get(hour, {}).items():
                policies = merged.setdefault(name, {})
                for key, policy in domain.policies.items():
                    into = policies.setdefault(key, _Policy())
                    into.successful += policy.successful
                    into.failed += policy.failed
                    for host in policy.mx_hosts:
                        if len(into.mx_hosts) < MX_HOSTS_PER_POLICY:
                            into.mx_hosts[host] = None
                    for failure, count in policy.failures.items():
                        into.failures[failure] = into.failures.get(failure, 0) + count
        return {name: {"policies": [
            {"policy_type": kind, "policy_strings": list(strings), "mx_hosts": list(policy.mx_hosts),
             "successful": policy.successful, "failed": policy.failed,
             "failures": [{"result_type": r, "sending_ip": ip, "mx_host": mx, "mx_ip": mx_ip,
                           "detail": detail, "count": count}
                          for (r, ip, mx, mx_ip, detail), count in sorted(policy.failures.items())]}
            for (kind, strings), policy in policies.items()]}
            for name, policies in sorted(merged.items())}

    # -- persistence

    def flush(self, now: float | None = None) -> None:
        """Write the hours kept to disk (atomically) when anything changed since the last flush."""
        self._prune(int((time.time() if now is None else now) // 3600))
        if not self._dirty:
            return
        hours = {}
        for hour, bucket in self._hours.items():
            hours[str(hour)] = {"dropped": self._dropped.get(hour, 0), "domains": {
                name: {"counts": domain.counts, "policy_type": domain.policy_type, "over": domain.over,
                       "policies": [{"type": kind, "strings": list(strings), "mx_hosts": list(policy.mx_hosts),
                                     "successful": policy.successful, "failed": policy.failed,
                                     "failures": [[*key, count] for key, count in policy.failures.items()]}
                                    for (kind, strings), policy in domain.policies.items()]}
                for name, domain in bucket.items()}}
        atomic_write(self.path, json.dumps({"version": 1, "hours": hours}, separators=(",", ":")), mode=0o600)
        self._dirty = False

    def load(self) -> None:
        """Read what the last flush wrote; a file that cannot be read is set aside with a warning."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        except OSError as error:
            log.warning("TLS statistics: cannot read %s: %s; starting with none", self.path, error.strerror)
            return
        try:
            hours, dropped = _parse_stats(json.loads(data))
        except (ValueError, TypeError, KeyError, AttributeError) as error:
            aside = self.path.with_name(f"{STATS_FILE}.corrupt-{int(time.time())}")
            log.warning("TLS statistics: %s is not readable (%s); set aside as %s, starting with none",
                        self.path, error, aside.name)
            try:
                self.path.rename(aside)
            except OSError as rename_error:
                log.warning("TLS statistics: cannot set %s aside: %s", self.path, rename_error.strerror)
            return
        self._hours, self._dropped = hours, dropped
        self._prune(int(time.time() // 3600))


def _traffic(row: dict) -> int:
    return sum(row[kind] for kind in ("dane", "mta_sts", "verified", "unverified", "plain", "failed"))


def _count(value) -> int:
    if type(value) is not int or value < 0:
        raise ValueError(f"{value!r} is not a count")
    return value


def _string(value) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a string")
    return _text(value)


def _parse_stats(data) -> tuple[dict[int, dict[str, _Domain]], dict[int, int]]:
    """The saved hours, checked field by field: anything unexpected raises."""
    if data.get("version") != 1:
        raise ValueError(f"unknown version {data.get('version')!r}")
    hours, dropped = {}, {}
    for hour_text, bucket in data["hours"].items():
        hour = int(hour_text)
        dropped[hour] = _count(bucket["dropped"])
        domains = hours[hour] = {}
        for name, saved in bucket["domains"].items():
            domain = domains[_string(name)] = _Domain()
            for kind, count in saved["counts"].items():
                if kind not in domain.counts:
                    raise ValueError(f"unknown count {kind!r}")
                domain.counts[kind] = _count(count)
            if saved["policy_type"] not in POLICY_TYPES:
                raise ValueError(f"unknown policy type {saved['policy_type']!r}")
            domain.policy_type = saved["policy_type"]
            domain.over = _count(saved.get("over", 0))
            for policy_saved in saved["policies"]:
                if policy_saved["type"] not in POLICY_TYPES:
                    raise ValueError(f"unknown policy type {policy_saved['type']!r}")
                policy = _Policy(_count(policy_saved["successful"]), _count(policy_saved["failed"]),
                                 dict.fromkeys(_string(h) for h in policy_saved["mx_hosts"]))
                for *key, count in policy_saved["failures"]:
                    if len(key) != 5 or key[0] not in RESULT_TYPES:
                        raise ValueError(f"bad failure {key!r}")
                    policy.failures[tuple(_string(part) for part in key)] = _count(count)
                strings = tuple(_string(line) for line in policy_saved["strings"])
                domain.policies[(policy_saved["type"], strings)] = policy
    return hours, dropped


# ---------------------------------------------------------------------------------------------
# The report

def _day_range(date: datetime.date) -> tuple[int, int]:
    """The first and the last second of the UTC day, as epoch seconds."""
    start = calendar.timegm(date.timetuple())
    return start, start + 86399


def _zulu(seconds: int) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _mx_patterns(strings: list[str]) -> list[str]:
    """The `mx:` lines of an MTA-STS policy (RFC 8461 3.2)."""
    found = []
    for line in strings:
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() == "mx" and value.strip():
            found.append(value.strip())
    return found


def report(stats_day: dict, domain: str, *, organization: str, contact: str, report_id: str,
           date: datetime.date) -> dict:
    """RFC 8460 4.4: the aggregate report for one policy domain and one UTC day."""
    start, end = _day_range(date)
    policies = []
    for entry in stats_day.get(domain, {}).get("policies", []):
        policy = {"policy-type": entry["policy_type"]}
        if entry["policy_strings"]:
            policy["policy-string"] = list(entry["policy_strings"])
        policy["policy-domain"] = domain
        mx_hosts = _mx_patterns(entry["policy_strings"]) if entry["policy_type"] == "sts" else []
        mx_hosts = mx_hosts or list(entry["mx_hosts"])
        if mx_hosts:
            policy["mx-host"] = mx_hosts
        details = []
        for failure in entry["failures"]:
            detail = {"result-type": failure["result_type"]}
            if failure["sending_ip"]:
                detail["sending-mta-ip"] = failure["sending_ip"]
            if failure["mx_host"]:
                detail["receiving-mx-hostname"] = failure["mx_host"]
            if failure["mx_ip"]:
                detail["receiving-ip"] = failure["mx_ip"]
            detail["failed-session-count"] = failure["count"]
            if failure["detail"]:
                detail["additional-information"] = failure["detail"]
            details.append(detail)
        item = {"policy": policy, "summary": {"total-successful-session-count": entry["successful"],
                                              "total-failure-session-count": entry["failed"]}}
        if details:
            item["failure-details"] = details
        policies.append(item)
    return {
        "organization-name": organization,
        "date-range": {"start-datetime": _zulu(start), "end-datetime": _zulu(end)},
        "contact-info": contact,
        "report-id": report_id,
        "policies": policies,
    }


def report_json(report_: dict) -> bytes:
    return json.dumps(report_, indent=1).encode()


def report_gzip(report_: dict) -> bytes:
    # mtime=0: the same report compresses to the same bytes
    return gzip.compress(report_json(report_), mtime=0)


def report_filename(report_: dict, *, submitter: str, domain: str) -> str:
    """RFC 8460 5.3: <submitter>!<policy domain>!<begin>!<end>!<unique id>.json.gz (epoch seconds)."""
    begin = _epoch(report_["date-range"]["start-datetime"])
    end = _epoch(report_["date-range"]["end-datetime"])
    unique = re.sub(r"[^A-Za-z0-9._@+-]", "_", report_["report-id"])
    return f"{submitter}!{domain}!{begin}!{end}!{unique}.json.gz"


def _epoch(zulu: str) -> int:
    return calendar.timegm(time.strptime(zulu, "%Y-%m-%dT%H:%M:%SZ"))


def report_message(report: dict, *, submitter: str, domain: str, rua_address: str, sender: str) -> bytes:
    """RFC 8460 5.3: the report as a multipart/report mail (CRLF line ends), ready to queue."""
    report_id = report["report-id"]
    message = EmailMessage(policy=email.policy.SMTP)
    message["From"] = sender
    message["To"] = rua_address
    message["Date"] = email.utils.formatdate(usegmt=True)
    message["Message-ID"] = email.utils.make_msgid(domain=submitter)
    message["Subject"] = f"Report Domain: {domain} Submitter: {submitter} Report-ID: <{report_id}>"
    message["TLS-Report-Domain"] = domain
    message["TLS-Report-Submitter"] = submitter
    # RFC 8689 5: the report must reach the domain even when its TLS policy is what is failing.
    message["TLS-Required"] = "No"
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(
        f"This is an aggregate TLS report (RFC 8460) from {submitter} for {domain},\n"
        f"covering {report['date-range']['start-datetime']} to {report['date-range']['end-datetime']}.\n")
    message.add_attachment(report_gzip(report), maintype="application", subtype="tlsrpt+gzip",
                           filename=report_filename(report, submitter=submitter, domain=domain))
    message.set_type("multipart/report")
    message.set_param("report-type", "tlsrpt")
    return message.as_bytes()


# ---------------------------------------------------------------------------------------------
# The record and the delivery of reports

_RUA_URI = re.compile(r"^(mailto:[^,;\s]+|https://[^,;\s]+)$", re.IGNORECASE)


def parse_rua(txt: str) -> list[str]:
    """The report URIs of a TLSRPT record (RFC 8460 3): "v=TLSRPTv1; rua=mailto:a@x,https://r.x/p".

    Anything that is not such a record, or names any URI other than mailto: or https:,
    gives []; unknown fields are ignored, as the RFC asks."""
    fields = [part.strip(" \t") for part in txt.split(";")]
    if not fields or fields[0] != "v=TLSRPTv1":
        return []
    if fields[-1] == "":
        fields.pop()
    rua = None
    for part in fields[1:]:
        key, sep, value = part.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z0-9_.-]+", key):
            return []
        if key == "rua":
            if rua is not None:
                return []
            rua = value
    if not rua:
        return []
    uris = [uri.strip(" \t") for uri in rua.split(",")]
    if not all(_RUA_URI.match(uri) for uri in uris):
        return []
    return uris


def _mailto_address(uri: str) -> str | None:
    """The address of a mailto: URI (RFC 6068), without its ?query; None when it is not one address."""
    address = urllib.parse.unquote(uri[len("mailto:"):].partition("?")[0])
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain or any(c in address for c in "<>,;\\\" \t\r\n") \
            or not address.isprintable() or len(address) > 254:
        return None
    return address


@dataclass
class _DayState:
    """What has been done for one day's reports, per domain."""

    done: set[str] = field(default_factory=set)          # domains finished with
    sent: set[str] = field(default_factory=set)          # "domain uri" delivered
    tries: dict[str, int] = field(default_factory=dict)  # failed attempts per domain


class _TemporaryError(Exception):
    """Worth trying again later: a DNS timeout, an HTTPS server down, a full queue."""


class Reporter:
    """Sends each day's reports once, to the domains that publish a TLSRPT record."""

    def __init__(self, stats: TlsStats, *, resolver: Callable[[], dns.asyncresolver.Resolver],
                 hostname: Callable[[], str], send_mail: Callable[[str, list[str], bytes], Awaitable[None]],
                 context: Callable[[], ssl.SSLContext], directory: Path,
                 contact: Callable[[], str] | None = None, enabled: Callable[[], bool] = lambda: True):
        self.stats = stats
        self.enabled = enabled  # mta.tls_reports: off, the statistics are kept (the console shows them), no report goes
        self.resolver, self.hostname, self.send_mail, self.context = resolver, hostname, send_mail, context
        self.contact = contact or (lambda: f"postmaster@{self.hostname()}")
        self.directory = Path(directory)
        self.path = self.directory / SENT_FILE
        self._days = self._load()

    # -- what was sent

    def _load(self) -> dict[str, _DayState]:
        try:
            saved = json.loads(self.path.read_bytes())
            return {day: _DayState(set(state["done"]), set(state["sent"]), dict(state["tries"]))
                    for day, state in saved.items()}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as error:
            log.warning("TLS reports: cannot read %s (%s); reports of the last days may be sent again",
                        self.path, error)
            return {}

    def _save(self) -> None:
        keep = sorted(self._days)[-7:]
        self._days = {day: self._days[day] for day in keep}
        atomic_write(self.path, json.dumps({
            day: {"done": sorted(s.done), "sent": sorted(s.sent), "tries": s.tries}
            for day, s in self._days.items()}), mode=0o600)

    def finished(self, date: datetime.date) -> bool:
        """Every domain of that day has been dealt with (sent, or not asking, or given up on)."""
        state = self._days.get(date.isoformat())
        return state is not None and all(domain in state.done for domain in self.stats.day(date))

    # -- sending

    async def send_day(self, date: datetime.date) -> list[str]:
        """Send that day's report to every domain that asks for one and has not had it yet.

        Returns one line per report sent or not sent, for the log."""
        state = self._days.setdefault(date.isoformat(), _DayState())
        stats_day = self.stats.day(date)
        hostname = self.hostname()
        lines = []
        for domain in stats_day:
            if domain in state.done:
                continue
            sent, temporary = await self._send_domain(date, stats_day, domain, hostname, state)
            lines += sent
            given_up = False
            if temporary:
                state.tries[domain] = state.tries.get(domain, 0) + 1
                given_up = state.tries[domain] >= MAX_TRIES
                lines.append(f"TLS report for {domain} of {date}: {temporary}; "
                             f"{'given up' if given_up else 'will try again'}")
            if not temporary or given_up:
                state.done.add(domain)
            if sent:  # at once, so that a crash now cannot send it twice; the rest at the end
                self._save()
        self._save()
        return lines

    async def _send_domain(self, date: datetime.date, stats_day: dict, domain: str, hostname: str,
                           state: _DayState) -> tuple[list[str], str]:
        """Send one domain's report to each of its destinations not yet served.

        Returns the log lines and, when some destination is worth trying again, why."""
        try:
            uris = await self._lookup(domain)
        except _TemporaryError as error:
            return [], str(error)
        if not uris:
            return [], ""
        digest = hashlib.sha256(f"{date}/{domain}".encode()).hexdigest()[:16]
        the_report = report(stats_day, domain, organization=hostname, contact=self.contact(),
                            report_id=f"{date:%Y%m%d}.{digest}@{hostname}", date=date)
        lines, temporary = [], []
        for uri in uris[:RUA_LIMIT]:
            if f"{domain} {uri}" in state.sent:
                continue
            try:
                lines.append(await self._send_one(date, the_report, domain, hostname, uri))
                state.sent.add(f"{domain} {uri}")
            except _TemporaryError as error:
                temporary.append(f"not sent to {uri}: {error}")
            except Exception as error:  # a destination refused for good: the others still get theirs
                lines.append(f"TLS report for {domain} of {date} not sent to {uri}: {error}")
                state.sent.add(f"{domain} {uri}")
        return lines, "; ".join(temporary)

    async def _send_one(self, date: datetime.date, the_report: dict, domain: str, hostname: str, uri: str) -> str:
        if uri.lower().startswith("https:"):
            status = await self._post(uri, report_gzip(the_report))
            return f"TLS report for {domain} of {date} posted to {uri}: HTTP {status}"
        address = _mailto_address(uri)
        if address is None:
            raise ValueError("not a mail address")
        message = report_message(the_report, submitter=hostname, domain=domain, rua_address=address,
                                 sender=f"postmaster@{hostname}")
        try:
            await self.send_mail("", [address], message)
        except Exception as error:  # the queue is full, or shutting down: another hour
            raise _TemporaryError(f"cannot queue it: {error}") from error
        return f"TLS report for {domain} of {date} queued to <{address}>"

    async def _lookup(self, domain: str) -> list[str]:
        """The report URIs published at _smtp._tls.<domain>; [] when there is no single TLSRPT record."""
        try:
            name = dns.name.from_text(f"_smtp._tls.{domain}")
            answer = await self.resolver().resolve(name, "TXT", search=False)
        except (dns.exception.Timeout, dns.resolver.NoNameservers) as error:
            raise _TemporaryError(f"cannot look up _smtp._tls.{domain}: {error}") from None
        except (dns.exception.DNSException, ValueError):  # no record, or not a name that can have one
            return []
        records = [b"".join(rdata.strings).decode("utf-8", "replace") for rdata in answer]
        records = [text for text in records if text.startswith("v=TLSRPTv1")]
        if len(records) != 1:  # RFC 8460 3: none, or more than one, means no reports
            return []
        return parse_rua(records[0])

    async def _post(self, uri: str, body: bytes) -> int:
        """POST the gzip'ed report to an https: URI (RFC 8460 5.2); the HTTP status when 2xx."""
        try:
            return await asyncio.wait_for(self._post_once(uri, body), HTTPS_TIMEOUT)
        except asyncio.TimeoutError:
            raise _TemporaryError(f"no answer within {HTTPS_TIMEOUT:.0f}s") from None

    async def _post_once(self, uri: str, body: bytes) -> int:
        parts = urllib.parse.urlsplit(uri)
        host = parts.hostname
        if not host:
            raise ValueError("no host in the URI")
        try:
            port = parts.port or 443
        except ValueError:
            raise ValueError("bad port in the URI") from None
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        addresses = await self._addresses(host)
        context = self.context()
        last = None
        for address in addresses:
            try:
                reader, writer = await asyncio.open_connection(
                    address, port, ssl=context, server_hostname=sni_name(host) or "")
                break
            except (OSError, ssl.SSLError) as error:
                last = error
        else:
            raise _TemporaryError(f"cannot connect to {host} port {port}: {last}")
        try:
            names = certificate_names(writer.get_extra_info("peercert"))
            if not certificate_matches(host, names):
                raise ValueError(f"the certificate of {host} is not verified for that name "
                                 f"(it names {', '.join(names) or 'nothing verified'})")
            try:
                return await _http_post(reader, writer, host if port == 443 else f"{host}:{port}", target, body)
            except (OSError, ssl.SSLError, h11.ProtocolError) as error:
                raise _TemporaryError(f"HTTPS to {host} failed: {error}") from None
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except (OSError, ssl.SSLError):
                pass

    async def _addresses(self, host: str) -> list[str]:
        try:
            return [str(ipaddress.ip_address(host))]
        except ValueError:
            pass
        try:
            return await host_addresses(self.resolver(), host)
        except RouteError as error:
            if error.permanent:
                raise ValueError(f"{host} has no address") from None
            raise _TemporaryError(f"cannot look up {host}: {error.text}") from None

    # -- the daily round

    async def run(self, flush_every: float = 60.0) -> None:
        """Forever: flush the statistics every minute; after each UTC midnight, plus a random delay
        of up to an hour (RFC 8460 recommends spreading the reports), send the day before's, and
        try the ones that could not be sent again once an hour for the rest of the day."""
        next_send = _next_send(time.time(), first=True)
        try:
            while True:
                await asyncio.sleep(min(flush_every, max(0.0, next_send - time.time())))
                self._flush()
                now = time.time()
                if now < next_send:
                    continue
                yesterday = datetime.datetime.fromtimestamp(now, datetime.timezone.utc).date() - datetime.timedelta(days=1)
                if self.enabled() and not self.finished(yesterday):
                    try:
                        for line in await self.send_day(yesterday):
                            log.info("%s", line)
                    except Exception:  # never let one bad day stop the reports or the flushes
                        log.exception("TLS reports of %s", yesterday)
                retry = self.enabled() and not self.finished(yesterday)
                next_send = now + 3600 if retry else _next_send(now)
        finally:
            self._flush()

    def _flush(self) -> None:
        try:
            self.stats.flush()
        except OSError as error:
            log.warning("TLS statistics: cannot write %s: %s", self.stats.path, error.strerror or error)


def _next_send(now: float, first: bool = False) -> float:
    """The next UTC midnight plus up to an hour; at start, within the hour (the last round may have been missed)."""
    delay = random.uniform(0, 3600)
    if first:
        return now + delay
    return (now // 86400 + 1) * 86400 + delay


async def _http_post(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str, target: str,
                     body: bytes) -> int:
    """One HTTP/1.1 POST of the report over an open connection; its status when 2xx."""
    connection = h11.Connection(h11.CLIENT)
    request = h11.Request(method="POST", target=target, headers=[
        ("Host", host), ("User-Agent", "Postern TLSRPT"), ("Content-Type", "application/tlsrpt+gzip"),
        ("Content-Length", str(len(body))), ("Connection", "close")])
    writer.write(connection.send(request) + connection.send(h11.Data(data=body))
                 + connection.send(h11.EndOfMessage()))
    await writer.drain()
    while True:
        event = connection.next_event()
        if event is h11.NEED_DATA:
            connection.receive_data(await reader.read(65536))  # b"" at the end: h11 sees the close
        elif isinstance(event, h11.Response):
            if 200 <= event.status_code < 300:
                return event.status_code
            reason = event.reason.decode("latin-1", "replace")
            if event.status_code >= 500 or event.status_code in (408, 429):
                raise _TemporaryError(f"HTTP {event.status_code} {reason}")
            raise ValueError(f"HTTP {event.status_code} {reason}")
        elif isinstance(event, h11.ConnectionClosed):
            raise _TemporaryError("the server closed the connection without an answer")
