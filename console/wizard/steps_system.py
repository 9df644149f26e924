"""Steps 1 to 3: the network interface, the hostname (with the PTR check), the DNS servers."""

from __future__ import annotations

import asyncio
import ipaddress

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import Checkbox, Input, RadioButton, RadioSet, Static

from appliance.diagnostics.helo import PASS
from appliance.network import change
from appliance.network.live import LiveState

from ..network_form import SPECS, default_interface, live_interface
from ..screens.keep_settings import KeepSettingsScreen, listen_for_confirm
from . import system
from .draft import Draft, join_list, split_list
from .step import Pick, StepScreen, Tick, field_input, value_of

TRY_TIMEOUT = change.DEFAULT_TIMEOUT


def interface_choices(draft: Draft, state: LiveState | None) -> list[tuple[str, str]]:
    """(name, description) of every interface: the machine's, and any the draft names that it lacks."""
    choices = []
    for interface in state.interfaces if state else ():
        addresses = [a.address for a in interface.addresses if ":" not in a.address][:1]
        how = "DHCP" if interface.dhcp else "static"
        shown = f"{addresses[0]} ({how})" if addresses else "no address"
        choices.append((interface.name, f"{interface.name:<10} {interface.mac:<17}  {interface.link:<10} {shown}"))
    for name in draft.get("network.interfaces", {}) or {}:
        if name not in [known for known, _ in choices]:
            choices.append((name, f"{name:<10} {'(configured, not present)':<17}"))
    return choices


def first_choice(state: LiveState | None, choices: list[tuple[str, str]]) -> str:
    """The interface chosen until the admin picks one: the one with the default route (as on the Network screen)."""
    return default_interface(state) or (choices[0][0] if choices else "eth0")


DHCP_GIVES = "given by the DHCP server"  # what a static-only field shows while DHCP is on


class NetworkStep(StepScreen):
    NAME = "network"
    TITLE = "Network"
    HELP = ("The interface the gateway sends and receives mail on: an address from a DHCP server, or a static "
            "address with its prefix and the default gateway. Over SSH, a change must be confirmed within "
            f"{TRY_TIMEOUT:.0f} s or the previous settings come back.")

    pending: change.Change | None = None  # a change in force, waiting to be kept

    def compose_fields(self) -> ComposeResult:
        self.typed: dict[str, str] = {}  # the static address and gateway, while DHCP is on
        self.choices = interface_choices(self.draft, self.wizard.live)
        radio = RadioSet(*[Pick(label, name=name) for name, label in self.choices], id="interface")
        radio.border_title = SPECS["interface"].label
        yield radio
        yield Tick(f"Use {SPECS['mode'].label} ({SPECS['mode'].help})", id="dhcp")
        with Horizontal(classes="row"):
            for name in ("address", "gateway"):
                yield field_input(name, SPECS[name].label, placeholder=SPECS[name].help)

    @property
    def interface(self) -> str:
        radio = self.query_one("#interface", RadioSet)
        button = radio.pressed_button
        return button.name if button is not None else first_choice(self.wizard.live, self.choices)

    @property
    def FIELDS(self) -> dict[str, tuple[str, str]]:  # noqa: N802 - the base class's table, for this interface
        where = f"network.interfaces.{self.interface}"
        return {f"{where}.address": ("address", SPECS["address"].label),
                f"{where}.gateway": ("gateway", SPECS["gateway"].label),
                f"{where}.dhcp": ("dhcp", SPECS["mode"].label),
                "network.interfaces": ("interface", SPECS["interface"].label)}

    def load(self, draft: Draft) -> None:
        name = draft.get("wizard.interface") or next(iter(draft.get("network.interfaces", {}) or {}), None)
        name = name or first_choice(self.wizard.live, self.choices)
        for button in self.query(RadioButton):
            if button.name == name:
                button.value = True
        self.show_interface(draft, name)

    def show_interface(self, draft: Draft, name: str) -> None:
        settings = draft.get(f"network.interfaces.{name}")
        if isinstance(settings, dict):
            dhcp = bool(settings.get("dhcp", False))
            address, gateway = join_list(settings.get("address")), join_list(settings.get("gateway"))
        else:
            live = live_interface(self.wizard.live, name)
            dhcp = bool(live.dhcp) if live else True
            addresses = [a.address for a in live.addresses if ":" not in a.address] if live else []
            gateways = [g for g in live.gateways if ":" not in g] if live else []
            address = addresses[0] if addresses and not dhcp else ""
            gateway = gateways[0] if gateways and not dhcp else ""
        self.typed = {}
        self.query_one("#dhcp", Checkbox).value = dhcp
        self.query_one("#address", Input).value = address
        self.query_one("#gateway", Input).value = gateway
        self.enable_static(not dhcp)

    def enable_static(self, static: bool) -> None:
        """With DHCP the address and gateway are the server's: their fields are off and empty, saying so (what was
        typed comes back with a static address)."""
        for name in ("address", "gateway"):
            field = self.query_one(f"#{name}", Input)
            if not static and field.value:
                self.typed[name] = field.value
                field.value = ""
            elif static and not field.value:
                field.value = self.typed.pop(name, "")
            field.disabled = not static
            field.placeholder = SPECS[name].help if static else DHCP_GIVES

    def on_radio_set_changed(self, event: RadioSet.Changed) -> None:
        self.show_interface(self.draft, event.pressed.name or "")

    def on_checkbox_changed(self, event: Checkbox.Changed) -> None:
        self.enable_static(not event.value)

    def store(self, draft: Draft) -> None:
        name = self.interface
        if self.query_one("#dhcp", Checkbox).value:
            settings: dict = {"dhcp": True}
        else:
            settings = {"dhcp": False, "address": value_of(self, "address")}
            if value_of(self, "gateway"):
                settings["gateway"] = value_of(self, "gateway")
        draft.set(f"network.interfaces.{name}", settings)
        draft.set("wizard.interface", name)

    async def leave(self, draft: Draft) -> bool:
        """Put the interfaces in force the safe way (as the Network screen does): kept only when Enter is
        pressed, or `postern-appliance confirm` runs, before the deadline. Nothing to change: no question."""
        config = change.interfaces_config(draft.get("network.interfaces", {}) or {})
        root = self.wizard.root
        if await asyncio.to_thread(change.unchanged, config, root):
            return True
        self.show_busy("Applying the network settings...")
        listen_for_confirm()
        try:
            pending = await asyncio.to_thread(change.start, config, root, timeout=TRY_TIMEOUT)
        except change.ApplyError as error:
            self.show_problems(error.problems)
            return False
        except (change.AlreadyPending, *change.SYSTEM_ERRORS) as error:
            self.show_problems([f"network.interfaces: {error}"])
            return False
        self.pending = pending
        decided: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        summary = [f"The new settings of {self.interface} are in force:", "", *pending.lines]
        self.app.push_screen(KeepSettingsScreen(pending, summary, decided.set_result))
        keep = await decided
        try:
            await asyncio.to_thread(pending.settle, keep)
        except change.SYSTEM_ERRORS as error:
            self.show_problems([f"network.interfaces: {'keeping' if keep else 'restoring'} the settings failed: "
                                f"{error}; 'postern-appliance rollback' restores the previous ones"])
            return False
        finally:
            self.pending = None
        if keep:
            self.show_problems([])
            return True
        self.show_problems(["network.interfaces: not confirmed: the previous settings are back"])
        return False

    def on_unmount(self) -> None:
        # The console is closing during the countdown: undo the change, unless it was confirmed.
        pending, self.pending = self.pending, None
        if pending is not None and not pending.settled:
            pending.settle_before_exit()


NAT_RANGES = tuple(ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10"))


def private(address: str) -> bool:
    """An address behind NAT (RFC 1918, or a carrier's shared range): its PTR is not what receivers see."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in NAT_RANGES if network.version == ip.version)


class HostnameStep(StepScreen):
    NAME = "hostname"
    TITLE = "Hostname"
    HELP = ("The gateway's fully qualified name. Receiving servers look up the PTR record of the address your "
            "mail comes from and compare it with the name in EHLO: use the name your public "
            "address resolves back to, or set the HELO name to it. Ctrl+T checks the PTR record.")
    FIELDS = {"network.hostname": ("hostname", "Hostname"), "mta.hostname": ("hostname", "Hostname"),
              "mta.helo_name": ("helo", "HELO name"), "wizard.public_address": ("public", "Public address")}
    BINDINGS = [Binding("ctrl+t", "check", "Check PTR", id="wizard.check")]

    def compose_fields(self) -> ComposeResult:
        yield field_input("hostname", "Hostname (FQDN)", placeholder="such as gw.example.com")
        with Horizontal(classes="row"):
            yield field_input("public", "Public address", placeholder="such as 203.0.113.10")
            yield field_input("helo", "HELO name (empty: the hostname)")
        yield Static(id="ptr", classes="report")

    def load(self, draft: Draft) -> None:
        hostname = draft.get("network.hostname") or draft.get("mta.hostname") or ""
        if hostname == "postern.localdomain":
            hostname = ""
        self.query_one("#hostname", Input).value = hostname
        self.query_one("#helo", Input).value = draft.get("mta.helo_name") or ""
        self.query_one("#public", Input).value = draft.get("wizard.public_address") or self.own_address(draft)
        ptr = self.query_one("#ptr", Static)
        ptr.border_title = "PTR check"
        ptr.update(Text("Not checked yet: Ctrl+T asks DNS.", style="dim"))
        if hostname and self.query_one("#public", Input).value:
            self.action_check()

    def own_address(self, draft: Draft) -> str:
        name = draft.get("wizard.interface")
        settings = draft.get(f"network.interfaces.{name}") if name else None
        if isinstance(settings, dict) and settings.get("address"):
            return str(settings["address"]).split("/")[0]
        live = live_interface(self.wizard.live, name) if name else None
        addresses = [a.address for a in live.addresses if ":" not in a.address] if live else []
        return addresses[0].split("/")[0] if addresses else ""

    def store(self, draft: Draft) -> None:
        hostname = value_of(self, "hostname").lower().rstrip(".")
        draft.set("network.hostname", hostname)
        draft.set("mta.hostname", hostname)
        helo = value_of(self, "helo")
        if helo:
            draft.set("mta.helo_name", helo)
        else:
            draft.remove("mta.helo_name")
        draft.set("wizard.public_address", value_of(self, "public"))

    def own_problems(self, draft: Draft) -> list[str]:
        address = draft.get("wizard.public_address") or ""
        if address:
            try:
                ipaddress.ip_address(address)
            except ValueError:
                return [f"wizard.public_address: {address!r} is not an IP address: write it like 203.0.113.10, "
                        "or leave it empty"]
        return []

    def action_check(self) -> None:
        hostname = value_of(self, "hostname")
        helo = value_of(self, "helo") or hostname
        address = value_of(self, "public")
        ptr = self.query_one("#ptr", Static)
        if not helo or not address:
            ptr.update(Text("Enter the hostname and the public address to check the PTR record.", style="yellow"))
            return
        servers = [str(s) for s in self.draft.get("network.dns.servers", []) or []]
        if not servers and self.wizard.live:
            servers = list(self.wizard.live.dns_servers)
        ptr.update(Text(f"Asking DNS for the PTR record of {address}...", style="dim"))
        self.check_ptr(helo, address, servers)

    @work(thread=True, exclusive=True, group="ptr-check")
    def check_ptr(self, helo: str, address: str, servers: list[str]) -> None:
        verdict = system.ptr_check(helo, address, servers)
        self.app.call_from_thread(self.show_ptr, verdict, address)

    def show_ptr(self, verdict, address: str) -> None:
        if not self.is_attached:  # the admin moved on before DNS answered
            return
        ptr = self.query_one("#ptr", Static)
        ptr.remove_class("-ok", "-bad")
        text = Text()
        if isinstance(verdict, str):
            text.append(verdict, style="yellow")
            ptr.add_class("-bad")
        else:
            for line in verdict.lines:
                style = "bold green" if line.startswith("PASS") else "bold red" if line.startswith("FAIL") else ""
                text.append(line + "\n", style=style)
            ptr.add_class("-ok" if verdict.verdict == PASS else "-bad")
        if private(address):
            text.append(f"{address} is a private address: behind NAT, enter the public address the firewall uses.",
                        style="dim")
        text.rstrip()
        ptr.update(text)


class DnsStep(StepScreen):
    NAME = "dns"
    TITLE = "DNS"
    HELP = ("The DNS servers the gateway asks for MX records and names (up to three), and the search domains. "
            "With DHCP they may stay empty: the DHCP server names them. Separate entries with commas.")
    FIELDS = {"network.dns.servers": ("servers", SPECS["dns"].label),
              "network.dns.search": ("search", SPECS["search"].label), "network.dns": ("servers", SPECS["dns"].label)}

    def compose_fields(self) -> ComposeResult:
        yield field_input("servers", SPECS["dns"].label, placeholder=SPECS["dns"].help)
        yield field_input("search", SPECS["search"].label, placeholder=SPECS["search"].help)

    def load(self, draft: Draft) -> None:
        servers = draft.get("network.dns.servers")
        search = draft.get("network.dns.search")
        if servers is None and search is None:
            state = self.wizard.live
            servers = [s for s in (state.dns_servers if state else ()) if not s.startswith("127.")]
            search = list(state.search_domains) if state else []
        self.query_one("#servers", Input).value = join_list(servers)
        self.query_one("#search", Input).value = join_list(search)

    def store(self, draft: Draft) -> None:
        servers, search = split_list(value_of(self, "servers")), split_list(value_of(self, "search"))
        if servers or search:
            draft.set("network.dns", {"servers": servers, **({"search": search} if search else {})})
        else:
            draft.remove("network.dns")
