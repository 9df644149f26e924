"""Diagnostics: a DNS lookup, the HELO/PTR check and the next-hop check, as `postern-appliance diag` runs them.

One row of fields per check; Enter in a row runs its check in a thread worker and the
answer is added to the results below. The DNS servers asked are the ones typed, else the
configuration's (`mta.dns_servers`, then `network.dns.servers`), else the system's.

The next-hop check of a relay host (or of any HOST:PORT) talks SMTP to it from here; a
destination domain typed alone is checked by the relay against its TLS policy
(io.postern.Tls.Check), which says where delivery would defer. Ctrl+T opens the
Transport security view (console.screens.transport).
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Footer, Input, Label, RichLog, Static
from textual.worker import get_current_worker

from appliance.diagnostics.dns_lookup import LookupFailed
from appliance.diagnostics.helo import PASS
from appliance.diagnostics.next_hop import NEEDS_TLS, Hop
from appliance.topology import ip_or_none

from .. import tls_words
from ..relay_link import RelayLink
from ..system import FieldError
from ..system.diagnostics import RECORD_TYPES, DnsResult
from ..widgets.choice import Choice
from ..widgets.status_line import StatusLine
from .area import AreaScreen

FIELD_INPUTS = {"name": "diag-name", "address": "diag-address", "helo": "diag-helo", "hop": "diag-hop",
                "servers": "diag-servers"}
CHECK_OF_INPUT = {"diag-name": "dns", "diag-address": "helo", "diag-helo": "helo", "diag-hop": "hop",
                  "diag-servers": "dns"}
FIELD_NAMES = {"name": "Name", "address": "Address", "helo": "HELO name", "hop": "Host:port",
               "servers": "DNS servers"}


@dataclass
class DiagResult(Message):
    title: str
    lines: list[Text]


@dataclass
class DiagDestination(Message):
    """A domain typed as the next hop: the relay checks it against its TLS policy."""

    domain: str


@dataclass
class DiagProblem(Message):
    title: str
    field: str
    words: str


def line(text: str, style: str = "") -> Text:
    return Text(text, style=style)


def dns_lines(result: DnsResult) -> list[Text]:
    report = result.report
    lines = [line(answer.line(), "" if answer.records else "yellow") for answer in report.answers]
    if report.has_policies:
        lines.append(line(f"SPF   {'; '.join(report.spf) or '(none)'}", "green" if report.spf else "yellow"))
        lines.append(line(f"DMARC {'; '.join(report.dmarc) or '(none)'}", "green" if report.dmarc else "yellow"))
    lines += [line(note, "yellow") for note in report.notes]
    return lines


def is_destination(text: str, hops: list[Hop]) -> bool:
    """A domain typed alone (no port, not an address) that is no configured relay host: the check asks the
    relay what delivery to that domain would do under its TLS policy."""
    text = text.strip()
    return (bool(text) and ":" not in text and not text.startswith("[") and ip_or_none(text) is None
            and len(hops) == 1 and not hops[0].role)


def verdict_style(text: str) -> str:
    if text.startswith("PASS"):
        return "bold green"
    if text.startswith("FAIL"):
        return "bold red"
    return ""


class DiagnosticsScreen(AreaScreen):
    BINDINGS = [
        Binding("ctrl+l", "clear", "Clear", id="diag.clear"),
        Binding("ctrl+t", "transport", "Transport security", id="diag.transport"),
        Binding("escape", "back", "Back", id="diag.back"),
        Binding("down", "app.focus_next", "Next field", id="diag.next", show=False),
        Binding("up", "app.focus_previous", "Previous field", id="diag.previous", show=False),
    ]

    def __init__(self):
        super().__init__()
        self.results: list[str] = []  # what the results show, unwrapped

    def compose(self) -> ComposeResult:
        yield StatusLine("Diagnostics")
        with Vertical(id="diag-form"):
            yield Horizontal(Label("DNS lookup", classes="diag-label"),
                             Input(placeholder="example.com or 192.0.2.10", id="diag-name", compact=True),
                             Label("Type", classes="diag-label-short"),
                             Choice([(t, t) for t in RECORD_TYPES], "ALL", id="diag-type"), classes="diag-row")
            yield Horizontal(Label("HELO check", classes="diag-label"),
                             Input(placeholder="public address", id="diag-address", compact=True,
                                   classes="diag-narrow"),
                             Label("HELO", classes="diag-label-short"),
                             Input(id="diag-helo", compact=True), classes="diag-row")
            yield Horizontal(Label("Next hop", classes="diag-label"),
                             Input(placeholder="a domain, or host:port (empty: the relay hosts)", id="diag-hop",
                                   compact=True), classes="diag-row")
            yield Horizontal(Label("DNS servers", classes="diag-label"),
                             Input(placeholder="empty: the configuration's, else the system's", id="diag-servers",
                                   compact=True), classes="diag-row")
        output = RichLog(id="diag-output", wrap=True, markup=False, min_width=20)
        output.border_title = "Results (Enter in a row runs its check)"
        yield output
        yield Static("Type a name, an address or a host, then Enter.", id=self.NOTICE_ID)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#diag-name", Input).focus()
        self.placeholders()

    @work(thread=True, exclusive=True, group="diag-defaults", name="Reading the configuration", exit_on_error=False)
    def placeholders(self) -> None:
        helo = self.appliance.settings().mta.outgoing_helo
        self.app.call_from_thread(setattr, self.query_one("#diag-helo", Input), "placeholder",
                                  f"empty: {helo}")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        check = CHECK_OF_INPUT.get(event.input.id or "")
        servers = self.query_one("#diag-servers", Input).value
        for widget in self.query(Input):
            widget.remove_class("-invalid")
        if check == "dns":
            name = self.query_one("#diag-name", Input).value
            rdtype = self.query_one("#diag-type", Choice).value
            self.notice(f"Looking up {name.strip()} {rdtype}...")
            self.run_check("DNS lookup", "dns_lookup", servers, name, rdtype)
        elif check == "helo":
            address = self.query_one("#diag-address", Input).value
            self.notice(f"Checking the PTR record of {address.strip()}...")
            self.run_check("HELO check", "helo_check", servers, address, self.query_one("#diag-helo", Input).value)
        elif check == "hop":
            self.notice("Connecting...")
            self.run_check("Next hop", "next_hop", servers, self.query_one("#diag-hop", Input).value)

    @work(thread=True, exclusive=True, group="diag", name="The check", exit_on_error=False)
    def run_check(self, title: str, kind: str, servers: str, *values: str) -> None:
        try:
            if kind == "dns_lookup":
                result = self.appliance.diagnostics.dns_lookup(values[0], values[1], servers)
                header = f"{result.report.name} {result.rdtype} (asked {result.servers})"
                lines = dns_lines(result)
            elif kind == "helo_check":
                verdict = self.appliance.diagnostics.helo_check(values[0], values[1], servers)
                header = f"HELO {verdict.helo_name} from {verdict.address}"
                lines = [line(text, verdict_style(text)) for text in verdict.lines]
                title = f"HELO check: {'PASS' if verdict.verdict == PASS else 'FAIL'}"
            else:
                lines, header = [], ""
                hops = self.appliance.diagnostics.next_hop_targets(values[0])
                if is_destination(values[0], hops):
                    self.post_message(DiagDestination(values[0].strip().rstrip(".")))
                    return
                for hop in hops:
                    lines += self.hop_lines(hop, servers)
        except FieldError as error:
            self.post_message(DiagProblem(title, error.field, error.message))
            return
        except LookupFailed as error:
            self.post_message(DiagProblem(title, "servers", str(error)))
            return
        if header:
            lines.insert(0, line(header, "bold"))
        if not get_current_worker().is_cancelled:  # a newer check replaced this one meanwhile
            self.post_message(DiagResult(title, lines))

    def hop_lines(self, hop: Hop, servers: str) -> list[Text]:
        report = self.appliance.diagnostics.next_hop(hop, servers)
        lines = [line(hop.title, "bold")]
        lines += [line(f"  {text}") for text in report.lines]
        lines += [line(f"    {text}") for text in report.certificate]
        lines += [line(f"  warning: {text}", "yellow") for text in report.warnings]
        lines += [line(f"  problem: {text}", "bold red") for text in report.errors]
        if report.ok:
            lines.append(line("  OK: the next hop takes mail" + (" over TLS" if report.starttls else "")
                              + (f", as its policy tls: {hop.tls} asks" if hop.tls in NEEDS_TLS else ""),
                              "bold green"))
        return lines

    def on_diag_destination(self, message: DiagDestination) -> None:
        self.notice(f"Checking mail to {message.domain} against its TLS policy: the relay connects to its "
                    "hosts...")
        self.check_destination(message.domain)

    @work(exclusive=True, group="diag", name="The check", exit_on_error=False)
    async def check_destination(self, domain: str) -> None:
        """What delivery to the domain would do now, as the relay says (Tls.Check)."""
        from .transport import CHECK_TIMEOUT

        link = RelayLink(self.app.link.socket_path, timeout=CHECK_TIMEOUT)
        answer = await link.attempt("io.postern.Tls.Check", self.destination_failed, domain=domain)
        if answer is None:
            return
        policy = answer["policy"]
        header = line(f"mail to {policy['domain']} (TLS level {policy['level']}, from "
                      f"{tls_words.source_words(policy['source'])})", "bold")
        delivers = any(host["verdict"] == "deliver" for host in answer["hosts"])
        title = "Next hop" if delivers else f"Next hop: mail to {policy['domain']} would defer"
        self.post_message(DiagResult(title, [header, *tls_words.check_lines(answer),
                                             line("  (HOST:25 for a host's banner and certificate)", "dim")]))

    def destination_failed(self, words: str) -> None:
        self.notice(f"Next hop: {words}", "bold red")

    def action_transport(self) -> None:
        from .transport import TransportScreen

        self.app.push_screen(TransportScreen())

    def on_diag_result(self, message: DiagResult) -> None:
        output = self.query_one(RichLog)
        for text in message.lines:
            output.write(text)
            self.results.append(text.plain)
        output.write(Text(""))
        self.results.append("")
        style = "bold red" if "FAIL" in message.title or "would defer" in message.title else ""
        self.notice(f"{message.title}: done." if not style else f"{message.title}: see what to change above.",
                    style)

    def on_diag_problem(self, message: DiagProblem) -> None:
        widget_id = FIELD_INPUTS.get(message.field)
        if widget_id:
            widget = self.query_one(f"#{widget_id}", Input)
            widget.add_class("-invalid")
            widget.focus()
        where = FIELD_NAMES.get(message.field, message.field)
        self.notice(f"{message.title}: {where}: {message.words}", "bold red")

    def result_text(self) -> str:
        """Everything in the results, as plain text (for tests)."""
        return "\n".join(self.results)

    def action_clear(self) -> None:
        self.query_one(RichLog).clear()
        self.results.clear()
