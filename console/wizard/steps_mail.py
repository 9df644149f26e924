"""Steps 4 to 8: the topology, the relay domains, the internal and the external relay host, my networks."""

from __future__ import annotations

import asyncio

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import Checkbox, Input, OptionList, RadioButton, RadioSet, Static
from textual.widgets.option_list import Option

from appliance.topology import TOPOLOGIES, exo_endpoint, is_exo_host

from ..screens.confirm import ConfirmScreen
from . import system
from .diagrams import diagram
from .draft import Draft, join_list, split_list
from .step import Pick, StepScreen, Tick, field_input, value_of


def port_value(text: str):
    """A port as typed: a number when it is one, else the text, for the check to name."""
    return int(text) if text.isdigit() else text


class TopologyStep(StepScreen):
    NAME = "topology"
    TITLE = "Topology"
    HELP = "Where the gateway sits in your mail flow. Up and down show each setup."
    FIELDS = {"topology": ("topology", "Topology")}

    def compose_fields(self) -> ComposeResult:
        options = OptionList(*[Option(shape.title, id=name) for name, shape in TOPOLOGIES.items()], id="topology")
        options.border_title = "Topology"
        yield options
        yield Static(id="diagram")

    def load(self, draft: Draft) -> None:
        options = self.query_one("#topology", OptionList)
        options.highlighted = list(TOPOLOGIES).index(draft.topology)
        self.show_diagram(draft.topology)

    def on_option_list_option_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        self.show_diagram(event.option.id or "direct")

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.action_next()

    def show_diagram(self, name: str) -> None:
        shape = TOPOLOGIES[name]
        panel = self.query_one("#diagram", Static)
        panel.border_title = shape.title
        panel.update(Text("\n".join(diagram(name)) + "\n" + shape.summary, no_wrap=False))

    def store(self, draft: Draft) -> None:
        options = self.query_one("#topology", OptionList)
        if options.highlighted is not None:
            draft.set("topology", options.get_option_at_index(options.highlighted).id)


class DomainsStep(StepScreen):
    NAME = "domains"
    TITLE = "Relay domains"
    HELP = ("The domains this gateway accepts mail for from anyone: your incoming mail. It passes that mail on "
            "to the internal relay host (next step). Separate domains with commas.")
    FIELDS = {"mta.relay_domains": ("domains", "Relay domains"), "mta.match_subdomains": ("subdomains", "Subdomains")}

    def compose_fields(self) -> ComposeResult:
        yield field_input("domains", "Relay domains", placeholder="example.com, example.org")
        yield Tick("Also accept subdomains (sales.example.com)", id="subdomains")

    def load(self, draft: Draft) -> None:
        self.query_one("#domains", Input).value = join_list(draft.get("mta.relay_domains") or [])
        self.query_one("#subdomains", Checkbox).value = bool(draft.get("mta.match_subdomains", False))

    def store(self, draft: Draft) -> None:
        draft.set("mta.relay_domains", [d.lower().rstrip(".") for d in split_list(value_of(self, "domains"))])
        draft.set("mta.match_subdomains", self.query_one("#subdomains", Checkbox).value)


def relay_host_settings(draft: Draft, key: str, host: str, port, mx: bool) -> dict:
    """The relay host's section with the new host, port and mx; its TLS settings stay while the host does."""
    old = draft.get(f"mta.{key}") or {}
    settings = dict(old) if isinstance(old, dict) and old.get("host") == host else {}
    settings.update({"host": host, "port": port, "mx": mx})
    return settings


class InternalStep(StepScreen):
    NAME = "internal"
    TITLE = "Internal relay host"
    FIELDS = {"mta.internal_relay.host": ("host", "Host"), "mta.internal_relay.port": ("port", "Port"),
              "mta.internal_relay.mx": ("mx", "MX lookup"), "mta.internal_relay": ("host", "Host"),
              "mta.m365": ("tenant", "Tenant ID")}
    BINDINGS = [Binding("ctrl+t", "check", "Check connection", id="wizard.check")]

    @property
    def shape(self):
        return TOPOLOGIES[self.draft.topology]

    def help_text(self) -> str:
        shape = self.shape
        if shape.m365:
            return ("Mail for the relay domains goes back to Exchange Online, to your tenant's own host "
                    "(domain-com.mail.protection.outlook.com, with verified TLS). The tenant ID limits relaying "
                    "to your tenant: Exchange Online's servers are shared by every tenant.")
        return (f"The {shape.internal} that takes the mail for the relay domains (Exchange, Postfix...). "
                "Leave MX lookup off to connect to the host itself. Ctrl+T checks the connection.")

    def compose_fields(self) -> ComposeResult:
        with Horizontal(classes="row"):
            yield field_input("host", f"Host ({self.shape.internal})", placeholder="mail.example.com or 192.168.1.10")
            yield field_input("port", "Port", classes="narrow")
        yield Tick("Look up the MX records of this host (mx)", id="mx")
        tenant = field_input("tenant", "Microsoft 365 tenant ID", placeholder="the GUID on the overview page of Microsoft Entra ID")
        tenant.display = self.shape.m365
        yield tenant
        yield Static(id="hop", classes="report")

    def load(self, draft: Draft) -> None:
        host = draft.get("mta.internal_relay.host") or ""
        domains = draft.get("mta.relay_domains") or []
        if self.shape.m365 and not host and domains:
            host = exo_endpoint(domains[0])
        elif not self.shape.m365 and is_exo_host(host):
            host = ""
        self.query_one("#host", Input).value = host
        self.query_one("#port", Input).value = str(draft.get("mta.internal_relay.port", 25))
        self.query_one("#mx", Checkbox).value = bool(draft.get("mta.internal_relay.mx", False))
        self.query_one("#tenant", Input).value = join_list(draft.get("mta.m365.tenant_ids") or [])
        hop = self.query_one("#hop", Static)
        hop.border_title = "Connection check"
        hop.update(Text("Not checked yet: Ctrl+T connects, and so does Next.", style="dim"))

    def store(self, draft: Draft) -> None:
        host = value_of(self, "host").lower().rstrip(".")
        settings = relay_host_settings(draft, "internal_relay", host, port_value(value_of(self, "port")),
                                       self.query_one("#mx", Checkbox).value)
        draft.set("mta.internal_relay", settings)
        if self.shape.m365:
            draft.set("mta.m365.tenant_ids", [t.lower() for t in split_list(value_of(self, "tenant"))])

    def action_check(self) -> None:
        candidate = self.draft.copy()
        self.store(candidate)
        if not candidate.problems_for(("mta.internal_relay",), self.wizard.root):
            self.run_worker(self.check(candidate), group="hop-check", exclusive=True)

    async def check(self, draft: Draft):
        host, port = draft.get("mta.internal_relay.host"), draft.get("mta.internal_relay.port")
        hop = self.query_one("#hop", Static)
        hop.remove_class("-ok", "-bad")
        hop.update(Text(f"Connecting to {host} port {port}...", style="dim"))
        listen_ports = {int(str(a).rsplit(":", 1)[1]) for a in draft.get("mta.listen", ["0.0.0.0:25"]) or []
                        if str(a).rsplit(":", 1)[-1].isdigit()}
        servers = [str(s) for s in draft.get("network.dns.servers", []) or []]
        hostname = draft.get("mta.hostname") or "postern.localdomain"
        report = await asyncio.to_thread(system.next_hop, host, port, hostname, listen_ports, servers)
        text = Text()
        for line in report.lines:
            text.append(line + "\n")
        for warning in report.warnings:
            text.append(f"warning: {warning}\n", style="yellow")
        for error in report.errors:
            text.append(f"{error}\n", style="bold red")
        if report.ok:
            text.append(f"The {self.shape.internal} answers.", style="bold green")
        hop.add_class("-ok" if report.ok else "-bad")
        text.rstrip()
        hop.update(text)
        return report

    async def leave(self, draft: Draft) -> bool:
        self.show_busy("Checking the connection...")
        report = await self.check(draft)
        self.show_problems([])
        if report.ok:
            return True
        problem = (report.errors or report.warnings)[0]
        return bool(await self.app.push_screen_wait(ConfirmScreen(
            f"The connection check found a problem:\n\n{problem}\n\nContinue anyway? (The setup can be "
            "finished before that server is ready.)")))


class ExternalStep(StepScreen):
    NAME = "external"
    TITLE = "Outgoing mail"
    FIELDS = {"mta.external_relay.host": ("host", "Smart host"), "mta.external_relay.port": ("port", "Port"),
              "mta.external_relay.mx": ("mx", "MX lookup"), "mta.external_relay.username": ("username", "User name"),
              "mta.external_relay.password": ("password", "Password"),
              "mta.external_relay.password_file": ("password", "Password"), "mta.external_relay": ("host", "Smart host"),
              "mta.external_relay.tls_name": ("host", "Smart host"),  # a login needs the name in its certificate
              "topology": ("delivery", "Delivery")}

    def help_text(self) -> str:
        if TOPOLOGIES[self.draft.topology].m365:
            return ("Outgoing mail goes back to Exchange Online, which sends it on; or straight to "
                    "each domain's MX hosts.")
        return ("Deliver outside mail straight to each domain's MX hosts (then the PTR record of step 2 matters), "
                "or hand it to a smart host: a relay server, perhaps your provider's, with an optional login.")

    def compose_fields(self) -> ComposeResult:
        delivery = RadioSet(Pick("Straight to each domain's MX hosts", name="mx"),
                            Pick("Through a smart host (relay server)", name="smarthost"), id="delivery")
        delivery.border_title = "Delivery"
        yield delivery
        with Horizontal(classes="row smarthost"):
            yield field_input("host", "Smart host", placeholder="smtp.provider.example")
            yield field_input("port", "Port", classes="narrow")
        yield Tick("Look up the MX records of the smart host (mx)", id="mx", classes="smarthost")
        with Horizontal(classes="row smarthost"):
            yield field_input("username", "User name (optional)")
            yield field_input("password", "Password", password=True)

    def load(self, draft: Draft) -> None:
        shape = TOPOLOGIES[draft.topology]
        host = draft.get("mta.external_relay.host") or ""
        domains = draft.get("mta.relay_domains") or []
        smart = shape.smart_host and (bool(host) or not shape.m365 or bool(domains))
        if shape.m365 and not host and domains:
            host = exo_endpoint(domains[0])
        self.query_one("#host", Input).value = host if shape.smart_host else ""
        self.query_one("#port", Input).value = str(draft.get("mta.external_relay.port", 25))
        self.query_one("#mx", Checkbox).value = bool(draft.get("mta.external_relay.mx", False))
        self.query_one("#username", Input).value = draft.get("mta.external_relay.username") or ""
        password = self.query_one("#password", Input)
        password.value = draft.get("mta.external_relay.password") or ""
        if draft.get("mta.external_relay.password_file") and not password.value:
            password.placeholder = "(kept: leave empty)"
        self.query_one("#delivery", RadioSet).query(RadioButton)[1 if smart else 0].value = True
        self.show_smarthost(smart)

    def show_smarthost(self, smart: bool) -> None:
        for widget in self.query(".smarthost"):
            widget.display = smart

    @property
    def smart(self) -> bool:
        button = self.query_one("#delivery", RadioSet).pressed_button
        return button is not None and button.name == "smarthost"

    def on_radio_set_changed(self, event: RadioSet.Changed) -> None:
        self.show_smarthost(self.smart)

    def store(self, draft: Draft) -> None:
        shape = TOPOLOGIES[draft.topology]
        if not self.smart:
            draft.set("mta.external_relay", {"host": "", "port": 25, "mx": False})
            if shape.smart_host and not shape.m365:
                draft.set("topology", shape.sibling)
            return
        if not shape.smart_host:
            draft.set("topology", shape.sibling)
        host = value_of(self, "host").lower().rstrip(".")
        settings = relay_host_settings(draft, "external_relay", host, port_value(value_of(self, "port")),
                                       self.query_one("#mx", Checkbox).value)
        username, password = value_of(self, "username"), self.query_one("#password", Input).value
        settings.pop("username", None)
        if username:
            settings["username"] = username
        if password:
            settings.pop("password_file", None)
            settings["password"] = password
        elif not username:
            settings.pop("password_file", None)
            settings.pop("password", None)
        draft.set("mta.external_relay", settings)


class NetworksStep(StepScreen):
    NAME = "networks"
    TITLE = "My networks"
    FIELDS = {"mta.my_networks": ("networks", "My networks")}

    def help_text(self) -> str:
        if TOPOLOGIES[self.draft.topology].m365:
            return ("Clients that may send mail anywhere through the gateway. Exchange Online does not belong "
                    "here: its servers are shared by every tenant, and the tenant ID already lets yours relay. "
                    "Leave it empty unless a server of your own also sends through the gateway.")
        return ("Clients that may send mail to any domain through the gateway: the internal mail server or "
                "virus scanner. Networks like 192.168.1.10/32 or 10.0.0.0/8, separated by commas; never the "
                "whole Internet.")

    def compose_fields(self) -> ComposeResult:
        yield field_input("networks", "My networks", placeholder="192.168.1.10/32")
        yield Static(id="prefill", classes="report")

    def load(self, draft: Draft) -> None:
        networks = draft.get("mta.my_networks") or []
        self.query_one("#networks", Input).value = join_list(networks)
        note = self.query_one("#prefill", Static)
        note.display = False
        host = draft.get("mta.internal_relay.host") or ""
        if not networks and host and not TOPOLOGIES[draft.topology].m365:
            note.display = True
            note.update(Text(f"Looking up the address of {host}...", style="dim"))
            servers = [str(s) for s in draft.get("network.dns.servers", []) or []]
            self.prefill(host, servers)

    @work(thread=True, exclusive=True, group="prefill")
    def prefill(self, host: str, servers: list[str]) -> None:
        addresses = system.addresses_for(host, servers)
        self.app.call_from_thread(self.show_prefill, host, addresses)

    def show_prefill(self, host: str, addresses: list[str]) -> None:
        if not self.is_attached:  # the admin moved on before DNS answered
            return
        note = self.query_one("#prefill", Static)
        field = self.query_one("#networks", Input)
        if not addresses:
            note.update(Text(f"{host} has no address in DNS: enter its network.", style="yellow"))
            return
        if not field.value:
            field.value = ", ".join(f"{a}/{128 if ':' in a else 32}" for a in addresses)
        note.update(Text(f"Filled in with the address of {host}, the {TOPOLOGIES[self.draft.topology].internal}.",
                         style="dim"))

    def store(self, draft: Draft) -> None:
        draft.set("mta.my_networks", split_list(value_of(self, "networks")))
