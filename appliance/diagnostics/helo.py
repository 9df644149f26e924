"""The HELO check of CipherMail's appendix A: does the EHLO name match the PTR record?

Receiving servers look up the PTR record of the address a connection comes from, check
that the name found resolves back to that address (forward-confirmed reverse DNS), and
compare it with the name in EHLO. This check does the same from inside and says what to
change when they disagree; the verdict itself is the relay's (`relay.names.ptr_verdict`),
so that the daemon, the CLI, the console and the wizard agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from relay.names import canonical_address, ptr_verdict

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
    ptr = reverse_lookup(resolver, address)
    result.ptr_names = ptr.records
    if not ptr.records:
        result.lines.append(
            f"FAIL: {address} has no PTR record ({ptr.status}): ask whoever runs that address "
            f"(the ISP or hosting provider) to set its PTR record to {helo_name}"
        )
        return result
    result.lines.append(f"PTR of {address}: {', '.join(ptr.records)}")
    verdict = ptr_verdict(helo_name, address, {name: addresses_of(resolver, name) for name in ptr.records})
    result.confirmed_names = verdict.confirmed
    for name, forward in verdict.forward.items():
        if name in verdict.confirmed:
            result.lines.append(f"{name} resolves back to {address}: forward-confirmed")
        else:
            shown = ", ".join(forward) or "nothing"
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
    result.lines.append(
        f"FAIL: the HELO name {helo_name} differs from the PTR name {verdict.suggested}: set mta.helo_name to "
        f"{verdict.suggested} (or have the PTR record of {address} changed to {helo_name} and an "
        f"{verdict.record_type} record added for it)"
    )
    return result
