"""Mail authentication: the DKIM signing keys, the DNS records to publish, the inbound checks, Microsoft 365.

The list is `mta.authentication` as the relay runs it (io.postern.Config.Get): each signing
domain with its selector, its key's algorithm and, once checked (`c`, never on a refresh:
it asks DNS), whether its TXT record is published; under it the inbound settings in words.

Enter on a domain shows the record to publish (name, value, and the zone-file form, from
appliance.dkim.dns_record), and `c` there checks it against the relay's DNS servers
(`dns_servers`, else the system's). `n` makes a new key (appliance.dkim.create_key, under the
appliance's root, as the Certificates screen writes its files) and adds it to `dkim_keys`
through the relay (Config.Validate, then Config.Apply, as the TLS policy entries are changed:
console.screens.tls_entry.apply_change); a refusal shows the relay's problem lines and changes
nothing. `m` shows the Microsoft 365 steps with this appliance's values filled in.
"""

from __future__ import annotations

import asyncio
import copy
import time
from dataclasses import dataclass
from pathlib import Path

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Footer, Input, Label, OptionList, Static
from textual.widgets.option_list import Option

from appliance.dkim import default_selector
from appliance.topology import arc_sealer_steps, sealing_domain
from relay.printable import printable

from ..messages import RelayStatus
from ..widgets.choice import Choice
from ..widgets.status_line import StatusLine
from .tls_entry import apply_change

CHECK_TIMEOUT = 10.0  # seconds for one DNS question
NOT_CHECKED = "not checked"
# check_published's words -> the list's column (its other failure: a record for another key)
VERDICTS = (("not published", "not published"), ("no answer from DNS", "no answer"), ("malformed", "malformed"))


@dataclass
class SigningKey:
    """A `dkim_keys` entry as the console shows it; `published` is '' until checked."""

    domain: str
    selector: str
    key_file: str  # as the relay has it
    path: Path  # where the console reads it (under its root)
    algorithm: str = ""  # rsa, ed25519, or '' when the file cannot be read
    problem: str = ""  # why the key cannot be read
    published: str = NOT_CHECKED  # "published", "not published", or the check's problem
    words: str = ""  # the check's verdict in full


def with_dkim_key(running: dict, domain: str, selector: str, key_file: str) -> dict:
    """The running mta section with `domain` signed by the key in `key_file` under `selector`."""
    section = copy.deepcopy(running)
    auth = dict(section.get("authentication") or {})
    keys = dict(auth.get("dkim_keys") or {})
    keys[domain] = {"selector": selector, "key_file": key_file}
    auth["dkim_keys"] = keys
    section["authentication"] = auth
    return section


def read_key(key: SigningKey) -> SigningKey:
    """The key's algorithm, from the file (blocking: call it from a thread)."""
    from appliance import dkim
    from appliance.certificates import CertificateError

    try:
        value = dkim.record_value(key.path)
    except CertificateError as error:
        key.problem = str(error)
    except OSError as error:
        key.problem = f"{key.key_file}: {error.strerror or error}"
    else:
        key.algorithm = "ed25519" if "k=ed25519" in value else "rsa"
    return key


def inbound_lines(auth: dict) -> list[str]:
    """The inbound settings and the sealing, in words."""
    checks = auth.get("check_inbound", True)
    policy = auth.get("dmarc_policy", "annotate")
    lines = [("Inbound checks  SPF, DKIM, ARC and DMARC on mail from outside: on" if checks else
              "Inbound checks  off: mail from outside is not checked")]
    if checks:
        lines.append("DMARC policy    " + ("enforce: p=reject is refused, p=quarantine is held" if policy == "enforce"
                                         else "annotate: results in a header only; your mail server decides"))
    domain = sealing_domain(auth)
    if not auth.get("arc_seal", True):
        lines.append("ARC sealing     off")
    else:
        lines.append("ARC sealing     " + (f"on, sealed as {domain}" if domain else
                                          "on, but there is no RSA key to seal with: n makes one"))
    return lines


def chunks(text: str, width: int) -> list[str]:
    """`text` cut into lines of `width` characters: a record is copied exactly, never wrapped at a space."""
    width = max(width, 20)
    return [text[i:i + width] for i in range(0, len(text), width)] or [""]


def zone_lines(name: str, value: str, width: int) -> list[str]:
    """The zone-file form, one quoted string a line (a record's strings are joined again by DNS), so that
    what is copied from an 80-column screen is still a valid zone file."""
    strings = chunks(value, width - 4)
    lines = [f"{name}. IN TXT ("]
    lines += [f'  "{part}"' for part in strings]
    lines[-1] += " )"
    return lines


def record_lines(name: str, value: str, zone: str, width: int) -> list[Text]:
    """The record as appliance.dkim.dns_record gives it, cut to `width`: the value in lines to join when
    pasted into a DNS provider's form, the zone-file form in strings (its one-line `zone` is too wide)."""
    lines = [Text("Publish this TXT record in DNS", style="bold"), Text("Name", style="dim"), Text(name),
             Text("Value (one line: join these lines)", style="dim")]
    lines += [Text(part) for part in chunks(value, width)]
    lines += [Text("Zone-file form", style="dim")]
    lines += [Text(line) for line in (zone_lines(name, value, width) if len(zone) > width else [zone])]
    return lines


def microsoft_lines(auth: dict, algorithms: dict[str, str] | None = None) -> list[str]:
    """The Exchange Online side, as docs/authentication.md says it, with this appliance's values."""
    domain = sealing_domain(auth, algorithms)
    lines = []
    if not auth.get("arc_seal", True):
        lines += ["ARC sealing is off (arc_seal): turn it on first, or Exchange Online sees only a "
                  "failing SPF and DKIM behind the gateway.", ""]
    elif not domain:
        lines += ["No RSA signing key yet: n makes one (ARC seals are RSA only); then come back here.", ""]
    sealer, outcome, filtering = arc_sealer_steps(domain)
    return lines + [f"1. {sealer}", f"   {outcome}", "", f"2. {filtering}"]


def make_resolver(servers: list[str], root: Path):
    """An asynchronous resolver asking the relay's DNS servers, else the system's (under the root)."""
    import dns.asyncresolver
    import dns.nameserver

    from appliance.diagnostics.dns_lookup import parse_server, system_servers

    servers = list(servers) or system_servers(root)
    resolver = dns.asyncresolver.Resolver(configure=False)
    resolver.nameservers = [dns.nameserver.Do53Nameserver(*parse_server(s)) for s in servers]
    resolver.timeout = resolver.lifetime = CHECK_TIMEOUT
    return resolver, ", ".join(servers) or "no DNS server"


async def check_key(key: SigningKey, dns_servers: list[str], root: Path,
                    hint: str = "shown by Enter on the domain") -> SigningKey:
    """check_published against the relay's DNS servers (else the system's under `root`); the verdict is put in
    `key`, never raised; `hint` says where the record to publish is shown."""
    from appliance import dkim

    try:
        resolver, shown = await asyncio.to_thread(make_resolver, dns_servers, root)
    except ValueError as error:
        key.published, key.words = "unchecked", f"the DNS servers cannot be used: {error}"
        return key
    if key.problem:
        key.published, key.words = "unchecked", key.problem
        return key
    try:
        ok, words = await dkim.check_published(resolver, key.path, key.domain, key.selector)
    except Exception as error:  # a key file gone since, a DNS answer dnspython cannot read: said, never a crash
        key.published, key.words = "unchecked", f"the check failed: {error or type(error).__name__}"
        return key
    key.published = "published" if ok else next(
        (short for found, short in VERDICTS if found in words), "other key")
    # The command line's hint, in the console's words: the record is one key away.
    words = words.replace(f"`postern-appliance dkim show {key.domain}` prints", hint)
    key.words = f"{words} (asked {shown})"
    return key


class AuthScreen(Screen):
    """What the screens share: the notice line and the running section."""

    CSS_PATH = "../styles/transport.tcss"

    def notice(self, text: str | Text, style: str = "") -> None:
        self.query_one(".tls-notice", Static).update(Text(text, style=style) if isinstance(text, str) else text)

    async def check(self, key: SigningKey, dns_servers: list[str]) -> SigningKey:
        return await check_key(key, dns_servers, self.app.appliance.root)


class AuthenticationScreen(AuthScreen):
    DEFAULT_CSS = """
    #auth-inbound {
        height: auto;
        padding: 0 1;
        border-top: solid $primary;
    }
    """
    BINDINGS = [
        Binding("enter", "open", "Record", id="auth.open"),
        Binding("c", "check", "Check DNS", id="auth.check"),
        Binding("n", "new", "New key", id="auth.new"),
        Binding("m", "microsoft", "Microsoft 365", id="auth.microsoft"),
        Binding("r", "refresh", "Refresh", id="auth.refresh", show=False),
        Binding("escape", "back", "Back", id="auth.back"),
    ]

    def __init__(self):
        super().__init__()
        self.running: dict | None = None  # the mta section
        self.keys: list[SigningKey] = []
        self.problem = ""

    def compose(self) -> ComposeResult:
        yield StatusLine("Mail authentication")
        yield Static("Mail authentication: DKIM signing keys, inbound checks", classes="tls-title")
        yield Static(id="tls-header")
        yield OptionList(id="tls-rows")
        yield Static(id="auth-inbound", classes="auth-inbound")
        yield Static("Loading...", classes="tls-notice")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one(OptionList).focus()
        self.load()

    def on_relay_status(self, message: RelayStatus) -> None:
        if message.status is None and message.problem:
            self.failed(message.problem)
        elif message.status is not None and self.problem:
            self.load()

    def failed(self, words: str) -> None:
        self.problem = words
        self.notice(("The settings cannot be read: " if self.running is None else "Not up to date: ") + words,
                    "bold red")

    @property
    def auth(self) -> dict:
        return (self.running or {}).get("authentication") or {}

    @work(group="auth-load", exclusive=True)
    async def load(self) -> None:
        answer = await self.app.link.attempt("io.postern.Config.Get", self.failed)
        if answer is None:
            return
        self.problem = ""
        self.running = answer["mta"]
        checked = {(k.domain, k.selector, k.key_file): k for k in self.keys}
        keys = []
        rooted = self.app.appliance.certificates.rooted
        for domain, entry in (self.auth.get("dkim_keys") or {}).items():
            selector, key_file = entry.get("selector", ""), entry.get("key_file", "")
            old = checked.get((domain, selector, key_file))
            keys.append(old or SigningKey(domain, selector, key_file, rooted(key_file)))
        self.keys = [await asyncio.to_thread(read_key, key) if not key.algorithm and not key.problem else key
                     for key in keys]
        self.draw()

    def draw(self) -> None:
        if self.running is None:
            return
        self.query_one("#tls-header", Static).update(f"{'DOMAIN':<28} {'SELECTOR':<12} {'KEY':<8} DNS RECORD")
        listing = self.query_one(OptionList)
        highlighted = listing.highlighted
        listing.clear_options()
        for key in self.keys:
            row = Text(f"{printable(key.domain)[:28]:<28} {key.selector[:12]:<12} {key.algorithm or '?':<8} ")
            style = {"published": "green", NOT_CHECKED: "dim"}.get(key.published, "bold red")
            row.append(key.published, style=style)
            listing.add_option(Option(row, id=key.domain))
        if self.keys:
            listing.highlighted = min(highlighted or 0, len(self.keys) - 1)
        self.query_one("#auth-inbound", Static).update(Text("\n".join(inbound_lines(self.auth))))
        if not self.keys:
            self.notice("No signing key: mail leaves unsigned. n makes a key.", "yellow")
        elif any(key.problem for key in self.keys):
            bad = next(key for key in self.keys if key.problem)
            self.notice(f"{bad.domain}: {bad.problem}", "bold red")
        else:
            self.notice(f"{len(self.keys)} signing domain{'s' if len(self.keys) != 1 else ''}. Enter: its DNS "
                        "record; c checks it; m: Microsoft 365.")

    def current(self) -> SigningKey | None:
        listing = self.query_one(OptionList)
        if listing.highlighted is None or not self.keys:
            return None
        return self.keys[listing.highlighted]

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.action_open()

    def action_open(self) -> None:
        if (key := self.current()) is not None:
            self.app.push_screen(RecordScreen(key, list((self.running or {}).get("dns_servers") or [])),
                                 lambda _: self.draw())

    def action_check(self) -> None:
        if (key := self.current()) is not None:
            self.notice(f"Checking {key.selector}._domainkey.{key.domain} in DNS...")
            self.checking(key)

    @work(group="auth-check", exclusive=True)
    async def checking(self, key: SigningKey) -> None:
        await self.check(key, list((self.running or {}).get("dns_servers") or []))
        self.draw()
        self.notice(key.words, "green" if key.published == "published" else "bold red")

    def action_new(self) -> None:
        if self.running is None:
            self.notice("The relay's settings cannot be read: no key can be added now.", "bold red")
            return
        self.app.push_screen(NewKeyScreen(), self.made)

    def made(self, key: SigningKey | None) -> None:
        if key is not None:
            self.keys.append(key)
            self.load()
            self.app.push_screen(RecordScreen(key, list((self.running or {}).get("dns_servers") or [])))

    def action_microsoft(self) -> None:
        algorithms = {key.domain: key.algorithm for key in self.keys if key.algorithm}
        steps = microsoft_lines(self.auth, algorithms)
        if self.running is None:
            steps = ["The relay's settings cannot be read now: the values are not filled in.", "", *steps[2:]]
        self.app.push_screen(TextScreen("Microsoft 365: trust Postern's results", steps))

    def action_refresh(self) -> None:
        self.load()

    def action_back(self) -> None:
        self.app.pop_screen()


class TextScreen(AuthScreen):
    """Lines of text, wrapped to the screen; Escape leaves."""

    BINDINGS = [Binding("escape", "back", "Back", id="auth.text.back")]

    def __init__(self, title: str, lines: list[str]):
        super().__init__()
        self.title_text = title
        self.lines = lines

    def compose(self) -> ComposeResult:
        yield StatusLine("Mail authentication")
        yield Static(self.title_text, classes="tls-title")
        with VerticalScroll(id="tls-domain"):
            yield Static(Text("\n".join(self.lines)), id="auth-text")
        yield Static("Esc goes back.", classes="tls-notice")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one(VerticalScroll).focus()
        self.draw()

    def draw(self) -> None:
        """Each line wrapped under its own text: under the words after `1. `, under an indented line's start."""
        scroll = self.query_one(VerticalScroll)
        width = (scroll.size.width or self.size.width) - 2 - scroll.styles.scrollbar_size_vertical
        out = Text()
        for number, line in enumerate(self.lines):
            indent = len(line) - len(line.lstrip(" "))
            hang = 3 if line[:1].isdigit() and line[1:3] == ". " else indent
            parts = Text(line.strip()).wrap(self.app.console, max(width - hang, 20)) if line.strip() else [Text()]
            for index, part in enumerate(parts):
                out.append(("\n" if number or index else "") + " " * (hang if index else indent))
                out.append_text(part)
        self.query_one("#auth-text", Static).update(out)

    def on_resize(self) -> None:
        self.draw()

    def text(self) -> str:
        return "\n".join(self.lines)

    def action_back(self) -> None:
        self.app.pop_screen()


class RecordScreen(AuthScreen):
    """A signing domain: the TXT record to publish and, on `c`, whether DNS has it."""

    BINDINGS = [
        Binding("c", "check", "Check DNS", id="auth.record.check"),
        Binding("escape", "back", "Back", id="auth.record.back"),
    ]

    def __init__(self, key: SigningKey, dns_servers: list[str]):
        super().__init__()
        self.key = key
        self.dns_servers = dns_servers
        self.record: tuple[str, str, str] | None = None
        self.lines: list[Text] = []

    def compose(self) -> ComposeResult:
        yield StatusLine("Mail authentication")
        yield Static(f"DKIM key of {printable(self.key.domain)}, selector {self.key.selector}", classes="tls-title")
        with VerticalScroll(id="tls-domain"):
            yield Static("Reading the key...", id="auth-record")
        yield Static("c checks DNS for the record; Esc goes back.", classes="tls-notice")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one(VerticalScroll).focus()
        self.read()

    @work(group="auth-record", exclusive=True)
    async def read(self) -> None:
        from appliance import dkim
        from appliance.certificates import CertificateError

        try:
            self.record = await asyncio.to_thread(dkim.dns_record, self.key.path, self.key.domain, self.key.selector)
        except (CertificateError, OSError) as error:
            words = str(error) if isinstance(error, CertificateError) else f"{self.key.key_file}: {error.strerror}"
            self.query_one("#auth-record", Static).update(Text(f"The key cannot be read: {words}", style="bold red"))
            return
        self.draw()

    def draw(self) -> None:
        if self.record is None:
            return
        shown = self.query_one("#auth-record", Static)
        # The record is taller than the screen: leave room for the scroll bar it brings, so that no line of
        # it is wrapped again (at a space: `v=DKIM1; k=rsa;` would be cut from its p=).
        scroll = self.query_one(VerticalScroll)
        width = (scroll.size.width or self.size.width) - 2 - scroll.styles.scrollbar_size_vertical
        lines = [Text("Key file", style="dim"), *(Text(part) for part in chunks(self.key.key_file, width)), Text("")]
        lines += record_lines(*self.record, width)
        if self.key.published != NOT_CHECKED:
            verdict = Text(self.key.words, style="green" if self.key.published == "published" else "bold red")
            lines += [Text(""), Text("Check", style="bold"), *verdict.wrap(self.app.console, width)]
        self.lines = lines
        shown.update(Text("\n").join(lines))

    def on_resize(self) -> None:
        self.draw()

    def text(self) -> str:
        return "\n".join(line.plain for line in self.lines)

    def action_check(self) -> None:
        self.notice(f"Checking {self.key.selector}._domainkey.{self.key.domain} in DNS (Esc leaves)...", "bold")
        self.checking()

    @work(group="auth-record-check", exclusive=True)
    async def checking(self) -> None:
        await self.check(self.key, self.dns_servers)
        self.draw()
        verdict = {"published": "published and matches the key.", "not published": "not published."}
        self.notice(f"Checked at {time.strftime('%H:%M:%S')}: "
                    + verdict.get(self.key.published, self.key.words),
                    "green" if self.key.published == "published" else "bold red")

    def action_back(self) -> None:
        self.workers.cancel_all()
        self.dismiss(None)


class NewKeyScreen(ModalScreen[SigningKey | None]):
    """Domain, selector, algorithm: the key is made, then added to dkim_keys through the relay."""

    DEFAULT_CSS = """
    NewKeyScreen {
        align: center middle;
    }
    """

    BINDINGS = [
        Binding("ctrl+s", "apply", "Make", id="auth.new.apply"),
        Binding("escape", "cancel", "Cancel", id="auth.new.cancel"),
        Binding("down", "app.focus_next", "Next field", show=False),
        Binding("up", "app.focus_previous", "Previous field", show=False),
    ]
    CSS_PATH = "../styles/transport.tcss"

    def __init__(self):
        super().__init__()
        self.busy = False

    def compose(self) -> ComposeResult:
        with Vertical(id="entry-dialog"):
            yield Static("A new DKIM signing key", classes="title")
            yield Horizontal(Label("Domain", classes="entry-label"),
                             Input(id="entry-domain", compact=True, placeholder="example.com"), classes="entry-line")
            yield Static(Text("mail whose From: is in this domain is signed", style="dim"), id="note-domain",
                         classes="entry-note")
            yield Horizontal(Label("Selector", classes="entry-label"),
                             Input(default_selector(), id="entry-selector", compact=True), classes="entry-line")
            yield Static(Text("the DNS label: a new one for each new key", style="dim"), id="note-selector",
                         classes="entry-note")
            yield Horizontal(Label("Algorithm", classes="entry-label"),
                             Choice([("rsa", "rsa"), ("ed25519", "ed25519")], "rsa", id="entry-algorithm"),
                             classes="entry-line")
            yield Static(Text("rsa (2048) for every verifier; ed25519 beside an rsa key", style="dim"),
                         id="note-algorithm", classes="entry-note")
            yield Static(id="entry-notice")
            yield Static("[b]ctrl+s[/b] make    [b]Esc[/b] cancel    [b]space[/b] next algorithm", id="entry-keys")

    def on_mount(self) -> None:
        self.query_one("#entry-domain").focus()

    def notice(self, text: str, style: str = "") -> None:
        self.query_one("#entry-notice", Static).update(Text(text, style=style))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_apply()

    def action_cancel(self) -> None:
        self.workers.cancel_all()
        self.dismiss(None)

    def action_apply(self) -> None:
        if self.busy:
            return
        domain = self.query_one("#entry-domain", Input).value.strip().lower().rstrip(".")
        selector = self.query_one("#entry-selector", Input).value.strip()
        algorithm = self.query_one("#entry-algorithm", Choice).value
        self.make(domain, selector, algorithm)

    @work(group="auth-new", exclusive=True)
    async def make(self, domain: str, selector: str, algorithm: str) -> None:
        from appliance import dkim
        from appliance.certificates import CertificateError

        self.busy = True
        try:
            appliance = self.app.appliance
            directory = appliance.certificates.rooted(dkim.DEFAULT_DIRECTORY)
            self.notice("Making the key...")
            try:
                path, _ = await asyncio.to_thread(dkim.create_key, directory, domain, selector, algorithm,
                                                  appliance.root)
            except CertificateError as error:
                self.notice(f"Not made: {error}", "bold red")
                return
            except OSError as error:
                self.notice(f"Not made: {error.filename or ''}: {error.strerror or error}", "bold red")
                return
            self.notice("Checking with the relay, then applying...")
            outcome = await apply_change(self.app.link, lambda running: with_dkim_key(running, domain, selector,
                                                                                      str(path)))
            if not outcome.applied:
                path.unlink(missing_ok=True)  # refused: nothing changed, not even a key file left behind
                problems = "; ".join(outcome.problems) or outcome.words
                self.notice(f"Not applied, nothing changed: {problems}", "bold red")
                return
        finally:
            self.busy = False
        self.app.notify(f"DKIM key for {domain}: {outcome.applied}.", title="Mail authentication")
        key = read_key(SigningKey(domain, selector, str(path), path))
        self.dismiss(key)
