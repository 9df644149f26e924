"""The Microsoft 365 tenant check.

Exchange Online's servers, addresses and certificates are shared by every tenant,
so a gateway that lets Exchange Online's address ranges relay is an open relay
for all of them. A client in `m365.networks` may therefore relay to outside
domains only when Exchange Online says the message is from one of our tenants:
its `X-MS-Exchange-CrossTenant-Id` header carries one of `m365.tenant_ids`.

The header is only as good as the connection it came over: Exchange Online stamps
it, but the check trusts it only from Exchange Online's own addresses. Microsoft
does not stamp it on every message (some system-generated messages lack it); such
messages are refused when they go outside, and accepted for the relay domains.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import headers
from .config import MtaConfig

TENANT_HEADER = "X-MS-Exchange-CrossTenant-Id"


@dataclass(frozen=True)
class TenantCheck:
    allowed: bool
    tenant: str  # what the message carried, for the log: "none" when nothing
    reason: str = ""


def _shown(value: str) -> str:
    text = "".join(ch if ch.isascii() and ch.isprintable() and ch != " " else "?" for ch in value)
    return text[:64] or "(empty)"


def check_tenant(config: MtaConfig, header_section: bytes) -> TenantCheck:
    """May this message, from an Exchange Online client, go to outside domains?"""
    seen = [value.lower() for value in headers.values(header_section, TENANT_HEADER)]
    distinct = list(dict.fromkeys(seen))
    shown = ",".join(_shown(value) for value in distinct) or "none"
    if not distinct:
        return TenantCheck(False, shown, f"the message has no {TENANT_HEADER} header")
    if len(distinct) > 1:
        return TenantCheck(False, shown, f"the message has conflicting {TENANT_HEADER} headers")
    if distinct[0] not in config.m365.tenant_ids:
        return TenantCheck(False, shown, f"tenant {shown} is not allowed")
    return TenantCheck(True, shown)
