"""The names the relay introduces itself by, against the PTR record of its public address.

Receiving servers compare the name in EHLO (and some the 220 banner) with the PTR
record of the connecting address, forward-confirmed, and score or refuse mail when
they differ. `ptr_verdict` is the one pure verdict, comparing canonical addresses and
names; the appliance's diagnostics (the CLI and the console) and the wizard import it,
and `name_warnings` says it in the relay's words. A PTR name that cannot be a public host
name (`public_name`: .local, localhost, a single label...) counts as no PTR name at all:
no receiver can look it up, so it is never offered as the name to set. `check_names` looks the records up
with the relay's resolver for the control API's `io.postern.Status.CheckNames`.

`PeerNames` is the other direction: the verified name of a connecting client, as
Postfix's smtpd finds it for its logs and `Received:` header; `client_name` writes it
as the logs do.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field

import dns.asyncresolver
import dns.exception
import dns.resolver

from .config import MtaConfig


@dataclass
class NameCheck:
    address: str
    banner_name: str
    helo_name: str
    ptr: list[str] = field(default_factory=list)
    forward: list[str] = field(default_factory=list)  # the addresses of the first PTR name
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def same_name(a: str, b: str) -> bool:
    """Host names as DNS compares them: case and a trailing dot do not count."""
    return a.lower().rstrip(".") == b.lower().rstrip(".")


def canonical_address(text: str) -> str:
    """An address in the form DNS answers give: 2001:DB8:0::10 -> 2001:db8::10, ::ffff:192.0.2.10 -> 192.0.2.10.

    ValueError when `text` is not an IP address."""
    address = ipaddress.ip_address(text.strip())
    if address.version == 6 and address.ipv4_mapped:
        address = address.ipv4_mapped
    return str(address)


PRIVATE_SUFFIXES = ("local", "localhost", "localdomain", "lan", "home.arpa", "internal")


def public_name(name: str) -> bool:
    """Can `name` be a host name that receivers on the Internet look up? Not a single label, and not under a
    suffix only local networks use: .local (mDNS), localhost, .localdomain, .lan, .home.arpa, .internal."""
    name = name.lower().rstrip(".")
    if "." not in name or not all(name.split(".")):
        return False
    return not any(name == suffix or name.endswith("." + suffix) for suffix in PRIVATE_SUFFIXES)


def _canonical_or_none(text: str) -> str | None:
    try:
        return canonical_address(text)
    except ValueError:
        return None


@dataclass
class PtrVerdict:
    """The HELO name against the forward-confirmed PTR names of the address mail leaves from.

    The one verdict the relay's `Status.CheckNames`, `postern-appliance diag helo`, the console's
    Diagnostics screen and the wizard's hostname step give; each says it in its own words."""

    helo_name: str
    address: str  # canonical (see canonical_address)
    forward: dict[str, list[str]]  # each PTR name of the address, as DNS gave them, with the addresses it has

    @property
    def ptr(self) -> list[str]:
        return list(self.forward)

    @property
    def public(self) -> list[str]:
        """The PTR names that can be public names (see public_name); none: the PTR record is missing or private."""
        return [name for name in self.forward if public_name(name)]

    @property
    def private(self) -> list[str]:
        """The PTR names no receiver can look up (postern.local, a single label...)."""
        return [name for name in self.forward if not public_name(name)]

    @property
    def confirmed(self) -> list[str]:
        """The public PTR names that resolve back to the address."""
        return [name for name in self.public if any(_canonical_or_none(ip) == self.address for ip in self.forward[name])]

    @property
    def passed(self) -> bool:
        return any(same_name(self.helo_name, name) for name in self.confirmed)

    @property
    def helo_is_public(self) -> bool:
        return public_name(self.helo_name)

    def is_ptr_name(self, name: str) -> bool:
        """Is `name` one of the public PTR names?"""
        return any(same_name(name, ptr) for ptr in self.public)

    @property
    def suggested(self) -> str | None:
        """The name to set as the HELO name: the first forward-confirmed PTR name, else the first public PTR name;
        None when the PTR record is missing or names only private names."""
        return (self.confirmed or self.public or [None])[0]

    @property
    def ptr_target(self) -> str:
        """The name to ask for in the PTR record, when it is missing or private: the HELO name if it can be public."""
        if self.helo_is_public:
            return self.helo_name
        return "the gateway's public name (such as mail.example.com), and set mta.helo_name to that name"

    @property
    def record_type(self) -> str:
        return "AAAA" if ":" in self.address else "A"


def ptr_verdict(helo_name: str, address: str, forward: dict[str, list[str]]) -> PtrVerdict:
    """`forward`: the PTR names of `address` with the A and AAAA addresses of each (empty: no PTR record)."""
    return PtrVerdict(helo_name, canonical_address(address), dict(forward))


def name_warnings(banner_name: str, verdict: PtrVerdict) -> list[str]:
    """What an admin should fix, one sentence each; empty when the names and the PTR record agree."""
    address, helo_name = verdict.address, verdict.helo_name
    if not verdict.public:
        missing = (f"{address} has no PTR record" if not verdict.ptr else
                   f"the PTR record of {address} names only {', '.join(verdict.ptr)}, a private name no receiver "
                   "can look up")
        return [
            f"{missing}: ask whoever runs the address (your provider) for one naming {verdict.ptr_target}, "
            "since many receivers distrust mail from an address without one"
        ]
    warnings = []
    shown = ", ".join(verdict.ptr)
    if not verdict.passed and (verdict.confirmed or not verdict.is_ptr_name(helo_name)):
        other_way = f", or have the PTR record changed to {helo_name}" if verdict.helo_is_public else ""
        warnings.append(
            f"the HELO name {helo_name} is not the PTR name of {address} ({shown}): set mta.helo_name "
            f"to {verdict.suggested}{other_way}"
        )
    if not same_name(banner_name, helo_name) and not verdict.is_ptr_name(banner_name):
        warnings.append(
            f"the banner name {banner_name} is not the PTR name of {address} ({shown}): "
            f"set mta.hostname to {verdict.suggested}"
        )
    if not verdict.confirmed:
        first = verdict.public[0]
        found = ", ".join(verdict.forward[first]) or "no address"
        warnings.append(
            f"the PTR name {first} does not resolve back to {address} (it has {found}): "
            f"add an {verdict.record_type} record for {first} pointing to {address}"
        )
    return warnings


async def check_names(config: MtaConfig, resolver: dns.asyncresolver.Resolver, address: str) -> NameCheck:
    """Look up the PTR record of `address` and its names' addresses; warn where they disagree."""
    check = NameCheck(canonical_address(address), config.hostname, config.outgoing_helo)
    try:
        answer = await resolver.resolve_address(check.address)
        check.ptr = [str(record.target).rstrip(".") for record in answer]
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        pass
    except (dns.exception.Timeout, dns.resolver.NoNameservers) as error:
        check.warnings.append(f"cannot look up the PTR record of {check.address}: {error}")
        return check
    forward: dict[str, list[str]] = {name: [] for name in check.ptr}
    for name in filter(public_name, forward):
        for rdtype in ("A", "AAAA"):
            try:
                answer = await resolver.resolve(name, rdtype, search=False)
                forward[name] += [str(record) for record in answer]
            except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
                continue
            except (dns.exception.Timeout, dns.resolver.NoNameservers) as error:
                check.warnings.append(f"cannot look up the addresses of {name}: {error}")
                return check
    check.forward = forward[check.ptr[0]] if check.ptr else []
    check.warnings = name_warnings(check.banner_name, ptr_verdict(check.helo_name, check.address, forward))
    return check


UNKNOWN = "unknown"
_HOSTNAME = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*")


class PeerNames:
    """A client address's verified name: its PTR name if that name resolves back to the address.

    As Postfix's smtpd: "unknown" when there is no PTR record, when the name does not
    lead back to the address, or when DNS does not answer in time (`timeout` seconds for
    the whole lookup). Answers are kept for `ttl` seconds, the last `size` addresses.
    """

    def __init__(self, timeout: float = 5.0, size: int = 1000, ttl: float = 3600.0):
        self.timeout = timeout
        self.size = size
        self.ttl = ttl
        self._cache: OrderedDict[str, tuple[float, str]] = OrderedDict()
        self._pending: dict[str, asyncio.Future[str]] = {}  # lookups under way, by address

    def cached(self, address: str) -> str | None:
        """The name kept for the address, if it is still fresh."""
        kept = self._cache.get(address)
        if kept and kept[0] > time.monotonic():
            self._cache.move_to_end(address)
            return kept[1]
        return None

    async def lookup(self, resolver: dns.asyncresolver.Resolver, address: str) -> str:
        """The name, looked up once for every session that asks while the lookup runs. A session that
        ends stops only its own wait: the lookup goes on and its answer is kept, so a client that
        connects and leaves again and again (a probe, a scanner) costs one query, not one each time."""
        name = self.cached(address)
        if name is not None:
            return name
        pending = self._pending.get(address)
        if pending is None or pending.done():  # (done: cancelled before it began, as the loop closed)
            pending = self._pending[address] = asyncio.ensure_future(self._look_up(resolver, address))
        return await asyncio.shield(pending)

    async def _look_up(self, resolver: dns.asyncresolver.Resolver, address: str) -> str:
        now = time.monotonic()
        try:
            name = await asyncio.wait_for(_verified_name(resolver, address), self.timeout)
        except (asyncio.TimeoutError, dns.exception.DNSException, ValueError):
            name = UNKNOWN
        finally:
            self._pending.pop(address, None)
        self._cache[address] = (now + self.ttl, name)
        self._cache.move_to_end(address)
        while len(self._cache) > self.size:
            self._cache.popitem(last=False)
        return name


async def _verified_name(resolver: dns.asyncresolver.Resolver, address: str) -> str:
    wanted = ipaddress.ip_address(address)
    answer = await resolver.resolve_address(str(wanted))
    name = str(answer[0].target).rstrip(".")
    if not _HOSTNAME.fullmatch(name):  # it goes into logs and Received: headers
        return UNKNOWN
    try:
        forward = await resolver.resolve(name, "AAAA" if wanted.version == 6 else "A", search=False)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return UNKNOWN
    if any(ipaddress.ip_address(str(record)) == wanted for record in forward):
        return name
    return UNKNOWN


def client_name(session) -> str:
    """Postfix's "name[address]" for an SMTP client's session (its `peer`, and `peer_name` once the
    lookup at connect has ended): the verified name once it is known, else unknown."""
    peer = session.peer
    ip = peer[0] if isinstance(peer, tuple) else str(peer)
    return f"{session.peer_name}[{ip}]"
