"""Transport security: what TLS the outbound mail got per destination, the policy per domain, a live check.

Like Exchange Online's transit-security report: per destination domain (or relay host)
over the last 24 hours, the connections that had DANE, MTA-STS, a verified certificate,
TLS whose certificate was not checked, plain text, and those the policy refused, busiest
first; io.postern.Tls.Summary, read again every few seconds. The table's entries of the
TLS policy (mta.tls_policy) are listed too, if no mail went there.

Enter on a destination shows its policy in force (Tls.Policy) with its failures, and `c`
asks the relay what a delivery would do now (Tls.Check: it connects to each MX host with
the policy in force and says QUIT). `a`, `e` and `d` add, change and remove entries of
the table (console.screens.tls_entry).
"""

from __future__ import annotations

import time

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import Footer, OptionList, Static
from textual.widgets.option_list import Option

from relay.printable import printable

from .. import tls_words
from ..messages import RelayStatus
from ..relay_link import RelayLink
from ..widgets.status_line import StatusLine
from .confirm import ConfirmScreen
from .tls_entry import EntryScreen, put_entry

REFRESH = 10.0  # seconds between two readings of the counts
CHECK_TIMEOUT = 300.0  # a check connects to every MX host in turn, each within the relay's connect timeout
TITLE = "Transport security: the TLS of outbound mail per destination, last 24 h"


class TlsScreen(Screen):
    """What the two screens share: the relay's TLS policy table, and changing it."""

    CSS_PATH = "../styles/transport.tcss"

    def __init__(self):
        super().__init__()
        self.entries: dict = {}  # mta.tls_policy as the relay runs it

    def notice(self, text: str | Text, style: str = "") -> None:
        self.query_one(".tls-notice", Static).update(Text(text, style=style) if isinstance(text, str) else text)

    async def read_entries(self) -> None:
        answer = await self.app.link.attempt("io.postern.Config.Get", lambda words: None)
        if answer is not None:
            self.entries = answer["mta"].get("tls_policy") or {}

    def edit_entry(self, key: str) -> None:
        self.app.push_screen(EntryScreen(key, self.entries.get(key)), self.changed)

    def remove_entry(self, key: str) -> None:
        if key not in self.entries:
            self.notice(f"{key} has no entry in the TLS policy table: nothing to remove.", "yellow")
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self.removing(key)

        self.app.push_screen(ConfirmScreen(f"Remove the TLS policy entry for {key}? Its mail then follows the "
                                           "default policy."), answered)

    @work(group="tls-change", exclusive=True)
    async def removing(self, key: str) -> None:
        self.notice(f"Removing the entry for {key}...")
        outcome = await put_entry(self.app.link, key, None)
        if outcome.applied:
            self.notice(f"Removed the entry for {key}: {outcome.applied}.", "green")
            self.changed(key)
        else:
            self.notice(f"Not removed, nothing changed: {'; '.join(outcome.problems) or outcome.words}", "bold red")

    def changed(self, key: str | None) -> None:
        """After the table changed (key), or a form was left (None)."""


class TransportScreen(TlsScreen):
    BINDINGS = [
        Binding("enter", "open", "Policy/check", id="tls.open"),
        Binding("a", "add", "Add entry", id="tls.add"),
        Binding("e", "edit", "Edit entry", id="tls.edit"),
        Binding("d,delete", "remove", "Remove", id="tls.remove"),
        Binding("r", "refresh", "Refresh", id="tls.refresh", show=False),
        Binding("escape", "back", "Back", id="tls.back"),
    ]

    def __init__(self):
        super().__init__()
        self.answer: dict | None = None  # the last Summary
        self.rows: list[dict] = []
        self.problem = ""  # why the relay cannot be read, or ""
        self.reading = False
        self._timer: Timer | None = None

    def compose(self) -> ComposeResult:
        yield StatusLine("Transport security")
        yield Static(TITLE, classes="tls-title")
        yield Static(id="tls-header")
        yield OptionList(id="tls-rows")
        yield Static(id="tls-detail")
        yield Static("Loading...", classes="tls-notice")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one(OptionList).focus()
        self.load()
        self._timer = self.set_interval(REFRESH, self.refresh_counts)

    def on_relay_status(self, message: RelayStatus) -> None:
        if message.status is None and message.problem:
            self.failed(message.problem)
        elif message.status is not None and self.problem:
            self.load()

    def refresh_counts(self) -> None:
        """The timer's reading: none while the last one still waits (a slow relay gets to say so)."""
        if not self.reading:
            self.load()

    @work(group="tls-load", exclusive=True)
    async def load(self) -> None:
        self.reading = True
        try:
            answer = await self.app.link.attempt("io.postern.Tls.Summary", self.failed)
            if answer is not None:
                await self.read_entries()
        finally:
            self.reading = False
        if answer is None:
            return
        self.problem = ""
        self.answer = answer
        self.draw()

    def failed(self, words: str) -> None:
        self.problem = words
        shown = "The counts cannot be read: " if self.answer is None else "Not up to date: "
        self.notice(shown + words, "bold red")

    def on_resize(self) -> None:
        self.draw()

    def draw(self) -> None:
        if self.answer is None:
            return
        listing = self.query_one(OptionList)
        width = listing.scrollable_content_region.width - 1 or self.size.width - 4
        self.query_one("#tls-header", Static).update(tls_words.table_header(width))
        current = self.current()
        self.rows = tls_words.rows_with_entries(self.answer["domains"], self.entries)
        highlighted = listing.highlighted
        listing.clear_options()
        listing.add_options([Option(tls_words.table_row(row, width), id=row["domain"]) for row in self.rows])
        if self.rows:
            ids = [row["domain"] for row in self.rows]
            listing.highlighted = ids.index(current) if current in ids else min(highlighted or 0, len(ids) - 1)
        failing = sum(1 for row in self.rows if row["failed"])
        if not self.rows:
            self.notice("No mail went out in the last 24 hours, and the TLS policy table is empty: a adds an entry.")
        else:
            self.notice(Text.assemble(
                f"{len(self.rows)} destination{'s' if len(self.rows) != 1 else ''}, ",
                (f"{failing} with connections refused by their policy" if failing else "none refused by its policy",
                 "bold red" if failing else "green"),
                ". Enter: its policy and a live check."))
        self.describe()

    def current(self) -> str | None:
        listing = self.query_one(OptionList)
        if listing.highlighted is None or listing.option_count == 0:
            return None
        return listing.get_option_at_index(listing.highlighted).id

    def current_row(self) -> dict | None:
        key = self.current()
        return next((row for row in self.rows if row["domain"] == key), None)

    def on_option_list_option_highlighted(self, _event) -> None:
        self.describe()

    def describe(self) -> None:
        """Under the table: the highlighted destination's entry in the TLS policy table and its failures."""
        row = self.current_row()
        detail = self.query_one("#tls-detail", Static)
        if row is None:
            detail.update("")
            return
        lines = [Text(printable(row["domain"]), style="bold")]
        text = lines[0]
        entry = self.entries.get(row["domain"])
        if entry is not None:
            level, match, _ = (entry, [], "") if isinstance(entry, str) else (
                entry.get("level", ""), entry.get("match") or [], "")
            text.append(f"  tls_policy: {level}" + (f", match {', '.join(match)}" if match else ""))
        failures = tls_words.failure_lines(row)
        lines += failures[:2]
        if len(failures) > 2:
            lines.append(Text(f"  and {len(failures) - 2} more (Enter shows them)", style="dim"))
        if not failures and tls_words.traffic(row):
            text.append("  no failures", style="green")
        width = detail.content_size.width or self.size.width - 2
        detail.update(tls_words.hanging(lines, width, self.app.console))

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.open(event.option.id)

    def action_open(self) -> None:
        if key := self.current():
            self.open(key)

    def open(self, key: str) -> None:
        self.app.push_screen(DomainScreen(key, self.current_row()))

    def action_add(self) -> None:
        self.app.push_screen(EntryScreen(), self.changed)

    def action_edit(self) -> None:
        key = self.current()
        if key is None or key not in self.entries:
            self.notice(f"{key} has no entry in the TLS policy table: a adds one." if key else
                        "No destination: a adds an entry.", "yellow")
            return
        self.edit_entry(key)

    def action_remove(self) -> None:
        if key := self.current():
            self.remove_entry(key)

    def changed(self, key: str | None) -> None:
        self.load()

    def action_refresh(self) -> None:
        self.load()

    def action_back(self) -> None:
        self.app.pop_screen()

    def on_screen_resume(self) -> None:
        if self.answer is not None:
            self.load()


class DomainScreen(TlsScreen):
    """One destination: its policy in force, its counts and failures, and the live check."""

    BINDINGS = [
        Binding("c", "check", "Check now", id="tls.check"),
        Binding("e", "edit", "Edit entry", id="tls.domain.edit"),
        Binding("d,delete", "remove", "Remove entry", id="tls.domain.remove"),
        Binding("escape", "back", "Back", id="tls.domain.back"),
    ]

    def __init__(self, domain: str, row: dict | None = None):
        super().__init__()
        self.domain = domain
        self.row = row
        self.policy: dict | None = None
        self.checked: list[Text] = []
        self.lines: list[Text] = []  # what the screen shows, unwrapped
        self.checking_since = 0.0
        self._ticker: Timer | None = None

    def compose(self) -> ComposeResult:
        yield StatusLine("Transport security")
        yield Static(f"Mail to {printable(self.domain)}", classes="tls-title")
        with VerticalScroll(id="tls-domain"):
            yield Static("Loading the policy...", id="tls-domain-text")
        yield Static("c asks the relay what a delivery would do now.", classes="tls-notice")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one(VerticalScroll).focus()
        self.load()

    @work(group="tls-policy", exclusive=True)
    async def load(self) -> None:
        answer = await self.app.link.attempt("io.postern.Tls.Policy", self.failed, domain=self.domain)
        if answer is None:
            return
        self.policy = answer["policy"]
        await self.read_entries()
        self.draw()

    def failed(self, words: str) -> None:
        self.query_one("#tls-domain-text", Static).update(Text(f"The policy cannot be read: {words}", style="bold red"))

    def draw(self) -> None:
        lines = tls_words.policy_lines(self.policy, entries=self.entries) if self.policy else []
        if self.row is not None:
            lines.append(Text(""))
            lines.append(Text("Last 24 h  ") + tls_words.counts_line(self.row))
            failures = tls_words.failure_lines(self.row)
            if failures:
                lines.append(Text("Failures", style="bold"))
                lines += failures
        if self.checked:
            lines.append(Text(""))
            lines.append(Text("Live check", style="bold"))
            lines += self.checked
        self.lines = lines
        shown = self.query_one("#tls-domain-text", Static)
        width = shown.content_size.width or self.size.width - 2
        shown.update(tls_words.hanging(lines, width, self.app.console))

    def on_resize(self) -> None:
        if self.policy is not None:
            self.draw()

    def text(self) -> str:
        """What the screen shows, as plain text, each line unwrapped (for tests)."""
        if not self.lines:
            return str(self.query_one("#tls-domain-text", Static).render())
        return "\n".join(line.plain for line in self.lines)

    def action_check(self) -> None:
        if self.checking_since:
            return
        self.checking_since = time.monotonic()
        self._tick()
        self._ticker = self.set_interval(0.5, self._tick)
        self.check()

    def _tick(self) -> None:
        waited = int(time.monotonic() - self.checking_since)
        self.notice(f"Checking: the relay connects to each host of {self.domain} with the policy in force "
                    f"({waited} s; Esc leaves)...", "bold")

    @work(group="tls-check", exclusive=True)
    async def check(self) -> None:
        link = RelayLink(self.app.link.socket_path, timeout=CHECK_TIMEOUT)
        try:
            answer = await link.attempt("io.postern.Tls.Check", self.check_failed, domain=self.domain)
        finally:
            self.checking_since = 0.0
            if self._ticker is not None:
                self._ticker.stop()
        if answer is None:
            return
        self.policy = answer["policy"]
        self.checked = tls_words.check_lines(answer)
        self.draw()
        delivers = any(host["verdict"] == "deliver" for host in answer["hosts"])
        self.notice(f"Checked at {time.strftime('%H:%M:%S')}: " + ("mail would be delivered." if delivers else
                    "mail would wait in the queue."), "green" if delivers else "bold red")

    def check_failed(self, words: str) -> None:
        self.notice(f"The check failed: {words}", "bold red")

    def action_edit(self) -> None:
        self.edit_entry(self.domain)

    def action_remove(self) -> None:
        self.remove_entry(self.domain)

    def changed(self, key: str | None) -> None:
        if key is not None:
            self.checked = []
            self.load()

    def action_back(self) -> None:
        self.app.pop_screen()
