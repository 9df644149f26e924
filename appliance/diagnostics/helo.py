"""The HELO check of CipherMail's appendix A: does the EHLO name match the PTR record?

Receiving servers look up the PTR record of the address a connection comes from, check
that the name found resolves back to that address (forward-confirmed reverse DNS), and
compare it with the name in EHLO. This check does the same from inside and says what to
change when they disagree; the verdict itself is the relay's (`relay.names.ptr_verdict`),
so that the daemon, the CLI, the console and the wizard agree.

It asks DNS servers only (`dns_lookup.make_resolver`), never the system's name service:
/etc/hosts, LLMNR and mDNS answer for this machine alone, and a receiver on the Internet
sees none of them. A PTR name that cannot be public (`relay.names.public_name`: .local,
a single label...) is as good as none, and is never offered as the name to set.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from relay.names import canonical_address, ptr_verdict, public_name

from .dns_lookup import addresses_of, reverse_lookup

PASS, FAIL = "pass", "fail"


@dataclass
class HeloVerdict:
    helo_name: str
    address: str
    verdict: str
    ptr_names: list[str] = field(default_factory=list)
    confirmed_names: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)


def check_helo(resolver, helo_name: str, address: str) -> HeloVerdict:
    """Compare `helo_name` with the forward-confirmed PTR name of `address` (the public address)."""
    address = canonical_address(address)
    result = HeloVerdict(helo_name, address, FAIL)
    if not public_name(helo_name):
        result.lines.append(f"the HELO name {helo_name} is a private name: receivers on the Internet cannot look it up")
    ptr = reverse_lookup(resolver, address)
    result.ptr_names = ptr.records
    forward = {name: addresses_of(resolver, name) if public_name(name) else [] for name in ptr.records}
    verdict = ptr_verdict(helo_name, address, forward)
    if ptr.records:
        result.lines.append(f"PTR of {address}: {', '.join(ptr.records)}")
    for name in verdict.private:
        result.lines.append(f"{name} is a private name: receivers on the Internet cannot look it up")
    if not verdict.public:
        missing = (f"{address} has no PTR record ({ptr.status})" if not ptr.records else
                   f"the PTR record of {address} is private (it names only {', '.join(ptr.records)})")
        result.lines.append(f"FAIL: {missing}: ask whoever runs that address (the ISP or hosting provider) "
                            f"to set its PTR record to {verdict.ptr_target}")
        return result
    result.confirmed_names = verdict.confirmed
    for name in verdict.public:
        if name in verdict.confirmed:
            result.lines.append(f"{name} resolves back to {address}: forward-confirmed")
        else:
            shown = ", ".join(verdict.forward[name]) or "nothing"
            result.lines.append(f"{name} resolves to {shown}, not {address}: not forward-confirmed")
    if not verdict.confirmed:
        result.lines.append(
            f"FAIL: the PTR name does not resolve back to {address}: add an {verdict.record_type} record "
            f"{verdict.suggested} -> {address} (receivers distrust a reverse name that does not confirm)"
        )
        return result
    if verdict.passed:
        result.verdict = PASS
        result.lines.append(f"PASS: the HELO name {helo_name} is the forward-confirmed PTR name of {address}")
        return result
    other_way = (f" (or have the PTR record of {address} changed to {helo_name} and an {verdict.record_type} "
                 f"record added for it)" if verdict.helo_is_public else "")
    result.lines.append(
        f"FAIL: the HELO name {helo_name} differs from the PTR name {verdict.suggested}: set mta.helo_name to "
        f"{verdict.suggested}{other_way}"
    )
    return result
