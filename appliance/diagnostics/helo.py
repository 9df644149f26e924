"""The HELO check of CipherMail's appendix A: does the EHLO name match the PTR record?

Receiving servers look up the PTR record of the address a connection comes from, check
that the name found resolves back to that address (forward-confirmed reverse DNS), and
compare it with the name in EHLO. This check does the same from inside and says what to
change when they disagree.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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


def _same(a: str, b: str) -> bool:
    return a.lower().rstrip(".") == b.lower().rstrip(".")


def check_helo(resolver, helo_name: str, address: str) -> HeloVerdict:
    """Compare `helo_name` with the forward-confirmed PTR name of `address` (the public address)."""
    result = HeloVerdict(helo_name, address, FAIL)
    ptr = reverse_lookup(resolver, address)
    result.ptr_names = ptr.records
    if not ptr.records:
        result.lines.append(
            f"FAIL: {address} has no PTR record ({ptr.status}): ask whoever runs that address "
            f"(the ISP or hosting provider) to set its PTR record to {helo_name}"
        )
        return result
    result.lines.append(f"PTR of {address}: {', '.join(ptr.records)}")
    for name in ptr.records:
        forward = addresses_of(resolver, name)
        if address in forward:
            result.confirmed_names.append(name)
            result.lines.append(f"{name} resolves back to {address}: forward-confirmed")
        else:
            shown = ", ".join(forward) or "nothing"
            result.lines.append(f"{name} resolves to {shown}, not {address}: not forward-confirmed")
    if not result.confirmed_names:
        name = ptr.records[0]
        result.lines.append(
            f"FAIL: the PTR name does not resolve back to {address}: add an A record {name} -> {address} "
            "(receivers distrust a reverse name that does not confirm)"
        )
        return result
    if any(_same(helo_name, name) for name in result.confirmed_names):
        result.verdict = PASS
        result.lines.append(f"PASS: the HELO name {helo_name} is the forward-confirmed PTR name of {address}")
        return result
    name = result.confirmed_names[0]
    result.lines.append(
        f"FAIL: the HELO name {helo_name} differs from the PTR name {name}: set mta.helo_name to {name} "
        f"(or have the PTR record of {address} changed to {helo_name} and an A record added for it)"
    )
    return result
