"""Which TLS one delivery connection must have: the level, the names, the trust.

The level of a next hop (`routing.NextHop.tls_level`) is the configured one: a relay
host's `tls`, or for mail straight to a domain's MX hosts that domain's `tls_policy`
entry, else the external relay's `tls` (by default `dane`). Per MX host it becomes a
`Requirement`, as Postfix's smtp_tls_security_level does with DNSSEC:

- `none`: never STARTTLS. `may`: STARTTLS when offered, any certificate, plain text when
  it fails. `encrypt`: STARTTLS or no delivery, any certificate.
- `verify`: STARTTLS with a certificate from a trusted authority that carries the MX
  host's name (or `tls_name`, or an entry's `match`). `secure`: the same, but the name
  must be the destination domain or one below it, so a forged MX record cannot lead
  mail astray (Postfix's match=nexthop:dot-nexthop).
- `dane` (RFC 7672): when the MX record and the host's address came DNSSEC-validated,
  the host's TLSA records (`_25._tcp.<host>`) decide: usable records must match the
  certificate, else the mail waits (never plain text); records that are all unusable
  mean `encrypt`; a TLSA lookup that fails means not this host now. Without DNSSEC or
  without TLSA records: the domain's MTA-STS policy if it has one, else `may`.
- `dane-only`: DANE or no delivery.

MTA-STS (RFC 8461) applies to mail straight to a domain that has no `tls_policy` entry,
at the levels `may`, `encrypt` and `dane` (DANE wins for a host that has usable TLSA
records). `enforce`: the MX host must be in the policy and its certificate verify (as
`verify`, with the system's authorities or `tls.ca_file`), else the mail waits;
`testing`: the same checks, whose failures are reported (TLS-RPT) but do not stop
delivery.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import dns.asyncresolver

from . import dane
from .config import is_ip
from .mta_sts import MtaSts, Policy
from .routing import NextHop, Target


@dataclass(frozen=True)
class Requirement:
    """What one connection must achieve.

    `level` is none, may, encrypt, verify (a trusted chain and one of `names`) or dane
    (one of `tlsa` matches). `enforce` False: an MTA-STS policy in testing mode, whose
    failures are reported but let the mail go as `may`. `policy_type` and
    `policy_strings` are for TLS reports; `source` names the policy for logs and the console.
    """

    level: str
    names: tuple[str, ...] = ()
    ca_file: str = ""
    tlsa: tuple[dane.Tlsa, ...] = ()
    enforce: bool = True
    policy_type: str = "no-policy-found"
    policy_strings: tuple[str, ...] = ()
    source: str = ""
    testing_failure: tuple[str, str] = ("", "")  # (result type, detail) known before connecting

    @property
    def verified(self) -> bool:
        """Will the certificate be checked (DANE or an authority and a name)?"""
        return self.level in ("verify", "dane")

    @property
    def required(self) -> bool:
        """No plain text, and a TLS failure is a failure."""
        return self.level in ("encrypt", "verify", "dane") and self.enforce


class Refused(Exception):
    """This MX host must not get the mail under the policy in force: `dsn`, `text`, `result_type` (RFC 8460)."""

    def __init__(self, text: str, result_type: str, requirement: Requirement, dsn: str = "4.7.5"):
        super().__init__(text)
        self.text = text
        self.dsn = dsn
        self.result_type = result_type
        self.requirement = requirement


STS_LEVELS = ("may", "encrypt", "dane")  # the levels at which a domain's MTA-STS policy applies


class Planner:
    """Turns a next hop's level into each connection's `Requirement`."""

    def __init__(self, *, resolver: Callable[[], dns.asyncresolver.Resolver], mta_sts: MtaSts):
        self.resolver = resolver
        self.mta_sts = mta_sts

    async def sts_policy(self, hop: NextHop) -> Policy | None:
        """The MTA-STS policy for this hop's domain, when one applies (once per delivery attempt)."""
        if not hop.direct or hop.listed or hop.tls_level not in STS_LEVELS:
            return None
        policy = await self.mta_sts.policy(hop.host)
        return policy if policy is not None and policy.mode in ("enforce", "testing") else None

    async def requirement(self, hop: NextHop, target: Target, sts: Policy | None) -> Requirement:
        """The requirement for one connection to `target`; Refused when it must not be made."""
        level = hop.tls_level
        if level in ("none", "may", "encrypt") and sts is None:
            return Requirement(level, source="tls_policy" if hop.listed else "")
        if level in ("verify", "secure"):
            return Requirement("verify", names=_names(hop, target, level), ca_file=hop.ca_file,
                               source="tls_policy" if hop.listed else "")
        if level in ("dane", "dane-only"):
            found = await self._tlsa(hop, target, level)
            if found is not None:
                return found
            level = "may"
        return _sts_requirement(sts, hop, target, level) if sts is not None else Requirement(level)

    async def _tlsa(self, hop: NextHop, target: Target, level: str) -> Requirement | None:
        """DANE for this host: a requirement from its TLSA records, or None when DANE does not apply."""
        if target.secure and not is_ip(target.name):
            try:
                found = await dane.lookup(self.resolver(), target.name, target.port)
            except dane.DnssecFailure as error:
                raise Refused(f"TLSA lookup for {target.name} failed: {error}; not delivering to it without "
                              "knowing its DANE policy", "dnssec-invalid", Requirement("dane", policy_type="tlsa"))
            records = tuple(str(record) for record in found.records)
            if found.records:
                return Requirement("dane", names=_dane_names(hop, target), tlsa=found.records, policy_type="tlsa",
                                   policy_strings=records, source="DANE")
            if found.secure and found.unusable:  # RFC 7672 2.2: unusable records still mean TLS is wanted
                return Requirement("encrypt", policy_type="tlsa", source="DANE (no usable TLSA record)")
        if level == "dane-only":
            why = ("has no DNSSEC-validated TLSA records" if target.secure and not is_ip(target.name)
                   else "was not found through DNSSEC-validated answers")
            raise Refused(f"{target} {why}, and the level is dane-only", "dane-required",
                          Requirement("dane", policy_type="tlsa"))
        return None


def _sts_requirement(sts: Policy, hop: NextHop, target: Target, level: str) -> Requirement:
    """MTA-STS: the MX host must be in the policy and its certificate verify; in testing mode only reported."""
    enforce = sts.mode == "enforce"
    lines = tuple(sts.text.splitlines())
    base = dict(policy_type="sts", policy_strings=lines, source=f"MTA-STS ({sts.mode})")
    if not sts.matches(target.name):
        text = (f"MX host {target.name} is not in the MTA-STS policy of {hop.host} "
                f"(mx: {', '.join(sts.mx) or 'none'})")
        if enforce:
            raise Refused(text, "validation-failure", Requirement("verify", **base))
        return Requirement(level, enforce=False, testing_failure=("validation-failure", text), **base)
    return Requirement("verify", names=(target.name,), enforce=enforce, **base)


def _names(hop: NextHop, target: Target, level: str) -> tuple[str, ...]:
    """verify: the entry's names, else tls_name, else the MX host's; secure: else the domain and below it."""
    if hop.match:
        return hop.match
    if hop.tls_name:
        return (hop.tls_name,)
    if level == "secure":
        return (hop.host, "." + hop.host)
    return (target.name,)


def _dane_names(hop: NextHop, target: Target) -> tuple[str, ...]:
    """RFC 7672 3.2.2: a DANE-TA certificate must carry the TLSA base domain or the next-hop domain."""
    names = [target.name]
    if hop.mx and hop.host != target.name:
        names.append(hop.host)
    if hop.tls_name:
        names.append(hop.tls_name)
    return tuple(names)
