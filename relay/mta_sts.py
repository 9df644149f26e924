"""MTA-STS (RFC 8461): whether a recipient domain asks for verified TLS to its listed MX hosts.

A domain announces a policy with a TXT record at `_mta-sts.<domain>` ("v=STSv1; id=...") and
publishes it at `https://mta-sts.<domain>/.well-known/mta-sts.txt`. `MtaSts.policy` finds the
policy in force for a domain: the TXT record through the relay's own resolver, the policy over
HTTPS (h11 on an asyncio stream, the relay's verifying TLS context) when there is none cached
or its id changed. Policies are cached in memory and on disk (one JSON file per domain, written
atomically), so a restart keeps them: a sender that remembers a policy cannot be talked out of
it by an attacker who blocks DNS or HTTPS (RFC 8461 10.2). `refresh` re-checks cached policies
ahead of their expiry, so a domain's policy never lapses only because nobody mailed it for weeks.

Network trouble never raises out of `policy`: a failed fetch keeps an unexpired cached policy
(or gives None) and is remembered for `last_error`, in RFC 8460's terms, for TLS reports.
The TXT lookup's outcome is remembered for a few minutes, negative ones too, as is a failed
fetch, so a queue full of mail to one domain costs one lookup, not one per message.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import dns.asyncresolver
import dns.exception
import dns.name
import dns.resolver
import h11

from .files import atomic_write
from .routing import RouteError, host_addresses
from .tls import certificate_matches, certificate_names

log = logging.getLogger("postern/mta-sts")

MAX_AGE_LIMIT = 31557600      # RFC 8461 3.2: about a year
BODY_LIMIT = 64 * 1024        # RFC 8461 3.3: senders may refuse bigger policies
FETCH_TIMEOUT = 10.0          # the whole HTTPS fetch, connect to last byte
TXT_MEMORY = 300.0            # how long a TXT lookup (or a failed fetch) is remembered
REFRESH_AHEAD = 86400         # refetch a policy that expires within a day (RFC 8461 10.2)
WELL_KNOWN = "/.well-known/mta-sts.txt"

FETCH_ERROR = "sts-policy-fetch-error"
POLICY_INVALID = "sts-policy-invalid"
WEBPKI_INVALID = "sts-webpki-invalid"

_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_DOMAIN = re.compile(rf"{_LABEL}(?:\.{_LABEL})+")
_MX_PATTERN = re.compile(rf"(?:\*\.)?{_LABEL}(?:\.{_LABEL})*")
_POLICY_ID = re.compile(r"[A-Za-z0-9]{1,32}")
_MODES = ("enforce", "testing", "none")


@dataclass(frozen=True)
class Policy:
    """A domain's MTA-STS policy as fetched; `id` is the TXT record's id it was fetched for."""

    domain: str
    id: str
    mode: str                 # "enforce" | "testing" | "none"
    mx: tuple[str, ...]
    max_age: int
    fetched: float            # time.time() of the fetch
    text: str                 # the policy file itself, for TLS reports' policy-string and the console

    @property
    def expires(self) -> float:
        return self.fetched + self.max_age

    def matches(self, host: str) -> bool:
        """Whether an MX host name is one the policy lists (RFC 8461 4.1).

        A pattern "*.example.net" stands for exactly one more label: it covers mail.example.net,
        not example.net and not a.b.example.net."""
        host = host.lower().rstrip(".")
        for pattern in self.mx:
            if pattern.startswith("*."):
                head, _, rest = host.partition(".")
                if head and rest == pattern[2:]:
                    return True
            elif host == pattern:
                return True
        return False


class PolicyError(Exception):
    """Why a domain's policy could not be had: an RFC 8460 result type and a sentence for admins."""

    def __init__(self, result_type: str, text: str):
        super().__init__(text)
        self.result_type = result_type
        self.text = text

    def __repr__(self) -> str:
        return f"PolicyError({self.result_type!r}, {self.text!r})"


def parse_policy(domain: str, text: str, fetched: float, id: str = "") -> Policy:
    """A policy file's "key: value" lines (CRLF or LF) as a Policy; PolicyError(sts-policy-invalid) if not one.

    Unknown keys are ignored and the first of a repeated key counts, except `mx`, which
    repeats (RFC 8461 3.2)."""

    def invalid(why: str) -> PolicyError:
        return PolicyError(POLICY_INVALID, f"the MTA-STS policy of {domain} is invalid: {why}")

    fields: dict[str, str] = {}
    mx: list[str] = []
    for number, line in enumerate(text.replace("\r\n", "\n").split("\n"), 1):
        if not line.strip():
            continue
        key, colon, value = line.partition(":")
        if not colon or not re.fullmatch(r"[A-Za-z0-9_.-]{1,32}", key):
            raise invalid(f"line {number} is not \"key: value\"")
        value = value.strip(" \t")
        if key == "mx":
            pattern = value.lower().rstrip(".")
            if not _MX_PATTERN.fullmatch(pattern):
                raise invalid(f"mx {value!r} is not a host name or *.domain")
            mx.append(pattern)
        else:
            fields.setdefault(key, value)
    if fields.get("version") != "STSv1":
        raise invalid("version is not STSv1" if "version" in fields else "no version line")
    mode = fields.get("mode")
    if mode not in _MODES:
        raise invalid(f"mode {mode!r} is none of enforce, testing, none" if mode else "no mode line")
    max_age = fields.get("max_age", "")
    if not re.fullmatch(r"[0-9]{1,10}", max_age):
        raise invalid(f"max_age {max_age!r} is not a number of seconds" if max_age else "no max_age line")
    if int(max_age) > MAX_AGE_LIMIT:
        raise invalid(f"max_age {max_age} is over the limit of {MAX_AGE_LIMIT}")
    if mode != "none" and not mx:
        raise invalid(f"mode {mode} without any mx line")
    return Policy(domain, id, mode, tuple(mx), int(max_age), fetched, text)


def policy_domain(domain: str) -> str | None:
    """A recipient domain in the form policies are kept under (lowercase ASCII, no final dot),
    or None for something that cannot have a policy (an address literal, a single label, junk).

    The result is also the cache file's name: only letters, digits, hyphens and dots between labels."""
    domain = domain.strip().rstrip(".").lower()
    if not domain.isascii():
        try:
            domain = dns.name.from_unicode(domain).to_text(omit_final_dot=True).lower()
        except (dns.exception.DNSException, UnicodeError, ValueError):
            return None
    if len(domain) > 253 or not _DOMAIN.fullmatch(domain):
        return None
    return domain


def parse_txt(record: bytes) -> str | None:
    """The id of a "v=STSv1; id=...;" TXT record (its strings joined), or None when it is not a valid one."""
    try:
        text = record.decode("ascii")
    except UnicodeDecodeError:
        return None
    fields = [field.strip(" \t") for field in text.split(";")]
    if fields[0] != "v=STSv1":
        return None
    values: dict[str, str] = {}
    for field in fields[1:]:
        if not field:
            continue
        key, equals, value = field.partition("=")
        if not equals or not key:
            return None
        values.setdefault(key, value)
    policy_id = values.get("id", "")
    return policy_id if _POLICY_ID.fullmatch(policy_id) else None


@dataclass
class _Lookup:
    """What the TXT record said, and until when to believe it without asking again."""

    until: float
    id: str | None            # None: no (valid) record, or DNS failed
    fetch_failed: bool = False


class MtaSts:
    """The MTA-STS policies of recipient domains: discovery, fetch, cache on disk, refresh.

    `resolver` and `context` are callables, so a configuration reload that replaces the
    relay's resolver or TLS context is picked up by the next lookup. `context` must verify
    the chain (CERT_REQUIRED); names are matched here, the RFC 6125 way `relay.tls` does.
    """

    def __init__(self, directory: Path, resolver: Callable[[], dns.asyncresolver.Resolver],
                 context: Callable[[], ssl.SSLContext], port: int = 443, *, timeout: float = FETCH_TIMEOUT,
                 memory: float = TXT_MEMORY, clock: Callable[[], float] = time.time):
        self.directory = Path(directory)
        self.resolver, self.context, self.port = resolver, context, port
        self.timeout, self.memory, self.clock = timeout, memory, clock
        self._policies: dict[str, Policy] | None = None   # loaded from disk on first use
        self._lookups: dict[str, _Lookup] = {}
        self._errors: dict[str, PolicyError] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    # --- without the network ---------------------------------------------------------------

    def cached(self, domain: str) -> Policy | None:
        """The cached policy of a domain, expired or not; never any network use."""
        name = policy_domain(domain)
        return self._cache().get(name) if name else None

    def all_cached(self) -> list[Policy]:
        """Every cached policy, by domain, for the console and status."""
        return [self._cache()[name] for name in sorted(self._cache())]

    def last_error(self, domain: str) -> PolicyError | None:
        """The latest discovery or fetch failure for a domain, cleared by the next success."""
        name = policy_domain(domain)
        return self._errors.get(name) if name else None

    def _cache(self) -> dict[str, Policy]:
        if self._policies is None:
            self._policies = self._load()
        return self._policies

    def _load(self) -> dict[str, Policy]:
        """Every valid policy file in the directory; a damaged or foreign one is skipped with a warning."""
        policies: dict[str, Policy] = {}
        try:
            paths = sorted(self.directory.glob("*.json"))
        except OSError:
            return policies
        for path in paths:
            name = policy_domain(path.stem)
            if name is None or name != path.stem:
                continue
            try:
                saved = json.loads(path.read_text("utf-8"))
                policy = parse_policy(name, saved["text"], float(saved["fetched"]), str(saved["id"]))
            except (OSError, ValueError, KeyError, TypeError, PolicyError) as error:
                log.warning("ignoring cached MTA-STS policy %s: %s", path, error)
                continue
            policies[name] = policy
        return policies

    async def _store(self, policy: Policy) -> None:
        """Into memory at once, onto disk (atomic_write: tmp file, fsync, rename) off the event loop."""
        self._cache()[policy.domain] = policy
        saved = {"domain": policy.domain, "id": policy.id, "fetched": policy.fetched, "text": policy.text}
        path = self.directory / f"{policy.domain}.json"
        try:
            await asyncio.to_thread(atomic_write, path, json.dumps(saved, indent=1) + "\n", 0o600)
        except OSError as error:  # kept in memory all the same
            log.warning("cannot save the MTA-STS policy of %s in %s: %s", policy.domain, self.directory, error)

    def _forget(self, domain: str) -> None:
        self._cache().pop(domain, None)
        with contextlib.suppress(OSError):
            (self.directory / f"{domain}.json").unlink(missing_ok=True)

    def _unexpired(self, domain: str) -> Policy | None:
        policy = self._cache().get(domain)
        return policy if policy is not None and policy.expires > self.clock() else None

    # --- discovery --------------------------------------------------------------------------

    async def policy(self, domain: str) -> Policy | None:
        """The policy in force for a recipient domain, None when it has none (RFC 8461 3, 5).

        A cached policy whose id the TXT record still carries is used as it is; a new id, or
        none cached, means a fetch. When the TXT record is gone or the fetch fails, an unexpired
        cached policy stays in force: that is what keeps an attacker from stripping it."""
        name = policy_domain(domain)
        if name is None:
            return None
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            lookup = self._lookups.get(name)
            if lookup is None or lookup.until <= self.clock():
                lookup = await self._look_up(name)
            return await self._apply(name, lookup)

    async def _apply(self, name: str, lookup: _Lookup) -> Policy | None:
        current = self._unexpired(name)
        if lookup.id is None:
            return current
        if current is not None and current.id == lookup.id:
            return current
        if lookup.fetch_failed:
            return current
        try:
            policy = await self.fetch(name, lookup.id)
        except PolicyError as error:
            lookup.fetch_failed = True
            self._errors[name] = error
            log.warning("MTA-STS policy of %s: %s%s", name, error.text,
                        "; keeping the cached one" if current else "")
            return current
        self._errors.pop(name, None)
        await self._store(policy)
        log.info("MTA-STS policy of %s: id %s, mode %s, max_age %d", name, policy.id, policy.mode, policy.max_age)
        return policy

    async def _look_up(self, name: str) -> _Lookup:
        """The TXT record at _mta-sts.<domain> (RFC 8461 3.1), remembered for `memory` seconds."""
        lookup = _Lookup(self.clock() + self.memory, await self._txt_id(name))
        self._lookups[name] = lookup
        return lookup

    async def _txt_id(self, name: str) -> str | None:
        try:
            answer = await self.resolver().resolve(f"_mta-sts.{name}", "TXT", search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return None
        except dns.exception.DNSException as error:
            log.info("MTA-STS: no TXT record for _mta-sts.%s: %s", name, error)
            return None
        records = [b"".join(record.strings) for record in answer]
        announced = [record for record in records if re.match(rb"v=STSv1[ \t]*(;|$)", record)]
        if len(announced) != 1:  # RFC 8461 3.1: not exactly one: the domain has no policy available
            return None
        return parse_txt(announced[0])

    # --- HTTPS ------------------------------------------------------------------------------

    async def fetch(self, domain: str, policy_id: str = "") -> Policy:
        """GET https://mta-sts.<domain>/.well-known/mta-sts.txt within `timeout` seconds (RFC 8461 3.3).

        Only a 200 with text/plain of at most 64 KiB counts: no redirects. PolicyError says why not."""
        host = f"mta-sts.{domain}"
        try:
            async with asyncio.timeout(self.timeout):
                body = await self._get(host)
        except TimeoutError:
            raise PolicyError(FETCH_ERROR, f"https://{host}{WELL_KNOWN} did not answer within "
                                           f"{self.timeout:g} s") from None
        except PolicyError:
            raise
        except Exception as error:  # whatever went wrong, delivery carries on as RFC 8461 says
            log.exception("MTA-STS: fetching the policy of %s failed", domain)
            raise PolicyError(FETCH_ERROR, f"https://{host}{WELL_KNOWN}: {error}") from None
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise PolicyError(POLICY_INVALID, f"the MTA-STS policy of {domain} is not UTF-8 text") from None
        return parse_policy(domain, text, self.clock(), policy_id)

    async def _get(self, host: str) -> bytes:
        addresses = await self._addresses(host)
        failures = []
        for address in addresses:
            try:
                reader, writer = await asyncio.open_connection(
                    address, self.port, ssl=self.context(), server_hostname=host)
            except ssl.SSLCertVerificationError as error:
                raise PolicyError(WEBPKI_INVALID, f"the certificate of {host} [{address}] does not verify: "
                                                  f"{error.verify_message or error.reason}") from None
            except ssl.SSLError as error:
                failures.append(f"[{address}]: TLS failed: {error.reason or error}")
                continue
            except OSError as error:
                failures.append(f"[{address}]: {error.strerror or error}")
                continue
            try:
                names = certificate_names(writer.get_extra_info("peercert"))
                if not certificate_matches(host, names):
                    raise PolicyError(WEBPKI_INVALID, f"the certificate of {host} [{address}] is for "
                                                      f"{', '.join(names) or 'no name'}, not {host}")
                return await _exchange(reader, writer, host)
            finally:
                writer.transport.abort()
        raise PolicyError(FETCH_ERROR, f"cannot connect to {host} port {self.port}: {'; '.join(failures)}")

    async def _addresses(self, host: str) -> list[str]:
        """A then AAAA records of mta-sts.<domain>, through the relay's resolver."""
        try:
            return await host_addresses(self.resolver(), host)
        except RouteError as error:
            raise PolicyError(FETCH_ERROR, f"{host} has no address: {error.text}") from None

    # --- refresh ----------------------------------------------------------------------------

    async def refresh(self) -> None:
        """One pass over the cached policies: re-check each TXT id, refetch when it changed or the
        policy expires within a day (RFC 8461 10.2); drop a policy that expired and could not be renewed.

        Also forgets the lookups of domains mailed long ago, so a relay that reaches many domains
        does not keep one of each forever."""
        for name in sorted(self._cache()):
            try:
                await self._refresh_one(name)
            except Exception:  # one domain's trouble must not stop the others
                log.exception("MTA-STS: refreshing the policy of %s failed", name)
        now = self.clock()
        for name in [name for name, lookup in self._lookups.items() if lookup.until <= now]:
            lock = self._locks.get(name)
            if lock is None or not lock.locked():
                del self._lookups[name]
                self._locks.pop(name, None)
                if name not in self._cache():
                    self._errors.pop(name, None)

    async def _refresh_one(self, name: str) -> None:
        async with self._locks.setdefault(name, asyncio.Lock()):
            policy = self._cache().get(name)
            if policy is None:
                return
            lookup = await self._look_up(name)
            now = self.clock()
            if lookup.id is not None and (lookup.id != policy.id or policy.expires - now < REFRESH_AHEAD):
                try:
                    fresh = await self.fetch(name, lookup.id)
                except PolicyError as error:
                    lookup.fetch_failed = True
                    self._errors[name] = error
                    log.warning("MTA-STS policy of %s: refresh failed: %s", name, error.text)
                else:
                    self._errors.pop(name, None)
                    await self._store(fresh)
                    log.info("MTA-STS policy of %s refreshed: id %s, mode %s", name, fresh.id, fresh.mode)
                    return
            if policy.expires <= now:
                log.info("MTA-STS policy of %s expired", name)
                self._forget(name)

    async def run(self, interval: float = 3600) -> None:
        """refresh() every `interval` seconds until cancelled."""
        while True:
            await self.refresh()
            await asyncio.sleep(interval)


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str) -> bytes:
    """One GET over h11; the body of a 200 text/plain answer of at most BODY_LIMIT bytes."""
    url = f"https://{host}{WELL_KNOWN}"
    connection = h11.Connection(our_role=h11.CLIENT)
    request = h11.Request(method="GET", target=WELL_KNOWN, headers=[
        ("Host", host), ("User-Agent", "Postern MTA-STS"), ("Accept", "text/plain"), ("Connection", "close")])
    writer.write(connection.send(request) + connection.send(h11.EndOfMessage()))
    await writer.drain()
    body = bytearray()
    try:
        while True:
            event = connection.next_event()
            if event is h11.NEED_DATA:
                connection.receive_data(await reader.read(16384))
            elif isinstance(event, h11.InformationalResponse):
                continue
            elif isinstance(event, h11.Response):
                _check_response(event, url)
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > BODY_LIMIT:
                    raise PolicyError(FETCH_ERROR, f"{url} is over {BODY_LIMIT // 1024} KiB")
            elif isinstance(event, h11.EndOfMessage):
                return bytes(body)
            else:  # ConnectionClosed before the answer was whole
                raise PolicyError(FETCH_ERROR, f"{url}: the server closed the connection early")
    except h11.RemoteProtocolError as error:
        raise PolicyError(FETCH_ERROR, f"{url}: not a valid HTTP answer: {error}") from None
    except (OSError, ssl.SSLError) as error:
        raise PolicyError(FETCH_ERROR, f"{url}: {error.strerror or error}") from None


def _check_response(response: h11.Response, url: str) -> None:
    headers = {name.decode("ascii", "replace").lower(): value.decode("latin-1") for name, value in response.headers}
    if 300 <= response.status_code < 400:
        location = headers.get("location", "")
        raise PolicyError(FETCH_ERROR, f"{url} answered {response.status_code}, a redirect"
                                       f"{' to ' + location if location else ''}, which MTA-STS does not follow")
    if response.status_code != 200:
        raise PolicyError(FETCH_ERROR, f"{url} answered {response.status_code} "
                                       f"{response.reason.decode('latin-1', 'replace')}".rstrip())
    media_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type != "text/plain":
        raise PolicyError(FETCH_ERROR, f"{url} is {media_type or 'of no media type'}, not text/plain")
    length = headers.get("content-length", "")
    if length.isdigit() and int(length) > BODY_LIMIT:
        raise PolicyError(FETCH_ERROR, f"{url} is {int(length)} bytes, over {BODY_LIMIT // 1024} KiB")
