"""Network: the interfaces as they are, and a form for one of them, the hostname and DNS.

The table is the live state (netlink, resolv.conf); its cursor stays on the interface the
form shows, and Enter on another row edits that one. The form starts from the configuration
file's `network:` section (first the interface with the default route) and is checked as
you type by the appliance's own model (`parse_network`), each problem under the field it
names; its labels and help are the model's field descriptions. Ctrl+S lists what will change
and, once confirmed, applies it the safe way: the new settings are in force at once, and
the countdown screen keeps them only when Enter is pressed in time. Kept settings are saved
to the configuration file (`--config`); declined ones are undone exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.widget import Widget
from textual.widgets import DataTable, Footer, Input, Label, Static
from textual.widgets.data_table import RowDoesNotExist
from textual.worker import Worker

from appliance.network.change import SYSTEM_ERRORS, AlreadyPending, ApplyError, Change
from relay.config import ConfigError

from .. import network_form
from ..appliance_link import NetworkView
from ..network_form import SPECS, NetworkForm
from ..widgets.choice import Choice
from ..widgets.status_line import StatusLine
from .area import AreaScreen, explain
from .confirm import ConfirmScreen
from .keep_settings import KeepSettingsScreen, listen_for_confirm

INPUTS = ("address", "gateway", "hostname", "dns", "search")  # the text fields, labelled by network_form.SPECS
STATIC_ONLY = ("address", "gateway")


@dataclass
class NetworkLoaded(Message):
    view: NetworkView


@dataclass
class ChangeStarted(Message):
    pending: Change
    document: dict
    summary: list[str]


@dataclass
class ChangeRefused(Message):
    problems: list[str]


@dataclass
class ChangeFinished(Message):
    kept: bool
    words: str
    style: str


def field_row(name: str, label: str, editor: Widget) -> list[Widget]:
    return [Horizontal(Label(label, classes="net-label"), editor, classes="net-row", id=f"row-{name}"),
            Static(id=f"note-{name}", classes="net-note")]


def live_text(view: NetworkView) -> Text:
    live = view.live
    text = Text(no_wrap=True, overflow="ellipsis")
    text.append("Hostname ", style="dim")
    text.append(live.hostname or "-")
    text.append("  Default gateway ", style="dim")
    text.append(", ".join(live.default_gateways) or "none")
    text.append("\nDNS ", style="dim")
    text.append(", ".join(live.dns_servers) or "none")
    text.append("  Search ", style="dim")
    text.append(", ".join(live.search_domains) or "none")
    return text


class NetworkScreen(AreaScreen):
    BINDINGS = [
        Binding("ctrl+s", "apply", "Apply", id="network.apply"),
        Binding("ctrl+r", "reload", "Reload", id="network.reload"),
        Binding("escape", "back", "Back", id="network.back"),
        Binding("down", "app.focus_next", "Next field", id="network.next", show=False),
        Binding("up", "app.focus_previous", "Previous field", id="network.previous", show=False),
    ]

    def __init__(self):
        super().__init__()
        self.view: NetworkView | None = None
        self.document: dict = {}  # the configuration file as it is
        self.draft: dict = {}  # with the interfaces edited so far
        self.start: NetworkForm | None = None  # the form as shown for the current interface
        self.problems: list[str] = []
        self.pending: Change | None = None
        self.pending_document: dict = {}
        self.refill = True  # the next load fills the form afresh (else it keeps the edits)
        self.asking = False  # a dialog of ours is on top: coming back from it is not a new visit

    def compose(self) -> ComposeResult:
        yield StatusLine("Network")
        table = DataTable(id="net-interfaces", cursor_type="row", zebra_stripes=False)
        table.border_title = "Interfaces (Enter edits one)"
        yield table
        yield Static(id="net-live")
        form = VerticalScroll(id="net-form", can_focus=False)  # a stop of its own would show nothing
        form.border_title = "Settings (ctrl+s applies them)"
        with form:
            with Horizontal(classes="net-row"):
                yield Label(SPECS["interface"].label, classes="net-label")
                yield Choice([("", "-")], id="net-interface")
                yield Label(SPECS["mode"].label, classes="net-label-short")
                yield Choice([(True, "yes"), (False, "no")], id="net-mode")
            yield Static(id="note-interface", classes="net-note")
            yield Static(id="note-mode", classes="net-note")
            for name in INPUTS:
                spec = SPECS[name]
                yield from field_row(name, spec.label, Input(placeholder=spec.help, id=f"net-{name}", compact=True))
        yield Static("Reading the network...", id=self.NOTICE_ID)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        for label, key in (("NAME", "name"), ("MAC", "mac"), ("LINK", "link"), ("MTU", "mtu"), ("MODE", "mode"),
                           ("ADDRESSES", "addresses"), ("GATEWAY", "gateway")):
            table.add_column(label, key=key)
        self.load()

    def on_screen_resume(self) -> None:
        if self.asking:
            self.asking = False
        elif self.view is not None and self.pending is None:
            self.load()

    # --- loading ---------------------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="network-load", name="Reading the network", exit_on_error=False)
    def load(self) -> None:
        self.post_message(NetworkLoaded(self.appliance.network_view()))

    def on_network_loaded(self, message: NetworkLoaded) -> None:
        view = message.view
        first_load = self.view is None
        self.view, self.document = view, view.document
        self.show_table(view)
        self.query_one("#net-live", Static).update(live_text(view))
        if not self.refill:  # back from another area: the live state is new, the edits stay
            return
        self.refill = False
        self.draft = view.document
        names = network_form.interface_names(view.document, view.live)
        current = self.query_one("#net-interface", Choice).value
        interface = current if current in names else network_form.first_interface(view.document, view.live)
        choice = self.query_one("#net-interface", Choice)
        with self.prevent(Choice.Changed):
            choice.options = [(name, name) for name in names] or [("", "none")]
            choice.value = interface
            choice.refresh()
        self.fill(network_form.initial(view.document, view.live, interface))
        self.check()
        if view.problems:
            self.notice("The configuration file has problems; they must be fixed before anything is applied: "
                        + "; ".join(view.problems), "bold red")
        if first_load:
            self.query_one("#net-mode" if interface else "#net-hostname").focus()

    def show_table(self, view: NetworkView) -> None:
        table = self.query_one(DataTable)
        table.clear()
        for interface in view.live.interfaces:
            addresses = [a.address for a in interface.addresses]
            link_style = {"up": "green", "down": "red"}.get(interface.link, "yellow")
            table.add_row(
                interface.name, interface.mac, Text(interface.link, style=link_style), str(interface.mtu),
                "DHCP" if interface.dhcp else "static", "\n".join(addresses) or "-",
                "\n".join(interface.gateways) or "-", key=interface.name, height=max(1, len(addresses)))
        rows = sum(max(1, len(i.addresses)) for i in view.live.interfaces)
        table.styles.height = min(rows, 8) + 3
        if self.start is not None:
            self.show_in_table(self.start.interface)

    def show_in_table(self, interface: str) -> None:
        """Put the table's cursor on the interface the form shows, so that Enter there edits it."""
        table = self.query_one(DataTable)
        try:
            table.move_cursor(row=table.get_row_index(interface))
        except RowDoesNotExist:  # configured, but this system has no such interface
            pass

    # --- the form ------------------------------------------------------------------------------

    def fill(self, form: NetworkForm) -> None:
        self.start = form
        with self.prevent(Input.Changed, Choice.Changed):
            self.query_one("#net-mode", Choice).value = form.dhcp
            for name in INPUTS:
                self.query_one(f"#net-{name}", Input).value = getattr(form, name)
        self.show_mode(form.dhcp)
        self.show_in_table(form.interface)

    def show_mode(self, dhcp: bool) -> None:
        for name in STATIC_ONLY:
            self.query_one(f"#net-{name}", Input).disabled = dhcp

    def form(self) -> NetworkForm:
        values = {name: self.query_one(f"#net-{name}", Input).value for name in INPUTS}
        return NetworkForm(self.query_one("#net-interface", Choice).value or "",
                           self.query_one("#net-mode", Choice).value, **values)

    def proposed(self) -> dict:
        return network_form.proposed(self.draft, self.form(), self.start)

    def on_input_changed(self, event: Input.Changed) -> None:
        if self.view is not None:
            self.check()

    def on_choice_changed(self, event: Choice.Changed) -> None:
        if self.view is None or self.start is None:
            return
        if event.choice.id == "net-interface":
            if event.value == self.start.interface:
                return
            self.switch_interface(event.value)
        else:
            self.show_mode(event.value)
        self.check()

    def switch_interface(self, name: str) -> None:
        assert self.view is not None and self.start is not None
        form = self.form()
        previous = NetworkForm(self.start.interface, form.dhcp, form.address, form.gateway, form.hostname, form.dns,
                               form.search)
        self.draft = network_form.proposed(self.draft, previous, self.start)
        self.fill(network_form.for_interface(form, self.draft, self.view.live, name))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        choice = self.query_one("#net-interface", Choice)
        choice.value = event.row_key.value  # Choice.Changed switches the form
        self.query_one("#net-mode", Choice).focus()

    def check(self) -> None:
        """Check the proposed network section; show each problem at its field."""
        form = self.form()
        document = self.proposed()
        self.problems = network_form.check(document)
        self.show_problems(self.problems, form.interface)
        if self.problems:
            count = len(self.problems)
            self.notice(f"{count} problem{'s' if count != 1 else ''}, shown in red at the fields: "
                        "nothing can be applied until they are fixed.", "bold red")
            return
        changes = network_form.changes(self.document, document)
        if changes:
            self.notice(f"{len(changes)} change{'s' if len(changes) != 1 else ''}: ctrl+s applies them "
                        f"(you then have {self.appliance.try_seconds:.0f} s to keep them).", "bold")
        else:
            self.notice(f"The settings of {self.appliance.config_path}. Edit them, then ctrl+s applies.")

    def show_problems(self, problems: list[str], interface: str) -> list[str]:
        placed: dict[str, list[str]] = {}
        for problem in problems:
            where, words = network_form.place(problem, interface)
            placed.setdefault(where, []).append(words)
        for name in ("interface", "mode", *INPUTS):
            note = self.query_one(f"#note-{name}", Static)
            note.update(Text("\n".join(placed.get(name, [])), style="bold red"))
            note.display = bool(placed.get(name))
            if name in INPUTS:
                self.query_one(f"#net-{name}", Input).set_class(bool(placed.get(name)), "-invalid")
        return placed.get(network_form.GENERAL, [])

    def error_text(self, name: str) -> str:
        """The problem shown at a field (for tests)."""
        note = self.query_one(f"#note-{name}", Static)
        return str(note.render()) if note.display else ""

    def _focus_first_problem(self) -> None:
        interface = self.form().interface
        for problem in self.problems:
            where, _ = network_form.place(problem, interface)
            if where in INPUTS:
                self.query_one(f"#net-{where}", Input).focus()
                return
            if where in ("interface", "mode"):
                self.query_one(f"#net-{where}", Choice).focus()
                return

    # --- applying --------------------------------------------------------------------------------

    def action_apply(self) -> None:
        if self.view is None or self.pending is not None:
            return
        self.check()
        if self.problems:
            self._focus_first_problem()
            general = [p for p in self.problems if network_form.place(p, self.form().interface)[0] == ""]
            self.notice("Not applied: fix the problems shown in red first"
                        + (": " + "; ".join(general) if general else "."), "bold red")
            return
        if self.view.problems:
            self.notice("Not applied: the configuration file has problems: " + "; ".join(self.view.problems),
                        "bold red")
            return
        document = self.proposed()
        changes = network_form.changes(self.document, document)
        if not changes:
            self.notice("No changes to apply.")
            return
        seconds = f"{self.appliance.try_seconds:.0f}"
        where = "" if self.appliance.live else f" (files only, under {self.appliance.root})"
        question = (f"Apply these network settings now{where}?\n\n" + "\n".join(changes)
                    + f"\n\nYou then have {seconds} s to keep them; without an answer the previous "
                    "settings come back by themselves.")

        def answered(yes: bool | None) -> None:
            if yes:
                self.notice("Applying...")
                listen_for_confirm()
                self.start_change(document, changes)
            else:
                self.notice("Not applied: your edits are kept.")

        self.asking = True
        self.app.push_screen(ConfirmScreen(question), answered)

    @work(thread=True, exclusive=True, group="network-apply", name="Applying the network settings",
          exit_on_error=False)
    def start_change(self, document: dict, changes: list[str]) -> None:
        try:
            pending = self.appliance.start_network_change(document)
        except (ConfigError, ApplyError) as error:
            self.post_message(ChangeRefused(error.problems))
            return
        except AlreadyPending as error:
            self.post_message(ChangeRefused([str(error)]))
            return
        except SYSTEM_ERRORS as error:
            self.post_message(ChangeRefused([explain(error)]))
            return
        self.post_message(ChangeStarted(pending, document, changes + [""] + pending.lines))

    def on_change_refused(self, message: ChangeRefused) -> None:
        general = self.show_problems(message.problems, self.form().interface)
        self.problems = message.problems
        self._focus_first_problem()
        self.notice("Not applied, nothing changed: " + "; ".join(general or message.problems), "bold red")

    def on_change_started(self, message: ChangeStarted) -> None:
        self.pending, self.pending_document = message.pending, message.document
        self.notice("The new settings are in force: keep them or they are undone.", "bold yellow")

        def decided(keep: bool) -> None:
            self.finish_change(message.pending, message.document, keep)

        self.asking = True
        self.app.push_screen(KeepSettingsScreen(message.pending, ["The new network settings are in force:", "",
                                                                  *message.summary], decided))

    @work(thread=True, exclusive=True, group="network-finish", name="Finishing the network change",
          exit_on_error=False)
    def finish_change(self, pending: Change, document: dict, keep: bool) -> None:
        if not keep:
            pending.settle(False)
            self.post_message(ChangeFinished(False, "Not kept: the previous network settings are back.", "yellow"))
            return
        if not pending.settle(True):
            return  # the console is closing and has restored the previous settings
        try:
            saved = self.appliance.save_network(document)
        except ConfigError as error:
            words, style = "Kept, but not saved: " + "; ".join(error.problems), "bold red"
        except OSError as error:
            words, style = f"Kept, but not saved: {explain(error)}", "bold red"
        else:
            words, style = f"Kept: the new network settings stay, {saved}.", "green"
        self.post_message(ChangeFinished(True, words, style))

    def on_change_finished(self, message: ChangeFinished) -> None:
        self.pending = None
        self.refill = True
        self.load()
        self.notice(message.words, message.style)
        self.set_timer(0.5, lambda: self.notice(message.words, message.style))  # after the reload's own notice

    def failed(self, worker: Worker, error: BaseException) -> None:
        if worker.group == "network-finish":
            self.pending = None
            self.notice(f"Restoring or keeping the settings failed: {explain(error)}. The change is recorded "
                        f"under {self.appliance.root / 'run/postern'}: 'postern-appliance rollback' restores the "
                        "previous settings.", "bold red")
            return
        super().failed(worker, error)

    def on_unmount(self) -> None:
        # The console is closing (Ctrl+Q, a hang-up) during the countdown: undo the change now, unless
        # `postern-appliance confirm` kept it. Blocking on the way out is fine.
        pending, self.pending = self.pending, None
        if pending is not None and not pending.settled and pending.settle_before_exit():
            try:
                self.appliance.save_network(self.pending_document)
            except (ConfigError, OSError):
                pass  # kept in force; the configuration file says what it said

    # --- other keys --------------------------------------------------------------------------------

    def action_reload(self) -> None:
        if self.pending is None:
            self.refill = True
            self.load()

