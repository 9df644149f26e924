"""Where the gateway sits: the five usual setups of a mail gateway and the Microsoft 365 connectors.

A topology decides the shape of the `mta:` section: which next hop takes mail for the
relay domains (`internal_relay`: the mail server, the virus scanner, or Exchange Online),
whether outside mail goes straight to each domain's MX hosts or through a smart host
(`external_relay`), and who may relay (`my_networks`, or for Exchange Online the tenant
check of `m365.tenant_ids`, never its shared address ranges).

The first-boot wizard and unattended provisioning share this module: `fill_defaults`
completes an `mta:` section for a topology, `check` names what does not fit it (one line
per problem, each starting with the field), `infer` recognises the topology of an existing
section, and `other_side` lists what the admin configures on the other side (Exchange,
the virus scanner, the relay server, Microsoft 365), with this appliance's name and
address filled in.
"""

from __future__ import annotations

import copy
import ipaddress
from dataclasses import dataclass
from typing import Any

from relay.config import EXCHANGE_ONLINE_NETWORKS, MtaConfig, to_dict

EXO_SUFFIX = "mail.protection.outlook.com"
EXO_TLS_NAME = f"*.{EXO_SUFFIX}"
DEFAULT_MARKER = "X-Postern-Processed"


@dataclass(frozen=True)
class Topology:
    name: str
    title: str
    summary: str
    internal: str  # what the internal relay host is, in words
    smart_host: bool  # outside mail goes through external_relay (else: MX lookups)
    scanner: bool = False
    m365: bool = False

    @property
    def sibling(self) -> str:
        """The same setup with the other way of delivering outside mail (direct <-> via relay)."""
        return {
            "direct": "via-relay", "via-relay": "direct",
            "virus-scanner": "virus-scanner-via-relay", "virus-scanner-via-relay": "virus-scanner",
        }.get(self.name, self.name)


TOPOLOGIES: dict[str, Topology] = {
    topology.name: topology
    for topology in (
        Topology("direct", "Direct delivery",
                 "Between the internal mail server and the Internet; outside mail goes to each domain's MX hosts.",
                 "internal mail server", smart_host=False),
        Topology("via-relay", "Via relay (smart host)",
                 "Between the internal mail server and a relay server that delivers outside mail.",
                 "internal mail server", smart_host=True),
        Topology("virus-scanner", "With virus scanner",
                 "Between the virus scanner and the Internet; outside mail goes to each domain's MX hosts.",
                 "virus scanner", smart_host=False, scanner=True),
        Topology("virus-scanner-via-relay", "Virus scanner via relay",
                 "Between the virus scanner and a relay server that delivers outside mail.",
                 "virus scanner", smart_host=True, scanner=True),
        Topology("m365", "Microsoft 365 / Exchange Online",
                 "Exchange Online routes mail through this gateway with two connectors and a transport rule.",
                 "Exchange Online", smart_host=True, m365=True),
    )
}
NAMES = tuple(TOPOLOGIES)


def check_name(value: Any) -> str:
    if not isinstance(value, str) or value not in TOPOLOGIES:
        raise ValueError(f"{value!r} is not a topology: use one of {', '.join(NAMES)}")
    return value


def exo_endpoint(domain: str) -> str:
    """Exchange Online's inbound host for a domain: example.com -> example-com.mail.protection.outlook.com."""
    return f"{domain.lower().rstrip('.').replace('.', '-')}.{EXO_SUFFIX}"


def is_exo_host(host: str) -> bool:
    return host.lower().rstrip(".").endswith("." + EXO_SUFFIX)


def fill_defaults(topology: str, mta: dict) -> dict:
    """`mta` with what the topology implies and the section leaves open; never overrides a value given."""
    shape = TOPOLOGIES[topology]
    mta = copy.deepcopy(mta) if isinstance(mta, dict) else {}
    if not shape.smart_host:
        relay = mta.setdefault("external_relay", {})
        if isinstance(relay, dict):
            relay.setdefault("host", "")
    if shape.m365:
        for key in ("internal_relay", "external_relay"):
            relay = mta.get(key)
            if isinstance(relay, dict) and isinstance(relay.get("host"), str) and is_exo_host(relay["host"]):
                # Exchange Online requires TLS and its certificate carries the protection domain.
                relay.setdefault("tls", "verify")
                relay.setdefault("tls_name", EXO_TLS_NAME)
        marker = mta.setdefault("marker", {})
        if isinstance(marker, dict):
            marker.setdefault("enabled", True)
    return mta


def _same_host(a: str, b: str) -> bool:
    return bool(a) and a.lower().rstrip(".") == b.lower().rstrip(".")


def check(topology: str, mta: MtaConfig) -> list[str]:
    """What in a valid `mta:` section does not fit the topology; one line per problem."""
    shape = TOPOLOGIES[topology]
    problems = []
    if not mta.relay_domains:
        problems.append(
            f"mta.relay_domains: the {shape.title} setup receives mail for your domains: "
            "name at least one, such as example.com"
        )
    if not mta.internal_relay.host:
        problems.append(
            f"mta.internal_relay.host: name the {shape.internal} that takes the mail for the relay domains"
        )
    external = mta.external_relay.host
    if shape.smart_host and not shape.m365 and not external:
        problems.append(
            f"mta.external_relay.host: the {shape.title} setup sends outside mail through a relay server: "
            f"name it, or choose topology {shape.sibling} to deliver by MX lookup"
        )
    if not shape.smart_host and external:
        problems.append(
            f"mta.external_relay.host: the {shape.title} setup delivers outside mail to each domain's MX hosts: "
            f"leave it empty, or choose topology {shape.sibling} to use a relay server"
        )
    for key in ("internal_relay", "external_relay"):
        host = getattr(mta, key).host
        if _same_host(host, mta.hostname) or _same_host(host, mta.helo_name):
            problems.append(
                f"mta.{key}.host: {host} is this gateway's own name: mail sent there loops back to itself; "
                "name the next mail server"
            )
    for index, network in enumerate(mta.my_networks):
        if network.prefixlen == 0:
            problems.append(
                f"mta.my_networks[{index}]: {network} is the whole Internet: the gateway would relay for anyone "
                "(an open relay); list only your mail server or virus scanner, such as 192.168.1.10/32"
            )
    if shape.m365:
        problems += _check_m365(mta)
    return problems


def _check_m365(mta: MtaConfig) -> list[str]:
    problems = []
    m365 = getattr(mta, "m365", None)
    if m365 is None or not m365.tenant_ids:
        problems.append(
            "mta.m365.tenant_ids: Exchange Online is shared by every tenant: name your tenant ID (the GUID on the "
            "overview page of Microsoft Entra ID) so that only your tenant may relay through this gateway"
        )
    exo = tuple(m365.networks) if m365 is not None else EXCHANGE_ONLINE_NETWORKS
    for index, network in enumerate(mta.my_networks):
        if network.prefixlen and any(network.version == shared.version and network.overlaps(shared) for shared in exo):
            problems.append(
                f"mta.my_networks[{index}]: {network} belongs to Exchange Online, whose servers every tenant shares: "
                "trusting it makes an open relay for all of them; remove it (the tenant check lets your tenant relay)"
            )
    marker = getattr(mta, "marker", None)
    if marker is not None and not marker.enabled:
        problems.append(
            "mta.marker.enabled: the transport rule's loop-prevention exception needs the marker header: "
            "set enabled: true"
        )
    return problems


def infer(mta: MtaConfig) -> str:
    """The topology an `mta:` section describes (a configuration exported without one)."""
    m365 = getattr(mta, "m365", None)
    if (m365 is not None and m365.tenant_ids) or is_exo_host(mta.internal_relay.host):
        return "m365"
    return "via-relay" if mta.external_relay.host else "direct"


# --- what to configure on the other side ---


@dataclass(frozen=True)
class OtherSide:
    """One part of the other side: a title and its steps, in words an admin follows."""

    title: str
    steps: tuple[str, ...]


def _first_address(networks) -> str:
    for network in networks:
        return str(network.network_address) if network.prefixlen == network.max_prefixlen else str(network)
    return ""


def other_side(topology: str, mta: MtaConfig, address: str = "",
               algorithms: dict[str, str] | None = None) -> list[OtherSide]:
    """The admin's steps outside this appliance for the topology (connectors, DNS and the other side of each hop;
    Microsoft 365 too), with this gateway's hostname and address; last, mail authentication's (`algorithms`:
    the signing keys' that are known, for the ARC sealing domain)."""
    auth = to_dict(mta)["authentication"]
    return _hop_sides(topology, mta, address) + authentication_sides(topology, auth, algorithms)


def _hop_sides(topology: str, mta: MtaConfig, address: str) -> list[OtherSide]:
    shape = TOPOLOGIES[topology]
    host = mta.hostname
    here = f"{host} ({address})" if address else host
    smart = address or host
    domains = ", ".join(mta.relay_domains) or "your domains"
    internal = mta.internal_relay.host or f"the {shape.internal}"
    sides: list[OtherSide] = []
    if shape.m365:
        return _m365_sides(mta, here, address, domains)
    sender = f"virus scanner {internal}" if shape.scanner else f"mail server {internal}"
    if shape.scanner:
        sides.append(OtherSide(f"On the virus scanner ({internal})", (
            f"Relay all outgoing mail through the smart host {smart} on port 25.",
            f"Accept mail for {domains} from {here} and pass it on to the internal mail server.",
            "The internal mail server keeps sending outgoing mail to the virus scanner.",
        )))
    else:
        sides.append(OtherSide(f"On the internal mail server ({internal})", (
            "Exchange: add a send connector: usage Custom, address space SMTP:* with cost 1, "
            f"route mail through the smart host {smart}, smart host authentication None.",
            f"Accept mail for {domains} from {here} (a receive connector that allows it anonymously).",
        )))
    if shape.smart_host:
        relay = mta.external_relay.host
        sides.append(OtherSide(f"On the relay server ({relay})", (
            f"Allow {here} to relay outgoing mail"
            + (" (it logs in with the user name set here)." if mta.external_relay.username else "."),
            f"Send incoming mail for {domains} to {here}.",
        )))
    else:
        sides.append(OtherSide("In DNS", (
            f"The PTR record of the public address outgoing mail leaves from names {host}, "
            f"and {host} has an A record back to that address; otherwise receivers may refuse the mail.",
        )))
    if not shape.smart_host:
        sides.append(OtherSide("Incoming mail", (
            f"Forward port 25 of your public address to {address or host} on the firewall (NAT), "
            f"or point the MX records of {domains} at {host}.",
        )))
    trusted = _first_address(mta.my_networks)
    if trusted and trusted != mta.internal_relay.host:
        sides.append(OtherSide("This gateway", (
            f"Trusts {', '.join(str(n) for n in mta.my_networks)} to send outgoing mail; "
            f"check that the {sender} sends from there.",
        )))
    return sides


def _m365_sides(mta: MtaConfig, here: str, address: str, domains: str) -> list[OtherSide]:
    host = mta.hostname
    marker = getattr(mta, "marker", None)
    header = marker.header if marker is not None else DEFAULT_MARKER
    value = (marker.value if marker is not None else "") or host
    tenants = ", ".join(getattr(getattr(mta, "m365", None), "tenant_ids", ()) or ()) or "your tenant ID"
    return [
        OtherSide("Exchange admin center: connector from Office 365 to this gateway", (
            "From: Office 365; To: Your organization's email server; name it \"To Postern\".",
            "Use only when a transport rule redirects messages to this connector.",
            f"Route email through the smart host {host}.",
            "Always use TLS, and connect only if the certificate is issued by a trusted CA and carries "
            f"the name {host} (a self-signed certificate is refused).",
        )),
        OtherSide("Exchange admin center: connector from this gateway to Office 365", (
            "From: Your organization's email server; To: Office 365; name it \"From Postern\".",
            f"Identify the gateway by its TLS certificate name {host}, not by its IP address: Exchange Online "
            "attributes mail to a tenant by the certificate.",
            f"Turn on Enhanced Filtering for Connectors and list {address or 'the gateway address'} in it, so "
            "that SPF is checked against the original sender.",
        )),
        OtherSide("Exchange admin center: transport rule", (
            "Name it \"Through Postern\"; apply if the recipient is outside the organization (and, for incoming "
            "mail, a second rule: if the sender is outside the organization).",
            "Do: redirect the message to the connector \"To Postern\".",
            f"Except if the message header {header} matches {value}: the gateway stamps it, and without this "
            "exception mail loops between Exchange Online and the gateway.",
        )),
        OtherSide("Exchange Online protection", (
            f"Add {address or 'the gateway address'} to the IP Allow list of the connection filter policy, "
            "so that mail the gateway returns is not filtered twice.",
        )),
        OtherSide("This gateway", (
            f"Relays outside mail only for tenant {tenants} and takes mail for {domains}.",
        )),
    ]


def arc_sealer_steps(sealing_domain: str) -> tuple[str, ...]:
    """Exchange Online's side of mail authentication behind this gateway (docs/authentication.md): trust
    its ARC seal, and see the original client through Enhanced Filtering."""
    return (
        "Trusted ARC sealer. In the Defender portal: Email & collaboration, Policies & rules, Threat policies, "
        f"Email authentication settings, ARC. Add: {sealing_domain or '(the signing domain)'}",
        "Exchange Online then uses this gateway's results for mail whose own checks fail only because of the hop "
        "through it: its headers show arc=pass and compauth passing.",
        "Enhanced Filtering. Where your MX points at this gateway and it passes mail to Exchange Online through "
        "an inbound connector: in the Exchange admin center, Mail flow, Connectors, that connector, turn on "
        "Enhanced Filtering for Connectors and skip this gateway's addresses, so that Exchange Online sees the "
        "original client's address.",
    )


def sealing_domain(auth: dict, algorithms: dict[str, str] | None = None) -> str:
    """The domain this gateway seals ARC as, from an `mta.authentication` section: `arc_domain`, else the
    first signing domain with an RSA key (where `algorithms` tells), as relay.dkim_sign.sealing_key picks
    it; '' when it has none."""
    if auth.get("arc_domain"):
        return auth["arc_domain"]
    domains = [domain for domain in auth.get("dkim_keys") or {} if (algorithms or {}).get(domain, "rsa") == "rsa"]
    return domains[0] if domains else ""


def authentication_sides(topology: str, auth: dict, algorithms: dict[str, str] | None = None) -> list[OtherSide]:
    """From an `mta.authentication` section: the DKIM records to publish, and for Microsoft 365 the settings
    that make Exchange Online keep this gateway's results."""
    sides = []
    keys = auth.get("dkim_keys") or {}
    if keys:
        sides.append(OtherSide("In DNS: DKIM", tuple(
            f"Publish the TXT record {key.get('selector')}._domainkey.{domain}: its value is shown once the setup "
            f"is applied, and by postern-appliance dkim show {domain}. Mail from {domain} is signed from then on."
            for domain, key in keys.items())))
    if TOPOLOGIES[topology].m365 and auth.get("arc_seal", True):
        sealer, outcome, _ = arc_sealer_steps(sealing_domain(auth, algorithms))  # Enhanced Filtering: a connector step
        sides.append(OtherSide("Microsoft 365: keep this gateway's authentication results", (sealer, outcome)))
    return sides


def ip_or_none(text: str) -> str | None:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None
