"""The names the relay introduces itself by, against the PTR record of its public address.

Receiving servers compare the name in EHLO (and some the 220 banner) with the PTR
record of the connecting address, forward-confirmed, and score or refuse mail when
they differ (a receiver that checks the PTR record refuses or scores mail from a mismatched name). `name_warnings` is the pure verdict;
`check_names` looks the records up with the relay's resolver. The control API's
`io.postern.Status.CheckNames` runs it for an address, and the appliance's
diagnostics may import either function.

`PeerNames` is the other direction: the verified name of a connecting client, as
Postfix's smtpd finds it for its logs and `Received:` header.
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


def _same(a: str, b: str) -> bool:
    return a.lower().rstrip(".") == b.lower().rstrip(".")


def name_warnings(banner_name: str, helo_name: str, address: str, ptr: list[str], forward: list[str]) -> list[str]:
    """What an admin should fix, one sentence each; empty when the names and the PTR record agree."""
    if not ptr:
        return [
            f"{address} has no PTR record: ask whoever runs the address (your provider) for one naming {helo_name}, "
            "since many receivers distrust mail from an address without one"
        ]
    warnings = []
    shown = ", ".join(ptr)
    if not any(_same(helo_name, name) for name in ptr):
        warnings.append(
            f"the HELO name {helo_name} is not the PTR name of {address} ({shown}): set mta.helo_name "
            f"to {ptr[0]}, or have the PTR record changed to {helo_name}"
        )
    if not _same(banner_name, helo_name) and not any(_same(banner_name, name) for name in ptr):
        warnings.append(
            f"the banner name {banner_name} is not the PTR name of {address} ({shown}): set mta.hostname to {ptr[0]}"
        )
    try:
        wanted = ipaddress.ip_address(address)
        confirmed = any(ipaddress.ip_address(ip) == wanted for ip in forward)
    except ValueError:
        confirmed = False
    if not confirmed:
        found = ", ".join(forward) or "no address"
        warnings.append(
            f"the PTR name {ptr[0]} does not resolve back to {address} (it has {found}): "
            f"add an {'AAAA' if ':' in address else 'A'} record for {ptr[0]} pointing to {address}"
        )
    return warnings


async def check_names(config: MtaConfig, resolver: dns.asyncresolver.Resolver, address: str) -> NameCheck:
    """Look up the PTR record of `address` and its names' addresses; warn where they disagree."""
    check = NameCheck(str(ipaddress.ip_address(address)), config.hostname, config.outgoing_helo)
    try:
        answer = await resolver.resolve_address(check.address)
        check.ptr = [str(record.target).rstrip(".") for record in answer]
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        pass
    except (dns.exception.Timeout, dns.resolver.NoNameservers) as error:
        check.warnings.append(f"cannot look up the PTR record of {check.address}: {error}")
        return check
    if check.ptr:
        for rdtype in ("A", "AAAA"):
            try:
                answer = await resolver.resolve(check.ptr[0], rdtype, search=False)
                check.forward += [str(record) for record in answer]
            except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
                continue
            except (dns.exception.Timeout, dns.resolver.NoNameservers) as error:
                check.warnings.append(f"cannot look up the addresses of {check.ptr[0]}: {error}")
                return check
    check.warnings = name_warnings(check.banner_name, check.helo_name, check.address, check.ptr, check.forward)
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

    async def lookup(self, resolver: dns.asyncresolver.Resolver, address: str) -> str:
        now = time.monotonic()
        cached = self._cache.get(address)
        if cached and cached[0] > now:
            self._cache.move_to_end(address)
            return cached[1]
        try:
            name = await asyncio.wait_for(_verified_name(resolver, address), self.timeout)
        except (asyncio.TimeoutError, dns.exception.DNSException, ValueError):
            name = UNKNOWN
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
