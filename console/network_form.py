"""The network screen's form as data: its fields, what it starts from, the document it proposes, where problems go.

Pure functions, no Textual and no I/O: the screen fills a `NetworkForm` from the
configuration file's `network:` section (or, for what the file does not say, from the
live state), turns the edited form back into a whole configuration document, and puts
each problem `appliance.network.model.parse_network` finds next to the field it names.
A field's label and help are the model's own (`SPECS`: `relay.fields.Field` descriptions),
as the MTA form's are the relay's. What the form only shows (an interface looked at, the
live DNS servers) is written to the file only with an edit.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, replace

from appliance.network.live import LiveInterface, LiveState
from appliance.network.model import DNS_FIELDS, INTERFACE_FIELDS, NETWORK_FIELDS, parse_network
from appliance.store import diff_documents
from relay.fields import Field

GENERAL = ""  # a problem that belongs to no field of the form


def _spec(fields: tuple[Field, ...], name: str) -> Field:
    return next(field for field in fields if field.name == name)


# Each field of the form, and the model's description of the setting it edits.
SPECS: dict[str, Field] = {
    "interface": _spec(NETWORK_FIELDS, "interfaces").entry,
    "mode": _spec(INTERFACE_FIELDS, "dhcp"),
    "address": _spec(INTERFACE_FIELDS, "address"),
    "gateway": _spec(INTERFACE_FIELDS, "gateway"),
    "hostname": _spec(NETWORK_FIELDS, "hostname"),
    "dns": _spec(DNS_FIELDS, "servers"),
    "search": _spec(DNS_FIELDS, "search"),
}
FIELDS = tuple(SPECS)


@dataclass(frozen=True)
class NetworkForm:
    interface: str
    dhcp: bool
    address: str
    gateway: str
    hostname: str
    dns: str
    search: str


def words(text: str) -> list[str]:
    """'192.0.2.53, 192.0.2.54' or '192.0.2.53 192.0.2.54' -> the two."""
    return [word for word in re.split(r"[\s,;]+", text.strip()) if word]


def _joined(value) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return ", ".join(str(item) for item in value)
    return str(value)


def section_of(document: dict) -> dict:
    section = document.get("network")
    return section if isinstance(section, dict) else {}


def configured_interfaces(document: dict) -> dict:
    interfaces = section_of(document).get("interfaces")
    return interfaces if isinstance(interfaces, dict) else {}


def interface_names(document: dict, live: LiveState) -> list[str]:
    """The live interfaces, then any the configuration names that this system does not have."""
    names = [interface.name for interface in live.interfaces]
    return names + [str(name) for name in configured_interfaces(document) if str(name) not in names]


def live_interface(live: LiveState | None, name: str) -> LiveInterface | None:
    """The interface called `name` as it is now; None when this system has none."""
    return next((interface for interface in live.interfaces if interface.name == name), None) if live else None


def default_interface(live: LiveState | None) -> str:
    """The interface an admin means first: the one with the default route, else the first one up, else the first."""
    interfaces = live.interfaces if live else ()
    for interface in interfaces:
        if interface.gateways:
            return interface.name
    for interface in interfaces:
        if interface.link == "up":
            return interface.name
    return interfaces[0].name if interfaces else ""


def first_interface(document: dict, live: LiveState) -> str:
    """The interface the form shows first: a configured one (the default route's, if configured), else
    the default route's."""
    configured = [name for name in interface_names(document, live) if name in configured_interfaces(document)]
    preferred = default_interface(live)
    if configured:
        return preferred if preferred in configured else configured[0]
    return preferred


def _interface_values(name: str, document: dict, live: LiveInterface | None) -> tuple[bool, str, str]:
    configured = configured_interfaces(document)
    if name in configured:
        settings = configured[name] if isinstance(configured[name], dict) else {}
        dhcp = settings.get("dhcp") is True
        return dhcp, _joined(settings.get("address")), _joined(settings.get("gateway"))
    if live is None:
        return True, "", ""
    if live.dhcp:
        return True, "", ""
    return False, ", ".join(a.address for a in live.addresses), ", ".join(live.gateways)


def initial(document: dict, live: LiveState, interface: str) -> NetworkForm:
    """The form for one interface: the configuration's values, else the live ones."""
    section = section_of(document)
    dhcp, address, gateway = _interface_values(interface, document, live_interface(live, interface))
    dns = section.get("dns") if isinstance(section.get("dns"), dict) else None
    if dns is not None:
        servers, search = _joined(dns.get("servers")), _joined(dns.get("search"))
    elif any(i.dhcp for i in live.interfaces):
        servers, search = "", ""  # the DHCP server's: writing them down would pin them
    else:
        servers, search = ", ".join(live.dns_servers), ", ".join(live.search_domains)
    hostname = section.get("hostname") or ""  # empty: the hostname is left as it is
    return NetworkForm(interface, dhcp, address, gateway, str(hostname or ""), servers, search)


def for_interface(form: NetworkForm, document: dict, live: LiveState, interface: str) -> NetworkForm:
    """Switch the form to another interface, keeping the hostname and DNS as edited."""
    other = initial(document, live, interface)
    return replace(other, hostname=form.hostname, dns=form.dns, search=form.search)


def _one_or_list(items: list[str]):
    return items[0] if len(items) == 1 else items


def proposed(document: dict, form: NetworkForm, start: NetworkForm | None = None) -> dict:
    """The whole document with the form's values in its network section.

    The interface is written only when its values differ from `start` (what the form showed at
    first), and the DNS servers and search domains only when they do or something else in the
    section changes (a static network needs them), so that looking at an interface or at the
    DNS servers in force does not add them to the configuration."""
    document = copy.deepcopy(document) if isinstance(document, dict) else {}
    before = copy.deepcopy(section_of(document))
    section = section_of(document)
    document["network"] = section
    if form.hostname.strip():
        section["hostname"] = form.hostname.strip()
    else:
        section.pop("hostname", None)
    interface_changed = start is None or (form.dhcp, form.address, form.gateway) != (start.dhcp, start.address,
                                                                                     start.gateway)
    if interface_changed and form.interface:
        interfaces = configured_interfaces(document)
        section["interfaces"] = interfaces
        old = interfaces.get(form.interface) if isinstance(interfaces.get(form.interface), dict) else {}
        settings: dict = {"dhcp": True} if form.dhcp or "dhcp" in old else {}
        if "dhcp" in old and not form.dhcp:
            settings["dhcp"] = False
        if not form.dhcp:
            address = words(form.address)
            if address:
                settings["address"] = _one_or_list(address)
            gateway = words(form.gateway)
            if gateway:
                settings["gateway"] = _one_or_list(gateway)
            if "broadcast" in old and settings.get("address") == old.get("address"):
                settings["broadcast"] = old["broadcast"]
        if "mtu" in old:
            settings["mtu"] = old["mtu"]
        interfaces[form.interface] = settings
    servers, search = words(form.dns), words(form.search)
    as_shown = start is not None and (servers, search) == (words(start.dns), words(start.search))
    if as_shown and section == before:
        pass  # nothing edited: the file keeps what it says (the servers in force are not pinned)
    elif servers or search:
        section["dns"] = {key: value for key, value in (("servers", servers), ("search", search)) if value}
    else:
        section.pop("dns", None)
    if not section:
        document.pop("network")
    return document


def check(document: dict) -> list[str]:
    """The problems of the network section alone (pure and quick: run as the admin types)."""
    return parse_network(document.get("network"))[1]


def place(problem: str, interface: str) -> tuple[str, str]:
    """(field, words): which form field a problem line belongs to, and the words to show there."""
    key, sep, words_ = problem.partition(": ")
    if not sep:
        return GENERAL, problem
    base = re.sub(r"\[\d+\]\Z", "", key)
    own = f"network.interfaces.{interface}"
    fields = {
        "network.hostname": "hostname", f"{own}.address": "address", f"{own}.gateway": "gateway",
        f"{own}.dhcp": "mode", f"{own}.broadcast": "address", own: "interface",
        "network.dns.servers": "dns", "network.dns": "dns", "network.dns.search": "search",
    }
    if base in fields:
        shown = words_ if base == key else f"{key[len(base):]} {words_}"
        return fields[base], shown
    return GENERAL, problem


def changes(old: dict, new: dict) -> list[str]:
    """What applying would change in the network section, one line a key (an empty section is no section)."""
    def network(document: dict) -> dict:
        section = section_of(document)
        return {"network": section} if section else {}

    return [str(change) for change in diff_documents(network(old), network(new))]
